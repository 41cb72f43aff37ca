//! carpd's standby advert senders (`carp::daemon::standby`) on a real veth: when the loop stops sending
//! a MASTER's adverts they repeat the last one, byte for byte, every 1.5 intervals and only while the
//! MASTER lease runs; while the loop keeps time, and once a node is cleared, they send nothing. And in
//! a real carpd, no slot outlives its node's MASTER state across a reload that removed another carp
//! interface. Needs root.
use std::{
    os::fd::{FromRawFd, OwnedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use carp::{daemon::standby::Standby, engine::NodeId};
use carp_tests::{
    lab::Pair,
    netns::{Netns, PacketSocket},
    require_root,
};

/// A local-experimental EtherType, so nothing else on the link matches.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

fn frame(marker: u8) -> Vec<u8> {
    let mut f = vec![0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]; // the CARP group MAC
    f.extend([0x00, 0x00, 0x5e, 0x00, 0x01, 0x07]); // a virtual MAC
    f.extend(ETHERTYPE);
    f.extend([marker; 46]);
    f
}

struct Link {
    _ns: Netns,
    packet: Arc<OwnedFd>,
    ifindex: u32,
    rx: PacketSocket,
}

fn link(tag: &str) -> Link {
    let ns = Netns::new(&format!("carpt-standby{tag}"));
    ns.run("ip link add sb0 type veth peer name sb1 && ip link set sb0 up && ip link set sb1 up");
    let (packet, ifindex, rx) = ns.in_ns(|| {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "AF_PACKET socket");
        // SAFETY: fd is fresh and ours.
        let packet = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c"sb0".as_ptr()) };
        (packet, ifindex, PacketSocket::open("sb1", 20))
    });
    Link {
        _ns: ns,
        packet,
        ifindex,
        rx,
    }
}

/// The test frames that arrive on the far end within `window`.
fn arrivals(rx: &PacketSocket, window: Duration) -> Vec<Vec<u8>> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(f) = rx.recv_until(left, |f| f.len() > 14 && f[12..14] == ETHERTYPE) {
            got.push(f);
        }
    }
    got
}

#[test]
fn a_stalled_loop_gets_its_last_advert_repeated_until_the_lease_ends() {
    if !require_root("a_stalled_loop_gets_its_last_advert_repeated_until_the_lease_ends") {
        return;
    }
    let l = link("s");
    let standby = Standby::start().expect("standby threads");
    let f = frame(7);
    // The loop "sent" this advert now and then stalls: interval 4 ms, lease 22 ms (advbase 0's).
    let now = Instant::now();
    standby.sent(
        NodeId::from_raw(0),
        &l.packet,
        l.ifindex,
        vec![f.clone()],
        Duration::from_millis(4),
        now,
        now + Duration::from_millis(22),
    );
    let got = arrivals(&l.rx, Duration::from_millis(150));
    // Due 6 ms after each send: at ~6, 12 and 18 ms, then the lease has run out. A loaded machine may
    // wake the standbys late, which only makes fewer.
    assert!(
        (1..=3).contains(&got.len()),
        "{} repeats within the lease",
        got.len()
    );
    assert!(
        got.iter().all(|g| *g == f),
        "a repeat differs from the advert"
    );
    assert_eq!(standby.resent(), got.len() as u64);
    // Nothing after the lease.
    assert!(arrivals(&l.rx, Duration::from_millis(50)).is_empty());
}

#[test]
fn a_loop_on_time_and_a_cleared_node_get_no_repeats() {
    if !require_root("a_loop_on_time_and_a_cleared_node_get_no_repeats") {
        return;
    }
    let l = link("t");
    let standby = Standby::start().expect("standby threads");
    // The loop sends every 2 ms against a 40 ms interval: a standby would be due 60 ms after the last.
    let start = Instant::now();
    let mut n = 0u8;
    while start.elapsed() < Duration::from_millis(200) {
        let now = Instant::now();
        standby.sent(
            NodeId::from_raw(3),
            &l.packet,
            l.ifindex,
            vec![frame(n)],
            Duration::from_millis(40),
            now,
            now + Duration::from_millis(130),
        );
        n = n.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(2));
    }
    // Then the node leaves MASTER (or bows out): cleared before the repeat would be due.
    standby.clear(NodeId::from_raw(3));
    assert!(
        arrivals(&l.rx, Duration::from_millis(150)).is_empty(),
        "a standby repeated an advert"
    );
    assert_eq!(standby.resent(), 0);
}

