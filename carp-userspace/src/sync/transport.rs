//! The sync transport: UDP on `syncdev`, to the unicast `syncpeer` or to a multicast group (pfsync's
//! 224.0.0.240 by default), TTL 255 on every packet sent and checked on every packet received
//! (IP_RECVTTL), the socket bound to the device (SO_BINDTODEVICE) so nothing arriving on another
//! interface is taken (pfsync's "accepted only on syncdev").
//!
//! This is the IO edge of the sync protocol: it moves opaque byte strings. Authentication, replay and
//! truncation checks are the engine's (`SyncEngine` counts badauth, replay, badlen, ...); this module
//! counts only what it alone can see: a TTL that is not 255 and socket errors.

use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd, RawFd},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::config::PfsyncConfig;

/// The TTL every sync packet is sent with and must arrive with (a packet from beyond the link has a lower one).
pub const SYNC_TTL: u8 = 255;
/// Receive buffer asked for (beyond net.core.rmem_max with CAP_NET_ADMIN, which carpd keeps): a bulk
/// transfer of a million flows is ~100,000 datagrams, sent faster than a busy receiver reads them; at
/// ~2.3 KB of kernel memory each, 256 MB holds the whole of it. Memory is taken only while a backlog is
/// queued.
pub const SOCKET_BUFFER: usize = 256 << 20;
/// Send buffer asked for (the sync link is local: datagrams leave at once).
pub const SEND_BUFFER: usize = 16 << 20;
/// The largest datagram read (a sync packet is at most the configured MTU, 1400 by default).
pub const MAX_DATAGRAM: usize = 65535;

/// What the transport itself counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportCounters {
    /// Datagrams received on syncdev (before any check).
    pub received: u64,
    /// Dropped: TTL not 255, or no TTL reported (pfsync's badttl).
    pub badttl: u64,
    /// Send failures (pfsync's oerrors).
    pub oerrors: u64,
}

/// The UDP socket of the sync protocol.
#[derive(Debug)]
pub struct SyncSocket {
    sock: Socket,
    dest: SocketAddrV4,
    counters: TransportCounters,
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
        set_recvttl(sock.as_raw_fd())?;
        sock.bind(&SockAddr::from(bind))?;
        Ok(SyncSocket {
            sock,
            dest,
            counters: TransportCounters::default(),
        })
    }

    /// Where packets go.
    pub fn dest(&self) -> SocketAddrV4 {
        self.dest
    }

    /// The counters.
    pub fn counters(&self) -> TransportCounters {
        self.counters
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

    /// Receives the next packet that arrived with TTL 255 into `buf`: `Ok(Some((len, source)))`,
    /// `Ok(None)` when nothing is waiting. Packets with another TTL are counted and skipped.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, Ipv4Addr)>> {
        loop {
            match recv_with_ttl(self.sock.as_raw_fd(), buf) {
                Ok((len, src, ttl)) => {
                    self.counters.received += 1;
                    if ttl != Some(SYNC_TTL) {
                        self.counters.badttl += 1;
                        continue;
                    }
                    return Ok(Some((len, src)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for SyncSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

fn force_buffer(fd: RawFd, opt: libc::c_int, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt with a valid int option value and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
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

fn set_recvttl(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option value and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_RECVTTL,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// recvmsg with the IP_TTL control message: (length, source, TTL if the kernel reported it).
fn recv_with_ttl(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Ipv4Addr, Option<u8>)> {
    let mut src = MaybeUninit::<libc::sockaddr_in>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one int-sized control message, 8-byte aligned.
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
    let mut ttl = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TTL {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // SAFETY: the kernel wrote an IPv4 source address (the socket is AF_INET).
    let src = unsafe { src.assume_init() };
    let addr = Ipv4Addr::from(u32::from_be(src.sin_addr.s_addr));
    // Truncated datagrams keep their received length; the engine's length check rejects them.
    Ok((n as usize, addr, ttl))
}
