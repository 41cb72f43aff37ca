//! IPv6 header and the ICMPv6 neighbour discovery messages we answer.

/// IPv6 fixed header.
#[repr(C)]
pub struct Ipv6Hdr {
    /// Version, traffic class, flow label.
    pub vtcfl: [u8; 4],
    /// Payload length.
    pub payload_len: [u8; 2],
    /// Next header.
    pub nexthdr: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
}

pub use carp_common::proto::IPPROTO_ICMPV6;
/// ICMPv6 type of a neighbour solicitation.
pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type of a neighbour advertisement.
pub const ND_NEIGHBOR_ADVERT: u8 = 136;

/// A neighbour solicitation or advertisement, up to the target address.
#[repr(C)]
pub struct NdMsg {
    /// ICMPv6 type.
    pub icmp_type: u8,
    /// ICMPv6 code.
    pub code: u8,
    /// ICMPv6 checksum.
    pub csum: [u8; 2],
    /// Reserved (NS) or R/S/O flags (NA).
    pub flags: [u8; 4],
    /// Target address.
    pub target: [u8; 16],
}

/// The target link-layer address option of an NA.
#[repr(C)]
pub struct LlaOption {
    /// Option type (2 = target link-layer address).
    pub opt_type: u8,
    /// Length in units of 8 bytes (1).
    pub len: u8,
    /// The MAC.
    pub mac: [u8; 6],
}

/// True for ff00::/8.
#[inline(always)]
pub fn is_multicast(addr: &[u8; 16]) -> bool {
    addr[0] == 0xff
}
