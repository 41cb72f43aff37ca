//! Typed access to the flow maps (issue #7): the shared flow table `carp_flows` and its event ring
//! `carp_flow_events`, and each carpdev's `carp_flow_conf` and `carp_flow_stats`.
//!
//! The shared maps are pinned once per layout version (`<bpffs>/v<N>/carp_flows`) and each carpdev's
//! directory gets a second pin of the same map, so `bpftool map dump pinned <bpffs>/<carpdev>/carp_flows`
//! works like it does for `carp_stats`. The pins go when the last carpdev is detached.
use super::{DataplaneError, SHARED_MAP_NAMES, pin_dir};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
};
use carp_common::maps::{
    FLOW_EVENT_DEFER, FlowConf, FlowDeferEvent, FlowEntry, FlowEvent, FlowKey, FlowStats,
    LAYOUT_VERSION, MAP_FLOW_CONF, MAP_FLOW_EVENTS, MAP_FLOW_STATS, MAP_FLOWS,
};
use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::Path,
};

/// The error of operation `op` on map `map`.
fn map_err(map: &'static str, op: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, op, source }
}

/// Pins the shared maps of a freshly loaded object into a carpdev's directory too (for bpftool), unless
/// that pin is already there.
pub(super) fn link_shared_pins(ebpf: &Ebpf, dir: &Path) -> Result<(), DataplaneError> {
    for name in SHARED_MAP_NAMES {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        let map = ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
        map.pin(&path).map_err(|e| DataplaneError::Pin {
            path: path.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// Removes the shared pins once no carpdev directory of this layout is left.
pub(super) fn remove_shared_pins_if_unused(bpffs: &Path) {
    let root = bpffs.join(format!("v{LAYOUT_VERSION}"));
    let in_use = std::fs::read_dir(&root)
        .map(|d| d.filter_map(|e| e.ok()).any(|e| e.path().is_dir()))
        .unwrap_or(false);
    if !in_use {
        for name in SHARED_MAP_NAMES {
            let _ = std::fs::remove_file(root.join(name));
        }
        let _ = std::fs::remove_dir(&root);
    }
}

/// The shared flow table and event ring.
pub struct FlowTable {
    /// `carp_flows`.
    pub flows: HashMap<MapData, FlowKey, FlowEntry>,
    /// `carp_flow_events` (absent for readers such as carpctl).
    pub events: Option<RingBuf<MapData>>,
    // A second descriptor of `carp_flows` for BPF_MAP_LOOKUP_BATCH, which aya 0.14 does not wrap.
    batch_fd: Option<OwnedFd>,
}

/// A duplicate of a hash map's descriptor.
fn dup_fd(map: &Map) -> Option<OwnedFd> {
    match map {
        Map::LruHashMap(d) | Map::HashMap(d) => d.fd().as_fd().try_clone_to_owned().ok(),
        _ => None,
    }
}

/// Entries fetched per BPF_MAP_LOOKUP_BATCH call.
const BATCH: usize = 4096;

/// `union bpf_attr`, the `batch` member (include/uapi/linux/bpf.h) of the map batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Where a scan of the flow map in slices stands: the kernel's batch token (for a hash map, the index
/// of the next bucket). Entries never move between buckets, so a scan resumed after the map changed
/// still sees every entry that was there throughout, once.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanCursor {
    token: u64,
    started: bool,
}

/// Every entry of a hash map of `FlowKey -> FlowEntry` with BPF_MAP_LOOKUP_BATCH (thousands per syscall
/// instead of two syscalls per entry: a full table would otherwise stall carpd's loop for ~100 ms), or
/// None if the kernel refuses batch operations (before 5.6).
fn lookup_batch(fd: &OwnedFd) -> Option<Vec<(FlowKey, FlowEntry)>> {
    let mut out = Vec::new();
    let mut cursor = ScanCursor::default();
    while !lookup_slice(fd, &mut cursor, usize::MAX, &mut out)? {}
    Some(out)
}

/// Appends the entries from `cursor` on to `out` until `max` were read or the map ends: Some(true)
/// at the end, None if the kernel refuses batch lookups. The kernel hands out whole buckets, so a
/// slice can hold one bucket more than `max` (when the first bucket is larger than `max`), never a
/// second batch: each call asks only for what is left, and a call that stops short of its count has
/// reached a bucket that does not fit, where the next slice starts.
fn lookup_slice(
    fd: &OwnedFd,
    cursor: &mut ScanCursor,
    max: usize,
    out: &mut Vec<(FlowKey, FlowEntry)>,
) -> Option<bool> {
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    let mut keys = vec![FlowKey::default(); BATCH];
    let mut values = vec![FlowEntry::default(); BATCH];
    let mut read = 0;
    let mut retry_whole = false;
    // The hash map's batch token is a bucket index (u32); 8 bytes leave room.
    let mut token_in = [cursor.token];
    let mut token_out = [0u64; 1];
    while read < max {
        // What is left of the slice; a whole batch when even the first bucket is larger (ENOSPC).
        let want = if read == 0 && max < BATCH && retry_whole {
            BATCH
        } else {
            (max - read).min(BATCH)
        };
        let mut attr = BatchAttr {
            in_batch: if cursor.started {
                token_in.as_mut_ptr() as u64
            } else {
                0
            },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the attr points at buffers of BATCH keys and values (FlowEntry's size is a multiple of
        // 8, the kernel's value stride) and at 8-byte tokens, all alive for the call; want <= BATCH.
        let err = unsafe { super::sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        let n = (attr.count as usize).min(want);
        match err.as_ref().and_then(std::io::Error::raw_os_error) {
            None | Some(libc::ENOENT) => {
                out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
                read += n;
            }
            // The next bucket holds more than is left: the slice ends before it (the kernel left
            // the token on it), or, if nothing was read yet, the next call asks for a whole batch.
            Some(libc::ENOSPC) if want < BATCH => {
                if read > 0 {
                    return Some(false);
                }
                retry_whole = true;
                continue;
            }
            _ => return None,
        }
        if err.is_some() {
            *cursor = ScanCursor::default();
            return Some(true);
        }
        token_in = token_out;
        cursor.token = token_out[0];
        cursor.started = true;
        if n < want {
            // Stopped at a bucket that did not fit in what was left.
            return Some(false);
        }
    }
    Some(false)
}

/// Writes `keys[i] -> values[i]` with BPF_MAP_UPDATE_BATCH (one syscall for the lot instead of one per
/// flow), replacing what the map holds; returns how many were written. An error stops it (EINVAL or
/// ENOTSUPP before Linux 5.6: the caller falls back to single updates; ENOMEM/E2BIG: the entries up to
/// the failure may be written).
fn update_batch(fd: &OwnedFd, keys: &[FlowKey], values: &[FlowEntry]) -> std::io::Result<usize> {
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    let len = keys.len().min(values.len());
    let mut done = 0;
    while done < len {
        let chunk = (len - done).min(u32::MAX as usize);
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the attr points at `chunk` keys and values (FlowKey and FlowEntry are repr(C) without
        // padding, their sizes the map's key and value sizes), alive and unmoved for the call.
        unsafe { super::sys_bpf(BPF_MAP_UPDATE_BATCH, &mut attr) }?;
        done += chunk;
    }
    Ok(len)
}

/// A thread that writes batches of flows into the flow table (BPF_MAP_UPDATE_BATCH), so carpd goes on
/// reading and decoding sync packets while the kernel inserts the last ones: in a bulk transfer the LRU
/// map's update is a quarter of the receiver's work, and it runs on the other CPU this way. One batch is
/// in flight at a time; `finish` waits for it, and the caller must do so before anything else reads or
/// writes those keys.
pub struct BatchWriter {
    jobs: std::sync::mpsc::Sender<(Vec<FlowKey>, Vec<FlowEntry>)>,
    done: std::sync::mpsc::Receiver<BatchDone>,
    busy: bool,
}

/// A finished batch: its buffers back (for reuse) and what the kernel said.
pub struct BatchDone {
    /// The keys written.
    pub keys: Vec<FlowKey>,
    /// The entries written.
    pub entries: Vec<FlowEntry>,
    /// How many were written, or why none or not all were (then write them one by one).
    pub result: std::io::Result<usize>,
}

impl BatchWriter {
    /// Starts the thread on a duplicate of the table's descriptor; None if the table has none.
    pub fn spawn(table: &FlowTable) -> Option<BatchWriter> {
        let fd = table.batch_fd.as_ref()?.try_clone().ok()?;
        let (jobs, job_rx) = std::sync::mpsc::channel::<(Vec<FlowKey>, Vec<FlowEntry>)>();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("carp-flow-writer".into())
            .spawn(move || {
                // Ends when the writer (and so `jobs`) is dropped.
                while let Ok((keys, entries)) = job_rx.recv() {
                    let result = update_batch(&fd, &keys, &entries);
                    if done_tx
                        .send(BatchDone {
                            keys,
                            entries,
                            result,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .ok()?;
        Some(BatchWriter {
            jobs,
            done,
            busy: false,
        })
    }

    /// Hands a batch to the thread; the caller must `finish` the one in flight first. Err (with the
    /// buffers) if the thread is gone: write them here.
    pub fn start(
        &mut self,
        keys: Vec<FlowKey>,
        entries: Vec<FlowEntry>,
    ) -> Result<(), (Vec<FlowKey>, Vec<FlowEntry>)> {
        debug_assert!(!self.busy, "one batch in flight at a time");
        match self.jobs.send((keys, entries)) {
            Ok(()) => {
                self.busy = true;
                Ok(())
            }
            Err(e) => Err(e.0),
        }
    }

    /// Waits for the batch in flight, if any.
    pub fn finish(&mut self) -> Option<BatchDone> {
        if !self.busy {
            return None;
        }
        self.busy = false;
        self.done.recv().ok()
    }
}

/// One carpdev's flow settings and counters.
pub struct FlowDev {
    /// `carp_flow_conf`.
    pub conf: Array<MapData, FlowConf>,
    /// `carp_flow_stats`.
    pub stats: PerCpuArray<MapData, FlowStats>,
}

fn open(dir: &Path, name: &'static str) -> Result<Map, DataplaneError> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).map_err(|e| DataplaneError::Pin {
        path: path.clone(),
        message: format!("{e} (is carpd running?)"),
    })?;
    Map::from_map_data(data).map_err(map_err(name, "open"))
}

impl FlowTable {
    /// Takes the flow table out of a loaded object (test_run labs: private maps).
    pub fn take(ebpf: &mut Ebpf, with_events: bool) -> Result<Self, DataplaneError> {
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name));
        let events = with_events.then(|| take(MAP_FLOW_EVENTS)).transpose()?;
        Self::from_maps(take(MAP_FLOWS)?, events)
    }

    /// Opens the pinned flow table of a carpdev's controller; `with_events` also opens the ring (only
    /// the one controller that consumes events may ask for it).
    pub fn open_pinned(
        bpffs: &Path,
        carpdev: &str,
        with_events: bool,
    ) -> Result<Self, DataplaneError> {
        let dir = pin_dir(bpffs, carpdev);
        let events = with_events
            .then(|| open(&dir, MAP_FLOW_EVENTS))
            .transpose()?;
        Self::from_maps(open(&dir, MAP_FLOWS)?, events)
    }

    /// The table over `carp_flows` and, if given, the `carp_flow_events` ring.
    fn from_maps(flows: Map, events: Option<Map>) -> Result<Self, DataplaneError> {
        let batch_fd = dup_fd(&flows);
        Ok(Self {
            flows: flows.try_into().map_err(map_err(MAP_FLOWS, "open"))?,
            events: events
                .map(|e| e.try_into().map_err(map_err(MAP_FLOW_EVENTS, "open")))
                .transpose()?,
            batch_fd,
        })
    }

    /// Every flow in the table (a snapshot; the LRU may evict or add flows meanwhile).
    pub fn scan(&self) -> Vec<(FlowKey, FlowEntry)> {
        self.scan_batch()
            .unwrap_or_else(|| self.flows.iter().filter_map(|r| r.ok()).collect())
    }

    /// Every flow through BPF_MAP_LOOKUP_BATCH; None if the kernel refused it.
    pub fn scan_batch(&self) -> Option<Vec<(FlowKey, FlowEntry)>> {
        self.batch_fd.as_ref().and_then(lookup_batch)
    }

    /// The next slice of a scan: appends about `max` flows from `cursor` on to `out` and returns true
    /// when the table's end was reached (the cursor is then back at the start). Where the kernel has
    /// no batch lookups (before 5.6) the slice is the whole table.
    pub fn scan_slice(
        &self,
        cursor: &mut ScanCursor,
        max: usize,
        out: &mut Vec<(FlowKey, FlowEntry)>,
    ) -> bool {
        let before = out.len();
        if let Some(fd) = &self.batch_fd
            && let Some(end) = lookup_slice(fd, cursor, max, out)
        {
            return end;
        }
        out.truncate(before);
        *cursor = ScanCursor::default();
        out.extend(self.flows.iter().filter_map(|r| r.ok()));
        true
    }

    /// Every flow, read with two syscalls per entry (the fallback of `scan`; tests check the batch
    /// read against it).
    pub fn scan_one_by_one(&self) -> Vec<(FlowKey, FlowEntry)> {
        self.flows.iter().filter_map(|r| r.ok()).collect()
    }

    /// One flow.
    pub fn get(&self, key: &FlowKey) -> Option<FlowEntry> {
        self.flows.get(key, 0).ok()
    }

    /// Inserts or replaces a flow.
    pub fn insert(&mut self, key: FlowKey, entry: FlowEntry) -> Result<(), DataplaneError> {
        self.flows
            .insert(key, entry, 0)
            .map_err(map_err(MAP_FLOWS, "update"))
    }

    /// Writes many flows with BPF_MAP_UPDATE_BATCH (see `update_batch`), replacing what the map holds.
    /// Err if the kernel refuses batch updates (before 5.6) or the map is not a hash: write them one by
    /// one then.
    pub fn insert_batch(
        &mut self,
        keys: &[FlowKey],
        values: &[FlowEntry],
    ) -> std::io::Result<usize> {
        match &self.batch_fd {
            Some(fd) => update_batch(fd, keys, values),
            None => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    /// Removes a flow (absent is fine).
    pub fn remove(&mut self, key: &FlowKey) {
        let _ = self.flows.remove(key);
    }

    /// Drains the pending flow events.
    pub fn drain_events(&mut self, max: usize) -> Vec<FlowEvent> {
        self.drain_events_with_frames(max)
            .into_iter()
            .map(|(ev, _)| ev)
            .collect()
    }

    /// Up to `max` flow events with, for a `FLOW_EVENT_DEFER`, the deferred first packet.
    pub fn drain_events_with_frames(
        &mut self,
        max: usize,
    ) -> Vec<(FlowEvent, Option<DeferredFrame>)> {
        let mut out = Vec::new();
        if let Some(ring) = self.events.as_mut() {
            while out.len() < max {
                let Some(item) = ring.next() else { break };
                if item.len() < size_of::<FlowEvent>() {
                    continue;
                }
                // SAFETY: the kernel wrote a whole FlowEvent; read_unaligned copes with alignment.
                let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) };
                let frame = (ev.kind == FLOW_EVENT_DEFER
                    && item.len() >= size_of::<FlowDeferEvent>())
                .then(|| {
                    // SAFETY: a FLOW_EVENT_DEFER record is a whole FlowDeferEvent (checked length).
                    let d =
                        unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowDeferEvent>()) };
                    let len = (d.len as usize).min(d.frame.len());
                    DeferredFrame {
                        ifindex: d.ifindex,
                        frame: d.frame[..len].to_vec(),
                    }
                });
                out.push((ev, frame));
            }
        }
        out
    }
}

/// A first packet the dataplane deferred (`FlowDeferEvent`): to be re-injected on `ifindex`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferredFrame {
    /// The carpdev it arrived on.
    pub ifindex: u32,
    /// The whole frame from its Ethernet header.
    pub frame: Vec<u8>,
}

impl FlowDev {
    /// Takes a carpdev's flow settings and counters out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name));
        Ok(Self {
            conf: take(MAP_FLOW_CONF)?
                .try_into()
                .map_err(map_err(MAP_FLOW_CONF, "open"))?,
            stats: take(MAP_FLOW_STATS)?
                .try_into()
                .map_err(map_err(MAP_FLOW_STATS, "open"))?,
        })
    }

    /// Opens a carpdev's pinned flow settings and counters.
    pub fn open_pinned(bpffs: &Path, carpdev: &str) -> Result<Self, DataplaneError> {
        let dir = pin_dir(bpffs, carpdev);
        Ok(Self {
            conf: open(&dir, MAP_FLOW_CONF)?
                .try_into()
                .map_err(map_err(MAP_FLOW_CONF, "open"))?,
            stats: open(&dir, MAP_FLOW_STATS)?
                .try_into()
                .map_err(map_err(MAP_FLOW_STATS, "open"))?,
        })
    }

    /// Writes the carpdev's flow settings.
    pub fn set_conf(&mut self, conf: FlowConf) -> Result<(), DataplaneError> {
        self.conf
            .set(0, conf, 0)
            .map_err(map_err(MAP_FLOW_CONF, "update"))
    }

    /// Reads the carpdev's flow settings.
    pub fn conf(&self) -> Result<FlowConf, DataplaneError> {
        self.conf
            .get(&0, 0)
            .map_err(map_err(MAP_FLOW_CONF, "lookup"))
    }

    /// The counters summed over every CPU.
    pub fn stats(&self) -> Result<FlowStats, DataplaneError> {
        let per_cpu = self
            .stats
            .get(&0, 0)
            .map_err(map_err(MAP_FLOW_STATS, "lookup"))?;
        Ok(per_cpu
            .iter()
            .fold(FlowStats::default(), |acc, s| acc.add(s)))
    }
}

impl super::Dataplane {
    /// The flow table of a loaded object (with its event ring).
    pub fn flow_table(&mut self) -> Result<FlowTable, DataplaneError> {
        FlowTable::take(&mut self.ebpf, true)
    }

    /// The carpdev's flow settings and counters of a loaded object.
    pub fn flow_dev(&mut self) -> Result<FlowDev, DataplaneError> {
        FlowDev::take(&mut self.ebpf)
    }
}
