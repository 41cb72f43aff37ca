//! The real XDP program in the kernel through BPF_PROG_TEST_RUN: every verdict and counter of advert
//! intake, the ARP and NS responder, the virtual-MAC filter, VLAN tags, truncation at every length and
//! unrelated traffic. Needs root (fails under CI=true when not root).
use carp::dataplane::{Dataplane, maps::Maps};
use carp_common::maps::{AdvertLimit, BalanceMode, CarpStats, VhidEntry, VhidState};
use carp_tests::{frames::*, require_root};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const VIP: [u8; 4] = [10, 0, 0, 1];
const VIP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const PEER: [u8; 4] = [10, 0, 0, 12];
const CLIENT_MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
const VMAC1: [u8; 6] = [0, 0, 0x5e, 0, 1, 1];

struct Lab {
    dp: Dataplane,
    maps: Maps,
}

impl Lab {
    fn new(state: VhidState) -> Self {
        let mut dp = Dataplane::load_unattached().expect("load XDP object");
        let mut maps = dp.maps().expect("maps");
        let lab_state = state;
        maps.set_vhid(1, entry(lab_state)).expect("set vhid");
        maps.add_vip(IpAddr::V4(Ipv4Addr::from(VIP)), 1)
            .expect("vip");
        maps.add_vip(IpAddr::V6(Ipv6Addr::from(VIP6)), 1)
            .expect("vip6");
        Self { dp, maps }
    }

    fn set_state(&mut self, state: VhidState) {
        self.maps.set_vhid(1, entry(state)).expect("set vhid");
    }

    /// Runs one frame; returns the verdict and the frame as the program left it.
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        carp_tests::run_xdp(self.dp.program().expect("program"), frame)
    }

    fn stats(&self, vhid: u8) -> CarpStats {
        self.maps.stats(vhid).expect("stats")
    }
}

fn entry(state: VhidState) -> VhidEntry {
    VhidEntry::new(state, BalanceMode::None, VMAC1)
}

fn good_carp(vhid: u8) -> Vec<u8> {
    carp_header(0x21, vhid, 100, 1, 0)
}

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

#[test]
fn good_ipv4_advert_reaches_the_controller() {
    root_or_skip!("good_ipv4_advert_reaches_the_controller");
    let mut lab = Lab::new(VhidState::Backup);
    let carp = carp_header(0x21, 1, 42, 1, 3);
    let (verdict, _) = lab.run(&advert_v4(PEER, 1, 255, &carp, None));
    assert_eq!(verdict, XDP_DROP, "adverts are consumed in XDP");
    let s = lab.stats(1);
    assert_eq!(
        (s.ipackets, s.adverts_to_controller, s.events_lost),
        (1, 1, 0)
    );
    let events = lab.maps.drain_events();
    assert_eq!(events.len(), 1);
    let ev = events[0];
    assert_eq!(ev.family, 4);
    assert_eq!(ev.ttl, 255);
    assert_eq!(ev.unicast, 0);
    assert_eq!(&ev.src[..4], &PEER);
    assert_eq!(&ev.dst[..4], &[224, 0, 0, 18]);
    assert_eq!(ev.src_mac, VMAC1);
    assert_eq!(&ev.carp[..], &carp[..]);
    assert!(ev.ktime_ns > 0);
    let last = lab.maps.last_advert(1).expect("last advert");
    assert_eq!(
        (last.advbase, last.advskew, last.demote, last.family),
        (1, 42, 3, 4)
    );
    assert_eq!(&last.src[..4], &PEER);
    assert_eq!(last.ktime_ns, ev.ktime_ns);
    // The header as received, for the controller to verify before its stall guard trusts it.
    assert_eq!(&last.carp[..], &carp[..]);
}

#[test]
fn good_ipv6_advert_reaches_the_controller() {
    root_or_skip!("good_ipv6_advert_reaches_the_controller");
    let mut lab = Lab::new(VhidState::Master);
    let src: [u8; 16] = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x12).octets();
    let (verdict, _) = lab.run(&advert_v6(src, 1, 255, &good_carp(1)));
    assert_eq!(verdict, XDP_DROP);
    let s = lab.stats(1);
    assert_eq!(
        (s.ipackets6, s.ipackets, s.adverts_to_controller),
        (1, 0, 1)
    );
    let ev = lab.maps.drain_events()[0];
    assert_eq!((ev.family, ev.src), (6, src));
}

#[test]
fn unicast_advert_is_marked_unicast() {
    root_or_skip!("unicast_advert_is_marked_unicast");
    let mut lab = Lab::new(VhidState::Backup);
    let mut f = eth([2, 0, 0, 0, 0, 11], VMAC1, 0x0800, None);
    let carp = good_carp(1);
    f.extend(ipv4(PEER, [10, 0, 0, 11], 112, 255, carp.len()));
    f.extend(carp);
    assert_eq!(lab.run(&f).0, XDP_DROP);
    assert_eq!(lab.maps.drain_events()[0].unicast, 1);
}

