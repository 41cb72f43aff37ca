//! The sans-IO sync engine: one node's side of flow replication (spec §8).
//!
//! [`SyncEngine`] owns the replicated flow table, the outgoing queues, the sequence numbers and replay
//! windows, the bulk transfer in both directions, the carp demotion that holds a fresh node back until
//! it has the flows, and deferral. It is fed `(now, SyncEvent)` and answers with [`SyncAction`]s; it
//! never reads a clock or touches a socket, and `next_deadline` says when to wake it with
//! `SyncEvent::Timer`.
//!
//! Contract with the driver: flows the engine learned from a peer come out as `SyncAction::Apply`; the
//! driver writes them to the dataplane and must NOT feed them back as `Local*` events (that would
//! re-broadcast learned flows). Later local traffic on a learned flow is a real `LocalUpdate`.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use crate::engine::{DEFAULT_GROUP, Time};

use super::auth::{ReplayWindow, SyncKey};
use super::state::{FlowId, FlowState, FlowUpdate, merge, merge_update};
use super::wire::{
    COMPRESSED_BODY, FULL_BODY, ID_BODY, MSG_HEADER_LEN, Message, OVERHEAD, PacketBuilder,
    PacketRepr, SyncRejection,
};

/// Bytes of one full flow message (INS/UPD) on the wire.
pub const FULL_MSG: usize = MSG_HEADER_LEN + FULL_BODY;
/// The smallest sync packet size (`SyncConfig::mtu`) an engine accepts: one full flow record.
pub const MIN_MTU: usize = OVERHEAD + FULL_MSG;
/// Bytes of one compressed update (UPD_C) on the wire.
pub const COMPRESSED_MSG: usize = MSG_HEADER_LEN + COMPRESSED_BODY;

/// The engine's settings; `[pfsync]` maps onto `mtu`, `maxupd` and `defer`, the rest are protocol timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// This node's sync id (the creator id of its flows); never 0.
    pub node_id: u32,
    /// Largest sync packet in bytes (header, messages and tag: the UDP/IP payload). Default 1400.
    pub mtu: usize,
    /// Flush at once when a flow has been updated this many times since it was last sent (default
    /// 128, pfsync's range 0..=255; 0 sends every update at once).
    pub maxupd: u8,
    /// Hold the first packet of a new flow until a peer acknowledges its INS (or `defer_timeout`).
    pub defer: bool,
    /// Flush queued messages this long after the first was queued (pfsync: 1 s).
    pub flush_interval: Duration,
    /// Pacing of a bulk transfer we send: one tick per interval (pfsync: 20 ms).
    pub bulk_interval: Duration,
    /// Bulk packets sent per tick (1 as in pfsync; `usize::MAX` sends the whole bulk at once).
    pub bulk_packets_per_tick: usize,
    /// How often a bulk request is retried (pfsync: 2 s).
    pub request_interval: Duration,
    /// How many bulk requests are sent before giving up (pfsync: 12).
    pub request_tries: u32,
    /// The least time to wait for BULK_END after BULK_START; larger bulks get more (see `bulk_end_bound`).
    pub bulk_end_min: Duration,
    /// How long a bulk transfer being received may go without a packet from its sender before the
    /// receiver gives up (a sender that died mid-bulk), whatever `bulk_end_bound` allows.
    pub bulk_idle: Duration,
    /// How long a deferred first packet is held at most (pfsync: 20 ms).
    pub defer_timeout: Duration,
    /// How many first packets may be held at once; beyond it the oldest is released (pfsync: 128).
    pub defer_limit: usize,
    /// The demotion held on group "carp" from start until the bulk transfer is done (pfsync: 32).
    pub bulk_demote: u8,
    /// The first sequence number to send. Seed it from the wall clock (e.g. Unix time in ns) so a
    /// restarted node's packets are newer than its previous life's, which peers' replay windows remember.
    pub seq_start: u64,
    /// Send an empty (authenticated) packet this often, so peers know this node is alive even while
    /// no flow changes (`live_peers`; balancing keeps a live node's flows with it). None: never.
    pub keepalive: Option<Duration>,
}

impl SyncConfig {
    /// pfsync's defaults for node `node_id`.
    pub fn new(node_id: u32) -> SyncConfig {
        SyncConfig {
            node_id,
            mtu: 1400,
            maxupd: 128,
            defer: false,
            flush_interval: Duration::from_secs(1),
            bulk_interval: Duration::from_millis(20),
            bulk_packets_per_tick: 1,
            request_interval: Duration::from_secs(2),
            request_tries: 12,
            bulk_end_min: Duration::from_secs(10),
            bulk_idle: Duration::from_secs(3),
            defer_timeout: Duration::from_millis(20),
            defer_limit: 128,
            bulk_demote: 32,
            seq_start: 1,
            keepalive: None,
        }
    }

    /// How many full flow records one packet holds under this MTU.
    pub fn flows_per_packet(&self) -> usize {
        (self.mtu.min(super::wire::MAX_PACKET) - OVERHEAD) / FULL_MSG
    }

    /// How long to wait for BULK_END after a BULK_START announcing `flows` flows: four times the
    /// paced transfer time at `bulk_packets_per_tick` packets per `bulk_interval` (pfsync's bound,
    /// which sends one per tick), at least `bulk_end_min`. The peers run the same pacing; a sender
    /// that stops sending is noticed sooner, after `bulk_idle`.
    pub fn bulk_end_bound(&self, flows: u32) -> Duration {
        let per = self.flows_per_packet().max(1) as u64;
        let packets = u64::from(flows).div_ceil(per) + 1;
        let ticks = packets.div_ceil(self.bulk_packets_per_tick.max(1) as u64);
        let paced = self
            .bulk_interval
            .saturating_mul(u32::try_from(ticks.saturating_mul(4)).unwrap_or(u32::MAX));
        paced.max(self.bulk_end_min)
    }
}

