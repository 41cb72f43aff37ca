//! The operator's up/down hooks: `script <carpif> <state> <vip...>`, run after a transition.
//!
//! A hook runs with a clean environment (only PATH), no stdin, and a timeout after which it is killed,
//! so a hanging script can delay nothing: the daemon never waits for it.

use std::{net::IpAddr, path::PathBuf, process::Stdio, time::Duration};

/// How long a hook may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `script carpif state vips...` in the background and logs how it ended.
pub fn spawn(script: PathBuf, carpif: String, state: &'static str, vips: Vec<IpAddr>) {
    tokio::spawn(async move {
        let mut cmd = tokio::process::Command::new(&script);
        cmd.arg(&carpif)
            .arg(state)
            .args(vips.iter().map(ToString::to_string))
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{carpif}: hook {} could not start: {e}", script.display());
                return;
            }
        };
        match tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(out)) if out.status.success() => {
                tracing::debug!("{carpif}: hook {} {state} done", script.display())
            }
            Ok(Ok(out)) => tracing::warn!(
                "{carpif}: hook {} {state} failed: {}",
                script.display(),
                out.status
            ),
            Ok(Err(e)) => tracing::warn!("{carpif}: hook {}: {e}", script.display()),
            // Dropping the future kills the child (kill_on_drop).
            Err(_) => tracing::warn!(
                "{carpif}: hook {} {state} killed after {:?}",
                script.display(),
                HOOK_TIMEOUT
            ),
        }
    });
}
