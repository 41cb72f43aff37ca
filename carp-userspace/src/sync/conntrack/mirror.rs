//! The sans-IO conntrack mirror: what this node knows of netfilter's state table, its own entries and
//! those learned from peers, and the rules that decide what goes to the peers and what into the kernel.
//!
//! It is fed `(now, input)` and answers with [`CtAction`]s; it never reads a clock or touches a socket.
//! Its driver (carpd's conntrack thread) turns kernel events into [`LocalEvent`]s (after dropping the
//! echoes of its own inserts, which carry the inject socket's portid), hands it the peers' messages,
//! and carries out what it asks: sync packets, kernel inserts/updates/deletes, and table dumps.
//!
//! The rules (pfsync's, applied to conntrack):
//! - a local event is the kernel's truth: merged into the cache (events are partial) and queued for
//!   the peers, coalesced per entry and sent when a packet is full or `flush_delay` passed;
//! - a peer's update never moves an entry's TCP state back: an older copy is answered with ours;
//! - an entry learned from a peer is never sent on (no echo loop through the kernel), and when the
//!   kernel destroys a learned copy (it expired here) the peer is not told: its copy is the live one;
//! - a learned entry's timeout is refreshed in the kernel at half its life while the peer that taught
//!   it is alive (the peer's kernel keeps the connection alive without events; its DESTROY ends it);
//! - the bulk: at start a request is sent (and repeated) until a peer answers with BULK_START, entries
//!   and BULK_END; a short count asks again; `BulkApplied` tells the driver the transfer is over so it
//!   lifts the demotion once its inserts are in the kernel.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use crate::engine::Time;
use crate::sync::wire::{MSG_HEADER_LEN, OVERHEAD};

use super::entry::{CtEntry, CtKey, proto, status};
use super::wire::CtMessage;

/// Which entries are replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtFilter {
    /// Zones replicated; None = every zone.
    pub zones: Option<Vec<u16>>,
    /// IP protocols replicated.
    pub protocols: Vec<u8>,
    /// Address prefixes whose traffic is not replicated (the gateway's own addresses, the sync link).
    pub ignore: Vec<(IpAddr, u8)>,
}

impl Default for CtFilter {
    fn default() -> Self {
        CtFilter {
            zones: None,
            protocols: vec![
                proto::TCP,
                proto::UDP,
                proto::ICMP,
                proto::ICMPV6,
                proto::SCTP,
                proto::DCCP,
                proto::GRE,
            ],
            ignore: Vec::new(),
        }
    }
}

fn in_prefix(a: &IpAddr, (net, len): &(IpAddr, u8)) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from((*len).min(32)))
                .unwrap_or(0);
            u32::from(*a) & m == u32::from(*n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from((*len).min(128)))
                .unwrap_or(0);
            u128::from(*a) & m == u128::from(*n) & m
        }
        _ => false,
    }
}

impl CtFilter {
    /// True if the entry is replicated: its zone and protocol are, and neither end of its original
    /// direction is an ignored address.
    pub fn accepts(&self, k: &CtKey) -> bool {
        if let Some(z) = &self.zones
            && !z.contains(&k.zone)
        {
            return false;
        }
        self.protocols.contains(&k.orig.proto)
            && !self
                .ignore
                .iter()
                .any(|p| in_prefix(&k.orig.src, p) || in_prefix(&k.orig.dst, p))
    }
}

/// The mirror's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtConfig {
    /// Which entries are replicated.
    pub filter: CtFilter,
    /// Largest sync packet (as `SyncConfig::mtu`).
    pub mtu: usize,
    /// How long a local change waits for others to share its packet.
    pub flush_delay: Duration,
    /// How often the bulk request is repeated.
    pub request_interval: Duration,
    /// Bulk requests sent before giving up (then the demotion goes: there is no peer to wait for).
    pub request_tries: u32,
    /// The least wait for BULK_END after BULK_START (larger bulks get more).
    pub bulk_end_min: Duration,
    /// Refresh learned entries' timeouts while their teacher is alive.
    pub refresh: bool,
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig {
            filter: CtFilter::default(),
            mtu: 1400,
            flush_delay: Duration::from_millis(2),
            request_interval: Duration::from_secs(2),
            request_tries: 12,
            bulk_end_min: Duration::from_secs(10),
            refresh: true,
        }
    }
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Local,
    Learned(u32),
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
    bulk_in: BulkIn,
    counters: CtCounters,
}

