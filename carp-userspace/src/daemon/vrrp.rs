//! carpd's VRRP edges: the packet sockets VRRP adverts arrive on, and the frames it sends for a VRRP
//! interface. The election is the engine's (`engine::vrrp`); this module only moves bytes.
//!
//! Receive: the XDP intake runs the frame-only checks for VRIDs marked VRRP in `carp_vhids` (TTL,
//! version, length; counted per VRID in `carp_stats`), applies the VRID's event bucket and passes the
//! survivors up. Here one AF_PACKET socket per family and carpdev, with a classic BPF filter that
//! admits IP protocol 112 only (so ordinary traffic never reaches userspace), reads at most
//! `RX_BUDGET` frames per wake-up and runs `wire::vrrp::check_vrrp` (checksum in either IPv4 form,
//! VRID, version, owner, v2 authentication and interval). A raw IPv4 socket for protocol 112 with a
//! drop-all filter exists only so the kernel does not answer unicast adverts with ICMP unreachables.
//!
//! Send: adverts go out through the carpdev's AF_PACKET socket from the VRID's virtual MAC
//! (00:00:5e:00:01:VRID, or 00:00:5e:00:02:VRID for IPv6) with TOS 0xc0 and TTL 255, from the carpdev's
//! primary IPv4 address or its IPv6 link-local; unicast peers get one copy each through a raw socket
//! of the family (the kernel resolves the peer's MAC; for IPv6 it writes the header, hop limit 255,
//! from the link-local the socket is bound to), each with its own pseudo-header checksum.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use carp_common::maps::VhidState;
use carp_common::proto::{CARP_GROUP_MAC_V4, CARP_GROUP_MAC_V6, CARP_GROUP_V4, CARP_GROUP_V6};
use carp_common::vrrp::{
    VHID_MODE_NO_ACCEPT, VHID_MODE_UNICAST_PEERS, VHID_MODE_VRRP2, VHID_MODE_VRRP3, vrrp_mac_v4,
    vrrp_mac_v6,
};

use super::{Daemon, nodes};
use crate::config::InterfaceConfig;
use crate::engine::{HostEvent, State, VrrpAdvertIn, VrrpElection};
use crate::wire::ip::parse_ethernet;
use crate::wire::vrrp::{VridConfig, VrrpVersion, check_vrrp, emit_vrrp_frame, emit_vrrp_ip};
use crate::wire::vrrp2::Vrrp2Repr;
use crate::wire::vrrp3::Vrrp3Repr;

/// Frames read per socket and wake-up: bounds the loop's work whatever a sender does (the XDP bucket
/// bounds the rate; this bounds one turn).
const RX_BUDGET: usize = 64;

