//! The two ctnetlink sockets and their datagrams: opening and sizing them, subscribing to the
//! NEW, UPDATE and DESTROY groups, dumps, batched acked changes, event reads with the overrun
//! (ENOBUFS) reported, and the walk over the netlink messages of one datagram.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::ConntrackMessage,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::{
    BATCH, CtError, CtEvent, EventRead, GROUP_DESTROY, GROUP_NEW, GROUP_UPDATE, ct_err,
    parse_entry, request,
};
use crate::sync::conntrack::{CtEntry, CtOp};

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

    /// Drops, in the kernel, the events that requests from `portid` cause (the echoes of our own
    /// changes), so they never take room in this socket's buffer: a bulk of a million inserts would
    /// otherwise put a million echoes in front of the events that matter. A classic BPF socket filter
    /// on the message's `nlmsg_pid`; ctnetlink sends each event in a datagram of its own, so the
    /// first message's header is the event's.
    pub fn drop_events_of(&self, portid: u32) -> Result<(), CtError> {
        use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
        use socket2::SockFilter;
        // nlmsg_pid sits at offset 12 of nlmsghdr in host order; a cBPF load reads big-endian.
        let pid = u32::from_be_bytes(portid.to_ne_bytes());
        let prog = [
            SockFilter::new((BPF_LD | BPF_W | BPF_ABS) as u16, 0, 0, 12),
            SockFilter::new((BPF_JMP | BPF_JEQ | BPF_K) as u16, 0, 1, pid),
            SockFilter::new((BPF_RET | BPF_K) as u16, 0, 0, 0),
            SockFilter::new((BPF_RET | BPF_K) as u16, 0, 0, u32::MAX),
        ];
        // SAFETY: the fd is this socket's and outlives the borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.sock.as_raw_fd()) };
        socket2::SockRef::from(&fd)
            .attach_filter(&prog)
            .map_err(ct_err("attaching the echo filter to the event socket"))
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

/// Frames one netfilter message (its type set from the message) and appends it to `out`.
pub(super) fn serialize(mut h: NetlinkHeader, m: NetfilterMessage, out: &mut Vec<u8>) {
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