const UPD_LEN: usize = MSG_HEADER_LEN + super::wire::ENTRY_BODY;
const DEL_LEN: usize = MSG_HEADER_LEN + super::wire::KEY_BODY;

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
            bulk_in: BulkIn::Idle,
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
        self.table
            .values()
            .filter(|s| matches!(s.origin, Origin::Learned(_)))
            .count()
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
                self.table.insert(
                    e.key,
                    Slot {
                        entry: e,
                        origin: Origin::Local,
                        refresh_at: None,
                    },
                );
            }
        }
    }

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

    fn timers(&mut self, now: Time, budget: usize, out: &mut Vec<CtAction>) {
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
            let Origin::Learned(teacher) = slot.origin else {
                continue;
            };
            if !self.live.contains(&teacher) {
                // The teacher is gone: the kernel's own timers take over (traffic here keeps the
                // entries that are still in use).
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

    fn schedule_refresh(&mut self, now: Time, k: CtKey) {
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
                        // Traffic here: the entry is ours now (after a takeover), refreshed by the kernel.
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
                match self.table.remove(&k) {
                    // Our copy of a peer's entry expired here: the peer's is the live one.
                    Some(Slot {
                        origin: Origin::Learned(_),
                        ..
                    }) => {}
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
                if self.cfg.filter.accepts(&k) {
                    self.table.remove(&k);
                    self.drop_queued(&k);
                    self.counters.applied += 1;
                    out.push(CtAction::Apply(CtOp::Delete(k)));
                } else {
                    self.counters.filtered += 1;
                }
            }
            CtMessage::BulkReq => out.push(CtAction::Dump),
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
                self.counters.learned += 1;
                self.counters.applied += 1;
                out.push(CtAction::Apply(CtOp::Create(entry)));
            }
            Some(slot) => {
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
                slot.origin = Origin::Learned(from);
                self.counters.applied += 1;
                out.push(CtAction::Apply(CtOp::Update(merged)));
                // Learned entries are never sent on.
                self.drop_queued(&k);
            }
        }
        self.schedule_refresh(now, k);
    }

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
            .filter_map(|(k, o)| (o == Origin::Local).then_some(k))
            .collect();
        // Learned copies the kernel dropped are forgotten silently (see `local`).
        self.table.retain(|k, _| seen.contains_key(k));
        for k in gone {
            self.enqueue(now, k, true, &mut out);
        }
        out
    }

    fn room(&self) -> usize {
        self.cfg.mtu.min(crate::sync::wire::MAX_PACKET) - OVERHEAD
    }

    fn enqueue(&mut self, now: Time, k: CtKey, del: bool, out: &mut Vec<CtAction>) {
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

    fn drop_queued(&mut self, k: &CtKey) {
        if let Some(del) = self.queue.remove(k) {
            self.queued_bytes -= if del { DEL_LEN } else { UPD_LEN };
            // `order` keeps the key; flush skips keys no longer queued.
        }
    }

    fn flush(&mut self, out: &mut Vec<CtAction>) {
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
    fn pack(&self, msgs: Vec<CtMessage>, out: &mut Vec<CtAction>) {
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

#[cfg(test)]
mod tests {
    use super::super::entry::{CtTuple, TcpInfo, tcp};
    use super::*;

    fn entry(i: u16, state: u8) -> CtEntry {
        let orig = CtTuple {
            src: "192.168.100.100".parse().unwrap(),
            dst: "10.0.0.100".parse().unwrap(),
            proto: proto::TCP,
            sport: 40000 + i,
            dport: 80,
        };
        let mut reply = orig.invert();
        reply.dst = "10.0.0.1".parse().unwrap();
        CtEntry {
            key: CtKey { zone: 0, orig },
            reply,
            status: status::CONFIRMED | status::SEEN_REPLY | status::SRC_NAT,
            timeout: 120,
            mark: 0,
            labels: None,
            tcp: Some(TcpInfo {
                state,
                wscale: [7, 7],
                flags: [0x23, 0x23],
            }),
        }
    }

    fn sends(a: &[CtAction]) -> Vec<CtMessage> {
        a.iter()
            .filter_map(|a| match a {
                CtAction::Send(m) => Some(m.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn applies(a: &[CtAction]) -> Vec<CtOp> {
        a.iter()
            .filter_map(|a| match a {
                CtAction::Apply(o) => Some(*o),
                _ => None,
            })
            .collect()
    }

    const T0: Time = Time::ZERO;

    #[test]
    fn local_changes_coalesce_and_flush_after_the_delay() {
        let mut m = CtMirror::new(CtConfig::default());
        let e = entry(1, tcp::SYN_SENT);
        assert!(
            m.local(
                T0,
                LocalEvent::Update {
                    entry: e,
                    has_mark: true
                }
            )
            .is_empty()
        );
        let e2 = entry(1, tcp::ESTABLISHED);
        assert!(
            m.local(
                T0,
                LocalEvent::Update {
                    entry: e2,
                    has_mark: false
                }
            )
            .is_empty()
        );
        assert_eq!(m.next_deadline(), Some(Time::from_millis(2)));
        let out = m.timer(Time::from_millis(2), usize::MAX);
        assert_eq!(
            sends(&out),
            vec![CtMessage::Upd {
                entry: e2,
                bulk: false
            }]
        );
    }

    #[test]
    fn a_full_packet_goes_at_once() {
        let mut m = CtMirror::new(CtConfig::default());
        let per = (1400 - OVERHEAD) / UPD_LEN;
        let mut out = Vec::new();
        for i in 0..=per as u16 {
            out.extend(m.local(
                T0,
                LocalEvent::Update {
                    entry: entry(i, 3),
                    has_mark: true,
                },
            ));
        }
        assert_eq!(sends(&out).len(), per);
    }

    #[test]
    fn learned_entries_are_created_then_updated_never_sent_on() {
        let mut m = CtMirror::new(CtConfig::default());
        let e = entry(1, tcp::ESTABLISHED);
        let out = m.remote(
            T0,
            9,
            CtMessage::Upd {
                entry: e,
                bulk: false,
            },
        );
        assert_eq!(applies(&out), vec![CtOp::Create(e)]);
        let out = m.remote(
            T0,
            9,
            CtMessage::Upd {
                entry: e,
                bulk: false,
            },
        );
        assert_eq!(applies(&out), vec![CtOp::Update(e)]);
        assert!(m.timer(Time::from_secs(1), usize::MAX).is_empty());
        // The kernel's own expiry of our copy is not the peer's business.
        let out = m.local(T0, LocalEvent::Destroy(e.key));
        assert!(out.is_empty());
        assert!(m.is_empty());
        assert!(sends(&m.timer(Time::from_secs(1), usize::MAX)).is_empty());
    }

    #[test]
    fn an_older_tcp_state_is_answered_with_ours() {
        let mut m = CtMirror::new(CtConfig::default());
        let ours = entry(1, tcp::FIN_WAIT);
        m.local(
            T0,
            LocalEvent::Update {
                entry: ours,
                has_mark: true,
            },
        );
        m.timer(Time::from_millis(2), usize::MAX);
        let out = m.remote(
            Time::from_millis(3),
            9,
            CtMessage::Upd {
                entry: entry(1, tcp::ESTABLISHED),
                bulk: false,
            },
        );
        assert!(applies(&out).is_empty());
        assert_eq!(m.counters().stale, 1);
        let out = m.timer(Time::from_millis(5), usize::MAX);
        assert_eq!(
            sends(&out),
            vec![CtMessage::Upd {
                entry: ours,
                bulk: false
            }]
        );
        assert_eq!(m.get(&ours.key).unwrap().tcp.unwrap().state, tcp::FIN_WAIT);
    }

    #[test]
    fn learned_timeouts_are_refreshed_only_while_the_teacher_lives() {
        let mut m = CtMirror::new(CtConfig::default());
        m.set_live(vec![9]);
        let e = entry(1, tcp::ESTABLISHED);
        m.remote(
            T0,
            9,
            CtMessage::Upd {
                entry: e,
                bulk: false,
            },
        );
        assert_eq!(m.next_deadline(), Some(Time::from_secs(60)));
        let out = m.timer(Time::from_secs(60), usize::MAX);
        assert_eq!(applies(&out), vec![CtOp::Update(e)]);
        assert_eq!(m.counters().refreshed, 1);
        m.set_live(vec![]);
        let out = m.timer(Time::from_secs(120), usize::MAX);
        assert!(applies(&out).is_empty());
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn local_traffic_on_a_learned_entry_makes_it_ours() {
        let mut m = CtMirror::new(CtConfig::default());
        m.set_live(vec![9]);
        let e = entry(1, tcp::ESTABLISHED);
        m.remote(
            T0,
            9,
            CtMessage::Upd {
                entry: e,
                bulk: false,
            },
        );
        let closing = entry(1, tcp::FIN_WAIT);
        m.local(
            T0,
            LocalEvent::Update {
                entry: closing,
                has_mark: false,
            },
        );
        assert_eq!(sends(&m.timer(Time::from_millis(2), usize::MAX)).len(), 1);
        // No refresh any more: the kernel's traffic keeps it.
        assert!(applies(&m.timer(Time::from_secs(60), usize::MAX)).is_empty());
        let out = m.local(T0, LocalEvent::Destroy(e.key));
        assert!(out.is_empty());
        assert_eq!(
            sends(&m.timer(Time::from_secs(61), usize::MAX)),
            vec![CtMessage::Del(e.key)]
        );
    }

    #[test]
    fn bulk_round_trip_and_short_bulk_asks_again() {
        let mut a = CtMirror::new(CtConfig::default());
        let mut b = CtMirror::new(CtConfig::default());
        let req = b.start(T0);
        assert_eq!(sends(&req), vec![CtMessage::BulkReq]);
        assert_eq!(a.remote(T0, 2, CtMessage::BulkReq), vec![CtAction::Dump]);
        let dump: Vec<CtEntry> = (0..100).map(|i| entry(i, tcp::ESTABLISHED)).collect();
        let pkts = a.bulk_out(dump);
        assert!(pkts.len() > 5);
        let msgs = sends(&pkts);
        // Lose one entry: b asks again.
        let mut out = Vec::new();
        for m in msgs
            .iter()
            .filter(|m| !matches!(m, CtMessage::Upd { entry, .. } if entry.key.orig.sport == 40050))
        {
            out.extend(b.remote(T0, 1, m.clone()));
        }
        assert_eq!(applies(&out).len(), 99);
        assert_eq!(sends(&out), vec![CtMessage::BulkReq]);
        assert_eq!(b.counters().bulk_incomplete, 1);
        let mut out = Vec::new();
        for m in msgs {
            out.extend(b.remote(T0, 1, m));
        }
        assert!(out.contains(&CtAction::BulkApplied { complete: true }));
        assert_eq!(b.len(), 100);
        assert_eq!(b.bulk_state(), CtBulkState::Done { complete: true });
    }

    #[test]
    fn alone_the_bulk_request_gives_up() {
        let mut b = CtMirror::new(CtConfig::default());
        b.start(T0);
        let mut now = T0;
        let mut done = Vec::new();
        for _ in 0..20 {
            now += Duration::from_secs(2);
            done.extend(b.timer(now, usize::MAX));
        }
        assert!(done.contains(&CtAction::BulkApplied { complete: false }));
        assert_eq!(sends(&done).len(), 11);
    }

    #[test]
    fn filter_zones_protocols_and_addresses() {
        let mut f = CtFilter::default();
        let e = entry(1, 3);
        assert!(f.accepts(&e.key));
        f.ignore.push(("192.168.100.0".parse().unwrap(), 24));
        assert!(!f.accepts(&e.key));
        f.ignore.clear();
        f.zones = Some(vec![1]);
        assert!(!f.accepts(&e.key));
        f.zones = None;
        f.protocols = vec![proto::UDP];
        assert!(!f.accepts(&e.key));
    }

    #[test]
    fn resync_sends_changes_and_dels_for_lost_destroys() {
        let mut m = CtMirror::new(CtConfig::default());
        for i in 0..3 {
            m.local(
                T0,
                LocalEvent::Update {
                    entry: entry(i, 3),
                    has_mark: true,
                },
            );
        }
        m.timer(Time::from_millis(2), usize::MAX);
        let out = m.resync(
            Time::from_millis(3),
            vec![entry(0, 3), entry(1, tcp::FIN_WAIT)],
        );
        assert!(sends(&out).is_empty());
        let out = m.timer(Time::from_millis(5), usize::MAX);
        assert_eq!(
            sends(&out),
            vec![
                CtMessage::Upd {
                    entry: entry(1, tcp::FIN_WAIT),
                    bulk: false
                },
                CtMessage::Del(entry(2, 3).key)
            ]
        );
        assert_eq!(m.len(), 2);
    }
}
