//! The sync transport: UDP on `syncdev`, to the unicast `syncpeer` or to a multicast group (pfsync's
//! 224.0.0.240 by default), TTL 255 on every packet sent and checked on every packet received
//! (IP_RECVTTL), the socket bound to the device (SO_BINDTODEVICE) so nothing arriving on another
//! interface is taken (pfsync's "accepted only on syncdev"), and a socket filter in the kernel so that
//! only datagrams from the unicast `syncpeer`, or sent to the group, reach carpd at all.
//!
//! A stranger can still send to the port (spoofing the peer's address, or with the wrong TTL), faster
//! than carpd reads: every receive therefore spends a budget the caller gives it, one unit per
//! datagram read, junk included, so a flood costs the daemon's loop a bounded time per wake-up.
//!
//! This is the IO edge of the sync protocol: it moves opaque byte strings. Authentication, replay and
//! truncation checks are the engine's (`SyncEngine` counts badauth, replay, badlen, ...); this module
//! counts only what it alone can see: a TTL that is not 255 and socket errors.
//!
//! A bulk transfer is ~100,000 datagrams, and the kernel's per-datagram path (an skb, a route lookup,
//! the device, the receive softirq, one syscall each side) cost more than the protocol itself. So runs
//! of equal-sized packets leave in one UDP GSO send (UDP_SEGMENT, Linux 4.18) and arrive, where the
//! receive path coalesces them (UDP_GRO, Linux 5.0), in one read. On the wire they are the same
//! datagrams, each with its own authentication, as one send apiece would make. A kernel or path that
//! refuses GSO (an IPsec route, an old kernel) gets one send per datagram from then on.

use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, RawFd},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::sync::PfsyncConfig;

/// The TTL every sync packet is sent with and must arrive with (a packet from beyond the link has a lower one).
pub const SYNC_TTL: u8 = 255;
/// Receive buffer asked for (beyond net.core.rmem_max with CAP_NET_ADMIN, which carpd keeps): a bulk
/// transfer of a million flows is ~100,000 datagrams, sent faster than a busy receiver reads them; at
/// ~2.3 KB of kernel memory each, 256 MB holds the whole of it. Memory is taken only while a backlog is
/// queued.
pub const SOCKET_BUFFER: usize = 256 << 20;
/// Send buffer asked for (the sync link is local: datagrams leave at once).
pub const SEND_BUFFER: usize = 16 << 20;
/// The largest read: one datagram (a sync packet is at most the syncdev's MTU), or a run of them
/// coalesced by UDP GRO (at most 64 KB in all).
pub const MAX_DATAGRAM: usize = 65535;
/// Most datagrams in one GSO send (the kernel's UDP_MAX_SEGMENTS was 64 before Linux 6.1).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: an IPv4 datagram's payload limit less the UDP header.
const GSO_MAX_BYTES: usize = 65535 - 20 - 8;

/// What the transport itself counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportCounters {
    /// Datagrams received on syncdev (before any check).
    pub received: u64,
    /// Dropped: TTL not 255, or no TTL reported (pfsync's badttl).
    pub badttl: u64,
    /// Send failures (pfsync's oerrors).
    pub oerrors: u64,
    /// Datagrams sent within a GSO send (several per syscall).
    #[serde(default)]
    pub gso_datagrams: u64,
    /// Reads that returned several datagrams coalesced by GRO.
    #[serde(default)]
    pub gro_reads: u64,
    /// Datagrams the kernel dropped before carpd read them: not from the syncpeer (or not to the
    /// group), or the receive buffer was full (the socket's drop count, SO_MEMINFO).
    #[serde(default)]
    pub kernel_drops: u64,
}

/// One read from the socket: `len` bytes from `src`, holding datagrams of `segment` bytes each (the
/// last may be shorter); `segment == len` for a single datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes read.
    pub len: usize,
    /// The sender.
    pub src: Ipv4Addr,
    /// The size of each datagram in the read (UDP GRO's segment size).
    pub segment: usize,
}

impl Received {
    /// The datagrams of this read, in the order they were sent.
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> std::slice::Chunks<'a, u8> {
        buf[..self.len].chunks(self.segment.max(1))
    }
}

/// The UDP socket of the sync protocol.
#[derive(Debug)]
pub struct SyncSocket {
    sock: Socket,
    dest: SocketAddrV4,
    counters: TransportCounters,
    /// Why GSO sends stopped (the kernel refused one), if they did.
    gso_off: Option<io::Error>,
}

