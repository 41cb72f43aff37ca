//! carpd's conntrack replication (`[pfsync] conntrack = true`, issue #15): a thread of its own runs
//! the sans-IO `CtMirror` with the ctnetlink sockets, so that nothing whose cost grows with the
//! table (dumps, bulk inserts, a peer's burst of entries) runs on the daemon's runtime thread.
//!
//! Data flow: the kernel's events (event socket, drained by the reader thread; the echoes of our own
//! changes, which carry the request socket's portid, are dropped in the kernel by a socket filter)
//! and the peers' conntrack messages (parsed and authenticated by the `SyncEngine` on the runtime
//! thread, handed over here in one channel send per turn) go into the mirror; its `Send`s are sealed
//! here with the engine's key and sequence numbers (`Sealer`, so they share the peers' replay
//! windows) and sent on a duplicate of the sync socket, GSO-batched; its `Apply`s go to the kernel in
//! batched netlink sends; a peer's bulk request dumps the kernel table and sends it paced. When the
//! bulk to us has been applied, the runtime thread is told (`Notice::BulkApplied`) and the engine
//! lifts the one bulk demotion. Lost events (an ENOBUFS overrun, or the reader's queue full) are
//! counted, the buffer doubled, and the table resynced from a dump. The node's CARP role goes to the
//! mirror on every state change (`CtDriver::role`).
//!
//! The reader (`reader.rs`) owns the event socket and drains it into the conntrack thread's channel,
//! so events keep being read while that thread inserts a bulk, dumps or sends one; the queue between
//! them is bounded.
//!
//! The threads start in `sync_start`, after carpd dropped its capabilities (it keeps CAP_NET_ADMIN,
//! which ctnetlink needs); the sockets are opened earlier, in `open`, so errors stop the start.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, Result};

mod reader;
mod worker;

use super::transport::SyncSocket;
use crate::config::conntrack::ConntrackConfig;
use crate::ctnetlink::{self, CtSocket};
use crate::daemon::monotonic;
use crate::engine::Time;
use crate::sync::conntrack::{
    CtAction, CtBulkState, CtConfig, CtCounters, CtMessage, CtMirror, CtOp, CtRole, LocalEvent,
};
use crate::sync::{Message, PacketBuilder, Sealer};

/// The event socket's receive buffer at start (doubled after each overrun up to `EVENT_BUFFER_MAX`).
const EVENT_BUFFER: usize = 8 << 20;
/// The largest event buffer an overrun grows it to.
const EVENT_BUFFER_MAX: usize = 128 << 20;
/// Event datagrams the reader takes per read (one channel send).
const EVENT_READS: usize = 256;
/// Events and peers' messages the conntrack thread takes in per turn (the rest wait for the next,
/// after this turn's kernel changes and sends), so one turn's netlink batch stays short.
const INPUTS_PER_TURN: usize = 4096;
/// Learned entries refreshed per turn at most.
const REFRESH_BUDGET: usize = 4096;
/// Bulk packets sent per pacing tick (as the flow bulk: ~95 MB/s on a 1400-byte MTU).
const BULK_PACKETS_PER_TICK: usize = 340;
/// The bulk pacing tick.
const BULK_TICK: Duration = Duration::from_millis(5);

/// What the runtime thread hands the conntrack thread.
enum Input {
    Start,
    Remote(Vec<(u32, CtMessage)>),
    /// The kernel's events, from the reader.
    Local(Vec<LocalEvent>),
    /// The reader lost events (`why`: a socket overrun or its queue full; `buffer`: the socket
    /// buffer now): the table must be resynced.
    Overrun {
        why: &'static str,
        buffer: usize,
    },
    Live(Vec<u32>),
    Role(CtRole),
    Stop,
}

/// What the conntrack thread tells the runtime thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Notice {
    /// The bulk to us is over and its entries are in the kernel (or we gave up on it).
    BulkApplied {
        /// Every entry arrived.
        complete: bool,
    },
}

