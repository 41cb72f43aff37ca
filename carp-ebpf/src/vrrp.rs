//! VRRP advert intake for vhids the controller marked as VRRP VRIDs (`VhidEntry::mode` carries
//! `VHID_MODE_VRRP3` or `VHID_MODE_VRRP2`). The checks that need nothing but the frame run here in RFC
//! 9568 §7.1 / RFC 3768 §7.1 order: TTL 255 (any TTL for a unicast advert to a VRID with
//! unicast peers, which carpd checks against the peers), the version this VRID speaks, the message length its
//! address count announces; each failure is counted in the VRID's `carp_stats` slot (the same
//! field names as CARP: badttl, badver, badlen) and drops the frame. A good advert passes the VRID's
//! event bucket (`carp_advert_limits`, the vhid-wide one) and goes up the stack (XDP_PASS) to carpd's
//! packet socket, which verifies the variable-length checksum (either IPv4 form) and runs the
//! election; over the rate it is dropped and counted as `events_ratelimited`.
//!
//! The controller parses the full message in userspace because a VRRP advert is 12 to 1028 bytes:
//! carrying every length through a ring-buffer record would bound the addresses at build time.
use crate::{
    advert::allow,
    maps::{ADVERT_LIMITS, Counters},
    packet::ptr_at,
};
use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use carp_common::{
    proto::CARP_TTL,
    vrrp::{
        VHID_MODE_UNICAST_PEERS, VHID_MODE_VRRP, VHID_MODE_VRRP3, VRRP2_AUTH_DATA_LEN,
        VRRP2_VERSION, VRRP3_FIXED_LEN, VRRP3_VERSION,
    },
};

/// The VRRP flags of a vhid's mode byte (version, unicast peers), 0 for a CARP vhid.
#[inline(always)]
pub fn flags(mode: u8) -> u8 {
    if mode & VHID_MODE_VRRP == 0 {
        0
    } else {
        mode & (VHID_MODE_VRRP | VHID_MODE_UNICAST_PEERS)
    }
}

/// Where the VRRP message is in the frame and what the IP header said about it.
pub struct At {
    /// TTL / hop limit received.
    pub ttl: u8,
    /// IP payload length.
    pub payload_len: usize,
    /// Offset of the VRRP message.
    pub off: usize,
    /// 4 or 6.
    pub family: u8,
    /// Sent to a unicast address (this host's), not the VRRP group.
    pub unicast: bool,
}

/// Judges a VRRP advert for a VRRP VRID at `at`; returns the verdict. `flags` is the VRID's VRRP flag.
#[inline(always)]
pub fn intake(ctx: &XdpContext, at: At, vrid: u8, flags: u8, counters: Counters) -> u32 {
    let At {
        ttl,
        payload_len,
        off,
        family,
        unicast,
    } = at;
    // A unicast advert for a VRID with unicast peers may come at any TTL (keepalived's IPv6 unicast
    // uses the default hop limit); carpd accepts it only from a configured peer.
    if ttl != CARP_TTL && !(unicast && flags & VHID_MODE_UNICAST_PEERS != 0) {
        counters.bump(|s| &mut s.badttl);
        return xdp_action::XDP_DROP;
    }
    // Version (byte 0's high nibble) and address count (byte 3) of the fixed header.
    let Ok(head) = ptr_at::<[u8; 4]>(ctx, off) else {
        counters.bump(|s| &mut s.badlen);
        return xdp_action::XDP_DROP;
    };
    // SAFETY: ptr_at checked the bounds.
    let head = unsafe { *head };
    let v3 = flags & VHID_MODE_VRRP3 != 0;
    let want = if v3 { VRRP3_VERSION } else { VRRP2_VERSION };
    if head[0] >> 4 != want {
        counters.bump(|s| &mut s.badver);
        return xdp_action::XDP_DROP;
    }
    let addr_len = if family == 6 { 16 } else { 4 };
    let mut needed = VRRP3_FIXED_LEN + head[3] as usize * addr_len;
    if !v3 {
        needed += VRRP2_AUTH_DATA_LEN;
    }
    if payload_len < needed {
        counters.bump(|s| &mut s.badlen);
        return xdp_action::XDP_DROP;
    }
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(limit) = ADVERT_LIMITS.get_ptr_mut(vrid as u32) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: an array slot, valid for the program's run; a race between CPUs lets at most an extra
    // advert through, as for CARP.
    let limit = unsafe { &mut *limit };
    if !allow(
        &mut limit.vhid_tat_ns,
        now,
        limit.vhid_interval_ns,
        limit.vhid_tolerance_ns,
    ) {
        counters.bump(|s| &mut s.events_ratelimited);
        return xdp_action::XDP_DROP;
    }
    counters.bump(|s| &mut s.adverts_to_controller);
    xdp_action::XDP_PASS
}
