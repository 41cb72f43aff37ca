//! The load-balancing decision (spec §6: OpenBSD's `carpnodes` + `balancing`), made in XDP before the
//! stack sees the frame. It owns the `carp_balance` lookups: the IP modes' L3 filter (OpenBSD's
//! `carp_lsdrop`), the owner of an ARP requester in the historic `arp` mode, and the MACs an ARP/NA
//! reply carries in the IP modes. The controller describes a group in one `BalanceGroup` value at
//! index = leader vhid (the lowest vhid of the carp interface's carpnodes).
//!
//! **IP modes (`ip`, `ip-stealth`, `ip-unicast`).** Only frames whose destination MAC is exactly the
//! group's interface MAC enter the filter (in `ip` mode that is the multicast 01:00:5e:00:01:<leader>,
//! so the test is on the exact MAC, not on the multicast bit); every other broadcast or multicast frame
//! is never touched. The interface MAC is taken in every vhid state, which is why `vmac` asks this
//! module first. For IPv4 `fold = src ^ dst`, for IPv6 the XOR of the eight 32-bit words of source and
//! destination, `h = ntohl(fold) % N`, and the frame is accepted (XDP_PASS, `balanced_pass`) iff bit h
//! of the local mask is set, else dropped (`balanced_drop`), both counted in the leader vhid's slot.
//! The local mask holds only while the group's MASTER lease runs (`lease_until_ns`, as for a vhid).
//! An accepted `ip`-mode frame leaves with the multicast bit of its destination cleared, i.e. addressed
//! to 00:00:5e:00:01:<leader>, the carp interface's own (unicast) MAC.
//! N = 0 drops everything (spec). A frame to the interface MAC whose IP destination is multicast or
//! limited broadcast is genuinely multicast and passes uncounted, as do non-IP frames (the L3 filter
//! runs at IP input only) and frames too short for their IP header (the stack discards those).
//!
//! **Established flows** (issue #7: "an established flow stays with the gateway that owns it even when
//! bucket ownership changes"). With flow tracking on, a frame that reaches the bucket test is handed to
//! the flow table (`flow::track`, one lookup that also does the tracking), which decides by who owns
//! the flow, not by its bucket:
//! - a flow this gateway created (`FlowEntry::creator` == our sync id) is accepted here, even after its
//!   bucket moved to another gateway (counted `kept_here`);
//! - a flow a live peer created is left to it (dropped here, `left_to_owner`), even after its bucket
//!   moved here;
//! - a flow whose creator is gone follows its bucket: the new bucket owner takes it over;
//! - a new flow follows its bucket, and is created (creator = us, owner = the bucket's carpnode vhid)
//!   only by the gateway that accepts it.
//!
//! Who is alive is the controller's knowledge, handed over in `carp_flow_conf`: the sync ids of the
//! peers whose authenticated sync packets (every peer sends a keepalive each second) arrived in the
//! last 3 s, leased until `live_until_ns` and renewed every second. CARP state cannot tell it: a gateway
//! whose nodes all moved away sends no advert, yet is alive and still owns its flows. The lease also
//! covers our own claim: when our controller dies the view expires and we fall back to the buckets, as
//! the peers do about then (their view of us expires too), so a flow is never served by two gateways
//! for longer than the lease. Stickiness is on only with `[pfsync]` (`FlowConf::sticky`): without sync
//! the peers do not know our flows, and keeping them would make two gateways accept them.
//! The controller keeps a balanced carp interface up while it holds such flows, even with no node
//! MASTER here (daemon `nodes`). A gateway that returns under the same sync id finds the flows it
//! created in its table again (left in the dataplane, or in the bulk transfer) and claims them back
//! from whoever took them over; exactly one gateway serves them throughout, save for the moment until
//! the peers hear it. Known gap: a flow's first packets before its INS reaches the peers are
//! decided by bucket on the peers (a bucket move in that window can serve the flow twice).
//! Traffic outside balancing groups never comes here and pays nothing for this.
//!
//! **ICMP.** OpenBSD exempts only ICMP *delivered to this host*, but XDP runs before routing and cannot
//! know what will be delivered. The approximation: an ICMP/ICMPv6 packet whose destination is one of
//! our VIPs (`carp_vips`) is for this host; ICMP to any other address is being forwarded and is filtered
//! on (src, dst) like any packet, which is what matters on a gateway. For a VIP destination:
//! - IPv4 errors (types 3, 4, 5, 11, 12) are re-filtered on (inner destination, outer destination),
//!   as OpenBSD's icmp_input does: for a flow the VIP itself opened to X, the error about (VIP -> X)
//!   hashes to X ^ VIP, the same bucket as the flow, so the node that owns the flow gets its error.
//!   An error too short to carry the inner header is filtered on (src, dst).
//! - Other IPv4 ICMP (echo, timestamp, ...) is exempt: accepted and counted as `balanced_pass` on
//!   every node, so each master answers (OpenBSD behaves the same). A non-first fragment of ICMP to a
//!   VIP is exempt too: it carries no type, and dropping it would only break reassembly.
//! - ICMPv6 echo requests are filtered normally (spec §6: OpenBSD's icmp6_input filters them); every
//!   other ICMPv6 type (ND, MLD, errors) is exempt. ICMPv6 behind extension headers is not recognised
//!   and is filtered on (src, dst).
//!
//! **`arp` mode** (Linux only; OpenBSD removed it). Each carpnode keeps its own MAC
//! 00:00:5e:00:01:<vhid>. An ARP request for a VIP is owned by node `idx = ntohl(spa) % N`, spa being
//! the requester's IPv4 sender address, and answered (from and with that node's MAC) only by the host
//! where node idx is MASTER; the others drop it. Why the IP and not OpenBSD's keyed Jenkins hash of the
//! sender MAC: nothing else speaks this mode, so there is no wire behaviour to match; the OpenBSD hash
//! reads SHA1 words host-endian, so it differs between little- and big-endian hosts of one cluster;
//! `ntohl(spa) % N` is the same on every host, can be computed by an operator by hand ("which gateway
//! serves 10.0.0.57?"), spreads a subnet of clients perfectly evenly, and is what the original 2004
//! `arpbalance` hashed. Its weakness (one bucket for everything behind one router) is shared by every
//! per-requester scheme, the MAC hash included. NS for a VIP in `arp` mode is answered like a plain
//! vhid: by the leader's master with the leader's MAC (IPv6 is not balanced in this mode).
use crate::{
    eth::L2,
    flow,
    ipv4::{self, Ipv4Hdr},
    ipv6::{self, Ipv6Hdr},
    maps::{Counters, balance_group, vip_vhid},
    packet::{be16, ptr_at},
};
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use carp_common::{
    maps::{BalanceGroup, BalanceMode, MAX_CARPNODES, VhidEntry, VipKey},
    proto::{ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6},
};

