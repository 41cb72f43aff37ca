//! Map keys, values and events shared by the XDP programs and the controller.
//!
//! The layout version is part of every pin path (`/sys/fs/bpf/carp/v<LAYOUT_VERSION>/<carpdev>/`): a
//! controller only adopts pins whose layout it understands, so changing any struct here must bump it.

/// Version of the map layout; part of the pin path.
pub const LAYOUT_VERSION: u32 = 7;
/// Entries in the per-vhid arrays: index = vhid, index 0 counts frames whose vhid could not be read.
pub const VHID_SLOTS: u32 = 256;
/// Maximum number of virtual addresses across all vhids of one carpdev.
pub const MAX_VIPS: u32 = 1024;
/// Entries in `carp_balance`: index = the group's leader vhid (the lowest vhid of its carpnodes).
pub const BALANCE_SLOTS: u32 = 256;
/// Most carpnodes one carp interface can have (spec §6): one bit each in the local mask.
pub const MAX_CARPNODES: usize = 32;

/// Name of the per-vhid counters map (design §2).
pub const MAP_STATS: &str = "carp_stats";
/// Name of the per-vhid table the controller writes.
pub const MAP_VHIDS: &str = "carp_vhids";
/// Name of the virtual address table the controller writes.
pub const MAP_VIPS: &str = "carp_vips";
/// Name of the last-good-advert table the XDP program writes.
pub const MAP_LAST_ADVERT: &str = "carp_last_advert";
/// Name of the advert event ring buffer.
pub const MAP_EVENTS: &str = "carp_events";
/// Name of the balancing-group table the controller writes (spec §6).
pub const MAP_BALANCE: &str = "carp_balance";
/// Name of the per-vhid advert rate limits (settings and the vhid bucket) the XDP program keeps.
pub const MAP_ADVERT_LIMITS: &str = "carp_advert_limits";
/// Name of the per-(vhid, source) advert buckets, an LRU hash.
pub const MAP_ADVERT_SOURCES: &str = "carp_advert_sources";
/// Entries in `carp_advert_sources`: sources tracked at once over every vhid of one carpdev.
pub const ADVERT_SOURCES: u32 = 1024;

/// Per-vhid counters, the value of `carp_stats` (a per-CPU array indexed by vhid).
///
/// The first block mirrors `struct carpstats` input counters (spec §7); the rest are the dataplane's own.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CarpStats {
    /// IPv4 adverts received.
    pub ipackets: u64,
    /// IPv6 adverts received.
    pub ipackets6: u64,
    /// TTL or hop limit not 255.
    pub badttl: u64,
    /// IP payload shorter than the CARP header.
    pub badlen: u64,
    /// Frame truncated before the end of a header.
    pub hdrops: u64,
    /// CARP checksum wrong.
    pub badsum: u64,
    /// CARP version not 2.
    pub badver: u64,
    /// vhid not configured on this carpdev.
    pub badvhid: u64,
    /// Good adverts handed to the controller through the ring buffer.
    pub adverts_to_controller: u64,
    /// Good adverts not handed over because the ring buffer was full.
    pub events_lost: u64,
    /// ARP requests for a VIP answered with XDP_TX.
    pub arp_replies: u64,
    /// IPv6 neighbour solicitations for a VIP answered with XDP_TX.
    pub na_replies: u64,
    /// ARP/NS requests for a VIP dropped because this node is not MASTER.
    pub arp_dropped_backup: u64,
    /// Frames to the virtual MAC passed to the stack (MASTER).
    pub vmac_passed: u64,
    /// Frames to the virtual MAC dropped (not MASTER).
    pub vmac_dropped: u64,
    /// Frames accepted by the balancing filter.
    pub balanced_pass: u64,
    /// Frames dropped by the balancing filter.
    pub balanced_drop: u64,
    /// Good adverts dropped, not handed over, because their source or their vhid exceeded its event rate
    /// (`carp_advert_limits`): a flood of valid-looking adverts.
    pub events_ratelimited: u64,
    /// IP packets to a virtual address dropped at a VRRP master that does not own it and runs with
    /// `accept_mode = false` (RFC 9568 §6.4.3); neighbour discovery is always let through.
    pub vrrp_not_accepted: u64,
}

