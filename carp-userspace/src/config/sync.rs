//! The `[pfsync]` and `[flows]` config tables (design §2, issue #7): parsed and checked here so that
//! `carpd --check` names the file, line and key of every mistake, and the key file is read (and refused
//! when other users can read it) before anything starts.
//!
//! ```toml
//! [pfsync]
//! syncdev = "eth2"
//! syncpeer = "172.16.1.2"      # omit for multicast (group, default 224.0.0.240) on syncdev
//! key_file = "/etc/carp/sync.key"
//! maxupd = 128
//! defer = false
//! # node_id = 7                # default: from syncdev's MAC address
//! # port = 8240
//!
//! [flows]
//! stateful = true              # accept on the carpdevs only known flows and new ones from `inside`
//! inside = ["eth1"]            # carpdevs facing the inside (where new flows may start)
//! limit = 65536                # slots of the flow table (pf's `set limit states`); read when the
//!                              # dataplane is first loaded (a pinned table keeps its size)
//! ```

use std::{
    net::Ipv4Addr,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, InterfaceConfig};

/// The UDP port sync packets go to by default.
pub const DEFAULT_PORT: u16 = 8240;
/// The multicast group used when no `syncpeer` is set (pfsync's 224.0.0.240).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 240);
/// Flow events each CPU may send per millisecond by default (about a million a second per CPU).
pub const DEFAULT_EVENTS_PER_MS: u32 = 1000;
/// Flow table slots by default (`carp_common::maps::FLOW_SLOTS`).
pub const DEFAULT_FLOW_LIMIT: u32 = carp_common::maps::FLOW_SLOTS;
/// The largest flow table `[flows] limit` may ask for (the kernel preallocates an LRU map: ~200 bytes a slot).
pub const MAX_FLOW_LIMIT: u32 = 16_000_000;

/// `[pfsync]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPfsync {
    syncdev: Option<Spanned<String>>,
    syncpeer: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    maxupd: Option<Spanned<i64>>,
    defer: Option<Spanned<bool>>,
    node_id: Option<Spanned<i64>>,
    port: Option<Spanned<i64>>,
    // The conntrack keys (`config::conntrack`).
    conntrack: Option<Spanned<bool>>,
    conntrack_zones: Option<Spanned<Vec<i64>>>,
    conntrack_protocols: Option<Spanned<Vec<String>>>,
    conntrack_ignore: Option<Spanned<Vec<String>>>,
    conntrack_ignore_own: Option<Spanned<bool>>,
}

/// `[flows]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFlows {
    stateful: Option<Spanned<bool>>,
    inside: Option<Spanned<Vec<String>>>,
    events_per_ms: Option<Spanned<i64>>,
    limit: Option<Spanned<i64>>,
}

/// The validated `[pfsync]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PfsyncConfig {
    /// The interface sync packets use (the socket is bound to it).
    pub syncdev: String,
    /// The unicast peer; None = multicast to `group`.
    pub syncpeer: Option<Ipv4Addr>,
    /// The multicast group (used when `syncpeer` is None).
    pub group: Ipv4Addr,
    /// Where the key came from.
    pub key_file: PathBuf,
    /// The key bytes (never printed).
    #[serde(skip)]
    pub key: Vec<u8>,
    /// Flush a flow's updates at once after this many (0..=255).
    pub maxupd: u8,
    /// Hold a new flow's first packet until a peer acknowledges it.
    pub defer: bool,
    /// This node's sync id; None = derived from syncdev's MAC at start.
    pub node_id: Option<u32>,
    /// The UDP port.
    pub port: u16,
    /// `conntrack = true`: replicate netfilter's conntrack table (`config::conntrack`).
    pub conntrack: Option<super::conntrack::ConntrackConfig>,
}

/// The validated `[flows]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct FlowsConfig {
    /// Drop frames of flows the cluster does not know (except new ones from `inside`).
    pub stateful: bool,
    /// Carpdevs facing the inside.
    pub inside: Vec<String>,
    /// Flow events per CPU per millisecond (the kernel's rate limit).
    pub events_per_ms: u32,
    /// Slots of the flow table (`carp_flows`' max_entries when the dataplane is first loaded).
    pub limit: u32,
}

impl FlowsConfig {
    /// True if the dataplane tracks flows at all (stateful mode or replication configured).
    pub fn tracking(&self, pfsync: Option<&PfsyncConfig>) -> bool {
        self.stateful || pfsync.is_some()
    }
}

