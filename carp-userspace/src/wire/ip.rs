//! IPv4, IPv6 and Ethernet encapsulation of CARP adverts (spec §1): parse a received IP packet or
//! Ethernet frame down to its [`IpFacts`] and CARP payload, and build the exact packets and frames we send.
//!
//! Parsing here stands in for the kernel's IP input path, so every way an IP or Ethernet header can be
//! unusable (truncated, wrong version, bad IPv4 header checksum, not protocol 112, a fragment, an IPv6
//! extension header) is one rejection, `hdrops`. Judging the TTL and the CARP payload is `wire::check`'s
//! job, so that the carpstats order of spec §7 holds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_common::proto::{
    CARP_GROUP_MAC_V4, CARP_GROUP_MAC_V6, CARP_GROUP_V4, CARP_GROUP_V6, CARP_HEADER_LEN, CARP_TTL,
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_CARP,
};

use super::{AdvertPacket, AdvertRepr, Rejection, check, checksum};

/// Length of an IPv4 header without options (what we send).
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of an untagged Ethernet header.
pub const ETH_HEADER_LEN: usize = 14;
/// Length of an 802.1Q tag.
pub const VLAN_TAG_LEN: usize = 4;
/// Total length of an IPv4 advert (header plus CARP).
pub const IPV4_ADVERT_LEN: usize = IPV4_HEADER_LEN + CARP_HEADER_LEN;
/// Total length of an IPv6 advert (header plus CARP).
pub const IPV6_ADVERT_LEN: usize = IPV6_HEADER_LEN + CARP_HEADER_LEN;
/// TOS byte of IPv4 adverts: low delay, as OpenBSD and ucarp send.
pub const ADVERT_TOS: u8 = 0x10;

/// The IP header facts receive validation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpFacts {
    /// Source address (used for loop detection and election tie-breaks).
    pub src: IpAddr,
    /// Destination address (the group, or us in unicast mode).
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
}

/// An IP packet whose header is usable and carries protocol 112; the payload is not yet judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpAdvert<'a> {
    /// What the IP header says.
    pub facts: IpFacts,
    /// The IP payload, bounded by the IP length field (so Ethernet padding is excluded).
    pub payload: &'a [u8],
}

impl<'a> IpAdvert<'a> {
    /// A checked view over the CARP header, or `badlen` if the payload is too short.
    pub fn advert(&self) -> Result<AdvertPacket<&'a [u8]>, Rejection> {
        AdvertPacket::new_checked(self.payload)
    }

    /// Runs `wire::check` on this packet: the full receive validation after the IP header.
    pub fn check(
        &self,
        vhid_known: impl FnOnce(u8) -> bool,
        authentic: impl FnOnce(&AdvertRepr) -> bool,
    ) -> Result<AdvertRepr, Rejection> {
        check(&self.facts, self.payload, vhid_known, authentic)
    }
}

/// An Ethernet frame carrying a CARP IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthAdvert<'a> {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC (BSD: 00:00:5e:00:01:vhid, ucarp: 00:00:5e:00:00:vhid).
    pub src_mac: [u8; 6],
    /// The VLAN id of a single 802.1Q (or 802.1ad) tag, if the frame carried one.
    pub vlan: Option<u16>,
    /// The IP packet inside.
    pub ip: IpAdvert<'a>,
}

fn hdrop(why: &'static str) -> Rejection {
    Rejection::HeaderDrop { why }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N)?.try_into().ok()
}

/// Parses an IPv4 or IPv6 packet (chosen by the version nibble) carrying CARP.
pub fn parse_ip(packet: &[u8]) -> Result<IpAdvert<'_>, Rejection> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(packet),
        Some(6) => parse_ipv6(packet),
        Some(_) => Err(hdrop("IP version is neither 4 nor 6")),
        None => Err(hdrop("empty IP packet")),
    }
}

