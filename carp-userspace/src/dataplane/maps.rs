//! Typed access to the dataplane's maps: the controller writes the vhid table, the VIPs and the
//! balancing groups, reads the per-vhid counters (summed over CPUs), the last advert per vhid and the
//! advert events. Taking the maps also puts the default advert event limits into every vhid slot that
//! has none yet.
use super::{DataplaneError, pin_dir};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
};
use carp_common::maps::{
    AdvertEvent, AdvertLimit, BalanceGroup, CarpStats, LastAdvert, MAP_ADVERT_LIMITS, MAP_BALANCE,
    MAP_EVENTS, MAP_LAST_ADVERT, MAP_STATS, MAP_VHIDS, MAP_VIPS, VHID_SLOTS, VhidEntry, VipKey,
};
use std::{net::IpAddr, path::Path};

/// The controller's handles on one carpdev's maps.
pub struct Maps {
    /// Per-vhid counters.
    pub stats: PerCpuArray<MapData, CarpStats>,
    /// The vhid table.
    pub vhids: Array<MapData, VhidEntry>,
    /// VIP -> vhid.
    pub vips: HashMap<MapData, VipKey, u8>,
    /// Last good advert per vhid.
    pub last_advert: Array<MapData, LastAdvert>,
    /// Balancing groups, keyed by leader vhid.
    pub balance: Array<MapData, BalanceGroup>,
    /// Advert event limits (and the vhid-wide bucket), keyed by vhid.
    pub advert_limits: Array<MapData, AdvertLimit>,
    /// Advert events (absent when opened read-only from pins by a reader such as carpctl).
    pub events: Option<RingBuf<MapData>>,
}

