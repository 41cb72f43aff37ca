//! carpnodes load balancing (spec §6) in the kernel through BPF_PROG_TEST_RUN: the L3 filter's verdict
//! and counters for thousands of IPv4 and IPv6 flows against a table computed here, symmetry, the ICMP
//! rules, genuine broadcast/multicast, `arp` mode (only the owner answers, with its own MAC) and the
//! interface MAC in the IP modes' ARP/NA replies. The bucket hash is written again below from the spec's
//! words (raw network-order words folded, then ntohl), not taken from carp::balance, so a mistake
//! shared by the product's two implementations cannot hide. Needs root (fails under CI=true when not).
use carp::dataplane::{Dataplane, maps::Maps};
use carp_common::maps::{
    BalanceGroup, BalanceMode, CarpStats, FLOW_LEARNED, FLOW_MODE_TRACK, FlowConf, FlowEntry,
    FlowKey, MAX_CARPNODES, VhidEntry, VhidState,
};
use carp_tests::{frames::*, require_root};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// The lowest vhid of the carp interface's carpnodes; node i has vhid LEADER + i.
const LEADER: u8 = 10;
const VIP: [u8; 4] = [10, 0, 0, 1];
const VIP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const NIC_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const CLIENT_MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// The spec's IPv4 hash: fold the raw network-order words, ntohl, modulo N.
fn spec_bucket_v4(src: [u8; 4], dst: [u8; 4], n: u32) -> u32 {
    let fold = u32::from_ne_bytes(src) ^ u32::from_ne_bytes(dst);
    u32::from_be(fold) % n
}

/// The spec's IPv6 hash: XOR of all four raw words of the source and all four of the destination.
fn spec_bucket_v6(src: [u8; 16], dst: [u8; 16], n: u32) -> u32 {
    let mut fold = 0u32;
    for a in [src, dst] {
        for w in a.chunks(4) {
            fold ^= u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
        }
    }
    u32::from_be(fold) % n
}

fn bit(mask: u32, i: u32) -> bool {
    (mask >> i) & 1 == 1
}

fn full_mask(n: u32) -> u32 {
    if n == 32 { u32::MAX } else { (1 << n) - 1 }
}

fn node_mac(vhid: u8) -> [u8; 6] {
    [0, 0, 0x5e, 0, 1, vhid]
}

fn interface_mac(mode: BalanceMode) -> [u8; 6] {
    let mut mac = node_mac(LEADER);
    if mode == BalanceMode::Ip {
        mac[0] = 1;
    }
    mac
}

/// xorshift64*: reproducible random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }
    /// A unicast IPv4 address (first octet 1..=223).
    fn v4(&mut self) -> [u8; 4] {
        let mut a = self.u32().to_be_bytes();
        a[0] = 1 + (a[0] % 223);
        a
    }
    /// A global unicast IPv6 address.
    fn v6(&mut self) -> [u8; 16] {
        let mut a = [0u8; 16];
        for c in a.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_be_bytes());
        }
        a[0] = 0x20 | (a[0] & 0x0f);
        a
    }
}

struct Lab {
    dp: Dataplane,
    maps: Maps,
}

impl Lab {
    fn new() -> Self {
        let mut dp = Dataplane::load_unattached().expect("load XDP object");
        let mut maps = dp.maps().expect("maps");
        maps.add_vip(IpAddr::V4(Ipv4Addr::from(VIP)), LEADER)
            .expect("vip");
        maps.add_vip(IpAddr::V6(Ipv6Addr::from(VIP6)), LEADER)
            .expect("vip6");
        Self { dp, maps }
    }

