//! carpd's event loop: the sans-IO election engine (`engine::Host`) driven by CLOCK_MONOTONIC, fed by the
//! XDP dataplane's advert ring buffer and the kernel's link notifications, and carrying out the engine's
//! actions on the network (adverts, gratuitous ARP/NA), on the dataplane maps and on the carp interfaces.
//!
//! What this module owns: start-up (a per-carpdev lock, attaching or adopting the dataplane, replacing a
//! stale carp interface left by a killed carpd), the loop, signals (SIGTERM/SIGINT = planned stop with
//! bow-out and make-before-break; SIGHUP = reload; SIGUSR2 = hitless restart), and clean-up. The rest
//! is one job per file: `carpdev` (lock, attach or adopt the dataplane), `carpif` (add, start, remove a
//! carp interface), `intake` (advert events, the deadline with its stall guard, link events), `actions`
//! (carrying out the engine's actions), `reload` (SIGHUP), `audit` (drop-counter logs), `nodes`
//! (carpnodes and balancing), `control` (the answers to carpctl) behind `server` (the socket and the
//! metrics endpoint), `sync` (flow replication's driver), `track` (health checkers), `standby`
//! (advert repeaters). The IO pieces live in `netio` (frames), `netlink` (links and addresses) and
//! `hooks` (operator scripts).
//!
//! Hitless restart (SIGUSR2, `carpctl restart`, or SIGKILL and a new start): the XDP link and maps are
//! pinned, so the dataplane keeps forwarding and answering ARP while no carpd runs. A new carpd adopts the
//! pins and resumes every vhid whose `carp_vhids` entry is MASTER with a lease still valid as MASTER at once:
//! it keeps the carp interface and its VIPs, renews the lease and advertises immediately, so the peers never
//! miss three adverts and never fail over. Any other vhid starts as usual (INIT, then BACKUP). SIGUSR2
//! re-executes `/proc/self/exe` with the same argv rather than spawning a child and exiting: the PID stays,
//! so systemd's Type=notify main PID (and a supervisor holding the child) stays valid without MAINPID=, and
//! there is never a second carpd competing for the locks; systemd is told RELOADING=1 before and READY=1
//! once the new image serves the control socket.
//!
//! Time: engine `Time` is CLOCK_MONOTONIC in nanoseconds, the same clock as the kernel's
//! `bpf_ktime_get_ns`, so the kernel's advert timestamps compare directly with engine deadlines.
//!
//! Sysctls: one. carpd sets `net.ipv4.conf.<carpdev>.arp_announce = 2`: replies from a VIP may leave
//! through the carpdev (its connected route is older than the carp interface's), and with the default
//! the kernel would then ask "who has <client>" with the VIP as sender address and the carpdev's own MAC,
//! re-teaching every client the VIP -> real MAC mapping and defeating the virtual MAC. rp_filter does not
//! matter because XDP consumes adverts before the IP stack sees them, and the kernel's own ARP replies
//! for a VIP are pre-empted by the XDP responder (it answers while MASTER and drops requests otherwise). On real NICs the carpdev joins
//! 224.0.0.18 / ff02::12 so the NIC's multicast filter admits adverts (`netio`).

mod actions;
pub mod advcache;
pub mod advq;
mod audit;
mod carpdev;
mod carpif;
pub mod carplog;
pub mod control;
pub mod deadline;
pub mod existing;
pub mod flowlist;
pub mod hooks;
mod intake;
pub mod netio;
pub mod netlink;
pub mod nodes;
pub mod observe;
pub mod ownaddrs;
pub mod privs;
pub mod ratelog;
mod relink;
mod reload;
mod reload_check;
pub mod rt;
pub mod server;
pub mod stall;
pub mod standby;
pub mod sync;
pub mod tcnl;
pub mod track;
pub mod vrrp;

use std::{os::fd::OwnedFd, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    config::{Config, InitialState},
    dataplane::{AttachMode, Dataplane},
    engine::{ForcedState, Host, HostEvent, State, Time},
};
use audit::AUDIT_INTERVAL;
use carpdev::Carpdev;
use carpif::CarpIf;
use netlink::{LinkEvent, Netlink, Notifications};

