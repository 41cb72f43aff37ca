//! Simulator properties under random fault schedules, and fixed-seed regression tests of every
//! built-in scenario (`carp_sim::scenarios`).
//!
//! The properties: once faults stop (time `t_f`), (a) within master-down plus one advert interval
//! exactly one node is MASTER per vhid and stays so, (b) with preempt on that node is the preferred
//! one (lowest (demote, advskew)), (c) no two MASTERs coexist after `t_f` for longer than one advert
//! interval plus delivery delays (per pair of nodes).

use std::net::Ipv4Addr;
use std::time::Duration;

use proptest::prelude::*;

use carp::engine::{
    ForcedState, MasterDownMode, State, Time, advert_interval, master_down_interval, reason,
};
use carp_sim::{IfaceSpec, LinkParams, NodeSpec, Op, Scenario, Sim, scenario, scenarios};

/// A fault as generated (nodes are indices).
#[derive(Clone, Debug)]
enum Fault {
    Crash(usize),
    Restart(usize),
    Partition(Vec<usize>),
    Heal,
    Loss(u8),
    Delay(u16),
    Demote(usize, i32),
    LinkDown(usize),
    LinkUp(usize),
    Force(usize, bool),
    Shutdown(usize, u16),
    Up(usize),
}

fn fault(n: usize) -> impl Strategy<Value = Fault> {
    prop_oneof![
        (0..n).prop_map(Fault::Crash),
        (0..n).prop_map(Fault::Restart),
        proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 1..n).prop_map(Fault::Partition),
        Just(Fault::Heal),
        (0u8..=60).prop_map(Fault::Loss),
        (0u16..=300).prop_map(Fault::Delay),
        ((0..n), -3i32..=3).prop_map(|(i, d)| Fault::Demote(i, d)),
        (0..n).prop_map(Fault::LinkDown),
        (0..n).prop_map(Fault::LinkUp),
        ((0..n), any::<bool>()).prop_map(|(i, m)| Fault::Force(i, m)),
        ((0..n), 0u16..=2000).prop_map(|(i, l)| Fault::Shutdown(i, l)),
        (0..n).prop_map(Fault::Up),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    advbase: u8,
    skews: Vec<u8>,
    preempt: bool,
    tiebreak: bool,
    mode: MasterDownMode,
    seed: u64,
    jitter_us: u64,
    faults: Vec<(u64, Fault)>,
}

fn mode() -> impl Strategy<Value = MasterDownMode> {
    prop_oneof![
        Just(MasterDownMode::Classic),
        Just(MasterDownMode::Obsd1370)
    ]
}

/// Distinct advskews (BSD semantics need them: equal T masters race forever).
fn case() -> impl Strategy<Value = Case> {
    let skews = |n| {
        proptest::sample::subsequence((0u8..=240).step_by(10).collect::<Vec<_>>(), n).prop_shuffle()
    };
    case_with(skews, false)
}

/// Possibly equal advskews, resolved by the ucarp tie-break.
fn case_tiebreak() -> impl Strategy<Value = Case> {
    let skews = |n| proptest::collection::vec(prop_oneof![Just(0u8), Just(100u8)], n);
    case_with(skews, true)
}

fn case_with<S: Strategy<Value = Vec<u8>>>(
    skews: impl Fn(usize) -> S + Clone,
    tiebreak: bool,
) -> impl Strategy<Value = Case> {
    (2usize..=4)
        .prop_flat_map(move |n| {
            (
                1u8..=2,
                skews(n),
                any::<bool>(),
                mode(),
                any::<u64>(),
                0u64..=5000,
                proptest::collection::vec((0u64..20_000, fault(n)), 0..12),
            )
        })
        .prop_map(
            move |(advbase, skews, preempt, mode, seed, jitter_us, faults)| Case {
                advbase,
                skews,
                preempt,
                tiebreak,
                mode,
                seed,
                jitter_us,
                faults,
            },
        )
}

const FAULTS_END: Time = Time::from_secs(20);

struct Built {
    scenario: Scenario,
    /// Master-down + one interval + two worst-case delays: when a single MASTER must be settled.
    settle: Duration,
    /// One interval + two worst-case delays: the longest dual-MASTER run after the faults.
    dual: Duration,
}

