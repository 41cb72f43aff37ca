//! Translation between the XDP flow table's records (`carp_common::maps::FlowKey`/`FlowEntry`) and the
//! sync protocol's ([`FlowKey`], [`FlowState`]), plus the idle timeouts the controller expires flows by.
//!
//! The kernel follows one TCP state per flow from the flags (SYN, SYN-ACK, ESTABLISHED, FIN, CLOSED); the
//! protocol keeps pf's per-direction states. The mapping is monotone both ways (a later kernel state
//! maps to later peer states and back), so the merge rule "never move a flow backwards" holds across the
//! translation. Times: the kernel's CLOCK_MONOTONIC ns become the engine's ms on the same clock.

use carp_common::proto;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_common::maps::{self as km, FLOW_LEARNED, FlowTcpState};

use crate::sync::state::{ConnState, Endpoint, FlowId, FlowKey, FlowState, Peer};

/// Idle timeout of a flow by protocol and state, in ms (pf's defaults: tcp.first 120 s,
/// tcp.opening 30 s, tcp.established 24 h, tcp.closing 900 s, tcp.finwait 45 s, tcp.closed 90 s,
/// udp 60 s, icmp 20 s).
pub fn idle_timeout_ms(proto: u8, state: FlowTcpState) -> u64 {
    match (proto, state) {
        (6, FlowTcpState::Syn) => 120_000,
        (6, FlowTcpState::SynAck) => 30_000,
        (6, FlowTcpState::Established) | (6, FlowTcpState::None) => 86_400_000,
        (6, FlowTcpState::Fin) => 45_000,
        (6, FlowTcpState::Closed) => 90_000,
        (17, _) => 60_000,
        _ => 20_000,
    }
}