/// ICMPv6 echo request, the one ICMPv6 type OpenBSD filters when it is for this host.
const ICMP6_ECHO_REQUEST: u8 = 128;

/// What the L3 filter makes of a frame to the interface MAC.
enum Decision {
    /// Filter on this fold (already in host order, i.e. `ntohl(fold)`).
    Fold(u32),
    /// ICMP for this host: accepted and counted.
    Exempt,
    /// Not subject to the filter at all: passed, not counted.
    Unfiltered,
}

/// The ICMP functions' answer for `Decision::Unfiltered`: it crosses a BPF call as one scalar.
const CLASS_UNFILTERED: u64 = 0;
/// The ICMP functions' answer for `Decision::Exempt`.
const CLASS_EXEMPT: u64 = 1 << 33;
/// Flag of the ICMP functions' answer for `Decision::Fold`; the fold is in the low 32 bits.
const CLASS_FOLD: u64 = 1 << 32;

/// True for the three IP balancing modes.
#[inline(always)]
pub fn is_ip_mode(mode: u8) -> bool {
    mode == BalanceMode::Ip as u8
        || mode == BalanceMode::IpStealth as u8
        || mode == BalanceMode::IpUnicast as u8
}

/// The IP-mode group whose interface MAC is exactly `dst`, if any (its leader vhid is `dst[5]`).
#[inline(always)]
pub fn ip_group_of(dst: &[u8; 6]) -> Option<&'static BalanceGroup> {
    let group = balance_group(dst[5])?;
    (is_ip_mode(group.mode) && group.mac == *dst).then_some(group)
}

