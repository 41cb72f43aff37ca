//! Chaos runs (issue #8): three gateways run carpd for vhid 1 on one bridge and replicate their flow
//! tables over a second bridge (the sync LAN, `[pfsync]` multicast on eth1); a client pings the VIP and
//! keeps opening UDP flows to it; a seeded random sequence of faults hits the gateways one at a time:
//! SIGKILL and restart of carpd, carpdev link flaps, partitions (the switch drops a gateway's frames
//! while its link stays up) and heals, demote changes, and sync link cuts. A sampler asks every carpd for
//! its state over the control socket every 20 ms, and reads every gateway's pinned dataplane too: a
//! SIGKILLed carpd's XDP program still answers for the VIP as MASTER until its lease runs out, which
//! carpctl (gone with carpd) cannot show; a gateway counts as MASTER when either says so. Afterwards the run checks the invariants and prints a
//! report with the longest client outage:
//! - outside partitions, never two MASTERs for longer than master-down plus one advert interval;
//! - never no MASTER for longer than that;
//! - no synced flow lost: once the faults stop, every gateway's flow table holds every client flow.
use crate::lab::{Cluster, Daemon, VIP, carpd_binary};
use crate::{netns::Netns, sh};
use carp::control::{self, DemoteOp, Request, Response};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, atomic::AtomicBool, atomic::Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// advskew of gw1, gw2 and gw3 (advbase 1): gw1 is the preferred master.
const ADVSKEW: [u8; 3] = [0, 50, 100];
/// How often the sampler asks each carpd for its state.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Sampling granularity plus a control round trip on a loaded 2-vCPU machine.
const SLACK: Duration = Duration::from_millis(250);

/// What a chaos run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long faults are injected (the run adds set-up and a final settle).
    pub duration: Duration,
    /// Seed of the fault sequence: the same seed replays the same faults.
    pub seed: u64,
    /// Namespace-name prefix (at most 6 bytes).
    pub prefix: String,
}

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL carpd, restart it after the hold time.
    Kill,
    /// carpdev down, up after the hold time.
    LinkFlap,
    /// The switch drops everything to and from the gateway; healed after the hold time.
    Partition,
    /// Group `carp` demoted by 50, restored after the hold time.
    Demote,
    /// The sync switch drops everything to and from the gateway; healed after the hold time.
    SyncCut,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// Faults injected, in order: (kind, gateway index, hold time).
    pub faults: Vec<(Fault, usize, Duration)>,
    /// The bound both invariants use: master-down of the slowest backup plus its advert interval.
    pub bound: Duration,
    /// Longest stretch outside partitions with two or more MASTERs.
    pub longest_dual_master: Duration,
    /// Longest stretch with no MASTER.
    pub longest_no_master: Duration,
    /// Longest gap between two echo replies the client received.
    pub longest_outage: Duration,
    /// Echo requests sent and replies received (duplicates not counted).
    pub pings: (u64, u64),
    /// State samples taken.
    pub samples: usize,
    /// UDP flows the client opened to the VIP.
    pub flows: usize,
    /// Per gateway, the client flows missing from its flow table at the end.
    pub flows_missing: Vec<usize>,
}

impl Report {
    /// True when both invariants held.
    pub fn passed(&self) -> bool {
        self.longest_dual_master <= self.bound + SLACK
            && self.longest_no_master <= self.bound + SLACK
            && self.flows_kept()
    }

    /// True when the client opened flows and every gateway holds all of them.
    pub fn flows_kept(&self) -> bool {
        self.flows > 0 && self.flows_missing.iter().all(|m| *m == 0)
    }

