//! `carpctl sync` and `carpctl flows`: the driver's state, counters and flow table as report shapes
//! (`control::report`).
use super::{PEER_DEAD, flowmap};

use carp_common::maps::{FLOW_MODE_STATEFUL, FLOW_MODE_TRACK, FlowTcpState};

use crate::daemon::{Daemon, monotonic};

use crate::{
    control::{
        Response,
        report::{DataplaneFlowCounters, FlowRow, FlowsReport, SyncReport},
    },
    sync::BulkState,
};

impl Daemon {
    /// `carpctl sync`.
    pub(in crate::daemon) fn sync_report(&self) -> Response {
        let mut r = SyncReport {
            stateful: self.config.flows.stateful,
            bulk: "idle".into(),
            ..Default::default()
        };
        if let Some(p) = &self.config.pfsync {
            r.syncdev = Some(p.syncdev.clone());
        }
        if let Some(s) = &self.sync {
            r.node_id = s.node_id;
            for (name, dev) in &s.devs {
                let conf = dev.conf().unwrap_or_default();
                r.dataplane.push(DataplaneFlowCounters {
                    carpdev: name.clone(),
                    mode: match conf.mode {
                        FLOW_MODE_STATEFUL => "stateful",
                        FLOW_MODE_TRACK => "track",
                        _ => "off",
                    }
                    .into(),
                    inside: conf.inside != 0,
                    counters: dev
                        .stats()
                        .unwrap_or_default()
                        .fields()
                        .iter()
                        .map(|(n, v)| (n.to_string(), *v))
                        .collect(),
                });
            }
            if let Some(rep) = &s.repl {
                r.enabled = true;
                r.destination = Some(rep.sock.get_ref().dest().to_string());
                r.bulk = match rep.engine.bulk_state() {
                    BulkState::Idle => "idle",
                    BulkState::Requesting { .. } => "requesting",
                    BulkState::Receiving { .. } => "receiving",
                    BulkState::Done { complete: true } => "done",
                    BulkState::Done { complete: false } => "timed-out",
                }
                .into();
                r.demoted = rep.engine.demoted();
                r.bulk_ms = rep.engine.bulk_duration().map(|d| d.as_secs_f64() * 1000.0);
                r.live_peers = rep.engine.live_peers(monotonic(), PEER_DEAD);
                r.flows = rep.engine.table().len() as u64;
                r.counters = rep
                    .engine
                    .counters()
                    .iter()
                    .iter()
                    .map(|(n, v)| (n.to_string(), *v))
                    .collect();
                let t = rep.sock.get_ref().counters();
                r.counters.push(("received".into(), t.received));
                r.counters.push(("badttl".into(), t.badttl));
                r.counters.push(("oerrors".into(), t.oerrors));
                r.counters.push(("gso_datagrams".into(), t.gso_datagrams));
                r.counters.push(("gro_reads".into(), t.gro_reads));
                let d = &s.defer;
                r.counters.push(("defer_held".into(), d.held_total));
                r.counters
                    .push(("defer_holding".into(), d.held.len() as u64));
                r.counters
                    .push(("defer_released_ack".into(), d.released_ack));
                r.counters
                    .push(("defer_released_timeout".into(), d.released_timeout));
                r.counters
                    .push(("defer_reinject_failed".into(), d.reinject_failed));
            }
        }
        Response::Sync(r)
    }

    /// `carpctl flows`.
    pub(in crate::daemon) fn flows_report(&self) -> Response {
        let Some(s) = &self.sync else {
            return Response::Flows(FlowsReport::default());
        };
        let now_ns = monotonic().as_nanos();
        let mut flows: Vec<FlowRow> = s
            .table
            .scan()
            .into_iter()
            .map(|(k, e)| {
                let key = flowmap::key_from_kernel(&k);
                let ep = |e: &crate::sync::Endpoint| match e.addr {
                    std::net::IpAddr::V6(a) => format!("[{a}]:{}", e.port),
                    a => format!("{a}:{}", e.port),
                };
                FlowRow {
                    proto: match (k.proto, k.family) {
                        (6, _) => "tcp".into(),
                        (17, _) => "udp".into(),
                        (1, _) => "icmp".into(),
                        (58, _) => "icmp6".into(),
                        (p, _) => p.to_string(),
                    },
                    lo: ep(&key.lo),
                    hi: ep(&key.hi),
                    state: FlowTcpState::from_u8(e.tcp_state).as_str().into(),
                    creator: e.creator,
                    id: e.id,
                    owner: e.owner,
                    learned: e.learned(),
                    packets: e.packets,
                    bytes: e.bytes,
                    age_s: now_ns.saturating_sub(e.created_ns) / 1_000_000_000,
                    idle_s: now_ns.saturating_sub(e.last_seen_ns) / 1_000_000_000,
                }
            })
            .collect();
        flows.sort_by(|a, b| (&a.proto, &a.lo, &a.hi).cmp(&(&b.proto, &b.lo, &b.hi)));
        Response::Flows(FlowsReport { flows })
    }
}
