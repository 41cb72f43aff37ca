//! Every report shape carpd answers with (design §2): `carpctl status|counters|groups|sync|flows
//! [--json]`. carpd fills them (`daemon::control`, `daemon::sync`); carpctl prints them through
//! `control::render` (text) or serde (JSON); the metrics endpoint through `control::metrics`.

use serde::{Deserialize, Serialize};

/// `carpctl sync --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SyncReport {
    /// True when `[pfsync]` is configured (replication runs).
    pub enabled: bool,
    /// `[flows] stateful`.
    pub stateful: bool,
    /// The sync device.
    pub syncdev: Option<String>,
    /// Where packets go: the unicast peer or the multicast group, with the port.
    pub destination: Option<String>,
    /// This node's sync id.
    pub node_id: u32,
    /// Where the bulk transfer to this node stands: idle, requesting, receiving, done, timed-out.
    pub bulk: String,
    /// True while the bulk demotion (+32 on group carp) is held.
    pub demoted: bool,
    /// How long the last bulk transfer to this node took, in ms: from its first request to BULK_END
    /// (or to giving up); None before one finished.
    #[serde(default)]
    pub bulk_ms: Option<f64>,
    /// Flows the sync engine knows (local and learned).
    pub flows: u64,
    /// Sync ids of the peers heard recently (their flows stay with them in balancing modes).
    #[serde(default)]
    pub live_peers: Vec<u32>,
    /// Every protocol counter (ipackets, opackets, badauth, replay, badlen, ...), by name.
    pub counters: Vec<(String, u64)>,
    /// What the dataplane counted per carpdev (new_flows, stateful_drop, events_lost, ...).
    pub dataplane: Vec<DataplaneFlowCounters>,
    /// Conntrack replication (`[pfsync] conntrack = true`), if on.
    #[serde(default)]
    pub conntrack: Option<Box<ConntrackReport>>,
}

/// The conntrack replication's state in `carpctl sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackReport {
    /// Entries the mirror knows (this node's and learned ones).
    pub entries: u64,
    /// Of them learned from peers.
    pub learned: u64,
    /// The conntrack bulk to this node: idle, requesting, receiving N/M, done, timed-out.
    pub bulk: String,
    /// Counters by name: events, sent, received, applied, learned, stale, filtered, refreshed,
    /// bulk_sent, bulk_received, bulk_incomplete, bulk_coalesced, resyncs, known, echoes, overruns, refused, send_errors, dumped.
    pub counters: Vec<(String, u64)>,
    /// Changes the kernel refused, by errno (ENOMEM: the table is full).
    pub refused: Vec<(String, u64)>,
}

impl SyncReport {
    /// One counter by name (protocol or transport), if present.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// One carpdev's flow counters from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneFlowCounters {
    /// The carpdev.
    pub carpdev: String,
    /// `off`, `track` or `stateful`.
    pub mode: String,
    /// True when new flows may start here.
    pub inside: bool,
    /// The `carp_flow_stats` counters by name.
    pub counters: Vec<(String, u64)>,
}

/// One flow of `carpctl flows --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRow {
    /// "tcp", "udp", "icmp", "icmp6" or the protocol number.
    pub proto: String,
    /// The lower endpoint, `addr:port` (`[addr]:port` for IPv6).
    pub lo: String,
    /// The higher endpoint.
    pub hi: String,
    /// SYN, SYN-ACK, ESTABLISHED, FIN, CLOSED, or "-" for non-TCP.
    pub state: String,
    /// Sync id of the creating node.
    pub creator: u32,
    /// The flow number on the creator.
    pub id: u64,
    /// The owner (carpnode vhid; 0 without balancing).
    pub owner: u8,
    /// True if learned from a peer.
    pub learned: bool,
    /// Packets lo -> hi, hi -> lo.
    pub packets: [u64; 2],
    /// Bytes lo -> hi, hi -> lo.
    pub bytes: [u64; 2],
    /// Seconds since creation.
    pub age_s: u64,
    /// Seconds since the last packet.
    pub idle_s: u64,
}

/// `carpctl flows --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FlowsReport {
    /// Every flow of the listing, in the table's own order (a listing streamed in pages cannot sort).
    pub flows: Vec<FlowRow>,
}

