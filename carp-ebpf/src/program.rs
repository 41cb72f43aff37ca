//! The XDP entry point: parse L2, peek at the L3 protocol, dispatch to one decision. Each decision is its
//! own BPF function (`#[inline(never)]`) so each gets its own 512-byte stack frame.
use crate::{
    advert, eth, flow,
    ipv4::Ipv4Hdr,
    ipv6::{IPPROTO_ICMPV6, Ipv6Hdr},
    packet::ptr_at,
    responder, vmac,
};
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use carp_common::proto::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_CARP};

/// Entry point attached to a carpdev.
#[xdp]
pub fn carp_xdp(ctx: XdpContext) -> u32 {
    let Ok(l2) = eth::parse(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    // Another segment's frame (a VLAN on top of this carpdev): not ours to count, answer or filter.
    if l2.tagged {
        return xdp_action::XDP_PASS;
    }
    match l2.proto {
        ETH_P_IP => match ptr_at::<Ipv4Hdr>(&ctx, l2.l3) {
            // SAFETY: ptr_at checked the bounds.
            Ok(ip) if unsafe { (*ip).proto } == IPPROTO_CARP => advert::intake_v4(&ctx, l2),
            _ => flow::after(&ctx, l2, vmac::filter(&ctx, l2)),
        },
        ETH_P_IPV6 => match ptr_at::<Ipv6Hdr>(&ctx, l2.l3) {
            // SAFETY: ptr_at checked the bounds.
            Ok(ip) => match unsafe { (*ip).nexthdr } {
                IPPROTO_CARP => advert::intake_v6(&ctx, l2),
                IPPROTO_ICMPV6 => match responder::neighbour_solicit(&ctx, l2) {
                    xdp_action::XDP_PASS => flow::after(&ctx, l2, vmac::filter(&ctx, l2)),
                    verdict => verdict,
                },
                _ => flow::after(&ctx, l2, vmac::filter(&ctx, l2)),
            },
            Err(_) => vmac::filter(&ctx, l2),
        },
        ETH_P_ARP => responder::arp(&ctx, l2),
        _ => vmac::filter(&ctx, l2),
    }
}

/// A program that passes every frame: the baseline of `cargo xtask bench`, and the program a test puts
/// on a native-mode veth peer so XDP_TX frames are delivered.
#[xdp]
pub fn carp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