/// Each bad-advert reason moves exactly its own counter, drops the frame and hands nothing over.
#[test]
fn every_bad_advert_reason_is_counted_and_dropped() {
    root_or_skip!("every_bad_advert_reason_is_counted_and_dropped");
    let mut lab = Lab::new(VhidState::Backup);
    let good = advert_v4(PEER, 1, 255, &good_carp(1), None);
    let mut cases: Vec<(&str, Vec<u8>, CounterOf)> = Vec::new();
    cases.push((
        "badttl",
        advert_v4(PEER, 1, 254, &good_carp(1), None),
        |s| s.badttl,
    ));
    // IP total length says the payload is 30 bytes: too short for a CARP header.
    let mut short = eth([1, 0, 0x5e, 0, 0, 0x12], VMAC1, 0x0800, None);
    short.extend(ipv4(PEER, [224, 0, 0, 18], 112, 255, 30));
    short.extend(&good_carp(1)[..30]);
    cases.push(("badlen", short, |s| s.badlen));
    // IP header claims 36 bytes but the frame ends early.
    let mut trunc = good.clone();
    trunc.truncate(good.len() - 4);
    cases.push(("hdrops", trunc, |s| s.hdrops));
    let mut badsum = good.clone();
    let last = badsum.len() - 1;
    badsum[last] ^= 0xff;
    cases.push(("badsum", badsum, |s| s.badsum));
    cases.push((
        "badver",
        advert_v4(PEER, 1, 255, &carp_header(0x31, 1, 0, 1, 0), None),
        |s| s.badver,
    ));
    for (name, frame, field) in cases {
        let before = lab.stats(1);
        let (verdict, _) = lab.run(&frame);
        let after = lab.stats(1);
        assert_eq!(verdict, XDP_DROP, "{name}");
        assert_eq!(field(&after) - field(&before), 1, "{name} counted once");
        assert_eq!(
            after.ipackets - before.ipackets,
            1,
            "{name}: ipackets counts every CARP frame"
        );
        assert_eq!(
            after.adverts_to_controller, before.adverts_to_controller,
            "{name} not handed over"
        );
        let moved = total_errors(&after) - total_errors(&before);
        assert_eq!(moved, 1, "{name}: exactly one error counter moved");
    }
    assert!(lab.maps.drain_events().is_empty());
}

