//! The sync transport over a real veth between two namespaces: runs of equal-sized packets leave in
//! one UDP GSO send and arrive coalesced by GRO, yet the receiver gets back exactly the datagrams that
//! were sent, boundaries and order kept; a path that refuses GSO falls back to one send per packet and
//! loses nothing. Needs root.
use std::net::{Ipv4Addr, SocketAddrV4};

use carp::daemon::sync::transport::{MAX_DATAGRAM, SyncSocket};
use carp_tests::{netns::Netns, require_root};

const PORT: u16 = 18260;

/// Two namespaces joined by a veth (`sync0` in each) with the given MTU; a socket on each end, the
/// first sending to the second.
fn pair(tag: &str, mtu: u32) -> (Netns, Netns, SyncSocket, SyncSocket) {
    let a = Netns::new(&format!("carpt-st{tag}a"));
    let b = Netns::new(&format!("carpt-st{tag}b"));
    a.run(&format!(
        "ip link add sync0 mtu {mtu} type veth peer name sync0 netns {} && \
         ip addr add 10.77.0.1/24 dev sync0 && ip link set sync0 up",
        b.name
    ));
    b.run("ip addr add 10.77.0.2/24 dev sync0 && ip link set sync0 up");
    let open = |ns: &Netns, peer: [u8; 4]| {
        ns.in_ns(move || {
            SyncSocket::open_on(
                "sync0",
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT),
                SocketAddrV4::new(Ipv4Addr::from(peer), PORT),
            )
            .expect("sync socket")
        })
    };
    let tx = open(&a, [10, 77, 0, 2]);
    let rx = open(&b, [10, 77, 0, 1]);
    (a, b, tx, rx)
}

/// Packet `i` of `len` bytes, its number in the first four so order and boundaries show.
fn packet(i: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
    p[..4].copy_from_slice(&i.to_be_bytes());
    p
}

/// Reads datagrams until `n` have come or two seconds pass.
fn receive(rx: &mut SyncSocket, n: usize) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while got.len() < n && std::time::Instant::now() < deadline {
        match rx.recv(&mut buf, &mut { usize::MAX }).expect("recv") {
            Some(read) => {
                assert_eq!(read.src, Ipv4Addr::new(10, 77, 0, 1));
                got.extend(read.datagrams(&buf).map(<[u8]>::to_vec));
            }
            None => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
    got
}

#[test]
fn gso_sends_arrive_as_the_datagrams_sent() {
    if !require_root("gso_sends_arrive_as_the_datagrams_sent") {
        return;
    }
    let (_a, _b, mut tx, mut rx) = pair("g", 1500);
    // A bulk's shape: long runs of full packets, a shorter one closing a run, then sizes that change
    // from packet to packet (each its own send), and a run longer than one GSO send takes.
    let mut sent: Vec<Vec<u8>> = (0..150).map(|i| packet(i, 1400)).collect();
    sent.push(packet(150, 600));
    sent.extend(
        [800, 1200, 1300, 90]
            .iter()
            .zip(151..)
            .map(|(&l, i)| packet(i, l)),
    );
    sent.extend((155..185).map(|i| packet(i, 1000)));
    let (failed, err) = tx.send_all(&sent);
    assert_eq!(failed, 0, "send errors: {err:?}");
    assert!(tx.gso_off().is_none(), "GSO refused: {:?}", tx.gso_off());
    let c = tx.counters();
    // 150 + the shorter one closing them, 1300 + 90, then 30: all but the 800 and the 1200 (each
    // followed by a larger packet) went in GSO sends.
    assert_eq!(c.gso_datagrams, 183, "{c:?}");
    let got = receive(&mut rx, sent.len());
    assert_eq!(got.len(), sent.len(), "datagrams lost");
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g, s, "datagram {i} differs");
    }
    let c = rx.counters();
    assert_eq!(c.received, sent.len() as u64, "{c:?}");
    // The veth hands the GSO packet over whole; the socket asked for it whole (UDP_GRO).
    assert!(c.gro_reads > 0, "no coalesced read: {c:?}");
    assert_eq!(c.badttl, 0);
}