/// The I/O side's counters.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct IoCounters {
    /// Echoes of our own changes that got past the kernel's socket filter (dropped; 0 unless the
    /// filter could not be attached).
    pub echoes: u64,
    /// Events lost (an event socket overrun, ENOBUFS, or the reader's queue full), each repaired
    /// by a resync.
    pub overruns: u64,
    /// Changes the kernel refused (by errno in `refused`).
    pub refused: u64,
    /// Sync packets that could not be sent.
    pub send_errors: u64,
    /// Entries dumped for bulk transfers and resyncs.
    pub dumped: u64,
}

/// A snapshot of the conntrack thread's state, for `carpctl sync` and the metrics.
#[derive(Clone, Debug, Default)]
pub struct CtStatus {
    /// The mirror's counters.
    pub mirror: CtCounters,
    /// The I/O counters.
    pub io: IoCounters,
    /// Refused changes by errno name.
    pub refused: BTreeMap<String, u64>,
    /// Entries the mirror knows.
    pub entries: u64,
    /// Of them learned from peers.
    pub learned: u64,
    /// The bulk to this node.
    pub bulk: Option<CtBulkState>,
}

struct Shared {
    notify: tokio::sync::Notify,
    notices: Mutex<Vec<Notice>>,
    status: Mutex<CtStatus>,
}

/// The conntrack thread's state (moved onto the thread at start).
struct Worker {
    mirror: CtMirror,
    inject: CtSocket,
    sock: SyncSocket,
    sealer: Sealer,
    mtu: usize,
    rx: mpsc::Receiver<Input>,
    wake: Arc<OwnedFd>,
    shared: Arc<Shared>,
    io: IoCounters,
    refused: BTreeMap<i32, u64>,
    reader: Arc<reader::ReaderShared>,
    checked_bulk: Option<u32>,
}

/// carpd's handle on the conntrack thread.
pub(super) struct CtDriver {
    tx: mpsc::Sender<Input>,
    wake: Arc<OwnedFd>,
    shared: Arc<Shared>,
    worker: Option<(Worker, reader::Reader)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    reader: Arc<reader::ReaderShared>,
    role: CtRole,
}

/// The addresses on this host's interfaces (getifaddrs; only `dev`'s if given), less `except`.
pub(super) fn own_addresses(except: &[IpAddr], dev: Option<&str>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifa: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free below.
    if unsafe { libc::getifaddrs(&mut ifa) } != 0 {
        return out;
    }
    let mut p = ifa;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned.
        let a = unsafe { &*p };
        // SAFETY: ifa_name is a NUL-terminated string of the node.
        let name = unsafe { std::ffi::CStr::from_ptr(a.ifa_name) };
        let wanted = dev.is_none_or(|d| name.to_bytes() == d.as_bytes());
        if wanted && !a.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of the family it names.
            let fam = i32::from(unsafe { (*a.ifa_addr).sa_family });
            let ip = match fam {
                libc::AF_INET => {
                    // SAFETY: an AF_INET address is a sockaddr_in.
                    let s = unsafe { &*(a.ifa_addr as *const libc::sockaddr_in) };
                    Some(IpAddr::from(u32::from_be(s.sin_addr.s_addr).to_be_bytes()))
                }
                libc::AF_INET6 => {
                    // SAFETY: an AF_INET6 address is a sockaddr_in6.
                    let s = unsafe { &*(a.ifa_addr as *const libc::sockaddr_in6) };
                    Some(IpAddr::from(s.sin6_addr.s6_addr))
                }
                _ => None,
            };
            if let Some(ip) = ip
                && !ip.is_loopback()
                && !except.contains(&ip)
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
        p = a.ifa_next;
    }
    // SAFETY: ifa came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifa) };
    out
}

