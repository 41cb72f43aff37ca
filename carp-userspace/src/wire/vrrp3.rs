//! The VRRPv3 advertisement (RFC 9568 §5): [`Vrrp3Packet`], a zero-copy view with field accessors and
//! both checksum forms, and [`Vrrp3Repr`], the plain values with `parse`/`emit`.
//!
//! Layout: `0x31`, VRID, priority, address count, 4 reserved bits + 12-bit Max Advertise Interval
//! (centiseconds), checksum, then count x 4 (IPv4) or x 16 (IPv6) address bytes. The address family is
//! not in the packet; it is the family of the IP header that carried it, so the view is told it.
//!
//! Checksum: over IPv6 it always includes the RFC 8200 pseudo-header (next header 112). Over IPv4 RFC
//! 9568 says message only, but the deployed peers (keepalived 2.2.7, FRR, FreeBSD) include the IPv4
//! pseudo-header, so [`ChecksumForm`] picks the one we send and receive accepts either.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_common::proto::IPPROTO_CARP;
use carp_common::vrrp::{
    VRRP_ADVERTISEMENT, VRRP3_FIXED_LEN, VRRP3_MAX_INTERVAL_CS, VRRP3_VERSION,
};

use super::checksum;
use super::vrrp::{ChecksumForm, VrrpRejection};

mod field {
    use core::ops::Range;

    pub const VERSION_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const INTERVAL: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const ADDRESSES: usize = 8;
}

/// Bytes one address takes in the packet for the family of the carrying IP header.
pub const fn address_len(ipv6: bool) -> usize {
    if ipv6 { 16 } else { 4 }
}

/// The one's-complement sum of the IPv4 or IPv6 pseudo-header for a VRRP message of `len` bytes.
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            out.extend_from_slice(&[0, IPPROTO_CARP]);
            // The length fits: a VRRPv3 IPv4 message is at most 8 + 255 * 4 bytes.
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, IPPROTO_CARP]);
        }
    }
    out
}

/// The Internet checksum of `message` for `form`, as it would be stored (checksum field zeroed first).
fn sum(message: &[u8], src: IpAddr, dst: IpAddr, with_pseudo: bool) -> u16 {
    if with_pseudo {
        let mut all = pseudo_header(src, dst, message.len());
        all.extend_from_slice(message);
        checksum(&all)
    } else {
        checksum(message)
    }
}

/// A view over a buffer holding a VRRPv3 advert; accessors panic unless built by `new_checked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vrrp3Packet<T: AsRef<[u8]>> {
    buffer: T,
    ipv6: bool,
}