impl CarpStats {
    /// Every counter as (name, value), in declaration order (bpftool's, tables' and metrics').
    pub fn fields(&self) -> [(&'static str, u64); 19] {
        [
            ("ipackets", self.ipackets),
            ("ipackets6", self.ipackets6),
            ("badttl", self.badttl),
            ("badlen", self.badlen),
            ("hdrops", self.hdrops),
            ("badsum", self.badsum),
            ("badver", self.badver),
            ("badvhid", self.badvhid),
            ("adverts_to_controller", self.adverts_to_controller),
            ("events_lost", self.events_lost),
            ("arp_replies", self.arp_replies),
            ("na_replies", self.na_replies),
            ("arp_dropped_backup", self.arp_dropped_backup),
            ("vmac_passed", self.vmac_passed),
            ("vmac_dropped", self.vmac_dropped),
            ("balanced_pass", self.balanced_pass),
            ("balanced_drop", self.balanced_drop),
            ("events_ratelimited", self.events_ratelimited),
            ("vrrp_not_accepted", self.vrrp_not_accepted),
        ]
    }

    /// Field-wise sum (per-CPU values into one total).
    pub fn add(&self, o: &Self) -> Self {
        Self {
            ipackets: self.ipackets + o.ipackets,
            ipackets6: self.ipackets6 + o.ipackets6,
            badttl: self.badttl + o.badttl,
            badlen: self.badlen + o.badlen,
            hdrops: self.hdrops + o.hdrops,
            badsum: self.badsum + o.badsum,
            badver: self.badver + o.badver,
            badvhid: self.badvhid + o.badvhid,
            adverts_to_controller: self.adverts_to_controller + o.adverts_to_controller,
            events_lost: self.events_lost + o.events_lost,
            arp_replies: self.arp_replies + o.arp_replies,
            na_replies: self.na_replies + o.na_replies,
            arp_dropped_backup: self.arp_dropped_backup + o.arp_dropped_backup,
            vmac_passed: self.vmac_passed + o.vmac_passed,
            vmac_dropped: self.vmac_dropped + o.vmac_dropped,
            balanced_pass: self.balanced_pass + o.balanced_pass,
            balanced_drop: self.balanced_drop + o.balanced_drop,
            events_ratelimited: self.events_ratelimited + o.events_ratelimited,
            vrrp_not_accepted: self.vrrp_not_accepted + o.vrrp_not_accepted,
        }
    }
}

/// State of a vhid as the dataplane sees it (written by the controller).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VhidState {
    /// Not configured on this carpdev: adverts for it count as badvhid.
    Unconfigured = 0,
    /// Configured, not running (link down, interface down).
    Init = 1,
    /// Configured, another node is master.
    Backup = 2,
    /// Configured, this node is master.
    Master = 3,
}

impl VhidState {
    /// The state a `VhidEntry::state` byte holds; bytes no controller writes read as `Unconfigured`.
    pub const fn from_u8(b: u8) -> Self {
        match b {
            1 => Self::Init,
            2 => Self::Backup,
            3 => Self::Master,
            _ => Self::Unconfigured,
        }
    }
}

/// Balancing mode of a vhid (spec §6).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BalanceMode {
    /// Plain failover.
    None = 0,
    /// `balancing ip`: multicast interface MAC, L3 hash filter.
    Ip = 1,
    /// `balancing ip-stealth`: unicast interface MAC never used as a source.
    IpStealth = 2,
    /// `balancing ip-unicast`: unicast interface MAC.
    IpUnicast = 3,
    /// `balancing arp`: each node answers ARP for its share of requesters.
    Arp = 4,
}

/// One vhid as the controller configures it in `carp_vhids` (an array indexed by vhid).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VhidEntry {
    /// A `VhidState` as u8.
    pub state: u8,
    /// A `BalanceMode` as u8.
    pub mode: u8,
    /// The MAC ARP/NS replies carry and frames to it are filtered on.
    pub vmac: [u8; 6],
    /// CLOCK_MONOTONIC ns until which a MASTER state holds; 0 = no expiry. The controller renews it with
    /// every advert it sends, so when the controller dies (SIGKILL, crash) the dataplane stops acting as
    /// MASTER about when the peers take over, instead of answering for the VIP forever beside the new
    /// master; a restart within the lease is hitless.
    pub lease_until_ns: u64,
}

impl VhidEntry {
    /// An entry with no lease (MASTER holds until the controller says otherwise).
    pub const fn new(state: VhidState, mode: BalanceMode, vmac: [u8; 6]) -> Self {
        Self {
            state: state as u8,
            mode: mode as u8,
            vmac,
            lease_until_ns: 0,
        }
    }

    /// The same entry with a MASTER lease until `until_ns` (CLOCK_MONOTONIC).
    pub const fn with_lease(mut self, until_ns: u64) -> Self {
        self.lease_until_ns = until_ns;
        self
    }

