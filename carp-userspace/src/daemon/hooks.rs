//! The operator's up/down hooks: `script <carpif> <state> <vip...>`, run after a transition.
//!
//! A hook runs with a clean environment (only PATH), no stdin, in a process group of its own, and with
//! a timeout after which the whole group is killed (a script's own children included), so a hanging
//! script can delay nothing: the daemon never waits for it.
//!
//! Order and bounds (issue #16 item 7): the hooks of one carp interface run one at a time, in the
//! order of the transitions, so a down script never overtakes the up script before it. While one
//! runs, later transitions leave one pending hook, the newest (coalesced: a flapping interface runs
//! the hook of its last state, not one per flap), and it is dropped if it would repeat the hook that
//! just ran with the same state. So each interface has at most one hook running and one waiting, and
//! at most `MAX_RUNNING` hook processes run at once over all interfaces.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

/// How long a hook may run before its process group is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Hook processes that may run at once, over every carp interface.
pub const MAX_RUNNING: usize = 4;

/// One hook to run.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Job {
    script: PathBuf,
    state: &'static str,
    vips: Vec<IpAddr>,
}

/// Per carp interface: is its runner task alive, and the newest hook waiting for it.
#[derive(Default)]
struct Slot {
    running: bool,
    pending: Option<Job>,
}

fn slots() -> &'static Mutex<HashMap<String, Slot>> {
    static SLOTS: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    SLOTS.get_or_init(Default::default)
}

fn permits() -> Arc<tokio::sync::Semaphore> {
    static PERMITS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    PERMITS
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING)))
        .clone()
}

/// Queues `script carpif state vips...` behind the hooks of `carpif` already running (see the module
/// doc) and logs how it ended.
pub fn spawn(script: PathBuf, carpif: String, state: &'static str, vips: Vec<IpAddr>) {
    let job = Job {
        script,
        state,
        vips,
    };
    {
        let mut slots = slots().lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(carpif.clone()).or_default();
        if slot.running {
            if slot.pending.replace(job).is_some() {
                tracing::debug!("{carpif}: hook coalesced with a newer transition");
            }
            return;
        }
        slot.running = true;
    }
    tokio::spawn(runner(carpif, job));
}

/// Runs `first`, then whatever is pending for `carpif`, until nothing is.
async fn runner(carpif: String, first: Job) {
    let mut job = first;
    loop {
        let permit = permits().acquire_owned().await;
        run(&carpif, &job, HOOK_TIMEOUT).await;
        drop(permit);
        let mut slots = slots().lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(carpif.clone()).or_default();
        match slot.pending.take() {
            // Flapped back to the state just hooked: nothing changed for the script.
            Some(next) if next == job => {
                slot.running = false;
                return;
            }
            Some(next) => job = next,
            None => {
                slot.running = false;
                return;
            }
        }
    }
}

/// Runs one hook to its end or its timeout (then its process group is killed) and logs the outcome.
async fn run(carpif: &str, job: &Job, timeout: Duration) {
    let Job {
        script,
        state,
        vips,
    } = job;
    let mut cmd = tokio::process::Command::new(script);
    cmd.arg(carpif)
        .arg(state)
        .args(vips.iter().map(ToString::to_string))
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        // Its own process group, so the timeout kills what the script started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{carpif}: hook {} could not start: {e}", script.display());
            return;
        }
    };
    let pgid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::debug!("{carpif}: hook {} {state} done", script.display())
        }
        Ok(Ok(status)) => tracing::warn!(
            "{carpif}: hook {} {state} failed: {status}",
            script.display()
        ),
        Ok(Err(e)) => tracing::warn!("{carpif}: hook {}: {e}", script.display()),
        Err(_) => {
            if let Some(pgid) = pgid {
                // SAFETY: kill(2) on the process group the hook leads (its pid, set by process_group(0)).
                unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
            }
            let _ = child.wait().await;
            tracing::warn!(
                "{carpif}: hook {} {state} killed (with its process group) after {timeout:?}",
                script.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn scratch(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("carp-hooks-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Four transitions in quick succession: the hook of the first runs, the newest of the rest runs
    /// after it (never at the same time), the two in between are coalesced away. Before, each
    /// transition started its own process at once: four overlapping runs in no particular order.
    #[tokio::test]
    async fn hooks_of_one_interface_run_one_at_a_time_and_coalesce() {
        let dir = scratch("order");
        let log = dir.join("log");
        let s = script(
            &dir,
            "hook",
            &format!(
                "echo start $2 >> {0}; sleep 0.3; echo end $2 >> {0}",
                log.display()
            ),
        );
        for state in ["MASTER", "BACKUP", "MASTER", "BACKUP"] {
            spawn(s.clone(), "carp-order".into(), state, vec![]);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            ["start MASTER", "end MASTER", "start BACKUP", "end BACKUP"],
            "{text}"
        );
        // The runner is gone, so the next transition starts at once.
        assert!(!slots().lock().unwrap()["carp-order"].running);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A flap back to the state just hooked runs nothing more.
    #[tokio::test]
    async fn a_flap_back_to_the_hooked_state_runs_nothing() {
        let dir = scratch("flap");
        let log = dir.join("log");
        let s = script(
            &dir,
            "hook",
            &format!("echo $2 >> {0}; sleep 0.2", log.display()),
        );
        for state in ["MASTER", "BACKUP", "MASTER"] {
            spawn(s.clone(), "carp-flap".into(), state, vec![]);
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "MASTER\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A hook past its timeout is killed with what it started: a child sleeping in the background
    /// is gone too. Before, only the script's own process was killed and its children lived on.
    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let dir = scratch("kill");
        let pidfile = dir.join("pid");
        let s = script(
            &dir,
            "hook",
            &format!("sleep 60 & echo $! > {}; sleep 60", pidfile.display()),
        );
        let job = Job {
            script: s,
            state: "MASTER",
            vips: vec![],
        };
        let t = std::time::Instant::now();
        run("carp-kill", &job, Duration::from_millis(500)).await;
        assert!(t.elapsed() < Duration::from_secs(5));
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let pid = pid.trim();
        // Gone, or a zombie waiting for whoever adopted it: either way not running.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, r)| r.split_whitespace().next());
        assert!(
            stat.is_empty() || state == Some("Z"),
            "the hook's child {pid} still runs: {stat}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
