//! Flow replication in the "gateway" lab (design §3, issue #7): two carpd gateways with carp on both
//! sides, preempt on, `[flows] stateful = true` and `[pfsync]` over eth2. A long-lived TCP stream and a
//! UDP stream run from the inside client to the outside client through gw1; gw1 is SIGKILLed and both
//! streams continue through gw2 (gw2's dataplane knows the flows only because they were replicated: in
//! stateful mode it drops unknown mid-stream segments); gw1 comes back, its bulk transfer completes (and
//! lifts the +32 demotion) before it takes MASTER back, and the streams live on. Forged, truncated and
//! replayed sync packets are rejected and counted. Real carpd processes; root only.
use carp::{
    control::{
        Request, Response, call,
        report::{FlowsReport, SyncReport},
    },
    sync::{Message, PacketRepr, SyncKey},
};
use carp_common::maps::{FLOW_MODE_OFF, FLOW_MODE_STATEFUL, FLOW_MODE_TRACK};
use carp_tests::{
    lab::{Daemon, Gateway},
    netns::PacketSocket,
    require_root, write_secret,
};
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

const OUTSIDE_CLIENT: &str = "10.0.0.100";
const KEY: &[u8] = b"gateway lab sync key, 32 bytes or more\n";

/// Waits until `d` logs `needle` after byte `skip` of its log, or fails with the log.
fn expect(d: &Daemon, skip: usize, needle: &str, secs: u64) {
    assert!(
        d.wait_log_after(skip, needle, Duration::from_secs(secs)),
        "{}: no {needle:?} within {secs} s:\n{}",
        d.name,
        d.log()
    );
}

fn sync_report(sock: &Path) -> SyncReport {
    match call(sock, &Request::Sync, Duration::from_secs(3)) {
        Ok(Response::Sync(r)) => r,
        other => panic!("carpctl sync: {other:?}"),
    }
}

fn flows(sock: &Path) -> FlowsReport {
    match carp::control::flows(sock, &Default::default(), Duration::from_secs(3)) {
        Ok(Ok(r)) => r,
        other => panic!("carpctl flows: {other:?}"),
    }
}

/// Polls `f` every 100 ms until it is true or `secs` pass.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The two streams and what they counted.
struct Streams {
    stop: Arc<AtomicBool>,
    tcp_bytes: Arc<AtomicU64>,
    udp_echoes: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Streams {
    /// A TCP stream (inside -> outside, 1400 bytes every 5 ms) and a UDP stream echoed by the outside
    /// client (one datagram every 10 ms), through the gateways.
    fn start(gw: &Gateway) -> Streams {
        let stop = Arc::new(AtomicBool::new(false));
        let tcp_bytes = Arc::new(AtomicU64::new(0));
        let udp_echoes = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        // Sockets keep the namespace they were created in, so each is made on a thread inside it.
        let listener = gw
            .pair
            .client
            .in_ns(|| TcpListener::bind((OUTSIDE_CLIENT, 5001)).expect("listen"));
        let echo = gw.pair.client.in_ns(|| {
            let s = UdpSocket::bind((OUTSIDE_CLIENT, 5002)).expect("udp bind");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        });
        let stream = gw.inside.in_ns(|| {
            TcpStream::connect_timeout(
                &format!("{OUTSIDE_CLIENT}:5001").parse().unwrap(),
                Duration::from_secs(5),
            )
            .expect("TCP connect through the gateway")
        });
        let udp = gw.inside.in_ns(|| {
            let s = UdpSocket::bind(("192.168.100.100", 40000)).expect("udp bind");
            s.connect((OUTSIDE_CLIENT, 5002)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        });
        let (conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let fail = |errors: &Arc<std::sync::Mutex<Vec<String>>>, what: String| {
            errors.lock().unwrap().push(what);
        };
        {
            let (stop, bytes, errors) = (stop.clone(), tcp_bytes.clone(), errors.clone());
            let mut conn = conn;
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    match conn.read(&mut buf) {
                        Ok(0) => return fail(&errors, "TCP: the stream was closed".into()),
                        Ok(n) => {
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => return fail(&errors, format!("TCP receive: {e}")),
                    }
                }
            }));
        }
        {
            let (stop, errors) = (stop.clone(), errors.clone());
            let mut stream = stream;
            threads.push(std::thread::spawn(move || {
                let chunk = [0x5au8; 1400];
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = stream.write_all(&chunk) {
                        return fail(&errors, format!("TCP send: {e}"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }));
        }
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = echo.recv_from(&mut buf) {
                        let _ = echo.send_to(&buf[..n], from);
                    }
                }
            }));
        }
        {
            let (tx_stop, echoes) = (stop.clone(), udp_echoes.clone());
            let rx = udp.try_clone().unwrap();
            threads.push(std::thread::spawn(move || {
                let mut seq = 0u64;
                while !tx_stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let _ = udp.send(&seq.to_be_bytes());
                    std::thread::sleep(Duration::from_millis(10));
                }
            }));
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if rx.recv(&mut buf).is_ok() {
                        echoes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Streams {
            stop,
            tcp_bytes,
            udp_echoes,
            errors,
            threads,
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.tcp_bytes.load(Ordering::Relaxed),
            self.udp_echoes.load(Ordering::Relaxed),
        )
    }

    /// Both streams make progress within `secs` and neither has failed.
    fn assert_alive(&self, what: &str, secs: u64) {
        let (t0, u0) = self.counts();
        let alive = eventually(secs, || {
            let (t, u) = self.counts();
            t > t0 + 100_000 && u > u0 + 50
        });
        let errors = self.errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "{what}: stream errors: {errors:?}");
        let (t1, u1) = self.counts();
        assert!(
            alive,
            "{what}: streams stalled: TCP {t0} -> {t1} bytes, UDP {u0} -> {u1} echoes"
        );
        eprintln!("{what}: TCP {t0} -> {t1} bytes, UDP {u0} -> {u1} echoes");
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn sync_config(gw: &Gateway, advskew: u8, peer: &str) -> String {
    Gateway::config(
        advskew,
        &format!(
            "[pfsync]\nsyncdev = \"eth2\"\nsyncpeer = \"{peer}\"\nkey_file = \"{}\"\n\n\
             [flows]\nstateful = true\ninside = [\"eth1\"]\n",
            gw.pair.dir.join("sync.key").display()
        ),
    )
}

