//! One test per rule of spec §3/§4/§5 as implemented by `carp::engine`, each named after the rule.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use carp::engine::{
    Action, Advert, DemoteChange, DropReason, Event, ForcedState, Groups, Host, HostEvent,
    MasterDownMode, NodeId, State, Time, Vhid, VhidConfig, advert_interval, master_down_interval,
    reason,
};

const COOKIE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const PEER_COOKIE: [u8; 8] = [9, 9, 9, 9, 9, 9, 9, 9];
const OWN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
const T0: Time = Time::ZERO;

fn skew(n: u64) -> Duration {
    Duration::from_nanos(n * 1_000_000_000 / 256)
}

fn cfg(advbase: u8, advskew: u8) -> VhidConfig {
    let mut c = VhidConfig::new(1, advbase, advskew, COOKIE);
    c.own_addrs = vec![IpAddr::V4(OWN)];
    c
}

fn backup(c: VhidConfig) -> Vhid {
    let mut v = Vhid::new(c);
    let a = v.handle(T0, Event::Up);
    assert_eq!(transitions(&a), vec![(State::Init, State::Backup)]);
    v
}

/// A vhid that became MASTER through its master-down timer; returns it and the time it did.
fn master(c: VhidConfig) -> (Vhid, Time) {
    let mut v = backup(c);
    let t = v.next_deadline().unwrap();
    v.handle(t, Event::Timer);
    assert_eq!(v.state(), State::Master);
    (v, t)
}

fn adv_from(src: Ipv4Addr, advbase: u8, advskew: u8, demote: u8) -> Advert {
    Advert {
        src: IpAddr::V4(src),
        vhid: 1,
        advbase,
        advskew,
        demote,
        counter: PEER_COOKIE,
    }
}

fn adv(advbase: u8, advskew: u8, demote: u8) -> Advert {
    adv_from(PEER, advbase, advskew, demote)
}

fn transitions(actions: &[Action]) -> Vec<(State, State)> {
    actions
        .iter()
        .filter_map(|a| a.transition().map(|(f, t, _)| (f, t)))
        .collect()
}

fn reasons(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| a.transition().map(|(_, _, r)| r))
        .collect()
}

fn adverts(actions: &[Action]) -> Vec<(u8, u8, u8, bool)> {
    actions
        .iter()
        .filter_map(|a| match *a {
            Action::SendAdvert {
                advbase,
                advskew,
                demote,
                bow_out,
                ..
            } => Some((advbase, advskew, demote, bow_out)),
            _ => None,
        })
        .collect()
}

fn later(t: Time, ms: u64) -> Time {
    t + Duration::from_millis(ms)
}

// ---- timers ----

#[test]
fn advert_interval_is_advbase_plus_advskew_over_256() {
    assert_eq!(advert_interval(1, 0), Duration::from_secs(1));
    assert_eq!(advert_interval(1, 128), Duration::from_millis(1500));
    assert_eq!(advert_interval(2, 100), Duration::from_secs(2) + skew(100));
    let (mut v, t) = master(cfg(1, 128));
    assert_eq!(v.next_deadline(), Some(t + Duration::from_millis(1500)));
    let next = v.next_deadline().unwrap();
    let a = v.handle(next, Event::Timer);
    assert_eq!(adverts(&a), vec![(1, 128, 0, false)]);
    assert_eq!(v.next_deadline(), Some(next + Duration::from_millis(1500)));
}

#[test]
fn advbase0_advskew0_uses_1_256s() {
    assert_eq!(advert_interval(0, 0), skew(1));
    assert_eq!(advert_interval(0, 10), skew(10));
    let (v, t) = master(cfg(0, 0));
    assert_eq!(v.next_deadline(), Some(t + skew(1)));
}

#[test]
fn master_down_is_3_advbase_plus_skew() {
    let classic = MasterDownMode::Classic;
    assert_eq!(master_down_interval(1, 0, classic), Duration::from_secs(3));
    assert_eq!(
        master_down_interval(1, 100, classic),
        Duration::from_secs(3) + skew(100)
    );
    assert_eq!(
        master_down_interval(5, 254, classic),
        Duration::from_secs(15) + skew(254)
    );
    let v = backup(cfg(1, 100));
    assert_eq!(
        v.next_deadline(),
        Some(T0 + Duration::from_secs(3) + skew(100))
    );
}

