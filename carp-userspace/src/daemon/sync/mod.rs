//! carpd's side of flow replication (issue #7): drives the sans-IO `SyncEngine` with the kernel's flow
//! events, the flow table's counters and the sync socket, and carries out what it asks.
//!
//! Data flow: XDP flow events (new flows, TCP state changes; ring `carp_flow_events`) become
//! `LocalInsert`/`LocalUpdate`; a scan of `carp_flows` once a second reports traffic on flows whose
//! last-seen time moved (`LocalUpdate`, so byte and packet counts replicate without an event per packet)
//! and expires idle flows (`LocalDelete`). Packets from the UDP transport go to the engine; the engine's
//! `Send` goes out on the socket, its `Apply` writes the flow map (new learned flows in one batch per turn,
//! handed to a writer thread so a bulk transfer's decoding and the kernel's inserts overlap; learned flows are marked and, because
//! they are written by us and not by XDP, never come back as events: not re-broadcast), and its
//! `Demote` adjusts group "carp" in the election engine (the +32 held from start until the bulk
//! transfer ends or times out, so a fresh node does not preempt before it has the flows).
//! Every second it also writes who is alive into each carpdev's `carp_flow_conf` (the peers heard in the
//! last `PEER_DEAD`, leased for as long): in balancing modes the XDP filter keeps a live gateway's flows
//! with it when buckets move (see the XDP `balance` module).
//!
//! Deferral (`[pfsync] defer = true`, spec §8): the dataplane hands a new flow's first packet to us in
//! a `FLOW_EVENT_DEFER` record and drops it; we keep the frame keyed by flow, the engine sends the INS
//! at once asking for an INS_ACK, and on the engine's `Release` (the peer acknowledged or sent any
//! copy of the flow, or `DEFER_TIMEOUT` passed, or more than `DEFER_LIMIT` are held) the frame is
//! re-injected into the carpdev's receive path (`dataplane::reinject`). `[pfsync]` and `[flows]`
//! changes are applied on SIGHUP by rebuilding the driver (`sync_reload`).

use std::{
    collections::HashMap,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result};
use carp_common::maps::{
    self as km, FLOW_EVENT_DEFER, FLOW_EVENT_NEW, FLOW_MODE_OFF, FLOW_MODE_STATEFUL,
    FLOW_MODE_TRACK, FlowConf, FlowTcpState,
};
use tokio::io::{Interest, unix::AsyncFd};

use super::{Daemon, monotonic, netlink::LinkEvent};

use crate::dataplane::{
    flows::{BatchWriter, DeferredFrame, ScanCursor},
    reinject,
    reinject::Reinjector,
};
use crate::{
    config::Config,
    control::{
        Response,
        report::{DataplaneFlowCounters, FlowRow, FlowsReport, SyncReport},
    },
    dataplane::{
        flows::{FlowDev, FlowTable},
        if_index,
    },
    engine::{HostEvent, Time},
    sync::{
        BulkState, FlowId, FlowOp, SeededFlowHash, SyncAction, SyncConfig, SyncEngine, SyncEvent,
        SyncKey,
    },
};

pub mod flowmap;
pub mod transport;

use transport::{MAX_DATAGRAM, SyncSocket};

/// How often the flow table is scanned for traffic to report and flows to expire.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// A scan pass over a big table (~0.2 s at a million flows) is followed by at least this many times
/// its duration without one, so scanning takes at most a tenth of a CPU however large the table.
const SCAN_DUTY: u32 = 10;
/// Flows a scan reads per turn of the loop (~5 ms of work): a pass over a big table is cut into
/// slices so that adverts, sync packets and a peer's bulk request never wait for a whole pass.
const SCAN_SLICE: usize = 16_384;
/// The longest wait between two scan passes (a pass that had a million new flows to announce is slow).
const SCAN_INTERVAL_MAX: Duration = Duration::from_secs(10);
/// Most flow events handled per wake-up (the rest wait for the next turn of the loop).
const EVENTS_PER_WAKE: usize = 4096;
/// Most sync datagrams read per wake-up, junk (a wrong TTL) included.
const PACKETS_PER_WAKE: usize = 256;
/// Bulk bytes sent per tick: 340 packets of 1400 bytes every 5 ms is ~95 MB/s (680,000 flows a
/// second, ~760 Mbit/s: within a 1 GbE sync link, which a faster pace would overrun), a million flows
/// in ~1.5 s, and a burst (~0.5 MB) the peer's socket buffer holds many times over while it catches up. Counted in bytes so that a jumbo-frame syncdev sends fewer, larger packets
/// at the same flow rate (the receiver's work per packet is what larger packets save).
const BULK_BYTES_PER_TICK: usize = 340 * 1400;
/// IPv4 and UDP headers: what the syncdev's MTU leaves for a sync packet.
const IP_UDP_HEADERS: usize = 28;
/// The bulk pacing tick.
const BULK_INTERVAL: Duration = Duration::from_millis(5);
/// Most flows a bulk transfer makes the driver reserve room for (a bound on what a peer's count costs).
const MAX_BULK_RESERVE: usize = 4_000_000;
/// How often the engine sends a keepalive, so peers know this node is alive while no flow changes.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// A peer not heard from for this long is gone: balancing hands its flows to their buckets' owners.
/// Also the lease on the live-peer view written to the dataplane (renewed by every scan).
const PEER_DEAD: Duration = Duration::from_secs(3);
/// Deferred first packets held at most; beyond it the oldest is released (pfsync's bound).
const DEFER_LIMIT: usize = 128;
/// How long a deferred first packet waits for the peer's acknowledgement at most (pfsync: 20 ms).
const DEFER_TIMEOUT: Duration = Duration::from_millis(20);

/// Deferred first packets waiting for a peer, and what became of them.
#[derive(Default)]
struct Deferral {
    reinjector: Option<Reinjector>,
    held: HashMap<FlowId, DeferredFrame>,
    /// Frames taken from the dataplane and held.
    held_total: u64,
    /// Released because a peer acknowledged the flow.
    released_ack: u64,
    /// Released by the timeout or the bound.
    released_timeout: u64,
    /// Re-injections the kernel refused (the frame is lost, as a drop on the wire would lose it).
    reinject_failed: u64,
}

