//! The replicated flow record and the rules for merging a peer's copy into ours (spec §8, "Merging
//! updates").
//!
//! This module owns what a flow *is* for replication ([`FlowKey`], [`FlowState`], [`FlowUpdate`]) and the
//! one function that decides what a received copy does to ours ([`merge`]). Every mutable field merges as
//! a join (the later of the two), so the result does not depend on the order in which concurrent
//! updates arrive, applying the same update twice changes nothing, and a flow never moves backwards.
//!
//! Times are milliseconds on the *holder's* monotonic clock (the engine's `now`). On the wire they
//! travel as ages relative to the sender's `now`, as pfsync does with its relative creation/expire
//! seconds: that needs no clock synchronisation between nodes, and the only error is the one-way
//! latency of the sync link, which is far below any flow timeout.

use std::cmp::Ordering;
use std::net::IpAddr;

/// A flow's identity across the cluster: the node that created it and its number on that node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId {
    /// The creating node's sync id (never 0: 0/0 is the bulk request).
    pub creator: u32,
    /// The flow number, unique per creator.
    pub id: u64,
}

impl FlowId {
    /// The id `id` of the flow created by node `creator`.
    pub const fn new(creator: u32, id: u64) -> FlowId {
        FlowId { creator, id }
    }

    /// The UPD_REQ id meaning "send me everything" (id 0 of creator 0).
    pub const BULK: FlowId = FlowId { creator: 0, id: 0 };
}

/// One end of a flow: address and port (ports are 0 for protocols without them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// IPv4 or IPv6 address.
    pub addr: IpAddr,
    /// Transport port, or 0.
    pub port: u16,
}

impl Endpoint {
    /// The endpoint `addr`:`port`.
    pub fn new(addr: impl Into<IpAddr>, port: u16) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            port,
        }
    }
}

/// Which way a packet went relative to a [`FlowKey`]: from `lo` to `hi` or back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the lower endpoint to the higher one (index 0 of the per-direction arrays).
    LoToHi,
    /// From the higher endpoint to the lower one (index 1).
    HiToLo,
}

impl Direction {
    /// The index of this direction in [`FlowState`]'s per-direction arrays.
    pub const fn index(self) -> usize {
        match self {
            Direction::LoToHi => 0,
            Direction::HiToLo => 1,
        }
    }
}

/// A flow's 5-tuple, normalised so both directions of one flow give the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub proto: u8,
    /// The lower endpoint (address first, then port; IPv4 sorts before IPv6).
    pub lo: Endpoint,
    /// The higher endpoint.
    pub hi: Endpoint,
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, and the direction that packet went.
    pub fn new(proto: u8, src: Endpoint, dst: Endpoint) -> (FlowKey, Direction) {
        // Normalising here (not in the dataplane's key) is what lets a reply seen by another node,
        // which may only ever see one direction, land on the same record.
        if src <= dst {
            (
                FlowKey {
                    proto,
                    lo: src,
                    hi: dst,
                },
                Direction::LoToHi,
            )
        } else {
            (
                FlowKey {
                    proto,
                    lo: dst,
                    hi: src,
                },
                Direction::HiToLo,
            )
        }
    }

    /// True if `lo` really is the lower endpoint (what the parser insists on).
    pub fn is_normalised(&self) -> bool {
        self.lo <= self.hi
    }
}

/// Connection state of one direction of a flow, ordered so that "greater" is later in the life of the
/// connection: pf's UDP/other states first, then pf's `TCPS_*` order. Merges only move it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ConnState {
    /// Non-TCP: no packet seen in this direction yet.
    NoTraffic = 0,
    /// Non-TCP: one packet seen in this direction.
    Single = 1,
    /// Non-TCP: packets seen in both directions.
    Multiple = 2,
    /// TCP CLOSED.
    TcpClosed = 16,
    /// TCP LISTEN.
    TcpListen = 17,
    /// TCP SYN_SENT.
    TcpSynSent = 18,
    /// TCP SYN_RECEIVED.
    TcpSynReceived = 19,
    /// TCP ESTABLISHED.
    TcpEstablished = 20,
    /// TCP CLOSE_WAIT.
    TcpCloseWait = 21,
    /// TCP FIN_WAIT_1.
    TcpFinWait1 = 22,
    /// TCP CLOSING.
    TcpClosing = 23,
    /// TCP LAST_ACK.
    TcpLastAck = 24,
    /// TCP FIN_WAIT_2.
    TcpFinWait2 = 25,
    /// TCP TIME_WAIT.
    TcpTimeWait = 26,
}

