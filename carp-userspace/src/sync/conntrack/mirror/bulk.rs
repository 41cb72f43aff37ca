//! The bulk transfer out and the table resync: a peer's bulk request answered from a dump of the
//! kernel's table (framed by BULK_START and BULK_END), and the repair after lost kernel events,
//! where a fresh dump is compared with the table.

use std::collections::HashMap;

use crate::engine::Time;

use super::super::entry::{CtEntry, CtKey};
use super::super::wire::CtMessage;
use super::{CtAction, CtMirror, Origin, Slot, is_learned};

impl CtMirror {
    /// The kernel's table, dumped for a peer's bulk request: every replicated entry goes out, framed
    /// by BULK_START and BULK_END. The dump is also the truth about our own entries (their timeouts).
    pub fn bulk_out(&mut self, entries: Vec<CtEntry>) -> Vec<CtAction> {
        let mut msgs = Vec::with_capacity(entries.len() + 2);
        msgs.push(CtMessage::BulkStart(0));
        for e in entries {
            if !self.cfg.filter.accepts(&e.key) {
                continue;
            }
            if let Some(slot) = self.table.get_mut(&e.key) {
                if slot.origin == Origin::Local {
                    slot.entry = e;
                }
            } else {
                self.table.insert(
                    e.key,
                    Slot {
                        entry: e,
                        origin: Origin::Local,
                        refresh_at: None,
                    },
                );
            }
            msgs.push(CtMessage::Upd {
                entry: e,
                bulk: true,
            });
        }
        let n = u32::try_from(msgs.len() - 1).unwrap_or(u32::MAX);
        msgs[0] = CtMessage::BulkStart(n);
        msgs.push(CtMessage::BulkEnd(n));
        self.counters.bulk_sent += 1;
        self.counters.sent += msgs.len() as u64;
        let mut out = Vec::new();
        self.pack(msgs, &mut out);
        out
    }

    /// The bulk `bulk_out` made has been sent (or the dump failed) at `now`: requests that crossed
    /// it are answered by it (see `remote`), later ones get a bulk of their own.
    pub fn bulk_out_sent(&mut self, now: Time) {
        self.dumping = false;
        self.bulk_out_end = Some(now);
    }

    /// Repairs the table after lost kernel events (an ENOBUFS overrun): `entries` is a fresh dump.
    /// Our entries that changed or are new go to the peers; ours that are gone from the kernel go as
    /// DEL (their DESTROY was among the lost events).
    pub fn resync(&mut self, now: Time, entries: Vec<CtEntry>) -> Vec<CtAction> {
        let mut out = Vec::new();
        self.counters.resyncs += 1;
        let mut seen: HashMap<CtKey, ()> = HashMap::with_capacity(entries.len());
        for e in entries {
            if !self.cfg.filter.accepts(&e.key) {
                continue;
            }
            seen.insert(e.key, ());
            let changed = match self.table.get_mut(&e.key) {
                None => {
                    self.table.insert(
                        e.key,
                        Slot {
                            entry: e,
                            origin: Origin::Local,
                            refresh_at: None,
                        },
                    );
                    true
                }
                Some(slot) if slot.origin == Origin::Local => {
                    let differs = slot.entry.status != e.status
                        || slot.entry.tcp != e.tcp
                        || slot.entry.mark != e.mark
                        || slot.entry.labels != e.labels;
                    slot.entry = e;
                    differs
                }
                Some(_) => false,
            };
            if changed {
                self.enqueue(now, e.key, false, &mut out);
            }
        }
        let gone: Vec<CtKey> = self
            .table
            .iter()
            .filter(|(k, _)| !seen.contains_key(k))
            .map(|(k, s)| (*k, s.origin))
            .filter_map(|(k, o)| self.destroy_is_news(o).then_some(k))
            .collect();
        // Learned copies the kernel dropped are forgotten silently (see `local`).
        let mut forgot = 0;
        self.table.retain(|k, s| {
            let keep = seen.contains_key(k);
            if !keep && is_learned(s.origin) {
                forgot += 1;
            }
            keep
        });
        self.n_learned -= forgot;
        for k in gone {
            self.enqueue(now, k, true, &mut out);
        }
        out
    }
}