/// Which flows `carpctl flows` lists: every filter given must match, and at most `limit` are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FlowQuery {
    /// Stop after this many flows (None: all).
    pub limit: Option<u64>,
    /// Only this protocol, as `FlowRow::proto` names it ("tcp", "udp", "icmp", "icmp6" or a number).
    pub proto: Option<String>,
    /// Only flows with this address at either end.
    pub addr: Option<std::net::IpAddr>,
    /// Only flows with this port at either end.
    pub port: Option<u16>,
    /// Only learned (true) or only local (false) flows.
    pub learned: Option<bool>,
}

impl FlowQuery {
    /// True when `row` passes every filter.
    pub fn matches(&self, row: &FlowRow) -> bool {
        let ends = [&row.lo, &row.hi].map(|e| split_endpoint(e));
        self.proto.as_ref().is_none_or(|p| *p == row.proto)
            && self.learned.is_none_or(|l| l == row.learned)
            && self
                .addr
                .is_none_or(|a| ends.iter().any(|e| e.is_some_and(|(ea, _)| ea == a)))
            && self
                .port
                .is_none_or(|p| ends.iter().any(|e| e.is_some_and(|(_, ep)| ep == p)))
    }
}

/// `addr:port` or `[addr]:port` back into its parts.
fn split_endpoint(e: &str) -> Option<(std::net::IpAddr, u16)> {
    e.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| (s.ip(), s.port()))
}

/// `carpctl status --json` (design §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `net.inet.carp.preempt`.
    pub preempt: bool,
    /// `net.inet.carp.allow`.
    pub allow: bool,
    /// `net.inet.carp.log`.
    pub log: u8,
    /// Every carp interface, in config order.
    pub interfaces: Vec<InterfaceStatus>,
    /// Every demote group, sorted by name.
    pub groups: Vec<GroupStatus>,
}

/// One carp interface in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// e.g. "carp0".
    pub name: String,
    /// The parent interface.
    pub carpdev: String,
    /// The (first) vhid.
    pub vhid: u8,
    /// INIT, BACKUP or MASTER: the state of the first (lowest vhid) node.
    pub state: String,
    /// Running advbase.
    pub advbase: u8,
    /// Running advskew.
    pub advskew: u8,
    /// The demote byte it advertises (sum of its groups' counters).
    pub demote: u8,
    /// Virtual addresses with prefix length.
    pub addresses: Vec<String>,
    /// Balancing mode.
    pub balancing: String,
    /// Its carpnodes (one per vhid).
    pub nodes: Vec<NodeStatus>,
    /// Its groups, "carp" included.
    pub groups: Vec<String>,
    /// Source address of the last master heard while BACKUP.
    pub last_master: Option<String>,
    /// "carp", "vrrp3" or "vrrp2".
    #[serde(default = "carp_protocol")]
    pub protocol: String,
    /// The VRRP terms of a VRRP interface (its `vhid` is the VRID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp: Option<VrrpStatus>,
}

fn carp_protocol() -> String {
    "carp".into()
}

/// A VRRP interface in VRRP's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpStatus {
    /// The virtual router id.
    pub vrid: u8,
    /// The priority advertised now (configured, lowered by group demotion; 255 = owner).
    pub priority: u8,
    /// The configured priority.
    pub configured_priority: u8,
    /// Our Advertisement_Interval in centiseconds.
    pub interval_cs: u16,
    /// The Master_Adver_Interval in use (VRRPv3 learns it from the master), centiseconds.
    pub master_interval_cs: u16,
    /// Preempt_Mode.
    pub preempt: bool,
    /// Accept_Mode.
    pub accept_mode: bool,
    /// The VRRPv3-over-IPv4 checksum form we send ("pseudo-header" or "message-only").
    pub checksum: String,
}

/// One carpnode of an interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its vhid.
    pub vhid: u8,
    /// INIT, BACKUP or MASTER.
    pub state: String,
    /// Its advskew.
    pub advskew: u8,
    /// When it entered its state, seconds since the Unix epoch (None: not since this carpd started,
    /// e.g. resumed after a hitless restart before its first transition here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<f64>,
    /// Why it is in its state: the reason of its last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// One demote group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Group name ("carp" always exists).
    pub name: String,
    /// Its demote counter.
    pub demote: u8,
    /// Its carp interfaces.
    pub members: Vec<String>,
}

