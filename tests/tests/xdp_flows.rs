//! The XDP flow table (issue #7) in the kernel through BPF_PROG_TEST_RUN: direction canonicalisation
//! (both directions, IPv4 and IPv6, land on one entry), per-direction counts, the TCP state followed
//! from the flags, events and their rate limit, and every verdict of stateful mode. Needs root.
use carp::dataplane::{
    Dataplane,
    flows::{FlowDev, FlowTable},
};
use carp_common::maps::{
    FLOW_DEFER_MAX_FRAME, FLOW_EVENT_DEFER, FLOW_EVENT_NEW, FLOW_EVENT_STATE, FLOW_LEARNED,
    FLOW_MODE_OFF, FLOW_MODE_STATEFUL, FLOW_MODE_TRACK, FlowConf, FlowEntry, FlowKey, FlowTcpState,
};
use carp_tests::{frames::*, require_root};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const INSIDE: [u8; 4] = [192, 168, 100, 50];
const OUTSIDE: [u8; 4] = [10, 0, 0, 100];

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

struct Lab {
    dp: Dataplane,
    table: FlowTable,
    dev: FlowDev,
}

impl Lab {
    fn new(mode: u8, inside: bool) -> Lab {
        let mut dp = Dataplane::load_unattached().expect("load XDP object");
        let table = dp.flow_table().expect("flow table");
        let mut dev = dp.flow_dev().expect("flow dev");
        dev.set_conf(FlowConf {
            mode,
            inside: u8::from(inside),
            owner: 3,
            node_id: 77,
            events_per_ms: 0,
            ..Default::default()
        })
        .expect("conf");
        Lab { dp, table, dev }
    }

    fn set(&mut self, f: impl FnOnce(&mut FlowConf)) {
        let mut c = self.dev.conf().expect("conf");
        f(&mut c);
        self.dev.set_conf(c).expect("conf");
    }

    fn run(&mut self, frame: &[u8]) -> u32 {
        carp_tests::run_xdp(self.dp.program().expect("program"), frame).0
    }
}

/// An IPv4 frame with a TCP header (`flags`) and `payload` bytes.
fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut f = eth(MAC_B, MAC_A, 0x0800, None);
    f.extend(ipv4(src, dst, 6, 64, 20 + payload));
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    f.extend(t);
    f.extend(std::iter::repeat_n(0u8, payload));
    f
}

fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
    let mut f = eth(MAC_B, MAC_A, 0x0800, None);
    f.extend(ipv4(src, dst, 17, 64, 8 + payload));
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend(u);
    f.extend(std::iter::repeat_n(0u8, payload));
    f
}

fn icmp4(src: [u8; 4], dst: [u8; 4], ty: u8, id: u16) -> Vec<u8> {
    let mut f = eth(MAC_B, MAC_A, 0x0800, None);
    f.extend(ipv4(src, dst, 1, 64, 8));
    f.extend([ty, 0, 0, 0]);
    f.extend(id.to_be_bytes());
    f.extend([0, 1]);
    f
}

fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> Vec<u8> {
    let mut f = eth(MAC_B, MAC_A, 0x86dd, None);
    f.extend(ipv6(src, dst, 17, 64, 8));
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    f.extend(u);
    f
}

fn key4(proto: u8, a: [u8; 4], ap: u16, b: [u8; 4], bp: u16) -> FlowKey {
    let mut k = FlowKey {
        proto,
        family: 4,
        ..Default::default()
    };
    // Canonical: the lower (address, port) first.
    let ((lo, lp), (hi, hp)) = if (a, ap) <= (b, bp) {
        ((a, ap), (b, bp))
    } else {
        ((b, bp), (a, ap))
    };
    k.lo_addr[..4].copy_from_slice(&lo);
    k.hi_addr[..4].copy_from_slice(&hi);
    k.lo_port = lp;
    k.hi_port = hp;
    k
}

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