/// A protocol-112 frame for a vhid nobody configured here is someone else's (keepalived's VRRP on
/// the same NIC, another cluster): counted as badvhid and passed up untouched, whatever its length
/// or checksum (a VRRP advert is shorter than a CARP header). A configured vhid in INIT is ours and
/// not running: dropped, as before (issue #16 item 14).
#[test]
fn unknown_vhid_passes_up_and_init_vhid_is_dropped_both_as_badvhid() {
    root_or_skip!("unknown_vhid_passes_up_and_init_vhid_is_dropped_both_as_badvhid");
    let mut lab = Lab::new(VhidState::Init);
    assert_eq!(
        lab.run(&advert_v4(PEER, 9, 255, &good_carp(9), None)).0,
        XDP_PASS
    );
    assert_eq!(lab.stats(9).badvhid, 1);
    // A VRRPv2 advert (RFC 3768: 0x21, vrid 9, priority 100, one address, no auth): 20 bytes.
    let mut vrrp = vec![
        0x21, 9, 100, 1, 0, 1, 0, 0, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let c = inet_csum(&vrrp);
    vrrp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(
        [1, 0, 0x5e, 0, 0, 0x12],
        [0, 0, 0x5e, 0, 1, 9],
        0x0800,
        None,
    );
    f.extend(ipv4(PEER, [224, 0, 0, 18], 112, 255, vrrp.len()));
    f.extend(&vrrp);
    assert_eq!(
        lab.run(&f).0,
        XDP_PASS,
        "keepalived's advert reaches its socket"
    );
    assert_eq!(lab.stats(9).badvhid, 2);
    assert_eq!(lab.stats(9).badlen, 0, "not judged as CARP");
    assert_eq!(
        lab.run(&advert_v4(PEER, 1, 255, &good_carp(1), None)).0,
        XDP_DROP
    );
    assert_eq!(lab.stats(1).badvhid, 1, "INIT is not up and running");
    assert!(lab.maps.drain_events().is_empty());
}

/// The program sees its carpdev's own segment untagged (a VLAN carpdev gets its own program, and
/// sees its frames without the tag): a VLAN-tagged frame on it belongs to another segment, whose
/// vhid 1 and virtual MACs are not ours. Passed up untouched and uncounted (issue #16 item 14).
#[test]
fn vlan_tagged_frames_belong_to_another_segment_and_pass_untouched() {
    root_or_skip!("vlan_tagged_frames_belong_to_another_segment_and_pass_untouched");
    let mut lab = Lab::new(VhidState::Master);
    let before = lab.stats(1);
    let advert = advert_v4(PEER, 1, 255, &good_carp(1), Some(100));
    assert_eq!(lab.run(&advert), (XDP_PASS, advert.clone()));
    let req = arp_request(CLIENT_MAC, [10, 0, 0, 100], VIP, Some(100));
    assert_eq!(
        lab.run(&req),
        (XDP_PASS, req.clone()),
        "not answered for another segment"
    );
    assert_eq!(lab.stats(1), before, "nothing counted");
    assert!(lab.maps.drain_events().is_empty());
    lab.set_state(VhidState::Backup);
    let mut to_vmac = eth(VMAC1, CLIENT_MAC, 0x0800, Some(200));
    to_vmac.extend(ipv4([10, 0, 0, 100], [10, 0, 0, 1], 17, 64, 8));
    to_vmac.extend([0u8; 8]);
    assert_eq!(
        lab.run(&to_vmac).0,
        XDP_PASS,
        "another segment's vhid 1 MAC"
    );
}

/// An ARP request whose hardware type is not Ethernet (1) is not ours to answer (issue #16 item 14).
#[test]
fn arp_request_with_another_hardware_type_passes() {
    root_or_skip!("arp_request_with_another_hardware_type_passes");
    let mut lab = Lab::new(VhidState::Master);
    let mut req = arp_request(CLIENT_MAC, [10, 0, 0, 100], VIP, None);
    req[14..16].copy_from_slice(&6u16.to_be_bytes());
    assert_eq!(lab.run(&req).0, XDP_PASS);
    assert_eq!(lab.stats(1).arp_replies, 0);
}

/// A neighbour solicitation with a wrong ICMPv6 checksum is not answered (the kernel would drop it;
/// RFC 4861 7.1.1 makes a valid checksum part of a valid NS), as MASTER or BACKUP (issue #16 item 14).
#[test]
fn neighbour_solicit_with_a_bad_checksum_is_not_answered() {
    root_or_skip!("neighbour_solicit_with_a_bad_checksum_is_not_answered");
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64).octets();
    for state in [VhidState::Master, VhidState::Backup] {
        let mut lab = Lab::new(state);
        for slla in [true, false] {
            let mut ns = neighbour_solicit(CLIENT_MAC, src, VIP6, slla);
            ns[14 + 40 + 2] ^= 0x01;
            assert_eq!(lab.run(&ns).0, XDP_PASS, "{state:?} slla={slla}");
        }
        let s = lab.stats(1);
        assert_eq!((s.na_replies, s.arp_dropped_backup), (0, 0), "{state:?}");
    }
}

#[test]
fn arp_request_for_vip_as_master_gets_reply_byte_for_byte() {
    root_or_skip!("arp_request_for_vip_as_master_gets_reply_byte_for_byte");
    let mut lab = Lab::new(VhidState::Master);
    let req = arp_request(CLIENT_MAC, [10, 0, 0, 100], VIP, None);
    let (verdict, reply) = lab.run(&req);
    assert_eq!(verdict, XDP_TX);
    let mut want = eth(CLIENT_MAC, VMAC1, 0x0806, None);
    want.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    want.extend_from_slice(&VMAC1);
    want.extend_from_slice(&VIP);
    want.extend_from_slice(&CLIENT_MAC);
    want.extend_from_slice(&[10, 0, 0, 100]);
    assert_eq!(reply, want);
    assert_eq!(lab.stats(1).arp_replies, 1);
}

#[test]
fn arp_request_for_vip_as_backup_is_dropped() {
    root_or_skip!("arp_request_for_vip_as_backup_is_dropped");
    let mut lab = Lab::new(VhidState::Backup);
    let (verdict, _) = lab.run(&arp_request(CLIENT_MAC, [10, 0, 0, 100], VIP, None));
    assert_eq!(verdict, XDP_DROP);
    let s = lab.stats(1);
    assert_eq!((s.arp_dropped_backup, s.arp_replies), (1, 0));
    lab.set_state(VhidState::Init);
    assert_eq!(
        lab.run(&arp_request(CLIENT_MAC, [10, 0, 0, 100], VIP, None))
            .0,
        XDP_DROP
    );
}

#[test]
fn other_arp_passes_untouched() {
    root_or_skip!("other_arp_passes_untouched");
    let mut lab = Lab::new(VhidState::Master);
    let not_vip = arp_request(CLIENT_MAC, [10, 0, 0, 100], [10, 0, 0, 77], None);
    assert_eq!(lab.run(&not_vip), (XDP_PASS, not_vip.clone()));
    let gratuitous = arp_request(CLIENT_MAC, VIP, VIP, None);
    assert_eq!(lab.run(&gratuitous).0, XDP_PASS);
    let mut reply = arp_request(CLIENT_MAC, [10, 0, 0, 100], VIP, None);
    reply[21] = 2;
    assert_eq!(lab.run(&reply).0, XDP_PASS);
    assert_eq!(lab.stats(1), CarpStats::default());
}

