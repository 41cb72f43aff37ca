//! CARP wire formats, smoltcp style: a checked zero-copy view over bytes plus a plain `Repr` with
//! `parse`/`emit` for each format. `advert` owns the 36-byte CARP header (spec §1), `ip` its IPv4/IPv6
//! and Ethernet encapsulation. This module owns what both share: the Internet checksum, the
//! [`Rejection`] reasons (one per carpstats input counter of spec §7) and [`check`], the receive
//! validation in OpenBSD's order.
//!
//! Receive path, end to end: `ip::parse_ethernet` / `ip::parse_ip` find the IP facts and the CARP
//! payload (an unusable IP header is `hdrops`, because nothing behind it can be trusted), then
//! [`check`] runs badttl -> badlen -> badsum -> badvhid -> badver -> badauth. Loop detection
//! (`auth::ReplayCookie`) comes after that and is the caller's, as in OpenBSD.

pub mod advert;
pub mod ip;
pub mod vrrp;
pub mod vrrp2;
pub mod vrrp3;

pub use advert::{AdvertPacket, AdvertRepr};
pub use ip::{EthAdvert, IpAdvert, IpFacts};

use carp_common::proto::{CARP_TTL, CARP_VERSION};

/// Why a received advert was dropped; each reason is one carpstats counter (spec §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// TTL / hop limit is not 255, so the advert may have crossed a router (`badttl`).
    #[error("TTL/hop limit {ttl} is not 255")]
    BadTtl {
        /// The TTL or hop limit received.
        ttl: u8,
    },
    /// The IP payload is shorter than the 36-byte CARP header (`badlen`).
    #[error("CARP payload of {len} bytes is shorter than the 36-byte header")]
    BadLen {
        /// Length of the IP payload received.
        len: usize,
    },
    /// The Ethernet or IP header is unusable or does not carry CARP (`hdrops`).
    #[error("unusable packet header: {why}")]
    HeaderDrop {
        /// What was wrong with the header.
        why: &'static str,
    },
    /// The checksum over the 36 CARP bytes does not come out as zero (`badsum`).
    #[error("CARP checksum mismatch")]
    BadSum,
    /// No vhid with this number is configured (or it is 0) (`badvhid`).
    #[error("vhid {vhid} is not configured here")]
    BadVhid {
        /// The vhid received.
        vhid: u8,
    },
    /// The version nibble is not 2 (`badver`).
    #[error("CARP version {version} is not 2")]
    BadVersion {
        /// The version received.
        version: u8,
    },
    /// The HMAC-SHA1 digest does not match (`badauth`): check vhid, passphrase and addresses.
    #[error("bad digest: check vhid, passphrase and virtual addresses")]
    BadAuth,
}

impl Rejection {
    /// Every counter a rejection can name, in OpenBSD's check order (spec §7).
    pub const COUNTERS: [&'static str; 7] = [
        "badttl", "badlen", "hdrops", "badsum", "badvhid", "badver", "badauth",
    ];

    /// The carpstats counter (spec §7) this rejection increments.
    pub fn counter(&self) -> &'static str {
        match self {
            Rejection::BadTtl { .. } => "badttl",
            Rejection::BadLen { .. } => "badlen",
            Rejection::HeaderDrop { .. } => "hdrops",
            Rejection::BadSum => "badsum",
            Rejection::BadVhid { .. } => "badvhid",
            Rejection::BadVersion { .. } => "badver",
            Rejection::BadAuth => "badauth",
        }
    }
}

/// Validates a CARP payload in OpenBSD's order and returns the first rejection or the parsed advert.
///
/// `facts` comes from the IP header; `payload` is the IP payload (trailing bytes after 36 are ignored);
/// `vhid_known` says whether a vhid is configured here; `authentic` checks the HMAC of the parsed
/// advert (typically `auth::AuthContext::verify_repr`). Each closure runs at most once, and only when
/// every earlier check passed, so an HMAC is never computed for a packet that fails a cheaper test.
pub fn check(
    facts: &IpFacts,
    payload: &[u8],
    vhid_known: impl FnOnce(u8) -> bool,
    authentic: impl FnOnce(&AdvertRepr) -> bool,
) -> Result<AdvertRepr, Rejection> {
    if facts.ttl != CARP_TTL {
        return Err(Rejection::BadTtl { ttl: facts.ttl });
    }
    let packet = AdvertPacket::new_checked(payload)?;
    if !packet.verify_checksum() {
        return Err(Rejection::BadSum);
    }
    // OpenBSD looks the vhid up before it reads the version: keep that order so our counters match.
    let vhid = packet.vhid();
    if vhid == 0 || !vhid_known(vhid) {
        return Err(Rejection::BadVhid { vhid });
    }
    if packet.version() != CARP_VERSION {
        return Err(Rejection::BadVersion {
            version: packet.version(),
        });
    }
    let repr = AdvertRepr::from_packet(&packet);
    if !authentic(&repr) {
        return Err(Rejection::BadAuth);
    }
    Ok(repr)
}