#[test]
fn streams_survive_failover_and_the_returning_master_waits_for_its_bulk_sync() {
    if !require_root("streams_survive_failover_and_the_returning_master_waits_for_its_bulk_sync") {
        return;
    }
    let gw = Gateway::new("csy");
    write_secret(&gw.pair.dir.join("sync.key"), KEY);
    let (cfg1, cfg2) = (
        sync_config(&gw, 0, "172.16.1.2"),
        sync_config(&gw, 100, "172.16.1.1"),
    );
    let (sock1, sock2) = (gw.control_socket(1), gw.control_socket(2));
    let mut gw1 = gw.carpd(1, &cfg1);
    let gw2 = gw.carpd(2, &cfg2);
    expect(&gw1, 0, "pfsync: group carp demote +32", 8);
    // Sync packets fill the sync link's MTU (1500, read in carpd's own namespace) less IPv4 and UDP.
    expect(&gw1, 0, "packets up to 1472 bytes", 8);
    // Each answers the other's bulk request: both lift the demotion, and gw1 (advskew 0) is MASTER.
    bulks_done(&[(&gw1, &sock1), (&gw2, &sock2)]);
    assert!(
        eventually(15, || {
            gw1.carpd_state_of("carp0").as_deref() == Some("MASTER")
                && gw1.carpd_state_of("carp1").as_deref() == Some("MASTER")
                && gw2.carpd_state_of("carp0").as_deref() == Some("BACKUP")
                && gw2.carpd_state_of("carp1").as_deref() == Some("BACKUP")
        }),
        "gw1 MASTER of both:\n{}\n{}",
        gw1.log(),
        gw2.log()
    );
    let r1 = sync_report(&sock1);
    assert!(r1.enabled && r1.stateful && !r1.demoted, "{r1:?}");

    let streams = Streams::start(&gw);
    streams.assert_alive("through gw1", 10);
    // gw1 created the flows; gw2 learned them over the sync link.
    let tcp_flow = |f: &FlowsReport| {
        f.flows
            .iter()
            .find(|r| r.proto == "tcp" && (r.lo.ends_with(":5001") || r.hi.ends_with(":5001")))
            .cloned()
    };
    let f1 = tcp_flow(&flows(&sock1)).expect("gw1 has the TCP flow");
    assert_eq!(
        (f1.state.as_str(), f1.learned),
        ("ESTABLISHED", false),
        "{f1:?}"
    );
    assert!(
        eventually(5, || tcp_flow(&flows(&sock2)).is_some_and(|f| f.learned
            && f.state == "ESTABLISHED"
            && f.id == f1.id)),
        "gw2 learned the TCP flow: {:?}",
        flows(&sock2)
    );
    assert!(
        eventually(5, || flows(&sock2)
            .flows
            .iter()
            .any(|f| f.proto == "udp" && f.learned)),
        "gw2 learned the UDP flow: {:?}",
        flows(&sock2)
    );
    let r1 = sync_report(&sock1);
    assert!(r1.counter("opackets").unwrap_or(0) > 0, "{r1:?}");
    assert!(
        r1.dataplane
            .iter()
            .any(|d| d.carpdev == "eth1" && d.inside && d.mode == "stateful"),
        "{r1:?}"
    );

    // gw1 dies: gw2 takes both carp interfaces and keeps forwarding the replicated flows.
    let skip2 = gw2.log().len();
    gw1.kill9();
    expect(&gw2, skip2, "carp1 vhid 2: BACKUP -> MASTER", 10);
    expect(&gw2, skip2, "carp0 vhid 1: BACKUP -> MASTER", 10);
    streams.assert_alive("through gw2 after gw1 was killed", 15);
    let s2 = sync_report(&sock2);
    eprintln!("gw2 after the failover: {s2:?}");

    // gw1 returns: it is demoted by 32 until its bulk transfer from gw2 is in, and only then preempts.
    let skip1 = gw1.log().len();
    let gw1 = gw.carpd(1, &cfg1);
    expect(&gw1, skip1, "pfsync: group carp demote +32", 8);
    expect(&gw1, skip1, "carp0 vhid 1: BACKUP -> MASTER", 40);
    expect(&gw1, skip1, "carp1 vhid 2: BACKUP -> MASTER", 10);
    let log = gw1.log()[skip1..].to_string();
    let done = log
        .find("pfsync: group carp demote -32 (sync done: bulk transfer received)")
        .unwrap_or_else(|| panic!("gw1: no completed bulk transfer:\n{log}"));
    let master = log.find("BACKUP -> MASTER").unwrap();
    assert!(
        done < master,
        "gw1 took MASTER before its bulk transfer completed:\n{log}"
    );
    assert_eq!(sync_report(&sock1).bulk, "done");
    streams.assert_alive("through gw1 again", 15);
    assert!(
        tcp_flow(&flows(&sock1)).is_some_and(|f| f.id == f1.id),
        "the same TCP flow on gw1: {:?}",
        flows(&sock1)
    );

    // Forged (another key), truncated and replayed sync packets reach gw1 and are rejected and counted.
    let before = sync_report(&sock1);
    let forged = PacketRepr {
        sender: 424242,
        seq: u64::MAX / 2,
        messages: vec![Message::Clr {
            creator: f1.creator,
        }],
    }
    .emit(&SyncKey::from_bytes(b"not the cluster key").unwrap(), 0);
    let truncated = forged[..20].to_vec();
    gw.pair.gw2.in_ns(move || {
        let s = UdpSocket::bind(("172.16.1.2", 0)).expect("bind");
        s.set_ttl(255).unwrap();
        s.send_to(&forged, ("172.16.1.1", 8240)).unwrap();
        s.send_to(&truncated, ("172.16.1.1", 8240)).unwrap();
    });
    // A real packet from gw1 (its updates of the running flows), captured on gw2's side of the sync
    // link and sent again byte for byte.
    let before2 = sync_report(&sock2);
    let captured = gw.pair.gw2.in_ns(|| {
        let sock = PacketSocket::open("eth2", 200);
        sock.recv_until(Duration::from_secs(5), |f| {
            f.len() > 42
                && f[12..14] == [8, 0]
                && f[23] == 17
                && f[26..30] == [172, 16, 1, 1]
                && f[36..38] == 8240u16.to_be_bytes()
        })
    });
    let mut captured = captured.expect("a sync packet from gw1 within 5 s");
    // veth hands the receiver a partial checksum (offload); resent as captured it would be dropped as
    // corrupt before reaching carpd. 0 means "no UDP checksum" in IPv4; the sync bytes are untouched.
    captured[40..42].copy_from_slice(&[0, 0]);
    std::thread::sleep(Duration::from_millis(300));
    gw.pair.gw1.in_ns(move || {
        PacketSocket::open("eth2", 100).send(&captured);
    });
    let counter = |r: &SyncReport, n: &str| r.counter(n).unwrap_or(0);
    assert!(
        eventually(3, || {
            let r = sync_report(&sock1);
            counter(&r, "badauth") > counter(&before, "badauth")
                && counter(&r, "badlen") > counter(&before, "badlen")
        }),
        "forged and truncated counted: before {before:?}, after {:?}",
        sync_report(&sock1)
    );
    assert!(
        eventually(3, || counter(&sync_report(&sock2), "replay")
            > counter(&before2, "replay")),
        "replay counted: before {before2:?}, after {:?}",
        sync_report(&sock2)
    );
    // The forged CLR did nothing: gw1 still has gw1's flows and keeps forwarding them.
    assert!(tcp_flow(&flows(&sock1)).is_some());
    streams.assert_alive("after the forged packets", 10);
    drop(streams);
    drop(gw2);
    drop(gw1);
}