#[test]
fn master_down_advbase0_triples_skew_or_uses_3_256s() {
    let classic = MasterDownMode::Classic;
    assert_eq!(master_down_interval(0, 10, classic), skew(30));
    assert_eq!(master_down_interval(0, 0, classic), skew(3));
}

#[test]
fn master_down_option_obsd_1370_triples_skew() {
    let m = MasterDownMode::Obsd1370;
    assert_eq!(
        master_down_interval(1, 100, m),
        Duration::from_secs(3) + skew(300)
    );
    assert_eq!(master_down_interval(0, 0, m), skew(3));
    assert_eq!(master_down_interval(0, 10, m), skew(30));
    let mut c = cfg(1, 100);
    c.master_down_mode = m;
    let v = backup(c);
    assert_eq!(
        v.next_deadline(),
        Some(T0 + Duration::from_secs(3) + skew(300))
    );
}

#[test]
fn master_down_expiry_becomes_master_then_advert_then_arp() {
    let mut v = backup(cfg(1, 0));
    let t = v.next_deadline().unwrap();
    // Not yet due: nothing happens.
    assert!(v.handle(later(T0, 100), Event::Timer).is_empty());
    let a = v.handle(t, Event::Timer);
    assert_eq!(
        a[0],
        Action::BecameMaster {
            from: State::Backup,
            reason: reason::MASTER_DOWN
        }
    );
    assert!(matches!(a[1], Action::SendAdvert { bow_out: false, .. }));
    assert_eq!(a[2], Action::GratuitousArp { delayed: false });
    assert_eq!(a.len(), 3);
    assert_eq!(v.next_deadline(), Some(t + Duration::from_secs(1)));
    assert_eq!(v.transitions_to_master(), 1);
}

#[test]
fn master_adverts_keep_their_phase_after_a_late_wakeup() {
    // advbase 0: a 3.9 ms interval; wake-ups 1 ms late must not stretch it to 4.9 ms for the peers.
    let (mut v, t0) = master(cfg(0, 0));
    let iv = advert_interval(0, 0);
    assert_eq!(v.next_deadline(), Some(t0 + iv));
    let late = t0 + iv + Duration::from_millis(1);
    assert_eq!(adverts(&v.handle(late, Event::Timer)).len(), 1);
    assert_eq!(v.next_deadline(), Some(t0 + iv * 2), "phase kept");
    // Late by more than a whole interval: one advert now (no burst), the phase restarts from now.
    let very_late = t0 + iv * 5;
    assert_eq!(adverts(&v.handle(very_late, Event::Timer)).len(), 1);
    assert_eq!(v.next_deadline(), Some(very_late + iv));
}

#[test]
fn delayed_gratuitous_arp_after_two_more_adverts() {
    let (mut v, _) = master(cfg(1, 0));
    let t1 = v.next_deadline().unwrap();
    let a1 = v.handle(t1, Event::Timer);
    assert!(!a1.contains(&Action::GratuitousArp { delayed: true }));
    let t2 = v.next_deadline().unwrap();
    let a2 = v.handle(t2, Event::Timer);
    assert_eq!(a2.last(), Some(&Action::GratuitousArp { delayed: true }));
    let t3 = v.next_deadline().unwrap();
    let a3 = v.handle(t3, Event::Timer);
    assert_eq!(adverts(&a3).len(), 1);
    assert_eq!(a3.len(), 1, "only one delayed ARP");
}

#[test]
fn backup_restarts_master_down_timer_on_advert() {
    let mut v = backup(cfg(1, 100));
    let t = later(T0, 2000);
    assert!(transitions(&v.handle(t, Event::Advert(adv(1, 0, 0)))).is_empty());
    assert_eq!(
        v.next_deadline(),
        Some(t + Duration::from_secs(3) + skew(100))
    );
    assert_eq!(v.last_master(), Some(IpAddr::V4(PEER)));
}

// ---- MASTER receives an advert ----

#[test]
fn master_yields_to_more_preferred() {
    let (mut v, t) = master(cfg(1, 100));
    let a = v.handle(later(t, 10), Event::Advert(adv(1, 50, 0)));
    assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
    assert_eq!(reasons(&a), vec![reason::MORE_PREFERRED]);
    // Now a backup: master-down timer running, no advert timer.
    assert_eq!(
        v.next_deadline(),
        Some(later(t, 10) + Duration::from_secs(3) + skew(100))
    );
}

