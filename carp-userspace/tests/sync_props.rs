//! Property tests of the sync protocol core (carp::sync): the merge rules are a join (monotone,
//! idempotent, order-independent, never losing the newer copy), the wire format round-trips, every
//! single-bit flip, truncation and replay is rejected under the right counter, the parser never panics,
//! and two engines joined by a lossless in-memory link converge without echoing learned flows.
use carp::engine::Time;
use carp::sync::{
    ConnState, Endpoint, FlowId, FlowKey, FlowState, Message, PacketRepr, Peer, SyncAction,
    SyncConfig, SyncEngine, SyncEvent, SyncKey, merge,
};
use proptest::prelude::*;
use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

const NOW_MS: u64 = 1_000_000_000_000;

fn key() -> SyncKey {
    SyncKey::from_bytes(b"property test key").expect("key")
}

fn conn_state() -> impl Strategy<Value = ConnState> {
    prop::sample::select(ConnState::ALL.to_vec())
}

/// Sequence numbers near the top of the space, so the wrap is exercised, and within 2^31 of each
/// other, as a live connection's are (the documented domain of the wrap-aware order).
fn seq() -> impl Strategy<Value = u32> {
    (0u32..4096).prop_map(|d| 0xffff_f800u32.wrapping_add(d))
}

fn peer() -> impl Strategy<Value = Peer> {
    (conn_state(), seq(), seq()).prop_map(|(state, seqlo, seqhi)| Peer {
        state,
        seqlo,
        seqhi,
    })
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(a, p)| Endpoint::new(IpAddr::V4(Ipv4Addr::from(a)), p)),
        (any::<u128>(), any::<u16>())
            .prop_map(|(a, p)| Endpoint::new(IpAddr::V6(Ipv6Addr::from(a)), p)),
    ]
}

fn flow_key() -> impl Strategy<Value = FlowKey> {
    (any::<u8>(), endpoint(), endpoint()).prop_map(|(p, a, b)| FlowKey::new(p, a, b).0)
}

/// Any flow whose times are representable on the wire at `NOW_MS`.
fn flow() -> impl Strategy<Value = FlowState> {
    (
        (1u32..=u32::MAX, any::<u64>(), flow_key(), any::<u8>()),
        (
            0..=NOW_MS,
            // Leave 1000 s of headroom under the u32 age so runs that advance time stay representable.
            0..=u64::from(u32::MAX) - 1_000_000,
            0..=u64::from(u32::MAX),
            any::<u8>(),
        ),
        ([peer(), peer()], [any::<u64>(); 2], [any::<u64>(); 2]),
    )
        .prop_map(
            |(
                (creator, id, key, owner),
                (created, seen_age, expire_in, timeout),
                (peers, packets, bytes),
            )| {
                FlowState {
                    id: FlowId::new(creator, id),
                    key,
                    owner,
                    created_ms: created,
                    last_seen_ms: NOW_MS - seen_age,
                    expire_ms: NOW_MS + expire_in,
                    timeout,
                    peers,
                    packets,
                    bytes,
                }
            },
        )
}

/// A copy of `base` as another node might hold it: same identity, other progress, times, counters.
fn variant(base: FlowState) -> impl Strategy<Value = FlowState> {
    (
        [peer(), peer()],
        [0u64..1000, 0u64..1000],
        [0u64..1000, 0u64..1000],
        0u64..100_000,
        0u64..100_000,
        0u8..8,
    )
        .prop_map(
            move |(peers, packets, bytes, seen, expire, timeout)| FlowState {
                peers,
                packets,
                bytes,
                last_seen_ms: NOW_MS - 100_000 + seen,
                expire_ms: NOW_MS + 3_600_000 + expire,
                timeout,
                ..base.clone()
            },
        )
}

fn three_copies() -> impl Strategy<Value = (FlowState, FlowState, FlowState)> {
    flow().prop_flat_map(|base| (variant(base.clone()), variant(base.clone()), variant(base)))
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (flow(), any::<bool>()).prop_map(|(flow, ack)| Message::Ins { flow, ack }),
        flow().prop_map(Message::Upd),
        flow().prop_map(|f| Message::UpdC(f.update())),
        (1u32.., any::<u64>()).prop_map(|(c, i)| Message::Del(FlowId::new(c, i))),
        (1u32..).prop_map(|creator| Message::Clr { creator }),
        (1u32.., any::<u64>()).prop_map(|(c, i)| Message::UpdReq(FlowId::new(c, i))),
        Just(Message::UpdReq(FlowId::BULK)),
        any::<u32>().prop_map(|flows| Message::BulkStart { flows }),
        any::<u32>().prop_map(|flows| Message::BulkEnd { flows }),
        (1u32.., any::<u64>()).prop_map(|(c, i)| Message::InsAck(FlowId::new(c, i))),
    ]
}

