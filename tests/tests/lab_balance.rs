//! Active-active balancing (spec §6) with real carpd processes: two and three gateways on one bridge,
//! one carp interface with carpnodes each, and a client with many addresses sending known numbers of
//! UDP datagrams to the VIP. The XDP counters of every gateway (read from the pinned maps, so a killed
//! carpd's dataplane is read too) must show every datagram accepted by exactly the gateway that is
//! MASTER of its bucket (`carp::balance::bucket_v4`) and dropped by all the others; the split must be
//! close to even; a SIGKILLed gateway's nodes (and only those) move to the backups and traffic goes on;
//! its return moves them back under preempt. Needs root (fails under CI=true when not).
use carp::{
    balance::bucket_v4,
    control::{Request, Response, Setting, call},
};
use carp_tests::{
    lab::{Cluster, Daemon},
    monotonic_ns, require_root,
};
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The leader vhid: the balance counters and the group live in its slot.
const LEADER: u8 = 1;

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// A gateway's config: carp0 on eth0 with `carpnodes`, `balancing`, preempt on, advbase 1.
fn config(carpnodes: &str, balancing: &str) -> String {
    format!(
        "[carp]\npreempt = true\n\n[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\n\
         carpnodes = \"{carpnodes}\"\nbalancing = \"{balancing}\"\npass = \"labpass\"\nadvbase = 1\n\
         addresses = [\"{VIP}/24\"]\n"
    )
}

/// The node states carpd reports for carp0 (None while it does not answer).
fn node_states(cluster: &Cluster, g: usize) -> Option<Vec<String>> {
    match call(&cluster.socket(g), &Request::Status, Duration::from_secs(2)) {
        Ok(Response::Status(s)) => Some(
            s.interfaces
                .first()?
                .nodes
                .iter()
                .map(|n| n.state.clone())
                .collect(),
        ),
        _ => None,
    }
}