fn check_na(reply: &[u8], dst_mac: [u8; 6], dst_ip: [u8; 16], flags: u8) {
    assert_eq!(reply.len(), 14 + 40 + 32);
    assert_eq!(&reply[0..6], &dst_mac);
    assert_eq!(&reply[6..12], &VMAC1);
    assert_eq!(&reply[12..14], &[0x86, 0xdd]);
    let ip = &reply[14..54];
    assert_eq!(&ip[4..6], &32u16.to_be_bytes());
    assert_eq!((ip[6], ip[7]), (58, 255));
    assert_eq!(&ip[8..24], &VIP6);
    assert_eq!(&ip[24..40], &dst_ip);
    let msg = &reply[54..];
    assert_eq!((msg[0], msg[1]), (136, 0));
    assert_eq!(msg[4], flags);
    assert_eq!(&msg[8..24], &VIP6);
    assert_eq!(&msg[24..32], &[2, 1, 0, 0, 0x5e, 0, 1, 1]);
    assert_eq!(icmp6_csum(VIP6, dst_ip, msg), 0, "ICMPv6 checksum verifies");
}

#[test]
fn neighbour_solicit_for_ipv6_vip_as_master_gets_na() {
    root_or_skip!("neighbour_solicit_for_ipv6_vip_as_master_gets_na");
    let mut lab = Lab::new(VhidState::Master);
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64).octets();
    for slla in [true, false] {
        let (verdict, reply) = lab.run(&neighbour_solicit(CLIENT_MAC, src, VIP6, slla));
        assert_eq!(verdict, XDP_TX, "slla={slla}");
        check_na(&reply, CLIENT_MAC, src, 0x60);
    }
    // A DAD probe from :: is answered to all-nodes without the solicited flag.
    let (verdict, reply) = lab.run(&neighbour_solicit(CLIENT_MAC, [0; 16], VIP6, false));
    assert_eq!(verdict, XDP_TX);
    let mut all_nodes = [0u8; 16];
    all_nodes[0] = 0xff;
    all_nodes[1] = 0x02;
    all_nodes[15] = 1;
    check_na(&reply, [0x33, 0x33, 0, 0, 0, 1], all_nodes, 0x20);
    assert_eq!(lab.stats(1).na_replies, 3);
}

#[test]
fn neighbour_solicit_for_ipv6_vip_as_backup_is_dropped() {
    root_or_skip!("neighbour_solicit_for_ipv6_vip_as_backup_is_dropped");
    let mut lab = Lab::new(VhidState::Backup);
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64).octets();
    assert_eq!(
        lab.run(&neighbour_solicit(CLIENT_MAC, src, VIP6, true)).0,
        XDP_DROP
    );
    assert_eq!(lab.stats(1).arp_dropped_backup, 1);
    let other = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99).octets();
    assert_eq!(
        lab.run(&neighbour_solicit(CLIENT_MAC, src, other, true)).0,
        XDP_PASS
    );
}

#[test]
fn frames_to_the_virtual_mac_are_taken_only_as_master() {
    root_or_skip!("frames_to_the_virtual_mac_are_taken_only_as_master");
    let mut lab = Lab::new(VhidState::Backup);
    let mut f = eth(VMAC1, CLIENT_MAC, 0x0800, None);
    f.extend(ipv4([10, 0, 0, 100], [8, 8, 8, 8], 17, 64, 8));
    f.extend_from_slice(&[0; 8]);
    assert_eq!(lab.run(&f).0, XDP_DROP);
    lab.set_state(VhidState::Master);
    assert_eq!(lab.run(&f).0, XDP_PASS);
    let s = lab.stats(1);
    assert_eq!((s.vmac_dropped, s.vmac_passed), (1, 1));
}

#[test]
fn unrelated_traffic_passes_untouched_and_uncounted() {
    root_or_skip!("unrelated_traffic_passes_untouched_and_uncounted");
    let mut lab = Lab::new(VhidState::Master);
    let mut tcp = eth([2, 1, 2, 3, 4, 5], CLIENT_MAC, 0x0800, None);
    tcp.extend(ipv4([10, 0, 0, 100], [10, 0, 0, 11], 6, 64, 20));
    tcp.extend_from_slice(&[0; 20]);
    let mut v6 = eth([2, 1, 2, 3, 4, 5], CLIENT_MAC, 0x86dd, None);
    v6.extend(ipv6([1; 16], [2; 16], 17, 64, 8));
    v6.extend_from_slice(&[0; 8]);
    let lldp = eth([1, 0x80, 0xc2, 0, 0, 0xe], CLIENT_MAC, 0x88cc, None);
    for f in [tcp, v6, lldp] {
        assert_eq!(lab.run(&f), (XDP_PASS, f.clone()));
    }
    for vhid in [0u8, 1] {
        assert_eq!(lab.stats(vhid), CarpStats::default());
    }
}

