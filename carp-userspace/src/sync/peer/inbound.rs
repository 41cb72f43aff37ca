//! What arrives: a packet checked and decoded, each message applied by the merge rules (full and
//! compressed updates, deletes, clears, bulk requests and ends, acknowledgements of deferred flows).

use super::{BulkRx, BulkState, FlowOp, Kind, MAX_BULK_RESERVE, SyncAction, SyncEngine, ms};
use crate::engine::Time;
use crate::sync::state::{FlowId, FlowState, FlowUpdate, merge, merge_update};
use crate::sync::wire::{Message, PacketRepr, SyncRejection};

impl SyncEngine {
    pub(super) fn receive(&mut self, now: Time, bytes: &[u8], out: &mut Vec<SyncAction>) {
        let packet = match PacketRepr::parse(bytes, &self.key, ms(now)) {
            Ok(p) => p,
            Err(e) => return self.counters.reject(&e),
        };
        if packet.sender == self.config.node_id {
            return self.counters.reject(&SyncRejection::Loop);
        }
        let window = self.windows.entry(packet.sender).or_default();
        if !window.check(packet.seq) {
            return self
                .counters
                .reject(&SyncRejection::Replay { seq: packet.seq });
        }
        // Only an authentic, well-formed, fresh packet moves the window.
        window.accept(packet.seq);
        self.heard.insert(packet.sender, now);
        self.counters.ipackets += 1;
        if let Some(rx) = self.bulk_rx.as_mut()
            && rx.sender == packet.sender
        {
            rx.packets += 1;
            if let BulkState::Receiving { deadline } = &mut self.bulk_in {
                *deadline = rx.until.min(now + self.config.bulk_idle);
            }
        }
        let (sender, seq) = (packet.sender, packet.seq);
        let mut urgent = false;
        for m in packet.messages {
            urgent |= self.message(now, sender, seq, m, out);
        }
        if urgent {
            self.flush(now, out);
        }
    }

    pub(super) fn release_deferred(&mut self, id: FlowId, out: &mut Vec<SyncAction>) {
        if self.deferred.is_empty() {
            return;
        }
        if let Some(pos) = self.deferred.iter().position(|d| d.0 == id) {
            self.deferred.remove(pos);
            out.push(SyncAction::Release {
                flow: id,
                acked: true,
            });
        }
    }

    /// Applies one received message; returns true if what it queued should go out at once.
    pub(super) fn message(
        &mut self,
        now: Time,
        sender: u32,
        seq: u64,
        m: Message,
        out: &mut Vec<SyncAction>,
    ) -> bool {
        match m {
            Message::Ins { flow, ack } => {
                let id = flow.id;
                self.full(now, flow, out);
                if ack {
                    self.push_extra(now, Message::InsAck(id), out);
                    return true;
                }
            }
            Message::Upd(flow) => self.full(now, flow, out),
            Message::UpdC(u) => return self.compressed(now, u, out),
            Message::Del(id) => {
                self.release_deferred(id, out);
                if let Some(f) = self.table.remove(&id) {
                    self.counters.deleted += 1;
                    self.drop_queued(|q| *q == id);
                    out.push(SyncAction::Apply(FlowOp::Delete(f)));
                }
            }
            Message::Clr { creator } => {
                self.table.retain(|id, _| id.creator != creator);
                self.drop_queued(|id| id.creator == creator);
                out.push(SyncAction::Apply(FlowOp::Clear { creator }));
            }
            Message::UpdReq(id) if id == FlowId::BULK => self.start_bulk_out(now, out),
            Message::UpdReq(id) => {
                if self.table.contains_key(&id) {
                    self.enqueue(now, id, Kind::Upd, out);
                }
            }
            Message::BulkStart { flows } => {
                if let BulkState::Requesting { tries, .. } = self.bulk_in {
                    let until = now + self.config.bulk_end_bound(flows);
                    self.bulk_rx = Some(BulkRx {
                        sender,
                        flows,
                        start_seq: seq,
                        packets: 1,
                        tries,
                        until,
                    });
                    // Growing the table once instead of doubling it ~20 times during a big bulk.
                    let room = (flows as usize).min(MAX_BULK_RESERVE);
                    self.table.reserve(room.saturating_sub(self.table.len()));
                    self.bulk_in = BulkState::Receiving {
                        deadline: until.min(now + self.config.bulk_idle),
                    };
                }
            }
            Message::BulkEnd { .. } => match (self.bulk_in, self.bulk_rx) {
                (BulkState::Receiving { .. }, Some(rx)) if rx.sender == sender => {
                    let sent = seq.wrapping_sub(rx.start_seq).saturating_add(1);
                    if rx.packets >= sent {
                        self.finish_bulk_in(now, true, out);
                    } else {
                        // A packet of the transfer was lost: its flows may be missing here. Ask again
                        // (the demotion stays) rather than call a table with a hole complete.
                        self.counters.bulk_incomplete += 1;
                        self.bulk_rx = None;
                        self.bulk_in = BulkState::Requesting {
                            tries: rx.tries,
                            next_at: now,
                        };
                        self.run_timers(now, out);
                    }
                }
                // Another peer's transfer ends while we receive this one's: not ours to finish.
                (BulkState::Receiving { .. }, Some(_)) => {}
                // BULK_START was lost (or the transfer began before we asked): its range is unknown.
                (BulkState::Requesting { .. } | BulkState::Receiving { .. }, _) => {
                    self.counters.bulk_incomplete += 1;
                    self.bulk_rx = None;
                    if let BulkState::Requesting { tries, .. } = self.bulk_in {
                        self.bulk_in = BulkState::Requesting {
                            tries,
                            next_at: now,
                        };
                        self.run_timers(now, out);
                    }
                }
                _ => {}
            },
            Message::InsAck(id) => self.release_deferred(id, out),
            Message::Ct(msg) => out.push(SyncAction::Conntrack { from: sender, msg }),
        }
        false
    }

    pub(super) fn full(&mut self, now: Time, flow: FlowState, out: &mut Vec<SyncAction>) {
        let id = flow.id;
        // Any copy of a deferred flow from a peer proves the peer has it (spec §8, deferral).
        self.release_deferred(id, out);
        let full = self.table.len() >= self.config.max_flows;
        match self.table.get_mut(&id) {
            None if full => {
                self.counters.table_full += 1;
            }
            None => {
                self.counters.learned += 1;
                out.push(SyncAction::Apply(FlowOp::Insert(flow.clone())));
                self.table.insert(id, flow);
            }
            Some(ours) => {
                let r = merge(ours, &flow);
                if r.changed {
                    self.counters.merged += 1;
                    out.push(SyncAction::Apply(FlowOp::Update(ours.clone())));
                }
                if r.stale {
                    self.counters.stale += 1;
                    self.enqueue(now, id, Kind::UpdC, out);
                }
            }
        }
    }

    pub(super) fn compressed(
        &mut self,
        now: Time,
        u: FlowUpdate,
        out: &mut Vec<SyncAction>,
    ) -> bool {
        let id = u.id;
        self.release_deferred(id, out);
        match self.table.get_mut(&id) {
            None => {
                // We cannot build a flow from a compressed update: ask for the full state.
                self.counters.requested += 1;
                self.push_extra(now, Message::UpdReq(id), out);
            }
            Some(ours) => {
                let r = merge_update(ours, &u);
                if r.changed {
                    self.counters.merged += 1;
                    out.push(SyncAction::Apply(FlowOp::Update(ours.clone())));
                }
                if r.stale {
                    self.counters.stale += 1;
                    self.enqueue(now, id, Kind::UpdC, out);
                }
            }
        }
        false
    }
}
