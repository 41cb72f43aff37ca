//! Conntrack replication in the gateway lab (issue #15): both gateways run a strict nftables firewall
//! (forward policy drop, `ct state invalid drop`, established/related accepted, new connections only
//! from the inside or to the port forward), SNAT of the inside network to the outside VIP, a DNAT port
//! forward VIP:8080 -> inside:80, and `nf_conntrack_tcp_loose = 0`, with carpd's `[pfsync] conntrack =
//! true` alone (no `[flows]`). A two-way TCP stream, a UDP flow and an ICMP echo flow from the inside,
//! and a two-way TCP stream through the port forward from the outside, survive the MASTER's SIGKILL with
//! its links cut; before that, the BACKUP's own `conntrack -L` holds the NATed entries. The returning
//! gateway takes MASTER back only after its conntrack bulk, and the streams live on. The control run
//! cuts the sync link first: then the TCP streams must break (the firewall is strict; the test can fail).
//! Forged and replayed conntrack messages are rejected and counted. A flow that began on gw2 and was
//! handed back to gw1 lives on in gw1's table when gw2's idle copy expires. Real carpd processes;
//! root only.
use carp::{
    control::{Request, Response, call, report::SyncReport},
    sync::{
        Message, PacketBuilder, SyncConfig, SyncEngine, SyncKey,
        conntrack::{CtKey, CtMessage, CtTuple, entry::proto},
    },
};
use carp_tests::{
    lab::{Daemon, Gateway},
    netns::{Netns, PacketSocket},
    require_root, write_secret,
};
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

const KEY: &[u8] = b"conntrack lab sync key, 32 bytes or more\n";

/// The strict firewall and the NAT of both gateways.
const RULESET: &str = "
table inet fw {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state invalid drop
    ct state established,related accept
    ct state new ip saddr 192.168.100.0/24 accept
    ct state new ct status dnat accept
  }
}
table ip nat {
  chain pre {
    type nat hook prerouting priority -100;
    ip daddr 10.0.0.1 tcp dport 8080 dnat to 192.168.100.100:80
  }
  chain post {
    type nat hook postrouting priority 100;
    ip saddr 192.168.100.0/24 ip daddr != 192.168.100.0/24 snat to 10.0.0.1
  }
}
";

fn firewall(ns: &Netns, dir: &Path) {
    let path = dir.join(format!("{}.nft", ns.name));
    std::fs::write(&path, RULESET).unwrap();
    ns.run(&format!(
        "nft -f {} && sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0",
        path.display()
    ));
    assert_eq!(
        ns.run("sysctl -n net.netfilter.nf_conntrack_tcp_loose")
            .trim(),
        "0"
    );
}

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

fn try_sync_report(sock: &Path) -> Option<SyncReport> {
    match call(sock, &Request::Sync, Duration::from_secs(3)) {
        Ok(Response::Sync(r)) => Some(r),
        _ => None,
    }
}

fn ct_counter(r: &SyncReport, name: &str) -> u64 {
    r.conntrack
        .as_ref()
        .and_then(|c| c.counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
        .unwrap_or(0)
}

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

fn config(gw: &Gateway, advskew: u8, peer: &str) -> String {
    Gateway::config(
        advskew,
        &format!(
            "[pfsync]\nsyncdev = \"eth2\"\nsyncpeer = \"{peer}\"\nkey_file = \"{}\"\nconntrack = true\n",
            gw.pair.dir.join("sync.key").display()
        ),
    )
}

/// The flows through the gateways and what each counted.
struct Traffic {
    stop: Arc<AtomicBool>,
    /// Bytes received: inside client, outside client (SNAT stream), outside client, inside server
    /// (DNAT stream), UDP echoes, ICMP echo replies.
    counts: Vec<(&'static str, Arc<AtomicU64>)>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
    ping: Child,
}

fn two_way(
    stream: TcpStream,
    name_rx: &'static str,
    stop: &Arc<AtomicBool>,
    errors: &Arc<Mutex<Vec<String>>>,
    threads: &mut Vec<JoinHandle<()>>,
) -> (&'static str, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut rx = stream.try_clone().unwrap();
    let mut tx = stream;
    {
        let (stop, count, errors) = (stop.clone(), count.clone(), errors.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                match rx.read(&mut buf) {
                    Ok(0) => {
                        errors.lock().unwrap().push(format!("{name_rx}: closed"));
                        return;
                    }
                    Ok(n) => {
                        count.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => {
                        errors.lock().unwrap().push(format!("{name_rx}: {e}"));
                        return;
                    }
                }
            }
        }));
    }
    {
        let (stop, errors) = (stop.clone(), errors.clone());
        threads.push(std::thread::spawn(move || {
            let chunk = [0x5au8; 1000];
            while !stop.load(Ordering::Relaxed) {
                // A stalled stream fills the send buffer: the timeout keeps the stop flag seen.
                match tx.write(&chunk) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("send to {name_rx}: {e}"));
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }));
    }
    (name_rx, count)
}