    /// Configures N carpnodes LEADER.. in `mode`, MASTER here where `mask` says, in both tables.
    fn configure(&mut self, mode: BalanceMode, n: u32, mask: u32) {
        let mut vhids = [0u8; MAX_CARPNODES];
        for (i, v) in vhids.iter_mut().enumerate().take(n as usize) {
            *v = LEADER + i as u8;
        }
        for i in 0..n {
            let state = if bit(mask, i) {
                VhidState::Master
            } else {
                VhidState::Backup
            };
            let vhid = LEADER + i as u8;
            self.maps
                .set_vhid(vhid, VhidEntry::new(state, mode, node_mac(vhid)))
                .expect("set vhid");
        }
        self.maps
            .set_balance(BalanceGroup {
                mode: mode as u8,
                nodes: n as u8,
                pad: [0; 2],
                local_mask: mask,
                lease_until_ns: 0,
                mac: interface_mac(mode),
                src_mac: NIC_MAC,
                vhids,
                pad2: [0; 4],
            })
            .expect("set balance group");
    }

    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        carp_tests::run_xdp(self.dp.program().expect("program"), frame)
    }

    fn stats(&self, vhid: u8) -> CarpStats {
        self.maps.stats(vhid).expect("stats")
    }

    /// Runs a frame that must reach the L3 filter: checks the verdict and that exactly the matching
    /// balance counter of the leader moved.
    fn expect_filtered(&mut self, frame: &[u8], accept: bool, what: &str) {
        let before = self.stats(LEADER);
        let (verdict, _) = self.run(frame);
        let after = self.stats(LEADER);
        let want = if accept { XDP_PASS } else { XDP_DROP };
        assert_eq!(verdict, want, "{what}: verdict");
        let moved = (
            after.balanced_pass - before.balanced_pass,
            after.balanced_drop - before.balanced_drop,
        );
        assert_eq!(
            moved,
            if accept { (1, 0) } else { (0, 1) },
            "{what}: counters"
        );
        assert_eq!(
            (after.vmac_passed, after.vmac_dropped),
            (before.vmac_passed, before.vmac_dropped),
            "{what}: the vmac filter never sees the interface MAC"
        );
    }

    /// Runs a frame the filter must leave alone: passed unchanged, no counter anywhere.
    fn expect_untouched(&mut self, frame: &[u8], what: &str) {
        let before: Vec<CarpStats> = (0..=255u8).map(|v| self.stats(v)).collect();
        assert_eq!(self.run(frame), (XDP_PASS, frame.to_vec()), "{what}");
        let after: Vec<CarpStats> = (0..=255u8).map(|v| self.stats(v)).collect();
        assert!(before == after, "{what}: no counter moved");
    }
}

fn ip4_frame(
    dmac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    payload: &[u8],
    vlan: Option<u16>,
) -> Vec<u8> {
    let mut f = eth(dmac, CLIENT_MAC, 0x0800, vlan);
    f.extend(ipv4(src, dst, proto, 64, payload.len()));
    f.extend_from_slice(payload);
    f
}

fn ip6_frame(dmac: [u8; 6], src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(dmac, CLIENT_MAC, 0x86dd, None);
    f.extend(ipv6(src, dst, next, 64, payload.len()));
    f.extend_from_slice(payload);
    f
}

