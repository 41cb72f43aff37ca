//! carpnodes load balancing (spec §6) on the controller's side: the reference implementation of the
//! bucket hashes the XDP program applies (so tools, tests and operators can say which node owns a
//! flow or a requester), and the builder and checks of the `carp_balance` value the controller writes.
//!
//! The hashes, exactly as carp-ebpf's `balance` module applies them:
//! - IP modes: `ntohl(fold) % N`, fold = src ^ dst for IPv4 and the XOR of all eight 32-bit words of
//!   source and destination for IPv6 (OpenBSD's carp_lsdrop); symmetric in (src, dst).
//! - IPv4 ICMP errors to a VIP: the same hash on (inner destination, outer destination).
//! - `arp` mode (ours; OpenBSD dropped the mode): the requester's IPv4 sender address,
//!   `ntohl(spa) % N`. Host-independent, computable by hand, even over a subnet of clients; the
//!   carp-ebpf module doc says why it replaces OpenBSD's endian-dependent keyed MAC hash.
use carp_common::{
    maps::{BalanceGroup, BalanceMode, MAX_CARPNODES},
    proto::virtual_mac,
};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a balancing group cannot be handed to the XDP program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// The mode is not one of ip, ip-stealth, ip-unicast, arp.
    #[error("mode {0} is not a balancing mode (ip, ip-stealth, ip-unicast or arp)")]
    Mode(u8),
    /// N is outside 1..=32.
    #[error("{0} carpnodes: a carp interface has 1 to 32")]
    Nodes(usize),
    /// The vhids are not distinct, ascending and non-zero.
    #[error("carpnode vhids must be distinct and 1..=255, got {0:?}")]
    Vhids(Vec<u8>),
    /// The local mask names a carpnode that does not exist.
    #[error("local mask {mask:#x} has bits beyond the {nodes} carpnodes")]
    Mask {
        /// The mask.
        mask: u32,
        /// N.
        nodes: u8,
    },
    /// `ip` and `ip-stealth` send replies from the carpdev's own MAC, which was left zero.
    #[error(
        "ip and ip-stealth need the carpdev's own MAC as the reply source, got 00:00:00:00:00:00"
    )]
    SrcMac,
    /// The interface MAC does not follow from the mode and the leader vhid.
    #[error("interface MAC {0:02x?} does not match the mode and leader vhid")]
    Mac([u8; 6]),
}

/// XOR of the four 32-bit words of an IPv6 address, in host order.
fn fold6(a: Ipv6Addr) -> u32 {
    a.octets().chunks_exact(4).fold(0, |acc, w| {
        acc ^ u32::from_be_bytes([w[0], w[1], w[2], w[3]])
    })
}

/// The bucket (carpnode index, ascending vhid order) of an IPv4 packet. Panics if `n` is 0.
pub fn bucket_v4(src: Ipv4Addr, dst: Ipv4Addr, n: u8) -> u8 {
    // ntohl(a ^ b) == ntohl(a) ^ ntohl(b): folding host-order values is the same hash.
    ((src.to_bits() ^ dst.to_bits()) % n as u32) as u8
}

/// The bucket of an IPv6 packet. Panics if `n` is 0.
pub fn bucket_v6(src: Ipv6Addr, dst: Ipv6Addr, n: u8) -> u8 {
    ((fold6(src) ^ fold6(dst)) % n as u32) as u8
}

/// The bucket of an IPv4 ICMP error (types 3, 4, 5, 11, 12) sent to a VIP, re-filtered on the quoted
/// packet's destination and the error's destination. Panics if `n` is 0.
pub fn bucket_icmp_error_v4(inner_dst: Ipv4Addr, outer_dst: Ipv4Addr, n: u8) -> u8 {
    bucket_v4(inner_dst, outer_dst, n)
}

/// In `arp` mode, the carpnode index that answers an ARP request from `spa`. Panics if `n` is 0.
pub fn arp_node(spa: Ipv4Addr, n: u8) -> u8 {
    (spa.to_bits() % n as u32) as u8
}

/// True when this host takes bucket `bucket` under `local_mask`.
pub fn accepts(local_mask: u32, bucket: u8) -> bool {
    bucket < 32 && (local_mask >> bucket) & 1 == 1
}