/// Hands the conntrack thread an input and wakes it (its eventfd); false if the thread is gone.
fn send_input(tx: &mpsc::Sender<Input>, wake: &OwnedFd, i: Input) -> bool {
    if tx.send(i).is_err() {
        return false;
    }
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from `one` to the eventfd.
    unsafe { libc::write(wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    true
}

fn errno_name(e: i32) -> String {
    match e {
        libc::ENOMEM => "ENOMEM".into(),
        libc::EEXIST => "EEXIST".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::EPERM => "EPERM".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        libc::ENOSPC => "ENOSPC".into(),
        e => format!("errno{e}"),
    }
}

fn log_due(n: u64) -> bool {
    n == 1 || n.is_multiple_of(1000)
}

impl CtDriver {
    /// Opens the ctnetlink sockets and takes the kernel's table in (unannounced); the thread starts
    /// with `start`. `vips` are the configured virtual addresses (not "own": NAT to them is replicated),
    /// `sync_addrs` the sync link's (never replicated).
    pub(super) fn open(
        cfg: &ConntrackConfig,
        sock: &SyncSocket,
        sealer: Sealer,
        mtu: usize,
        vips: &[IpAddr],
        sync_addrs: &[IpAddr],
    ) -> Result<CtDriver> {
        if ctnetlink::sysctl("nf_conntrack_max").is_none() {
            anyhow::bail!(
                "conntrack: netfilter connection tracking is not loaded (no net.netfilter.nf_conntrack_max): \
                 `modprobe nf_conntrack nf_conntrack_netlink`, or set [pfsync] conntrack = false"
            );
        }
        match ctnetlink::sysctl("nf_conntrack_events") {
            Some(0) => {
                // With events off no NEW/UPDATE/DESTROY would ever reach us.
                ctnetlink::set_sysctl("nf_conntrack_events", 1).context(
                    "conntrack: net.netfilter.nf_conntrack_events is 0 (no events) and cannot be set to 1",
                )?;
                tracing::warn!("conntrack: net.netfilter.nf_conntrack_events was 0: set to 1");
            }
            Some(2) => tracing::info!(
                "conntrack: nf_conntrack_events = 2 (auto): entries made before carpd listened send no DESTROY; \
                 their copies on the peers go when they time out there"
            ),
            _ => {}
        }
        let events = CtSocket::events(EVENT_BUFFER).context("conntrack: the event socket")?;
        let mut inject = CtSocket::open().context("conntrack: the request socket")?;
        // A bulk of a million inserts would otherwise queue a million echoes ahead of the kernel's
        // own events and overrun the buffer.
        events
            .drop_events_of(inject.portid())
            .context("conntrack: the event socket")?;
        let mut extra: Vec<(IpAddr, u8)> = sync_addrs
            .iter()
            .map(|a| (*a, if a.is_ipv4() { 32 } else { 128 }))
            .collect();
        if cfg.ignore_own {
            extra.extend(
                own_addresses(vips, None)
                    .into_iter()
                    .map(|a| (a, if a.is_ipv4() { 32 } else { 128 })),
            );
        }
        let filter = cfg.filter(&extra);
        tracing::info!(
            "conntrack: replicating zones {}, protocols {:?}, ignoring {} prefix(es) (own addresses and the sync link included)",
            cfg.zones
                .as_ref()
                .map_or("all".to_string(), |z| format!("{z:?}")),
            filter
                .protocols
                .iter()
                .map(|p| crate::sync::conntrack::entry::proto::name(*p).unwrap_or("?"))
                .collect::<Vec<_>>(),
            filter.ignore.len()
        );
        let mut mirror = CtMirror::new(CtConfig {
            filter,
            mtu,
            ..CtConfig::default()
        });
        let table = inject.dump().context("conntrack: dumping the table")?;
        let n = table.len();
        mirror.adopt(table);
        tracing::info!(
            "conntrack: {n} entries in the kernel table, {} replicated",
            mirror.len()
        );
        let sock = sock
            .try_clone()
            .context("conntrack: duplicating the sync socket")?;
        // SAFETY: eventfd has no preconditions; the fd is owned from here on.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error()).context("conntrack: eventfd");
        }
        // SAFETY: efd is a fresh fd nobody else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(efd) });
        let (tx, rx) = mpsc::channel();
        let reader_shared = Arc::new(reader::ReaderShared {
            queued: std::sync::atomic::AtomicUsize::new(0),
            stop: std::sync::atomic::AtomicBool::new(false),
            echoes: std::sync::atomic::AtomicU64::new(0),
        });
        let reader = reader::Reader {
            events,
            portid: inject.portid(),
            tx: tx.clone(),
            wake: wake.clone(),
            shared: reader_shared.clone(),
        };
        let shared = Arc::new(Shared {
            notify: tokio::sync::Notify::new(),
            notices: Mutex::new(Vec::new()),
            status: Mutex::new(CtStatus::default()),
        });
        let worker = Worker {
            mirror,
            inject,
            sock,
            sealer,
            mtu,
            rx,
            wake: wake.clone(),
            shared: shared.clone(),
            io: IoCounters::default(),
            refused: BTreeMap::new(),
            reader: reader_shared.clone(),
            checked_bulk: None,
        };
        let mut worker = worker;
        worker.publish();
        Ok(CtDriver {
            tx,
            wake,
            shared,
            worker: Some((worker, reader)),
            threads: Vec::new(),
            reader: reader_shared,
            role: CtRole::Shared,
        })
    }

    fn send(&self, i: Input) {
        send_input(&self.tx, &self.wake, i);
    }

    /// Starts the threads and the bulk request.
    pub(super) fn start(&mut self) {
        if let Some((w, r)) = self.worker.take() {
            let started = std::thread::Builder::new()
                .name("carpd-conntrack".into())
                .spawn(move || w.run())
                .and_then(|h| {
                    self.threads.push(h);
                    std::thread::Builder::new()
                        .name("carpd-ct-events".into())
                        .spawn(move || r.run())
                });
            match started {
                Ok(h) => self.threads.push(h),
                Err(e) => {
                    tracing::error!("conntrack: cannot start its threads: {e}; not replicating");
                    return;
                }
            }
        }
        self.send(Input::Start);
    }

    /// Peers' conntrack messages, in arrival order.
    pub(super) fn remote(&self, msgs: Vec<(u32, CtMessage)>) {
        if !msgs.is_empty() {
            self.send(Input::Remote(msgs));
        }
    }

    /// The live peers (learned entries of the others are no longer refreshed).
    pub(super) fn live(&self, peers: Vec<u32>) {
        self.send(Input::Live(peers));
    }

    /// This node's CARP role (the mirror's `CtRole`), sent when it changes.
    pub(super) fn role(&mut self, role: CtRole) {
        if role != self.role {
            self.role = role;
            tracing::info!("conntrack: role {role:?}");
            self.send(Input::Role(role));
        }
    }

    /// What the thread reported since the last call.
    pub(super) fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(
            &mut *self
                .shared
                .notices
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Resolves when the thread has a notice.
    pub(super) async fn notified(&self) {
        self.shared.notify.notified().await
    }

    /// The latest snapshot of the thread's state.
    pub(super) fn status(&self) -> CtStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The `carpctl sync` view.
    pub(super) fn report(&self) -> crate::control::report::ConntrackReport {
        let s = self.status();
        let m = s.mirror;
        let io = s.io;
        let bulk = match s.bulk {
            None | Some(CtBulkState::Idle) => "idle".to_string(),
            Some(CtBulkState::Requesting { tries }) => format!("requesting ({tries} sent)"),
            Some(CtBulkState::Receiving { expected, received }) => {
                format!("receiving {received}/{expected}")
            }
            Some(CtBulkState::Done { complete: true }) => "done".into(),
            Some(CtBulkState::Done { complete: false }) => "timed-out".into(),
        };
        let counters = [
            ("events", m.events),
            ("sent", m.sent),
            ("received", m.received),
            ("applied", m.applied),
            ("learned", m.learned),
            ("stale", m.stale),
            ("filtered", m.filtered),
            ("refreshed", m.refreshed),
            ("bulk_sent", m.bulk_sent),
            ("bulk_received", m.bulk_received),
            ("bulk_incomplete", m.bulk_incomplete),
            ("bulk_coalesced", m.bulk_coalesced),
            ("resyncs", m.resyncs),
            ("known", m.known),
            ("echoes", io.echoes),
            ("overruns", io.overruns),
            ("refused", io.refused),
            ("send_errors", io.send_errors),
            ("dumped", io.dumped),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        crate::control::report::ConntrackReport {
            entries: s.entries,
            learned: s.learned,
            bulk,
            counters,
            refused: s.refused.into_iter().collect(),
        }
    }
}

impl Drop for CtDriver {
    fn drop(&mut self) {
        self.reader
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.send(Input::Stop);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}