/// Without `syncpeer` the gateways sync over the multicast group (224.0.0.240) on eth2: each answers the
/// other's bulk request and the flows gw1 forwards are learned by gw2.
#[test]
fn multicast_sync_replicates_flows() {
    if !require_root("multicast_sync_replicates_flows") {
        return;
    }
    let gw = Gateway::new("csm");
    write_secret(&gw.pair.dir.join("sync.key"), KEY);
    let multicast =
        |advskew| sync_config(&gw, advskew, "unused").replace("syncpeer = \"unused\"\n", "");
    let (sock1, sock2) = (gw.control_socket(1), gw.control_socket(2));
    let gw1 = gw.carpd(1, &multicast(0));
    let gw2 = gw.carpd(2, &multicast(100));
    expect(&gw1, 0, "pfsync: group carp demote +32", 8);
    expect(&gw2, 0, "pfsync: group carp demote +32", 8);
    bulks_done(&[(&gw1, &sock1), (&gw2, &sock2)]);
    for s in [&sock1, &sock2] {
        assert_eq!(
            sync_report(s).destination.as_deref(),
            Some("224.0.0.240:8240")
        );
    }
    wait_master_of_both(&gw1, &[&gw1]);
    let streams = Streams::start(&gw);
    streams.assert_alive("through gw1", 10);
    assert!(
        eventually(5, || learned_count(&sock2) >= 2),
        "gw2 learned the TCP and UDP flows over multicast: {:?}",
        flows(&sock2)
    );
    drop(streams);
    // The sync link going down demotes group carp by one while it is down (spec §8).
    let skip = gw2.log().len();
    gw.pair.gw2.run("ip link set eth2 down");
    expect(&gw2, skip, "pfsync: group carp demote +1 (syncdev down)", 5);
    gw.pair.gw2.run("ip link set eth2 up");
    expect(&gw2, skip, "pfsync: group carp demote -1 (syncdev up)", 5);
}

