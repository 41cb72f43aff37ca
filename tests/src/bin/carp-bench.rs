//! `cargo xtask bench` (dataplane part): ns/packet of the XDP program through BPF_PROG_TEST_RUN, each case
//! next to the trivial XDP_PASS program measured in the same run, printed as a table with ratios and
//! written as JSON. Needs root.
//!
//! Two methods, because BPF_PROG_TEST_RUN's `repeat` re-runs the program on the frame the previous run
//! left behind: cases that only read the frame use `repeat` = 1,000,000 (the kernel's own average);
//! cases that rewrite it (ARP/NS replies) or that need the ring buffer drained (adverts handed over) use
//! 1,000,000 single runs, each timed by the kernel, against the baseline timed the same way.
use aya::programs::{TestRun, TestRunOptions, Xdp};
use carp::dataplane::Dataplane;
use carp_common::maps::{AdvertLimit, BalanceMode, VhidEntry, VhidState};
use carp_tests::frames::*;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

const RUNS: u32 = 1_000_000;
const ROUNDS: usize = 5;

/// Advert limits that never say no but are still checked and advanced on every advert, so the cases that
/// measure the hand-over (and the full ring behind it) run the whole path, the limiter included.
const NEVER_LIMITED: AdvertLimit = AdvertLimit {
    vhid_interval_ns: 1,
    vhid_tolerance_ns: 1 << 62,
    src_interval_ns: 1,
    src_tolerance_ns: 1 << 62,
    ..AdvertLimit::DEFAULT
};