#[test]
fn equal_t_bsd_master_yields() {
    let (mut v, t) = master(cfg(1, 100));
    let a = v.handle(later(t, 10), Event::Advert(adv(1, 100, 0)));
    assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
}

#[test]
fn master_yields_to_lower_demote() {
    let (mut v, t) = master(cfg(1, 0));
    v.handle(
        t,
        Event::Demote {
            demote: 2,
            advertise: false,
        },
    );
    // Less preferred T but lower demote: still yields.
    let a = v.handle(later(t, 10), Event::Advert(adv(1, 200, 1)));
    assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
    assert_eq!(reasons(&a), vec![reason::LOWER_DEMOTE]);
}

#[test]
fn master_keeps_on_less_preferred() {
    let (mut v, t) = master(cfg(1, 50));
    let a = v.handle(later(t, 10), Event::Advert(adv(1, 100, 0)));
    assert!(a.is_empty());
    let a = v.handle(later(t, 20), Event::Advert(adv(2, 0, 0)));
    assert!(a.is_empty());
    assert_eq!(v.state(), State::Master);
}

#[test]
fn master_keeps_against_higher_demote_even_if_more_preferred() {
    let (mut v, t) = master(cfg(1, 100));
    let a = v.handle(later(t, 10), Event::Advert(adv(1, 0, 1)));
    assert!(a.is_empty());
    assert_eq!(v.state(), State::Master);
}

#[test]
fn ucarp_tiebreak_lower_ip_wins_when_enabled() {
    let mut c = cfg(1, 100);
    c.ucarp_tiebreak = true;
    let (mut v, t) = master(c);
    // Equal T from a higher address: keep MASTER.
    let a = v.handle(later(t, 10), Event::Advert(adv(1, 100, 0)));
    assert!(a.is_empty());
    // Equal T from a lower address: yield.
    let lower = Ipv4Addr::new(10, 0, 0, 2);
    let a = v.handle(later(t, 20), Event::Advert(adv_from(lower, 1, 100, 0)));
    assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
    assert_eq!(reasons(&a), vec![reason::TIEBREAK]);
}

#[test]
fn ucarp_tiebreak_compares_numerically_not_textually() {
    let mut c = cfg(1, 0);
    c.own_addrs = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))];
    c.ucarp_tiebreak = true;
    let (mut v, t) = master(c);
    // "10.0.0.10" < "10.0.0.9" as text, but 10 > 9 as a number: keep MASTER.
    let a = v.handle(
        later(t, 10),
        Event::Advert(adv_from(Ipv4Addr::new(10, 0, 0, 10), 1, 0, 0)),
    );
    assert!(a.is_empty());
}

// ---- BACKUP receives an advert ----

#[test]
fn backup_preempts_less_preferred_only_with_preempt() {
    let mut v = backup(cfg(1, 0));
    let a = v.handle(later(T0, 500), Event::Advert(adv(1, 100, 0)));
    assert!(transitions(&a).is_empty(), "preempt off: stay BACKUP");
    let mut c = cfg(1, 0);
    c.preempt = true;
    let mut v = backup(c);
    let a = v.handle(later(T0, 500), Event::Advert(adv(1, 100, 0)));
    assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
    assert_eq!(reasons(&a), vec![reason::PREEMPT]);
    assert_eq!(adverts(&a).len(), 1);
    assert!(a.contains(&Action::GratuitousArp { delayed: false }));
}

#[test]
fn backup_preempt_needs_demote_not_lower_than_ours() {
    let mut c = cfg(1, 0);
    c.preempt = true;
    let mut v = backup(c);
    v.handle(
        T0,
        Event::Demote {
            demote: 1,
            advertise: false,
        },
    );
    let a = v.handle(later(T0, 500), Event::Advert(adv(1, 100, 0)));
    assert!(transitions(&a).is_empty());
}

#[test]
fn backup_does_not_preempt_more_preferred_or_equal() {
    let mut c = cfg(1, 50);
    c.preempt = true;
    let mut v = backup(c);
    assert!(
        v.handle(later(T0, 500), Event::Advert(adv(1, 10, 0)))
            .is_empty()
    );
    assert!(
        v.handle(later(T0, 600), Event::Advert(adv(1, 50, 0)))
            .is_empty()
    );
    assert_eq!(v.state(), State::Backup);
}

