//! Property tests of the wire format: emit/parse round trips over IPv4, IPv6 and Ethernet, no panic on
//! arbitrary or mangled input, single-bit corruption always caught, and each defect counted under
//! its own carpstats counter in OpenBSD's order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp::auth::{AuthContext, AuthInput, Key};
use carp::wire::ip::{
    Encap, emit_frame, emit_ipv4, emit_ipv6, parse_ethernet, parse_ip, parse_ipv4, parse_ipv6,
    receive_frame,
};
use carp::wire::{AdvertPacket, AdvertRepr, IpFacts, Rejection, check, checksum};
use proptest::prelude::*;

fn arb_repr() -> impl Strategy<Value = AdvertRepr> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<[u8; 8]>(),
        any::<[u8; 20]>(),
    )
        .prop_map(
            |(vhid, advskew, advbase, demote, counter, digest)| AdvertRepr {
                vhid,
                advskew,
                advbase,
                demote,
                counter,
                digest,
            },
        )
}

fn arb_encap() -> impl Strategy<Value = Encap> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<u16>()).prop_map(|(s, d, ident)| Encap::V4 {
            src: Ipv4Addr::from(s),
            dst: Ipv4Addr::from(d),
            ident,
        }),
        (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(s, d)| Encap::V6 {
            src: Ipv6Addr::from(s),
            dst: Ipv6Addr::from(d),
        }),
    ]
}

/// A signed IPv4 advert frame for vhid 7, key "secret", VIP 10.99.0.1, plus its auth context.
fn signed_frame(counter: [u8; 8], v6: bool) -> (Vec<u8>, AuthContext) {
    let key = Key::from_passphrase("secret").expect("short");
    let ctx = AuthContext::new(
        &key,
        &AuthInput::with_addrs(7, [IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1))]),
    );
    let repr = AdvertRepr {
        vhid: 7,
        advskew: 0,
        advbase: 1,
        demote: 0,
        counter,
        digest: ctx.sign(&counter),
    };
    let encap = if v6 {
        Encap::group_v6("fe80::2".parse().expect("addr"))
    } else {
        Encap::group_v4(Ipv4Addr::new(10, 99, 0, 2), 0x4242)
    };
    (
        emit_frame(&repr, &encap, [0, 0, 0x5e, 0, 1, 7], encap.group_mac()),
        ctx,
    )
}