    /// The report as printed by `cargo xtask chaos`.
    pub fn render(&self) -> String {
        let count = |f: Fault| self.faults.iter().filter(|(k, _, _)| *k == f).count();
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        let verdict = |d: Duration| {
            if d <= self.bound + SLACK {
                "ok"
            } else {
                "VIOLATED"
            }
        };
        format!(
            "chaos: {} faults ({} kill, {} link flap, {} partition, {} demote, {} sync cut), {} state samples\n\
             bound (master-down + one interval): {} (+{} sampling slack)\n\
             longest two-MASTER stretch outside partitions: {} ({})\n\
             longest no-MASTER stretch: {} ({})\n\
             client: {} of {} pings answered, longest outage {}\n\
             synced flows: {} opened by the client, missing at the end per gateway {:?} ({})\n\
             result: {}\n",
            self.faults.len(),
            count(Fault::Kill),
            count(Fault::LinkFlap),
            count(Fault::Partition),
            count(Fault::Demote),
            count(Fault::SyncCut),
            self.samples,
            ms(self.bound),
            ms(SLACK),
            ms(self.longest_dual_master),
            verdict(self.longest_dual_master),
            ms(self.longest_no_master),
            verdict(self.longest_no_master),
            self.pings.1,
            self.pings.0,
            ms(self.longest_outage),
            self.flows,
            self.flows_missing,
            if self.flows_kept() { "ok" } else { "VIOLATED" },
            if self.passed() { "PASS" } else { "FAIL" },
        )
    }
}

fn config(g: usize, key: &Path) -> String {
    format!(
        "[carp]\npreempt = true\n\n[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\n\
         pass = \"chaospass\"\nadvbase = 1\nadvskew = {}\naddresses = [\"{VIP}/24\"]\n\n\
         [pfsync]\nsyncdev = \"eth1\"\nkey_file = \"{}\"\n",
        ADVSKEW[g],
        key.display()
    )
}

/// The sync LAN: ns `<prefix>-ss` holding bridge br0, and per gateway an eth1 on it (172.16.0.11, ...);
/// gateway g's port there is `<prefix>-s<g>`.
fn sync_lan(lab: &Cluster, prefix: &str) -> Netns {
    let ss = Netns::new(&format!("{prefix}-ss"));
    ss.run("ip link add br0 type bridge && ip link set br0 up");
    for (g, gw) in lab.gws.iter().enumerate() {
        let port = format!("{prefix}-s{g}");
        sh(&format!(
            "ip link add {port} netns {} type veth peer name eth1 netns {}",
            ss.name, gw.name
        ));
        ss.run(&format!("ip link set {port} master br0 up"));
        gw.run(&format!(
            "ip link set eth1 up && ip addr add 172.16.0.{}/24 dev eth1",
            11 + g
        ));
    }
    ss
}

