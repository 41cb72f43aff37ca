//! Advert intake: the kernel half of carp_input (spec §7). Checks run in OpenBSD's order (TTL, length,
//! truncation, checksum, vhid, version); each failure bumps its counter and drops the frame. A good
//! advert passes the event rate limits (per source, then per vhid), updates `carp_last_advert` and goes
//! to the controller, which verifies the HMAC. Every frame for a configured vhid is consumed here
//! (passed up, a unicast advert with no listener would draw ICMP errors); a frame for a vhid nobody
//! configured here is passed up untouched (`foreign`), so another VRRP/CARP speaker on the same NIC
//! (keepalived) still gets its adverts.
//!
//! Cost: adverts come at 1 to 256 a second per sender, but a flood of valid-looking ones must stay cheap,
//! so the good path makes no BPF-to-BPF call (no `memset`/`memcpy` builtins: addresses and the header are
//! copied as 16-bit words, which every CARP frame's layout keeps aligned, see `carp::CarpHdr`), reads the
//! clock once, and skips the ring buffer entirely when a limit says no. The limits' buckets of the two
//! busiest sources of a vhid (its master, and a one-address flood) live in the vhid's
//! `carp_advert_limits` slot, so neither needs a hash lookup (see `carp_common::maps::AdvertLimit`).
use crate::{
    carp::CarpHdr,
    eth::{self, L2},
    ipv4::{self, Ipv4Hdr},
    ipv6::{self, Ipv6Hdr},
    maps::{ADVERT_LIMITS, ADVERT_SOURCES_MAP, Counters, EVENTS, LAST_ADVERT, vhid_entry},
    packet::{be16, ptr_at},
    vrrp,
};
use aya_ebpf::{
    bindings::{BPF_ANY, xdp_action},
    helpers::bpf_ktime_get_coarse_ns,
    programs::XdpContext,
};
use carp_common::{
    maps::{AdvertEvent, AdvertLimit, SourceKey, VhidState},
    proto::{CARP_HEADER_LEN, CARP_TTL, CARP_VERSION},
};

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
    if foreign(vhid) {
        counters.bump(|s| &mut s.badvhid);
        return xdp_action::XDP_PASS;
    }
    let have = ctx.data_end() - ctx.data();
    if ip.vihl >> 4 != 4
        || hlen < 20
        || tot < hlen
        || l2.l3 + tot > have
        || !ipv4::header_checksum_ok(ctx, l2.l3, hlen)
    {
        // An IP header that cannot be right: the frame is unusable, as a failed pullup would be
        // (an IP stack drops a bad header checksum before carp_input sees the packet).
        counters.bump(|s| &mut s.hdrops);
        return xdp_action::XDP_DROP;
    }
    if let Some(flags) = vrrp_flags(vhid) {
        let at = vrrp::At {
            ttl: ip.ttl,
            payload_len: tot - hlen,
            off,
            family: 4,
            unicast: !ipv4::is_multicast(ip.dst),
        };
        return vrrp::intake(ctx, at, vhid, flags, counters);
    }
    let Some(hdr) = check(ctx, ip.ttl, tot - hlen, off, vhid, counters) else {
        return xdp_action::XDP_DROP;
    };
    let unicast = !ipv4::is_multicast(ip.dst);
    let from = Source {
        family: 4,
        ttl: ip.ttl,
        unicast,
        src: ip.src.as_ptr(),
        dst: ip.dst.as_ptr(),
    };
    accept(ctx, hdr, vhid, counters, &from);
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
    if foreign(vhid) {
        counters.bump(|s| &mut s.badvhid);
        return xdp_action::XDP_PASS;
    }
    let plen = be16(ip.payload_len) as usize;
    if ip.vtcfl[0] >> 4 != 6 || off + plen > ctx.data_end() - ctx.data() {
        // Not version 6, or a payload length beyond the frame: the IPv6 stack drops it.
        counters.bump(|s| &mut s.hdrops);
        return xdp_action::XDP_DROP;
    }
    if let Some(flags) = vrrp_flags(vhid) {
        let at = vrrp::At {
            ttl: ip.hop_limit,
            payload_len: plen,
            off,
            family: 6,
            unicast: !ipv6::is_multicast(&ip.dst),
        };
        return vrrp::intake(ctx, at, vhid, flags, counters);
    }
    let Some(hdr) = check(ctx, ip.hop_limit, plen, off, vhid, counters) else {
        return xdp_action::XDP_DROP;
    };
    let from = Source {
        family: 6,
        ttl: ip.hop_limit,
        unicast: !ipv6::is_multicast(&ip.dst),
        src: ip.src.as_ptr(),
        dst: ip.dst.as_ptr(),
    };
    accept(ctx, hdr, vhid, counters, &from);
    xdp_action::XDP_DROP
}

