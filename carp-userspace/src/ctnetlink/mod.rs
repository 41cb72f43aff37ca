//! ctnetlink I/O: netfilter's conntrack table read, watched and written over `NETLINK_NETFILTER`
//! with the rust-netlink family (netlink-sys sockets, netlink-packet-netfilter messages, and the
//! attributes that crate lacks in `nla`). This module owns the sockets and the translation between
//! kernel messages and `sync::conntrack::CtEntry`; what to do with entries is the mirror's business.
//!
//! Two sockets, as conntrackd has them: an event socket subscribed to the NEW, UPDATE and DESTROY
//! groups, and a request socket for dumps and changes. Events caused by our own changes carry the
//! request socket's portid in `nlmsg_pid` (the kernel's `item->portid`), which is how echoes are told
//! from the kernel's own events. Changes go out batched, many messages per `sendmsg`, each acked.

pub mod nla;

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
        Protocol, Status, TCPFlags, Tuple,
    },
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::sync::conntrack::{
    CtEntry, CtKey, CtOp, CtTuple, TcpInfo,
    entry::{proto, status, tcp},
};
use nla::{CtExtra, NatAttr, NatProto};

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

/// A netlink socket on `NETLINK_NETFILTER`.
pub struct CtSocket {
    sock: Socket,
    portid: u32,
    seq: u32,
    buf: Vec<u8>,
}

impl AsRawFd for CtSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Sets an int socket option with the FORCE variant, which passes `rmem_max` (CAP_NET_ADMIN),
/// falling back to the plain one. The kernel doubles the value, so half is asked for.
pub fn force_rcvbuf(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = (bytes / 2) as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `v` lives across the call and its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
}

