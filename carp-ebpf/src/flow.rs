//! The flow table decision (issue #7, spec §8): tracks every TCP, UDP and ICMP echo flow crossing a
//! carpdev in `carp_flows`, and in stateful mode (`[flows] stateful = true`) lets through only flows the
//! cluster knows, plus new TCP SYNs and new UDP/ICMP flows arriving on an inside carpdev.
//!
//! What this module owns: the canonical key (both directions of a flow land on one entry, so a reply
//! seen on the other carpdev, or on the other gateway after a failover, matches), the TCP state followed
//! from the flags (SYN, SYN-ACK, ESTABLISHED, FIN, CLOSED), the per-direction packet and byte counts, and
//! the events that tell the controller about new flows and state changes. Counts the controller reads by
//! scanning the map, so the fast path sends no event per packet. Events are rate-limited per CPU and
//! counted when dropped (rate limit or full ring); the kernel never logs.
//!
//! With tracking off a frame costs one array lookup (`carp_flow_conf`) and nothing else.
//!
//! Not tracked, passed: ICMP errors and every other non-echo ICMP/ICMPv6 message (neighbour discovery,
//! PMTU), IGMP, IPv4 fragments after the first (they carry no ports; reassembly needs the first, which
//! is checked), IPv6 hop-by-hop (MLD). Stateful mode drops every other protocol (counted as `proto_drop`).
use crate::{
    eth::L2,
    ipv4::Ipv4Hdr,
    ipv6::Ipv6Hdr,
    maps::{FLOW_CONF, FLOW_EVENTS, FLOW_SCRATCH, FLOW_STATS, FLOWS},
    packet::{be16, ptr_at},
};
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_NOEXIST, xdp_action, xdp_md},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, generated::bpf_xdp_load_bytes},
    programs::XdpContext,
};
use carp_common::{
    maps::{
        FLOW_DEFER_MAX_FRAME, FLOW_EVENT_DEFER, FLOW_EVENT_NEW, FLOW_EVENT_STATE, FLOW_FIN_HI,
        FLOW_FIN_LO, FLOW_MODE_OFF, FLOW_MODE_STATEFUL, FlowConf, FlowDeferEvent, FlowEntry,
        FlowKey, FlowStats, FlowTcpState, MAX_LIVE_PEERS,
    },
    proto::{ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};

// Only the flow tracker skips these two.
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_IGMP: u8 = 2;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The first 14 bytes of a TCP header: ports and flags.
#[repr(C)]
struct TcpHead {
    sport: [u8; 2],
    dport: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    off: u8,
    flags: u8,
}

/// A UDP header's ports.
#[repr(C)]
struct Ports {
    sport: [u8; 2],
    dport: [u8; 2],
}

/// An ICMP/ICMPv6 echo header.
#[repr(C)]
struct IcmpEcho {
    ty: u8,
    code: u8,
    csum: [u8; 2],
    id: [u8; 2],
    seq: [u8; 2],
}

/// The verdict for a frame the earlier decisions (`vmac`, `responder`) passed: unchanged when tracking
/// is off (one lookup), otherwise the flow table's.
#[inline(always)]
pub fn after(ctx: &XdpContext, l2: L2, verdict: u32) -> u32 {
    if verdict & TRACKED != 0 {
        // The balancing filter already consulted the flow table for this frame.
        return verdict & !TRACKED;
    }
    if verdict != xdp_action::XDP_PASS {
        return verdict;
    }
    match FLOW_CONF.get(0) {
        Some(conf) if conf.mode != FLOW_MODE_OFF => track(ctx, l2, 0),
        _ => verdict,
    }
}

/// True when flows are tracked on this carpdev (the balancing filter then asks `track`).
#[inline(always)]
pub fn tracking() -> bool {
    matches!(FLOW_CONF.get(0), Some(conf) if conf.mode != FLOW_MODE_OFF)
}

/// `track`'s `bal` argument: the frame is to a balancing group's interface MAC.
pub const BAL: u32 = 1 << 31;
/// `track`'s `bal` argument: the frame's bucket is MASTER here. The low 8 bits are the bucket's
/// carpnode vhid, the owner written into a new flow.
pub const BAL_OURS: u32 = 1 << 30;
/// Flag on `track`'s answer: the flow table decided against the bucket (kept here, or left to its
/// live owner), so the balancing filter must not apply the bucket rule.
pub const STICKY: u32 = 1 << 16;

/// Flag on the balancing filter's verdict: the flow settings were read and, with tracking on, `track`
/// already ran for this frame (`after` strips it).
pub const TRACKED: u32 = 1 << 17;

/// The balanced verdict of a frame the flow table did not decide: the bucket's.
#[inline(always)]
fn by_bucket(bal: u32, verdict: u32) -> u32 {
    if bal & BAL != 0 && bal & BAL_OURS == 0 {
        xdp_action::XDP_DROP
    } else {
        verdict
    }
}

/// Who serves a known flow of a balanced frame (module doc of `balance`, "Established flows"):
/// `Some(true)` here although the bucket is elsewhere, `Some(false)` its live creator although the
/// bucket is here, `None` the bucket decides.
#[inline(always)]
fn sticky_owner(conf: &FlowConf, creator: u32, now: u64) -> Option<bool> {
    if conf.sticky == 0 || now > conf.live_until_ns {
        // Without a fresh view of who is alive (no [pfsync], or our controller is gone) only the
        // bucket is safe: it is what the peers fall back to.
        return None;
    }
    if creator == conf.node_id {
        return Some(true);
    }
    let mut i = 0;
    while i < MAX_LIVE_PEERS {
        if conf.live_peers[i] == creator && creator != 0 {
            return Some(false);
        }
        i += 1;
    }
    None
}

/// Runs `f` on this CPU's flow counters.
#[inline(always)]
fn count(f: impl FnOnce(&mut FlowStats) -> &mut u64) {
    if let Some(p) = FLOW_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it while it runs.
        *f(unsafe { &mut *p }) += 1;
    }
}