    /// The entry's state, typed.
    pub const fn state(&self) -> VhidState {
        VhidState::from_u8(self.state)
    }
}

/// One balancing group (one carp interface with carpnodes), the value of `carp_balance`, an array
/// indexed by the group's leader vhid.
///
/// Everything the XDP decision needs is in this one value so the controller changes a group with a
/// single array update: there is no window between two updates in which mode, N and mask disagree.
/// (The kernel copies an array value without a lock, so a frame on another CPU during the copy itself
/// may see a mix of the old and new value: at worst that one frame is decided by the old mask.)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalanceGroup {
    /// A `BalanceMode` as u8; `None` (0) means the slot is unused.
    pub mode: u8,
    /// N: the number of configured carpnodes (1..=32), not the number alive; 0 drops every frame.
    pub nodes: u8,
    /// Always zero.
    pub pad: [u8; 2],
    /// Bit i set when the i-th carpnode in ascending vhid order is MASTER on this host.
    pub local_mask: u32,
    /// CLOCK_MONOTONIC ns until which `local_mask` holds; 0 = no expiry. The same MASTER lease as
    /// `VhidEntry::lease_until_ns`, renewed with every advert a local MASTER node sends: when the
    /// controller dies the dataplane stops taking this host's buckets about when the peers' BACKUP
    /// nodes take them over, instead of both hosts accepting them.
    pub lease_until_ns: u64,
    /// The interface MAC: 01:00:5e:00:01:<leader> for `ip`, 00:00:5e:00:01:<leader> otherwise.
    pub mac: [u8; 6],
    /// The carpdev's own MAC: Ethernet source of ARP/NA replies in `ip` and `ip-stealth` (spec §6).
    pub src_mac: [u8; 6],
    /// The carpnodes' vhids in ascending order (first N used); `arp` mode replies with 00:00:5e:00:01:<vhid>.
    pub vhids: [u8; MAX_CARPNODES],
    /// Always zero; keeps the value free of padding.
    pub pad2: [u8; 4],
}

/// Key of `carp_vips`: a virtual address (IPv4 in the first four bytes, the rest zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// 4 for IPv4, 6 for IPv6.
    pub family: u8,
    /// Always zero; keeps the key free of padding.
    pub pad: [u8; 3],
    /// The address in network order.
    pub addr: [u8; 16],
}

/// The last good advert seen per vhid (value of `carp_last_advert`, an array indexed by vhid).
///
/// The controller reads `ktime_ns` before declaring a master down, so a stalled controller cannot
/// cause a false failover. The kernel cannot check the HMAC, so it keeps the CARP header as received
/// and the controller verifies it before it believes the record: a forged advert must never delay a
/// takeover.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastAdvert {
    /// CLOCK_MONOTONIC ns when the advert arrived, at tick resolution (`bpf_ktime_get_coarse_ns`).
    pub ktime_ns: u64,
    /// Source address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// 4 or 6.
    pub family: u8,
    /// Advertised advbase.
    pub advbase: u8,
    /// Advertised advskew.
    pub advskew: u8,
    /// Advertised demote byte.
    pub demote: u8,
    /// Always zero.
    pub pad: [u8; 4],
    /// The 36 CARP header bytes as received (counter and digest included), for HMAC verification.
    pub carp: [u8; 36],
    /// Always zero.
    pub pad2: [u8; 4],
}

impl Default for LastAdvert {
    fn default() -> Self {
        Self {
            ktime_ns: 0,
            src: [0; 16],
            family: 0,
            advbase: 0,
            advskew: 0,
            demote: 0,
            pad: [0; 4],
            carp: [0; 36],
            pad2: [0; 4],
        }
    }
}

/// An advert that passed the kernel's checks, handed to the controller through `carp_events`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertEvent {
    /// CLOCK_MONOTONIC ns when the advert arrived, at tick resolution (`bpf_ktime_get_coarse_ns`).
    pub ktime_ns: u64,
    /// Interface index the frame arrived on.
    pub ifindex: u32,
    /// 4 or 6.
    pub family: u8,
    /// TTL / hop limit as received.
    pub ttl: u8,
    /// 1 if the IP destination was a unicast address (carppeer mode).
    pub unicast: u8,
    /// Always zero.
    pub pad: u8,
    /// Source address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// Destination address (IPv4 in the first four bytes).
    pub dst: [u8; 16],
    /// Ethernet source MAC.
    pub src_mac: [u8; 6],
    /// Always zero.
    pub pad2: [u8; 2],
    /// The 36 CARP header bytes as received, for HMAC verification.
    pub carp: [u8; 36],
    /// Always zero.
    pub pad3: [u8; 4],
}