/// `carpctl counters --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountersReport {
    /// One entry per vhid.
    pub vhids: Vec<VhidCounters>,
    /// The loop's lateness and the backup's late wake-up decisions (issue #17).
    #[serde(default)]
    pub loop_stats: crate::daemon::stall::LoopStats,
}

/// The counters of one vhid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VhidCounters {
    /// The carp interface.
    pub name: String,
    /// The parent interface.
    pub carpdev: String,
    /// The vhid.
    pub vhid: u8,
    /// Its state now.
    pub state: String,
    /// How many times it became MASTER since carpd started.
    pub transitions_to_master: u64,
    /// Adverts sent since carpd started (carpstats opackets).
    #[serde(default)]
    pub opackets: u64,
    /// Adverts that failed the HMAC check since carpd started (carpstats badauth).
    #[serde(default)]
    pub badauth: u64,
    /// Source address of the last master heard while BACKUP.
    pub last_master: Option<String>,
    /// Seconds since the XDP program last accepted an advert for this vhid (None: never).
    pub last_advert_age_seconds: Option<f64>,
    /// The dataplane's per-vhid counters summed over CPUs (None if the map could not be read).
    pub dataplane: Option<DataplaneCounters>,
    /// Who sent the adverts: the kernel's timer or the loop (issue #17).
    #[serde(default)]
    pub adverts: crate::daemon::stall::AdvertCounts,
}

/// The XDP program's per-vhid counters (`carp_stats`), summed over CPUs, named as bpftool shows them.
pub use carp_common::maps::CarpStats as DataplaneCounters;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(proto: &str, lo: &str, hi: &str, learned: bool) -> FlowRow {
        FlowRow {
            proto: proto.into(),
            lo: lo.into(),
            hi: hi.into(),
            state: "-".into(),
            creator: 1,
            id: 2,
            owner: 0,
            learned,
            packets: [1, 2],
            bytes: [3, 4],
            age_s: 5,
            idle_s: 6,
        }
    }

    #[test]
    fn flow_queries_filter_by_every_field() {
        let udp = row("udp", "10.0.0.100:4000", "10.0.0.1:53", false);
        let tcp6 = row("tcp", "[2001:db8::1]:443", "[2001:db8::2]:50000", true);
        let all = FlowQuery::default();
        assert!(all.matches(&udp) && all.matches(&tcp6));
        let q = |f: fn(&mut FlowQuery)| {
            let mut q = FlowQuery::default();
            f(&mut q);
            q
        };
        let udp_only = q(|q| q.proto = Some("udp".into()));
        assert!(udp_only.matches(&udp) && !udp_only.matches(&tcp6));
        let learned = q(|q| q.learned = Some(true));
        assert!(!learned.matches(&udp) && learned.matches(&tcp6));
        let local = q(|q| q.learned = Some(false));
        assert!(local.matches(&udp) && !local.matches(&tcp6));
        let addr = q(|q| q.addr = Some("10.0.0.1".parse().unwrap()));
        assert!(addr.matches(&udp) && !addr.matches(&tcp6));
        let addr6 = q(|q| q.addr = Some("2001:db8::2".parse().unwrap()));
        assert!(!addr6.matches(&udp) && addr6.matches(&tcp6));
        let port = q(|q| q.port = Some(443));
        assert!(!port.matches(&udp) && port.matches(&tcp6));
        // Filters combine: all must match.
        let both = q(|q| {
            q.proto = Some("udp".into());
            q.port = Some(443)
        });
        assert!(!both.matches(&udp) && !both.matches(&tcp6));
    }

    #[test]
    fn a_flow_query_without_fields_is_the_old_request() {
        // carpctl of the previous release sent {"request":"flows"}.
        let r: crate::control::Request = serde_json::from_str(r#"{"request":"flows"}"#).unwrap();
        assert_eq!(r, crate::control::Request::Flows(FlowQuery::default()));
    }
}
