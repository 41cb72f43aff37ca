//! ctnetlink I/O: netfilter's conntrack table read, watched and written over `NETLINK_NETFILTER`
//! with the rust-netlink family (netlink-sys sockets, netlink-packet-netfilter messages, and the
//! attributes that crate lacks in `nla`). This module owns the sockets and the translation between
//! kernel messages and `sync::conntrack::CtEntry`; what to do with entries is the mirror's business.
//!
//! Two sockets, as conntrackd has them: an event socket subscribed to the NEW, UPDATE and DESTROY
//! groups, and a request socket for dumps and changes. Events caused by our own changes carry the
//! request socket's portid in `nlmsg_pid` (the kernel's `item->portid`), which is how echoes are told
//! from the kernel's own events: a socket filter on the event socket drops them in the kernel
//! (`CtSocket::drop_events_of`), so they never take room in its buffer. Changes go out batched, many messages per `sendmsg`, each acked.
//!
//! The sockets are `socket`, entries into attributes and requests `encode`, messages back into
//! entries `decode`; this file keeps the errors, the event types and the sysctl helpers.

mod decode;
mod encode;
pub mod nla;
mod socket;

pub use decode::parse_entry;
pub use encode::{entry_attrs, key_attrs, request};
pub use socket::{CtSocket, force_rcvbuf, rcvbuf};

use std::io;

use crate::sync::conntrack::{CtEntry, CtKey};

/// `NFNLGRP_CONNTRACK_NEW`.
pub const GROUP_NEW: u32 = 1;
/// `NFNLGRP_CONNTRACK_UPDATE`.
pub const GROUP_UPDATE: u32 = 2;
/// `NFNLGRP_CONNTRACK_DESTROY`.
pub const GROUP_DESTROY: u32 = 3;

/// Changes packed into one `sendmsg` (each is a few hundred bytes; the acks of a batch must fit the
/// socket's receive buffer).
pub const BATCH: usize = 256;

/// What the kernel said about a conntrack request, with the cause and the fix.
pub fn explain(errno: i32) -> &'static str {
    match errno {
        libc::EPERM | libc::EACCES => {
            "permission denied: ctnetlink needs CAP_NET_ADMIN (run carpd as root or grant it)"
        }
        libc::ENOMEM => {
            "the conntrack table is full: raise net.netfilter.nf_conntrack_max (sysctl -w)"
        }
        libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => {
            "ctnetlink is not available: load it with `modprobe nf_conntrack_netlink` (and nf_nat for NAT bindings)"
        }
        libc::EEXIST => "the entry exists already",
        libc::ENOENT => "no such entry",
        libc::EBUSY => "the entry's status cannot change that way",
        libc::EINVAL => "the kernel refused the entry as malformed",
        _ => "see errno",
    }
}

/// A ctnetlink failure: what was done, the errno, and what it means.
#[derive(Debug, thiserror::Error)]
#[error("conntrack: {what}: {source} ({})", explain(source.raw_os_error().unwrap_or(0)))]
pub struct CtError {
    /// What we were doing.
    pub what: &'static str,
    /// The OS error.
    pub source: io::Error,
}

fn ct_err(what: &'static str) -> impl FnOnce(io::Error) -> CtError {
    move |source| CtError { what, source }
}

/// A kernel conntrack event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtEvent {
    /// NEW or UPDATE; `has_mark` when `CTA_MARK` was in it.
    Update {
        /// The entry as described.
        entry: CtEntry,
        /// `CTA_MARK` was present.
        has_mark: bool,
        /// A NEW (`NLM_F_CREATE|NLM_F_EXCL`) rather than an UPDATE.
        new: bool,
    },
    /// DESTROY.
    Destroy(CtKey),
}

/// One read of the event socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventRead {
    /// Events were handled (how many datagrams).
    Read(usize),
    /// Nothing waiting.
    Empty,
    /// The socket overran (ENOBUFS): events were lost; the table must be resynced.
    Overrun,
}