/// The receive sockets of one carpdev with VRRP interfaces.
pub(super) struct VrrpRx {
    /// Index of the carpdev in `Daemon::devs`.
    pub dev: usize,
    socks: Vec<AsyncFd<OwnedFd>>,
    // Held only so unicast adverts passed up by XDP find a protocol-112 listener (no ICMP errors),
    // one per family.
    _icmp_guards: Vec<OwnedFd>,
    // Raw IPv4 socket for unicast peers, opened on first use.
    raw_tx: Option<Socket>,
    // Raw IPv6 socket for unicast peers (bound to the link-local source), opened on first use.
    raw_tx6: Option<(Ipv6Addr, Socket)>,
    /// Adverts refused here, per VRID and counter name (`wire::vrrp::VrrpRejection::COUNTERS`).
    pub rejected: BTreeMap<(u8, &'static str), u64>,
}

/// A classic BPF program: accept a frame whose byte at `offset` is 112 (the IP protocol / next
/// header of an untagged IPv4 / IPv6 frame), drop everything else.
fn proto_filter(offset: u32) -> [libc::sock_filter; 4] {
    const LDB_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    [
        libc::sock_filter {
            code: LDB_ABS,
            jt: 0,
            jf: 0,
            k: offset,
        },
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: 112,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 0xffff,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ]
}

fn attach_filter(fd: &OwnedFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: fprog points at `prog`, valid for the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An AF_PACKET socket on `ifindex` for `ethertype` frames of IP protocol 112, filtered before bind
/// so nothing unfiltered is ever queued, not seeing our own outgoing frames.
fn packet_socket(ifindex: u32, ethertype: u16, proto_offset: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) with protocol 0 (receives nothing until bound); owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    attach_filter(&fd, &proto_filter(proto_offset))?;
    let one: libc::c_int = 1;
    // PACKET_IGNORE_OUTGOING (Linux 4.20): our own adverts are not read back.
    // SAFETY: an int option of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            23,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ethertype.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: a valid sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A raw IPv4 protocol-112 socket that drops everything it is given (see the module doc).
fn icmp_guard(carpdev: &str, domain: Domain) -> io::Result<OwnedFd> {
    let s = Socket::new(
        domain,
        Type::RAW,
        Some(Protocol::from(i32::from(carp_common::proto::IPPROTO_CARP))),
    )?;
    s.bind_device(Some(carpdev.as_bytes()))?;
    let fd: OwnedFd = s.into();
    let drop_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    attach_filter(&fd, &drop_all)?;
    Ok(fd)
}

/// A raw IPv6 socket for VRRP to unicast peers: protocol 112, bound to the carpdev and to its
/// link-local `src` (RFC 9568 §5.1.2.1: the source is the link-local address), hop limit 255 and
/// traffic class 0xc0 (network control) as on the multicast adverts.
fn unicast_socket_v6(carpdev: &str, src: Ipv6Addr, ifindex: u32) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV6,
        Type::RAW,
        Some(Protocol::from(i32::from(carp_common::proto::IPPROTO_CARP))),
    )?;
    s.bind_device(Some(carpdev.as_bytes()))?;
    s.set_unicast_hops_v6(255)?;
    s.set_tclass_v6(0xc0)?;
    s.bind(&SocketAddr::V6(std::net::SocketAddrV6::new(src, 0, 0, ifindex)).into())?;
    // A send socket only: never let adverts queue up on it.
    s.attach_filter(&[socket2::SockFilter::new(
        (libc::BPF_RET | libc::BPF_K) as u16,
        0,
        0,
        0,
    )])?;
    Ok(s)
}

/// Registers a socket this module owns with the runtime for readability.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: fd is an open socket owned by the AsyncFd for its whole life; nothing else closes it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))
}

impl VrrpRx {
    fn open(dev: usize, carpdev: &str, ifindex: u32) -> io::Result<VrrpRx> {
        let mut socks = vec![register(packet_socket(
            ifindex,
            carp_common::proto::ETH_P_IP,
            14 + 9,
        )?)?];
        // IPv6 may be off on the carpdev; IPv4 VRRP still works.
        match packet_socket(ifindex, carp_common::proto::ETH_P_IPV6, 14 + 6) {
            Ok(fd) => socks.push(register(fd)?),
            Err(e) => tracing::debug!(carpdev, "no IPv6 VRRP socket: {e}"),
        }
        let mut guards = Vec::new();
        match icmp_guard(carpdev, Domain::IPV4) {
            Ok(g) => guards.push(g),
            Err(e) => tracing::warn!(carpdev, "no protocol-112 listener for unicast VRRP: {e}"),
        }
        // Without it the kernel answers IPv6 unicast adverts with ICMPv6 parameter problems.
        match icmp_guard(carpdev, Domain::IPV6) {
            Ok(g) => guards.push(g),
            Err(e) => tracing::debug!(carpdev, "no IPv6 protocol-112 listener: {e}"),
        }
        Ok(VrrpRx {
            dev,
            socks,
            _icmp_guards: guards,
            raw_tx: None,
            raw_tx6: None,
            rejected: BTreeMap::new(),
        })
    }