/// Why a config cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Node id 0 is reserved (0/0 is the bulk request).
    #[error("sync node id 0 is reserved")]
    NodeZero,
    /// The MTU cannot hold one full flow record.
    #[error("sync mtu {mtu} is below the {min} bytes one full flow record needs")]
    MtuTooSmall {
        /// The configured MTU.
        mtu: usize,
        /// The least usable MTU.
        min: usize,
    },
}

/// Something that happened to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEvent<'a> {
    /// Sync comes up: demote group "carp" and ask the peers for a bulk transfer.
    Start,
    /// The dataplane created a flow.
    LocalInsert(FlowState),
    /// The dataplane saw traffic on a flow (any flow, learned ones included).
    LocalUpdate(FlowState),
    /// The dataplane removed a flow (expiry, RST, flush).
    LocalDelete(FlowId),
    /// Every flow this node created is gone (state table flushed).
    LocalClear,
    /// A sync packet arrived (the UDP/IP payload).
    Packet(&'a [u8]),
    /// The sync device's link went down or came up.
    Link {
        /// True when the link is up.
        up: bool,
    },
    /// A deadline from `next_deadline` passed.
    Timer,
}

/// A change the driver makes to its flow table (the XDP flow map).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowOp {
    /// A flow learned from a peer.
    Insert(FlowState),
    /// A flow changed by a peer's update; this is the merged result.
    Update(FlowState),
    /// A peer deleted the flow; this is the copy we had (its key names the map entry).
    Delete(FlowState),
    /// A peer cleared every flow of this creator.
    Clear {
        /// The creator whose flows are gone.
        creator: u32,
    },
}

/// What the engine asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncAction {
    /// Send this packet to the sync peer (unicast `syncpeer` or the multicast group on `syncdev`).
    Send(Vec<u8>),
    /// Apply this change to the local flow table.
    Apply(FlowOp),
    /// Adjust the demote counter of `group` by `delta` (the carp engine's `Groups::adjust`).
    Demote {
        /// The interface group (always "carp").
        group: &'static str,
        /// The change.
        delta: i32,
        /// Why, for the log line.
        reason: &'static str,
    },
    /// Hold the first packet of this new flow until `Release` (deferral).
    Hold {
        /// The flow.
        flow: FlowId,
        /// When it is released at the latest.
        until: Time,
    },
    /// Let the held first packet of this flow go.
    Release {
        /// The flow.
        flow: FlowId,
        /// True if a peer acknowledged the flow, false on timeout or overflow.
        acked: bool,
    },
    /// A conntrack message from peer `from` (authentic and fresh): for the conntrack mirror.
    Conntrack {
        /// The sending node.
        from: u32,
        /// The message.
        msg: super::conntrack::CtMessage,
    },
}

/// Seals packets with this engine's key, node id and sequence numbers from another thread (the
/// conntrack mirror's), so its packets share the peers' replay window with the engine's own.
#[derive(Clone)]
pub struct Sealer {
    key: SyncKey,
    node_id: u32,
    seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Sealer {
    /// Fills the header, takes the next sequence number and appends the tag.
    pub fn seal(&self, b: PacketBuilder) -> Vec<u8> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        b.finish(&self.key, self.node_id, seq)
    }
}

/// Where the bulk transfer *to* this node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkState {
    /// Not started.
    Idle,
    /// Bulk requests sent, no BULK_START yet.
    Requesting {
        /// Requests sent so far.
        tries: u32,
        /// When the next request goes out (or we give up).
        next_at: Time,
    },
    /// BULK_START arrived; waiting for BULK_END.
    Receiving {
        /// When we stop waiting.
        deadline: Time,
    },
    /// Finished: END arrived or we gave up.
    Done {
        /// True if BULK_END arrived, false if a timeout ended it.
        complete: bool,
    },
}

/// The engine's counters: the input rejections (one per `SyncRejection::counter`) and traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncCounters {
    /// Packets accepted.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Rejected: bad length.
    pub badlen: u64,
    /// Rejected: not a sync packet.
    pub hdrops: u64,
    /// Rejected: other version.
    pub badver: u64,
    /// Rejected: bad HMAC.
    pub badauth: u64,
    /// Rejected: our own packet.
    pub r#loop: u64,
    /// Rejected: replayed sequence number.
    pub replay: u64,
    /// Rejected: malformed message.
    pub badact: u64,
    /// Rejected: bad field value.
    pub badval: u64,
    /// Received copies older than ours (ours sent back).
    pub stale: u64,
    /// Flows learned (inserted from a peer).
    pub learned: u64,
    /// Flows updated from a peer.
    pub merged: u64,
    /// Flows deleted by a peer.
    pub deleted: u64,
    /// UPD_REQ sent for compressed updates of unknown flows.
    pub requested: u64,
    /// Bulk transfers sent.
    pub bulk_sent: u64,
    /// Bulk transfers received completely.
    pub bulk_received: u64,
    /// Bulk transfers that ended with a packet of the sender missing in their sequence range (the
    /// transfer is requested again).
    pub bulk_incomplete: u64,
    /// First packets released on timeout or overflow instead of an ack.
    pub defer_timeouts: u64,
}

