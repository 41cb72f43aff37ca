//! The balancing bench's xdp_frame sender (carp_tests::xdp_sender) on a real veth pair: every frame it
//! sends reaches a native carp-xdp receiver and is accounted for by the balance counters, and its frames
//! are valid IPv4 from the bench's 508 clients when the stack receives them. Needs root.
use carp::dataplane::{AttachMode, Dataplane, if_index, maps::Maps};
use carp_common::maps::{BalanceMode, CarpStats};
use carp_tests::{
    bpffs_dir,
    netns::{Netns, PacketSocket},
    require_root,
    xdp_sender::{CLIENTS, XdpSender, template},
};
use std::{cell::RefCell, collections::HashSet, time::Duration};

const RX_MAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 2];
const TX_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// A veth pair xs0 (sender) / xs1 (receiver) between two fresh namespaces, IPv6 off so that only the
/// sender's frames arrive.
fn pair(tag: &str) -> (Netns, Netns) {
    let tx = Netns::new(&format!("carpt-xs{tag}-tx"));
    let rx = Netns::new(&format!("carpt-xs{tag}-rx"));
    carp_tests::sh(&format!(
        "ip link add xs0 netns {} type veth peer name xs1 netns {}",
        tx.name, rx.name
    ));
    for ns in [&tx, &rx] {
        ns.run("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    }
    tx.run("ip link set xs0 address 02:00:00:00:00:01 up");
    rx.run(
        "ip link set xs1 address 00:00:5e:00:01:02 up && ip addr add 10.9.0.2/16 dev xs1 && \
         sysctl -qw net.ipv4.ip_forward=0",
    );
    (tx, rx)
}

/// Sends `frames` frames out of xs0 from a thread in `tx`.
fn send(tx: &Netns, frames: u32) {
    tx.in_ns(move || {
        let sender = XdpSender::load(template(RX_MAC, TX_MAC)).expect("load the sender");
        sender
            .send(if_index("xs0").expect("xs0"), frames)
            .expect("BPF_PROG_TEST_RUN live frames");
    });
}

#[test]
fn live_frames_reach_native_carp_xdp_and_every_frame_is_balanced() {
    if !require_root("live_frames_reach_native_carp_xdp_and_every_frame_is_balanced") {
        return;
    }
    let bpffs = bpffs_dir("live-sender");
    let (tx, rx) = pair("n");
    let pins = bpffs.clone();
    rx.in_ns(move || {
        Dataplane::attach("xs1", &pins, AttachMode::Native).expect("attach native XDP to xs1");
    });
    let mut maps = Maps::open_pinned(&bpffs, "xs1").expect("pinned maps");
    let group = carp::balance::group(
        BalanceMode::IpUnicast,
        &[(2, true), (3, false)],
        [2, 0, 0, 0, 0, 2],
    )
    .expect("balance group");
    maps.set_balance(group).expect("carp_balance");

    const SENT: u32 = 100_000;
    send(&tx, SENT);
    let s: CarpStats = maps.stats(2).expect("stats");
    let (pass, drop) = (s.balanced_pass, s.balanced_drop);
    assert_eq!(
        pass + drop,
        u64::from(SENT),
        "every frame sent is decided once: {pass} passed + {drop} dropped"
    );
    // Half the clients have an odd last octet: the split is about even.
    let lo = u64::from(SENT) * 2 / 5;
    assert!(
        pass > lo && drop > lo,
        "split {pass}/{drop} is not about even"
    );
    let pins = bpffs.clone();
    rx.in_ns(move || Dataplane::detach("xs1", &pins).expect("detach"));
    let _ = std::fs::remove_dir_all(&bpffs);
}

/// IP counters of namespace `ns`: (InReceives, InHdrErrors + InCsumErrors).
fn ip_counters(ns: &Netns) -> (u64, u64) {
    let text = ns.run("cat /proc/net/snmp /proc/net/netstat");
    let lines: Vec<&str> = text.lines().collect();
    let mut m = std::collections::HashMap::new();
    for pair in lines.chunks_exact(2) {
        let (mut names, values) = (pair[0].split_whitespace(), pair[1].split_whitespace());
        let group = names.next().unwrap_or_default();
        for (n, v) in names.zip(values.skip(1)) {
            if let Ok(v) = v.parse::<u64>() {
                m.insert(format!("{group}{n}"), v);
            }
        }
    }
    (
        m["Ip:InReceives"],
        m["Ip:InHdrErrors"] + m["IpExt:InCsumErrors"],
    )
}

#[test]
fn live_frames_reach_the_stack_with_gro_as_valid_ipv4_from_the_bench_clients() {
    if !require_root("live_frames_reach_the_stack_with_gro_as_valid_ipv4_from_the_bench_clients") {
        return;
    }
    let (tx, rx) = pair("s");
    // No XDP program on xs1: veth takes xdp_frames only on a queue with NAPI, which GRO turns on.
    rx.run("ethtool -K xs1 gro on");
    let (recv0, bad0) = ip_counters(&rx);
    const SENT: u32 = 2_000;
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let seen = rx.spawn_in(move || {
        let sock = PacketSocket::open("xs1", 200);
        ready_tx.send(()).expect("ready");
        let sources = RefCell::new(HashSet::new());
        let count = RefCell::new(0u32);
        sock.recv_until(Duration::from_secs(1), |f| {
            if f.len() >= 34 && f[12..14] == [8, 0] && f[30..34] == [10, 9, 1, 1] {
                sources.borrow_mut().insert([f[26], f[27], f[28], f[29]]);
                *count.borrow_mut() += 1;
            }
            *count.borrow() == SENT
        });
        (count.into_inner(), sources.into_inner())
    });
    ready.recv().expect("receiver ready");
    // In bursts the packet socket can keep up with (its receive buffer holds a few hundred frames).
    tx.in_ns(move || {
        let sender = XdpSender::load(template(RX_MAC, TX_MAC)).expect("load the sender");
        let xs0 = if_index("xs0").expect("xs0");
        for _ in 0..SENT / 100 {
            sender
                .send(xs0, 100)
                .expect("BPF_PROG_TEST_RUN live frames");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let (count, sources) = seen.join().expect("receiver");
    // The stack got every frame, none with a header or checksum error.
    let (recv1, bad1) = ip_counters(&rx);
    assert_eq!(recv1 - recv0, u64::from(SENT), "IP InReceives");
    assert_eq!(bad1, bad0, "header or checksum errors");
    // The packet socket, a sample (its receive buffer overflows in a burst): every source is a client,
    // and they vary (500 draws from 508 clients give ~317 distinct ones).
    assert!(count >= SENT / 4, "only {count} frames sampled");
    for s in &sources {
        assert!(
            s[0] == 10 && s[1] == 8 && s[2] <= 3 && (1..=127).contains(&s[3]),
            "source {s:?} is not one of the bench's clients"
        );
    }
    assert!(
        sources.len() as u32 >= count.min(CLIENTS) / 2,
        "only {} distinct sources in {count} frames",
        sources.len()
    );
}