/// Parses an IPv4 packet carrying CARP; options are skipped, trailing bytes beyond total length ignored.
pub fn parse_ipv4(packet: &[u8]) -> Result<IpAdvert<'_>, Rejection> {
    if packet.len() < IPV4_HEADER_LEN {
        return Err(hdrop("truncated IPv4 header"));
    }
    if packet[0] >> 4 != 4 {
        return Err(hdrop("not an IPv4 header"));
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN {
        return Err(hdrop("IPv4 header length under 20"));
    }
    let header = packet
        .get(..header_len)
        .ok_or_else(|| hdrop("truncated IPv4 options"))?;
    if checksum(header) != 0 {
        return Err(hdrop("bad IPv4 header checksum"));
    }
    let total_len = usize::from(be16(packet, 2).ok_or_else(|| hdrop("truncated IPv4 header"))?);
    if total_len < header_len {
        return Err(hdrop("IPv4 total length shorter than its header"));
    }
    let payload = packet
        .get(header_len..total_len)
        .ok_or_else(|| hdrop("IPv4 total length beyond the end of the packet"))?;
    let frag = be16(packet, 6).ok_or_else(|| hdrop("truncated IPv4 header"))?;
    // MF set or a non-zero offset: adverts are never fragmented, and we do not reassemble.
    if frag & 0x3fff != 0 {
        return Err(hdrop("IPv4 fragment"));
    }
    if packet[9] != IPPROTO_CARP {
        return Err(hdrop("IP protocol is not 112"));
    }
    let src: [u8; 4] = array(packet, 12).ok_or_else(|| hdrop("truncated IPv4 header"))?;
    let dst: [u8; 4] = array(packet, 16).ok_or_else(|| hdrop("truncated IPv4 header"))?;
    Ok(IpAdvert {
        facts: IpFacts {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            ttl: packet[8],
        },
        payload,
    })
}

/// Parses an IPv6 packet carrying CARP directly after the fixed header (no extension headers, spec §1).
pub fn parse_ipv6(packet: &[u8]) -> Result<IpAdvert<'_>, Rejection> {
    if packet.len() < IPV6_HEADER_LEN {
        return Err(hdrop("truncated IPv6 header"));
    }
    if packet[0] >> 4 != 6 {
        return Err(hdrop("not an IPv6 header"));
    }
    if packet[6] != IPPROTO_CARP {
        return Err(hdrop("IPv6 next header is not 112"));
    }
    let payload_len = usize::from(be16(packet, 4).ok_or_else(|| hdrop("truncated IPv6 header"))?);
    let payload = packet
        .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len)
        .ok_or_else(|| hdrop("IPv6 payload length beyond the end of the packet"))?;
    let src: [u8; 16] = array(packet, 8).ok_or_else(|| hdrop("truncated IPv6 header"))?;
    let dst: [u8; 16] = array(packet, 24).ok_or_else(|| hdrop("truncated IPv6 header"))?;
    Ok(IpAdvert {
        facts: IpFacts {
            src: IpAddr::V6(Ipv6Addr::from(src)),
            dst: IpAddr::V6(Ipv6Addr::from(dst)),
            ttl: packet[7],
        },
        payload,
    })
}

/// Parses an Ethernet frame, with at most one VLAN tag, carrying a CARP IP packet.
pub fn parse_ethernet(frame: &[u8]) -> Result<EthAdvert<'_>, Rejection> {
    let dst_mac: [u8; 6] = array(frame, 0).ok_or_else(|| hdrop("truncated Ethernet header"))?;
    let src_mac: [u8; 6] = array(frame, 6).ok_or_else(|| hdrop("truncated Ethernet header"))?;
    let mut ethertype = be16(frame, 12).ok_or_else(|| hdrop("truncated Ethernet header"))?;
    let mut offset = ETH_HEADER_LEN;
    let mut vlan = None;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let tci = be16(frame, offset).ok_or_else(|| hdrop("truncated VLAN tag"))?;
        vlan = Some(tci & 0x0fff);
        ethertype = be16(frame, offset + 2).ok_or_else(|| hdrop("truncated VLAN tag"))?;
        offset += VLAN_TAG_LEN;
    }
    let packet = frame.get(offset..).unwrap_or_default();
    let ip = match ethertype {
        ETH_P_IP => parse_ipv4(packet)?,
        ETH_P_IPV6 => parse_ipv6(packet)?,
        ETH_P_8021Q | ETH_P_8021AD => return Err(hdrop("more than one VLAN tag")),
        _ => return Err(hdrop("EtherType is neither IPv4 nor IPv6")),
    };
    Ok(EthAdvert {
        dst_mac,
        src_mac,
        vlan,
        ip,
    })
}

/// Parses and fully validates an Ethernet frame: `parse_ethernet` then `wire::check`.
pub fn receive_frame<'a>(
    frame: &'a [u8],
    vhid_known: impl FnOnce(u8) -> bool,
    authentic: impl FnOnce(&AdvertRepr) -> bool,
) -> Result<(EthAdvert<'a>, AdvertRepr), Rejection> {
    let eth = parse_ethernet(frame)?;
    let repr = eth.ip.check(vhid_known, authentic)?;
    Ok((eth, repr))
}