/// Waits until every listed gateway reports exactly `want` (node states in vhid order).
fn wait_nodes(cluster: &Cluster, want: &[(usize, &[&str])], timeout: Duration) {
    let end = Instant::now() + timeout;
    loop {
        let now: Vec<Option<Vec<String>>> =
            want.iter().map(|(g, _)| node_states(cluster, *g)).collect();
        let ok = want.iter().zip(&now).all(|((_, w), n)| {
            n.as_ref()
                .is_some_and(|n| n.iter().map(String::as_str).eq(w.iter().copied()))
        });
        if ok {
            return;
        }
        assert!(
            Instant::now() < end,
            "node states never became {want:?}; last seen {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every gateway's (balanced_pass, balanced_drop) in the leader's slot.
fn counters(cluster: &Cluster) -> Vec<(u64, u64)> {
    (0..cluster.gws.len())
        .map(|g| {
            let s = cluster.maps(g).stats(LEADER).expect("stats");
            (s.balanced_pass, s.balanced_drop)
        })
        .collect()
}

/// Every gateway's UDP NoPorts counter (/proc/net/snmp of its namespace): each datagram the stack
/// receives for the VIP's closed port 9 counts once, so it shows what got past XDP, and how often.
fn udp_noports(cluster: &Cluster) -> Vec<u64> {
    cluster
        .gws
        .iter()
        .map(|ns| {
            let snmp = ns.run("cat /proc/net/snmp");
            let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
            let (names, values) = (
                udp.next().expect("Udp header"),
                udp.next().expect("Udp values"),
            );
            let col = names
                .split_whitespace()
                .position(|n| n == "NoPorts")
                .expect("NoPorts");
            values
                .split_whitespace()
                .nth(col)
                .expect("value")
                .parse()
                .expect("number")
        })
        .collect()
}

/// Gateway `g`'s local mask.
fn mask(cluster: &Cluster, g: usize) -> u32 {
    cluster.maps(g).balance(LEADER).expect("group").local_mask
}

/// Sends a round of flows and checks that each datagram was accepted by exactly the gateway owning
/// its bucket (`owners[node]` = gateway) and dropped by every other one; returns each gateway's share.
fn round(cluster: &Cluster, owners: &[usize], what: &str) -> Vec<u64> {
    let n = owners.len() as u8;
    let gws = cluster.gws.len();
    let before = counters(cluster);
    let noports_before = udp_noports(cluster);
    let sent = cluster.send_flows(VIP, 2, 5);
    let total: u64 = sent.iter().map(|(_, c)| c).sum();
    let mut want = vec![0u64; gws];
    for (a, c) in &sent {
        want[owners[bucket_v4(*a, VIP, n) as usize]] += c;
    }
    // The counters move as the frames arrive: wait until every datagram is accounted for somewhere.
    let end = Instant::now() + Duration::from_secs(5);
    let got = loop {
        let after = counters(cluster);
        let got: Vec<(u64, u64)> = after
            .iter()
            .zip(&before)
            .map(|(a, b)| (a.0 - b.0, a.1 - b.1))
            .collect();
        let seen: u64 = got.iter().map(|(p, d)| p + d).sum();
        if seen >= total * gws as u64 || Instant::now() > end {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let passes: Vec<u64> = got.iter().map(|(p, _)| *p).collect();
    let drops: Vec<u64> = got.iter().map(|(_, d)| *d).collect();
    assert_eq!(
        passes, want,
        "{what}: accepted per gateway (owners {owners:?}, {total} sent)"
    );
    assert_eq!(
        passes.iter().sum::<u64>(),
        total,
        "{what}: every datagram accepted exactly once"
    );
    let want_drops: Vec<u64> = want.iter().map(|w| total - w).collect();
    assert_eq!(drops, want_drops, "{what}: dropped by every other gateway");
    // And the stack behind XDP got exactly those, once each (ICMP port-unreachable is rate limited,
    // NoPorts is not).
    let delivered: Vec<u64> = udp_noports(cluster)
        .iter()
        .zip(&noports_before)
        .map(|(a, b)| a - b)
        .collect();
    assert_eq!(
        delivered, want,
        "{what}: datagrams the gateways' UDP stacks received"
    );
    eprintln!("{what}: {total} datagrams, accepted per gateway {passes:?}");
    passes
}

/// The client resolves the VIP (one ping) and returns the MAC it learned.
fn resolve_vip(cluster: &Cluster) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = std::process::Command::new("nsenter")
            .args([
                &format!("--net=/run/netns/{}", cluster.client.name),
                "ping",
                "-c1",
                "-W1",
                &VIP.to_string(),
            ])
            .output();
        let out = cluster.client.run(&format!("ip neigh show {VIP}"));
        if let Some(mac) = out.split_whitespace().skip_while(|w| *w != "lladdr").nth(1) {
            return mac.to_string();
        }
        assert!(Instant::now() < end, "the client never resolved the VIP");
    }
}

/// Waits until gateway `g`'s group lease has run out (its carpd was killed).
fn wait_lease_expired(cluster: &Cluster, g: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    // The group's lease (the IP filter, ARP in `arp` mode) and every node's (its MAC's filter).
    let lease = || {
        let maps = cluster.maps(g);
        let group = maps.balance(LEADER).expect("group").lease_until_ns;
        (1..=3u8)
            .map(|v| maps.vhid(v).expect("vhid").lease_until_ns)
            .fold(group, u64::max)
    };
    while lease() >= monotonic_ns() {
        assert!(
            Instant::now() < end,
            "the killed gateway's lease never ran out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn even_enough(shares: &[u64], owners_per_gw: &[usize]) {
    let total: u64 = shares.iter().sum();
    let n: usize = owners_per_gw.iter().sum();
    for (share, nodes) in shares.iter().zip(owners_per_gw) {
        let ideal = total as f64 * *nodes as f64 / n as f64;
        assert!(
            (*share as f64 - ideal).abs() <= ideal * 0.15 + 1.0,
            "split {shares:?} is not close to even"
        );
    }
}

/// `ip` mode, two gateways (A `1:0,2:100`, B `1:100,2:0`): the exact split, the multicast interface
/// MAC in the client's ARP cache and the gateways' NIC filter; SIGKILL of B moves node 2 to A (A's
/// node 1 untouched) and A then takes every datagram, B's orphaned XDP none once its lease ran out;
/// B's return takes node 2 back (preempt) and the split is as before.
#[test]
fn ip_two_gateways_split_failover_and_return() {
    root_or_skip!("ip_two_gateways_split_failover_and_return");
    let cluster = Cluster::new("bal2", 2, 64);
    let a = cluster.carpd(0, &config("1:0,2:100", "ip"));
    let mut b = cluster.carpd(1, &config("1:100,2:0", "ip"));
    wait_nodes(
        &cluster,
        &[(0, &["MASTER", "BACKUP"]), (1, &["BACKUP", "MASTER"])],
        Duration::from_secs(20),
    );
    assert_eq!((mask(&cluster, 0), mask(&cluster, 1)), (0b01, 0b10));
    assert_eq!(resolve_vip(&cluster), "01:00:5e:00:01:01");
    for g in &cluster.gws {
        let maddr = g.run("ip maddr show dev eth0");
        assert!(
            maddr.contains("01:00:5e:00:01:01"),
            "the interface MAC is in the NIC's multicast filter: {maddr}"
        );
    }
    let shares = round(&cluster, &[0, 1], "both up");
    even_enough(&shares, &[1, 1]);

    // A hitless restart of A (SIGUSR2) resumes its MASTER node and leaves its BACKUP node alone:
    // no transition anywhere, the masks stay, the split stays exact.
    let b_transitions = counters_transitions(&cluster, 1);
    let skip = a.log().len();
    a.signal(libc::SIGUSR2);
    assert!(
        a.wait_log_after(
            skip,
            "carp0: resumed vhid 1 as MASTER",
            Duration::from_secs(10)
        ),
        "{}",
        a.log()
    );
    wait_nodes(
        &cluster,
        &[(0, &["MASTER", "BACKUP"]), (1, &["BACKUP", "MASTER"])],
        Duration::from_secs(5),
    );
    assert_eq!((mask(&cluster, 0), mask(&cluster, 1)), (0b01, 0b10));
    assert!(
        cluster.gws[0]
            .run("ip maddr show dev eth0")
            .contains("01:00:5e:00:01:01"),
        "the NIC filter keeps the interface MAC across a hitless restart"
    );
    round(&cluster, &[0, 1], "A restarted hitlessly");
    assert_eq!(counters_transitions(&cluster, 1), b_transitions);

    let a_transitions = counters_transitions(&cluster, 0);
    let garp = watch_gratuitous_arp(&cluster.client.name, Duration::from_secs(6));
    b.kill9();
    wait_nodes(
        &cluster,
        &[(0, &["MASTER", "MASTER"])],
        Duration::from_secs(10),
    );
    assert_eq!(mask(&cluster, 0), 0b11);
    assert_eq!(
        counters_transitions(&cluster, 0),
        vec![a_transitions[0], a_transitions[1] + 1],
        "only node 2 moved to A"
    );
    wait_lease_expired(&cluster, 1);
    assert_eq!(
        garp.join().expect("capture"),
        None,
        "ip mode sends no gratuitous ARP on failover (the interface MAC never moves)"
    );
    round(&cluster, &[0, 0], "B killed");

    let _b = restart(&cluster, 1, &config("1:100,2:0", "ip"));
    wait_nodes(
        &cluster,
        &[(0, &["MASTER", "BACKUP"]), (1, &["BACKUP", "MASTER"])],
        Duration::from_secs(20),
    );
    assert_eq!((mask(&cluster, 0), mask(&cluster, 1)), (0b01, 0b10));
    round(&cluster, &[0, 1], "B back");
}

/// `ip` mode, three gateways with rotated skews: the split is exact and about even; killing the
/// second moves only its node (to the backup with the lower skew, the first gateway) while the third
/// keeps its mask; its return restores the layout.
#[test]
fn ip_three_gateways_kill_moves_only_its_nodes() {
    root_or_skip!("ip_three_gateways_kill_moves_only_its_nodes");
    let cluster = Cluster::new("bal3", 3, 90);
    let configs = [
        config("1:0,2:100,3:200", "ip"),
        config("1:200,2:0,3:100", "ip"),
        config("1:100,2:200,3:0", "ip"),
    ];
    let _a = cluster.carpd(0, &configs[0]);
    let mut b = cluster.carpd(1, &configs[1]);
    let mut c = cluster.carpd(2, &configs[2]);
    let layout: [(usize, &[&str]); 3] = [
        (0, &["MASTER", "BACKUP", "BACKUP"]),
        (1, &["BACKUP", "MASTER", "BACKUP"]),
        (2, &["BACKUP", "BACKUP", "MASTER"]),
    ];
    wait_nodes(&cluster, &layout, Duration::from_secs(25));
    resolve_vip(&cluster);
    let shares = round(&cluster, &[0, 1, 2], "three up");
    even_enough(&shares, &[1, 1, 1]);

    let c_transitions = counters_transitions(&cluster, 2);
    b.kill9();
    wait_nodes(
        &cluster,
        &[(0, &["MASTER", "MASTER", "BACKUP"])],
        Duration::from_secs(10),
    );
    assert_eq!(mask(&cluster, 0), 0b011);
    assert_eq!(
        mask(&cluster, 2),
        0b100,
        "the third gateway's mask is unchanged"
    );
    assert_eq!(
        node_states(&cluster, 2).expect("status"),
        vec!["BACKUP", "BACKUP", "MASTER"]
    );
    assert_eq!(counters_transitions(&cluster, 2), c_transitions);
    wait_lease_expired(&cluster, 1);
    round(&cluster, &[0, 0, 2], "second killed");

    let _b = restart(&cluster, 1, &configs[1]);
    wait_nodes(&cluster, &layout, Duration::from_secs(20));
    round(&cluster, &[0, 1, 2], "second back");

    // A planned stop (SIGTERM) of the third bows out: its node goes to the backup with the lower skew
    // (the second gateway) at once, not after a master-down interval, and carpd exits 0.
    let t0 = Instant::now();
    c.signal(libc::SIGTERM);
    wait_nodes(
        &cluster,
        &[
            (0, &["MASTER", "BACKUP", "BACKUP"]),
            (1, &["BACKUP", "MASTER", "MASTER"]),
        ],
        Duration::from_secs(10),
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "bow-out takeover took {:?}",
        t0.elapsed()
    );
    let status = c.wait_exit(Duration::from_secs(10)).expect("carpd exits");
    assert!(status.success(), "{status:?}");
    let maddr = cluster.gws[2].run("ip maddr show dev eth0");
    assert!(
        !maddr.contains("01:00:5e:00:01:01"),
        "a planned stop takes the interface MAC out of the NIC's filter: {maddr}"
    );
    assert_eq!((mask(&cluster, 0), mask(&cluster, 1)), (0b001, 0b110));
}

/// `ip-stealth`: the unicast interface MAC 00:00:5e:00:01:<leader> is what the client learns, and
/// the bridge never learns it (no frame carries it as a source: adverts and ARP replies come from the
/// carpdev's own MAC), so it is flooded to every gateway and the split is exact.
#[test]
fn ip_stealth_never_teaches_the_switch_the_interface_mac() {
    root_or_skip!("ip_stealth_never_teaches_the_switch_the_interface_mac");
    let cluster = Cluster::new("bals", 2, 48);
    let _a = cluster.carpd(0, &config("1:0,2:100", "ip-stealth"));
    let _b = cluster.carpd(1, &config("1:100,2:0", "ip-stealth"));
    wait_nodes(
        &cluster,
        &[(0, &["MASTER", "BACKUP"]), (1, &["BACKUP", "MASTER"])],
        Duration::from_secs(20),
    );
    assert_eq!(resolve_vip(&cluster), "00:00:5e:00:01:01");
    round(&cluster, &[0, 1], "ip-stealth");

    // carpctl set: carpnodes sets each node's advskew, advskew only the leader's (OpenBSD); the vhids
    // cannot change at runtime.
    let set = |changes: Vec<Setting>| {
        call(
            &cluster.socket(0),
            &Request::Set {
                iface: "carp0".into(),
                changes,
            },
            Duration::from_secs(2),
        )
        .expect("set")
    };
    let skews = || match call(&cluster.socket(0), &Request::Status, Duration::from_secs(2)) {
        Ok(Response::Status(s)) => s.interfaces[0]
            .nodes
            .iter()
            .map(|n| (n.vhid, n.advskew))
            .collect::<Vec<_>>(),
        other => panic!("status: {other:?}"),
    };
    assert!(matches!(
        set(vec![Setting::Carpnodes(vec![(2, 30), (1, 5)])]),
        Response::Done(_)
    ));
    assert_eq!(skews(), vec![(1, 5), (2, 30)]);
    assert!(matches!(set(vec![Setting::Advskew(7)]), Response::Done(_)));
    assert_eq!(skews(), vec![(1, 7), (2, 30)]);
    match set(vec![Setting::Carpnodes(vec![(1, 0), (3, 0)])]) {
        Response::Error(e) => assert!(e.contains("the vhids must stay [1, 2]"), "{e}"),
        other => panic!("changing the vhids was accepted: {other:?}"),
    }
    assert_eq!(skews(), vec![(1, 7), (2, 30)], "nothing changed");
    // A few more adverts go by before the bridge is asked.
    std::thread::sleep(Duration::from_secs(2));
    let fdb = cluster.sw.run("bridge fdb show br br0");
    assert!(
        !fdb.contains("00:00:5e:00:01"),
        "the bridge learned a virtual MAC: {fdb}"
    );
}

/// `ip-unicast` needs a hub (spec §6): with learning off on the bridge ports, every gateway sees every
/// frame to the interface MAC and the split is exact; adverts come from the interface MAC.
#[test]
fn ip_unicast_on_a_hub_splits_exactly() {
    root_or_skip!("ip_unicast_on_a_hub_splits_exactly");
    let cluster = Cluster::new("balu", 2, 48);
    for p in 0..3 {
        cluster
            .sw
            .run(&format!("bridge link set dev balu-p{p} learning off"));
    }
    let _a = cluster.carpd(0, &config("1:0,2:100", "ip-unicast"));
    let _b = cluster.carpd(1, &config("1:100,2:0", "ip-unicast"));
    wait_nodes(
        &cluster,
        &[(0, &["MASTER", "BACKUP"]), (1, &["BACKUP", "MASTER"])],
        Duration::from_secs(20),
    );
    assert_eq!(resolve_vip(&cluster), "00:00:5e:00:01:01");
    round(&cluster, &[0, 1], "ip-unicast");
}

/// Transitions to MASTER per node vhid (from `carpctl counters`).
fn counters_transitions(cluster: &Cluster, g: usize) -> Vec<u64> {
    match call(
        &cluster.socket(g),
        &Request::Counters,
        Duration::from_secs(2),
    ) {
        Ok(Response::Counters(c)) => c.vhids.iter().map(|v| v.transitions_to_master).collect(),
        other => panic!("counters of gateway {g}: {other:?}"),
    }
}

/// Starts gateway `g`'s carpd again after a kill, once its old control socket is gone.
fn restart(cluster: &Cluster, g: usize, config: &str) -> Daemon {
    let _ = std::fs::remove_file(cluster.socket(g));
    cluster.carpd(g, config)
}

/// Every gateway's vmac_passed per node vhid 1..=n.
fn node_passes(cluster: &Cluster, n: u8) -> Vec<Vec<u64>> {
    (0..cluster.gws.len())
        .map(|g| {
            let maps = cluster.maps(g);
            (1..=n)
                .map(|v| maps.stats(v).expect("stats").vmac_passed)
                .collect()
        })
        .collect()
}

/// `arp` mode, two gateways, four single-address clients: each client's ARP request is answered by
/// the MASTER of node ntohl(spa) % 2 with that node's MAC, and its datagrams are taken by exactly that
/// gateway; a SIGKILLed gateway's node moves (the switch relearns its MAC from the new master's
/// adverts, no client re-ARPs) and comes back under preempt.
#[test]
fn arp_mode_each_requester_served_by_its_node() {
    root_or_skip!("arp_mode_each_requester_served_by_its_node");
    let cluster = Cluster::with_clients("bala", 2, 1, 4);
    let _a = cluster.carpd(0, &config("1:0,2:100", "arp"));
    let mut b = cluster.carpd(1, &config("1:100,2:0", "arp"));
    let layout: [(usize, &[&str]); 2] = [(0, &["MASTER", "BACKUP"]), (1, &["BACKUP", "MASTER"])];
    wait_nodes(&cluster, &layout, Duration::from_secs(20));
    let clients: Vec<(usize, u8)> = cluster
        .more_clients
        .iter()
        .enumerate()
        .map(|(c, ns)| {
            let addr = Ipv4Addr::new(10, 0, 0, 200 + c as u8);
            let node = (addr.to_bits() % 2) as u8;
            let mac = resolve_from(ns);
            assert_eq!(
                mac,
                format!("00:00:5e:00:01:{:02x}", node + 1),
                "client {addr}: answered with its node's MAC"
            );
            (c, node)
        })
        .collect();
    let arp_round = |owners: &[usize], what: &str| {
        let before = node_passes(&cluster, 2);
        let mut want = before.clone();
        for &(c, node) in &clients {
            send_from(&cluster.more_clients[c], 40);
            want[owners[node as usize]][node as usize] += 40;
        }
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let got = node_passes(&cluster, 2);
            if got == want {
                break;
            }
            assert!(
                Instant::now() < end,
                "{what}: vmac_passed per gateway and node {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    arp_round(&[0, 1], "both up");
    b.kill9();
    wait_nodes(
        &cluster,
        &[(0, &["MASTER", "MASTER"])],
        Duration::from_secs(10),
    );
    wait_lease_expired(&cluster, 1);
    arp_round(&[0, 0], "B killed");
    let _b = restart(&cluster, 1, &config("1:100,2:0", "arp"));
    wait_nodes(&cluster, &layout, Duration::from_secs(20));
    // The bridge relearns node 2's MAC from B's next advert.
    std::thread::sleep(Duration::from_millis(1500));
    arp_round(&[0, 1], "B back");
}

/// Resolves the VIP from `ns` (one ping) and returns the MAC it learned.
fn resolve_from(ns: &carp_tests::netns::Netns) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = std::process::Command::new("nsenter")
            .args([
                &format!("--net=/run/netns/{}", ns.name),
                "ping",
                "-c1",
                "-W1",
                &VIP.to_string(),
            ])
            .output();
        let out = ns.run(&format!("ip neigh show {VIP}"));
        if let Some(mac) = out.split_whitespace().skip_while(|w| *w != "lladdr").nth(1) {
            return mac.to_string();
        }
        assert!(Instant::now() < end, "{} never resolved the VIP", ns.name);
    }
}

/// Sends `count` UDP datagrams to the VIP from `ns`.
fn send_from(ns: &carp_tests::netns::Netns, count: usize) {
    ns.in_ns(move || {
        let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        for k in 0..count {
            s.send_to(&(k as u32).to_be_bytes(), (VIP, 9))
                .expect("send");
        }
    });
}

/// Captures on the eth0 of namespace `ns` for `dur` and returns the first ARP request whose sender is
/// the VIP (a gratuitous ARP), if any.
fn watch_gratuitous_arp(ns: &str, dur: Duration) -> std::thread::JoinHandle<Option<Vec<u8>>> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on this thread only; the fd is valid for the call.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let sock = carp_tests::netns::PacketSocket::open("eth0", 200);
        sock.recv_until(dur, |f| {
            f.len() >= 42
                && f[12..14] == [0x08, 0x06]
                && f[20..22] == [0, 1]
                && f[28..32] == VIP.octets()
        })
    })
}

/// Gateway `g`'s flow counters (summed over CPUs) from its pinned maps.
fn flow_stats(cluster: &Cluster, g: usize) -> carp_common::maps::FlowStats {
    carp::dataplane::flows::FlowDev::open_pinned(&cluster.bpffs.join(Cluster::name(g)), "eth0")
        .expect("open the pinned flow maps")
        .stats()
        .expect("flow stats")
}

/// Sends `count` datagrams from `src`:`sport` to the VIP's port 9 (closed: each one the accepting
/// gateway's stack receives counts once in its UDP NoPorts).
fn send_flow(cluster: &Cluster, src: Ipv4Addr, sport: u16, count: usize) {
    cluster.client.in_ns(move || {
        let s = std::net::UdpSocket::bind((src, sport)).expect("bind the flow's source");
        for k in 0..count {
            s.send_to(&(k as u32).to_be_bytes(), (VIP, 9))
                .expect("send a datagram");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
}

/// Issue #7 item 1 with real carpds and `[pfsync]` between them: a UDP flow in node 1's bucket
/// established through A stays with A after node 1 moves to B (A raises node 1's advskew, B preempts;
/// A then masters no node, yet keeps its carp interface up for the flow), while a new flow in that
/// same bucket goes to B; it stays with A across a hitless restart of B; once A is SIGKILLed, B takes
/// A's flow over; A returning claims it back, and A's carp interface goes down once A's table holds no
/// flow it created.
#[test]
fn ip_established_flow_stays_with_its_gateway_when_its_bucket_moves() {
    root_or_skip!("ip_established_flow_stays_with_its_gateway_when_its_bucket_moves");
    let cluster = Cluster::new("balst", 2, 8);
    let key = cluster.dir.join("sync.key");
    carp_tests::write_secret(&key, b"balancing lab sync key, 32 bytes or more\n");
    let with_sync = |nodes: &str, peer: &str| {
        format!(
            "{}\n[pfsync]\nsyncdev = \"eth0\"\nsyncpeer = \"{peer}\"\nkey_file = \"{}\"\n",
            config(nodes, "ip"),
            key.display()
        )
    };
    let mut a = cluster.carpd(0, &with_sync("1:0,2:100", "10.0.0.12"));
    let b = cluster.carpd(1, &with_sync("1:100,2:0", "10.0.0.11"));
    wait_nodes(
        &cluster,
        &[(0, &["MASTER", "BACKUP"]), (1, &["BACKUP", "MASTER"])],
        Duration::from_secs(30),
    );
    // A client address whose flows to the VIP land in node 1's bucket (A's).
    let src = *cluster
        .client_addrs
        .iter()
        .find(|a| bucket_v4(**a, VIP, 2) == 0)
        .expect("an address in bucket 0");
    let old_port = 40001;
    let before = udp_noports(&cluster);
    send_flow(&cluster, src, old_port, 20);
    let after = udp_noports(&cluster);
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (20, 0),
        "the flow goes to A"
    );
    // B learns the flow from A (creator A) before the bucket moves.
    let end = Instant::now() + Duration::from_secs(10);
    while !b_knows(&cluster, src, old_port) {
        assert!(
            Instant::now() < end,
            "B never learned A's flow: {}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each sees the other live (`carpctl sync`).
    let sync = |g: usize| match call(&cluster.socket(g), &Request::Sync, Duration::from_secs(2)) {
        Ok(Response::Sync(r)) => r,
        other => panic!("carpctl sync: {other:?}"),
    };
    let (sa, sb) = (sync(0), sync(1));
    assert_eq!(
        (sa.live_peers.clone(), sb.live_peers.clone()),
        (vec![sb.node_id], vec![sa.node_id]),
        "live peers"
    );

    // Node 1 moves to B: A's advskew for it goes above B's, B preempts.
    let r = call(
        &cluster.socket(0),
        &Request::Set {
            iface: "carp0".into(),
            changes: vec![Setting::Carpnodes(vec![(1, 200), (2, 100)])],
        },
        Duration::from_secs(2),
    )
    .expect("set");
    assert!(matches!(r, Response::Done(_)), "{r:?}");
    wait_nodes(
        &cluster,
        &[(0, &["BACKUP", "BACKUP"]), (1, &["MASTER", "MASTER"])],
        Duration::from_secs(15),
    );
    assert_eq!((mask(&cluster, 0), mask(&cluster, 1)), (0b00, 0b11));
    assert!(
        !a.log().contains("carp interface up (flows created here)"),
        "A's carp0 was up for its MASTER node, never for flows: {}",
        a.log()
    );
    // A masters no node now, but its carp interface stays up with the VIP for the flow it keeps.
    let link = cluster.gws[0].run("ip -br addr show dev carp0");
    assert!(
        link.contains("UP") && link.contains(&VIP.to_string()),
        "A's carp0 stays up: {link}\n{}",
        a.log()
    );
    let (fa, fb) = (flow_stats(&cluster, 0), flow_stats(&cluster, 1));
    let before = udp_noports(&cluster);
    send_flow(&cluster, src, old_port, 20);
    let mid = udp_noports(&cluster);
    assert_eq!(
        (mid[0] - before[0], mid[1] - before[1]),
        (20, 0),
        "the established flow stays with A although its bucket is B's; A {:?} B {:?}; A's carp0: {}",
        flow_stats(&cluster, 0),
        flow_stats(&cluster, 1),
        cluster.gws[0].run("ip -br addr; ip maddr show dev eth0")
    );
    let new_port = 40002;
    send_flow(&cluster, src, new_port, 20);
    let after = udp_noports(&cluster);
    assert_eq!(
        (after[0] - mid[0], after[1] - mid[1]),
        (0, 20),
        "a new flow in the moved bucket goes to B"
    );
    let (fa2, fb2) = (flow_stats(&cluster, 0), flow_stats(&cluster, 1));
    assert_eq!(fa2.kept_here - fa.kept_here, 20, "A: kept_here");
    assert_eq!(fb2.left_to_owner - fb.left_to_owner, 20, "B: left_to_owner");

    // A hitless restart of B: the new carpd starts from the live-peer view the old one left in the
    // dataplane, so it does not take A's flow in its bucket before it hears A's next keepalive.
    let skip = b.log().len();
    b.signal(libc::SIGUSR2);
    assert!(
        b.wait_log_after(skip, "resumed vhid 2 as MASTER", Duration::from_secs(10)),
        "{}",
        b.log()
    );
    let before = udp_noports(&cluster);
    send_flow(&cluster, src, old_port, 20);
    let after = udp_noports(&cluster);
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (20, 0),
        "the flow stays with A across B's hitless restart"
    );

    // A dies: B stops hearing it and takes A's flow over (within PEER_DEAD, 3 s, and a scan).
    a.kill9();
    std::thread::sleep(Duration::from_secs(5));
    let before = udp_noports(&cluster);
    send_flow(&cluster, src, old_port, 20);
    let after = udp_noports(&cluster);
    assert_eq!(after[1] - before[1], 20, "B took over the dead A's flow");

    // A returns as BACKUP of both nodes. The flow it created is in its table again (adopted from the
    // dataplane, and in the bulk transfer): A claims it back and its carp interface comes up for it
    // with no node MASTER here; B, hearing A, leaves it to A.
    let skip = a.log().len();
    let a = cluster.carpd(0, &with_sync("1:200,2:100", "10.0.0.12"));
    let carp0_up = || {
        let link = cluster.gws[0].run("ip -br addr show dev carp0");
        link.contains("UP") && link.contains(&VIP.to_string())
    };
    let end = Instant::now() + Duration::from_secs(20);
    while !carp0_up() {
        assert!(Instant::now() < end, "A's carp0 never came up: {}", a.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let end = Instant::now() + Duration::from_secs(10);
    while !sync(1).live_peers.contains(&sa.node_id) {
        assert!(Instant::now() < end, "B never heard A again");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_nodes(
        &cluster,
        &[(0, &["BACKUP", "BACKUP"]), (1, &["MASTER", "MASTER"])],
        Duration::from_secs(15),
    );
    let before = udp_noports(&cluster);
    send_flow(&cluster, src, old_port, 20);
    let after = udp_noports(&cluster);
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (20, 0),
        "the returning A serves the flow it created again"
    );
    // Once A's table holds no flow it created (expiry; here removed by hand), its carp interface
    // goes down. First let two flow scans pass: B's XDP counted the datagrams above on its (learned)
    // copy of the flow, and B's next scan sends that update, which would hand the flow back to A if it
    // arrived after the removal.
    std::thread::sleep(Duration::from_millis(2500));
    let a_pins = cluster.bpffs.join(Cluster::name(0));
    let mut table = carp::dataplane::flows::FlowTable::open_pinned(&a_pins, "eth0", false)
        .expect("A's flow table");
    for (k, e) in table.scan() {
        if e.creator == sa.node_id {
            table.remove(&k);
        }
    }
    assert!(
        a.wait_log_after(
            skip,
            "carp0: carp interface down (no node MASTER here and no kept flow left)",
            Duration::from_secs(5)
        ),
        "{}",
        a.log()
    );
    assert!(!carp0_up(), "A's carp0 is down");
}

/// True once B's flow table holds the UDP flow from `src`:`sport` to the VIP, created by A.
fn b_knows(cluster: &Cluster, src: Ipv4Addr, sport: u16) -> bool {
    let table = carp::dataplane::flows::FlowTable::open_pinned(
        &cluster.bpffs.join(Cluster::name(1)),
        "eth0",
        false,
    )
    .expect("B's flow table");
    table.scan().iter().any(|(k, e)| {
        k.proto == 17
            && e.learned()
            && [k.lo_addr, k.hi_addr]
                .iter()
                .any(|a| a[..4] == src.octets())
            && (k.lo_port == sport || k.hi_port == sport)
    })
}