fn addr(family: u8, b: &[u8; 16]) -> IpAddr {
    if family == 6 {
        IpAddr::V6(Ipv6Addr::from(*b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

fn bytes(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v) => out[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => out = v.octets(),
    }
    out
}

/// The protocol's key of a kernel key (both are canonical in the same order).
pub fn key_from_kernel(k: &km::FlowKey) -> FlowKey {
    FlowKey {
        proto: k.proto,
        lo: Endpoint::new(addr(k.family, &k.lo_addr), k.lo_port),
        hi: Endpoint::new(addr(k.family, &k.hi_addr), k.hi_port),
    }
}

/// The kernel key of a protocol key; None for a key mixing IPv4 and IPv6 (no packet makes one).
pub fn kernel_key(k: &FlowKey) -> Option<km::FlowKey> {
    let family = match (k.lo.addr, k.hi.addr) {
        (IpAddr::V4(_), IpAddr::V4(_)) => 4,
        (IpAddr::V6(_), IpAddr::V6(_)) => 6,
        _ => return None,
    };
    Some(km::FlowKey {
        lo_addr: bytes(k.lo.addr),
        hi_addr: bytes(k.hi.addr),
        lo_port: k.lo.port,
        hi_port: k.hi.port,
        proto: k.proto,
        family,
        pad: [0; 2],
    })
}

/// The protocol's per-direction state of a kernel TCP state (both directions alike).
fn tcp_conn(s: FlowTcpState) -> ConnState {
    match s {
        FlowTcpState::None => ConnState::TcpEstablished,
        FlowTcpState::Syn => ConnState::TcpSynSent,
        FlowTcpState::SynAck => ConnState::TcpSynReceived,
        FlowTcpState::Established => ConnState::TcpEstablished,
        FlowTcpState::Fin => ConnState::TcpFinWait1,
        FlowTcpState::Closed => ConnState::TcpTimeWait,
    }
}

/// The kernel state of the protocol's peers (the further of the two directions).
pub fn kernel_tcp_state(peers: &[Peer; 2]) -> FlowTcpState {
    let s = peers[0].state.max(peers[1].state);
    match s {
        s if !s.is_tcp() => FlowTcpState::None,
        ConnState::TcpClosed | ConnState::TcpListen | ConnState::TcpSynSent => FlowTcpState::Syn,
        ConnState::TcpSynReceived => FlowTcpState::SynAck,
        ConnState::TcpEstablished => FlowTcpState::Established,
        ConnState::TcpTimeWait => FlowTcpState::Closed,
        _ => FlowTcpState::Fin,
    }
}

/// A kernel flow as the protocol's record; `expire_ms` from the idle timeout of its state.
pub fn flow_state(k: &km::FlowKey, e: &km::FlowEntry) -> FlowState {
    let key = key_from_kernel(k);
    let tcp = FlowTcpState::from_u8(e.tcp_state);
    let peers = if k.proto == proto::IPPROTO_TCP {
        let s = tcp_conn(tcp);
        [Peer {
            state: s,
            seqlo: 0,
            seqhi: 0,
        }; 2]
    } else {
        let both = e.packets[0] > 0 && e.packets[1] > 0;
        let one = |n: u64| Peer {
            state: match n {
                0 => ConnState::NoTraffic,
                _ if both => ConnState::Multiple,
                _ => ConnState::Single,
            },
            seqlo: 0,
            seqhi: 0,
        };
        [one(e.packets[0]), one(e.packets[1])]
    };
    let last_seen_ms = e.last_seen_ns / 1_000_000;
    FlowState {
        id: FlowId::new(e.creator, e.id),
        key,
        owner: e.owner,
        created_ms: e.created_ns / 1_000_000,
        last_seen_ms,
        expire_ms: last_seen_ms + idle_timeout_ms(k.proto, tcp),
        timeout: e.tcp_state,
        peers,
        packets: e.packets,
        bytes: e.bytes,
    }
}

/// The kernel entry of a protocol record learned from a peer (marked learned).
pub fn kernel_entry(f: &FlowState) -> km::FlowEntry {
    km::FlowEntry {
        id: f.id.id,
        created_ns: f.created_ms.saturating_mul(1_000_000),
        last_seen_ns: f.last_seen_ms.saturating_mul(1_000_000),
        packets: f.packets,
        bytes: f.bytes,
        creator: f.id.creator,
        owner: f.owner,
        tcp_state: if f.key.proto == proto::IPPROTO_TCP {
            kernel_tcp_state(&f.peers) as u8
        } else {
            FlowTcpState::None as u8
        },
        flags: FLOW_LEARNED,
        pad: 0,
    }
}

/// Merges a peer's record, already in the kernel's form (`kernel_entry`), into the kernel entry we
/// hold, never moving it backwards: the later TCP state, the larger counts, the later last-seen time;
/// identity and our own flags are kept.
pub fn merge_kernel_entries(ours: &km::FlowEntry, t: &km::FlowEntry) -> km::FlowEntry {
    let mut out = *ours;
    out.tcp_state = ours.tcp_state.max(t.tcp_state);
    for d in 0..2 {
        out.packets[d] = ours.packets[d].max(t.packets[d]);
        out.bytes[d] = ours.bytes[d].max(t.bytes[d]);
    }
    out.last_seen_ns = ours.last_seen_ns.max(t.last_seen_ns);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kkey() -> km::FlowKey {
        let mut k = km::FlowKey {
            proto: 6,
            family: 4,
            lo_port: 5001,
            hi_port: 40000,
            ..Default::default()
        };
        k.lo_addr[..4].copy_from_slice(&[10, 0, 0, 100]);
        k.hi_addr[..4].copy_from_slice(&[192, 168, 100, 50]);
        k
    }

    #[test]
    fn keys_round_trip_and_stay_normalised() {
        let k = kkey();
        let p = key_from_kernel(&k);
        assert!(p.is_normalised());
        assert_eq!(kernel_key(&p), Some(k));
        // The protocol's own normalisation of the packet agrees with the kernel's order.
        let (n, _) = FlowKey::new(6, p.hi, p.lo);
        assert_eq!(n, p);
    }

    #[test]
    fn entries_round_trip_through_the_protocol() {
        let e = km::FlowEntry {
            id: 99,
            created_ns: 5_000_000_000,
            last_seen_ns: 7_000_000_000,
            packets: [3, 4],
            bytes: [300, 400],
            creator: 2,
            owner: 1,
            tcp_state: FlowTcpState::Established as u8,
            flags: 0,
            pad: 0,
        };
        let f = flow_state(&kkey(), &e);
        assert_eq!(f.id, FlowId::new(2, 99));
        assert_eq!((f.created_ms, f.last_seen_ms), (5000, 7000));
        let back = kernel_entry(&f);
        assert_eq!(back.flags, FLOW_LEARNED);
        assert_eq!(
            (
                back.id,
                back.creator,
                back.tcp_state,
                back.packets,
                back.bytes
            ),
            (99, 2, e.tcp_state, e.packets, e.bytes)
        );
    }

    proptest! {
        /// The state mapping is monotone both ways, so translation never moves a flow backwards.
        #[test]
        fn tcp_mapping_is_monotone(a in 1u8..=5, b in 1u8..=5) {
            let (sa, sb) = (FlowTcpState::from_u8(a), FlowTcpState::from_u8(b));
            if sa <= sb {
                prop_assert!(tcp_conn(sa) <= tcp_conn(sb));
            }
            let pa = [Peer { state: tcp_conn(sa), seqlo: 0, seqhi: 0 }; 2];
            prop_assert_eq!(kernel_tcp_state(&pa), sa);
        }

        /// Merging a peer's copy into the kernel entry never lowers a count or the state.
        #[test]
        fn merge_into_kernel_never_goes_backwards(
            ours_state in 0u8..=5, theirs_state in 1u8..=5,
            op in proptest::array::uniform2(0u64..1000), tp in proptest::array::uniform2(0u64..1000),
        ) {
            let mut ours = km::FlowEntry { tcp_state: ours_state, packets: op, bytes: op, ..Default::default() };
            ours.flags = 0;
            let theirs_k = km::FlowEntry { tcp_state: theirs_state, packets: tp, bytes: tp, creator: 1, ..Default::default() };
            let theirs = flow_state(&kkey(), &theirs_k);
            let m = merge_kernel_entries(&ours, &kernel_entry(&theirs));
            prop_assert!(m.tcp_state >= ours.tcp_state);
            for (d, theirs) in tp.iter().enumerate() {
                prop_assert!(m.packets[d] >= ours.packets[d] && m.packets[d] >= *theirs);
            }
            prop_assert_eq!(m.flags, 0, "our own flags are kept");
        }
    }
}
