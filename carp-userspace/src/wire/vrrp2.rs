//! The VRRPv2 advertisement (RFC 3768 §5): [`Vrrp2Packet`], a zero-copy view with field accessors and
//! the checksum, and [`Vrrp2Repr`], the plain values with `parse`/`emit`.
//!
//! Layout: `0x21`, VRID, priority, address count, auth type, advertisement interval (whole seconds),
//! checksum, count x 4 IPv4 address bytes, then 8 bytes of authentication data. The checksum covers
//! the whole message, authentication data included, with no pseudo-header. Authentication: type 0
//! (none) is the RFC's; type 1 (a clear-text password, [`Vrrp2Auth::Simple`]) is kept so a keepalived
//! pair using `auth_type PASS` can be migrated, and flagged insecure; type 2 (IP AH) is refused.

use std::net::Ipv4Addr;

use carp_common::vrrp::{VRRP_ADVERTISEMENT, VRRP2_AUTH_DATA_LEN, VRRP2_FIXED_LEN, VRRP2_VERSION};

use super::checksum;
use super::vrrp::VrrpRejection;

mod field {
    use core::ops::Range;

    pub const VERSION_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const AUTH_TYPE: usize = 4;
    pub const ADVER_INT: usize = 5;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const ADDRESSES: usize = 8;
}

/// Authentication type 0: none (RFC 3768).
pub const AUTH_NONE: u8 = 0;
/// Authentication type 1: a clear-text password of up to 8 bytes (RFC 2338, removed by RFC 3768).
pub const AUTH_SIMPLE: u8 = 1;

/// The VRRPv2 authentication an interface sends and expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Vrrp2Auth {
    /// Type 0; the 8 data bytes are sent as zero and ignored on receive.
    #[default]
    None,
    /// Type 1: the password, zero-padded to 8 bytes; anyone on the segment can read it.
    Simple([u8; VRRP2_AUTH_DATA_LEN]),
}

impl Vrrp2Auth {
    /// Type 1 with `password` (1-8 bytes, as keepalived's `auth_pass` keeps), or `None` if too long/empty.
    pub fn simple(password: &str) -> Option<Self> {
        let b = password.as_bytes();
        if b.is_empty() || b.len() > VRRP2_AUTH_DATA_LEN {
            return None;
        }
        let mut data = [0; VRRP2_AUTH_DATA_LEN];
        data[..b.len()].copy_from_slice(b);
        Some(Vrrp2Auth::Simple(data))
    }

    /// The auth type byte.
    pub fn auth_type(&self) -> u8 {
        match self {
            Vrrp2Auth::None => AUTH_NONE,
            Vrrp2Auth::Simple(_) => AUTH_SIMPLE,
        }
    }

    /// The 8 authentication data bytes as sent.
    pub fn data(&self) -> [u8; VRRP2_AUTH_DATA_LEN] {
        match self {
            Vrrp2Auth::None => [0; VRRP2_AUTH_DATA_LEN],
            Vrrp2Auth::Simple(d) => *d,
        }
    }
}