/// The flow mode (`FLOW_MODE_*`) of gateway `n`'s carpdevs eth0 and eth1, from its pinned maps.
fn modes(gw: &Gateway, n: u8) -> Vec<u8> {
    ["eth0", "eth1"]
        .iter()
        .map(|dev| {
            carp::dataplane::flows::FlowDev::open_pinned(&gw.pair.bpffs.join(format!("gw{n}")), dev)
                .expect("the pinned flow maps")
                .conf()
                .expect("flow conf")
                .mode
        })
        .collect()
}

/// `[pfsync]` and `[flows]` changes are applied on SIGHUP: two gateways started without them get
/// them by a reload (stateful mode in the dataplane, the bulk transfer done without handing gw1's
/// MASTERs over, flows replicated), then lose them again by another.
#[test]
fn sighup_applies_pfsync_and_flows_changes() {
    if !require_root("sighup_applies_pfsync_and_flows_changes") {
        return;
    }
    let gw = Gateway::new("csr");
    write_secret(&gw.pair.dir.join("sync.key"), KEY);
    let (sock1, sock2) = (gw.control_socket(1), gw.control_socket(2));
    let gw1 = gw.carpd(1, &Gateway::config(0, ""));
    let gw2 = gw.carpd(2, &Gateway::config(100, ""));
    wait_master_of_both(&gw1, &[&gw1]);
    let off = vec![FLOW_MODE_OFF; 2];
    assert_eq!(modes(&gw, 1), off);
    assert!(!sync_report(&sock1).enabled);

    // Both get [pfsync] and [flows] stateful by a reload.
    let write = |n: u8, cfg: &str| {
        std::fs::write(gw.pair.dir.join(format!("gw{n}.toml")), cfg).expect("config")
    };
    let (skip1, skip2) = (gw1.log().len(), gw2.log().len());
    write(1, &sync_config(&gw, 0, "172.16.1.2"));
    write(2, &sync_config(&gw, 100, "172.16.1.1"));
    gw1.signal(libc::SIGHUP);
    gw2.signal(libc::SIGHUP);
    expect(
        &gw1,
        skip1,
        "SIGHUP: [pfsync]/[flows] applied (tracking on, stateful true, sync on eth2)",
        5,
    );
    expect(
        &gw2,
        skip2,
        "SIGHUP: [pfsync]/[flows] applied (tracking on, stateful true, sync on eth2)",
        5,
    );
    for (n, d, s) in [(1, &gw1, &sock1), (2, &gw2, &sock2)] {
        assert_eq!(modes(&gw, n), vec![FLOW_MODE_STATEFUL; 2], "{}", d.name);
        bulks_done(&[(d, s)]);
        assert!(!sync_report(s).demoted, "{}: no demotion held", d.name);
    }
    assert!(
        !gw1.log()[skip1..].contains("demote +32"),
        "a reload does not demote: {}",
        gw1.log()
    );
    assert_eq!(gw1.carpd_state_of("carp0").as_deref(), Some("MASTER"));
    assert_eq!(gw1.carpd_state_of("carp1").as_deref(), Some("MASTER"));
    let streams = Streams::start(&gw);
    streams.assert_alive("through gw1 after the reload", 10);
    assert!(
        eventually(5, || learned_count(&sock2) >= 2),
        "gw2 learned the flows over the reloaded sync: {:?}",
        flows(&sock2)
    );
    drop(streams);

    // gw2 goes back to tracking only ([flows] stateful off), gw1 loses both tables.
    let skip2 = gw2.log().len();
    write(
        2,
        &sync_config(&gw, 100, "172.16.1.1").replace("stateful = true", "stateful = false"),
    );
    gw2.signal(libc::SIGHUP);
    expect(
        &gw2,
        skip2,
        "SIGHUP: [pfsync]/[flows] applied (tracking on, stateful false, sync on eth2)",
        5,
    );
    assert_eq!(modes(&gw, 2), vec![FLOW_MODE_TRACK; 2]);
    assert!(sync_report(&sock2).enabled);
    let skip1 = gw1.log().len();
    write(1, &Gateway::config(0, ""));
    gw1.signal(libc::SIGHUP);
    expect(
        &gw1,
        skip1,
        "SIGHUP: [pfsync]/[flows] applied (tracking off, stateful false, sync off)",
        5,
    );
    assert_eq!(modes(&gw, 1), off);
    assert!(!sync_report(&sock1).enabled);
}