/// Reads an integer sysctl under /proc/sys/net/netfilter (in this process's network namespace).
pub fn sysctl(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes an integer sysctl under /proc/sys/net/netfilter.
pub fn set_sysctl(name: &str, v: u64) -> io::Result<()> {
    std::fs::write(format!("/proc/sys/net/netfilter/{name}"), v.to_string())
}

#[cfg(test)]
mod tests {
    use super::decode::parse_tuple;
    use super::encode::tuple_attrs;
    use super::socket::serialize;
    use super::*;
    use crate::sync::conntrack::{
        CtOp, CtTuple, TcpInfo,
        entry::{proto, status, tcp},
    };
    use netlink_packet_core::{
        Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage,
        NetlinkPayload,
    };
    use netlink_packet_netfilter::{
        NetfilterMessage, NetfilterMessageInner,
        conntrack::{ConntrackAttribute, ConntrackMessage},
    };

    fn snat_entry() -> CtEntry {
        let orig = CtTuple {
            src: "192.168.100.100".parse().unwrap(),
            dst: "10.0.0.100".parse().unwrap(),
            proto: proto::TCP,
            sport: 40000,
            dport: 80,
        };
        let mut reply = orig.invert();
        reply.dst = "10.0.0.1".parse().unwrap();
        CtEntry {
            key: CtKey { zone: 3, orig },
            reply,
            status: status::CONFIRMED | status::ASSURED | status::SRC_NAT | status::SRC_NAT_DONE,
            timeout: 300,
            mark: 5,
            labels: Some([1; 16]),
            tcp: Some(TcpInfo {
                state: tcp::ESTABLISHED,
                wscale: [7, 7],
                flags: [0x23, 0x23],
            }),
        }
    }

    #[test]
    fn a_create_request_parses_back_with_the_nat_binding_as_attributes() {
        let e = snat_entry();
        let (h, m) = request(&CtOp::Create(e), 9);
        let mut buf = Vec::new();
        serialize(h, m, &mut buf);
        let parsed = <NetlinkMessage<NetfilterMessage>>::deserialize(&buf).expect("parses");
        assert_eq!(
            parsed.header.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(cm),
            ..
        }) = parsed.payload
        else {
            panic!("not a conntrack message");
        };
        let (back, has_mark) = parse_entry(&cm).expect("entry");
        assert!(has_mark);
        assert_eq!(back.key, e.key);
        // The reply went as the plain inverse; the binding rides in CTA_NAT_SRC.
        assert_eq!(back.reply, e.key.orig.invert());
        let ConntrackMessage::New(attrs) = &cm else {
            panic!()
        };
        let nat = attrs
            .iter()
            .find_map(|a| match a {
                ConntrackAttribute::Other(d) if nla::from_default(d).0 == nla::CTA_NAT_SRC => {
                    Some(d.buffer_len())
                }
                _ => None,
            })
            .expect("CTA_NAT_SRC");
        assert_eq!(nat, 40);
        assert_eq!(back.status, status::CONFIRMED | status::ASSURED);
        assert_eq!(back.tcp.unwrap().flags[0], 0x23 | tcp::FLAG_BE_LIBERAL);
        assert_eq!(back.labels, e.labels);
    }

    #[test]
    fn icmp_tuples_round_trip() {
        let t = CtTuple {
            src: "192.168.100.100".parse().unwrap(),
            dst: "10.0.0.100".parse().unwrap(),
            proto: proto::ICMP,
            sport: 0x1234,
            dport: 8 << 8,
        };
        assert_eq!(parse_tuple(&tuple_attrs(&t)), Some(t));
        let v6 = CtTuple {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            proto: proto::ICMPV6,
            sport: 7,
            dport: 128 << 8,
        };
        assert_eq!(parse_tuple(&tuple_attrs(&v6)), Some(v6));
    }

    #[test]
    fn updates_carry_no_nat_and_no_reply_tuple() {
        let attrs = entry_attrs(&snat_entry(), false);
        assert!(
            !attrs
                .iter()
                .any(|a| matches!(a, ConntrackAttribute::CtaTupleReply(_)))
        );
        assert!(
            !attrs
                .iter()
                .any(|a| matches!(a, ConntrackAttribute::Other(d)
            if matches!(nla::from_default(d).0, nla::CTA_NAT_SRC | nla::CTA_NAT_DST)))
        );
    }
}