/// The sync engine with its socket (present only with `[pfsync]`).
struct Replication {
    engine: SyncEngine,
    sock: AsyncFd<SyncSocket>,
    syncdev: String,
    syncdev_index: u32,
}

/// The flow tables, the engine and the transport of one carpd.
pub(super) struct SyncDriver {
    repl: Option<Replication>,
    table: FlowTable,
    ring: AsyncFd<OwnedFd>,
    devs: Vec<(String, FlowDev)>,
    // What we know of each key in the flow map: a later last-seen time in a scan is traffic here.
    reported: HashMap<km::FlowKey, Seen, SeededFlowHash>,
    // The number of the last scan pass (`Seen::pass`).
    pass: u32,
    next_scan: Time,
    // The pass under way, if one is.
    scan: Option<ScanPass>,
    // When the live peers were last written (the dataplane's lease on them runs from there).
    live_written_at: Time,
    node_id: u32,
    buf: Vec<u8>,
    send_errors: u64,
    // Flows in the dataplane created here in a balancing group, per owner (the bucket's carpnode
    // vhid; counted by each scan, plus new ones since). Flows of other traffic have owner 0.
    own_flows: Box<[u32; 256]>,
    // Peers a previous carpd or driver saw alive, counted live until `inherited_until`.
    inherited_peers: Vec<u32>,
    inherited_until: Time,
    // The live peers last written to the dataplane.
    written_live: Vec<u32>,
    defer: Deferral,
    learned: LearnedBatch,
    // The thread that writes batches of learned flows; started at the first batch (after start-up
    // dropped the capabilities, so it holds no more than the rest of carpd). None until then or if
    // it could not start (then this thread writes them).
    writer: Option<BatchWriter>,
    writer_tried: bool,
    // The last turn stopped at its bound with events or packets possibly left: come back at once.
    backlog: bool,
}

/// What the driver knows of one key of the flow map.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// The last-seen time already reported (or learned).
    last_seen_ns: u64,
    /// The flow the key holds.
    id: FlowId,
    /// The last scan pass that found the key (or the pass before it was added).
    pass: u32,
}

/// What woke the driver.
pub(super) enum SyncWake {
    /// Flow events are waiting.
    Ring,
    /// A sync packet is waiting.
    Socket,
    /// The scan or an engine deadline is due.
    Timer,
}

/// The largest sync packet the syncdev carries unfragmented: its MTU less the IPv4 and UDP headers,
/// at most one UDP datagram; None if the MTU cannot be read or leaves too little.
fn sync_payload_mtu(syncdev: &str) -> Option<usize> {
    payload_for_mtu(crate::ifreq::mtu(syncdev).ok()? as usize)
}

/// A link MTU's room for one sync packet (see `sync_payload_mtu`).
fn payload_for_mtu(mtu: usize) -> Option<usize> {
    // An IPv4 datagram is at most 65535 bytes, headers included.
    let payload = mtu.min(usize::from(u16::MAX)).checked_sub(IP_UDP_HEADERS)?;
    (payload >= crate::sync::MIN_MTU).then_some(payload)
}

/// This node's sync id from the syncdev's MAC (its low four bytes; never 0).
fn node_id_from_mac(dev: &str) -> Option<u32> {
    let mac = crate::ifreq::hw_addr(dev).ok()?;
    let id = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    Some(id.max(1))
}

/// The wall clock in ns: the first sequence number, so a restarted node's packets are newer than any
/// its previous life sent (the peers' replay windows remember those).
fn wall_clock_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        .max(1)
}