/// Every prefix (from 14 bytes) of every frame kind: never XDP_TX, never an event, and a CARP frame always moves
/// exactly one counter besides ipackets.
#[test]
fn frames_truncated_at_every_length() {
    root_or_skip!("frames_truncated_at_every_length");
    let mut lab = Lab::new(VhidState::Master);
    let frames = [
        advert_v4(PEER, 1, 255, &good_carp(1), None),
        advert_v4(PEER, 1, 255, &good_carp(1), Some(7)),
        advert_v6([0xfe; 16], 1, 255, &good_carp(1)),
        arp_request(CLIENT_MAC, [10, 0, 0, 100], VIP, None),
        neighbour_solicit(CLIENT_MAC, [0x20; 16], VIP6, true),
    ];
    for full in frames {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (EINVAL), as no NIC delivers one.
        for len in 14..full.len() {
            let before: u64 = (0..=255u8).map(|v| total_errors(&lab.stats(v))).sum();
            let (verdict, _) = lab.run(&full[..len]);
            assert_ne!(verdict, XDP_TX, "truncated to {len} must not be answered");
            let after: u64 = (0..=255u8).map(|v| total_errors(&lab.stats(v))).sum();
            assert!(
                after - before <= 1,
                "len {len}: at most one error counter per frame"
            );
        }
    }
    assert!(
        lab.maps.drain_events().is_empty(),
        "no truncated frame reached the controller"
    );
}

/// Reads one counter out of a counter set.
type CounterOf = fn(&CarpStats) -> u64;

fn total_errors(s: &CarpStats) -> u64 {
    s.badttl + s.badlen + s.hdrops + s.badsum + s.badver + s.badvhid
}

/// A MASTER entry whose lease ran out (its controller died) no longer answers ARP or takes frames to the
/// virtual MAC; a live lease does.
#[test]
fn expired_master_lease_acts_as_backup() {
    root_or_skip!("expired_master_lease_acts_as_backup");
    let mut lab = Lab::new(VhidState::Master);
    let req = arp_request(CLIENT_MAC, [10, 0, 0, 100], VIP, None);
    let mut to_vmac = eth(VMAC1, CLIENT_MAC, 0x0800, None);
    to_vmac.extend(ipv4([10, 0, 0, 100], [8, 8, 8, 8], 17, 64, 8));
    to_vmac.extend_from_slice(&[0; 8]);
    lab.maps
        .set_vhid(1, entry(VhidState::Master).with_lease(1))
        .expect("set vhid");
    assert_eq!(lab.run(&req).0, XDP_DROP);
    assert_eq!(lab.run(&to_vmac).0, XDP_DROP);
    let s = lab.stats(1);
    assert_eq!(
        (s.arp_replies, s.arp_dropped_backup, s.vmac_dropped),
        (0, 1, 1)
    );
    lab.maps
        .set_vhid(1, entry(VhidState::Master).with_lease(u64::MAX))
        .expect("set vhid");
    assert_eq!(lab.run(&req).0, XDP_TX);
    assert_eq!(lab.run(&to_vmac).0, XDP_PASS);
}

/// Runs `n` copies of a good advert for vhid 1 from `src`; returns how many were handed over.
fn adverts_from(lab: &mut Lab, src: [u8; 4], n: usize) -> u64 {
    let frame = advert_v4(src, 1, 255, &good_carp(1), None);
    let before = lab.stats(1).adverts_to_controller;
    for _ in 0..n {
        assert_eq!(lab.run(&frame).0, XDP_DROP);
    }
    lab.stats(1).adverts_to_controller - before
}

/// A source gets its burst, then nothing until its bucket refills at its rate; what is refused is counted
/// as events_ratelimited, never handed over and never recorded as the last advert.
#[test]
fn advert_rate_limit_burst_then_refill() {
    root_or_skip!("advert_rate_limit_burst_then_refill");
    let mut lab = Lab::new(VhidState::Backup);
    // 10 events/s and bursts of 5 per source; the vhid-wide bucket is out of the way.
    lab.maps
        .set_advert_limit(1, AdvertLimit::new(100_000, 100_000, 10, 5))
        .expect("limit");
    assert_eq!(
        adverts_from(&mut lab, PEER, 10),
        5,
        "the burst, then no more"
    );
    let s = lab.stats(1);
    assert_eq!((s.events_ratelimited, s.adverts_to_controller), (5, 5));
    assert_eq!(lab.maps.drain_events().len(), 5);
    // One token comes back every 100 ms after the burst: 250-299 ms later there are exactly two.
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert_eq!(adverts_from(&mut lab, PEER, 5), 2, "refilled at 10/s");
    assert_eq!(lab.stats(1).events_ratelimited, 8);
    assert_eq!(lab.maps.drain_events().len(), 2);
}