fn packet() -> impl Strategy<Value = PacketRepr> {
    (
        any::<u32>(),
        any::<u64>(),
        prop::collection::vec(message(), 0..10),
    )
        .prop_map(|(sender, seq, messages)| PacketRepr {
            sender,
            seq,
            messages,
        })
}

/// The flow, not expiring within the hour (an expired flow's expiry clamps to `now` on the wire).
fn live(mut f: FlowState) -> FlowState {
    f.expire_ms = f.expire_ms.max(NOW_MS + 3_600_000);
    f
}

fn merged(a: &FlowState, b: &FlowState) -> FlowState {
    let mut x = a.clone();
    merge(&mut x, b);
    x
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_monotone((ours, theirs, _) in three_copies()) {
        let r = merged(&ours, &theirs);
        for d in 0..2 {
            prop_assert_ne!(r.peers[d].progress_cmp(&ours.peers[d]), Ordering::Less);
            prop_assert_ne!(r.peers[d].progress_cmp(&theirs.peers[d]), Ordering::Less);
            prop_assert!(r.packets[d] >= ours.packets[d] && r.packets[d] >= theirs.packets[d]);
            prop_assert!(r.bytes[d] >= ours.bytes[d] && r.bytes[d] >= theirs.bytes[d]);
        }
        prop_assert!(r.expire_ms >= ours.expire_ms.max(theirs.expire_ms));
        prop_assert!(r.last_seen_ms >= ours.last_seen_ms.max(theirs.last_seen_ms));
        prop_assert!(r.timeout >= ours.timeout.max(theirs.timeout));
        // Identity never changes through a merge.
        prop_assert_eq!((r.id, r.key, r.owner, r.created_ms), (ours.id, ours.key, ours.owner, ours.created_ms));
    }

    #[test]
    fn merge_is_idempotent((ours, theirs, _) in three_copies()) {
        let once = merged(&ours, &theirs);
        let mut twice = once.clone();
        let out = merge(&mut twice, &theirs);
        prop_assert_eq!(&twice, &once);
        prop_assert!(!out.changed);
        let mut self_merge = ours.clone();
        prop_assert!(!merge(&mut self_merge, &ours).changed);
        prop_assert!(!merge(&mut self_merge, &ours).stale);
    }

    #[test]
    fn merge_outcome_is_commutative_for_concurrent_updates((base, a, b) in three_copies()) {
        prop_assert_eq!(merged(&merged(&base, &a), &b), merged(&merged(&base, &b), &a));
        // And the two peers that exchange copies end up equal in either direction.
        let mut x = a.clone();
        x.created_ms = b.created_ms;
        prop_assert_eq!(merged(&x, &b), merged(&b, &x));
    }

    #[test]
    fn merge_never_loses_the_newer_state((ours, theirs, _) in three_copies()) {
        let mut r = ours.clone();
        let out = merge(&mut r, &theirs);
        let mut ours_newer = false;
        for d in 0..2 {
            match theirs.peers[d].progress_cmp(&ours.peers[d]) {
                Ordering::Greater => prop_assert_eq!(r.peers[d], theirs.peers[d]),
                Ordering::Less => {
                    prop_assert_eq!(r.peers[d], ours.peers[d]);
                    ours_newer = true;
                }
                Ordering::Equal => prop_assert_eq!(r.peers[d], ours.peers[d]),
            }
        }
        // Stale (send ours back) exactly when ours is further along somewhere.
        prop_assert_eq!(out.stale, ours_newer);
        prop_assert_eq!(out.changed, r != ours);
    }

    #[test]
    fn wire_roundtrip(p in packet()) {
        let bytes = p.emit(&key(), NOW_MS);
        prop_assert_eq!(PacketRepr::parse(&bytes, &key(), NOW_MS), Ok(p));
    }

    #[test]
    fn any_single_bit_flip_rejected_with_right_counter(p in packet(), bit in any::<prop::sample::Index>()) {
        let mut bytes = p.emit(&key(), NOW_MS);
        let i = bit.index(bytes.len() * 8);
        let (byte, mask) = (i / 8, 1u8 << (i % 8));
        bytes[byte] ^= mask;
        let e = PacketRepr::parse(&bytes, &key(), NOW_MS).expect_err("flipped packet rejected");
        let expected = match byte {
            0..=3 => "hdrops",
            4 => "badver",
            20 | 21 => {
                let claimed = usize::from(u16::from_be_bytes([bytes[20], bytes[21]]));
                if claimed > bytes.len() || claimed < 56 { "badlen" } else { "badauth" }
            }
            _ => "badauth",
        };
        prop_assert_eq!(e.counter(), expected, "byte {} mask {:#x}: {:?}", byte, mask, e);
    }

    #[test]
    fn any_truncation_rejected_as_badlen(p in packet(), cut in any::<prop::sample::Index>()) {
        let bytes = p.emit(&key(), NOW_MS);
        let len = cut.index(bytes.len());
        let e = PacketRepr::parse(&bytes[..len], &key(), NOW_MS).expect_err("truncated packet rejected");
        prop_assert_eq!(e.counter(), "badlen");
    }

    #[test]
    fn parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = PacketRepr::parse(&bytes, &key(), NOW_MS);
    }

    #[test]
    fn parser_never_panics_on_authentic_garbage(body in prop::collection::vec(any::<u8>(), 0..600), count in any::<u16>()) {
        // A key holder writing nonsense must not crash a peer either: sign arbitrary bodies.
        let mut raw = vec![0u8; 24];
        raw[..4].copy_from_slice(b"CSYN");
        raw[4] = 1;
        raw[6..8].copy_from_slice(&count.to_be_bytes());
        raw.extend_from_slice(&body);
        let total = u16::try_from(raw.len() + 32).expect("small");
        raw[20..22].copy_from_slice(&total.to_be_bytes());
        let tag = key().tag(&raw);
        raw.extend_from_slice(&tag);
        if let Ok(p) = PacketRepr::parse(&raw, &key(), NOW_MS) {
            // Whatever parses must re-emit into a packet that parses to the same thing.
            let again = p.emit(&key(), NOW_MS);
            prop_assert_eq!(PacketRepr::parse(&again, &key(), NOW_MS), Ok(p));
        }
    }

    #[test]
    fn replayed_packets_rejected_reordered_accepted_once(n in 1usize..40, order in any::<prop::sample::Index>()) {
        let mut a = engine(1, |_| {});
        let mut b = engine(2, |_| {});
        let mut packets = Vec::new();
        for i in 0..n as u64 {
            a.handle(Time::ZERO, SyncEvent::LocalInsert(test_flow(1, i + 1)));
            packets.extend(sends(&a.handle(Time::from_secs(i + 1), SyncEvent::Timer)));
        }
        // Deliver in a rotated order (reordering within the 64-packet window), then everything again.
        let k = order.index(packets.len());
        packets.rotate_left(k);
        let now = Time::from_secs(100);
        for p in packets.iter().chain(packets.iter()) {
            b.handle(now, SyncEvent::Packet(p));
        }
        prop_assert_eq!(b.counters().ipackets, n as u64);
        prop_assert_eq!(b.counters().replay, n as u64);
        prop_assert_eq!(b.table().len(), n);
    }

    #[test]
    fn engines_converge_after_bulk_sync(
        a_flows in prop::collection::vec(flow(), 0..60),
        b_flows in prop::collection::vec(flow(), 0..60),
        shared in prop::collection::vec(flow().prop_flat_map(|f| (variant(f.clone()), variant(f))), 0..20),
        mtu in 188usize..3000,
    ) {
        let mut a = engine(1, |c| c.mtu = mtu);
        let mut b = engine(2, |c| c.mtu = mtu);
        for f in a_flows { a.adopt(live(f)); }
        for f in b_flows { b.adopt(live(f)); }
        // The same flows, held at different progress on each side (e.g. before and after a failover).
        for (x, mut y) in shared {
            y.created_ms = x.created_ms;
            a.adopt(x);
            b.adopt(y);
        }
        let now = Time::from_millis(NOW_MS);
        let mut to_b = sends(&a.handle(now, SyncEvent::Start));
        let mut to_a = sends(&b.handle(now, SyncEvent::Start));
        pump(&mut a, &mut b, now, &mut to_a, &mut to_b);
        prop_assert_eq!(differences(&a, &b), 0);
        prop_assert!(!a.demoted() && !b.demoted());
    }

    #[test]
    fn learned_flows_are_not_echoed(flows in prop::collection::vec(flow(), 1..80)) {
        let mut a = engine(1, |_| {});
        let mut b = engine(2, |_| {});
        let now = Time::from_millis(NOW_MS);
        let mut wire = Vec::new();
        for f in flows {
            let mut f = live(f);
            f.id.creator = 1;
            wire.extend(sends(&a.handle(now, SyncEvent::LocalInsert(f))).into_iter().map(|p| (now, p)));
        }
        let later = now + Duration::from_secs(1);
        wire.extend(sends(&a.handle(later, SyncEvent::Timer)).into_iter().map(|p| (later, p)));
        for (t, p) in &wire {
            prop_assert!(sends(&b.handle(*t, SyncEvent::Packet(p))).is_empty());
        }
        prop_assert_eq!(b.next_deadline(), None);
        prop_assert!(sends(&b.handle(now + Duration::from_secs(10), SyncEvent::Timer)).is_empty());
        prop_assert_eq!(differences(&a, &b), 0);
    }
}

