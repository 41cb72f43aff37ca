//! Least privilege: once carpd has started (dataplanes attached, sockets open, bpffs mounted) it keeps only
//! the capabilities its running life needs and drops every other one from all its sets, the bounding set
//! included, so neither carpd nor anything it executes (hooks, the hitless re-exec) can get them back.
//!
//! What stays, and why (the same four the systemd unit grants):
//! - `CAP_NET_ADMIN`: virtual addresses, the carp macvlans, XDP attach of a carpdev added by a reload, the
//!   per-carpdev sysctls;
//! - `CAP_NET_RAW`: AF_PACKET advert sockets of a carpdev added by a reload;
//! - `CAP_BPF` and `CAP_PERFMON`: loading the XDP program on a new carpdev and the map updates.
//!
//! Root without `CAP_DAC_OVERRIDE` still owns its own files (/run/carp, the pins, root's 0600 pass files),
//! which is all carpd touches after start-up.
use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities carpd keeps after start-up.
pub const RUNTIME: [Capability; 4] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
];

/// Drops every capability outside [`RUNTIME`] from the bounding, inheritable, permitted, effective and
/// ambient sets of the whole process; returns the names of those it dropped.
pub fn drop_to_runtime() -> anyhow::Result<Vec<String>> {
    drop_to_runtime_keeping(&[])
}

/// [`drop_to_runtime`], keeping `extra` as well (`[timing] rt_priority` keeps CAP_SYS_NICE so the
/// standby threads started later can take the loop's priority; `mlockall` keeps CAP_IPC_LOCK so their
/// stacks can be locked).
pub fn drop_to_runtime_keeping(extra: &[Capability]) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let keep: CapsHashSet = RUNTIME.into_iter().chain(extra.iter().copied()).collect();
    let permitted =
        caps::read(None, CapSet::Permitted).context("reading the permitted capabilities")?;
    let mut dropped: Vec<String> = permitted
        .difference(&keep)
        .map(|c| c.to_string().to_lowercase())
        .collect();
    dropped.sort();
    // The bounding set first: shrinking it needs CAP_SETPCAP, which the effective set loses below.
    for cap in caps::all().difference(&keep) {
        if caps::has_cap(None, CapSet::Bounding, *cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, *cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing the ambient capabilities")?;
    let keep_here = |set: CapSet| -> anyhow::Result<()> {
        let have = caps::read(None, set)?;
        caps::set(None, set, &have.intersection(&keep).copied().collect())
            .with_context(|| format!("setting the {set:?} capabilities"))
    };
    keep_here(CapSet::Inheritable)?;
    keep_here(CapSet::Effective)?;
    keep_here(CapSet::Permitted)?;
    Ok(dropped)
}