/// One source flooding spends only its own bucket: another source's adverts (the master's) still pass,
/// whichever of the two was heard first, and the flood does not overwrite the last advert.
#[test]
fn advert_rate_limit_one_source_flooding_another_passes() {
    root_or_skip!("advert_rate_limit_one_source_flooding_another_passes");
    const STRANGER: [u8; 4] = [10, 0, 0, 66];
    for master_first in [false, true] {
        let mut lab = Lab::new(VhidState::Backup);
        // Per source 10/s, bursts of 5; per vhid bursts of 12: the stranger alone could not drain it.
        lab.maps
            .set_advert_limit(1, AdvertLimit::new(10, 12, 10, 5))
            .expect("limit");
        if master_first {
            assert_eq!(adverts_from(&mut lab, PEER, 1), 1);
        }
        assert_eq!(adverts_from(&mut lab, STRANGER, 200), 5, "the flood is cut");
        for round in 0..3 {
            assert_eq!(
                adverts_from(&mut lab, PEER, 1),
                1,
                "master_first={master_first}: the master's advert {round} passes during the flood"
            );
            assert_eq!(adverts_from(&mut lab, STRANGER, 50), 0);
        }
        let last = lab.maps.last_advert(1).expect("last advert");
        assert_eq!(&last.src[..4], &PEER, "refused adverts are not recorded");
        let s = lab.stats(1);
        assert_eq!(s.events_ratelimited, 195 + 150);
        let events = lab.maps.drain_events();
        let from_master = events.iter().filter(|e| e.src[..4] == PEER).count();
        assert_eq!(from_master, 3 + master_first as usize);
    }
}

/// The vhid-wide bucket bounds what many sources together hand over, except the source that owns the
/// vhid's slot (the master), which a flood of spoofed sources therefore cannot crowd out.
#[test]
fn advert_rate_limit_per_vhid_bounds_all_sources_but_the_master() {
    root_or_skip!("advert_rate_limit_per_vhid_bounds_all_sources_but_the_master");
    let mut lab = Lab::new(VhidState::Backup);
    lab.maps
        .set_advert_limit(1, AdvertLimit::new(10, 8, 10, 3))
        .expect("limit");
    // The controller names the master once its advert authenticated.
    lab.maps
        .set_advert_owner(1, 4, padded(PEER))
        .expect("owner");
    assert_eq!(adverts_from(&mut lab, PEER, 1), 1, "the master");
    let passed: u64 = (1..=100u8)
        .map(|i| adverts_from(&mut lab, [10, 0, 1, i], 3))
        .sum();
    assert_eq!(passed, 8, "8 of 300 from 100 other sources");
    assert_eq!(lab.stats(1).events_ratelimited, 292);
    assert_eq!(
        adverts_from(&mut lab, PEER, 1),
        1,
        "the master still passes"
    );
    assert_eq!(adverts_from(&mut lab, [10, 0, 2, 1], 1), 0, "others do not");
}

/// An IPv4 address as the maps keep it (the first four of 16 bytes).
fn padded(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a);
    out
}

/// Only an authenticated advert earns the protected slot (issue #16 item 6): the kernel cannot check
/// the HMAC, so a wrong-password flood from many sources that starts before the master is heard takes
/// nothing (the slot stays unowned, every source held to the vhid bucket), and once the controller
/// names the master, its adverts pass through the flood again.
#[test]
fn advert_rate_limit_protected_slot_only_for_the_owner_the_controller_names() {
    root_or_skip!("advert_rate_limit_protected_slot_only_for_the_owner_the_controller_names");
    let mut lab = Lab::new(VhidState::Backup);
    lab.maps
        .set_advert_limit(1, AdvertLimit::new(10, 8, 10, 3))
        .expect("limit");
    let passed: u64 = (1..=100u8)
        .map(|i| adverts_from(&mut lab, [10, 0, 1, i], 3))
        .sum();
    assert_eq!(passed, 8, "8 of 300 from 100 sources");
    let limit = lab.maps.advert_limit(1).expect("limit");
    assert_eq!(
        limit.owner_family,
        0,
        "a source nobody authenticated took the slot: {:?}",
        &limit.owner_addr[..4]
    );
    assert_eq!(
        adverts_from(&mut lab, PEER, 1),
        0,
        "crowded out before it is named"
    );
    lab.maps
        .set_advert_owner(1, 4, padded(PEER))
        .expect("owner");
    for _ in 0..3 {
        assert_eq!(
            adverts_from(&mut lab, PEER, 1),
            1,
            "the named master passes"
        );
        assert_eq!(adverts_from(&mut lab, [10, 0, 1, 7], 1), 0);
    }
}

