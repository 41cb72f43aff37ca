//! Byte-for-byte checks against VRRP adverts captured from a live keepalived 2.2.7 (tests/vectors/
//! README.txt records the configuration). They pin our VRRPv3/VRRPv2 parsers, both checksum forms and
//! the emitters to what a deployed peer puts on the wire, including the IPv4 pseudo-header keepalived
//! adds to VRRPv3 checksums against RFC 9568's letter.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use carp::wire::checksum;
use carp::wire::ip::parse_ethernet;
use carp::wire::vrrp::{
    ChecksumForm, VridConfig, VrrpRejection, VrrpVersion, check_vrrp, emit_vrrp_frame, emit_vrrp_ip,
};
use carp::wire::vrrp2::{Vrrp2Auth, Vrrp2Packet, Vrrp2Repr};
use carp::wire::vrrp3::{Vrrp3Packet, Vrrp3Repr};

/// What keepalived was configured with for one instance.
struct Vector {
    stem: &'static str,
    version: VrrpVersion,
    vrid: u8,
    priority: u8,
    interval_cs: u16,
    vips: &'static [&'static str],
    auth: Vrrp2Auth,
    dst: &'static str,
}

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0x99, 0, 0x02];

fn vectors() -> Vec<Vector> {
    let v3 = |stem, vrid, priority, interval_cs, vips, dst| Vector {
        stem,
        version: VrrpVersion::V3,
        vrid,
        priority,
        interval_cs,
        vips,
        auth: Vrrp2Auth::None,
        dst,
    };
    vec![
        v3(
            "ka-v3-ipv4-vrid51",
            51,
            150,
            100,
            &["10.99.1.1", "10.99.1.2"],
            "224.0.0.18",
        ),
        v3(
            "ka-v3-ipv4-vrid52-5cs",
            52,
            100,
            5,
            &["10.99.1.52"],
            "224.0.0.18",
        ),
        v3(
            "ka-v3-ipv6-vrid53",
            53,
            200,
            100,
            &["fe80::53", "2001:db8:99::53"],
            "ff02::12",
        ),
        v3(
            "ka-v3-unicast-vrid56",
            56,
            130,
            100,
            &["10.99.1.56"],
            "10.99.0.3",
        ),
        Vector {
            stem: "ka-v2-vrid54",
            version: VrrpVersion::V2,
            vrid: 54,
            priority: 120,
            interval_cs: 100,
            vips: &["10.99.1.54"],
            auth: Vrrp2Auth::None,
            dst: "224.0.0.18",
        },
        Vector {
            stem: "ka-v2-pass-vrid55",
            version: VrrpVersion::V2,
            vrid: 55,
            priority: 100,
            interval_cs: 100,
            vips: &["10.99.1.55"],
            auth: Vrrp2Auth::simple("secret12").expect("8 bytes"),
            dst: "224.0.0.18",
        },
    ]
}