/// Checks `[pfsync]` and `[flows]`; `file` anchors a relative `key_file`.
pub fn validate(
    file: &Path,
    text: &str,
    pfsync: Option<Spanned<RawPfsync>>,
    flows: Option<Spanned<RawFlows>>,
    interfaces: &[InterfaceConfig],
) -> Result<(Option<PfsyncConfig>, FlowsConfig), ConfigError> {
    let err = |span: &Range<usize>, message: String| ConfigError {
        file: file.into(),
        line: Some(text[..span.start.min(text.len())].matches('\n').count() + 1),
        message,
    };
    let ranged = |v: &Option<Spanned<i64>>, key: &str, ctx: &str, lo: i64, hi: i64, d: i64| match v
    {
        None => Ok(d),
        Some(v) if (lo..=hi).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(err(
            &v.span(),
            format!("{ctx}: {key} = {}: out of range {lo}..={hi}", v.get_ref()),
        )),
    };
    let pfsync = match pfsync {
        None => None,
        Some(raw) => {
            let span = raw.span();
            let r = raw.into_inner();
            let ctx = "pfsync";
            let syncdev = r
                .syncdev
                .as_ref()
                .ok_or_else(|| err(&span, "pfsync: syncdev is missing".into()))?;
            let dev = syncdev.get_ref();
            if dev.is_empty() || dev.len() > 15 || dev.contains(['/', ' ']) {
                return Err(err(
                    &syncdev.span(),
                    format!("pfsync: syncdev = {dev:?}: not a valid interface name"),
                ));
            }
            let addr = |v: &Spanned<String>, key: &str| {
                v.get_ref().parse::<Ipv4Addr>().map_err(|_| {
                    err(
                        &v.span(),
                        format!("pfsync: {key} = {:?}: not an IPv4 address", v.get_ref()),
                    )
                })
            };
            let syncpeer = match &r.syncpeer {
                None => None,
                Some(p) => {
                    let a = addr(p, "syncpeer")?;
                    if a.is_unspecified() || a.is_broadcast() {
                        return Err(err(
                            &p.span(),
                            format!("pfsync: syncpeer = \"{a}\": not a peer's address"),
                        ));
                    }
                    Some(a)
                }
            };
            let group = match &r.group {
                None => DEFAULT_GROUP,
                Some(g) => {
                    let a = addr(g, "group")?;
                    if !a.is_multicast() {
                        return Err(err(
                            &g.span(),
                            format!("pfsync: group = \"{a}\": not a multicast address"),
                        ));
                    }
                    a
                }
            };
            // pfsync runs unauthenticated; ours never does, so the key is required.
            let kf = r.key_file.as_ref().ok_or_else(|| {
                err(
                    &span,
                    "pfsync: key_file is missing (sync packets are always authenticated)".into(),
                )
            })?;
            let key_file = file.parent().unwrap_or(Path::new(".")).join(kf.get_ref());
            let key = read_key_file(&key_file).map_err(|m| {
                err(
                    &kf.span(),
                    format!("pfsync: key_file = {:?}: {m}", kf.get_ref()),
                )
            })?;
            let maxupd = ranged(&r.maxupd, "maxupd", ctx, 0, 255, 128)? as u8;
            let node_id = match &r.node_id {
                None => None,
                Some(_) => Some(ranged(&r.node_id, "node_id", ctx, 1, u32::MAX as i64, 1)? as u32),
            };
            let port = ranged(&r.port, "port", ctx, 1, 65535, i64::from(DEFAULT_PORT))? as u16;
            let conntrack = super::conntrack::validate(
                super::conntrack::RawConntrack {
                    on: &r.conntrack,
                    zones: &r.conntrack_zones,
                    protocols: &r.conntrack_protocols,
                    ignore: &r.conntrack_ignore,
                    ignore_own: &r.conntrack_ignore_own,
                },
                err,
            )?;
            Some(PfsyncConfig {
                syncdev: dev.clone(),
                syncpeer,
                group,
                key_file,
                key,
                maxupd,
                defer: r.defer.map(|d| *d.get_ref()).unwrap_or(false),
                node_id,
                port,
                conntrack,
            })
        }
    };
    let flows = match flows {
        None => FlowsConfig {
            events_per_ms: DEFAULT_EVENTS_PER_MS,
            limit: DEFAULT_FLOW_LIMIT,
            ..Default::default()
        },
        Some(raw) => {
            let span = raw.span();
            let r = raw.into_inner();
            let stateful = r.stateful.map(|s| *s.get_ref()).unwrap_or(false);
            let inside = r
                .inside
                .as_ref()
                .map(|v| v.get_ref().clone())
                .unwrap_or_default();
            if let Some(v) = &r.inside {
                for dev in v.get_ref() {
                    if !interfaces.iter().any(|i| &i.carpdev == dev) {
                        return Err(err(
                            &v.span(),
                            format!("flows: inside = {dev:?}: not the carpdev of any interface"),
                        ));
                    }
                }
            }
            if stateful && inside.is_empty() {
                return Err(err(
                    &span,
                    "flows: stateful = true needs inside = [\"<carpdev>\", ...] (where new flows may start)"
                        .into(),
                ));
            }
            let events_per_ms = ranged(
                &r.events_per_ms,
                "events_per_ms",
                "flows",
                0,
                1_000_000,
                i64::from(DEFAULT_EVENTS_PER_MS),
            )? as u32;
            let limit = ranged(
                &r.limit,
                "limit",
                "flows",
                1024,
                i64::from(MAX_FLOW_LIMIT),
                i64::from(DEFAULT_FLOW_LIMIT),
            )? as u32;
            FlowsConfig {
                stateful,
                inside,
                events_per_ms,
                limit,
            }
        }
    };
    Ok((pfsync, flows))
}