/// Name of the flow table (pfsync-style state, issue #7); shared by every carpdev of one carpd.
pub const MAP_FLOWS: &str = "carp_flows";
/// Name of the one-entry per-carpdev flow settings array the controller writes.
pub const MAP_FLOW_CONF: &str = "carp_flow_conf";
/// Name of the per-carpdev, per-CPU flow counters.
pub const MAP_FLOW_STATS: &str = "carp_flow_stats";
/// Name of the flow event ring buffer (new flows, TCP state changes); shared like `carp_flows`.
pub const MAP_FLOW_EVENTS: &str = "carp_flow_events";
/// Entries in `carp_flows` (an LRU hash: when full the least recently used flow is evicted).
pub const FLOW_SLOTS: u32 = 65536;

/// Key of `carp_flows`: a flow's 5-tuple with the endpoints in canonical order, so both directions of
/// one flow (seen on two carpdevs, or on two gateways) land on one entry.
///
/// `lo` is the endpoint whose (address bytes, port) is lower, the same order as the sync module's
/// `FlowKey` (address first, then port), so the kernel's and the wire's keys agree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Lower address, network order (IPv4 in the first four bytes, the rest zero).
    pub lo_addr: [u8; 16],
    /// Higher address.
    pub hi_addr: [u8; 16],
    /// Port of the lower endpoint (host order); the ICMP echo id for ICMP echo flows.
    pub lo_port: u16,
    /// Port of the higher endpoint (host order); the ICMP echo id for ICMP echo flows.
    pub hi_port: u16,
    /// IP protocol (6, 17, 1, 58).
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Always zero; keeps the key free of padding.
    pub pad: [u8; 2],
}

/// A flow's TCP state as the dataplane tracks it from the flags it sees (one value for the flow, not
/// per direction). The numbers only grow during a connection's life; a SYN on a CLOSED flow starts a new one.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlowTcpState {
    /// Not TCP.
    None = 0,
    /// A SYN was seen.
    Syn = 1,
    /// The SYN-ACK was seen.
    SynAck = 2,
    /// The handshake completed (or the flow was picked up mid-stream).
    Established = 3,
    /// A FIN was seen in at least one direction.
    Fin = 4,
    /// FINs in both directions, or an RST.
    Closed = 5,
}

impl FlowTcpState {
    /// The state of a stored byte (unknown bytes read as `None`).
    pub const fn from_u8(b: u8) -> FlowTcpState {
        match b {
            1 => FlowTcpState::Syn,
            2 => FlowTcpState::SynAck,
            3 => FlowTcpState::Established,
            4 => FlowTcpState::Fin,
            5 => FlowTcpState::Closed,
            _ => FlowTcpState::None,
        }
    }

    /// The name `carpctl flows` prints.
    pub const fn as_str(self) -> &'static str {
        match self {
            FlowTcpState::None => "-",
            FlowTcpState::Syn => "SYN",
            FlowTcpState::SynAck => "SYN-ACK",
            FlowTcpState::Established => "ESTABLISHED",
            FlowTcpState::Fin => "FIN",
            FlowTcpState::Closed => "CLOSED",
        }
    }
}

/// `FlowEntry::flags`: the flow was learned from a sync peer (inserted by the controller).
pub const FLOW_LEARNED: u8 = 0x01;
/// `FlowEntry::flags`: a FIN went from `lo` to `hi`.
pub const FLOW_FIN_LO: u8 = 0x02;
/// `FlowEntry::flags`: a FIN went from `hi` to `lo`.
pub const FLOW_FIN_HI: u8 = 0x04;

/// Value of `carp_flows`. Counters are updated with atomic adds (the entry is shared by every CPU and
/// both directions); the times and the TCP state are plain stores (a lost race costs one stale value
/// that the next packet corrects).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    /// The flow number, unique per creator (the sync protocol's flow id).
    pub id: u64,
    /// CLOCK_MONOTONIC ns when the flow was created on this node (for learned flows: the peer's age
    /// of the flow, translated to our clock).
    pub created_ns: u64,
    /// CLOCK_MONOTONIC ns of the last packet (`bpf_ktime_get_coarse_ns`).
    pub last_seen_ns: u64,
    /// Packets from `lo` to `hi`, and from `hi` to `lo`.
    pub packets: [u64; 2],
    /// Bytes (IP length) from `lo` to `hi`, and from `hi` to `lo`.
    pub bytes: [u64; 2],
    /// Sync node id of the node that created the flow (the creator of its sync id).
    pub creator: u32,
    /// The owner node: the carpnode vhid that forwards the flow (0 without balancing).
    pub owner: u8,
    /// A `FlowTcpState` as u8.
    pub tcp_state: u8,
    /// `FLOW_LEARNED`, `FLOW_FIN_LO`, `FLOW_FIN_HI`.
    pub flags: u8,
    /// Always zero.
    pub pad: u8,
}

