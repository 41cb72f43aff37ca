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
//!
//! Files: this one holds the engine's types and state; `engine` its public face and the local events,
//! `outbound` the queues, packets and bulk sending, `inbound` the receive path and merge rules,
//! `table` the flow table's hasher, `tests` one test per rule.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::Duration;

use crate::engine::Time;

use super::auth::{ReplayWindow, SyncKey};
use super::state::{FlowId, FlowState};
use super::wire::{
    COMPRESSED_BODY, FULL_BODY, ID_BODY, MSG_HEADER_LEN, Message, OVERHEAD, PacketBuilder,
    SyncRejection,
};

mod engine;
mod inbound;
mod outbound;
mod table;
#[cfg(test)]
mod tests;

pub use table::{FlowIdHasher, FlowTable, SeededFlowHash};

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
    /// Most flows the engine's table holds (carpd: the dataplane flow table's size). A flow beyond it,
    /// learned from a peer or local, is not taken (counted as `table_full`), so neither a peer nor
    /// the dataplane can grow the engine's memory without bound.
    pub max_flows: usize,
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
            max_flows: 1 << 20,
            defer_timeout: Duration::from_millis(20),
            defer_limit: 128,
            bulk_demote: 32,
            seq_start: 1,
            keepalive: None,
        }
    }

    /// How many full flow records one packet holds under this MTU.
    pub fn flows_per_packet(&self) -> usize {
        (self.mtu.min(crate::sync::wire::MAX_PACKET) - OVERHEAD) / FULL_MSG
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
    /// Flows not taken because the table held `max_flows` already.
    #[serde(default)]
    pub table_full: u64,
}

impl SyncCounters {
    /// Every counter as (name, value), in declaration order.
    pub fn iter(&self) -> [(&'static str, u64); 21] {
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
            ("table_full", self.table_full),
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

/// Most flows a BULK_START may make us reserve table room for up front (a bound, so that a bogus
/// count from a confused peer cannot make us allocate gigabytes before a single flow arrived).
pub const MAX_BULK_RESERVE: usize = 4_000_000;

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