#[test]
fn both_directions_land_on_one_entry_with_per_direction_counts() {
    root_or_skip!("both_directions_land_on_one_entry_with_per_direction_counts");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    // 192.168.100.50:40000 > 10.0.0.100:5001, so the inside client is `hi`: its packets count in [1].
    assert_eq!(lab.run(&udp4(INSIDE, 40000, OUTSIDE, 5001, 100)), XDP_PASS);
    assert_eq!(lab.run(&udp4(OUTSIDE, 5001, INSIDE, 40000, 10)), XDP_PASS);
    assert_eq!(lab.run(&udp4(OUTSIDE, 5001, INSIDE, 40000, 10)), XDP_PASS);
    let flows = lab.table.scan();
    assert_eq!(flows.len(), 1, "one entry for both directions: {flows:?}");
    let (k, e) = flows[0];
    assert_eq!(k, key4(17, INSIDE, 40000, OUTSIDE, 5001));
    assert_eq!(k.lo_addr[..4], OUTSIDE);
    assert_eq!(e.packets, [2, 1]);
    assert_eq!(e.bytes, [2 * (20 + 8 + 10), 20 + 8 + 100]);
    assert_eq!((e.creator, e.owner, e.flags & FLOW_LEARNED), (77, 3, 0));
    assert_eq!(e.tcp_state, FlowTcpState::None as u8);
    assert_ne!(e.id, 0);
    assert!(e.created_ns > 0 && e.last_seen_ns >= e.created_ns);
    // Same addresses, the port decides the order.
    let a = [10, 0, 0, 5];
    lab.run(&udp4(a, 9, a, 7, 0));
    lab.run(&udp4(a, 7, a, 9, 0));
    let e = lab
        .table
        .get(&key4(17, a, 9, a, 7))
        .expect("same-address flow");
    assert_eq!(e.packets, [1, 1]);
    // IPv6 and ICMP echo (the id is both ports).
    let mut s6 = [0u8; 16];
    let mut d6 = [0u8; 16];
    s6[0] = 0x20;
    s6[15] = 9;
    d6[0] = 0x20;
    d6[15] = 1;
    lab.run(&udp6(s6, 1000, d6, 53));
    lab.run(&udp6(d6, 53, s6, 1000));
    let v6: Vec<_> = lab
        .table
        .scan()
        .into_iter()
        .filter(|(k, _)| k.family == 6)
        .collect();
    assert_eq!(v6.len(), 1);
    assert_eq!(v6[0].0.lo_addr, d6);
    assert_eq!(v6[0].1.packets, [1, 1]);
    lab.run(&icmp4(INSIDE, OUTSIDE, 8, 0x1234));
    lab.run(&icmp4(OUTSIDE, INSIDE, 0, 0x1234));
    let e = lab
        .table
        .get(&key4(1, INSIDE, 0x1234, OUTSIDE, 0x1234))
        .expect("echo flow");
    assert_eq!(e.packets, [1, 1]);
    assert_eq!(lab.table.scan().len(), 4);
    let s = lab.dev.stats().expect("stats");
    assert_eq!((s.new_flows, s.known), (4, 5));
}

#[test]
fn tcp_state_follows_the_flags_and_events_report_it() {
    root_or_skip!("tcp_state_follows_the_flags_and_events_report_it");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    let k = key4(6, INSIDE, 40000, OUTSIDE, 80);
    let state = |lab: &Lab| FlowTcpState::from_u8(lab.table.get(&k).expect("flow").tcp_state);
    lab.run(&tcp4(INSIDE, 40000, OUTSIDE, 80, SYN, 0));
    assert_eq!(state(&lab), FlowTcpState::Syn);
    lab.run(&tcp4(OUTSIDE, 80, INSIDE, 40000, SYN | ACK, 0));
    assert_eq!(state(&lab), FlowTcpState::SynAck);
    lab.run(&tcp4(INSIDE, 40000, OUTSIDE, 80, ACK, 0));
    assert_eq!(state(&lab), FlowTcpState::Established);
    lab.run(&tcp4(OUTSIDE, 80, INSIDE, 40000, ACK, 1000));
    assert_eq!(state(&lab), FlowTcpState::Established);
    // A stray SYN-ACK does not move an established flow back.
    lab.run(&tcp4(OUTSIDE, 80, INSIDE, 40000, SYN | ACK, 0));
    assert_eq!(state(&lab), FlowTcpState::Established);
    lab.run(&tcp4(INSIDE, 40000, OUTSIDE, 80, FIN | ACK, 0));
    assert_eq!(state(&lab), FlowTcpState::Fin);
    lab.run(&tcp4(OUTSIDE, 80, INSIDE, 40000, FIN | ACK, 0));
    assert_eq!(state(&lab), FlowTcpState::Closed);
    let events = lab.table.drain_events(100);
    let kinds: Vec<(u8, u8)> = events.iter().map(|e| (e.kind, e.entry.tcp_state)).collect();
    assert_eq!(
        kinds,
        vec![
            (FLOW_EVENT_NEW, FlowTcpState::Syn as u8),
            (FLOW_EVENT_STATE, FlowTcpState::SynAck as u8),
            (FLOW_EVENT_STATE, FlowTcpState::Established as u8),
            (FLOW_EVENT_STATE, FlowTcpState::Fin as u8),
            (FLOW_EVENT_STATE, FlowTcpState::Closed as u8),
        ],
        "one event per new flow and per state change, none per packet"
    );
    assert!(events.iter().all(|e| e.key == k));
    // The ports are reused by a new connection: a fresh flow with a new id.
    let old_id = lab.table.get(&k).expect("flow").id;
    lab.run(&tcp4(INSIDE, 40000, OUTSIDE, 80, SYN, 0));
    let e = lab.table.get(&k).expect("flow");
    assert_eq!(FlowTcpState::from_u8(e.tcp_state), FlowTcpState::Syn);
    assert_ne!(e.id, old_id);
    assert_eq!(e.packets, [0, 1]);
    // RST closes at once.
    lab.run(&tcp4(OUTSIDE, 80, INSIDE, 40000, RST, 0));
    assert_eq!(state(&lab), FlowTcpState::Closed);
    // A flow picked up mid-stream (tracking mode) counts as established.
    lab.run(&tcp4(INSIDE, 40001, OUTSIDE, 80, ACK, 10));
    let e = lab
        .table
        .get(&key4(6, INSIDE, 40001, OUTSIDE, 80))
        .expect("mid-stream flow");
    assert_eq!(
        FlowTcpState::from_u8(e.tcp_state),
        FlowTcpState::Established
    );
}

