//! The queue of changes due to the peers: coalesced per entry (the last state wins, a DEL
//! replaces an update), flushed when a packet's worth is queued or `flush_delay` passed, and cut
//! into sync packets that fill the MTU.

use crate::engine::Time;
use crate::sync::wire::{MSG_HEADER_LEN, OVERHEAD};

use super::super::entry::CtKey;
use super::super::wire::CtMessage;
use super::{CtAction, CtMirror};

/// Bytes one update (a full entry) takes in a sync packet.
pub(super) const UPD_LEN: usize = MSG_HEADER_LEN + super::super::wire::ENTRY_BODY;
/// Bytes one delete (a key) takes in a sync packet.
pub(super) const DEL_LEN: usize = MSG_HEADER_LEN + super::super::wire::KEY_BODY;

impl CtMirror {
    pub(super) fn room(&self) -> usize {
        self.cfg.mtu.min(crate::sync::wire::MAX_PACKET) - OVERHEAD
    }

    pub(super) fn enqueue(&mut self, now: Time, k: CtKey, del: bool, out: &mut Vec<CtAction>) {
        let len = if del { DEL_LEN } else { UPD_LEN };
        match self.queue.get_mut(&k) {
            Some(d) => {
                if *d != del {
                    self.queued_bytes =
                        self.queued_bytes + len - if *d { DEL_LEN } else { UPD_LEN };
                    *d = del;
                }
            }
            None => {
                if self.queued_bytes + len > self.room() {
                    self.flush(out);
                }
                self.queue.insert(k, del);
                self.order.push(k);
                self.queued_bytes += len;
            }
        }
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.cfg.flush_delay);
        }
    }

    pub(super) fn drop_queued(&mut self, k: &CtKey) {
        if let Some(del) = self.queue.remove(k) {
            self.queued_bytes -= if del { DEL_LEN } else { UPD_LEN };
            // `order` keeps the key; flush skips keys no longer queued.
        }
    }

    pub(super) fn flush(&mut self, out: &mut Vec<CtAction>) {
        self.flush_at = None;
        self.queued_bytes = 0;
        let order = std::mem::take(&mut self.order);
        let mut msgs = Vec::with_capacity(order.len());
        for k in order {
            let Some(del) = self.queue.remove(&k) else {
                continue;
            };
            if del {
                msgs.push(CtMessage::Del(k));
            } else if let Some(s) = self.table.get(&k) {
                msgs.push(CtMessage::Upd {
                    entry: s.entry,
                    bulk: false,
                });
            }
        }
        self.counters.sent += msgs.len() as u64;
        self.pack(msgs, out);
    }

    /// Cuts messages into packets that fill the MTU.
    pub(super) fn pack(&self, msgs: Vec<CtMessage>, out: &mut Vec<CtAction>) {
        let room = self.room();
        let mut cur = Vec::new();
        let mut used = 0;
        for m in msgs {
            let len = MSG_HEADER_LEN + m.body_len();
            if used + len > room && !cur.is_empty() {
                out.push(CtAction::Send(std::mem::take(&mut cur)));
                used = 0;
            }
            used += len;
            cur.push(m);
        }
        if !cur.is_empty() {
            out.push(CtAction::Send(cur));
        }
    }
}