/// The Internet checksum (RFC 1071) of `data`: the one's complement of the one's-complement sum.
///
/// Computing it over bytes that already contain a correct checksum yields 0.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The fold above leaves at most 16 bits, so the cast loses nothing.
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn facts(ttl: u8) -> IpFacts {
        IpFacts {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            dst: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
            ttl,
        }
    }

    fn good() -> [u8; 36] {
        AdvertRepr {
            vhid: 7,
            advskew: 0,
            advbase: 1,
            demote: 0,
            counter: [1, 2, 3, 4, 5, 6, 7, 8],
            digest: [9; 20],
        }
        .to_bytes()
    }

    fn run(ttl: u8, payload: &[u8], auth_ok: bool) -> Result<AdvertRepr, Rejection> {
        check(&facts(ttl), payload, |v| v == 7, |_| auth_ok)
    }

    #[test]
    fn accepts_good_advert() {
        let repr = run(255, &good(), true).expect("valid advert");
        assert_eq!(repr.vhid, 7);
    }

    #[test]
    fn trailing_bytes_ignored() {
        let mut long = good().to_vec();
        long.extend_from_slice(&[0xaa; 7]);
        assert!(run(255, &long, true).is_ok());
    }

    #[test]
    fn badttl() {
        let e = run(1, &good(), true).unwrap_err();
        assert_eq!(e, Rejection::BadTtl { ttl: 1 });
        assert_eq!(e.counter(), "badttl");
    }

    #[test]
    fn badlen() {
        let e = run(255, &good()[..35], true).unwrap_err();
        assert_eq!(e, Rejection::BadLen { len: 35 });
        assert_eq!(e.counter(), "badlen");
    }

    #[test]
    fn badsum() {
        let mut p = good();
        p[10] ^= 0x40;
        let e = run(255, &p, true).unwrap_err();
        assert_eq!(e, Rejection::BadSum);
        assert_eq!(e.counter(), "badsum");
    }

    #[test]
    fn badvhid() {
        let mut p = good();
        p[1] = 8;
        AdvertPacket::new_unchecked(&mut p[..]).fill_checksum();
        let e = run(255, &p, true).unwrap_err();
        assert_eq!(e, Rejection::BadVhid { vhid: 8 });
        assert_eq!(e.counter(), "badvhid");
        // vhid 0 is never valid, whatever the closure says.
        p[1] = 0;
        AdvertPacket::new_unchecked(&mut p[..]).fill_checksum();
        let e = check(&facts(255), &p, |_| true, |_| true).unwrap_err();
        assert_eq!(e, Rejection::BadVhid { vhid: 0 });
    }

    #[test]
    fn badver() {
        let mut p = good();
        p[0] = 0x31;
        AdvertPacket::new_unchecked(&mut p[..]).fill_checksum();
        let e = run(255, &p, true).unwrap_err();
        assert_eq!(e, Rejection::BadVersion { version: 3 });
        assert_eq!(e.counter(), "badver");
    }

    #[test]
    fn type_and_authlen_not_checked() {
        let mut p = good();
        p[0] = 0x2f;
        p[3] = 0;
        AdvertPacket::new_unchecked(&mut p[..]).fill_checksum();
        assert!(run(255, &p, true).is_ok());
    }

    #[test]
    fn badauth() {
        let e = run(255, &good(), false).unwrap_err();
        assert_eq!(e, Rejection::BadAuth);
        assert_eq!(e.counter(), "badauth");
    }

    #[test]
    fn hdrops_counter() {
        assert_eq!(Rejection::HeaderDrop { why: "x" }.counter(), "hdrops");
    }

    #[test]
    fn order_follows_openbsd() {
        // A packet wrong in every way reports the earliest check only.
        let mut p = good();
        p[0] = 0x31;
        p[1] = 9;
        p[6] ^= 1;
        assert_eq!(run(7, &p, false).unwrap_err().counter(), "badttl");
        assert_eq!(run(255, &p[..20], false).unwrap_err().counter(), "badlen");
        assert_eq!(run(255, &p, false).unwrap_err().counter(), "badsum");
        AdvertPacket::new_unchecked(&mut p[..]).fill_checksum();
        assert_eq!(run(255, &p, false).unwrap_err().counter(), "badvhid");
        p[1] = 7;
        AdvertPacket::new_unchecked(&mut p[..]).fill_checksum();
        assert_eq!(run(255, &p, false).unwrap_err().counter(), "badver");
        p[0] = 0x21;
        AdvertPacket::new_unchecked(&mut p[..]).fill_checksum();
        assert_eq!(run(255, &p, false).unwrap_err().counter(), "badauth");
    }

    #[test]
    fn closures_not_called_after_failure() {
        let r = check(
            &facts(1),
            &good(),
            |_| panic!("vhid lookup after badttl"),
            |_| panic!("hmac after badttl"),
        );
        assert!(r.is_err());
    }

    #[test]
    fn checksum_rfc1071_example() {
        // RFC 1071 §3 worked example: sum 0xddf2, checksum !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        assert_eq!(checksum(&[0xff]), !0xff00);
    }
}
