//! What VRRPv3 (`vrrp3`) and VRRPv2 (`vrrp2`) share on receive: the [`VrrpRejection`] reasons (one
//! counter each, in the RFCs' check order), the IPv4 checksum forms and [`check_vrrp`], which takes an
//! IP payload of protocol 112 already judged usable by `wire::ip` and runs RFC 9568 §7.1 / RFC 3768
//! §7.1 in order.
//!
//! CARP and VRRPv2 both start with 0x21; which parser a frame gets is decided by the caller from what
//! its vhid/VRID is configured as (a vhid and a VRID with the same number cannot share a segment).

use std::net::IpAddr;

use carp_common::proto::CARP_TTL;
use carp_common::vrrp::{VRRP_ADVERTISEMENT, VRRP_PRIORITY_OWNER, VRRP2_VERSION, VRRP3_VERSION};

use super::IpFacts;
use super::vrrp2::{Vrrp2Auth, Vrrp2Packet, Vrrp2Repr};
use super::vrrp3::{Vrrp3Packet, Vrrp3Repr};

/// Which VRRP version an interface speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VrrpVersion {
    /// RFC 9568: IPv4 and IPv6, centisecond intervals, no authentication.
    V3,
    /// RFC 3768: IPv4 only, whole-second intervals, authentication type 0 (or 1 for migration).
    V2,
}

/// How a VRRPv3-over-IPv4 checksum is computed (IPv6 always includes its pseudo-header).
///
/// RFC 9568 §5.2.8 leaves the pseudo-header out; keepalived 2.2.7 (always), FRR and FreeBSD (by default)
/// put it in and reject the other form, so `PseudoHeader` is what we send unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumForm {
    /// The IPv4 pseudo-header (src, dst, protocol 112, length) is summed in, as VRRPv2-era code did.
    #[default]
    PseudoHeader,
    /// The VRRP message alone, as RFC 9568 §5.2.8 says (Cisco/Juniper by the FRR documentation).
    MessageOnly,
}

/// Why a received VRRP advert was dropped; each reason is one counter, named by [`Self::counter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VrrpRejection {
    /// TTL / hop limit is not 255 (RFC 9568 §7.1, RFC 3768 §7.1).
    #[error("TTL/hop limit {ttl} is not 255")]
    BadTtl {
        /// The TTL or hop limit received.
        ttl: u8,
    },
    /// The version nibble is not the one this VRID is configured for.
    #[error("VRRP version {version} is not the configured {expected}")]
    BadVersion {
        /// The version received.
        version: u8,
        /// The version configured.
        expected: u8,
    },
    /// The payload is shorter than the fixed header plus the advertised addresses (and v2 auth data).
    #[error("VRRP payload of {len} bytes is shorter than the {needed} its header announces")]
    BadLen {
        /// Length of the IP payload received.
        len: usize,
        /// Length the header and address count require.
        needed: usize,
    },
    /// The checksum does not verify (in neither IPv4 form for v3).
    #[error("VRRP checksum mismatch")]
    BadSum,
    /// No VRID with this number is configured for VRRP here (or it is 0).
    #[error("VRID {vrid} is not configured here")]
    BadVrid {
        /// The VRID received.
        vrid: u8,
    },
    /// The packet type is not 1 (advertisement), which RFC 9568 §5.2.2 says to discard.
    #[error("VRRP packet type {packet_type} is not 1 (advertisement)")]
    BadType {
        /// The type received.
        packet_type: u8,
    },
    /// We own the addresses (priority 255): RFC 9568 §7.1 says an owner discards every advert.
    #[error("we are the address owner (priority 255) and ignore adverts")]
    Owner,
    /// VRRPv2 authentication type or data does not match the configured one (type 2 is never accepted).
    #[error("VRRPv2 authentication type {auth_type} or its data does not match the configuration")]
    BadAuth {
        /// The authentication type received.
        auth_type: u8,
    },
    /// VRRPv2 advertisement interval differs from ours, which RFC 3768 §7.1 says to discard.
    #[error("VRRPv2 advertisement interval {got} s is not the configured {ours} s")]
    BadInterval {
        /// The interval received, seconds.
        got: u8,
        /// Our configured interval, seconds.
        ours: u8,
    },
}

impl VrrpRejection {
    /// Every counter a rejection can name, in check order.
    pub const COUNTERS: [&'static str; 9] = [
        "badttl",
        "badver",
        "badlen",
        "badsum",
        "badvrid",
        "badtype",
        "owner",
        "badauth",
        "badinterval",
    ];