#[test]
fn backup_becomes_master_on_higher_demote_regardless_of_preempt() {
    let mut v = backup(cfg(1, 200));
    let a = v.handle(later(T0, 500), Event::Advert(adv(1, 0, 1)));
    assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
    assert_eq!(reasons(&a), vec![reason::HIGHER_DEMOTE]);
}

#[test]
fn rule3_master_going_to_time_out() {
    // Own: 3*1 + 100/256 s. An advert with T = 3 + 101/256 s > that: take over now.
    let mut v = backup(cfg(1, 100));
    let a = v.handle(later(T0, 500), Event::Advert(adv(3, 101, 0)));
    assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
    assert_eq!(reasons(&a), vec![reason::GOING_TO_TIME_OUT]);
    // Exactly equal to the threshold: not "going to time out" (the own skew counts).
    let mut v = backup(cfg(1, 100));
    assert!(transitions(&v.handle(later(T0, 500), Event::Advert(adv(3, 100, 0)))).is_empty());
}

#[test]
fn rule3_disabled_when_own_advbase_is_0() {
    let mut v = backup(cfg(0, 10));
    let a = v.handle(later(T0, 5), Event::Advert(adv(5, 0, 0)));
    assert!(transitions(&a).is_empty());
}

#[test]
fn backup_takes_over_on_bow_out() {
    let mut v = backup(cfg(1, 100));
    let a = v.handle(later(T0, 500), Event::Advert(adv(255, 255, 0)));
    assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
    assert_eq!(reasons(&a), vec![reason::BOW_OUT]);
    // Also with a large advbase, where rule 3 alone would not fire (3*100 s > 256 s).
    let mut v = backup(cfg(100, 0));
    let a = v.handle(later(T0, 500), Event::Advert(adv(255, 255, 0)));
    assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
}

#[test]
fn master_ignores_bow_out_even_with_lower_demote() {
    let (mut v, t) = master(cfg(1, 0));
    v.handle(
        t,
        Event::Demote {
            demote: 5,
            advertise: false,
        },
    );
    assert!(
        v.handle(later(t, 1), Event::Advert(adv(255, 255, 0)))
            .is_empty()
    );
    assert_eq!(v.state(), State::Master);
}

// ---- INIT ----

#[test]
fn init_ignores_adverts() {
    let mut v = Vhid::new(cfg(1, 0));
    for a in [adv(1, 100, 0), adv(1, 0, 5), adv(255, 255, 0)] {
        assert!(v.handle(T0, Event::Advert(a)).is_empty());
    }
    assert_eq!(v.state(), State::Init);
    assert_eq!(v.next_deadline(), None);
}

#[test]
fn no_init_to_master() {
    let mut v = Vhid::new(cfg(1, 0));
    assert!(v.handle(T0, Event::Force(ForcedState::Master)).is_empty());
    assert!(v.handle(later(T0, 10_000), Event::Timer).is_empty());
    let a = v.handle(later(T0, 10_000), Event::Up);
    assert_eq!(transitions(&a), vec![(State::Init, State::Backup)]);
    assert_eq!(reasons(&a), vec![reason::UP]);
    // Link down then up again also passes through BACKUP.
    v.handle(later(T0, 11_000), Event::LinkDown);
    let a = v.handle(later(T0, 12_000), Event::LinkUp);
    assert_eq!(transitions(&a), vec![(State::Init, State::Backup)]);
}

// ---- forced state ----

#[test]
fn forced_master() {
    let mut v = backup(cfg(1, 100));
    let a = v.handle(later(T0, 100), Event::Force(ForcedState::Master));
    assert_eq!(transitions(&a), vec![(State::Backup, State::Master)]);
    assert_eq!(reasons(&a), vec![reason::FORCED_MASTER]);
    assert_eq!(adverts(&a).len(), 1);
    assert!(a.contains(&Action::GratuitousArp { delayed: false }));
    // The election continues: the next more-preferred advert wins.
    let a = v.handle(later(T0, 200), Event::Advert(adv(1, 0, 0)));
    assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
}

#[test]
fn forced_backup() {
    let (mut v, t) = master(cfg(1, 0));
    let now = later(t, 100);
    let a = v.handle(now, Event::Force(ForcedState::Backup));
    assert_eq!(transitions(&a), vec![(State::Master, State::Backup)]);
    assert!(adverts(&a).is_empty(), "stops advertising");
    assert_eq!(v.next_deadline(), Some(now + Duration::from_secs(3)));
}