#[test]
fn defer_hands_the_first_packet_to_the_controller_and_drops_it() {
    root_or_skip!("defer_hands_the_first_packet_to_the_controller_and_drops_it");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    lab.set(|c| c.defer = 1);
    let first = udp4(INSIDE, 5353, OUTSIDE, 53, 100);
    assert_eq!(lab.run(&first), XDP_DROP, "the first packet is deferred");
    let k = key4(17, INSIDE, 5353, OUTSIDE, 53);
    let e = lab
        .table
        .get(&k)
        .expect("the flow exists before the peer has it");
    let events = lab.table.drain_events_with_frames(100);
    assert_eq!(
        events.len(),
        1,
        "one record stands for the new flow and its packet"
    );
    let (ev, frame) = &events[0];
    assert_eq!(ev.kind, FLOW_EVENT_DEFER);
    assert_eq!(ev.key, k);
    assert_eq!(ev.entry.id, e.id);
    let frame = frame.as_ref().expect("the deferred frame");
    assert_eq!(frame.frame, first, "the exact frame");
    // test_run's frames arrive on the namespace's loopback.
    assert_eq!(frame.ifindex, 1);
    // Later packets of the flow, either direction, pass as usual.
    assert_eq!(lab.run(&udp4(INSIDE, 5353, OUTSIDE, 53, 10)), XDP_PASS);
    assert_eq!(lab.run(&udp4(OUTSIDE, 53, INSIDE, 5353, 10)), XDP_PASS);
    // So does the first packet re-injected (generic XDP sees it again): the flow is known by then.
    assert_eq!(lab.run(&first), XDP_PASS);
    assert!(lab.table.drain_events(100).is_empty());
    // A TCP SYN is deferred the same way.
    let syn = tcp4(INSIDE, 40000, OUTSIDE, 80, SYN, 0);
    assert_eq!(lab.run(&syn), XDP_DROP);
    let events = lab.table.drain_events_with_frames(100);
    assert_eq!(events[0].0.kind, FLOW_EVENT_DEFER);
    assert_eq!(events[0].1.as_ref().expect("frame").frame, syn);
    assert_eq!(
        lab.run(&tcp4(OUTSIDE, 80, INSIDE, 40000, SYN | ACK, 0)),
        XDP_PASS
    );
    let s = lab.dev.stats().expect("stats");
    assert_eq!(
        (s.deferred, s.defer_oversize, s.defer_lost),
        (2, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.new_flows, 2);
}

#[test]
fn defer_passes_oversize_frames_and_is_off_by_default() {
    root_or_skip!("defer_passes_oversize_frames_and_is_off_by_default");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    // Off: the first packet passes and the event is the usual new-flow one, without a frame.
    assert_eq!(lab.run(&udp4(INSIDE, 1000, OUTSIDE, 53, 10)), XDP_PASS);
    let events = lab.table.drain_events_with_frames(100);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.kind, FLOW_EVENT_NEW);
    assert!(events[0].1.is_none());
    lab.set(|c| c.defer = 1);
    // The largest frame deferred, and one byte more, which passes undeferred (counted).
    let max = udp4(INSIDE, 1001, OUTSIDE, 53, FLOW_DEFER_MAX_FRAME - 42);
    assert_eq!(max.len(), FLOW_DEFER_MAX_FRAME);
    assert_eq!(lab.run(&max), XDP_DROP);
    let big = udp4(INSIDE, 1002, OUTSIDE, 53, FLOW_DEFER_MAX_FRAME - 41);
    assert_eq!(lab.run(&big), XDP_PASS);
    let events = lab.table.drain_events_with_frames(100);
    let kinds: Vec<u8> = events.iter().map(|e| e.0.kind).collect();
    assert_eq!(kinds, vec![FLOW_EVENT_DEFER, FLOW_EVENT_NEW]);
    assert_eq!(events[0].1.as_ref().expect("frame").frame, max);
    assert!(
        lab.table
            .get(&key4(17, INSIDE, 1002, OUTSIDE, 53))
            .is_some()
    );
    let s = lab.dev.stats().expect("stats");
    assert_eq!((s.deferred, s.defer_oversize), (1, 1), "{s:?}");
    // Off again: unchanged behaviour.
    lab.set(|c| c.defer = 0);
    assert_eq!(lab.run(&udp4(INSIDE, 1003, OUTSIDE, 53, 10)), XDP_PASS);
    assert_eq!(lab.dev.stats().expect("stats").deferred, 1);
}

