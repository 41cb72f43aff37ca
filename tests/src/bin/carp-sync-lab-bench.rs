//! `cargo xtask bench` (sync part, issue #7 item 6): carpd's own bulk transfer of a large flow table
//! between two carpd processes in the "gateway" lab (design §3; the sync link is the eth2 veth between
//! gw1 and gw2). Needs root.
//!
//! gw1 starts with `[flows] limit` sized for the table; the bench writes `--flows` established TCP flows
//! into gw1's pinned `carp_flows` (BPF_MAP_UPDATE_BATCH, as the dataplane would hold them) and waits until
//! gw1's sync engine has taken all of them in (its once-a-second scan of the table reports them as local
//! flows). Then, each round, gw2 starts with an empty table and requests the bulk transfer; the bench
//! polls `carpctl sync` on gw2 until the bulk is done and reads the engine's own measure (`bulk_ms`: from
//! the first request to BULK_END). A round counts only if gw2 ends with every flow, in its engine and in
//! its XDP map, and no bulk was incomplete; gw2 is then stopped (SIGTERM removes its maps) for the next.
//!
//! Usage: `carp-sync-lab-bench [--flows N] [--rounds R] [--sync-mtu BYTES] [--json-out FILE]`.
use anyhow::{Context, Result, bail, ensure};
use carp::{
    control::report::SyncReport,
    control::{Request, Response, call},
    dataplane::flows::FlowTable,
};
use carp_common::maps::{FlowEntry, FlowKey, FlowTcpState};
use carp_tests::{
    lab::{Daemon, Gateway, cpu_time},
    monotonic_ns, require_root, write_secret,
};
use clap::Parser;
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// The lab's namespace prefix.
const PREFIX: &str = "csb";
/// gw1's and gw2's sync node ids.
const NODE1: u32 = 1;
const NODE2: u32 = 2;

#[derive(Parser)]
struct Args {
    /// Flows in gw1's table.
    #[arg(long, default_value_t = 1_000_000)]
    flows: u32,
    /// Bulk transfers measured (each into a fresh gw2).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// MTU of the sync link (eth2, both ends); carpd fills it (jumbo frames: ~60 flows a packet).
    #[arg(long, default_value_t = 1500)]
    sync_mtu: u32,
    /// Where to write the results as JSON.
    #[arg(long)]
    json_out: Option<String>,
}

fn sync_report(sock: &Path) -> Result<SyncReport> {
    match call(sock, &Request::Sync, Duration::from_secs(5)) {
        Ok(Response::Sync(r)) => Ok(r),
        other => bail!("carpctl sync: {other:?}"),
    }
}