/// Builds an IPv4 advert: TOS 0x10, DF, TTL 255, total length 56, protocol 112, header checksum filled.
pub fn emit_ipv4(
    repr: &AdvertRepr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
) -> [u8; IPV4_ADVERT_LEN] {
    let mut out = [0; IPV4_ADVERT_LEN];
    out[0] = 0x45;
    out[1] = ADVERT_TOS;
    out[2..4].copy_from_slice(&(IPV4_ADVERT_LEN as u16).to_be_bytes());
    out[4..6].copy_from_slice(&ident.to_be_bytes());
    out[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    out[8] = CARP_TTL;
    out[9] = IPPROTO_CARP;
    out[12..16].copy_from_slice(&src.octets());
    out[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&out[..IPV4_HEADER_LEN]);
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    out[IPV4_HEADER_LEN..].copy_from_slice(&repr.to_bytes());
    out
}

/// Builds an IPv6 advert: traffic class 0, hop limit 255, next header 112, payload length 36.
pub fn emit_ipv6(repr: &AdvertRepr, src: Ipv6Addr, dst: Ipv6Addr) -> [u8; IPV6_ADVERT_LEN] {
    let mut out = [0; IPV6_ADVERT_LEN];
    out[0] = 0x60;
    out[4..6].copy_from_slice(&(CARP_HEADER_LEN as u16).to_be_bytes());
    out[6] = IPPROTO_CARP;
    out[7] = CARP_TTL;
    out[8..24].copy_from_slice(&src.octets());
    out[24..40].copy_from_slice(&dst.octets());
    out[IPV6_HEADER_LEN..].copy_from_slice(&repr.to_bytes());
    out
}

/// How an advert is carried in IP: family, addresses and (IPv4) the IP id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// IPv4 from `src` to `dst` with IP id `ident`.
    V4 {
        /// Source address.
        src: Ipv4Addr,
        /// Destination: 224.0.0.18 or a unicast peer.
        dst: Ipv4Addr,
        /// IP identification (OpenBSD and ucarp use a random one).
        ident: u16,
    },
    /// IPv6 from `src` to `dst`.
    V6 {
        /// Source address (in practice the parent's link-local address).
        src: Ipv6Addr,
        /// Destination: ff02::12 or a unicast peer.
        dst: Ipv6Addr,
    },
}

impl Encap {
    /// IPv4 to the CARP group 224.0.0.18.
    pub fn group_v4(src: Ipv4Addr, ident: u16) -> Self {
        Encap::V4 {
            src,
            dst: Ipv4Addr::from(CARP_GROUP_V4),
            ident,
        }
    }

    /// IPv6 to the CARP group ff02::12.
    pub fn group_v6(src: Ipv6Addr) -> Self {
        Encap::V6 {
            src,
            dst: Ipv6Addr::from(CARP_GROUP_V6),
        }
    }

    /// The Ethernet destination for the group of this family (unicast peers need the peer's MAC).
    pub fn group_mac(&self) -> [u8; 6] {
        match self {
            Encap::V4 { .. } => CARP_GROUP_MAC_V4,
            Encap::V6 { .. } => CARP_GROUP_MAC_V6,
        }
    }

    /// The EtherType of this family.
    pub fn ethertype(&self) -> u16 {
        match self {
            Encap::V4 { .. } => ETH_P_IP,
            Encap::V6 { .. } => ETH_P_IPV6,
        }
    }

    /// Builds the IP packet carrying `repr`.
    pub fn emit_ip(&self, repr: &AdvertRepr) -> Vec<u8> {
        match *self {
            Encap::V4 { src, dst, ident } => emit_ipv4(repr, src, dst, ident).to_vec(),
            Encap::V6 { src, dst } => emit_ipv6(repr, src, dst).to_vec(),
        }
    }
}

