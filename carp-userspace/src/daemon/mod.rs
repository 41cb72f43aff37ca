//! carpd's event loop: the sans-IO election engine (`engine::Host`) driven by CLOCK_MONOTONIC, fed by the
//! XDP dataplane's advert ring buffer and the kernel's link notifications, and carrying out the engine's
//! actions on the network (adverts, gratuitous ARP/NA), on the dataplane maps and on the carp interfaces.
//!
//! What this module owns: start-up (a per-carpdev lock, attaching or adopting the dataplane, replacing a
//! stale carp interface left by a killed carpd), the loop, signals (SIGTERM/SIGINT = planned stop with
//! bow-out and make-before-break; SIGHUP = reload; SIGUSR2 = hitless restart), and clean-up. The IO pieces
//! live in `netio` (frames), `netlink` (links and addresses) and `hooks` (operator scripts).
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

pub mod control;
pub mod deadline;
pub mod hooks;
pub mod netio;
pub mod netlink;
pub mod nodes;
pub mod privs;
pub mod ratelog;
pub mod server;
pub mod standby;
pub mod sync;
pub mod track;

use std::{
    collections::HashMap,
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use carp_common::{
    maps::{BalanceMode, VhidEntry, VhidState},
    proto::virtual_mac,
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    auth::{AuthContext, AuthInput, ReplayCookie},
    config::{Config, InitialState, InterfaceConfig},
    dataplane::{AttachMode, Dataplane, if_index, maps::Maps},
    engine::{Action, Advert, ForcedState, Host, HostEvent, State, Time, VhidConfig},
    wire::{AdvertPacket, AdvertRepr, ip::Encap},
};
use netio::NetIo;
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
    crate::config::vrrp::refuse_in_daemon(&config).map_err(anyhow::Error::msg)?;
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

/// Re-executes this binary with the same argv (same PID); returns only on failure.
fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "carpd".into());
    tracing::info!("hitless restart: re-executing /proc/self/exe");
    server::notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        monotonic().as_nanos() / 1000
    ));
    block_signals(true);
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .exec();
    block_signals(false);
    anyhow::anyhow!(
        "hitless restart: execve /proc/self/exe failed: {err}; the dataplane keeps its MASTER lease until it expires, start carpd again"
    )
}

/// One carpdev: its dataplane, its sockets and its lock.
struct Carpdev {
    name: String,
    ifindex: u32,
    // The carpdev's own MAC: the stealth source of adverts and ARP replies (spec §6).
    mac: [u8; 6],
    running: bool,
    maps: Maps,
    netio: NetIo,
    // vhids the adopted dataplane showed as MASTER with a valid lease: a restarted carpd resumes these.
    inherited: HashMap<u8, VhidEntry>,
    // Per drop cause (ratelog::DATAPLANE_CAUSES): the kernel total last seen and its log budget.
    audit: [(u64, ratelog::RateLog); ratelog::DATAPLANE_CAUSES.len()],
    _dataplane: Dataplane,
    _lock: File,
}

/// One carpnode of a carp interface as the daemon runs it (index = the engine's interface index); a
/// plain carp interface is one node. The nodes of one interface share `cfg`, `dev` and `index`.
struct CarpIf {
    cfg: InterfaceConfig,
    // Position in cfg.carpnodes (0 = the leader, the lowest vhid).
    node: usize,
    // This node's vhid and virtual MAC 00:00:5e:00:01:<vhid>.
    vhid: u8,
    dev: usize,
    vmac: [u8; 6],
    // Leader only: the socket holding the balancing MACs in the carpdev's address filter.
    membership: Option<OwnedFd>,
    // Leader only: the carp interface is up with its VIPs (some node MASTER, for a balanced one).
    if_up: bool,
    auth: AuthContext,
    index: u32,
    state: State,
    // Kernel time of the newest advert the controller processed for this vhid.
    last_event_ktime: u64,
    // The newest authenticated advert heard, for the stalled-controller check.
    last_verified: Option<Advert>,
    // Adverts that failed the HMAC check (the carpstats badauth counter), logged rate-limited.
    badauth: ratelog::RateLog,
    // Adverts sent (the carpstats opackets counter).
    opackets: u64,
    // Resuming a MASTER from a previous carpd: until the engine says MASTER, its transitions must not
    // touch the kernel (no VIP flush, no BACKUP in the map), or the restart would not be hitless.
    resuming: bool,
}

