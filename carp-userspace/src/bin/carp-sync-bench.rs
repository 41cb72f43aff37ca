//! carp-sync-bench: measures the sync protocol core in memory (no network, no XDP, no daemon).
//!
//! A bulk transfer of N flows (default 1,000,000) runs between two `SyncEngine`s joined by a lossless
//! in-memory link: node 2 starts and requests a bulk, node 1 encodes and authenticates every flow,
//! node 2 verifies, decodes and merges each into its table. It reports the wall time of that transfer
//! (first as inserts into an empty table, then again as merges into a full one), and the bytes on the
//! wire per flow for full (INS/UPD) and compressed (UPD_C) updates at the chosen MTU.
//!
//! With `--udp` it also runs the protocol over the real transport (`carp::daemon::sync::transport::SyncSocket`,
//! two sockets on `lo`, TTL 255 checked on receipt): a bulk transfer of N flows, receiver-limited (the
//! sender's next batch goes out once the receiver has drained the previous one, so no datagram is lost
//! to a full socket buffer; both ends run on this one thread), and the replication lag of new flows
//! created at `--rate` per second (time from `LocalInsert` on node 1 to `Apply(Insert)` on node 2), p50 and
//! p99, with the bytes each costs on the wire including the 28-byte IPv4+UDP header. `--json-out FILE`
//! writes every figure as JSON (what `cargo xtask bench` does). Needs root for SO_BINDTODEVICE.
//!
//! `carp-sync-bench [--flows N] [--mtu BYTES] [--rounds R] [--json] [--udp] [--rate N] [--json-out FILE]`.
//! Build with `--release`.

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
    udp: bool,
    rate: u64,
    json_out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        flows: 1_000_000,
        mtu: 1400,
        rounds: 3,
        json: false,
        udp: false,
        rate: 50_000,
        json_out: None,
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
            "--udp" => a.udp = true,
            "--rate" => a.rate = value("--rate")?.max(1),
            "--json-out" => {
                a.json_out = Some(it.next().ok_or("--json-out needs a file")?);
            }
            "-h" | "--help" => {
                return Err(
                    "usage: carp-sync-bench [--flows N] [--mtu BYTES] [--rounds R] [--json] [--udp] [--rate N] [--json-out FILE]".into(),
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
    let mut json = format!(
        "{{\"flows\":{},\"mtu\":{},\"rounds\":{},\"bulk_insert_s\":{insert:.3},\"bulk_merge_s\":{merge:.3},\"flows_per_s\":{:.0},\"packets\":{},\"wire_bytes\":{},\"bytes_per_full_update\":{full:.1},\"bytes_per_compressed_update\":{compressed:.1}",
        args.flows,
        args.mtu,
        args.rounds,
        args.flows as f64 / insert,
        last.packets,
        last.bytes
    );
    let udp = args.udp.then(|| udp::run(&args));
    if let Some(u) = &udp {
        json.push_str(&u.json());
    }
    json.push('}');
    if let Some(path) = &args.json_out {
        if let Some(dir) = std::path::Path::new(path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(path, format!("{json}\n")) {
            eprintln!("writing {path}: {e}");
            std::process::exit(1);
        }
    }
    if args.json {
        println!("{json}");
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
        if let Some(u) = &udp {
            u.print(&args);
        }
    }
}

/// The protocol over the real UDP transport on `lo`.
mod udp {
    use super::{Args, flow, key};
    use carp::daemon::sync::transport::SyncSocket;
    use carp::engine::Time;
    use carp::sync::{BulkState, FlowId, FlowOp, SyncAction, SyncEngine, SyncEvent};
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::{Duration, Instant};

    /// IPv4 + UDP header bytes per datagram.
    const HEADERS: u64 = 28;

    /// What the UDP benchmarks measured.
    pub struct Udp {
        bulk_s: f64,
        bulk_learned: u64,
        bulk_packets: u64,
        bulk_wire: u64,
        lag_p50_us: f64,
        lag_p99_us: f64,
        lag_max_us: f64,
        lag_flows: u64,
        lag_learned: u64,
        lag_wire: u64,
        paced_s: f64,
        threads_s: f64,
        threads_learned: u64,
    }

    impl Udp {
        pub fn json(&self) -> String {
            format!(
                ",\"udp_bulk_two_threads_s\":{:.3},\"udp_bulk_two_threads_learned\":{},\"udp_bulk_s\":{:.3},\"udp_bulk_learned\":{},\"udp_bulk_packets\":{},\"udp_bulk_bytes_per_flow\":{:.1},\"udp_bulk_paced_s\":{:.1},\"lag_rate\":{},\"lag_p50_us\":{:.0},\"lag_p99_us\":{:.0},\"lag_max_us\":{:.0},\"lag_flows\":{},\"lag_learned\":{},\"lag_bytes_per_flow\":{:.1}",
                self.threads_s,
                self.threads_learned,
                self.bulk_s,
                self.bulk_learned,
                self.bulk_packets,
                self.bulk_wire as f64 / self.bulk_learned.max(1) as f64,
                self.paced_s,
                self.lag_flows / 2,
                self.lag_p50_us,
                self.lag_p99_us,
                self.lag_max_us,
                self.lag_flows,
                self.lag_learned,
                self.lag_wire as f64 / self.lag_flows.max(1) as f64,
            )
        }

        pub fn print(&self, args: &Args) {
            println!(
                "sync over the UDP transport on lo (MTU {}, both ends on one thread)",
                args.mtu
            );
            println!(
                "  bulk of {} flows, receiver-limited: {:.3} s ({} learned, {} datagrams, {:.1} bytes/flow with IP+UDP headers)",
                args.flows,
                self.bulk_s,
                self.bulk_learned,
                self.bulk_packets,
                self.bulk_wire as f64 / self.bulk_learned.max(1) as f64
            );
            println!(
                "  the same bulk, sender and receiver on two threads (window {WINDOW} datagrams): {:.3} s ({} learned)",
                self.threads_s, self.threads_learned
            );
            println!(
                "  the same bulk at carpd's pacing (340 datagrams per 5 ms, its floor): {:.2} s (computed)",
                self.paced_s
            );
            println!(
                "  replication lag at {} new flows/s: p50 {:.0} us, p99 {:.0} us, max {:.0} us ({} of {} learned, {:.1} bytes/flow on the wire)",
                args.rate,
                self.lag_p50_us,
                self.lag_p99_us,
                self.lag_max_us,
                self.lag_learned,
                self.lag_flows,
                self.lag_wire as f64 / self.lag_flows.max(1) as f64
            );
        }
    }

    /// An engine whose bulk sends 64 datagrams per tick with no wait between ticks: the loop drains
    /// the receiver between ticks, so the receiver sets the pace and no datagram overflows its buffer.
    fn engine(node: u32, mtu: usize) -> SyncEngine {
        let mut c = carp::sync::SyncConfig::new(node);
        c.mtu = mtu;
        c.bulk_packets_per_tick = 64;
        c.bulk_interval = Duration::ZERO;
        SyncEngine::new(c, key()).expect("valid config")
    }

    fn pair(port: u16) -> (SyncSocket, SyncSocket) {
        let lo = Ipv4Addr::LOCALHOST;
        let a = SyncSocket::open_on(
            "lo",
            SocketAddrV4::new(lo, port),
            SocketAddrV4::new(lo, port + 1),
        )
        .expect("socket on lo (root needed for SO_BINDTODEVICE)");
        let b = SyncSocket::open_on(
            "lo",
            SocketAddrV4::new(lo, port + 1),
            SocketAddrV4::new(lo, port),
        )
        .expect("socket on lo");
        (a, b)
    }

    /// Sends every `Send`, returns the rest.
    fn carry(
        sock: &mut SyncSocket,
        actions: Vec<SyncAction>,
        wire: &mut (u64, u64),
    ) -> Vec<SyncAction> {
        let mut rest = Vec::new();
        for a in actions {
            match a {
                SyncAction::Send(b) => {
                    wire.0 += 1;
                    wire.1 += b.len() as u64 + HEADERS;
                    sock.send(&b).expect("send on lo");
                }
                other => rest.push(other),
            }
        }
        rest
    }

    fn now(base: Instant) -> Time {
        Time::from_secs(1_000_000) + base.elapsed()
    }

    /// Feeds every datagram waiting on `sock` to `e`; returns the actions.
    fn drain(
        sock: &mut SyncSocket,
        e: &mut SyncEngine,
        buf: &mut [u8],
        base: Instant,
    ) -> Vec<SyncAction> {
        let mut out = Vec::new();
        while let Some(rx) = sock.recv(buf, &mut { usize::MAX }).expect("recv on lo") {
            for packet in rx.datagrams(buf) {
                out.extend(e.handle(now(base), SyncEvent::Packet(packet)));
            }
        }
        out
    }

    fn bulk(args: &Args) -> (f64, u64, u64, u64) {
        let (mut sa, mut sb) = pair(18240);
        let mut a = engine(1, args.mtu);
        let now_ms = 1_000_000_000;
        for i in 0..args.flows {
            a.adopt(flow(i, now_ms));
        }
        let mut b = engine(2, args.mtu);
        let mut buf = vec![0u8; 65536];
        let (mut wa, mut wb) = ((0, 0), (0, 0));
        let base = Instant::now();
        let start = Instant::now();
        let first = b.handle(now(base), SyncEvent::Start);
        carry(&mut sb, first, &mut wb);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !matches!(b.bulk_state(), BulkState::Done { .. }) {
            assert!(
                Instant::now() < deadline,
                "the bulk did not finish in 120 s"
            );
            let acts = drain(&mut sa, &mut a, &mut buf, base);
            carry(&mut sa, acts, &mut wa);
            if a.next_deadline().is_some_and(|t| t <= now(base)) {
                let acts = a.handle(now(base), SyncEvent::Timer);
                carry(&mut sa, acts, &mut wa);
            }
            let acts = drain(&mut sb, &mut b, &mut buf, base);
            carry(&mut sb, acts, &mut wb);
            if b.next_deadline().is_some_and(|t| t <= now(base)) {
                let acts = b.handle(now(base), SyncEvent::Timer);
                carry(&mut sb, acts, &mut wb);
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(
            b.bulk_state(),
            BulkState::Done { complete: true },
            "bulk ended by END, not a timeout"
        );
        (elapsed, b.counters().learned, wa.0, wa.1)
    }

    /// Datagrams the two-thread sender may have in flight (well under a 4 MiB receive buffer).
    const WINDOW: u64 = 1024;

    /// The bulk with the sender and the receiver on two threads (as on two gateways), the sender never
    /// more than `WINDOW` datagrams ahead of the receiver (the bench's flow control, not the protocol's).
    fn bulk_threads(args: &Args) -> (f64, u64) {
        use std::sync::{
            Arc,
            atomic::{AtomicU64, Ordering},
        };
        let (mut sa, mut sb) = pair(18260);
        let mut a = engine(1, args.mtu);
        let now_ms = 1_000_000_000;
        for i in 0..args.flows {
            a.adopt(flow(i, now_ms));
        }
        let received = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let start = Instant::now();
        let rx = received.clone();
        let receiver = std::thread::spawn(move || {
            let mut b = engine(2, 1400);
            let mut buf = vec![0u8; 65536];
            let mut wb = (0, 0);
            let first = b.handle(now(base), SyncEvent::Start);
            carry(&mut sb, first, &mut wb);
            let deadline = Instant::now() + Duration::from_secs(120);
            while !matches!(b.bulk_state(), BulkState::Done { .. }) {
                assert!(
                    Instant::now() < deadline,
                    "the bulk did not finish in 120 s"
                );
                let mut got = false;
                while let Some(read) = sb.recv(&mut buf, &mut { usize::MAX }).expect("recv on lo") {
                    got = true;
                    for packet in read.datagrams(&buf) {
                        rx.fetch_add(1, Ordering::Release);
                        let acts = b.handle(now(base), SyncEvent::Packet(packet));
                        carry(&mut sb, acts, &mut wb);
                    }
                }
                if b.next_deadline().is_some_and(|t| t <= now(base)) {
                    let acts = b.handle(now(base), SyncEvent::Timer);
                    carry(&mut sb, acts, &mut wb);
                }
                if !got {
                    std::thread::yield_now();
                }
            }
            assert_eq!(b.bulk_state(), BulkState::Done { complete: true });
            b.counters().learned
        });
        let mut buf = vec![0u8; 65536];
        let mut sent = 0u64;
        let mut started = false;
        while !receiver.is_finished() {
            let mut acts = Vec::new();
            while let Some(read) = sa.recv(&mut buf, &mut { usize::MAX }).expect("recv on lo") {
                for packet in read.datagrams(&buf) {
                    acts.extend(a.handle(now(base), SyncEvent::Packet(packet)));
                }
            }
            if a.next_deadline().is_some_and(|t| t <= now(base)) {
                acts.extend(a.handle(now(base), SyncEvent::Timer));
            }
            started |= a.bulk_sending();
            for act in acts {
                if let SyncAction::Send(b) = act {
                    while sent >= received.load(Ordering::Acquire) + WINDOW {
                        std::thread::yield_now();
                    }
                    sa.send(&b).expect("send on lo");
                    sent += 1;
                }
            }
            if !started || !a.bulk_sending() {
                std::thread::yield_now();
            }
        }
        let learned = receiver.join().expect("receiver thread");
        (start.elapsed().as_secs_f64(), learned)
    }

    fn lag(args: &Args) -> (Vec<f64>, u64, u64, u64) {
        let (mut sa, mut sb) = pair(18250);
        let mut a = engine(1, args.mtu);
        let mut b = engine(2, args.mtu);
        let mut buf = vec![0u8; 65536];
        let (mut wa, mut wb) = ((0, 0), (0, 0));
        let base = Instant::now();
        let run = Duration::from_secs(2);
        let total = args.rate * 2;
        let mut created: HashMap<FlowId, Instant> = HashMap::with_capacity(total as usize);
        let mut lags = Vec::with_capacity(total as usize);
        let mut made = 0u64;
        let end = base + run + Duration::from_secs(2);
        while Instant::now() < end && (lags.len() as u64) < total {
            let due = ((base.elapsed().as_secs_f64() * args.rate as f64) as u64).min(total);
            while made < due {
                let mut f = flow(made + 10_000_000, now(base).as_nanos() / 1_000_000);
                f.created_ms = now(base).as_nanos() / 1_000_000;
                created.insert(f.id, Instant::now());
                let acts = a.handle(now(base), SyncEvent::LocalInsert(f));
                carry(&mut sa, acts, &mut wa);
                made += 1;
            }
            if a.next_deadline().is_some_and(|t| t <= now(base)) {
                let acts = a.handle(now(base), SyncEvent::Timer);
                carry(&mut sa, acts, &mut wa);
            }
            for act in drain(&mut sb, &mut b, &mut buf, base) {
                if let SyncAction::Apply(FlowOp::Insert(f)) = act
                    && let Some(t) = created.get(&f.id)
                {
                    lags.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            let acts = drain(&mut sa, &mut a, &mut buf, base);
            carry(&mut sa, acts, &mut wa);
            let _ = &mut wb;
        }
        let learned = lags.len() as u64;
        (lags, made, learned, wa.1)
    }

    fn pct(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    pub fn run(args: &Args) -> Udp {
        let (bulk_s, bulk_learned, bulk_packets, bulk_wire) = bulk(args);
        let (threads_s, threads_learned) = bulk_threads(args);
        let (mut lags, lag_flows, lag_learned, lag_wire) = lag(args);
        lags.sort_by(f64::total_cmp);
        // carpd's bulk pacing (daemon::sync): 340 datagrams per 5 ms tick; carp-sync-lab-bench
        // measures the real thing between two carpd.
        let ticks = bulk_packets.div_ceil(340);
        Udp {
            bulk_s,
            bulk_learned,
            bulk_packets,
            bulk_wire,
            lag_p50_us: pct(&lags, 0.5),
            lag_p99_us: pct(&lags, 0.99),
            lag_max_us: lags.last().copied().unwrap_or(f64::NAN),
            lag_flows,
            lag_learned,
            lag_wire,
            paced_s: ticks as f64 * 0.005,
            threads_s,
            threads_learned,
        }
    }
}