impl FlowEntry {
    /// True if the flow came from a sync peer rather than from traffic seen here.
    pub const fn learned(&self) -> bool {
        self.flags & FLOW_LEARNED != 0
    }
}

/// Flow tracking off: the only cost a frame pays is the lookup of this flag.
pub const FLOW_MODE_OFF: u8 = 0;
/// Flows are tracked (and replicated) but no frame is dropped for being unknown.
pub const FLOW_MODE_TRACK: u8 = 1;
/// `[flows] stateful = true`: only known flows, and new flows started from the inside, pass.
pub const FLOW_MODE_STATEFUL: u8 = 2;

/// Per-carpdev flow settings (`carp_flow_conf`, a one-entry array written by the controller).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowConf {
    /// `FLOW_MODE_OFF`, `FLOW_MODE_TRACK` or `FLOW_MODE_STATEFUL`.
    pub mode: u8,
    /// 1 if this carpdev faces the inside: new TCP SYNs and new UDP/ICMP flows may start here.
    pub inside: u8,
    /// The owner written into new flows outside a balancing group (there it is the bucket's carpnode
    /// vhid); 0 without balancing.
    pub owner: u8,
    /// 1 when flows stick to the gateway that owns them in balancing modes (set with `[pfsync]`, which
    /// tells who is alive); 0 decides balanced frames by their bucket only.
    pub sticky: u8,
    /// This node's sync id: the creator of the flows created here.
    pub node_id: u32,
    /// Flow events each CPU may send per millisecond; beyond it they are counted as rate-limited.
    pub events_per_ms: u32,
    /// 1 when the first packet of a flow created here is deferred (`[pfsync] defer`): copied to the
    /// controller in a `FlowDeferEvent` and dropped, the controller re-injects it once a peer has the flow.
    pub defer: u8,
    /// Always zero.
    pub pad2: [u8; 3],
    /// CLOCK_MONOTONIC ns until which `live_peers` (and this node's own claim on its flows) holds,
    /// renewed by the controller every second; after it the balanced decision is by bucket only.
    pub live_until_ns: u64,
    /// Sync ids of the peers heard recently (0 = unused slot): their flows are left to them.
    pub live_peers: [u32; MAX_LIVE_PEERS],
}

/// Slots for live peer ids in `FlowConf`.
pub const MAX_LIVE_PEERS: usize = 8;

/// Per-carpdev flow counters (`carp_flow_stats`, a one-entry per-CPU array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FlowStats {
    /// Flows created by traffic on this carpdev.
    pub new_flows: u64,
    /// Frames that matched a known flow.
    pub known: u64,
    /// Frames dropped in stateful mode: no known flow and not allowed to start one.
    pub stateful_drop: u64,
    /// Frames of protocols stateful mode does not track (neither TCP, UDP nor ICMP), dropped.
    pub proto_drop: u64,
    /// Frames passed untracked: ICMP errors, neighbour discovery, IGMP, fragments, IPv6 hop-by-hop.
    pub untracked_pass: u64,
    /// TCP state changes seen.
    pub tcp_changes: u64,
    /// Events handed to the controller.
    pub events: u64,
    /// Events not sent because this CPU's per-millisecond budget was spent.
    pub events_ratelimited: u64,
    /// Events not sent because the ring buffer was full.
    pub events_lost: u64,
    /// New flows that could not be inserted (map update failed).
    pub insert_failed: u64,
    /// Balanced frames of flows created here, accepted although their bucket is now another gateway's.
    pub kept_here: u64,
    /// Balanced frames of a live peer's flows, dropped although their bucket is now ours.
    pub left_to_owner: u64,
    /// First packets of new flows handed to the controller (`FlowDeferEvent`) and dropped here.
    pub deferred: u64,
    /// First packets not deferred because the frame is larger than `FLOW_DEFER_MAX_FRAME` (passed).
    pub defer_oversize: u64,
    /// First packets not deferred because the event ring was full (passed).
    pub defer_lost: u64,
}