/// What a frame is to the flow table once its headers are read.
enum Parsed {
    /// A trackable flow: the key's fields in packet order (not yet canonical).
    Flow {
        sport: u16,
        dport: u16,
        proto: u8,
        tcp_flags: u8,
        len: u64,
    },
    /// Passed without tracking (ICMP errors, ND, later fragments, hop-by-hop).
    Untracked,
    /// A protocol stateful mode does not track.
    OtherProto,
    /// The headers were cut short.
    Truncated,
}

/// Reads the L4 header at `off` of a `proto` frame carrying `len` IP bytes.
#[inline(always)]
fn l4(ctx: &XdpContext, proto: u8, off: usize, len: u64, icmp: u8) -> Parsed {
    match proto {
        IPPROTO_TCP => match ptr_at::<TcpHead>(ctx, off) {
            // SAFETY: ptr_at checked the bounds.
            Ok(t) => unsafe {
                Parsed::Flow {
                    sport: be16((*t).sport),
                    dport: be16((*t).dport),
                    proto,
                    tcp_flags: (*t).flags,
                    len,
                }
            },
            Err(_) => Parsed::Truncated,
        },
        IPPROTO_UDP => match ptr_at::<Ports>(ctx, off) {
            // SAFETY: ptr_at checked the bounds.
            Ok(u) => unsafe {
                Parsed::Flow {
                    sport: be16((*u).sport),
                    dport: be16((*u).dport),
                    proto,
                    tcp_flags: 0,
                    len,
                }
            },
            Err(_) => Parsed::Truncated,
        },
        p if p == icmp => match ptr_at::<IcmpEcho>(ctx, off) {
            Ok(i) => {
                // SAFETY: ptr_at checked the bounds.
                let (ty, id) = unsafe { ((*i).ty, be16((*i).id)) };
                // Echo request/reply (ICMP 8/0, ICMPv6 128/129): the id plays both ports, so the
                // request and its reply give one key.
                let echo = if p == IPPROTO_ICMP {
                    ty == 8 || ty == 0
                } else {
                    ty == 128 || ty == 129
                };
                if echo {
                    Parsed::Flow {
                        sport: id,
                        dport: id,
                        proto,
                        tcp_flags: 0,
                        len,
                    }
                } else {
                    Parsed::Untracked
                }
            }
            Err(_) => Parsed::Truncated,
        },
        // Multicast membership is the link's control plane, like neighbour discovery.
        IPPROTO_IGMP => Parsed::Untracked,
        _ => Parsed::OtherProto,
    }
}