impl<T: AsRef<[u8]>> Vrrp3Packet<T> {
    /// Wraps a buffer carried over IPv4 without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Vrrp3Packet {
            buffer,
            ipv6: false,
        }
    }

    /// Wraps a buffer after checking it holds the fixed header and every address it announces.
    pub fn new_checked(buffer: T, ipv6: bool) -> Result<Self, VrrpRejection> {
        let packet = Vrrp3Packet { buffer, ipv6 };
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the fixed header and `count` addresses; trailing bytes are ignored.
    pub fn check_len(&self) -> Result<(), VrrpRejection> {
        let len = self.buffer.as_ref().len();
        if len < VRRP3_FIXED_LEN {
            return Err(VrrpRejection::BadLen {
                len,
                needed: VRRP3_FIXED_LEN,
            });
        }
        let needed = self.message_len();
        if len < needed {
            return Err(VrrpRejection::BadLen { len, needed });
        }
        Ok(())
    }

    /// True if the packet was carried over IPv6 (its addresses are 16 bytes).
    pub fn is_ipv6(&self) -> bool {
        self.ipv6
    }

    /// Length of the message the header announces: 8 plus the addresses.
    pub fn message_len(&self) -> usize {
        VRRP3_FIXED_LEN + usize::from(self.addr_count()) * address_len(self.ipv6)
    }

    /// The message bytes (header plus addresses, without trailing bytes).
    pub fn message(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.message_len()]
    }

    /// The version (high nibble of byte 0); 3 for VRRPv3.
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

    /// The number of addresses that follow.
    pub fn addr_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// The 4 reserved bits (sent as 0, ignored on receive).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::INTERVAL.start] >> 4
    }

    /// The Max Advertise Interval in centiseconds (12 bits).
    pub fn max_adver_int(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::INTERVAL];
        u16::from_be_bytes([b[0], b[1]]) & 0x0fff
    }

    /// The checksum field as stored.
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The `i`-th address (panics past `addr_count`).
    pub fn address(&self, i: usize) -> IpAddr {
        let len = address_len(self.ipv6);
        let at = field::ADDRESSES + i * len;
        let b = &self.buffer.as_ref()[at..at + len];
        if self.ipv6 {
            let mut a = [0; 16];
            a.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
    }

    /// Which checksum form verifies for a packet from `src` to `dst`, or `None` if neither does.
    ///
    /// IPv6 has one form (with its pseudo-header), reported as `PseudoHeader`. Over IPv4 the
    /// pseudo-header form is tried first because it is what the deployed peers send.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> Option<ChecksumForm> {
        let message = self.message();
        if sum(message, src, dst, true) == 0 {
            Some(ChecksumForm::PseudoHeader)
        } else if !self.ipv6 && checksum(message) == 0 {
            Some(ChecksumForm::MessageOnly)
        } else {
            None
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Vrrp3Packet<T> {
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

    /// Sets the interval (12 bits; the reserved bits are written as 0).
    pub fn set_max_adver_int(&mut self, centiseconds: u16) {
        let v = centiseconds & 0x0fff;
        self.buffer.as_mut()[field::INTERVAL].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the checksum field to a raw value (use `fill_checksum` to compute it).
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Writes the `i`-th address (its family must be the packet's).
    pub fn set_address(&mut self, i: usize, addr: IpAddr) {
        let len = address_len(self.ipv6);
        let at = field::ADDRESSES + i * len;
        let b = &mut self.buffer.as_mut()[at..at + len];
        match addr {
            IpAddr::V4(a) => b.copy_from_slice(&a.octets()),
            IpAddr::V6(a) => b.copy_from_slice(&a.octets()),
        }
    }

    /// Computes the checksum for a packet from `src` to `dst` in `form` and stores it (IPv6 always
    /// uses its pseudo-header, whatever `form` says).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr, form: ChecksumForm) {
        self.set_checksum(0);
        let with_pseudo = src.is_ipv6() || form == ChecksumForm::PseudoHeader;
        let value = sum(self.message(), src, dst, with_pseudo);
        self.set_checksum(value);
    }
}

/// The values of a VRRPv3 advert; version and type are implied, the family is the addresses'.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vrrp3Repr {
    /// Virtual router id (1..=255).
    pub vrid: u8,
    /// Priority: 1-254, 255 for the address owner, 0 when the master stops.
    pub priority: u8,
    /// Max Advertise Interval in centiseconds (1..=4095).
    pub max_adver_int: u16,
    /// The virtual addresses, all of the carrying IP header's family (IPv6: link-local first).
    pub addresses: Vec<IpAddr>,
}

impl Vrrp3Repr {
    /// Parses an advert: length, checksum (either IPv4 form), version and type.
    ///
    /// The VRID, owner and TTL checks need configuration or the IP header: `wire::vrrp::check_vrrp`
    /// runs the whole receive order and is what the receive path should use.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Vrrp3Packet<T>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Self, VrrpRejection> {
        packet.check_len()?;
        if packet.verify_checksum(src, dst).is_none() {
            return Err(VrrpRejection::BadSum);
        }
        if packet.version() != VRRP3_VERSION {
            return Err(VrrpRejection::BadVersion {
                version: packet.version(),
                expected: VRRP3_VERSION,
            });
        }
        if packet.packet_type() != VRRP_ADVERTISEMENT {
            return Err(VrrpRejection::BadType {
                packet_type: packet.packet_type(),
            });
        }
        Ok(Self::from_packet(packet, packet.is_ipv6()))
    }

    /// Reads the fields of a length-checked packet without judging them.
    pub(crate) fn from_packet<T: AsRef<[u8]>>(packet: &Vrrp3Packet<T>, ipv6: bool) -> Self {
        let view = Vrrp3Packet {
            buffer: packet.buffer.as_ref(),
            ipv6,
        };
        Vrrp3Repr {
            vrid: view.vrid(),
            priority: view.priority(),
            max_adver_int: view.max_adver_int(),
            addresses: (0..usize::from(view.addr_count()))
                .map(|i| view.address(i))
                .collect(),
        }
    }

    /// True if the addresses are IPv6 (an empty list counts as IPv4).
    pub fn is_ipv6(&self) -> bool {
        self.addresses.first().is_some_and(IpAddr::is_ipv6)
    }

    /// Number of bytes `emit` writes for a packet carried over IPv6 (`ipv6`) or IPv4.
    pub fn buffer_len(&self, ipv6: bool) -> usize {
        VRRP3_FIXED_LEN + self.addresses.len() * address_len(ipv6)
    }

    /// Writes the advert for a packet from `src` to `dst` (the family is `src`'s) and its checksum.
    ///
    /// The buffer must be `buffer_len` long; the interval is clamped to 12 bits, the count to 255.
    pub fn emit(&self, buffer: &mut [u8], src: IpAddr, dst: IpAddr, form: ChecksumForm) {
        let mut p = Vrrp3Packet {
            buffer,
            ipv6: src.is_ipv6(),
        };
        p.set_version_type(VRRP3_VERSION, VRRP_ADVERTISEMENT);
        p.set_vrid(self.vrid);
        p.set_priority(self.priority);
        // At most 255 addresses fit the count byte; config validation refuses more.
        p.set_addr_count(self.addresses.len().min(255) as u8);
        p.set_max_adver_int(self.max_adver_int.min(VRRP3_MAX_INTERVAL_CS));
        for (i, a) in self.addresses.iter().take(255).enumerate() {
            p.set_address(i, *a);
        }
        p.fill_checksum(src, dst, form);
    }

    /// The advert's bytes for a packet from `src` to `dst`, checksum in `form` filled in.
    pub fn to_bytes(&self, src: IpAddr, dst: IpAddr, form: ChecksumForm) -> Vec<u8> {
        let mut out = vec![0; self.buffer_len(src.is_ipv6())];
        self.emit(&mut out, src, dst, form);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2));
    const GROUP: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));

    // ka-v3-ipv4-vrid51-1.bin's VRRP bytes (tests/vectors/README.txt): keepalived 2.2.7, VRID 51,
    // priority 150, 100 cs, 10.99.1.1 and 10.99.1.2, checksum with the IPv4 pseudo-header.
    const KA_VRID51: [u8; 16] = [
        0x31, 0x33, 0x96, 0x02, 0x00, 0x64, 0x36, 0xa5, 0x0a, 0x63, 0x01, 0x01, 0x0a, 0x63, 0x01,
        0x02,
    ];

    #[test]
    fn view_reads_fields() {
        let p = Vrrp3Packet::new_checked(&KA_VRID51[..], false).unwrap();
        assert_eq!(p.version(), 3);
        assert_eq!(p.packet_type(), 1);
        assert_eq!(p.vrid(), 51);
        assert_eq!(p.priority(), 150);
        assert_eq!(p.addr_count(), 2);
        assert_eq!(p.reserved(), 0);
        assert_eq!(p.max_adver_int(), 100);
        assert_eq!(p.checksum(), 0x36a5);
        assert_eq!(p.address(1), IpAddr::V4(Ipv4Addr::new(10, 99, 1, 2)));
        assert_eq!(
            p.verify_checksum(SRC, GROUP),
            Some(ChecksumForm::PseudoHeader)
        );
        // The pseudo-header includes the destination: the same bytes sent elsewhere do not verify.
        let other = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 3));
        assert_eq!(p.verify_checksum(SRC, other), None);
    }

    #[test]
    fn repr_round_trip_is_byte_exact() {
        let p = Vrrp3Packet::new_checked(&KA_VRID51[..], false).unwrap();
        let repr = Vrrp3Repr::parse(&p, SRC, GROUP).unwrap();
        assert_eq!(
            repr.to_bytes(SRC, GROUP, ChecksumForm::PseudoHeader),
            KA_VRID51
        );
    }

    #[test]
    fn message_only_form_differs_and_verifies() {
        let repr = Vrrp3Repr::parse(
            &Vrrp3Packet::new_checked(&KA_VRID51[..], false).unwrap(),
            SRC,
            GROUP,
        )
        .unwrap();
        let b = repr.to_bytes(SRC, GROUP, ChecksumForm::MessageOnly);
        assert_ne!(b, KA_VRID51);
        assert_eq!(checksum(&b), 0);
        let p = Vrrp3Packet::new_checked(&b[..], false).unwrap();
        assert_eq!(
            p.verify_checksum(SRC, GROUP),
            Some(ChecksumForm::MessageOnly)
        );
    }

    #[test]
    fn ipv6_always_uses_pseudo_header() {
        let src: IpAddr = "fe80::1".parse().unwrap();
        let dst: IpAddr = "ff02::12".parse().unwrap();
        let repr = Vrrp3Repr {
            vrid: 9,
            priority: 100,
            max_adver_int: 100,
            addresses: vec!["fe80::9".parse().unwrap()],
        };
        let a = repr.to_bytes(src, dst, ChecksumForm::PseudoHeader);
        let b = repr.to_bytes(src, dst, ChecksumForm::MessageOnly);
        assert_eq!(a, b);
        assert_eq!(a.len(), 24);
        let p = Vrrp3Packet::new_checked(&a[..], true).unwrap();
        assert_eq!(
            p.verify_checksum(src, dst),
            Some(ChecksumForm::PseudoHeader)
        );
        // Message-only is never accepted over IPv6 (RFC 9568 §5.2.8 and the kernel's own check).
        let mut m = a.clone();
        let mut v = Vrrp3Packet::new_unchecked(&mut m[..]);
        v.set_checksum(0);
        let s = checksum(&m);
        m[6..8].copy_from_slice(&s.to_be_bytes());
        assert_eq!(
            Vrrp3Packet::new_checked(&m[..], true)
                .unwrap()
                .verify_checksum(src, dst),
            None
        );
    }

    #[test]
    fn short_or_truncated_addresses_are_badlen() {
        assert_eq!(
            Vrrp3Packet::new_checked(&KA_VRID51[..7], false).unwrap_err(),
            VrrpRejection::BadLen { len: 7, needed: 8 }
        );
        assert_eq!(
            Vrrp3Packet::new_checked(&KA_VRID51[..15], false).unwrap_err(),
            VrrpRejection::BadLen {
                len: 15,
                needed: 16
            }
        );
        // The same 16 bytes read as IPv6 announce 2 x 16 address bytes.
        assert_eq!(
            Vrrp3Packet::new_checked(&KA_VRID51[..], true).unwrap_err(),
            VrrpRejection::BadLen {
                len: 16,
                needed: 40
            }
        );
    }

    #[test]
    fn reserved_bits_ignored_interval_clamped() {
        let mut b = KA_VRID51;
        b[4] |= 0xf0;
        let p = Vrrp3Packet::new_unchecked(&b[..]);
        assert_eq!(p.max_adver_int(), 100);
        assert_eq!(p.reserved(), 0xf);
        let repr = Vrrp3Repr {
            vrid: 1,
            priority: 1,
            max_adver_int: 5000,
            addresses: vec![],
        };
        let b = repr.to_bytes(SRC, GROUP, ChecksumForm::PseudoHeader);
        assert_eq!(u16::from_be_bytes([b[4], b[5]]), 4095);
    }

    #[test]
    fn parse_rejects_type_and_version() {
        let mut b = KA_VRID51;
        b[0] = 0x32;
        let mut p = Vrrp3Packet::new_unchecked(&mut b[..]);
        p.fill_checksum(SRC, GROUP, ChecksumForm::PseudoHeader);
        assert_eq!(
            Vrrp3Repr::parse(&p, SRC, GROUP).unwrap_err(),
            VrrpRejection::BadType { packet_type: 2 }
        );
        b[0] = 0x21;
        let mut p = Vrrp3Packet::new_unchecked(&mut b[..]);
        p.fill_checksum(SRC, GROUP, ChecksumForm::PseudoHeader);
        assert_eq!(
            Vrrp3Repr::parse(&p, SRC, GROUP).unwrap_err().counter(),
            "badver"
        );
    }
}