impl FlowStats {
    /// Every counter as (name, value), in declaration order.
    pub fn fields(&self) -> [(&'static str, u64); 15] {
        [
            ("new_flows", self.new_flows),
            ("known", self.known),
            ("stateful_drop", self.stateful_drop),
            ("proto_drop", self.proto_drop),
            ("untracked_pass", self.untracked_pass),
            ("tcp_changes", self.tcp_changes),
            ("events", self.events),
            ("events_ratelimited", self.events_ratelimited),
            ("events_lost", self.events_lost),
            ("insert_failed", self.insert_failed),
            ("kept_here", self.kept_here),
            ("left_to_owner", self.left_to_owner),
            ("deferred", self.deferred),
            ("defer_oversize", self.defer_oversize),
            ("defer_lost", self.defer_lost),
        ]
    }

    /// Field-wise sum (per-CPU values into one total).
    pub fn add(&self, o: &Self) -> Self {
        Self {
            new_flows: self.new_flows + o.new_flows,
            known: self.known + o.known,
            stateful_drop: self.stateful_drop + o.stateful_drop,
            proto_drop: self.proto_drop + o.proto_drop,
            untracked_pass: self.untracked_pass + o.untracked_pass,
            tcp_changes: self.tcp_changes + o.tcp_changes,
            events: self.events + o.events,
            events_ratelimited: self.events_ratelimited + o.events_ratelimited,
            events_lost: self.events_lost + o.events_lost,
            insert_failed: self.insert_failed + o.insert_failed,
            kept_here: self.kept_here + o.kept_here,
            left_to_owner: self.left_to_owner + o.left_to_owner,
            deferred: self.deferred + o.deferred,
            defer_oversize: self.defer_oversize + o.defer_oversize,
            defer_lost: self.defer_lost + o.defer_lost,
        }
    }
}

/// `FlowEvent::kind`: a flow was created here.
pub const FLOW_EVENT_NEW: u8 = 1;
/// `FlowEvent::kind`: a flow's TCP state changed.
pub const FLOW_EVENT_STATE: u8 = 2;

/// `FlowEvent::kind`: a flow was created here and its first packet deferred: the record is a whole
/// `FlowDeferEvent` (it stands for the `FLOW_EVENT_NEW` too).
pub const FLOW_EVENT_DEFER: u8 = 3;

/// Largest first packet (whole Ethernet frame) the dataplane defers; larger ones pass undeferred.
pub const FLOW_DEFER_MAX_FRAME: usize = 1536;

/// The first packet of a new flow, deferred (`FLOW_EVENT_DEFER` in `carp_flow_events`): a `FlowEvent`
/// followed by the frame, which the controller re-injects on `ifindex` once a peer has the flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowDeferEvent {
    /// The new-flow event (`kind` = `FLOW_EVENT_DEFER`).
    pub head: FlowEvent,
    /// The carpdev the frame arrived on.
    pub ifindex: u32,
    /// Bytes of `frame` in use.
    pub len: u32,
    /// The frame from its Ethernet header.
    pub frame: [u8; FLOW_DEFER_MAX_FRAME],
}

/// A new flow or a TCP state change, handed to the controller through `carp_flow_events`; byte and
/// packet counts the controller reads by scanning `carp_flows`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// `FLOW_EVENT_NEW` or `FLOW_EVENT_STATE`.
    pub kind: u8,
    /// Always zero.
    pub pad: [u8; 7],
    /// The flow.
    pub key: FlowKey,
    /// The entry as it was after this frame.
    pub entry: FlowEntry,
}

/// Per-CPU scratch of the flow decision (`carp_flow_scratch`, kernel-internal): the event rate
/// limit's budget state, and room to build a key and a new entry off the 512-byte BPF stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowScratch {
    /// The millisecond (ktime >> 20) the count belongs to.
    pub slot: u64,
    /// Events sent in that slot.
    pub count: u64,
    /// The key being looked up.
    pub key: FlowKey,
    /// The entry being created.
    pub entry: FlowEntry,
}

