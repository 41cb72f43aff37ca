//! carpd's standby advert senders (`carp::daemon::standby`) on a real veth: when the loop stops sending
//! a MASTER's adverts they repeat the last one, byte for byte, every 1.5 intervals and only while the
//! MASTER lease runs; while the loop keeps time, and once a node is cleared, they send nothing. Needs
//! root.
use std::{
    os::fd::{FromRawFd, OwnedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use carp::daemon::standby::Standby;
use carp_tests::{
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
        0,
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
            3,
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
    standby.clear(3);
    assert!(
        arrivals(&l.rx, Duration::from_millis(150)).is_empty(),
        "a standby repeated an advert"
    );
    assert_eq!(standby.resent(), 0);
}
