//! Opt-in real-time scheduling (`[timing] rt_priority`, `mlockall`), like keepalived's
//! `vrrp_rt_priority` and `vrrp_rlimit_rttime`: carpd's loop thread and its standby senders run
//! SCHED_RR at the given priority, with memory locked so a page fault never stalls an advert.
//!
//! Off by default, and with reason: a real-time thread that spins starves every normal thread on its
//! CPU (on a 2-vCPU guest, half the machine), so carpd also sets RLIMIT_RTTIME (`RTTIME_LIMIT` of CPU
//! without blocking) and the kernel kills a runaway carpd with SIGXCPU/SIGKILL rather than let it hold a
//! CPU. SCHED_RESET_ON_FORK keeps hooks and checkers from inheriting the policy; the standby threads
//! (started after the capabilities are dropped) raise themselves to the same priority, so carpd keeps
//! CAP_SYS_NICE (and CAP_IPC_LOCK with `mlockall`, for their locked stacks) when this is on. On a PREEMPT_NONE kernel a real-time priority does not
//! pre-empt a running kernel section (BENCHMARKS.md, Failover: SCHED_FIFO carpd still stalled under a
//! compile); the kernel advert queue (`advq`) is what covers that.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::config::timing::TimingConfig;

/// The most CPU time (µs) a real-time carpd thread may use without blocking before the kernel stops it.
pub const RTTIME_LIMIT_US: u64 = 1_000_000;

static PRIORITY: AtomicU8 = AtomicU8::new(0);

/// Applies `[timing]` to the calling (loop) thread and the process; call while carpd still has its
/// start-up capabilities. Failures are logged, never fatal: carpd runs without them.
pub fn apply(t: &TimingConfig) {
    if t.mlockall {
        // Later mappings (a thread's stack) are locked too: carpd keeps CAP_IPC_LOCK for them.
        // SAFETY: mlockall takes flags only.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
            tracing::warn!("mlockall: {}", std::io::Error::last_os_error());
        } else {
            tracing::info!("memory locked (mlockall)");
        }
    }
    if t.rt_priority == 0 {
        return;
    }
    let lim = libc::rlimit {
        rlim_cur: RTTIME_LIMIT_US,
        rlim_max: RTTIME_LIMIT_US,
    };
    // SAFETY: a valid rlimit for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_RTTIME, &lim) } != 0 {
        tracing::warn!("RLIMIT_RTTIME: {}", std::io::Error::last_os_error());
    }
    PRIORITY.store(t.rt_priority, Ordering::Relaxed);
    match enter_thread() {
        Ok(()) => tracing::info!(
            "real-time scheduling: SCHED_RR priority {} for the loop and the standby senders (RLIMIT_RTTIME {} ms; carpd keeps CAP_SYS_NICE)",
            t.rt_priority,
            RTTIME_LIMIT_US / 1000
        ),
        Err(e) => tracing::warn!("SCHED_RR priority {}: {e}", t.rt_priority),
    }
}

/// The capabilities `[timing]` needs after start-up, beyond `privs::RUNTIME`.
pub fn capabilities(t: &TimingConfig) -> Vec<caps::Capability> {
    let mut c = Vec::new();
    if t.rt_priority > 0 {
        c.push(caps::Capability::CAP_SYS_NICE);
    }
    if t.mlockall {
        c.push(caps::Capability::CAP_IPC_LOCK);
    }
    c
}

/// Puts the calling thread at carpd's real-time priority, if one is configured.
pub fn enter_thread() -> std::io::Result<()> {
    let prio = PRIORITY.load(Ordering::Relaxed);
    if prio == 0 {
        return Ok(());
    }
    let param = libc::sched_param {
        sched_priority: i32::from(prio),
    };
    // SAFETY: a valid sched_param; 0 = the calling thread.
    let rc =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