/// Advert event rate limits of one vhid (value of `carp_advert_limits`, an array indexed by vhid), the
/// state of its vhid-wide bucket and the bucket of its current main source.
///
/// Two token buckets, both GCRA (a bucket is one "theoretical arrival time"; an event is allowed while it
/// is at most `tolerance_ns` ahead of now, and each allowed event moves it `interval_ns` on): one per
/// (vhid, source address), checked first, so one flooding source cannot drain the vhid's budget, and a
/// vhid-wide one, which bounds the controller's work whatever the sources. One source's bucket lives
/// here (`owner_*`: the master's, so the common case needs no hash lookup); every other source's lives
/// in `carp_advert_sources` (or in the `second_*` slot, see there). The owner is exempt from the vhid
/// bucket, so a flood from many (spoofed) sources cannot crowd the master out; it is still held to its
/// own rate. Only the controller names the owner, and only after an advert from it passed the HMAC
/// check: the kernel cannot authenticate, so a flood (of one source or many, wrong password) that
/// starts before the master is heard must not be able to take the slot.
/// The loader writes `AdvertLimit::DEFAULT` into every slot of a fresh map; all-zero settings let
/// everything through.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdvertLimit {
    /// The vhid bucket's theoretical arrival time (CLOCK_MONOTONIC ns, coarse); written by the program.
    pub vhid_tat_ns: u64,
    /// ns between two events at the vhid's sustained rate.
    pub vhid_interval_ns: u64,
    /// How far ahead of now the vhid bucket may run: (burst - 1) intervals.
    pub vhid_tolerance_ns: u64,
    /// ns between two events at one source's sustained rate.
    pub src_interval_ns: u64,
    /// How far ahead of now one source's bucket may run: (burst - 1) intervals.
    pub src_tolerance_ns: u64,
    /// The bucket of the source that owns this slot; written by the program.
    pub owner_tat_ns: u64,
    /// The owner's address (IPv4 in the first four bytes); written by the controller once an advert
    /// from it authenticated.
    pub owner_addr: [u8; 16],
    /// The owner's address family, 4 or 6 (0: no owner yet); written by the controller.
    pub owner_family: u8,
    /// Always zero.
    pub pad: [u8; 7],
    /// The bucket of a second source kept here (the most active other one, typically a flood's), so
    /// that a flood from one address needs no hash lookup either; written by the program. Unlike the
    /// owner it is held to the vhid bucket too.
    pub second_tat_ns: u64,
    /// The second source's address; written by the program.
    pub second_addr: [u8; 16],
    /// The second source's family, 4 or 6 (0: none yet); written by the program.
    pub second_family: u8,
    /// Always zero.
    pub pad2: [u8; 7],
    /// How long the second source must have been quiet (past its bucket's arrival time) before
    /// another source may take the second slot.
    pub owner_idle_ns: u64,
    /// The (coarse) clock reading at which an advert of this vhid last found the ring buffer full;
    /// written by the program, which does not look at the ring again within the same clock tick.
    pub ring_full_ns: u64,
}

impl AdvertLimit {
    /// The limits carpd runs with. The fastest legitimate sender is a master at advbase 0, one advert
    /// every 1/256 s: a source may send twice that (512 events/s, bursts of 64, i.e. 250 ms of backlog
    /// after a stall), and a vhid eight such sources (4096 events/s, bursts of 512). The owner keeps its
    /// slot while it advertises at least every 3 s (advbase 1 and 2 with any advskew).
    pub const DEFAULT: AdvertLimit = AdvertLimit::new(4096, 512, 512, 64);

    /// How long an owner keeps its slot without advertising (see the type's doc).
    pub const OWNER_IDLE_NS: u64 = 3_000_000_000;

    /// Limits from rates (events per second, at least 1) and bursts (events, at least 1).
    pub const fn new(vhid_rate: u64, vhid_burst: u64, src_rate: u64, src_burst: u64) -> Self {
        let vhid_interval_ns = 1_000_000_000 / vhid_rate;
        let src_interval_ns = 1_000_000_000 / src_rate;
        AdvertLimit {
            vhid_tat_ns: 0,
            vhid_interval_ns,
            vhid_tolerance_ns: (vhid_burst - 1) * vhid_interval_ns,
            src_interval_ns,
            src_tolerance_ns: (src_burst - 1) * src_interval_ns,
            owner_tat_ns: 0,
            owner_addr: [0; 16],
            owner_family: 0,
            pad: [0; 7],
            second_tat_ns: 0,
            second_addr: [0; 16],
            second_family: 0,
            pad2: [0; 7],
            owner_idle_ns: Self::OWNER_IDLE_NS,
            ring_full_ns: 0,
        }
    }
}

/// Key of `carp_advert_sources`: one advert source of one vhid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// The source address (IPv4 in the first four bytes, the rest zero).
    pub addr: [u8; 16],
    /// The vhid.
    pub vhid: u8,
    /// 4 or 6.
    pub family: u8,
    /// Always zero; keeps the key free of padding.
    pub pad: [u8; 2],
}

