//! The BTF-described maps the program shares with the controller (names in carp_common::maps), and
//! the per-vhid counter helper. Counters are per-CPU so the fast path never takes an atomic.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use carp_common::maps::{
    ADVERT_SOURCES, AdvertEvent, AdvertLimit, BALANCE_SLOTS, BalanceGroup, CarpStats, FLOW_SLOTS,
    FlowConf, FlowEntry, FlowEvent, FlowKey, FlowScratch, FlowStats, LastAdvert, MAX_VIPS,
    SourceKey, VHID_SLOTS, VhidEntry, VhidState, VipKey,
};

/// Per-vhid counters (`carp_stats`); index 0 collects frames whose vhid could not be read.
#[btf_map(name = "carp_stats")]
pub static STATS: PerCpuArray<CarpStats, { VHID_SLOTS as usize }> = PerCpuArray::new();

/// Per-vhid configuration written by the controller (`carp_vhids`).
#[btf_map(name = "carp_vhids")]
pub static VHIDS: Array<VhidEntry, { VHID_SLOTS as usize }> = Array::new();

/// Virtual addresses -> vhid (`carp_vips`).
#[btf_map(name = "carp_vips")]
pub static VIPS: HashMap<VipKey, u8, { MAX_VIPS as usize }> = HashMap::new();

/// Last good advert per vhid (`carp_last_advert`), read by the controller before it declares a master down.
#[btf_map(name = "carp_last_advert")]
pub static LAST_ADVERT: Array<LastAdvert, { VHID_SLOTS as usize }> = Array::new();

/// Balancing groups keyed by leader vhid (`carp_balance`), written by the controller in one update each.
#[btf_map(name = "carp_balance")]
pub static BALANCE: Array<BalanceGroup, { BALANCE_SLOTS as usize }> = Array::new();

/// Advert event limits and the vhid-wide bucket per vhid (`carp_advert_limits`), set up by the loader.
#[btf_map(name = "carp_advert_limits")]
pub static ADVERT_LIMITS: Array<AdvertLimit, { VHID_SLOTS as usize }> = Array::new();

/// One bucket (its theoretical arrival time, ns) per advert source of each vhid (`carp_advert_sources`).
/// An LRU hash: a flood of spoofed sources recycles the oldest entries instead of failing inserts.
#[btf_map(name = "carp_advert_sources")]
pub static ADVERT_SOURCES_MAP: LruHashMap<SourceKey, u64, { ADVERT_SOURCES as usize }> =
    LruHashMap::new();

/// Size of the advert ring buffer: 256 KiB holds about 2,000 events.
pub const EVENTS_BYTES: usize = 256 * 1024;

/// Good adverts for the controller (`carp_events`).
#[btf_map(name = "carp_events")]
pub static EVENTS: RingBuf<AdvertEvent, EVENTS_BYTES> = RingBuf::new();

/// The counters of one vhid on this CPU, if the map has the slot (it always does for a u8 index).
#[inline(always)]
pub fn stats(vhid: u8) -> Option<&'static mut CarpStats> {
    // SAFETY: per-CPU slot, only this program on this CPU writes it while it runs.
    STATS.get_ptr_mut(vhid as u32).map(|p| unsafe { &mut *p })
}

/// One vhid's counters on this CPU, looked up once and bumped many times.
#[derive(Clone, Copy)]
pub struct Counters(Option<*mut CarpStats>);

impl Counters {
    /// Looks up the slot of `vhid`.
    #[inline(always)]
    pub fn of(vhid: u8) -> Self {
        Self(STATS.get_ptr_mut(vhid as u32))
    }
    /// Bumps one counter.
    #[inline(always)]
    pub fn bump(self, field: impl FnOnce(&mut CarpStats) -> &mut u64) {
        if let Some(p) = self.0 {
            // SAFETY: per-CPU slot, only this program on this CPU writes it while it runs.
            *field(unsafe { &mut *p }) += 1;
        }
    }
}

/// Bumps one counter of one vhid.
#[inline(always)]
pub fn count(vhid: u8, field: impl FnOnce(&mut CarpStats) -> &mut u64) {
    if let Some(s) = stats(vhid) {
        *field(s) += 1;
    }
}

/// The state the controller set for a vhid.
#[inline(always)]
pub fn vhid_entry(vhid: u8) -> Option<&'static VhidEntry> {
    VHIDS.get(vhid as u32)
}

/// True when the vhid's state is MASTER and its lease (if any) has not run out.
#[inline(always)]
pub fn is_master(entry: &VhidEntry) -> bool {
    // The lease is checked only for MASTER entries that carry one, so other frames pay nothing.
    entry.state == VhidState::Master as u8
        && (entry.lease_until_ns == 0
            // SAFETY: the helper has no preconditions.
            || unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() } <= entry.lease_until_ns)
}

/// The vhid serving a virtual address, if any.
#[inline(always)]
pub fn vip_vhid(key: &VipKey) -> Option<u8> {
    // SAFETY: the value is a plain u8 copied out at once.
    VIPS.get_ptr(key).map(|p| unsafe { *p })
}

/// The balancing group led by `leader`, if that slot is in use.
#[inline(always)]
pub fn balance_group(leader: u8) -> Option<&'static BalanceGroup> {
    BALANCE
        .get(leader as u32)
        .filter(|g| g.mode != carp_common::maps::BalanceMode::None as u8)
}

/// The flow table (`carp_flows`, issue #7): one shared LRU hash, not a per-CPU one, because both
/// directions of a flow (arriving on different CPUs and different carpdevs) and the controller's
/// inserts of learned flows must all see one entry; the counters in it are updated with atomic adds.
/// The controller pins it once and every carpdev's program reuses that pin.
#[btf_map(name = "carp_flows")]
pub static FLOWS: LruHashMap<FlowKey, FlowEntry, { FLOW_SLOTS as usize }> = LruHashMap::new();

/// Per-carpdev flow settings (`carp_flow_conf`): the one lookup every frame pays when tracking is off.
#[btf_map(name = "carp_flow_conf")]
pub static FLOW_CONF: Array<FlowConf, 1> = Array::new();

/// Per-carpdev flow counters (`carp_flow_stats`).
#[btf_map(name = "carp_flow_stats")]
pub static FLOW_STATS: PerCpuArray<FlowStats, 1> = PerCpuArray::new();

/// Per-CPU scratch of the flow decision (kernel-internal, not pinned).
#[btf_map(name = "carp_flow_scratch")]
pub static FLOW_SCRATCH: PerCpuArray<FlowScratch, 1> = PerCpuArray::new();

/// Per-CPU room for one `VipKey` (kernel-internal, not pinned): the accept-mode check builds its key
/// here, because the program's stack has no 24 bytes to spare.
#[btf_map(name = "carp_vip_scratch")]
pub static VIP_SCRATCH: PerCpuArray<VipKey, 1> = PerCpuArray::new();

/// Size of the flow event ring buffer: 1 MiB holds about 7,000 events.
pub const FLOW_EVENTS_BYTES: usize = 1024 * 1024;

/// New flows and TCP state changes for the controller (`carp_flow_events`), shared like `carp_flows`.
#[btf_map(name = "carp_flow_events")]
pub static FLOW_EVENTS: RingBuf<FlowEvent, FLOW_EVENTS_BYTES> = RingBuf::new();
