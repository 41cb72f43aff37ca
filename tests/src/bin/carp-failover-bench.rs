//! `cargo xtask bench` (failover part, design §4): the outage a client sees when the MASTER of the
//! "pair" lab dies (SIGKILL plus its link cut: a dead gateway), stops (SIGTERM) or is demoted, for
//! carpd at advbase 1 and advbase 0, carpd speaking VRRPv3 at 10 ms and 1 s and, in the same run and
//! lab, for ucarp and keepalived (VRRPv2 at 1 s adverts, VRRPv3 at 10 ms and 1 s). Needs root.
//!
//! The client probes the VIP with ICMP echo requests every 5 ms from a raw socket opened inside its
//! namespace; the outage is the longest gap between consecutive replies around the fault, and lost
//! probes are requests that never got a reply. Every scenario runs in a fresh lab (so no daemon's
//! leftovers, e.g. the pinned XDP program a SIGKILLed carpd leaves serving by design, can help the next
//! one), `--reps` times (3; 1 with `--quick` or `CARP_BENCH_QUICK=1`), reported as median and max.
//! `--idle-minutes N` adds an idle run of carpd at advbase 0 that counts false failovers (and one of
//! keepalived VRRPv3 at 10 ms with `--idle-keepalived`, to compare under the same load); `--loaded`
//! runs `cargo build --release -j2` of the workspace in a loop beside it (its own target directory,
//! a source touched between builds so each one compiles), issue #17's loaded row.
//! `CARP_BENCH_CARPD_FIFO=N` runs carpd under SCHED_FIFO priority N.
//!
//! Usage: `carp-failover-bench [OUT.json] [--quick] [--reps N] [--idle-minutes N] [--idle-keepalived]
//! [--loaded] [--only SUBSTR]`.
use anyhow::{Context, Result, bail, ensure};
use carp_tests::{
    lab::{Daemon, Pair, VIP},
    netns::{Netns, PacketSocket},
};
use std::{
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Probe interval (the brief's 1-5 ms; 5 ms keeps the client's own load negligible on 2 vCPUs).
const PROBE: Duration = Duration::from_millis(5);
/// Probing before the fault, so a steady stream is established and any pre-fault gap shows.
const PRE: Duration = Duration::from_secs(1);
/// Probing after the new MASTER announced itself, so late effects (ARP, bridge) are caught.
const POST: Duration = Duration::from_millis(1500);
/// Lab namespace prefix of the benchmark (the idle run uses its own, so both can run at once).
const PREFIX: &str = "cfb";

/// The gateway software under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    /// carpd with this advbase (gw1 advskew 0; gw2 advskew 100 at advbase 1, 2 at advbase 0).
    Carpd(u8),
    /// ucarp at advbase 1, gw1 -k 0, gw2 -k 100, VIP by up/down scripts.
    Ucarp,
    /// keepalived VRRPv2, advert_int 1, priorities 200/100.
    KeepalivedV2,
    /// keepalived VRRPv3 at this advert_int in centiseconds (1 = 10 ms), priorities 200/100.
    KeepalivedV3(u16),
    /// carpd speaking VRRPv3 at this interval in centiseconds, priorities 200/100, preempt on.
    CarpdVrrp3(u16),
}