fn load(file: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn frames(v: &Vector) -> Vec<(String, Vec<u8>, u8)> {
    ["1", "2", "prio0"]
        .iter()
        .map(|n| {
            let file = format!("{}-{n}.bin", v.stem);
            let prio = if *n == "prio0" { 0 } else { v.priority };
            let bytes = load(&file);
            (file, bytes, prio)
        })
        .collect()
}

fn config(v: &Vector, priority: u8) -> VridConfig {
    VridConfig {
        version: v.version,
        priority,
        v2_interval: (v.interval_cs / 100) as u8,
        v2_auth: v.auth,
    }
}

#[test]
fn frames_pass_the_receive_checks_field_by_field() {
    for v in vectors() {
        for (file, frame, prio) in frames(&v) {
            let eth = parse_ethernet(&frame).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                eth.src_mac, SRC_MAC,
                "{file}: keepalived sends from the interface MAC"
            );
            let dst: IpAddr = v.dst.parse().unwrap();
            assert_eq!(eth.ip.facts.dst, dst, "{file}");
            assert_eq!(eth.ip.facts.ttl, 255, "{file}");
            let src_expected: IpAddr = if dst.is_ipv6() {
                "fe80::ff:fe99:2".parse().unwrap()
            } else {
                "10.99.0.2".parse().unwrap()
            };
            assert_eq!(eth.ip.facts.src, src_expected, "{file}");
            if dst.is_ipv4() {
                assert_eq!(frame[15], 0xc0, "{file}: TOS internetwork control");
                assert_eq!(&frame[20..22], &[0, 0], "{file}: no DF");
            }
            let a = check_vrrp(&eth.ip.facts, eth.ip.payload, |x| {
                (x == v.vrid).then(|| config(&v, 100))
            })
            .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(a.vrid, v.vrid, "{file}");
            assert_eq!(a.priority, prio, "{file}");
            assert_eq!(a.interval_cs, v.interval_cs, "{file}");
            let vips: Vec<IpAddr> = v.vips.iter().map(|s| s.parse().unwrap()).collect();
            assert_eq!(a.addresses, vips, "{file}");
            assert_eq!(
                a.insecure_auth,
                matches!(v.auth, Vrrp2Auth::Simple(_)),
                "{file}"
            );
            let form = match (v.version, dst.is_ipv6()) {
                (VrrpVersion::V3, false) => Some(ChecksumForm::PseudoHeader),
                _ => None,
            };
            assert_eq!(
                a.checksum_form, form,
                "{file}: keepalived 2.2.7's checksum form"
            );
        }
    }
}

#[test]
fn v3_ipv4_checksum_has_the_pseudo_header_with_the_real_destination() {
    for v in vectors().iter().filter(|v| v.version == VrrpVersion::V3) {
        for (file, frame, _) in frames(v) {
            let eth = parse_ethernet(&frame).unwrap();
            let p = Vrrp3Packet::new_checked(eth.ip.payload, eth.ip.facts.src.is_ipv6()).unwrap();
            if eth.ip.facts.src.is_ipv6() {
                continue;
            }
            // Control: the message alone does not sum to zero, so the pseudo-header is really in.
            assert_ne!(checksum(p.message()), 0, "{file}");
            // Unicast: the pseudo-header names the peer; with 224.0.0.18 instead it fails.
            let group = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));
            let with_group = p.verify_checksum(eth.ip.facts.src, group);
            if eth.ip.facts.dst == group {
                assert_eq!(with_group, Some(ChecksumForm::PseudoHeader), "{file}");
            } else {
                assert_eq!(
                    with_group, None,
                    "{file}: keepalived sums the real unicast dst"
                );
            }
        }
    }
}

#[test]
fn reemit_matches_capture_byte_for_byte() {
    for v in vectors() {
        for (file, frame, prio) in frames(&v) {
            let eth = parse_ethernet(&frame).unwrap();
            let (src, dst) = (eth.ip.facts.src, eth.ip.facts.dst);
            let ours = match v.version {
                VrrpVersion::V3 => Vrrp3Repr {
                    vrid: v.vrid,
                    priority: prio,
                    max_adver_int: v.interval_cs,
                    addresses: v.vips.iter().map(|s| s.parse().unwrap()).collect(),
                }
                .to_bytes(src, dst, ChecksumForm::PseudoHeader),
                VrrpVersion::V2 => Vrrp2Repr {
                    vrid: v.vrid,
                    priority: prio,
                    adver_int: (v.interval_cs / 100) as u8,
                    auth: v.auth,
                    addresses: v.vips.iter().map(|s| s.parse().unwrap()).collect(),
                }
                .to_bytes(),
            };
            assert_eq!(ours, eth.ip.payload, "{file}");
        }
    }
}

