//! A small synchronous rtnetlink client for what the kernel advert queue (`advq`) sets up: its own
//! macvlan, an HTB root qdisc on it, one HTB class and one pfifo leaf per vhid and family.
//!
//! Synchronous on purpose: these requests are rare (start-up, a vhid becoming MASTER, a withdrawal before
//! a state change) and their order against the adverts matters (a withdrawal must be done, acknowledged
//! by the kernel, before the next advert is sent), so each one blocks until the kernel's ACK, tens of
//! microseconds. rtnetlink's TC messages are not in the netlink-packet-route crate, so the few structs
//! (tcmsg, tc_htb_glob, tc_htb_opt, tc_fifo_qopt) are written out here, byte for byte.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_NEWTCLASS: u16 = 40;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_TXQLEN: u16 = 13;
const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_MACVLAN_MODE: u16 = 1;
const MACVLAN_MODE_PRIVATE: u32 = 1;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_DIRECT_QLEN: u16 = 5;
const TC_H_ROOT: u32 = 0xFFFF_FFFF;
const TC_LINKLAYER_ETHERNET: u8 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// A TC handle `major:minor`.
pub const fn handle(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}

/// One request being built: the netlink header, the family header and the attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16, family_header: &[u8]) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        buf.extend_from_slice(family_header);
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Msg {
        self.buf
            .extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    fn begin(&mut self, kind: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Msg {
        let at = self.nests.pop().expect("a nest to close");
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// struct tcmsg: family, padding, ifindex, handle, parent, info.
fn tcmsg(ifindex: u32, handle: u32, parent: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    h[8..12].copy_from_slice(&handle.to_ne_bytes());
    h[12..16].copy_from_slice(&parent.to_ne_bytes());
    h
}

/// struct ifinfomsg with an index and IFF flags to change.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// struct tc_ratespec: `rate` bytes a second, Ethernet link layer (no rate table needed), every frame
/// counted as at least `mpu` bytes.
fn ratespec(rate: u32, mpu: u16) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[1] = TC_LINKLAYER_ETHERNET;
    r[6..8].copy_from_slice(&mpu.to_ne_bytes());
    r[8..12].copy_from_slice(&rate.to_ne_bytes());
    r
}

/// A blocking NETLINK_ROUTE socket.
pub struct Rtnl {
    fd: OwnedFd,
}

impl Rtnl {
    /// Opens the socket.
    pub fn open() -> io::Result<Rtnl> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A kernel that never answers must not hang the loop: one second is far beyond any ACK.
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: a valid timeval of the size given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        Ok(Rtnl { fd })
    }

    /// Sends one request and waits for its ACK; the kernel's error as an io::Error.
    fn call(&self, msg: Msg) -> io::Result<()> {
        let req = msg.finish();
        // SAFETY: req is valid for its length; the kernel is the destination (a zeroed sockaddr_nl).
        let n = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: buf is writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut off = 0usize;
            while off + 16 <= n as usize {
                let len =
                    u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
                if kind == NLMSG_ERROR && off + 20 <= n as usize {
                    let err =
                        i32::from_ne_bytes(buf[off + 16..off + 20].try_into().expect("4 bytes"));
                    return match err {
                        0 => Ok(()),
                        e => Err(io::Error::from_raw_os_error(-e)),
                    };
                }
                if len < 16 {
                    break;
                }
                off += len.next_multiple_of(4);
            }
        }
    }

    /// Creates macvlan `name` (mode private, so nothing it sends is delivered to the carpdev's other
    /// macvlans) on `link`, with `mac` and a transmit queue of `txqlen`, DOWN.
    pub fn create_macvlan(
        &self,
        name: &str,
        link: u32,
        mac: [u8; 6],
        txqlen: u32,
    ) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0));
        let mut ifname = name.as_bytes().to_vec();
        ifname.push(0);
        m.attr(IFLA_IFNAME, &ifname)
            .attr(IFLA_LINK, &link.to_ne_bytes())
            .attr(IFLA_ADDRESS, &mac)
            .attr(IFLA_TXQLEN, &txqlen.to_ne_bytes())
            .begin(IFLA_LINKINFO)
            .attr(IFLA_INFO_KIND, b"macvlan")
            .begin(IFLA_INFO_DATA)
            .attr(IFLA_MACVLAN_MODE, &MACVLAN_MODE_PRIVATE.to_ne_bytes())
            .end()
            .end();
        self.call(m)
    }

    /// IPv6 `addrgenmode none` on a link: no link-local address, so no DAD, MLD or RS from it.
    pub fn addrgenmode_none(&self, index: u32) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfomsg(index, 0, 0));
        m.begin(IFLA_AF_SPEC)
            .begin(libc::AF_INET6 as u16)
            .attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE])
            .end()
            .end();
        self.call(m)
    }

    /// Sets a link up or down.
    pub fn set_up(&self, index: u32, up: bool) -> io::Result<()> {
        let flags = if up { libc::IFF_UP as u32 } else { 0 };
        self.call(Msg::new(
            RTM_NEWLINK,
            0,
            &ifinfomsg(index, flags, libc::IFF_UP as u32),
        ))
    }

    /// Deletes a link.
    pub fn delete_link(&self, index: u32) -> io::Result<()> {
        self.call(Msg::new(RTM_DELLINK, 0, &ifinfomsg(index, 0, 0)))
    }

    /// Adds an HTB root qdisc `1:` whose unclassified frames (priority 0) take the direct queue of
    /// `direct_qlen` frames, unshaped. EEXIST if the link has one.
    pub fn add_htb_root(&self, ifindex: u32, direct_qlen: u32) -> io::Result<()> {
        let mut m = Msg::new(
            RTM_NEWQDISC,
            NLM_F_CREATE | NLM_F_EXCL,
            &tcmsg(ifindex, handle(1, 0), TC_H_ROOT),
        );
        // struct tc_htb_glob: version 3, rate2quantum 10, defcls 0 (= direct), debug, direct_pkts.
        let mut glob = [0u8; 20];
        glob[0..4].copy_from_slice(&3u32.to_ne_bytes());
        glob[4..8].copy_from_slice(&10u32.to_ne_bytes());
        m.attr(TCA_KIND, b"htb\0")
            .begin(TCA_OPTIONS)
            .attr(TCA_HTB_INIT, &glob)
            .attr(TCA_HTB_DIRECT_QLEN, &direct_qlen.to_ne_bytes())
            .end();
        self.call(m)
    }

    /// Creates or changes HTB class `1:minor` at `rate` bytes a second for frames counted as `mpu`
    /// bytes, ceiling equal to the rate and no burst: one frame per `mpu / rate` seconds, exactly.
    pub fn set_htb_class(&self, ifindex: u32, minor: u16, rate: u32, mpu: u16) -> io::Result<()> {
        let mut m = Msg::new(
            RTM_NEWTCLASS,
            NLM_F_CREATE,
            &tcmsg(ifindex, handle(1, minor), handle(1, 0)),
        );
        // struct tc_htb_opt: rate, ceil, buffer, cbuffer, quantum, level, prio.
        let mut opt = Vec::with_capacity(44);
        opt.extend_from_slice(&ratespec(rate, mpu));
        opt.extend_from_slice(&ratespec(rate, mpu));
        opt.extend_from_slice(&0u32.to_ne_bytes()); // buffer: no burst
        opt.extend_from_slice(&0u32.to_ne_bytes()); // cbuffer
        opt.extend_from_slice(&1514u32.to_ne_bytes()); // quantum (only for borrowing, unused)
        opt.extend_from_slice(&0u32.to_ne_bytes());
        opt.extend_from_slice(&0u32.to_ne_bytes());
        m.attr(TCA_KIND, b"htb\0")
            .begin(TCA_OPTIONS)
            .attr(TCA_HTB_PARMS, &opt)
            .end();
        self.call(m)
    }

    /// Grafts a new pfifo of `limit` frames, handle `major:`, under `parent`: the qdisc it replaces
    /// is destroyed with every frame it held (a purge), unless it already had this handle (then it is
    /// only changed, so callers alternate handles).
    pub fn graft_pfifo(&self, ifindex: u32, parent: u32, major: u16, limit: u32) -> io::Result<()> {
        let mut m = Msg::new(
            RTM_NEWQDISC,
            NLM_F_CREATE | NLM_F_REPLACE,
            &tcmsg(ifindex, handle(major, 0), parent),
        );
        m.attr(TCA_KIND, b"pfifo\0")
            .attr(TCA_OPTIONS, &limit.to_ne_bytes());
        self.call(m)
    }

    /// Deletes the qdisc under `parent` (for an HTB class: replaced by a default pfifo, its frames
    /// dropped).
    pub fn delete_qdisc(&self, ifindex: u32, parent: u32) -> io::Result<()> {
        self.call(Msg::new(RTM_DELQDISC, 0, &tcmsg(ifindex, 0, parent)))
    }
}
