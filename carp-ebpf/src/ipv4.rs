//! IPv4 header.
use crate::packet::{csum_fold, csum_frame};
use aya_ebpf::programs::XdpContext;

/// IPv4 header without options.
#[repr(C)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and header length in words (low nibble).
    pub vihl: u8,
    /// Type of service.
    pub tos: u8,
    /// Total length.
    pub tot_len: [u8; 2],
    /// Identification.
    pub id: [u8; 2],
    /// Flags and fragment offset.
    pub frag: [u8; 2],
    /// Time to live.
    pub ttl: u8,
    /// Payload protocol.
    pub proto: u8,
    /// Header checksum.
    pub csum: [u8; 2],
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
}

impl Ipv4Hdr {
    /// Header length in bytes (20..=60).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.vihl & 0x0f) as usize) * 4
    }
}

/// True when the IPv4 header of `hlen` bytes (20..=60) at `off` has a correct header checksum, as
/// every IP stack requires before it looks at the payload (the advert intake runs before the
/// kernel's; found by fuzzing it against the userspace checks).
#[inline(always)]
pub fn header_checksum_ok(ctx: &XdpContext, off: usize, hlen: usize) -> bool {
    // 30 words: the longest IPv4 header, 60 bytes.
    csum_frame::<30>(ctx, off, hlen, 0).is_some_and(|sum| csum_fold(sum) == 0xffff)
}

/// True for 224.0.0.0/4.
#[inline(always)]
pub fn is_multicast(addr: [u8; 4]) -> bool {
    addr[0] & 0xf0 == 0xe0
}