#[test]
fn a_path_that_refuses_gso_gets_one_send_per_packet() {
    if !require_root("a_path_that_refuses_gso_gets_one_send_per_packet") {
        return;
    }
    // Packets larger than the link's MTU (a path MTU below the syncdev's): the kernel will not cut a
    // GSO send into IP fragments, but one datagram at a time it fragments them. (An IPsec route
    // refuses GSO too, with EIO; this kernel has no ESP to test it with.)
    let (_a, _b, mut tx, mut rx) = pair("f", 1280);
    let sent: Vec<Vec<u8>> = (0..20).map(|i| packet(i, 1400)).collect();
    let (failed, err) = tx.send_all(&sent);
    assert_eq!(failed, 0, "send errors: {err:?}");
    let off = tx.gso_off().expect("GSO should have been refused");
    assert!(
        matches!(off.raw_os_error(), Some(libc::EINVAL | libc::EMSGSIZE)),
        "{off}"
    );
    assert_eq!(tx.counters().gso_datagrams, 0);
    assert_eq!(tx.counters().oerrors, 0);
    let got = receive(&mut rx, sent.len());
    assert_eq!(got, sent);
    // And it stays off: the next run is not tried as GSO again.
    let (failed, _) = tx.send_all(&sent[..5]);
    assert_eq!(failed, 0);
    assert_eq!(receive(&mut rx, 5), sent[..5]);
}

/// Sends `n` junk datagrams of 100 bytes to the receiver's port from `src` (an address of `ns`) with
/// TTL `ttl`.
fn junk(ns: &Netns, src: [u8; 4], ttl: u32, n: usize) {
    ns.in_ns(move || {
        let s = std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::from(src), PORT + 1))
            .expect("bind");
        s.set_ttl(ttl).expect("ttl");
        let to = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), PORT);
        for _ in 0..n {
            s.send_to(&[0x55; 100], to).expect("send junk");
        }
    });
}

/// A flood of datagrams with the wrong TTL cannot hold the reader: one receive reads at most its
/// budget of datagrams, junk included (the daemon's loop would otherwise stay in it while a sender
/// outpaces recvmsg), counts what it skipped, and the good packet behind the junk still comes.
#[test]
fn a_junk_flood_costs_a_bounded_read() {
    if !require_root("a_junk_flood_costs_a_bounded_read") {
        return;
    }
    let (a, _b, mut tx, mut rx) = pair("j", 1500);
    junk(&a, [10, 77, 0, 1], 64, 2000);
    tx.send(&packet(1, 200)).expect("send");
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut budget = 256;
    let first = rx.recv(&mut buf, &mut budget).expect("recv");
    let c = rx.counters();
    assert!(first.is_none(), "a good packet before 2000 junk ones");
    assert_eq!(budget, 0, "the budget was not spent");
    assert!(
        c.received <= 256,
        "one receive read {} datagrams",
        c.received
    );
    assert_eq!(c.badttl, c.received, "{c:?}");
    let got = receive(&mut rx, 1);
    assert_eq!(got, vec![packet(1, 200)]);
    assert_eq!(rx.counters().badttl, 2000);
}

/// The socket takes only what it must: from a unicast syncpeer, datagrams from any other address
/// never reach it (the kernel filters them), right TTL or not.
#[test]
fn a_unicast_sync_socket_takes_datagrams_from_its_peer_only() {
    if !require_root("a_unicast_sync_socket_takes_datagrams_from_its_peer_only") {
        return;
    }
    let (a, _b, mut tx, mut rx) = pair("u", 1500);
    a.run("ip addr add 10.77.0.3/24 dev sync0");
    junk(&a, [10, 77, 0, 3], 255, 500);
    tx.send(&packet(7, 200)).expect("send");
    std::thread::sleep(std::time::Duration::from_millis(50));
    let got = receive(&mut rx, 1);
    assert_eq!(got, vec![packet(7, 200)]);
    let c = rx.counters();
    assert_eq!((c.received, c.badttl), (1, 0), "{c:?}");
    // Counted where the kernel dropped them.
    assert_eq!(c.kernel_drops, 500, "{c:?}");
}