/// How the MASTER goes away.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// SIGKILL the daemon and take gw1's eth0 down at the same instant (a dead gateway).
    Kill,
    /// SIGTERM: a planned stop.
    Term,
    /// carpd only: SIGHUP reload raising gw1's advskew above gw2's, preempt on.
    Demote,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Carpd(_) => "carpd",
            Impl::Ucarp => "ucarp 1.5.2",
            Impl::KeepalivedV2 => "keepalived 2.2.7",
            Impl::KeepalivedV3(_) => "keepalived 2.2.7",
            Impl::CarpdVrrp3(_) => "carpd",
        }
    }

    fn mode(self) -> String {
        match self {
            Impl::Carpd(1) => "CARP advbase 1, advskew 0/100".into(),
            Impl::Carpd(b) => format!("CARP advbase {b}, advskew 0/2"),
            Impl::Ucarp => "CARP advbase 1, advskew 0/100".into(),
            Impl::KeepalivedV2 => "VRRPv2 advert 1 s, prio 200/100".into(),
            Impl::KeepalivedV3(cs) => format!("VRRPv3 advert {} ms, prio 200/100", cs * 10),
            Impl::CarpdVrrp3(cs) => format!("VRRPv3 interval {} ms, prio 200/100", cs * 10),
        }
    }

    /// gw2's advskew (CARP).
    fn backup_skew(self) -> u8 {
        match self {
            Impl::Carpd(0) => 2,
            _ => 100,
        }
    }

    /// What theory says the client loses: the backup's master-down interval for a dead master, and
    /// for a planned stop what the protocol promises (CARP bow-out / VRRP priority 0: skew time).
    fn theory(self, fault: Fault) -> Duration {
        let carp_down = |advbase: u8, skew: u8| {
            carp::engine::master_down_interval(advbase, skew, Default::default())
        };
        // VRRP: master-down = 3 x advert + skew, skew = (256 - priority) x advert / 256.
        let vrrp_skew = |advert: Duration| advert * (256 - 100) / 256;
        match (self, fault) {
            (Impl::Carpd(b), Fault::Kill) => carp_down(b, self.backup_skew()),
            (Impl::Carpd(_), _) => Duration::ZERO,
            (Impl::Ucarp, _) => carp_down(1, 100),
            (Impl::KeepalivedV2, Fault::Kill) => {
                3 * Duration::from_secs(1) + vrrp_skew(Duration::from_secs(1))
            }
            (Impl::KeepalivedV2, _) => vrrp_skew(Duration::from_secs(1)),
            (Impl::KeepalivedV3(cs) | Impl::CarpdVrrp3(cs), Fault::Kill) => {
                let advert = Duration::from_millis(u64::from(cs) * 10);
                3 * advert + vrrp_skew(advert)
            }
            // carpd keeps serving until the new master is heard (make-before-break): nothing lost.
            (Impl::CarpdVrrp3(_), _) => Duration::ZERO,
            (Impl::KeepalivedV3(cs), _) => vrrp_skew(Duration::from_millis(u64::from(cs) * 10)),
        }
    }

    /// The log line that says a gateway became MASTER / BACKUP.
    fn master_needle(self) -> &'static str {
        match self {
            Impl::Carpd(_) => "carp0 vhid 1: BACKUP -> MASTER",
            Impl::CarpdVrrp3(_) => "vr0 vhid 1: BACKUP -> MASTER",
            Impl::Ucarp => "Switching to state: MASTER",
            _ => "Entering MASTER STATE",
        }
    }

    fn backup_needle(self) -> &'static str {
        match self {
            Impl::Carpd(_) => "carp0 vhid 1: INIT -> BACKUP",
            Impl::CarpdVrrp3(_) => "vr0 vhid 1: INIT -> BACKUP",
            Impl::Ucarp => "Switching to state: BACKUP",
            _ => "Entering BACKUP STATE",
        }
    }
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL + link cut",
            Fault::Term => "SIGTERM",
            Fault::Demote => "demote (SIGHUP, advskew above gw2, preempt)",
        }
    }
}

fn main() -> Result<()> {
    let mut out = PathBuf::from("target/bench/failover.json");
    let mut reps = 3usize;
    let mut idle_minutes = 0u64;
    let mut idle_keepalived = false;
    let mut loaded = false;
    let mut only: Option<String> = None;
    if std::env::var("CARP_BENCH_QUICK").is_ok_and(|v| v == "1") {
        reps = 1;
    }
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => reps = 1,
            "--reps" => reps = args.next().context("--reps N")?.parse()?,
            "--idle-minutes" => idle_minutes = args.next().context("--idle-minutes N")?.parse()?,
            "--idle-keepalived" => idle_keepalived = true,
            "--loaded" => loaded = true,
            "--only" => only = Some(args.next().context("--only SUBSTR")?),
            _ if a.starts_with("--") => bail!("unknown option {a}"),
            _ => out = PathBuf::from(a),
        }
    }
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the failover bench builds labs: run it as root"
    );
    let carpd = carpd_binary()?;

    let mut results: Vec<Scenario> = Vec::new();
    let plan: Vec<(Impl, Fault)> = vec![
        (Impl::Carpd(1), Fault::Kill),
        (Impl::Carpd(1), Fault::Term),
        (Impl::Carpd(1), Fault::Demote),
        (Impl::Carpd(0), Fault::Kill),
        (Impl::Carpd(0), Fault::Term),
        (Impl::Carpd(0), Fault::Demote),
        (Impl::Ucarp, Fault::Kill),
        (Impl::Ucarp, Fault::Term),
        (Impl::KeepalivedV2, Fault::Kill),
        (Impl::KeepalivedV2, Fault::Term),
        (Impl::KeepalivedV3(1), Fault::Kill),
        (Impl::KeepalivedV3(1), Fault::Term),
        // VRRPv3 rows (issue #18): carpd and keepalived at 10 ms and 1 s.
        (Impl::CarpdVrrp3(1), Fault::Kill),
        (Impl::CarpdVrrp3(1), Fault::Term),
        (Impl::CarpdVrrp3(100), Fault::Kill),
        (Impl::CarpdVrrp3(100), Fault::Term),
        (Impl::KeepalivedV3(100), Fault::Kill),
        (Impl::KeepalivedV3(100), Fault::Term),
    ];
    for (imp, fault) in plan {
        let label = format!("{} {} {}", imp.name(), imp.mode(), fault.name());
        if only.as_ref().is_some_and(|o| !label.contains(o.as_str())) {
            continue;
        }
        let mut runs = Vec::new();
        for rep in 0..reps {
            let r = run_once(&carpd, PREFIX, imp, fault)
                .with_context(|| format!("{label}, repetition {}", rep + 1))?;
            eprintln!(
                "  {label} #{}: outage {:.1} ms, lost {}, fault->new MASTER logged {}, fault->first reply after the gap {:.1} ms, gw2 false MASTER before the fault {}",
                rep + 1,
                ms(r.outage),
                r.lost,
                r.takeover_logged
                    .map_or("?".into(), |d| format!("{:.1} ms", ms(d))),
                r.resume_after_fault.map_or(f64::NAN, ms),
                r.flaps_before,
            );
            runs.push(r);
        }
        results.push(Scenario { imp, fault, runs });
    }
    judge_and_print(&mut results);
    let mut idle = Vec::new();
    if idle_minutes > 0 {
        idle.push(idle_run(&carpd, Impl::Carpd(0), idle_minutes, loaded)?);
        if idle_keepalived {
            idle.push(idle_run(
                &carpd,
                Impl::KeepalivedV3(1),
                idle_minutes,
                loaded,
            )?);
        }
    }
    write_json(&out, &results, &idle)?;
    println!("written to {}", out.display());
    Ok(())
}

