//! The conntrack keys of `[pfsync]` (issue #15): whether netfilter's state table is replicated, and
//! which of it.
//!
//! ```toml
//! [pfsync]
//! conntrack = true                      # replicate conntrack entries, NAT bindings included
//! conntrack_zones = [0]                 # default: every zone
//! conntrack_protocols = ["tcp", "udp"]  # default: tcp udp icmp icmpv6 sctp dccp gre
//! conntrack_ignore = ["203.0.113.7", "fd00::/64"]  # connections to or from these are not replicated
//! conntrack_ignore_own = true           # nor those to or from this gateway's own addresses (default;
//!                                       # the VIPs are not "own": NAT to a VIP is what we replicate)
//! ```
//! The sync link's own traffic (syncdev's addresses, the sync peer) is never replicated.

use std::net::IpAddr;

use serde::Serialize;
use toml::Spanned;

use crate::sync::conntrack::{CtFilter, entry::proto};

/// The validated conntrack settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConntrackConfig {
    /// Zones replicated; None = all.
    pub zones: Option<Vec<u16>>,
    /// IP protocol numbers replicated.
    pub protocols: Vec<u8>,
    /// Prefixes whose connections are not replicated, as (address, prefix length).
    pub ignore: Vec<(IpAddr, u8)>,
    /// Also ignore connections to or from the gateway's own (non-VIP) addresses.
    pub ignore_own: bool,
}

impl ConntrackConfig {
    /// The mirror's filter; `extra` are prefixes found at run time (own addresses, the sync link).
    pub fn filter(&self, extra: &[(IpAddr, u8)]) -> CtFilter {
        let mut ignore = self.ignore.clone();
        ignore.extend_from_slice(extra);
        CtFilter {
            zones: self.zones.clone(),
            protocols: self.protocols.clone(),
            ignore,
        }
    }
}

/// The conntrack keys as written.
pub struct RawConntrack<'a> {
    /// `conntrack`.
    pub on: &'a Option<Spanned<bool>>,
    /// `conntrack_zones`.
    pub zones: &'a Option<Spanned<Vec<i64>>>,
    /// `conntrack_protocols`.
    pub protocols: &'a Option<Spanned<Vec<String>>>,
    /// `conntrack_ignore`.
    pub ignore: &'a Option<Spanned<Vec<String>>>,
    /// `conntrack_ignore_own`.
    pub ignore_own: &'a Option<Spanned<bool>>,
}

/// Parses an address or prefix (`10.0.0.0/8`, `fd00::1`).
pub fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let a: IpAddr = a.parse().ok()?;
    let max = if a.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((a, len))
}

/// Checks the keys; `err(span, message)` builds the file:line error. None when `conntrack` is off.
pub fn validate<E>(
    raw: RawConntrack<'_>,
    err: impl Fn(&std::ops::Range<usize>, String) -> E,
) -> Result<Option<ConntrackConfig>, E> {
    let on = raw.on.as_ref().is_some_and(|v| *v.get_ref());
    if !on {
        // The other keys alone are a mistake worth naming: they would do nothing.
        for (key, span) in [
            ("conntrack_zones", raw.zones.as_ref().map(|v| v.span())),
            (
                "conntrack_protocols",
                raw.protocols.as_ref().map(|v| v.span()),
            ),
            ("conntrack_ignore", raw.ignore.as_ref().map(|v| v.span())),
            (
                "conntrack_ignore_own",
                raw.ignore_own.as_ref().map(|v| v.span()),
            ),
        ] {
            if let Some(span) = span {
                return Err(err(&span, format!("pfsync: {key} needs conntrack = true")));
            }
        }
        return Ok(None);
    }
    let zones = match raw.zones {
        None => None,
        Some(v) => {
            let mut z = Vec::new();
            for &n in v.get_ref() {
                let n = u16::try_from(n).map_err(|_| {
                    err(
                        &v.span(),
                        format!("pfsync: conntrack_zones: {n}: out of range 0..=65535"),
                    )
                })?;
                z.push(n);
            }
            Some(z)
        }
    };
    let protocols = match raw.protocols {
        None => CtFilter::default().protocols,
        Some(v) => {
            let mut p = Vec::new();
            for name in v.get_ref() {
                p.push(proto::by_name(name).ok_or_else(|| {
                    err(
                        &v.span(),
                        format!(
                            "pfsync: conntrack_protocols: {name:?}: not one of tcp, udp, icmp, icmpv6, sctp, dccp, gre, udplite"
                        ),
                    )
                })?);
            }
            p
        }
    };
    let ignore = match raw.ignore {
        None => Vec::new(),
        Some(v) => {
            let mut out = Vec::new();
            for s in v.get_ref() {
                out.push(parse_prefix(s).ok_or_else(|| {
                    err(
                        &v.span(),
                        format!("pfsync: conntrack_ignore: {s:?}: not an address or prefix"),
                    )
                })?);
            }
            out
        }
    };
    Ok(Some(ConntrackConfig {
        zones,
        protocols,
        ignore,
        ignore_own: raw.ignore_own.as_ref().is_none_or(|v| *v.get_ref()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_errors_name_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("carp-ct-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("sync.key");
        std::fs::write(&key, "a conntrack test sync key of 32 bytes\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let base = "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\npass = \"x\"\naddresses = [\"10.0.0.1/24\"]\n\n[pfsync]\nsyncdev = \"eth2\"\nkey_file = \"sync.key\"\n";
        let parse = |tail: &str| {
            crate::config::Config::parse(&dir.join("carp.toml"), &format!("{base}{tail}"))
        };
        let c = parse("").unwrap();
        assert_eq!(c.pfsync.unwrap().conntrack, None);
        let c = parse("conntrack = true\n").unwrap();
        let ct = c.pfsync.unwrap().conntrack.unwrap();
        assert_eq!(ct.protocols.len(), 7);
        assert!(ct.ignore_own && ct.zones.is_none());
        let c = parse(
            "conntrack = true\nconntrack_zones = [0, 5]\nconntrack_protocols = [\"tcp\", \"udp\"]\nconntrack_ignore = [\"203.0.113.0/24\"]\nconntrack_ignore_own = false\n",
        )
        .unwrap();
        let ct = c.pfsync.unwrap().conntrack.unwrap();
        assert_eq!(ct.zones, Some(vec![0, 5]));
        assert_eq!(ct.protocols, vec![proto::TCP, proto::UDP]);
        assert!(!ct.ignore_own);
        for (tail, want) in [
            (
                "conntrack_zones = [1]\n",
                ":11: pfsync: conntrack_zones needs conntrack = true",
            ),
            (
                "conntrack = true\nconntrack_protocols = [\"ip\"]\n",
                "conntrack_protocols: \"ip\": not one of",
            ),
            (
                "conntrack = true\nconntrack_zones = [70000]\n",
                "conntrack_zones: 70000: out of range",
            ),
            (
                "conntrack = true\nconntrack_ignore = [\"nope\"]\n",
                "conntrack_ignore: \"nope\": not an address",
            ),
        ] {
            let e = parse(tail).expect_err(tail).to_string();
            assert!(e.contains(want), "{tail:?}: {e}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            parse_prefix("10.0.0.0/8"),
            Some(("10.0.0.0".parse().unwrap(), 8))
        );
        assert_eq!(
            parse_prefix("fd00::1"),
            Some(("fd00::1".parse().unwrap(), 128))
        );
        assert_eq!(parse_prefix("10.0.0.1/33"), None);
        assert_eq!(parse_prefix("x"), None);
    }
}
