//! The sans-IO conntrack mirror: what this node knows of netfilter's state table, its own entries and
//! those learned from peers, and the rules that decide what goes to the peers and what into the kernel.
//!
//! It is fed `(now, input)` and answers with [`CtAction`]s; it never reads a clock or touches a socket.
//! Its driver (carpd's conntrack threads) turns kernel events into [`LocalEvent`]s (the echoes of its
//! own inserts, which carry the inject socket's portid, are dropped in the kernel by a socket
//! filter), hands it the peers' messages, and carries out what it asks: sync packets, kernel
//! inserts/updates/deletes, and table dumps.
//!
//! The rules (pfsync's, applied to conntrack):
//! - a local event is the kernel's truth: merged into the cache (events are partial) and queued for
//!   the peers, coalesced per entry and sent when a packet is full or `flush_delay` passed;
//! - a peer's update never moves an entry's TCP state back: an older copy is answered with ours;
//! - a peer's copy of one of our own entries that tells nothing new (same state, tuples, mark and
//!   labels, no status bit we lack) leaves the kernel untouched, and the entry ours (on a BACKUP it
//!   becomes the peer's, refreshed, as any learned entry);
//! - an entry learned from a peer is never sent on (no echo loop through the kernel), and when the
//!   kernel destroys a learned copy (it expired here) the peer is not told: its copy is the live one;
//! - a learned entry's timeout is refreshed in the kernel at half its life while the peer that taught
//!   it is alive (the peer's kernel keeps the connection alive without events; its DESTROY ends it);
//! - the node's CARP role ([`CtRole`]) sharpens the last two: a MASTER of every vhid carries all
//!   the traffic, so its kernel's timers rule every entry (none refreshed) and every DESTROY there is
//!   a connection's end (sent, learned entries' too); a BACKUP of every vhid carries none, so the
//!   entries it held as MASTER become the new MASTER's (handed over: refreshed while a peer lives,
//!   their expiry here not sent, where it would delete the live copy), and a peer's DEL of an entry
//!   its own traffic made is not applied (the MASTER's copy of it expiring means nothing here);
//! - the bulk: at start a request is sent (and repeated) until a peer answers with BULK_START, entries
//!   and BULK_END; a short count asks again; `BulkApplied` tells the driver the transfer is over so it
//!   lifts the demotion once its inserts are in the kernel.

mod bulk;
mod filter;
mod queue;
mod timers;

pub use filter::{CtConfig, CtFilter};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use crate::engine::Time;

use super::entry::{CtEntry, CtKey, status};
use super::wire::CtMessage;

/// What this node's CARP state says about who carries the connections (set by the driver).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CtRole {
    /// Some vhids MASTER here and some not, balancing, or no election yet: no node is known to
    /// carry all the traffic (learned entries refreshed while their teacher lives, only our own
    /// entries' DESTROYs sent).
    #[default]
    Shared,
    /// MASTER of every vhid (no balancing): this node carries all the traffic.
    Master,
    /// MASTER of none (no balancing): a peer carries all the traffic.
    Backup,
}

/// A change the kernel reported (its own, not an echo of ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalEvent {
    /// A new or changed entry; `has_mark` when the event carried the mark (a NEW always does: absent
    /// means 0).
    Update {
        /// The entry as the event described it.
        entry: CtEntry,
        /// The event carried `CTA_MARK`.
        has_mark: bool,
    },
    /// The entry is gone.
    Destroy(CtKey),
}

/// A change the driver makes to the kernel's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtOp {
    /// An entry we did not have: create it (NAT bindings re-created from `entry.nat()`).
    Create(CtEntry),
    /// An entry we have: update it (timeout, status, TCP state, mark, labels).
    Update(CtEntry),
    /// Delete it.
    Delete(CtKey),
}

/// What the mirror asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtAction {
    /// Send these messages in one sync packet.
    Send(Vec<CtMessage>),
    /// Change the kernel's table.
    Apply(CtOp),
    /// A peer asked for every entry: dump the kernel's table and pass it to [`CtMirror::bulk_out`].
    Dump,
    /// The bulk transfer to this node is over (`complete`: every entry arrived; false: gave up):
    /// once the `Apply`s before this are in the kernel, the bulk demotion may go.
    BulkApplied {
        /// True if BULK_END arrived with every entry.
        complete: bool,
    },
}

/// Where the conntrack bulk transfer to this node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CtBulkState {
    /// Not started.
    Idle,
    /// Requests sent, no BULK_START yet.
    Requesting {
        /// Requests sent.
        tries: u32,
    },
    /// BULK_START arrived.
    Receiving {
        /// Entries announced.
        expected: u32,
        /// Entries received so far.
        received: u32,
    },
    /// Over.
    Done {
        /// True if every entry arrived.
        complete: bool,
    },
}

