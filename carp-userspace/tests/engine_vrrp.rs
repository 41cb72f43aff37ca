//! One test per VRRP election rule of RFC 9568 §6 (and RFC 3768 §6 where v2 differs) as run by
//! `carp::engine` when a vhid's `VhidConfig::vrrp` is set; each test is named after its rule and has
//! a control case showing the rule is what made the difference.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use carp::engine::vrrp::{master_down_interval, skew_time, vrrp_reason};
use carp::engine::{
    Action, Event, Host, HostEvent, State, Time, Vhid, VhidConfig, VrrpAdvertIn, VrrpElection,
    reason,
};
use carp::wire::vrrp::VrrpVersion;

const OWN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const LOWER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const HIGHER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
const T0: Time = Time::ZERO;
const MS: Duration = Duration::from_millis(1);

fn election(version: VrrpVersion, priority: u8, interval_cs: u16, preempt: bool) -> VrrpElection {
    VrrpElection {
        version,
        priority,
        interval_cs,
        preempt,
    }
}

fn cfg(e: VrrpElection) -> VhidConfig {
    let mut c = VhidConfig::new(51, 1, 0, [7; 8]);
    c.own_addrs = vec![IpAddr::V4(OWN)];
    c.vrrp = Some(e);
    c
}

fn v3(priority: u8) -> VhidConfig {
    cfg(election(VrrpVersion::V3, priority, 100, true))
}

fn started(c: VhidConfig) -> (Vhid, Vec<Action>) {
    let mut v = Vhid::new(c);
    let a = v.handle(T0, Event::Up);
    (v, a)
}

fn backup(c: VhidConfig) -> Vhid {
    let (v, _) = started(c);
    assert_eq!(v.state(), State::Backup);
    v
}

fn master(c: VhidConfig) -> (Vhid, Time) {
    let mut v = backup(c);
    let t = v.next_deadline().unwrap();
    v.handle(t, Event::Timer);
    assert_eq!(v.state(), State::Master);
    (v, t)
}

fn adv(src: Ipv4Addr, priority: u8, interval_cs: u16) -> Event {
    Event::VrrpAdvert(VrrpAdvertIn {
        src: IpAddr::V4(src),
        vrid: 51,
        priority,
        interval_cs,
    })
}

fn sent(actions: &[Action]) -> Vec<(u8, u16)> {
    actions
        .iter()
        .filter_map(|a| match *a {
            Action::SendVrrp {
                priority,
                interval_cs,
            } => Some((priority, interval_cs)),
            _ => None,
        })
        .collect()
}

fn reasons(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| a.transition().map(|(_, _, r)| r))
        .collect()
}

#[test]
fn skew_time_is_256_minus_priority_times_master_interval_over_256() {
    // RFC 9568 §6.1: priority 100, 100 cs -> (156 * 100) / 256 cs = 609.375 ms.
    assert_eq!(
        skew_time(VrrpVersion::V3, 100, 100),
        Duration::from_nanos(609_375_000)
    );
    assert_eq!(
        skew_time(VrrpVersion::V3, 254, 1),
        Duration::from_nanos(78_125)
    );
    // v2: (256 - priority) / 256 seconds, whatever the interval.
    assert_eq!(
        skew_time(VrrpVersion::V2, 100, 300),
        Duration::from_nanos(609_375_000)
    );
}

#[test]
fn master_down_is_three_intervals_plus_skew() {
    assert_eq!(
        master_down_interval(VrrpVersion::V3, 100, 100),
        Duration::from_secs(3) + Duration::from_nanos(609_375_000)
    );
    let v = backup(v3(100));
    assert_eq!(
        v.next_deadline().unwrap(),
        T0 + Duration::from_millis(3609) + Duration::from_nanos(375_000)
    );
    // A higher priority waits less: the preferred backup takes over first.
    let hi = backup(v3(200));
    assert!(hi.next_deadline().unwrap() < v.next_deadline().unwrap());
}

#[test]
fn master_down_timer_expiry_makes_master_and_advertises() {
    let mut v = backup(v3(100));
    let t = v.next_deadline().unwrap();
    let a = v.handle(t, Event::Timer);
    assert_eq!(reasons(&a), vec![reason::MASTER_DOWN]);
    assert_eq!(sent(&a), vec![(100, 100)]);
    assert!(a.contains(&Action::GratuitousArp { delayed: false }));
    assert_eq!(v.next_deadline().unwrap(), t + Duration::from_secs(1));
}

#[test]
fn backup_learns_the_masters_interval_v3() {
    let mut v = backup(v3(100));
    // The master advertises 10 cs; our configured interval is 100 cs.
    v.handle(T0 + MS, adv(HIGHER, 150, 10));
    assert_eq!(v.master_adver_interval_cs(), Some(10));
    assert_eq!(
        v.next_deadline().unwrap(),
        T0 + MS + master_down_interval(VrrpVersion::V3, 100, 10)
    );
    // Control: v2 never learns and keeps its own interval.
    let mut v2 = backup(cfg(election(VrrpVersion::V2, 100, 100, true)));
    v2.handle(T0 + MS, adv(HIGHER, 150, 300));
    assert_eq!(v2.master_adver_interval_cs(), Some(100));
    assert_eq!(
        v2.next_deadline().unwrap(),
        T0 + MS + master_down_interval(VrrpVersion::V2, 100, 100)
    );
}