/// The L3 filter for a frame to the interface MAC of `group`, led by `leader`. Inlined into the
/// entry point with the common case (fold, bucket, count) so that a non-ICMP frame costs no BPF call
/// and no second lookup; ICMP, which needs a VIP lookup and stack, goes to its own BPF functions.
#[inline(always)]
pub fn ip_filter(ctx: &XdpContext, l2: L2, leader: u8, group: &BalanceGroup) -> u32 {
    let decision = match l2.proto {
        ETH_P_IP => decide_v4(ctx, l2.l3),
        ETH_P_IPV6 => decide_v6(ctx, l2.l3),
        _ => Decision::Unfiltered,
    };
    let mut tracked = 0;
    let accept = match decision {
        Decision::Fold(fold) => {
            let ours = owns(group.nodes, live_mask(group), fold);
            // The flow settings are read once for the frame: `flow::after` skips a TRACKED verdict,
            // so with tracking off a balanced frame still costs one lookup of them, as before.
            tracked = flow::TRACKED;
            if flow::tracking() {
                // The flow table decides established flows (module doc); one lookup serves both.
                let bal = flow::BAL
                    | if ours { flow::BAL_OURS } else { 0 }
                    | bucket_vhid(group, fold) as u32;
                flow::track(ctx, l2, bal) & 0xff == xdp_action::XDP_PASS
            } else {
                ours
            }
        }
        Decision::Exempt => true,
        Decision::Unfiltered => return xdp_action::XDP_PASS,
    };
    let counters = Counters::of(leader);
    if accept {
        counters.bump(|s| &mut s.balanced_pass);
        // `ip` mode: clear the multicast bit (OpenBSD's tag that clears M_MCAST), so the frame goes
        // up as unicast to 00:00:5e:00:01:<leader>, the carp interface's own MAC: the carp interface
        // receives it once, like any unicast frame, and the stack's L2-multicast rules never apply.
        if group.mode == BalanceMode::Ip as u8
            && let Ok(eth) = crate::eth::header(ctx)
        {
            eth.dst[0] = 0;
        }
        xdp_action::XDP_PASS | tracked
    } else {
        counters.bump(|s| &mut s.balanced_drop);
        xdp_action::XDP_DROP | tracked
    }
}

/// The vhid of the carpnode owning bucket `fold % N` (0 for a corrupt N), recorded as a new flow's owner.
#[inline(always)]
fn bucket_vhid(group: &BalanceGroup, fold: u32) -> u8 {
    let n = group.nodes as u32;
    if n == 0 || n > MAX_CARPNODES as u32 {
        return 0;
    }
    let idx = fold % n;
    // As in `arp_owner`: the volatile read keeps the mask the verifier needs for the index.
    // SAFETY: a read of a live local.
    let idx = unsafe { core::ptr::read_volatile(&idx) } & (MAX_CARPNODES as u32 - 1);
    group.vhids.get(idx as usize).copied().unwrap_or(0)
}

/// The `Decision` of a `CLASS_*` answer.
#[inline(always)]
fn decision_of(class: u64) -> Decision {
    if class & CLASS_FOLD != 0 {
        Decision::Fold(class as u32)
    } else if class == CLASS_EXEMPT {
        Decision::Exempt
    } else {
        Decision::Unfiltered
    }
}

/// The `CLASS_*` answer of a `Decision`.
#[inline(always)]
fn class_of(decision: Decision) -> u64 {
    match decision {
        Decision::Fold(fold) => CLASS_FOLD | fold as u64,
        Decision::Exempt => CLASS_EXEMPT,
        Decision::Unfiltered => CLASS_UNFILTERED,
    }
}