/// The interface MAC of a group: 01:00:5e:00:01:<leader> in `ip` mode, 00:00:5e:00:01:<leader> otherwise.
pub fn interface_mac(mode: BalanceMode, leader: u8) -> [u8; 6] {
    let mut mac = virtual_mac(leader);
    if mode == BalanceMode::Ip {
        mac[0] = 0x01;
    }
    mac
}

/// A `BalanceMode` from its map byte.
pub fn mode_from_u8(mode: u8) -> Option<BalanceMode> {
    Some(match mode {
        0 => BalanceMode::None,
        1 => BalanceMode::Ip,
        2 => BalanceMode::IpStealth,
        3 => BalanceMode::IpUnicast,
        4 => BalanceMode::Arp,
        _ => return None,
    })
}

/// The local mask of carpnodes given as (vhid, MASTER here), in any order: bit i for the i-th
/// carpnode by ascending vhid.
pub fn local_mask(nodes: &[(u8, bool)]) -> u32 {
    let mut sorted: Vec<(u8, bool)> = nodes.to_vec();
    sorted.sort_unstable();
    sorted
        .iter()
        .take(MAX_CARPNODES)
        .enumerate()
        .filter(|(_, (_, master))| *master)
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// Builds the `carp_balance` value of one carp interface from its carpnodes as (vhid, MASTER here),
/// in any order, and the carpdev's own MAC (the Ethernet source of replies in `ip`/`ip-stealth`).
pub fn group(
    mode: BalanceMode,
    nodes: &[(u8, bool)],
    src_mac: [u8; 6],
) -> Result<BalanceGroup, BalanceError> {
    if !(1..=MAX_CARPNODES).contains(&nodes.len()) {
        return Err(BalanceError::Nodes(nodes.len()));
    }
    let mut vhids: Vec<u8> = nodes.iter().map(|(v, _)| *v).collect();
    vhids.sort_unstable();
    let mut slots = [0u8; MAX_CARPNODES];
    slots[..vhids.len()].copy_from_slice(&vhids);
    let g = BalanceGroup {
        mode: mode as u8,
        nodes: nodes.len() as u8,
        pad: [0; 2],
        local_mask: local_mask(nodes),
        lease_until_ns: 0,
        mac: interface_mac(mode, vhids[0]),
        src_mac,
        vhids: slots,
        pad2: [0; 4],
    };
    check_group(&g)?;
    Ok(g)
}

/// The value of an unused `carp_balance` slot.
pub fn unused_group() -> BalanceGroup {
    BalanceGroup {
        mode: BalanceMode::None as u8,
        nodes: 0,
        pad: [0; 2],
        local_mask: 0,
        lease_until_ns: 0,
        mac: [0; 6],
        src_mac: [0; 6],
        vhids: [0; MAX_CARPNODES],
        pad2: [0; 4],
    }
}

/// Checks what the XDP program assumes of a group: a balancing mode, 1..=32 distinct ascending
/// non-zero vhids, no mask bit beyond N, the interface MAC of the mode and leader, and a reply
/// source MAC in `ip` and `ip-stealth`.
pub fn check_group(g: &BalanceGroup) -> Result<(), BalanceError> {
    let mode = match mode_from_u8(g.mode) {
        Some(BalanceMode::None) | None => return Err(BalanceError::Mode(g.mode)),
        Some(m) => m,
    };
    let n = g.nodes as usize;
    if !(1..=MAX_CARPNODES).contains(&n) {
        return Err(BalanceError::Nodes(n));
    }
    let used = &g.vhids[..n];
    if used[0] == 0 || used.windows(2).any(|w| w[0] >= w[1]) {
        return Err(BalanceError::Vhids(used.to_vec()));
    }
    if n < 32 && g.local_mask >> n != 0 {
        return Err(BalanceError::Mask {
            mask: g.local_mask,
            nodes: g.nodes,
        });
    }
    if g.mac != interface_mac(mode, used[0]) {
        return Err(BalanceError::Mac(g.mac));
    }
    if matches!(mode, BalanceMode::Ip | BalanceMode::IpStealth) && g.src_mac == [0; 6] {
        return Err(BalanceError::SrcMac);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vectors() {
        // 10.0.0.1 ^ 10.0.0.100 = 0x00000065 = 101.
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(bucket_v4(a, b, 2), 1);
        assert_eq!(bucket_v4(a, b, 5), 1);
        assert_eq!(bucket_v4(a, b, 32), 101 % 32);
        // 2001:db8::1 ^ 2001:db8::2: the prefixes cancel, leaving 3.
        let (c, d) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        assert_eq!(bucket_v6(c, d, 2), 1);
        assert_eq!(bucket_v6(c, d, 3), 0);
        // 10.0.0.57 = 0x0a000039 = 167772217 = 3 * 55924072 + 1.
        assert_eq!(arp_node(Ipv4Addr::new(10, 0, 0, 57), 3), 1);
        assert_eq!(interface_mac(BalanceMode::Ip, 7), [1, 0, 0x5e, 0, 1, 7]);
        assert_eq!(
            interface_mac(BalanceMode::IpStealth, 7),
            [0, 0, 0x5e, 0, 1, 7]
        );
    }

    #[test]
    fn group_sorts_nodes_and_builds_the_mask() {
        let g = group(
            BalanceMode::Ip,
            &[(5, true), (2, false), (9, true)],
            [2, 0, 0, 0, 0, 1],
        )
        .unwrap();
        assert_eq!(&g.vhids[..3], &[2, 5, 9]);
        assert_eq!((g.nodes, g.local_mask), (3, 0b110));
        assert_eq!(g.mac, [1, 0, 0x5e, 0, 1, 2]);
        assert_eq!(
            group(BalanceMode::Ip, &[], [0; 6]),
            Err(BalanceError::Nodes(0))
        );
        assert!(matches!(
            group(BalanceMode::Ip, &[(3, true), (3, false)], [0; 6]),
            Err(BalanceError::Vhids(_))
        ));
        assert_eq!(
            group(BalanceMode::None, &[(3, true)], [0; 6]),
            Err(BalanceError::Mode(0))
        );
        assert_eq!(
            group(BalanceMode::IpStealth, &[(3, true)], [0; 6]),
            Err(BalanceError::SrcMac)
        );
        assert!(group(BalanceMode::IpUnicast, &[(3, true)], [0; 6]).is_ok());
        let mut bad = g;
        bad.local_mask = 0b1000;
        assert!(matches!(check_group(&bad), Err(BalanceError::Mask { .. })));
    }

    proptest! {
        #[test]
        fn v4_is_symmetric_and_in_range(a: u32, b: u32, n in 1u8..=32) {
            let (a, b) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
            let h = bucket_v4(a, b, n);
            prop_assert!(h < n);
            prop_assert_eq!(h, bucket_v4(b, a, n));
        }

        #[test]
        fn v6_is_symmetric_and_in_range(a: u128, b: u128, n in 1u8..=32) {
            let (a, b) = (Ipv6Addr::from(a), Ipv6Addr::from(b));
            let h = bucket_v6(a, b, n);
            prop_assert!(h < n);
            prop_assert_eq!(h, bucket_v6(b, a, n));
        }

        /// An error about a flow the VIP opened lands on the flow's own bucket.
        #[test]
        fn icmp_error_lands_on_the_flows_bucket(vip: u32, peer: u32, router: u32, n in 1u8..=32) {
            let (vip, peer, _router) = (Ipv4Addr::from(vip), Ipv4Addr::from(peer), Ipv4Addr::from(router));
            prop_assert_eq!(bucket_icmp_error_v4(peer, vip, n), bucket_v4(vip, peer, n));
        }

        #[test]
        fn arp_node_in_range(spa: u32, n in 1u8..=32) {
            prop_assert!(arp_node(Ipv4Addr::from(spa), n) < n);
        }

        /// With complementary masks on two hosts, exactly one of them takes each bucket.
        #[test]
        fn complementary_masks_partition(mask: u32, n in 1u8..=32, a: u32, b: u32) {
            let full = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
            let h = bucket_v4(Ipv4Addr::from(a), Ipv4Addr::from(b), n);
            prop_assert!(accepts(mask & full, h) != accepts(!mask & full, h));
        }
    }
}