#[derive(Clone, Copy)]
enum Method {
    Repeat,
    Single { drain: bool },
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    method: Method,
    expect: u32,
    target: f64,
    /// The advert limits of vhid 1 while the case runs.
    limit: AdvertLimit,
    /// An advert from another source (the master) run first, so that it owns vhid 1's limit slot and the
    /// case's frame comes from a stranger (its bucket in the LRU hash, the vhid bucket checked too).
    master_first: Option<Vec<u8>>,
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/bench/xdp.json".into());
    let mut dp = Dataplane::load_unattached()?;
    let mut maps = dp.maps()?;
    maps.set_vhid(
        1,
        VhidEntry::new(VhidState::Master, BalanceMode::None, [0, 0, 0x5e, 0, 1, 1]),
    )?;
    maps.add_vip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1)?;
    let vip6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    maps.add_vip(IpAddr::V6(vip6), 1)?;
    // A VRRP VRID 5 master without Accept_Mode (its VIP 10.0.0.5 not its own).
    let mut vrrp5 = VhidEntry::new(VhidState::Master, BalanceMode::None, [0, 0, 0x5e, 0, 1, 5]);
    vrrp5.mode |= carp_common::vrrp::VHID_MODE_VRRP3 | carp_common::vrrp::VHID_MODE_NO_ACCEPT;
    maps.set_vhid(5, vrrp5)?;
    maps.add_vip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), 5)?;

    // A balancing group (`balancing ip`, carpnodes 2 and 3, node 2 MASTER here): bucket 0 is accepted,
    // bucket 1 dropped.
    maps.set_balance(carp::balance::group(
        BalanceMode::Ip,
        &[(2, true), (3, false)],
        [2, 0, 0, 0, 0, 0x0b],
    )?)?;
    let ip_mac = carp::balance::interface_mac(BalanceMode::Ip, 2);
    let client = Ipv4Addr::new(10, 0, 0, 100);
    let server = |bucket: u8| {
        (1..=254u8)
            .map(|i| Ipv4Addr::new(192, 0, 2, i))
            .find(|s| carp::balance::bucket_v4(client, *s, 2) == bucket)
            .expect("a server in each bucket")
    };
    let balanced_v4 = |bucket: u8| {
        let mut f = eth(ip_mac, [2, 0, 0, 0, 0, 0x64], 0x0800, None);
        f.extend(ipv4(client.octets(), server(bucket).octets(), 6, 64, 20));
        f.extend_from_slice(&[0; 20]);
        f
    };
    let client6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64);
    let balanced_v6 = |bucket: u8| {
        let server6 = (1..=254u16)
            .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i))
            .find(|s| carp::balance::bucket_v6(client6, *s, 2) == bucket)
            .expect("a server in each bucket");
        let mut f = eth(ip_mac, [2, 0, 0, 0, 0, 0x64], 0x86dd, None);
        f.extend(ipv6(client6.octets(), server6.octets(), 6, 64, 20));
        f.extend_from_slice(&[0; 20]);
        f
    };

    let mac = [2, 0, 0, 0, 0, 0x64];
    let mut tcp = eth([2, 1, 2, 3, 4, 5], mac, 0x0800, None);
    tcp.extend(ipv4([10, 0, 0, 100], [10, 0, 0, 11], 6, 64, 20));
    tcp.extend_from_slice(&[0; 20]);
    let advert = advert_v4([10, 0, 0, 12], 1, 255, &carp_header(0x21, 1, 0, 1, 0), None);
    let to_vmac = |vhid: u8, dst: [u8; 4]| {
        let mut f = eth([0, 0, 0x5e, 0, 1, vhid], mac, 0x0800, None);
        f.extend(ipv4([10, 0, 0, 100], dst, 6, 64, 20));
        f.extend_from_slice(&[0; 20]);
        f
    };
    let cases = [
        Case {
            name: "unrelated traffic (IPv4 TCP)",
            frame: tcp,
            method: Method::Repeat,
            expect: 2,
            target: 1.3,
            limit: AdvertLimit::DEFAULT,
            master_first: None,
        },
        Case {
            name: "routed through the virtual MAC (CARP MASTER)",
            frame: to_vmac(1, [192, 0, 2, 1]),
            method: Method::Repeat,
            expect: 2,
            target: 1.3,
            limit: AdvertLimit::DEFAULT,
            master_first: None,
        },
        Case {
            name: "to the VIP at a VRRP master without accept_mode (dropped)",
            frame: to_vmac(5, [10, 0, 0, 5]),
            method: Method::Repeat,
            expect: 1,
            target: 2.0,
            limit: AdvertLimit::DEFAULT,
            master_first: None,
        },
        Case {
            name: "balance decision ip, IPv4 accepted",
            frame: balanced_v4(0),
            method: Method::Repeat,
            expect: 2,
            target: 2.0,
            limit: AdvertLimit::DEFAULT,
            master_first: None,
        },
        Case {
            name: "balance decision ip, IPv4 dropped",
            frame: balanced_v4(1),
            method: Method::Repeat,
            expect: 1,
            target: 2.0,
            limit: AdvertLimit::DEFAULT,
            master_first: None,
        },
        Case {
            name: "balance decision ip, IPv6 accepted",
            frame: balanced_v6(0),
            method: Method::Repeat,
            expect: 2,
            target: 2.0,
            limit: AdvertLimit::DEFAULT,
            master_first: None,
        },
        Case {
            name: "balance decision ip, IPv6 dropped",
            frame: balanced_v6(1),
            method: Method::Repeat,
            expect: 1,
            target: 2.0,
            limit: AdvertLimit::DEFAULT,
            master_first: None,
        },
        Case {
            name: "advert intake, ring full (steady flood)",
            frame: advert.clone(),
            method: Method::Repeat,
            expect: 1,
            target: 3.0,
            limit: NEVER_LIMITED,
            master_first: None,
        },
        Case {
            name: "advert intake, stranger's flood rate-limited",
            frame: advert.clone(),
            method: Method::Repeat,
            expect: 1,
            target: 3.0,
            limit: AdvertLimit::DEFAULT,
            master_first: Some(advert_v4(
                [10, 0, 0, 11],
                1,
                255,
                &carp_header(0x21, 1, 0, 1, 0),
                None,
            )),
        },
        Case {
            name: "advert intake, handed to controller",
            frame: advert,
            method: Method::Single { drain: true },
            expect: 1,
            target: 3.0,
            limit: NEVER_LIMITED,
            master_first: None,
        },
        Case {
            name: "ARP request -> XDP_TX reply",
            frame: arp_request(mac, [10, 0, 0, 100], [10, 0, 0, 1], None),
            method: Method::Single { drain: false },
            expect: 3,
            target: 3.0,
            limit: AdvertLimit::DEFAULT,
            master_first: None,
        },
        Case {
            name: "NS -> XDP_TX NA",
            frame: neighbour_solicit(
                mac,
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x64).octets(),
                vip6.octets(),
                true,
            ),
            method: Method::Single { drain: false },
            expect: 3,
            target: 3.0,
            limit: AdvertLimit::DEFAULT,
            master_first: None,
        },
    ];

    let mut rows = Vec::new();
    println!(
        "{:<42} {:>10} {:>12} {:>8} {:>8}  method",
        "case", "ns/pkt", "trivial ns", "ratio", "target"
    );
    // CARP_BENCH_FILTER=<substring> runs only the matching cases (quick iterations on one path).
    let filter = std::env::var("CARP_BENCH_FILTER").unwrap_or_default();
    for case in cases.iter().filter(|c| c.name.contains(filter.as_str())) {
        let mut ratios = Vec::new();
        let mut ns = Vec::new();
        let mut base = Vec::new();
        maps.set_advert_limit(1, case.limit)?;
        maps.drain_events();
        if let Some(master) = &case.master_first {
            let (verdict, _) = carp_tests::run_xdp(dp.program()?, master);
            anyhow::ensure!(verdict == 1, "the master's advert: verdict {verdict}");
            anyhow::ensure!(
                maps.drain_events().len() == 1,
                "the master's advert was not handed over"
            );
        }
        maps.drain_events();
        for _ in 0..ROUNDS {
            let b = measure(dp.pass_program()?, &case.frame, case.method, 2, &mut || {})?;
            let lost_before = maps.stats(1)?.events_lost;
            let drained = std::cell::Cell::new(0usize);
            let m = measure(
                dp.program()?,
                &case.frame,
                case.method,
                case.expect,
                &mut || {
                    drained.set(drained.get() + maps.drain_events().len());
                },
            )?;
            drained.set(drained.get() + maps.drain_events().len());
            // The "handed to controller" case measures the path into the ring: every run's event
            // must have been drained from it, none lost to a full ring (which is the other case).
            if matches!(case.method, Method::Single { drain: true }) {
                let lost = maps.stats(1)?.events_lost - lost_before;
                anyhow::ensure!(
                    drained.get() == RUNS as usize && lost == 0,
                    "{}: {} of {RUNS} events drained, {lost} lost",
                    case.name,
                    drained.get()
                );
            }
            ratios.push(m / b);
            ns.push(m);
            base.push(b);
        }
        let (m, b, r) = (median(&mut ns), median(&mut base), median(&mut ratios));
        let method = match case.method {
            Method::Repeat => format!("repeat={RUNS}"),
            Method::Single { .. } => format!("{RUNS} single runs"),
        };
        println!(
            "{:<42} {:>10.1} {:>12.1} {:>7.2}x {:>7.1}x  {method}",
            case.name, m, b, r, case.target
        );
        rows.push(format!(
            "{{\"case\":{:?},\"ns_per_packet\":{m:.2},\"trivial_ns_per_packet\":{b:.2},\"ratio\":{r:.3},\"target_ratio\":{},\"method\":{:?},\"mpps_per_core\":{:.2}}}",
            case.name, case.target, method, 1000.0 / m
        ));
    }
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, format!("[{}]\n", rows.join(",\n")))?;
    println!("written to {out}");
    Ok(())
}

/// ns per packet of one program on one frame.
fn measure(
    prog: &mut Xdp,
    frame: &[u8],
    method: Method,
    expect: u32,
    drain: &mut dyn FnMut(),
) -> anyhow::Result<f64> {
    match method {
        Method::Repeat => {
            let r = prog.test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: RUNS,
                ..TestRunOptions::new()
            })?;
            anyhow::ensure!(
                r.return_value == expect,
                "verdict {} != {expect}",
                r.return_value
            );
            Ok(r.duration.as_nanos() as f64)
        }
        Method::Single { drain: must_drain } => {
            let mut total = Duration::ZERO;
            for i in 0..RUNS {
                let r = prog.test_run(TestRunOptions {
                    data_in: Some(frame),
                    ..TestRunOptions::new()
                })?;
                anyhow::ensure!(
                    r.return_value == expect,
                    "verdict {} != {expect}",
                    r.return_value
                );
                total += r.duration;
                if must_drain && i % 512 == 511 {
                    drain();
                }
            }
            Ok(total.as_nanos() as f64 / RUNS as f64)
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