/// A view over a buffer holding a VRRPv2 advert; accessors panic unless built by `new_checked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vrrp2Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Vrrp2Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Vrrp2Packet { buffer }
    }

    /// Wraps a buffer after checking it holds the fixed header, the addresses and the auth data.
    pub fn new_checked(buffer: T) -> Result<Self, VrrpRejection> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the whole message its count announces; trailing bytes are ignored.
    pub fn check_len(&self) -> Result<(), VrrpRejection> {
        let len = self.buffer.as_ref().len();
        if len < VRRP2_FIXED_LEN {
            return Err(VrrpRejection::BadLen {
                len,
                needed: VRRP2_FIXED_LEN + VRRP2_AUTH_DATA_LEN,
            });
        }
        let needed = self.message_len();
        if len < needed {
            return Err(VrrpRejection::BadLen { len, needed });
        }
        Ok(())
    }

    /// Length of the message: 8 + 4 x count + 8 (RFC 3768 §5.1).
    pub fn message_len(&self) -> usize {
        VRRP2_FIXED_LEN + usize::from(self.addr_count()) * 4 + VRRP2_AUTH_DATA_LEN
    }

    /// The message bytes, without trailing bytes.
    pub fn message(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.message_len()]
    }

    /// The version (high nibble of byte 0); 2 for VRRPv2, as for CARP.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TYPE] >> 4
    }

    /// The packet type (low nibble of byte 0); 1 for an advertisement.
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TYPE] & 0x0f
    }

    /// The virtual router id.
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// The sender's priority.
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// The number of IPv4 addresses.
    pub fn addr_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// The authentication type byte.
    pub fn auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::AUTH_TYPE]
    }

    /// The advertisement interval in whole seconds.
    pub fn adver_int(&self) -> u8 {
        self.buffer.as_ref()[field::ADVER_INT]
    }

    /// The checksum field as stored.
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The `i`-th address (panics past `addr_count`).
    pub fn address(&self, i: usize) -> Ipv4Addr {
        let at = field::ADDRESSES + i * 4;
        let b = &self.buffer.as_ref()[at..at + 4];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The 8 authentication data bytes.
    pub fn auth_data(&self) -> [u8; VRRP2_AUTH_DATA_LEN] {
        let at = field::ADDRESSES + usize::from(self.addr_count()) * 4;
        let mut out = [0; VRRP2_AUTH_DATA_LEN];
        out.copy_from_slice(&self.buffer.as_ref()[at..at + VRRP2_AUTH_DATA_LEN]);
        out
    }

    /// The authentication as a value, or `None` for a type we refuse (2 = IP AH, or unknown).
    pub fn auth(&self) -> Option<Vrrp2Auth> {
        match self.auth_type() {
            AUTH_NONE => Some(Vrrp2Auth::None),
            AUTH_SIMPLE => Some(Vrrp2Auth::Simple(self.auth_data())),
            _ => None,
        }
    }

    /// True if the Internet checksum over the whole message comes out as zero.
    pub fn verify_checksum(&self) -> bool {
        checksum(self.message()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Vrrp2Packet<T> {
    /// Sets version and type (byte 0).
    pub fn set_version_type(&mut self, version: u8, packet_type: u8) {
        self.buffer.as_mut()[field::VERSION_TYPE] = (version << 4) | (packet_type & 0x0f);
    }

    /// Sets the virtual router id.
    pub fn set_vrid(&mut self, value: u8) {
        self.buffer.as_mut()[field::VRID] = value;
    }

    /// Sets the priority.
    pub fn set_priority(&mut self, value: u8) {
        self.buffer.as_mut()[field::PRIORITY] = value;
    }

    /// Sets the address count.
    pub fn set_addr_count(&mut self, value: u8) {
        self.buffer.as_mut()[field::COUNT] = value;
    }

    /// Sets the authentication type byte.
    pub fn set_auth_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::AUTH_TYPE] = value;
    }

    /// Sets the advertisement interval in seconds.
    pub fn set_adver_int(&mut self, value: u8) {
        self.buffer.as_mut()[field::ADVER_INT] = value;
    }

    /// Sets the checksum field to a raw value (use `fill_checksum` to compute it).
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Writes the `i`-th address.
    pub fn set_address(&mut self, i: usize, addr: Ipv4Addr) {
        let at = field::ADDRESSES + i * 4;
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&addr.octets());
    }

    /// Writes the 8 authentication data bytes after the addresses.
    pub fn set_auth_data(&mut self, data: &[u8; VRRP2_AUTH_DATA_LEN]) {
        let at = field::ADDRESSES + usize::from(self.addr_count()) * 4;
        self.buffer.as_mut()[at..at + VRRP2_AUTH_DATA_LEN].copy_from_slice(data);
    }

    /// Computes the checksum over the whole message and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum(self.message());
        self.set_checksum(value);
    }
}

/// The values of a VRRPv2 advert; version and type are implied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vrrp2Repr {
    /// Virtual router id (1..=255).
    pub vrid: u8,
    /// Priority: 1-254, 255 for the address owner, 0 when the master stops.
    pub priority: u8,
    /// Advertisement interval in whole seconds.
    pub adver_int: u8,
    /// Authentication type and data.
    pub auth: Vrrp2Auth,
    /// The virtual IPv4 addresses.
    pub addresses: Vec<Ipv4Addr>,
}