fn build(c: &Case) -> Built {
    let n = c.skews.len();
    let nodes = (0..n)
        .map(|i| {
            let addr = Ipv4Addr::new(10, 0, 0, 11 + i as u8);
            let mut iface = IfaceSpec::new(1, c.skews[i]).advbase(c.advbase);
            iface.ucarp_tiebreak = c.tiebreak;
            iface.master_down_mode = c.mode;
            NodeSpec::new(&format!("gw{}", i + 1), addr, iface)
        })
        .collect();
    let mut sc = Scenario::new("random", "random fault schedule", nodes, Time::ZERO);
    sc.seed = c.seed;
    sc.preempt = c.preempt;
    sc.link = LinkParams {
        jitter: Duration::from_micros(c.jitter_us),
        ..LinkParams::default()
    };
    let mut max_delay = sc.link.delay + sc.link.jitter;
    for (ms, f) in &c.faults {
        let t = Time::from_millis(*ms);
        let op = match f.clone() {
            Fault::Crash(i) => Op::Crash(i),
            Fault::Restart(i) => Op::Restart(i),
            Fault::Partition(side) => Op::Partition(side),
            Fault::Heal => Op::Heal,
            Fault::Loss(p) => Op::Loss(f64::from(p) / 100.0),
            Fault::Delay(ms) => {
                let delay = Duration::from_millis(u64::from(ms));
                max_delay = max_delay.max(delay + sc.link.jitter);
                Op::Delay {
                    delay,
                    jitter: sc.link.jitter,
                }
            }
            Fault::Demote(node, delta) => Op::Demote {
                node,
                group: "carp".into(),
                delta,
            },
            Fault::LinkDown(node) | Fault::LinkUp(node) => Op::CarpdevLink {
                node,
                carpdev: "eth0".into(),
                up: matches!(f, Fault::LinkUp(_)),
            },
            Fault::Force(node, m) => Op::Force {
                node,
                iface: "carp0".into(),
                state: if m {
                    ForcedState::Master
                } else {
                    ForcedState::Backup
                },
            },
            Fault::Shutdown(node, linger) => Op::Shutdown {
                node,
                linger: Duration::from_millis(u64::from(linger)),
            },
            Fault::Up(i) => Op::Up(i),
        };
        sc = sc.at(t, op);
    }
    // Faults stop: network back to normal, every node healthy again. Demote counters stay.
    sc = sc.at(FAULTS_END, Op::Heal);
    for i in 0..n {
        sc = sc.at(FAULTS_END, Op::Recover(i));
    }
    let max_md = c
        .skews
        .iter()
        .map(|&s| master_down_interval(c.advbase, s, c.mode))
        .max()
        .unwrap();
    let max_int = c
        .skews
        .iter()
        .map(|&s| advert_interval(c.advbase, s))
        .max()
        .unwrap();
    let slack = Duration::from_millis(1);
    let settle = max_md + max_int + 2 * max_delay + slack;
    let dual = max_int + 2 * max_delay + slack;
    sc.duration = FAULTS_END + settle + Duration::from_secs(15);
    Built {
        scenario: sc,
        settle,
        dual,
    }
}

