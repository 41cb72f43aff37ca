//! The 36-byte CARP advertisement header (spec §1): [`AdvertPacket`], a zero-copy view with field
//! accessors and the header checksum, and [`AdvertRepr`], the plain values with `parse`/`emit`.
//!
//! The checksum covers exactly the 36 CARP bytes with no pseudo-header, so the same bytes are valid
//! under IPv4 and IPv6. On receipt only the version is checked; type and authlen are written
//! (0x21, 7) but never read, as in OpenBSD, FreeBSD and ucarp.

use carp_common::proto::{
    CARP_AUTHLEN, CARP_BOW_OUT, CARP_DIGEST_LEN, CARP_HEADER_LEN, CARP_VERSION, CARP_VERSION_TYPE,
};

use super::{Rejection, checksum};

mod field {
    use core::ops::Range;

    pub const VERSION_TYPE: usize = 0;
    pub const VHID: usize = 1;
    pub const ADVSKEW: usize = 2;
    pub const AUTHLEN: usize = 3;
    pub const DEMOTE: usize = 4;
    pub const ADVBASE: usize = 5;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const COUNTER: Range<usize> = 8..16;
    pub const DIGEST: Range<usize> = 16..36;
}

/// A view over a buffer holding a CARP header; accessors panic unless built by `new_checked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AdvertPacket<T> {
    /// Wraps a buffer without checking its length (accessors panic if it is under 36 bytes).
    pub const fn new_unchecked(buffer: T) -> Self {
        AdvertPacket { buffer }
    }

    /// Wraps a buffer after checking it holds at least the 36-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, Rejection> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the whole header; longer buffers are fine (trailing bytes are ignored).
    pub fn check_len(&self) -> Result<(), Rejection> {
        let len = self.buffer.as_ref().len();
        if len < CARP_HEADER_LEN {
            Err(Rejection::BadLen { len })
        } else {
            Ok(())
        }
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 36 header bytes (without any trailing bytes).
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..CARP_HEADER_LEN]
    }

    /// The version (high nibble of byte 0); 2 for CARP.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TYPE] >> 4
    }

    /// The packet type (low nibble of byte 0); 1 for an advertisement.
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TYPE] & 0x0f
    }

    /// The virtual host id.
    pub fn vhid(&self) -> u8 {
        self.buffer.as_ref()[field::VHID]
    }

    /// The advertisement skew.
    pub fn advskew(&self) -> u8 {
        self.buffer.as_ref()[field::ADVSKEW]
    }

    /// The authlen field (7 on the wire, never checked).
    pub fn authlen(&self) -> u8 {
        self.buffer.as_ref()[field::AUTHLEN]
    }

    /// The OpenBSD demote count (reserved and 0 for FreeBSD and ucarp).
    pub fn demote(&self) -> u8 {
        self.buffer.as_ref()[field::DEMOTE]
    }

    /// The advertisement base interval in seconds.
    pub fn advbase(&self) -> u8 {
        self.buffer.as_ref()[field::ADVBASE]
    }

    /// The checksum field as stored.
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The 8 counter bytes exactly as on the wire (they go into the HMAC as-is).
    pub fn counter(&self) -> [u8; 8] {
        let mut out = [0; 8];
        out.copy_from_slice(&self.buffer.as_ref()[field::COUNTER]);
        out
    }

    /// The 20-byte HMAC-SHA1 digest.
    pub fn digest(&self) -> [u8; CARP_DIGEST_LEN] {
        let mut out = [0; CARP_DIGEST_LEN];
        out.copy_from_slice(&self.buffer.as_ref()[field::DIGEST]);
        out
    }

    /// True if the Internet checksum over the 36 header bytes comes out as zero.
    pub fn verify_checksum(&self) -> bool {
        checksum(self.header()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> AdvertPacket<T> {
    /// Sets version and type (byte 0).
    pub fn set_version_type(&mut self, version: u8, packet_type: u8) {
        self.buffer.as_mut()[field::VERSION_TYPE] = (version << 4) | (packet_type & 0x0f);
    }

    /// Sets the virtual host id.
    pub fn set_vhid(&mut self, value: u8) {
        self.buffer.as_mut()[field::VHID] = value;
    }

    /// Sets the advertisement skew.
    pub fn set_advskew(&mut self, value: u8) {
        self.buffer.as_mut()[field::ADVSKEW] = value;
    }

    /// Sets the authlen field.
    pub fn set_authlen(&mut self, value: u8) {
        self.buffer.as_mut()[field::AUTHLEN] = value;
    }

    /// Sets the demote count.
    pub fn set_demote(&mut self, value: u8) {
        self.buffer.as_mut()[field::DEMOTE] = value;
    }

    /// Sets the advertisement base interval.
    pub fn set_advbase(&mut self, value: u8) {
        self.buffer.as_mut()[field::ADVBASE] = value;
    }

    /// Sets the checksum field to a raw value (use `fill_checksum` to compute it).
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the 8 counter bytes.
    pub fn set_counter(&mut self, value: &[u8; 8]) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(value);
    }

    /// Sets the 20-byte digest.
    pub fn set_digest(&mut self, value: &[u8; CARP_DIGEST_LEN]) {
        self.buffer.as_mut()[field::DIGEST].copy_from_slice(value);
    }

    /// Computes the checksum over the 36 header bytes and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum(&self.buffer.as_ref()[..CARP_HEADER_LEN]);
        self.set_checksum(sum);
    }
}

