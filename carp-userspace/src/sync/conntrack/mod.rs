//! Conntrack replication (issue #15), sans-IO: netfilter's state table, NAT bindings included, kept
//! in step between gateways over the authenticated sync channel, with pfsync's semantics.
//!
//! This module owns what needs no socket: the entry model and its NAT inference (`entry`), the
//! conntrack message kinds of the sync packet format (`wire`), and the mirror with its merge rules,
//! filters, timeout refresh and bulk transfer (`mirror`). The ctnetlink I/O is `crate::ctnetlink`;
//! carpd's driver thread is `daemon::conntrack`.

pub mod entry;
pub mod mirror;
pub mod wire;

pub use entry::{CtEntry, CtKey, CtTuple, Nat, NatBinding, TcpInfo};
pub use mirror::{
    CtAction, CtBulkState, CtConfig, CtCounters, CtFilter, CtMirror, CtOp, CtRole, LocalEvent,
};
pub use wire::CtMessage;
