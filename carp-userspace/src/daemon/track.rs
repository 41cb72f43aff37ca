//! The `[[track]]` health checkers at run time (issue #5): one tokio task per validated entry
//! (`config::track::TrackConfig`), the pure rise/fall debouncer (`Health`) and the checks themselves.
//! The tasks change nothing themselves: they send `+N`/`-N` group demotions to carpd's main loop
//! through the same channel as carpctl, so a tracker's effect is exactly an operator's
//! `carpctl demote GROUP +N`.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::server::Msg;
use crate::{
    config::track::{Check, TrackConfig},
    control::{DemoteOp, Request, Response},
};

/// The rise/fall debouncer of one tracker; starts healthy.
#[derive(Debug, Clone)]
pub struct Health {
    rise: u32,
    fall: u32,
    failing: bool,
    streak: u32,
}

impl Health {
    /// A healthy tracker that needs `rise` good and `fall` bad checks in a row to change.
    pub fn new(rise: u32, fall: u32) -> Health {
        Health {
            rise: rise.max(1),
            fall: fall.max(1),
            failing: false,
            streak: 0,
        }
    }

    /// Whether it counts as failing now.
    pub fn failing(&self) -> bool {
        self.failing
    }

    /// Feeds one check result; returns the new verdict when it changes (true = now failing).
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        // A result that agrees with the verdict resets the streak of the opposite result.
        if ok != self.failing {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.failing { self.rise } else { self.fall };
        if self.streak >= needed {
            self.failing = !self.failing;
            self.streak = 0;
            return Some(self.failing);
        }
        None
    }
}

/// Whether an interface of this network namespace is up with carrier (`ifreq::flags`).
pub fn interface_ok(name: &str) -> bool {
    crate::ifreq::flags(name)
        .is_ok_and(|flags| flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0)
}

/// Runs one check: true = healthy.
pub async fn check_once(check: &Check, content: Option<&str>, limit: Duration) -> bool {
    match check {
        Check::Interface(name) => interface_ok(name),
        Check::Script(path) => {
            let child = tokio::process::Command::new(path)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            matches!(tokio::time::timeout(limit, child).await, Ok(Ok(s)) if s.success())
        }
        Check::File(file) => match content {
            None => !file.exists(),
            Some(c) => std::fs::read_to_string(file).map_or(true, |s| s.trim() != c),
        },
    }
}

/// Starts one task per tracker; each sends group demotions over `tx` while its check fails.
pub fn spawn(tracks: &[TrackConfig], tx: mpsc::Sender<Msg>) -> Vec<tokio::task::JoinHandle<()>> {
    tracks
        .iter()
        .cloned()
        .map(|t| tokio::spawn(run(t, tx.clone())))
        .collect()
}

async fn run(t: TrackConfig, tx: mpsc::Sender<Msg>) {
    let what = t.check.describe();
    let mut health = Health::new(t.rise, t.fall);
    let mut tick = tokio::time::interval(t.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = check_once(&t.check, t.content.as_deref(), t.interval).await;
        let Some(failing) = health.observe(ok) else {
            continue;
        };
        let delta = i32::from(t.demote) * if failing { 1 } else { -1 };
        tracing::info!(
            "track {what}: {}; group {} demote {delta:+}",
            if failing { "failing" } else { "recovered" },
            t.group
        );
        let (reply, answer) = oneshot::channel();
        let request = Request::Demote {
            group: t.group.clone(),
            change: Some(DemoteOp::Adjust(delta)),
        };
        if tx.send(Msg { request, reply }).await.is_err() {
            return;
        }
        if let Ok(Response::Error(e)) = answer.await {
            tracing::warn!("track {what}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_debounce() {
        let mut h = Health::new(2, 3);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None, "a good check resets the bad streak");
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(true));
        assert!(h.failing());
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(false));
    }

    #[test]
    fn lo_is_up_and_a_missing_interface_fails() {
        assert!(!interface_ok("nosuchif0"));
    }
}