    /// Reads the frames waiting on every socket, at most `RX_BUDGET` from each.
    fn read(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        for s in &self.socks {
            for _ in 0..RX_BUDGET {
                // SAFETY: buf is valid for its length.
                let n = unsafe {
                    libc::recv(
                        s.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    break;
                }
                out.push(buf[..n as usize].to_vec());
            }
        }
        out
    }
}

/// Waits until one of the VRRP receive sockets is readable; returns the index of its `VrrpRx`.
pub(super) async fn rx_ready(rxs: &[VrrpRx]) -> usize {
    let futs: Vec<_> = rxs
        .iter()
        .enumerate()
        .flat_map(|(k, r)| r.socks.iter().map(move |s| (k, s)))
        .map(|(k, s)| {
            Box::pin(async move {
                if let Ok(mut g) = s.readable().await {
                    g.clear_ready();
                }
                k
            })
        })
        .collect();
    if futs.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(futs).await.0
}

/// The engine's VRRP settings for an interface, if it is a VRRP one.
pub(super) fn election(cfg: &InterfaceConfig) -> Option<VrrpElection> {
    cfg.vrrp.as_ref().map(|v| VrrpElection {
        version: v.version,
        priority: v.priority,
        interval_cs: v.interval_cs,
        preempt: v.preempt,
    })
}

/// True if the interface's virtual router is an IPv6 one.
fn is_v6(cfg: &InterfaceConfig) -> bool {
    cfg.addresses.first().is_some_and(|a| a.addr.is_ipv6())
}

/// The virtual MAC of a VRRP interface (RFC 9568 §7.3), None for CARP.
pub(super) fn vmac(cfg: &InterfaceConfig) -> Option<[u8; 6]> {
    cfg.vrrp.as_ref()?;
    Some(if is_v6(cfg) {
        vrrp_mac_v6(cfg.vhid)
    } else {
        vrrp_mac_v4(cfg.vhid)
    })
}

/// The VRRP flag of the interface's `carp_vhids` mode byte (0 for CARP).
pub(super) fn mode_flag(cfg: &InterfaceConfig) -> u8 {
    let Some(v) = cfg.vrrp.as_ref() else {
        return 0;
    };
    let version = match v.version {
        VrrpVersion::V3 => VHID_MODE_VRRP3,
        VrrpVersion::V2 => VHID_MODE_VRRP2,
    };
    // RFC 9568 §6.4.3: only the address owner (255) or a router in Accept_Mode takes packets to them.
    let accept = v.accept_mode || v.priority == 255;
    let unicast = if v.unicast_peers.is_empty() {
        0
    } else {
        VHID_MODE_UNICAST_PEERS
    };
    version | unicast | if accept { 0 } else { VHID_MODE_NO_ACCEPT }
}

/// True if `facts` is an advert to this host's unicast address from one of the unicast peers
/// configured for `vrid` on carpdev `dev`.
fn from_unicast_peer(
    ifs: &[super::carpif::CarpIf],
    dev: usize,
    facts: &crate::wire::ip::IpFacts,
    vrid: Option<u8>,
) -> bool {
    let multicast = match facts.dst {
        IpAddr::V4(a) => a.is_multicast(),
        IpAddr::V6(a) => a.is_multicast(),
    };
    !multicast
        && vrid.is_some_and(|vrid| {
            ifs.iter().any(|c| {
                c.dev == dev
                    && c.vhid == vrid
                    && c.cfg
                        .vrrp
                        .as_ref()
                        .is_some_and(|v| v.unicast_peers.contains(&facts.src))
            })
        })
}

/// How long the dataplane keeps a VRRP MASTER without a renewal: three intervals plus 10 ms.
pub(super) fn lease_len(v: &VrrpElection) -> std::time::Duration {
    3 * v.advert_interval() + std::time::Duration::from_millis(10)
}

impl Daemon {
    /// Opens the VRRP receive sockets of carpdev `dev` unless it has them.
    pub(super) fn ensure_vrrp_rx(&mut self, dev: usize) -> Result<()> {
        if self.vrrp_rx.iter().any(|r| r.dev == dev) {
            return Ok(());
        }
        let d = &self.devs[dev];
        let rx = VrrpRx::open(dev, &d.name, d.ifindex)
            .with_context(|| format!("{}: VRRP receive sockets", d.name))?;
        self.vrrp_rx.push(rx);
        Ok(())
    }

