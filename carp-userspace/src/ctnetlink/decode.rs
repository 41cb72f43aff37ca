//! ctnetlink messages into entries: tuples (ports, ICMP id/type/code), status, timeout, mark,
//! labels, zone and TCP state, with a missing reply tuple taken as the inverted original.

use std::net::IpAddr;

use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Tuple,
};

use super::nla;
use crate::sync::conntrack::{CtEntry, CtKey, CtTuple, TcpInfo, entry::proto};

/// A tuple back from its attributes; None when the addresses or the protocol are missing.
pub(super) fn parse_tuple(v: &[Tuple]) -> Option<CtTuple> {
    let (mut src, mut dst, mut p) = (None, None, None);
    let (mut sport, mut dport, mut icmp_id, mut icmp_type, mut icmp_code) = (0, 0, 0u16, 0u8, 0u8);
    for t in v {
        match t {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for x in ps {
                    match x {
                        ProtoTuple::Protocol(pr) => p = Some(u8::from(*pr)),
                        ProtoTuple::SourcePort(s) => sport = *s,
                        ProtoTuple::DestinationPort(d) => dport = *d,
                        ProtoTuple::Other(d) => {
                            let (k, v) = nla::from_default(d);
                            match (k, v.as_slice()) {
                                (nla::CTA_PROTO_ICMP_ID | nla::CTA_PROTO_ICMPV6_ID, [a, b, ..]) => {
                                    icmp_id = u16::from_be_bytes([*a, *b])
                                }
                                (
                                    nla::CTA_PROTO_ICMP_TYPE | nla::CTA_PROTO_ICMPV6_TYPE,
                                    [a, ..],
                                ) => icmp_type = *a,
                                (
                                    nla::CTA_PROTO_ICMP_CODE | nla::CTA_PROTO_ICMPV6_CODE,
                                    [a, ..],
                                ) => icmp_code = *a,
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let proto = p?;
    if proto::is_icmp(proto) {
        sport = icmp_id;
        dport = u16::from(icmp_type) << 8 | u16::from(icmp_code);
    }
    Some(CtTuple {
        src: src?,
        dst: dst?,
        proto,
        sport,
        dport,
    })
}

/// The entry a NEW/UPDATE/DELETE message (event or dump) describes, and whether it carried the mark.
pub fn parse_entry(m: &ConntrackMessage) -> Option<(CtEntry, bool)> {
    let attrs = match m {
        ConntrackMessage::New(a) | ConntrackMessage::Delete(a) => a,
        _ => return None,
    };
    let (mut orig, mut reply) = (None, None);
    let mut e = CtEntry {
        key: CtKey {
            zone: 0,
            orig: CtTuple {
                src: IpAddr::from([0u8; 4]),
                dst: IpAddr::from([0u8; 4]),
                proto: 0,
                sport: 0,
                dport: 0,
            },
        },
        reply: CtTuple {
            src: IpAddr::from([0u8; 4]),
            dst: IpAddr::from([0u8; 4]),
            proto: 0,
            sport: 0,
            dport: 0,
        },
        status: 0,
        timeout: 0,
        mark: 0,
        labels: None,
        tcp: None,
    };
    let mut has_mark = false;
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = parse_tuple(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = parse_tuple(t),
            ConntrackAttribute::CtaStatus(s) => e.status = s.bits(),
            ConntrackAttribute::CtaTimeout(t) => e.timeout = *t,
            ConntrackAttribute::CtaMark(m) => {
                e.mark = *m;
                has_mark = true;
            }
            ConntrackAttribute::CtaProtoInfo(p) => {
                for pi in p {
                    if let ProtoInfo::TCP(fields) = pi {
                        let mut t = TcpInfo::default();
                        for f in fields {
                            match f {
                                ProtoInfoTCP::State(s) => t.state = *s,
                                ProtoInfoTCP::OriginalWindowScale(w) => t.wscale[0] = *w,
                                ProtoInfoTCP::ReplyWindowScale(w) => t.wscale[1] = *w,
                                ProtoInfoTCP::OriginalFlags(fl) => t.flags[0] = fl.flags,
                                ProtoInfoTCP::ReplyFlags(fl) => t.flags[1] = fl.flags,
                                _ => {}
                            }
                        }
                        e.tcp = Some(t);
                    }
                }
            }
            ConntrackAttribute::Other(d) => {
                let (k, v) = nla::from_default(d);
                match (k, v.as_slice()) {
                    (nla::CTA_ZONE, [a, b, ..]) => e.key.zone = u16::from_be_bytes([*a, *b]),
                    (nla::CTA_LABELS, l) if l.len() >= 16 => {
                        let mut x = [0u8; 16];
                        x.copy_from_slice(&l[..16]);
                        if x != [0; 16] {
                            e.labels = Some(x);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    e.key.orig = orig?;
    // A DESTROY carries both tuples too; should one lack the reply, the inverse stands in.
    e.reply = reply.unwrap_or_else(|| e.key.orig.invert());
    Some((e, has_mark))
}