#[test]
fn defer_passes_the_first_packet_when_the_event_ring_is_full() {
    root_or_skip!("defer_passes_the_first_packet_when_the_event_ring_is_full");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    lab.set(|c| c.defer = 1);
    // Nobody drains the ring: full-size deferred frames fill its 1 MiB within about 650 new flows.
    let frame = |port: u16| udp4(INSIDE, port, OUTSIDE, 53, FLOW_DEFER_MAX_FRAME - 42);
    let mut deferred = 0u16;
    let passed_at = loop {
        assert!(deferred < 5000, "the ring never filled");
        let port = 10000 + deferred;
        match lab.run(&frame(port)) {
            XDP_DROP => deferred += 1,
            XDP_PASS => break port,
            v => panic!("unexpected verdict {v}"),
        }
    };
    assert!(
        deferred > 100,
        "only {deferred} frames fit before the ring was full"
    );
    // The frame that found the ring full went on undeferred, and its flow exists all the same.
    assert!(
        lab.table
            .get(&key4(17, INSIDE, passed_at, OUTSIDE, 53))
            .is_some()
    );
    let s = lab.dev.stats().expect("stats");
    assert_eq!(
        (s.deferred, s.defer_lost),
        (u64::from(deferred), 1),
        "{s:?}"
    );
    assert_eq!(s.new_flows, u64::from(deferred) + 1, "{s:?}");
    // Its new-flow event (smaller than a deferral) went into what room was left, or was counted lost:
    // never silently. `events` counts the deferrals too.
    assert_eq!(s.events + s.events_lost, u64::from(deferred) + 1, "{s:?}");
    // Every deferred frame is in the ring, in order; once drained, deferral works again.
    let events = lab.table.drain_events_with_frames(10_000);
    let held: Vec<_> = events
        .iter()
        .filter(|(ev, _)| ev.kind == FLOW_EVENT_DEFER)
        .collect();
    assert_eq!(held.len(), usize::from(deferred));
    assert_eq!(
        held.last()
            .and_then(|(_, f)| f.as_ref())
            .expect("frame")
            .frame,
        frame(passed_at - 1)
    );
    assert_eq!(lab.run(&frame(passed_at + 1)), XDP_DROP);
    assert_eq!(lab.dev.stats().expect("stats").defer_lost, 1);
}

#[test]
fn events_are_rate_limited_per_cpu_and_counted() {
    root_or_skip!("events_are_rate_limited_per_cpu_and_counted");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    lab.set(|c| c.events_per_ms = 3);
    for port in 0..20u16 {
        lab.run(&udp4(INSIDE, 20000 + port, OUTSIDE, 53, 0));
    }
    let s = lab.dev.stats().expect("stats");
    assert_eq!(s.new_flows, 20, "every flow is tracked");
    // test_run frames all come within a few ms: at most 3 per ms get through.
    assert!(s.events >= 3 && s.events < 20, "rate limit applies: {s:?}");
    assert_eq!(s.events + s.events_ratelimited, 20, "{s:?}");
    assert_eq!(lab.table.drain_events(100).len() as u64, s.events);
    assert_eq!(lab.table.scan().len(), 20);
}