impl SyncCounters {
    /// Every counter as (name, value), in declaration order.
    pub fn iter(&self) -> [(&'static str, u64); 20] {
        [
            ("ipackets", self.ipackets),
            ("opackets", self.opackets),
            ("obytes", self.obytes),
            ("badlen", self.badlen),
            ("hdrops", self.hdrops),
            ("badver", self.badver),
            ("badauth", self.badauth),
            ("loop", self.r#loop),
            ("replay", self.replay),
            ("badact", self.badact),
            ("badval", self.badval),
            ("stale", self.stale),
            ("learned", self.learned),
            ("merged", self.merged),
            ("deleted", self.deleted),
            ("requested", self.requested),
            ("bulk_sent", self.bulk_sent),
            ("bulk_received", self.bulk_received),
            ("defer_timeouts", self.defer_timeouts),
            ("bulk_incomplete", self.bulk_incomplete),
        ]
    }

    /// The counter called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.iter()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    fn reject(&mut self, e: &SyncRejection) {
        let c = match e {
            SyncRejection::BadLen { .. } => &mut self.badlen,
            SyncRejection::BadMagic => &mut self.hdrops,
            SyncRejection::BadVersion { .. } => &mut self.badver,
            SyncRejection::BadAuth => &mut self.badauth,
            SyncRejection::Loop => &mut self.r#loop,
            SyncRejection::Replay { .. } => &mut self.replay,
            SyncRejection::BadAction { .. } => &mut self.badact,
            SyncRejection::BadValue { .. } => &mut self.badval,
        };
        *c += 1;
    }
}

/// Which message a queued flow will go out as. A flow sits on exactly one of these (pfsync's queues).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ins { ack: bool },
    Upd,
    UpdC,
    Del,
}

impl Kind {
    fn wire_len(self) -> usize {
        match self {
            Kind::Ins { .. } | Kind::Upd => FULL_MSG,
            Kind::UpdC => COMPRESSED_MSG,
            Kind::Del => MSG_HEADER_LEN + ID_BODY,
        }
    }

    /// The message that carries both what was queued and what is queued now (the table holds the
    /// latest content, so only the message kind has to be decided).
    fn combine(self, new: Kind) -> Kind {
        match (self, new) {
            (_, Kind::Del) => Kind::Del,
            (Kind::Del, n) => n,
            (Kind::Ins { ack: a }, Kind::Ins { ack: b }) => Kind::Ins { ack: a || b },
            (Kind::Ins { ack }, _) | (_, Kind::Ins { ack }) => Kind::Ins { ack },
            (Kind::Upd, _) | (_, Kind::Upd) => Kind::Upd,
            (Kind::UpdC, Kind::UpdC) => Kind::UpdC,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    kind: Kind,
    updates: u32,
}

#[derive(Clone, Debug)]
struct BulkOut {
    ids: Vec<FlowId>,
    pos: usize,
    sent: u32,
    next_at: Time,
    per_tick: usize,
}

/// The bulk transfer being received: whose it is and how many of its packets arrived, so that a lost
/// packet is noticed at BULK_END (the sender's sequence numbers are consecutive; every packet it sent
/// from BULK_START to BULK_END must be here, or the table has a hole).
#[derive(Clone, Copy, Debug)]
struct BulkRx {
    sender: u32,
    flows: u32,
    start_seq: u64,
    packets: u64,
    tries: u32,
    // The whole transfer's deadline (`bulk_end_bound` from BULK_START); the wait also ends
    // `bulk_idle` after the last packet from the sender.
    until: Time,
}

/// A fast hasher for [`FlowId`] keys (the FxHash fold: rotate, xor, multiply).
///
/// std's SipHash guards against hash flooding by untrusted keys; flow ids reach this table only from
/// the dataplane or from authenticated peers, and at a million flows per bulk SipHash was a visible
/// share of the transfer time.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowIdHasher(u64);

impl Hasher for FlowIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Eight bytes at a time: a kernel flow key (40 bytes) is five steps, not forty.
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// Builds [`FlowIdHasher`]s from a per-process random seed, for tables keyed by what traffic chooses
/// (kernel flow keys: the 5-tuple): unlike a fixed seed, colliding keys cannot be computed in advance.
#[derive(Clone, Copy, Debug)]
pub struct SeededFlowHash(u64);

impl Default for SeededFlowHash {
    fn default() -> Self {
        use std::hash::BuildHasher;
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        SeededFlowHash(
            *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u64)),
        )
    }
}

impl std::hash::BuildHasher for SeededFlowHash {
    type Hasher = FlowIdHasher;

    fn build_hasher(&self) -> FlowIdHasher {
        FlowIdHasher(self.0)
    }
}

/// The replicated flow table: every flow this node knows, local and learned, by id.
pub type FlowTable = HashMap<FlowId, FlowState, BuildHasherDefault<FlowIdHasher>>;

/// Most flows a BULK_START may make us reserve table room for up front (a bound, so that a bogus
/// count from a confused peer cannot make us allocate gigabytes before a single flow arrived).
const MAX_BULK_RESERVE: usize = 4_000_000;

/// One node's sync protocol state machine (see the module doc).
#[derive(Debug)]
pub struct SyncEngine {
    config: SyncConfig,
    key: SyncKey,
    table: FlowTable,
    queue: HashMap<FlowId, Queued, BuildHasherDefault<FlowIdHasher>>,
    // Queue order, so packets are deterministic; holds each queued id once.
    order: Vec<FlowId>,
    // Messages about no flow of ours: INS_ACK, UPD_REQ, CLR.
    extra: Vec<Message>,
    queued_bytes: usize,
    flush_at: Option<Time>,
    // Shared with `Sealer`s: the conntrack mirror seals its packets on its own thread.
    seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
    windows: HashMap<u32, ReplayWindow>,
    counters: SyncCounters,
    bulk_out: Option<BulkOut>,
    // When our last bulk transfer ended, and how many times the pace was halved: a request soon after
    // one ended means the peer lost part of it (it could not keep up), so the next goes slower.
    bulk_out_ended: Option<Time>,
    bulk_slowdown: u32,
    bulk_in: BulkState,
    bulk_rx: Option<BulkRx>,
    // When the current bulk request round began, and how long the last finished one took.
    bulk_asked_at: Option<Time>,
    bulk_took: Option<Duration>,
    demoted: bool,
    link_down: bool,
    deferred: VecDeque<(FlowId, Time)>,
    // When each peer's last authentic, fresh packet arrived.
    heard: HashMap<u32, Time>,
    keepalive_at: Option<Time>,
    // The conntrack bulk is still to be applied: the bulk demotion stays until it is (one demotion
    // for both bulks). `flow_bulk_done` says the flow bulk's end came while it was pending.
    ct_pending: bool,
    flow_bulk_done: bool,
}

