//! ARP and IPv6 neighbour-solicitation responder for virtual addresses (spec §5). As MASTER the reply is
//! built in place and sent back with XDP_TX from the virtual MAC; otherwise the request is dropped so
//! Linux never answers for a VIP with the NIC's own MAC.
//!
//! Balancing (spec §6, decisions in `balance`): a VIP of a balanced carp interface maps to the group's
//! leader vhid. In the IP modes the leader's master answers with the interface MAC as hardware address
//! (Ethernet source per `balance::reply_macs`); in `arp` mode the owner of the requester answers with
//! its own node MAC, and every other host stays silent.
use crate::{
    arp::{ARPOP_REQUEST, ArpEthIpv4},
    balance::{self, v4_key},
    eth::{self, L2},
    ipv6::{IPPROTO_ICMPV6, Ipv6Hdr, LlaOption, ND_NEIGHBOR_ADVERT, NdMsg},
    maps::{count, is_master, vhid_entry, vip_vhid},
    packet::{be16, csum_add, csum_fold, csum_frame, ptr_at},
};
use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use carp_common::{
    maps::{BalanceMode, VhidState, VipKey},
    proto::virtual_mac,
};

/// Handles an ARP frame: answers or drops requests for a VIP, passes everything else.
#[inline(never)]
pub fn arp(ctx: &XdpContext, l2: L2) -> u32 {
    let Ok(arp) = ptr_at::<ArpEthIpv4>(ctx, l2.l3) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: ptr_at checked the bounds; the struct is all bytes.
    let arp = unsafe { &mut *arp };
    if be16(arp.op) != ARPOP_REQUEST
        || be16(arp.htype) != ARPHRD_ETHER
        || arp.hlen != 6
        || arp.plen != 4
        || be16(arp.ptype) != 0x0800
    {
        return xdp_action::XDP_PASS;
    }
    // A gratuitous request announces the sender's own binding: nothing to answer.
    if arp.spa == arp.tpa {
        return xdp_action::XDP_PASS;
    }
    let key = v4_key(arp.tpa);
    let Some(vhid) = vip_vhid(&key) else {
        return xdp_action::XDP_PASS;
    };
    let Some(entry) = vhid_entry(vhid) else {
        return xdp_action::XDP_PASS;
    };
    if entry.state == VhidState::Unconfigured as u8 {
        return xdp_action::XDP_PASS;
    }
    // (hardware address, Ethernet source, the vhid the reply is counted on)
    let (hw, src, counted) = if entry.mode == BalanceMode::Arp as u8 {
        // The owning node's mastership decides, not the leader's.
        match balance::arp_owner(vhid, arp.spa) {
            Some((node, true)) => (virtual_mac(node), virtual_mac(node), node),
            Some((node, false)) => {
                count(node, |s| &mut s.arp_dropped_backup);
                return xdp_action::XDP_DROP;
            }
            None => {
                count(vhid, |s| &mut s.arp_dropped_backup);
                return xdp_action::XDP_DROP;
            }
        }
    } else {
        if !is_master(entry) {
            count(vhid, |s| &mut s.arp_dropped_backup);
            return xdp_action::XDP_DROP;
        }
        let (hw, src) = balance::reply_macs(vhid, entry);
        (*hw, *src, vhid)
    };
    let requester_mac = arp.sha;
    let requester_ip = arp.spa;
    arp.op = 2u16.to_be_bytes();
    arp.tha = requester_mac;
    arp.tpa = requester_ip;
    arp.sha = hw;
    arp.spa = key_v4(&key);
    let Ok(eth) = eth::header(ctx) else {
        return xdp_action::XDP_DROP;
    };
    eth.dst = requester_mac;
    eth.src = src;
    count(counted, |s| &mut s.arp_replies);
    xdp_action::XDP_TX
}

