//! Stall-proof sub-second failover (issue #17) with real carpd processes in the "pair" lab at advbase 0
//! (advskew 0/2, gw2's master-down 23.4 ms): a MASTER carpd stopped with SIGSTOP for 30 ms, again and
//! again, causes no takeover, because the kernel keeps sending the adverts it queued (`advq`); the
//! control run, the same with `[timing] advert_queue_ms = 0`, shows the same stops do cause takeovers
//! without it. A MASTER stopped for 300 ms is taken over: what the kernel sends for a stopped carpd is
//! bounded by the queue (100 ms of adverts). Needs root.
use std::time::Duration;

use carp_tests::{
    lab::{Daemon, Pair},
    require_root,
};

const SETTLE: Duration = Duration::from_secs(8);
const TAKEOVER: &str = "carp0 vhid 1: BACKUP -> MASTER";

fn config(advskew: u8, queue_ms: u32) -> String {
    Pair::config(advskew).replace("advbase = 1", "advbase = 0")
        + &format!("\n[timing]\nadvert_queue_ms = {queue_ms}\n")
}

fn elect(pair: &Pair, queue_ms: u32) -> (Daemon, Daemon) {
    let gws = pair.elect(&config(0, queue_ms), &config(2, queue_ms));
    // Let gw2 hear a few hundred adverts first.
    std::thread::sleep(Duration::from_millis(500));
    gws
}

/// Stops gw1 `times` times for `stop`; returns gw2's takeovers. The 150 ms between stops are long
/// enough for the loop to refill the queue and for gw2 to hand back after a takeover.
fn stop_again_and_again(gw1: &Daemon, gw2: &Daemon, times: u32, stop: Duration) -> usize {
    gw1.stop_again_and_again(times, stop, Duration::from_millis(150), gw2, TAKEOVER)
}

#[test]
fn a_master_stopped_30_ms_again_and_again_is_not_taken_over_one_stopped_300_ms_is() {
    if !require_root(
        "a_master_stopped_30_ms_again_and_again_is_not_taken_over_one_stopped_300_ms_is",
    ) {
        return;
    }
    // Control: the loop sends every advert itself (and its standby senders are stopped with it).
    {
        let pair = Pair::new("stc");
        let (gw1, gw2) = elect(&pair, 0);
        assert!(!gw1.log().contains("kernel-timed adverts through"));
        let takeovers = stop_again_and_again(&gw1, &gw2, 10, Duration::from_millis(30));
        assert!(
            takeovers >= 1,
            "control: 30 ms stops of a loop-timed master were never taken over (the test cannot fail):\n{}",
            gw2.log()
        );
    }
    let pair = Pair::new("sts");
    let (gw1, gw2) = elect(&pair, 100);
    assert!(
        gw1.log().contains("kernel-timed adverts through carpadv"),
        "{}",
        gw1.log()
    );
    let takeovers = stop_again_and_again(&gw1, &gw2, 20, Duration::from_millis(30));
    assert_eq!(
        takeovers,
        0,
        "30 ms stops of gw1 were taken over:\ngw2:\n{}\ngw1:\n{}",
        gw2.log(),
        gw1.log()
    );
    assert_eq!(gw1.carpd_state().as_deref(), Some("MASTER"));
    // A stop longer than the queue plus the master-down: the kernel's adverts run out, gw2 takes over,
    // and hands back when gw1 resumes (it is more preferred and MASTER still).
    let takeovers = stop_again_and_again(&gw1, &gw2, 1, Duration::from_millis(300));
    assert_eq!(takeovers, 1, "gw2:\n{}", gw2.log());
    assert_eq!(
        gw1.carpd_state().as_deref(),
        Some("MASTER"),
        "{}",
        gw1.log()
    );
    assert_eq!(
        gw2.carpd_state().as_deref(),
        Some("BACKUP"),
        "{}",
        gw2.log()
    );
}

/// The scheduling policy (field 41 of /proc/PID/task/TID/stat) of each thread of `pid`, by name; the
/// main thread (tid = pid) is named "main".
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = t.expect("task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // After the ")" that ends the command name, fields start at 3.
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let policy = rest
            .split(' ')
            .nth(41 - 3)
            .and_then(|f| f.parse().ok())
            .unwrap_or(99);
        let main = dir.file_name().and_then(|n| n.to_str()) == Some(&pid.to_string());
        let name = if main {
            "main".to_string()
        } else {
            comm.trim().to_string()
        };
        out.push((name, policy));
    }
    out
}

#[test]
fn rt_priority_runs_the_loop_and_the_standby_senders_sched_rr_and_off_it_does_not() {
    if !require_root(
        "rt_priority_runs_the_loop_and_the_standby_senders_sched_rr_and_off_it_does_not",
    ) {
        return;
    }
    let pair = Pair::new("str");
    for (rt, want) in [(0u8, 0u32), (10, 2)] {
        let cfg = config(0, 100) + &format!("rt_priority = {rt}\n");
        // Each run on its own gateway (a killed carpd leaves its dataplane pinned).
        let (ns, name) = if rt == 0 {
            (&pair.gw2, "gw2")
        } else {
            (&pair.gw1, "gw1")
        };
        let gw1 = pair.carpd(ns, name, &cfg);
        assert!(gw1.wait_log("BACKUP -> MASTER", SETTLE), "{}", gw1.log());
        let threads = thread_policies(gw1.pid());
        // SCHED_OTHER = 0, SCHED_RR = 2 (with SCHED_RESET_ON_FORK the policy reads the same).
        let main = threads
            .iter()
            .find(|(n, _)| n == "main")
            .expect("main thread");
        assert_eq!(main.1, want, "rt_priority {rt}: {threads:?}\n{}", gw1.log());
        let standby: Vec<_> = threads
            .iter()
            .filter(|(n, _)| n == "carp-standby")
            .collect();
        assert!(!standby.is_empty(), "{threads:?}\n{}", gw1.log());
        assert!(
            standby.iter().all(|(_, p)| *p == want),
            "rt_priority {rt}: {threads:?}"
        );
        // Hooks and other threads stay normal.
        assert!(
            threads
                .iter()
                .filter(|(n, p)| n != "main" && n != "carp-standby" && *p != 0)
                .count()
                == 0,
            "{threads:?}"
        );
        if rt > 0 {
            assert!(
                gw1.log()
                    .contains("real-time scheduling: SCHED_RR priority 10"),
                "{}",
                gw1.log()
            );
        }
        drop(gw1);
    }
}