/// The release (or debug) carpd next to this binary, built if it is missing.
fn carpd_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    let bin = dir.join("carpd");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "carp-userspace", "--bin", "carpd"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        ensure!(cmd.status()?.success(), "building carpd failed");
    }
    ensure!(bin.exists(), "{} missing", bin.display());
    Ok(bin)
}

/// One gateway's daemon, plus keepalived's VRRP child pid file (that child is what runs VRRP).
struct Gw {
    daemon: Daemon,
    vrrp_pid: Option<PathBuf>,
}

impl Gw {
    /// The pids to SIGKILL for a dead gateway: keepalived's VRRP child and its parent (started with
    /// --dont-respawn, so nothing comes back), or the one daemon.
    fn kill_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        if let Some(p) = &self.vrrp_pid
            && let Some(pid) = std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        {
            pids.push(pid);
        }
        pids.push(self.daemon.pid() as i32);
        pids
    }
}

/// The carpd config of the pair lab with this advbase/advskew/preempt.
fn carpd_config(advbase: u8, advskew: u8, preempt: bool) -> String {
    Pair::config(advskew)
        .replace("advbase = 1", &format!("advbase = {advbase}"))
        .replace("preempt = false", &format!("preempt = {preempt}"))
}

/// Starts gateway `gw` ("gw1" MASTER-to-be or "gw2") of `imp` in the lab.
fn start(pair: &Pair, carpd: &Path, imp: Impl, gw: &str, preempt: bool) -> Result<Gw> {
    let first = gw == "gw1";
    let ns = if first { &pair.gw1 } else { &pair.gw2 };
    let gw_ip = if first { "10.0.0.11" } else { "10.0.0.12" };
    Ok(match imp {
        Impl::Carpd(advbase) => {
            let skew = if first { 0 } else { imp.backup_skew() };
            let cfg = pair.dir.join(format!("{gw}.toml"));
            std::fs::write(&cfg, carpd_config(advbase, skew, preempt))?;
            let bpffs = pair.bpffs.join(gw);
            let sock = pair.dir.join(format!("{gw}.sock"));
            // CARP_BENCH_CARPD_FIFO=N runs carpd under SCHED_FIFO priority N (chrt), to tell
            // scheduling latency apart from anything in carpd itself.
            let fifo = std::env::var("CARP_BENCH_CARPD_FIFO").ok();
            let mut argv: Vec<&str> = Vec::new();
            if let Some(prio) = fifo.as_deref() {
                argv.extend(["chrt", "-f", prio]);
            }
            argv.extend([
                carpd.to_str().unwrap(),
                "-c",
                cfg.to_str().unwrap(),
                "--bpffs",
                bpffs.to_str().unwrap(),
                "--control-socket",
                sock.to_str().unwrap(),
                "--log",
                "info",
            ]);
            Gw {
                daemon: Daemon::spawn(ns, gw, &pair.dir, &argv),
                vrrp_pid: None,
            }
        }
        Impl::Ucarp => {
            let up = pair.dir.join("vip-up.sh");
            let down = pair.dir.join("vip-down.sh");
            std::fs::write(&up, format!("#!/bin/sh\nip addr add {VIP}/24 dev eth0\n"))?;
            std::fs::write(&down, format!("#!/bin/sh\nip addr del {VIP}/24 dev eth0\n"))?;
            crate_sh(&format!("chmod +x {} {}", up.display(), down.display()))?;
            let skew = if first { "0" } else { "100" };
            Gw {
                daemon: Daemon::spawn(
                    ns,
                    gw,
                    &pair.dir,
                    &[
                        "ucarp",
                        "-i",
                        "eth0",
                        "-s",
                        gw_ip,
                        "-v",
                        "1",
                        "-p",
                        "labpass",
                        "-a",
                        VIP,
                        "-b",
                        "1",
                        "-k",
                        skew,
                        // -z: run the down script on exit, so a SIGTERMed ucarp gives the VIP up.
                        "-z",
                        "-u",
                        up.to_str().unwrap(),
                        "-d",
                        down.to_str().unwrap(),
                    ],
                ),
                vrrp_pid: None,
            }
        }
        Impl::CarpdVrrp3(cs) => {
            let prio = if first { 200 } else { 100 };
            let cfg = pair.dir.join(format!("{gw}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "[[interface]]\nname = \"vr0\"\ncarpdev = \"eth0\"\nprotocol = \"vrrp3\"\nvrid = 1\n\
                     priority = {prio}\ninterval = {cs}\npreempt = {preempt}\naddresses = [\"{VIP}/24\"]\n"
                ),
            )?;
            let bpffs = pair.bpffs.join(gw);
            let sock = pair.dir.join(format!("{gw}.sock"));
            Gw {
                daemon: Daemon::spawn(
                    ns,
                    gw,
                    &pair.dir,
                    &[
                        carpd.to_str().unwrap(),
                        "-c",
                        cfg.to_str().unwrap(),
                        "--bpffs",
                        bpffs.to_str().unwrap(),
                        "--control-socket",
                        sock.to_str().unwrap(),
                        "--log",
                        "info",
                    ],
                ),
                vrrp_pid: None,
            }
        }
        Impl::KeepalivedV2 | Impl::KeepalivedV3(_) => {
            let advert3;
            let (version, advert) = match imp {
                Impl::KeepalivedV3(cs) => {
                    advert3 = format!("{:.2}", f64::from(cs) / 100.0);
                    (3, advert3.as_str())
                }
                _ => (2, "1"),
            };
            let (state, prio) = if first {
                ("MASTER", 200)
            } else {
                ("BACKUP", 100)
            };
            let conf = pair.dir.join(format!("{gw}-keepalived.conf"));
            // No authentication (VRRPv3 has none); the default gratuitous ARP behaviour.
            std::fs::write(
                &conf,
                format!(
                    "global_defs {{\n  router_id {gw}\n  vrrp_version {version}\n}}\n\
                     vrrp_instance VI_1 {{\n  state {state}\n  interface eth0\n  virtual_router_id 1\n  \
                     priority {prio}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
                ),
            )?;
            let pid = pair.dir.join(format!("{gw}-keepalived.pid"));
            let vrrp_pid = pair.dir.join(format!("{gw}-vrrp.pid"));
            Gw {
                daemon: Daemon::spawn(
                    ns,
                    gw,
                    &pair.dir,
                    &[
                        "keepalived",
                        "-n",
                        "-l",
                        "-D",
                        "-G",
                        "-P",
                        "-R",
                        "-f",
                        conf.to_str().unwrap(),
                        "-p",
                        pid.to_str().unwrap(),
                        "-r",
                        vrrp_pid.to_str().unwrap(),
                    ],
                ),
                vrrp_pid: Some(vrrp_pid),
            }
        }
    })
}