/// The error of operation `op` on map `map`.
fn map_err(map: &'static str, op: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, op, source }
}

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name));
        let mut maps = Self {
            stats: take(MAP_STATS)?
                .try_into()
                .map_err(map_err(MAP_STATS, "open"))?,
            vhids: take(MAP_VHIDS)?
                .try_into()
                .map_err(map_err(MAP_VHIDS, "open"))?,
            vips: take(MAP_VIPS)?
                .try_into()
                .map_err(map_err(MAP_VIPS, "open"))?,
            last_advert: take(MAP_LAST_ADVERT)?
                .try_into()
                .map_err(map_err(MAP_LAST_ADVERT, "open"))?,
            balance: take(MAP_BALANCE)?
                .try_into()
                .map_err(map_err(MAP_BALANCE, "open"))?,
            advert_limits: take(MAP_ADVERT_LIMITS)?
                .try_into()
                .map_err(map_err(MAP_ADVERT_LIMITS, "open"))?,
            events: Some(
                take(MAP_EVENTS)?
                    .try_into()
                    .map_err(map_err(MAP_EVENTS, "open"))?,
            ),
        };
        maps.default_advert_limits()?;
        Ok(maps)
    }

    /// Writes `AdvertLimit::DEFAULT` into every slot without limits (a fresh map is all zeroes, which
    /// would let every advert through); slots adopted from pins keep their settings and buckets.
    fn default_advert_limits(&mut self) -> Result<(), DataplaneError> {
        for vhid in 0..VHID_SLOTS {
            let cur = self
                .advert_limits
                .get(&vhid, 0)
                .map_err(map_err(MAP_ADVERT_LIMITS, "lookup"))?;
            if cur.vhid_interval_ns == 0 && cur.src_interval_ns == 0 {
                self.advert_limits
                    .set(vhid, AdvertLimit::DEFAULT, 0)
                    .map_err(map_err(MAP_ADVERT_LIMITS, "update"))?;
            }
        }
        Ok(())
    }

    /// Sets the advert event limits of a vhid (the bucket starts full).
    pub fn set_advert_limit(&mut self, vhid: u8, limit: AdvertLimit) -> Result<(), DataplaneError> {
        self.advert_limits
            .set(vhid as u32, limit, 0)
            .map_err(map_err(MAP_ADVERT_LIMITS, "update"))
    }

    /// Names the owner of a vhid's limits slot (the source exempt from the vhid bucket, see
    /// `AdvertLimit`): the controller calls it for a source whose advert passed the HMAC check. Its
    /// bucket starts full; the limits and the other buckets are kept.
    pub fn set_advert_owner(
        &mut self,
        vhid: u8,
        family: u8,
        addr: [u8; 16],
    ) -> Result<(), DataplaneError> {
        let mut limit = self.advert_limit(vhid)?;
        limit.owner_family = family;
        limit.owner_addr = addr;
        limit.owner_tat_ns = 0;
        self.set_advert_limit(vhid, limit)
    }

    /// The advert event limits of a vhid and its vhid-wide bucket.
    pub fn advert_limit(&self, vhid: u8) -> Result<AdvertLimit, DataplaneError> {
        self.advert_limits
            .get(&(vhid as u32), 0)
            .map_err(map_err(MAP_ADVERT_LIMITS, "lookup"))
    }

    /// Opens the pinned maps of a carpdev without loading anything (readers: carpctl, metrics, tests).
    pub fn open_pinned(bpffs: &Path, carpdev: &str) -> Result<Self, DataplaneError> {
        let dir = pin_dir(bpffs, carpdev);
        let open = |name: &'static str| -> Result<Map, DataplaneError> {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|e| DataplaneError::Pin {
                path: path.clone(),
                message: format!("{e} (is carpd running on {carpdev}?)"),
            })?;
            Map::from_map_data(data).map_err(map_err(name, "open"))
        };
        Ok(Self {
            stats: open(MAP_STATS)?
                .try_into()
                .map_err(map_err(MAP_STATS, "open"))?,
            vhids: open(MAP_VHIDS)?
                .try_into()
                .map_err(map_err(MAP_VHIDS, "open"))?,
            vips: open(MAP_VIPS)?
                .try_into()
                .map_err(map_err(MAP_VIPS, "open"))?,
            last_advert: open(MAP_LAST_ADVERT)?
                .try_into()
                .map_err(map_err(MAP_LAST_ADVERT, "open"))?,
            balance: open(MAP_BALANCE)?
                .try_into()
                .map_err(map_err(MAP_BALANCE, "open"))?,
            advert_limits: open(MAP_ADVERT_LIMITS)?
                .try_into()
                .map_err(map_err(MAP_ADVERT_LIMITS, "open"))?,
            events: None,
        })
    }

    /// Writes a vhid's entry.
    pub fn set_vhid(&mut self, vhid: u8, entry: VhidEntry) -> Result<(), DataplaneError> {
        self.vhids
            .set(vhid as u32, entry, 0)
            .map_err(map_err(MAP_VHIDS, "update"))
    }

    /// Reads a vhid's entry.
    pub fn vhid(&self, vhid: u8) -> Result<VhidEntry, DataplaneError> {
        self.vhids
            .get(&(vhid as u32), 0)
            .map_err(map_err(MAP_VHIDS, "lookup"))
    }

    /// Writes a balancing group in one array update (index = its leader vhid, `group.vhids[0]`), so
    /// the XDP decision never sees a mode, N and mask from different configurations.
    pub fn set_balance(&mut self, group: BalanceGroup) -> Result<(), DataplaneError> {
        crate::balance::check_group(&group)?;
        self.balance
            .set(group.vhids[0] as u32, group, 0)
            .map_err(map_err(MAP_BALANCE, "update"))
    }

    /// Changes only which carpnodes are MASTER here, keeping the rest of the group (one update).
    pub fn set_balance_mask(&mut self, leader: u8, local_mask: u32) -> Result<(), DataplaneError> {
        let mut group = self.balance(leader)?;
        group.local_mask = local_mask;
        self.set_balance(group)
    }

    /// Stops balancing for the group led by `leader` (its interface MAC falls back to the vmac filter).
    pub fn clear_balance(&mut self, leader: u8) -> Result<(), DataplaneError> {
        self.balance
            .set(leader as u32, crate::balance::unused_group(), 0)
            .map_err(map_err(MAP_BALANCE, "update"))
    }

    /// Reads the balancing group led by `leader` (mode None = unused).
    pub fn balance(&self, leader: u8) -> Result<BalanceGroup, DataplaneError> {
        self.balance
            .get(&(leader as u32), 0)
            .map_err(map_err(MAP_BALANCE, "lookup"))
    }

    /// Maps a virtual address to its vhid.
    pub fn add_vip(&mut self, addr: IpAddr, vhid: u8) -> Result<(), DataplaneError> {
        self.vips
            .insert(vip_key(addr), vhid, 0)
            .map_err(map_err(MAP_VIPS, "update"))
    }

    /// Forgets a virtual address.
    pub fn remove_vip(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        self.vips
            .remove(&vip_key(addr))
            .map_err(map_err(MAP_VIPS, "delete"))
    }

    /// The counters of one vhid summed over every CPU.
    pub fn stats(&self, vhid: u8) -> Result<CarpStats, DataplaneError> {
        let per_cpu = self
            .stats
            .get(&(vhid as u32), 0)
            .map_err(map_err(MAP_STATS, "lookup"))?;
        Ok(per_cpu
            .iter()
            .fold(CarpStats::default(), |acc, s| acc.add(s)))
    }

    /// The last good advert seen for a vhid (ktime 0 = none yet).
    pub fn last_advert(&self, vhid: u8) -> Result<LastAdvert, DataplaneError> {
        self.last_advert
            .get(&(vhid as u32), 0)
            .map_err(map_err(MAP_LAST_ADVERT, "lookup"))
    }

    /// Drains the pending advert events.
    pub fn drain_events(&mut self) -> Vec<AdvertEvent> {
        let mut out = Vec::new();
        if let Some(ring) = self.events.as_mut() {
            while let Some(item) = ring.next() {
                if item.len() >= size_of::<AdvertEvent>() {
                    // SAFETY: the kernel wrote a whole AdvertEvent; read_unaligned copes with alignment.
                    out.push(unsafe {
                        std::ptr::read_unaligned(item.as_ptr().cast::<AdvertEvent>())
                    });
                }
            }
        }
        out
    }
}

/// The `carp_vips` key of an address.
pub fn vip_key(addr: IpAddr) -> VipKey {
    let mut key = VipKey {
        family: 4,
        pad: [0; 3],
        addr: [0; 16],
    };
    match addr {
        IpAddr::V4(a) => key.addr[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => {
            key.family = 6;
            key.addr = a.octets();
        }
    }
    key
}
