//! `carpctl sync` and `carpctl flows`: the driver's state, counters and flow table as report shapes
//! (`control::report`).
use super::PEER_DEAD;

use carp_common::maps::{FLOW_MODE_STATEFUL, FLOW_MODE_TRACK};

use crate::daemon::{Daemon, monotonic};

use crate::{
    control::{
        Response,
        report::{DataplaneFlowCounters, SyncReport},
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
                if let Some(ct) = &rep.ct {
                    r.conntrack = Some(Box::new(ct.report()));
                }
            }
        }
        Response::Sync(r)
    }

    /// `carpctl flows`: where the flow table is pinned, for the connection's lister thread
    /// (`daemon::flowlist`); the listing itself never runs on the loop.
    pub(in crate::daemon) fn flows_pin(&self) -> Response {
        match (&self.sync, self.devs.first()) {
            (Some(_), Some(d)) => Response::FlowsPin {
                bpffs: self.options.bpffs.clone(),
                carpdev: d.name.clone(),
            },
            _ => Response::FlowsEnd { listed: 0 },
        }
    }
}