fn crate_sh(cmd: &str) -> Result<()> {
    let s = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()?;
    ensure!(s.success(), "`{cmd}` failed");
    Ok(())
}

/// One repetition's measurement.
struct Run {
    /// gw2's false MASTER transitions between its start and the fault.
    flaps_before: usize,
    outage: Duration,
    lost: u64,
    sent: u64,
    /// Fault to the new MASTER's log line (wall clock of the log vs the fault).
    takeover_logged: Option<Duration>,
    /// Fault to the first reply after the longest gap.
    resume_after_fault: Option<Duration>,
    /// Fault to the last reply before the longest gap (negative values clamp to zero).
    last_before: Option<Duration>,
}

/// Builds a fresh lab, elects gw1, probes, applies `fault`, waits for gw2 to take over, measures.
fn run_once(carpd: &Path, prefix: &str, imp: Impl, fault: Fault) -> Result<Run> {
    let pair = Pair::new(prefix);
    let preempt = fault == Fault::Demote;
    let gw1 = start(&pair, carpd, imp, "gw1", preempt)?;
    ensure!(
        gw1.daemon
            .wait_log(imp.master_needle(), Duration::from_secs(10)),
        "gw1 never became MASTER:\n{}",
        gw1.daemon.log()
    );
    let gw2 = start(&pair, carpd, imp, "gw2", preempt)?;
    ensure!(
        gw2.daemon
            .wait_log(imp.backup_needle(), Duration::from_secs(10)),
        "gw2 never became BACKUP:\n{}",
        gw2.daemon.log()
    );
    ensure!(
        pair.client_reaches_vip(Duration::from_secs(5)),
        "the client cannot reach the VIP"
    );
    // Let gw2 hear a couple of adverts so its master-down timer runs from a steady state.
    std::thread::sleep(Duration::from_millis(1500));
    // At advbase 0 a loaded machine can make gw2 flap to MASTER and straight back before the fault
    // (the idle run counts these); count them and wait for gw2 to be BACKUP again rather than abort.
    let flaps_before = gw2.daemon.log().matches(imp.master_needle()).count();
    let end_wait = Instant::now() + Duration::from_secs(5);
    while is_master(&gw2.daemon, imp) && Instant::now() < end_wait {
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(
        !is_master(&gw2.daemon, imp),
        "gw2 is MASTER before the fault:\n{}",
        gw2.daemon.log()
    );
    let skip = gw2.daemon.log().len();
    let link = if fault == Fault::Kill {
        Some(LinkCutter::new(&pair.gw1)?)
    } else {
        None
    };
    // Listen on gw1's switch port: the fault comes right after one of gw1's adverts, the worst case
    // for a dead master (the backup waits a whole master-down), so figures compare with the theory
    // and between implementations instead of depending on where in the advert interval the kill fell.
    let prober = Prober::start(&pair.client)?;
    std::thread::sleep(PRE);
    // Opened only now: a socket opened earlier would hand back an advert queued long ago.
    let port = format!("{prefix}-p0");
    let sniff = pair.sw.in_ns(move || PacketSocket::open(&port, 100));
    ensure!(
        sniff
            .recv_until(Duration::from_secs(3), |f| {
                f.len() > 30 && f[12..14] == [8, 0] && f[23] == 112 && f[26..30] == [10, 0, 0, 11]
            })
            .is_some(),
        "no advert from gw1 seen on its switch port"
    );

    // The fault, with its instant on both clocks (log lines carry wall-clock timestamps).
    let (fault_at, fault_wall) = match fault {
        Fault::Kill => {
            let pids = gw1.kill_pids();
            let t = (Instant::now(), SystemTime::now());
            for pid in pids {
                // SAFETY: kill(2) on a process we started (or its child, from its pid file).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            link.as_ref().unwrap().down("eth0")?;
            t
        }
        Fault::Term => {
            let t = (Instant::now(), SystemTime::now());
            gw1.daemon.signal(libc::SIGTERM);
            t
        }
        Fault::Demote => {
            let Impl::Carpd(advbase) = imp else {
                bail!("demote is a carpd scenario")
            };
            let cfg = pair.dir.join("gw1.toml");
            std::fs::write(&cfg, carpd_config(advbase, imp.backup_skew() + 1, true))?;
            let t = (Instant::now(), SystemTime::now());
            gw1.daemon.signal(libc::SIGHUP);
            t
        }
    };
    let limit = imp.theory(Fault::Kill) + Duration::from_secs(5);
    let took_over = gw2.daemon.wait_log_after(skip, imp.master_needle(), limit);
    std::thread::sleep(POST);
    // The window ends when probing stops (not after the threads joined: the receiver may sit in a
    // 50 ms recv timeout, which would read as a trailing gap).
    let end = Instant::now();
    let probes = prober.stop();
    let log2 = gw2.daemon.log();
    ensure!(
        took_over,
        "gw2 did not take over within {limit:?}:\n{log2}\n--- gw1 ---\n{}",
        gw1.daemon.log()
    );
    let takeover_logged = log2
        .get(skip..)
        .and_then(|l| l.lines().find(|l| l.contains(imp.master_needle())))
        .and_then(log_time)
        .and_then(|t| t.duration_since(fault_wall).ok());
    let m = probes.measure(fault_at - PRE / 2, end, fault_at);
    drop(gw2);
    drop(gw1);
    Ok(Run {
        flaps_before,
        outage: m.outage,
        lost: m.lost,
        sent: m.sent,
        takeover_logged,
        resume_after_fault: m.resume_after_fault,
        last_before: m.last_before,
    })
}

/// True if the gateway's last transition made it MASTER.
fn is_master(d: &Daemon, imp: Impl) -> bool {
    match imp {
        Impl::Carpd(_) | Impl::CarpdVrrp3(_) => d.carpd_state().as_deref() == Some("MASTER"),
        Impl::Ucarp => d.ucarp_state().as_deref() == Some("MASTER"),
        _ => {
            let log = d.log();
            log.rfind("Entering MASTER STATE") > log.rfind("Entering BACKUP STATE")
        }
    }
}

/// Wall-clock time of a log line: carpd's RFC 3339 prefix (`2026-11-29T02:10:11.123456Z`); ucarp
/// and keepalived print none to stderr here, so they get None.
fn log_time(line: &str) -> Option<SystemTime> {
    let ts = line.split_whitespace().next()?;
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: u64 = format!("{frac:0<9}")[..9].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_nanos(nanos))
}

/// Takes an interface down with one ioctl from a socket opened inside the gateway's namespace, so the
/// link cut lands microseconds after the SIGKILL (an `ip` process would take milliseconds).
struct LinkCutter {
    sock: std::os::fd::OwnedFd,
}

impl LinkCutter {
    fn new(ns: &Netns) -> Result<Self> {
        let fd = ns.in_ns(|| {
            // SAFETY: a plain socket(2).
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) }
        });
        ensure!(fd >= 0, "socket in {}", ns.name);
        // SAFETY: fd is a fresh socket we own.
        Ok(Self {
            sock: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) },
        })
    }

    fn down(&self, ifname: &str) -> Result<()> {
        // SAFETY: ifreq is plain data; the name fits (checked) and the ioctls get a valid pointer.
        unsafe {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            ensure!(ifname.len() < ifr.ifr_name.len(), "ifname too long");
            for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
                *d = s as libc::c_char;
            }
            ensure!(
                libc::ioctl(self.sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) == 0,
                "SIOCGIFFLAGS"
            );
            ifr.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
            ensure!(
                libc::ioctl(self.sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) == 0,
                "SIOCSIFFLAGS"
            );
        }
        Ok(())
    }
}