/// True if the key's `lo` endpoint sorts above its `hi` one: address bytes first (as big-endian
/// words), then the port, the order of the sync module's `Endpoint`.
#[inline(always)]
fn misordered(k: &FlowKey) -> bool {
    let mut i = 0;
    while i < 16 {
        let x = u32::from_be_bytes([
            k.lo_addr[i],
            k.lo_addr[i + 1],
            k.lo_addr[i + 2],
            k.lo_addr[i + 3],
        ]);
        let y = u32::from_be_bytes([
            k.hi_addr[i],
            k.hi_addr[i + 1],
            k.hi_addr[i + 2],
            k.hi_addr[i + 3],
        ]);
        if x != y {
            return x > y;
        }
        i += 4;
    }
    k.lo_port > k.hi_port
}

/// The next TCP state after a segment with `flags` going in direction `dir` (0 = lo -> hi), and the
/// FIN bits; states only move forward here (a new SYN on a CLOSED flow is the caller's business).
#[inline(always)]
fn tcp_next(state: u8, fins: u8, flags: u8, dir: u8) -> (u8, u8) {
    let mut fins = fins;
    if flags & TCP_RST != 0 {
        return (FlowTcpState::Closed as u8, fins);
    }
    let mut next = state;
    let syn = flags & TCP_SYN != 0;
    let ack = flags & TCP_ACK != 0;
    if syn && !ack && state == FlowTcpState::None as u8 {
        next = FlowTcpState::Syn as u8;
    } else if syn && ack && state <= FlowTcpState::Syn as u8 {
        next = FlowTcpState::SynAck as u8;
    } else if !syn && ack && state == FlowTcpState::SynAck as u8 {
        next = FlowTcpState::Established as u8;
    } else if !syn && state == FlowTcpState::None as u8 {
        // Picked up mid-stream (tracking mode, or learned without a state): it is past the handshake.
        next = FlowTcpState::Established as u8;
    }
    if flags & TCP_FIN != 0 {
        fins |= if dir == 0 { FLOW_FIN_LO } else { FLOW_FIN_HI };
        next = if fins & (FLOW_FIN_LO | FLOW_FIN_HI) == (FLOW_FIN_LO | FLOW_FIN_HI) {
            FlowTcpState::Closed as u8
        } else if next < FlowTcpState::Fin as u8 {
            FlowTcpState::Fin as u8
        } else {
            next
        };
    }
    if next < state {
        next = state;
    }
    (next, fins)
}

/// Hands an event to the controller unless this CPU's budget for this millisecond is spent or the
/// ring is full (both counted).
#[inline(never)]
fn emit(kind: u8, key: *const FlowKey, entry: *const FlowEntry, now: u64, budget: u32) {
    if !take_budget(now, budget) {
        count(|s| &mut s.events_ratelimited);
        return;
    }
    match FLOW_EVENTS.reserve(0) {
        Some(mut ev) => {
            let p = ev.as_mut_ptr();
            // SAFETY: the reservation is a whole FlowEvent; `entry` points at a live map value or a
            // stack copy.
            unsafe {
                (*p).kind = kind;
                (*p).pad = [0; 7];
                (*p).key = *key;
                (*p).entry = *entry;
            }
            ev.submit(0);
            count(|s| &mut s.events);
        }
        None => count(|s| &mut s.events_lost),
    }
}

/// Takes one event from this CPU's budget for this millisecond (`budget` 0 = unlimited); false if
/// it is spent.
#[inline(never)]
fn take_budget(now: u64, budget: u32) -> bool {
    if let Some(r) = FLOW_SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it while it runs.
        let r = unsafe { &mut *r };
        let slot = now >> 20;
        if r.slot != slot {
            r.slot = slot;
            r.count = 0;
        }
        if budget != 0 && r.count >= budget as u64 {
            return false;
        }
        r.count += 1;
    }
    true
}

