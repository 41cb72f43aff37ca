//! One carpdev as carpd runs it: its per-namespace lock, its dataplane (attached fresh or adopted from a
//! previous carpd, keeping the MASTERs whose lease still runs for a hitless restart), its sockets and
//! the `arp_announce` sysctl (see the `daemon` module doc).
use super::{Daemon, LOCK_DIR, monotonic, netio::NetIo, nodes, ratelog};
use std::{
    collections::HashMap,
    fs::File,
    os::fd::{AsRawFd, BorrowedFd},
    path::Path,
};

use anyhow::{Context, Result, bail};
use carp_common::maps::{VhidEntry, VhidState};
use tokio::io::{Interest, unix::AsyncFd};

use super::actions::vhid_entry;
use crate::dataplane::{Dataplane, if_index, maps::Maps};

/// One carpdev: its dataplane, its sockets and its lock.
pub(super) struct Carpdev {
    pub(super) name: String,
    pub(super) ifindex: u32,
    // The carpdev's own MAC: the stealth source of adverts and ARP replies (spec §6).
    pub(super) mac: [u8; 6],
    pub(super) running: bool,
    pub(super) maps: Maps,
    pub(super) netio: NetIo,
    // The kernel advert queue (`advq`), None when off or when it could not be set up.
    pub(super) advq: Option<super::advq::AdvQueue>,
    // vhids the adopted dataplane showed as MASTER with a valid lease: a restarted carpd resumes these.
    pub(super) inherited: HashMap<u8, VhidEntry>,
    // Per drop cause (ratelog::DATAPLANE_CAUSES): the kernel total last seen and its log budget.
    pub(super) audit: [(u64, ratelog::RateLog); ratelog::DATAPLANE_CAUSES.len()],
    pub(super) _dataplane: Dataplane,
    pub(super) _lock: File,
}

/// Takes an exclusive lock for a carpdev in this network namespace, or says who holds it.
pub(super) fn lock_carpdev(carpdev: &str) -> Result<File> {
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
pub(super) fn set_arp_announce(carpdev: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{carpdev}/arp_announce");
    if let Err(e) = std::fs::write(&path, "2") {
        tracing::warn!(
            "{carpdev}: cannot set arp_announce = 2 ({path}: {e}); clients may learn the real MAC for a VIP"
        );
    }
}

impl Daemon {
    /// Locks a carpdev, attaches (or adopts) its dataplane, forgets what a previous process
    /// configured in its maps, and opens its sockets. Returns its index in `devs`.
    pub(super) async fn attach_carpdev(&mut self, name: &str) -> Result<usize> {
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
                    && entry.state() == VhidState::Master
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
        let advq = self.open_advq(name, ifindex);
        self.rings.push(ring_fd);
        self.devs.push(Carpdev {
            name: name.into(),
            ifindex,
            mac,
            running,
            maps,
            netio,
            advq,
            inherited,
            audit: Default::default(),
            _dataplane: dp,
            _lock: lock,
        });
        Ok(self.devs.len() - 1)
    }

    /// Sets up the kernel advert queue of a carpdev (`advq`) when `[timing] advert_queue_ms` is not 0;
    /// None (and the loop and the standby senders send the adverts) when off or when it fails.
    pub(super) fn open_advq(&self, carpdev: &str, ifindex: u32) -> Option<super::advq::AdvQueue> {
        let horizon = self.config.timing.advert_queue;
        if horizon.is_zero() {
            super::advq::remove_stale(ifindex);
            return None;
        }
        match super::advq::AdvQueue::open(ifindex, horizon) {
            Ok(q) => {
                tracing::info!(
                    "{carpdev}: kernel-timed adverts through {} (queued up to {} ms ahead)",
                    q.name(),
                    horizon.as_millis()
                );
                Some(q)
            }
            Err(e) => {
                tracing::warn!(
                    "{carpdev}: kernel-timed adverts unavailable ({e}); the loop and the standby senders send them"
                );
                None
            }
        }
    }
}