/// The mirror's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CtCounters {
    /// Kernel events taken in (echoes of our own inserts are not).
    pub events: u64,
    /// Conntrack messages sent.
    pub sent: u64,
    /// Conntrack messages received.
    pub received: u64,
    /// Changes made to the kernel's table for peers (creates, updates, deletes).
    pub applied: u64,
    /// Entries learned (new here).
    pub learned: u64,
    /// Peer copies older than ours (ours sent back).
    pub stale: u64,
    /// Entries left out by the filter (zones, protocols, ignored addresses).
    pub filtered: u64,
    /// Learned entries' timeouts refreshed.
    pub refreshed: u64,
    /// Bulk transfers sent.
    pub bulk_sent: u64,
    /// Bulk transfers received completely.
    pub bulk_received: u64,
    /// Bulk transfers that ended short (asked again).
    pub bulk_incomplete: u64,
    /// Table resyncs (after an event overrun).
    pub resyncs: u64,
    /// Bulk requests answered by a bulk already under way or just sent (the asker's repeats).
    pub bulk_coalesced: u64,
    /// Peer copies of this node's own entries that carried nothing new, and a MASTER's DELs of a
    /// BACKUP's own entries (left as they are).
    pub known: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Local,
    Learned(u32),
    // Ours while we were MASTER; the new MASTER carries it now.
    HandedOver,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    entry: CtEntry,
    origin: Origin,
    refresh_at: Option<Time>,
}

#[derive(Clone, Copy, Debug)]
enum BulkIn {
    Idle,
    Requesting {
        tries: u32,
        next_at: Time,
    },
    Receiving {
        from: u32,
        expected: u32,
        got: u32,
        tries: u32,
        deadline: Time,
    },
    Done {
        complete: bool,
    },
}

/// The conntrack mirror (see the module doc).
#[derive(Debug)]
pub struct CtMirror {
    cfg: CtConfig,
    table: HashMap<CtKey, Slot>,
    // Entries whose state is due to the peers (true: a DEL), in the order first queued.
    queue: HashMap<CtKey, bool>,
    order: Vec<CtKey>,
    queued_bytes: usize,
    flush_at: Option<Time>,
    refresh: BinaryHeap<Reverse<(Time, CtKey)>>,
    live: Vec<u32>,
    role: CtRole,
    // MASTER of every vhid since the last hand-over to a peer.
    carried: bool,
    bulk_in: BulkIn,
    // A `Dump` asked for and not yet sent; when the last bulk out was sent.
    dumping: bool,
    bulk_out_end: Option<Time>,
    // Entries of `Origin::Learned`, kept as the table changes: the driver reports it every
    // second, and a walk over a million entries would stall the thread for milliseconds.
    n_learned: usize,
    counters: CtCounters,
}

fn is_learned(o: Origin) -> bool {
    matches!(o, Origin::Learned(_))
}