/// ICMP echo probes to the VIP every [`PROBE`] from a raw socket in the client's namespace: one
/// thread sends on an absolute schedule, one receives; both record times.
struct Prober {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Instant>>>,
    replies: Arc<Mutex<Vec<(u64, Instant)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What a probe stream shows around a fault.
struct Measure {
    outage: Duration,
    lost: u64,
    sent: u64,
    resume_after_fault: Option<Duration>,
    last_before: Option<Duration>,
}

impl Prober {
    fn start(client: &Netns) -> Result<Self> {
        // A socket belongs to the namespace it was created in, whichever thread uses it later.
        let fd = client.in_ns(|| {
            // SAFETY: a plain socket(2).
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) }
        });
        ensure!(
            fd >= 0,
            "raw ICMP socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh socket we own.
        let sock: Arc<std::os::fd::OwnedFd> =
            Arc::new(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: valid option pointer and length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        let id = (std::process::id() & 0xffff) as u16;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::with_capacity(4096)));
        let replies = Arc::new(Mutex::new(Vec::with_capacity(4096)));
        let sender = {
            let (stop, sent, sock) = (stop.clone(), sent.clone(), sock.clone());
            std::thread::spawn(move || {
                let dst = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes([10, 0, 0, 1]),
                    },
                    sin_zero: [0; 8],
                };
                let t0 = Instant::now();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut pkt = [0u8; 16];
                    pkt[0] = 8;
                    pkt[4..6].copy_from_slice(&id.to_be_bytes());
                    pkt[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
                    // The full sequence number rides in the payload (the header's wraps in 5.5 min).
                    pkt[8..16].copy_from_slice(&seq.to_be_bytes());
                    let c = checksum(&pkt);
                    pkt[2..4].copy_from_slice(&c.to_be_bytes());
                    sent.lock().unwrap().push(Instant::now());
                    // SAFETY: valid buffer and address.
                    unsafe {
                        libc::sendto(
                            sock.as_raw_fd(),
                            pkt.as_ptr().cast(),
                            pkt.len(),
                            0,
                            (&dst as *const libc::sockaddr_in).cast(),
                            size_of::<libc::sockaddr_in>() as u32,
                        )
                    };
                    seq += 1;
                    // Absolute schedule: a late wake-up does not shift later probes.
                    let next = t0 + PROBE * seq as u32;
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
            })
        };
        let receiver = {
            let (stop, replies, sock) = (stop.clone(), replies.clone(), sock.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: valid buffer.
                    let n = unsafe {
                        libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    let now = Instant::now();
                    if n <= 0 {
                        continue;
                    }
                    let p = &buf[..n as usize];
                    let ihl = usize::from(p[0] & 0x0f) * 4;
                    let Some(icmp) = p.get(ihl..ihl + 16) else {
                        continue;
                    };
                    if icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
                        let seq = u64::from_be_bytes(icmp[8..16].try_into().unwrap());
                        replies.lock().unwrap().push((seq, now));
                    }
                }
            })
        };
        Ok(Self {
            stop,
            sent,
            replies,
            threads: vec![sender, receiver],
        })
    }

    /// Stops both threads and returns the record.
    fn stop(mut self) -> ProbeLog {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        ProbeLog {
            sent: std::mem::take(&mut *self.sent.lock().unwrap()),
            replies: std::mem::take(&mut *self.replies.lock().unwrap()),
        }
    }
}

