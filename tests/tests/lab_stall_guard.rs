//! The stalled-controller guard (carpd re-reads the kernel's `carp_last_advert` before declaring a
//! master down) must never trust a frame that failed authentication (issue #16 item 2): in the "pair"
//! lab, gw1 MASTER and gw2 BACKUP, gw1's carpd is SIGKILLed while the client sends wrong-password
//! adverts carrying gw1's own source address, and gw2 must take over within master-down plus a
//! margin, as it does without the forgeries. And `net.inet.carp.allow = 0` on a BACKUP drops every
//! advert, so it takes over (OpenBSD's carp_input ignores every advert then; sending is unaffected).
//! Needs root.
use carp_tests::{
    frames::{advert_v4, carp_header},
    lab::{Daemon, Pair},
    netns::PacketSocket,
    require_root,
};
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(8);
const GW1: [u8; 4] = [10, 0, 0, 11];
/// gw2's master-down (3 x advbase 1 + 100/256 s) plus a second for a loaded machine.
const TAKEOVER: Duration = Duration::from_millis(3_390 + 1_000);

/// gw1 (advskew 0) MASTER, gw2 (advskew 100) BACKUP, and the client's packet socket with its MAC.
fn elect(pair: &Pair) -> (Daemon, Daemon, PacketSocket, [u8; 6]) {
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
    // A few of the master's adverts, so gw2 has authenticated it (what the guard re-confirms).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(gw2.carpd_state().as_deref(), Some("BACKUP"));
    let sock = pair.client.in_ns(|| PacketSocket::open("eth0", 200));
    let text = pair.client.run("cat /sys/class/net/eth0/address");
    let mut mac = [0u8; 6];
    for (b, h) in mac.iter_mut().zip(text.trim().split(':')) {
        *b = u8::from_str_radix(h, 16).expect("MAC");
    }
    (gw1, gw2, sock, mac)
}

/// How long after `since` gw2 logged its takeover, sending `frames` every 250 ms (4/s) meanwhile;
/// None if it did not within 8 s.
fn takeover_while_sending(
    gw2: &Daemon,
    sock: &PacketSocket,
    frame: Option<&[u8]>,
) -> Option<Duration> {
    let since = Instant::now();
    let mark = gw2.log().len();
    while since.elapsed() < SETTLE {
        if let Some(f) = frame {
            sock.send(f);
        }
        if gw2.log()[mark..].contains("carp0 vhid 1: BACKUP -> MASTER") {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

#[test]
fn forged_adverts_from_the_dead_masters_address_do_not_delay_the_takeover() {
    if !require_root("forged_adverts_from_the_dead_masters_address_do_not_delay_the_takeover") {
        return;
    }
    let pair = Pair::new("hsg");
    let (mut gw1, gw2, sock, mac) = elect(&pair);
    // Well formed (TTL, length, checksum, version, vhid), the master's source address and values
    // (advbase 1, advskew 0, demote 0), a digest made without the key.
    let mut forged = advert_v4(GW1, 1, 255, &carp_header(0x21, 1, 0, 1, 0), None);
    forged[6..12].copy_from_slice(&mac);
    gw1.kill9();
    let took = takeover_while_sending(&gw2, &sock, Some(&forged));
    let c: serde_json::Value =
        serde_json::from_str(&pair.carpctl("gw2", &["counters", "--json"])).expect("counters JSON");
    assert!(
        c["vhids"][0]["badauth"].as_u64().unwrap_or(0) > 0,
        "the forgeries reached gw2's HMAC check: {c}"
    );
    let took = took.unwrap_or_else(|| {
        panic!(
            "gw2 still BACKUP {SETTLE:?} after the master died, fed forged adverts:\n{}",
            gw2.log()
        )
    });
    assert!(
        took <= TAKEOVER,
        "gw2 took over after {took:?} (> {TAKEOVER:?})"
    );
}

#[test]
fn allow_0_on_a_backup_ignores_the_master_and_takes_over() {
    if !require_root("allow_0_on_a_backup_ignores_the_master_and_takes_over") {
        return;
    }
    let pair = Pair::new("hsa");
    let (gw1, gw2, sock, _) = elect(&pair);
    pair.carpctl("gw2", &["sysctl", "net.inet.carp.allow=0"]);
    let took = takeover_while_sending(&gw2, &sock, None);
    assert!(
        took.is_some_and(|t| t <= TAKEOVER),
        "gw2 with allow=0 took over after {took:?} (master alive: {:?}):\n{}",
        gw1.carpd_state(),
        gw2.log()
    );
}