    /// Reads and judges the VRRP adverts waiting on receive socket set `k`, feeding good ones.
    pub(super) async fn on_vrrp_rx(&mut self, k: usize) {
        let frames = self.vrrp_rx[k].read();
        if !self.config.carp.allow {
            return;
        }
        let d = self.vrrp_rx[k].dev;
        for frame in frames {
            let Ok(eth) = parse_ethernet(&frame) else {
                continue;
            };
            let ifs = &self.ifs;
            let mut target = None;
            let mut facts = eth.ip.facts;
            if facts.ttl != carp_common::proto::CARP_TTL
                && from_unicast_peer(ifs, d, &facts, eth.ip.payload.get(1).copied())
            {
                // keepalived's unicast adverts (IPv6: the default hop limit) from a configured peer:
                // accepted at any TTL as keepalived accepts them; everyone else still needs 255.
                facts.ttl = carp_common::proto::CARP_TTL;
            }
            let checked = check_vrrp(&facts, eth.ip.payload, |vrid| {
                let i = ifs
                    .iter()
                    .position(|c| c.dev == d && c.vhid == vrid && c.cfg.vrrp.is_some())?;
                target = Some(i);
                let v = ifs[i].cfg.vrrp.as_ref()?;
                Some(VridConfig {
                    version: v.version,
                    priority: v.priority,
                    v2_interval: (v.interval_cs / 100) as u8,
                    v2_auth: v.auth,
                })
            });
            let advert = match checked {
                Ok(a) => a,
                Err(e) => {
                    let vrid = eth.ip.payload.get(1).copied().unwrap_or(0);
                    *self.vrrp_rx[k]
                        .rejected
                        .entry((vrid, e.counter()))
                        .or_default() += 1;
                    tracing::debug!(
                        "{}: VRRP advert from {} refused: {e}",
                        self.devs[d].name,
                        eth.ip.facts.src
                    );
                    continue;
                }
            };
            let Some(i) = target else { continue };
            if let Some(v) = &self.ifs[i].cfg.vrrp
                && advert.checksum_form.is_some_and(|f| f != v.checksum)
            {
                tracing::debug!(
                    "{} vrid {}: {} sends the other VRRPv3 checksum form ({:?}); accepted",
                    self.ifs[i].cfg.name,
                    advert.vrid,
                    eth.ip.facts.src,
                    advert.checksum_form
                );
            }
            let carpdev = self.devs[d].name.clone();
            self.feed(HostEvent::VrrpAdvert {
                carpdev,
                advert: VrrpAdvertIn {
                    src: eth.ip.facts.src,
                    vrid: advert.vrid,
                    priority: advert.priority,
                    interval_cs: advert.interval_cs,
                },
            })
            .await;
        }
    }

    /// `Action::SendVrrp` for node `i`: renews the MASTER lease (unless stopping) and sends.
    pub(super) fn carry_out_vrrp(&mut self, i: usize, priority: u8, interval_cs: u16) {
        let name = self.ifs[i].cfg.name.clone();
        if let Some(s) = &self.standby {
            // The standby senders repeat CARP adverts only.
            s.clear(self.ifs[i].id);
        }
        let master = self.ifs[i].state == State::Master;
        let sent = self.send_vrrp(i, priority, interval_cs, master && priority != 0);
        if master && let Some(v) = election(&self.ifs[i].cfg) {
            // A stopping master sends no more adverts but keeps serving until the new master is
            // heard (and a grace after): its lease must cover that linger, which ends in INIT
            // (written to the map then) at the latest after SHUTDOWN_LINGER. Queued adverts cover
            // a frozen carpd up to the last one's departure: the lease runs from there.
            let now = self.now().as_nanos();
            let from = match &sent {
                Ok(Some(last)) => (*last).max(now),
                _ => now,
            };
            let len = if priority == 0 {
                super::SHUTDOWN_LINGER + std::time::Duration::from_millis(10)
            } else {
                lease_len(&v)
            };
            let until = from + len.as_nanos() as u64;
            let c = &self.ifs[i];
            let entry = nodes::node_entry(&c.cfg, c.node, VhidState::Master).with_lease(until);
            if let Err(e) = self.devs[c.dev].maps.set_vhid(c.vhid, entry) {
                tracing::error!("{name}: renewing the MASTER lease failed: {e}");
            }
        }
        match sent {
            Ok(_) => self.ifs[i].opackets += 1,
            Err(e) => tracing::warn!("{name}: sending a VRRP advert failed: {e:#}"),
        }
    }