/// An ICMP message with a correct checksum.
fn icmp(kind: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(rest);
    let c = inet_csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

const TCP: [u8; 20] = [0; 20];

/// Every verdict and counter of the L3 filter against the spec's hash, for IPv4 and IPv6, N in
/// {1, 2, 3, 5, 32}, random masks; both directions of each flow.
#[test]
fn l3_filter_matches_the_spec_table() {
    root_or_skip!("l3_filter_matches_the_spec_table");
    let mut lab = Lab::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mac = interface_mac(BalanceMode::Ip);
    let mut seen_pass = 0;
    let mut seen_drop = 0;
    for n in [1u32, 2, 3, 5, 32] {
        let masks = [
            full_mask(n),
            rng.u32() & full_mask(n),
            rng.u32() & full_mask(n),
        ];
        for mask in masks {
            lab.configure(BalanceMode::Ip, n, mask);
            for i in 0..60 {
                let (a, b) = (rng.v4(), rng.v4());
                let h = spec_bucket_v4(a, b, n);
                assert_eq!(h, spec_bucket_v4(b, a, n), "the hash is symmetric");
                let fwd = ip4_frame(mac, a, b, 6, &TCP, None);
                let rev = ip4_frame(mac, b, a, 6, &TCP, None);
                let what = format!("v4 {a:?} <-> {b:?} N={n} mask={mask:#x} bucket={h}");
                if i % 4 == 0 {
                    // Tagged, the same flow is another segment's (a VLAN on top of the
                    // carpdev): passed up, never filtered, whatever its bucket.
                    let tagged = ip4_frame(mac, a, b, 6, &TCP, Some(42));
                    let before = lab.stats(LEADER);
                    assert_eq!(lab.run(&tagged).0, XDP_PASS, "{what}: tagged");
                    assert_eq!(lab.stats(LEADER), before, "{what}: tagged, uncounted");
                }
                lab.expect_filtered(&fwd, bit(mask, h), &what);
                lab.expect_filtered(&rev, bit(mask, h), &what);
                if bit(mask, h) {
                    seen_pass += 1;
                } else {
                    seen_drop += 1;
                }
            }
            for _ in 0..60 {
                let (a, b) = (rng.v6(), rng.v6());
                let h = spec_bucket_v6(a, b, n);
                assert_eq!(h, spec_bucket_v6(b, a, n), "the hash is symmetric");
                let what = format!("v6 N={n} mask={mask:#x} bucket={h}");
                lab.expect_filtered(&ip6_frame(mac, a, b, 17, &[0; 8]), bit(mask, h), &what);
                lab.expect_filtered(&ip6_frame(mac, b, a, 17, &[0; 8]), bit(mask, h), &what);
            }
        }
    }
    assert!(
        seen_pass > 100 && seen_drop > 100,
        "both verdicts exercised"
    );
    // Counted in the leader's slot only.
    for vhid in (0..=255u8).filter(|v| *v != LEADER) {
        let s = lab.stats(vhid);
        assert_eq!((s.balanced_pass, s.balanced_drop), (0, 0), "vhid {vhid}");
    }
}

/// In ip-stealth and ip-unicast the interface MAC is the leader's unicast virtual MAC, taken in every
/// state (the vmac filter would drop it on a BACKUP leader); in `ip` mode that unicast MAC is not the
/// interface MAC and stays with the vmac filter. N = 0 drops everything.
#[test]
fn interface_mac_is_filtered_in_every_state() {
    root_or_skip!("interface_mac_is_filtered_in_every_state");
    let mut lab = Lab::new();
    let mut rng = Rng(7);
    for mode in [BalanceMode::IpStealth, BalanceMode::IpUnicast] {
        let mac = interface_mac(mode);
        // The leader (node 0) is BACKUP here; node 1 is MASTER here.
        lab.configure(mode, 2, 0b10);
        for _ in 0..40 {
            let (a, b) = (rng.v4(), rng.v4());
            let h = spec_bucket_v4(a, b, 2);
            lab.expect_filtered(
                &ip4_frame(mac, a, b, 6, &TCP, None),
                h == 1,
                &format!("{mode:?} bucket {h}"),
            );
        }
    }
    lab.configure(BalanceMode::Ip, 2, 0b10);
    let before = lab.stats(LEADER);
    let f = ip4_frame(
        node_mac(LEADER),
        [10, 0, 0, 100],
        [8, 8, 8, 8],
        6,
        &TCP,
        None,
    );
    assert_eq!(lab.run(&f).0, XDP_DROP, "the leader's vmac, leader BACKUP");
    let after = lab.stats(LEADER);
    assert_eq!(after.vmac_dropped - before.vmac_dropped, 1);
    assert_eq!(after.balanced_drop, before.balanced_drop);

    // N = 0 (which the controller's setter refuses) means drop.
    let mut g = lab.maps.balance(LEADER).expect("group");
    g.nodes = 0;
    lab.maps.balance.set(LEADER as u32, g, 0).expect("raw set");
    let f = ip4_frame(
        interface_mac(BalanceMode::Ip),
        [1; 4],
        [2; 4],
        6,
        &TCP,
        None,
    );
    lab.expect_filtered(&f, false, "N = 0");
    // A cleared group hands the interface MAC back: an `ip` MAC is plain multicast again.
    lab.maps.clear_balance(LEADER).expect("clear");
    lab.expect_untouched(&f, "cleared group");
}

/// ICMP echo to a VIP is for this host and exempt; ICMP to any other address is being forwarded and
/// filtered; ICMPv6 echo requests to a VIP are filtered, other ICMPv6 to a VIP is exempt.
#[test]
fn icmp_for_a_vip_is_exempt() {
    root_or_skip!("icmp_for_a_vip_is_exempt");
    let mut lab = Lab::new();
    let mac = interface_mac(BalanceMode::Ip);
    let client = [192, 0, 2, 7];
    let client6 = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 7).octets();
    let echo = icmp(8, 0, b"ping");
    for n in [2u32, 3, 5] {
        // Nothing local: only exempt traffic gets through.
        lab.configure(BalanceMode::Ip, n, 0);
        lab.expect_filtered(
            &ip4_frame(mac, client, VIP, 1, &echo, None),
            true,
            "echo to VIP",
        );
        lab.expect_filtered(
            &ip4_frame(mac, client, VIP, 1, &icmp(13, 0, &[0; 12]), None),
            true,
            "timestamp to VIP",
        );
        lab.expect_filtered(
            &ip4_frame(mac, client, [8, 8, 8, 8], 1, &echo, None),
            false,
            "echo forwarded",
        );
        lab.expect_filtered(
            &ip6_frame(mac, client6, VIP6, 58, &[128, 0, 0, 0, 0, 1, 0, 1]),
            false,
            "ICMPv6 echo request to VIP is filtered",
        );
        for kind in [1u8, 2, 3, 129, 136] {
            lab.expect_filtered(
                &ip6_frame(mac, client6, VIP6, 58, &[kind, 0, 0, 0, 0, 0, 0, 0]),
                true,
                &format!("ICMPv6 type {kind} to VIP"),
            );
        }
        // Everything local: the filter takes it all, exempt or not.
        lab.configure(BalanceMode::Ip, n, full_mask(n));
        lab.expect_filtered(
            &ip6_frame(mac, client6, VIP6, 58, &[128, 0, 0, 0, 0, 1, 0, 1]),
            true,
            "ICMPv6 echo request, all local",
        );
    }
}