/// `*p += v` as one atomic instruction (BPF_ATOMIC add); the result is not needed, so no fetch.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    // core's AtomicU64 has no read-modify-write on the BPF target, the intrinsic does.
    #[cfg(target_arch = "bpf")]
    // SAFETY: the caller hands a valid, aligned u64.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, v,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller hands a valid, aligned u64.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(p)
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Adds one frame of `len` bytes in direction `dir` to a shared entry.
#[inline(always)]
fn account(e: *mut FlowEntry, dir: u8, len: u64, now: u64) {
    // SAFETY: `e` is a live map value; the counters are 8-byte aligned u64s shared by every CPU, so
    // they are only ever changed with atomic adds.
    unsafe {
        let (pk, by) = if dir == 0 {
            (&raw mut (*e).packets[0], &raw mut (*e).bytes[0])
        } else {
            (&raw mut (*e).packets[1], &raw mut (*e).bytes[1])
        };
        atomic_add(pk, 1);
        atomic_add(by, len);
        (*e).last_seen_ns = now;
    }
}

/// The flow table decision for an IPv4 or IPv6 frame (tracking on). `bal` is 0, or `BAL` with
/// `BAL_OURS` and the bucket's vhid for a frame the balancing filter hands over; then the answer is
/// the final verdict, with `STICKY` when the flow table overruled the bucket.
#[inline(never)]
pub fn track(ctx: &XdpContext, l2: L2, bal: u32) -> u32 {
    let verdict = track_flow(ctx, l2, bal);
    if verdict & STICKY != 0 {
        verdict
    } else {
        by_bucket(bal, verdict)
    }
}