fn refill_ipv4_checksum(ip: &mut [u8]) {
    ip[10] = 0;
    ip[11] = 0;
    let sum = checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// One defect per carpstats counter, applied to a valid IPv4 advert.
#[derive(Debug, Clone)]
enum Defect {
    Ttl(u8),
    Short(usize),
    Proto(u8),
    Sum(usize, u8),
    Vhid(u8),
    Version(u8),
    Digest(usize, u8),
}

fn arb_defect() -> impl Strategy<Value = Defect> {
    prop_oneof![
        any::<u8>()
            .prop_filter("not 255", |t| *t != 255)
            .prop_map(Defect::Ttl),
        (0usize..36).prop_map(Defect::Short),
        any::<u8>()
            .prop_filter("not CARP", |p| *p != 112)
            .prop_map(Defect::Proto),
        (0usize..36, 0u8..8).prop_map(|(i, b)| Defect::Sum(i, b)),
        any::<u8>()
            .prop_filter("not ours", |v| *v != 7)
            .prop_map(Defect::Vhid),
        (0u8..16)
            .prop_filter("not 2", |v| *v != 2)
            .prop_map(Defect::Version),
        (16usize..36, 0u8..8).prop_map(|(i, b)| Defect::Digest(i, b)),
    ]
}

impl Defect {
    fn expected(&self) -> &'static str {
        match self {
            Defect::Ttl(_) => "badttl",
            Defect::Short(_) => "badlen",
            Defect::Proto(_) => "hdrops",
            Defect::Sum(..) => "badsum",
            Defect::Vhid(_) => "badvhid",
            Defect::Version(_) => "badver",
            Defect::Digest(..) => "badauth",
        }
    }

    /// Applies the defect to an IPv4 advert packet, keeping every other check valid.
    fn apply(&self, ip: &mut Vec<u8>) {
        let carp = 20;
        match *self {
            Defect::Ttl(t) => ip[8] = t,
            Defect::Short(n) => {
                ip.truncate(carp + n);
                let total = u16::try_from(ip.len()).expect("small");
                ip[2..4].copy_from_slice(&total.to_be_bytes());
            }
            Defect::Proto(p) => ip[9] = p,
            Defect::Sum(i, b) => ip[carp + i] ^= 1 << b,
            Defect::Vhid(v) => ip[carp + 1] = v,
            Defect::Version(v) => ip[carp] = (v << 4) | 1,
            Defect::Digest(i, b) => ip[carp + i] ^= 1 << b,
        }
        refill_ipv4_checksum(ip);
        if !matches!(self, Defect::Sum(..) | Defect::Short(_)) {
            AdvertPacket::new_unchecked(&mut ip[carp..]).fill_checksum();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn advert_repr_round_trip(repr in arb_repr()) {
        let bytes = repr.to_bytes();
        let p = AdvertPacket::new_checked(&bytes[..]).expect("36 bytes");
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(AdvertRepr::parse(&p), Ok(repr));
    }

    #[test]
    fn ip_round_trip(repr in arb_repr(), encap in arb_encap()) {
        let packet = encap.emit_ip(&repr);
        let ip = parse_ip(&packet).expect("our own packet parses");
        let (src, dst) = match encap {
            Encap::V4 { src, dst, .. } => (IpAddr::V4(src), IpAddr::V4(dst)),
            Encap::V6 { src, dst } => (IpAddr::V6(src), IpAddr::V6(dst)),
        };
        prop_assert_eq!(ip.facts, IpFacts { src, dst, ttl: 255 });
        let got = ip.check(|v| v == repr.vhid, |_| true);
        if repr.vhid == 0 {
            prop_assert_eq!(got, Err(Rejection::BadVhid { vhid: 0 }));
        } else {
            prop_assert_eq!(got, Ok(repr));
        }
    }

    #[test]
    fn ipv4_and_ipv6_emitters_agree_on_carp_bytes(
        repr in arb_repr(), s4 in any::<[u8; 4]>(), s6 in any::<[u8; 16]>(), ident in any::<u16>()
    ) {
        let v4 = emit_ipv4(&repr, Ipv4Addr::from(s4), Ipv4Addr::new(224, 0, 0, 18), ident);
        let v6 = emit_ipv6(&repr, Ipv6Addr::from(s6), "ff02::12".parse().expect("addr"));
        // No pseudo-header: the CARP bytes, checksum included, do not depend on the IP layer.
        prop_assert_eq!(&v4[20..], &v6[40..]);
        prop_assert_eq!(checksum(&v4[..20]), 0);
        prop_assert_eq!(parse_ipv4(&v4).expect("valid").payload, &repr.to_bytes()[..]);
        prop_assert_eq!(parse_ipv6(&v6).expect("valid").payload, &repr.to_bytes()[..]);
    }

    #[test]
    fn frame_round_trip(
        repr in arb_repr(),
        encap in arb_encap(),
        src_mac in any::<[u8; 6]>(),
        dst_mac in any::<[u8; 6]>(),
        vlan in proptest::option::of(0u16..4096),
        padding in 0usize..16,
    ) {
        let mut frame = emit_frame(&repr, &encap, src_mac, dst_mac);
        if let Some(id) = vlan {
            let tag = [0x81, 0x00, (id >> 8) as u8, id as u8];
            frame.splice(12..12, tag);
        }
        frame.extend(std::iter::repeat_n(0u8, padding));
        let eth = parse_ethernet(&frame).expect("our own frame parses");
        prop_assert_eq!(eth.src_mac, src_mac);
        prop_assert_eq!(eth.dst_mac, dst_mac);
        prop_assert_eq!(eth.vlan, vlan);
        prop_assert_eq!(eth.ip.payload, &repr.to_bytes()[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), ttl in any::<u8>()) {
        let _ = parse_ethernet(&bytes);
        let _ = parse_ip(&bytes);
        let _ = parse_ipv4(&bytes);
        let _ = parse_ipv6(&bytes);
        let _ = receive_frame(&bytes, |_| true, |_| true);
        if let Ok(p) = AdvertPacket::new_checked(&bytes[..]) {
            let _ = AdvertRepr::parse(&p);
        }
        let facts = IpFacts {
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ttl,
        };
        let _ = check(&facts, &bytes, |_| true, |_| true);
    }

    #[test]
    fn mangled_frames_never_panic(
        v6 in any::<bool>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        // Starting from a valid frame reaches the deep parse paths that random bytes rarely hit.
        let (mut frame, ctx) = signed_frame([5; 8], v6);
        for (at, value) in edits {
            let i = at % frame.len();
            frame[i] = value;
        }
        frame.truncate(cut % (frame.len() + 1));
        let _ = receive_frame(&frame, |v| v == 7, |r| ctx.verify_repr(r));
    }

    #[test]
    fn single_bit_flip_in_carp_is_badsum(v6 in any::<bool>(), counter in any::<[u8; 8]>(), bit in 0usize..(36 * 8)) {
        let (mut frame, ctx) = signed_frame(counter, v6);
        prop_assert!(receive_frame(&frame, |v| v == 7, |r| ctx.verify_repr(r)).is_ok());
        let carp = frame.len() - 36;
        frame[carp + bit / 8] ^= 1 << (bit % 8);
        let err = receive_frame(&frame, |v| v == 7, |r| ctx.verify_repr(r)).unwrap_err();
        prop_assert_eq!(err, Rejection::BadSum);
    }

    #[test]
    fn single_bit_flip_in_ipv4_header_is_hdrops(counter in any::<[u8; 8]>(), bit in 0usize..(20 * 8)) {
        let (mut frame, ctx) = signed_frame(counter, false);
        frame[14 + bit / 8] ^= 1 << (bit % 8);
        let err = receive_frame(&frame, |v| v == 7, |r| ctx.verify_repr(r)).unwrap_err();
        prop_assert_eq!(err.counter(), "hdrops");
    }

    #[test]
    fn authenticated_bit_flip_with_fixed_checksum_is_rejected(
        v6 in any::<bool>(),
        counter in any::<[u8; 8]>(),
        // vhid (byte 1), counter and digest: the advert fields the HMAC covers.
        byte in prop_oneof![Just(1usize), 8usize..36],
        bit in 0u8..8,
    ) {
        // An attacker who also fixes the checksum is still caught, by the vhid lookup or the HMAC.
        let (mut frame, ctx) = signed_frame(counter, v6);
        let carp = frame.len() - 36;
        frame[carp + byte] ^= 1 << bit;
        AdvertPacket::new_unchecked(&mut frame[carp..]).fill_checksum();
        let err = receive_frame(&frame, |v| v == 7, |r| ctx.verify_repr(r)).unwrap_err();
        let expected = if byte == 1 { "badvhid" } else { "badauth" };
        prop_assert_eq!(err.counter(), expected);
        // Even when the other vhid is also configured with the same key, the HMAC rejects it.
        let err = receive_frame(&frame, |_| true, |r| ctx.verify_repr(r)).unwrap_err();
        prop_assert_eq!(err, Rejection::BadAuth);
    }

    #[test]
    fn each_defect_maps_to_its_counter(defect in arb_defect(), counter in any::<[u8; 8]>()) {
        let (frame, ctx) = signed_frame(counter, false);
        let mut ip = frame[14..].to_vec();
        defect.apply(&mut ip);
        let result = parse_ip(&ip).and_then(|p| p.check(|v| v == 7, |r| ctx.verify_repr(r)));
        let err = result.unwrap_err();
        prop_assert_eq!(err.counter(), defect.expected());
        prop_assert!(Rejection::COUNTERS.contains(&err.counter()));
    }
}