impl SyncDriver {
    /// Writes every carpdev's flow settings and, when flows are tracked, opens the flow table, the
    /// event ring and (with `[pfsync]`) the sync socket. Flows left in the table by a previous carpd are
    /// adopted without being announced. `resuming`: this carpd resumes MASTERs of a previous one (hitless
    /// restart); the bulk transfer is still requested, but without the +32 demotion, which would hand
    /// every resumed MASTER to the peer (preempt) and make the restart anything but hitless.
    pub(super) fn open(
        config: &Config,
        bpffs: &Path,
        resuming: bool,
    ) -> Result<Option<SyncDriver>> {
        let carpdevs = config.carpdevs();
        let pfsync = config.pfsync.as_ref();
        let tracking = config.flows.tracking(pfsync);
        let node_id = match pfsync {
            Some(p) => p
                .node_id
                .or_else(|| node_id_from_mac(&p.syncdev))
                .with_context(|| {
                    format!(
                        "pfsync: no MAC address on syncdev {}; set node_id",
                        p.syncdev
                    )
                })?,
            None => 1,
        };
        // Deferral needs a peer to acknowledge, and a way to put the frame back.
        let mut defer = tracking && pfsync.is_some_and(|p| p.defer);
        if defer && !reinject::live_frames_supported() {
            // Deferral without a way back would drop every first packet; failover matters more than
            // the ordering guarantee, so carpd runs without it, loudly.
            tracing::error!(
                "pfsync: defer is OFF: putting held first packets back needs BPF_F_TEST_XDP_LIVE_FRAMES \
                 (Linux >= 5.18) and this kernel is {}; upgrade the kernel, or set [pfsync] defer = false \
                 to acknowledge",
                reinject::kernel_release()
            );
            defer = false;
        }
        let reinjector = match carpdevs.first() {
            Some(first) if defer => Some(
                Reinjector::open_pinned(bpffs, first)
                    .context("pfsync: defer: loading carp_pass for re-injection")?,
            ),
            _ => None,
        };
        let mut devs = Vec::new();
        // The live-peer view a previous carpd (a hitless restart) or driver (a reload) left in the
        // dataplane is kept until its lease ends: this engine has heard nobody yet, and an empty view
        // would make us take the peers' flows in our buckets until their next keepalive.
        let start_ns = monotonic().as_nanos();
        let mut inherited: (Vec<u32>, u64) = (Vec::new(), 0);
        for dev in &carpdevs {
            let mut fd = FlowDev::open_pinned(bpffs, dev)
                .with_context(|| format!("{dev}: the flow maps"))?;
            let old = fd.conf().unwrap_or_default();
            let keep_view = pfsync.is_some() && old.sticky != 0 && old.live_until_ns > start_ns;
            if keep_view && inherited.0.is_empty() {
                inherited = (
                    old.live_peers.iter().copied().filter(|&p| p != 0).collect(),
                    old.live_until_ns,
                );
            }
            let inside = config.flows.inside.contains(dev);
            fd.set_conf(FlowConf {
                mode: match (tracking, config.flows.stateful) {
                    (false, _) => FLOW_MODE_OFF,
                    (true, false) => FLOW_MODE_TRACK,
                    (true, true) => FLOW_MODE_STATEFUL,
                },
                inside: u8::from(inside),
                owner: 0,
                // Stickiness needs to know who is alive, which only the sync channel tells.
                sticky: u8::from(pfsync.is_some()),
                node_id,
                events_per_ms: config.flows.events_per_ms,
                defer: u8::from(defer),
                pad2: [0; 3],
                live_until_ns: if keep_view { old.live_until_ns } else { 0 },
                live_peers: if keep_view {
                    old.live_peers
                } else {
                    [0; km::MAX_LIVE_PEERS]
                },
            })?;
            devs.push((dev.clone(), fd));
        }
        let Some(first) = carpdevs.first() else {
            return Ok(None);
        };
        if !tracking {
            return Ok(None);
        }
        let table = FlowTable::open_pinned(bpffs, first, true).context("the flow table")?;
        let ring = table
            .events
            .as_ref()
            .context("the flow event ring is missing")?;
        // SAFETY: the ring's fd is open for as long as `table` lives; we keep our own duplicate.
        let fd = unsafe { BorrowedFd::borrow_raw(ring.as_raw_fd()) }.try_clone_to_owned()?;
        // SAFETY: `fd` is an OwnedFd we just duplicated; it stays open and unchanged while the AsyncFd owns it.
        let ring = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the flow event ring: {e}"))?;
        let repl = match pfsync {
            None => None,
            Some(p) => {
                let mut sc = SyncConfig::new(node_id);
                sc.maxupd = p.maxupd;
                sc.seq_start = wall_clock_seq();
                // Like pfsync, packets fill the syncdev's MTU (a jumbo-frame sync link carries six
                // times the flows per packet); without one readable, the engine's default stays.
                if let Some(mtu) = sync_payload_mtu(&p.syncdev) {
                    sc.mtu = mtu;
                }
                // pfsync's one packet per 20 ms would take half an hour for a million flows.
                sc.bulk_packets_per_tick = (BULK_BYTES_PER_TICK / sc.mtu).max(1);
                sc.bulk_interval = BULK_INTERVAL;
                sc.keepalive = Some(KEEPALIVE);
                if resuming {
                    sc.bulk_demote = 0;
                    tracing::info!(
                        "pfsync: resuming a previous carpd's MASTERs: bulk transfer without the demotion"
                    );
                }
                sc.defer = defer;
                sc.defer_timeout = DEFER_TIMEOUT;
                sc.defer_limit = DEFER_LIMIT;
                let key = SyncKey::from_bytes(&p.key).context("pfsync: key_file")?;
                let sc_mtu = sc.mtu;
                let engine = SyncEngine::new(sc, key).context("pfsync")?;
                let sock = SyncSocket::open(p)
                    .with_context(|| format!("pfsync: the sync socket on {}", p.syncdev))?;
                tracing::info!(
                    "pfsync: syncdev {} -> {}, node id {node_id}, maxupd {}, packets up to {} bytes",
                    p.syncdev,
                    sock.dest(),
                    p.maxupd,
                    sc_mtu
                );
                let syncdev_index = if_index(&p.syncdev).unwrap_or(0);
                Some(Replication {
                    engine,
                    // SAFETY: the socket owns its fd, which stays open and unchanged while the AsyncFd owns it.
                    sock: unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
                        .map_err(|e| anyhow::anyhow!("registering the sync socket: {e}"))?,
                    syncdev: p.syncdev.clone(),
                    syncdev_index,
                })
            }
        };
        let mut driver = SyncDriver {
            repl,
            table,
            ring,
            devs,
            reported: HashMap::default(),
            pass: 0,
            next_scan: monotonic() + SCAN_INTERVAL,
            scan: None,
            live_written_at: Time::ZERO,
            node_id,
            buf: vec![0; MAX_DATAGRAM],
            send_errors: 0,
            own_flows: Box::new([0; 256]),
            inherited_peers: inherited.0,
            inherited_until: Time::from_nanos(inherited.1),
            written_live: Vec::new(),
            defer: Deferral {
                reinjector,
                ..Default::default()
            },
            learned: LearnedBatch::default(),
            writer: None,
            writer_tried: false,
            backlog: false,
        };
        let mut adopted = 0;
        for (k, e) in driver.table.scan() {
            let f = flowmap::flow_state(&k, &e);
            driver.reported.insert(
                k,
                Seen {
                    last_seen_ns: e.last_seen_ns,
                    id: f.id,
                    pass: 0,
                },
            );
            if e.creator == node_id && e.owner != 0 {
                driver.own_flows[usize::from(e.owner)] += 1;
            }
            if let Some(r) = driver.repl.as_mut() {
                r.engine.adopt(f);
            }
            adopted += 1;
        }
        if adopted > 0 {
            tracing::info!("flows: adopted {adopted} flow(s) left in the dataplane");
        }
        driver.write_live(monotonic());
        Ok(Some(driver))
    }

    /// Renews the dataplane's view of who is alive (module doc of the XDP `balance`): this node's
    /// claim on its own flows and the peers heard within `PEER_DEAD`, both leased for `PEER_DEAD`.
    fn write_live(&mut self, now: Time) {
        self.live_written_at = now;
        let mut peers = [0u32; km::MAX_LIVE_PEERS];
        let live = self.live_peers(now);
        let changed = live != self.written_live;
        self.written_live = live.clone();
        if !live.is_empty() {
            if changed && live.len() > peers.len() {
                tracing::warn!(
                    "pfsync: {} live peers, the dataplane keeps flows with the first {}",
                    live.len(),
                    peers.len()
                );
            }
            for (slot, id) in peers.iter_mut().zip(live) {
                *slot = id;
            }
        }
        let until = now.as_nanos() + PEER_DEAD.as_nanos() as u64;
        for (name, dev) in &mut self.devs {
            let Ok(mut conf) = dev.conf() else {
                continue;
            };
            if conf.sticky == 0 {
                continue;
            }
            conf.live_until_ns = until;
            conf.live_peers = peers;
            if let Err(e) = dev.set_conf(conf) {
                tracing::warn!("{name}: writing the live peers to the dataplane: {e}");
            }
        }
    }

