//! Which conntrack entries are replicated and the mirror's settings: the zone, protocol and
//! ignored-prefix filter (a gateway's own addresses and the sync link stay local) and the timings
//! of the flush, the bulk request and the bulk end.

use std::net::IpAddr;
use std::time::Duration;

use super::super::entry::{CtKey, proto};

/// Which entries are replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtFilter {
    /// Zones replicated; None = every zone.
    pub zones: Option<Vec<u16>>,
    /// IP protocols replicated.
    pub protocols: Vec<u8>,
    /// Address prefixes whose traffic is not replicated (the gateway's own addresses, the sync link).
    pub ignore: Vec<(IpAddr, u8)>,
}

impl Default for CtFilter {
    fn default() -> Self {
        CtFilter {
            zones: None,
            protocols: vec![
                proto::TCP,
                proto::UDP,
                proto::ICMP,
                proto::ICMPV6,
                proto::SCTP,
                proto::DCCP,
                proto::GRE,
            ],
            ignore: Vec::new(),
        }
    }
}

fn in_prefix(a: &IpAddr, (net, len): &(IpAddr, u8)) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from((*len).min(32)))
                .unwrap_or(0);
            u32::from(*a) & m == u32::from(*n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from((*len).min(128)))
                .unwrap_or(0);
            u128::from(*a) & m == u128::from(*n) & m
        }
        _ => false,
    }
}

impl CtFilter {
    /// True if the entry is replicated: its zone and protocol are, and neither end of its original
    /// direction is an ignored address.
    pub fn accepts(&self, k: &CtKey) -> bool {
        if let Some(z) = &self.zones
            && !z.contains(&k.zone)
        {
            return false;
        }
        self.protocols.contains(&k.orig.proto)
            && !self
                .ignore
                .iter()
                .any(|p| in_prefix(&k.orig.src, p) || in_prefix(&k.orig.dst, p))
    }
}

/// The mirror's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtConfig {
    /// Which entries are replicated.
    pub filter: CtFilter,
    /// Largest sync packet (as `SyncConfig::mtu`).
    pub mtu: usize,
    /// How long a local change waits for others to share its packet.
    pub flush_delay: Duration,
    /// How often the bulk request is repeated.
    pub request_interval: Duration,
    /// Bulk requests sent before giving up (then the demotion goes: there is no peer to wait for).
    pub request_tries: u32,
    /// The least wait for BULK_END after BULK_START (larger bulks get more).
    pub bulk_end_min: Duration,
    /// Refresh learned entries' timeouts while their teacher is alive.
    pub refresh: bool,
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig {
            filter: CtFilter::default(),
            mtu: 1400,
            flush_delay: Duration::from_millis(2),
            request_interval: Duration::from_secs(2),
            request_tries: 12,
            bulk_end_min: Duration::from_secs(10),
            refresh: true,
        }
    }
}