/// A UDP flow from the inside host's port `sport` to the outside host's `dport`, echoed there, one
/// datagram every `every`; returns the echoes that came back. Its threads end once `stop` is set.
fn udp_echo_flow(
    gw: &Gateway,
    sport: u16,
    dport: u16,
    every: Duration,
    stop: &Arc<AtomicBool>,
    threads: &mut Vec<JoinHandle<()>>,
) -> Arc<AtomicU64> {
    let echo = gw.pair.client.in_ns(move || {
        let s = UdpSocket::bind(("10.0.0.100", dport)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    });
    let udp = gw.inside.in_ns(move || {
        let s = UdpSocket::bind(("192.168.100.100", sport)).unwrap();
        s.connect(("10.0.0.100", dport)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    });
    let count = Arc::new(AtomicU64::new(0));
    let st = stop.clone();
    threads.push(std::thread::spawn(move || {
        let mut b = [0u8; 64];
        while !st.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut b) {
                let _ = echo.send_to(&b[..n], from);
            }
        }
    }));
    let (st, c, rx) = (stop.clone(), count.clone(), udp.try_clone().unwrap());
    threads.push(std::thread::spawn(move || {
        let mut b = [0u8; 64];
        while !st.load(Ordering::Relaxed) {
            if rx.recv(&mut b).is_ok() {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }));
    let st = stop.clone();
    threads.push(std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            let _ = udp.send(b"udp");
            std::thread::sleep(every);
        }
    }));
    count
}

