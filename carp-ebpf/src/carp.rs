//! The 36-byte CARP header as the kernel reads it (the userspace twin is carp-userspace's wire::advert).
use crate::packet::csum_fold;
use carp_common::proto::CARP_HEADER_LEN;

/// CARP header bytes.
#[repr(C)]
pub struct CarpHdr {
    /// All 36 bytes, kept whole for the checksum and for the controller's HMAC check.
    pub bytes: [u8; CARP_HEADER_LEN],
}

impl CarpHdr {
    /// Version, the high nibble of byte 0.
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.bytes[0] >> 4
    }
    /// The advskew.
    #[inline(always)]
    pub fn advskew(&self) -> u8 {
        self.bytes[2]
    }
    /// The OpenBSD demote byte.
    #[inline(always)]
    pub fn demote(&self) -> u8 {
        self.bytes[4]
    }
    /// The advbase.
    #[inline(always)]
    pub fn advbase(&self) -> u8 {
        self.bytes[5]
    }
    /// True when the Internet checksum over the 36 bytes comes out right (no pseudo-header).
    #[inline(always)]
    pub fn checksum_ok(&self) -> bool {
        // The one's-complement sum is byte-order independent (RFC 1071), so native 16-bit loads do: 18
        // loads instead of 36 byte loads and shifts. Every CARP header starts at an even offset (14 or
        // 18 bytes of L2, then 20 + 4n or 40 bytes of IP) of a frame whose start XDP keeps aligned.
        let words = self.bytes.as_ptr().cast::<u16>();
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < CARP_HEADER_LEN / 2 {
            // SAFETY: i < 18 keeps the read inside the 36 bytes; see above for the alignment.
            sum += unsafe { words.add(i).read() } as u32;
            i += 1;
        }
        csum_fold(sum) == 0xffff
    }
}