/// The default limits pass advbase 0 comfortably: four peers each advertising every 1/256 s for a
/// second lose nothing.
#[test]
fn advert_rate_limit_default_passes_advbase_zero_peers() {
    root_or_skip!("advert_rate_limit_default_passes_advbase_zero_peers");
    let mut lab = Lab::new(VhidState::Backup);
    assert_eq!(
        lab.maps.advert_limit(1).expect("limit").vhid_interval_ns,
        AdvertLimit::DEFAULT.vhid_interval_ns,
        "the loader sets the defaults"
    );
    let frames: Vec<Vec<u8>> = (1..=4u8)
        .map(|i| advert_v4([10, 0, 0, 10 + i], 1, 255, &good_carp(1), None))
        .collect();
    let start = std::time::Instant::now();
    for tick in 0..256u32 {
        for f in &frames {
            assert_eq!(lab.run(f).0, XDP_DROP);
        }
        if tick % 64 == 63 {
            lab.maps.drain_events();
        }
        let due = start + std::time::Duration::from_micros(1_000_000 * (tick as u64 + 1) / 256);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
    }
    let s = lab.stats(1);
    assert_eq!(
        (s.adverts_to_controller, s.events_ratelimited, s.events_lost),
        (1024, 0, 0)
    );
}

/// IPv6 sources are told apart by all 16 bytes: link-local addresses that differ only in the last byte
/// have their own buckets, in the owner's slot, the second slot and the hash alike.
#[test]
fn advert_rate_limit_ipv6_sources_differ_in_the_last_byte() {
    root_or_skip!("advert_rate_limit_ipv6_sources_differ_in_the_last_byte");
    let mut lab = Lab::new(VhidState::Backup);
    lab.maps
        .set_advert_limit(1, AdvertLimit::new(10, 100, 10, 4))
        .expect("limit");
    let a = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x12).octets();
    let b = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x13).octets();
    let handed = |lab: &mut Lab, src: [u8; 16], n: usize| {
        let before = lab.stats(1).adverts_to_controller;
        for _ in 0..n {
            assert_eq!(lab.run(&advert_v6(src, 1, 255, &good_carp(1))).0, XDP_DROP);
        }
        lab.stats(1).adverts_to_controller - before
    };
    // a takes the second slot, b's and c's buckets are in the hash.
    let c = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x14).octets();
    assert_eq!(handed(&mut lab, a, 20), 4, "a's burst");
    assert_eq!(handed(&mut lab, b, 20), 4, "b has its own bucket");
    assert_eq!(handed(&mut lab, c, 20), 4, "c has its own bucket");
    assert_eq!(handed(&mut lab, a, 5), 0);
    assert_eq!(handed(&mut lab, c, 5), 0);
    assert_eq!(lab.stats(1).events_ratelimited, 16 * 3 + 5 + 5);
    let last = lab.maps.last_advert(1).expect("last advert");
    assert_eq!((last.family, last.src), (6, c));
}

/// A full ring loses events (counted as events_lost, still recorded as the last advert); once drained,
/// adverts are handed over again from the next clock tick on.
#[test]
fn full_ring_counts_events_lost_and_recovers_after_a_drain() {
    root_or_skip!("full_ring_counts_events_lost_and_recovers_after_a_drain");
    let mut lab = Lab::new(VhidState::Backup);
    lab.maps
        .set_advert_limit(
            1,
            AdvertLimit::new(1_000_000_000, 1_000_000, 1_000_000_000, 1_000_000),
        )
        .expect("limit");
    // 256 KiB of 104-byte records (96 + the kernel's 8-byte header) hold 2520 events.
    let handed = adverts_from(&mut lab, PEER, 3000);
    let s = lab.stats(1);
    assert_eq!(handed, 2520, "the ring holds 2520 events");
    assert_eq!((s.events_lost, s.events_ratelimited), (480, 0));
    let last = lab.maps.last_advert(1).expect("last advert");
    assert!(last.ktime_ns >= lab.maps.drain_events()[2519].ktime_ns);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(adverts_from(&mut lab, PEER, 3), 3, "handed over again");
    assert_eq!(lab.maps.drain_events().len(), 3);
}

