//! pfsync-style flow-state replication (issue #7, spec §8), as a sans-IO protocol core.
//!
//! This module owns everything about replicating flows between cluster nodes that needs no socket,
//! clock or kernel map: the flow record and its merge rules (`state`), our own authenticated wire
//! format (`wire`, `auth`), and the per-node protocol engine (`peer`): coalescing queues, bulk
//! transfer, the carp demotion interlock and deferral. The daemon feeds it `(now, event)` and carries
//! out the returned actions (send a packet, write the flow map, adjust group "carp").
//!
//! We copy pfsync's semantics, not its bytes: every packet is authenticated with HMAC-SHA256 keyed from
//! `[pfsync] key_file` and carries a 64-bit sequence number checked against a per-sender replay window,
//! which closes pfsync's "anyone on the link can insert states" hole (spec §8, "Security").

pub mod auth;
pub mod conntrack;
pub mod peer;
pub mod state;
pub mod wire;

pub use auth::{KeyError, REPLAY_WINDOW, ReplayWindow, SyncKey, TAG_LEN};
pub use peer::{
    BulkState, COMPRESSED_MSG, ConfigError, FULL_MSG, FlowIdHasher, FlowOp, FlowTable, MIN_MTU,
    Sealer, SeededFlowHash, SyncAction, SyncConfig, SyncCounters, SyncEngine, SyncEvent,
};
pub use state::{
    ConnState, Direction, Endpoint, FlowId, FlowKey, FlowState, FlowUpdate, MergeOutcome, Peer,
    merge, merge_update, seq_cmp,
};
pub use wire::{Message, PacketBuilder, PacketRepr, SyncPacket, SyncRejection, seal_raw};
