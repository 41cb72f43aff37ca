//! The ctnetlink layer against the kernel: real conntrack entries made by real traffic through a real
//! nftables SNAT/DNAT ruleset in gateway gw1, dumped and watched there, re-created in gw2 (whose own
//! `conntrack -L` must then show the NATed reply tuple the kernel computed from our CTA_NAT_*
//! attributes), updated, deleted, bulk-inserted in batches, and an event-socket overrun noticed.
//! Root only (the gateway lab's namespaces, no carpd).
use carp::ctnetlink::{CtEvent, CtSocket, EventRead, sysctl};
use carp::sync::conntrack::{CtEntry, CtOp, entry::proto, entry::status};
use carp_tests::{lab::Gateway, netns::Netns, require_root};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// SNAT of the inside network to the outside VIP, and a port forward VIP:8080 -> inside:80.
const NAT: &str = "table ip nat {
  chain post { type nat hook postrouting priority 100; ip saddr 192.168.100.0/24 oifname \"eth0\" snat to 10.0.0.1; }
  chain pre { type nat hook prerouting priority -100; iifname \"eth0\" tcp dport 8080 dnat to 192.168.100.100:80; }
}";

fn nft(ns: &Netns, ruleset: &str) {
    let path = std::env::temp_dir().join(format!("{}-nft.conf", ns.name));
    std::fs::write(&path, ruleset).unwrap();
    ns.run(&format!("nft -f {}", path.display()));
}

fn dump(ns: &Netns) -> Vec<CtEntry> {
    ns.in_ns(|| CtSocket::open().expect("ctnetlink").dump().expect("dump"))
}

fn apply(ns: &Netns, ops: Vec<CtOp>) -> Vec<i32> {
    ns.in_ns(move || {
        CtSocket::open()
            .expect("ctnetlink")
            .apply(&ops)
            .expect("apply")
    })
}

#[test]
fn real_nat_entries_are_dumped_watched_and_recreated_in_the_peer() {
    if !require_root("real_nat_entries_are_dumped_watched_and_recreated_in_the_peer") {
        return;
    }
    let lab = Gateway::new("cct");
    let (gw1, gw2) = (&lab.pair.gw1, &lab.pair.gw2);
    gw1.run("ip addr add 10.0.0.1/24 dev eth0 && ip addr add 192.168.100.1/24 dev eth1");
    nft(gw1, NAT);
    // gw2 needs a nat chain of its own: NAT hooks exist only while one does, and without them the
    // bindings we inject would rewrite nothing.
    nft(gw2, NAT);
    for ns in [gw1, gw2] {
        assert_eq!(
            ns.in_ns(|| sysctl("nf_conntrack_events")),
            Some(2),
            "default nf_conntrack_events"
        );
    }

    // The event socket exists before the traffic, so the entries get events (events = 2, "auto").
    let events = gw1.spawn_in(|| {
        let mut s = CtSocket::events(1 << 20).expect("event socket");
        let mut got = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(6);
        while std::time::Instant::now() < until {
            match s
                .read_events(64, |pid, ev| got.push((pid, ev)))
                .expect("events")
            {
                EventRead::Empty => std::thread::sleep(Duration::from_millis(20)),
                EventRead::Overrun => panic!("overrun with a 1 MiB buffer"),
                EventRead::Read(_) => {}
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(300));

    // Real traffic: TCP inside -> outside (SNAT), UDP likewise, an echo, and outside -> VIP:8080 (DNAT).
    let server = lab.pair.client.spawn_in(|| {
        let l = TcpListener::bind("10.0.0.100:5001").unwrap();
        let u = UdpSocket::bind("10.0.0.100:5002").unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        c.write_all(b"world").unwrap();
        let (n, from) = u.recv_from(&mut b).unwrap();
        u.send_to(&b[..n], from).unwrap();
        std::thread::sleep(Duration::from_secs(4));
    });
    let forward = lab.inside.spawn_in(|| {
        let l = TcpListener::bind("192.168.100.100:80").unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.write_all(b"fwd").unwrap();
        std::thread::sleep(Duration::from_secs(4));
    });
    std::thread::sleep(Duration::from_millis(300));
    let client = lab.inside.spawn_in(|| {
        let mut c = TcpStream::connect("10.0.0.100:5001").unwrap();
        c.write_all(b"hello").unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        let u = UdpSocket::bind("192.168.100.100:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        u.send_to(b"udp", "10.0.0.100:5002").unwrap();
        u.recv_from(&mut b).unwrap();
        std::thread::sleep(Duration::from_secs(4));
    });
    lab.inside.run("ping -c 1 -W 2 10.0.0.100 >/dev/null");
    let outside = lab.pair.client.spawn_in(|| {
        let mut c = TcpStream::connect("10.0.0.1:8080").unwrap();
        let mut b = [0u8; 3];
        c.read_exact(&mut b).unwrap();
        std::thread::sleep(Duration::from_secs(4));
    });
    std::thread::sleep(Duration::from_millis(500));

    let table = dump(gw1);
    let find = |p: u8, dport: u16| {
        table
            .iter()
            .find(|e| e.key.orig.proto == p && (dport == 0 || e.key.orig.dport == dport))
            .copied()
            .unwrap_or_else(|| panic!("no proto {p} dport {dport} entry in {table:#?}"))
    };
    let tcp = find(proto::TCP, 5001);
    let udp = find(proto::UDP, 5002);
    let icmp = find(proto::ICMP, 0);
    let dnat = find(proto::TCP, 8080);
    let vip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let inside: std::net::IpAddr = "192.168.100.100".parse().unwrap();
    for e in [tcp, udp, icmp] {
        assert_eq!(
            e.nat().src.map(|b| b.addr),
            Some(vip),
            "SNAT inferred: {e:?}"
        );
        assert_eq!(e.nat().dst, None, "{e:?}");
        assert!(e.status & status::SRC_NAT != 0, "{e:?}");
    }
    assert_eq!(
        dnat.nat().dst.map(|b| (b.addr, b.port)),
        Some((inside, Some(80)))
    );
    assert_eq!(tcp.tcp.map(|t| t.state), Some(3), "ESTABLISHED: {tcp:?}");
    assert!(tcp.status & status::ASSURED != 0);

    // gw2 watches its own table while we write to it: our writes come back with our portid.
    let echo = gw2.spawn_in(|| {
        let mut s = CtSocket::events(1 << 20).expect("event socket");
        std::thread::sleep(Duration::from_secs(2));
        let mut got = Vec::new();
        s.read_events(1024, |pid, ev| got.push((pid, ev))).unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    let (portid, errs) = gw2.in_ns(move || {
        let mut s = CtSocket::open().unwrap();
        let ops: Vec<CtOp> = [tcp, udp, icmp, dnat]
            .into_iter()
            .map(CtOp::Create)
            .collect();
        (s.portid(), s.apply(&ops).unwrap())
    });
    assert_eq!(errs, vec![0; 4], "creates refused");
    let listed = gw2.run("conntrack -L 2>/dev/null");
    // The kernel computed the NATed reply tuples itself from CTA_NAT_SRC/CTA_NAT_DST.
    for want in [
        "src=192.168.100.100 dst=10.0.0.100 sport=",
        "src=10.0.0.100 dst=10.0.0.1 sport=5001",
        "dport=5002",
        "src=192.168.100.100 dst=10.0.0.100 sport=80 dport=",
    ] {
        assert!(
            listed.contains(want),
            "{want:?} not in gw2's table:\n{listed}"
        );
    }
    assert!(listed.contains("ESTABLISHED"), "{listed}");
    assert!(listed.contains("icmp"), "{listed}");
    let back = dump(gw2);
    let t2 = back
        .iter()
        .find(|e| e.key == tcp.key)
        .expect("tcp entry in gw2");
    assert_eq!(t2.reply, tcp.reply, "the reply tuple re-created");
    assert!(
        t2.status & status::SRC_NAT != 0,
        "the kernel set IPS_SRC_NAT: packets will be rewritten ({:#x})",
        t2.status
    );
    assert!(t2.tcp.unwrap().flags[0] & 0x08 != 0, "BE_LIBERAL set");
    let d2 = back.iter().find(|e| e.key == dnat.key).expect("dnat entry");
    assert!(d2.status & status::DST_NAT != 0, "{:#x}", d2.status);
    let echoes = echo.join().unwrap();
    assert!(
        echoes
            .iter()
            .any(|(pid, ev)| *pid == portid && matches!(ev, CtEvent::Update { new: true, .. })),
        "our creates come back with our portid {portid}: {echoes:?}"
    );

    // Update (a longer timeout) and delete, by the original tuple.
    let mut longer = tcp;
    longer.timeout = 100_000;
    assert_eq!(apply(gw2, vec![CtOp::Update(longer)]), vec![0]);
    let t3 = dump(gw2).into_iter().find(|e| e.key == tcp.key).unwrap();
    assert!(t3.timeout > 99_000, "timeout updated: {}", t3.timeout);
    // A create of an existing entry falls back to an update; an update of a missing one to a create.
    assert_eq!(apply(gw2, vec![CtOp::Create(longer)]), vec![0]);
    assert_eq!(apply(gw2, vec![CtOp::Delete(udp.key)]), vec![0]);
    assert!(!dump(gw2).iter().any(|e| e.key == udp.key));
    assert_eq!(apply(gw2, vec![CtOp::Update(udp)]), vec![0]);
    assert!(dump(gw2).iter().any(|e| e.key == udp.key));
    // A delete of a missing entry is not an error (it went already).
    assert_eq!(
        apply(gw2, vec![CtOp::Delete(udp.key), CtOp::Delete(udp.key)]),
        vec![0, 0]
    );

    // gw1's kernel reported the connections as they happened, from packet processing (portid 0).
    let seen = events.join().unwrap();
    assert!(
        seen.iter().any(|(pid, ev)| *pid == 0
            && matches!(ev, CtEvent::Update { entry, new: true, .. } if entry.key == tcp.key)),
        "NEW event for the TCP connection: {seen:?}"
    );
    assert!(
        seen.iter().any(
            |(_, ev)| matches!(ev, CtEvent::Update { entry, new: false, .. }
                if entry.key == tcp.key && entry.tcp.is_some_and(|t| t.state == 3))
        ),
        "UPDATE to ESTABLISHED: {seen:?}"
    );
    for h in [server, forward, client, outside] {
        h.join().unwrap();
    }
}

#[test]
fn bulk_inserts_are_batched_and_an_overrun_is_noticed() {
    if !require_root("bulk_inserts_are_batched_and_an_overrun_is_noticed") {
        return;
    }
    let ns = Netns::new("cctb");
    nft(&ns, NAT);
    let n: u16 = 5000;
    let tmpl = |i: u16| {
        let orig = carp::sync::conntrack::CtTuple {
            src: "192.168.100.100".parse().unwrap(),
            dst: std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
            proto: proto::TCP,
            sport: 1024 + i,
            dport: 443,
        };
        let mut reply = orig.invert();
        reply.dst = "10.0.0.1".parse().unwrap();
        CtEntry {
            key: carp::sync::conntrack::CtKey { zone: 0, orig },
            reply,
            status: status::SEEN_REPLY | status::ASSURED,
            timeout: 600,
            mark: 0,
            labels: None,
            tcp: Some(carp::sync::conntrack::TcpInfo {
                state: 3,
                wscale: [7, 7],
                flags: [0x23, 0x23],
            }),
        }
    };
    let (errs, overrun, took) = ns.in_ns(move || {
        // A tiny event buffer: the inserts' echoes overrun it.
        let mut ev = CtSocket::events(4096).unwrap();
        let mut s = CtSocket::open().unwrap();
        let ops: Vec<CtOp> = (0..n).map(|i| CtOp::Create(tmpl(i))).collect();
        let t = std::time::Instant::now();
        let errs = s.apply(&ops).unwrap();
        let took = t.elapsed();
        let mut overrun = false;
        for _ in 0..100 {
            match ev.read_events(64, |_, _| {}).unwrap() {
                EventRead::Overrun => {
                    overrun = true;
                    break;
                }
                EventRead::Empty => break,
                EventRead::Read(_) => {}
            }
        }
        (errs, overrun, took)
    });
    assert!(
        errs.iter().all(|&e| e == 0),
        "refused: {:?}",
        errs.iter().find(|&&e| e != 0)
    );
    assert!(overrun, "ENOBUFS on a 4 KiB event buffer after {n} inserts");
    let count = ns.run("conntrack -C 2>/dev/null");
    assert_eq!(count.trim(), n.to_string(), "conntrack -C");
    eprintln!("{n} creates in {took:?}");
}

/// Enables the conntrack labels extension in a namespace (the kernel attaches it only while some rule
/// uses labels) and labels outgoing echo requests with bit 3.
const LABELS: &str = "table ip lab {
  chain out { type filter hook output priority 0; icmp type echo-request ct label set 3; }
}";

/// Zone, mark and labels are read from one kernel and written into another: an entry in zone 5 with
/// mark 66 made by the `conntrack` tool in gw1, and an echo labelled by an nftables rule there, come
/// back from gw2's table (read with our dump and with `conntrack -L`) with the same zone, mark and
/// label bits.
#[test]
fn zone_mark_and_labels_are_carried_to_the_peer() {
    if !require_root("zone_mark_and_labels_are_carried_to_the_peer") {
        return;
    }
    let (gw1, gw2) = (Netns::new("cczl1"), Netns::new("cczl2"));
    for ns in [&gw1, &gw2] {
        nft(ns, LABELS);
    }
    gw1.run(
        "conntrack -I -p udp -s 192.168.100.100 -d 10.0.0.100 --sport 4000 --dport 4001 -t 120 -w 5 -m 66",
    );
    gw1.run("ip link set lo up && ping -c 1 -W 1 127.0.0.1 >/dev/null");
    let table = dump(&gw1);
    let zoned = *table
        .iter()
        .find(|e| e.key.zone == 5 && e.key.orig.dport == 4001)
        .unwrap_or_else(|| panic!("no zone-5 entry in gw1's dump: {table:?}"));
    assert_eq!(zoned.mark, 66, "{zoned:?}");
    let labelled = *table
        .iter()
        .find(|e| e.key.orig.proto == proto::ICMP)
        .unwrap_or_else(|| panic!("no echo entry in gw1's dump: {table:?}"));
    let bit3 = |l: Option<[u8; 16]>| l.is_some_and(|l| l[0] & 0x08 != 0);
    assert!(
        bit3(labelled.labels),
        "gw1's echo carries no label 3: {labelled:?}"
    );
    let errs = apply(&gw2, vec![CtOp::Create(zoned), CtOp::Create(labelled)]);
    assert_eq!(errs, vec![0, 0], "gw2 refused the entries");
    let back = dump(&gw2);
    let z = back
        .iter()
        .find(|e| e.key == zoned.key)
        .unwrap_or_else(|| panic!("zone-5 entry missing in gw2: {back:?}"));
    assert_eq!((z.key.zone, z.mark), (5, 66), "{z:?}");
    let l = back
        .iter()
        .find(|e| e.key == labelled.key)
        .unwrap_or_else(|| panic!("echo entry missing in gw2: {back:?}"));
    assert!(bit3(l.labels), "gw2's copy lost label 3: {l:?}");
    let listed = gw2.run("conntrack -L -w 5 2>/dev/null");
    assert!(
        listed.contains("dport=4001") && listed.contains("mark=66") && listed.contains("zone=5"),
        "conntrack -L in gw2: {listed}"
    );
    // The control: a namespace the entries were never written to has neither.
    let empty = Netns::new("cczl3");
    assert!(
        !dump(&empty)
            .iter()
            .any(|e| e.key == zoned.key || e.key == labelled.key),
        "entries appeared where nothing wrote them"
    );
}

/// Without CAP_NET_ADMIN the kernel refuses ctnetlink; the error names the capability and the fix
/// instead of a bare EPERM. The same call on a thread that kept the capability works (the control).
#[test]
fn without_cap_net_admin_the_error_names_the_capability() {
    if !require_root("without_cap_net_admin_the_error_names_the_capability") {
        return;
    }
    let ns = Netns::new("cccap");
    let (with, without) = ns.in_ns(|| {
        let with = CtSocket::events(1 << 16)
            .map(|_| ())
            .map_err(|e| e.to_string());
        // Capabilities are per thread: only this one loses CAP_NET_ADMIN.
        caps::drop(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_NET_ADMIN,
        )
        .expect("drop CAP_NET_ADMIN");
        let without = CtSocket::events(1 << 16)
            .map(|_| ())
            .map_err(|e| e.to_string());
        (with, without)
    });
    assert_eq!(with, Ok(()), "with CAP_NET_ADMIN");
    let err = without.expect_err("ctnetlink worked without CAP_NET_ADMIN");
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("permission denied"),
        "{err}"
    );
}

#[test]
fn the_echo_filter_drops_our_own_events_in_the_kernel_and_lets_the_others_through() {
    if !require_root(
        "the_echo_filter_drops_our_own_events_in_the_kernel_and_lets_the_others_through",
    ) {
        return;
    }
    let ns = Netns::new("ccte");
    let entry = |net: u8, i: u16| {
        let orig = carp::sync::conntrack::CtTuple {
            src: std::net::IpAddr::from([192, 168, net, 100]),
            dst: std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
            proto: proto::UDP,
            sport: 1024 + i,
            dport: 53,
        };
        CtEntry {
            key: carp::sync::conntrack::CtKey { zone: 0, orig },
            reply: orig.invert(),
            status: status::SEEN_REPLY,
            timeout: 600,
            mark: 0,
            labels: None,
            tcp: None,
        }
    };
    let (ours, theirs, overran_unfiltered) = ns.in_ns(move || {
        let mut inject = CtSocket::open().unwrap();
        let mut other = CtSocket::open().unwrap();
        // Both event sockets are small enough that 3,000 echoes overrun them.
        let mut filtered = CtSocket::events(64 << 10).unwrap();
        filtered.drop_events_of(inject.portid()).unwrap();
        let mut control = CtSocket::events(64 << 10).unwrap();
        let ops: Vec<CtOp> = (0..3000).map(|i| CtOp::Create(entry(1, i))).collect();
        assert!(inject.apply(&ops).unwrap().iter().all(|&e| e == 0));
        let ops: Vec<CtOp> = (0..10).map(|i| CtOp::Create(entry(2, i))).collect();
        assert!(other.apply(&ops).unwrap().iter().all(|&e| e == 0));
        let (mut ours, mut theirs) = (0, 0);
        loop {
            match filtered
                .read_events(64, |pid, _| {
                    if pid == inject.portid() {
                        ours += 1;
                    } else if pid == other.portid() {
                        theirs += 1;
                    }
                })
                .unwrap()
            {
                EventRead::Overrun => panic!("the filtered event socket overran"),
                EventRead::Empty => break,
                EventRead::Read(_) => {}
            }
        }
        let mut overran = false;
        for _ in 0..1000 {
            match control.read_events(64, |_, _| {}).unwrap() {
                EventRead::Overrun => {
                    overran = true;
                    break;
                }
                EventRead::Empty => break,
                EventRead::Read(_) => {}
            }
        }
        (ours, theirs, overran)
    });
    assert_eq!(ours, 0, "echoes of our own creates passed the filter");
    assert_eq!(theirs, 10, "another socket's creates reach us");
    assert!(
        overran_unfiltered,
        "control: without the filter the same 64 KiB buffer overruns"
    );
}