    /// The counter this rejection increments.
    pub fn counter(&self) -> &'static str {
        match self {
            VrrpRejection::BadTtl { .. } => "badttl",
            VrrpRejection::BadVersion { .. } => "badver",
            VrrpRejection::BadLen { .. } => "badlen",
            VrrpRejection::BadSum => "badsum",
            VrrpRejection::BadVrid { .. } => "badvrid",
            VrrpRejection::BadType { .. } => "badtype",
            VrrpRejection::Owner => "owner",
            VrrpRejection::BadAuth { .. } => "badauth",
            VrrpRejection::BadInterval { .. } => "badinterval",
        }
    }
}

/// What the receiving side knows about the VRID an advert names, looked up once the cheap checks pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VridConfig {
    /// The version this VRID speaks.
    pub version: VrrpVersion,
    /// Our own priority (255 = owner, which discards adverts).
    pub priority: u8,
    /// VRRPv2 only: our interval in seconds (a mismatch is discarded).
    pub v2_interval: u8,
    /// VRRPv2 only: the authentication we expect.
    pub v2_auth: Vrrp2Auth,
}

/// A received advert that passed every check, in one form for both versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpAdvert {
    /// The VRID.
    pub vrid: u8,
    /// The sender's priority (0 = the master is stopping).
    pub priority: u8,
    /// The advertised interval in centiseconds (v2's seconds times 100).
    pub interval_cs: u16,
    /// The advertised addresses, in order.
    pub addresses: Vec<IpAddr>,
    /// The IPv4 checksum form the sender used (v3 over IPv4 only; `None` for IPv6 and v2).
    pub checksum_form: Option<ChecksumForm>,
    /// VRRPv2 sent simple-text authentication (type 1): accepted for migration, insecure.
    pub insecure_auth: bool,
}

/// Validates a VRRP payload in the RFCs' order (TTL, version, length, checksum, VRID, type, owner,
/// then v2's authentication and interval) and returns the first rejection or the parsed advert.
///
/// `vrid_config` runs at most once, after the checksum verified, so nothing configuration-dependent
/// is looked up for a corrupt packet. The version check needs the configured version, which a CARP
/// daemon only knows from the VRID; RFC order puts it before the VRID lookup, so the version nibble is
/// first checked against "2 or 3", and against the VRID's version once that is known.
pub fn check_vrrp(
    facts: &IpFacts,
    payload: &[u8],
    vrid_config: impl FnOnce(u8) -> Option<VridConfig>,
) -> Result<VrrpAdvert, VrrpRejection> {
    if facts.ttl != CARP_TTL {
        return Err(VrrpRejection::BadTtl { ttl: facts.ttl });
    }
    let version = payload.first().map_or(0, |b| b >> 4);
    if version != VRRP3_VERSION && version != VRRP2_VERSION {
        return Err(VrrpRejection::BadVersion {
            version,
            expected: VRRP3_VERSION,
        });
    }
    // Length and checksum of the version the nibble names.
    let (vrid, packet_type, checksum_form) = if version == VRRP3_VERSION {
        let p = Vrrp3Packet::new_checked(payload, facts.src.is_ipv6())?;
        let form = p
            .verify_checksum(facts.src, facts.dst)
            .ok_or(VrrpRejection::BadSum)?;
        // IPv6 has one form; only IPv4's is worth reporting.
        (p.vrid(), p.packet_type(), (!p.is_ipv6()).then_some(form))
    } else {
        let p = Vrrp2Packet::new_checked(payload)?;
        if !p.verify_checksum() {
            return Err(VrrpRejection::BadSum);
        }
        (p.vrid(), p.packet_type(), None)
    };
    let config = match vrid {
        0 => None,
        v => vrid_config(v),
    }
    .ok_or(VrrpRejection::BadVrid { vrid })?;
    let expected = match config.version {
        VrrpVersion::V3 => VRRP3_VERSION,
        VrrpVersion::V2 => VRRP2_VERSION,
    };
    if version != expected {
        return Err(VrrpRejection::BadVersion { version, expected });
    }
    if packet_type != VRRP_ADVERTISEMENT {
        return Err(VrrpRejection::BadType { packet_type });
    }
    if config.priority == VRRP_PRIORITY_OWNER {
        return Err(VrrpRejection::Owner);
    }
    if version == VRRP3_VERSION {
        let repr =
            Vrrp3Repr::from_packet(&Vrrp3Packet::new_unchecked(payload), facts.src.is_ipv6());
        return Ok(VrrpAdvert {
            vrid: repr.vrid,
            priority: repr.priority,
            interval_cs: repr.max_adver_int,
            addresses: repr.addresses,
            checksum_form,
            insecure_auth: false,
        });
    }
    let p = Vrrp2Packet::new_unchecked(payload);
    let auth = p.auth().ok_or(VrrpRejection::BadAuth {
        auth_type: p.auth_type(),
    })?;
    if auth != config.v2_auth {
        return Err(VrrpRejection::BadAuth {
            auth_type: p.auth_type(),
        });
    }
    // RFC 3768 §7.1: a different interval MUST be discarded (keepalived and FRR do so too).
    let repr = Vrrp2Repr::from_packet(&p);
    if repr.adver_int != config.v2_interval {
        return Err(VrrpRejection::BadInterval {
            got: repr.adver_int,
            ours: config.v2_interval,
        });
    }
    Ok(VrrpAdvert {
        vrid: repr.vrid,
        priority: repr.priority,
        interval_cs: u16::from(repr.adver_int) * 100,
        addresses: repr.addresses.into_iter().map(IpAddr::V4).collect(),
        checksum_form: None,
        insecure_auth: matches!(repr.auth, Vrrp2Auth::Simple(_)),
    })
}