impl ConnState {
    /// Every state, in lifecycle order.
    pub const ALL: [ConnState; 14] = [
        ConnState::NoTraffic,
        ConnState::Single,
        ConnState::Multiple,
        ConnState::TcpClosed,
        ConnState::TcpListen,
        ConnState::TcpSynSent,
        ConnState::TcpSynReceived,
        ConnState::TcpEstablished,
        ConnState::TcpCloseWait,
        ConnState::TcpFinWait1,
        ConnState::TcpClosing,
        ConnState::TcpLastAck,
        ConnState::TcpFinWait2,
        ConnState::TcpTimeWait,
    ];

    /// The wire byte (monotone with the order, so byte comparison agrees with `Ord`).
    pub const fn to_byte(self) -> u8 {
        self as u8
    }

    /// The state of a wire byte, or `None` for a byte no state uses (`badval`).
    pub fn from_byte(b: u8) -> Option<ConnState> {
        ConnState::ALL.iter().copied().find(|s| s.to_byte() == b)
    }

    /// True for the TCP states.
    pub fn is_tcp(self) -> bool {
        self >= ConnState::TcpClosed
    }
}

/// What the sync protocol tracks of one direction of a flow (pf's `pf_state_peer`, reduced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Connection state of this direction.
    pub state: ConnState,
    /// Lowest sequence number expected next (TCP; 0 otherwise).
    pub seqlo: u32,
    /// Highest sequence number the window allows (TCP; 0 otherwise).
    pub seqhi: u32,
}

impl Peer {
    /// A direction that has seen nothing: non-TCP `NoTraffic`, sequence numbers 0.
    pub const IDLE: Peer = Peer {
        state: ConnState::NoTraffic,
        seqlo: 0,
        seqhi: 0,
    };

    /// Compares progress: state first, then seqlo, then seqhi, sequence numbers wrap-aware.
    ///
    /// pfsync compares state then seqlo with `SEQ_GT`; seqhi is our tie-break so that two copies
    /// that differ only there still merge to the same result in either order. Wrap-aware
    /// comparison (RFC 1982) is needed because a long TCP connection wraps its sequence space; it
    /// is a total order for numbers within 2^31 of each other, which a live connection's are.
    pub fn progress_cmp(&self, other: &Peer) -> Ordering {
        self.state
            .cmp(&other.state)
            .then_with(|| seq_cmp(self.seqlo, other.seqlo))
            .then_with(|| seq_cmp(self.seqhi, other.seqhi))
    }
}

/// Serial-number comparison of two TCP sequence numbers (RFC 1982): `a` after `b` if `a - b` as i32
/// is positive.
pub fn seq_cmp(a: u32, b: u32) -> Ordering {
    // The cast reinterprets the wrapped difference as signed, which is exactly SEQ_GT/SEQ_LT.
    (a.wrapping_sub(b) as i32).cmp(&0)
}

/// A replicated flow: identity, key, owner, times, per-direction progress and counters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowState {
    /// Creator node and flow number.
    pub id: FlowId,
    /// The normalised 5-tuple.
    pub key: FlowKey,
    /// The carpnode vhid that owns the flow (the node that forwards it under load balancing).
    pub owner: u8,
    /// When the flow was created, ms on the holder's clock.
    pub created_ms: u64,
    /// When a packet was last seen, ms on the holder's clock.
    pub last_seen_ms: u64,
    /// When the flow expires unless more traffic comes, ms on the holder's clock.
    pub expire_ms: u64,
    /// pf's timeout class (which idle timeout applies); classes rise with the TCP lifecycle.
    pub timeout: u8,
    /// Progress per direction, indexed by [`Direction::index`].
    pub peers: [Peer; 2],
    /// Packets per direction.
    pub packets: [u64; 2],
    /// Bytes per direction.
    pub bytes: [u64; 2],
}