/// The values of a CARP advertisement; version, type and authlen are implied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdvertRepr {
    /// Virtual host id (1..=255).
    pub vhid: u8,
    /// Advertisement skew (255 only when bowing out).
    pub advskew: u8,
    /// Advertisement base interval in seconds (255 only when bowing out).
    pub advbase: u8,
    /// OpenBSD demote count; 0 for FreeBSD and ucarp.
    pub demote: u8,
    /// The 8 counter bytes as on the wire.
    pub counter: [u8; 8],
    /// The HMAC-SHA1 digest.
    pub digest: [u8; CARP_DIGEST_LEN],
}

impl AdvertRepr {
    /// Parses a header: length, then checksum, then version (type and authlen are not checked).
    ///
    /// The vhid check that OpenBSD runs between checksum and version needs configuration, so it
    /// lives in `wire::check`, which callers on the receive path should prefer.
    pub fn parse<T: AsRef<[u8]>>(packet: &AdvertPacket<T>) -> Result<Self, Rejection> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Rejection::BadSum);
        }
        if packet.version() != CARP_VERSION {
            return Err(Rejection::BadVersion {
                version: packet.version(),
            });
        }
        Ok(Self::from_packet(packet))
    }

    /// Reads the fields of a length-checked packet without judging them.
    pub(crate) fn from_packet<T: AsRef<[u8]>>(packet: &AdvertPacket<T>) -> Self {
        AdvertRepr {
            vhid: packet.vhid(),
            advskew: packet.advskew(),
            advbase: packet.advbase(),
            demote: packet.demote(),
            counter: packet.counter(),
            digest: packet.digest(),
        }
    }

    /// Writes the header (0x21, authlen 7, the fields, then the checksum) into a checked packet.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut AdvertPacket<T>) {
        packet.set_version_type(CARP_VERSION, CARP_VERSION_TYPE & 0x0f);
        packet.set_vhid(self.vhid);
        packet.set_advskew(self.advskew);
        packet.set_authlen(CARP_AUTHLEN);
        packet.set_demote(self.demote);
        packet.set_advbase(self.advbase);
        packet.set_counter(&self.counter);
        packet.set_digest(&self.digest);
        packet.fill_checksum();
    }

    /// The 36 header bytes of this advert, checksum filled in.
    pub fn to_bytes(&self) -> [u8; CARP_HEADER_LEN] {
        let mut out = [0; CARP_HEADER_LEN];
        self.emit(&mut AdvertPacket::new_unchecked(&mut out[..]));
        out
    }

    /// True for OpenBSD's shutdown advert (advbase 255 and advskew 255), which invites takeover.
    pub fn is_bow_out(&self) -> bool {
        self.advbase == CARP_BOW_OUT && self.advskew == CARP_BOW_OUT
    }

    /// Number of bytes `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        CARP_HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From ucarp-vhid7-secret-1.bin (see tests/vectors/README.txt): vhid 7, advskew 0, advbase 1.
    const UCARP_VHID7: [u8; 36] = [
        0x21, 0x07, 0x00, 0x07, 0x00, 0x01, 0xc0, 0x07, 0x45, 0x7d, 0xe1, 0x4b, 0x2a, 0xdd, 0xcd,
        0x3f, 0x82, 0x00, 0x41, 0xff, 0x42, 0x71, 0xf1, 0xbd, 0x02, 0x04, 0x0c, 0xf1, 0x56, 0x25,
        0x80, 0x6d, 0x17, 0x78, 0x0a, 0xd4,
    ];

    #[test]
    fn view_reads_fields() {
        let p = AdvertPacket::new_checked(&UCARP_VHID7[..]).expect("36 bytes");
        assert_eq!(p.version(), 2);
        assert_eq!(p.packet_type(), 1);
        assert_eq!(p.vhid(), 7);
        assert_eq!(p.advskew(), 0);
        assert_eq!(p.authlen(), 7);
        assert_eq!(p.demote(), 0);
        assert_eq!(p.advbase(), 1);
        assert_eq!(p.checksum(), 0xc007);
        assert_eq!(
            p.counter(),
            [0x45, 0x7d, 0xe1, 0x4b, 0x2a, 0xdd, 0xcd, 0x3f]
        );
        assert_eq!(p.digest()[0], 0x82);
        assert!(p.verify_checksum());
    }

    #[test]
    fn repr_round_trip_is_byte_exact() {
        let p = AdvertPacket::new_checked(&UCARP_VHID7[..]).expect("36 bytes");
        let repr = AdvertRepr::parse(&p).expect("valid");
        assert_eq!(repr.to_bytes(), UCARP_VHID7);
        assert!(!repr.is_bow_out());
    }

    #[test]
    fn short_buffer_is_badlen() {
        assert_eq!(
            AdvertPacket::new_checked(&UCARP_VHID7[..35]).unwrap_err(),
            Rejection::BadLen { len: 35 }
        );
        assert_eq!(
            AdvertPacket::new_checked(&[][..]).unwrap_err(),
            Rejection::BadLen { len: 0 }
        );
    }

    #[test]
    fn parse_checks_sum_then_version() {
        let mut b = UCARP_VHID7;
        b[0] = 0x11;
        let p = AdvertPacket::new_unchecked(&b[..]);
        assert_eq!(AdvertRepr::parse(&p).unwrap_err(), Rejection::BadSum);
        let mut p = AdvertPacket::new_unchecked(&mut b[..]);
        p.fill_checksum();
        assert_eq!(
            AdvertRepr::parse(&p).unwrap_err(),
            Rejection::BadVersion { version: 1 }
        );
    }

    #[test]
    fn emit_writes_type_and_authlen() {
        let repr = AdvertRepr {
            vhid: 255,
            advskew: 255,
            advbase: 255,
            demote: 3,
            counter: [0xff; 8],
            digest: [0; 20],
        };
        let b = repr.to_bytes();
        assert_eq!(b[0], 0x21);
        assert_eq!(b[3], 7);
        assert!(repr.is_bow_out());
        assert!(AdvertPacket::new_unchecked(&b[..]).verify_checksum());
    }

    #[test]
    fn bow_out_needs_both_fields() {
        let mut repr = AdvertRepr {
            vhid: 1,
            advskew: 255,
            advbase: 1,
            demote: 0,
            counter: [0; 8],
            digest: [0; 20],
        };
        assert!(!repr.is_bow_out());
        repr.advbase = 255;
        assert!(repr.is_bow_out());
    }
}