    /// True when this gateway owns flows that balancing keeps with it in the buckets of the
    /// carpnodes `vhids` (`[pfsync]` on and such flows created here still in the table): their
    /// carp interface then stays up.
    pub(super) fn holds_flows(&self, vhids: &[u8]) -> bool {
        self.repl.is_some()
            && vhids
                .iter()
                .any(|&v| v != 0 && self.own_flows[usize::from(v)] > 0)
    }

    /// The peers counted live now: heard within `PEER_DEAD`, or inherited and still leased.
    fn live_peers(&self, now: Time) -> Vec<u32> {
        let Some(r) = &self.repl else {
            return Vec::new();
        };
        let mut live = r.engine.live_peers(now, PEER_DEAD);
        if now < self.inherited_until {
            live.extend(self.inherited_peers.iter().copied());
            live.sort_unstable();
            live.dedup();
        }
        live
    }

    fn deadline(&self) -> Time {
        let engine = self.repl.as_ref().and_then(|r| r.engine.next_deadline());
        engine.map_or(self.next_scan, |t| t.min(self.next_scan))
    }
}

impl Drop for SyncDriver {
    fn drop(&mut self) {
        // A reload's new driver adopts what the map holds: the batch in flight must be in it.
        finish_writes(self);
    }
}

/// Waits until the driver has work (forever without a driver).
pub(super) async fn wait(sync: &Option<SyncDriver>) -> SyncWake {
    let Some(s) = sync else {
        return std::future::pending().await;
    };
    if s.backlog {
        // Let the other wake-ups of the loop in first, then go on reading.
        tokio::task::yield_now().await;
        return SyncWake::Socket;
    }
    let sleep = s.deadline() - monotonic();
    let sock = async {
        match &s.repl {
            Some(r) => {
                if let Ok(mut g) = r.sock.readable().await {
                    g.clear_ready();
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        r = s.ring.readable() => {
            // Clear before draining: an event that lands during the drain re-arms readiness.
            if let Ok(mut g) = r {
                g.clear_ready();
            }
            SyncWake::Ring
        }
        _ = sock => SyncWake::Socket,
        _ = tokio::time::sleep(sleep) => SyncWake::Timer,
    }
}

impl Daemon {
    /// Sync comes up: demote group "carp" and request the bulk transfer (spec §8).
    pub(super) async fn sync_start(&mut self) {
        let now = self.now();
        let (mut actions, index) = match self.sync.as_mut().and_then(|s| s.repl.as_mut()) {
            Some(r) => (r.engine.handle(now, SyncEvent::Start), r.syncdev_index),
            None => return,
        };
        // A syncdev already down at start holds its +1 like one that goes down later.
        if let Ok(false) = self.nl.is_running(index).await
            && let Some(r) = self.sync.as_mut().and_then(|s| s.repl.as_mut())
        {
            tracing::warn!("pfsync: syncdev {} is down", r.syncdev);
            actions.extend(r.engine.handle(now, SyncEvent::Link { up: false }));
        }
        self.sync_actions(actions).await;
    }

    /// SIGHUP: applies changed `[pfsync]` and `[flows]` tables. The driver is rebuilt from the new
    /// config (the old socket and ring are closed first): each carpdev's flow settings are rewritten,
    /// the flows in the dataplane are adopted as at a restart, and with `[pfsync]` a bulk transfer is
    /// requested without the +32 demotion (a running gateway already has the flows; demoting it would
    /// hand its MASTERs to the peer). A demotion the old engine held is given back. Call it after the
    /// carp interfaces were reloaded, so new carpdevs are attached.
    pub(super) async fn sync_reload(&mut self, new: &Config) {
        if new.pfsync == self.config.pfsync && new.flows == self.config.flows {
            return;
        }
        self.config.pfsync = new.pfsync.clone();
        self.config.flows = new.flows.clone();
        let held = self
            .sync
            .as_ref()
            .and_then(|s| s.repl.as_ref())
            .map_or(0, |r| r.engine.held_demotion());
        if let Some(s) = self.sync.as_mut() {
            // The new engine does not know these holds: the frames go on now rather than never.
            for (_, frame) in std::mem::take(&mut s.defer.held) {
                s.defer.released_timeout += 1;
                reinject(&mut s.defer, frame);
            }
        }
        self.sync = None;
        if held != 0 {
            tracing::info!("pfsync: group carp demote {:+} (sync reloaded)", -held);
            self.feed(HostEvent::GroupAdjust {
                group: crate::engine::DEFAULT_GROUP.to_string(),
                delta: -held,
            })
            .await;
        }
        match SyncDriver::open(&self.config, &self.options.bpffs, true) {
            Ok(driver) => self.sync = driver,
            Err(e) => {
                tracing::error!(
                    "SIGHUP: [pfsync]/[flows]: {e:#}; flows are not tracked until fixed"
                );
                return;
            }
        }
        self.sync_start().await;
        tracing::info!(
            "SIGHUP: [pfsync]/[flows] applied (tracking {}, stateful {}, sync {})",
            if self.sync.is_some() { "on" } else { "off" },
            self.config.flows.stateful,
            self.config
                .pfsync
                .as_ref()
                .map_or("off".to_string(), |p| format!("on {}", p.syncdev))
        );
    }

    /// The syncdev's link changed: the engine holds +1 on group "carp" while it is down.
    pub(super) async fn sync_link(&mut self, ev: &LinkEvent) {
        let LinkEvent::Link { index, running } = *ev else {
            return;
        };
        let now = self.now();
        let actions = match self.sync.as_mut().and_then(|s| s.repl.as_mut()) {
            Some(r) if r.syncdev_index == index => {
                r.engine.handle(now, SyncEvent::Link { up: running })
            }
            _ => return,
        };
        self.sync_actions(actions).await;
    }

    /// Does whatever is due: flow events, sync packets, the scan, engine timers.
    pub(super) async fn on_sync(&mut self, _wake: SyncWake) {
        let Some(s) = self.sync.as_mut() else {
            return;
        };
        let mut actions = Vec::new();
        let now = monotonic().max(self.last_now);
        // Kernel events first, so a flow's INS precedes any update the scan might find.
        let events = s.table.drain_events_with_frames(EVENTS_PER_WAKE);
        // A full batch may have left events behind, which no new readiness would announce.
        s.backlog = events.len() >= EVENTS_PER_WAKE;
        for (ev, frame) in events {
            let f = flowmap::flow_state(&ev.key, &ev.entry);
            if let Some(frame) = frame {
                s.defer.held_total += 1;
                if s.repl.is_some() {
                    s.defer.held.insert(f.id, frame);
                } else {
                    // Cannot happen (deferral is only on with [pfsync]); never lose the packet.
                    reinject(&mut s.defer, frame);
                }
            }
            let seen = s.reported.entry(ev.key).or_insert(Seen {
                last_seen_ns: 0,
                id: f.id,
                pass: s.pass,
            });
            seen.last_seen_ns = seen.last_seen_ns.max(ev.entry.last_seen_ns);
            seen.id = f.id;
            let new = ev.kind == FLOW_EVENT_NEW || ev.kind == FLOW_EVENT_DEFER;
            if new && ev.entry.creator == s.node_id && ev.entry.owner != 0 {
                let owner = usize::from(ev.entry.owner);
                s.own_flows[owner] += 1;
                if let Some(p) = s.scan.as_mut() {
                    p.own[owner] += 1;
                }
            }
            if let Some(r) = s.repl.as_mut() {
                let event = if new {
                    SyncEvent::LocalInsert(f)
                } else {
                    SyncEvent::LocalUpdate(f)
                };
                actions.extend(r.engine.handle(now, event));
            }
        }
        let mut received = false;
        // Every datagram read spends one, junk (a wrong TTL) included: a flood faster than recvmsg
        // must not keep the loop here.
        let mut budget = PACKETS_PER_WAKE;
        if let Some(r) = s.repl.as_mut() {
            loop {
                let got = r.sock.get_mut().recv(&mut s.buf, &mut budget);
                match got {
                    Ok(Some(rx)) => {
                        received = true;
                        for packet in rx.datagrams(&s.buf) {
                            actions.extend(r.engine.handle(now, SyncEvent::Packet(packet)));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("pfsync: receive on {}: {e}", r.syncdev);
                        break;
                    }
                }
            }
        }
        // The socket's readiness was cleared before this read: packets left in it (a bulk transfer
        // arrives faster than one turn reads) would wait for the next packet or timer to wake us.
        if budget == 0 {
            s.backlog = true;
        }
        // Room for a big bulk transfer up front: growing a map of a million keys by doubling would
        // rehash it ~20 times while the flows arrive.
        if let Some(n) = s.repl.as_ref().and_then(|r| r.engine.bulk_expected()) {
            let n = (n as usize).min(MAX_BULK_RESERVE);
            s.reported.reserve(n.saturating_sub(s.reported.len()));
        }
        // A bulk transfer in either direction goes first: a pass over a million flows would stall it
        // for a fifth of a second. The bound on a bulk (its timeouts) bounds the wait.
        let bulk_busy = s.repl.as_ref().is_some_and(|r| {
            r.engine.bulk_sending() || matches!(r.engine.bulk_state(), BulkState::Receiving { .. })
        });
        let scan_due = now >= s.next_scan;
        let mut scanned = false;
        if bulk_busy && scan_due {
            // Postponed (a pass under way pauses), not due again at once (the loop would spin on it).
            s.next_scan = now + SCAN_INTERVAL;
        } else if scan_due {
            match scan_slice(s, now, &mut actions) {
                Some(took) => {
                    scanned = true;
                    s.next_scan = now + SCAN_INTERVAL.max(took * SCAN_DUTY).min(SCAN_INTERVAL_MAX);
                }
                // The next slice once the loop has served whatever else is waiting.
                None => s.backlog = true,
            }
        }
        // The lease on the live-peer view is renewed every second, scan or bulk or not; a peer that
        // (re)appeared is written at once (the dataplane leaves its flows to it from now).
        if now.saturating_duration_since(s.live_written_at) >= SCAN_INTERVAL
            || (received && s.live_peers(now) != s.written_live)
        {
            s.write_live(now);
        }
        if let Some(r) = s.repl.as_mut()
            && r.engine.next_deadline().is_some_and(|t| t <= now)
        {
            actions.extend(r.engine.handle(now, SyncEvent::Timer));
        }
        self.sync_actions(actions).await;
        if scanned {
            self.refresh_kept_ifs().await;
        }
    }

    /// Carries out the engine's actions.
    async fn sync_actions(&mut self, actions: Vec<SyncAction>) {
        let mut demotes = Vec::new();
        if let Some(s) = self.sync.as_mut() {
            // Sent together at the end: a bulk tick's packets leave in a few GSO sends. (Nothing
            // below waits on them: the other actions are local.)
            let mut sends = Vec::new();
            for a in actions {
                match a {
                    SyncAction::Send(bytes) => sends.push(bytes),
                    SyncAction::Apply(op) => apply(s, op),
                    SyncAction::Demote {
                        group,
                        delta,
                        reason,
                    } => demotes.push((group, delta, reason)),
                    // The engine keeps the deadline; the frame (if the dataplane deferred one) is here.
                    SyncAction::Hold { .. } => {}
                    // Not wired into carpd yet: without `[pfsync] conntrack` they are ignored.
                    SyncAction::Conntrack { .. } => {}
                    SyncAction::Release { flow, acked } => {
                        if let Some(frame) = s.defer.held.remove(&flow) {
                            if acked {
                                s.defer.released_ack += 1;
                            } else {
                                s.defer.released_timeout += 1;
                            }
                            reinject(&mut s.defer, frame);
                        }
                    }
                }
            }
            flush_learned(s);
            // The end of a bulk transfer lifts the demotion: the map must hold every learned flow
            // before this node may take MASTER with it (and before `carpctl sync` says done), not
            // only once the writer thread gets to the last batch.
            if !demotes.is_empty() {
                finish_writes(s);
            }
            if let Some(r) = s.repl.as_mut()
                && !sends.is_empty()
            {
                send(r, &sends, &mut s.send_errors);
            }
        }
        for (group, delta, reason) in demotes {
            tracing::info!("pfsync: group {group} demote {delta:+} ({reason})");
            self.feed(HostEvent::GroupAdjust {
                group: group.to_string(),
                delta,
            })
            .await;
        }
    }

    /// `carpctl sync`.
    pub(super) fn sync_report(&self) -> Response {
        let mut r = SyncReport {
            stateful: self.config.flows.stateful,
            bulk: "idle".into(),
            ..Default::default()
        };
        if let Some(p) = &self.config.pfsync {
            r.syncdev = Some(p.syncdev.clone());
        }
        if let Some(s) = &self.sync {
            r.node_id = s.node_id;
            for (name, dev) in &s.devs {
                let conf = dev.conf().unwrap_or_default();
                r.dataplane.push(DataplaneFlowCounters {
                    carpdev: name.clone(),
                    mode: match conf.mode {
                        FLOW_MODE_STATEFUL => "stateful",
                        FLOW_MODE_TRACK => "track",
                        _ => "off",
                    }
                    .into(),
                    inside: conf.inside != 0,
                    counters: dev
                        .stats()
                        .unwrap_or_default()
                        .fields()
                        .iter()
                        .map(|(n, v)| (n.to_string(), *v))
                        .collect(),
                });
            }
            if let Some(rep) = &s.repl {
                r.enabled = true;
                r.destination = Some(rep.sock.get_ref().dest().to_string());
                r.bulk = match rep.engine.bulk_state() {
                    BulkState::Idle => "idle",
                    BulkState::Requesting { .. } => "requesting",
                    BulkState::Receiving { .. } => "receiving",
                    BulkState::Done { complete: true } => "done",
                    BulkState::Done { complete: false } => "timed-out",
                }
                .into();
                r.demoted = rep.engine.demoted();
                r.bulk_ms = rep.engine.bulk_duration().map(|d| d.as_secs_f64() * 1000.0);
                r.live_peers = rep.engine.live_peers(monotonic(), PEER_DEAD);
                r.flows = rep.engine.table().len() as u64;
                r.counters = rep
                    .engine
                    .counters()
                    .iter()
                    .iter()
                    .map(|(n, v)| (n.to_string(), *v))
                    .collect();
                let t = rep.sock.get_ref().counters();
                r.counters.push(("received".into(), t.received));
                r.counters.push(("badttl".into(), t.badttl));
                r.counters.push(("oerrors".into(), t.oerrors));
                r.counters.push(("gso_datagrams".into(), t.gso_datagrams));
                r.counters.push(("gro_reads".into(), t.gro_reads));
                let d = &s.defer;
                r.counters.push(("defer_held".into(), d.held_total));
                r.counters
                    .push(("defer_holding".into(), d.held.len() as u64));
                r.counters
                    .push(("defer_released_ack".into(), d.released_ack));
                r.counters
                    .push(("defer_released_timeout".into(), d.released_timeout));
                r.counters
                    .push(("defer_reinject_failed".into(), d.reinject_failed));
            }
        }
        Response::Sync(r)
    }

    /// `carpctl flows`.
    pub(super) fn flows_report(&self) -> Response {
        let Some(s) = &self.sync else {
            return Response::Flows(FlowsReport::default());
        };
        let now_ns = monotonic().as_nanos();
        let mut flows: Vec<FlowRow> = s
            .table
            .scan()
            .into_iter()
            .map(|(k, e)| {
                let key = flowmap::key_from_kernel(&k);
                let ep = |e: &crate::sync::Endpoint| match e.addr {
                    std::net::IpAddr::V6(a) => format!("[{a}]:{}", e.port),
                    a => format!("{a}:{}", e.port),
                };
                FlowRow {
                    proto: match (k.proto, k.family) {
                        (6, _) => "tcp".into(),
                        (17, _) => "udp".into(),
                        (1, _) => "icmp".into(),
                        (58, _) => "icmp6".into(),
                        (p, _) => p.to_string(),
                    },
                    lo: ep(&key.lo),
                    hi: ep(&key.hi),
                    state: FlowTcpState::from_u8(e.tcp_state).as_str().into(),
                    creator: e.creator,
                    id: e.id,
                    owner: e.owner,
                    learned: e.learned(),
                    packets: e.packets,
                    bytes: e.bytes,
                    age_s: now_ns.saturating_sub(e.created_ns) / 1_000_000_000,
                    idle_s: now_ns.saturating_sub(e.last_seen_ns) / 1_000_000_000,
                }
            })
            .collect();
        flows.sort_by(|a, b| (&a.proto, &a.lo, &a.hi).cmp(&(&b.proto, &b.lo, &b.hi)));
        Response::Flows(FlowsReport { flows })
    }
}

/// Sends the engine's packets; failures are counted and logged (`log_due`).
fn send(r: &mut Replication, packets: &[Vec<u8>], send_errors: &mut u64) {
    let sock = r.sock.get_mut();
    let gso_was_on = sock.gso_off().is_none();
    let (failed, err) = sock.send_all(packets);
    if gso_was_on && let Some(e) = sock.gso_off() {
        tracing::info!(
            "pfsync: the kernel refuses UDP GSO sends on {} ({e}): one send per sync packet from now on",
            r.syncdev
        );
    }
    if let Some(e) = err {
        let before = *send_errors;
        *send_errors += failed;
        if log_due(before, *send_errors) {
            tracing::warn!(
                "pfsync: send on {}: {e} ({} send errors in all)",
                r.syncdev,
                *send_errors
            );
        }
    }
}

/// True when a failure count that went from `before` to `after` is due a log line: the first
/// failure, then one per thousand (a dead link or a missing kernel feature must not flood the log).
fn log_due(before: u64, after: u64) -> bool {
    before == 0 && after > 0 || before / 1000 != after / 1000
}

/// Puts a deferred first packet back into its carpdev's receive path.
fn reinject(d: &mut Deferral, mut frame: DeferredFrame) {
    crate::dataplane::reinject::complete_partial_checksum(&mut frame.frame);
    let res = match &d.reinjector {
        Some(r) => r.inject(frame.ifindex, &frame.frame),
        None => Err(std::io::Error::other("no re-injection program")),
    };
    if let Err(e) = res {
        d.reinject_failed += 1;
        // A kernel without live frames would otherwise flood the log.
        if log_due(d.reinject_failed - 1, d.reinject_failed) {
            tracing::warn!(
                "pfsync: defer: re-injecting a first packet on ifindex {}: {e} ({} failures in all)",
                frame.ifindex,
                d.reinject_failed
            );
        }
    }
}

/// A scan pass under way: where it stands and what it found so far.
struct ScanPass {
    cursor: ScanCursor,
    // Flows this pass found gone (deleted cluster-wide at its end if ours).
    gone: Vec<FlowId>,
    // Flows created here per owner, counted by this pass (`own_flows` once it ends).
    own: Box<[u32; 256]>,
    // Time spent on the pass so far (the next pass waits `SCAN_DUTY` times as long).
    took: Duration,
    // The slice's buffer, kept between slices.
    buf: Vec<(km::FlowKey, km::FlowEntry)>,
}

/// One slice of a pass over the flow table (`SCAN_SLICE` flows): report traffic since the last pass,
/// expire idle flows, and, at the pass's end, forget flows the LRU evicted. Per flow it costs a map
/// read (batched) and one hash lookup: at a million flows a whole pass is ~0.2 s, in ~60 slices.
/// Returns the whole pass's time when the pass ended with this slice.
fn scan_slice(s: &mut SyncDriver, now: Time, actions: &mut Vec<SyncAction>) -> Option<Duration> {
    let started = std::time::Instant::now();
    finish_writes(s);
    let mut p = match s.scan.take() {
        Some(p) => p,
        None => {
            s.pass = s.pass.wrapping_add(1);
            ScanPass {
                cursor: ScanCursor::default(),
                gone: Vec::new(),
                own: Box::new([0; 256]),
                took: Duration::ZERO,
                buf: Vec::new(),
            }
        }
    };
    let pass = s.pass;
    let now_ns = now.as_nanos();
    let me = s.node_id;
    let mut slice = std::mem::take(&mut p.buf);
    slice.clear();
    let end = s.table.scan_slice(&mut p.cursor, SCAN_SLICE, &mut slice);
    let own = &mut p.own;
    let gone = &mut p.gone;
    for &(k, e) in &slice {
        let id = entry_id(&e);
        let idle = now_ns.saturating_sub(e.last_seen_ns) / 1_000_000;
        if idle > flowmap::idle_timeout_ms(k.proto, FlowTcpState::from_u8(e.tcp_state)) {
            s.table.remove(&k);
            if let Some(old) = s.reported.remove(&k)
                && old.id != id
            {
                gone.push(old.id);
            }
            if let Some(r) = s.repl.as_mut() {
                actions.extend(r.engine.handle(now, SyncEvent::LocalDelete(id)));
            }
            continue;
        }
        if e.creator == me && e.owner != 0 {
            own[usize::from(e.owner)] += 1;
        }
        let traffic = match s.reported.entry(k) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let seen = o.get_mut();
                seen.pass = pass;
                if seen.id != id {
                    // The key holds another flow now (a new connection on the same 5-tuple).
                    gone.push(seen.id);
                    seen.id = id;
                }
                let moved = e.last_seen_ns > seen.last_seen_ns;
                seen.last_seen_ns = seen.last_seen_ns.max(e.last_seen_ns);
                moved
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Seen {
                    last_seen_ns: e.last_seen_ns,
                    id,
                    pass,
                });
                e.last_seen_ns > 0
            }
        };
        if traffic && let Some(r) = s.repl.as_mut() {
            let f = flowmap::flow_state(&k, &e);
            actions.extend(r.engine.handle(now, SyncEvent::LocalUpdate(f)));
        }
    }
    p.buf = slice;
    if !end {
        p.took += started.elapsed();
        s.scan = Some(p);
        return None;
    }
    // The pass's time, this last slice and the wrap-up below included.
    let took = || p.took + started.elapsed();
    let mut gone = std::mem::take(&mut p.gone);
    // Flows created while the pass was under way were counted by their events into the pass too
    // (some twice, if the pass then found them: an over-count the next pass corrects, where missing
    // them could release a carp interface that still has flows).
    *s.own_flows = *p.own;
    // Keys this pass did not find are gone from the map (the LRU evicted them).
    s.reported.retain(|_, seen| {
        if seen.pass == pass {
            return true;
        }
        gone.push(seen.id);
        false
    });
    // Our own flows that left the map are deleted cluster-wide. A learned id can be missing because the
    // key holds another id (both nodes created the same 5-tuple): deleting it would remove the peer's
    // flow, so learned ids are left to the creator's delete or expiry.
    let Some(r) = s.repl.as_mut() else {
        return Some(took());
    };
    for id in gone {
        if id.creator != me {
            continue;
        }
        let still_mapped = r
            .engine
            .table()
            .get(&id)
            .and_then(|f| flowmap::kernel_key(&f.key))
            .is_some_and(|k| s.reported.get(&k).is_some_and(|v| v.id == id));
        // Still in the map under its key (a flow seen twice in this pass's list).
        if !still_mapped {
            actions.extend(r.engine.handle(now, SyncEvent::LocalDelete(id)));
        }
    }
    Some(took())
}

/// Learned flows waiting to be written to the flow map in one BPF_MAP_UPDATE_BATCH (`flush_learned`).
#[derive(Default)]
struct LearnedBatch {
    keys: Vec<km::FlowKey>,
    entries: Vec<km::FlowEntry>,
    /// False once the kernel refused a batch update (before Linux 5.6): one syscall per flow from then.
    unsupported: bool,
}

/// Writes one change the engine learned from a peer into the flow map, marked learned. Inserts are
/// gathered and written together by `flush_learned` (a bulk transfer brings ~10 per packet and a
/// million in all: one syscall per flow was most of the receiver's time); every other op first
/// flushes them, so the map sees the ops in the engine's order.
fn apply(s: &mut SyncDriver, op: FlowOp) {
    match op {
        FlowOp::Insert(f) => {
            let Some(k) = flowmap::kernel_key(&f.key) else {
                return;
            };
            s.learned.keys.push(k);
            s.learned.entries.push(flowmap::kernel_entry(&f));
        }
        FlowOp::Update(f) => {
            flush_learned(s);
            finish_writes(s);
            let Some(k) = flowmap::kernel_key(&f.key) else {
                return;
            };
            write_learned(s, k, flowmap::kernel_entry(&f));
        }
        FlowOp::Delete(f) => {
            flush_learned(s);
            finish_writes(s);
            let Some(k) = flowmap::kernel_key(&f.key) else {
                return;
            };
            // The key may hold another flow by now (a new connection on the same 5-tuple).
            if s.table.get(&k).is_some_and(|e| entry_id(&e) == f.id) {
                s.table.remove(&k);
                s.reported.remove(&k);
            }
        }
        FlowOp::Clear { creator } => {
            flush_learned(s);
            finish_writes(s);
            for (k, e) in s.table.scan() {
                if e.creator == creator && e.learned() {
                    s.table.remove(&k);
                    s.reported.remove(&k);
                }
            }
        }
    }
}

/// Writes one learned flow, merged into the map's copy if the key is there already.
fn write_learned(s: &mut SyncDriver, k: km::FlowKey, theirs: km::FlowEntry) {
    let id = entry_id(&theirs);
    let entry = match s.table.get(&k) {
        Some(ours) => flowmap::merge_kernel_entries(&ours, &theirs),
        None => theirs,
    };
    if let Err(e) = s.table.insert(k, entry) {
        tracing::warn!("flows: writing a learned flow: {e}");
        return;
    }
    // Written by us, not seen here: a scan must not report it back as local traffic.
    let seen = s.reported.entry(k).or_insert(Seen {
        last_seen_ns: 0,
        id,
        pass: s.pass,
    });
    seen.last_seen_ns = seen.last_seen_ns.max(entry.last_seen_ns);
    seen.id = id;
}

/// The flow a learned entry holds.
fn entry_id(e: &km::FlowEntry) -> FlowId {
    FlowId::new(e.creator, e.id)
}

/// Logs why a batch write of learned flows failed; true if the kernel refuses batch updates
/// altogether (before Linux 5.6), so they are written one by one from now on.
fn batch_refused(e: &std::io::Error) -> bool {
    if matches!(e.raw_os_error(), Some(libc::EINVAL | 524 /* ENOTSUPP */)) {
        tracing::info!(
            "flows: the kernel refuses batch map updates ({e}): learned flows are written one by one"
        );
        true
    } else {
        tracing::warn!("flows: batch-writing learned flows: {e}; writing them one by one");
        false
    }
}

/// Writes the gathered learned inserts with one BPF_MAP_UPDATE_BATCH. The batch overwrites, so a key
/// the map holds already (the dataplane saw the flow here too; every such key is in `reported`, from its
/// event, a scan or an earlier write) is merged on its own first, as `write_learned` does. (The kernel
/// takes no BPF_NOEXIST in a batch; a flow the dataplane creates in the instant between our look and the
/// write is overwritten, as it would be between `write_learned`'s read and write.)
fn flush_learned(s: &mut SyncDriver) {
    // The batch in flight goes first (a key of this one may be in it).
    finish_writes(s);
    if s.learned.keys.is_empty() {
        return;
    }
    let mut b = std::mem::take(&mut s.learned);
    let mut fresh = 0;
    for i in 0..b.keys.len() {
        // One look-up per flow decides and, for a new key, does the bookkeeping of the write ahead (a
        // failed batch is written again one by one below, which redoes it).
        let known = match s.reported.entry(b.keys[i]) {
            std::collections::hash_map::Entry::Occupied(_) => true,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Seen {
                    last_seen_ns: b.entries[i].last_seen_ns,
                    id: entry_id(&b.entries[i]),
                    pass: s.pass,
                });
                false
            }
        };
        if b.unsupported || known {
            write_learned(s, b.keys[i], b.entries[i]);
        } else {
            if fresh != i {
                b.keys[fresh] = b.keys[i];
                b.entries[fresh] = b.entries[i];
            }
            fresh += 1;
        }
    }
    if fresh > 0 && !b.unsupported {
        if !s.writer_tried {
            s.writer_tried = true;
            s.writer = BatchWriter::spawn(&s.table);
        }
        if let Some(w) = s.writer.as_mut() {
            b.keys.truncate(fresh);
            b.entries.truncate(fresh);
            let keys = std::mem::take(&mut b.keys);
            let entries = std::mem::take(&mut b.entries);
            match w.start(keys, entries) {
                Ok(()) => fresh = 0,
                Err((keys, entries)) => {
                    // The thread is gone: write them here from now on.
                    s.writer = None;
                    b.keys = keys;
                    b.entries = entries;
                }
            }
        }
    }
    if fresh > 0 {
        match s.table.insert_batch(&b.keys[..fresh], &b.entries[..fresh]) {
            Ok(_) => {}
            Err(e) => {
                b.unsupported |= batch_refused(&e);
                // Each write is idempotent: the ones the batch did write are written again.
                for i in 0..fresh {
                    write_learned(s, b.keys[i], b.entries[i]);
                }
            }
        }
    }
    b.keys.clear();
    b.entries.clear();
    s.learned = b;
}