impl SyncSocket {
    /// Opens the socket on `syncdev`: bound to the device and the port, joined to the group when no
    /// peer is configured, non-blocking.
    pub fn open(cfg: &PfsyncConfig) -> io::Result<SyncSocket> {
        let bind = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.port);
        match cfg.syncpeer {
            Some(peer) => Self::open_on(&cfg.syncdev, bind, SocketAddrV4::new(peer, cfg.port)),
            None => {
                let s = Self::open_on(&cfg.syncdev, bind, SocketAddrV4::new(cfg.group, cfg.port))?;
                let index = crate::dataplane::if_index(&cfg.syncdev)
                    .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?;
                s.sock.join_multicast_v4_n(
                    &cfg.group,
                    &socket2::InterfaceIndexOrAddress::Index(index),
                )?;
                Ok(s)
            }
        }
    }

    /// Opens a socket on `dev` bound to `bind` that sends to `dest` (the benchmark runs two on `lo`).
    pub fn open_on(dev: &str, bind: SocketAddrV4, dest: SocketAddrV4) -> io::Result<SyncSocket> {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_nonblocking(true)?;
        sock.set_cloexec(true)?;
        sock.set_reuse_address(true)?;
        // A bulk transfer arrives in bursts. The FORCE variants pass net.core.[rw]mem_max (they need
        // CAP_NET_ADMIN); without it the plain ones get what the sysctl allows.
        if force_buffer(sock.as_raw_fd(), libc::SO_RCVBUFFORCE, SOCKET_BUFFER).is_err() {
            let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        }
        if force_buffer(sock.as_raw_fd(), libc::SO_SNDBUFFORCE, SEND_BUFFER).is_err() {
            let _ = sock.set_send_buffer_size(SEND_BUFFER);
        }
        sock.bind_device(Some(dev.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("SO_BINDTODEVICE {dev}: {e}")))?;
        sock.set_ttl_v4(u32::from(SYNC_TTL))?;
        sock.set_multicast_ttl_v4(u32::from(SYNC_TTL))?;
        sock.set_multicast_loop_v4(false)?;
        set_int_opt(sock.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
        // Only the groups this socket joined, not every group some other socket on the host joined.
        set_int_opt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_ALL,
            0,
        )?;
        attach_filter(sock.as_raw_fd(), &only_from_or_to(dest))?;
        // Before Linux 5.0 there is no UDP GRO: every datagram is then read on its own.
        let _ = set_int_opt(sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1);
        sock.bind(&SockAddr::from(bind))?;
        Ok(SyncSocket {
            sock,
            dest,
            counters: TransportCounters::default(),
            gso_off: None,
        })
    }

    /// A second handle on the same socket (a duplicated fd) for another thread's sends.
    pub fn try_clone(&self) -> io::Result<SyncSocket> {
        Ok(SyncSocket {
            sock: self.sock.try_clone()?,
            dest: self.dest,
            counters: TransportCounters::default(),
            gso_off: self
                .gso_off
                .as_ref()
                .map(|e| io::Error::new(e.kind(), e.to_string())),
        })
    }

    /// Where packets go.
    pub fn dest(&self) -> SocketAddrV4 {
        self.dest
    }

    /// The counters (`kernel_drops` read from the socket now).
    pub fn counters(&self) -> TransportCounters {
        TransportCounters {
            kernel_drops: socket_drops(self.sock.as_raw_fd()).unwrap_or(0),
            ..self.counters
        }
    }

    /// Why GSO sends are off (the kernel refused one), or None while they are on.
    pub fn gso_off(&self) -> Option<&io::Error> {
        self.gso_off.as_ref()
    }

    /// Sends one packet to the peer or the group; a failure is counted and returned.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.sock.send_to(bytes, &SockAddr::from(self.dest)) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.counters.oerrors += 1;
                Err(e)
            }
        }
    }

    /// Sends `packets` in order, each its own datagram, runs of equal-sized ones (the last of a run
    /// may be shorter) in one GSO send. Returns how many failed and the last error; each failure is
    /// counted in `oerrors`.
    pub fn send_all<B: AsRef<[u8]>>(&mut self, packets: &[B]) -> (u64, Option<io::Error>) {
        let (mut failed, mut last) = (0, None);
        let mut i = 0;
        while i < packets.len() {
            let run = if self.gso_off.is_none() {
                gso_run(packets, i)
            } else {
                1
            };
            let group = &packets[i..i + run];
            i += run;
            let mut gso_err = None;
            if run > 1 {
                match self.send_gso(group) {
                    Ok(()) => {
                        self.counters.gso_datagrams += run as u64;
                        continue;
                    }
                    // The run goes out one by one below, so nothing is lost that plain sends
                    // would have delivered.
                    Err(e) => gso_err = Some(e),
                }
            }
            let mut all_sent = true;
            for p in group {
                if let Err(e) = self.send(p.as_ref()) {
                    failed += 1;
                    last = Some(e);
                    all_sent = false;
                }
            }
            // Plain sends of the same packets went where the GSO send could not: GSO is what the
            // kernel or the route refuses (no UDP_SEGMENT, IPsec, a path MTU below the packets), so
            // it stays off. A transient failure (a full buffer) says nothing about GSO.
            if let Some(e) = gso_err
                && all_sent
                && !transient(&e)
            {
                self.gso_off = Some(e);
            }
        }
        (failed, last)
    }

    /// One sendmsg of the packets with UDP_SEGMENT set to the first one's size.
    fn send_gso<B: AsRef<[u8]>>(&mut self, group: &[B]) -> io::Result<()> {
        let segment = group[0].as_ref().len();
        let mut iov: Vec<libc::iovec> = group
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ref().as_ptr().cast_mut().cast(),
                iov_len: p.as_ref().len(),
            })
            .collect();
        let dest = SockAddr::from(self.dest);
        // Room for one u16 control message, 8-byte aligned.
        let mut control = [0u64; 4];
        // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call, and the
        // kernel only reads the iovecs' buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = dest.as_ptr().cast_mut().cast();
        msg.msg_namelen = dest.len();
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE/CMSG_FIRSTHDR/CMSG_DATA lay out one control message inside `control`,
        // which is larger than CMSG_SPACE(2).
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment as u16);
        }
        // SAFETY: msg points at live buffers of the sizes given.
        let n = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives the next datagram, or run of datagrams coalesced by GRO, that arrived with TTL 255
    /// into `buf` (make it `MAX_DATAGRAM` long). Every datagram read, whatever its TTL, takes one
    /// from `budget`; reads with another TTL are counted and skipped. `Ok(None)` when nothing is
    /// waiting or the budget is spent (then `*budget == 0`: more may be waiting).
    pub fn recv(&mut self, buf: &mut [u8], budget: &mut usize) -> io::Result<Option<Received>> {
        while *budget > 0 {
            match recv_with_ttl(self.sock.as_raw_fd(), buf) {
                Ok((len, src, ttl, segment)) => {
                    let segment = segment.filter(|&s| s > 0 && s < len).unwrap_or(len);
                    let datagrams = len.div_ceil(segment.max(1)).max(1) as u64;
                    *budget = budget.saturating_sub(datagrams as usize);
                    self.counters.received += datagrams;
                    if datagrams > 1 {
                        self.counters.gro_reads += 1;
                    }
                    // GRO coalesces only datagrams with equal IP headers, TTL included.
                    if ttl != Some(SYNC_TTL) {
                        self.counters.badttl += datagrams;
                        continue;
                    }
                    return Ok(Some(Received { len, src, segment }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

impl AsRawFd for SyncSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// Sets a socket buffer size with the FORCE variant of `opt` (past net.core.[rw]mem_max).
fn force_buffer(fd: RawFd, opt: libc::c_int, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_opt(fd, libc::SOL_SOCKET, opt, v)
}

/// A classic BPF socket filter that keeps only IPv4 datagrams from `dest` (a unicast syncpeer) or to
/// it (a multicast group). A UDP socket's filter runs with the data at the UDP header, so the IP
/// header is read at the kernel's network-header offset (SKF_NET_OFF); loads are in host order.
fn only_from_or_to(dest: SocketAddrV4) -> [libc::sock_filter; 4] {
    const SKF_NET_OFF: i32 = -0x100000;
    let field = if dest.ip().is_multicast() { 16 } else { 12 };
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    [
        op(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            0,
            0,
            (SKF_NET_OFF + field) as u32,
        ),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            u32::from(*dest.ip()),
        ),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    ]
}

/// Attaches a classic BPF program to the socket (SO_ATTACH_FILTER).
fn attach_filter(fd: RawFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: fprog points at `len` instructions alive for the call; the kernel copies them.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket's drop count (SK_MEMINFO_DROPS of SO_MEMINFO, Linux 4.6).
fn socket_drops(fd: RawFd) -> io::Result<u64> {
    const SK_MEMINFO_DROPS: usize = 8;
    let mut info = [0u32; 16];
    let mut len = size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 || (len as usize) < (SK_MEMINFO_DROPS + 1) * 4 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(info[SK_MEMINFO_DROPS]))
}

/// How many packets from `start` on make one GSO send: equal sizes, the last no larger, within the
/// kernel's bounds. 1 means a plain send.
fn gso_run<B: AsRef<[u8]>>(packets: &[B], start: usize) -> usize {
    let segment = packets[start].as_ref().len();
    let (mut n, mut bytes) = (1, segment);
    while start + n < packets.len() && n < GSO_MAX_SEGMENTS {
        let len = packets[start + n].as_ref().len();
        if len > segment || bytes + len > GSO_MAX_BYTES {
            break;
        }
        n += 1;
        bytes += len;
        if len < segment {
            // A shorter one can only end a run.
            break;
        }
    }
    n
}

/// True for a send failure that passes (a full socket buffer, no memory for a moment).
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM | libc::EINTR)
    )
}

fn set_int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt with a valid int option value and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// recvmsg with the IP_TTL and UDP_GRO control messages: (length, source, TTL if the kernel reported
/// it, GRO segment size if the read holds coalesced datagrams).
fn recv_with_ttl(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, Ipv4Addr, Option<u8>, Option<usize>)> {
    let mut src = MaybeUninit::<libc::sockaddr_in>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for two int-sized control messages, 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = src.as_mut_ptr().cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let (mut ttl, mut segment) = (None, None);
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TTL {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                segment = usize::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // SAFETY: the kernel wrote an IPv4 source address (the socket is AF_INET).
    let src = unsafe { src.assume_init() };
    let addr = Ipv4Addr::from(u32::from_be(src.sin_addr.s_addr));
    // Truncated datagrams keep their received length; the engine's length check rejects them.
    Ok((n as usize, addr, ttl, segment))
}