/// The group's local mask while its MASTER lease holds, else 0 (a dead controller's buckets stop
/// here about when the peers take them over). The clock is read only for a group with a lease.
#[inline(always)]
fn live_mask(group: &BalanceGroup) -> u32 {
    if group.lease_until_ns == 0
        // SAFETY: the helper has no preconditions.
        || unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() } <= group.lease_until_ns
    {
        group.local_mask
    } else {
        0
    }
}

/// True when bucket `fold % nodes` is MASTER here; N = 0 (and a corrupt N > 32) owns nothing.
#[inline(always)]
fn owns(nodes: u8, mask: u32, fold: u32) -> bool {
    let n = nodes as u32;
    if n == 0 || n > MAX_CARPNODES as u32 {
        return false;
    }
    (mask >> (fold % n)) & 1 == 1
}

/// IPv4: fold on (src, dst); ICMP goes to `icmp_v4`.
#[inline(always)]
fn decide_v4(ctx: &XdpContext, l3: usize) -> Decision {
    let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
        return Decision::Unfiltered;
    };
    // SAFETY: ptr_at checked the bounds; the struct is all bytes.
    let ip = unsafe { &*ip };
    let dst = ip.dst;
    if ipv4::is_multicast(dst) || dst == [0xff; 4] {
        return Decision::Unfiltered;
    }
    let fold = xor4(ip.src, dst);
    if ip.proto != IPPROTO_ICMP {
        return Decision::Fold(fold);
    }
    decision_of(icmp_v4(ctx, l3, fold))
}

/// IPv4 ICMP: the fold for traffic being forwarded, the rules for ICMP to a VIP (module doc).
#[inline(never)]
fn icmp_v4(ctx: &XdpContext, l3: usize, fold: u32) -> u64 {
    let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
        return CLASS_UNFILTERED;
    };
    // SAFETY: ptr_at checked the bounds; the struct is all bytes.
    let ip = unsafe { &*ip };
    let dst = ip.dst;
    if vip_vhid(&v4_key(dst)).is_none() {
        return class_of(Decision::Fold(fold));
    }
    if be16(ip.frag) & 0x1fff != 0 {
        return CLASS_EXEMPT;
    }
    let hlen = ip.header_len();
    if hlen < 20 {
        return class_of(Decision::Fold(fold));
    }
    let Ok(icmp) = ptr_at::<[u8; 8]>(ctx, l3 + hlen) else {
        return class_of(Decision::Fold(fold));
    };
    // SAFETY: ptr_at checked the bounds.
    class_of(match unsafe { (*icmp)[0] } {
        // Unreachable, source quench, redirect, time exceeded, parameter problem.
        3 | 4 | 5 | 11 | 12 => match ptr_at::<Ipv4Hdr>(ctx, l3 + hlen + 8) {
            // SAFETY: ptr_at checked the bounds.
            Ok(inner) => Decision::Fold(xor4(unsafe { (*inner).dst }, dst)),
            Err(_) => Decision::Fold(fold),
        },
        _ => Decision::Exempt,
    })
}

/// IPv6: fold on (src, dst); ICMPv6 goes to `icmp_v6`.
#[inline(always)]
fn decide_v6(ctx: &XdpContext, l3: usize) -> Decision {
    let Ok(ip) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
        return Decision::Unfiltered;
    };
    // SAFETY: ptr_at checked the bounds; the struct is all bytes.
    let ip = unsafe { &*ip };
    if ipv6::is_multicast(&ip.dst) {
        return Decision::Unfiltered;
    }
    let fold = fold32(&ip.src, &ip.dst);
    if ip.nexthdr != IPPROTO_ICMPV6 {
        return Decision::Fold(fold);
    }
    decision_of(icmp_v6(ctx, l3, fold))
}

/// ICMPv6: exempt when for a VIP and not an echo request, else the fold.
#[inline(never)]
fn icmp_v6(ctx: &XdpContext, l3: usize, fold: u32) -> u64 {
    let Ok(ip) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
        return CLASS_UNFILTERED;
    };
    // SAFETY: ptr_at checked the bounds; the struct is all bytes.
    let key = VipKey {
        family: 6,
        pad: [0; 3],
        addr: unsafe { (*ip).dst },
    };
    if vip_vhid(&key).is_none() {
        return class_of(Decision::Fold(fold));
    }
    match ptr_at::<u8>(ctx, l3 + core::mem::size_of::<Ipv6Hdr>()) {
        // SAFETY: ptr_at checked the bounds.
        Ok(t) if unsafe { *t } != ICMP6_ECHO_REQUEST => CLASS_EXEMPT,
        _ => class_of(Decision::Fold(fold)),
    }
}

