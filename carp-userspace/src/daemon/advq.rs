//! Kernel-timed adverts: a MASTER hands its next adverts to the kernel ahead of time, and the kernel's
//! qdisc watchdog (an hrtimer, then the NET_TX softirq) releases them one per advert interval, on time
//! while carpd's thread is held up, stopped or slow.
//!
//! What this module owns, per carpdev: one macvlan of its own, `carpadv<ifindex of the carpdev>`, mode
//! private, a random locally administered MAC, `addrgenmode none`, IPv6 disabled and no address, so it
//! never sends a frame of its own (no DAD, MLD, RS, IGMP or ARP); carpd sends only adverts through it.
//! Its root qdisc is HTB `1:`; each vhid MASTER here gets a class per address family, `1:<vhid>` (IPv4)
//! and `1:<256 + vhid>` (IPv6), shaped to exactly one frame per advert interval (no burst: every frame
//! is counted as 65535 bytes, `mpu`, and the rate is 65535 bytes per interval, rounded up so the kernel
//! is never slower than the advertised interval), with a pfifo leaf that holds at most `limit` frames:
//! `limit = horizon / interval` (at least 1), the kernel's own bound on what it can send for a carpd
//! that stopped. The AF_PACKET socket of a class carries SO_PRIORITY `1:<minor>`, which HTB uses as the
//! class id; frames with priority 0 take HTB's direct queue and leave at once (first adverts after a
//! change, bow-outs). Nothing on a device carrying the operator's traffic is touched; the lower device's
//! own qdisc sees these frames as it sees any other.
//!
//! Withdrawal: before a bow-out, a state change, or an advert whose bytes differ (demote, advskew, a
//! reload), the class's leaf is replaced by a fresh pfifo (handles alternate, a same-handle replace
//! would only change the limit): the kernel destroys the old leaf with every frame it held, under the
//! qdisc's lock, before the request is acknowledged. A frame already dequeued by then is on its way to
//! the driver through the same root qdisc run, so whatever carpd sends next through this device (the
//! bow-out, a demoted advert) leaves after it, never before. On a multi-queue NIC the lower device may
//! pick a different hardware queue for the next frame; only then can a frame dequeued within those
//! microseconds reach the wire after it.
//!
//! The model: carpd does not read queue lengths back per advert (a netlink round trip each). It keeps,
//! per class, the earliest time the last frame it queued can leave (`last_departure_ns`): a frame queued
//! at `now` leaves at the earliest at `max(now, previous + spacing)`, where `spacing` is the kernel's own
//! per-frame time for the class's rate minus a microsecond. That is a lower bound of the real departure
//! (the kernel's release can only be later: a late softirq), which is what the MASTER lease needs (it
//! must never outlast the last advert on the wire by more than the lease length). When the kernel
//! refuses a frame (the leaf is full, ENOBUFS), the queue holds `limit` frames, so the model moves to
//! at least `now + (limit - 1) * spacing`. At least one frame is offered per advert tick, so a model that
//! believes the queue is fuller than it is (after a reset the kernel did behind carpd's back) costs at
//! most one interval's protection, never an advert.
//!
//! The counter: every advert of a vhid carries the same bytes (the replay cookie as counter, so the
//! same digest, OpenBSD's model, spec §3; the IP id is fixed for the frame, as the standby senders'
//! byte-for-byte repeats already do), so an advert queued 100 ms ahead is as valid when it leaves as one
//! built then. Anything that changes its bytes goes through a withdrawal first.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use super::tcnl::{Rtnl, handle};

/// Every advert frame is counted as this many bytes by its class, so the rate has a fine resolution
/// (a 70-byte frame at 1 byte/s steps would be 1.4 % off at advbase 1).
const MPU: u16 = 65535;
/// Frames the direct (unshaped) queue holds.
const DIRECT_QLEN: u32 = 64;
/// The most adverts queued per class, whatever the horizon.
pub const MAX_LIMIT: u32 = 256;
/// What the model takes off the kernel's spacing, so rounding never makes it a frame early.
const MODEL_SLACK_NS: u64 = 1_000;

/// The device name of a carpdev's advert queue.
pub fn device_name(carpdev_index: u32) -> String {
    format!("carpadv{carpdev_index}")
}

/// Deletes the advert queue device of a carpdev if a previous carpd left one (the queue is off now).
pub fn remove_stale(carpdev_index: u32) {
    let name = device_name(carpdev_index);
    if let Ok(index) = crate::dataplane::if_index(&name) {
        match Rtnl::open().and_then(|r| r.delete_link(index)) {
            Ok(()) => tracing::info!("{name}: removed the advert queue device of a previous carpd"),
            Err(e) => tracing::warn!("{name}: removing a stale advert queue device: {e}"),
        }
    }
}

