//! What carpd tells the outside about itself while it runs: systemd (sd_notify through the sd-notify
//! crate: READY, RELOADING, STATUS, WATCHDOG), `carpctl status`'s since-when and why (the last
//! transition of each vhid), and `carpctl monitor`'s stream of transitions and demote changes.
//!
//! What this module owns: the per-vhid record of the last transition, the broadcast channel the
//! monitor connections subscribe to, the STATUS= line (sent only when it changes) and the watchdog
//! interval. The main loop calls it; it never calls back. Every call is O(1) or O(carp interfaces),
//! nothing depends on traffic; a slow monitor client only lags its own receiver (tokio's broadcast
//! drops the oldest events for it), never the loop.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sd_notify::NotifyState;
use tokio::sync::broadcast;

use crate::control::MonitorEvent;

/// Events a monitor connection may fall behind by before it is told it missed some.
const MONITOR_BACKLOG: usize = 256;

/// Sends sd_notify states to systemd ($NOTIFY_SOCKET); a no-op outside systemd, a warning on error.
pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("telling systemd {states:?} (NOTIFY_SOCKET): {e}");
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The last transition of each vhid, the monitor stream and the systemd status.
pub struct Observer {
    // (carp interface, vhid) -> (when, why).
    last: HashMap<(String, u8), (f64, String)>,
    events: broadcast::Sender<MonitorEvent>,
    status: String,
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new()
    }
}

impl Observer {
    /// Nothing recorded yet.
    pub fn new() -> Observer {
        Observer {
            last: HashMap::new(),
            events: broadcast::channel(MONITOR_BACKLOG).0,
            status: String::new(),
        }
    }

    /// The sender monitor connections subscribe through.
    pub fn events(&self) -> broadcast::Sender<MonitorEvent> {
        self.events.clone()
    }

    /// A vhid changed state: recorded for `status` and sent to every monitor.
    pub fn transition(&mut self, interface: &str, vhid: u8, from: &str, to: &str, reason: &str) {
        let time = unix_now();
        self.last
            .insert((interface.to_string(), vhid), (time, reason.to_string()));
        // No receiver is not an error: nobody is monitoring.
        let _ = self.events.send(MonitorEvent::Transition {
            time,
            interface: interface.into(),
            vhid,
            from: from.into(),
            to: to.into(),
            reason: reason.into(),
        });
    }

    /// A group's demote counter changed.
    pub fn demote(&self, group: &str, old: u8, new: u8, reason: Option<&str>) {
        let _ = self.events.send(MonitorEvent::Demote {
            time: unix_now(),
            group: group.into(),
            old,
            new,
            reason: reason.map(str::to_string),
        });
    }

    /// When and why a vhid entered its state, if it changed state in this carpd.
    pub fn since(&self, interface: &str, vhid: u8) -> Option<(f64, String)> {
        self.last.get(&(interface.to_string(), vhid)).cloned()
    }

    /// Forgets a carp interface that was removed (SIGHUP), so a new one of that name starts clean.
    pub fn forget(&mut self, interface: &str) {
        self.last.retain(|(name, _), _| name != interface);
    }

    /// Sends STATUS=<line> when it differs from the last one sent.
    pub fn status(&mut self, line: String) {
        if line != self.status {
            notify(&[NotifyState::Status(&line)]);
            self.status = line;
        }
    }
}

/// How often to send WATCHDOG=1: half of systemd's WatchdogSec (None: no watchdog asked for).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_recorded_and_streamed() {
        let mut o = Observer::new();
        let mut rx = o.events().subscribe();
        assert!(o.since("carp0", 1).is_none());
        o.transition("carp0", 1, "BACKUP", "MASTER", "master down timer expired");
        o.demote("carp", 0, 50, Some("carpctl"));
        let (t, why) = o.since("carp0", 1).expect("recorded");
        assert!(t > 1.0e9, "a Unix time: {t}");
        assert_eq!(why, "master down timer expired");
        match rx.try_recv().expect("transition event") {
            MonitorEvent::Transition { from, to, .. } => {
                assert_eq!((from, to), ("BACKUP".into(), "MASTER".into()))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            rx.try_recv(),
            Ok(MonitorEvent::Demote { new: 50, .. })
        ));
        o.forget("carp0");
        assert!(o.since("carp0", 1).is_none());
    }

    #[test]
    fn a_slow_monitor_lags_instead_of_blocking() {
        let mut o = Observer::new();
        let mut rx = o.events().subscribe();
        for n in 0..(MONITOR_BACKLOG + 10) {
            o.transition("carp0", 1, "BACKUP", "MASTER", &n.to_string());
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
    }
}
