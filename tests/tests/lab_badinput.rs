//! The bad-input matrix (issue #8 item 2) against real carpd processes in the "pair" lab: gw1 MASTER,
//! gw2 BACKUP, and the client injecting, one case after another, each malformed advert kind (TTL 254,
//! short length, bad checksum, version 3, an unknown vhid, garbage on protocol 112), a wrong password,
//! adverts forged from each gateway's own address, replays of the master's real advert (one captured
//! while running, one captured before an advskew change), and a stranger sending 50,000 valid-looking
//! adverts per second for 10 s. Every case must move its counter (the pinned `carp_stats` map for the
//! kernel's, `carpctl counters --json` for badauth), leave gw1 MASTER and gw2 BACKUP with no transition
//! logged, and the flood must leave both controllers' CPU time bounded. Needs root.
use carp_common::maps::CarpStats;
use carp_tests::{
    frames::{advert_v4, carp_header, eth, ipv4},
    lab::{Daemon, Pair, cpu_time},
    netns::PacketSocket,
    require_root,
};
use serde_json::Value;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(8);
const GW1: [u8; 4] = [10, 0, 0, 11];
const GW2: [u8; 4] = [10, 0, 0, 12];
const CLIENT: [u8; 4] = [10, 0, 0, 100];
/// Adverts per second and seconds of the flood (issue #8).
const FLOOD_RATE: u64 = 50_000;
const FLOOD_SECS: u64 = 10;

/// The kernel counters of one gateway for one vhid slot.
fn stats(pair: &Pair, gw: &str, vhid: u8) -> CarpStats {
    carp::dataplane::maps::Maps::open_pinned(&pair.bpffs.join(gw), "eth0")
        .expect("pinned maps")
        .stats(vhid)
        .expect("carp_stats")
}

/// The controller's badauth count for carp0 (`carpctl counters --json`).
fn badauth(pair: &Pair, gw: &str) -> u64 {
    let c: Value =
        serde_json::from_str(&pair.carpctl(gw, &["counters", "--json"])).expect("counters JSON");
    c["vhids"][0]["badauth"].as_u64().expect("badauth")
}

/// Transition lines a daemon logged for carp0 so far.
fn transitions(d: &Daemon) -> usize {
    d.log()
        .lines()
        .filter(|l| l.contains("carp0 vhid 1: ") && l.contains(" -> "))
        .count()
}

/// Rewrites a forged frame's Ethernet source to the client's own MAC (a stranger does not need the
/// virtual MAC, and sending from it would move it to the client's switch port).
fn from_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[6..12].copy_from_slice(&mac);
    frame
}

/// A well-formed advert (good TTL, length, checksum, version, vhid) whose HMAC is wrong: the digest
/// bytes of `carp_header` are arbitrary. advskew 0 beats both gateways if it were believed.
fn forged(src: [u8; 4], mac: [u8; 6]) -> Vec<u8> {
    from_mac(
        advert_v4(src, 1, 255, &carp_header(0x21, 1, 0, 1, 0), None),
        mac,
    )
}

/// The lab and its two daemons; the checks shared by every case.
struct Matrix {
    // Dropped in this order: the daemons (printing their logs on failure) before the lab.
    gw1: Daemon,
    gw2: Daemon,
    sock: PacketSocket,
    client_mac: [u8; 6],
    transitions: (usize, usize),
    pair: Pair,
}

impl Matrix {
    /// Sends `frames` from the client, lets both daemons read them, and checks nobody moved.
    fn inject(&self, case: &str, frames: &[Vec<u8>]) {
        for f in frames {
            self.sock.send(f);
        }
        std::thread::sleep(Duration::from_millis(300));
        self.assert_states(case);
    }

    fn assert_states(&self, case: &str) {
        assert_eq!(
            (transitions(&self.gw1), transitions(&self.gw2)),
            self.transitions,
            "{case}: a gateway changed state\n--- gw1 ---\n{}\n--- gw2 ---\n{}",
            self.gw1.log(),
            self.gw2.log()
        );
        assert_eq!(self.gw1.carpd_state().as_deref(), Some("MASTER"), "{case}");
        assert_eq!(self.gw2.carpd_state().as_deref(), Some("BACKUP"), "{case}");
    }