/// The socket's receive buffer as the kernel holds it.
pub fn rcvbuf(fd: RawFd) -> usize {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` live across the call.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    v.max(0) as usize
}

impl CtSocket {
    /// A request socket (dumps, changes), blocking, with acks that carry only the header.
    pub fn open() -> Result<CtSocket, CtError> {
        let mut sock =
            Socket::new(NETLINK_NETFILTER).map_err(ct_err("opening a netlink socket"))?;
        let portid = sock
            .bind_auto()
            .map_err(ct_err("binding the netlink socket"))?
            .port_number();
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(ct_err("connecting the netlink socket"))?;
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(false);
        force_rcvbuf(sock.as_raw_fd(), 4 << 20).map_err(ct_err("sizing the receive buffer"))?;
        Ok(CtSocket {
            sock,
            portid,
            seq: 1,
            buf: vec![0; 1 << 20],
        })
    }

    /// An event socket subscribed to NEW, UPDATE and DESTROY, non-blocking, with a `rcvbuf`-byte
    /// receive buffer (SO_RCVBUFFORCE). Subscribing needs CAP_NET_ADMIN.
    pub fn events(rcvbuf_bytes: usize) -> Result<CtSocket, CtError> {
        let s = Self::open()?;
        for g in [GROUP_NEW, GROUP_UPDATE, GROUP_DESTROY] {
            s.sock
                .add_membership(g)
                .map_err(ct_err("subscribing to conntrack events"))?;
        }
        force_rcvbuf(s.sock.as_raw_fd(), rcvbuf_bytes)
            .map_err(ct_err("sizing the event buffer"))?;
        s.sock
            .set_non_blocking(true)
            .map_err(ct_err("making the event socket non-blocking"))?;
        Ok(s)
    }

    /// The socket's netlink port id: events our requests cause carry it.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Dumps every entry of every family in this network namespace.
    pub fn dump(&mut self) -> Result<Vec<CtEntry>, CtError> {
        let seq = self.next_seq();
        let mut h = NetlinkHeader::default();
        h.flags = NLM_F_REQUEST | NLM_F_DUMP;
        h.sequence_number = seq;
        let msg = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
            ConntrackMessage::Get(vec![]),
        );
        let mut out = Vec::new();
        serialize(h, msg, &mut out);
        self.sock
            .send(&out, 0)
            .map_err(ct_err("requesting a table dump"))?;
        let mut entries = Vec::new();
        loop {
            let n = recv(&self.sock, &mut self.buf).map_err(ct_err("reading the table dump"))?;
            let mut done = false;
            for_each_message(&self.buf[..n], |m| match m {
                Parsed::Msg { header, msg } if header.sequence_number == seq => {
                    if let Some((e, _)) = parse_entry(&msg) {
                        entries.push(e);
                    }
                }
                Parsed::Done(s) if s == seq => done = true,
                Parsed::Error { seq: s, errno } if s == seq && errno != 0 => {
                    done = true;
                    entries.clear();
                }
                _ => {}
            });
            if done {
                return Ok(entries);
            }
        }
    }

    /// Reads what events are waiting, handing each (with the portid that caused it) to `f`, up to
    /// `max` datagrams.
    pub fn read_events(
        &mut self,
        max: usize,
        mut f: impl FnMut(u32, CtEvent),
    ) -> io::Result<EventRead> {
        let mut reads = 0;
        while reads < max {
            let n = match recv(&self.sock, &mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(EventRead::Overrun),
                Err(e) => return Err(e),
            };
            reads += 1;
            for_each_message(&self.buf[..n], |m| {
                if let Parsed::Msg { header, msg } = m {
                    let pid = header.port_number;
                    match &msg {
                        ConntrackMessage::Delete(_) => {
                            if let Some((e, _)) = parse_entry(&msg) {
                                f(pid, CtEvent::Destroy(e.key));
                            }
                        }
                        ConntrackMessage::New(_) => {
                            if let Some((entry, has_mark)) = parse_entry(&msg) {
                                let new = header.flags & (NLM_F_CREATE | NLM_F_EXCL)
                                    == NLM_F_CREATE | NLM_F_EXCL;
                                f(
                                    pid,
                                    CtEvent::Update {
                                        entry,
                                        has_mark: has_mark || new,
                                        new,
                                    },
                                );
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
        Ok(if reads == 0 {
            EventRead::Empty
        } else {
            EventRead::Read(reads)
        })
    }

    /// Carries out `ops` in batches of [`BATCH`] per `sendmsg`; returns each op's errno (0 = done).
    pub fn send_ops(&mut self, ops: &[CtOp]) -> Result<Vec<i32>, CtError> {
        let mut result = vec![0; ops.len()];
        for (chunk_at, chunk) in ops.chunks(BATCH).enumerate() {
            let base = chunk_at * BATCH;
            let mut out = Vec::with_capacity(chunk.len() * 256);
            let mut seqs = Vec::with_capacity(chunk.len());
            for op in chunk {
                let seq = self.next_seq();
                seqs.push(seq);
                let (h, m) = request(op, seq);
                serialize(h, m, &mut out);
            }
            self.sock
                .send(&out, 0)
                .map_err(ct_err("sending conntrack changes"))?;
            let mut pending = seqs.len();
            while pending > 0 {
                let n = recv(&self.sock, &mut self.buf)
                    .map_err(ct_err("reading the kernel's answers"))?;
                for_each_message(&self.buf[..n], |m| {
                    if let Parsed::Error { seq, errno } = m
                        && let Some(i) = seqs.iter().position(|&s| s == seq)
                    {
                        result[base + i] = errno;
                        seqs[i] = 0;
                        pending -= 1;
                    }
                });
            }
        }
        Ok(result)
    }

    /// Applies `ops` as conntrackd does: a create that finds the entry updates it, an update that
    /// finds none creates it, an update the kernel refuses otherwise becomes delete + create. Returns
    /// the errno of each op's final attempt (0 = done).
    pub fn apply(&mut self, ops: &[CtOp]) -> Result<Vec<i32>, CtError> {
        let mut result = self.send_ops(ops)?;
        let mut retry = Vec::new();
        // Which op each retry answers for (None: a delete that only clears the way).
        let mut at = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match (op, result[i]) {
                (CtOp::Create(en), libc::EEXIST) => {
                    retry.push(CtOp::Update(*en));
                    at.push(Some(i));
                }
                (CtOp::Update(en), libc::ENOENT) => {
                    retry.push(CtOp::Create(*en));
                    at.push(Some(i));
                }
                // ENOMEM (table full) cannot be helped by deleting first; the rest (EBUSY: a status
                // change the kernel refuses, EPERM: a fixed timeout) can.
                (CtOp::Update(en), e) if e != 0 && e != libc::ENOMEM => {
                    retry.push(CtOp::Delete(en.key));
                    at.push(None);
                    retry.push(CtOp::Create(*en));
                    at.push(Some(i));
                }
                (CtOp::Delete(_), libc::ENOENT) => result[i] = 0,
                _ => {}
            }
        }
        if !retry.is_empty() {
            let r = self.send_ops(&retry)?;
            for (i, e) in at.into_iter().zip(r) {
                if let Some(i) = i {
                    result[i] = e;
                }
            }
        }
        Ok(result)
    }
}

fn recv(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    sock.recv(&mut &mut buf[..], 0)
}

fn serialize(mut h: NetlinkHeader, m: NetfilterMessage, out: &mut Vec<u8>) {
    h.message_type = m.message_type();
    let mut msg = NetlinkMessage::new(h, NetlinkPayload::InnerMessage(m));
    msg.finalize();
    let at = out.len();
    out.resize(at + msg.buffer_len(), 0);
    msg.serialize(&mut out[at..]);
}

enum Parsed {
    Msg {
        header: NetlinkHeader,
        msg: ConntrackMessage,
    },
    Done(u32),
    Error {
        seq: u32,
        errno: i32,
    },
    Other,
}

/// Walks the netlink messages of one datagram.
fn for_each_message(mut b: &[u8], mut f: impl FnMut(Parsed)) {
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            return;
        }
        let this = &b[..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        let parsed = match <NetlinkMessage<NetfilterMessage>>::deserialize(this) {
            Ok(m) => {
                let header = m.header;
                match m.payload {
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(msg),
                        ..
                    }) => Parsed::Msg { header, msg },
                    NetlinkPayload::Done(_) => Parsed::Done(header.sequence_number),
                    NetlinkPayload::Error(e) => Parsed::Error {
                        seq: header.sequence_number,
                        errno: -e.raw_code(),
                    },
                    _ => Parsed::Other,
                }
            }
            // A message the crate cannot parse (an attribute layout it does not expect) is skipped,
            // but an error or done must still be seen: read the type by hand.
            Err(_) => {
                let ty = u16::from_ne_bytes([this[4], this[5]]);
                let seq = u32::from_ne_bytes([this[8], this[9], this[10], this[11]]);
                match ty {
                    2 if this.len() >= 20 => Parsed::Error {
                        seq,
                        errno: -i32::from_ne_bytes([this[16], this[17], this[18], this[19]]),
                    },
                    3 => Parsed::Done(seq),
                    _ => Parsed::Other,
                }
            }
        };
        f(parsed);
    }
}

fn tuple_attrs(t: &CtTuple) -> Vec<Tuple> {
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

fn parse_tuple(v: &[Tuple]) -> Option<CtTuple> {
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
    use super::*;
    use netlink_packet_core::Emitable;

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