// Keys and entries are passed by reference on purpose: by value they would be copied onto the stack.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
fn track_flow(ctx: &XdpContext, l2: L2, bal: u32) -> u32 {
    let Some(conf) = FLOW_CONF.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let stateful = conf.mode == FLOW_MODE_STATEFUL;
    // The key and a new entry are built in per-CPU scratch: on the stack they would not fit beside the
    // entry point's frame.
    let Some(sc) = FLOW_SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: per-CPU slot, only this program on this CPU uses it while it runs.
    let sc = unsafe { &mut *sc };
    let key = &mut sc.key;
    key.pad = [0; 2];
    let parsed = if l2.proto == ETH_P_IP {
        let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, l2.l3) else {
            return truncated(stateful);
        };
        // SAFETY: ptr_at checked the bounds.
        let ip = unsafe { &*ip };
        key.family = 4;
        key.lo_addr = [0; 16];
        key.hi_addr = [0; 16];
        key.lo_addr[..4].copy_from_slice(&ip.src);
        key.hi_addr[..4].copy_from_slice(&ip.dst);
        if be16(ip.frag) & 0x1fff != 0 {
            Parsed::Untracked
        } else {
            l4(
                ctx,
                ip.proto,
                l2.l3 + ip.header_len(),
                be16(ip.tot_len) as u64,
                IPPROTO_ICMP,
            )
        }
    } else if l2.proto == ETH_P_IPV6 {
        let Ok(ip) = ptr_at::<Ipv6Hdr>(ctx, l2.l3) else {
            return truncated(stateful);
        };
        // SAFETY: ptr_at checked the bounds.
        let ip = unsafe { &*ip };
        key.family = 6;
        key.lo_addr = ip.src;
        key.hi_addr = ip.dst;
        if ip.nexthdr == IPPROTO_HOPOPTS {
            Parsed::Untracked
        } else {
            l4(
                ctx,
                ip.nexthdr,
                l2.l3 + core::mem::size_of::<Ipv6Hdr>(),
                be16(ip.payload_len) as u64 + 40,
                IPPROTO_ICMPV6,
            )
        }
    } else {
        return xdp_action::XDP_PASS;
    };
    let (proto, tcp_flags, len) = match parsed {
        Parsed::Flow {
            sport,
            dport,
            proto,
            tcp_flags,
            len,
        } => {
            key.lo_port = sport;
            key.hi_port = dport;
            (proto, tcp_flags, len)
        }
        Parsed::Untracked => {
            count(|s| &mut s.untracked_pass);
            return xdp_action::XDP_PASS;
        }
        Parsed::OtherProto if stateful => {
            count(|s| &mut s.proto_drop);
            return xdp_action::XDP_DROP;
        }
        Parsed::Truncated => return truncated(stateful),
        Parsed::OtherProto => return xdp_action::XDP_PASS,
    };
    key.proto = proto;
    // The key holds (src, dst) so far; canonical order puts the lower endpoint first.
    let dir: u8 = if misordered(key) {
        core::mem::swap(&mut key.lo_addr, &mut key.hi_addr);
        core::mem::swap(&mut key.lo_port, &mut key.hi_port);
        1
    } else {
        0
    };
    let key: *const FlowKey = &sc.key;
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let budget = conf.events_per_ms;
    let tcp = proto == IPPROTO_TCP;
    let syn_only = tcp && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    // SAFETY: `key` points into the scratch slot, alive for the whole program run.
    if let Some(e) = FLOWS.get_ptr_mut(unsafe { &*key }) {
        // SAFETY: a live map value; see `account` for the shared fields.
        let (state, fins) = unsafe { ((*e).tcp_state, (*e).flags) };
        // A new SYN on a finished flow is a new connection reusing the ports: start it afresh below.
        let reuse = syn_only && state == FlowTcpState::Closed as u8;
        if !reuse {
            let mut sticky = 0;
            if bal != 0 {
                // SAFETY: a live map value; the controller replacing it meanwhile (a peer's flow on
                // the same 5-tuple) costs at most this frame's decision.
                let creator = unsafe { (*e).creator };
                let ours = bal & BAL_OURS != 0;
                match sticky_owner(conf, creator, now) {
                    Some(true) if !ours => {
                        count(|s| &mut s.kept_here);
                        sticky = STICKY;
                    }
                    Some(false) if ours => {
                        count(|s| &mut s.left_to_owner);
                        return xdp_action::XDP_DROP | STICKY;
                    }
                    Some(true) | Some(false) => {}
                    // The owner is gone (or stickiness is off): its flows follow their buckets.
                    None if !ours => return xdp_action::XDP_DROP,
                    None => {}
                }
            }
            count(|s| &mut s.known);
            account(e, dir, len, now);
            if tcp {
                let (next, nfins) = tcp_next(state, fins, tcp_flags, dir);
                if next != state || nfins != fins {
                    // SAFETY: as above; a race with another CPU loses at most one step, which
                    // the next segment redoes.
                    unsafe {
                        (*e).tcp_state = next;
                        (*e).flags = nfins | (fins & !(FLOW_FIN_LO | FLOW_FIN_HI));
                    }
                }
                if next != state {
                    count(|s| &mut s.tcp_changes);
                    emit(FLOW_EVENT_STATE, key, e, now, budget);
                }
            }
            return xdp_action::XDP_PASS | sticky;
        }
    }
    // A new flow in a bucket of another gateway is that gateway's to create.
    if bal & BAL != 0 && bal & BAL_OURS == 0 {
        return xdp_action::XDP_DROP;
    }
    // Unknown flow (or a reused finished one): stateful mode lets only the inside start flows,
    // TCP only with a SYN.
    if stateful && (conf.inside == 0 || (tcp && !syn_only)) {
        count(|s| &mut s.stateful_drop);
        return xdp_action::XDP_DROP;
    }
    let (state, fins) = if tcp {
        tcp_next(FlowTcpState::None as u8, 0, tcp_flags, dir)
    } else {
        (FlowTcpState::None as u8, 0)
    };
    // SAFETY: the helper has no preconditions.
    let rnd = unsafe { bpf_get_prandom_u32() } as u64;
    let entry = &mut sc.entry;
    // Random high half, clock low half: unique per creator with overwhelming probability and never
    // reused after a restart, without any shared counter.
    entry.id = (rnd << 32) | (now & 0xffff_ffff);
    entry.created_ns = now;
    entry.last_seen_ns = now;
    entry.creator = conf.node_id;
    entry.owner = if bal & BAL != 0 {
        bal as u8
    } else {
        conf.owner
    };
    entry.tcp_state = state;
    entry.flags = fins;
    entry.pad = 0;
    if dir == 0 {
        entry.packets = [1, 0];
        entry.bytes = [len, 0];
    } else {
        entry.packets = [0, 1];
        entry.bytes = [0, len];
    }
    let entry: *const FlowEntry = &sc.entry;
    // A reused flow is replaced; a brand-new one must not overwrite what another CPU just created.
    let flags = if syn_only { 0 } else { BPF_NOEXIST as u64 };
    // SAFETY: both point into the scratch slot.
    if FLOWS
        .insert(unsafe { &*key }, unsafe { &*entry }, flags)
        .is_err()
    {
        count(|s| &mut s.insert_failed);
        return xdp_action::XDP_PASS;
    }
    count(|s| &mut s.new_flows);
    if conf.defer != 0 {
        // A deferred first packet is an event too: beyond the budget (a SYN flood) it passes
        // undeferred, and its new-flow event is counted as rate-limited.
        if !take_budget(now, budget) {
            count(|s| &mut s.events_ratelimited);
            return xdp_action::XDP_PASS;
        }
        if defer(ctx.as_ptr() as *mut xdp_md, key, entry) {
            count(|s| &mut s.events);
            return xdp_action::XDP_DROP;
        }
        // Not deferred (oversize, ring full): the usual event, its budget already taken.
        emit(FLOW_EVENT_NEW, key, entry, now, 0);
        return xdp_action::XDP_PASS;
    }
    emit(FLOW_EVENT_NEW, key, entry, now, budget);
    xdp_action::XDP_PASS
}