/// Waits for the writer thread's batch in flight: afterwards the map holds every learned flow written
/// so far (a failed batch is written here one by one, as `flush_learned` would have).
fn finish_writes(s: &mut SyncDriver) {
    let Some(done) = s.writer.as_mut().and_then(BatchWriter::finish) else {
        return;
    };
    if let Err(e) = done.result {
        s.learned.unsupported |= batch_refused(&e);
        for (k, e) in done.keys.iter().zip(&done.entries) {
            write_learned(s, *k, *e);
        }
    }
    // The buffers go round again.
    if s.learned.keys.is_empty() && s.learned.keys.capacity() == 0 {
        let (mut keys, mut entries) = (done.keys, done.entries);
        keys.clear();
        entries.clear();
        s.learned.keys = keys;
        s.learned.entries = entries;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_packets_fill_the_syncdev_mtu() {
        assert_eq!(payload_for_mtu(1500), Some(1472));
        assert_eq!(payload_for_mtu(9000), Some(8972));
        assert_eq!(payload_for_mtu(65536), Some(65507));
        // Too small for one full record: the engine's default stays.
        assert_eq!(payload_for_mtu(100), None);
        assert_eq!(payload_for_mtu(10), None);
        assert_eq!(sync_payload_mtu("no-such-dev0"), None);
    }

    #[test]
    fn failures_are_logged_first_then_once_a_thousand() {
        let logged: Vec<u64> = (1..=3001).filter(|&n| log_due(n - 1, n)).collect();
        assert_eq!(logged, [1, 1000, 2000, 3000]);
        // A GSO run of 44 failing together crosses a thousand without landing on it.
        assert!(log_due(0, 44));
        assert!(!log_due(44, 88));
        assert!(log_due(980, 1024));
        assert!(!log_due(5, 5));
    }
}