impl Traffic {
    fn start(gw: &Gateway) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let mut counts = Vec::new();
        // SNAT: inside client -> outside client, both ends sending.
        let l = gw
            .pair
            .client
            .in_ns(|| TcpListener::bind("10.0.0.100:5001").unwrap());
        let c = gw.inside.in_ns(|| {
            TcpStream::connect_timeout(&"10.0.0.100:5001".parse().unwrap(), Duration::from_secs(5))
                .expect("TCP through the gateway (SNAT)")
        });
        let (s, _) = l.accept().unwrap();
        counts.push(two_way(c, "snat inside", &stop, &errors, &mut threads));
        counts.push(two_way(s, "snat outside", &stop, &errors, &mut threads));
        // DNAT: outside client -> VIP:8080 -> inside server :80, both ends sending.
        let l = gw
            .inside
            .in_ns(|| TcpListener::bind("192.168.100.100:80").unwrap());
        let c = gw.pair.client.in_ns(|| {
            TcpStream::connect_timeout(&"10.0.0.1:8080".parse().unwrap(), Duration::from_secs(5))
                .expect("TCP through the port forward (DNAT)")
        });
        let (s, _) = l.accept().unwrap();
        counts.push(two_way(c, "dnat outside", &stop, &errors, &mut threads));
        counts.push(two_way(s, "dnat inside", &stop, &errors, &mut threads));
        // UDP: inside -> outside, echoed.
        let udp_count = udp_echo_flow(
            gw,
            40000,
            5002,
            Duration::from_millis(20),
            &stop,
            &mut threads,
        );
        counts.push(("udp echoes", udp_count));
        // ICMP: one ping process (one echo id, one conntrack entry), every 100 ms.
        let mut ping = Command::new("nsenter")
            .args([
                &format!("--net=/run/netns/{}", gw.inside.name),
                "ping",
                "-n",
                "-i",
                "0.1",
                "10.0.0.100",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping");
        let icmp_count = Arc::new(AtomicU64::new(0));
        {
            let out = ping.stdout.take().unwrap();
            let count = icmp_count.clone();
            threads.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    if line.contains("bytes from") {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        counts.push(("icmp replies", icmp_count));
        Traffic {
            stop,
            counts,
            errors,
            threads,
            ping,
        }
    }

    fn snapshot(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .collect()
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Every flow makes progress within `secs` and no stream failed.
    fn assert_alive(&self, what: &str, secs: u64) {
        let before = self.snapshot();
        let alive = eventually(secs, || {
            self.snapshot()
                .iter()
                .zip(&before)
                .all(|(now, then)| now > then)
                && self.snapshot()[0] > before[0] + 10_000
        });
        let after = self.snapshot();
        let errors = self.errors();
        assert!(errors.is_empty(), "{what}: stream errors: {errors:?}");
        let table: Vec<String> = self
            .counts
            .iter()
            .zip(before.iter().zip(&after))
            .map(|((n, _), (b, a))| format!("{n} {b}->{a}"))
            .collect();
        assert!(alive, "{what}: a flow stalled: {table:?}");
        eprintln!("{what}: {table:?}");
    }

    /// True when both TCP streams made no progress for `secs` (or failed).
    fn tcp_broken(&self, secs: u64) -> bool {
        let before = self.snapshot();
        std::thread::sleep(Duration::from_secs(secs));
        let after = self.snapshot();
        let stalled = (0..4).all(|i| after[i] == before[i]);
        stalled || !self.errors().is_empty()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.ping.kill();
        let _ = self.ping.wait();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Builds the lab: firewall on both gateways, the key, gw1 (advskew 0) and gw2 (100) running carpd
/// with conntrack replication, gw1 MASTER of both carp interfaces and both bulks done.
fn lab(prefix: &str) -> (Gateway, Daemon, Daemon, String) {
    let gw = Gateway::new(prefix);
    firewall(&gw.pair.gw1, &gw.pair.dir);
    firewall(&gw.pair.gw2, &gw.pair.dir);
    write_secret(&gw.pair.dir.join("sync.key"), KEY);
    let cfg1 = config(&gw, 0, "172.16.1.2");
    let gw1 = gw.carpd(1, &cfg1);
    let gw2 = gw.carpd(2, &config(&gw, 100, "172.16.1.1"));
    for (d, s) in [(&gw1, gw.control_socket(1)), (&gw2, gw.control_socket(2))] {
        assert!(
            eventually(40, || {
                try_sync_report(&s).is_some_and(|r| {
                    r.bulk == "done" && r.conntrack.as_ref().is_some_and(|c| c.bulk == "done")
                })
            }),
            "{}: bulks not done: {:?}\n{}",
            d.name,
            try_sync_report(&s),
            d.log()
        );
    }
    assert!(
        eventually(20, || {
            gw1.carpd_state_of("carp0").as_deref() == Some("MASTER")
                && gw1.carpd_state_of("carp1").as_deref() == Some("MASTER")
                && gw2.carpd_state_of("carp0").as_deref() == Some("BACKUP")
                && gw2.carpd_state_of("carp1").as_deref() == Some("BACKUP")
        }),
        "gw1 MASTER of both:\n{}\n{}",
        gw1.log(),
        gw2.log()
    );
    (gw, gw1, gw2, cfg1)
}

/// SIGKILL gw1 and cut its links (outside, inside, sync): its kernel can answer nothing any more.
fn kill_and_cut(gw: &Gateway, gw1: &mut Daemon, prefix: &str) {
    gw1.kill9();
    gw.pair.sw.run(&format!(
        "ip link set {prefix}-p0 down && ip link set {prefix}-q0 down"
    ));
    gw.pair.gw1.run("ip link set eth2 down");
}

#[test]
fn nat_connections_survive_the_masters_death_and_its_return() {
    if !require_root("nat_connections_survive_the_masters_death_and_its_return") {
        return;
    }
    let prefix = "cka";
    let (gw, mut gw1, gw2, cfg1) = lab(prefix);
    let (sock1, sock2) = (gw.control_socket(1), gw.control_socket(2));
    // The first conntrack packet gw1 sends about the new connections, captured on gw2's side of the
    // sync link, to be replayed below.
    let capture = gw.pair.gw2.spawn_in(|| {
        let sock = PacketSocket::open("eth2", 200);
        sock.recv_until(Duration::from_secs(15), |f| {
            f.len() > 42 + 28
                && f[12..14] == [8, 0]
                && f[23] == 17
                && f[26..30] == [172, 16, 1, 1]
                && f[36..38] == 8240u16.to_be_bytes()
                // The first message of the sync packet is a conntrack kind.
                && (16..=20).contains(&f[42 + 24])
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let traffic = Traffic::start(&gw);
    traffic.assert_alive("through gw1", 10);
    let mut captured = capture
        .join()
        .unwrap()
        .expect("a conntrack sync packet from gw1");
    // veth leaves a partial checksum (offload); 0 = no UDP checksum. The sync bytes are untouched.
    captured[40..42].copy_from_slice(&[0, 0]);
    let before2 = sync_report(&sock2);
    gw.pair
        .gw1
        .in_ns(move || PacketSocket::open("eth2", 100).send(&captured));
    assert!(
        eventually(3, || sync_report(&sock2).counter("replay").unwrap_or(0)
            > before2.counter("replay").unwrap_or(0)),
        "replayed conntrack packet not counted: {:?}",
        sync_report(&sock2)
    );

    // Before the failover the BACKUP's own kernel table holds the NATed entries, read with the
    // conntrack tool: the SNAT stream's reply goes to the outside VIP, the port forward's comes from
    // the inside server.
    let listed = || gw.pair.gw2.run("conntrack -L 2>/dev/null");
    assert!(
        eventually(5, || {
            let l = listed();
            l.contains("dport=5001")
                && l.contains("src=10.0.0.100 dst=10.0.0.1 sport=5001")
                && l.contains("dport=8080 src=192.168.100.100 dst=10.0.0.100 sport=80")
                && l.contains("dport=5002")
                && l.contains("icmp")
        }),
        "gw2's conntrack -L lacks the NATed entries:\n{}\ngw1's:\n{}\n{}",
        listed(),
        gw.pair.gw1.run("conntrack -L 2>/dev/null"),
        gw2.log()
    );
    let l = listed();
    let snat = l
        .lines()
        .find(|x| x.contains("dport=5001"))
        .unwrap()
        .to_string();
    assert!(snat.contains("ESTABLISHED"), "{snat}");
    eprintln!("gw2 before the failover: {snat}");
    let r2 = sync_report(&sock2);
    assert!(ct_counter(&r2, "applied") >= 4, "{r2:?}");
    let r1 = sync_report(&sock1);
    assert!(
        ct_counter(&r1, "sent") >= 4 && ct_counter(&r1, "events") >= 4,
        "{r1:?}"
    );
    // gw2's own inserts cause events with its portid: the kernel's socket filter drops them, so
    // none reaches carpd (it would count them here) and none goes back to gw1.
    assert_eq!(ct_counter(&r2, "echoes"), 0, "{r2:?}");

    let skip2 = gw2.log().len();
    kill_and_cut(&gw, &mut gw1, prefix);
    expect(&gw2, skip2, "carp0 vhid 1: BACKUP -> MASTER", 15);
    expect(&gw2, skip2, "carp1 vhid 2: BACKUP -> MASTER", 15);
    traffic.assert_alive("through gw2 after gw1 died", 20);

    // gw1 returns (links back, carpd restarted): demoted until its conntrack bulk is in, then it
    // preempts, and the streams live on.
    gw.pair.sw.run(&format!(
        "ip link set {prefix}-p0 up && ip link set {prefix}-q0 up"
    ));
    gw.pair.gw1.run("ip link set eth2 up");
    let skip1 = gw1.log().len();
    let gw1 = gw.carpd(1, &cfg1);
    expect(&gw1, skip1, "pfsync: group carp demote +32", 10);
    expect(&gw1, skip1, "carp0 vhid 1: BACKUP -> MASTER", 60);
    expect(&gw1, skip1, "carp1 vhid 2: BACKUP -> MASTER", 15);
    let log = gw1.log()[skip1..].to_string();
    let applied = log
        .find("conntrack: bulk transfer applied")
        .unwrap_or_else(|| panic!("gw1: no conntrack bulk applied:\n{log}"));
    let lifted = log
        .find("pfsync: group carp demote -32")
        .unwrap_or_else(|| panic!("gw1: the demotion was never lifted:\n{log}"));
    let master = log.find("BACKUP -> MASTER").unwrap();
    assert!(
        applied < lifted && lifted < master,
        "gw1 took MASTER before its conntrack bulk was applied:\n{log}"
    );
    traffic.assert_alive("through gw1 again", 20);
    let r1 = sync_report(&sock1);
    assert!(
        r1.conntrack.as_ref().is_some_and(|c| c.bulk == "done"),
        "{r1:?}"
    );

    // Forged (another key) and replayed conntrack messages reach gw1: rejected and counted, and the
    // forged delete of the SNAT stream's entry did nothing (the stream lives on).
    let before = sync_report(&sock1);
    let key = CtKey {
        zone: 0,
        orig: CtTuple {
            src: "192.168.100.100".parse().unwrap(),
            dst: "10.0.0.100".parse().unwrap(),
            proto: proto::TCP,
            sport: 0,
            dport: 5001,
        },
    };
    let forger = SyncEngine::new(
        SyncConfig::new(424242),
        SyncKey::from_bytes(b"not the cluster key").unwrap(),
    )
    .unwrap();
    let mut b = PacketBuilder::new();
    b.push(&Message::Ct(CtMessage::Del(key)), 0);
    let forged = forger.sealer().seal(b);
    gw.pair.gw2.in_ns(move || {
        let s = UdpSocket::bind(("172.16.1.2", 0)).expect("bind");
        s.set_ttl(255).unwrap();
        s.send_to(&forged, ("172.16.1.1", 8240)).unwrap();
    });
    assert!(
        eventually(3, || sync_report(&sock1).counter("badauth").unwrap_or(0)
            > before.counter("badauth").unwrap_or(0)),
        "forged conntrack packet not counted: {:?}",
        sync_report(&sock1)
    );
    traffic.assert_alive("after the forged and replayed packets", 10);
    drop(traffic);
    drop(gw2);
    drop(gw1);
}

#[test]
fn control_without_the_sync_link_the_tcp_streams_break() {
    if !require_root("control_without_the_sync_link_the_tcp_streams_break") {
        return;
    }
    let prefix = "ckb";
    let (gw, mut gw1, gw2, _) = lab(prefix);
    // The sync link is cut before any connection exists: gw2 learns none of them.
    gw.pair.gw1.run("ip link set eth2 down");
    std::thread::sleep(Duration::from_millis(500));
    let traffic = Traffic::start(&gw);
    traffic.assert_alive("through gw1", 10);
    let listed = gw.pair.gw2.run("conntrack -L 2>/dev/null");
    assert!(
        !listed.contains("dport=5001"),
        "gw2 knows the stream without a sync link:\n{listed}"
    );
    let skip2 = gw2.log().len();
    kill_and_cut(&gw, &mut gw1, prefix);
    expect(&gw2, skip2, "carp0 vhid 1: BACKUP -> MASTER", 15);
    expect(&gw2, skip2, "carp1 vhid 2: BACKUP -> MASTER", 15);
    // Give the new MASTER the same time the replicated run needed, then: no byte moves on either TCP
    // stream (their segments are INVALID without an entry, tcp_loose = 0), while new traffic from the
    // inside (the pings: a NEW entry each) still passes, so the failover itself worked.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        traffic.tcp_broken(8),
        "the TCP streams survived without conntrack replication: the firewall is not strict ({:?})",
        traffic.snapshot()
    );
    let pings = traffic.snapshot()[5];
    assert!(
        eventually(10, || traffic.snapshot()[5] > pings),
        "the new MASTER forwards nothing at all"
    );
    drop(traffic);
    drop(gw2);
}

/// Whether both of `d`'s vhids are in `state`.
fn both(d: &Daemon, state: &str) -> bool {
    d.carpd_state_of("carp0").as_deref() == Some(state)
        && d.carpd_state_of("carp1").as_deref() == Some(state)
}

/// A UDP flow that began while gw2 was MASTER is gw2's own entry. When gw1 takes MASTER back, gw2
/// hands it over: gw2's copy (no traffic there any more, a 5 s UDP timeout in gw2's kernel) must not
/// delete gw1's live entry, which carried on carrying the flow: the entry in gw1 grows old (its
/// kernel timestamp); the control deletes it in gw1 by hand and sees it come back young.
#[test]
fn a_flow_handed_back_lives_on_when_the_backups_copy_expires() {
    if !require_root("a_flow_handed_back_lives_on_when_the_backups_copy_expires") {
        return;
    }
    let (gw, gw1, gw2, _) = lab("cth");
    gw.pair.gw2.run(
        "sysctl -qw net.netfilter.nf_conntrack_udp_timeout=5 net.netfilter.nf_conntrack_udp_timeout_stream=5",
    );
    gw.pair
        .gw1
        .run("sysctl -qw net.netfilter.nf_conntrack_timestamp=1");
    // gw1 demoted: gw2 (preempt) takes both vhids.
    gw.pair
        .carpctl("gw1", &["ifconfig", "-g", "carp", "carpdemote", "50"]);
    assert!(
        eventually(20, || both(&gw2, "MASTER") && both(&gw1, "BACKUP")),
        "gw2 did not take over:\n{}\n{}",
        gw1.log(),
        gw2.log()
    );
    // The flow starts through gw2: inside 192.168.100.100:41000 -> outside 10.0.0.100:5003, echoed.
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let echoes = udp_echo_flow(
        &gw,
        41000,
        5003,
        Duration::from_millis(50),
        &stop,
        &mut threads,
    );
    // Once the kernel marked the flow ASSURED (2 s of a stream) and gw1 learned that, no further
    // event comes: gw2's entry stays gw2's own until the handover.
    let flow = "conntrack -L -p udp --orig-port-dst 5003 2>/dev/null";
    assert!(
        eventually(15, || {
            let l = gw.pair.gw1.run(flow);
            l.contains("sport=41000") && l.contains("ASSURED")
        }),
        "gw1 never learned the flow gw2 carries:\n{}",
        gw2.log()
    );
    // gw1 back: it preempts, gw2 hands the entry over.
    gw.pair
        .carpctl("gw1", &["ifconfig", "-g", "carp", "-carpdemote", "50"]);
    assert!(
        eventually(20, || both(&gw1, "MASTER") && both(&gw2, "BACKUP")),
        "gw1 did not take MASTER back:\n{}\n{}",
        gw1.log(),
        gw2.log()
    );
    // The age of gw1's entry (`nf_conntrack_timestamp`): a delete (a DEL from gw2) and the
    // re-creation by the next packet would make it young again.
    let age = || -> Option<u64> {
        let l = gw
            .pair
            .gw1
            .run("conntrack -L -p udp --orig-port-dst 5003 -o ktimestamp 2>/dev/null");
        l.lines()
            .find(|x| x.contains("sport=41000"))
            .and_then(|x| x.split("delta-time=").nth(1))
            .and_then(|x| x.split_whitespace().next())
            .and_then(|x| x.parse().ok())
    };
    let age0 = age().expect("gw1 holds the flow's entry");
    // Three of gw2's UDP timeouts, the flow going through gw1 all the while; sampled every second.
    let mut last = age0;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_secs(1));
        let a = age();
        let r2 = sync_report(&gw.control_socket(2));
        assert!(
            a.is_some_and(|a| a >= last),
            "gw1's live entry was deleted while the flow ran (gw2's expired copy sent a DEL?): \
             {last} s old, then {a:?}; gw2: {r2:?}"
        );
        last = a.unwrap_or(0);
    }
    assert!(last >= age0 + 14, "{age0} s -> {last} s in 15 s");
    let before = echoes.load(Ordering::Relaxed);
    assert!(
        eventually(3, || echoes.load(Ordering::Relaxed) > before + 10),
        "the flow stopped"
    );
    // Control: the same entry deleted in gw1 (as a DEL from gw2 would) comes back young.
    let key = CtKey {
        zone: 0,
        orig: CtTuple {
            src: "192.168.100.100".parse().unwrap(),
            dst: "10.0.0.100".parse().unwrap(),
            proto: proto::UDP,
            sport: 41000,
            dport: 5003,
        },
    };
    let errs = gw.pair.gw1.in_ns(move || {
        carp::ctnetlink::CtSocket::open()
            .unwrap()
            .apply(&[carp::sync::conntrack::CtOp::Delete(key)])
            .unwrap()
    });
    assert_eq!(errs, vec![0], "control: deleting the entry");
    assert!(
        eventually(5, || age().is_some_and(|a| a < 5)),
        "control: a deleted entry came back as old as before: {:?}",
        age()
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(gw2);
    drop(gw1);
}