impl CtMirror {
    /// An empty mirror.
    pub fn new(cfg: CtConfig) -> CtMirror {
        CtMirror {
            cfg,
            table: HashMap::new(),
            queue: HashMap::new(),
            order: Vec::new(),
            queued_bytes: 0,
            flush_at: None,
            refresh: BinaryHeap::new(),
            live: Vec::new(),
            role: CtRole::Shared,
            carried: false,
            bulk_in: BulkIn::Idle,
            dumping: false,
            bulk_out_end: None,
            n_learned: 0,
            counters: CtCounters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &CtCounters {
        &self.counters
    }

    /// Entries known (local and learned).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True if no entry is known.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Entries learned from peers.
    pub fn learned(&self) -> usize {
        #[cfg(test)]
        assert_eq!(
            self.n_learned,
            self.table.values().filter(|s| is_learned(s.origin)).count(),
            "the learned count drifted from the table"
        );
        self.n_learned
    }

    /// One entry.
    pub fn get(&self, k: &CtKey) -> Option<&CtEntry> {
        self.table.get(k).map(|s| &s.entry)
    }

    /// Where the bulk transfer to this node stands.
    pub fn bulk_state(&self) -> CtBulkState {
        match self.bulk_in {
            BulkIn::Idle => CtBulkState::Idle,
            BulkIn::Requesting { tries, .. } => CtBulkState::Requesting { tries },
            BulkIn::Receiving { expected, got, .. } => CtBulkState::Receiving {
                expected,
                received: got,
            },
            BulkIn::Done { complete } => CtBulkState::Done { complete },
        }
    }

    /// The entries of the bulk being received, if one is (for the table-size check).
    pub fn bulk_expected(&self) -> Option<u32> {
        match self.bulk_in {
            BulkIn::Receiving { expected, .. } => Some(expected),
            _ => None,
        }
    }

    /// The peers heard recently (the sync engine's `live_peers`): learned entries are refreshed only
    /// while their teacher is among them.
    pub fn set_live(&mut self, live: Vec<u32>) {
        self.live = live;
    }

    /// The node's CARP role (module doc). Becoming BACKUP after MASTER hands our entries over to
    /// the new MASTER; any change re-arms the refreshes the new role wants. One walk over the table
    /// per change (on the conntrack thread; roles change with elections, not with traffic).
    pub fn set_role(&mut self, now: Time, role: CtRole) {
        if role == self.role {
            return;
        }
        self.role = role;
        // The vhids change one at a time, so MASTER -> BACKUP passes through shared: what counts is
        // whether we were MASTER since the last hand-over (not at start-up, whose adopted entries
        // the peers may never have had).
        let hand_over = role == CtRole::Backup && self.carried;
        self.carried = match role {
            CtRole::Master => true,
            CtRole::Backup => false,
            CtRole::Shared => self.carried,
        };
        let mut due = Vec::new();
        for (k, slot) in &mut self.table {
            if hand_over && slot.origin == Origin::Local {
                slot.origin = Origin::HandedOver;
            }
            if role != CtRole::Master && slot.origin != Origin::Local && slot.refresh_at.is_none() {
                due.push(*k);
            }
        }
        for k in due {
            self.schedule_refresh(now, k);
        }
    }

    /// True if the kernel's DESTROY of an entry of `origin` ends the connection for the peers too.
    fn destroy_is_news(&self, origin: Origin) -> bool {
        match self.role {
            CtRole::Master => true,
            CtRole::Shared | CtRole::Backup => origin == Origin::Local,
        }
    }

    /// Starts the bulk request (at start-up).
    pub fn start(&mut self, now: Time) -> Vec<CtAction> {
        let mut out = Vec::new();
        if matches!(self.bulk_in, BulkIn::Idle) {
            self.bulk_in = BulkIn::Requesting {
                tries: 0,
                next_at: now,
            };
            self.timers(now, usize::MAX, &mut out);
        }
        out
    }

    /// Takes entries the kernel holds at start-up into the table, as this node's own, unannounced.
    pub fn adopt(&mut self, entries: impl IntoIterator<Item = CtEntry>) {
        for e in entries {
            if self.cfg.filter.accepts(&e.key) {
                let old = self.table.insert(
                    e.key,
                    Slot {
                        entry: e,
                        origin: Origin::Local,
                        refresh_at: None,
                    },
                );
                if old.is_some_and(|s| is_learned(s.origin)) {
                    self.n_learned -= 1;
                }
            }
        }
    }

    /// A kernel event.
    pub fn local(&mut self, now: Time, ev: LocalEvent) -> Vec<CtAction> {
        let mut out = Vec::new();
        match ev {
            LocalEvent::Update { entry, has_mark } => {
                if !self.cfg.filter.accepts(&entry.key) {
                    self.counters.filtered += 1;
                    return out;
                }
                self.counters.events += 1;
                let k = entry.key;
                match self.table.get_mut(&k) {
                    None => {
                        self.table.insert(
                            k,
                            Slot {
                                entry,
                                origin: Origin::Local,
                                refresh_at: None,
                            },
                        );
                    }
                    Some(slot) => {
                        slot.entry.absorb(&entry, has_mark);
                        if self.role == CtRole::Backup && slot.origin != Origin::Local {
                            // A straggler through the BACKUP: the MASTER carries the connection
                            // and tells its changes; ours would only race them.
                            return out;
                        }
                        // Traffic here: the entry is ours now (after a takeover), refreshed by the kernel.
                        if is_learned(slot.origin) {
                            self.n_learned -= 1;
                        }
                        slot.origin = Origin::Local;
                        slot.refresh_at = None;
                    }
                }
                self.enqueue(now, k, false, &mut out);
            }
            LocalEvent::Destroy(k) => {
                if !self.cfg.filter.accepts(&k) {
                    self.counters.filtered += 1;
                    return out;
                }
                self.counters.events += 1;
                let gone = self.table.remove(&k);
                if gone.is_some_and(|s| is_learned(s.origin)) {
                    self.n_learned -= 1;
                }
                match gone {
                    // Our copy of a peer's entry expired here: the peer's is the live one (unless
                    // we carry all the traffic: then nobody's is).
                    Some(slot) if !self.destroy_is_news(slot.origin) => {}
                    _ => self.enqueue(now, k, true, &mut out),
                }
            }
        }
        out
    }

    /// A conntrack message from peer `from`.
    pub fn remote(&mut self, now: Time, from: u32, m: CtMessage) -> Vec<CtAction> {
        let mut out = Vec::new();
        self.counters.received += 1;
        match m {
            CtMessage::Upd { entry, bulk } => {
                if bulk
                    && let BulkIn::Receiving { from: f, got, .. } = &mut self.bulk_in
                    && *f == from
                {
                    *got = got.saturating_add(1);
                }
                self.learn(now, from, entry, &mut out);
            }
            CtMessage::Del(k) => {
                if self.role == CtRole::Backup
                    && self
                        .table
                        .get(&k)
                        .is_some_and(|s| s.origin == Origin::Local)
                {
                    // Our own traffic's entry: the MASTER's copy expired, ours is the live one.
                    self.counters.known += 1;
                } else if self.cfg.filter.accepts(&k) {
                    if self.table.remove(&k).is_some_and(|s| is_learned(s.origin)) {
                        self.n_learned -= 1;
                    }
                    self.drop_queued(&k);
                    self.counters.applied += 1;
                    out.push(CtAction::Apply(CtOp::Delete(k)));
                } else {
                    self.counters.filtered += 1;
                }
            }
            CtMessage::BulkReq => {
                // A dump takes seconds for a big table, longer than the asker waits before it asks
                // again: the repeats that cross our answer get that answer, not one bulk each.
                let answered = self
                    .bulk_out_end
                    .is_some_and(|t| now < t + self.cfg.request_interval);
                if self.dumping || answered {
                    self.counters.bulk_coalesced += 1;
                } else {
                    self.dumping = true;
                    out.push(CtAction::Dump);
                }
            }
            CtMessage::BulkStart(expected) => {
                if let BulkIn::Requesting { tries, .. } = self.bulk_in {
                    let per_sec = 200_000u64;
                    let bound = Duration::from_secs(u64::from(expected) / per_sec * 4)
                        .max(self.cfg.bulk_end_min);
                    self.bulk_in = BulkIn::Receiving {
                        from,
                        expected,
                        got: 0,
                        tries,
                        deadline: now + bound,
                    };
                }
            }
            CtMessage::BulkEnd(sent) => {
                if let BulkIn::Receiving {
                    from: f,
                    got,
                    tries,
                    ..
                } = self.bulk_in
                    && f == from
                {
                    if got >= sent {
                        self.counters.bulk_received += 1;
                        self.bulk_in = BulkIn::Done { complete: true };
                        out.push(CtAction::BulkApplied { complete: true });
                    } else {
                        // A packet of the transfer was lost: ask again rather than call a table with a
                        // hole complete (the demotion stays).
                        self.counters.bulk_incomplete += 1;
                        self.bulk_in = BulkIn::Requesting {
                            tries,
                            next_at: now,
                        };
                        self.timers(now, 0, &mut out);
                    }
                }
            }
        }
        out
    }

    fn learn(&mut self, now: Time, from: u32, entry: CtEntry, out: &mut Vec<CtAction>) {
        let k = entry.key;
        if !self.cfg.filter.accepts(&k) {
            self.counters.filtered += 1;
            return;
        }
        match self.table.get_mut(&k) {
            None => {
                self.table.insert(
                    k,
                    Slot {
                        entry,
                        origin: Origin::Learned(from),
                        refresh_at: None,
                    },
                );
                self.n_learned += 1;
                self.counters.learned += 1;
                self.counters.applied += 1;
                out.push(CtAction::Apply(CtOp::Create(entry)));
            }
            Some(slot) => {
                if slot.origin == Origin::Local && entry.tells_nothing_new(&slot.entry) {
                    // Our own entry come back (a peer's bulk answer holds its copies of ours): the
                    // kernel has it as it is. Unless a peer carries the traffic (we are BACKUP, so
                    // the copy is the MASTER's and must be refreshed here), the entry stays ours:
                    // taking it as learned would make both sides refresh each other's copy.
                    self.counters.known += 1;
                    if self.role == CtRole::Backup {
                        self.n_learned += 1;
                        slot.origin = Origin::Learned(from);
                        self.schedule_refresh(now, k);
                    }
                    return;
                }
                if entry.rank() < slot.entry.rank() {
                    // Never back: ours is newer, and the peer gets it.
                    self.counters.stale += 1;
                    self.enqueue(now, k, false, out);
                    return;
                }
                let mut merged = entry;
                // Status bits only ever get set (the kernel refuses clearing SEEN_REPLY/ASSURED).
                merged.status |= slot.entry.status & status::REPLICATED;
                if merged.tcp.is_none() {
                    merged.tcp = slot.entry.tcp;
                }
                if merged.labels.is_none() {
                    merged.labels = slot.entry.labels;
                }
                slot.entry = merged;
                if !is_learned(slot.origin) {
                    self.n_learned += 1;
                }
                slot.origin = Origin::Learned(from);
                self.counters.applied += 1;
                out.push(CtAction::Apply(CtOp::Update(merged)));
                // Learned entries are never sent on.
                self.drop_queued(&k);
            }
        }
        self.schedule_refresh(now, k);
    }
}

#[cfg(test)]
mod tests;