#[test]
fn forced_state_ignored_in_init() {
    let mut v = Vhid::new(cfg(1, 0));
    assert!(v.handle(T0, Event::Force(ForcedState::Master)).is_empty());
    assert!(v.handle(T0, Event::Force(ForcedState::Backup)).is_empty());
    assert_eq!(v.state(), State::Init);
}

// ---- shutdown / bow-out ----

#[test]
fn bow_out_sent_on_shutdown() {
    let (mut v, t) = master(cfg(1, 0));
    let a = v.handle(
        later(t, 10),
        Event::Down {
            linger: Duration::ZERO,
        },
    );
    assert_eq!(adverts(&a), vec![(255, 255, 0, true)]);
    assert_eq!(transitions(&a), vec![(State::Master, State::Init)]);
    assert_eq!(v.next_deadline(), None, "the bow-out is not rescheduled");
}

#[test]
fn backup_shutdown_sends_no_bow_out() {
    let mut v = backup(cfg(1, 0));
    let a = v.handle(
        later(T0, 10),
        Event::Down {
            linger: Duration::ZERO,
        },
    );
    assert!(adverts(&a).is_empty());
    assert_eq!(transitions(&a), vec![(State::Backup, State::Init)]);
}

#[test]
fn bow_out_linger_keeps_serving_until_new_master_heard() {
    let (mut v, t) = master(cfg(1, 0));
    let a = v.handle(
        later(t, 10),
        Event::Down {
            linger: Duration::from_secs(2),
        },
    );
    assert_eq!(adverts(&a), vec![(255, 255, 0, true)]);
    assert!(transitions(&a).is_empty());
    assert!(v.is_lingering());
    assert_eq!(v.state(), State::Master);
    assert_eq!(v.next_deadline(), Some(later(t, 2010)));
    // Even a less preferred new master ends the linger.
    let a = v.handle(later(t, 11), Event::Advert(adv(1, 200, 0)));
    assert_eq!(transitions(&a), vec![(State::Master, State::Init)]);
    assert_eq!(reasons(&a), vec![reason::HANDED_OVER]);
}

#[test]
fn bow_out_linger_expires() {
    let (mut v, t) = master(cfg(1, 0));
    v.handle(
        t,
        Event::Down {
            linger: Duration::from_secs(2),
        },
    );
    let a = v.handle(later(t, 2000), Event::Timer);
    assert_eq!(transitions(&a), vec![(State::Master, State::Init)]);
    assert_eq!(reasons(&a), vec![reason::LINGER_EXPIRED]);
}

// ---- loop detection (spec §3) ----

#[test]
fn own_looped_advert_dropped_by_cookie() {
    let (mut v, t) = master(cfg(1, 100));
    let mut looped = adv(1, 0, 0);
    looped.counter = COOKIE;
    let a = v.handle(later(t, 1), Event::Advert(looped));
    assert_eq!(a, vec![Action::Dropped(DropReason::OwnCookie)]);
    assert_eq!(v.state(), State::Master);
}

#[test]
fn own_source_address_dropped() {
    let (mut v, t) = master(cfg(1, 100));
    let a = v.handle(later(t, 1), Event::Advert(adv_from(OWN, 1, 0, 0)));
    assert_eq!(a, vec![Action::Dropped(DropReason::OwnAddress)]);
    assert_eq!(v.state(), State::Master);
}

#[test]
fn other_vhid_dropped() {
    let (mut v, t) = master(cfg(1, 100));
    let mut other = adv(1, 0, 0);
    other.vhid = 2;
    assert_eq!(
        v.handle(later(t, 1), Event::Advert(other)),
        vec![Action::Dropped(DropReason::WrongVhid)]
    );
}

// ---- demotion ----

#[test]
fn demote_byte_is_sum_of_group_counters_capped_255() {
    let mut g = Groups::new();
    g.add_interface("carp0", &["outside"]);
    g.add_interface("carp1", &["inside"]);
    g.adjust("carp", 3);
    g.adjust("outside", 4);
    assert_eq!(g.demote("carp0"), 7);
    assert_eq!(g.demote("carp1"), 3);
    g.set("outside", 200);
    g.set("carp", 100);
    assert_eq!(g.demote("carp0"), 255);
    assert_eq!(g.demote("carp1"), 100);
}