/// Flow `i` of gw1: TCP 10.a.b.c:40000 <-> 172.20.0.1:443, established, created by gw1.
fn flow(i: u32, now_ns: u64) -> (FlowKey, FlowEntry) {
    let mut k = FlowKey {
        lo_port: 40000,
        hi_port: 443,
        proto: 6,
        family: 4,
        ..Default::default()
    };
    k.lo_addr[..4].copy_from_slice(&[10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    k.hi_addr[..4].copy_from_slice(&[172, 20, 0, 1]);
    let e = FlowEntry {
        id: u64::from(i) + 1,
        created_ns: now_ns,
        last_seen_ns: now_ns,
        packets: [10, 12],
        bytes: [1_000, 12_000],
        creator: NODE1,
        owner: 0,
        tcp_state: FlowTcpState::Established as u8,
        flags: 0,
        pad: 0,
    };
    (k, e)
}

/// Polls `f` every `every` until it returns Some or `timeout` passes.
fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// The receive-buffer drops of the sync socket (UDP port 8240) in a namespace, from /proc/net/udp.
fn udp_drops(gw: &Gateway, n: u8) -> u64 {
    let ns = if n == 1 { &gw.pair.gw1 } else { &gw.pair.gw2 };
    let text = ns.run("cat /proc/net/udp");
    text.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(":2030"))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

struct Round {
    bulk_ms: f64,
    start_to_done_ms: f64,
    flows_engine: u64,
    flows_map: usize,
    learned_map: usize,
    incomplete: u64,
    udp_drops: u64,
    gw1_cpu_ms: f64,
    gw2_cpu_ms: f64,
    /// gw2's reads that held several datagrams (UDP GRO).
    gro_reads: u64,
    /// Datagrams gw2 received.
    received: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !require_root("carp-sync-lab-bench") {
        return Ok(());
    }
    let n = args.flows;
    // The LRU map evicts a little before it is full (per-CPU free lists): a quarter more slots.
    let limit = (u64::from(n) * 5 / 4).max(65_536);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let gw = Gateway::new(PREFIX);
    for ns in [&gw.pair.gw1, &gw.pair.gw2] {
        ns.run(&format!("ip link set eth2 mtu {}", args.sync_mtu));
    }
    let key = gw.pair.dir.join("sync.key");
    write_secret(&key, b"sync lab bench key, at least 32 bytes\n");
    let config = |node: u32, peer: &str, advskew: u8| {
        Gateway::config(
            advskew,
            &format!(
                "[pfsync]\nsyncdev = \"eth2\"\nsyncpeer = \"{peer}\"\nkey_file = \"{}\"\nnode_id = {node}\n\n\
                 [flows]\nlimit = {limit}\n",
                key.display()
            ),
        )
    };
    let (sock1, sock2) = (gw.control_socket(1), gw.control_socket(2));
    let gw1 = gw.carpd(1, &config(NODE1, "172.16.1.2", 0));
    poll(Duration::from_secs(20), Duration::from_millis(100), || {
        sync_report(&sock1).ok().filter(|r| r.enabled)
    })
    .with_context(|| format!("gw1 did not come up:\n{}", gw1.log()))?;

    // gw1's flows, written as its dataplane would hold them.
    let mut table = FlowTable::open_pinned(&gw.pair.bpffs.join("gw1"), "eth0", false)
        .context("gw1's flow table")?;
    let now = monotonic_ns();
    let (keys, entries): (Vec<FlowKey>, Vec<FlowEntry>) = (0..n).map(|i| flow(i, now)).unzip();
    let t = Instant::now();
    let written = table
        .insert_batch(&keys, &entries)
        .context("BPF_MAP_UPDATE_BATCH into gw1's carp_flows")?;
    let fill = t.elapsed();
    ensure!(written == n as usize, "wrote {written} of {n} flows");
    println!(
        "gw1: {n} flows written into carp_flows in {:.0} ms (limit {limit})",
        fill.as_secs_f64() * 1000.0
    );
    let t = Instant::now();
    poll(Duration::from_secs(120), Duration::from_millis(200), || {
        sync_report(&sock1).ok().filter(|r| r.flows >= u64::from(n))
    })
    .with_context(|| format!("gw1's engine did not take in {n} flows:\n{}", gw1.log()))?;
    println!(
        "gw1: its sync engine has them {:.1} s later (the table scan)",
        t.elapsed().as_secs_f64()
    );
    // gw1 asked for a bulk transfer at its start; with no peer it gives up after 12 tries, 2 s apart.
    // gw2 starts after that, as it would join a gateway that has been up for a while (a gw1 still
    // asking would get gw2's own table back in the middle of the measured transfer).
    poll(Duration::from_secs(60), Duration::from_millis(200), || {
        sync_report(&sock1)
            .ok()
            .filter(|r| r.bulk == "done" || r.bulk == "timed-out")
    })
    .with_context(|| format!("gw1's own bulk request did not end:\n{}", gw1.log()))?;

    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let cpu1 = cpu_time(gw1.pid());
        let drops1 = udp_drops(&gw, 2);
        let started = Instant::now();
        let mut gw2: Daemon = gw.carpd(2, &config(NODE2, "172.16.1.1", 100));
        let mut timeline: Vec<(f64, String, u64)> = Vec::new();
        let r = poll(Duration::from_secs(180), Duration::from_millis(10), || {
            let r = sync_report(&sock2).ok()?;
            let learned = r.counter("learned").unwrap_or(0);
            if timeline
                .last()
                .is_none_or(|(_, b, l)| *b != r.bulk || learned >= l + 100_000)
            {
                timeline.push((started.elapsed().as_secs_f64(), r.bulk.clone(), learned));
            }
            (r.bulk == "done" || r.bulk == "timed-out").then_some(r)
        })
        .with_context(|| format!("gw2's bulk did not end:\n{}", gw2.log()))?;
        let start_to_done = started.elapsed();
        if std::env::var_os("CARP_BENCH_TIMELINE").is_some() {
            for (t, bulk, learned) in &timeline {
                println!("  {t:7.3} s  gw2 bulk {bulk:<10} learned {learned}");
            }
        }
        let gw2_cpu = cpu_time(gw2.pid());
        let gw1_cpu = cpu_time(gw1.pid()).saturating_sub(cpu1);
        ensure!(
            r.bulk == "done",
            "round {round}: bulk {}:\n{}",
            r.bulk,
            gw2.log()
        );
        let map = FlowTable::open_pinned(&gw.pair.bpffs.join("gw2"), "eth0", false)
            .context("gw2's flow table")?
            .scan();
        let res = Round {
            bulk_ms: r.bulk_ms.context("no bulk_ms in gw2's report")?,
            start_to_done_ms: start_to_done.as_secs_f64() * 1000.0,
            flows_engine: r.flows,
            flows_map: map.len(),
            learned_map: map.iter().filter(|(_, e)| e.learned()).count(),
            incomplete: r.counter("bulk_incomplete").unwrap_or(0),
            udp_drops: udp_drops(&gw, 2).saturating_sub(drops1),
            gw1_cpu_ms: gw1_cpu.as_secs_f64() * 1000.0,
            gw2_cpu_ms: gw2_cpu.as_secs_f64() * 1000.0,
            gro_reads: r.counter("gro_reads").unwrap_or(0),
            received: r.counter("received").unwrap_or(0),
        };
        println!(
            "round {round}: bulk {:.0} ms (carpd start to done {:.0} ms), gw2 has {} flows in its engine, \
             {} in its map ({} learned); incomplete bulks {}, socket drops {}; CPU gw1 {:.0} ms, gw2 {:.0} ms; \
             gw2 read {} datagrams, {} reads of several (GRO)",
            res.bulk_ms,
            res.start_to_done_ms,
            res.flows_engine,
            res.flows_map,
            res.learned_map,
            res.incomplete,
            res.udp_drops,
            res.gw1_cpu_ms,
            res.gw2_cpu_ms,
            res.received,
            res.gro_reads
        );
        ensure!(
            res.flows_engine >= u64::from(n) && res.learned_map >= n as usize,
            "round {round}: gw2 lost flows (engine {}, map {} learned of {n}):\n{}",
            res.flows_engine,
            res.learned_map,
            gw2.log()
        );
        gw2.signal(libc::SIGTERM);
        if gw2.wait_exit(Duration::from_secs(20)).is_none() {
            gw2.kill9();
        }
        rounds.push(res);
        if round < args.rounds {
            // A bulk requested within 4 s of the last one ended goes at half the pace (the engine
            // takes it for a peer that lost part of it): the next gw2 joins later than that.
            std::thread::sleep(Duration::from_secs(5));
        }
    }
    let bulk: Vec<f64> = rounds.iter().map(|r| r.bulk_ms).collect();
    let (lo, hi) = (
        bulk.iter().copied().fold(f64::INFINITY, f64::min),
        bulk.iter().copied().fold(0.0, f64::max),
    );
    let med = median(bulk);
    println!(
        "carpd bulk of {n} flows over the lab's sync link (MTU {}): median {med:.0} ms, range {lo:.0}-{hi:.0} ms \
         over {} rounds (target <= 2000 ms); load average at start {}",
        args.sync_mtu,
        rounds.len(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(path) = args.json_out {
        let rows: Vec<String> = rounds
            .iter()
            .map(|r| {
                format!(
                    "{{\"bulk_ms\": {:.1}, \"start_to_done_ms\": {:.1}, \"flows_engine\": {}, \"flows_map\": {}, \
                     \"learned_map\": {}, \"bulk_incomplete\": {}, \"udp_drops\": {}, \"gw1_cpu_ms\": {:.0}, \
                     \"gw2_cpu_ms\": {:.0}, \"received\": {}, \"gro_reads\": {}}}",
                    r.bulk_ms,
                    r.start_to_done_ms,
                    r.flows_engine,
                    r.flows_map,
                    r.learned_map,
                    r.incomplete,
                    r.udp_drops,
                    r.gw1_cpu_ms,
                    r.gw2_cpu_ms,
                    r.received,
                    r.gro_reads
                )
            })
            .collect();
        let json = format!(
            "{{\n  \"flows\": {n},\n  \"sync_mtu\": {},\n  \"flow_limit\": {limit},\n  \"loadavg\": \"{}\",\n  \"fill_ms\": {:.1},\n  \
             \"bulk_ms_median\": {med:.1},\n  \"bulk_ms_min\": {lo:.1},\n  \"bulk_ms_max\": {hi:.1},\n  \
             \"target_ms\": 2000,\n  \"rounds\": [\n    {}\n  ]\n}}\n",
            args.sync_mtu,
            load.trim(),
            fill.as_secs_f64() * 1000.0,
            rows.join(",\n    ")
        );
        if let Some(dir) = Path::new(&path).parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, json).with_context(|| format!("writing {path}"))?;
        println!("wrote {path}");
    }
    Ok(())
}