/// How long a MASTER keeps serving after its bow-out advert, waiting for the new master (make-before-break).
pub const SHUTDOWN_LINGER: Duration = Duration::from_secs(3);
/// Where the per-carpdev locks live.
pub const LOCK_DIR: &str = "/run/carp";

/// How the daemon was started (the command line minus the config).
#[derive(Debug, Clone)]
pub struct Options {
    /// The config file (re-read on SIGHUP).
    pub config_path: PathBuf,
    /// bpffs directory for pins.
    pub bpffs: PathBuf,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
    /// Control socket path (carpctl).
    pub control_socket: PathBuf,
    /// OpenMetrics listen address (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Runs the daemon until a planned stop (Ok) or a start-up failure (Err, nothing left half-started).
pub fn run(config: Config, options: Options) -> Result<()> {
    record_exe();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let exit = rt.block_on(async move {
        let mut daemon = Daemon::new(config, options)?;
        // On a failed set-up, clean-up removes whatever was created: never a half-started daemon.
        let result = match daemon.setup().await {
            Ok(()) => daemon.run().await,
            Err(e) => Err(e),
        };
        if !matches!(result, Ok(Exit::Restart)) {
            daemon.cleanup().await;
        }
        // Dropping the daemon closes the locks, the maps and the sockets; the pins keep the dataplane.
        drop(daemon);
        result
    })?;
    drop(rt);
    match exit {
        Exit::Stop => Ok(()),
        Exit::Restart => Err(reexec()),
    }
}

/// Signals whose handlers the new image installs only after start-up: blocked across the execve so one
/// arriving meanwhile waits (pending) instead of killing carpd with the default action.
const DEFERRED_SIGNALS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR2];

/// Blocks (true) or unblocks (false) `DEFERRED_SIGNALS` in the calling thread.
fn block_signals(block: bool) {
    // SAFETY: a sigset_t built with sigemptyset/sigaddset, passed to pthread_sigmask for this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in DEFERRED_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// The path this process's binary was started from, read once at start-up: a hitless restart
/// executes what is at that path now, so after a package upgrade replaced the file the new version
/// runs (/proc/self/exe would still be the old, deleted image).
static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Records `EXE` (called first thing in `run`).
fn record_exe() -> &'static std::path::Path {
    EXE.get_or_init(|| {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        // Replaced before we looked: the kernel marks the link; the path is still the one to run.
        match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(p) => PathBuf::from(p),
            None => exe,
        }
    })
}

/// Re-executes this binary with the same argv (same PID); returns only on failure.
fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "carpd".into());
    let exe = record_exe();
    tracing::info!("hitless restart: re-executing {}", exe.display());
    let now = sd_notify::NotifyState::monotonic_usec_now()
        .unwrap_or(sd_notify::NotifyState::MonotonicUsec(0));
    observe::notify(&[sd_notify::NotifyState::Reloading, now]);
    block_signals(true);
    let err = std::process::Command::new(exe).arg0(arg0).args(args).exec();
    block_signals(false);
    anyhow::anyhow!(
        "hitless restart: execve {} failed: {err}; the dataplane keeps its MASTER lease until it expires, start carpd again",
        exe.display()
    )
}