impl Vrrp2Repr {
    /// Parses an advert: length, checksum, version, type, then the auth type (type 2 is refused).
    ///
    /// The VRID, the configured auth data and the interval need configuration: receive paths use
    /// `wire::vrrp::check_vrrp`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Vrrp2Packet<T>) -> Result<Self, VrrpRejection> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(VrrpRejection::BadSum);
        }
        if packet.version() != VRRP2_VERSION {
            return Err(VrrpRejection::BadVersion {
                version: packet.version(),
                expected: VRRP2_VERSION,
            });
        }
        if packet.packet_type() != VRRP_ADVERTISEMENT {
            return Err(VrrpRejection::BadType {
                packet_type: packet.packet_type(),
            });
        }
        if packet.auth().is_none() {
            return Err(VrrpRejection::BadAuth {
                auth_type: packet.auth_type(),
            });
        }
        Ok(Self::from_packet(packet))
    }

    /// Reads the fields of a length-checked packet without judging them (an unknown auth type reads
    /// as `None`; callers that care check `Vrrp2Packet::auth` first).
    pub(crate) fn from_packet<T: AsRef<[u8]>>(packet: &Vrrp2Packet<T>) -> Self {
        Vrrp2Repr {
            vrid: packet.vrid(),
            priority: packet.priority(),
            adver_int: packet.adver_int(),
            auth: packet.auth().unwrap_or_default(),
            addresses: (0..usize::from(packet.addr_count()))
                .map(|i| packet.address(i))
                .collect(),
        }
    }

    /// Number of bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        VRRP2_FIXED_LEN + self.addresses.len().min(255) * 4 + VRRP2_AUTH_DATA_LEN
    }

    /// Writes the advert and its checksum into a buffer of `buffer_len` bytes.
    pub fn emit(&self, buffer: &mut [u8]) {
        let mut p = Vrrp2Packet::new_unchecked(buffer);
        p.set_version_type(VRRP2_VERSION, VRRP_ADVERTISEMENT);
        p.set_vrid(self.vrid);
        p.set_priority(self.priority);
        // At most 255 addresses fit the count byte; config validation refuses more.
        p.set_addr_count(self.addresses.len().min(255) as u8);
        p.set_auth_type(self.auth.auth_type());
        p.set_adver_int(self.adver_int);
        for (i, a) in self.addresses.iter().take(255).enumerate() {
            p.set_address(i, *a);
        }
        p.set_auth_data(&self.auth.data());
        p.fill_checksum();
    }

    /// The advert's bytes, checksum filled in.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0; self.buffer_len()];
        self.emit(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ka-v2-vrid54-1.bin's VRRP bytes: keepalived 2.2.7, VRID 54, priority 120, 1 s, 10.99.1.54.
    const KA_VRID54: [u8; 20] = [
        0x21, 0x36, 0x78, 0x01, 0x00, 0x01, 0x5b, 0x2e, 0x0a, 0x63, 0x01, 0x36, 0, 0, 0, 0, 0, 0,
        0, 0,
    ];

    #[test]
    fn view_reads_fields() {
        let p = Vrrp2Packet::new_checked(&KA_VRID54[..]).unwrap();
        assert_eq!(p.version(), 2);
        assert_eq!(p.packet_type(), 1);
        assert_eq!(p.vrid(), 54);
        assert_eq!(p.priority(), 120);
        assert_eq!(p.addr_count(), 1);
        assert_eq!(p.auth_type(), 0);
        assert_eq!(p.adver_int(), 1);
        assert_eq!(p.checksum(), 0x5b2e);
        assert_eq!(p.address(0), Ipv4Addr::new(10, 99, 1, 54));
        assert_eq!(p.auth_data(), [0; 8]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn repr_round_trip_is_byte_exact() {
        let repr = Vrrp2Repr::parse(&Vrrp2Packet::new_checked(&KA_VRID54[..]).unwrap()).unwrap();
        assert_eq!(repr.auth, Vrrp2Auth::None);
        assert_eq!(repr.to_bytes(), KA_VRID54);
    }

    #[test]
    fn auth_data_is_in_the_checksum() {
        let mut b = KA_VRID54;
        b[19] = 1;
        assert!(!Vrrp2Packet::new_unchecked(&b[..]).verify_checksum());
    }

    #[test]
    fn length_counts_auth_data() {
        assert_eq!(
            Vrrp2Packet::new_checked(&KA_VRID54[..19]).unwrap_err(),
            VrrpRejection::BadLen {
                len: 19,
                needed: 20
            }
        );
        assert!(Vrrp2Packet::new_checked(&KA_VRID54[..5]).is_err());
    }

    #[test]
    fn simple_password_padding_and_limits() {
        let a = Vrrp2Auth::simple("abc").unwrap();
        assert_eq!(a.data(), *b"abc\0\0\0\0\0");
        assert_eq!(a.auth_type(), 1);
        assert!(Vrrp2Auth::simple("123456789").is_none());
        assert!(Vrrp2Auth::simple("").is_none());
    }

    #[test]
    fn type_two_is_refused() {
        let mut b = KA_VRID54;
        b[4] = 2;
        let mut p = Vrrp2Packet::new_unchecked(&mut b[..]);
        p.fill_checksum();
        assert_eq!(p.auth(), None);
        assert_eq!(
            Vrrp2Repr::parse(&p).unwrap_err(),
            VrrpRejection::BadAuth { auth_type: 2 }
        );
    }
}