    /// Runs one kernel-dropped case: `field` of vhid slot `slot` moves by `frames.len()` on both
    /// gateways and nothing is handed to either controller.
    fn kernel_case(&self, case: &str, slot: u8, field: fn(&CarpStats) -> u64, frames: &[Vec<u8>]) {
        let before: Vec<(CarpStats, u64)> = ["gw1", "gw2"]
            .iter()
            .map(|g| {
                (
                    stats(&self.pair, g, slot),
                    stats(&self.pair, g, 1).adverts_to_controller,
                )
            })
            .collect();
        self.inject(case, frames);
        for (g, (b, handed)) in ["gw1", "gw2"].iter().zip(before) {
            let a = stats(&self.pair, g, slot);
            assert_eq!(
                field(&a) - field(&b),
                frames.len() as u64,
                "{case}: {g}'s counter (slot {slot}): {a:?}"
            );
            let now_handed = stats(&self.pair, g, 1).adverts_to_controller;
            // The master's own adverts still reach gw2 meanwhile; gw1 hears none of its own.
            assert!(
                now_handed - handed <= 2,
                "{case}: {g} handed bad adverts over"
            );
        }
    }
}

/// Starts gw1 (advskew 0) as MASTER and gw2 (advskew 100) as BACKUP, and opens the client's socket.
fn elect(pair: Pair) -> Matrix {
    let gw1 = pair.carpd(&pair.gw1, "gw1", &Pair::config(0));
    assert!(
        gw1.wait_log("carp0 vhid 1: BACKUP -> MASTER", SETTLE),
        "gw1 never became MASTER:\n{}",
        gw1.log()
    );
    let gw2 = pair.carpd(&pair.gw2, "gw2", &Pair::config(100));
    assert!(
        gw2.wait_log("carp0 vhid 1: INIT -> BACKUP", SETTLE),
        "gw2 never came up:\n{}",
        gw2.log()
    );
    let sock = pair.client.in_ns(|| PacketSocket::open("eth0", 200));
    let mac = pair.client.run("cat /sys/class/net/eth0/address");
    let mut client_mac = [0u8; 6];
    for (b, h) in client_mac.iter_mut().zip(mac.trim().split(':')) {
        *b = u8::from_str_radix(h, 16).expect("MAC");
    }
    let transitions = (transitions(&gw1), transitions(&gw2));
    Matrix {
        gw1,
        gw2,
        sock,
        client_mac,
        transitions,
        pair,
    }
}

/// An advert gw1 sent with `advskew`, as the client sees it on the wire (not one the client forged).
fn capture_master_advert(m: &Matrix, advskew: u8) -> Vec<u8> {
    let client_mac = m.client_mac;
    m.sock
        .recv_until(Duration::from_secs(5), move |f| {
            f.len() >= 14 + 20 + 36
                && f[6..12] != client_mac
                && f[12..14] == [0x08, 0x00]
                && f[14 + 9] == 112
                && f[14 + 12..14 + 16] == GW1
                && f[14 + 20 + 2] == advskew
        })
        .expect("an advert from gw1 within 5 s")
}