#[test]
fn group_counter_saturates_0_to_255() {
    let mut g = Groups::new();
    g.add_interface("carp0", &[] as &[&str]);
    g.adjust("carp", -5);
    assert_eq!(g.counter("carp"), 0);
    g.adjust("carp", 300);
    assert_eq!(g.counter("carp"), 255);
    g.adjust("carp", -1);
    assert_eq!(g.counter("carp"), 254);
}

#[test]
fn every_interface_is_in_group_carp() {
    let mut g = Groups::new();
    g.add_interface("carp0", &["outside"]);
    assert_eq!(g.groups_of("carp0"), vec!["carp", "outside"]);
}

#[test]
fn group_demote_rise_to_1_triggers_immediate_advert() {
    let mut g = Groups::new();
    g.add_interface("carp0", &["outside"]);
    g.add_interface("carp1", &["inside"]);
    let change = g.adjust("outside", 1);
    let expect: DemoteChange = DemoteChange {
        interfaces: [("carp0".to_string(), true)].into_iter().collect(),
    };
    assert_eq!(change, expect);
    // The engine sends at once when MASTER, with the new demote byte.
    let (mut v, t) = master(cfg(1, 0));
    let a = v.handle(
        later(t, 100),
        Event::Demote {
            demote: 1,
            advertise: true,
        },
    );
    assert_eq!(adverts(&a), vec![(1, 0, 1, false)]);
    assert_eq!(
        v.next_deadline(),
        Some(later(t, 1100)),
        "the advert timer restarts"
    );
}

#[test]
fn group_demote_fall_does_not_advertise() {
    let mut g = Groups::new();
    g.add_interface("carp0", &[] as &[&str]);
    g.adjust("carp", 2);
    let change = g.adjust("carp", -1);
    assert_eq!(change.interfaces.get("carp0"), Some(&false));
    assert!(
        g.adjust("carp", 0).interfaces.is_empty(),
        "no change, nobody affected"
    );
}

#[test]
fn backup_does_not_advertise_on_demote() {
    let mut v = backup(cfg(1, 0));
    let a = v.handle(
        later(T0, 1),
        Event::Demote {
            demote: 1,
            advertise: true,
        },
    );
    assert!(a.is_empty());
    assert_eq!(v.demote(), 1);
}

#[test]
fn adverts_carry_demote_and_cookie() {
    let (mut v, t) = master(cfg(1, 0));
    v.handle(
        t,
        Event::Demote {
            demote: 7,
            advertise: false,
        },
    );
    let next = v.next_deadline().unwrap();
    let a = v.handle(next, Event::Timer);
    assert!(a.contains(&Action::SendAdvert {
        advbase: 1,
        advskew: 0,
        demote: 7,
        counter: COOKIE,
        bow_out: false,
    }));
}

fn host_with_two() -> Host {
    let mut h = Host::new();
    let mut c1 = cfg(1, 0);
    c1.vhid = 1;
    let mut c2 = cfg(1, 0);
    c2.vhid = 2;
    h.add_interface("carp0", "eth0", &["outside"], c1);
    h.add_interface("carp1", "eth1", &["inside"], c2);
    h.handle(T0, HostEvent::Start);
    let t = h.next_deadline().unwrap();
    h.handle(t, HostEvent::Timer);
    assert!(
        h.interfaces()
            .iter()
            .all(|i| i.vhid.state() == State::Master)
    );
    h
}

#[test]
fn link_down_goes_init_and_demotes_group() {
    let mut h = host_with_two();
    let now = later(T0, 5000);
    let a = h.handle(
        now,
        HostEvent::CarpdevLink {
            carpdev: "eth1".into(),
            up: false,
        },
    );
    assert_eq!(h.interfaces()[1].vhid.state(), State::Init);
    assert_eq!(h.groups().counter("carp"), 1);
    assert_eq!(h.groups().counter("inside"), 1);
    assert_eq!(h.groups().counter("outside"), 0);
    // The sibling on eth0 (group carp rose to 1) advertises its new demote at once.
    assert_eq!(h.interfaces()[0].vhid.demote(), 1);
    assert!(a.iter().any(|x| x.node == NodeId::from_raw(0)
        && matches!(
            x.action,
            Action::SendAdvert {
                demote: 1,
                bow_out: false,
                ..
            }
        )));
    // No bow-out from the interface that lost its link.
    assert!(
        !a.iter()
            .any(|x| x.node == NodeId::from_raw(1) && matches!(x.action, Action::SendAdvert { .. }))
    );
    assert!(a.iter().any(|x| x.node == NodeId::from_raw(1)
        && x.action
            == Action::BecameInit {
                from: State::Master,
                reason: reason::LINK_DOWN
            }));
}

