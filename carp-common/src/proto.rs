//! CARP protocol constants (spec §1): numbers both the kernel and userspace parsers depend on.

/// IP protocol number of CARP (shared with VRRP).
pub const IPPROTO_CARP: u8 = 112;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// CARP protocol version carried in the high nibble of byte 0.
pub const CARP_VERSION: u8 = 2;
/// CARP packet type "advertisement", the low nibble of byte 0.
pub const CARP_ADVERTISEMENT: u8 = 1;
/// Byte 0 of every advert we send: version 2, type 1.
pub const CARP_VERSION_TYPE: u8 = (CARP_VERSION << 4) | CARP_ADVERTISEMENT;
/// Length of the CARP header (and of an advert's IP payload).
pub const CARP_HEADER_LEN: usize = 36;
/// The authlen field: counter plus digest in 32-bit words.
pub const CARP_AUTHLEN: u8 = 7;
/// TTL / hop limit every advert must carry.
pub const CARP_TTL: u8 = 255;
/// Length of the HMAC-SHA1 digest in the header.
pub const CARP_DIGEST_LEN: usize = 20;
/// Advbase and advskew of a bow-out advert.
pub const CARP_BOW_OUT: u8 = 255;
/// Highest configurable advskew (255 is reserved for bow-out).
pub const CARP_MAX_ADVSKEW: u8 = 254;
/// Highest configurable advbase (255 is reserved for bow-out).
pub const CARP_MAX_ADVBASE: u8 = 254;
/// The IPv4 multicast group adverts are sent to.
pub const CARP_GROUP_V4: [u8; 4] = [224, 0, 0, 18];
/// The IPv6 multicast group adverts are sent to.
pub const CARP_GROUP_V6: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
/// Ethernet destination of IPv4 adverts.
pub const CARP_GROUP_MAC_V4: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];
/// Ethernet destination of IPv6 adverts.
pub const CARP_GROUP_MAC_V6: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x12];
/// Highest vhid (0 is invalid).
pub const MAX_VHID: usize = 255;

/// The virtual MAC of a vhid: 00:00:5e:00:01:<vhid>.
pub const fn virtual_mac(vhid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vhid]
}

/// The source MAC ucarp uses for a vhid: 00:00:5e:00:00:<vhid> (spec §1, ucarp quirk).
pub const fn ucarp_mac(vhid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x00, vhid]
}

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad service tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