/// `ntohl(a ^ b)` of two IPv4 addresses, XORed byte by byte and assembled once.
#[inline(always)]
fn xor4(a: [u8; 4], b: [u8; 4]) -> u32 {
    u32::from_be_bytes([a[0] ^ b[0], a[1] ^ b[1], a[2] ^ b[2], a[3] ^ b[3]])
}

/// `ntohl` of the XOR of the eight 32-bit words of two IPv6 addresses. Byte i of the fold is the XOR
/// of every byte at position i mod 4, so the bytes are XORed first and assembled once, which halves
/// the instructions of assembling eight words.
#[inline(always)]
fn fold32(a: &[u8; 16], b: &[u8; 16]) -> u32 {
    let mut f = [0u8; 4];
    let mut i = 0;
    while i < 16 {
        f[i & 3] ^= a[i] ^ b[i];
        i += 1;
    }
    u32::from_be_bytes(f)
}

/// The `carp_vips` key of an IPv4 address.
#[inline(always)]
pub fn v4_key(addr: [u8; 4]) -> VipKey {
    let mut key = VipKey {
        family: 4,
        pad: [0; 3],
        addr: [0; 16],
    };
    key.addr[0] = addr[0];
    key.addr[1] = addr[1];
    key.addr[2] = addr[2];
    key.addr[3] = addr[3];
    key
}

/// Who answers an ARP request from `spa` in `arp` mode: the owning carpnode's vhid and whether it is
/// MASTER here. None when the group is missing or N is 0 (nobody answers).
#[inline(always)]
pub fn arp_owner(leader: u8, spa: [u8; 4]) -> Option<(u8, bool)> {
    let group = balance_group(leader)?;
    let n = group.nodes as u32;
    if n == 0 || n > MAX_CARPNODES as u32 {
        return None;
    }
    let idx = u32::from_be_bytes(spa) % n;
    // The verifier keeps no bounds across a modulo, and LLVM deletes a plain `& 31` because it knows
    // idx < n <= 32. Reading idx back through a volatile load hides that, so the mask stays and gives
    // the verifier the bound it needs before the index into vhids.
    // SAFETY: a read of a live local.
    let idx = unsafe { core::ptr::read_volatile(&idx) } & (MAX_CARPNODES as u32 - 1);
    let vhid = *group.vhids.get(idx as usize)?;
    Some((vhid, (live_mask(group) >> idx) & 1 == 1))
}

/// The (sender hardware address, Ethernet source) of an ARP/NA reply for a VIP of `vhid`: the
/// vhid's virtual MAC for both, except in the IP modes, where the hardware address is the interface
/// MAC and `ip`/`ip-stealth` send from the carpdev's own MAC so switches never learn the interface MAC
/// (and a multicast MAC is never a source). The controller must set `src_mac` in those modes; if it is
/// zero the vhid's own `vmac` is the source. References, not copies: the NA path keeps them across
/// `bpf_xdp_adjust_tail`, and twelve loose bytes there would overflow its stack.
#[inline(always)]
pub fn reply_macs(vhid: u8, entry: &'static VhidEntry) -> (&'static [u8; 6], &'static [u8; 6]) {
    if !is_ip_mode(entry.mode) {
        return (&entry.vmac, &entry.vmac);
    }
    match balance_group(vhid) {
        Some(group) if is_ip_mode(group.mode) => {
            let src = if group.mode == BalanceMode::IpUnicast as u8 {
                &group.mac
            } else if group.src_mac == [0; 6] {
                &entry.vmac
            } else {
                &group.src_mac
            };
            (&group.mac, src)
        }
        _ => (&entry.vmac, &entry.vmac),
    }
}
