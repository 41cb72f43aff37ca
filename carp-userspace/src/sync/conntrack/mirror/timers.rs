//! The mirror's clock-driven work: the flush of queued changes, the bulk request and its
//! repeats, the wait for BULK_END, and the refresh of learned entries' timeouts at half their life
//! while their teacher is alive (on a BACKUP: while any peer is, handed-over entries too). The driver calls [`CtMirror::timer`] at [`CtMirror::next_deadline`].

use std::cmp::Reverse;
use std::time::Duration;

use crate::engine::Time;

use super::super::entry::CtKey;
use super::super::wire::CtMessage;
use super::{BulkIn, CtAction, CtMirror, CtOp, CtRole, Origin};

impl CtMirror {
    /// When the mirror next needs [`CtMirror::timer`].
    pub fn next_deadline(&self) -> Option<Time> {
        let bulk = match self.bulk_in {
            BulkIn::Requesting { next_at, .. } => Some(next_at),
            BulkIn::Receiving { deadline, .. } => Some(deadline),
            _ => None,
        };
        let refresh = self.refresh.peek().map(|Reverse((t, _))| *t);
        [self.flush_at, bulk, refresh].into_iter().flatten().min()
    }

    /// Runs what is due: the flush, the bulk request and its timeout, and at most `budget` refreshes
    /// (the driver bounds the work one wake-up does; the rest are due at once).
    pub fn timer(&mut self, now: Time, budget: usize) -> Vec<CtAction> {
        let mut out = Vec::new();
        self.timers(now, budget, &mut out);
        out
    }

    pub(super) fn timers(&mut self, now: Time, budget: usize, out: &mut Vec<CtAction>) {
        match self.bulk_in {
            BulkIn::Requesting { tries, next_at } if now >= next_at => {
                if tries >= self.cfg.request_tries {
                    self.bulk_in = BulkIn::Done { complete: false };
                    out.push(CtAction::BulkApplied { complete: false });
                } else {
                    self.bulk_in = BulkIn::Requesting {
                        tries: tries + 1,
                        next_at: now + self.cfg.request_interval,
                    };
                    self.counters.sent += 1;
                    out.push(CtAction::Send(vec![CtMessage::BulkReq]));
                }
            }
            BulkIn::Receiving {
                tries, deadline, ..
            } if now >= deadline => {
                self.counters.bulk_incomplete += 1;
                self.bulk_in = BulkIn::Requesting {
                    tries,
                    next_at: now,
                };
                self.timers(now, 0, out);
            }
            _ => {}
        }
        let mut done = 0;
        while done < budget {
            let Some(&Reverse((t, k))) = self.refresh.peek() else {
                break;
            };
            if t > now {
                break;
            }
            self.refresh.pop();
            let Some(slot) = self.table.get_mut(&k) else {
                continue;
            };
            // A later apply moved (or a local event cleared) the refresh: this heap entry is stale.
            if slot.refresh_at != Some(t) {
                continue;
            }
            slot.refresh_at = None;
            // A gone teacher, or traffic here: the kernel's own timers take over (traffic here
            // keeps the entries that are still in use).
            let due = match (self.role, slot.origin) {
                (_, Origin::Local) | (CtRole::Master, _) => false,
                (CtRole::Backup, _) => !self.live.is_empty(),
                (CtRole::Shared, Origin::Learned(teacher)) => self.live.contains(&teacher),
                (CtRole::Shared, Origin::HandedOver) => false,
            };
            if !due {
                continue;
            }
            done += 1;
            self.counters.refreshed += 1;
            self.counters.applied += 1;
            let entry = slot.entry;
            out.push(CtAction::Apply(CtOp::Update(entry)));
            self.schedule_refresh(now, k);
        }
        if self.flush_at.is_some_and(|t| now >= t) {
            self.flush(out);
        }
    }

    pub(super) fn schedule_refresh(&mut self, now: Time, k: CtKey) {
        if !self.cfg.refresh {
            return;
        }
        let Some(slot) = self.table.get_mut(&k) else {
            return;
        };
        let half =
            Duration::from_secs(u64::from(slot.entry.timeout / 2)).max(Duration::from_secs(1));
        let at = now + half;
        slot.refresh_at = Some(at);
        self.refresh.push(Reverse((at, k)));
    }
}