fn ms(t: Time) -> u64 {
    t.as_nanos() / 1_000_000
}

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

    fn start(&mut self, now: Time, out: &mut Vec<SyncAction>) {
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

    fn finish_bulk_in(&mut self, now: Time, complete: bool, out: &mut Vec<SyncAction>) {
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

    fn link(&mut self, up: bool, out: &mut Vec<SyncAction>) {
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

    fn run_timers(&mut self, now: Time, out: &mut Vec<SyncAction>) {
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

    fn local_insert(&mut self, now: Time, flow: FlowState, out: &mut Vec<SyncAction>) {
        let id = flow.id;
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

    fn local_update(&mut self, now: Time, flow: FlowState, out: &mut Vec<SyncAction>) {
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

    fn packet_room(&self) -> usize {
        self.config.mtu.min(super::wire::MAX_PACKET) - OVERHEAD
    }

    fn enqueue(&mut self, now: Time, id: FlowId, kind: Kind, out: &mut Vec<SyncAction>) {
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

    fn push_extra(&mut self, now: Time, m: Message, out: &mut Vec<SyncAction>) {
        if self.queued_bytes + m.wire_len() > self.packet_room() {
            self.flush(now, out);
        }
        self.queued_bytes += m.wire_len();
        self.extra.push(m);
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.config.flush_interval);
        }
    }

    fn drop_queued(&mut self, mut gone: impl FnMut(&FlowId) -> bool) {
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

    fn next_seq(&mut self) -> u64 {
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

    fn send(&mut self, b: PacketBuilder, out: &mut Vec<SyncAction>) {
        let seq = self.next_seq();
        let bytes = b.finish(&self.key, self.config.node_id, seq);
        self.counters.opackets += 1;
        self.counters.obytes += bytes.len() as u64;
        out.push(SyncAction::Send(bytes));
    }

    /// Sends everything queued (normally one packet: the MTU rule keeps the queue under one).
    fn flush(&mut self, now: Time, out: &mut Vec<SyncAction>) {
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

    fn bulk_tick(&mut self, now: Time, out: &mut Vec<SyncAction>) {
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

    fn start_bulk_out(&mut self, now: Time, out: &mut Vec<SyncAction>) {
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

    fn receive(&mut self, now: Time, bytes: &[u8], out: &mut Vec<SyncAction>) {
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

    fn release_deferred(&mut self, id: FlowId, out: &mut Vec<SyncAction>) {
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
    fn message(
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

    fn full(&mut self, now: Time, flow: FlowState, out: &mut Vec<SyncAction>) {
        let id = flow.id;
        // Any copy of a deferred flow from a peer proves the peer has it (spec §8, deferral).
        self.release_deferred(id, out);
        match self.table.get_mut(&id) {
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

    fn compressed(&mut self, now: Time, u: FlowUpdate, out: &mut Vec<SyncAction>) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::state::{ConnState, Endpoint, FlowKey};
    use std::net::Ipv4Addr;

    fn key() -> SyncKey {
        SyncKey::from_bytes(b"test cluster key\n").expect("key")
    }

    fn engine_with(node: u32, f: impl FnOnce(&mut SyncConfig)) -> SyncEngine {
        let mut c = SyncConfig::new(node);
        f(&mut c);
        SyncEngine::new(c, key()).expect("config")
    }

    fn engine(node: u32) -> SyncEngine {
        engine_with(node, |_| {})
    }

    fn flow(creator: u32, id: u64) -> FlowState {
        let (k, _) = FlowKey::new(
            6,
            Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 40000 + (id % 20000) as u16),
            Endpoint::new(Ipv4Addr::new(10, 0, 1, 1), 443),
        );
        let mut f = FlowState::new(FlowId::new(creator, id), k, 1, 0, 60_000);
        f.peers[0].state = ConnState::TcpEstablished;
        f.peers[1].state = ConnState::TcpEstablished;
        f
    }

    fn sent(actions: &[SyncAction]) -> Vec<&[u8]> {
        actions
            .iter()
            .filter_map(|a| match a {
                SyncAction::Send(b) => Some(b.as_slice()),
                _ => None,
            })
            .collect()
    }

    fn decode(actions: &[SyncAction]) -> Vec<Message> {
        sent(actions)
            .into_iter()
            .flat_map(|b| {
                PacketRepr::parse(b, &key(), 0)
                    .expect("own packet")
                    .messages
            })
            .collect()
    }

    fn demotes(actions: &[SyncAction]) -> Vec<i32> {
        actions
            .iter()
            .filter_map(|a| match a {
                SyncAction::Demote { delta, group, .. } => {
                    assert_eq!(*group, "carp");
                    Some(*delta)
                }
                _ => None,
            })
            .collect()
    }

    /// Runs a bulk transfer from `a` to `b` to its end, one pacing tick (20 ms) at a time, starting
    /// with `wire` (a's answer to the request); returns b's demotion changes.
    fn run_bulk(
        a: &mut SyncEngine,
        b: &mut SyncEngine,
        mut now: Time,
        mut wire: Vec<SyncAction>,
    ) -> Vec<i32> {
        let mut released = Vec::new();
        while !wire.is_empty() {
            released.extend(demotes(&deliver(b, now, &wire)));
            now += Duration::from_millis(20);
            wire = a.handle(now, SyncEvent::Timer);
        }
        released
    }

    fn deliver(to: &mut SyncEngine, now: Time, actions: &[SyncAction]) -> Vec<SyncAction> {
        let mut out = Vec::new();
        for b in sent(actions) {
            out.extend(to.handle(now, SyncEvent::Packet(b)));
        }
        out
    }

    const T0: Time = Time::ZERO;

    #[test]
    fn config_rejects_node_zero_and_tiny_mtu() {
        assert_eq!(
            SyncEngine::new(SyncConfig::new(0), key()).unwrap_err(),
            ConfigError::NodeZero
        );
        let mut c = SyncConfig::new(1);
        c.mtu = 100;
        assert!(matches!(
            SyncEngine::new(c, key()),
            Err(ConfigError::MtuTooSmall { .. })
        ));
    }

    #[test]
    fn rule_new_flow_sent_as_ins_after_flush_interval() {
        let mut a = engine(1);
        assert!(a.handle(T0, SyncEvent::LocalInsert(flow(1, 1))).is_empty());
        assert_eq!(a.next_deadline(), Some(Time::from_secs(1)));
        assert!(
            a.handle(Time::from_millis(999), SyncEvent::Timer)
                .is_empty()
        );
        let acts = a.handle(Time::from_secs(1), SyncEvent::Timer);
        // Times travel as ages, so decoding at the sender's `now` gives back the same flow.
        let msgs: Vec<Message> = sent(&acts)
            .into_iter()
            .flat_map(|b| {
                PacketRepr::parse(b, &key(), 1000)
                    .expect("own packet")
                    .messages
            })
            .collect();
        assert_eq!(
            msgs,
            vec![Message::Ins {
                flow: flow(1, 1),
                ack: false
            }]
        );
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn rule_repeated_updates_coalesce_into_one_message() {
        let mut a = engine(1);
        a.adopt(flow(1, 1));
        for i in 1..=50 {
            let mut f = flow(1, 1);
            f.peers[0].seqlo = i;
            a.handle(T0, SyncEvent::LocalUpdate(f));
        }
        let msgs = decode(&a.handle(Time::from_secs(1), SyncEvent::Timer));
        assert_eq!(msgs.len(), 1);
        let Message::UpdC(u) = &msgs[0] else {
            panic!("expected UPD_C, got {msgs:?}")
        };
        assert_eq!(u.peers[0].seqlo, 50, "the latest content goes out");
    }

    #[test]
    fn rule_insert_then_update_stays_one_ins() {
        let mut a = engine(1);
        a.handle(T0, SyncEvent::LocalInsert(flow(1, 1)));
        let mut f = flow(1, 1);
        f.peers[0].seqlo = 9;
        a.handle(T0, SyncEvent::LocalUpdate(f));
        let msgs = decode(&a.handle(Time::from_secs(1), SyncEvent::Timer));
        assert!(matches!(&msgs[..], [Message::Ins { flow, .. }] if flow.peers[0].seqlo == 9));
    }

    #[test]
    fn rule_flush_when_next_message_exceeds_mtu() {
        let mut a = engine(1);
        let per = a.config().flows_per_packet();
        let mut acts = Vec::new();
        for i in 0..=per as u64 {
            acts.extend(a.handle(T0, SyncEvent::LocalInsert(flow(1, i + 1))));
        }
        let packets = sent(&acts);
        assert_eq!(packets.len(), 1, "the {}th flow does not fit", per + 1);
        assert!(packets[0].len() <= 1400);
        assert_eq!(decode(&acts).len(), per);
    }

    #[test]
    fn rule_flush_at_maxupd() {
        let mut a = engine_with(1, |c| c.maxupd = 3);
        a.adopt(flow(1, 1));
        let mut acts = Vec::new();
        for i in 1..=3 {
            let mut f = flow(1, 1);
            f.peers[0].seqlo = i;
            acts = a.handle(T0, SyncEvent::LocalUpdate(f));
            if i < 3 {
                assert!(acts.is_empty());
            }
        }
        assert_eq!(decode(&acts).len(), 1, "third update flushes at once");
    }

    #[test]
    fn rule_unknown_id_on_upd_inserts() {
        let mut a = engine(1);
        let mut b = engine(2);
        a.handle(T0, SyncEvent::LocalInsert(flow(1, 7)));
        let acts = a.handle(Time::from_secs(1), SyncEvent::Timer);
        let got = deliver(&mut b, Time::from_secs(1), &acts);
        assert!(
            matches!(&got[..], [SyncAction::Apply(FlowOp::Insert(f))] if f.id == FlowId::new(1, 7))
        );
        assert_eq!(b.counters().learned, 1);
    }

    #[test]
    fn rule_learned_flows_not_rebroadcast() {
        let mut a = engine(1);
        let mut b = engine(2);
        a.handle(T0, SyncEvent::LocalInsert(flow(1, 7)));
        let acts = a.handle(Time::from_secs(1), SyncEvent::Timer);
        deliver(&mut b, Time::from_secs(1), &acts);
        assert_eq!(b.next_deadline(), None, "nothing queued on b");
        assert!(b.handle(Time::from_secs(5), SyncEvent::Timer).is_empty());
    }

    #[test]
    fn rule_compressed_update_for_unknown_id_requests_it() {
        let mut a = engine(1);
        let mut b = engine(2);
        a.adopt(flow(1, 7));
        let mut f = flow(1, 7);
        f.peers[0].seqlo = 5;
        a.handle(T0, SyncEvent::LocalUpdate(f));
        let acts = a.handle(Time::from_secs(1), SyncEvent::Timer);
        assert!(matches!(decode(&acts)[..], [Message::UpdC(_)]));
        let got = deliver(&mut b, Time::from_secs(1), &acts);
        assert!(got.is_empty(), "nothing applied, request queued");
        assert_eq!(b.counters().requested, 1);
        let req = b.handle(Time::from_secs(2), SyncEvent::Timer);
        assert_eq!(decode(&req), vec![Message::UpdReq(FlowId::new(1, 7))]);
        // a answers with the full state, b inserts it.
        deliver(&mut a, Time::from_secs(2), &req);
        let reply = a.handle(Time::from_secs(3), SyncEvent::Timer);
        assert!(matches!(decode(&reply)[..], [Message::Upd(_)]));
        let got = deliver(&mut b, Time::from_secs(3), &reply);
        assert!(matches!(got[..], [SyncAction::Apply(FlowOp::Insert(_))]));
    }

    #[test]
    fn rule_stale_update_sends_our_copy_back() {
        let mut a = engine(1);
        let mut b = engine(2);
        let mut newer = flow(1, 7);
        newer.peers[0].state = ConnState::TcpFinWait1;
        b.adopt(newer.clone());
        a.adopt(flow(1, 7));
        let mut older = flow(1, 7);
        older.peers[1].seqlo = 1; // a moved direction 1 on; direction 0 is behind b's
        a.handle(T0, SyncEvent::LocalUpdate(older));
        let acts = a.handle(Time::from_secs(1), SyncEvent::Timer);
        let got = deliver(&mut b, Time::from_secs(1), &acts);
        assert_eq!(b.counters().stale, 1);
        assert_eq!(
            b.flow(FlowId::new(1, 7)).expect("flow").peers[0].state,
            ConnState::TcpFinWait1
        );
        assert!(
            matches!(&got[..], [SyncAction::Apply(FlowOp::Update(f))] if f.peers[1].seqlo == 1)
        );
        let back = b.handle(Time::from_secs(2), SyncEvent::Timer);
        assert!(matches!(decode(&back)[..], [Message::UpdC(_)]));
        deliver(&mut a, Time::from_secs(2), &back);
        assert_eq!(
            a.flow(FlowId::new(1, 7)),
            b.flow(FlowId::new(1, 7)),
            "healed"
        );
    }

    #[test]
    fn rule_delete_and_clear_apply() {
        let mut a = engine(1);
        let mut b = engine(2);
        for i in 1..=3 {
            b.adopt(flow(1, i));
            a.adopt(flow(1, i));
        }
        a.handle(T0, SyncEvent::LocalDelete(FlowId::new(1, 1)));
        let acts = a.handle(Time::from_secs(1), SyncEvent::Timer);
        let got = deliver(&mut b, Time::from_secs(1), &acts);
        assert_eq!(got, vec![SyncAction::Apply(FlowOp::Delete(flow(1, 1)))]);
        a.handle(T0, SyncEvent::LocalClear);
        let acts = a.handle(Time::from_secs(2), SyncEvent::Timer);
        let got = deliver(&mut b, Time::from_secs(2), &acts);
        assert_eq!(got, vec![SyncAction::Apply(FlowOp::Clear { creator: 1 })]);
        assert!(b.table().is_empty());
    }

    #[test]
    fn rule_replayed_packet_rejected() {
        let mut a = engine(1);
        let mut b = engine(2);
        a.handle(T0, SyncEvent::LocalInsert(flow(1, 7)));
        let acts = a.handle(Time::from_secs(1), SyncEvent::Timer);
        deliver(&mut b, Time::from_secs(1), &acts);
        assert!(deliver(&mut b, Time::from_secs(1), &acts).is_empty());
        assert_eq!(b.counters().replay, 1);
        assert_eq!(b.counters().ipackets, 1);
    }

    #[test]
    fn rule_own_packet_is_a_loop() {
        let mut a = engine(1);
        a.handle(T0, SyncEvent::LocalInsert(flow(1, 7)));
        let acts = a.handle(Time::from_secs(1), SyncEvent::Timer);
        deliver(&mut a, Time::from_secs(1), &acts);
        assert_eq!(a.counters().r#loop, 1);
    }

    #[test]
    fn rule_forged_packet_rejected_as_badauth() {
        let mut a = engine(1);
        let mut b = engine(2);
        a.handle(T0, SyncEvent::LocalInsert(flow(1, 7)));
        let mut acts = a.handle(Time::from_secs(1), SyncEvent::Timer);
        if let SyncAction::Send(p) = &mut acts[0] {
            p[40] ^= 1;
        }
        assert!(deliver(&mut b, Time::from_secs(1), &acts).is_empty());
        assert_eq!(b.counters().badauth, 1);
        assert!(b.table().is_empty());
    }

    #[test]
    fn rule_start_demotes_until_bulk_end() {
        let mut a = engine(1);
        let mut b = engine(2);
        for i in 1..=100 {
            a.adopt(flow(1, i));
        }
        let req = b.handle(T0, SyncEvent::Start);
        assert_eq!(demotes(&req), vec![32]);
        assert_eq!(decode(&req), vec![Message::UpdReq(FlowId::BULK)]);
        let wire = a.handle(T0, SyncEvent::Packet(sent(&req)[0]));
        assert!(matches!(
            decode(&wire)[0],
            Message::BulkStart { flows: 100 }
        ));
        let released = run_bulk(&mut a, &mut b, T0, wire);
        assert_eq!(released, vec![-32]);
        assert_eq!(b.bulk_state(), BulkState::Done { complete: true });
        assert_eq!(a.table(), b.table());
    }

    #[test]
    fn rule_a_lost_bulk_packet_is_noticed_and_the_bulk_requested_again() {
        let mut a = engine(1);
        let mut b = engine(2);
        let per = a.config().flows_per_packet() as u64;
        for i in 1..=per * 3 {
            a.adopt(flow(1, i));
        }
        let req = b.handle(T0, SyncEvent::Start);
        let mut now = T0;
        let mut wire = a.handle(now, SyncEvent::Packet(sent(&req)[0]));
        // The second packet of the transfer (START is the first) never arrives.
        let mut packets = 0;
        let mut again = Vec::new();
        while !wire.is_empty() {
            let keep: Vec<SyncAction> = wire
                .into_iter()
                .filter(|a| {
                    packets += usize::from(matches!(a, SyncAction::Send(_)));
                    !(matches!(a, SyncAction::Send(_)) && packets == 2)
                })
                .collect();
            again.extend(deliver(&mut b, now, &keep));
            now += Duration::from_millis(20);
            wire = a.handle(now, SyncEvent::Timer);
        }
        assert_eq!(b.counters().bulk_incomplete, 1);
        assert!(
            matches!(b.bulk_state(), BulkState::Requesting { .. }),
            "not done with a hole: {:?}",
            b.bulk_state()
        );
        assert!(b.demoted(), "the demotion stays until the table is whole");
        assert!(b.table().len() < a.table().len());
        assert_eq!(decode(&again), vec![Message::UpdReq(FlowId::BULK)]);
        // The second transfer arrives whole.
        let wire = a.handle(now, SyncEvent::Packet(sent(&again)[0]));
        let released = run_bulk(&mut a, &mut b, now, wire);
        assert_eq!(released, vec![-32]);
        assert_eq!(b.bulk_state(), BulkState::Done { complete: true });
        assert_eq!(a.table(), b.table());
        assert!(b.bulk_duration().is_some());
    }

    #[test]
    fn rule_bulk_paced_one_packet_per_20ms() {
        let mut a = engine(1);
        let per = a.config().flows_per_packet() as u64;
        for i in 1..=per * 3 {
            a.adopt(flow(1, i));
        }
        let acts = a.handle(T0, SyncEvent::Packet(&request_bytes(2, 1)));
        assert_eq!(sent(&acts).len(), 2, "START, then the first paced packet");
        assert_eq!(a.next_deadline(), Some(Time::from_millis(20)));
        assert!(a.handle(Time::from_millis(19), SyncEvent::Timer).is_empty());
        assert_eq!(
            sent(&a.handle(Time::from_millis(20), SyncEvent::Timer)).len(),
            1
        );
        let last = a.handle(Time::from_millis(40), SyncEvent::Timer);
        assert!(
            matches!(decode(&last).last(), Some(Message::BulkEnd { flows }) if u64::from(*flows) == per * 3)
        );
        assert!(!a.bulk_sending());
    }

    fn request_bytes(sender: u32, seq: u64) -> Vec<u8> {
        PacketRepr {
            sender,
            seq,
            messages: vec![Message::UpdReq(FlowId::BULK)],
        }
        .emit(&key(), 0)
    }

    #[test]
    fn rule_bulk_request_retried_every_2s_12_tries_then_undemote() {
        let mut b = engine(2);
        let mut requests = decode(&b.handle(T0, SyncEvent::Start)).len();
        let mut undemote = Vec::new();
        for s in 1..=30 {
            let acts = b.handle(Time::from_secs(s), SyncEvent::Timer);
            requests += decode(&acts).len();
            undemote.extend(demotes(&acts));
            if !undemote.is_empty() {
                assert_eq!(s, 24, "gives up 2 s after the 12th request");
                break;
            }
        }
        assert_eq!(requests, 12);
        assert_eq!(undemote, vec![-32]);
        assert_eq!(b.bulk_state(), BulkState::Done { complete: false });
    }

    #[test]
    fn rule_bulk_end_wait_is_bounded() {
        let mut b = engine(2);
        b.handle(T0, SyncEvent::Start);
        let start = PacketRepr {
            sender: 1,
            seq: 1,
            messages: vec![Message::BulkStart { flows: 10 }],
        }
        .emit(&key(), 0);
        b.handle(T0, SyncEvent::Packet(&start));
        let BulkState::Receiving { deadline } = b.bulk_state() else {
            panic!("receiving")
        };
        assert_eq!(
            deadline,
            T0 + b.config().bulk_idle,
            "bulk_idle when nothing follows START (bulk_end_min bounds the whole of a small bulk)"
        );
        assert!(
            b.handle(Time::from_secs(2), SyncEvent::Timer).is_empty(),
            "no retries after START"
        );
        assert_eq!(demotes(&b.handle(deadline, SyncEvent::Timer)), vec![-32]);
        assert!(SyncConfig::new(1).bulk_end_bound(1_000_000) > Duration::from_secs(1000));
    }

    /// A sender that dies mid-bulk (issue #16 item 9): the receiver gives up once no packet of the
    /// transfer came for `bulk_idle`, not after the bound for a million flows paced one packet a
    /// tick (~33 minutes at carpd's pacing), and lifts its demotion.
    #[test]
    fn rule_sender_killed_mid_bulk_ends_the_wait_after_bulk_idle() {
        let fast = |c: &mut SyncConfig| {
            c.bulk_interval = Duration::from_millis(5);
            c.bulk_packets_per_tick = 340;
        };
        let mut a = engine_with(1, fast);
        let mut b = engine_with(2, fast);
        let per = a.config().flows_per_packet() as u64;
        for i in 1..=per * 2000 {
            a.adopt(flow(1, i));
        }
        let req = b.handle(T0, SyncEvent::Start);
        let mut wire = a.handle(T0, SyncEvent::Packet(sent(&req)[0]));
        // Two ticks of the transfer arrive, then the sender is gone.
        let mut now = T0;
        for _ in 0..2 {
            assert!(demotes(&deliver(&mut b, now, &wire)).is_empty());
            now += Duration::from_millis(5);
            wire = a.handle(now, SyncEvent::Timer);
        }
        assert!(matches!(b.bulk_state(), BulkState::Receiving { .. }));
        let idle = b.config().bulk_idle;
        let mut released = Vec::new();
        let end = now + idle + Duration::from_millis(10);
        while now < end && released.is_empty() {
            now += Duration::from_millis(50);
            released = demotes(&b.handle(now, SyncEvent::Timer));
        }
        assert_eq!(
            released,
            vec![-32],
            "still demoted {now:?} after the sender died"
        );
        assert_eq!(b.bulk_state(), BulkState::Done { complete: false });
        // The whole-transfer bound counts the sender's packets per tick: a million flows at carpd's
        // pacing is seconds, not half an hour.
        let mut c = SyncConfig::new(1);
        fast(&mut c);
        assert!(c.bulk_end_bound(1_000_000) <= Duration::from_secs(30));
    }

    #[test]
    fn rule_link_down_demotes_by_one_while_down() {
        let mut a = engine(1);
        assert!(a.handle(T0, SyncEvent::Link { up: true }).is_empty());
        assert_eq!(
            demotes(&a.handle(T0, SyncEvent::Link { up: false })),
            vec![1]
        );
        assert!(a.handle(T0, SyncEvent::Link { up: false }).is_empty());
        assert_eq!(
            demotes(&a.handle(T0, SyncEvent::Link { up: true })),
            vec![-1]
        );
    }

    #[test]
    fn rule_defer_holds_first_packet_until_ins_ack() {
        let mut a = engine_with(1, |c| c.defer = true);
        let mut b = engine(2);
        let acts = a.handle(T0, SyncEvent::LocalInsert(flow(1, 7)));
        assert!(acts.contains(&SyncAction::Hold {
            flow: FlowId::new(1, 7),
            until: Time::from_millis(20)
        }));
        assert!(
            matches!(decode(&acts)[..], [Message::Ins { ack: true, .. }]),
            "sent at once"
        );
        let ack = deliver(&mut b, Time::from_millis(1), &acts);
        assert_eq!(
            decode(&ack),
            vec![Message::InsAck(FlowId::new(1, 7))],
            "acked at once"
        );
        let rel = deliver(&mut a, Time::from_millis(2), &ack);
        assert_eq!(
            rel,
            vec![SyncAction::Release {
                flow: FlowId::new(1, 7),
                acked: true
            }]
        );
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn rule_defer_releases_after_20ms_without_ack() {
        let mut a = engine_with(1, |c| c.defer = true);
        a.handle(T0, SyncEvent::LocalInsert(flow(1, 7)));
        assert_eq!(a.next_deadline(), Some(Time::from_millis(20)));
        let rel = a.handle(Time::from_millis(20), SyncEvent::Timer);
        assert_eq!(
            rel,
            vec![SyncAction::Release {
                flow: FlowId::new(1, 7),
                acked: false
            }]
        );
        assert_eq!(a.counters().defer_timeouts, 1);
    }

    #[test]
    fn rule_defer_overflow_releases_oldest() {
        let mut a = engine_with(1, |c| {
            c.defer = true;
            c.defer_limit = 2;
        });
        a.handle(T0, SyncEvent::LocalInsert(flow(1, 1)));
        a.handle(T0, SyncEvent::LocalInsert(flow(1, 2)));
        let acts = a.handle(T0, SyncEvent::LocalInsert(flow(1, 3)));
        assert!(acts.contains(&SyncAction::Release {
            flow: FlowId::new(1, 1),
            acked: false
        }));
    }

    #[test]
    fn counters_named_like_rejections() {
        let c = SyncCounters::default();
        for name in SyncRejection::COUNTERS {
            assert_eq!(c.get(name), Some(0), "{name}");
        }
    }

    /// Keepalives: an empty authenticated packet every interval (none before the first interval),
    /// which makes the sender live on the receiver until it falls silent for longer than `within`.
    #[test]
    fn keepalive_keeps_a_quiet_peer_live() {
        let every = Duration::from_secs(1);
        let mut a = engine_with(1, |c| c.keepalive = Some(every));
        let mut b = engine(2);
        assert_eq!(a.next_deadline(), Some(Time::ZERO));
        assert!(
            sent(&a.handle(T0, SyncEvent::Timer)).is_empty(),
            "arming sends nothing"
        );
        assert_eq!(a.next_deadline(), Some(T0 + every));
        let acts = a.handle(T0 + every, SyncEvent::Timer);
        let packets = sent(&acts);
        assert_eq!(packets.len(), 1, "one keepalive");
        assert!(decode(&acts).is_empty(), "a keepalive carries no message");
        assert!(b.live_peers(T0, every).is_empty(), "nothing heard yet");
        b.handle(T0 + every, SyncEvent::Packet(packets[0]));
        assert_eq!(b.counters().ipackets, 1);
        let within = Duration::from_secs(3);
        assert_eq!(b.live_peers(T0 + every + within, within), vec![1]);
        assert!(
            b.live_peers(T0 + every + within + Duration::from_millis(1), within)
                .is_empty()
        );
        // A replayed keepalive does not refresh liveness.
        b.handle(T0 + every * 3, SyncEvent::Packet(packets[0]));
        assert!(b.live_peers(T0 + every * 5, within).is_empty());
    }
}