/// Whether `f` is an IPv4 CARP advert (IP protocol 112) for `vhid`.
fn is_carp_advert(f: &[u8], vhid: u8) -> bool {
    if f.len() < 14 + 20 + 36 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 112 {
        return false;
    }
    let carp = 14 + usize::from(f[14] & 0x0f) * 4;
    f.len() > carp + 1 && f[carp + 1] == vhid
}

/// A real carpd: carp0 (vhid 1) and carp1 (vhid 2) are MASTER at advbase 3, then, right after one of
/// carp1's adverts, SIGHUP removes carp0 and carp1 is forced to BACKUP. A BACKUP sends no advert until
/// its master-down timer runs out (9 s), so no vhid 2 advert may be on the wire in the 6 s after the
/// BACKUP line, neither from the loop nor from a standby sender. A standby slot keyed by carp1's old
/// position (before carp0 went away) would still repeat carp1's last MASTER advert 4.5 s after it was
/// sent, well inside that advert's 9 s lease.
#[test]
fn no_advert_repeated_for_a_node_no_longer_master_after_a_reload_removed_another() {
    if !require_root(
        "no_advert_repeated_for_a_node_no_longer_master_after_a_reload_removed_another",
    ) {
        return;
    }
    // With the kernel advert queue off the standby senders carry carp1's adverts (the slot this is
    // about); with it on (the default) the queue does, and must have been withdrawn.
    for (queue_ms, prefix) in [(0u32, "cpsbr"), (100, "cpsbq")] {
        reload_then_backup(queue_ms, prefix);
    }
}

fn reload_then_backup(queue_ms: u32, prefix: &str) {
    let pair = Pair::new(prefix);
    let timing = format!("[timing]\nadvert_queue_ms = {queue_ms}\n\n");
    let iface = |name: &str, vhid: u8, vip: &str| {
        format!(
            "[[interface]]\nname = \"{name}\"\ncarpdev = \"eth0\"\nvhid = {vhid}\npass = \"labpass\"\n\
             advbase = 3\nadvskew = 0\naddresses = [\"{vip}/24\"]\n"
        )
    };
    let both = format!(
        "{timing}[carp]\npreempt = false\n\n{}\n{}",
        iface("carp0", 1, "10.0.0.1"),
        iface("carp1", 2, "10.0.0.2")
    );
    let gw1 = pair.carpd(&pair.gw1, "gw1", &both);
    for line in [
        "carp0 vhid 1: BACKUP -> MASTER",
        "carp1 vhid 2: BACKUP -> MASTER",
    ] {
        assert!(gw1.wait_log(line, Duration::from_secs(20)), "{}", gw1.log());
    }
    // carpctl is built on first use: not inside the timed part below.
    pair.carpctl("gw1", &["status"]);
    let only_carp1 = format!(
        "{timing}[carp]\npreempt = false\n\n{}",
        iface("carp1", 2, "10.0.0.2")
    );
    std::fs::write(pair.dir.join("gw1.toml"), only_carp1).unwrap();
    // Just after one of carp1's adverts (so a standby slot holds it), the reload and the BACKUP.
    let rx = pair.client.in_ns(|| PacketSocket::open("eth0", 20));
    assert!(
        rx.recv_until(Duration::from_secs(7), |f| is_carp_advert(f, 2))
            .is_some(),
        "no advert from carp1: {}",
        gw1.log()
    );
    drop(rx);
    let skip = gw1.log().len();
    gw1.signal(libc::SIGHUP);
    assert!(
        gw1.wait_log_after(skip, "SIGHUP: config reloaded", Duration::from_secs(3)),
        "{}",
        gw1.log()
    );
    pair.carpctl("gw1", &["set", "carp1", "state", "backup"]);
    assert!(
        gw1.wait_log_after(
            skip,
            "carp1 vhid 2: MASTER -> BACKUP",
            Duration::from_secs(3)
        ),
        "{}",
        gw1.log()
    );
    // Opened after the BACKUP line: it sees only frames sent after the transition.
    let rx = pair.client.in_ns(|| PacketSocket::open("eth0", 20));
    let end = Instant::now() + Duration::from_secs(6);
    let mut adverts = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if rx.recv_until(left, |f| is_carp_advert(f, 2)).is_some() {
            adverts += 1;
        }
    }
    let log = gw1.log();
    assert!(
        !log[skip..].contains("carp1 vhid 2: BACKUP -> MASTER"),
        "carp1 became MASTER again within the window: {log}"
    );
    assert_eq!(
        adverts, 0,
        "vhid 2 adverts on the wire while carp1 was BACKUP:\n{log}"
    );
}