#[test]
fn stateful_verdicts() {
    root_or_skip!("stateful_verdicts");
    // The outside carpdev: nothing new may start here.
    let mut out = Lab::new(FLOW_MODE_STATEFUL, false);
    assert_eq!(out.run(&tcp4(OUTSIDE, 5555, INSIDE, 22, SYN, 0)), XDP_DROP);
    assert_eq!(out.run(&udp4(OUTSIDE, 5555, INSIDE, 53, 0)), XDP_DROP);
    assert_eq!(out.run(&icmp4(OUTSIDE, INSIDE, 8, 1)), XDP_DROP);
    assert_eq!(out.run(&tcp4(OUTSIDE, 5555, INSIDE, 22, ACK, 0)), XDP_DROP);
    // Other protocols are dropped; ICMP errors pass untracked.
    let mut gre = eth(MAC_B, MAC_A, 0x0800, None);
    gre.extend(ipv4(OUTSIDE, INSIDE, 47, 64, 4));
    gre.extend([0u8; 4]);
    assert_eq!(out.run(&gre), XDP_DROP);
    assert_eq!(out.run(&icmp4(OUTSIDE, INSIDE, 3, 0)), XDP_PASS);
    let mut igmp = eth(MAC_B, MAC_A, 0x0800, None);
    igmp.extend(ipv4(OUTSIDE, [224, 0, 0, 1], 2, 1, 8));
    igmp.extend([0x11, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(out.run(&igmp), XDP_PASS, "IGMP is the link's control plane");
    // A flow the cluster knows (here: learned from a peer) passes, in both directions.
    let k = key4(6, INSIDE, 40000, OUTSIDE, 80);
    out.table
        .insert(
            k,
            FlowEntry {
                id: 5,
                creator: 9,
                tcp_state: FlowTcpState::Established as u8,
                flags: FLOW_LEARNED,
                ..Default::default()
            },
        )
        .expect("insert");
    assert_eq!(
        out.run(&tcp4(OUTSIDE, 80, INSIDE, 40000, ACK, 100)),
        XDP_PASS
    );
    assert_eq!(out.run(&tcp4(INSIDE, 40000, OUTSIDE, 80, ACK, 0)), XDP_PASS);
    let e = out.table.get(&k).expect("flow");
    assert_eq!(e.packets, [1, 1]);
    assert_eq!((e.id, e.creator, e.flags), (5, 9, FLOW_LEARNED));
    let s = out.dev.stats().expect("stats");
    assert_eq!(
        (
            s.stateful_drop,
            s.proto_drop,
            s.untracked_pass,
            s.known,
            s.new_flows
        ),
        (4, 1, 2, 2, 0)
    );
    assert_eq!(out.table.scan().len(), 1, "drops create no flows");

    // The inside carpdev: new TCP SYNs and new UDP/ICMP flows start here; a bare ACK does not.
    let mut inside = Lab::new(FLOW_MODE_STATEFUL, true);
    assert_eq!(
        inside.run(&tcp4(INSIDE, 40000, OUTSIDE, 80, ACK, 0)),
        XDP_DROP
    );
    assert_eq!(
        inside.run(&tcp4(INSIDE, 40000, OUTSIDE, 80, SYN | ACK, 0)),
        XDP_DROP
    );
    assert_eq!(
        inside.run(&tcp4(INSIDE, 40000, OUTSIDE, 80, SYN, 0)),
        XDP_PASS
    );
    assert_eq!(inside.run(&udp4(INSIDE, 40000, OUTSIDE, 53, 0)), XDP_PASS);
    assert_eq!(inside.run(&icmp4(INSIDE, OUTSIDE, 8, 7)), XDP_PASS);
    assert_eq!(
        inside.run(&tcp4(OUTSIDE, 80, INSIDE, 40000, SYN | ACK, 0)),
        XDP_PASS
    );
    let s = inside.dev.stats().expect("stats");
    assert_eq!((s.stateful_drop, s.new_flows, s.known), (2, 3, 1));

    // Tracking off: nothing is tracked and nothing dropped.
    inside.set(|c| c.mode = FLOW_MODE_OFF);
    assert_eq!(inside.run(&tcp4(OUTSIDE, 1, INSIDE, 2, ACK, 0)), XDP_PASS);
    assert_eq!(inside.run(&gre), XDP_PASS);
    assert_eq!(inside.table.scan().len(), 3);
    assert_eq!(
        inside.dev.stats().expect("stats"),
        s,
        "off: no counter moves"
    );
}

/// Attached for real to two carpdevs: both programs share one pinned flow table (a flow started on one
/// is known on the other), bpftool prints it by field name from either carpdev's directory, and
/// detaching the last carpdev removes the shared pins.
#[test]
fn two_carpdevs_share_one_pinned_flow_table_bpftool_prints_fields() {
    root_or_skip!("two_carpdevs_share_one_pinned_flow_table_bpftool_prints_fields");
    use carp::dataplane::AttachMode;
    use carp_tests::{bpffs_dir, netns::Netns, netns::PacketSocket, sh};
    let bpffs = bpffs_dir("flows");
    let gw = Netns::new("cfl-gw");
    let cl = Netns::new("cfl-cl");
    for (a, b) in [("cfla", "cflb"), ("cflc", "cfld")] {
        sh(&format!(
            "ip link add {a} netns {} type veth peer name {b} netns {}",
            gw.name, cl.name
        ));
        gw.run(&format!("ip link set {a} up"));
        cl.run(&format!("ip link set {b} up"));
    }
    let dir = bpffs.clone();
    let (dps, mut devs, table) = gw.in_ns(move || {
        let mut dps = Vec::new();
        let mut devs = Vec::new();
        for name in ["cfla", "cflc"] {
            let mut dp = Dataplane::attach(name, &dir, AttachMode::Auto).expect("attach");
            devs.push(dp.flow_dev().expect("flow dev"));
            dps.push(dp);
        }
        let table = FlowTable::open_pinned(&dir, "cflc", false).expect("open shared pin");
        (dps, devs, table)
    });
    // cfla is the inside carpdev, cflc the outside one; stateful on both.
    for (dev, inside) in devs.iter_mut().zip([true, false]) {
        dev.set_conf(FlowConf {
            mode: FLOW_MODE_STATEFUL,
            inside: u8::from(inside),
            node_id: 1,
            ..Default::default()
        })
        .expect("conf");
    }
    cl.in_ns(|| {
        let inside = PacketSocket::open("cflb", 100);
        let outside = PacketSocket::open("cfld", 100);
        // The reply first: unknown on the outside, dropped.
        outside.send(&udp4(OUTSIDE, 53, INSIDE, 40000, 4));
        inside.send(&udp4(INSIDE, 40000, OUTSIDE, 53, 4));
        outside.send(&udp4(OUTSIDE, 53, INSIDE, 40000, 4));
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let e = table
        .get(&key4(17, INSIDE, 40000, OUTSIDE, 53))
        .expect("the flow started inside is in the table the outside carpdev reads");
    assert_eq!(
        e.packets,
        [1, 1],
        "the outside reply matched the inside's flow"
    );
    let (s_in, s_out) = (
        devs[0].stats().expect("stats"),
        devs[1].stats().expect("stats"),
    );
    assert_eq!(
        (s_in.new_flows, s_out.known, s_out.stateful_drop),
        (1, 1, 1)
    );

    let dump = sh(&format!(
        "bpftool map dump pinned {}/cfla/carp_flows",
        bpffs.display()
    ));
    eprintln!("bpftool map dump pinned .../cfla/carp_flows:\n{dump}");
    for field in [
        "lo_addr",
        "hi_port",
        "proto",
        "packets",
        "bytes",
        "created_ns",
        "last_seen_ns",
        "owner",
        "tcp_state",
        "flags",
    ] {
        assert!(dump.contains(field), "bpftool names {field}: {dump}");
    }
    assert!(
        dump.contains("40000"),
        "the port is printed as a number: {dump}"
    );
    let shared = bpffs.join(format!("v{}", carp_common::maps::LAYOUT_VERSION));
    assert!(shared.join("carp_flows").exists());
    drop((devs, table, dps));
    Dataplane::detach("cfla", &bpffs).expect("detach");
    assert!(shared.join("carp_flows").exists(), "still used by cflc");
    Dataplane::detach("cflc", &bpffs).expect("detach");
    assert!(
        !shared.join("carp_flows").exists(),
        "last carpdev gone: shared pins removed"
    );
    let _ = std::fs::remove_dir_all(&bpffs);
}

/// Flow number `i` of a table test: a distinct key in 10.`subnet`.0.0/16, entry id `i + 1` from
/// `creator`, `i` packets one way and one the other.
fn numbered_flow(i: u32, proto: u8, subnet: u8, creator: u32) -> (FlowKey, FlowEntry) {
    let mut k = key4(
        proto,
        [10, subnet, (i >> 8) as u8, i as u8],
        1000,
        OUTSIDE,
        0,
    );
    k.hi_port = (i % 50_000) as u16;
    let e = FlowEntry {
        id: u64::from(i) + 1,
        creator,
        packets: [u64::from(i), 1],
        ..Default::default()
    };
    (k, e)
}

/// Learned flows are written with BPF_MAP_UPDATE_BATCH (`FlowTable::insert_batch`): every one lands, as
/// a key-by-key write would put it, and a second batch over the same keys replaces them.
#[test]
fn batch_write_puts_every_flow_in_the_table() {
    root_or_skip!("batch_write_puts_every_flow_in_the_table");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    let n = 20_000u32;
    let (keys, mut entries): (Vec<FlowKey>, Vec<FlowEntry>) =
        (0..n).map(|i| numbered_flow(i, 6, 2, 9)).unzip();
    let written = lab
        .table
        .insert_batch(&keys, &entries)
        .expect("the kernel supports batch updates");
    assert_eq!(written, n as usize);
    for (k, e) in keys.iter().zip(&entries).step_by(997) {
        assert_eq!(lab.table.get(k), Some(*e));
    }
    for e in &mut entries {
        e.packets[1] = 3;
    }
    lab.table
        .insert_batch(&keys, &entries)
        .expect("second batch");
    let all = lab.table.scan();
    assert_eq!(all.len(), n as usize);
    assert!(all.iter().all(|(_, e)| e.creator == 9 && e.packets[1] == 3));
}

/// The controller reads the whole table with BPF_MAP_LOOKUP_BATCH: the same flows as one lookup per
/// key, in a fraction of the time (a full table read key by key would stall carpd's loop).
#[test]
fn batch_scan_reads_the_same_flows_as_key_by_key() {
    root_or_skip!("batch_scan_reads_the_same_flows_as_key_by_key");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    let n = 20_000u32;
    for i in 0..n {
        let (k, e) = numbered_flow(i, 17, 1, 7);
        lab.table.insert(k, e).expect("insert");
    }
    let t = std::time::Instant::now();
    let mut batch = lab
        .table
        .scan_batch()
        .expect("the kernel supports batch lookups");
    let t_batch = t.elapsed();
    let t = std::time::Instant::now();
    let mut single = lab.table.scan_one_by_one();
    let t_single = t.elapsed();
    eprintln!("{n} flows: batch {t_batch:?}, key by key {t_single:?}");
    assert_eq!(batch.len(), n as usize);
    batch.sort_by_key(|(k, _)| *k);
    single.sort_by_key(|(k, _)| *k);
    assert!(batch == single, "batch and key-by-key reads differ");
    assert!(
        batch
            .iter()
            .all(|(_, e)| e.creator == 7 && e.packets[1] == 1)
    );
}

/// carpd scans its table in slices, one per turn of its loop, so a pass over a million flows never
/// holds up adverts or a peer's bulk request. While flows come and go between slices, every flow that
/// stayed in the map throughout is read exactly once per pass, and the cursor ends the pass.
#[test]
fn sliced_scan_reads_each_flow_once_while_the_map_changes() {
    root_or_skip!("sliced_scan_reads_each_flow_once_while_the_map_changes");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    let flow = |i: u32| numbered_flow(i, 17, 3, 5);
    let n = 30_000u32;
    let (keys, entries): (Vec<FlowKey>, Vec<FlowEntry>) = (0..n).map(flow).unzip();
    lab.table.insert_batch(&keys, &entries).expect("fill");
    let mut cursor = carp::dataplane::flows::ScanCursor::default();
    let mut seen: std::collections::HashMap<FlowKey, u32> = Default::default();
    let (mut slices, mut added) = (0, n);
    loop {
        let mut out = Vec::new();
        let end = lab.table.scan_slice(&mut cursor, 4096, &mut out);
        slices += 1;
        // A slice stops within one bucket of its size (the kernel returns whole buckets), never a
        // second batch past it: the loop's pause between slices is sized from it.
        assert!(
            out.len() <= 4096 + 64,
            "slice {slices} read {} flows for a slice of 4096",
            out.len()
        );
        for (k, _) in out {
            *seen.entry(k).or_default() += 1;
        }
        if end {
            break;
        }
        // Between slices: some flows end (every 7th of the originals, a few at a time), new ones
        // begin.
        for i in (slices * 700..(slices + 1) * 700).filter(|i| i % 7 == 0 && *i < n) {
            lab.table.remove(&keys[i as usize]);
        }
        for _ in 0..500 {
            let (k, e) = flow(added);
            lab.table.insert(k, e).expect("insert");
            added += 1;
        }
        assert!(slices < 1000, "the scan never ends");
    }
    assert!(slices > 5, "{slices} slices: the scan was not cut up");
    let removed: std::collections::HashSet<u32> = (700..slices * 700)
        .filter(|i| i % 7 == 0 && *i < n)
        .collect();
    for (i, k) in keys.iter().enumerate() {
        if removed.contains(&(i as u32)) {
            continue;
        }
        assert_eq!(
            seen.get(k),
            Some(&1),
            "flow {i} read {:?} times",
            seen.get(k)
        );
    }
    assert!(seen.values().all(|&c| c == 1), "a flow was read twice");
    // The cursor is back at the start: the next pass reads the whole table again.
    let mut out = Vec::new();
    while !lab.table.scan_slice(&mut cursor, 4096, &mut out) {}
    assert_eq!(out.len() as u32, n - removed.len() as u32 + (added - n));
}

#[test]
fn live_frames_reinjection_delivers_a_deferred_frame_to_a_socket() {
    root_or_skip!("live_frames_reinjection_delivers_a_deferred_frame_to_a_socket");
    let ns = carp_tests::netns::Netns::new("reinj");
    ns.run(
        "ip link add rd0 type veth peer name rd1 && ip link set rd1 address 02:00:00:00:00:b1 \
         && ip link set rd0 up && ip link set rd1 up && ip addr add 10.9.0.2/24 dev rd1",
    );
    let got = ns.in_ns(|| {
        let sock = std::net::UdpSocket::bind("10.9.0.2:9999").expect("bind");
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let payload = b"deferred first packet";
        let mut f = eth([0x02, 0, 0, 0, 0, 0xb1], MAC_B, 0x0800, None);
        f.extend(ipv4(
            [10, 9, 0, 1],
            [10, 9, 0, 2],
            17,
            64,
            8 + payload.len(),
        ));
        f.extend(40000u16.to_be_bytes());
        f.extend(9999u16.to_be_bytes());
        f.extend(((8 + payload.len()) as u16).to_be_bytes());
        // No UDP checksum (allowed over IPv4).
        f.extend([0, 0]);
        f.extend(payload);
        let ifindex = carp::dataplane::if_index("rd1").expect("rd1");
        let r = carp::dataplane::reinject::Reinjector::load().expect("load carp_pass");
        r.inject(ifindex, &f)
            .expect("BPF_PROG_TEST_RUN live frames");
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).expect("the re-injected datagram");
        (buf[..n].to_vec(), from)
    });
    assert_eq!(got.0, b"deferred first packet");
    assert_eq!(got.1, "10.9.0.1:40000".parse().unwrap());
}

#[test]
fn defer_shares_the_per_cpu_event_budget() {
    root_or_skip!("defer_shares_the_per_cpu_event_budget");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    lab.set(|c| {
        c.defer = 1;
        c.events_per_ms = 3;
    });
    // Beyond the budget (a flood of new flows) first packets pass undeferred, counted as rate-limited.
    let verdicts: Vec<u32> = (0..20u16)
        .map(|p| lab.run(&udp4(INSIDE, 2000 + p, OUTSIDE, 53, 10)))
        .collect();
    let dropped = verdicts.iter().filter(|&&v| v == XDP_DROP).count();
    assert!((3..20).contains(&dropped), "{verdicts:?}");
    let s = lab.dev.stats().expect("stats");
    assert_eq!(s.deferred, dropped as u64, "{s:?}");
    assert_eq!(s.events, dropped as u64, "{s:?}");
    assert_eq!(s.events_ratelimited, 20 - dropped as u64, "{s:?}");
    assert_eq!(s.new_flows, 20);
    assert_eq!(lab.table.drain_events(100).len(), dropped);
}

/// The LRU flow table keeps every flow until it is nearly full, whichever CPU inserts them: the
/// kernel's LRU keeps a few free slots per CPU aside (at most 128 each), so eviction may begin that
/// many slots early, never long before. Filled from a thread on each CPU in turn to 99% of its slots.
#[test]
fn lru_flow_map_evicts_nothing_before_it_is_full() {
    root_or_skip!("lru_flow_map_evicts_nothing_before_it_is_full");
    let mut lab = Lab::new(FLOW_MODE_TRACK, true);
    let slots = carp_common::maps::FLOW_SLOTS;
    let n = slots - slots / 100;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let table = std::sync::Mutex::new(&mut lab.table);
    let per = 1000u32;
    for chunk in 0..n.div_ceil(per) {
        let cpu = chunk as usize % cpus;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: an all-zero cpu_set_t is valid; CPU_SET writes within it.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
                }
                let mut t = table.lock().unwrap();
                for i in chunk * per..((chunk + 1) * per).min(n) {
                    let (k, e) = numbered_flow(i, 6, 4 + (i >> 16) as u8, 5);
                    t.insert(k, e).expect("insert");
                }
            });
        });
    }
    let held = lab.table.scan_one_by_one().len() as u32;
    assert_eq!(
        held,
        n,
        "{} of {n} flows evicted from a table of {slots}",
        n - held
    );
}
