//! The virtual-MAC filter: frames addressed to 00:00:5e:00:01:<vhid> are taken only while this node is
//! MASTER of that vhid, as BSD carp does, so a backup that still sees them (flooding, a switch that has
//! not relearned yet) never handles traffic twice.
//!
//! A balancing group's interface MAC (spec §6) is the exception: it is taken in every state and the L3
//! filter in `balance` decides, so the group table is consulted before the vhid table. In `arp` mode
//! each carpnode has its own MAC, taken while that node is MASTER here and handed to the carp
//! interface re-addressed to its MAC.
use crate::{
    balance,
    eth::{self, L2},
    ipv4::Ipv4Hdr,
    ipv6::Ipv6Hdr,
    maps::{VIP_SCRATCH, count, is_master, vhid_entry, vip_vhid},
    packet::ptr_at,
};
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use carp_common::{
    maps::{BalanceMode, VhidState},
    proto::{ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMPV6},
    vrrp::VHID_MODE_NO_ACCEPT,
};

/// The verdict for a frame no other decision claimed.
#[inline(always)]
pub fn filter(ctx: &XdpContext, l2: L2) -> u32 {
    let Ok(eth) = eth::header(ctx) else {
        return xdp_action::XDP_PASS;
    };
    let dst = eth.dst;
    // The cheapest possible test first: unrelated unicast fails on the first bytes. Both
    // 00:00:5e:00:01:xx (virtual MACs, stealth/unicast interface MACs) and 01:00:5e:00:01:xx (`ip`
    // interface MACs) get past it.
    if dst[0] & 0xfe != 0x00 || dst[1] != 0x00 || dst[2] != 0x5e || dst[3] != 0x00 || dst[4] != 0x01
    {
        return xdp_action::XDP_PASS;
    }
    if let Some(group) = balance::ip_group_of(&dst) {
        return balance::ip_filter(ctx, l2, dst[5], group);
    }
    // Any other multicast MAC is genuinely multicast: never ours to drop.
    if dst[0] != 0x00 {
        return xdp_action::XDP_PASS;
    }
    let vhid = dst[5];
    let Some(entry) = vhid_entry(vhid) else {
        return xdp_action::XDP_PASS;
    };
    if entry.state == VhidState::Unconfigured as u8 {
        return xdp_action::XDP_PASS;
    }
    if is_master(entry) {
        if entry.mode & VHID_MODE_NO_ACCEPT != 0 && to_own_vip(ctx, l2, vhid) {
            count(vhid, |s| &mut s.vrrp_not_accepted);
            return xdp_action::XDP_DROP;
        }
        count(vhid, |s| &mut s.vmac_passed);
        // `arp` mode: the controller sets every node's vmac to the carp interface's MAC (the
        // leader's); a frame to another node's MAC is re-addressed to it so the carp interface
        // (one macvlan per carp interface) receives it instead of the stack discarding it as
        // PACKET_OTHERHOST.
        if entry.mode == BalanceMode::Arp as u8 {
            eth.dst = entry.vmac;
        }
        xdp_action::XDP_PASS
    } else {
        count(vhid, |s| &mut s.vmac_dropped);
        xdp_action::XDP_DROP
    }
}

/// True for an IP packet to one of `vhid`'s own virtual addresses, neighbour discovery excepted (a
/// VRRP master without Accept_Mode still answers for them, RFC 9568 §6.4.3); routed traffic, whose
/// destination is elsewhere, is never this.
#[inline(always)]
fn to_own_vip(ctx: &XdpContext, l2: L2, vhid: u8) -> bool {
    let Some(key) = VIP_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: the per-CPU slot is this program run's alone until it returns.
    let key = unsafe { &mut *key };
    key.pad = [0; 3];
    match l2.proto {
        ETH_P_IP => {
            let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, l2.l3) else {
                return false;
            };
            key.family = 4;
            key.addr = [0; 16];
            // SAFETY: ptr_at checked the header lies within the frame.
            key.addr[..4].copy_from_slice(unsafe { &(*ip).dst });
        }
        ETH_P_IPV6 => {
            let Ok(ip) = ptr_at::<Ipv6Hdr>(ctx, l2.l3) else {
                return false;
            };
            // SAFETY: as above.
            let ip = unsafe { &*ip };
            if ip.nexthdr == IPPROTO_ICMPV6 {
                // ND (133-137) must reach the responder and the stack; the type is the first byte.
                let Ok(t) = ptr_at::<u8>(ctx, l2.l3 + 40) else {
                    return false;
                };
                // SAFETY: as above.
                if (133..=137).contains(unsafe { &*t }) {
                    return false;
                }
            }
            key.family = 6;
            key.addr = ip.dst;
        }
        _ => return false,
    }
    vip_vhid(key) == Some(vhid)
}
