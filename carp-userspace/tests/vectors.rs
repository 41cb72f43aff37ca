//! Byte-for-byte checks against adverts captured from a live ucarp 1.5.2 (tests/vectors/README.txt
//! records the command lines). These pin our parser, checksum, HMAC input and emitter to what a real
//! peer puts on the wire, so a self-consistent but wrong implementation cannot pass.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use carp::auth::{AuthContext, AuthForm, AuthInput, Key, KeyError};
use carp::wire::ip::{Encap, emit_frame, emit_ipv4, parse_ethernet, receive_frame};
use carp::wire::{AdvertPacket, AdvertRepr, Rejection, checksum};
use carp_common::proto::{CARP_GROUP_MAC_V4, ucarp_mac};

/// What ucarp was started with for one capture.
struct Vector {
    file: &'static str,
    vhid: u8,
    pass: &'static str,
    vip: Ipv4Addr,
    srcip: Ipv4Addr,
    advbase: u8,
    advskew: u8,
}

const SRC: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

fn vectors() -> Vec<Vector> {
    let vhid7 = |file| Vector {
        file,
        vhid: 7,
        pass: "secret",
        vip: Ipv4Addr::new(10, 99, 0, 1),
        srcip: SRC,
        advbase: 1,
        advskew: 0,
    };
    let vhid42 = |file| Vector {
        file,
        vhid: 42,
        pass: "nineteen-byte-pass!",
        vip: Ipv4Addr::new(10, 99, 0, 50),
        srcip: SRC,
        advbase: 2,
        advskew: 100,
    };
    vec![
        vhid7("ucarp-vhid7-secret-1.bin"),
        vhid7("ucarp-vhid7-secret-2.bin"),
        vhid7("ucarp-vhid7-secret-3.bin"),
        vhid7("ucarp-vhid7-secret-4.bin"),
        vhid42("ucarp-vhid42-nineteen-1.bin"),
        vhid42("ucarp-vhid42-nineteen-2.bin"),
        vhid42("ucarp-vhid42-nineteen-3.bin"),
    ]
}