/// The VRRP flag of a vhid the controller marked as a VRRP VRID, None for CARP (or unconfigured).
#[inline(always)]
fn vrrp_flags(vhid: u8) -> Option<u8> {
    vhid_entry(vhid)
        .map(|e| vrrp::flags(e.mode))
        .filter(|&f| f != 0)
}

/// True for a protocol-112 frame whose vhid (VRRP's vrid sits in the same byte) no carp interface of
/// this carpdev has: someone else's (keepalived's VRRP on the same NIC, another CARP cluster), to be
/// passed up untouched, before any CARP check, since a VRRP advert is shorter than a CARP header.
/// Counted as badvhid (OpenBSD's "no such vhid"), ahead of OpenBSD's order for these frames only.
/// A vhid configured but not running (INIT) is ours and goes through the checks.
#[inline(always)]
fn foreign(vhid: u8) -> bool {
    vhid_entry(vhid).is_none_or(|e| e.state == VhidState::Unconfigured as u8)
}

/// Where a good advert came from, as pointers into the frame (the addresses are 4 or 16 bytes).
struct Source {
    family: u8,
    ttl: u8,
    unicast: bool,
    src: *const u8,
    dst: *const u8,
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

/// One GCRA step: true (and the bucket moved on by `interval`) when an event at `now` fits.
#[inline(always)]
pub(crate) fn allow(tat: &mut u64, now: u64, interval: u64, tolerance: u64) -> bool {
    let t = *tat;
    if t > now + tolerance {
        return false;
    }
    *tat = if t > now { t } else { now } + interval;
    true
}

/// Copies an address of `family` (4 or 16 bytes of the frame at `src`) into a 16-byte field, zero-filled.
///
/// # Safety
/// `src` points at 4 (family 4) or 16 readable bytes at an even address; `dst` at 16 writable bytes at an
/// 8-aligned address.
#[inline(always)]
unsafe fn put_addr(dst: *mut u8, src: *const u8, family: u8) {
    let (s, d) = (src.cast::<u16>(), dst.cast::<u16>());
    // SAFETY: see the function's contract.
    unsafe {
        d.write(s.read());
        d.add(1).write(s.add(1).read());
        if family == 6 {
            let mut i = 2;
            while i < 8 {
                d.add(i).write(s.add(i).read());
                i += 1;
            }
        } else {
            d.add(2).cast::<u32>().write(0);
            d.add(4).cast::<u64>().write(0);
        }
    }
}

/// True when the advert's source is the one whose address and family are kept in a slot.
///
/// # Safety
/// `from.src` points at the source address in the frame, at an even address.
#[inline(always)]
unsafe fn same_source(family: u8, addr: &[u8; 16], from: &Source) -> bool {
    if family != from.family {
        return false;
    }
    let (s, o) = (from.src.cast::<u16>(), addr.as_ptr().cast::<u16>());
    // SAFETY: see the function's contract; addr is 16 bytes.
    unsafe {
        let mut same = s.read() == o.read() && s.add(1).read() == o.add(1).read();
        if from.family == 6 {
            let mut i = 2;
            while i < 8 {
                same &= s.add(i).read() == o.add(i).read();
                i += 1;
            }
        }
        same
    }
}

/// Whether a source that does not own the vhid's slot may hand an advert over: its own bucket (in the
/// second slot if it is the second source, else looked up in `carp_advert_sources`, where a new source
/// starts with a full bucket), then the vhid's bucket. A source found in the hash moves into the
/// second slot when that one's source has been quiet for `owner_idle_ns` past its bucket.
///
/// # Safety
/// `from.src` points at the source address in the frame, at an even address.
#[inline(always)]
unsafe fn other_source(limit: &mut AdvertLimit, vhid: u8, now: u64, from: &Source) -> bool {
    // SAFETY: see the function's contract.
    let ok = if unsafe { same_source(limit.second_family, &limit.second_addr, from) } {
        allow(
            &mut limit.second_tat_ns,
            now,
            limit.src_interval_ns,
            limit.src_tolerance_ns,
        )
    } else {
        // SAFETY: as above.
        unsafe { hashed_source(limit, vhid, now, from) }
    };
    ok && allow(
        &mut limit.vhid_tat_ns,
        now,
        limit.vhid_interval_ns,
        limit.vhid_tolerance_ns,
    )
}

/// The bucket of a source in neither slot: looked up in `carp_advert_sources`, then moved into the
/// second slot when its source has gone quiet, or written back; whether its own bucket allows the
/// advert. Never into the owner's slot: only the controller, which checks the HMAC, names the owner.
///
/// # Safety
/// `from.src` points at the source address in the frame, at an even address.
#[inline(always)]
unsafe fn hashed_source(limit: &mut AdvertLimit, vhid: u8, now: u64, from: &Source) -> bool {
    // 8-aligned on the stack so the key is built with word stores (put_addr's contract), not 20 byte
    // stores.
    #[repr(C, align(8))]
    struct Aligned(SourceKey);
    let mut aligned = Aligned(SourceKey {
        addr: [0; 16],
        vhid,
        family: from.family,
        pad: [0; 2],
    });
    // SAFETY: see the function's contract; addr is the first field of an 8-aligned key.
    unsafe { put_addr(aligned.0.addr.as_mut_ptr(), from.src, from.family) };
    let key = &aligned.0;
    let stored = ADVERT_SOURCES_MAP.get_ptr_mut(key);
    // SAFETY: an LRU hash value, valid until the next insert into this map (after the last use).
    let mut tat = stored.map(|p| unsafe { *p }).unwrap_or(0);
    let ok = allow(&mut tat, now, limit.src_interval_ns, limit.src_tolerance_ns);
    // A source moving into a slot leaves its hash entry stale, never read while it is in the slot;
    // should it lose the slot, the stale value only lets it start from an earlier (fuller) bucket, as
    // an evicted entry would.
    if limit.second_tat_ns + limit.owner_idle_ns <= now {
        limit.second_tat_ns = tat;
        limit.second_addr = key.addr;
        limit.second_family = from.family;
        return ok;
    }
    match stored {
        // SAFETY: as above.
        Some(p) => unsafe { *p = tat },
        None => {
            // When the map is full the least recently seen source makes room.
            let _ = ADVERT_SOURCES_MAP.insert(key, tat, BPF_ANY as u64);
        }
    }
    ok
}

/// Records a good advert and hands it to the controller, unless its source or its vhid is over its
/// event rate.
#[inline(always)]
fn accept(ctx: &XdpContext, hdr: &CarpHdr, vhid: u8, counters: Counters, from: &Source) {
    // CLOCK_MONOTONIC at tick resolution: enough for the controller's stall guard (master-down is at
    // least 3/256 s) and for the buckets, and it costs a fraction of bpf_ktime_get_ns, which is slow
    // under virtualisation.
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(limit) = ADVERT_LIMITS.get_ptr_mut(vhid as u32) else {
        return;
    };
    // SAFETY: an array slot, valid for the program's run. Two CPUs may race on the bucket: at worst an
    // extra event gets through, which the limits' margins absorb.
    let limit = unsafe { &mut *limit };
    // The source's own bucket first, so one flooding source only spends its own budget, never the
    // vhid's. The owner (the master the controller authenticated) is held to its own rate only;
    // everyone else also to the vhid's, so not even a flood from many spoofed addresses crowds the
    // master out.
    // SAFETY: `from.src` points into the frame (bounds checked by the caller's header access).
    let allowed = if unsafe { same_source(limit.owner_family, &limit.owner_addr, from) } {
        allow(
            &mut limit.owner_tat_ns,
            now,
            limit.src_interval_ns,
            limit.src_tolerance_ns,
        )
    } else {
        // SAFETY: as above.
        unsafe { other_source(limit, vhid, now, from) }
    };
    if !allowed {
        // Not recorded in carp_last_advert either: the stall guard trusts that map, and a flood must
        // not overwrite the real master's last advert there.
        counters.bump(|s| &mut s.events_ratelimited);
        return;
    }
    if let Some(last) = LAST_ADVERT.get_ptr_mut(vhid as u32) {
        // SAFETY: an array slot, valid for the program's run; `from.src` as above.
        unsafe {
            (*last).ktime_ns = now;
            put_addr((*last).src.as_mut_ptr(), from.src, from.family);
            // family, advbase, advskew, demote: one 32-bit store (the pad after them stays zero).
            core::ptr::addr_of_mut!((*last).family)
                .cast::<u32>()
                .write(u32::from_ne_bytes([
                    from.family,
                    hdr.advbase(),
                    hdr.advskew(),
                    hdr.demote(),
                ]));
            // The header as received, so the controller can verify it before trusting the record.
            let words = hdr.bytes.as_ptr().cast::<u16>();
            let carp = (*last).carp.as_mut_ptr().cast::<u16>();
            let mut i = 0;
            while i < CARP_HEADER_LEN / 2 {
                carp.add(i).write(words.add(i).read());
                i += 1;
            }
        }
    }
    // A full ring makes bpf_ringbuf_reserve fail, after taking the ring's lock; once it has, the ring is
    // believed full for the rest of the clock tick (1-4 ms), so a burst into a full ring (a stalled
    // controller) costs one failed reserve per tick, not one per advert, and the good path asks the
    // ring nothing before its reserve. An event lost that way is still in carp_last_advert, where the
    // controller's stall guard looks.
    if limit.ring_full_ns == now {
        counters.bump(|s| &mut s.events_lost);
        return;
    }
    let Ok(eth) = eth::header(ctx) else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve(0) else {
        limit.ring_full_ns = now;
        counters.bump(|s| &mut s.events_lost);
        return;
    };
    let ev: *mut AdvertEvent = entry.as_mut_ptr();
    // SAFETY: ev points at a reserved, 8-aligned ring-buffer record the size of AdvertEvent and every
    // byte of it is written (padding included: the record goes to userspace); the frame pointers were
    // bounds checked; every source offset is even (see carp::CarpHdr).
    unsafe {
        (*ev).ktime_ns = now;
        (*ev).ifindex = (*ctx.ctx).ingress_ifindex;
        // family, ttl, unicast, pad: one 32-bit store.
        core::ptr::addr_of_mut!((*ev).family)
            .cast::<u32>()
            .write(u32::from_ne_bytes([
                from.family,
                from.ttl,
                from.unicast as u8,
                0,
            ]));
        put_addr((*ev).src.as_mut_ptr(), from.src, from.family);
        put_addr((*ev).dst.as_mut_ptr(), from.dst, from.family);
        // src_mac and pad2: three 16-bit words of the Ethernet source, then zero.
        let mac = eth.src.as_ptr().cast::<u16>();
        let out = (*ev).src_mac.as_mut_ptr().cast::<u16>();
        out.write(mac.read());
        out.add(1).write(mac.add(1).read());
        out.add(2).write(mac.add(2).read());
        out.add(3).write(0);
        let words = hdr.bytes.as_ptr().cast::<u16>();
        let carp = (*ev).carp.as_mut_ptr().cast::<u16>();
        let mut i = 0;
        while i < CARP_HEADER_LEN / 2 {
            carp.add(i).write(words.add(i).read());
            i += 1;
        }
        (*ev).pad3 = [0; 4];
    }
    entry.submit(0);
    counters.bump(|s| &mut s.adverts_to_controller);
}