/// A VRRP master without Accept_Mode that does not own its addresses (RFC 9568 §6.4.3): packets to the
/// virtual addresses are dropped and counted, routed traffic through the virtual MAC and neighbour
/// discovery for the address pass; with Accept_Mode (the control) the same packet to the address passes.
#[test]
fn vrrp_master_without_accept_mode_drops_packets_to_its_addresses_only() {
    root_or_skip!("vrrp_master_without_accept_mode_drops_packets_to_its_addresses_only");
    use carp_common::vrrp::{VHID_MODE_NO_ACCEPT, VHID_MODE_VRRP3};
    let mut lab = Lab::new(VhidState::Master);
    let mut no_accept = entry(VhidState::Master);
    no_accept.mode |= VHID_MODE_VRRP3 | VHID_MODE_NO_ACCEPT;
    lab.maps.set_vhid(1, no_accept).expect("set vhid");
    let udp = |dst: [u8; 4]| {
        let mut f = eth(VMAC1, CLIENT_MAC, 0x0800, None);
        f.extend(ipv4([10, 0, 0, 100], dst, 17, 64, 8));
        f.extend_from_slice(&[0; 8]);
        f
    };
    let to_vip = udp(VIP);
    let routed = udp([8, 8, 8, 8]);
    let mut to_vip6 = eth(VMAC1, CLIENT_MAC, 0x86dd, None);
    to_vip6.extend(ipv6(
        [0xfe, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        VIP6,
        17,
        64,
        8,
    ));
    to_vip6.extend_from_slice(&[0; 8]);
    // A unicast neighbour solicitation (reachability probe) to the address, ICMPv6 type 135.
    let mut nud = eth(VMAC1, CLIENT_MAC, 0x86dd, None);
    nud.extend(ipv6(
        [0xfe, 0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        VIP6,
        58,
        255,
        24,
    ));
    nud.push(135);
    nud.extend_from_slice(&[0; 23]);
    assert_eq!(lab.run(&to_vip).0, XDP_DROP, "UDP to the VIP");
    assert_eq!(lab.run(&to_vip6).0, XDP_DROP, "UDP to the IPv6 VIP");
    assert_eq!(
        lab.run(&routed).0,
        XDP_PASS,
        "routed through the virtual MAC"
    );
    assert_ne!(lab.run(&nud).0, XDP_DROP, "neighbour discovery for the VIP");
    let s = lab.stats(1);
    assert_eq!(s.vrrp_not_accepted, 2, "{s:?}");
    // Control: Accept_Mode (or the owner) takes the same packet.
    let mut accept = entry(VhidState::Master);
    accept.mode |= VHID_MODE_VRRP3;
    lab.maps.set_vhid(1, accept).expect("set vhid");
    assert_eq!(
        lab.run(&to_vip).0,
        XDP_PASS,
        "UDP to the VIP with accept_mode"
    );
    assert_eq!(lab.stats(1).vrrp_not_accepted, 2);
}

/// A VRRP VRID with unicast peers takes an advert sent to this host's own address at any hop limit
/// (keepalived's IPv6 unicast adverts carry the default, not 255; carpd then accepts it only from a
/// configured peer); a group advert, or any advert to a VRID without unicast peers, still needs 255.
#[test]
fn vrrp_unicast_peers_take_unicast_adverts_at_any_hop_limit() {
    root_or_skip!("vrrp_unicast_peers_take_unicast_adverts_at_any_hop_limit");
    use carp_common::vrrp::{VHID_MODE_UNICAST_PEERS, VHID_MODE_VRRP3};
    let mut lab = Lab::new(VhidState::Backup);
    let peer = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12,
    ];
    let us = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
    ];
    let group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
    // VRRPv3 advert, VRID 1, priority 200, one address, 1 s (the checksum is carpd's to check).
    let mut vrrp = vec![0x31, 1, 200, 1, 0x00, 0x64, 0, 0];
    vrrp.extend_from_slice(&VIP6);
    let advert = |dst: [u8; 16], dst_mac: [u8; 6], hops: u8| {
        let mut f = eth(dst_mac, [0, 0, 0x5e, 0, 2, 1], 0x86dd, None);
        f.extend(ipv6(peer, dst, 112, hops, vrrp.len()));
        f.extend_from_slice(&vrrp);
        f
    };
    let own_mac = [0x02, 0, 0, 0, 0, 0x11];
    let group_mac = [0x33, 0x33, 0, 0, 0, 0x12];
    let mut with_peers = entry(VhidState::Backup);
    with_peers.mode |= VHID_MODE_VRRP3 | VHID_MODE_UNICAST_PEERS;
    lab.maps.set_vhid(1, with_peers).expect("set vhid");
    assert_eq!(
        lab.run(&advert(us, own_mac, 64)).0,
        XDP_PASS,
        "unicast, hop limit 64"
    );
    assert_eq!(lab.stats(1).badttl, 0);
    assert_eq!(
        lab.run(&advert(group, group_mac, 64)).0,
        XDP_DROP,
        "group, hop limit 64"
    );
    assert_eq!(lab.stats(1).badttl, 1);
    assert_eq!(
        lab.run(&advert(group, group_mac, 255)).0,
        XDP_PASS,
        "group, hop limit 255"
    );
    // Control: without unicast peers the same unicast advert is dropped for its hop limit.
    let mut plain = entry(VhidState::Backup);
    plain.mode |= VHID_MODE_VRRP3;
    lab.maps.set_vhid(1, plain).expect("set vhid");
    assert_eq!(
        lab.run(&advert(us, own_mac, 64)).0,
        XDP_DROP,
        "no unicast peers"
    );
    assert_eq!(lab.stats(1).badttl, 2);
}
