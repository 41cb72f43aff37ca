//! Advert intake: the kernel half of carp_input (spec §7). Checks run in OpenBSD's order (TTL, length,
//! truncation, checksum, vhid, version); each failure bumps its counter and drops the frame. A good
//! advert updates `carp_last_advert` and goes to the controller, which verifies the HMAC. Every CARP
//! frame is consumed here: passed up, a unicast advert with no listener would draw ICMP errors.
use crate::{
    carp::CarpHdr,
    eth::{self, L2},
    ipv4::{self, Ipv4Hdr},
    ipv6::{self, Ipv6Hdr},
    maps::{Counters, EVENTS, EVENTS_BYTES, LAST_ADVERT, vhid_entry},
    packet::{be16, ptr_at},
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, xdp_action},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ringbuf_query},
    programs::XdpContext,
};
use carp_common::{
    maps::{AdvertEvent, VhidState},
    proto::{CARP_HEADER_LEN, CARP_TTL, CARP_VERSION},
};

/// Ring space one event takes: the record plus the kernel's 8-byte header, rounded up to 8.
const EVENT_RECORD_BYTES: u64 = (core::mem::size_of::<AdvertEvent>() as u64 + 8 + 7) & !7;

/// An IPv4 advert (protocol 112).
#[inline(never)]
pub fn intake_v4(ctx: &XdpContext, l2: L2) -> u32 {
    let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, l2.l3) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: ptr_at checked the bounds.
    let ip = unsafe { &*ip };
    let hlen = ip.header_len();
    let tot = be16(ip.tot_len) as usize;
    let off = l2.l3 + hlen;
    let vhid = vhid_at(ctx, off);
    let counters = Counters::of(vhid);
    counters.bump(|s| &mut s.ipackets);
    if hlen < 20 || tot < hlen {
        // An IP header that cannot be right: the frame is unusable, as a failed pullup would be.
        counters.bump(|s| &mut s.hdrops);
        return xdp_action::XDP_DROP;
    }
    let Some(hdr) = check(ctx, ip.ttl, tot - hlen, off, vhid, counters) else {
        return xdp_action::XDP_DROP;
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&ip.src);
    dst[..4].copy_from_slice(&ip.dst);
    let unicast = !ipv4::is_multicast(ip.dst);
    accept(ctx, hdr, vhid, counters, 4, ip.ttl, &src, &dst, unicast);
    xdp_action::XDP_DROP
}

/// An IPv6 advert (next header 112).
#[inline(never)]
pub fn intake_v6(ctx: &XdpContext, l2: L2) -> u32 {
    let Ok(ip) = ptr_at::<Ipv6Hdr>(ctx, l2.l3) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: ptr_at checked the bounds.
    let ip = unsafe { &*ip };
    let off = l2.l3 + core::mem::size_of::<Ipv6Hdr>();
    let vhid = vhid_at(ctx, off);
    let counters = Counters::of(vhid);
    counters.bump(|s| &mut s.ipackets6);
    let plen = be16(ip.payload_len) as usize;
    let Some(hdr) = check(ctx, ip.hop_limit, plen, off, vhid, counters) else {
        return xdp_action::XDP_DROP;
    };
    let unicast = !ipv6::is_multicast(&ip.dst);
    accept(
        ctx,
        hdr,
        vhid,
        counters,
        6,
        ip.hop_limit,
        &ip.src,
        &ip.dst,
        unicast,
    );
    xdp_action::XDP_DROP
}

/// The vhid byte (index 0 when even it is missing).
#[inline(always)]
fn vhid_at(ctx: &XdpContext, off: usize) -> u8 {
    match ptr_at::<[u8; 2]>(ctx, off) {
        // SAFETY: ptr_at checked the bounds.
        Ok(p) => unsafe { (*p)[1] },
        Err(_) => 0,
    }
}