/// Deferral (spec §8): copies the first packet of a flow created here, with the flow, into a
/// `FlowDeferEvent` for the controller, which re-injects it once a peer has the flow (or after 20 ms).
/// XDP cannot hold a packet, so the controller holds the copy. True if the frame was handed over (the
/// caller drops it); false leaves it to pass as usual: larger than `FLOW_DEFER_MAX_FRAME`, or the ring
/// is full (both counted; a first packet is never lost to deferral). It replaces the flow's
/// `FLOW_EVENT_NEW` and shares its per-CPU budget (the caller takes it).
#[inline(never)]
fn defer(ctx: *mut xdp_md, key: *const FlowKey, entry: *const FlowEntry) -> bool {
    // SAFETY: the context pointer the kernel handed the program.
    let (data, end, ifindex) = unsafe { ((*ctx).data, (*ctx).data_end, (*ctx).ingress_ifindex) };
    let len = end.wrapping_sub(data);
    if len == 0 || len as usize > FLOW_DEFER_MAX_FRAME {
        count(|s| &mut s.defer_oversize);
        return false;
    }
    let Some(mut ev) = FLOW_EVENTS.reserve_untyped::<FlowDeferEvent>(0) else {
        count(|s| &mut s.defer_lost);
        return false;
    };
    let p = ev.as_mut_ptr();
    // The verifier needs the copy's length bounded by the buffer in the very register handed to the
    // helper. black_box keeps LLVM from folding the two checks into one on a temporary (`n - 1 <
    // 1536`), which the verifier cannot map back onto `n`; a spilled 64-bit scalar keeps its bounds.
    let n = core::hint::black_box(len as u64);
    if n as usize > FLOW_DEFER_MAX_FRAME {
        ev.discard(0);
        count(|s| &mut s.defer_oversize);
        return false;
    }
    let n = core::hint::black_box(n);
    if n == 0 {
        ev.discard(0);
        count(|s| &mut s.defer_oversize);
        return false;
    }
    // SAFETY: the reservation is a whole FlowDeferEvent; `n` bytes fit its frame; `key` and `entry`
    // point into the scratch slot.
    let rc = unsafe {
        (*p).head.kind = FLOW_EVENT_DEFER;
        (*p).head.pad = [0; 7];
        (*p).head.key = *key;
        (*p).head.entry = *entry;
        (*p).ifindex = ifindex;
        (*p).len = n as u32;
        bpf_xdp_load_bytes(ctx, 0, (&raw mut (*p).frame).cast(), n as u32)
    };
    if rc != 0 {
        ev.discard(0);
        count(|s| &mut s.defer_lost);
        return false;
    }
    ev.submit(0);
    count(|s| &mut s.deferred);
    true
}

/// The verdict for a frame cut short inside its headers.
#[inline(always)]
fn truncated(stateful: bool) -> u32 {
    if stateful {
        count(|s| &mut s.stateful_drop);
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}
