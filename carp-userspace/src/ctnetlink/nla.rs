//! The ctnetlink attributes netlink-packet-netfilter 0.4 lacks, in the crate's own shape: enums that
//! implement `netlink_packet_core::Nla`, carried in the crate's messages as `Other(DefaultNla)` (which
//! is how the crate itself passes attributes it does not know). Extending the crate this way needs no
//! fork: its messages, tuples, status, timeout, mark and TCP protoinfo are used as they are.
//!
//! Numbers from uapi `nfnetlink_conntrack.h`.

use std::net::IpAddr;

use netlink_packet_core::{DefaultNla, NLA_F_NESTED, Nla};

/// `CTA_NAT_SRC`.
pub const CTA_NAT_SRC: u16 = 6;
/// `CTA_ID`.
pub const CTA_ID: u16 = 12;
/// `CTA_NAT_DST`.
pub const CTA_NAT_DST: u16 = 13;
/// `CTA_ZONE`.
pub const CTA_ZONE: u16 = 18;
/// `CTA_LABELS`.
pub const CTA_LABELS: u16 = 22;
/// `CTA_LABELS_MASK`.
pub const CTA_LABELS_MASK: u16 = 23;

/// `CTA_PROTO_ICMP_ID` (and the type and code after it; ICMPv6's are 3 further on).
pub const CTA_PROTO_ICMP_ID: u16 = 4;
/// `CTA_PROTO_ICMP_TYPE`.
pub const CTA_PROTO_ICMP_TYPE: u16 = 5;
/// `CTA_PROTO_ICMP_CODE`.
pub const CTA_PROTO_ICMP_CODE: u16 = 6;
/// `CTA_PROTO_ICMPV6_ID`.
pub const CTA_PROTO_ICMPV6_ID: u16 = 7;
/// `CTA_PROTO_ICMPV6_TYPE`.
pub const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
/// `CTA_PROTO_ICMPV6_CODE`.
pub const CTA_PROTO_ICMPV6_CODE: u16 = 9;

/// `CTA_PROTONAT_PORT_MIN` / `_MAX` inside `CTA_NAT_PROTO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatProto {
    /// The lowest port (ICMP: id) of the range.
    PortMin(u16),
    /// The highest.
    PortMax(u16),
}

impl Nla for NatProto {
    fn value_len(&self) -> usize {
        2
    }
    fn kind(&self) -> u16 {
        match self {
            NatProto::PortMin(_) => 1,
            NatProto::PortMax(_) => 2,
        }
    }
    fn emit_value(&self, b: &mut [u8]) {
        let (NatProto::PortMin(p) | NatProto::PortMax(p)) = self;
        b[..2].copy_from_slice(&p.to_be_bytes());
    }
}

/// One attribute of `CTA_NAT_SRC`/`CTA_NAT_DST` (`enum ctattr_nat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatAttr {
    /// `CTA_NAT_V4_MINIP` / `CTA_NAT_V6_MINIP`.
    MinIp(IpAddr),
    /// `CTA_NAT_V4_MAXIP` / `CTA_NAT_V6_MAXIP`.
    MaxIp(IpAddr),
    /// `CTA_NAT_PROTO`, nested.
    Proto(Vec<NatProto>),
}

impl Nla for NatAttr {
    fn value_len(&self) -> usize {
        match self {
            NatAttr::MinIp(a) | NatAttr::MaxIp(a) => match a {
                IpAddr::V4(_) => 4,
                IpAddr::V6(_) => 16,
            },
            NatAttr::Proto(v) => v
                .iter()
                .map(|n| 4 + n.value_len().next_multiple_of(4))
                .sum(),
        }
    }
    fn kind(&self) -> u16 {
        match self {
            NatAttr::MinIp(IpAddr::V4(_)) => 1,
            NatAttr::MaxIp(IpAddr::V4(_)) => 2,
            NatAttr::Proto(_) => 3,
            NatAttr::MinIp(IpAddr::V6(_)) => 4,
            NatAttr::MaxIp(IpAddr::V6(_)) => 5,
        }
    }
    fn emit_value(&self, b: &mut [u8]) {
        match self {
            NatAttr::MinIp(a) | NatAttr::MaxIp(a) => match a {
                IpAddr::V4(v) => b[..4].copy_from_slice(&v.octets()),
                IpAddr::V6(v) => b[..16].copy_from_slice(&v.octets()),
            },
            NatAttr::Proto(v) => emit_all(v, b),
        }
    }
    fn is_nested(&self) -> bool {
        matches!(self, NatAttr::Proto(_))
    }
}