#[test]
fn link_up_returns_to_backup() {
    let mut h = host_with_two();
    let down = HostEvent::CarpdevLink {
        carpdev: "eth1".into(),
        up: false,
    };
    h.handle(later(T0, 5000), down.clone());
    // Repeated link-down reports are idempotent.
    h.handle(later(T0, 5100), down);
    assert_eq!(h.groups().counter("carp"), 1);
    let a = h.handle(
        later(T0, 6000),
        HostEvent::CarpdevLink {
            carpdev: "eth1".into(),
            up: true,
        },
    );
    assert_eq!(h.interfaces()[1].vhid.state(), State::Backup);
    assert!(a.iter().any(|x| x.node == NodeId::from_raw(1)
        && x.action
            == Action::BecameBackup {
                from: State::Init,
                reason: reason::LINK_UP
            }));
    assert_eq!(h.groups().counter("carp"), 0);
    assert_eq!(h.groups().counter("inside"), 0);
    assert_eq!(h.interfaces()[0].vhid.demote(), 0);
}

#[test]
fn reconfigure_advskew_on_master_advertises_now() {
    let (mut v, t) = master(cfg(1, 0));
    let a = v.handle(later(t, 10), Event::Reconfigure(cfg(1, 254)));
    assert_eq!(adverts(&a), vec![(1, 254, 0, false)]);
    // Changing only preempt does not touch timers.
    let before = v.next_deadline();
    let mut c = cfg(1, 254);
    c.preempt = true;
    assert!(v.handle(later(t, 20), Event::Reconfigure(c)).is_empty());
    assert_eq!(v.next_deadline(), before);
}

#[test]
fn time_displays_seconds_with_milliseconds() {
    assert_eq!(Time::from_millis(3004).to_string(), "3.004s");
    assert_eq!(
        (Time::from_secs(1) + Duration::from_micros(1500)).to_string(),
        "1.001s"
    );
}

/// Issue #16 item 7: the demote byte is not covered by CARP's HMAC (nor the source address), so a
/// captured advert of the real master replayed with demote 255, then with demote 0, passes
/// authentication both times: the backup takes over, then steps down, once per pair of packets.
/// With the hold-down (`engine::flipguard`, one master-down interval: 3.4 s here) it flips at most once
/// per hold-down: 200 replayed packets over 10 s from rotating sources make at most 4 takeovers (100
/// without the guard). A master that demotes itself for real is still taken over at once (the first
/// takeover) and the timer still takes over from a silent one.
#[test]
fn replayed_adverts_with_a_rewritten_demote_flip_a_backup_once_per_hold_down() {
    let mut v = backup(cfg(1, 100));
    let sec = |s: f64| T0 + Duration::from_secs_f64(s);
    assert!(transitions(&v.handle(sec(0.5), Event::Advert(adv(1, 0, 0)))).is_empty());
    let mut to_master = 0;
    for k in 0..100u32 {
        let t = 0.6 + f64::from(k) * 0.1;
        let src = Ipv4Addr::new(10, 0, 1, (k % 200) as u8 + 1);
        for (dt, demote) in [(0.0, 255), (0.05, 0)] {
            let a = v.handle(sec(t + dt), Event::Advert(adv_from(src, 1, 0, demote)));
            to_master += transitions(&a)
                .iter()
                .filter(|(_, to)| *to == State::Master)
                .count();
        }
    }
    assert!(
        (1..=4).contains(&to_master),
        "{to_master} takeovers in 10 s of replays"
    );
    assert!(v.takeovers_held() >= 90, "{}", v.takeovers_held());
    // A silent master is still taken over by the timer.
    v.handle(sec(11.0), Event::Advert(adv(1, 0, 0)));
    assert_eq!(v.state(), State::Backup);
    let t = v.next_deadline().unwrap();
    let a = v.handle(t, Event::Timer);
    assert_eq!(reasons(&a), vec![reason::MASTER_DOWN]);
}