/// Send times by sequence number and (sequence, arrival) of every reply.
struct ProbeLog {
    sent: Vec<Instant>,
    replies: Vec<(u64, Instant)>,
}

impl ProbeLog {
    /// Longest gap between consecutive replies arriving in [from, to], and probes sent in [from,
    /// to - 1 s] that got no reply (later ones may still have been in flight).
    fn measure(&self, from: Instant, to: Instant, fault: Instant) -> Measure {
        let mut arrivals: Vec<Instant> = self
            .replies
            .iter()
            .map(|&(_, t)| t)
            .filter(|&t| t >= from && t <= to)
            .collect();
        arrivals.sort();
        let mut outage = Duration::ZERO;
        let mut gap_at = None;
        for w in arrivals.windows(2) {
            let g = w[1] - w[0];
            if g > outage {
                outage = g;
                gap_at = Some((w[0], w[1]));
            }
        }
        // No reply after some point: the outage runs to the end of the window.
        if let Some(&last) = arrivals.last()
            && to - last > outage
        {
            outage = to - last;
            gap_at = Some((last, to));
        }
        let answered: std::collections::HashSet<u64> =
            self.replies.iter().map(|&(s, _)| s).collect();
        let cut = to - Duration::from_secs(1);
        let mut lost = 0;
        let mut sent = 0;
        for (seq, &t) in self.sent.iter().enumerate() {
            if t >= from && t <= cut {
                sent += 1;
                if !answered.contains(&(seq as u64)) {
                    lost += 1;
                }
            }
        }
        Measure {
            outage,
            lost,
            sent,
            resume_after_fault: gap_at.map(|(_, b)| b.saturating_duration_since(fault)),
            last_before: gap_at.map(|(a, _)| a.saturating_duration_since(fault)),
        }
    }
}

/// The Internet checksum.
fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// All repetitions of one (implementation, fault) pair, with its verdict once judged.
struct Scenario {
    imp: Impl,
    fault: Fault,
    runs: Vec<Run>,
}