/// Runs the checks in OpenBSD's order; on failure counts and returns None.
#[inline(always)]
fn check(
    ctx: &XdpContext,
    ttl: u8,
    payload_len: usize,
    off: usize,
    vhid: u8,
    counters: Counters,
) -> Option<&'static CarpHdr> {
    if ttl != CARP_TTL {
        counters.bump(|s| &mut s.badttl);
        return None;
    }
    if payload_len < CARP_HEADER_LEN {
        counters.bump(|s| &mut s.badlen);
        return None;
    }
    let Ok(hdr) = ptr_at::<CarpHdr>(ctx, off) else {
        counters.bump(|s| &mut s.hdrops);
        return None;
    };
    // SAFETY: ptr_at checked the bounds; CarpHdr is a byte array.
    let hdr = unsafe { &*hdr };
    if !hdr.checksum_ok() {
        counters.bump(|s| &mut s.badsum);
        return None;
    }
    // OpenBSD counts a vhid that is not up and running (our INIT) as badvhid too.
    let running = vhid_entry(vhid).is_some_and(|e| {
        e.state != VhidState::Unconfigured as u8 && e.state != VhidState::Init as u8
    });
    if !running {
        counters.bump(|s| &mut s.badvhid);
        return None;
    }
    if hdr.version() != CARP_VERSION {
        counters.bump(|s| &mut s.badver);
        return None;
    }
    Some(hdr)
}

/// Records a good advert and hands it to the controller.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accept(
    ctx: &XdpContext,
    hdr: &CarpHdr,
    vhid: u8,
    counters: Counters,
    family: u8,
    ttl: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    unicast: bool,
) {
    // CLOCK_MONOTONIC at tick resolution: enough for the controller's stall guard (master-down is at
    // least 3/256 s), and it costs a fraction of bpf_ktime_get_ns, which is slow under virtualisation.
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(last) = LAST_ADVERT.get_ptr_mut(vhid as u32) {
        // SAFETY: an array slot, valid for the program's run; written field by field to keep the stack small.
        unsafe {
            (*last).ktime_ns = now;
            (*last).src = *src;
            (*last).family = family;
            (*last).advbase = hdr.advbase();
            (*last).advskew = hdr.advskew();
            (*last).demote = hdr.demote();
        }
    }
    // A full ring makes bpf_ringbuf_reserve fail only after taking its lock; under a flood of adverts
    // the lock-free fill level says the same for a fraction of the cost.
    // SAFETY: EVENTS is a ring-buffer map; BPF_RB_AVAIL_DATA only reads the producer/consumer positions.
    let queued = unsafe {
        bpf_ringbuf_query(
            core::ptr::from_ref(&EVENTS).cast_mut().cast(),
            BPF_RB_AVAIL_DATA as u64,
        )
    };
    if queued + EVENT_RECORD_BYTES > EVENTS_BYTES as u64 {
        counters.bump(|s| &mut s.events_lost);
        return;
    }
    let Some(mut entry) = EVENTS.reserve(0) else {
        counters.bump(|s| &mut s.events_lost);
        return;
    };
    let ev: *mut AdvertEvent = entry.as_mut_ptr();
    let src_mac = eth::header(ctx).map(|e| e.src).unwrap_or([0; 6]);
    // SAFETY: ev points at a reserved ring-buffer record the size of AdvertEvent; every field is written.
    unsafe {
        (*ev).ktime_ns = now;
        (*ev).ifindex = (*ctx.ctx).ingress_ifindex;
        (*ev).family = family;
        (*ev).ttl = ttl;
        (*ev).unicast = unicast as u8;
        (*ev).pad = 0;
        (*ev).src = *src;
        (*ev).dst = *dst;
        (*ev).src_mac = src_mac;
        (*ev).pad2 = [0; 2];
        (*ev).carp = hdr.bytes;
        (*ev).pad3 = [0; 4];
    }
    entry.submit(0);
    counters.bump(|s| &mut s.adverts_to_controller);
}