    /// Sends node `i`'s VRRP advert. A MASTER's regular multicast adverts (`queue`) go through the
    /// carpdev's kernel advert queue when it has one, any other through the queue's direct path
    /// after withdrawing what is queued (a priority-0 advert must be the last one out). Returns the
    /// earliest time the last queued advert can leave, when queued.
    fn send_vrrp(
        &mut self,
        i: usize,
        priority: u8,
        interval_cs: u16,
        queue: bool,
    ) -> Result<Option<u64>> {
        let c = &self.ifs[i];
        let v = c.cfg.vrrp.clone().context("not a VRRP interface")?;
        let dev = &self.devs[c.dev];
        let addrs = self.own_addrs.of(&dev.name);
        let v6 = is_v6(&c.cfg);
        let src: IpAddr = if v6 {
            addrs
                .iter()
                .find(|a| matches!(a, IpAddr::V6(x) if x.is_unicast_link_local()))
                .copied()
                .with_context(|| format!("{} has no IPv6 link-local address", dev.name))?
        } else {
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .copied()
                .with_context(|| format!("{} has no IPv4 address", dev.name))?
        };
        // RFC 9568 §5.2.9: for IPv6 the link-local address comes first.
        let mut vips = c.cfg.vips();
        vips.sort_by_key(|a| !matches!(a, IpAddr::V6(x) if x.is_unicast_link_local()));
        let message = |dst: IpAddr| match v.version {
            VrrpVersion::V3 => Vrrp3Repr {
                vrid: c.vhid,
                priority,
                max_adver_int: interval_cs,
                addresses: vips.clone(),
            }
            .to_bytes(src, dst, v.checksum),
            VrrpVersion::V2 => Vrrp2Repr {
                vrid: c.vhid,
                priority,
                adver_int: (interval_cs / 100).max(1) as u8,
                auth: v.auth,
                addresses: vips
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(x) => Some(*x),
                        IpAddr::V6(_) => None,
                    })
                    .collect(),
            }
            .to_bytes(),
        };
        if v.unicast_peers.is_empty() {
            let (dst, dst_mac) = if v6 {
                (IpAddr::V6(Ipv6Addr::from(CARP_GROUP_V6)), CARP_GROUP_MAC_V6)
            } else {
                (IpAddr::V4(Ipv4Addr::from(CARP_GROUP_V4)), CARP_GROUP_MAC_V4)
            };
            // A fixed identification per VRID keeps a MASTER's adverts byte for byte the same, so
            // the kernel queue repeats them; VRRP packets are never fragmented.
            let ip = emit_vrrp_ip(&message(dst), src, dst, 0xc000 | u16::from(c.vhid));
            let frame = emit_vrrp_frame(&ip, c.vmac, dst_mac);
            let interval = std::time::Duration::from_millis(u64::from(interval_cs.max(1)) * 10);
            let (vhid, d) = (c.vhid, c.dev);
            let now = self.now().as_nanos();
            let dev = &mut self.devs[d];
            return match dev.advq.as_mut() {
                Some(q) if queue => Ok(Some(q.advertise(
                    vhid,
                    std::slice::from_ref(&frame),
                    interval,
                    now,
                )?)),
                Some(q) => {
                    q.withdraw(vhid, now)?;
                    q.send_now(std::slice::from_ref(&frame))?;
                    Ok(None)
                }
                None => {
                    dev.netio.send_frame(&frame)?;
                    Ok(None)
                }
            };
        }
        let k = self
            .vrrp_rx
            .iter()
            .position(|r| r.dev == c.dev)
            .context("no VRRP sockets on the carpdev")?;
        if let IpAddr::V6(src6) = src {
            let ifindex = dev.ifindex;
            let rx = &mut self.vrrp_rx[k];
            // A new link-local (the carpdev was re-created) needs a socket bound to it.
            if rx.raw_tx6.as_ref().is_none_or(|(a, _)| *a != src6) {
                rx.raw_tx6 = Some((src6, unicast_socket_v6(&dev.name, src6, ifindex)?));
            }
            let (_, sock) = rx.raw_tx6.as_ref().context("opened above")?;
            for peer in &v.unicast_peers {
                let IpAddr::V6(p6) = peer else {
                    anyhow::bail!("unicast peer {peer} is not IPv6 like the addresses");
                };
                // Only the VRRP message: the kernel writes the IPv6 header (hop limit and traffic
                // class set on the socket); the checksum is ours, over this source and peer.
                let scope = if p6.is_unicast_link_local() {
                    ifindex
                } else {
                    0
                };
                sock.send_to(
                    &message(*peer),
                    &SocketAddr::V6(std::net::SocketAddrV6::new(*p6, 0, 0, scope)).into(),
                )?;
            }
            return Ok(None);
        }
        if self.vrrp_rx[k].raw_tx.is_none() {
            let s = Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(i32::from(carp_common::proto::IPPROTO_CARP))),
            )?;
            s.set_header_included_v4(true)?;
            s.bind_device(Some(dev.name.as_bytes()))?;
            self.vrrp_rx[k].raw_tx = Some(s);
        }
        let sock = self.vrrp_rx[k].raw_tx.as_ref().context("opened above")?;
        for peer in &v.unicast_peers {
            let IpAddr::V4(p4) = peer else {
                anyhow::bail!("unicast peer {peer} is not IPv4 like the addresses");
            };
            let ip = emit_vrrp_ip(&message(*peer), src, *peer, rand::random());
            sock.send_to(&ip, &SocketAddr::V4(SocketAddrV4::new(*p4, 0)).into())?;
        }
        Ok(None)
    }
}
