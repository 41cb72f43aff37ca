//! The 36-byte CARP header as the kernel reads it (the userspace twin is carp-userspace's wire::advert).
use crate::packet::{csum_add, csum_fold};
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
        csum_fold(csum_add(0, &self.bytes)) == 0xffff
    }
}