#[test]
fn message_only_form_of_a_capture_is_accepted_too() {
    let frame = load("ka-v3-ipv4-vrid51-1.bin");
    let eth = parse_ethernet(&frame).unwrap();
    let mut payload = eth.ip.payload.to_vec();
    let (src, dst) = (eth.ip.facts.src, eth.ip.facts.dst);
    Vrrp3Packet::new_checked(&mut payload[..], false)
        .unwrap()
        .fill_checksum(src, dst, ChecksumForm::MessageOnly);
    assert_ne!(payload, eth.ip.payload);
    let a = check_vrrp(&eth.ip.facts, &payload, |_| {
        Some(VridConfig {
            version: VrrpVersion::V3,
            priority: 100,
            v2_interval: 1,
            v2_auth: Vrrp2Auth::None,
        })
    })
    .unwrap();
    assert_eq!(a.checksum_form, Some(ChecksumForm::MessageOnly));
}

#[test]
fn wrong_password_version_or_owner_refuses_a_capture() {
    let frame = load("ka-v2-pass-vrid55-1.bin");
    let eth = parse_ethernet(&frame).unwrap();
    let cfg = |auth, version, priority| VridConfig {
        version,
        priority,
        v2_interval: 1,
        v2_auth: auth,
    };
    let pass = Vrrp2Auth::simple("secret12").unwrap();
    let wrong = Vrrp2Auth::simple("secret1").unwrap();
    let run = |c: VridConfig| check_vrrp(&eth.ip.facts, eth.ip.payload, |_| Some(c));
    assert!(run(cfg(pass, VrrpVersion::V2, 100)).is_ok(), "control");
    assert_eq!(
        run(cfg(wrong, VrrpVersion::V2, 100)).unwrap_err(),
        VrrpRejection::BadAuth { auth_type: 1 }
    );
    assert_eq!(
        run(cfg(pass, VrrpVersion::V3, 100)).unwrap_err(),
        VrrpRejection::BadVersion {
            version: 2,
            expected: 3
        }
    );
    assert_eq!(
        run(cfg(pass, VrrpVersion::V2, 255)).unwrap_err(),
        VrrpRejection::Owner
    );
    // The packet itself carries the password in clear: anyone on the segment can read it.
    let p = Vrrp2Packet::new_checked(eth.ip.payload).unwrap();
    assert_eq!(&p.auth_data(), b"secret12");
}

#[test]
fn our_ipv4_packet_equals_keepalived_s_with_its_ip_id() {
    for v in vectors().iter().filter(|v| !v.dst.contains(':')) {
        for (file, frame, _) in frames(v) {
            let eth = parse_ethernet(&frame).unwrap();
            let ident = u16::from_be_bytes([frame[18], frame[19]]);
            let ip = emit_vrrp_ip(eth.ip.payload, eth.ip.facts.src, eth.ip.facts.dst, ident);
            assert_eq!(
                ip,
                frame[14..],
                "{file}: TOS 0xc0, no DF, TTL 255, header checksum"
            );
            // Same frame with keepalived's MACs (carpd sends from the virtual MAC instead).
            let dst: [u8; 6] = frame[..6].try_into().unwrap();
            assert_eq!(emit_vrrp_frame(&ip, SRC_MAC, dst), frame, "{file}");
        }
    }
}

#[test]
fn our_ipv6_packet_equals_keepalived_s_but_for_the_flow_label() {
    let v = vectors().into_iter().find(|v| v.dst.contains(':')).unwrap();
    for (file, frame, _) in frames(&v) {
        let eth = parse_ethernet(&frame).unwrap();
        let ip = emit_vrrp_ip(eth.ip.payload, eth.ip.facts.src, eth.ip.facts.dst, 0);
        let mut theirs = frame[14..].to_vec();
        // keepalived's kernel socket sets a flow label; we send 0 (both are valid).
        theirs[1] &= 0xf0;
        theirs[2] = 0;
        theirs[3] = 0;
        assert_eq!(ip, theirs, "{file}");
    }
}