fn engine(node: u32, f: impl FnOnce(&mut SyncConfig)) -> SyncEngine {
    let mut c = SyncConfig::new(node);
    f(&mut c);
    SyncEngine::new(c, key()).expect("config")
}

fn test_flow(creator: u32, id: u64) -> FlowState {
    let (k, _) = FlowKey::new(
        17,
        Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), id as u16),
        Endpoint::new(Ipv4Addr::new(10, 0, 1, 1), 53),
    );
    FlowState::new(FlowId::new(creator, id), k, 1, 0, 1_000_000_000)
}

/// How many flows the two tables disagree on (printing whole tables on failure would drown the log).
fn differences(a: &SyncEngine, b: &SyncEngine) -> usize {
    let missing = b
        .table()
        .keys()
        .filter(|id| !a.table().contains_key(id))
        .count();
    let wrong = a
        .table()
        .iter()
        .filter(|(id, f)| b.table().get(id) != Some(f))
        .count();
    if missing + wrong > 0 {
        let sample = a
            .table()
            .iter()
            .find(|(id, f)| b.table().get(id) != Some(f));
        eprintln!(
            "first difference: {:?} vs {:?}",
            sample,
            sample.and_then(|(id, _)| b.table().get(id))
        );
    }
    missing + wrong
}

fn sends(actions: &[SyncAction]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            SyncAction::Send(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// Runs a lossless, zero-latency link between two engines until neither has anything to say.
/// Time only advances when both are idle, to the next deadline; the run never exceeds 10 virtual minutes.
fn pump(
    a: &mut SyncEngine,
    b: &mut SyncEngine,
    mut now: Time,
    to_a: &mut Vec<Vec<u8>>,
    to_b: &mut Vec<Vec<u8>>,
) {
    let end = now + Duration::from_secs(600);
    loop {
        while !to_a.is_empty() || !to_b.is_empty() {
            for p in std::mem::take(to_a) {
                to_b.extend(sends(&a.handle(now, SyncEvent::Packet(&p))));
            }
            for p in std::mem::take(to_b) {
                to_a.extend(sends(&b.handle(now, SyncEvent::Packet(&p))));
            }
        }
        let next = match (a.next_deadline(), b.next_deadline()) {
            (Some(x), Some(y)) => x.min(y),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => return,
        };
        assert!(next <= end, "the link never went quiet");
        now = now.max(next);
        to_b.extend(sends(&a.handle(now, SyncEvent::Timer)));
        to_a.extend(sends(&b.handle(now, SyncEvent::Timer)));
    }
}

#[test]
fn bulk_of_10000_flows_converges_at_default_pacing() {
    let mut a = engine(1, |_| {});
    let mut b = engine(2, |_| {});
    for i in 1..=10_000 {
        a.adopt(test_flow(1, i));
    }
    let now = Time::from_secs(100);
    let mut to_a = sends(&b.handle(now, SyncEvent::Start));
    let mut to_b = Vec::new();
    pump(&mut a, &mut b, now, &mut to_a, &mut to_b);
    assert_eq!(differences(&a, &b), 0);
    assert_eq!(b.counters().bulk_received, 1);
    assert_eq!(a.counters().bulk_sent, 1);
}