impl FlowState {
    /// A fresh flow seen at `now_ms`: idle peers, zero counters, expiring at `expire_ms`.
    pub fn new(id: FlowId, key: FlowKey, owner: u8, now_ms: u64, expire_ms: u64) -> FlowState {
        FlowState {
            id,
            key,
            owner,
            created_ms: now_ms,
            last_seen_ms: now_ms,
            expire_ms,
            timeout: 0,
            peers: [Peer::IDLE; 2],
            packets: [0; 2],
            bytes: [0; 2],
        }
    }

    /// The part of this flow a compressed update (UPD_C) carries.
    pub fn update(&self) -> FlowUpdate {
        FlowUpdate {
            id: self.id,
            peers: self.peers,
            last_seen_ms: self.last_seen_ms,
            expire_ms: self.expire_ms,
            timeout: self.timeout,
        }
    }
}

/// What a compressed update (UPD_C) carries: progress and times, without key and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowUpdate {
    /// Creator node and flow number.
    pub id: FlowId,
    /// Progress per direction.
    pub peers: [Peer; 2],
    /// Last packet seen, ms on the holder's clock.
    pub last_seen_ms: u64,
    /// Expiry, ms on the holder's clock.
    pub expire_ms: u64,
    /// pf's timeout class.
    pub timeout: u8,
}

/// What merging a received copy did to ours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Ours changed: the local table must be updated.
    pub changed: bool,
    /// Ours is further along in at least one direction (`stale`): send our copy back to heal the peer.
    pub stale: bool,
}

/// Merges a full copy (INS/UPD) into ours: the progress rules of [`merge_update`], plus counters,
/// which only grow. Identity fields (key, owner, creation) are kept: they never change for an id.
pub fn merge(ours: &mut FlowState, theirs: &FlowState) -> MergeOutcome {
    let mut out = merge_update(ours, &theirs.update());
    for d in 0..2 {
        if theirs.packets[d] > ours.packets[d] {
            ours.packets[d] = theirs.packets[d];
            out.changed = true;
        }
        if theirs.bytes[d] > ours.bytes[d] {
            ours.bytes[d] = theirs.bytes[d];
            out.changed = true;
        }
    }
    out
}

