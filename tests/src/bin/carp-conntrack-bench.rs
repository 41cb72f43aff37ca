//! `cargo xtask bench` (conntrack part, issue #15 item 7): conntrack replication between two gateways
//! of the gateway lab (the sync link is the eth2 veth), carpd against conntrackd (Debian's, FTFW over
//! the same link, `DisableExternalCache On` so it too writes straight into the peer's kernel table).
//! Needs root.
//!
//! 1. Bulk: `--entries` established TCP entries are created in gw1's kernel table (batched ctnetlink
//!    creates, SNAT to the outside VIP); carpd (or conntrackd) on gw1 takes them in at start; then the
//!    peer on gw2 asks for the bulk, and the time until gw2's kernel table (`conntrack -C`) holds every
//!    entry is measured, with both daemons' CPU time.
//! 2. Lag: `--rate` new entries a second are created in gw1's table for `--lag-seconds`; a ctnetlink
//!    event socket in gw2 sees each one arrive there; lag = arrival in gw2's table - creation in gw1's
//!    (one process, one clock). p50/p99, and the daemons' CPU time per 1,000 events.
//!
//! 0. Kernel bound: with gw1's table full, 200,000 creates into gw2's table straight through
//!    ctnetlink (batches of 256, no daemon), with and without an event listener: the rate no bulk
//!    through ctnetlink can beat.
//!
//! `net.netfilter.nf_conntrack_max` and `nf_conntrack_buckets` (one value each for every namespace)
//! are raised for the run if they are too small for both tables, and put back after.
//!
//! Usage: `carp-conntrack-bench [--entries N] [--rate R] [--lag-seconds S] [--skip-conntrackd]
//! [--json-out FILE]`.
use anyhow::{Context, Result, bail};
use carp::{
    control::{Request, Response, call, report::SyncReport},
    ctnetlink::{CtEvent, CtSocket, EventRead},
    sync::conntrack::{CtEntry, CtKey, CtOp, CtTuple, TcpInfo, entry::proto, entry::status},
};
use carp_tests::{
    lab::{Daemon, Gateway, cpu_time},
    netns::Netns,
    require_root, write_secret,
};
use clap::Parser;
use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex, atomic::AtomicBool, atomic::Ordering},
    time::{Duration, Instant},
};

const PREFIX: &str = "cxb";
const NAT: &str = "table ip nat {
  chain post { type nat hook postrouting priority 100; ip saddr 192.168.100.0/24 ip daddr != 192.168.100.0/24 snat to 10.0.0.1; }
}";

#[derive(Parser)]
struct Args {
    /// Entries in gw1's table for the bulk.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u32,
    /// New entries a second for the lag run.
    #[arg(long, default_value_t = 20_000)]
    rate: u32,
    /// Length of the lag run.
    #[arg(long, default_value_t = 10)]
    lag_seconds: u64,
    /// Measure carpd only.
    #[arg(long)]
    skip_conntrackd: bool,
    /// Where to write the results as JSON.
    #[arg(long)]
    json_out: Option<String>,
}