/// Adverts counted per vhid.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdvqCounts {
    /// Adverts that left at once, from the loop's own send (first after a change, an idle class).
    pub immediate: u64,
    /// Adverts queued ahead, released by the kernel's timer (those later withdrawn included).
    pub ahead: u64,
    /// Queued adverts dropped by a withdrawal before they left.
    pub withdrawn: u64,
    /// Offers the kernel refused because the queue was full.
    pub refused: u64,
}

impl AdvqCounts {
    /// Adverts the kernel's timer sent (queued ahead and not withdrawn).
    pub fn kernel_sent(&self) -> u64 {
        self.ahead.saturating_sub(self.withdrawn)
    }
}

/// One HTB class: one vhid, one address family.
struct Class {
    minor: u16,
    sock: OwnedFd,
    // The leaf's handle major now (one of two, alternating on each withdrawal).
    major: u16,
    limit: u32,
    spacing_ns: u64,
    last_departure_ns: u64,
}

impl Class {
    /// Frames the model believes are still queued at `now`.
    fn depth(&self, now: u64) -> u32 {
        if self.last_departure_ns <= now {
            return 0;
        }
        (self.last_departure_ns - now).div_ceil(self.spacing_ns) as u32
    }
}

#[derive(Default)]
struct VhidQueue {
    // One per frame of an advert (IPv4, IPv6), in the order the frames were given.
    classes: Vec<Class>,
    frames: Vec<Vec<u8>>,
    interval: Duration,
    counts: AdvqCounts,
}

/// A carpdev's advert queue device and its classes.
pub struct AdvQueue {
    name: String,
    ifindex: u32,
    rtnl: Rtnl,
    direct: OwnedFd,
    horizon: Duration,
    vhids: HashMap<u8, VhidQueue>,
}