/// Merges a compressed copy (UPD_C) into ours (spec §8): per direction, the copy that is further
/// along wins, so no direction ever goes to a lower state or an earlier seqlo; if ours is further
/// along anywhere the outcome is `stale`. Times and the timeout class take the later value.
pub fn merge_update(ours: &mut FlowState, theirs: &FlowUpdate) -> MergeOutcome {
    let mut out = MergeOutcome::default();
    for d in 0..2 {
        match theirs.peers[d].progress_cmp(&ours.peers[d]) {
            Ordering::Greater => {
                ours.peers[d] = theirs.peers[d];
                out.changed = true;
            }
            Ordering::Less => out.stale = true,
            Ordering::Equal => {}
        }
    }
    // pfsync takes expire and timeout from any copy that is not entirely stale. Taking the maximum
    // instead keeps the merge order-independent, and a later expiry is what the newer copy has.
    if theirs.last_seen_ms > ours.last_seen_ms {
        ours.last_seen_ms = theirs.last_seen_ms;
        out.changed = true;
    }
    if theirs.expire_ms > ours.expire_ms {
        ours.expire_ms = theirs.expire_ms;
        out.changed = true;
    }
    if theirs.timeout > ours.timeout {
        ours.timeout = theirs.timeout;
        out.changed = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn tcp_flow() -> FlowState {
        let (key, _) = FlowKey::new(
            6,
            Endpoint::new(Ipv4Addr::new(10, 0, 0, 9), 40000),
            Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 443),
        );
        let mut f = FlowState::new(FlowId::new(1, 7), key, 1, 1000, 61_000);
        f.peers = [
            Peer {
                state: ConnState::TcpEstablished,
                seqlo: 1000,
                seqhi: 66000,
            },
            Peer {
                state: ConnState::TcpEstablished,
                seqlo: 5000,
                seqhi: 70000,
            },
        ];
        f
    }

    #[test]
    fn key_both_directions_same() {
        let a = Endpoint::new(Ipv6Addr::LOCALHOST, 80);
        let b = Endpoint::new(Ipv6Addr::UNSPECIFIED, 5555);
        let (k1, d1) = FlowKey::new(17, a, b);
        let (k2, d2) = FlowKey::new(17, b, a);
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        assert!(k1.is_normalised());
        assert_eq!(k1.lo, b);
    }

    #[test]
    fn key_ipv4_sorts_before_ipv6() {
        let v4 = Endpoint::new(Ipv4Addr::BROADCAST, 1);
        let v6 = Endpoint::new(Ipv6Addr::UNSPECIFIED, 1);
        assert_eq!(FlowKey::new(6, v6, v4).0.lo, v4);
    }

    #[test]
    fn conn_state_bytes_roundtrip_and_order() {
        for w in ConnState::ALL.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_byte() < w[1].to_byte());
        }
        for s in ConnState::ALL {
            assert_eq!(ConnState::from_byte(s.to_byte()), Some(s));
        }
        assert_eq!(ConnState::from_byte(3), None);
        assert_eq!(ConnState::from_byte(27), None);
    }

    #[test]
    fn update_never_lowers_tcp_state() {
        let mut ours = tcp_flow();
        let mut theirs = ours.clone();
        theirs.peers[0].state = ConnState::TcpSynReceived;
        theirs.peers[0].seqlo = 9_000_000;
        let out = merge(&mut ours, &theirs);
        assert_eq!(ours.peers[0].state, ConnState::TcpEstablished);
        assert_eq!(ours.peers[0].seqlo, 1000);
        assert!(out.stale);
        assert!(!out.changed);
    }

    #[test]
    fn update_never_moves_seqlo_back() {
        let mut ours = tcp_flow();
        let mut theirs = ours.clone();
        theirs.peers[1].seqlo = 4999;
        let out = merge(&mut ours, &theirs);
        assert_eq!(ours.peers[1].seqlo, 5000);
        assert!(out.stale);
    }

    #[test]
    fn seqlo_forward_across_wrap_is_accepted() {
        let mut ours = tcp_flow();
        ours.peers[0].seqlo = u32::MAX - 10;
        let mut theirs = ours.clone();
        theirs.peers[0].seqlo = 5; // 16 bytes later, after the wrap
        let out = merge(&mut ours, &theirs);
        assert_eq!(ours.peers[0].seqlo, 5);
        assert!(out.changed && !out.stale);
    }

    #[test]
    fn non_tcp_states_only_forward() {
        let mut ours = tcp_flow();
        ours.peers = [Peer {
            state: ConnState::Multiple,
            ..Peer::IDLE
        }; 2];
        let mut theirs = ours.clone();
        theirs.peers[0].state = ConnState::Single;
        assert!(merge(&mut ours, &theirs).stale);
        assert_eq!(ours.peers[0].state, ConnState::Multiple);
    }

    #[test]
    fn newer_copy_takes_peers_timeout_expire() {
        let mut ours = tcp_flow();
        let mut theirs = ours.clone();
        theirs.peers[0].state = ConnState::TcpFinWait1;
        theirs.expire_ms += 5000;
        theirs.last_seen_ms += 10;
        theirs.timeout = 4;
        let out = merge(&mut ours, &theirs);
        assert_eq!(ours, theirs);
        assert!(out.changed && !out.stale);
    }

    #[test]
    fn ours_newer_one_way_theirs_other_way_is_both() {
        let mut ours = tcp_flow();
        let mut theirs = ours.clone();
        ours.peers[0].seqlo += 1;
        theirs.peers[1].seqlo += 1;
        let out = merge(&mut ours, &theirs);
        assert!(out.changed && out.stale);
        assert_eq!(ours.peers[1].seqlo, theirs.peers[1].seqlo);
    }

    #[test]
    fn counters_only_grow() {
        let mut ours = tcp_flow();
        ours.packets = [10, 10];
        let mut theirs = ours.clone();
        theirs.packets = [5, 12];
        let out = merge(&mut ours, &theirs);
        assert_eq!(ours.packets, [10, 12]);
        // Counters never make a copy stale: that would ping-pong updates for every packet.
        assert!(out.changed && !out.stale);
    }

    #[test]
    fn identical_copy_is_a_no_op() {
        let mut ours = tcp_flow();
        let theirs = ours.clone();
        assert_eq!(merge(&mut ours, &theirs), MergeOutcome::default());
    }
}