#[test]
fn learned_interval_is_forgotten_in_init() {
    let mut v = backup(v3(100));
    v.handle(T0 + MS, adv(HIGHER, 150, 10));
    v.handle(T0 + 2 * MS, Event::LinkDown);
    v.handle(T0 + 3 * MS, Event::LinkUp);
    assert_eq!(v.master_adver_interval_cs(), Some(100));
}

#[test]
fn priority_zero_sets_the_timer_to_skew_time() {
    let mut v = backup(v3(100));
    let t = T0 + Duration::from_millis(500);
    let a = v.handle(t, adv(HIGHER, 0, 100));
    assert!(a.is_empty());
    assert_eq!(
        v.next_deadline().unwrap(),
        t + skew_time(VrrpVersion::V3, 100, 100)
    );
    let a = v.handle(v.next_deadline().unwrap(), Event::Timer);
    assert_eq!(reasons(&a), vec![vrrp_reason::MASTER_STOPPED]);
}

#[test]
fn preempt_discards_lower_priority_adverts_so_the_backup_takes_over() {
    let mut v = backup(v3(150));
    let first = v.next_deadline().unwrap();
    v.handle(T0 + Duration::from_millis(900), adv(HIGHER, 100, 100));
    assert_eq!(
        v.next_deadline().unwrap(),
        first,
        "lower advert discarded, timer not reset"
    );
    // Control: with preempt off the lower master's advert restarts the timer.
    let mut np = backup(cfg(election(VrrpVersion::V3, 150, 100, false)));
    let t = T0 + Duration::from_millis(900);
    np.handle(t, adv(HIGHER, 100, 100));
    assert_eq!(
        np.next_deadline().unwrap(),
        t + master_down_interval(VrrpVersion::V3, 150, 100)
    );
}

#[test]
fn equal_or_higher_priority_resets_the_backup_timer_even_with_preempt() {
    let mut v = backup(v3(150));
    let t = T0 + Duration::from_millis(900);
    v.handle(t, adv(HIGHER, 150, 100));
    assert_eq!(
        v.next_deadline().unwrap(),
        t + master_down_interval(VrrpVersion::V3, 150, 100)
    );
}

#[test]
fn master_yields_to_higher_priority() {
    let (mut v, t) = master(v3(100));
    let a = v.handle(t + MS, adv(LOWER, 101, 100));
    assert_eq!(reasons(&a), vec![vrrp_reason::HIGHER_PRIORITY]);
    assert_eq!(v.state(), State::Backup);
    assert!(sent(&a).is_empty());
}

#[test]
fn equal_priority_tie_goes_to_the_higher_primary_address() {
    let (mut v, t) = master(v3(100));
    // From a lower address: we stay master and, being v3, re-advertise at once.
    let a = v.handle(t + MS, adv(LOWER, 100, 100));
    assert_eq!(v.state(), State::Master);
    assert_eq!(sent(&a), vec![(100, 100)]);
    // From a higher address: we yield.
    let a = v.handle(t + 2 * MS, adv(HIGHER, 100, 100));
    assert_eq!(reasons(&a), vec![vrrp_reason::HIGHER_ADDRESS]);
}

#[test]
fn master_discards_lower_priority_and_v3_readvertises_v2_does_not() {
    let (mut v, t) = master(v3(150));
    let a = v.handle(t + MS, adv(HIGHER, 100, 100));
    assert_eq!(v.state(), State::Master);
    assert_eq!(sent(&a), vec![(150, 100)]);
    let (mut v2, t) = master(cfg(election(VrrpVersion::V2, 150, 100, true)));
    let a = v2.handle(t + MS, adv(HIGHER, 100, 100));
    assert_eq!(v2.state(), State::Master);
    assert!(sent(&a).is_empty());
}

#[test]
fn master_answers_priority_zero_with_an_advert() {
    let (mut v, t) = master(v3(100));
    let a = v.handle(t + MS, adv(HIGHER, 0, 100));
    assert_eq!(sent(&a), vec![(100, 100)]);
    assert_eq!(v.state(), State::Master);
    assert_eq!(v.next_deadline().unwrap(), t + MS + Duration::from_secs(1));
}