impl Scenario {
    fn outages(&self) -> (Duration, Duration) {
        let mut v: Vec<Duration> = self.runs.iter().map(|r| r.outage).collect();
        v.sort();
        (v[v.len() / 2], *v.last().unwrap())
    }

    fn lost(&self) -> (u64, u64) {
        let mut v: Vec<u64> = self.runs.iter().map(|r| r.lost).collect();
        v.sort();
        (v[v.len() / 2], *v.last().unwrap())
    }
}

/// Target text and pass/fail of a scenario (None: a peer, measured as the baseline).
fn target(s: &Scenario, all: &[Scenario]) -> (String, Option<bool>) {
    let median_of = |imp: Impl, fault: Fault| {
        all.iter()
            .find(|o| o.imp == imp && o.fault == fault)
            .map(|o| o.outages().0)
    };
    let (_, max_out) = s.outages();
    let (_, max_lost) = s.lost();
    match (s.imp, s.fault) {
        (Impl::Carpd(_) | Impl::CarpdVrrp3(_), Fault::Term | Fault::Demote) => {
            ("no probe lost".into(), Some(max_lost == 0))
        }
        (Impl::Carpd(1), Fault::Kill) => {
            let bound = s.imp.theory(Fault::Kill) + Duration::from_millis(20);
            let mut ok = max_out <= bound;
            let mut text = format!("max <= {:.0} ms", ms(bound));
            for peer in [Impl::Ucarp, Impl::KeepalivedV2] {
                if let Some(p) = median_of(peer, Fault::Kill) {
                    ok &= s.outages().0 < p;
                    text += &format!(
                        ", < {} {:.0}",
                        peer.name().split(' ').next().unwrap(),
                        ms(p)
                    );
                }
            }
            (text, Some(ok))
        }
        (Impl::CarpdVrrp3(cs), Fault::Kill) => match median_of(Impl::KeepalivedV3(cs), Fault::Kill)
        {
            Some(p) => (
                format!("<= keepalived v3 {:.1}", ms(p)),
                Some(s.outages().0 <= p),
            ),
            None => ("<= keepalived v3 (not run)".into(), None),
        },
        (Impl::Carpd(_), Fault::Kill) => match median_of(Impl::KeepalivedV3(1), Fault::Kill) {
            Some(p) => (
                format!("< keepalived v3 {:.1}", ms(p)),
                Some(s.outages().0 < p),
            ),
            None => ("< keepalived v3 (not run)".into(), None),
        },
        _ => ("baseline".into(), None),
    }
}

fn judge_and_print(all: &mut [Scenario]) {
    println!(
        "\n{:<17} {:<34} {:<46} {:>10} {:>10} {:>10} {:>9}  {:<34} result",
        "implementation",
        "mode",
        "scenario",
        "theory ms",
        "outage med",
        "outage max",
        "lost m/M",
        "target"
    );
    for s in all.iter() {
        let (med, max) = s.outages();
        let (lm, lx) = s.lost();
        let (t, ok) = target(s, all);
        println!(
            "{:<17} {:<34} {:<46} {:>10.1} {:>10.1} {:>10.1} {:>9}  {:<34} {}",
            s.imp.name(),
            s.imp.mode(),
            s.fault.name(),
            ms(s.imp.theory(s.fault)),
            ms(med),
            ms(max),
            format!("{lm}/{lx}"),
            t,
            match ok {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "-",
            }
        );
    }
}

/// Result of an idle run.
struct Idle {
    imp: Impl,
    minutes: u64,
    loaded: bool,
    false_failovers: usize,
    outage: Duration,
    lost: u64,
    sent: u64,
}

/// `cargo build --release -j2` of the workspace in a loop, in a process group of its own: the
/// load issue #17's loaded row asks for. Its own target directory, so the bench's binaries stay as
/// they are; a source file touched between builds, so each build compiles.
struct CompileLoop {
    child: std::process::Child,
    marker: PathBuf,
}