/// IPv4 ICMP errors to a VIP are filtered on (inner destination, outer destination); errors being
/// forwarded, truncated errors and the like on (src, dst).
#[test]
fn icmp_errors_are_refiltered_on_inner_and_outer_destination() {
    root_or_skip!("icmp_errors_are_refiltered_on_inner_and_outer_destination");
    let mut lab = Lab::new();
    let mut rng = Rng(99);
    let mac = interface_mac(BalanceMode::Ip);
    let n = 5;
    let mut disagreeing = 0;
    for round in 0..200 {
        let mask = rng.u32() & full_mask(n);
        if round % 20 == 0 {
            lab.configure(BalanceMode::Ip, n, mask);
        }
        let mask = lab.maps.balance(LEADER).expect("group").local_mask;
        let (router, peer) = (rng.v4(), rng.v4());
        // The quoted packet: a UDP datagram the VIP sent to the peer.
        let mut quoted = ipv4(VIP, peer, 17, 64, 8);
        quoted.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 8, 0, 0]);
        let kind = [3u8, 4, 5, 11, 12][round % 5];
        let err = icmp(kind, 0, &quoted);
        let inner_outer = spec_bucket_v4(peer, VIP, n);
        let outer = spec_bucket_v4(router, VIP, n);
        if inner_outer != outer && bit(mask, inner_outer) != bit(mask, outer) {
            disagreeing += 1;
        }
        // The error lands on the node that owns the flow (VIP, peer).
        assert_eq!(inner_outer, spec_bucket_v4(VIP, peer, n));
        lab.expect_filtered(
            &ip4_frame(mac, router, VIP, 1, &err, None),
            bit(mask, inner_outer),
            &format!("type {kind} from {router:?} about {peer:?}"),
        );
        // The same error on its way to someone else is forwarded traffic.
        let other = rng.v4();
        lab.expect_filtered(
            &ip4_frame(mac, router, other, 1, &err, None),
            bit(mask, spec_bucket_v4(router, other, n)),
            "error being forwarded",
        );
        // Too short to quote a header: filtered on (src, dst).
        lab.expect_filtered(
            &ip4_frame(mac, router, VIP, 1, &icmp(kind, 0, &quoted[..12]), None),
            bit(mask, outer),
            "truncated error",
        );
    }
    assert!(
        disagreeing > 20,
        "the inner/outer rule was tested where it differs from (src, dst)"
    );
    // A non-first fragment of ICMP to a VIP carries no type: exempt.
    lab.configure(BalanceMode::Ip, n, 0);
    let mut frag = ip4_frame(mac, [192, 0, 2, 9], VIP, 1, &[0; 16], None);
    frag[14 + 6] = 0x00;
    frag[14 + 7] = 0xb9;
    lab.expect_filtered(&frag, true, "non-first ICMP fragment to VIP");
}