#[test]
fn bad_input_matrix_keeps_master_and_backup_and_counts_every_case() {
    if !require_root("bad_input_matrix_keeps_master_and_backup_and_counts_every_case") {
        return;
    }
    let m = elect(Pair::new("cbad"));
    let mac = m.client_mac;
    let good = carp_header(0x21, 1, 0, 1, 0);

    // Malformed adverts, each dropped and counted by the XDP program.
    m.kernel_case(
        "TTL 254",
        1,
        |s| s.badttl,
        &vec![from_mac(advert_v4(CLIENT, 1, 254, &good, None), mac); 3],
    );
    m.kernel_case(
        "payload shorter than a CARP header",
        1,
        |s| s.badlen,
        &vec![from_mac(advert_v4(CLIENT, 1, 255, &good[..30], None), mac); 3],
    );
    let mut bad_sum = good.clone();
    bad_sum[35] ^= 0x5a;
    m.kernel_case(
        "bad checksum",
        1,
        |s| s.badsum,
        &vec![from_mac(advert_v4(CLIENT, 1, 255, &bad_sum, None), mac); 3],
    );
    m.kernel_case(
        "version 3",
        1,
        |s| s.badver,
        &vec![forged_with(CLIENT, &carp_header(0x31, 1, 0, 1, 0), mac); 3],
    );
    m.kernel_case(
        "unknown vhid 77",
        77,
        |s| s.badvhid,
        &vec![forged_with(CLIENT, &carp_header(0x21, 77, 0, 1, 0), mac); 3],
    );
    garbage_case(&m);

    // Wrong password: well-formed, handed over, refused by the controllers' HMAC check.
    let before = (badauth(&m.pair, "gw1"), badauth(&m.pair, "gw2"));
    m.inject("wrong password", &vec![forged(CLIENT, mac); 5]);
    let after = (badauth(&m.pair, "gw1"), badauth(&m.pair, "gw2"));
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (5, 5),
        "wrong password counted as badauth on both"
    );
    assert!(m.gw2.wait_log("fails HMAC", SETTLE), "{}", m.gw2.log());

    // Forged from each gateway's own address (without the key): badauth too, no loop taken for real.
    let before = (badauth(&m.pair, "gw1"), badauth(&m.pair, "gw2"));
    m.inject(
        "forged from the gateways' own addresses",
        &[forged(GW1, mac), forged(GW2, mac), forged(GW1, mac)],
    );
    let after = (badauth(&m.pair, "gw1"), badauth(&m.pair, "gw2"));
    assert_eq!((after.0 - before.0, after.1 - before.1), (3, 3));

    // Replays of gw1's real advert. CARP has no replay protection (spec §3): a replayed master advert
    // verifies, so the kernel hands it over on both (gw1 drops it as its own address and cookie, gw2
    // takes it as the master it already follows) and nobody changes state.
    let replay = capture_master_advert(&m, 0);
    std::thread::sleep(Duration::from_millis(1500));
    let handed = |g: &str| stats(&m.pair, g, 1).adverts_to_controller;
    let before = (handed("gw1"), handed("gw2"));
    m.inject("replayed master advert", &[replay.clone(), replay.clone()]);
    assert!(
        handed("gw1") - before.0 >= 2,
        "gw1's own replayed advert reached its controller"
    );
    assert!(handed("gw2") - before.1 >= 2);

    // One captured before an advskew change (gw1 0 -> 50, still ahead of gw2's 100): the old advert
    // still verifies (the HMAC does not cover advskew) and claims the old skew; nobody moves.
    std::fs::write(m.pair.dir.join("gw1.toml"), Pair::config(50)).expect("config");
    let mark = m.gw1.log().len();
    m.gw1.signal(libc::SIGHUP);
    assert!(
        m.gw1.wait_log_after(mark, "config reloaded", SETTLE),
        "{}",
        m.gw1.log()
    );
    let fresh = capture_master_advert(&m, 50);
    assert_eq!(fresh[14 + 20 + 2], 50, "gw1 now advertises advskew 50");
    assert_eq!(replay[14 + 20 + 2], 0);
    let before = (handed("gw1"), handed("gw2"));
    m.inject(
        "advert replayed from before an advskew change",
        &vec![replay.clone(); 3],
    );
    assert!(handed("gw1") - before.0 >= 3 && handed("gw2") - before.1 >= 3);

    flood_case(&m);

    // The master's adverts kept gw2 BACKUP all along, and still do.
    std::thread::sleep(Duration::from_secs(2));
    m.assert_states("after the whole matrix");
}

/// An advert frame from `src` with the given CARP bytes, sent from `mac`.
fn forged_with(src: [u8; 4], carp: &[u8], mac: [u8; 6]) -> Vec<u8> {
    from_mac(advert_v4(src, 1, 255, carp, None), mac)
}