/// Builds an untagged Ethernet frame carrying `repr` (dst is `encap.group_mac()` or a peer's MAC).
pub fn emit_frame(repr: &AdvertRepr, encap: &Encap, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let ip = encap.emit_ip(repr);
    let mut frame = Vec::with_capacity(ETH_HEADER_LEN + ip.len());
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&encap.ethertype().to_be_bytes());
    frame.extend_from_slice(&ip);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use carp_common::proto::virtual_mac;

    fn repr() -> AdvertRepr {
        AdvertRepr {
            vhid: 3,
            advskew: 100,
            advbase: 1,
            demote: 0,
            counter: [1, 2, 3, 4, 5, 6, 7, 8],
            digest: [0xab; 20],
        }
    }

    fn v4() -> [u8; IPV4_ADVERT_LEN] {
        emit_ipv4(
            &repr(),
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(224, 0, 0, 18),
            0x1234,
        )
    }

    #[test]
    fn ipv4_header_bytes() {
        let p = v4();
        assert_eq!(
            &p[..10],
            &[0x45, 0x10, 0x00, 0x38, 0x12, 0x34, 0x40, 0x00, 0xff, 0x70]
        );
        assert_eq!(checksum(&p[..20]), 0);
        let parsed = parse_ipv4(&p).expect("valid");
        assert_eq!(parsed.facts.ttl, 255);
        assert_eq!(parsed.facts.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(parsed.payload, &repr().to_bytes()[..]);
    }

    #[test]
    fn ipv6_header_bytes() {
        let src: Ipv6Addr = "fe80::1".parse().expect("addr");
        let p = emit_ipv6(&repr(), src, Ipv6Addr::from(CARP_GROUP_V6));
        assert_eq!(&p[..8], &[0x60, 0, 0, 0, 0, 36, 112, 255]);
        let parsed = parse_ip(&p).expect("valid");
        assert_eq!(parsed.facts.src, IpAddr::V6(src));
        assert_eq!(parsed.facts.ttl, 255);
        assert_eq!(parsed.payload.len(), 36);
    }

    #[test]
    fn ipv4_hdrops() {
        let p = v4();
        let hd = |b: &[u8]| parse_ipv4(b).unwrap_err().counter();
        assert_eq!(hd(&p[..19]), "hdrops");
        let mut bad = p;
        bad[11] ^= 1;
        assert_eq!(hd(&bad), "hdrops");
        let mut bad = p;
        bad[9] = 17;
        let sum = {
            bad[10..12].copy_from_slice(&[0, 0]);
            checksum(&bad[..20])
        };
        bad[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            parse_ipv4(&bad).unwrap_err(),
            hdrop("IP protocol is not 112")
        );
        // Claimed total length beyond the buffer.
        assert_eq!(hd(&p[..50]), "hdrops");
    }

    #[test]
    fn ipv4_fragment_is_hdrops() {
        let mut p = v4();
        p[6] = 0x20; // MF
        p[10..12].copy_from_slice(&[0, 0]);
        let sum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(parse_ipv4(&p).unwrap_err(), hdrop("IPv4 fragment"));
    }

    #[test]
    fn short_ip_payload_is_badlen_after_ttl() {
        let mut p = v4();
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let sum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        let ip = parse_ipv4(&p).expect("header fine");
        assert_eq!(ip.payload.len(), 20);
        assert_eq!(
            ip.check(|_| true, |_| true).unwrap_err(),
            Rejection::BadLen { len: 20 }
        );
    }

    #[test]
    fn ethernet_with_and_without_vlan() {
        let encap = Encap::group_v4(Ipv4Addr::new(10, 0, 0, 2), 7);
        let frame = emit_frame(&repr(), &encap, virtual_mac(3), encap.group_mac());
        assert_eq!(frame.len(), 70);
        let eth = parse_ethernet(&frame).expect("valid");
        assert_eq!(eth.src_mac, virtual_mac(3));
        assert_eq!(eth.dst_mac, CARP_GROUP_MAC_V4);
        assert_eq!(eth.vlan, None);

        let mut tagged = frame[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x20, 0x0a]);
        tagged.extend_from_slice(&frame[12..]);
        // Ethernet padding after the IP packet is ignored.
        tagged.extend_from_slice(&[0; 6]);
        let eth = parse_ethernet(&tagged).expect("valid");
        assert_eq!(eth.vlan, Some(10));
        assert_eq!(eth.ip.payload, &repr().to_bytes()[..]);

        let mut double = tagged[..16].to_vec();
        double.extend_from_slice(&tagged[12..]);
        assert_eq!(
            parse_ethernet(&double).unwrap_err(),
            hdrop("more than one VLAN tag")
        );
    }

    #[test]
    fn ethernet_v6_group() {
        let encap = Encap::group_v6("fe80::2".parse().expect("addr"));
        let frame = emit_frame(&repr(), &encap, virtual_mac(3), encap.group_mac());
        assert_eq!(frame.len(), 14 + 76);
        assert_eq!(&frame[..6], &CARP_GROUP_MAC_V6);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        let (eth, got) = receive_frame(&frame, |v| v == 3, |_| true).expect("valid");
        assert_eq!(got, repr());
        assert_eq!(eth.ip.facts.dst, IpAddr::V6(Ipv6Addr::from(CARP_GROUP_V6)));
    }

    #[test]
    fn non_ip_ethertype_is_hdrops() {
        let mut frame = vec![0u8; 60];
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_ethernet(&frame).unwrap_err().counter(), "hdrops");
        assert_eq!(parse_ethernet(&[]).unwrap_err().counter(), "hdrops");
    }
}