/// An AF_PACKET socket that never receives (protocol 0), with SO_PRIORITY `priority`.
fn packet_socket(priority: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if priority != 0 {
        let p = priority as libc::c_int;
        // SAFETY: a c_int option value of the size given. Priorities above 6 need CAP_NET_ADMIN,
        // which carpd keeps.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PRIORITY,
                (&p as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// The class rate (bytes a second, every frame counted as `MPU`) for one frame per `interval`,
/// rounded up, and the kernel's per-frame time at that rate.
pub fn class_rate(interval: Duration) -> (u32, u64) {
    let ns = interval.as_nanos().max(1) as u64;
    let rate = (u64::from(MPU) * 1_000_000_000)
        .div_ceil(ns)
        .min(u64::from(u32::MAX)) as u32;
    let spacing = u64::from(MPU) * 1_000_000_000 / u64::from(rate);
    (rate, spacing)
}

/// How many adverts a class holds: as many intervals as fit in the horizon, at least one.
pub fn queue_limit(horizon: Duration, interval: Duration) -> u32 {
    let n = horizon.as_nanos() / interval.as_nanos().max(1);
    (n as u32).clamp(1, MAX_LIMIT)
}

fn is_enobufs(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

impl AdvQueue {
    /// Creates (or adopts, after a hitless restart or a crash) the advert queue device of the carpdev
    /// at `carpdev_index`, up, with its HTB root. `horizon` is how far ahead adverts are queued.
    pub fn open(carpdev_index: u32, horizon: Duration) -> io::Result<AdvQueue> {
        let name = device_name(carpdev_index);
        let rtnl = Rtnl::open()?;
        let mut ifindex = crate::dataplane::if_index(&name).ok();
        if ifindex.is_none() {
            let mut mac: [u8; 6] = rand::random();
            mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
            rtnl.create_macvlan(&name, carpdev_index, mac, DIRECT_QLEN)?;
            let index = crate::dataplane::if_index(&name)
                .map_err(|e| io::Error::other(format!("{name} vanished after creation: {e}")))?;
            // Before it ever goes up: no link-local address, and no IPv6 at all where it can be off.
            if let Err(e) = rtnl.addrgenmode_none(index) {
                tracing::debug!("{name}: addrgenmode none: {e}");
            }
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
            tracing::info!(
                "{name}: created the advert queue device (macvlan private on ifindex {carpdev_index}, no addresses, HTB root 1:)"
            );
            ifindex = Some(index);
        } else {
            tracing::info!("{name}: adopted the advert queue device left by a previous carpd");
        }
        let ifindex = ifindex.expect("set above");
        rtnl.set_up(ifindex, true)?;
        match rtnl.add_htb_root(ifindex, DIRECT_QLEN) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        Ok(AdvQueue {
            name,
            ifindex,
            rtnl,
            direct: packet_socket(0)?,
            horizon,
            vhids: HashMap::new(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// How far ahead adverts are queued.
    pub fn horizon(&self) -> Duration {
        self.horizon
    }

    /// Hands the advert `frames` (one per address family) of a MASTER `vhid` to the kernel at `now`
    /// (CLOCK_MONOTONIC ns), one every `interval`, up to the horizon. Frames that differ from the
    /// queued ones (or a new interval) withdraw what is queued first and leave once at once. Returns
    /// the earliest time the last queued advert can leave.
    pub fn advertise(
        &mut self,
        vhid: u8,
        frames: &[Vec<u8>],
        interval: Duration,
        now: u64,
    ) -> io::Result<u64> {
        let changed = self
            .vhids
            .get(&vhid)
            .is_none_or(|q| q.frames != frames || q.interval != interval);
        if changed {
            self.setup(vhid, frames, interval, now)?;
            for f in frames {
                super::netio::send_frame_on(&self.direct, self.ifindex, f)?;
            }
            self.vhids.get_mut(&vhid).expect("set up").counts.immediate += 1;
        }
        let q = self.vhids.get_mut(&vhid).expect("set up");
        let ifindex = self.ifindex;
        let mut last = u64::MAX;
        for (n, (c, f)) in q.classes.iter_mut().zip(&q.frames).enumerate() {
            // At least one offer a tick (see the module doc), then up to the limit.
            let want = c.limit.saturating_sub(c.depth(now)).max(1);
            for _ in 0..want {
                match super::netio::send_frame_on(&c.sock, ifindex, f) {
                    Ok(()) => {
                        c.last_departure_ns = now.max(c.last_departure_ns + c.spacing_ns);
                        if n == 0 {
                            match c.last_departure_ns > now {
                                true => q.counts.ahead += 1,
                                false => q.counts.immediate += 1,
                            }
                        }
                    }
                    Err(e) if is_enobufs(&e) => {
                        let full = now + u64::from(c.limit - 1) * c.spacing_ns;
                        c.last_departure_ns = c.last_departure_ns.max(full);
                        if n == 0 {
                            q.counts.refused += 1;
                        }
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            last = last.min(c.last_departure_ns);
        }
        Ok(last)
    }

    /// Sets up (or re-rates) the classes of `vhid` for `frames` every `interval`, each with a fresh,
    /// empty leaf.
    fn setup(
        &mut self,
        vhid: u8,
        frames: &[Vec<u8>],
        interval: Duration,
        now: u64,
    ) -> io::Result<()> {
        let (rate, spacing) = class_rate(interval);
        let limit = queue_limit(self.horizon, interval);
        let q = self.vhids.entry(vhid).or_default();
        // Withdraw first: nothing of the old content may leave after the new.
        let mut withdrawn = 0;
        for c in &q.classes {
            withdrawn += c.depth(now);
        }
        q.counts.withdrawn += u64::from(withdrawn);
        for (fam, _) in frames.iter().enumerate() {
            let minor = ((fam as u16) << 8) | u16::from(vhid);
            self.rtnl.set_htb_class(self.ifindex, minor, rate, MPU)?;
            let parent = handle(1, minor);
            let major = match q.classes.iter().find(|c| c.minor == minor) {
                Some(c) => alternate(c.major, minor),
                None => {
                    // A class left by a previous carpd has a leaf of unknown handle: delete it (the
                    // class gets a default, auto-numbered one), so the graft below is a real one.
                    let _ = self.rtnl.delete_qdisc(self.ifindex, parent);
                    leaf_major(minor, 0)
                }
            };
            self.rtnl.graft_pfifo(self.ifindex, parent, major, limit)?;
            let class = Class {
                minor,
                sock: match q.classes.iter().position(|c| c.minor == minor) {
                    Some(p) => q.classes.swap_remove(p).sock,
                    None => packet_socket(parent)?,
                },
                major,
                limit,
                spacing_ns: spacing.saturating_sub(MODEL_SLACK_NS).max(1),
                last_departure_ns: 0,
            };
            q.classes.push(class);
        }
        q.classes.sort_by_key(|c| c.minor);
        q.classes.truncate(frames.len());
        q.frames = frames.to_vec();
        q.interval = interval;
        Ok(())
    }

    /// Withdraws everything queued for `vhid` (before a bow-out, a state change or a demotion takes
    /// effect); returns how many adverts the model believed were still queued.
    pub fn withdraw(&mut self, vhid: u8, now: u64) -> io::Result<u32> {
        let Some(q) = self.vhids.get_mut(&vhid) else {
            return Ok(0);
        };
        let mut withdrawn = 0;
        for c in &mut q.classes {
            let major = alternate(c.major, c.minor);
            self.rtnl
                .graft_pfifo(self.ifindex, handle(1, c.minor), major, c.limit)?;
            c.major = major;
            withdrawn = withdrawn.max(c.depth(now));
            c.last_departure_ns = 0;
        }
        q.counts.withdrawn += u64::from(withdrawn);
        // The next advert, whatever its bytes, starts a fresh schedule.
        q.frames.clear();
        Ok(withdrawn)
    }

    /// Sends frames through the direct queue, at once, behind anything already dequeued (a bow-out).
    pub fn send_now(&self, frames: &[Vec<u8>]) -> io::Result<()> {
        for f in frames {
            super::netio::send_frame_on(&self.direct, self.ifindex, f)?;
        }
        Ok(())
    }

    /// The counts of `vhid`.
    pub fn counts(&self, vhid: u8) -> AdvqCounts {
        self.vhids.get(&vhid).map(|q| q.counts).unwrap_or_default()
    }

    /// Adverts the model believes are queued for `vhid` at `now` (the first family's class).
    pub fn depth(&self, vhid: u8, now: u64) -> u32 {
        self.vhids
            .get(&vhid)
            .and_then(|q| q.classes.first())
            .map_or(0, |c| c.depth(now))
    }

    /// Deletes the device (a planned stop): the kernel drops whatever it still held.
    pub fn remove(self) {
        if let Err(e) = self.rtnl.delete_link(self.ifindex) {
            tracing::warn!("{}: deleting the advert queue device: {e}", self.name);
        }
    }
}

/// The two leaf handle majors of class `minor`: 2 + 2·minor and the next one, all below the kernel's
/// automatic handles (0x8000 and up) and distinct between classes.
fn leaf_major(minor: u16, which: u16) -> u16 {
    2 + 2 * minor + which
}

fn alternate(major: u16, minor: u16) -> u16 {
    match major == leaf_major(minor, 0) {
        true => leaf_major(minor, 1),
        false => leaf_major(minor, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_is_never_slower_than_the_interval() {
        for (advbase, advskew) in [(0, 0), (0, 2), (1, 0), (1, 100), (3, 255), (254, 254)] {
            let interval = crate::engine::advert_interval(advbase, advskew);
            let (rate, spacing) = class_rate(interval);
            assert!(rate >= 1);
            assert!(spacing <= interval.as_nanos() as u64, "{advbase}/{advskew}");
            // Within 0.01 % of the interval up to advbase 3 (the queue drains at most one frame in
            // 10,000 faster), within 0.5 % at advbase 254.
            let off = interval.as_nanos() as u64 - spacing;
            let within = if advbase <= 3 { 10_000 } else { 200 };
            assert!(
                off * within <= interval.as_nanos() as u64,
                "{advbase}/{advskew}: {off} ns"
            );
        }
    }

    #[test]
    fn the_limit_fills_the_horizon() {
        let h = Duration::from_millis(100);
        assert_eq!(queue_limit(h, crate::engine::advert_interval(0, 0)), 25);
        assert_eq!(queue_limit(h, crate::engine::advert_interval(0, 2)), 12);
        assert_eq!(queue_limit(h, crate::engine::advert_interval(1, 0)), 1);
        assert_eq!(
            queue_limit(Duration::from_secs(100), Duration::from_millis(1)),
            MAX_LIMIT
        );
    }

    #[test]
    fn leaf_handles_alternate_and_never_collide() {
        let mut seen = std::collections::HashSet::new();
        for minor in 0..512u16 {
            let a = leaf_major(minor, 0);
            assert_eq!(alternate(a, minor), leaf_major(minor, 1));
            assert_eq!(alternate(leaf_major(minor, 1), minor), a);
            assert!(seen.insert(a) && seen.insert(leaf_major(minor, 1)));
            assert!(a > 1 && leaf_major(minor, 1) < 0x8000);
        }
    }

    #[test]
    fn the_model_counts_what_is_still_queued() {
        let c = Class {
            minor: 1,
            sock: packet_socket_or_dummy(),
            major: 4,
            limit: 8,
            spacing_ns: 1000,
            last_departure_ns: 10_000,
        };
        assert_eq!(c.depth(10_000), 0);
        assert_eq!(c.depth(9_999), 1);
        assert_eq!(c.depth(9_000), 1);
        assert_eq!(c.depth(8_999), 2);
        assert_eq!(c.depth(3_000), 7);
    }

    fn packet_socket_or_dummy() -> OwnedFd {
        // Any fd will do for the model; /dev/null needs no privileges.
        std::fs::File::open("/dev/null").expect("/dev/null").into()
    }
}
