//! Entries into ctnetlink attributes: the tuples, the NAT bindings re-created from an entry's
//! reply tuple, the TCP protocol info, and the create, update and delete requests.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterProtoFamily,
    conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
        Protocol, Status, TCPFlags, Tuple,
    },
};

use super::nla::{self, CtExtra, NatAttr, NatProto};
use crate::sync::conntrack::{
    CtEntry, CtKey, CtOp, CtTuple, TcpInfo,
    entry::{proto, status, tcp},
};

/// A tuple as `CTA_TUPLE_IP` and `CTA_TUPLE_PROTO` (ports, or ICMP id/type/code).
pub(super) fn tuple_attrs(t: &CtTuple) -> Vec<Tuple> {
    let mut p = vec![ProtoTuple::Protocol(Protocol::from(t.proto))];
    if proto::is_icmp(t.proto) {
        let (ty, code) = t.icmp_type_code();
        let (id_k, ty_k, code_k) = if t.proto == proto::ICMP {
            (
                nla::CTA_PROTO_ICMP_ID,
                nla::CTA_PROTO_ICMP_TYPE,
                nla::CTA_PROTO_ICMP_CODE,
            )
        } else {
            (
                nla::CTA_PROTO_ICMPV6_ID,
                nla::CTA_PROTO_ICMPV6_TYPE,
                nla::CTA_PROTO_ICMPV6_CODE,
            )
        };
        use netlink_packet_core::DefaultNla;
        p.push(ProtoTuple::Other(DefaultNla::new(
            id_k,
            t.sport.to_be_bytes().to_vec(),
        )));
        p.push(ProtoTuple::Other(DefaultNla::new(ty_k, vec![ty])));
        p.push(ProtoTuple::Other(DefaultNla::new(code_k, vec![code])));
    } else if proto::has_ports(t.proto) {
        p.push(ProtoTuple::SourcePort(t.sport));
        p.push(ProtoTuple::DestinationPort(t.dport));
    }
    vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(t.src),
            IPTuple::DestinationAddress(t.dst),
        ]),
        Tuple::Proto(p),
    ]
}

fn family(t: &CtTuple) -> NetfilterProtoFamily {
    if t.is_v6() {
        NetfilterProtoFamily::IPv6
    } else {
        NetfilterProtoFamily::IPv4
    }
}

fn nat_attrs(addr: IpAddr, port: Option<u16>) -> Vec<NatAttr> {
    let mut v = vec![NatAttr::MinIp(addr), NatAttr::MaxIp(addr)];
    if let Some(p) = port {
        v.push(NatAttr::Proto(vec![
            NatProto::PortMin(p),
            NatProto::PortMax(p),
        ]));
    }
    v
}

fn tcp_attr(t: &TcpInfo) -> ConntrackAttribute {
    // Injected entries have no window data: BE_LIBERAL lets the first packets after a failover pass
    // window tracking (conntrackd does the same unless TCPWindowTracking is on). The mask makes the
    // kernel take the flags (events and dumps report mask 0).
    let flags = |f: u8| {
        TCPFlags::parse(&[f | tcp::FLAG_BE_LIBERAL, 0xff]).unwrap_or_else(|_| unreachable!())
    };
    ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(vec![
        ProtoInfoTCP::State(t.state),
        ProtoInfoTCP::OriginalWindowScale(t.wscale[0]),
        ProtoInfoTCP::ReplyWindowScale(t.wscale[1]),
        ProtoInfoTCP::OriginalFlags(flags(t.flags[0])),
        ProtoInfoTCP::ReplyFlags(flags(t.flags[1])),
    ])])
}

/// The attributes that re-create or update `e` in a peer's kernel: for a create, the reply tuple is
/// the original's inverse and the NAT bindings travel as `CTA_NAT_SRC`/`CTA_NAT_DST`, so the kernel
/// sets the NAT up itself (a pre-translated reply tuple would leave the NAT bits unset and packets
/// untranslated, see the spec sheet §2); an update carries neither (the kernel refuses NAT changes).
pub fn entry_attrs(e: &CtEntry, create: bool) -> Vec<ConntrackAttribute> {
    let o = &e.key.orig;
    let mut a = vec![ConntrackAttribute::CtaTupleOrig(tuple_attrs(o))];
    if create {
        a.push(ConntrackAttribute::CtaTupleReply(tuple_attrs(&o.invert())));
    }
    if e.key.zone != 0 {
        a.push(ConntrackAttribute::Other(nla::to_default(&CtExtra::Zone(
            e.key.zone,
        ))));
    }
    a.push(ConntrackAttribute::CtaStatus(Status::from_bits_retain(
        (e.status & status::REPLICATED) | status::CONFIRMED,
    )));
    a.push(ConntrackAttribute::CtaTimeout(e.timeout.max(1)));
    if create || e.mark != 0 {
        a.push(ConntrackAttribute::CtaMark(e.mark));
    }
    if let Some(t) = &e.tcp {
        a.push(tcp_attr(t));
    }
    if create {
        let nat = e.nat();
        if let Some(d) = nat.dst {
            a.push(ConntrackAttribute::Other(nla::to_default(
                &CtExtra::NatDst(nat_attrs(d.addr, d.port)),
            )));
        }
        if let Some(s) = nat.src {
            a.push(ConntrackAttribute::Other(nla::to_default(
                &CtExtra::NatSrc(nat_attrs(s.addr, s.port)),
            )));
        }
    }
    if let Some(l) = e.labels {
        a.push(ConntrackAttribute::Other(nla::to_default(
            &CtExtra::Labels(l),
        )));
        a.push(ConntrackAttribute::Other(nla::to_default(
            &CtExtra::LabelsMask([0xff; 16]),
        )));
    }
    a
}

/// The attributes naming `k` (for a delete: a tuple is always there, since a delete without one
/// flushes the whole table).
pub fn key_attrs(k: &CtKey) -> Vec<ConntrackAttribute> {
    let mut a = vec![ConntrackAttribute::CtaTupleOrig(tuple_attrs(&k.orig))];
    if k.zone != 0 {
        a.push(ConntrackAttribute::Other(nla::to_default(&CtExtra::Zone(
            k.zone,
        ))));
    }
    a
}

/// The netlink request for one change.
pub fn request(op: &CtOp, seq: u32) -> (NetlinkHeader, NetfilterMessage) {
    let mut h = NetlinkHeader::default();
    h.sequence_number = seq;
    h.flags = NLM_F_REQUEST | NLM_F_ACK;
    let (fam, msg) = match op {
        CtOp::Create(e) => {
            h.flags |= NLM_F_CREATE | NLM_F_EXCL;
            (
                family(&e.key.orig),
                ConntrackMessage::New(entry_attrs(e, true)),
            )
        }
        CtOp::Update(e) => (
            family(&e.key.orig),
            ConntrackMessage::New(entry_attrs(e, false)),
        ),
        CtOp::Delete(k) => (family(&k.orig), ConntrackMessage::Delete(key_attrs(k))),
    };
    (
        h,
        NetfilterMessage::new(NetfilterHeader::new(fam, 0, 0), msg),
    )
}