/// The client keeps its UDP flows to the VIP alive (one datagram per flow a second) and opens two new
/// ones a second while `open` is set; returns the source ports of every flow it opened.
fn client_flows(
    lab: &Cluster,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<u16>> {
    lab.client.spawn_in(move || {
        let mut socks: Vec<std::net::UdpSocket> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if open.load(Ordering::Relaxed) {
                for _ in 0..2 {
                    let s = std::net::UdpSocket::bind("10.0.0.100:0").expect("bind a client port");
                    s.connect((VIP, 9)).expect("connect to the VIP");
                    socks.push(s);
                }
            }
            for s in &socks {
                let _ = s.send(b"chaos flow");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        socks
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(|a| a.port())
            .collect()
    })
}

/// How many of the client's flows (source ports) a gateway's flow table lacks; all of them when its
/// carpd does not answer.
fn missing_flows(socket: &Path, ports: &[u16]) -> usize {
    let Ok(Ok(report)) = control::flows(socket, &Default::default(), Duration::from_secs(5)) else {
        return ports.len();
    };
    let vip = format!("{VIP}:9");
    ports
        .iter()
        .filter(|port| {
            let client = format!("10.0.0.100:{port}");
            !report.flows.iter().any(|f| {
                f.proto == "udp"
                    && ((f.lo == client && f.hi == vip) || (f.lo == vip && f.hi == client))
            })
        })
        .count()
}

/// Switch `sw` drops every frame from or to its port `port` (the link stays up), or stops doing so.
fn cut(sw: &Netns, port: &str, on: bool) {
    let table = format!("cut_{}", port.replace('-', "_"));
    if on {
        sw.run(&format!(
            "nft add table bridge {table} && \
             nft add chain bridge {table} drops '{{ type filter hook forward priority 0; }}' && \
             nft add rule bridge {table} drops iifname {port} drop && \
             nft add rule bridge {table} drops oifname {port} drop"
        ));
    } else {
        sw.run(&format!("nft delete table bridge {table}"));
    }
}

/// True when gateway `dir`'s pinned dataplane acts as MASTER for vhid 1 now (state MASTER and a
/// lease, if any, that has not run out): what the wire sees, whether or not carpd is alive.
fn dataplane_master(bpffs: &Path) -> bool {
    let Ok(maps) = carp::dataplane::maps::Maps::open_pinned(bpffs, "eth0") else {
        return false;
    };
    let Ok(e) = maps.vhid(1) else {
        return false;
    };
    e.state() == carp_common::maps::VhidState::Master
        && (e.lease_until_ns == 0 || e.lease_until_ns > crate::monotonic_ns())
}

/// One state sample: when, and which gateways said MASTER.
struct Sample {
    at: Instant,
    masters: u32,
}

/// Asks carpd `i` for its state; None when it does not answer (killed, restarting).
fn state_of(socket: &Path) -> Option<String> {
    match control::call(socket, &Request::Status, Duration::from_millis(200)) {
        Ok(Response::Status(r)) => r.interfaces.first().map(|i| i.state.clone()),
        _ => None,
    }
}

fn demote(socket: &Path, by: i32) {
    let req = Request::Demote {
        group: "carp".into(),
        change: Some(DemoteOp::Adjust(by)),
    };
    match control::call(socket, &req, Duration::from_secs(2)) {
        Ok(Response::Groups(_)) => {}
        other => panic!("demote carp {by:+}: {other:?}"),
    }
}

/// The longest run of consecutive samples for which `bad` holds, measured from its first to the first
/// sample after it (so a one-sample blip counts as one sampling interval).
fn longest_run(samples: &[Sample], bad: impl Fn(&Sample) -> bool) -> Duration {
    let mut longest = Duration::ZERO;
    let mut start: Option<Instant> = None;
    for s in samples {
        match (bad(s), start) {
            (true, None) => start = Some(s.at),
            (false, Some(t)) => {
                longest = longest.max(s.at - t);
                start = None;
            }
            _ => {}
        }
    }
    if let (Some(t), Some(last)) = (start, samples.last()) {
        longest = longest.max(last.at - t);
    }
    longest
}

/// Parses `ping -D` output: (requests sent, replies, longest gap between replies).
fn ping_stats(out: &str) -> (u64, u64, Duration) {
    let mut times = Vec::new();
    for line in out.lines() {
        if line.contains("bytes from") && !line.contains("DUP!") {
            let t = line
                .strip_prefix('[')
                .and_then(|l| l.split(']').next())
                .and_then(|t| t.parse::<f64>().ok());
            times.extend(t);
        }
    }
    let longest = times
        .windows(2)
        .map(|w| Duration::from_secs_f64((w[1] - w[0]).max(0.0)))
        .max()
        .unwrap_or(Duration::MAX);
    let sent = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (sent, times.len() as u64, longest)
}

/// Runs one chaos run and returns its report (panics if the lab cannot be built).
pub fn run(opts: &Options) -> Report {
    carpd_binary();
    let lab = Cluster::new(&opts.prefix, ADVSKEW.len(), 1);
    let ss = sync_lan(&lab, &opts.prefix);
    let key = lab.dir.join("sync.key");
    crate::write_secret(&key, b"chaos sync key, at least 32 bytes long\n");
    let mut daemons: Vec<Option<Daemon>> = (0..lab.gws.len())
        .map(|g| Some(lab.carpd(g, &config(g, &key))))
        .collect();
    // Every carpd answers and gw1 (advskew 0) is MASTER before faults start.
    let ready = Instant::now() + Duration::from_secs(15);
    while state_of(&lab.socket(0)).as_deref() != Some("MASTER") {
        assert!(Instant::now() < ready, "gw1 never became MASTER");
        std::thread::sleep(Duration::from_millis(100));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sockets: Vec<PathBuf> = (0..lab.gws.len()).map(|i| lab.socket(i)).collect();
    let pins: Vec<PathBuf> = (0..lab.gws.len())
        .map(|g| lab.bpffs.join(Cluster::name(g)))
        .collect();
    let sampler = {
        let (stop, samples) = (stop.clone(), samples.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let masters = sockets
                    .iter()
                    .zip(&pins)
                    .filter(|(s, p)| {
                        state_of(s).as_deref() == Some("MASTER") || dataplane_master(p)
                    })
                    .count() as u32;
                samples.lock().unwrap().push(Sample { at, masters });
                std::thread::sleep(SAMPLE_EVERY.saturating_sub(at.elapsed()));
            }
        })
    };
    let mut ping = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.client.name))
        .args(["ping", "-D", "-n", "-i", "0.02", "-W", "1", VIP])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run ping");
    // Read as it comes: a full pipe would stall ping and fake an outage.
    let mut stdout = ping.stdout.take().expect("ping stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });

    let (open, flows_stop) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let flows = client_flows(&lab, open.clone(), flows_stop.clone());

    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut faults = Vec::new();
    let mut partitions: Vec<(Instant, Instant)> = Vec::new();
    let end = Instant::now() + opts.duration;
    while Instant::now() < end {
        let kind = [
            Fault::Kill,
            Fault::LinkFlap,
            Fault::Partition,
            Fault::Demote,
            Fault::SyncCut,
        ][rng.random_range(0..5)];
        let gw = rng.random_range(0..lab.gws.len());
        let hold = Duration::from_millis(rng.random_range(1500..5000));
        let settle = Duration::from_millis(rng.random_range(3000..6000));
        faults.push((kind, gw, hold));
        match kind {
            Fault::Kill => {
                if let Some(mut d) = daemons[gw].take() {
                    d.kill9();
                }
                std::thread::sleep(hold);
                daemons[gw] = Some(lab.carpd(gw, &config(gw, &key)));
            }
            Fault::LinkFlap => {
                lab.gws[gw].run("ip link set eth0 down");
                std::thread::sleep(hold);
                lab.gws[gw].run("ip link set eth0 up");
            }
            Fault::Partition => {
                let from = Instant::now();
                cut(&lab.sw, &format!("{}-p{gw}", opts.prefix), true);
                std::thread::sleep(hold);
                cut(&lab.sw, &format!("{}-p{gw}", opts.prefix), false);
                partitions.push((from, Instant::now()));
            }
            Fault::Demote => {
                demote(&lab.socket(gw), 50);
                std::thread::sleep(hold);
                demote(&lab.socket(gw), -50);
            }
            Fault::SyncCut => {
                cut(&ss, &format!("{}-s{gw}", opts.prefix), true);
                std::thread::sleep(hold);
                cut(&ss, &format!("{}-s{gw}", opts.prefix), false);
            }
        }
        std::thread::sleep(settle);
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler thread");
    // No new flows; the old ones stay alive while the periodic table scans bring every peer up to date.
    open.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(5));
    flows_stop.store(true, Ordering::Relaxed);
    let ports = flows.join().expect("client flows thread");
    let flows_missing: Vec<usize> = (0..lab.gws.len())
        .map(|g| missing_flows(&lab.socket(g), &ports))
        .collect();
    // SAFETY: SIGINT to our own child, so ping prints its summary and exits.
    unsafe { libc::kill(ping.id() as i32, libc::SIGINT) };
    let _ = ping.wait();
    let out = reader.join().expect("ping reader");
    let (sent, received, longest_outage) = ping_stats(&out);

    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let in_partition = |s: &Sample| partitions.iter().any(|(a, b)| s.at >= *a && s.at <= *b);
    let slowest = *ADVSKEW.iter().max().unwrap();
    let bound = carp::engine::master_down_interval(1, slowest, Default::default())
        + carp::engine::advert_interval(1, slowest);
    let report = Report {
        faults,
        bound,
        longest_dual_master: longest_run(&samples, |s| s.masters >= 2 && !in_partition(s)),
        longest_no_master: longest_run(&samples, |s| s.masters == 0),
        longest_outage,
        pings: (sent, received),
        samples: samples.len(),
        flows: ports.len(),
        flows_missing,
    };
    if !report.passed() {
        for d in daemons.iter().flatten() {
            eprintln!("--- {} log ---\n{}", d.name, d.log());
        }
    }
    report
}
