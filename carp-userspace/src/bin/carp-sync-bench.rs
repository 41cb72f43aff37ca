//! carp-sync-bench: measures the sync protocol core in memory (no network, no XDP, no daemon).
//!
//! A bulk transfer of N flows (default 1,000,000) runs between two `SyncEngine`s joined by a lossless
//! in-memory link: node 2 starts and requests a bulk, node 1 encodes and authenticates every flow,
//! node 2 verifies, decodes and merges each into its table. It reports the wall time of that transfer
//! (first as inserts into an empty table, then again as merges into a full one), and the bytes on the
//! wire per flow for full (INS/UPD) and compressed (UPD_C) updates at the chosen MTU.
//!
//! `carp-sync-bench [--flows N] [--mtu BYTES] [--rounds R] [--json]`. Build with `--release`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use carp::engine::Time;
use carp::sync::{
    ConnState, Endpoint, FlowId, FlowKey, FlowState, SyncAction, SyncConfig, SyncEngine, SyncEvent,
    SyncKey,
};

struct Args {
    flows: u64,
    mtu: usize,
    rounds: usize,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        flows: 1_000_000,
        mtu: 1400,
        rounds: 3,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))
                .and_then(|v| v.parse::<u64>().map_err(|e| format!("{name} {v}: {e}")))
        };
        match arg.as_str() {
            "--flows" => a.flows = value("--flows")?,
            "--mtu" => a.mtu = value("--mtu")? as usize,
            "--rounds" => a.rounds = value("--rounds")?.max(1) as usize,
            "--json" => a.json = true,
            "-h" | "--help" => {
                return Err(
                    "usage: carp-sync-bench [--flows N] [--mtu BYTES] [--rounds R] [--json]".into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(a)
}

fn key() -> SyncKey {
    SyncKey::from_bytes(b"carp-sync-bench cluster key").expect("non-empty key")
}

fn engine(node: u32, mtu: usize) -> SyncEngine {
    let mut c = SyncConfig::new(node);
    c.mtu = mtu;
    // Pacing is the transport's business; here we measure the protocol work, so a tick sends a batch.
    c.bulk_packets_per_tick = 256;
    SyncEngine::new(c, key()).expect("valid config")
}

fn flow(i: u64, now_ms: u64) -> FlowState {
    let client = Ipv4Addr::from(0x0a00_0000u32 | (i as u32 >> 8));
    let (key, _) = FlowKey::new(
        6,
        Endpoint::new(client, 1024 + (i % 60000) as u16),
        Endpoint::new(Ipv4Addr::new(192, 0, 2, 1), 443),
    );
    let mut f = FlowState::new(
        FlowId::new(1, i + 1),
        key,
        1,
        now_ms - 5000,
        now_ms + 86_400_000,
    );
    f.peers[0].state = ConnState::TcpEstablished;
    f.peers[1].state = ConnState::TcpEstablished;
    f.peers[0].seqlo = i as u32;
    f.peers[1].seqlo = (i as u32).wrapping_mul(7);
    f.packets = [i % 1000, i % 900];
    f.bytes = [i % 100_000, i % 90_000];
    f
}

fn sends(actions: Vec<SyncAction>, wire: &mut Vec<Vec<u8>>) {
    wire.extend(actions.into_iter().filter_map(|a| match a {
        SyncAction::Send(b) => Some(b),
        _ => None,
    }));
}

struct Bulk {
    elapsed: Duration,
    packets: u64,
    bytes: u64,
}

/// One bulk transfer from `a` to `b`; `b` must be fresh (Idle) so its Start requests the bulk.
fn bulk(a: &mut SyncEngine, b: &mut SyncEngine, mut now: Time) -> Bulk {
    let (p0, o0) = (a.counters().opackets, a.counters().obytes);
    let start = Instant::now();
    let mut to_a = Vec::new();
    let mut to_b = Vec::new();
    sends(b.handle(now, SyncEvent::Start), &mut to_a);
    loop {
        for p in to_a.drain(..) {
            sends(a.handle(now, SyncEvent::Packet(&p)), &mut to_b);
        }
        for p in to_b.drain(..) {
            sends(b.handle(now, SyncEvent::Packet(&p)), &mut to_a);
        }
        if to_a.is_empty() && !a.bulk_sending() {
            break;
        }
        now += Duration::from_millis(20);
        sends(a.handle(now, SyncEvent::Timer), &mut to_b);
    }
    Bulk {
        elapsed: start.elapsed(),
        packets: a.counters().opackets - p0,
        bytes: a.counters().obytes - o0,
    }
}

/// Bytes on the wire per flow when `n` flows each get one local update of the given kind.
fn bytes_per_update(mtu: usize, n: u64, compressed: bool) -> f64 {
    let mut a = engine(1, mtu);
    let now = Time::from_secs(10);
    for i in 0..n {
        let f = flow(i, 10_000);
        if compressed {
            a.adopt(f.clone());
            let mut g = f;
            g.peers[0].seqlo = g.peers[0].seqlo.wrapping_add(1);
            a.handle(now, SyncEvent::LocalUpdate(g));
        } else {
            a.handle(now, SyncEvent::LocalInsert(f));
        }
    }
    a.handle(now + Duration::from_secs(1), SyncEvent::Timer);
    a.counters().obytes as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let now = Time::from_secs(1_000_000);
    let now_ms = 1_000_000_000;
    let mut insert_s = Vec::new();
    let mut merge_s = Vec::new();
    let mut last = None;
    for round in 0..args.rounds {
        let mut a = engine(1, args.mtu);
        for i in 0..args.flows {
            a.adopt(flow(i, now_ms));
        }
        let mut b = engine(2, args.mtu);
        let first = bulk(&mut a, &mut b, now);
        assert_eq!(b.table().len() as u64, args.flows, "every flow arrived");
        assert!(a.table() == b.table(), "tables equal after the bulk");
        // The same bulk again into a full table: every flow takes the merge path. A new engine with
        // b's table stands in for "b restarted with its flows adopted from the dataplane".
        let mut c = engine(3, args.mtu);
        for f in b.table().values() {
            c.adopt(f.clone());
        }
        let second = bulk(&mut a, &mut c, now + Duration::from_secs(60));
        eprintln!(
            "round {}: bulk of {} flows {:.3} s (insert), {:.3} s (merge), {} packets, {} bytes",
            round + 1,
            args.flows,
            first.elapsed.as_secs_f64(),
            second.elapsed.as_secs_f64(),
            first.packets,
            first.bytes
        );
        insert_s.push(first.elapsed.as_secs_f64());
        merge_s.push(second.elapsed.as_secs_f64());
        last = Some(first);
    }
    let last = last.expect("at least one round");
    let sample = 100_000.min(args.flows.max(1));
    let full = bytes_per_update(args.mtu, sample, false);
    let compressed = bytes_per_update(args.mtu, sample, true);
    let insert = median(insert_s);
    let merge = median(merge_s);
    if args.json {
        println!(
            "{{\"flows\":{},\"mtu\":{},\"rounds\":{},\"bulk_insert_s\":{insert:.3},\"bulk_merge_s\":{merge:.3},\"flows_per_s\":{:.0},\"packets\":{},\"wire_bytes\":{},\"bytes_per_full_update\":{full:.1},\"bytes_per_compressed_update\":{compressed:.1}}}",
            args.flows,
            args.mtu,
            args.rounds,
            args.flows as f64 / insert,
            last.packets,
            last.bytes
        );
    } else {
        println!(
            "sync protocol core, in memory (MTU {} bytes, median of {} rounds)",
            args.mtu, args.rounds
        );
        println!(
            "  bulk of {} flows, encode+HMAC+verify+decode+insert: {insert:.3} s ({:.2} M flows/s, target <= 2 s for 1M)",
            args.flows,
            args.flows as f64 / insert / 1e6
        );
        println!("  same bulk into a full table (merge path):          {merge:.3} s");
        println!(
            "  on the wire: {} packets, {} bytes ({:.1} bytes/flow)",
            last.packets,
            last.bytes,
            last.bytes as f64 / args.flows.max(1) as f64
        );
        println!(
            "  bytes per flow update: full (INS/UPD) {full:.1}, compressed (UPD_C) {compressed:.1}"
        );
    }
}