/// True when a struct of `size` bytes is exactly its fields (`field_sizes`): no padding hole or tail
/// for the kernel to leave uninitialised or the compiler to fill with anything.
pub const fn no_padding(size: usize, field_sizes: &[usize]) -> bool {
    let mut sum = 0;
    let mut i = 0;
    while i < field_sizes.len() {
        sum += field_sizes[i];
        i += 1;
    }
    sum == size
}

/// The size of the field a projection returns (`|s: &S| &s.field`), for `no_padding`.
pub const fn field_size<S, F>(_field: fn(&S) -> &F) -> usize {
    core::mem::size_of::<F>()
}

/// Asserts at compile time that each type is exactly its fields, listed in full: a field added to the
/// type but not here, or a change that brings padding, fails the build. These are the types shared
/// with the kernel as `aya::Pod` (below), whose every byte must be defined.
macro_rules! assert_no_padding {
    ($($t:ident { $($f:ident),* $(,)? }),* $(,)?) => {
        $(
            const _: () = assert!(
                no_padding(core::mem::size_of::<$t>(), &[$(field_size(|s: &$t| &s.$f)),*]),
                concat!(stringify!($t), " has padding or a field missing from assert_no_padding!")
            );
        )*
    };
}

assert_no_padding! {
    CarpStats { ipackets, ipackets6, badttl, badlen, hdrops, badsum, badver, badvhid, adverts_to_controller, events_lost, arp_replies, na_replies, arp_dropped_backup, vmac_passed, vmac_dropped, balanced_pass, balanced_drop, events_ratelimited, vrrp_not_accepted },
    VhidEntry { state, mode, vmac, lease_until_ns },
    VipKey { family, pad, addr },
    LastAdvert { ktime_ns, src, family, advbase, advskew, demote, pad, carp, pad2 },
    AdvertEvent { ktime_ns, ifindex, family, ttl, unicast, pad, src, dst, src_mac, pad2, carp, pad3 },
    BalanceGroup { mode, nodes, pad, local_mask, lease_until_ns, mac, src_mac, vhids, pad2 },
    FlowKey { lo_addr, hi_addr, lo_port, hi_port, proto, family, pad },
    FlowEntry { id, created_ns, last_seen_ns, packets, bytes, creator, owner, tcp_state, flags, pad },
    FlowConf { mode, inside, owner, sticky, node_id, events_per_ms, defer, pad2, live_until_ns, live_peers },
    FlowStats { new_flows, known, stateful_drop, proto_drop, untracked_pass, tcp_changes, events, events_ratelimited, events_lost, insert_failed, kept_here, left_to_owner, deferred, defer_oversize, defer_lost },
    FlowEvent { kind, pad, key, entry },
    FlowDeferEvent { head, ifindex, len, frame },
    AdvertLimit { vhid_tat_ns, vhid_interval_ns, vhid_tolerance_ns, src_interval_ns, src_tolerance_ns, owner_tat_ns, owner_addr, owner_family, pad, second_tat_ns, second_addr, second_family, pad2, owner_idle_ns, ring_full_ns },
    SourceKey { addr, vhid, family, pad },
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, contain no pointers and have no padding (checked at
    // compile time by `assert_no_padding!` above: explicit pad fields fill every hole).
    unsafe impl aya::Pod for super::CarpStats {}
    unsafe impl aya::Pod for super::VhidEntry {}
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::LastAdvert {}
    unsafe impl aya::Pod for super::AdvertEvent {}
    unsafe impl aya::Pod for super::BalanceGroup {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowEntry {}
    unsafe impl aya::Pod for super::FlowConf {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::FlowDeferEvent {}
    unsafe impl aya::Pod for super::AdvertLimit {}
    unsafe impl aya::Pod for super::SourceKey {}
}

#[cfg(test)]
mod padding_tests {
    use super::*;

    /// The check itself catches padding (so the compile-time assertions above can fail): a u8 before
    /// a u64 leaves 7 bytes of hole.
    #[test]
    fn no_padding_sees_a_hole() {
        #[repr(C)]
        struct Holey {
            a: u8,
            b: u64,
        }
        let sizes = [field_size(|s: &Holey| &s.a), field_size(|s: &Holey| &s.b)];
        assert!(!no_padding(core::mem::size_of::<Holey>(), &sizes));
        assert!(no_padding(
            core::mem::size_of::<VipKey>(),
            &[
                field_size(|s: &VipKey| &s.family),
                field_size(|s: &VipKey| &s.pad),
                field_size(|s: &VipKey| &s.addr)
            ]
        ));
    }
}
