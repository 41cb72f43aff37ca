//! The simulator with VRRP: mixed CARP and VRRPv3 interfaces on one host and segment, and a VRRP
//! planned stop at a 10 ms interval. Each check names the rule its outcome depends on.

use std::time::Duration;

use carp::engine::State;
use carp::engine::vrrp::{master_down_interval, skew_time, vrrp_reason};
use carp::wire::vrrp::VrrpVersion;
use carp_sim::{Sim, scenario};

fn run(name: &str) -> Sim {
    Sim::run_scenario(scenario(name).unwrap_or_else(|| panic!("scenario {name}")))
}

#[test]
fn mixed_carp_and_vrrp_on_one_segment() {
    let sim = run("mixed-carp-vrrp");
    let s = carp::engine::Time::from_secs;
    // Both protocols elect gw1 first and stay independent.
    let carp1 = sim.timeline().transitions("gw1", 1);
    let vrrp1 = sim.timeline().transitions("gw1", 2);
    assert_eq!(carp1[1].2, State::Master, "{carp1:?}");
    assert_eq!(vrrp1[1].2, State::Master, "{vrrp1:?}");
    // VRRP's first election: master-down of priority 200 at 100 cs = 3 s + 56/256 s.
    assert_eq!(
        vrrp1[1].0,
        carp::engine::Time::ZERO + master_down_interval(VrrpVersion::V3, 200, 100)
    );
    // After the crash gw2 takes both within its own master-down (CARP 3 s + 100/256, VRRP 3.609 s).
    let carp2 = sim.timeline().transitions("gw2", 1);
    let vrrp2 = sim.timeline().transitions("gw2", 2);
    let took = |t: &[(carp::engine::Time, State, State, &str)]| {
        t.iter()
            .find(|e| e.2 == State::Master && e.0 > s(10))
            .map(|e| e.0)
            .expect("gw2 took over")
    };
    assert!(
        took(&carp2) <= s(10) + Duration::from_millis(4000),
        "{carp2:?}"
    );
    assert!(
        took(&vrrp2) <= s(10) + Duration::from_millis(4610),
        "{vrrp2:?}"
    );
    // gw1 back at 20 s: VRRP preempts (RFC default), CARP does not (net.inet.carp.preempt = 0).
    assert_eq!(sim.state("gw1", 2), Some(State::Master));
    assert_eq!(sim.state("gw2", 2), Some(State::Backup));
    assert_eq!(sim.state("gw2", 1), Some(State::Master));
    assert_eq!(sim.state("gw1", 1), Some(State::Backup));
    // Never two VRRP masters for longer than one advert round trip after gw1 returns.
    assert_eq!(sim.masters(2).len(), 1);
}

#[test]
fn vrrp_planned_stop_hands_over_after_skew_time() {
    let sim = run("vrrp-stop");
    let s = carp::engine::Time::from_secs;
    let gw2 = sim.timeline().transitions("gw2", 1);
    let (t, _, to, why) = *gw2
        .iter()
        .find(|e| e.2 == State::Master)
        .expect("gw2 MASTER");
    assert_eq!(to, State::Master);
    assert_eq!(why, vrrp_reason::MASTER_STOPPED, "{gw2:?}");
    // The priority-0 advert arrives 200 µs after 5 s; gw2 waits its skew time (156/256 x 10 ms).
    let expected = s(5) + Duration::from_micros(200) + skew_time(VrrpVersion::V3, 100, 1);
    assert_eq!(t, expected);
    // gw1 kept serving until it heard gw2 (make-before-break) and a grace (HANDOVER_GRACE_MIN) after, then left.
    let gw1 = sim.timeline().transitions("gw1", 1);
    let last = gw1.last().expect("gw1 transitions");
    assert_eq!((last.1, last.2), (State::Master, State::Init));
    let grace = carp::engine::vrrp::HANDOVER_GRACE_MIN;
    assert!(
        last.0 > t + grace && last.0 < t + grace + Duration::from_millis(1),
        "{gw1:?}"
    );
}