#[test]
fn owner_goes_master_at_start_and_ignores_adverts() {
    let (mut v, a) = started(v3(255));
    assert_eq!(reasons(&a), vec![vrrp_reason::OWNER]);
    assert_eq!(sent(&a), vec![(255, 100)]);
    let a = v.handle(T0 + MS, adv(HIGHER, 255, 100));
    assert!(a.is_empty());
    assert_eq!(v.state(), State::Master);
    // Control: a 254 master yields to the 255.
    let (mut m, t) = master(v3(254));
    m.handle(t + MS, adv(LOWER, 255, 100));
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn planned_stop_sends_priority_zero_and_serves_until_the_new_master_is_heard() {
    let (mut v, t) = master(v3(200));
    let a = v.handle(
        t + MS,
        Event::Down {
            linger: Duration::from_secs(2),
        },
    );
    assert_eq!(sent(&a), vec![(0, 100)]);
    assert_eq!(v.state(), State::Master, "make-before-break: still serving");
    assert!(v.is_lingering());
    // Another priority-0 advert does not end it; the new master's normal advert starts a short grace
    // (3 intervals, at least HANDOVER_GRACE_MIN) for clients still sending to our MAC, then INIT.
    assert!(v.handle(t + 2 * MS, adv(HIGHER, 0, 100)).is_empty());
    let heard = t + 3 * MS;
    assert!(v.handle(heard, adv(HIGHER, 100, 100)).is_empty());
    assert_eq!(v.state(), State::Master);
    // The grace is capped by the linger (2 s here, less than 3 x 1 s).
    assert_eq!(v.next_deadline(), Some(t + MS + Duration::from_secs(2)));
    let a = v.handle(v.next_deadline().unwrap(), Event::Timer);
    assert_eq!(reasons(&a), vec![reason::HANDED_OVER]);
    assert_eq!(v.state(), State::Init);
    // At 10 ms the grace is the minimum (500 ms: a loaded peer may send its gratuitous ARP late).
    let (mut f, t) = master(cfg(election(VrrpVersion::V3, 200, 1, true)));
    f.handle(
        t + MS,
        Event::Down {
            linger: Duration::from_secs(2),
        },
    );
    f.handle(t + 2 * MS, adv(HIGHER, 100, 1));
    assert_eq!(
        f.next_deadline(),
        Some(t + 2 * MS + carp::engine::vrrp::HANDOVER_GRACE_MIN)
    );
    // Control: without linger the stop is immediate.
    let (mut w, t) = master(v3(200));
    let a = w.handle(
        t + MS,
        Event::Down {
            linger: Duration::ZERO,
        },
    );
    assert_eq!(sent(&a), vec![(0, 100)]);
    assert_eq!(w.state(), State::Init);
}

#[test]
fn demotion_lowers_the_advertised_priority_but_never_an_owners() {
    let (mut v, t) = master(v3(100));
    let a = v.handle(
        t + MS,
        Event::Demote {
            demote: 30,
            advertise: true,
        },
    );
    assert_eq!(sent(&a), vec![(70, 100)]);
    let a = v.handle(
        t + 2 * MS,
        Event::Demote {
            demote: 200,
            advertise: true,
        },
    );
    assert_eq!(
        sent(&a),
        vec![(1, 100)],
        "clamped to 1, never 0 (that means stop)"
    );
    let (mut o, _) = started(v3(255));
    let a = o.handle(
        T0 + MS,
        Event::Demote {
            demote: 30,
            advertise: true,
        },
    );
    assert_eq!(sent(&a), vec![(255, 100)]);
}

#[test]
fn carp_adverts_never_reach_a_vrrp_vhid_and_vrrp_adverts_never_a_carp_one() {
    let mut v = backup(v3(100));
    let before = v.next_deadline();
    let a = v.handle(
        T0 + MS,
        Event::Advert(carp::engine::Advert {
            src: IpAddr::V4(HIGHER),
            vhid: 51,
            advbase: 1,
            advskew: 0,
            demote: 0,
            counter: [1; 8],
        }),
    );
    assert!(matches!(a[..], [Action::Dropped(_)]));
    assert_eq!(v.next_deadline(), before);
    let mut c = Vhid::new(VhidConfig::new(51, 1, 0, [7; 8]));
    c.handle(T0, Event::Up);
    let a = c.handle(T0 + MS, adv(HIGHER, 100, 100));
    assert!(matches!(a[..], [Action::Dropped(_)]));
}

#[test]
fn mixed_host_routes_each_protocol_to_its_own_vhid() {
    let mut h = Host::new();
    h.add_interface::<&str>("carp0", "eth0", &[], VhidConfig::new(1, 1, 0, [7; 8]));
    h.add_interface::<&str>("vr0", "eth0", &[], v3(100));
    h.handle(T0, HostEvent::Start);
    let a = h.handle(
        T0 + MS,
        HostEvent::VrrpAdvert {
            carpdev: "eth0".into(),
            advert: VrrpAdvertIn {
                src: IpAddr::V4(HIGHER),
                vrid: 51,
                priority: 150,
                interval_cs: 10,
            },
        },
    );
    assert!(a.is_empty());
    assert_eq!(h.interfaces()[1].vhid.master_adver_interval_cs(), Some(10));
    // A VRRP advert with the CARP interface's id finds no VRRP vhid and is not delivered.
    let a = h.handle(
        T0 + 2 * MS,
        HostEvent::VrrpAdvert {
            carpdev: "eth0".into(),
            advert: VrrpAdvertIn {
                src: IpAddr::V4(HIGHER),
                vrid: 1,
                priority: 150,
                interval_cs: 10,
            },
        },
    );
    assert!(a.is_empty());
    assert_eq!(h.interfaces()[0].vhid.state(), State::Backup);
}