/// Genuine broadcast and multicast are never dropped or counted, whatever the mask; so are non-IP
/// frames and IP multicast/broadcast inside a frame to the interface MAC.
#[test]
fn broadcast_and_multicast_pass() {
    root_or_skip!("broadcast_and_multicast_pass");
    let mut lab = Lab::new();
    lab.configure(BalanceMode::Ip, 2, 0);
    let mac = interface_mac(BalanceMode::Ip);
    let a = [192, 0, 2, 7];
    let cases = [
        (
            "L2 broadcast",
            ip4_frame([0xff; 6], a, [192, 0, 2, 255], 17, &[0; 8], None),
        ),
        (
            "mDNS",
            ip4_frame(
                [1, 0, 0x5e, 0, 0, 0xfb],
                a,
                [224, 0, 0, 251],
                17,
                &[0; 8],
                None,
            ),
        ),
        (
            "an ip-mode-looking MAC of no group",
            ip4_frame(
                [1, 0, 0x5e, 0, 1, LEADER + 1],
                a,
                [224, 0, 1, 11],
                17,
                &[0; 8],
                None,
            ),
        ),
        (
            "IPv6 all-nodes",
            ip6_frame(
                [0x33, 0x33, 0, 0, 0, 1],
                [0x20; 16],
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                17,
                &[0; 8],
            ),
        ),
        (
            "IP multicast to the interface MAC",
            ip4_frame(mac, a, [224, 0, 1, 10], 17, &[0; 8], None),
        ),
        (
            "limited broadcast to the interface MAC",
            ip4_frame(mac, a, [255; 4], 17, &[0; 8], None),
        ),
        (
            "IPv6 multicast to the interface MAC",
            ip6_frame(
                mac,
                [0x20; 16],
                [0xff, 0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
                17,
                &[0; 8],
            ),
        ),
        ("non-IP to the interface MAC", {
            let mut f = eth(mac, CLIENT_MAC, 0x88b5, None);
            f.extend_from_slice(&[0; 46]);
            f
        }),
        ("IP header cut short", {
            let mut f = eth(mac, CLIENT_MAC, 0x0800, None);
            f.extend_from_slice(&[0x45, 0, 0, 20, 0, 0]);
            f
        }),
    ];
    for (what, frame) in cases {
        lab.expect_untouched(&frame, what);
    }
}

/// `arp` mode: of two hosts with complementary masks exactly one answers each requester, the owner
/// of ntohl(spa) % N, from and with its own node MAC, byte for byte; the other drops the request.
/// Frames to a node MAC are taken only where that node is MASTER.
#[test]
fn arp_mode_only_the_owner_answers() {
    root_or_skip!("arp_mode_only_the_owner_answers");
    let mut a = Lab::new();
    let mut b = Lab::new();
    let mut rng = Rng(2024);
    for n in [1u32, 2, 3, 5, 32] {
        let mask = rng.u32() & full_mask(n);
        a.configure(BalanceMode::Arp, n, mask);
        b.configure(BalanceMode::Arp, n, !mask & full_mask(n));
        for _ in 0..40 {
            let mut spa = rng.v4();
            if spa == VIP {
                spa[3] ^= 1;
            }
            let idx = ((spa[0] as u32) << 24
                | (spa[1] as u32) << 16
                | (spa[2] as u32) << 8
                | spa[3] as u32)
                % n;
            let node = LEADER + idx as u8;
            let req = arp_request(CLIENT_MAC, spa, VIP, None);
            let mut want = eth(CLIENT_MAC, node_mac(node), 0x0806, None);
            want.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
            want.extend_from_slice(&node_mac(node));
            want.extend_from_slice(&VIP);
            want.extend_from_slice(&CLIENT_MAC);
            want.extend_from_slice(&spa);
            let (owner, other) = if bit(mask, idx) {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let (ob, xb) = (owner.stats(node), other.stats(node));
            assert_eq!(
                owner.run(&req),
                (XDP_TX, want),
                "N={n} spa={spa:?}: the owner answers"
            );
            assert_eq!(
                other.run(&req).0,
                XDP_DROP,
                "N={n} spa={spa:?}: the other stays silent"
            );
            assert_eq!(owner.stats(node).arp_replies - ob.arp_replies, 1);
            assert_eq!(
                other.stats(node).arp_dropped_backup - xb.arp_dropped_backup,
                1
            );
        }
        // Traffic to node i's MAC is accepted where node i is MASTER.
        for i in 0..n {
            let f = ip4_frame(node_mac(LEADER + i as u8), [1; 4], [2; 4], 6, &TCP, None);
            let (va, vb) = (a.run(&f).0, b.run(&f).0);
            let want = if bit(mask, i) {
                (XDP_PASS, XDP_DROP)
            } else {
                (XDP_DROP, XDP_PASS)
            };
            assert_eq!((va, vb), want, "N={n} node {i}");
        }
    }
}

/// In the IP modes the leader's master answers ARP with the interface MAC as sender hardware address,
/// from the NIC's own MAC in `ip`/`ip-stealth` and from the interface MAC in `ip-unicast`; NA likewise.
/// A BACKUP leader stays silent.
#[test]
fn ip_mode_replies_carry_the_interface_mac() {
    root_or_skip!("ip_mode_replies_carry_the_interface_mac");
    let mut lab = Lab::new();
    let client = [10, 0, 0, 100];
    let client6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64).octets();
    for (mode, src) in [
        (BalanceMode::Ip, NIC_MAC),
        (BalanceMode::IpStealth, NIC_MAC),
        (
            BalanceMode::IpUnicast,
            interface_mac(BalanceMode::IpUnicast),
        ),
    ] {
        let hw = interface_mac(mode);
        lab.configure(mode, 3, 0b101);
        let (verdict, reply) = lab.run(&arp_request(CLIENT_MAC, client, VIP, None));
        let mut want = eth(CLIENT_MAC, src, 0x0806, None);
        want.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        want.extend_from_slice(&hw);
        want.extend_from_slice(&VIP);
        want.extend_from_slice(&CLIENT_MAC);
        want.extend_from_slice(&client);
        assert_eq!((verdict, reply), (XDP_TX, want), "{mode:?} ARP");

        let (verdict, na) = lab.run(&neighbour_solicit(CLIENT_MAC, client6, VIP6, true));
        assert_eq!(verdict, XDP_TX, "{mode:?} NA");
        assert_eq!(&na[0..6], &CLIENT_MAC);
        assert_eq!(&na[6..12], &src, "{mode:?} NA source");
        let msg = &na[54..];
        assert_eq!(&msg[24..26], &[2, 1]);
        assert_eq!(&msg[26..32], &hw, "{mode:?} NA target link-layer address");
        assert_eq!(icmp6_csum(VIP6, client6, msg), 0, "NA checksum verifies");

        // Leader BACKUP (node 2 still MASTER here): no answer.
        lab.configure(mode, 3, 0b100);
        assert_eq!(
            lab.run(&arp_request(CLIENT_MAC, client, VIP, None)).0,
            XDP_DROP,
            "{mode:?} BACKUP leader"
        );
    }
}

/// The local mask holds only while the group's MASTER lease runs (a killed controller's buckets stop
/// being taken about when its peers take them over): an expired lease drops every bucket in the IP
/// modes and silences the owner in `arp` mode; a live lease changes nothing.
#[test]
fn local_mask_follows_the_lease() {
    root_or_skip!("local_mask_follows_the_lease");
    let mut lab = Lab::new();
    let mut rng = Rng(99);
    let set_lease = |lab: &mut Lab, until: u64| {
        let mut g = lab.maps.balance(LEADER).expect("group");
        g.lease_until_ns = until;
        lab.maps.set_balance(g).expect("set");
    };
    for mode in [BalanceMode::Ip, BalanceMode::IpStealth] {
        let mac = interface_mac(mode);
        lab.configure(mode, 2, 0b11);
        for (until, accept) in [(u64::MAX, true), (1, false), (0, true)] {
            set_lease(&mut lab, until);
            for _ in 0..20 {
                let (a, b) = (rng.v4(), rng.v4());
                lab.expect_filtered(
                    &ip4_frame(mac, a, b, 6, &TCP, None),
                    accept,
                    &format!("{mode:?} lease {until}"),
                );
            }
        }
    }
    lab.configure(BalanceMode::Arp, 2, 0b11);
    let req = arp_request(CLIENT_MAC, [10, 0, 0, 7], VIP, None);
    set_lease(&mut lab, u64::MAX);
    assert_eq!(lab.run(&req).0, XDP_TX, "arp mode, live lease");
    set_lease(&mut lab, 1);
    assert_eq!(lab.run(&req).0, XDP_DROP, "arp mode, expired lease");
}

/// What the stack receives: an accepted `ip`-mode frame is re-addressed to the unicast twin of the
/// interface MAC (the carp interface's own MAC), the stealth/unicast MACs stay as they are, and in
/// `arp` mode a frame to a MASTER node's MAC is re-addressed to the MAC the controller gave the node
/// (the carp interface's). Nothing else in the frame changes.
#[test]
fn accepted_frames_are_addressed_to_the_carp_interface() {
    root_or_skip!("accepted_frames_are_addressed_to_the_carp_interface");
    let mut lab = Lab::new();
    for mode in [
        BalanceMode::Ip,
        BalanceMode::IpStealth,
        BalanceMode::IpUnicast,
    ] {
        lab.configure(mode, 1, 0b1);
        let f = ip4_frame(interface_mac(mode), [1; 4], [2; 4], 6, &TCP, None);
        let (verdict, out) = lab.run(&f);
        assert_eq!(verdict, XDP_PASS, "{mode:?}");
        assert_eq!(&out[..6], &node_mac(LEADER), "{mode:?} destination");
        assert_eq!(&out[6..], &f[6..], "{mode:?} rest unchanged");
    }
    lab.configure(BalanceMode::Arp, 2, 0b10);
    let node = LEADER + 1;
    lab.maps
        .set_vhid(
            node,
            VhidEntry::new(VhidState::Master, BalanceMode::Arp, node_mac(LEADER)),
        )
        .expect("set vhid");
    let f = ip4_frame(node_mac(node), [1; 4], [2; 4], 6, &TCP, None);
    let (verdict, out) = lab.run(&f);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(
        &out[..6],
        &node_mac(LEADER),
        "arp mode: to the carp interface"
    );
    assert_eq!(&out[6..], &f[6..]);
}

/// A TCP segment (ports, flags, no payload) to the interface MAC.
fn tcp_seg(mac: [u8; 6], src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    ip4_frame(mac, src, dst, 6, &t, None)
}

/// The `carp_flows` key of a TCP flow between two IPv4 endpoints (canonical order).
fn tcp_key(a: [u8; 4], ap: u16, b: [u8; 4], bp: u16) -> FlowKey {
    let ((lo, lp), (hi, hp)) = if (a, ap) <= (b, bp) {
        ((a, ap), (b, bp))
    } else {
        ((b, bp), (a, ap))
    };
    let mut k = FlowKey {
        proto: 6,
        family: 4,
        lo_port: lp,
        hi_port: hp,
        ..Default::default()
    };
    k.lo_addr[..4].copy_from_slice(&lo);
    k.hi_addr[..4].copy_from_slice(&hi);
    k
}

/// A client address whose flow to SERVER lands in bucket `want` of 2.
fn client_in_bucket(want: u32, from: u8) -> [u8; 4] {
    (from..=255)
        .map(|i| [10, 1, 0, i])
        .find(|c| spec_bucket_v4(*c, SERVER, 2) == want)
        .expect("a client in the bucket")
}

const SERVER: [u8; 4] = [192, 0, 2, 80];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// Established flows stay with the gateway that owns them (issue #7 item 1): every verdict of the
/// flow table overruling (or not) the bucket, with its counters, in the three IP modes. Node ids:
/// 1 is this gateway, 2 a live peer, 3 a peer that is gone.
#[test]
fn established_flows_stay_with_their_owner() {
    root_or_skip!("established_flows_stay_with_their_owner");
    let mut lab = Lab::new();
    let mut dev = lab.dp.flow_dev().expect("flow dev");
    let mut table = lab.dp.flow_table().expect("flow table");
    let conf = |sticky: u8, until: u64| FlowConf {
        mode: FLOW_MODE_TRACK,
        sticky,
        node_id: 1,
        live_until_ns: until,
        live_peers: [2, 0, 0, 0, 0, 0, 0, 0],
        ..Default::default()
    };
    let mut port = 1000u16;
    for mode in [
        BalanceMode::Ip,
        BalanceMode::IpStealth,
        BalanceMode::IpUnicast,
    ] {
        let mac = interface_mac(mode);
        dev.set_conf(conf(1, u64::MAX)).expect("conf");
        let c0 = client_in_bucket(0, 1);
        let c1 = client_in_bucket(1, 1);
        let mut flow = |_: &mut Lab| {
            port += 1;
            port
        };
        // Bucket 0 is ours: a SYN creates the flow here, owned by node 0 (vhid LEADER); a SYN in
        // bucket 1 is dropped and creates nothing.
        lab.configure(mode, 2, 0b01);
        let mine = flow(&mut lab);
        lab.expect_filtered(
            &tcp_seg(mac, c0, mine, SERVER, 80, SYN),
            true,
            "new, bucket ours",
        );
        let e = table.get(&tcp_key(c0, mine, SERVER, 80)).expect("created");
        assert_eq!(
            (e.creator, e.owner),
            (1, LEADER),
            "{mode:?}: creator and owner"
        );
        let theirs_new = flow(&mut lab);
        lab.expect_filtered(
            &tcp_seg(mac, c1, theirs_new, SERVER, 80, SYN),
            false,
            "new, bucket theirs",
        );
        assert!(
            table.get(&tcp_key(c1, theirs_new, SERVER, 80)).is_none(),
            "{mode:?}: not created"
        );

        // A live peer's flow (creator 2) and a gone peer's (creator 3), learned, both in bucket 1.
        let live = flow(&mut lab);
        let gone = flow(&mut lab);
        for (p, creator) in [(live, 2), (gone, 3)] {
            table
                .insert(
                    tcp_key(c1, p, SERVER, 80),
                    FlowEntry {
                        id: u64::from(p),
                        creator,
                        owner: LEADER + 1,
                        tcp_state: 3,
                        flags: FLOW_LEARNED,
                        ..Default::default()
                    },
                )
                .expect("learned");
        }

        // Bucket ownership flips: 0 to the peer, 1 to us.
        lab.configure(mode, 2, 0b10);
        let before = dev.stats().expect("stats");
        // Ours stays here, both directions.
        lab.expect_filtered(
            &tcp_seg(mac, c0, mine, SERVER, 80, ACK),
            true,
            "ours, bucket moved away",
        );
        lab.expect_filtered(
            &tcp_seg(mac, SERVER, 80, c0, mine, ACK),
            true,
            "ours, reply",
        );
        // A new flow in the bucket we lost is the peer's.
        let other = flow(&mut lab);
        lab.expect_filtered(
            &tcp_seg(mac, c0, other, SERVER, 80, SYN),
            false,
            "new, bucket moved away",
        );
        assert!(
            table.get(&tcp_key(c0, other, SERVER, 80)).is_none(),
            "{mode:?}: not created"
        );
        // The live peer keeps its flow although its bucket is ours now.
        lab.expect_filtered(
            &tcp_seg(mac, c1, live, SERVER, 80, ACK),
            false,
            "live peer's, bucket ours",
        );
        // The gone peer's flow is taken over by the bucket's new owner: us.
        lab.expect_filtered(
            &tcp_seg(mac, c1, gone, SERVER, 80, ACK),
            true,
            "gone peer's, bucket ours",
        );
        // A new flow in the bucket we gained is ours.
        let gained = flow(&mut lab);
        lab.expect_filtered(
            &tcp_seg(mac, c1, gained, SERVER, 80, SYN),
            true,
            "new, bucket gained",
        );
        let after = dev.stats().expect("stats");
        assert_eq!(after.kept_here - before.kept_here, 2, "{mode:?}: kept_here");
        assert_eq!(
            after.left_to_owner - before.left_to_owner,
            1,
            "{mode:?}: left_to_owner"
        );
        assert_eq!(after.new_flows - before.new_flows, 1, "{mode:?}: new_flows");

        // Our view of who is alive expired (our controller is gone): buckets only.
        dev.set_conf(conf(1, 1)).expect("conf");
        lab.expect_filtered(
            &tcp_seg(mac, c0, mine, SERVER, 80, ACK),
            false,
            "ours, view expired",
        );
        lab.expect_filtered(
            &tcp_seg(mac, c1, live, SERVER, 80, ACK),
            true,
            "live peer's, view expired",
        );
        // Stickiness off (no [pfsync]): buckets only.
        dev.set_conf(conf(0, u64::MAX)).expect("conf");
        lab.expect_filtered(
            &tcp_seg(mac, c0, mine, SERVER, 80, ACK),
            false,
            "ours, not sticky",
        );
        lab.expect_filtered(
            &tcp_seg(mac, c1, live, SERVER, 80, ACK),
            true,
            "live peer's, not sticky",
        );
        // Tracking off: the plain bucket filter, and nothing is created.
        dev.set_conf(FlowConf::default()).expect("conf");
        let off = flow(&mut lab);
        lab.expect_filtered(
            &tcp_seg(mac, c1, off, SERVER, 80, SYN),
            true,
            "tracking off, bucket ours",
        );
        lab.expect_filtered(
            &tcp_seg(mac, c0, mine, SERVER, 80, ACK),
            false,
            "tracking off, ours",
        );
        assert!(
            table.get(&tcp_key(c1, off, SERVER, 80)).is_none(),
            "{mode:?}: off creates nothing"
        );
    }
}

/// The same rule for IPv6: a flow created here stays after its bucket moved, a live peer's is left
/// to it although its bucket is ours.
#[test]
fn established_ipv6_flows_stay_with_their_owner() {
    root_or_skip!("established_ipv6_flows_stay_with_their_owner");
    let mut lab = Lab::new();
    let mut dev = lab.dp.flow_dev().expect("flow dev");
    let mut table = lab.dp.flow_table().expect("flow table");
    dev.set_conf(FlowConf {
        mode: FLOW_MODE_TRACK,
        sticky: 1,
        node_id: 1,
        live_until_ns: u64::MAX,
        live_peers: [2, 0, 0, 0, 0, 0, 0, 0],
        ..Default::default()
    })
    .expect("conf");
    let server: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80,
    ];
    let client = |want: u32| {
        (1..=255u8)
            .map(|i| {
                let mut a = server;
                a[5] = 1;
                a[15] = i;
                a
            })
            .find(|c| spec_bucket_v6(*c, server, 2) == want)
            .expect("a client in the bucket")
    };
    let (c0, c1) = (client(0), client(1));
    let seg = |src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, flags: u8| {
        let mut t = [0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        ip6_frame(interface_mac(BalanceMode::IpStealth), src, dst, 6, &t)
    };
    let key = |a: [u8; 16], ap: u16, b: [u8; 16], bp: u16| {
        let ((lo, lp), (hi, hp)) = if (a, ap) <= (b, bp) {
            ((a, ap), (b, bp))
        } else {
            ((b, bp), (a, ap))
        };
        FlowKey {
            lo_addr: lo,
            hi_addr: hi,
            lo_port: lp,
            hi_port: hp,
            proto: 6,
            family: 6,
            pad: [0; 2],
        }
    };
    lab.configure(BalanceMode::IpStealth, 2, 0b01);
    lab.expect_filtered(
        &seg(c0, 5000, server, 443, SYN),
        true,
        "v6 new, bucket ours",
    );
    let e = table.get(&key(c0, 5000, server, 443)).expect("created");
    assert_eq!((e.creator, e.owner), (1, LEADER));
    table
        .insert(
            key(c1, 5001, server, 443),
            FlowEntry {
                id: 9,
                creator: 2,
                owner: LEADER + 1,
                tcp_state: 3,
                flags: FLOW_LEARNED,
                ..Default::default()
            },
        )
        .expect("learned");
    lab.configure(BalanceMode::IpStealth, 2, 0b10);
    lab.expect_filtered(
        &seg(server, 443, c0, 5000, ACK),
        true,
        "v6 ours, bucket moved away",
    );
    lab.expect_filtered(
        &seg(c1, 5001, server, 443, ACK),
        false,
        "v6 live peer's, bucket ours",
    );
    lab.expect_filtered(
        &seg(c1, 5002, server, 443, SYN),
        true,
        "v6 new, bucket gained",
    );
    lab.expect_filtered(
        &seg(c0, 5003, server, 443, SYN),
        false,
        "v6 new, bucket lost",
    );
}
