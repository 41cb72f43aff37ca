//! The carpdevs' own addresses (the source of every advert), read off the runtime loop.
//!
//! getifaddrs is an RTM_GETLINK and an RTM_GETADDR dump, and the kernel serves both under the RTNL
//! lock. Any other process may hold that lock for tens of milliseconds (an XDP attach waits for an
//! RCU grace period under it, so does a namespace teardown or a routing daemon's bulk update), longer
//! than a 10 ms advert interval: a loop that asked the kernel for its addresses before each advert
//! went silent for 60 ms at a time on a busy host, and a keepalived backup at `advert_int 0.01` took
//! over. A watcher thread now re-reads the addresses once a second and whenever the loop saw an
//! address change; the loop only ever copies the last snapshot, which costs no system call.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock, mpsc},
    time::Duration,
};

use super::netio;

/// How often the watcher re-reads the addresses without being told of a change.
const REFRESH: Duration = Duration::from_secs(1);

type Snapshot = Arc<HashMap<String, Vec<IpAddr>>>;

/// The last snapshot of every interface's addresses and the watcher thread that keeps it fresh.
pub struct OwnAddrs {
    snap: Arc<RwLock<Snapshot>>,
    // Dropping the sender ends the watcher.
    wake: mpsc::SyncSender<()>,
}

impl OwnAddrs {
    /// Reads the addresses once (on the caller's thread, before any advert needs them) and starts
    /// the watcher.
    pub fn start() -> std::io::Result<OwnAddrs> {
        let snap = Arc::new(RwLock::new(Arc::new(read_all())));
        let (wake, rx) = mpsc::sync_channel::<()>(1);
        let shared = Arc::clone(&snap);
        std::thread::Builder::new()
            .name("carp-addrs".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(REFRESH) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    let fresh = Arc::new(read_all());
                    // The lock is held only for the pointer swap, never across the kernel dump.
                    *shared.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                }
            })?;
        Ok(OwnAddrs { snap, wake })
    }

    /// The addresses of `ifname` in the last snapshot (getifaddrs order), without a system call.
    pub fn of(&self, ifname: &str) -> Vec<IpAddr> {
        let snap = Arc::clone(&self.snap.read().unwrap_or_else(|e| e.into_inner()));
        snap.get(ifname).cloned().unwrap_or_default()
    }

    /// Tells the watcher an address or link changed, so the snapshot follows within one dump.
    pub fn changed(&self) {
        // A wake-up already pending covers this one too.
        let _ = self.wake.try_send(());
    }

    /// Re-reads the snapshot on the caller's thread: for set-up and reloads, which may create or
    /// adopt carpdevs the snapshot does not know yet (never on the advert path).
    pub fn refresh_now(&self) {
        let fresh = Arc::new(read_all());
        *self.snap.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }
}

/// Every interface's addresses, by name, from one getifaddrs call.
fn read_all() -> HashMap<String, Vec<IpAddr>> {
    let mut out: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for (name, addr) in netio::all_interface_addrs() {
        out.entry(name).or_default().push(addr);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_holds_the_loopback_address_and_follows_a_refresh() {
        let a = OwnAddrs::start().expect("watcher");
        assert!(
            a.of("lo").contains(&IpAddr::from([127, 0, 0, 1])),
            "{:?}",
            a.of("lo")
        );
        assert!(a.of("no-such-interface").is_empty());
        a.changed();
        a.changed();
        a.refresh_now();
        assert!(a.of("lo").contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