enum Wake {
    Timer,
    Audit,
    Ring(usize),
    Link(Option<LinkEvent>),
    Stop(&'static str),
    Restart,
    Reload,
    Control(server::Msg),
    Sync(sync::SyncWake),
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

/// Takes an exclusive lock for a carpdev in this network namespace, or says who holds it.
fn lock_carpdev(carpdev: &str) -> Result<File> {
    std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
    // Two labs may both have an "eth0": the network namespace is part of the lock's name.
    let netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap_or(0);
    let path = Path::new(LOCK_DIR).join(format!("{carpdev}.{netns}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another carpd already runs on {carpdev} in this network namespace (lock {} held{}); stop it first",
            path.display(),
            match holder.trim() {
                "" => String::new(),
                pid => format!(" by pid {pid}"),
            }
        );
    }
    let _ = file.set_len(0);
    let _ = std::io::Write::write_all(&mut &file, format!("{}\n", std::process::id()).as_bytes());
    Ok(file)
}

/// `arp_announce = 2` on the carpdev (see the module doc: keeps the VIP out of the carpdev's ARP requests).
fn set_arp_announce(carpdev: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{carpdev}/arp_announce");
    if let Err(e) = std::fs::write(&path, "2") {
        tracing::warn!(
            "{carpdev}: cannot set arp_announce = 2 ({path}: {e}); clients may learn the real MAC for a VIP"
        );
    }
}

fn vhid_entry(state: VhidState, vmac: [u8; 6]) -> VhidEntry {
    VhidEntry::new(state, BalanceMode::None, vmac)
}

/// How often the controller reads the dataplane's drop counters for the log.
const AUDIT_INTERVAL: Duration = Duration::from_secs(2);

/// How long the dataplane keeps acting as MASTER without hearing from the controller: three advert
/// intervals plus 10 ms for a late timer and the kernel clock's tick resolution.
fn lease_len(advbase: u8, advskew: u8) -> std::time::Duration {
    3 * crate::engine::advert_interval(advbase, advskew) + std::time::Duration::from_millis(10)
}

fn map_state(state: State) -> VhidState {
    match state {
        State::Init => VhidState::Init,
        State::Backup => VhidState::Backup,
        State::Master => VhidState::Master,
    }
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

    /// Locks a carpdev, attaches (or adopts) its dataplane, forgets what a previous process
    /// configured in its maps, and opens its sockets. Returns its index in `devs`.
    async fn attach_carpdev(&mut self, name: &str) -> Result<usize> {
        let lock = lock_carpdev(name)?;
        let ifindex = if_index(name).with_context(|| format!("carpdev {name}"))?;
        let mut dp = Dataplane::attach_with_flow_limit(
            name,
            &self.options.bpffs,
            self.options.xdp_mode,
            self.config.flows.limit,
        )
        .with_context(|| format!("attaching XDP to {name}"))?;
        if dp.adopted {
            tracing::info!("{name}: adopted the dataplane left by a previous carpd");
        } else {
            tracing::info!("{name}: XDP attached in {:?} mode", dp.mode);
        }
        let mut maps = dp.maps()?;
        let ring = maps
            .events
            .as_ref()
            .context("the advert ring buffer is missing")?;
        // SAFETY: the ring's fd is open for as long as `maps` lives; we keep our own duplicate.
        let fd = unsafe { BorrowedFd::borrow_raw(ring.as_raw_fd()) }.try_clone_to_owned()?;
        // SAFETY: `fd` is an OwnedFd we just duplicated; it stays open and unchanged while the AsyncFd owns it.
        let ring_fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the ring buffer: {e}"))?;
        // A previous carpd's MASTERs whose lease still runs are resumed, untouched (hitless restart);
        // only an adopted dataplane can have them, and only vhids this config has on this carpdev count.
        let now = monotonic().as_nanos();
        let mut inherited = HashMap::new();
        let mut kept_vips = Vec::new();
        let mut kept_groups = Vec::new();
        for cfg in self.config.interfaces.iter().filter(|c| c.carpdev == name) {
            for (n, node) in cfg.carpnodes.iter().enumerate() {
                let Ok(entry) = maps.vhid(node.vhid) else {
                    continue;
                };
                if dp.adopted
                    && entry.state == VhidState::Master as u8
                    && now <= entry.lease_until_ns
                    && entry
                        == nodes::node_entry(cfg, n, VhidState::Master)
                            .with_lease(entry.lease_until_ns)
                {
                    inherited.insert(node.vhid, entry);
                    kept_groups.push(cfg.vhid);
                    kept_vips.extend(
                        cfg.addresses
                            .iter()
                            .map(|a| crate::dataplane::maps::vip_key(a.addr)),
                    );
                }
            }
        }
        // Balancing groups of interfaces with no resumed node start over.
        for leader in (1..=255u8).filter(|v| !kept_groups.contains(v)) {
            if maps.balance(leader).is_ok_and(|g| g.mode != 0) {
                maps.clear_balance(leader)?;
            }
        }
        // Otherwise this config is the truth from now on: carp interfaces re-add their vhids and VIPs.
        for vhid in (1..=255u8).filter(|v| !inherited.contains_key(v)) {
            maps.set_vhid(vhid, vhid_entry(VhidState::Unconfigured, [0; 6]))?;
        }
        let stale: Vec<_> = maps
            .vips
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !kept_vips.contains(k))
            .collect();
        for key in stale {
            let _ = maps.vips.remove(&key);
        }
        set_arp_announce(name);
        let mac = crate::ifreq::hw_addr(name).with_context(|| format!("reading {name}'s MAC"))?;
        let running = self.nl.is_running(ifindex).await.unwrap_or(true);
        let netio = NetIo::open(name, ifindex).with_context(|| format!("sockets on {name}"))?;
        self.rings.push(ring_fd);
        self.devs.push(Carpdev {
            name: name.into(),
            ifindex,
            mac,
            running,
            maps,
            netio,
            inherited,
            audit: Default::default(),
            _dataplane: dp,
            _lock: lock,
        });
        Ok(self.devs.len() - 1)
    }

    /// Creates a carp interface (replacing a stale one), registers its vhid and VIPs with the
    /// dataplane and adds it to the engine, in INIT.
    async fn add_carp_if(&mut self, cfg: &InterfaceConfig) -> Result<()> {
        let dev = match self.devs.iter().position(|d| d.name == cfg.carpdev) {
            Some(d) => d,
            None => self.attach_carpdev(&cfg.carpdev).await?,
        };
        let vmac = virtual_mac(cfg.vhid);
        // A MASTER left by the previous carpd keeps its carp interface (and so its VIPs): deleting and
        // re-creating it would drop traffic to the VIPs. For carpnodes, any resumed node keeps it.
        let resumed: Vec<bool> = cfg
            .carpnodes
            .iter()
            .map(|n| self.devs[dev].inherited.remove(&n.vhid).is_some())
            .collect();
        let kept = match resumed.contains(&true) {
            true => if_index(&cfg.name).ok(),
            false => None,
        };
        let index = match kept {
            Some(index) => {
                tracing::info!(
                    "{}: kept the carp interface of the previous carpd (vhid {} MASTER, lease valid)",
                    cfg.name,
                    cfg.vhid
                );
                index
            }
            None => {
                if self.nl.delete_if_exists(&cfg.name).await? {
                    tracing::info!("{}: removed a stale carp interface", cfg.name);
                }
                self.nl
                    .create_carp_if(&cfg.name, self.devs[dev].ifindex, vmac)
                    .await?
            }
        };
        let leader = self.ifs.len();
        for (n, node) in cfg.carpnodes.iter().enumerate() {
            let auth = AuthContext::new(&cfg.key(), &AuthInput::with_addrs(node.vhid, cfg.vips()));
            let resuming = kept.is_some() && resumed[n];
            self.ifs.push(CarpIf {
                cfg: cfg.clone(),
                node: n,
                vhid: node.vhid,
                dev,
                vmac: virtual_mac(node.vhid),
                membership: None,
                if_up: n == 0 && kept.is_some(),
                auth,
                index,
                state: State::Init,
                last_event_ktime: 0,
                last_verified: None,
                badauth: ratelog::RateLog::default(),
                opackets: 0,
                resuming,
            });
            if !resuming {
                self.devs[dev]
                    .maps
                    .set_vhid(node.vhid, nodes::node_entry(cfg, n, VhidState::Init))?;
            }
            let mut vc = vhid_config(cfg, &self.config, &self.devs[dev].name);
            vc.vhid = node.vhid;
            vc.advskew = node.advskew;
            self.host
                .add_interface(&cfg.name, &cfg.carpdev, &cfg.groups, vc);
        }
        let maps = &mut self.devs[dev].maps;
        for a in &cfg.addresses {
            maps.add_vip(a.addr, cfg.vhid)?;
        }
        if cfg.is_balanced() {
            self.setup_balance(leader)?;
        }
        Ok(())
    }

    /// Takes a carp interface down (no linger) and removes it from the engine, the dataplane and
    /// the kernel.
    async fn remove_carp_if(&mut self, name: &str) {
        let Some(i) = self.ifs.iter().position(|c| c.cfg.name == name) else {
            return;
        };
        self.feed(HostEvent::Down {
            iface: name.into(),
            linger: Duration::ZERO,
        })
        .await;
        let c = self.ifs.remove(i);
        // The other carpnodes of the interface follow their leader out.
        self.ifs.retain(|o| o.cfg.name != name);
        let maps = &mut self.devs[c.dev].maps;
        for node in &c.cfg.carpnodes {
            let _ = maps.set_vhid(node.vhid, vhid_entry(VhidState::Unconfigured, [0; 6]));
        }
        if c.cfg.is_balanced() {
            let _ = maps.clear_balance(c.cfg.vhid);
            Daemon::release_balance_macs(&c.cfg);
        }
        for a in &c.cfg.addresses {
            let _ = maps.remove_vip(a.addr);
        }
        if let Err(e) = self.nl.delete(c.index).await {
            tracing::warn!("{name}: deleting the carp interface: {e}");
        }
        let now = self.now();
        let actions = self.host.remove_interface(now, name);
        for a in actions {
            self.carry_out(a.iface, a.action).await;
        }
    }

    /// Brings a just-added carp interface up (after a reload), honouring its link and `state`.
    async fn start_carp_if(&mut self, name: &str) {
        let Some(i) = self.ifs.iter().position(|c| c.cfg.name == name) else {
            return;
        };
        self.feed(HostEvent::Up(name.into())).await;
        if !self.devs[self.ifs[i].dev].running {
            let carpdev = self.ifs[i].cfg.carpdev.clone();
            self.feed(HostEvent::CarpdevLink { carpdev, up: false })
                .await;
        }
        if self.ifs[i].cfg.state == Some(InitialState::Master) {
            self.feed(HostEvent::Force {
                iface: name.into(),
                state: ForcedState::Master,
            })
            .await;
        }
    }

    fn now(&mut self) -> Time {
        self.last_now = self.last_now.max(monotonic());
        self.last_now
    }

    async fn feed(&mut self, event: HostEvent) {
        let now = self.now();
        let actions = self.host.handle(now, event);
        for a in actions {
            self.carry_out(a.iface, a.action).await;
        }
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
            self.options.metrics,
            &self.config.tracks,
        )?;
        // Everything that needed more than the runtime capabilities (bpffs mount, a low metrics port)
        // is done: from here on a compromise of carpd or of a hook gets at most these four.
        let dropped = privs::drop_to_runtime().context("dropping capabilities")?;
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
                for a in self.host.force_node(now, i, ForcedState::Master) {
                    self.carry_out(a.iface, a.action).await;
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
            deadline
                .arm(self.host.next_deadline())
                .context("arming the engine's timerfd")?;
            let wake = tokio::select! {
                _ = deadline.wait() => Wake::Timer,
                _ = audit.tick() => Wake::Audit,
                i = ring_ready(&self.rings) => Wake::Ring(i),
                ev = netlink::next_event(&mut self.nl_rx) => Wake::Link(ev),
                _ = term.recv() => Wake::Stop("SIGTERM"),
                _ = int.recv() => Wake::Stop("SIGINT"),
                _ = hup.recv() => Wake::Reload,
                _ = usr2.recv() => Wake::Restart,
                msg = ctl.next() => Wake::Control(msg),
                w = sync::wait(&self.sync) => Wake::Sync(w),
            };
            match wake {
                Wake::Timer => self.on_timer().await,
                Wake::Audit => {
                    self.audit_dataplane();
                    self.audit_standby();
                }
                Wake::Ring(d) => self.drain(d).await,
                Wake::Link(Some(ev)) => {
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
                Wake::Reload => self.reload().await,
                Wake::Control(msg) => self.on_control(msg).await,
                Wake::Sync(w) => self.on_sync(w).await,
            }
        }
    }

    /// Logs, at most once a minute, that the standby senders repeated adverts: the loop was held up
    /// past half an advert interval, which without them the peers would have seen as a gap.
    fn audit_standby(&mut self) {
        let Some(s) = &self.standby else {
            return;
        };
        let total = s.resent();
        let due = self
            .standby_logged
            .is_none_or(|t| t.elapsed() >= ratelog::LOG_INTERVAL);
        if total > self.standby_seen && due {
            tracing::info!(
                "standby senders repeated {} adverts since the last report (carpd's loop was held up past half an advert interval; {total} in all)",
                total - self.standby_seen
            );
            self.standby_seen = total;
            self.standby_logged = Some(std::time::Instant::now());
        }
    }

    /// Logs (rate-limited) the adverts each carpdev's XDP program dropped since the last look, per cause,
    /// summed over every vhid slot (unknown vhids count in their own slots).
    fn audit_dataplane(&mut self) {
        let now = std::time::Instant::now();
        for dev in &mut self.devs {
            let mut totals = [0u64; ratelog::DATAPLANE_CAUSES.len()];
            for vhid in 0..=255u8 {
                let Ok(s) = dev.maps.stats(vhid) else {
                    continue;
                };
                for (t, (cause, _)) in totals.iter_mut().zip(ratelog::DATAPLANE_CAUSES) {
                    *t += ratelog::cause_count(&s, cause);
                }
            }
            for ((total, (seen, log)), (cause, what)) in totals
                .iter()
                .zip(dev.audit.iter_mut())
                .zip(ratelog::DATAPLANE_CAUSES)
            {
                // After a hitless restart the first look also reports what the previous carpd saw: the
                // counters belong to the dataplane, which outlives controllers.
                let fresh = total.saturating_sub(*seen);
                *seen = *total;
                if fresh == 0 {
                    continue;
                }
                if let Some(n) = log.hit_many(now, fresh) {
                    tracing::warn!(
                        "{}: the dataplane dropped {n} advert(s): {what} ({cause}); {} in all (logged at most once a minute)",
                        dev.name,
                        log.total
                    );
                }
            }
        }
    }

    /// A deadline passed. Drain every ring first, and re-check the kernel's last-advert time, so a
    /// controller that was stalled (or lost events) never declares a live master down. The kernel's
    /// record is believed only if its header passes the HMAC check: an advert that failed
    /// authentication (or any advert, with net.inet.carp.allow = 0) never delays a takeover.
    async fn on_timer(&mut self) {
        for d in 0..self.devs.len() {
            self.drain(d).await;
        }
        let now = self.now();
        let guard = if self.config.carp.allow {
            self.ifs.len()
        } else {
            0
        };
        for i in 0..guard {
            let (state, vhid, dev) = (self.ifs[i].state, self.ifs[i].vhid, self.ifs[i].dev);
            let due = self.host.interfaces()[i]
                .vhid
                .next_deadline()
                .is_some_and(|t| t <= now);
            if state != State::Backup || !due {
                continue;
            }
            let Ok(last) = self.devs[dev].maps.last_advert(vhid) else {
                continue;
            };
            let Some(known) = self.ifs[i].last_verified else {
                continue;
            };
            let window = self.host.interfaces()[i]
                .vhid
                .config()
                .master_down_interval();
            let src = match last.family {
                6 => IpAddr::V6(Ipv6Addr::from(last.src)),
                _ => IpAddr::V4(Ipv4Addr::new(
                    last.src[0],
                    last.src[1],
                    last.src[2],
                    last.src[3],
                )),
            };
            // The record as received must verify, like an advert from the ring.
            let verified = AdvertPacket::new_checked(&last.carp[..])
                .ok()
                .and_then(|p| AdvertRepr::parse(&p).ok())
                .is_some_and(|r| r.vhid == vhid && self.ifs[i].auth.verify_repr(&r));
            // Only re-confirm a master we already authenticated, advertising the same values.
            if verified
                && last.ktime_ns > self.ifs[i].last_event_ktime
                && Time::from_nanos(last.ktime_ns) + window > now
                && src == known.src
                && (last.advbase, last.advskew, last.demote)
                    == (known.advbase, known.advskew, known.demote)
            {
                tracing::warn!(
                    "{} vhid {vhid}: the kernel saw an advert from {src} the controller missed; not declaring the master down",
                    self.ifs[i].cfg.name
                );
                self.ifs[i].last_event_ktime = last.ktime_ns;
                let carpdev = self.devs[dev].name.clone();
                self.feed(HostEvent::Advert {
                    carpdev,
                    advert: known,
                })
                .await;
            }
        }
        self.feed(HostEvent::Timer).await;
    }

    /// Processes every pending advert event of one carpdev.
    async fn drain(&mut self, d: usize) {
        let events = self.devs[d].maps.drain_events();
        // net.inet.carp.allow = 0: like OpenBSD, accept no advert at all (the kernel still counts them).
        if !self.config.carp.allow {
            return;
        }
        for ev in events {
            let Ok(packet) = AdvertPacket::new_checked(&ev.carp[..]) else {
                continue;
            };
            let Ok(repr) = AdvertRepr::parse(&packet) else {
                continue;
            };
            let Some(i) = self
                .ifs
                .iter()
                .position(|c| c.dev == d && c.vhid == repr.vhid)
            else {
                continue;
            };
            let src = match ev.family {
                6 => IpAddr::V6(Ipv6Addr::from(ev.src)),
                _ => IpAddr::V4(Ipv4Addr::new(ev.src[0], ev.src[1], ev.src[2], ev.src[3])),
            };
            if !self.ifs[i].auth.verify_repr(&repr) {
                if let Some(n) = self.ifs[i].badauth.hit(std::time::Instant::now()) {
                    tracing::warn!(
                        "{} vhid {}: advert from {src} fails HMAC (wrong pass or addresses?); {n} since the last such line, {} in all (logged at most once a minute)",
                        self.ifs[i].cfg.name,
                        repr.vhid,
                        self.ifs[i].badauth.total
                    );
                }
                continue;
            }
            let advert = Advert {
                src,
                vhid: repr.vhid,
                advbase: repr.advbase,
                advskew: repr.advskew,
                demote: repr.demote,
                counter: repr.counter,
            };
            // An authenticated source that is not ours (our cookie: our own advert came back) earns
            // the kernel's protected limits slot; written only when the source changes.
            let own = repr.counter == self.host.interfaces()[i].vhid.config().cookie;
            if !own
                && self.ifs[i].last_verified.map(|a| a.src) != Some(src)
                && let Err(e) = self.devs[d]
                    .maps
                    .set_advert_owner(repr.vhid, ev.family, ev.src)
            {
                tracing::warn!(
                    "{}: naming the advert limits' owner: {e}",
                    self.devs[d].name
                );
            }
            self.ifs[i].last_event_ktime = self.ifs[i].last_event_ktime.max(ev.ktime_ns);
            self.ifs[i].last_verified = Some(advert);
            let carpdev = self.devs[d].name.clone();
            self.feed(HostEvent::Advert { carpdev, advert }).await;
        }
    }

    async fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Link { index, running } => {
                let Some(d) = self.devs.iter().position(|d| d.ifindex == index) else {
                    return;
                };
                if self.devs[d].running != running {
                    self.devs[d].running = running;
                    let carpdev = self.devs[d].name.clone();
                    tracing::info!("{carpdev}: link {}", if running { "up" } else { "down" });
                    self.feed(HostEvent::CarpdevLink {
                        carpdev,
                        up: running,
                    })
                    .await;
                }
            }
            LinkEvent::AddrRemoved { index, addr } => {
                let Some(i) = self.ifs.iter().position(|c| c.index == index) else {
                    return;
                };
                if !self.any_master(&self.ifs[i].cfg.name.clone()) {
                    return;
                }
                if let Some(a) = self.ifs[i]
                    .cfg
                    .addresses
                    .iter()
                    .find(|a| a.addr == addr)
                    .copied()
                {
                    tracing::warn!(
                        "{}: {a} was removed behind carpd's back while MASTER; putting it back",
                        self.ifs[i].cfg.name
                    );
                    if let Err(e) = self.nl.add_addr(index, a).await {
                        tracing::warn!("{}: {e:#}", self.ifs[i].cfg.name);
                    }
                }
            }
        }
    }

    /// SIGHUP: re-reads the config. Unchanged carp interfaces keep their state; a change of advbase,
    /// advskew, state, description or hooks is applied in place (state kept); any other change
    /// (carpdev, vhid, pass, addresses, peer, groups) re-creates that interface; removed ones go away.
    async fn reload(&mut self) {
        let new = match Config::load(&self.options.config_path).and_then(|c| {
            crate::config::vrrp::refuse_in_daemon(&c).map_err(|message| {
                crate::config::ConfigError {
                    file: c.file.clone(),
                    line: None,
                    message,
                }
            })?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("SIGHUP: keeping the running config: {e}");
                return;
            }
        };
        if new.carp.preempt != self.config.carp.preempt {
            tracing::info!("SIGHUP: preempt = {}", new.carp.preempt);
            self.feed(HostEvent::SetPreempt(new.carp.preempt)).await;
        }
        self.config.carp = new.carp.clone();
        let old: Vec<InterfaceConfig> = self.ifs.iter().map(|c| c.cfg.clone()).collect();
        for o in &old {
            let keep = new
                .interfaces
                .iter()
                .any(|n| n.name == o.name && same_identity(n, o));
            if !keep {
                tracing::info!("SIGHUP: {}: removed or re-created", o.name);
                self.remove_carp_if(&o.name).await;
            }
        }
        let mut unchanged = 0;
        for n in &new.interfaces {
            match self.ifs.iter().position(|c| c.cfg.name == n.name) {
                Some(i) if self.ifs[i].cfg == *n => unchanged += 1,
                Some(_) => {
                    let skews = match n.carpnodes.len() {
                        1 => format!("advskew {}", n.advskew),
                        _ => format!(
                            "carpnodes {}",
                            crate::config::format_carpnodes(&n.carpnodes)
                        ),
                    };
                    tracing::info!(
                        "SIGHUP: {}: advbase {} {skews} (state kept)",
                        n.name,
                        n.advbase
                    );
                    for j in self.nodes_of(&n.name) {
                        let mut vc = self.host.interfaces()[j].vhid.config().clone();
                        vc.advbase = n.advbase;
                        vc.advskew = n.carpnodes[self.ifs[j].node].advskew;
                        self.ifs[j].cfg = n.clone();
                        let now = self.now();
                        let actions = self.host.reconfigure(now, &n.name, vc);
                        for a in actions {
                            self.carry_out(a.iface, a.action).await;
                        }
                    }
                }
                None => {
                    tracing::info!("SIGHUP: {}: new carp interface", n.name);
                    if let Err(e) = self.add_carp_if(n).await {
                        tracing::error!("SIGHUP: {}: {e:#}", n.name);
                        continue;
                    }
                    self.start_carp_if(&n.name).await;
                }
            }
        }
        self.config.interfaces = self
            .ifs
            .iter()
            .filter(|c| c.node == 0)
            .map(|c| c.cfg.clone())
            .collect();
        self.sync_reload(&new).await;
        tracing::info!("SIGHUP: config reloaded ({unchanged} carp interface(s) unchanged)");
    }

    /// Carries out one engine action for carp interface `i`.
    async fn carry_out(&mut self, i: usize, action: Action) {
        let name = self.ifs[i].cfg.name.clone();
        let vhid = self.ifs[i].vhid;
        if let Some((from, to, reason)) = action.transition() {
            self.ifs[i].state = to;
            if to != State::Master
                && let Some(s) = &self.standby
            {
                s.clear(i);
            }
            if self.ifs[i].resuming {
                if to != State::Master {
                    // On the way to the forced MASTER: the kernel already is MASTER, leave it be.
                    tracing::debug!("{name} vhid {vhid}: {from} -> {to} while resuming");
                    return;
                }
                self.ifs[i].resuming = false;
                self.apply_state(i, to).await;
                // No up script: nothing changed for the network, the previous carpd ran it already.
                tracing::info!(
                    "{name}: resumed vhid {vhid} as MASTER (the previous carpd's lease was valid)"
                );
                return;
            }
            let if_was_up = self.leader_if_up(i);
            self.apply_state(i, to).await;
            // Logged once the dataplane and the carp interface are in the new state, so whoever
            // reads the line (an operator, a test) can rely on it.
            tracing::info!("{name} vhid {vhid}: {from} -> {to} ({reason})");
            if self.ifs[i].cfg.is_balanced() {
                // The hooks follow the carp interface: up when its first node became MASTER here,
                // down when its last one left.
                let is_up = self.leader_if_up(i);
                let script = match (if_was_up, is_up) {
                    (false, true) => self.ifs[i].cfg.up_script.clone(),
                    (true, false) => self.ifs[i].cfg.down_script.clone(),
                    _ => None,
                };
                let state = if is_up { "MASTER" } else { to.as_str() };
                if let Some(s) = script {
                    hooks::spawn(s, name, state, self.ifs[i].cfg.vips());
                }
                return;
            }
            let script = if to == State::Master {
                self.ifs[i].cfg.up_script.clone()
            } else if from == State::Master {
                self.ifs[i].cfg.down_script.clone()
            } else {
                None
            };
            if let Some(s) = script {
                hooks::spawn(s, name, to.as_str(), self.ifs[i].cfg.vips());
            }
            return;
        }
        match action {
            Action::SendAdvert {
                advbase,
                advskew,
                demote,
                counter,
                bow_out,
            } => {
                let master = !bow_out && self.ifs[i].state == State::Master;
                if master {
                    self.renew_lease(i, advbase, advskew);
                } else if let Some(s) = &self.standby {
                    // Before the bow-out leaves: no standby may repeat an advert after it.
                    s.clear(i);
                }
                let c = &self.ifs[i];
                let repr = AdvertRepr {
                    vhid,
                    advskew,
                    advbase,
                    demote,
                    counter,
                    digest: c.auth.sign(&counter),
                };
                match self.send_advert(i, &repr) {
                    Ok(frames) => {
                        self.ifs[i].opackets += 1;
                        if master {
                            self.standby_sent(i, frames, advbase, advskew);
                        }
                    }
                    Err(e) => tracing::warn!("{name} vhid {vhid}: sending an advert failed: {e:#}"),
                }
            }
            // Balanced interfaces send none: in the IP modes the interface MAC never moves (spec
            // §6), and OpenBSD announces only with balancing none.
            Action::GratuitousArp { .. } if self.ifs[i].cfg.is_balanced() => {}
            Action::GratuitousArp { delayed } => {
                let c = &self.ifs[i];
                let netio = &self.devs[c.dev].netio;
                for a in &c.cfg.addresses {
                    let r = match a.addr {
                        IpAddr::V4(v4) => netio.send_gratuitous_arp(v4, c.vmac),
                        IpAddr::V6(v6) => netio.send_unsolicited_na(v6, c.vmac),
                    };
                    if let Err(e) = r {
                        tracing::warn!("{name}: gratuitous ARP/NA for {} failed: {e}", a.addr);
                    }
                }
                tracing::debug!("{name}: gratuitous ARP/NA sent (delayed: {delayed})");
            }
            Action::Dropped(reason) => {
                tracing::debug!("{name} vhid {vhid}: advert dropped: {reason:?}")
            }
            _ => {}
        }
    }

    /// Hands the advert just sent for node `i` to the standby senders (unicast `peer` adverts go
    /// through the kernel's routing: none are repeated).
    fn standby_sent(&self, i: usize, frames: Vec<Vec<u8>>, advbase: u8, advskew: u8) {
        let Some(s) = &self.standby else {
            return;
        };
        if frames.is_empty() {
            s.clear(i);
            return;
        }
        let netio = &self.devs[self.ifs[i].dev].netio;
        let now = std::time::Instant::now();
        s.sent(
            i,
            netio.packet_socket(),
            netio.ifindex,
            frames,
            crate::engine::advert_interval(advbase, advskew),
            now,
            now + lease_len(advbase, advskew),
        );
    }

    /// Sends the advert `repr` for node `i`; returns the Ethernet frames sent to the CARP groups (none
    /// for a unicast `peer`).
    fn send_advert(&mut self, i: usize, repr: &AdvertRepr) -> Result<Vec<Vec<u8>>> {
        let src_mac = self.advert_mac(i);
        let c = &self.ifs[i];
        let dev = &mut self.devs[c.dev];
        let addrs = netio::interface_addrs(&dev.name);
        let src4 = addrs.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            _ => None,
        });
        if let Some(IpAddr::V4(peer)) = c.cfg.peer {
            let src = src4.context("carppeer needs an IPv4 address on the carpdev")?;
            dev.netio.send_peer_advert(repr, src, peer)?;
            return Ok(Vec::new());
        }
        let mut frames = Vec::new();
        let vips = c.cfg.vips();
        if vips.iter().any(IpAddr::is_ipv4) {
            let src = src4.with_context(|| {
                format!("{} has no IPv4 address to send adverts from", dev.name)
            })?;
            frames.push(dev.netio.send_group_advert(
                repr,
                &Encap::group_v4(src, rand::random()),
                src_mac,
            )?);
        }
        if vips.iter().any(IpAddr::is_ipv6) {
            let ll = addrs.iter().find_map(|a| match a {
                IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(*v6),
                _ => None,
            });
            let src = ll.with_context(|| {
                format!(
                    "{} has no IPv6 link-local address to send adverts from",
                    dev.name
                )
            })?;
            frames.push(
                dev.netio
                    .send_group_advert(repr, &Encap::group_v6(src), src_mac)?,
            );
        }
        Ok(frames)
    }

    /// Extends the dataplane's MASTER lease of interface `i` by three advert intervals (plus slack for a
    /// late timer), about when peers would declare this node dead if its adverts stopped.
    fn renew_lease(&mut self, i: usize, advbase: u8, advskew: u8) {
        let len = lease_len(advbase, advskew);
        let until = self.now().as_nanos() + len.as_nanos() as u64;
        let c = &self.ifs[i];
        let entry = nodes::node_entry(&c.cfg, c.node, VhidState::Master).with_lease(until);
        if let Err(e) = self.devs[c.dev].maps.set_vhid(c.vhid, entry) {
            tracing::error!("{}: renewing the MASTER lease failed: {e}", c.cfg.name);
        }
        self.sync_balance(i, Some(len));
    }

    /// True when the carp interface of node `i` is up with its VIPs.
    fn leader_if_up(&self, i: usize) -> bool {
        let name = &self.ifs[i].cfg.name;
        self.ifs
            .iter()
            .find(|c| &c.cfg.name == name)
            .is_some_and(|c| c.if_up)
    }

    /// Makes the dataplane and the carp interface match a state.
    async fn apply_state(&mut self, i: usize, state: State) {
        let c = &self.ifs[i];
        let mut entry = nodes::node_entry(&c.cfg, c.node, map_state(state));
        let len = self.node_lease(i);
        if state == State::Master {
            let until = self.now().as_nanos() + len.as_nanos() as u64;
            entry = entry.with_lease(until);
        }
        let c = &self.ifs[i];
        let name = c.cfg.name.clone();
        if let Err(e) = self.devs[c.dev].maps.set_vhid(c.vhid, entry) {
            tracing::error!("{name}: writing the vhid state to the dataplane failed: {e}");
        }
        // A balanced interface is up while any of its nodes is MASTER here, or while it keeps flows
        // created here (`nodes` module doc); its bits in the dataplane's mask follow every node's
        // transition.
        let up = if self.ifs[i].cfg.is_balanced() {
            self.sync_balance(i, (state == State::Master).then_some(len));
            let up = self.any_master(&name) || self.keeps_flows(&name);
            let leader = self.nodes_of(&name)[0];
            if self.ifs[leader].if_up == up {
                return;
            }
            self.ifs[leader].if_up = up;
            up
        } else {
            state == State::Master
        };
        let c = &self.ifs[i];
        let (index, addresses) = (c.index, c.cfg.addresses.clone());
        let result = async {
            if up {
                self.nl.set_up(index, true).await?;
                for a in addresses {
                    self.nl.add_addr(index, a).await?;
                }
            } else {
                self.nl.flush_addrs(index).await?;
                self.nl.set_up(index, false).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!("{name}: updating the carp interface failed: {e:#}");
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

/// True when two configs of one carp interface differ at most in settings that apply in place.
fn same_identity(a: &InterfaceConfig, b: &InterfaceConfig) -> bool {
    let vhids = |c: &InterfaceConfig| c.carpnodes.iter().map(|n| n.vhid).collect::<Vec<_>>();
    (
        &a.carpdev,
        a.vhid,
        &a.pass,
        &a.addresses,
        a.peer,
        &a.groups,
        a.balancing,
        vhids(a),
    ) == (
        &b.carpdev,
        b.vhid,
        &b.pass,
        &b.addresses,
        b.peer,
        &b.groups,
        b.balancing,
        vhids(b),
    )
}

fn vhid_config(cfg: &InterfaceConfig, config: &Config, carpdev: &str) -> VhidConfig {
    let mut v = VhidConfig::new(
        cfg.vhid,
        cfg.advbase,
        cfg.advskew,
        ReplayCookie::random().counter(),
    );
    v.preempt = config.carp.preempt;
    v.own_addrs = netio::interface_addrs(carpdev);
    v
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