fn load(file: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn context(pass: &str, vhid: u8, vip: Ipv4Addr) -> AuthContext {
    let key = Key::from_passphrase(pass).expect("passphrase within 19 bytes");
    AuthContext::new(&key, &AuthInput::with_addrs(vhid, [IpAddr::V4(vip)]))
}

#[test]
fn frames_parse_field_by_field() {
    for v in vectors() {
        let frame = load(v.file);
        assert_eq!(frame.len(), 70, "{}", v.file);
        let eth = parse_ethernet(&frame).unwrap_or_else(|e| panic!("{}: {e}", v.file));
        assert_eq!(eth.dst_mac, CARP_GROUP_MAC_V4, "{}", v.file);
        // ucarp's quirk: 00:00:5e:00:00:vhid, not the BSD virtual MAC 00:00:5e:00:01:vhid.
        assert_eq!(eth.src_mac, ucarp_mac(v.vhid), "{}", v.file);
        assert_eq!(eth.vlan, None);
        assert_eq!(eth.ip.facts.src, IpAddr::V4(v.srcip));
        assert_eq!(eth.ip.facts.dst, IpAddr::V4(GROUP));
        assert_eq!(eth.ip.facts.ttl, 255);
        assert_eq!(eth.ip.payload.len(), 36);

        let ip = &frame[14..];
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(ip[0], 0x45, "IPv4, no options");
        assert_eq!(ip[1], 0x10, "TOS low delay");
        assert_eq!(&ip[2..4], &[0, 56], "total length");
        assert_eq!(&ip[6..8], &[0x40, 0x00], "DF, no fragment");
        assert_eq!(ip[9], 112);
        assert_eq!(checksum(&ip[..20]), 0, "IP header checksum");

        let p = AdvertPacket::new_checked(eth.ip.payload).expect("36 bytes");
        assert_eq!(p.version(), 2);
        assert_eq!(p.packet_type(), 1);
        assert_eq!(p.vhid(), v.vhid);
        assert_eq!(p.advskew(), v.advskew);
        assert_eq!(p.authlen(), 7);
        assert_eq!(p.demote(), 0, "ucarp sends the reserved byte as 0");
        assert_eq!(p.advbase(), v.advbase);
        assert!(p.verify_checksum(), "{}", v.file);
        assert_eq!(p.counter(), frame[14 + 20 + 8..14 + 20 + 16]);
        assert_eq!(p.digest(), frame[14 + 20 + 16..]);
        let repr = AdvertRepr::parse(&p).expect("valid");
        assert!(!repr.is_bow_out());
    }
}

#[test]
fn hmac_verifies_with_known_key_and_vip() {
    for v in vectors() {
        let frame = load(v.file);
        let ctx = context(v.pass, v.vhid, v.vip);
        let (_, repr) = receive_frame(&frame, |x| x == v.vhid, |r| ctx.verify_repr(r))
            .unwrap_or_else(|e| panic!("{}: {e}", v.file));
        assert_eq!(repr.vhid, v.vhid);
        // Without IPv6 addresses both forms hash the same message, as spec §2 "matching all three" says.
        assert_eq!(ctx.digest(AuthForm::Orig, &repr.counter), repr.digest);
        assert_eq!(ctx.sign(&repr.counter), repr.digest);
    }
}

#[test]
fn wrong_password_vip_or_vhid_fails() {
    for v in vectors() {
        let frame = load(v.file);
        let bad = |ctx: AuthContext| receive_frame(&frame, |x| x == v.vhid, |r| ctx.verify_repr(r));

        let wrong_pass = context("Secret", v.vhid, v.vip);
        assert_eq!(
            bad(wrong_pass).unwrap_err(),
            Rejection::BadAuth,
            "{}",
            v.file
        );

        let wrong_vip = context(v.pass, v.vhid, Ipv4Addr::new(10, 99, 0, 99));
        assert_eq!(bad(wrong_vip).unwrap_err(), Rejection::BadAuth);

        // Extra addresses change the message too (the usual BSD-vs-ucarp interop failure).
        let key = Key::from_passphrase(v.pass).expect("short");
        let extra = AuthContext::new(
            &key,
            &AuthInput::with_addrs(
                v.vhid,
                [IpAddr::V4(v.vip), IpAddr::V4(Ipv4Addr::new(10, 99, 0, 200))],
            ),
        );
        assert_eq!(bad(extra).unwrap_err(), Rejection::BadAuth);

        // A key for another vhid must not verify this digest even when fed the raw counter.
        let other = context(v.pass, v.vhid.wrapping_add(1), v.vip);
        let p = AdvertPacket::new_checked(&frame[34..]).expect("36 bytes");
        assert!(!other.verify(&p.counter(), &p.digest()));

        // And a vhid we do not run is badvhid before any HMAC is computed.
        let r = receive_frame(
            &frame,
            |x| x == v.vhid.wrapping_add(1),
            |_| panic!("HMAC after badvhid"),
        );
        assert_eq!(r.unwrap_err(), Rejection::BadVhid { vhid: v.vhid });
    }
}

#[test]
fn twenty_byte_passphrase_is_refused() {
    let err = Key::from_passphrase("nineteen-byte-pass!x").unwrap_err();
    assert_eq!(err, KeyError::TooLong { len: 20 });
}

#[test]
fn reemit_matches_capture_byte_for_byte() {
    for v in vectors() {
        let frame = load(v.file);
        let ctx = context(v.pass, v.vhid, v.vip);
        let eth = parse_ethernet(&frame).expect("valid");
        let parsed = AdvertRepr::parse(&AdvertPacket::new_checked(eth.ip.payload).expect("len"))
            .expect("valid");

        // Rebuild from config plus the captured counter only: our digest must equal ucarp's.
        let ours = AdvertRepr {
            vhid: v.vhid,
            advskew: v.advskew,
            advbase: v.advbase,
            demote: 0,
            counter: parsed.counter,
            digest: ctx.sign(&parsed.counter),
        };
        assert_eq!(ours, parsed, "{}", v.file);
        assert_eq!(ours.to_bytes()[..], frame[34..], "CARP bytes of {}", v.file);

        // ucarp uses the same TOS (0x10) and flags as we do, so with its IP id the whole IP packet
        // (header checksum included) and the frame match exactly.
        let ident = u16::from_be_bytes([frame[18], frame[19]]);
        assert_eq!(emit_ipv4(&ours, v.srcip, GROUP, ident)[..], frame[14..]);
        let encap = Encap::group_v4(v.srcip, ident);
        let rebuilt = emit_frame(&ours, &encap, ucarp_mac(v.vhid), encap.group_mac());
        assert_eq!(rebuilt, frame, "{}", v.file);
    }
}

#[test]
fn ucarp_counter_is_not_monotonic() {
    // Why auth has no "counter must grow" check: consecutive adverts of one ucarp run carry
    // unrelated counters, and none is its predecessor plus one.
    let counters: Vec<u64> = vectors()
        .iter()
        .filter(|v| v.vhid == 7)
        .map(|v| {
            let f = load(v.file);
            u64::from_be_bytes(f[42..50].try_into().expect("8 bytes"))
        })
        .collect();
    assert_eq!(counters.len(), 4);
    for pair in counters.windows(2) {
        assert_ne!(pair[1], pair[0].wrapping_add(1));
    }
}
