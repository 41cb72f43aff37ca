//! What leaves: the coalescing queues (pfsync's), sequence numbers and sealers, packing and flushing
//! packets, and the paced bulk transfer to a peer.

use super::{BulkOut, FULL_MSG, Kind, Queued, Sealer, SyncAction, SyncEngine, ms};

use crate::engine::Time;
use crate::sync::state::FlowId;
use crate::sync::wire::{Message, OVERHEAD, PacketBuilder};

impl SyncEngine {
    pub(super) fn packet_room(&self) -> usize {
        self.config.mtu.min(crate::sync::wire::MAX_PACKET) - OVERHEAD
    }

    pub(super) fn enqueue(&mut self, now: Time, id: FlowId, kind: Kind, out: &mut Vec<SyncAction>) {
        let (old_len, new_kind) = match self.queue.get(&id) {
            Some(q) => (q.kind.wire_len(), q.kind.combine(kind)),
            None => (0, kind),
        };
        let grow = new_kind.wire_len().saturating_sub(old_len);
        if self.queued_bytes + grow > self.packet_room() {
            // The next message would not fit: send what we have (pfsync's MTU rule).
            self.flush(now, out);
            self.queue.insert(id, Queued { kind, updates: 0 });
            self.order.push(id);
            self.queued_bytes += kind.wire_len();
        } else {
            match self.queue.get_mut(&id) {
                Some(q) => {
                    self.queued_bytes = self.queued_bytes - old_len + new_kind.wire_len();
                    q.kind = new_kind;
                }
                None => {
                    self.queue.insert(
                        id,
                        Queued {
                            kind: new_kind,
                            updates: 0,
                        },
                    );
                    self.order.push(id);
                    self.queued_bytes += new_kind.wire_len();
                }
            }
        }
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.config.flush_interval);
        }
    }

    pub(super) fn push_extra(&mut self, now: Time, m: Message, out: &mut Vec<SyncAction>) {
        if self.queued_bytes + m.wire_len() > self.packet_room() {
            self.flush(now, out);
        }
        self.queued_bytes += m.wire_len();
        self.extra.push(m);
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.config.flush_interval);
        }
    }

    pub(super) fn drop_queued(&mut self, mut gone: impl FnMut(&FlowId) -> bool) {
        let queue = &mut self.queue;
        let mut freed = 0;
        self.order.retain(|id| {
            if gone(id) {
                if let Some(q) = queue.remove(id) {
                    freed += q.kind.wire_len();
                }
                false
            } else {
                true
            }
        });
        self.queued_bytes -= freed;
    }

    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A sealer for another thread's packets (see [`Sealer`]).
    pub fn sealer(&self) -> Sealer {
        Sealer {
            key: self.key.clone(),
            node_id: self.config.node_id,
            seq: self.seq.clone(),
        }
    }

    pub(super) fn send(&mut self, b: PacketBuilder, out: &mut Vec<SyncAction>) {
        let seq = self.next_seq();
        let bytes = b.finish(&self.key, self.config.node_id, seq);
        self.counters.opackets += 1;
        self.counters.obytes += bytes.len() as u64;
        out.push(SyncAction::Send(bytes));
    }

    /// Sends everything queued (normally one packet: the MTU rule keeps the queue under one).
    pub(super) fn flush(&mut self, now: Time, out: &mut Vec<SyncAction>) {
        self.flush_at = None;
        self.queued_bytes = 0;
        if self.order.is_empty() && self.extra.is_empty() {
            return;
        }
        let now_ms = ms(now);
        let mtu = self.config.mtu;
        let mut b = PacketBuilder::with_capacity(mtu);
        let extra = std::mem::take(&mut self.extra);
        for m in &extra {
            if !b.fits(m, mtu) {
                let full = std::mem::replace(&mut b, PacketBuilder::with_capacity(mtu));
                self.send(full, out);
            }
            b.push(m, now_ms);
        }
        let order = std::mem::take(&mut self.order);
        for id in &order {
            let Some(q) = self.queue.remove(id) else {
                continue;
            };
            let len = q.kind.wire_len();
            if b.len() + len > mtu {
                let full = std::mem::replace(&mut b, PacketBuilder::with_capacity(mtu));
                self.send(full, out);
            }
            match (q.kind, self.table.get(id)) {
                (Kind::Del, _) => b.push(&Message::Del(*id), now_ms),
                (Kind::Ins { ack }, Some(f)) => b.push_full(f, Some(ack), now_ms),
                (Kind::Upd, Some(f)) => b.push_full(f, None, now_ms),
                (Kind::UpdC, Some(f)) => b.push_compressed(&f.update(), now_ms),
                // Deleted since it was queued: the DEL replaced it, nothing to say.
                (_, None) => {}
            }
        }
        self.order = order;
        self.order.clear();
        if !b.is_empty() {
            self.send(b, out);
        }
    }

    pub(super) fn bulk_tick(&mut self, now: Time, out: &mut Vec<SyncAction>) {
        let Some(mut bulk) = self.bulk_out.take() else {
            return;
        };
        let now_ms = ms(now);
        let mtu = self.config.mtu;
        for _ in 0..bulk.per_tick {
            let mut b = PacketBuilder::with_capacity(mtu);
            while bulk.pos < bulk.ids.len() {
                if b.len() + FULL_MSG > mtu {
                    break;
                }
                if let Some(f) = self.table.get(&bulk.ids[bulk.pos]) {
                    b.push_full(f, None, now_ms);
                    bulk.sent += 1;
                }
                bulk.pos += 1;
            }
            let end = Message::BulkEnd { flows: bulk.sent };
            let done = bulk.pos >= bulk.ids.len() && b.fits(&end, mtu);
            if done {
                b.push(&end, now_ms);
            }
            if !b.is_empty() {
                self.send(b, out);
            }
            if done {
                self.counters.bulk_sent += 1;
                self.bulk_out_ended = Some(now);
                return;
            }
        }
        // The next tick is due one interval after this one was, not after now: the time the tick
        // itself took (or a late wake-up) does not slow the transfer down. A sender that fell behind
        // catches up one tick per call.
        bulk.next_at = (bulk.next_at + self.config.bulk_interval).max(now);
        self.bulk_out = Some(bulk);
    }

    pub(super) fn start_bulk_out(&mut self, now: Time, out: &mut Vec<SyncAction>) {
        if self.bulk_out.is_some() {
            // One transfer at a time; a second requester gets the rest of this one and retries.
            return;
        }
        let again_soon = self
            .bulk_out_ended
            .is_some_and(|t| now.saturating_duration_since(t) < 2 * self.config.request_interval);
        self.bulk_slowdown = if again_soon {
            (self.bulk_slowdown + 1).min(6)
        } else {
            0
        };
        let per_tick = (self.config.bulk_packets_per_tick >> self.bulk_slowdown).max(1);
        let ids: Vec<FlowId> = self.table.keys().copied().collect();
        let flows = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let mut b = PacketBuilder::with_capacity(64);
        b.push(&Message::BulkStart { flows }, ms(now));
        self.send(b, out);
        self.bulk_out = Some(BulkOut {
            ids,
            pos: 0,
            sent: 0,
            next_at: now,
            per_tick,
        });
        self.bulk_tick(now, out);
    }
}