/// TOS / traffic class of the VRRP adverts we send: internetwork control (0xc0), as keepalived sends.
pub const VRRP_TOS: u8 = 0xc0;

/// The IP packet (IPv4: TOS 0xc0, no DF, TTL 255; IPv6: traffic class 0xc0, hop limit 255) around a
/// VRRP message already emitted for `src` -> `dst`; `ident` is the IPv4 identification.
pub fn emit_vrrp_ip(message: &[u8], src: IpAddr, dst: IpAddr, ident: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + message.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[0x45, VRRP_TOS]);
            // A VRRP message is at most 8 + 255 * 4 + 8 bytes, so the total fits 16 bits.
            out.extend_from_slice(&((20 + message.len()) as u16).to_be_bytes());
            out.extend_from_slice(&ident.to_be_bytes());
            out.extend_from_slice(&[0, 0, CARP_TTL, carp_common::proto::IPPROTO_CARP, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let sum = super::checksum(&out[..20]);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            // Version 6, traffic class 0xc0, flow label 0.
            out.extend_from_slice(&[0x60 | (VRRP_TOS >> 4), (VRRP_TOS & 0x0f) << 4, 0, 0]);
            out.extend_from_slice(&(message.len() as u16).to_be_bytes());
            out.extend_from_slice(&[carp_common::proto::IPPROTO_CARP, CARP_TTL]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(message);
    out
}

/// An Ethernet frame around an IP packet from `emit_vrrp_ip`.
pub fn emit_vrrp_frame(ip: &[u8], src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let ethertype = if ip.first().is_some_and(|b| b >> 4 == 6) {
        carp_common::proto::ETH_P_IPV6
    } else {
        carp_common::proto::ETH_P_IP
    };
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn facts(ttl: u8) -> IpFacts {
        IpFacts {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            dst: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
            ttl,
        }
    }

    fn v3_config(priority: u8) -> VridConfig {
        VridConfig {
            version: VrrpVersion::V3,
            priority,
            v2_interval: 1,
            v2_auth: Vrrp2Auth::None,
        }
    }

    fn v3() -> Vec<u8> {
        let f = facts(255);
        Vrrp3Repr {
            vrid: 7,
            priority: 100,
            max_adver_int: 100,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
        }
        .to_bytes(f.src, f.dst, ChecksumForm::PseudoHeader)
    }

    fn v2(auth: Vrrp2Auth, interval: u8) -> Vec<u8> {
        Vrrp2Repr {
            vrid: 7,
            priority: 100,
            adver_int: interval,
            auth,
            addresses: vec![Ipv4Addr::new(10, 0, 0, 1)],
        }
        .to_bytes()
    }

    fn v2_config(auth: Vrrp2Auth) -> VridConfig {
        VridConfig {
            version: VrrpVersion::V2,
            priority: 100,
            v2_interval: 1,
            v2_auth: auth,
        }
    }

    #[test]
    fn accepts_v3_and_reports_form() {
        let a = check_vrrp(&facts(255), &v3(), |v| (v == 7).then(|| v3_config(100))).unwrap();
        assert_eq!(a.vrid, 7);
        assert_eq!(a.interval_cs, 100);
        assert_eq!(a.checksum_form, Some(ChecksumForm::PseudoHeader));
    }

    #[test]
    fn every_rejection_in_order() {
        let f = facts(255);
        let ok = |v| (v == 7).then(|| v3_config(100));
        assert_eq!(
            check_vrrp(&facts(64), &v3(), ok).unwrap_err().counter(),
            "badttl"
        );
        let mut p = v3();
        p[0] = 0x41;
        assert_eq!(check_vrrp(&f, &p, ok).unwrap_err().counter(), "badver");
        assert_eq!(
            check_vrrp(&f, &v3()[..10], ok).unwrap_err().counter(),
            "badlen"
        );
        let mut p = v3();
        p[9] ^= 1;
        assert_eq!(check_vrrp(&f, &p, ok).unwrap_err().counter(), "badsum");
        let e = check_vrrp(&f, &v3(), |_| None).unwrap_err();
        assert_eq!(e, VrrpRejection::BadVrid { vrid: 7 });
        // A v3 packet for a VRID configured as v2 is badver, found once the VRID is known.
        let e = check_vrrp(&f, &v3(), |_| Some(v2_config(Vrrp2Auth::None))).unwrap_err();
        assert_eq!(
            e,
            VrrpRejection::BadVersion {
                version: 3,
                expected: 2
            }
        );
        let mut p = v3();
        p[0] = 0x32;
        Vrrp3Packet::new_unchecked(&mut p[..]).fill_checksum(
            f.src,
            f.dst,
            ChecksumForm::PseudoHeader,
        );
        assert_eq!(check_vrrp(&f, &p, ok).unwrap_err().counter(), "badtype");
        let e = check_vrrp(&f, &v3(), |_| Some(v3_config(255))).unwrap_err();
        assert_eq!(e, VrrpRejection::Owner);
    }

    #[test]
    fn vrid_zero_never_looked_up() {
        let f = facts(255);
        let mut p = v3();
        p[1] = 0;
        Vrrp3Packet::new_unchecked(&mut p[..]).fill_checksum(
            f.src,
            f.dst,
            ChecksumForm::PseudoHeader,
        );
        let e = check_vrrp(&f, &p, |_| panic!("lookup for VRID 0")).unwrap_err();
        assert_eq!(e, VrrpRejection::BadVrid { vrid: 0 });
    }

    #[test]
    fn lookup_not_run_for_bad_checksum() {
        let mut p = v3();
        p[2] ^= 0x10;
        let e = check_vrrp(&facts(255), &p, |_| panic!("lookup before checksum"));
        assert_eq!(e.unwrap_err(), VrrpRejection::BadSum);
    }

    #[test]
    fn v2_auth_rules() {
        let f = facts(255);
        let none = v2(Vrrp2Auth::None, 1);
        let a = check_vrrp(&f, &none, |_| Some(v2_config(Vrrp2Auth::None))).unwrap();
        assert!(!a.insecure_auth);
        assert_eq!(a.interval_cs, 100);
        let pass = Vrrp2Auth::simple("secret12").unwrap();
        let p = v2(pass, 1);
        let a = check_vrrp(&f, &p, |_| Some(v2_config(pass))).unwrap();
        assert!(a.insecure_auth, "type 1 is flagged");
        // Wrong password, or a type-0 packet where type 1 is configured, or the reverse: badauth.
        let other = Vrrp2Auth::simple("secret13").unwrap();
        for (pkt, cfg) in [(&p, other), (&none, pass), (&p, Vrrp2Auth::None)] {
            let e = check_vrrp(&f, pkt, |_| Some(v2_config(cfg))).unwrap_err();
            assert_eq!(e.counter(), "badauth");
        }
        // Type 2 (IP authentication header) is refused whatever is configured.
        let mut ah = none.clone();
        ah[4] = 2;
        Vrrp2Packet::new_unchecked(&mut ah[..]).fill_checksum();
        let e = check_vrrp(&f, &ah, |_| Some(v2_config(Vrrp2Auth::None))).unwrap_err();
        assert_eq!(e, VrrpRejection::BadAuth { auth_type: 2 });
    }

    #[test]
    fn v2_interval_mismatch_discarded() {
        let f = facts(255);
        let p = v2(Vrrp2Auth::None, 3);
        let e = check_vrrp(&f, &p, |_| Some(v2_config(Vrrp2Auth::None))).unwrap_err();
        assert_eq!(e, VrrpRejection::BadInterval { got: 3, ours: 1 });
        // Control: the same packet at our interval passes.
        assert!(
            check_vrrp(&f, &v2(Vrrp2Auth::None, 1), |_| Some(v2_config(
                Vrrp2Auth::None
            )))
            .is_ok()
        );
    }

    #[test]
    fn v3_interval_mismatch_is_not_a_rejection() {
        let f = facts(255);
        let bytes = Vrrp3Repr {
            vrid: 7,
            priority: 100,
            max_adver_int: 37,
            addresses: vec![],
        }
        .to_bytes(f.src, f.dst, ChecksumForm::MessageOnly);
        let a = check_vrrp(&f, &bytes, |_| Some(v3_config(100))).unwrap();
        assert_eq!(a.interval_cs, 37);
        assert_eq!(a.checksum_form, Some(ChecksumForm::MessageOnly));
    }
}
