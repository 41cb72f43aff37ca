//! The shapes of `carpctl sync [--json]` and `carpctl flows [--json]` (design §2), their tables, and the
//! sync lines of the metrics. carpd fills them (`daemon::sync`); carpctl prints them.

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
    /// Every flow in the dataplane's table.
    pub flows: Vec<FlowRow>,
}

/// The text of `carpctl sync`.
pub fn sync_text(r: &SyncReport) -> String {
    let mut out = String::new();
    if !r.enabled {
        out.push_str("sync: not configured (no [pfsync] table)\n");
    } else {
        out.push_str(&format!(
            "sync: syncdev {} -> {}, node id {}, bulk {}{}, {} flows\n",
            r.syncdev.as_deref().unwrap_or("-"),
            r.destination.as_deref().unwrap_or("-"),
            r.node_id,
            r.bulk,
            if r.demoted {
                " (group carp demoted +32)"
            } else {
                ""
            },
            r.flows
        ));
        let live: Vec<String> = r.live_peers.iter().map(u32::to_string).collect();
        out.push_str(&format!(
            "live peers: {}\n",
            if live.is_empty() {
                "none".to_string()
            } else {
                live.join(", ")
            }
        ));
    }
    out.push_str(&format!(
        "flows: {}\n",
        if r.stateful {
            "stateful"
        } else {
            "not stateful"
        }
    ));
    if r.enabled {
        let mut rows = vec![vec!["COUNTER".to_string(), "VALUE".to_string()]];
        rows.extend(
            r.counters
                .iter()
                .map(|(n, v)| vec![n.clone(), v.to_string()]),
        );
        out.push_str(&crate::control::table(&rows));
    }
    for d in &r.dataplane {
        out.push_str(&format!(
            "{} ({}{}):",
            d.carpdev,
            d.mode,
            if d.inside { ", inside" } else { "" }
        ));
        for (n, v) in &d.counters {
            out.push_str(&format!(" {n}={v}"));
        }
        out.push('\n');
    }
    out
}

/// The table of `carpctl flows`.
pub fn flows_table(r: &FlowsReport) -> String {
    let mut rows = vec![
        [
            "PROTO", "LO", "HI", "STATE", "CREATOR", "LEARNED", "PKTS", "BYTES", "AGE", "IDLE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for f in &r.flows {
        rows.push(vec![
            f.proto.clone(),
            f.lo.clone(),
            f.hi.clone(),
            f.state.clone(),
            format!("{}/{:x}", f.creator, f.id),
            if f.learned { "yes" } else { "no" }.into(),
            format!("{}/{}", f.packets[0], f.packets[1]),
            format!("{}/{}", f.bytes[0], f.bytes[1]),
            format!("{}s", f.age_s),
            format!("{}s", f.idle_s),
        ]);
    }
    crate::control::table(&rows)
}

/// Appends the sync counters to an OpenMetrics text (before its `# EOF`).
pub fn append_metrics(text: &mut String, r: &SyncReport) {
    let eof = text.ends_with("# EOF\n");
    if eof {
        text.truncate(text.len() - "# EOF\n".len());
    }
    text.push_str("# HELP carp_sync_enabled 1 when [pfsync] replication runs.\n");
    text.push_str("# TYPE carp_sync_enabled gauge\n");
    text.push_str(&format!("carp_sync_enabled {}\n", u8::from(r.enabled)));
    text.push_str("# HELP carp_sync_flows Flows the sync engine knows (local and learned).\n");
    text.push_str("# TYPE carp_sync_flows gauge\n");
    text.push_str(&format!("carp_sync_flows {}\n", r.flows));
    text.push_str("# HELP carp_sync_demoted 1 while the bulk demotion of group carp is held.\n");
    text.push_str("# TYPE carp_sync_demoted gauge\n");
    text.push_str(&format!("carp_sync_demoted {}\n", u8::from(r.demoted)));
    text.push_str(
        "# HELP carp_sync_counter Sync protocol and transport counters (badauth, replay, ...).\n",
    );
    text.push_str("# TYPE carp_sync_counter gauge\n");
    for (n, v) in &r.counters {
        text.push_str(&format!("carp_sync_counter{{counter=\"{n}\"}} {v}\n"));
    }
    text.push_str("# HELP carp_flow_counter The dataplane's flow table counters per carpdev.\n");
    text.push_str("# TYPE carp_flow_counter gauge\n");
    for d in &r.dataplane {
        for (n, v) in &d.counters {
            text.push_str(&format!(
                "carp_flow_counter{{carpdev=\"{}\",counter=\"{n}\"}} {v}\n",
                d.carpdev
            ));
        }
    }
    if eof {
        text.push_str("# EOF\n");
    }
}