/// Checks properties (a), (b) and (c) on one random case.
fn check(c: &Case) -> Result<(), TestCaseError> {
    let b = build(c);
    let sim = Sim::run_scenario(b.scenario.clone());
    let history: Vec<_> = sim
        .master_history()
        .iter()
        .filter(|m| m.vhid == 1)
        .collect();
    let last = history.last().expect("some master-set change");
    let ctx = || {
        format!(
            "case {c:?}\nhistory {history:?}\ntimeline:\n{}",
            sim.timeline()
        )
    };

    // (a) exactly one MASTER, settled within master-down + one interval of the faults stopping.
    prop_assert_eq!(last.masters.len(), 1, "{}", ctx());
    prop_assert!(
        last.t <= FAULTS_END + b.settle,
        "settled at {} > {}: {}",
        last.t,
        FAULTS_END + b.settle,
        ctx()
    );

    // (b) with preempt, the preferred node: lowest (demote, advskew).
    // Equal T does not preempt even with the tie-break, so (b) needs distinct advskews.
    if c.preempt && !c.tiebreak {
        let key = |i: usize| {
            let host = sim.host(i).expect("every node recovered");
            let v = &host.interfaces()[0].vhid;
            (v.demote(), v.config().advskew)
        };
        let preferred = (0..c.skews.len()).min_by_key(|&i| key(i)).unwrap();
        prop_assert_eq!(last.masters[0], preferred, "{}", ctx());
    }

    // (c) any two nodes that are both MASTER after the faults stop stop being so within one
    // advert interval (+ delays) of the later of: the faults stopping, the pair starting.
    // Counted per pair: a stale advert may legitimately start a new pair (see ctx on failure).
    let mut since: std::collections::BTreeMap<(usize, usize), Time> = Default::default();
    for (k, m) in history.iter().enumerate() {
        let end = history.get(k + 1).map_or(sim.now(), |n| n.t);
        let pairs: Vec<(usize, usize)> = m
            .masters
            .iter()
            .flat_map(|&x| {
                m.masters
                    .iter()
                    .filter(move |&&y| y > x)
                    .map(move |&y| (x, y))
            })
            .collect();
        since.retain(|p, _| pairs.contains(p));
        for p in pairs {
            let start = *since.entry(p).or_insert(m.t);
            if end > FAULTS_END {
                let limit = start.max(FAULTS_END) + b.dual;
                prop_assert!(
                    end <= limit,
                    "{:?} both MASTER until {} (limit {}): {}",
                    p,
                    end,
                    limit,
                    ctx()
                );
            }
        }
    }

    // Every node ends INIT-free: all recovered nodes run.
    for i in 0..c.skews.len() {
        let st = sim.host(i).unwrap().interfaces()[0].vhid.state();
        prop_assert!(st != State::Init, "{}", ctx());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn single_preferred_master_after_faults_stop(c in case()) {
        check(&c)?;
    }

    #[test]
    fn ucarp_tiebreak_settles_equal_skews(c in case_tiebreak()) {
        check(&c)?;
    }
}

// ---- fixed-seed regression tests of the named scenarios ----

fn run(name: &str) -> Sim {
    Sim::run_scenario(scenario(name).unwrap_or_else(|| panic!("no scenario {name}")))
}

fn secs(s: f64) -> Time {
    Time::from_nanos((s * 1e9) as u64)
}

/// The first time `node` became MASTER on `vhid` after `after`, with its reason.
fn became_master(sim: &Sim, node: &str, vhid: u8, after: Time) -> Option<(Time, &'static str)> {
    sim.timeline()
        .transitions(node, vhid)
        .into_iter()
        .find(|&(t, _, to, _)| to == State::Master && t >= after)
        .map(|(t, _, _, r)| (t, r))
}

#[test]
fn every_scenario_is_deterministic_and_tested() {
    for sc in scenarios() {
        let a = Sim::run_scenario(sc.clone());
        let b = Sim::run_scenario(sc.clone());
        assert_eq!(
            a.timeline(),
            b.timeline(),
            "{} is not deterministic",
            sc.name
        );
        // Adding a scenario means adding its regression test below.
        let tested = [
            "basic",
            "master-crash",
            "bow-out",
            "preempt",
            "partition-heal",
            "demote",
            "link-down",
            "three-nodes-lossy",
            "forced-state",
            "equal-skew",
            "ucarp-tiebreak",
            "loop-echo",
            "advbase-0",
            // VRRP scenarios: their regression tests are in sim_vrrp.rs.
            "mixed-carp-vrrp",
            "vrrp-stop",
        ];
        assert!(
            tested.contains(&sc.name.as_str()),
            "{} has no regression test",
            sc.name
        );
    }
}

#[test]
fn scenario_basic() {
    let sim = run("basic");
    assert_eq!(
        became_master(&sim, "gw1", 1, Time::ZERO),
        Some((Time::from_secs(3), reason::MASTER_DOWN))
    );
    assert_eq!(became_master(&sim, "gw2", 1, Time::ZERO), None);
    assert_eq!(sim.master_names(1), vec!["gw1"]);
    assert_eq!(sim.state("gw2", 1), Some(State::Backup));
    let text = sim.timeline().to_string();
    assert!(
        text.contains("t=3.000s node gw1 vhid 1: BACKUP -> MASTER (master down timer expired)"),
        "{text}"
    );
}

#[test]
fn scenario_master_crash() {
    let sim = run("master-crash");
    let (t, r) = became_master(&sim, "gw2", 1, Time::ZERO).unwrap();
    // Last advert heard at 9.0002 s, master-down 3 + 100/256 s.
    assert!(t > secs(12.39) && t < secs(12.40), "{t}");
    assert_eq!(r, reason::MASTER_DOWN);
    assert_eq!(sim.master_names(1), vec!["gw2"]);
    assert_eq!(sim.state("gw1", 1), Some(State::Backup));
}

#[test]
fn scenario_bow_out() {
    let sim = run("bow-out");
    let (t, r) = became_master(&sim, "gw2", 1, secs(5.0)).unwrap();
    assert_eq!(r, reason::BOW_OUT);
    assert!(t < secs(10.001), "takeover at {t}");
    let last = *sim.timeline().transitions("gw1", 1).last().unwrap();
    assert_eq!(
        (last.1, last.2, last.3),
        (State::Master, State::Init, reason::HANDED_OVER)
    );
    assert_eq!(sim.master_names(1), vec!["gw2"]);
}

#[test]
fn scenario_preempt() {
    let sim = run("preempt");
    let (t, r) = became_master(&sim, "gw1", 1, Time::ZERO).unwrap();
    assert_eq!(r, reason::PREEMPT);
    assert!(t > secs(10.0) && t < secs(11.4), "{t}");
    assert_eq!(sim.master_names(1), vec!["gw1"]);
}

#[test]
fn scenario_partition_heal() {
    let sim = run("partition-heal");
    let dual = sim
        .master_history()
        .iter()
        .find(|m| m.masters.len() == 2)
        .expect("two masters during the partition");
    assert!(dual.t > secs(12.39) && dual.t < secs(12.40));
    let healed = sim.master_history().last().unwrap();
    assert_eq!(healed.masters, vec![0]);
    assert!(
        healed.t <= secs(21.0),
        "gw2 yields within one advert of the heal"
    );
}

#[test]
fn scenario_demote() {
    let sim = run("demote");
    let (t, r) = became_master(&sim, "gw2", 1, Time::ZERO).unwrap();
    assert_eq!(r, reason::HIGHER_DEMOTE);
    assert!(t < secs(10.001), "immediate advert on demote: {t}");
    assert_eq!(sim.master_names(1), vec!["gw2"]);
    assert_eq!(sim.state("gw1", 1), Some(State::Backup));
}

#[test]
fn scenario_link_down() {
    let sim = run("link-down");
    let (t, r) = became_master(&sim, "gw2", 1, Time::ZERO).unwrap();
    assert_eq!(r, reason::HIGHER_DEMOTE);
    assert!(t < secs(10.001), "{t}");
    let (t2, _) = became_master(&sim, "gw2", 2, Time::ZERO).unwrap();
    assert!(t2 > secs(12.39) && t2 < secs(12.40), "{t2}");
    assert_eq!(sim.master_names(1), vec!["gw1"]);
    assert_eq!(sim.master_names(2), vec!["gw1"]);
    assert_eq!(sim.host(0).unwrap().groups().counter("carp"), 0);
}

#[test]
fn scenario_three_nodes_lossy() {
    let sim = run("three-nodes-lossy");
    assert_eq!(sim.master_names(1), vec!["gw1"]);
    assert!(sim.stats().adverts_lost > 0);
    assert!(sim.master_history().last().unwrap().t <= secs(40.0));
}

#[test]
fn scenario_forced_state() {
    let sim = run("forced-state");
    assert_eq!(
        became_master(&sim, "gw2", 1, Time::ZERO).map(|x| x.1),
        Some(reason::FORCED_MASTER)
    );
    let (t, r) = became_master(&sim, "gw2", 1, secs(15.0)).unwrap();
    assert_eq!(r, reason::MASTER_DOWN);
    assert!(t > secs(22.39) && t < secs(22.40), "{t}");
    assert_eq!(sim.master_names(1), vec!["gw2"]);
}

#[test]
fn scenario_equal_skew_flaps() {
    let sim = run("equal-skew");
    let to_master = sim
        .timeline()
        .transitions("gw1", 1)
        .iter()
        .filter(|t| t.2 == State::Master)
        .count();
    assert!(to_master >= 4, "equal T BSD masters keep racing");
    assert!(sim.master_names(1).is_empty());
}

#[test]
fn scenario_ucarp_tiebreak() {
    let sim = run("ucarp-tiebreak");
    assert_eq!(sim.master_names(1), vec!["gw1"]);
    let last = *sim.timeline().transitions("gw2", 1).last().unwrap();
    assert_eq!((last.2, last.3), (State::Backup, reason::TIEBREAK));
}

#[test]
fn scenario_loop_echo() {
    let sim = run("loop-echo");
    assert!(sim.stats().loops_dropped >= 10);
    assert_eq!(sim.master_names(1), vec!["gw1"]);
    assert_eq!(
        sim.master_history().len(),
        2,
        "no flapping from looped adverts"
    );
}

#[test]
fn scenario_advbase_0() {
    let sim = run("advbase-0");
    let (t, r) = became_master(&sim, "gw2", 1, Time::ZERO).unwrap();
    assert_eq!(r, reason::MASTER_DOWN);
    // Master-down with advbase 0 = 3 * 10/256 s = 117 ms after the last advert before 2 s.
    assert!(t > secs(2.10) && t < secs(2.12), "{t}");
}
