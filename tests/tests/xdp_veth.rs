//! The XDP program attached for real to a veth in a network namespace: a real advert reaches the
//! controller's ring buffer, a real ARP request gets its reply on the wire from the virtual MAC, the
//! pins are where bpftool finds them (with field names), and detach cleans up. Needs root.
use carp::dataplane::{AttachMode, Dataplane, maps::Maps};
use carp_common::maps::{BalanceMode, VhidEntry, VhidState};
use carp_tests::{
    bpffs_dir,
    frames::*,
    netns::{Netns, PacketSocket},
    require_root, sh,
};
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

const VMAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];

#[test]
fn veth_attach_advert_event_arp_reply_bpftool_and_detach() {
    if !require_root("veth_attach_advert_event_arp_reply_bpftool_and_detach") {
        return;
    }
    let bpffs = bpffs_dir("veth");
    let gw = Netns::new("carpt-veth-gw");
    let client = Netns::new("carpt-veth-cl");
    sh(&format!(
        "ip link add cxva netns {} type veth peer name cxvb netns {}",
        gw.name, client.name
    ));
    gw.run("ip link set cxva up");
    client.run(&format!(
        "ip link set cxvb address {} && ip link set cxvb up",
        mac_str(CLIENT_MAC)
    ));

    let dir = bpffs.clone();
    let (dp, mut maps) = gw.in_ns(move || {
        let mut dp = Dataplane::attach("cxva", &dir, AttachMode::Auto).expect("attach");
        let maps = dp.maps().expect("maps");
        (dp, maps)
    });
    assert_eq!(
        dp.mode,
        aya::programs::XdpMode::Skb,
        "auto picks generic XDP on veth"
    );
    assert!(!dp.adopted);
    maps.set_vhid(
        1,
        VhidEntry::new(VhidState::Master, BalanceMode::None, VMAC),
    )
    .expect("vhid");
    maps.add_vip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1)
        .expect("vip");

    // The client sends an advert and an ARP request; the reply must come back from the virtual MAC.
    let reply = client.in_ns(|| {
        let sock = PacketSocket::open("cxvb", 200);
        sock.send(&advert_v4(
            [10, 0, 0, 12],
            1,
            255,
            &carp_header(0x21, 1, 0, 1, 0),
            None,
        ));
        let req = arp_request(CLIENT_MAC, [10, 0, 0, 100], [10, 0, 0, 1], None);
        sock.send(&req);
        sock.recv_until(Duration::from_secs(3), |f| {
            f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2]
        })
    });
    let reply = reply.expect("an ARP reply came back on the wire");
    assert_eq!(&reply[0..6], &CLIENT_MAC);
    assert_eq!(&reply[6..12], &VMAC);
    assert_eq!(
        &reply[22..28],
        &VMAC,
        "sender hardware address is the virtual MAC"
    );
    assert_eq!(&reply[28..32], &[10, 0, 0, 1]);

    let events = maps.drain_events();
    assert_eq!(events.len(), 1, "one advert event");
    assert_eq!(&events[0].src[..4], &[10, 0, 0, 12]);
    let s = maps.stats(1).expect("stats");
    assert_eq!(
        (s.ipackets, s.adverts_to_controller, s.arp_replies),
        (1, 1, 1)
    );

    // bpftool finds the pins through the stable path and prints the counters by field name.
    let dump = sh(&format!(
        "bpftool map dump pinned {}/cxva/carp_stats",
        bpffs.display()
    ));
    eprintln!(
        "bpftool map dump pinned .../cxva/carp_stats (vhid 1):\n{}",
        dump_entry(&dump, 1)
    );
    for field in ["ipackets", "badttl", "adverts_to_controller", "arp_replies"] {
        assert!(dump.contains(field), "bpftool output names {field}: {dump}");
    }
    // A second attach (a controller restart) adopts the pinned link instead of attaching twice.
    let dir = bpffs.clone();
    let adopted =
        gw.in_ns(move || Dataplane::attach("cxva", &dir, AttachMode::Auto).map(|d| d.adopted));
    assert!(adopted.expect("re-attach"), "the pinned link is adopted");
    assert!(
        gw.run("ip -d link show cxva").contains("xdpgeneric"),
        "still attached after adoption"
    );
    // Maps kept their contents across the adoption (the same pinned maps).
    let reopened = Maps::open_pinned(&bpffs, "cxva").expect("open pins");
    assert_eq!(reopened.stats(1).expect("stats").arp_replies, 1);

    drop(maps);
    drop(reopened);
    drop(dp);
    Dataplane::detach("cxva", &bpffs).expect("detach");
    let link = gw.run("ip link show cxva");
    assert!(!link.contains("xdp"), "detached: {link}");
    assert!(!bpffs.join("cxva").exists(), "stable symlink removed");
    let _ = std::fs::remove_dir_all(&bpffs);
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The part of a bpftool dump that belongs to one key, for the log.
fn dump_entry(dump: &str, key: u32) -> String {
    let marker = format!("\"key\": {key},");
    let start = dump.find(&marker).unwrap_or(0);
    dump[start..].chars().take(1800).collect()
}

/// Native mode on veth delivers XDP_TX frames only when the peer runs an XDP program too: with the
/// trivial pass program on the peer, the ARP reply arrives.
#[test]
fn native_mode_on_veth_with_xdp_on_the_peer_answers_arp() {
    if !require_root("native_mode_on_veth_with_xdp_on_the_peer_answers_arp") {
        return;
    }
    let bpffs = bpffs_dir("native");
    let gw = Netns::new("carpt-native-gw");
    let client = Netns::new("carpt-native-cl");
    sh(&format!(
        "ip link add cxna netns {} type veth peer name cxnb netns {}",
        gw.name, client.name
    ));
    gw.run("ip link set cxna up");
    client.run(&format!(
        "ip link set cxnb address {} && ip link set cxnb up",
        mac_str(CLIENT_MAC)
    ));
    let peer = client.in_ns(|| {
        let mut peer = Dataplane::load_unattached().expect("load");
        peer.pass_program()
            .expect("pass program")
            .attach("cxnb", aya::programs::XdpMode::Driver)
            .expect("native pass program on the peer");
        peer
    });
    let dir = bpffs.clone();
    let (dp, mut maps) = gw.in_ns(move || {
        let mut dp = Dataplane::attach("cxna", &dir, AttachMode::Native).expect("attach native");
        let maps = dp.maps().expect("maps");
        (dp, maps)
    });
    assert_eq!(dp.mode, aya::programs::XdpMode::Driver);
    assert!(
        gw.run("ip -d link show cxna").contains("xdp "),
        "native (driver) attachment"
    );
    maps.set_vhid(
        1,
        VhidEntry::new(VhidState::Master, BalanceMode::None, VMAC),
    )
    .expect("vhid");
    maps.add_vip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1)
        .expect("vip");
    let reply = client.in_ns(|| {
        let sock = PacketSocket::open("cxnb", 200);
        sock.send(&arp_request(
            CLIENT_MAC,
            [10, 0, 0, 100],
            [10, 0, 0, 1],
            None,
        ));
        sock.recv_until(Duration::from_secs(3), |f| {
            f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2]
        })
    });
    let reply = reply.expect("the native XDP_TX reply reached the peer");
    assert_eq!(&reply[22..28], &VMAC);
    drop(maps);
    drop(dp);
    drop(peer);
    Dataplane::detach("cxna", &bpffs).expect("detach");
    let _ = std::fs::remove_dir_all(&bpffs);
}