/// Handles an ICMPv6 packet: answers or drops neighbour solicitations for a VIP, passes the rest.
#[inline(never)]
pub fn neighbour_solicit(ctx: &XdpContext, l2: L2) -> u32 {
    let Ok(ip6) = ptr_at::<Ipv6Hdr>(ctx, l2.l3) else {
        return xdp_action::XDP_PASS;
    };
    let nd_off = l2.l3 + core::mem::size_of::<Ipv6Hdr>();
    let Ok(nd) = ptr_at::<NdMsg>(ctx, nd_off) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: both were bounds-checked by ptr_at.
    let (ip6r, ndr) = unsafe { (&*ip6, &*nd) };
    // RFC 4861 7.1.1: a valid NS has hop limit 255, code 0 and at least 24 bytes, all of them present.
    let plen = be16(ip6r.payload_len) as usize;
    let have = ctx.data_end() - ctx.data();
    if ndr.icmp_type != crate::ipv6::ND_NEIGHBOR_SOLICIT
        || ndr.code != 0
        || ip6r.hop_limit != 255
        || plen < core::mem::size_of::<NdMsg>()
        || nd_off + plen > have
    {
        return xdp_action::XDP_PASS;
    }
    // The kernel would discard an NS with a bad checksum: so do we (as BACKUP too, where it is
    // passed up to be discarded there rather than counted as ours).
    if !icmp6_checksum_ok(ctx, ip6r, nd_off, plen) {
        return xdp_action::XDP_PASS;
    }
    let key = VipKey {
        family: 6,
        pad: [0; 3],
        addr: ndr.target,
    };
    let Some(vhid) = vip_vhid(&key) else {
        return xdp_action::XDP_PASS;
    };
    let Some(entry) = vhid_entry(vhid) else {
        return xdp_action::XDP_PASS;
    };
    if entry.state == VhidState::Unconfigured as u8 {
        return xdp_action::XDP_PASS;
    }
    if !is_master(entry) {
        count(vhid, |s| &mut s.arp_dropped_backup);
        return xdp_action::XDP_DROP;
    }
    let target = ndr.target;
    let ns_src = ip6r.src;
    let Ok(eth) = eth::header(ctx) else {
        return xdp_action::XDP_PASS;
    };
    let requester_mac = eth.src;
    // A DAD probe comes from :: and is answered to all-nodes, unsolicited (RFC 4861 7.2.4).
    let dad = ns_src == [0u8; 16];
    let (dst_ip, dst_mac, flags) = if dad {
        (ALL_NODES, [0x33, 0x33, 0, 0, 0, 1], NA_OVERRIDE)
    } else {
        (ns_src, requester_mac, NA_SOLICITED | NA_OVERRIDE)
    };

    // Resize to exactly the NA: IPv6 header + NdMsg + target link-layer option.
    let want = nd_off + NA_LEN;
    let delta = want as i32 - have as i32;
    // SAFETY: the helper checks the new size itself and fails cleanly.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return xdp_action::XDP_DROP;
    }
    // Pointers are invalid after adjust_tail: look everything up again.
    let (Ok(eth), Ok(ip6), Ok(nd), Ok(opt)) = (
        ptr_at::<crate::eth::EthHdr>(ctx, 0),
        ptr_at::<Ipv6Hdr>(ctx, l2.l3),
        ptr_at::<NdMsg>(ctx, nd_off),
        ptr_at::<LlaOption>(ctx, nd_off + core::mem::size_of::<NdMsg>()),
    ) else {
        return xdp_action::XDP_DROP;
    };
    // Looked up only now: the map values outlive adjust_tail, and holding the MACs as bytes across it
    // would overflow this function's stack.
    let (vmac, src_mac) = balance::reply_macs(vhid, entry);
    let flags_bytes = [flags, 0, 0, 0];
    let mut sum = csum_add(0, &target);
    sum = csum_add(sum, &dst_ip);
    sum += NA_LEN as u32 + IPPROTO_ICMPV6 as u32;
    sum += (ND_NEIGHBOR_ADVERT as u32) << 8;
    sum = csum_add(sum, &flags_bytes);
    sum = csum_add(sum, &target);
    sum += 0x0201;
    sum = csum_add(sum, vmac);
    let csum = !csum_fold(sum);
    // SAFETY: all four pointers were bounds-checked just above.
    unsafe {
        (*eth).dst = dst_mac;
        (*eth).src = *src_mac;
        (*ip6).payload_len = (NA_LEN as u16).to_be_bytes();
        (*ip6).nexthdr = IPPROTO_ICMPV6;
        (*ip6).hop_limit = 255;
        (*ip6).src = target;
        (*ip6).dst = dst_ip;
        (*nd).icmp_type = ND_NEIGHBOR_ADVERT;
        (*nd).code = 0;
        (*nd).csum = csum.to_be_bytes();
        (*nd).flags = flags_bytes;
        (*nd).target = target;
        (*opt).opt_type = 2;
        (*opt).len = 1;
        (*opt).mac = *vmac;
    }
    count(vhid, |s| &mut s.na_replies);
    xdp_action::XDP_TX
}

/// Longest neighbour solicitation whose checksum is checked (24 bytes of message and a few options);
/// a longer one is not answered.
const NS_CHECKED_MAX: usize = 128;

/// ARP hardware type Ethernet.
const ARPHRD_ETHER: u16 = 1;

/// True when the ICMPv6 checksum of the `plen` bytes at `off` (pseudo-header: the IPv6 addresses,
/// the length, next header 58) comes out right. False for more than `NS_CHECKED_MAX` bytes, or a
/// length that is not a multiple of 8 (an NS is 24 bytes and options of 8-byte units, RFC 4861 4.6).
#[inline(always)]
fn icmp6_checksum_ok(ctx: &XdpContext, ip6: &Ipv6Hdr, off: usize, plen: usize) -> bool {
    if plen > NS_CHECKED_MAX || !plen.is_multiple_of(8) {
        return false;
    }
    let mut sum = csum_add(0, &ip6.src);
    sum = csum_add(sum, &ip6.dst);
    sum += plen as u32 + IPPROTO_ICMPV6 as u32;
    csum_frame::<{ NS_CHECKED_MAX / 2 }>(ctx, off, plen, sum)
        .is_some_and(|sum| csum_fold(sum) == 0xffff)
}

/// ICMPv6 length of our NA: 24 bytes of message plus the 8-byte target link-layer option.
const NA_LEN: usize = 32;
/// NA flag "solicited".
const NA_SOLICITED: u8 = 0x40;
/// NA flag "override".
const NA_OVERRIDE: u8 = 0x20;
/// ff02::1.
const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

#[inline(always)]
fn key_v4(key: &VipKey) -> [u8; 4] {
    [key.addr[0], key.addr[1], key.addr[2], key.addr[3]]
}
