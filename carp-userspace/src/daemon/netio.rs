//! Frames carpd puts on the wire, and the multicast membership of a carpdev.
//!
//! This module owns the sockets of one carpdev: an AF_PACKET socket that sends adverts to the CARP group
//! with the virtual MAC 00:00:5e:00:01:<vhid> as Ethernet source (BSD behaviour, spec §1), gratuitous ARP
//! requests and unsolicited neighbour advertisements (spec §5); a raw IPv4 socket for the unicast
//! `peer` mode, where the kernel resolves the peer's MAC and the frame carries the carpdev's own MAC
//! (FreeBSD does the same); and a UDP socket that only holds the IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP of
//! 224.0.0.18 / ff02::12 so a real NIC's multicast filter lets adverts in (veth and bridges need none).
//! The AF_PACKET socket has protocol 0, so it never receives anything: adverts come in through XDP.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
};

use carp_common::proto::{CARP_GROUP_V4, CARP_GROUP_V6, ETH_P_ARP, ETH_P_IPV6, IPPROTO_CARP};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use crate::wire::{
    AdvertRepr,
    ip::{Encap, emit_frame},
};

/// The sockets of one carpdev.
pub struct NetIo {
    /// The carpdev's name.
    pub carpdev: String,
    /// The carpdev's interface index.
    pub ifindex: u32,
    // Shared with the standby advert senders (`standby`).
    packet: Arc<OwnedFd>,
    raw_v4: Option<Socket>,
    // Held only for its group memberships.
    _membership_v4: Option<Socket>,
    _membership_v6: Option<Socket>,
}

impl NetIo {
    /// Opens the sockets of `carpdev` and joins the CARP groups on it.
    pub fn open(carpdev: &str, ifindex: u32) -> io::Result<NetIo> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let packet = unsafe { OwnedFd::from_raw_fd(fd) };
        let membership_v4 = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .and_then(|s| {
                s.bind_device(Some(carpdev.as_bytes()))?;
                s.join_multicast_v4_n(
                    &Ipv4Addr::from(CARP_GROUP_V4),
                    &InterfaceIndexOrAddress::Index(ifindex),
                )?;
                Ok(s)
            })
            .map_err(|e| tracing::warn!(carpdev, "cannot join 224.0.0.18: {e}"))
            .ok();
        let membership_v6 = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
            .and_then(|s| {
                s.join_multicast_v6(&Ipv6Addr::from(CARP_GROUP_V6), ifindex)?;
                Ok(s)
            })
            // IPv6 may be disabled on the carpdev; IPv4 CARP still works.
            .map_err(|e| tracing::debug!(carpdev, "cannot join ff02::12: {e}"))
            .ok();
        Ok(NetIo {
            carpdev: carpdev.into(),
            ifindex,
            packet: Arc::new(packet),
            raw_v4: None,
            _membership_v4: membership_v4,
            _membership_v6: membership_v6,
        })
    }

    /// Sends one Ethernet frame out of the carpdev.
    pub fn send_frame(&self, frame: &[u8]) -> io::Result<()> {
        send_frame_on(&self.packet, self.ifindex, frame)
    }

    /// The AF_PACKET socket that sends the adverts.
    pub fn packet_socket(&self) -> &Arc<OwnedFd> {
        &self.packet
    }

    /// Sends an advert to the CARP group of `encap`'s family, from the virtual MAC; returns the
    /// frame sent.
    pub fn send_group_advert(
        &self,
        repr: &AdvertRepr,
        encap: &Encap,
        vmac: [u8; 6],
    ) -> io::Result<Vec<u8>> {
        let frame = emit_frame(repr, encap, vmac, encap.group_mac());
        self.send_frame(&frame)?;
        Ok(frame)
    }

    /// Sends an IPv4 advert to a unicast peer through the kernel's routing and ARP (carppeer).
    pub fn send_peer_advert(
        &mut self,
        repr: &AdvertRepr,
        src: Ipv4Addr,
        peer: Ipv4Addr,
    ) -> io::Result<()> {
        if self.raw_v4.is_none() {
            let s = Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(IPPROTO_CARP as i32)),
            )?;
            s.set_header_included_v4(true)?;
            s.bind_device(Some(self.carpdev.as_bytes()))?;
            self.raw_v4 = Some(s);
        }
        let ip = Encap::V4 {
            src,
            dst: peer,
            ident: rand::random(),
        }
        .emit_ip(repr);
        let sock = self.raw_v4.as_ref().expect("opened above");
        sock.send_to(&ip, &SocketAddr::V4(SocketAddrV4::new(peer, 0)).into())?;
        Ok(())
    }

    /// Sends a gratuitous ARP request for `vip` from `vmac` (sender = target = VIP, broadcast).
    pub fn send_gratuitous_arp(&self, vip: Ipv4Addr, vmac: [u8; 6]) -> io::Result<()> {
        self.send_frame(&gratuitous_arp(vip, vmac))
    }

    /// Sends an unsolicited neighbour advertisement (Override) for `vip` from `vmac` to ff02::1.
    pub fn send_unsolicited_na(&self, vip: Ipv6Addr, vmac: [u8; 6]) -> io::Result<()> {
        self.send_frame(&unsolicited_na(vip, vmac))
    }
}

/// Sends one Ethernet frame on `ifindex` through the AF_PACKET socket `fd` (to the frame's
/// destination MAC).
pub fn send_frame_on(fd: &OwnedFd, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: frame and sll are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A gratuitous ARP request frame: broadcast, sender hardware = `mac`, sender IP = target IP = `ip`.
pub fn gratuitous_arp(ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// An unsolicited NA frame to all-nodes: source = target = `ip`, Override set, target link-layer option.
pub fn unsolicited_na(ip: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]); // type NA, code 0, checksum later
    icmp.extend_from_slice(&[0x20, 0, 0, 0]); // Override
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[2, 1]); // target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let mut pseudo = Vec::with_capacity(40 + icmp.len());
    pseudo.extend_from_slice(&ip.octets());
    pseudo.extend_from_slice(&all_nodes.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let sum = crate::wire::checksum(&pseudo);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

/// Every address on every interface, as (interface name, address), in the kernel's order
/// (getifaddrs). It takes the kernel's RTNL lock: call it only off the runtime loop (`OwnAddrs`).
pub fn all_interface_addrs() -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() {
                continue;
            }
            let addr = match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            };
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            out.push((name, addr));
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_layout() {
        let f = gratuitous_arp(Ipv4Addr::new(10, 0, 0, 1), [0, 0, 0x5e, 0, 1, 1]);
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &[0, 0, 0x5e, 0, 1, 1]);
        assert_eq!(&f[28..32], &[10, 0, 0, 1]);
        assert_eq!(&f[38..42], &[10, 0, 0, 1]);
    }

    #[test]
    fn unsolicited_na_checksum_verifies() {
        let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let f = unsolicited_na(ip, [0, 0, 0x5e, 0, 1, 1]);
        let icmp = &f[54..];
        assert_eq!(icmp.len(), 32);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[22..38]);
        pseudo.extend_from_slice(&f[38..54]);
        pseudo.extend_from_slice(&32u32.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(icmp);
        assert_eq!(crate::wire::checksum(&pseudo), 0);
        assert_eq!(icmp[4], 0x20);
    }
}