/// Reads the sync key, refusing a file other users can read (as `pass_file`): whoever has the key can
/// insert flows that bypass stateful mode.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let key = crate::config::read_secret_bytes(path)?;
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "the key file holds {} bytes, at least {MIN_KEY_LEN} are needed (HMAC-SHA256's own \
             strength); make one with `head -c 32 /dev/urandom > {}` on one node and copy it",
            key.len(),
            path.display()
        ));
    }
    Ok(key)
}

/// The shortest sync key file accepted: 32 bytes, the HMAC-SHA256 output size (RFC 2104 advises
/// keys no shorter than the hash output); a short passphrase would be open to an offline guess from
/// one captured packet.
pub const MIN_KEY_LEN: usize = 32;

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::os::unix::fs::PermissionsExt;

    const IFACE: &str = "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\npass = \"x\"\naddresses = [\"10.0.0.1/24\"]\n";

    fn dir_with_key(mode: u32) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "carp-sync-cfg-{}-{mode:o}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("sync.key");
        std::fs::write(&key, "cluster secret of at least 32 bytes\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn pfsync_and_flows_parse_with_defaults() {
        let dir = dir_with_key(0o600);
        let text = format!(
            "{IFACE}\n[pfsync]\nsyncdev = \"eth2\"\nsyncpeer = \"172.16.1.2\"\nkey_file = \"sync.key\"\n\n[flows]\nstateful = true\ninside = [\"eth0\"]\n"
        );
        let c = Config::parse(&dir.join("carp.toml"), &text).expect("valid");
        let p = c.pfsync.as_ref().expect("pfsync");
        assert_eq!(p.syncdev, "eth2");
        assert_eq!(p.syncpeer, Some("172.16.1.2".parse().unwrap()));
        assert_eq!(
            (p.maxupd, p.defer, p.port),
            (128, false, super::DEFAULT_PORT)
        );
        assert_eq!(p.key, b"cluster secret of at least 32 bytes\n");
        assert!(c.flows.stateful);
        assert_eq!(c.flows.limit, super::DEFAULT_FLOW_LIMIT);
        assert!(!c.to_toml().contains("cluster secret"), "{}", c.to_toml());
        let sized = format!("{text}limit = 1250000\n");
        let c = Config::parse(&dir.join("carp.toml"), &sized).expect("valid");
        assert_eq!(c.flows.limit, 1_250_000);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn pfsync_errors_name_the_key() {
        let dir = dir_with_key(0o644);
        let short = dir.join("short.key");
        std::fs::write(&short, "twenty bytes of key\n").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cases = [
            (
                "[pfsync]\nkey_file = \"sync.key\"\n",
                "pfsync: syncdev is missing",
            ),
            (
                "[pfsync]\nsyncdev = \"eth2\"\n",
                "pfsync: key_file is missing",
            ),
            (
                "[pfsync]\nsyncdev = \"eth2\"\nkey_file = \"sync.key\"\n",
                "readable by every user",
            ),
            (
                "[pfsync]\nsyncdev = \"eth2\"\nsyncpeer = \"x\"\nkey_file = \"k\"\n",
                ":10: pfsync: syncpeer = \"x\": not an IPv4 address",
            ),
            ("[flows]\nstateful = true\n", "needs inside"),
            (
                "[pfsync]\nsyncdev = \"eth2\"\nkey_file = \"short.key\"\n",
                "the key file holds 20 bytes, at least 32 are needed",
            ),
            (
                "[flows]\ninside = [\"eth9\"]\n",
                ":9: flows: inside = \"eth9\": not the carpdev",
            ),
            (
                "[flows]\nlimit = 100\n",
                ":9: flows: limit = 100: out of range 1024..=16000000",
            ),
        ];
        for (tail, want) in cases {
            let text = format!("{IFACE}\n{tail}");
            let e = Config::parse(&dir.join("carp.toml"), &text)
                .expect_err(tail)
                .to_string();
            assert!(e.contains(want), "{tail:?}: {e}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