/// Entry `i` of a run: inside host 192.168.100.100 port 1024+, outside 10.x.y.z:443, SNAT to the VIP.
fn entry(base: u8, i: u32) -> CtEntry {
    let orig = CtTuple {
        src: "192.168.100.100".parse().unwrap(),
        dst: std::net::IpAddr::from([base, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        proto: proto::TCP,
        sport: 1024 + (i % 60000) as u16,
        dport: 443,
    };
    let mut reply = orig.invert();
    reply.dst = "10.0.0.1".parse().unwrap();
    CtEntry {
        key: CtKey { zone: 0, orig },
        reply,
        status: status::SEEN_REPLY | status::ASSURED,
        timeout: 3600,
        mark: 0,
        labels: None,
        tcp: Some(TcpInfo {
            state: 3,
            wscale: [7, 7],
            flags: [0x23, 0x23],
        }),
    }
}

fn count(ns: &Netns) -> u64 {
    ns.run("conntrack -C 2>/dev/null")
        .trim()
        .parse()
        .unwrap_or(0)
}

fn sync_report(sock: &Path) -> Option<SyncReport> {
    match call(sock, &Request::Sync, Duration::from_secs(5)) {
        Ok(Response::Sync(r)) => Some(r),
        _ => None,
    }
}

fn fill(ns: &Netns, base: u8, n: u32) -> Result<Duration> {
    let t = Instant::now();
    let errs = ns.in_ns(move || -> Result<usize> {
        let mut s = CtSocket::open()?;
        let mut refused = 0;
        let mut i = 0;
        while i < n {
            let ops: Vec<CtOp> = (i..(i + 4096).min(n))
                .map(|j| CtOp::Create(entry(base, j)))
                .collect();
            refused += s.apply(&ops)?.iter().filter(|&&e| e != 0).count();
            i += 4096;
        }
        Ok(refused)
    })?;
    if errs > 0 {
        bail!("{errs} creates refused in {}", ns.name);
    }
    Ok(t.elapsed())
}

/// The kernel's own insert rate, the bound of any bulk through ctnetlink: `n` creates in batches
/// of 256 (carpd's batch) into `ns`'s empty table, once with nobody listening and once with an
/// event socket subscribed that drops our own events in a socket filter, as carpd's does (the
/// kernel still builds each event). Entries/s for both; the table is flushed after each.
fn kernel_bound(ns: &Netns, n: u32) -> Result<(f64, f64)> {
    let mut rates = Vec::new();
    for listen in [false, true] {
        let t = ns.in_ns(move || -> Result<Duration> {
            let mut s = CtSocket::open()?;
            let ev = if listen {
                let e = CtSocket::events(8 << 20)?;
                e.drop_events_of(s.portid())?;
                Some(e)
            } else {
                None
            };
            let t = Instant::now();
            let mut i = 0;
            while i < n {
                let ops: Vec<CtOp> = (i..(i + 256).min(n))
                    .map(|j| CtOp::Create(entry(13, j)))
                    .collect();
                let refused = s.apply(&ops)?.iter().filter(|&&e| e != 0).count();
                if refused > 0 {
                    bail!("{refused} creates refused");
                }
                i += 256;
            }
            drop(ev);
            Ok(t.elapsed())
        })?;
        rates.push(f64::from(n) / t.as_secs_f64());
        ns.run("conntrack -D -d 13.0.0.0/8 >/dev/null 2>&1 || true");
    }
    Ok((rates[0], rates[1]))
}

fn wait_count(ns: &Netns, want: u64, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if count(ns) >= want {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[derive(Default, Debug)]
struct Lag {
    seen: usize,
    sent: usize,
    p50_ms: f64,
    p99_ms: f64,
    cpu1_ms_per_1k: f64,
    cpu2_ms_per_1k: f64,
}

/// Creates `rate` entries a second in gw1 for `secs` and times their arrival in gw2's table.
fn lag(gw: &Gateway, rate: u32, secs: u64, pids: (u32, u32)) -> Result<Lag> {
    let created: Arc<Mutex<HashMap<CtKey, Instant>>> = Arc::default();
    let arrived: Arc<Mutex<HashMap<CtKey, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (arrived, stop) = (arrived.clone(), stop.clone());
        gw.pair.gw2.spawn_in(move || {
            let mut s = CtSocket::events(64 << 20).expect("event socket");
            while !stop.load(Ordering::Relaxed) {
                let r = s.read_events(256, |_, ev| {
                    if let CtEvent::Update {
                        entry, new: true, ..
                    } = ev
                    {
                        arrived.lock().unwrap().insert(entry.key, Instant::now());
                    }
                });
                if matches!(r, Ok(EventRead::Empty)) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let c0 = (cpu_time(pids.0), cpu_time(pids.1));
    let total = rate as u64 * secs;
    {
        let created = created.clone();
        gw.pair.gw1.in_ns(move || -> Result<()> {
            let mut s = CtSocket::open()?;
            let per_tick = (rate / 1000).max(1);
            let start = Instant::now();
            let mut i = 0u32;
            while u64::from(i) < total {
                let ops: Vec<CtOp> = (i..i + per_tick)
                    .map(|j| CtOp::Create(entry(11, j)))
                    .collect();
                let now = Instant::now();
                {
                    let mut c = created.lock().unwrap();
                    for o in &ops {
                        if let CtOp::Create(e) = o {
                            c.insert(e.key, now);
                        }
                    }
                }
                s.apply(&ops)?;
                i += per_tick;
                // One tick a millisecond, on the schedule (not after the work).
                let due = start + Duration::from_secs_f64(f64::from(i) / f64::from(rate));
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
            }
            Ok(())
        })?;
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let c1 = (cpu_time(pids.0), cpu_time(pids.1));
    let created = created.lock().unwrap();
    let arrived = arrived.lock().unwrap();
    let mut lags: Vec<f64> = created
        .iter()
        .filter_map(|(k, t)| {
            arrived
                .get(k)
                .map(|a| a.saturating_duration_since(*t).as_secs_f64() * 1000.0)
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lags.get(((lags.len() as f64 * p) as usize).min(lags.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let k = created.len().max(1) as f64 / 1000.0;
    Ok(Lag {
        seen: lags.len(),
        sent: created.len(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        cpu1_ms_per_1k: (c1.0 - c0.0).as_secs_f64() * 1000.0 / k,
        cpu2_ms_per_1k: (c1.1 - c0.1).as_secs_f64() * 1000.0 / k,
    })
}

/// Deletes what a run left in both tables but gw1's bulk entries.
fn clear_lag_entries(gw: &Gateway) {
    for ns in [&gw.pair.gw1, &gw.pair.gw2] {
        ns.run("conntrack -D -d 11.0.0.0/8 >/dev/null 2>&1 || true");
    }
}

#[derive(Debug, Default)]
struct Run {
    name: &'static str,
    bulk_ms: f64,
    bulk_cpu1_ms: f64,
    bulk_cpu2_ms: f64,
    lag: Lag,
}

fn carpd_run(gw: &Gateway, args: &Args) -> Result<Run> {
    let cfg = |advskew, peer: &str| {
        Gateway::config(
            advskew,
            &format!(
                "[pfsync]\nsyncdev = \"eth2\"\nsyncpeer = \"{peer}\"\nkey_file = \"{}\"\nconntrack = true\n",
                gw.pair.dir.join("sync.key").display()
            ),
        )
    };
    let gw1 = gw.carpd(1, &cfg(0, "172.16.1.2"));
    let sock1 = gw.control_socket(1);
    // gw1 takes its table in at start (one dump) before it answers.
    let t = Instant::now();
    while sync_report(&sock1)
        .and_then(|r| r.conntrack)
        .is_none_or(|c| c.entries < u64::from(args.entries))
    {
        if t.elapsed() > Duration::from_secs(120) {
            bail!("gw1's carpd never took its table in:\n{}", gw1.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let c1 = cpu_time(gw1.pid());
    let start = Instant::now();
    let gw2 = gw.carpd(2, &cfg(100, "172.16.1.1"));
    let sock2 = gw.control_socket(2);
    // Timed from gw2's carpd answering on its control socket (start-up, XDP attach and its own dump
    // are not the bulk): its bulk request goes out at that moment.
    let mut up: Option<Instant> = None;
    let done = loop {
        if let Some(c) = sync_report(&sock2).and_then(|r| r.conntrack) {
            let t0 = *up.get_or_insert_with(Instant::now);
            if c.bulk == "done" {
                break t0.elapsed();
            }
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("gw2's conntrack bulk never finished:\n{}", gw2.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let have = count(&gw.pair.gw2);
    if have < u64::from(args.entries) {
        bail!(
            "gw2 holds {have} of {} entries after its bulk",
            args.entries
        );
    }
    // gw1's own start-up bulk request may still be repeating (nobody answered until gw2 came):
    // its answer is a bulk of gw1's own entries back, which must not overlap the lag run.
    let t = Instant::now();
    while sync_report(&sock1)
        .and_then(|r| r.conntrack)
        .is_none_or(|c| c.bulk != "done" && c.bulk != "timed-out")
    {
        if t.elapsed() > Duration::from_secs(120) {
            bail!("gw1's conntrack bulk never ended:\n{}", gw1.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = Run {
        name: "carpd",
        bulk_ms: done.as_secs_f64() * 1000.0,
        bulk_cpu1_ms: (cpu_time(gw1.pid()) - c1).as_secs_f64() * 1000.0,
        bulk_cpu2_ms: cpu_time(gw2.pid()).as_secs_f64() * 1000.0,
        lag: lag(gw, args.rate, args.lag_seconds, (gw1.pid(), gw2.pid()))?,
    };
    // Where entries went missing, if any: each side's conntrack counters after the lag run.
    for (name, sock) in [("gw1", &sock1), ("gw2", &sock2)] {
        if let Some(c) = sync_report(sock).and_then(|r| r.conntrack) {
            println!(
                "{name} carpd conntrack: {:?} refused {:?}",
                c.counters, c.refused
            );
        }
    }
    if std::env::var_os("CARP_BENCH_LOGS").is_some() {
        println!("gw1's log:\n{}\ngw2's log:\n{}", gw1.log(), gw2.log());
    }
    drop(gw2);
    drop(gw1);
    Ok(run)
}

fn conntrackd_conf(gw: &Gateway, n: u8, entries: u32) -> String {
    let dir = gw.pair.dir.display();
    let (me, peer) = if n == 1 {
        ("172.16.1.1", "172.16.1.2")
    } else {
        ("172.16.1.2", "172.16.1.1")
    };
    let limit = u64::from(entries) * 2 + 1_000_000;
    format!(
        "Sync {{\n  Mode FTFW {{\n    DisableExternalCache On\n  }}\n  UDP {{\n    IPv4_address {me}\n    \
         IPv4_Destination_Address {peer}\n    Port 3780\n    Interface eth2\n    SndSocketBuffer 24985600\n    \
         RcvSocketBuffer 24985600\n    Checksum on\n  }}\n}}\n\
         General {{\n  HashSize 262144\n  HashLimit {limit}\n  LogFile {dir}/conntrackd{n}-own.log\n  \
         LockFile {dir}/conntrackd{n}.lock\n  UNIX {{\n    Path {dir}/conntrackd{n}.ctl\n  }}\n  \
         NetlinkBufferSize 8388608\n  NetlinkBufferSizeMaxGrowth 134217728\n  NetlinkOverrunResync On\n}}\n"
    )
}

fn conntrackd_stat(gw: &Gateway, ns: &Netns, n: u8) -> u64 {
    let conf = gw.pair.dir.join(format!("conntrackd{n}.conf"));
    let out = ns.run(&format!(
        "conntrackd -C {} -s 2>/dev/null || true",
        conf.display()
    ));
    out.lines()
        .find(|l| l.contains("current active connections"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn conntrackd_run(gw: &Gateway, args: &Args) -> Result<Run> {
    gw.pair.gw2.run("conntrack -F >/dev/null 2>&1 || true");
    let mut daemons = Vec::new();
    for (n, ns) in [(1u8, &gw.pair.gw1), (2, &gw.pair.gw2)] {
        let conf = gw.pair.dir.join(format!("conntrackd{n}.conf"));
        std::fs::write(&conf, conntrackd_conf(gw, n, args.entries))?;
        let _ = std::fs::remove_file(gw.pair.dir.join(format!("conntrackd{n}.lock")));
        let conf = conf.display().to_string();
        daemons.push(Daemon::spawn(
            ns,
            &format!("conntrackd{n}"),
            &gw.pair.dir,
            &["conntrackd", "-C", &conf],
        ));
    }
    // gw1's conntrackd dumps its table into its internal cache at start.
    let t = Instant::now();
    while conntrackd_stat(gw, &gw.pair.gw1, 1) < u64::from(args.entries) {
        if t.elapsed() > Duration::from_secs(120) {
            bail!("conntrackd on gw1 never cached its table");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (p1, p2) = (daemons[0].pid(), daemons[1].pid());
    let c = (cpu_time(p1), cpu_time(p2));
    let start = Instant::now();
    let conf2 = gw.pair.dir.join("conntrackd2.conf");
    gw.pair
        .gw2
        .run(&format!("conntrackd -C {} -n", conf2.display()));
    let done = wait_count(
        &gw.pair.gw2,
        u64::from(args.entries),
        Duration::from_secs(600),
    )
    .with_context(|| {
        format!(
            "conntrackd's resync never filled gw2's table: {} of {} entries after 600 s",
            count(&gw.pair.gw2),
            args.entries
        )
    })?;
    let _ = done;
    let run = Run {
        name: "conntrackd",
        bulk_ms: start.elapsed().as_secs_f64() * 1000.0,
        bulk_cpu1_ms: (cpu_time(p1) - c.0).as_secs_f64() * 1000.0,
        bulk_cpu2_ms: (cpu_time(p2) - c.1).as_secs_f64() * 1000.0,
        lag: lag(gw, args.rate, args.lag_seconds, (p1, p2))?,
    };
    drop(daemons);
    Ok(run)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !require_root("carp-conntrack-bench") {
        bail!("needs root");
    }
    let gw = Gateway::new(PREFIX);
    for ns in [&gw.pair.gw1, &gw.pair.gw2] {
        let path = gw.pair.dir.join(format!("{}.nft", ns.name));
        std::fs::write(&path, NAT)?;
        ns.run(&format!("nft -f {}", path.display()));
    }
    write_secret(
        &gw.pair.dir.join("sync.key"),
        b"conntrack bench sync key, 32 bytes or more\n",
    );
    // One limit for all namespaces: both tables, the lag entries and what else runs here.
    let max_before: u64 = carp_tests::sh("sysctl -n net.netfilter.nf_conntrack_max")
        .trim()
        .parse()
        .unwrap_or(0);
    let need = u64::from(args.entries) * 2 + args.rate as u64 * args.lag_seconds * 2 + 100_000;
    if max_before < need {
        carp_tests::sh(&format!("sysctl -qw net.netfilter.nf_conntrack_max={need}"));
    }
    // The hash table is one for all namespaces too: at the default size (262,144 buckets here)
    // two 1M tables make chains of eight, and the NAT's unique-tuple check walks them for every
    // insert (`nf_conntrack_tuple_taken` was the top symbol of a bulk). A gateway sized for 1M
    // connections sets `hashsize` to match; so does the bench, for both daemons alike.
    let buckets_before: u64 = carp_tests::sh("sysctl -n net.netfilter.nf_conntrack_buckets")
        .trim()
        .parse()
        .unwrap_or(0);
    if buckets_before < need {
        carp_tests::sh(&format!(
            "sysctl -qw net.netfilter.nf_conntrack_buckets={need}"
        ));
    }
    let mut bound = None;
    let result = (|| -> Result<Vec<Run>> {
        let fill_t = fill(&gw.pair.gw1, 12, args.entries)?;
        println!("gw1: {} entries created in {fill_t:?}", args.entries);
        // Measured with gw1's table full, as the hash table is during the bulk.
        let (quiet, listened) = kernel_bound(&gw.pair.gw2, args.entries.min(200_000))?;
        println!(
            "kernel bound (gw2, batches of 256): {quiet:.0} creates/s with no listener, {listened:.0} with an event socket subscribed"
        );
        bound = Some((quiet, listened));
        let mut runs = vec![carpd_run(&gw, &args)?];
        // Printed at once: the baseline below can take ten minutes and fail.
        println!("{:?}", runs[0]);
        clear_lag_entries(&gw);
        if !args.skip_conntrackd {
            match conntrackd_run(&gw, &args) {
                Ok(r) => runs.push(r),
                // The baseline failing is a result too (BENCHMARKS.md records it), not a lost run.
                Err(e) => println!("conntrackd: {e:#}"),
            }
        }
        Ok(runs)
    })();
    if max_before < need {
        carp_tests::sh(&format!(
            "sysctl -qw net.netfilter.nf_conntrack_max={max_before}"
        ));
    }
    if buckets_before < need && buckets_before > 0 {
        carp_tests::sh(&format!(
            "sysctl -qw net.netfilter.nf_conntrack_buckets={buckets_before}"
        ));
    }
    let runs = result?;
    println!(
        "{:<11} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "daemon",
        "bulk_ms",
        "entries/s",
        "cpu1_ms",
        "cpu2_ms",
        "lag_p50",
        "lag_p99",
        "cpu1/1k_ev",
        "cpu2/1k_ev"
    );
    for r in &runs {
        println!(
            "{:<11} {:>10.0} {:>12.0} {:>9.0} {:>9.0} {:>9.2} {:>9.2} {:>12.2} {:>12.2}  ({} of {} seen)",
            r.name,
            r.bulk_ms,
            f64::from(args.entries) / (r.bulk_ms / 1000.0),
            r.bulk_cpu1_ms,
            r.bulk_cpu2_ms,
            r.lag.p50_ms,
            r.lag.p99_ms,
            r.lag.cpu1_ms_per_1k,
            r.lag.cpu2_ms_per_1k,
            r.lag.seen,
            r.lag.sent
        );
    }
    if let Some(path) = &args.json_out {
        let rows: Vec<String> = runs
            .iter()
            .map(|r| {
                format!(
                    "{{\"daemon\": \"{}\", \"bulk_ms\": {:.1}, \"bulk_cpu_gw1_ms\": {:.1}, \"bulk_cpu_gw2_ms\": {:.1}, \
                     \"lag_p50_ms\": {:.3}, \"lag_p99_ms\": {:.3}, \"lag_seen\": {}, \"lag_sent\": {}, \
                     \"cpu_gw1_ms_per_1k_events\": {:.3}, \"cpu_gw2_ms_per_1k_events\": {:.3}}}",
                    r.name,
                    r.bulk_ms,
                    r.bulk_cpu1_ms,
                    r.bulk_cpu2_ms,
                    r.lag.p50_ms,
                    r.lag.p99_ms,
                    r.lag.seen,
                    r.lag.sent,
                    r.lag.cpu1_ms_per_1k,
                    r.lag.cpu2_ms_per_1k
                )
            })
            .collect();
        let (quiet, listened) = bound.unwrap_or((f64::NAN, f64::NAN));
        let json = format!(
            "{{\n  \"entries\": {},\n  \"rate\": {},\n  \"lag_seconds\": {},\n  \"kernel_creates_per_s\": {quiet:.0},\n  \"kernel_creates_per_s_with_listener\": {listened:.0},\n  \"targets\": {{\"bulk_ms\": 5000, \"vs_conntrackd\": 3, \"lag_p99_ms\": 10}},\n  \"runs\": [\n    {}\n  ]\n}}\n",
            args.entries,
            args.rate,
            args.lag_seconds,
            rows.join(",\n    ")
        );
        if let Some(dir) = Path::new(path).parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, json)?;
        println!("wrote {path}");
    }
    Ok(())
}
