//! Unit tests of the conntrack mirror: merge rules, filters, the queue, bulk and refresh.

use super::super::entry::{CtTuple, TcpInfo, tcp};
use std::time::Duration;

use crate::sync::wire::OVERHEAD;

use super::super::entry::proto;
use super::queue::UPD_LEN;
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

#[test]
fn a_peers_copy_of_our_own_entry_that_tells_nothing_new_leaves_it_ours() {
    let mut m = CtMirror::new(CtConfig::default());
    m.set_live(vec![9]);
    let ours = entry(1, tcp::ESTABLISHED);
    m.local(
        T0,
        LocalEvent::Update {
            entry: ours,
            has_mark: true,
        },
    );
    m.timer(Time::from_millis(2), usize::MAX);
    // The peer's bulk answer holds its copy of ours, read later (a shorter timeout).
    let mut copy = ours;
    copy.timeout = 80;
    let out = m.remote(
        Time::from_millis(3),
        9,
        CtMessage::Upd {
            entry: copy,
            bulk: true,
        },
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(m.counters().known, 1);
    assert_eq!(m.learned(), 0, "the entry stays ours");
    // Still ours: no refresh is due, and the kernel's DESTROY goes to the peer.
    assert_eq!(m.next_deadline(), None);
    m.local(Time::from_secs(1), LocalEvent::Destroy(ours.key));
    assert_eq!(
        sends(&m.timer(Time::from_secs(2), usize::MAX)),
        vec![CtMessage::Del(ours.key)]
    );

    // Control: a copy with something new (a later TCP state, a new mark) is taken.
    let mut m = CtMirror::new(CtConfig::default());
    m.local(
        T0,
        LocalEvent::Update {
            entry: ours,
            has_mark: true,
        },
    );
    let mut marked = ours;
    marked.mark = 7;
    let later = entry(1, tcp::FIN_WAIT);
    for newer in [marked, later] {
        let out = m.remote(
            T0,
            9,
            CtMessage::Upd {
                entry: newer,
                bulk: false,
            },
        );
        assert_eq!(applies(&out).len(), 1, "{newer:?}: {out:?}");
    }
    assert_eq!(m.counters().known, 0);
    assert_eq!(m.learned(), 1);
}

fn udp(i: u16) -> CtEntry {
    let mut e = entry(i, 0);
    e.key.orig.proto = proto::UDP;
    e.reply.proto = proto::UDP;
    e.tcp = None;
    e.timeout = 120;
    e
}

fn upd(e: CtEntry) -> CtMessage {
    CtMessage::Upd {
        entry: e,
        bulk: false,
    }
}

#[test]
fn a_backup_keeps_the_entries_it_handed_over_and_never_deletes_the_masters_live_copy() {
    // gw2 carried a UDP flow as MASTER; gw1 came back and preempted: gw2 is BACKUP now.
    let mut m = CtMirror::new(CtConfig::default());
    m.set_live(vec![1]);
    m.set_role(T0, CtRole::Master);
    let e = udp(1);
    m.local(
        T0,
        LocalEvent::Update {
            entry: e,
            has_mark: true,
        },
    );
    m.timer(Time::from_millis(2), usize::MAX);
    assert_eq!(m.next_deadline(), None, "a MASTER refreshes nothing");
    // The vhids go one at a time: MASTER, shared, BACKUP.
    m.set_role(Time::from_secs(1), CtRole::Shared);
    m.set_role(Time::from_secs(1), CtRole::Backup);
    // Handed over: refreshed at half its life while the MASTER lives.
    assert_eq!(m.next_deadline(), Some(Time::from_secs(61)));
    let out = m.timer(Time::from_secs(61), usize::MAX);
    assert_eq!(applies(&out), vec![CtOp::Update(e)]);
    // Its expiry here (no peer refreshing any more) is not the MASTER's business.
    m.set_live(vec![]);
    assert!(applies(&m.timer(Time::from_secs(121), usize::MAX)).is_empty());
    m.local(Time::from_secs(300), LocalEvent::Destroy(e.key));
    assert!(sends(&m.timer(Time::from_secs(301), usize::MAX)).is_empty());

    // Control: the same expiry on a node that did not hand the entry over (shared role) is sent.
    let mut m = CtMirror::new(CtConfig::default());
    m.local(
        T0,
        LocalEvent::Update {
            entry: e,
            has_mark: true,
        },
    );
    m.timer(Time::from_millis(2), usize::MAX);
    m.local(Time::from_secs(300), LocalEvent::Destroy(e.key));
    assert_eq!(
        sends(&m.timer(Time::from_secs(301), usize::MAX)),
        vec![CtMessage::Del(e.key)]
    );
}

#[test]
fn a_master_sends_every_destroy_and_refreshes_nothing() {
    // gw1 took MASTER back holding gw2's entries (learned in its bulk).
    let mut m = CtMirror::new(CtConfig::default());
    m.set_live(vec![2]);
    let e = udp(1);
    m.remote(T0, 2, upd(e));
    assert_eq!(m.next_deadline(), Some(Time::from_secs(60)));
    m.set_role(T0, CtRole::Master);
    assert!(applies(&m.timer(Time::from_secs(60), usize::MAX)).is_empty());
    // The flow ended here, where all the traffic goes: the BACKUP's refreshed copy must go too.
    m.local(Time::from_secs(200), LocalEvent::Destroy(e.key));
    assert_eq!(
        sends(&m.timer(Time::from_secs(201), usize::MAX)),
        vec![CtMessage::Del(e.key)]
    );
    // Back to BACKUP: learned entries are refreshed again.
    m.remote(Time::from_secs(300), 2, upd(udp(2)));
    m.set_role(Time::from_secs(300), CtRole::Backup);
    m.timer(Time::from_secs(360), usize::MAX);
    assert_eq!(m.counters().refreshed, 1);
}

#[test]
fn a_backup_keeps_its_own_traffics_entry_when_the_masters_copy_expires() {
    let mut m = CtMirror::new(CtConfig::default());
    m.set_role(T0, CtRole::Backup);
    let e = udp(1);
    m.local(
        T0,
        LocalEvent::Update {
            entry: e,
            has_mark: true,
        },
    );
    let out = m.remote(Time::from_secs(1), 1, CtMessage::Del(e.key));
    assert!(applies(&out).is_empty(), "{out:?}");
    assert!(m.get(&e.key).is_some());
    // Control: a handed-over or learned entry is deleted by the MASTER's DEL.
    let f = udp(2);
    m.remote(Time::from_secs(1), 1, upd(f));
    let out = m.remote(Time::from_secs(2), 1, CtMessage::Del(f.key));
    assert_eq!(applies(&out), vec![CtOp::Delete(f.key)]);
}

#[test]
fn on_a_backup_a_peers_copy_of_our_entry_becomes_the_peers_without_a_kernel_update() {
    let mut m = CtMirror::new(CtConfig::default());
    m.set_live(vec![9]);
    m.set_role(T0, CtRole::Backup);
    let ours = entry(1, tcp::ESTABLISHED);
    m.adopt([ours]);
    let out = m.remote(
        T0,
        9,
        CtMessage::Upd {
            entry: ours,
            bulk: true,
        },
    );
    assert!(applies(&out).is_empty(), "{out:?}");
    assert_eq!((m.counters().known, m.learned()), (1, 1));
    // The MASTER carries it: refreshed here at half its life.
    let out = m.timer(Time::from_secs(60), usize::MAX);
    assert_eq!(applies(&out), vec![CtOp::Update(ours)]);
}

#[test]
fn requests_that_cross_a_bulk_get_that_bulk() {
    let mut m = CtMirror::new(CtConfig::default());
    let dumps = |a: &[CtAction]| a.iter().filter(|a| **a == CtAction::Dump).count();
    assert_eq!(dumps(&m.remote(T0, 9, CtMessage::BulkReq)), 1);
    // The asker repeats while we dump and send: no second bulk.
    assert_eq!(
        dumps(&m.remote(Time::from_secs(2), 9, CtMessage::BulkReq)),
        0
    );
    m.bulk_out(vec![entry(1, tcp::ESTABLISHED)]);
    m.bulk_out_sent(Time::from_secs(5));
    assert_eq!(
        dumps(&m.remote(Time::from_secs(6), 9, CtMessage::BulkReq)),
        0
    );
    assert_eq!(m.counters().bulk_coalesced, 2);
    // Control: a request after the interval is a new one (a lost bulk, a restarted peer).
    assert_eq!(
        dumps(&m.remote(Time::from_secs(8), 9, CtMessage::BulkReq)),
        1
    );
}