/// Garbage on protocol 112: payloads of every length from 0 to 63 bytes of pseudo-random bytes. Each
/// moves exactly one of the kernel's error counters (in whatever vhid slot its second byte names),
/// and none is handed over.
fn garbage_case(m: &Matrix) {
    let mut x: u32 = 0x2545_f491;
    let frames: Vec<Vec<u8>> = (0..64usize)
        .map(|len| {
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let mut f = eth([1, 0, 0x5e, 0, 0, 0x12], m.client_mac, 0x0800, None);
            f.extend(ipv4(CLIENT, [224, 0, 0, 18], 112, 255, payload.len()));
            f.extend(payload);
            f
        })
        .collect();
    let errors = |g: &str| -> (u64, u64) {
        let maps = carp::dataplane::maps::Maps::open_pinned(&m.pair.bpffs.join(g), "eth0")
            .expect("pinned maps");
        (0..=255u8)
            .map(|v| maps.stats(v).expect("carp_stats"))
            .map(|s| {
                (
                    s.badttl + s.badlen + s.hdrops + s.badsum + s.badver + s.badvhid,
                    s.adverts_to_controller,
                )
            })
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let before = [errors("gw1"), errors("gw2")];
    m.inject("garbage on protocol 112", &frames);
    for (g, b) in ["gw1", "gw2"].iter().zip(before) {
        let a = errors(g);
        assert_eq!(a.0 - b.0, 64, "{g}: one error counter per garbage frame");
        assert!(a.1 - b.1 <= 2, "{g}: garbage handed over");
    }
}

/// A stranger floods valid-looking adverts (wrong HMAC) at 50,000/s for 10 s from one address.
///
/// What must hold: the kernel rate-limits the stranger's events (events_ratelimited moves by nearly
/// everything sent, adverts handed over stay within one source's budget of 512/s plus its burst), the
/// audit log names the cause, gw1 stays MASTER and gw2 BACKUP (the per-source limit leaves the vhid's
/// budget to the master), and each controller's CPU time over the flood stays below 15% of one core.
/// Why 15%: with the limit a controller verifies at most ~520 adverts/s; handling all 50,000/s costs
/// twice the bound. Measured here with the test's (debug) carpd: 0.33-0.63 s of CPU per controller
/// over the 10 s flood (3-6%, the higher figures with teammates' builds running) with the limits, 3.3 s
/// (33%) with them lifted (and then 425,000 events handed over), so 15% fails without the limit yet
/// leaves room for a loaded machine.
fn flood_case(m: &Matrix) {
    let frame = forged(CLIENT, m.client_mac);
    let before = [stats(&m.pair, "gw1", 1), stats(&m.pair, "gw2", 1)];
    let cpu_before = [cpu_time(m.gw1.pid()), cpu_time(m.gw2.pid())];
    let auth_before = badauth(&m.pair, "gw2");
    let start = Instant::now();
    let mut sent: u64 = 0;
    // Paced in 1 ms slices of 50 frames, on absolute deadlines so a late slice catches up.
    while start.elapsed() < Duration::from_secs(FLOOD_SECS) {
        let due = (start.elapsed().as_micros() as u64 + 1000) * FLOOD_RATE / 1_000_000;
        while sent < due.min(FLOOD_RATE * FLOOD_SECS) {
            m.sock.send(&frame);
            sent += 1;
        }
        let next = start + Duration::from_micros(sent * 1_000_000 / FLOOD_RATE);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let secs = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let cpu = [
        cpu_time(m.gw1.pid()) - cpu_before[0],
        cpu_time(m.gw2.pid()) - cpu_before[1],
    ];
    eprintln!(
        "flood: {sent} adverts in {secs:.2} s ({:.0}/s); controller CPU gw1 {:?} gw2 {:?}",
        sent as f64 / secs,
        cpu[0],
        cpu[1]
    );
    assert!(
        sent as f64 / secs >= 0.8 * FLOOD_RATE as f64,
        "the flood reached only {:.0} adverts/s",
        sent as f64 / secs
    );
    // One source's budget: 512/s and a burst of 64 (AdvertLimit::DEFAULT), plus the master's adverts.
    let budget = (512.0 * (secs + 1.0)) as u64 + 64 + 20;
    for (g, b) in ["gw1", "gw2"].iter().zip(before) {
        let a = stats(&m.pair, g, 1);
        let handed = a.adverts_to_controller - b.adverts_to_controller;
        let limited = a.events_ratelimited - b.events_ratelimited;
        assert!(
            handed <= budget,
            "{g}: {handed} events handed over (> {budget})"
        );
        assert!(
            limited + budget >= sent,
            "{g}: only {limited} of {sent} rate-limited"
        );
        assert!(
            a.ipackets - b.ipackets >= sent * 9 / 10,
            "{g} saw the flood"
        );
    }
    assert!(
        badauth(&m.pair, "gw2") > auth_before,
        "what got through was refused by the HMAC check"
    );
    for (g, c) in ["gw1", "gw2"].iter().zip(cpu) {
        assert!(
            c.as_secs_f64() < 0.15 * secs,
            "{g}'s controller used {c:?} of CPU over a {secs:.1} s flood"
        );
    }
    for d in [&m.gw1, &m.gw2] {
        assert!(
            d.wait_log("(events_ratelimited)", SETTLE),
            "{}: the audit names the cause\n{}",
            d.name,
            d.log()
        );
    }
    m.assert_states("flood");
}
