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
//!
//! Files: this one holds the driver's state and its set-up (`SyncDriver::open`); `events` is each turn
//! of the loop and the engine's actions, `scan` the flow-table scan, `learned` the writes of learned
//! flows, `report` `carpctl sync|flows`, `flowmap` the kernel <-> protocol record translation and
//! `transport` the UDP socket.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result};
use carp_common::maps::{self as km, FLOW_MODE_OFF, FLOW_MODE_STATEFUL, FLOW_MODE_TRACK, FlowConf};
use tokio::io::{Interest, unix::AsyncFd};

use super::monotonic;

use crate::dataplane::{
    flows::{BatchWriter, DeferredFrame},
    reinject,
    reinject::Reinjector,
};
use crate::{
    config::Config,
    dataplane::{
        flows::{FlowDev, FlowTable},
        if_index,
    },
    engine::Time,
    sync::{FlowId, SeededFlowHash, SyncConfig, SyncEngine, SyncKey},
};

pub mod conntrack;
mod events;
pub mod flowmap;
mod learned;
mod report;
mod scan;
pub mod transport;

use learned::{LearnedBatch, finish_writes};
use scan::ScanPass;
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
/// Most flows a bulk transfer makes the driver reserve room for (the sync engine's bound).
use crate::sync::peer::MAX_BULK_RESERVE;
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
    /// `[pfsync] conntrack = true`: the conntrack thread.
    ct: Option<conntrack::CtDriver>,
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
    /// The conntrack thread has news (its bulk was applied).
    Conntrack,
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
                // The engine never holds more flows than the dataplane's table can.
                sc.max_flows = config.flows.limit as usize;
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
                let mut engine = SyncEngine::new(sc, key).context("pfsync")?;
                let sock = SyncSocket::open(p)
                    .with_context(|| format!("pfsync: the sync socket on {}", p.syncdev))?;
                let ct = match &p.conntrack {
                    None => None,
                    Some(c) => {
                        let vips: Vec<std::net::IpAddr> = config
                            .interfaces
                            .iter()
                            .flat_map(|i| i.addresses.iter().map(|a| a.addr))
                            .collect();
                        let mut sync_addrs = conntrack::own_addresses(&[], Some(&p.syncdev));
                        sync_addrs.extend(p.syncpeer.map(std::net::IpAddr::V4));
                        let d = conntrack::CtDriver::open(
                            c,
                            &sock,
                            engine.sealer(),
                            sc_mtu,
                            &vips,
                            &sync_addrs,
                        )?;
                        // One demotion for both bulks: it stays until the conntrack bulk is in too.
                        engine.wait_for_conntrack_bulk();
                        Some(d)
                    }
                };
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
                    ct,
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
        if let Some(ct) = self.repl.as_ref().and_then(|r| r.ct.as_ref()) {
            ct.live(live.clone());
        }
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
    let ct = async {
        match s.repl.as_ref().and_then(|r| r.ct.as_ref()) {
            Some(ct) => ct.notified().await,
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
        _ = ct => SyncWake::Conntrack,
        _ = tokio::time::sleep(sleep) => SyncWake::Timer,
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
}