fn emit_all<N: Nla>(v: &[N], b: &mut [u8]) {
    use netlink_packet_core::Emitable;
    let mut at = 0;
    for n in v {
        n.emit(&mut b[at..]);
        at += n.buffer_len();
    }
}

/// Top-level conntrack attributes the crate lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtExtra {
    /// `CTA_NAT_SRC`: the source NAT range to set up on create.
    NatSrc(Vec<NatAttr>),
    /// `CTA_NAT_DST`: the destination NAT range.
    NatDst(Vec<NatAttr>),
    /// `CTA_ZONE`.
    Zone(u16),
    /// `CTA_LABELS`.
    Labels([u8; 16]),
    /// `CTA_LABELS_MASK`.
    LabelsMask([u8; 16]),
}

impl Nla for CtExtra {
    fn value_len(&self) -> usize {
        match self {
            CtExtra::NatSrc(v) | CtExtra::NatDst(v) => v
                .iter()
                .map(|n| 4 + n.value_len().next_multiple_of(4))
                .sum(),
            CtExtra::Zone(_) => 2,
            CtExtra::Labels(_) | CtExtra::LabelsMask(_) => 16,
        }
    }
    fn kind(&self) -> u16 {
        match self {
            CtExtra::NatSrc(_) => CTA_NAT_SRC,
            CtExtra::NatDst(_) => CTA_NAT_DST,
            CtExtra::Zone(_) => CTA_ZONE,
            CtExtra::Labels(_) => CTA_LABELS,
            CtExtra::LabelsMask(_) => CTA_LABELS_MASK,
        }
    }
    fn emit_value(&self, b: &mut [u8]) {
        match self {
            CtExtra::NatSrc(v) | CtExtra::NatDst(v) => emit_all(v, b),
            CtExtra::Zone(z) => b[..2].copy_from_slice(&z.to_be_bytes()),
            CtExtra::Labels(l) | CtExtra::LabelsMask(l) => b[..16].copy_from_slice(l),
        }
    }
    fn is_nested(&self) -> bool {
        matches!(self, CtExtra::NatSrc(_) | CtExtra::NatDst(_))
    }
}

/// Any attribute as the crate's `DefaultNla` (its carrier for attributes it does not model).
pub fn to_default<N: Nla>(n: &N) -> DefaultNla {
    let mut v = vec![0; n.value_len()];
    n.emit_value(&mut v);
    let nested = if n.is_nested() { NLA_F_NESTED } else { 0 };
    DefaultNla::new(n.kind() | nested, v)
}

/// A `DefaultNla`'s type (flags stripped) and value bytes.
pub fn from_default(d: &DefaultNla) -> (u16, Vec<u8>) {
    let mut v = vec![0; d.value_len()];
    d.emit_value(&mut v);
    (
        d.kind() & !(NLA_F_NESTED | netlink_packet_core::NLA_F_NET_BYTEORDER),
        v,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn nat_src_layout_matches_the_kernel() {
        let nat = CtExtra::NatSrc(vec![
            NatAttr::MinIp("10.0.0.1".parse().unwrap()),
            NatAttr::MaxIp("10.0.0.1".parse().unwrap()),
            NatAttr::Proto(vec![NatProto::PortMin(1025), NatProto::PortMax(1025)]),
        ]);
        let d = to_default(&nat);
        let mut b = vec![0; d.buffer_len()];
        d.emit(&mut b);
        #[rustfmt::skip]
        let want = [
            40, 0, 6, 0x80,
            8, 0, 1, 0, 10, 0, 0, 1,
            8, 0, 2, 0, 10, 0, 0, 1,
            20, 0, 3, 0x80,
            6, 0, 1, 0, 0x04, 0x01, 0, 0,
            6, 0, 2, 0, 0x04, 0x01, 0, 0,
        ];
        assert_eq!(b, want);
        assert_eq!(from_default(&d).0, CTA_NAT_SRC);
    }
}