enum Wake {
    Timer,
    Audit,
    Ring(usize),
    Vrrp(usize),
    Link(Option<LinkEvent>),
    Stop(&'static str),
    Restart,
    Reload,
    Control(server::Msg),
    Sync(sync::SyncWake),
    Watchdog,
}

struct Daemon {
    options: Options,
    config: Config,
    host: Host,
    devs: Vec<Carpdev>,
    rings: Vec<AsyncFd<OwnedFd>>,
    ifs: Vec<CarpIf>,
    nl: Netlink,
    nl_rx: Notifications,
    last_now: Time,
    stopping: bool,
    // SIGUSR2 or `carpctl restart`: leave the loop and re-execute (no bow-out, no clean-up).
    restart: bool,
    // Flow tracking and replication (`[flows]`, `[pfsync]`), when configured.
    sync: Option<sync::SyncDriver>,
    // Threads on other CPUs that repeat a MASTER's last advert if the loop is held up (None if they
    // could not start).
    standby: Option<standby::Standby>,
    // The standbys' repeat count when it was last logged, and when.
    standby_seen: u64,
    standby_logged: Option<std::time::Instant>,
    // The VRRP receive sockets, one set per carpdev with VRRP interfaces (`vrrp`).
    vrrp_rx: Vec<vrrp::VrrpRx>,
    // Last transitions, the monitor stream and the systemd status.
    obs: observe::Observer,
    // The carpdevs' addresses, kept fresh off the loop (getifaddrs waits for the RTNL lock).
    own_addrs: ownaddrs::OwnAddrs,
    // Built adverts and carpdev source addresses (`advcache`).
    advcache: advcache::AdvCache,
    // Loop lateness and the backup's late wake-up decisions (`stall`).
    loop_stats: stall::LoopStats,
}

/// Why the main loop ended.
enum Exit {
    /// Planned stop: clean up everything.
    Stop,
    /// Hitless restart: leave the dataplane, the carp interfaces and the VIPs as they are and re-execute.
    Restart,
}

/// CLOCK_MONOTONIC as engine time.
fn monotonic() -> Time {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Time::from_nanos(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

impl Daemon {
    /// A daemon with nothing set up yet (so a failing set-up can always be cleaned up).
    fn new(config: Config, options: Options) -> Result<Daemon> {
        let (nl, nl_rx) = Netlink::connect()?;
        Ok(Daemon {
            options,
            config,
            host: Host::new(),
            devs: Vec::new(),
            rings: Vec::new(),
            ifs: Vec::new(),
            nl,
            nl_rx,
            last_now: Time::ZERO,
            stopping: false,
            restart: false,
            sync: None,
            standby: None,
            standby_seen: 0,
            standby_logged: None,
            vrrp_rx: Vec::new(),
            obs: observe::Observer::new(),
            own_addrs: ownaddrs::OwnAddrs::start()
                .context("starting the thread that reads the carpdevs' addresses")?,
            advcache: advcache::AdvCache::default(),
            loop_stats: stall::LoopStats::default(),
        })
    }

    /// Attaches every carpdev and creates every carp interface of the config.
    async fn setup(&mut self) -> Result<()> {
        for name in self.config.carpdevs() {
            self.attach_carpdev(&name).await?;
        }
        for cfg in self.config.interfaces.clone() {
            self.add_carp_if(&cfg).await?;
        }
        let resuming = self.ifs.iter().any(|i| i.resuming);
        self.sync = sync::SyncDriver::open(&self.config, &self.options.bpffs, resuming)?;
        Ok(())
    }

    fn now(&mut self) -> Time {
        self.last_now = self.last_now.max(monotonic());
        self.last_now
    }

    async fn feed(&mut self, event: HostEvent) {
        let now = self.now();
        // Group changes are rare (carpctl, trackers, the sync bulk): only they pay for the look.
        let groups_before = matches!(
            event,
            HostEvent::GroupSet { .. } | HostEvent::GroupAdjust { .. }
        )
        .then(|| self.group_values());
        let actions = self.host.handle(now, event);
        if let Some(before) = groups_before {
            for (group, new) in self.group_values() {
                let old = before
                    .iter()
                    .find(|(g, _)| *g == group)
                    .map_or(0, |(_, v)| *v);
                if old != new {
                    self.obs.demote(&group, old, new, None);
                }
            }
        }
        for a in actions {
            self.carry_out(a.node, a.action).await;
        }
    }

    /// Every group's demote counter.
    fn group_values(&self) -> Vec<(String, u8)> {
        self.host
            .groups()
            .iter()
            .map(|(g, v)| (g.to_string(), v))
            .collect()
    }

    /// STATUS= for systemd: each carp interface's state, e.g. "carp0 MASTER, carp1 BACKUP".
    fn update_status(&mut self) {
        let line = self
            .ifs
            .iter()
            .filter(|c| c.node == 0)
            .map(|c| format!("{} {}", c.cfg.name, c.state.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        self.obs.status(line);
    }

    async fn run(&mut self) -> Result<Exit> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        // The handlers are in place: signals held back across a hitless restart's execve come in now.
        block_signals(false);
        // Last step of start-up (it also sends systemd READY=1): carpctl works from here on.
        let mut ctl = server::Server::start(
            &self.options.control_socket,
            self.options.metrics.or(self.config.metrics.listen),
            &self.config.tracks,
            self.obs.events(),
            self.config.control.gid,
        )?;
        self.update_status();
        // WATCHDOG=1 at half systemd's WatchdogSec, from this loop: a hung loop gets carpd restarted.
        let mut watchdog = observe::watchdog_interval().map(|every| {
            let mut i = tokio::time::interval(every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        // Everything that needed more than the runtime capabilities (bpffs mount, a low metrics port)
        // is done: from here on a compromise of carpd or of a hook gets at most these four.
        // Real-time scheduling and locked memory, if configured: needs the start-up capabilities.
        rt::apply(&self.config.timing);
        let dropped = privs::drop_to_runtime_keeping(&rt::capabilities(&self.config.timing))
            .context("dropping capabilities")?;
        if !dropped.is_empty() {
            tracing::info!(
                "dropped {} capabilities, keeping net_admin, net_raw, bpf, perfmon",
                dropped.len()
            );
        }
        self.standby = standby::Standby::start()
            .map_err(|e| tracing::warn!("standby advert senders not started: {e}"))
            .ok();
        self.feed(HostEvent::Start).await;
        self.sync_start().await;
        for d in 0..self.devs.len() {
            if !self.devs[d].running {
                let carpdev = self.devs[d].name.clone();
                self.feed(HostEvent::CarpdevLink { carpdev, up: false })
                    .await;
            }
        }
        for i in 0..self.ifs.len() {
            if self.ifs[i].cfg.state == Some(InitialState::Master) {
                let iface = self.ifs[i].cfg.name.clone();
                self.feed(HostEvent::Force {
                    iface,
                    state: ForcedState::Master,
                })
                .await;
            }
        }
        // Resume the previous carpd's MASTERs now, before any timer: the forced master-down path
        // renews the lease and advertises at once.
        for i in 0..self.ifs.len() {
            if self.ifs[i].resuming && self.ifs[i].state == State::Backup {
                // One node, not every node of its interface: a carpnode that was BACKUP stays so.
                let now = self.now();
                for a in self
                    .host
                    .force_node(now, self.ifs[i].id, ForcedState::Master)
                {
                    self.carry_out(a.node, a.action).await;
                }
            }
        }
        // A vhid that could not resume (its carpdev is down): the kernel follows the engine after all.
        for i in 0..self.ifs.len() {
            if std::mem::take(&mut self.ifs[i].resuming) {
                let state = self.ifs[i].state;
                tracing::info!(
                    "{}: not resumed as MASTER (engine state {state})",
                    self.ifs[i].cfg.name
                );
                self.apply_state(i, state).await;
            }
        }
        // The kernel counts bad adverts without logging (never per packet); the controller reads the
        // counters now and then and logs each cause at most once a minute.
        let mut audit = tokio::time::interval(AUDIT_INTERVAL);
        audit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deadline =
            deadline::Deadline::new().context("a timerfd for the engine's deadlines")?;
        loop {
            if self.stopping && self.ifs.iter().all(|i| i.state != State::Master) {
                tracing::info!("stopped");
                return Ok(Exit::Stop);
            }
            if self.restart {
                // `carpctl restart` was answered on a oneshot; give its connection task a moment to
                // write the answer before the image goes (the MASTER lease covers ~3 advert intervals).
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Ok(Exit::Restart);
            }
            let armed = self.host.next_deadline();
            deadline.arm(armed).context("arming the engine's timerfd")?;
            let wake = tokio::select! {
                _ = deadline.wait() => Wake::Timer,
                _ = audit.tick() => Wake::Audit,
                i = ring_ready(&self.rings) => Wake::Ring(i),
                k = vrrp::rx_ready(&self.vrrp_rx) => Wake::Vrrp(k),
                ev = netlink::next_event(&mut self.nl_rx) => Wake::Link(ev),
                _ = term.recv() => Wake::Stop("SIGTERM"),
                _ = int.recv() => Wake::Stop("SIGINT"),
                _ = hup.recv() => Wake::Reload,
                _ = usr2.recv() => Wake::Restart,
                msg = ctl.next() => Wake::Control(msg),
                w = sync::wait(&self.sync) => Wake::Sync(w),
                _ = tick(&mut watchdog) => Wake::Watchdog,
            };
            match wake {
                Wake::Timer => {
                    if let Some(at) = armed {
                        let late = self.now().saturating_duration_since(at);
                        self.loop_stats.record(late);
                    }
                    self.on_timer().await
                }
                Wake::Audit => {
                    self.audit_dataplane();
                    self.audit_standby();
                }
                Wake::Ring(d) => self.drain(d).await,
                Wake::Vrrp(k) => self.on_vrrp_rx(k).await,
                Wake::Link(Some(ev)) => {
                    self.own_addrs.changed();
                    self.sync_link(&ev).await;
                    self.on_link(ev).await
                }
                Wake::Link(None) => bail!("the rtnetlink socket closed"),
                Wake::Stop(sig) => {
                    if !self.stopping {
                        tracing::info!("{sig}: planned stop, bowing out");
                        self.stopping = true;
                        self.feed(HostEvent::Shutdown {
                            linger: SHUTDOWN_LINGER,
                        })
                        .await;
                    }
                }
                Wake::Restart if self.stopping => {
                    tracing::warn!("SIGUSR2: ignored, a planned stop is under way");
                }
                Wake::Restart => {
                    tracing::info!("SIGUSR2: hitless restart (no bow-out, VIPs stay)");
                    return Ok(Exit::Restart);
                }
                Wake::Reload => {
                    let now = sd_notify::NotifyState::monotonic_usec_now()
                        .unwrap_or(sd_notify::NotifyState::MonotonicUsec(0));
                    observe::notify(&[sd_notify::NotifyState::Reloading, now]);
                    self.reload().await;
                    observe::notify(&[sd_notify::NotifyState::Ready]);
                    self.update_status();
                }
                Wake::Watchdog => observe::notify(&[sd_notify::NotifyState::Watchdog]),
                Wake::Control(msg) => self.on_control(msg).await,
                Wake::Sync(w) => self.on_sync(w).await,
            }
        }
    }

    /// Removes what this process created: VIPs, carp interfaces, the dataplane and its pins.
    async fn cleanup(&mut self) {
        for c in self.ifs.iter().filter(|c| c.node == 0) {
            Daemon::release_balance_macs(&c.cfg);
            if let Err(e) = self.nl.delete(c.index).await {
                tracing::warn!("{}: deleting the carp interface: {e}", c.cfg.name);
            }
        }
        let devs: Vec<String> = self.devs.iter().map(|d| d.name.clone()).collect();
        for d in &mut self.devs {
            if let Some(q) = d.advq.take() {
                q.remove();
            }
        }
        self.sync = None;
        self.rings.clear();
        self.devs.clear();
        for name in devs {
            if let Err(e) = Dataplane::detach(&name, &self.options.bpffs) {
                tracing::warn!("{name}: detaching XDP: {e}");
            }
        }
    }
}

/// Waits until one of the ring buffers is readable; returns its index.
async fn ring_ready(rings: &[AsyncFd<OwnedFd>]) -> usize {
    if rings.is_empty() {
        return std::future::pending().await;
    }
    let futs = rings.iter().map(|r| Box::pin(r.readable()));
    let (res, idx, _) = futures::future::select_all(futs).await;
    // Clear before draining: an event that lands during the drain re-arms readiness.
    if let Ok(mut guard) = res {
        guard.clear_ready();
    }
    idx
}

/// The next watchdog tick, or never when systemd asked for no watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
