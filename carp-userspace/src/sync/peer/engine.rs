//! The engine's public face: construction, accessors, `handle` (one event in, actions out), start-up,
//! the bulk demotion, the link, the timers and the local flow events.

use super::{
    BulkState, ConfigError, FlowTable, Kind, MIN_MTU, SyncAction, SyncConfig, SyncCounters,
    SyncEngine, SyncEvent,
};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::engine::{DEFAULT_GROUP, Time};
use crate::sync::auth::SyncKey;
use crate::sync::state::{FlowId, FlowState, merge};
use crate::sync::wire::{ID_BODY, MSG_HEADER_LEN, Message, OVERHEAD, PacketBuilder};

impl SyncEngine {
    /// An engine with an empty table.
    pub fn new(config: SyncConfig, key: SyncKey) -> Result<SyncEngine, ConfigError> {
        if config.node_id == 0 {
            return Err(ConfigError::NodeZero);
        }
        let min = MIN_MTU;
        if config.mtu < min {
            return Err(ConfigError::MtuTooSmall {
                mtu: config.mtu,
                min,
            });
        }
        Ok(SyncEngine {
            seq: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(config.seq_start)),
            config,
            key,
            table: FlowTable::default(),
            queue: HashMap::default(),
            order: Vec::new(),
            extra: Vec::new(),
            queued_bytes: 0,
            flush_at: None,
            windows: HashMap::new(),
            counters: SyncCounters::default(),
            bulk_out: None,
            bulk_out_ended: None,
            bulk_slowdown: 0,
            bulk_in: BulkState::Idle,
            bulk_rx: None,
            bulk_asked_at: None,
            bulk_took: None,
            demoted: false,
            link_down: false,
            deferred: VecDeque::new(),
            heard: HashMap::new(),
            keepalive_at: None,
            ct_pending: false,
            flow_bulk_done: false,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The replicated flow table (local and learned flows).
    pub fn table(&self) -> &FlowTable {
        &self.table
    }

    /// One flow.
    pub fn flow(&self, id: FlowId) -> Option<&FlowState> {
        self.table.get(&id)
    }

    /// The counters.
    pub fn counters(&self) -> &SyncCounters {
        &self.counters
    }

    /// Where the bulk transfer to this node stands.
    pub fn bulk_state(&self) -> BulkState {
        self.bulk_in
    }

    /// How long the last bulk transfer to this node took, from the first request to BULK_END (or to
    /// giving up); None before one finished.
    pub fn bulk_duration(&self) -> Option<Duration> {
        self.bulk_took
    }

    /// The flows the bulk transfer being received announced (its BULK_START), so a driver can make room
    /// for them up front; None unless receiving one.
    pub fn bulk_expected(&self) -> Option<u32> {
        self.bulk_rx.map(|rx| rx.flows)
    }

    /// True while this node is sending a bulk transfer.
    pub fn bulk_sending(&self) -> bool {
        self.bulk_out.is_some()
    }

    /// True while the bulk demotion of group "carp" is held.
    pub fn demoted(&self) -> bool {
        self.demoted
    }

    /// The demotion of group "carp" this engine holds now (the bulk's and the syncdev-down one), which a
    /// driver that drops the engine (a reload) must give back.
    pub fn held_demotion(&self) -> i32 {
        let bulk = if self.demoted {
            i32::from(self.config.bulk_demote)
        } else {
            0
        };
        bulk + i32::from(self.link_down)
    }

    /// Takes a flow the dataplane already has (after a restart) into the table without announcing it.
    pub fn adopt(&mut self, flow: FlowState) {
        self.table.insert(flow.id, flow);
    }

    /// The peers whose last authentic packet arrived no more than `within` before `now`, lowest id first.
    pub fn live_peers(&self, now: Time, within: Duration) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .heard
            .iter()
            .filter(|&(_, &t)| now.saturating_duration_since(t) <= within)
            .map(|(&id, _)| id)
            .collect();
        v.sort_unstable();
        v
    }

    /// When the engine next needs a `Timer` event, if ever.
    pub fn next_deadline(&self) -> Option<Time> {
        let bulk_in = match self.bulk_in {
            BulkState::Requesting { next_at, .. } => Some(next_at),
            BulkState::Receiving { deadline } => Some(deadline),
            _ => None,
        };
        [
            self.flush_at,
            self.bulk_out.as_ref().map(|b| b.next_at),
            bulk_in,
            self.deferred.front().map(|d| d.1),
            self.config
                .keepalive
                .map(|_| self.keepalive_at.unwrap_or(Time::ZERO)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Feeds one event at `now` and returns what to do, in order.
    pub fn handle(&mut self, now: Time, event: SyncEvent<'_>) -> Vec<SyncAction> {
        let mut out = Vec::new();
        // Due timers run on every call, so a driver that wakes late loses nothing.
        self.run_timers(now, &mut out);
        match event {
            SyncEvent::Start => self.start(now, &mut out),
            SyncEvent::LocalInsert(flow) => self.local_insert(now, flow, &mut out),
            SyncEvent::LocalUpdate(flow) => self.local_update(now, flow, &mut out),
            SyncEvent::LocalDelete(id) => {
                if self.table.remove(&id).is_some() {
                    self.enqueue(now, id, Kind::Del, &mut out);
                }
            }
            SyncEvent::LocalClear => {
                let me = self.config.node_id;
                self.table.retain(|id, _| id.creator != me);
                self.drop_queued(|id| id.creator == me);
                self.push_extra(now, Message::Clr { creator: me }, &mut out);
            }
            SyncEvent::Packet(bytes) => self.receive(now, bytes, &mut out),
            SyncEvent::Link { up } => self.link(up, &mut out),
            SyncEvent::Timer => {}
        }
        out
    }

    pub(super) fn start(&mut self, now: Time, out: &mut Vec<SyncAction>) {
        if !matches!(self.bulk_in, BulkState::Idle) {
            return;
        }
        if !self.demoted && self.config.bulk_demote > 0 {
            self.demoted = true;
            out.push(SyncAction::Demote {
                group: DEFAULT_GROUP,
                delta: i32::from(self.config.bulk_demote),
                reason: "sync start: waiting for the bulk transfer",
            });
        }
        self.bulk_in = BulkState::Requesting {
            tries: 0,
            next_at: now,
        };
        self.run_timers(now, out);
    }

    pub(super) fn finish_bulk_in(&mut self, now: Time, complete: bool, out: &mut Vec<SyncAction>) {
        self.bulk_in = BulkState::Done { complete };
        self.bulk_rx = None;
        if let Some(t) = self.bulk_asked_at.take() {
            self.bulk_took = Some(now.saturating_duration_since(t));
        }
        if complete {
            self.counters.bulk_received += 1;
        }
        if self.demoted && self.ct_pending {
            self.flow_bulk_done = true;
        } else if self.demoted {
            self.demoted = false;
            out.push(SyncAction::Demote {
                group: DEFAULT_GROUP,
                delta: -i32::from(self.config.bulk_demote),
                reason: if complete {
                    "sync done: bulk transfer received"
                } else {
                    "sync done: gave up waiting for the bulk transfer"
                },
            });
        }
    }

    pub(super) fn link(&mut self, up: bool, out: &mut Vec<SyncAction>) {
        // Idempotent, like carpdev link events: only a change moves the counter.
        if up != self.link_down {
            return;
        }
        self.link_down = !up;
        out.push(SyncAction::Demote {
            group: DEFAULT_GROUP,
            delta: if up { -1 } else { 1 },
            reason: if up { "syncdev up" } else { "syncdev down" },
        });
    }

    pub(super) fn run_timers(&mut self, now: Time, out: &mut Vec<SyncAction>) {
        match self.bulk_in {
            BulkState::Requesting { tries, next_at } if now >= next_at => {
                if tries >= self.config.request_tries {
                    self.finish_bulk_in(now, false, out);
                } else {
                    self.bulk_asked_at.get_or_insert(now);
                    self.bulk_in = BulkState::Requesting {
                        tries: tries + 1,
                        next_at: now + self.config.request_interval,
                    };
                    self.extra.push(Message::UpdReq(FlowId::BULK));
                    self.queued_bytes += MSG_HEADER_LEN + ID_BODY;
                    self.flush(now, out);
                }
            }
            BulkState::Receiving { deadline } if now >= deadline => {
                self.finish_bulk_in(now, false, out);
            }
            _ => {}
        }
        while let Some(&(flow, until)) = self.deferred.front() {
            if until > now {
                break;
            }
            self.deferred.pop_front();
            self.counters.defer_timeouts += 1;
            out.push(SyncAction::Release { flow, acked: false });
        }
        if let Some(every) = self.config.keepalive
            && self.keepalive_at.is_none_or(|t| now >= t)
        {
            // The first due time only arms it: the bulk request at start says we are alive.
            if self.keepalive_at.is_some() && !self.link_down {
                self.send(PacketBuilder::with_capacity(OVERHEAD), out);
            }
            self.keepalive_at = Some(now + every);
        }
        if self.flush_at.is_some_and(|t| now >= t) {
            self.flush(now, out);
        }
        if self.bulk_out.as_ref().is_some_and(|b| now >= b.next_at) {
            self.bulk_tick(now, out);
        }
    }

    pub(super) fn local_insert(&mut self, now: Time, flow: FlowState, out: &mut Vec<SyncAction>) {
        let id = flow.id;
        if !self.table.contains_key(&id) && self.table.len() >= self.config.max_flows {
            // The flow works in the dataplane; it is only not replicated.
            self.counters.table_full += 1;
            return;
        }
        self.table.insert(id, flow);
        let ack = self.config.defer;
        self.enqueue(now, id, Kind::Ins { ack }, out);
        if ack {
            if self.deferred.len() >= self.config.defer_limit
                && let Some((old, _)) = self.deferred.pop_front()
            {
                // Over the limit the oldest held packet goes first, as OpenBSD does.
                self.counters.defer_timeouts += 1;
                out.push(SyncAction::Release {
                    flow: old,
                    acked: false,
                });
            }
            let until = now + self.config.defer_timeout;
            self.deferred.push_back((id, until));
            out.push(SyncAction::Hold { flow: id, until });
            // The held packet waits on this INS: send it now, not in a second.
            self.flush(now, out);
        }
    }

    pub(super) fn local_update(&mut self, now: Time, flow: FlowState, out: &mut Vec<SyncAction>) {
        let id = flow.id;
        match self.table.get_mut(&id) {
            None => {
                self.table.insert(id, flow);
                self.enqueue(now, id, Kind::Ins { ack: false }, out);
            }
            Some(ours) => {
                // Merging (rather than overwriting) keeps the table monotone even if the dataplane
                // reports an older view than a peer already taught us.
                if merge(ours, &flow).changed {
                    self.enqueue(now, id, Kind::UpdC, out);
                    if let Some(q) = self.queue.get_mut(&id) {
                        q.updates += 1;
                        if q.updates >= u32::from(self.config.maxupd) {
                            self.flush(now, out);
                        }
                    }
                }
            }
        }
    }

    /// Holds the bulk demotion, once taken, until [`SyncEngine::conntrack_bulk_done`] too (call it
    /// before `Start` when the conntrack mirror runs).
    pub fn wait_for_conntrack_bulk(&mut self) {
        self.ct_pending = true;
    }

    /// The conntrack bulk was applied (or given up on): the demotion goes once the flow bulk is done too.
    pub fn conntrack_bulk_done(&mut self) -> Vec<SyncAction> {
        let mut out = Vec::new();
        self.ct_pending = false;
        if self.flow_bulk_done && self.demoted {
            self.flow_bulk_done = false;
            self.demoted = false;
            out.push(SyncAction::Demote {
                group: DEFAULT_GROUP,
                delta: -i32::from(self.config.bulk_demote),
                reason: "sync done: flow and conntrack bulk transfers applied",
            });
        }
        out
    }
}
