//! Properties of conntrack replication's sans-IO parts: the conntrack message kinds survive a sealed
//! sync packet and a forged or replayed one reaches no mirror; the mirror's merge never moves a TCP
//! state back, never sends a learned entry on, and is deterministic.
use carp::engine::Time;
use carp::sync::conntrack::{
    CtAction, CtConfig, CtEntry, CtKey, CtMessage, CtMirror, CtTuple, LocalEvent, TcpInfo,
    entry::{proto, status},
};
use carp::sync::{Message, PacketBuilder, PacketRepr, SyncAction, SyncConfig, SyncEngine, SyncKey};
use proptest::prelude::*;
use std::net::IpAddr;
use std::time::Duration;

fn key() -> SyncKey {
    SyncKey::from_bytes(b"conntrack props key\n").unwrap()
}

fn tuple() -> impl Strategy<Value = CtTuple> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        prop::sample::select(vec![
            proto::TCP,
            proto::UDP,
            proto::ICMP,
            proto::SCTP,
            proto::GRE,
        ]),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(v6, a, b, p, sport, dport)| {
            let ip = |x: [u8; 16]| -> IpAddr {
                if v6 {
                    IpAddr::from(x)
                } else {
                    IpAddr::from([x[0], x[1], x[2], x[3]])
                }
            };
            CtTuple {
                src: ip(a),
                dst: ip(b),
                proto: p,
                sport,
                dport,
            }
        })
}

fn entry() -> impl Strategy<Value = CtEntry> {
    (
        tuple(),
        tuple(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        prop::option::of(any::<[u8; 16]>()),
        prop::option::of((0u8..10, any::<[u8; 2]>(), any::<[u8; 2]>())),
    )
        .prop_map(|(orig, r, zone, st, timeout, mark, labels, tcp)| {
            // Both tuples of one entry are of one family and protocol.
            let mut reply = orig.invert();
            if r.src.is_ipv6() == orig.src.is_ipv6() {
                reply.dst = r.dst;
            }
            CtEntry {
                key: CtKey { zone, orig },
                reply,
                status: st,
                timeout,
                mark,
                labels,
                tcp: tcp.map(|(state, wscale, flags)| TcpInfo {
                    state,
                    wscale,
                    flags,
                }),
            }
        })
}

fn message() -> impl Strategy<Value = CtMessage> {
    prop_oneof![
        (entry(), any::<bool>()).prop_map(|(entry, bulk)| CtMessage::Upd { entry, bulk }),
        entry().prop_map(|e| CtMessage::Del(e.key)),
        Just(CtMessage::BulkReq),
        any::<u32>().prop_map(CtMessage::BulkStart),
        any::<u32>().prop_map(CtMessage::BulkEnd),
    ]
}

fn conntrack_of(actions: &[SyncAction]) -> Vec<CtMessage> {
    actions
        .iter()
        .filter_map(|a| match a {
            SyncAction::Conntrack { msg, .. } => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

proptest! {
    #[test]
    fn ct_messages_cross_a_sealed_packet_and_forgeries_do_not(
        msgs in prop::collection::vec(message(), 1..10),
        flip in any::<prop::sample::Index>(),
    ) {
        let a = SyncEngine::new(SyncConfig::new(1), key()).unwrap();
        let mut b = SyncEngine::new(SyncConfig::new(2), key()).unwrap();
        let mut pb = PacketBuilder::new();
        for m in &msgs {
            pb.push(&Message::Ct(m.clone()), 0);
        }
        let bytes = a.sealer().seal(pb);
        let parsed = PacketRepr::parse(&bytes, &key(), 0).unwrap();
        prop_assert_eq!(parsed.messages.len(), msgs.len());
        // A forged copy (one bit flipped) is refused and counted; nothing reaches the mirror.
        let mut forged = bytes.clone();
        let i = flip.index(forged.len());
        forged[i] ^= 0x01;
        let out = b.handle(Time::ZERO, carp::sync::SyncEvent::Packet(&forged));
        prop_assert!(conntrack_of(&out).is_empty());
        let rejected: u64 = ["badlen", "hdrops", "badver", "badauth", "badact", "badval"]
            .iter()
            .map(|c| b.counters().get(c).unwrap())
            .sum();
        prop_assert_eq!(rejected, 1);
        let out = b.handle(Time::ZERO, carp::sync::SyncEvent::Packet(&bytes));
        prop_assert_eq!(conntrack_of(&out), msgs);
        // Replayed: refused by the same window as flow messages.
        let out = b.handle(Time::ZERO, carp::sync::SyncEvent::Packet(&bytes));
        prop_assert!(conntrack_of(&out).is_empty());
        prop_assert_eq!(b.counters().replay, 1);
    }

    #[test]
    fn a_peer_never_moves_tcp_state_back_and_learned_entries_are_not_sent_on(
        states in prop::collection::vec(0u8..10, 1..40),
    ) {
        let mut m = CtMirror::new(CtConfig::default());
        let orig = CtTuple {
            src: "192.168.100.100".parse().unwrap(),
            dst: "10.0.0.100".parse().unwrap(),
            proto: proto::TCP,
            sport: 40000,
            dport: 80,
        };
        let mut best = 0u8;
        let mut now = Time::ZERO;
        for s in states {
            let e = CtEntry {
                key: CtKey { zone: 0, orig },
                reply: orig.invert(),
                status: status::CONFIRMED,
                timeout: 100,
                mark: 0,
                labels: None,
                tcp: Some(TcpInfo { state: s, wscale: [0, 0], flags: [0, 0] }),
            };
            let mut out = m.remote(now, 7, CtMessage::Upd { entry: e, bulk: false });
            now += Duration::from_millis(3);
            out.extend(m.timer(now, usize::MAX));
            let rank = carp::sync::conntrack::entry::tcp::rank(s);
            let sent: Vec<_> = out.iter().filter_map(|a| match a {
                CtAction::Send(v) => Some(v.clone()),
                _ => None,
            }).flatten().collect();
            if rank < best {
                // Older: ours goes back, and it is the newer one.
                prop_assert_eq!(sent.len(), 1);
                let CtMessage::Upd { entry, .. } = &sent[0] else { panic!("{sent:?}") };
                prop_assert_eq!(carp::sync::conntrack::entry::tcp::rank(entry.tcp.unwrap().state), best);
            } else {
                prop_assert!(sent.is_empty(), "learned entry sent on: {:?}", sent);
                best = rank;
            }
            let held = m.get(&e.key).unwrap().tcp.unwrap().state;
            prop_assert_eq!(carp::sync::conntrack::entry::tcp::rank(held), best);
        }
    }

    #[test]
    fn the_mirror_is_deterministic(
        inputs in prop::collection::vec((any::<bool>(), entry(), 0u64..50), 1..60),
    ) {
        let run = || {
            let mut m = CtMirror::new(CtConfig::default());
            m.set_live(vec![7]);
            let mut now = Time::ZERO;
            let mut all = Vec::new();
            for (local, e, dt) in &inputs {
                now += Duration::from_millis(*dt);
                all.extend(if *local {
                    m.local(now, LocalEvent::Update { entry: *e, has_mark: true })
                } else {
                    m.remote(now, 7, CtMessage::Upd { entry: *e, bulk: false })
                });
                all.extend(m.timer(now, usize::MAX));
            }
            all
        };
        prop_assert_eq!(run(), run());
    }
}