/// `[pfsync] defer = true` (spec §8, deferral): gw1 holds each new flow's first packet until gw2
/// acknowledged the flow, then re-injects it; with the sync path cut the 20 ms bound releases it.
#[test]
fn defer_holds_the_first_packet_until_the_peer_has_the_flow() {
    if !require_root("defer_holds_the_first_packet_until_the_peer_has_the_flow") {
        return;
    }
    let gw = Gateway::new("cdf");
    write_secret(&gw.pair.dir.join("sync.key"), KEY);
    let defer = |c: String| c.replace("[pfsync]\n", "[pfsync]\ndefer = true\n");
    let (cfg1, cfg2) = (
        defer(sync_config(&gw, 0, "172.16.1.2")),
        defer(sync_config(&gw, 100, "172.16.1.1")),
    );
    let (sock1, sock2) = (gw.control_socket(1), gw.control_socket(2));
    let gw1 = gw.carpd(1, &cfg1);
    let gw2 = gw.carpd(2, &cfg2);
    expect(&gw1, 0, "pfsync: group carp demote +32", 8);
    expect(&gw2, 0, "pfsync: group carp demote +32", 8);
    bulks_done(&[(&gw1, &sock1), (&gw2, &sock2)]);
    wait_master_of_both(&gw1, &[&gw1, &gw2]);
    assert!(!gw1.log().contains("not implemented"), "{}", gw1.log());
    let before = sync_report(&sock1);
    let c = |r: &SyncReport, n: &str| r.counter(n).unwrap_or(0);

    // A TCP connection and a UDP flow through gw1: their first packets (SYN, first datagram) are
    // deferred, released by gw2's acknowledgement, and delivered.
    let streams = Streams::start(&gw);
    streams.assert_alive("through gw1 with defer", 10);
    let r1 = sync_report(&sock1);
    let deferred: u64 = r1
        .dataplane
        .iter()
        .flat_map(|d| &d.counters)
        .filter(|(n, _)| n == "deferred")
        .map(|(_, v)| v)
        .sum();
    assert!(
        deferred >= 2,
        "the dataplane deferred both first packets: {r1:?}"
    );
    assert!(
        c(&r1, "defer_released_ack") >= c(&before, "defer_released_ack") + 2,
        "gw2 acknowledged both flows before their first packets went on: {r1:?}"
    );
    assert_eq!(c(&r1, "defer_reinject_failed"), 0, "{r1:?}");
    assert_eq!(c(&r1, "defer_holding"), 0, "{r1:?}");
    // The acknowledgement means gw2 has the flows.
    for proto in ["tcp", "udp"] {
        assert!(
            flows(&sock2)
                .flows
                .iter()
                .any(|f| f.proto == proto && f.learned),
            "gw2 holds the {proto} flow: {:?}",
            flows(&sock2)
        );
    }

    drop(streams);
    // The sync path is cut (gw2 drops what gw1 sends): no acknowledgement comes, and the first packet
    // of a new flow is released by the 20 ms bound, still delivered.
    gw.pair.gw2.run(
        "nft add table inet cdfcut && nft add chain inet cdfcut in '{ type filter hook input priority 0; }' \
         && nft add rule inet cdfcut in iifname eth2 drop",
    );
    let before = sync_report(&sock1);
    let rx = gw.pair.client.in_ns(|| {
        let s = UdpSocket::bind((OUTSIDE_CLIENT, 5003)).expect("udp bind");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    });
    let tx = gw.inside.in_ns(|| {
        let s = UdpSocket::bind(("192.168.100.100", 40003)).expect("udp bind");
        s.connect((OUTSIDE_CLIENT, 5003)).unwrap();
        s
    });
    let sent = Instant::now();
    tx.send(b"first of a new flow").expect("send");
    let mut buf = [0u8; 64];
    let n = match rx.recv(&mut buf) {
        Ok(n) => n,
        Err(e) => panic!(
            "the deferred first datagram did not arrive ({e}): {}\n{:?}\n{}",
            gw.pair.client.run("nstat -az UdpInCsumErrors UdpInErrors"),
            sync_report(&sock1),
            gw1.log()
        ),
    };
    let waited = sent.elapsed();
    assert_eq!(&buf[..n], b"first of a new flow");
    let r1 = sync_report(&sock1);
    assert!(
        c(&r1, "defer_released_timeout") > c(&before, "defer_released_timeout"),
        "released by the timeout: {r1:?}"
    );
    assert_eq!(
        c(&r1, "defer_released_ack"),
        c(&before, "defer_released_ack")
    );
    eprintln!("first datagram with the sync path cut arrived after {waited:?}");
    assert!(
        waited >= Duration::from_millis(15),
        "held about 20 ms: {waited:?}"
    );
    // Re-injected copies of same-host (checksum-offloaded) frames had their checksum completed: the
    // outside client dropped none of the first packets as corrupt.
    let csum = gw
        .pair
        .client
        .run("nstat -az UdpInCsumErrors TcpInCsumErrors");
    assert!(
        csum.lines()
            .filter(|l| l.contains("CsumErrors"))
            .all(|l| l.split_whitespace().nth(1) == Some("0")),
        "{csum}"
    );
}

/// Waits until `gw1` is MASTER of carp0 and carp1 (the logs of `logs` in the failure message).
fn wait_master_of_both(gw1: &Daemon, logs: &[&Daemon]) {
    assert!(
        eventually(15, || {
            gw1.carpd_state_of("carp0").as_deref() == Some("MASTER")
                && gw1.carpd_state_of("carp1").as_deref() == Some("MASTER")
        }),
        "gw1 MASTER of both:\n{}",
        logs.iter().map(|d| d.log()).collect::<Vec<_>>().join("\n")
    );
}

/// How many flows `carpctl flows` on `sock` shows as learned from a peer.
fn learned_count(sock: &Path) -> usize {
    flows(sock).flows.iter().filter(|f| f.learned).count()
}

/// Waits until every daemon reports its bulk transfer done (each answered the other's request).
fn bulks_done(daemons: &[(&Daemon, &std::path::PathBuf)]) {
    for (d, s) in daemons {
        assert!(
            eventually(30, || sync_report(s).bulk == "done"),
            "{}: bulk transfer not done: {:?}\n{}",
            d.name,
            sync_report(s),
            d.log()
        );
    }
}
