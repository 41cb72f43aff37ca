//! Standby senders for a MASTER's adverts: two threads, pinned to two different CPUs where there are
//! two, that send the last advert again, byte for byte, when the loop has not sent the next one half an
//! interval after it was due.
//!
//! At advbase 0 the backup declares the master dead after 23.4 ms (advskew 2), and on a kernel without
//! preemption one CPU can hold a runnable thread back for 20-60 ms a few times an hour: a stall of the
//! CPU carpd's loop is on would be a false failover. Such stalls are per CPU, so a thread on another
//! one keeps the adverts going. A repeated advert is a valid advert (same counter, same digest: carp
//! peers, ucarp and carpd take it; it only restarts their master-down timer), so nothing is decided
//! here: the loop still runs the election and every state change clears the slot before it acts. The
//! standbys send only while the dataplane's MASTER lease runs, so a stalled or dead loop stops
//! advertising when the dataplane stops answering for the VIPs.

use crate::engine::NodeId;
use std::{
    os::fd::OwnedFd,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

/// What the standbys re-send for one carp interface (node).
struct Slot {
    node: NodeId,
    packet: Arc<OwnedFd>,
    ifindex: u32,
    frames: Vec<Vec<u8>>,
    interval: Duration,
    last_sent: Instant,
    lease_until: Instant,
}

impl Slot {
    /// When a standby sends if the loop has not: half an interval after the next advert was due.
    fn due(&self) -> Instant {
        self.last_sent + self.interval + self.interval / 2
    }
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    stop: bool,
    /// Adverts the standbys sent.
    resent: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The standby sender threads and the adverts they watch.
pub struct Standby {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The longest a standby sleeps with nothing due (it wakes early on any change).
const IDLE_WAIT: Duration = Duration::from_secs(1);

impl Standby {
    /// Starts the threads: one per CPU for the first two CPUs carpd may run on (one, unpinned, on a
    /// single-CPU host).
    pub fn start() -> std::io::Result<Standby> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let cpus = allowed_cpus();
        let pins: Vec<Option<usize>> = if cpus.len() >= 2 {
            cpus[..2].iter().map(|&c| Some(c)).collect()
        } else {
            vec![None]
        };
        let mut threads = Vec::new();
        for pin in pins {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("carp-standby".into())
                    .spawn(move || {
                        if let Some(cpu) = pin {
                            pin_to(cpu);
                        }
                        // The loop's real-time priority, if configured (`rt`).
                        if let Err(e) = super::rt::enter_thread() {
                            tracing::warn!("standby sender: real-time priority: {e}");
                        }
                        run(&shared);
                    })?,
            );
        }
        Ok(Standby { shared, threads })
    }

    /// The loop sent `frames` for `node` at `sent` through `packet` (an AF_PACKET socket) on
    /// `ifindex`; the next is due `interval` later, and the dataplane's lease runs to `lease_until`.
    #[allow(clippy::too_many_arguments)]
    pub fn sent(
        &self,
        node: NodeId,
        packet: &Arc<OwnedFd>,
        ifindex: u32,
        frames: Vec<Vec<u8>>,
        interval: Duration,
        sent: Instant,
        lease_until: Instant,
    ) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = Slot {
            node,
            packet: packet.clone(),
            ifindex,
            frames,
            interval,
            last_sent: sent,
            lease_until,
        };
        match st.slots.iter_mut().find(|s| s.node == node) {
            Some(s) => *s = slot,
            None => {
                st.slots.push(slot);
                // A sleeping standby may be waiting for a later slot or for nothing.
                self.shared.changed.notify_all();
            }
        }
    }

    /// `node` is no longer MASTER (or bows out next): no standby sends for it from now on. A
    /// standby's send in progress finishes first (it holds the lock), so nothing follows a bow-out.
    pub fn clear(&self, node: NodeId) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.slots.retain(|s| s.node != node);
    }

    /// Adverts the standbys have sent so far.
    pub fn resent(&self) -> u64 {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .resent
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop = true;
        self.shared.changed.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared) {
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if st.stop {
            return;
        }
        let now = Instant::now();
        let mut resent = 0;
        for s in &mut st.slots {
            if now >= s.due() && now < s.lease_until {
                for f in &s.frames {
                    // A failed send is the loop's to notice (its own sends fail the same way).
                    let _ = super::netio::send_frame_on(&s.packet, s.ifindex, f);
                }
                s.last_sent = now;
                resent += 1;
            }
        }
        st.resent += resent;
        let next = st
            .slots
            .iter()
            .filter(|s| s.due() < s.lease_until)
            .map(Slot::due)
            .min();
        let wait = next.map_or(IDLE_WAIT, |t| t.saturating_duration_since(Instant::now()));
        st = shared
            .changed
            .wait_timeout(st, wait.min(IDLE_WAIT))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid cpu_set_t of the size given.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set within its size.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to `cpu` (best effort: unpinned it still helps against a busy loop).
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it; the call affects this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}
