//! The sync engine's rules, one test per rule (spec §8), run engine against engine.

use super::*;
use crate::sync::state::{ConnState, Endpoint, FlowKey};
use crate::sync::wire::PacketRepr;
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
    assert!(matches!(&got[..], [SyncAction::Apply(FlowOp::Update(f))] if f.peers[1].seqlo == 1));
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

/// The engine's table has a bound (issue #16 item 8): a peer sending more flows than
/// `max_flows` (a bulk of them, or one by one) grows it no further, and neither do local ones;
/// what was not taken is counted. Updates of flows it holds still merge.
#[test]
fn rule_the_flow_table_holds_at_most_max_flows() {
    let mut a = engine(1);
    let mut b = engine_with(2, |c| c.max_flows = 10);
    for i in 1..=25 {
        a.adopt(flow(1, i));
    }
    let req = b.handle(T0, SyncEvent::Start);
    let wire = a.handle(T0, SyncEvent::Packet(sent(&req)[0]));
    run_bulk(&mut a, &mut b, T0, wire);
    assert_eq!(b.table().len(), 10);
    assert_eq!(b.counters().table_full, 15);
    b.handle(T0, SyncEvent::LocalInsert(flow(2, 99)));
    assert_eq!(
        b.table().len(),
        10,
        "a local flow past the bound is not taken either"
    );
    assert_eq!(b.counters().table_full, 16);
    let held = *b.table().keys().next().expect("a flow");
    let mut newer = b.flow(held).expect("held").clone();
    newer.expire_ms += 1000;
    let upd = PacketRepr {
        sender: 1,
        seq: 1 << 40,
        messages: vec![Message::Upd(newer.clone())],
    }
    .emit(&key(), 0);
    b.handle(T0, SyncEvent::Packet(&upd));
    assert_eq!(b.flow(held).map(|f| f.expire_ms), Some(newer.expire_ms));
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