impl CompileLoop {
    fn start() -> Result<CompileLoop> {
        use std::os::unix::process::CommandExt;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the workspace root")?
            .to_path_buf();
        let marker = std::env::temp_dir().join(format!("carp-bench-load-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let script = format!(
            "while :; do cargo build --quiet --release -j2 --workspace --target-dir {t} >/dev/null 2>&1 \
             && echo >> {m}; touch carp-common/src/lib.rs; done",
            t = std::env::temp_dir()
                .join("carp-bench-load-target")
                .display(),
            m = marker.display()
        );
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(root)
            .process_group(0)
            .spawn()
            .context("starting the compile loop")?;
        Ok(CompileLoop { child, marker })
    }

    /// Stops the loop (the whole group: sh, cargo, rustc) and returns the builds it finished.
    fn stop(mut self) -> usize {
        // SAFETY: kill(2) on the process group this struct started.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let n = std::fs::read_to_string(&self.marker).map_or(0, |s| s.lines().count());
        let _ = std::fs::remove_file(&self.marker);
        n
    }
}

/// `imp` left alone for `minutes` while the client probes: every takeover by the BACKUP (gw2) after
/// the election is a false failover.
fn idle_run(carpd: &Path, imp: Impl, minutes: u64, loaded: bool) -> Result<Idle> {
    eprintln!(
        "idle run: {} {} for {minutes} min{}",
        imp.name(),
        imp.mode(),
        if loaded {
            ", a workspace build looping beside it"
        } else {
            ""
        }
    );
    let pair = Pair::new("cfi");
    let gw1 = start(&pair, carpd, imp, "gw1", false)?;
    ensure!(
        gw1.daemon
            .wait_log(imp.master_needle(), Duration::from_secs(10))
    );
    let gw2 = start(&pair, carpd, imp, "gw2", false)?;
    ensure!(
        gw2.daemon
            .wait_log(imp.backup_needle(), Duration::from_secs(10))
    );
    ensure!(pair.client_reaches_vip(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_secs(1));
    let takeovers = || gw2.daemon.log().matches(imp.master_needle()).count();
    let before = takeovers();
    let load = if loaded {
        Some(CompileLoop::start()?)
    } else {
        None
    };
    let prober = Prober::start(&pair.client)?;
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(60 * minutes));
    let to = Instant::now();
    let probes = prober.stop();
    let builds = load.map_or(0, CompileLoop::stop);
    let false_failovers = takeovers() - before;
    if false_failovers > 0 {
        eprintln!(
            "--- gw1 ---\n{}\n--- gw2 ---\n{}",
            gw1.daemon.log(),
            gw2.daemon.log()
        );
    }
    let m = probes.measure(from, to, from);
    // carpd logs each audit interval in which its standby senders repeated adverts, with the total.
    let repeated = gw1
        .daemon
        .log()
        .lines()
        .filter_map(|l| {
            l.split(" in all)")
                .next()?
                .rsplit("; ")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    if matches!(imp, Impl::Carpd(_)) {
        println!(
            "idle run: gw1's standby senders repeated {repeated} adverts (its loop held up past half an interval)"
        );
    }
    if loaded {
        println!("idle run: {builds} workspace builds finished beside it");
    }
    let idle = Idle {
        imp,
        minutes,
        loaded,
        false_failovers,
        outage: m.outage,
        lost: m.lost,
        sent: m.sent,
    };
    println!(
        "idle {} min{}, {} {}: {} false failovers (takeovers by the BACKUP), longest reply gap {:.1} ms, {} of {} probes lost",
        idle.minutes,
        if idle.loaded { " (loaded)" } else { "" },
        imp.name(),
        imp.mode(),
        idle.false_failovers,
        ms(idle.outage),
        idle.lost,
        idle.sent
    );
    Ok(idle)
}

fn write_json(out: &Path, all: &[Scenario], idle: &[Idle]) -> Result<()> {
    let opt = |d: Option<Duration>| d.map_or("null".into(), |d| format!("{:.2}", ms(d)));
    let mut rows = Vec::new();
    for s in all {
        let (med, max) = s.outages();
        let (lm, lx) = s.lost();
        let (t, ok) = target(s, all);
        let runs: Vec<String> = s
            .runs
            .iter()
            .map(|r| {
                format!(
                    "{{\"false_master_before_fault\":{},\"outage_ms\":{:.2},\"lost\":{},\"sent\":{},\"fault_to_master_logged_ms\":{},\"fault_to_last_reply_before_gap_ms\":{},\"fault_to_first_reply_after_gap_ms\":{}}}",
                    r.flaps_before,
                    ms(r.outage),
                    r.lost,
                    r.sent,
                    opt(r.takeover_logged),
                    opt(r.last_before),
                    opt(r.resume_after_fault)
                )
            })
            .collect();
        rows.push(format!(
            "{{\"implementation\":{:?},\"mode\":{:?},\"scenario\":{:?},\"theory_ms\":{:.2},\"outage_median_ms\":{:.2},\"outage_max_ms\":{:.2},\"lost_median\":{lm},\"lost_max\":{lx},\"target\":{:?},\"pass\":{},\"runs\":[{}]}}",
            s.imp.name(),
            s.imp.mode(),
            s.fault.name(),
            ms(s.imp.theory(s.fault)),
            ms(med),
            ms(max),
            t,
            ok.map_or("null".into(), |b| b.to_string()),
            runs.join(",")
        ));
    }
    let idle: Vec<String> = idle
        .iter()
        .map(|i| {
            format!(
                "{{\"implementation\":{:?},\"mode\":{:?},\"minutes\":{},\"loaded\":{},\"false_failovers\":{},\"longest_gap_ms\":{:.2},\"lost\":{},\"sent\":{}}}",
                i.imp.name(),
                i.imp.mode(),
                i.minutes,
                i.loaded,
                i.false_failovers,
                ms(i.outage),
                i.lost,
                i.sent
            )
        })
        .collect();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        out,
        format!(
            "{{\"probe_interval_ms\":{},\"scenarios\":[\n{}\n],\"idle\":[{}]}}\n",
            PROBE.as_millis(),
            rows.join(",\n"),
            idle.join(",")
        ),
    )?;
    Ok(())
}
