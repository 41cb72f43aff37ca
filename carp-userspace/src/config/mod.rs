//! carpd's TOML configuration (design §2): the `[carp]` sysctls and one `[[interface]]` table per carp
//! interface, either spelled out key by key or as an OpenBSD `/etc/hostname.carpN` line (`ifconfig = '...'`).
//!
//! This module owns reading, validating and normalising the file. Every error names the file, the line
//! and the key (`/etc/carp/carp.toml:12: interface carp0: advskew = 255: out of range 0..=254`), so
//! `carpd --check` can be used as a pre-flight in a deployment and a half-started daemon never happens.
//! Line numbers come from `toml::Spanned` byte ranges mapped back onto the source text.

use std::{
    collections::BTreeSet,
    fmt,
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::auth::Key;

pub mod conntrack;
pub mod ifconfig;
pub mod keepalived;
pub mod sync;
pub mod track;
pub mod vrrp;

/// Default config file path.
pub const DEFAULT_CONFIG: &str = "/etc/carp/carp.toml";

/// A configuration error located in a file: `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the interface and key.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The `[carp]` table: OpenBSD's `net.inet.carp.*` sysctls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarpSysctls {
    /// `net.inet.carp.preempt`.
    pub preempt: bool,
    /// `net.inet.carp.log` (0..=7).
    pub log: u8,
    /// `net.inet.carp.allow`: accept adverts at all.
    pub allow: bool,
}

impl Default for CarpSysctls {
    fn default() -> Self {
        CarpSysctls {
            preempt: false,
            log: 2,
            allow: true,
        }
    }
}

/// An address with its prefix length, e.g. `10.0.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfAddr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for IfAddr {
    type Err = String;
    /// Parses `addr[/prefix]`; without a prefix a host route (/32 or /128) is meant.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: prefix length must be 0..={max}")),
            },
        };
        Ok(IfAddr { addr, prefix })
    }
}

impl Serialize for IfAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The initial state an interface asks for (`state master|backup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialState {
    /// Take over at start (a forced master; the election goes on normally afterwards).
    Master,
    /// Start as BACKUP (the default).
    Backup,
}

/// A balancing mode (spec §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balancing {
    /// Plain failover.
    None,
    /// Multicast interface MAC 01:00:5e:00:01:<leader>, L3 hash filter, stealth source MAC.
    Ip,
    /// Unicast interface MAC 00:00:5e:00:01:<leader> never used as a source, L3 hash filter.
    IpStealth,
    /// Unicast interface MAC used as a source (hubs, mirror ports), L3 hash filter.
    IpUnicast,
    /// Linux-only: each node keeps its own MAC and answers ARP for its share of requesters.
    Arp,
}

impl Balancing {
    /// The mode as written in the config and by ifconfig.
    pub fn as_str(self) -> &'static str {
        match self {
            Balancing::None => "none",
            Balancing::Ip => "ip",
            Balancing::IpStealth => "ip-stealth",
            Balancing::IpUnicast => "ip-unicast",
            Balancing::Arp => "arp",
        }
    }

    /// The dataplane's code for the mode.
    pub fn mode(self) -> carp_common::maps::BalanceMode {
        use carp_common::maps::BalanceMode as M;
        match self {
            Balancing::None => M::None,
            Balancing::Ip => M::Ip,
            Balancing::IpStealth => M::IpStealth,
            Balancing::IpUnicast => M::IpUnicast,
            Balancing::Arp => M::Arp,
        }
    }

    /// True for `ip`, `ip-stealth` and `ip-unicast`.
    pub fn is_ip(self) -> bool {
        matches!(
            self,
            Balancing::Ip | Balancing::IpStealth | Balancing::IpUnicast
        )
    }

    /// Parses a mode name.
    pub fn parse(s: &str) -> Option<Balancing> {
        Some(match s {
            "none" => Balancing::None,
            "ip" => Balancing::Ip,
            "ip-stealth" => Balancing::IpStealth,
            "ip-unicast" => Balancing::IpUnicast,
            "arp" => Balancing::Arp,
            _ => return None,
        })
    }
}

/// One carpnode of a carp interface: its own vhid, advskew and election (spec §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarpNode {
    /// The node's vhid.
    pub vhid: u8,
    /// The node's advskew.
    pub advskew: u8,
}

/// One carp interface, validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceConfig {
    /// The carp interface, e.g. `carp0` (also the name of its macvlan).
    pub name: String,
    /// The parent interface adverts go out on, e.g. `eth0`.
    pub carpdev: String,
    /// The virtual host id, 1..=255.
    pub vhid: u8,
    /// The passphrase (HMAC key material; at most 19 bytes). Printed redacted.
    #[serde(serialize_with = "redact")]
    pub pass: String,
    /// Base advert interval in seconds.
    pub advbase: u8,
    /// Skew in 1/256 s.
    pub advskew: u8,
    /// The virtual addresses.
    pub addresses: Vec<IfAddr>,
    /// Interface groups besides "carp".
    pub groups: Vec<String>,
    /// Optional initial state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<InitialState>,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Unicast peer (carppeer) instead of the multicast group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<IpAddr>,
    /// Balancing mode (`none` when there is one carpnode; more than one node with `none` means `ip`).
    pub balancing: Balancing,
    /// The carpnodes in ascending vhid order; the first is the leader, whose vhid and advskew are
    /// `vhid` and `advskew` above. One node for a plain carp interface.
    #[serde(serialize_with = "carpnodes_str", skip_serializing_if = "single_node")]
    pub carpnodes: Vec<CarpNode>,
    /// Hook run on becoming MASTER: `<script> <carpif> MASTER <vip...>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_script: Option<PathBuf>,
    /// Hook run on leaving MASTER: `<script> <carpif> <state> <vip...>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_script: Option<PathBuf>,
    /// VRRP settings when `protocol` is vrrp3 or vrrp2 (`vhid` is then the VRID); `None` for CARP.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub vrrp: Option<vrrp::VrrpConfig>,
}

fn carpnodes_str<S: serde::Serializer>(nodes: &[CarpNode], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_carpnodes(nodes))
}

fn single_node(nodes: &[CarpNode]) -> bool {
    nodes.len() <= 1
}

/// `vhid:advskew,...` in OpenBSD's syntax.
pub fn format_carpnodes(nodes: &[CarpNode]) -> String {
    nodes
        .iter()
        .map(|n| format!("{}:{}", n.vhid, n.advskew))
        .collect::<Vec<_>>()
        .join(",")
}

fn redact<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

impl InterfaceConfig {
    /// The HMAC key of this interface (validated when the config was read).
    pub fn key(&self) -> Key {
        Key::from_passphrase(&self.pass).expect("validated at load")
    }

    /// The virtual addresses without prefixes.
    pub fn vips(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|a| a.addr).collect()
    }

    /// True when the interface load-balances (several carpnodes, or a balancing mode).
    pub fn is_balanced(&self) -> bool {
        self.balancing != Balancing::None
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Where it was read from.
    #[serde(skip)]
    pub file: PathBuf,
    /// The sysctls.
    pub carp: CarpSysctls,
    /// The carp interfaces, in file order.
    #[serde(rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    /// Health trackers (`[[track]]`, see `crate::config::track`, run by `crate::daemon::track`).
    #[serde(rename = "track", skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<track::TrackConfig>,
    /// Flow replication (`[pfsync]`, see `crate::config::sync`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pfsync: Option<sync::PfsyncConfig>,
    /// The flow table (`[flows]`).
    pub flows: sync::FlowsConfig,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.into(),
            line: None,
            message: format!("cannot read the config: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates config text; `path` names the file in errors and anchors `pass_file`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cx = Cx { file: path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: path.into(),
            line: e.span().map(|s| cx.line(&s)),
            message: e.message().trim().to_string(),
        })?;
        let carp = match raw.carp {
            None => CarpSysctls::default(),
            Some(c) => CarpSysctls {
                preempt: c.preempt.map(|v| *v.get_ref()).unwrap_or(false),
                log: match c.log {
                    None => 2,
                    Some(v) => cx.ranged(&v, 0, 7, "carp", "log")?,
                },
                allow: c.allow.map(|v| *v.get_ref()).unwrap_or(true),
            },
        };
        let mut interfaces = Vec::new();
        let mut names = BTreeSet::new();
        let mut vhids = BTreeSet::new();
        for raw_if in raw.interface.unwrap_or_default() {
            let span = raw_if.span();
            let iface = cx.interface(raw_if.into_inner())?;
            if !names.insert(iface.name.clone()) {
                return Err(cx.err(
                    &span,
                    format!(
                        "interface {}: name = {:?}: defined twice",
                        iface.name, iface.name
                    ),
                ));
            }
            for node in &iface.carpnodes {
                if !vhids.insert((iface.carpdev.clone(), node.vhid)) {
                    return Err(cx.err(
                        &span,
                        format!(
                            "interface {}: vhid = {}: already used on carpdev {}",
                            iface.name, node.vhid, iface.carpdev
                        ),
                    ));
                }
            }
            interfaces.push(iface);
        }
        let tracks = track::validate(path, text, raw.track.unwrap_or_default(), &interfaces)?;
        let (pfsync, flows) = sync::validate(path, text, raw.pfsync, raw.flows, &interfaces)?;
        Ok(Config {
            file: path.into(),
            carp,
            interfaces,
            tracks,
            pfsync,
            flows,
        })
    }

    /// The normalised config as TOML (what `carpd --check` prints); passphrases are redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the config: {e}\n"))
    }

    /// The distinct carpdevs, in first-use order.
    pub fn carpdevs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for i in &self.interfaces {
            if !out.contains(&i.carpdev) {
                out.push(i.carpdev.clone());
            }
        }
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    carp: Option<RawCarp>,
    interface: Option<Vec<Spanned<RawInterface>>>,
    track: Option<Vec<Spanned<track::RawTrack>>>,
    pfsync: Option<Spanned<sync::RawPfsync>>,
    flows: Option<Spanned<sync::RawFlows>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCarp {
    preempt: Option<Spanned<bool>>,
    log: Option<Spanned<i64>>,
    allow: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Option<Spanned<String>>,
    carpdev: Option<Spanned<String>>,
    vhid: Option<Spanned<i64>>,
    pass: Option<Spanned<String>>,
    pass_file: Option<Spanned<String>>,
    advbase: Option<Spanned<i64>>,
    advskew: Option<Spanned<i64>>,
    addresses: Option<Spanned<Vec<String>>>,
    groups: Option<Spanned<Vec<String>>>,
    state: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    peer: Option<Spanned<String>>,
    balancing: Option<Spanned<String>>,
    carpnodes: Option<Spanned<String>>,
    up_script: Option<Spanned<String>>,
    down_script: Option<Spanned<String>>,
    ifconfig: Option<Spanned<String>>,
    // VRRP keys, validated in `vrrp.rs`.
    protocol: Option<Spanned<String>>,
    vrid: Option<Spanned<i64>>,
    priority: Option<Spanned<i64>>,
    interval: Option<Spanned<i64>>,
    preempt: Option<Spanned<bool>>,
    accept_mode: Option<Spanned<bool>>,
    unicast_peers: Option<Spanned<Vec<String>>>,
    checksum: Option<Spanned<String>>,
}

struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn err(&self, span: &Range<usize>, message: String) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            line: Some(self.line(span)),
            message,
        }
    }

    fn ranged(
        &self,
        v: &Spanned<i64>,
        lo: i64,
        hi: i64,
        ctx: &str,
        key: &str,
    ) -> Result<u8, ConfigError> {
        let n = *v.get_ref();
        if n < lo || n > hi {
            return Err(self.err(
                &v.span(),
                format!("{ctx}: {key} = {n}: out of range {lo}..={hi}"),
            ));
        }
        Ok(n as u8)
    }

    fn interface(&self, mut raw: RawInterface) -> Result<InterfaceConfig, ConfigError> {
        let name = match &raw.name {
            Some(n) => n.clone(),
            None => {
                let span = [raw.carpdev.as_ref().map(|s| s.span())]
                    .into_iter()
                    .flatten()
                    .next()
                    .unwrap_or(0..0);
                return Err(self.err(&span, "interface: name is missing".into()));
            }
        };
        let ctx = format!("interface {}", name.get_ref());
        let n = name.get_ref();
        if n.is_empty() || n.len() > 15 || n.contains(['/', ' ', '\t']) {
            return Err(self.err(
                &name.span(),
                format!("{ctx}: name = {n:?}: not a valid interface name (1..15 bytes, no '/' or spaces)"),
            ));
        }
        if let Some(line) = raw.ifconfig.take() {
            self.merge_ifconfig(&ctx, &line, &mut raw)?;
        }
        let name_span = name.span();
        let vrrp = self.take_vrrp(&ctx, &name_span, &mut raw)?;
        let missing = |key: &str| self.err(&name_span, format!("{ctx}: {key} is missing"));

        let carpdev = raw.carpdev.as_ref().ok_or_else(|| missing("carpdev"))?;
        let cd = carpdev.get_ref();
        if cd.is_empty() || cd.len() > 15 || cd.contains(['/', ' ']) || cd == n {
            return Err(self.err(
                &carpdev.span(),
                format!("{ctx}: carpdev = {cd:?}: not a valid parent interface name"),
            ));
        }

        // carpnodes: the leader (lowest vhid) gives the interface's vhid and advskew.
        let mut nodes: Vec<(u8, u8)> = Vec::new();
        if let Some(cn) = &raw.carpnodes {
            nodes = parse_carpnodes(cn.get_ref()).map_err(|m| {
                self.err(
                    &cn.span(),
                    format!("{ctx}: carpnodes = {:?}: {m}", cn.get_ref()),
                )
            })?;
            // The normalised output repeats the leader's vhid and advskew; anything else is a mistake.
            if nodes.len() > 1 {
                let (lv, ls) = nodes[0];
                for (key, v, want) in [("vhid", &raw.vhid, lv), ("advskew", &raw.advskew, ls)] {
                    if let Some(v) = v
                        && *v.get_ref() != i64::from(want)
                    {
                        return Err(self.err(
                            &v.span(),
                            format!(
                                "{ctx}: {key} = {}: give each node's vhid and advskew inside carpnodes only (e.g. carpnodes = \"1:0,2:100\")",
                                v.get_ref()
                            ),
                        ));
                    }
                }
            }
        }
        let node = nodes.first().copied();

        let vhid = match (&raw.vhid, node) {
            (Some(v), _) => self.ranged(v, 1, 255, &ctx, "vhid")?,
            (None, Some((v, _))) => v,
            (None, None) => return Err(missing("vhid")),
        };
        if let (Some(v), Some((nv, _))) = (&raw.vhid, node)
            && nv != vhid
        {
            return Err(self.err(
                &v.span(),
                format!("{ctx}: vhid = {vhid}: differs from the carpnodes vhid {nv}"),
            ));
        }

        let pass = match (&raw.pass, &raw.pass_file) {
            (Some(_), Some(pf)) => {
                return Err(self.err(
                    &pf.span(),
                    format!("{ctx}: pass_file: give either pass or pass_file, not both"),
                ));
            }
            (Some(p), None) => {
                Key::from_passphrase(p.get_ref())
                    .map_err(|e| self.err(&p.span(), format!("{ctx}: pass: {e}")))?;
                p.get_ref().clone()
            }
            (None, Some(pf)) => {
                let path = self.relative(pf.get_ref());
                let text = read_secret(&path).map_err(|e| {
                    self.err(
                        &pf.span(),
                        format!("{ctx}: pass_file = {:?}: {e}", pf.get_ref()),
                    )
                })?;
                let p = text.trim_end_matches(['\n', '\r']).to_string();
                Key::from_passphrase(&p).map_err(|e| {
                    self.err(
                        &pf.span(),
                        format!("{ctx}: pass_file = {:?}: {e}", pf.get_ref()),
                    )
                })?;
                p
            }
            // No passphrase: the key of 20 zero bytes, as BSD does with an empty pass.
            (None, None) => String::new(),
        };

        let advbase = match &raw.advbase {
            Some(v) => self.ranged(v, 0, 254, &ctx, "advbase")?,
            None => 1,
        };
        let advskew = match (&raw.advskew, node) {
            (Some(v), _) => self.ranged(v, 0, 254, &ctx, "advskew")?,
            (None, Some((_, s))) => s,
            (None, None) => 0,
        };

        let mut addresses = Vec::new();
        if let Some(addrs) = &raw.addresses {
            for a in addrs.get_ref() {
                let parsed: IfAddr = a.parse().map_err(|m: String| {
                    self.err(&addrs.span(), format!("{ctx}: addresses: {m}"))
                })?;
                if addresses.iter().any(|x: &IfAddr| x.addr == parsed.addr) {
                    return Err(self.err(
                        &addrs.span(),
                        format!("{ctx}: addresses: {} is listed twice", parsed.addr),
                    ));
                }
                addresses.push(parsed);
            }
        }
        if addresses.is_empty() {
            let span = raw
                .addresses
                .as_ref()
                .map(|a| a.span())
                .unwrap_or(name_span.clone());
            return Err(self.err(
                &span,
                format!("{ctx}: addresses: at least one virtual address is needed"),
            ));
        }

        let groups = match &raw.groups {
            None => Vec::new(),
            Some(g) => {
                let mut out: Vec<String> = Vec::new();
                for grp in g.get_ref() {
                    if grp.is_empty()
                        || grp.len() > 15
                        || grp.ends_with(|c: char| c.is_ascii_digit())
                    {
                        return Err(self.err(
                            &g.span(),
                            format!("{ctx}: groups: {grp:?}: a group name is 1..15 bytes and must not end in a digit"),
                        ));
                    }
                    if grp != crate::engine::DEFAULT_GROUP && !out.contains(grp) {
                        out.push(grp.clone());
                    }
                }
                out
            }
        };

        let state = match &raw.state {
            None => None,
            Some(s) => match s.get_ref().to_ascii_lowercase().as_str() {
                "master" => Some(InitialState::Master),
                "backup" => Some(InitialState::Backup),
                other => {
                    return Err(self.err(
                        &s.span(),
                        format!("{ctx}: state = {other:?}: use \"master\" or \"backup\""),
                    ));
                }
            },
        };

        let peer = match &raw.peer {
            None => None,
            Some(p) => {
                let ip: IpAddr = p.get_ref().parse().map_err(|_| {
                    self.err(
                        &p.span(),
                        format!("{ctx}: peer = {:?}: not an IP address", p.get_ref()),
                    )
                })?;
                if !ip.is_ipv4() || ip.is_multicast() {
                    return Err(self.err(
                        &p.span(),
                        format!("{ctx}: peer = {ip}: carppeer must be a unicast IPv4 address"),
                    ));
                }
                Some(ip)
            }
        };

        let mut balancing = match &raw.balancing {
            None => Balancing::None,
            Some(b) => Balancing::parse(b.get_ref()).ok_or_else(|| {
                self.err(
                    &b.span(),
                    format!(
                        "{ctx}: balancing = {:?}: use none, ip, ip-stealth, ip-unicast or arp",
                        b.get_ref()
                    ),
                )
            })?,
        };
        // OpenBSD: more than one carpnode with balancing none silently means ip.
        if nodes.len() > 1 && balancing == Balancing::None {
            balancing = Balancing::Ip;
        }
        if balancing != Balancing::None && peer.is_some() {
            let span = raw
                .peer
                .as_ref()
                .map(|p| p.span())
                .unwrap_or(name_span.clone());
            return Err(self.err(
                &span,
                format!(
                    "{ctx}: peer: a unicast carppeer cannot be combined with balancing {}",
                    balancing.as_str()
                ),
            ));
        }
        if balancing == Balancing::Arp && !addresses.iter().any(|a| a.addr.is_ipv4()) {
            let span = raw
                .balancing
                .as_ref()
                .map(|p| p.span())
                .unwrap_or(name_span.clone());
            return Err(self.err(
                &span,
                format!(
                    "{ctx}: balancing = \"arp\": needs an IPv4 address (ARP balances IPv4 only)"
                ),
            ));
        }
        let carpnodes = if nodes.is_empty() {
            vec![CarpNode { vhid, advskew }]
        } else {
            nodes
                .iter()
                .map(|&(vhid, advskew)| CarpNode { vhid, advskew })
                .collect()
        };

        let script =
            |v: &Option<Spanned<String>>, key: &str| -> Result<Option<PathBuf>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(s) if Path::new(s.get_ref()).is_absolute() => Ok(Some(s.get_ref().into())),
                    Some(s) => Err(self.err(
                        &s.span(),
                        format!("{ctx}: {key} = {:?}: must be an absolute path", s.get_ref()),
                    )),
                }
            };

        Ok(InterfaceConfig {
            name: n.clone(),
            carpdev: cd.clone(),
            vhid,
            pass,
            advbase,
            advskew,
            addresses,
            groups,
            state,
            description: raw.description.map(|d| d.into_inner()),
            peer,
            balancing,
            carpnodes,
            up_script: script(&raw.up_script, "up_script")?,
            down_script: script(&raw.down_script, "down_script")?,
            vrrp,
        })
    }

    fn relative(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.into();
        }
        self.file.parent().unwrap_or(Path::new(".")).join(p)
    }

    /// Fills the interface's keys from an OpenBSD ifconfig line; a key given both ways is an error.
    fn merge_ifconfig(
        &self,
        ctx: &str,
        line: &Spanned<String>,
        raw: &mut RawInterface,
    ) -> Result<(), ConfigError> {
        let span = line.span();
        let spec = ifconfig::parse_ifconfig_line(line.get_ref())
            .map_err(|m| self.err(&span, format!("{ctx}: ifconfig: {m}")))?;
        macro_rules! set {
            ($field:ident, $key:literal, $value:expr) => {
                if let Some(v) = $value {
                    if raw.$field.is_some() {
                        return Err(self.err(
                            &span,
                            format!(
                                concat!(
                                    "{}: ifconfig: ",
                                    $key,
                                    " is also given as a key; give it once"
                                ),
                                ctx
                            ),
                        ));
                    }
                    raw.$field = Some(Spanned::new(span.clone(), v));
                }
            };
        }
        set!(vhid, "vhid", spec.vhid.map(i64::from));
        set!(advbase, "advbase", spec.advbase.map(i64::from));
        set!(advskew, "advskew", spec.advskew.map(i64::from));
        set!(pass, "pass", spec.pass);
        set!(carpdev, "carpdev", spec.carpdev);
        set!(peer, "carppeer", spec.carppeer.map(|p| p.to_string()));
        set!(balancing, "balancing", spec.balancing);
        set!(state, "state", spec.state);
        set!(description, "description", spec.description);
        set!(
            protocol,
            "carpver",
            spec.carpver.map(vrrp::carpver_protocol)
        );
        set!(priority, "vrrpprio", spec.vrrpprio.map(i64::from));
        set!(interval, "vrrpinterval", spec.vrrpinterval.map(i64::from));
        set!(
            carpnodes,
            "carpnodes",
            spec.carpnodes.map(|n| {
                n.iter()
                    .map(|(v, s)| format!("{v}:{s}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
        );
        if !spec.addresses.is_empty() {
            set!(addresses, "addresses", Some(spec.addresses));
        }
        if !spec.groups.is_empty() {
            set!(groups, "groups", Some(spec.groups));
        }
        if spec.lladdr.is_some() || spec.mtu.is_some() || spec.carpdemote.is_some() {
            return Err(self.err(
                &span,
                format!("{ctx}: ifconfig: lladdr, mtu and carpdemote are not supported in the config yet"),
            ));
        }
        if spec.up == Some(false) {
            return Err(self.err(
                &span,
                format!("{ctx}: ifconfig: \"down\" is not supported in a config (remove the interface instead)"),
            ));
        }
        Ok(())
    }
}

/// Reads a file holding a secret (a carp passphrase), refusing one that other users can read: whoever
/// knows the passphrase can take over every VIP of the vhid.
pub fn read_secret(path: &Path) -> Result<String, String> {
    String::from_utf8(read_secret_bytes(path)?).map_err(|_| "not UTF-8 text".to_string())
}

/// The bytes of a secret file (a carp passphrase, a sync key), refusing a file other users can read.
pub fn read_secret_bytes(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(format!(
            "readable by every user (mode {mode:04o}); make it private with `chmod 600 {}`",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Parses OpenBSD's `carpnodes vhid:advskew,...` (the ifconfig parser's rules; in a TOML string spaces
/// after the commas are allowed too); nodes come back sorted by vhid (the first is the leader).
pub fn parse_carpnodes(s: &str) -> Result<Vec<(u8, u8)>, String> {
    let compact: Vec<&str> = s.split(',').map(str::trim).collect();
    ifconfig::parse_carpnodes(&compact.join(",")).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/carp/carp.toml"), text).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
[carp]
preempt = true
log = 3

[[interface]]
name = "carp0"
carpdev = "eth0"
vhid = 1
pass = "secretpassword"
advskew = 100
addresses = ["10.0.0.1/24", "2001:db8::1/64"]
groups = ["outside"]
state = "BACKUP"
description = "OUTSIDE"
peer = "10.0.0.12"
up_script = "/etc/carp/up"
"#;

    #[test]
    fn full_interface_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert!(c.carp.preempt);
        assert_eq!(c.carp.log, 3);
        assert!(c.carp.allow);
        let i = &c.interfaces[0];
        assert_eq!((i.vhid, i.advbase, i.advskew), (1, 1, 100));
        assert_eq!(i.addresses[0].to_string(), "10.0.0.1/24");
        assert_eq!(i.addresses[1].to_string(), "2001:db8::1/64");
        assert_eq!(i.state, Some(InitialState::Backup));
        assert_eq!(i.groups, vec!["outside".to_string()]);
        assert_eq!(i.peer, Some("10.0.0.12".parse().unwrap()));
        assert_eq!(c.carpdevs(), vec!["eth0".to_string()]);
    }

    #[test]
    fn normalised_output_reparses_and_redacts() {
        let c = parse(GOOD).unwrap();
        let out = c.to_toml();
        assert!(out.contains("<redacted>"), "{out}");
        assert!(!out.contains("secretpassword"));
        assert!(out.contains("advbase = 1"), "{out}");
        let again = parse(&out.replace("<redacted>", "secretpassword")).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn out_of_range_names_file_line_interface_and_key() {
        let text = "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\naddresses = [\"10.0.0.1/24\"]\n\n\n\n\n\n\nadvskew = 255\n";
        assert_eq!(
            parse(text).unwrap_err(),
            "/etc/carp/carp.toml:12: interface carp0: advskew = 255: out of range 0..=254"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let base =
            "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\naddresses = [\"10.0.0.1/24\"]\n";
        let cases = [
            (
                "vhid = 0\n",
                ":5: interface carp0: vhid = 0: out of range 1..=255",
            ),
            (
                "vhid = 1\nadvbase = 255\n",
                ":6: interface carp0: advbase = 255",
            ),
            ("", ":2: interface carp0: vhid is missing"),
            (
                "vhid = 1\npass = \"01234567890123456789\"\n",
                ":6: interface carp0: pass:",
            ),
            (
                "vhid = 1\nbalancing = \"ipx\"\n",
                ":6: interface carp0: balancing = \"ipx\": use none",
            ),
            (
                "vhid = 2\ncarpnodes = \"1:0,2:100\"\n",
                ":5: interface carp0: vhid = 2: give each node's vhid and advskew inside carpnodes",
            ),
            (
                "carpnodes = \"1:0,2:100\"\nadvskew = 3\n",
                ":6: interface carp0: advskew = 3: give each node",
            ),
            (
                "carpnodes = \"1:0,2:100,1:4\"\n",
                ":5: interface carp0: carpnodes = ",
            ),
            (
                "carpnodes = \"1:0,2:100\"\npeer = \"10.0.0.2\"\n",
                ":6: interface carp0: peer: a unicast carppeer cannot be combined with balancing ip",
            ),
            ("vhid = 1\nstate = \"init\"\n", "state = \"init\""),
            ("vhid = 1\npeer = \"224.0.0.18\"\n", "unicast IPv4"),
            ("vhid = 1\nadvskw = 3\n", ":6: unknown field `advskw`"),
            ("vhid = 1\nup_script = \"up.sh\"\n", "absolute path"),
        ];
        for (extra, want) in cases {
            let err = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(want), "{extra:?}: {err}");
            assert!(err.starts_with("/etc/carp/carp.toml:"), "{err}");
        }
    }

    #[test]
    fn duplicates_are_rejected() {
        let one = "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\naddresses = [\"10.0.0.1/24\"]\n";
        let err = parse(&format!("{one}{}", one.replace("10.0.0.1", "10.0.0.2"))).unwrap_err();
        assert!(err.contains("defined twice"), "{err}");
        let other = one
            .replace("carp0", "carp1")
            .replace("10.0.0.1", "10.0.0.2");
        let err = parse(&format!("{one}{other}")).unwrap_err();
        assert!(
            err.contains(":6: interface carp1: vhid = 1: already used on carpdev eth0"),
            "{err}"
        );
    }

    #[test]
    fn single_carpnode_sets_vhid_and_skew() {
        let c = parse("[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\ncarpnodes = \"7:40\"\naddresses = [\"10.0.0.1\"]\n").unwrap();
        assert_eq!((c.interfaces[0].vhid, c.interfaces[0].advskew), (7, 40));
        assert_eq!(c.interfaces[0].addresses[0].prefix, 32);
    }

    #[test]
    fn carpnodes_are_sorted_and_none_means_ip() {
        let text = "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\ncarpnodes = \"2:100,1:0\"\naddresses = [\"10.0.0.1/24\"]\n";
        let c = parse(text).unwrap();
        let i = &c.interfaces[0];
        assert_eq!(i.balancing, Balancing::Ip);
        assert_eq!((i.vhid, i.advskew), (1, 0));
        assert_eq!(
            i.carpnodes,
            vec![
                CarpNode {
                    vhid: 1,
                    advskew: 0
                },
                CarpNode {
                    vhid: 2,
                    advskew: 100
                }
            ]
        );
        let out = c.to_toml();
        assert!(out.contains("carpnodes = \"1:0,2:100\""), "{out}");
        assert!(out.contains("balancing = \"ip\""), "{out}");
        assert_eq!(parse(&out.replace("<redacted>", "")).unwrap(), c);
        let stealth =
            parse(&text.replace("addresses", "balancing = \"ip-stealth\"\naddresses")).unwrap();
        assert_eq!(stealth.interfaces[0].balancing, Balancing::IpStealth);
        // A node's vhid clashes with another interface on the same carpdev.
        let other = "[[interface]]\nname = \"carp1\"\ncarpdev = \"eth0\"\nvhid = 2\naddresses = [\"10.0.1.1/24\"]\n";
        let err = parse(&format!("{text}{other}")).unwrap_err();
        assert!(
            err.contains(":6: interface carp1: vhid = 2: already used on carpdev eth0"),
            "{err}"
        );
        let err = parse(&format!("{other}{text}")).unwrap_err();
        assert!(
            err.contains(":6: interface carp0: vhid = 2: already used"),
            "{err}"
        );
    }

    #[test]
    fn ifconfig_line_with_carpnodes_and_balancing() {
        let text = "[[interface]]\nname = \"carp0\"\nifconfig = 'inet 10.0.0.1 255.255.255.0 carpnodes 1:0,2:100,3:50 balancing arp pass x carpdev eth0'\n";
        let c = parse(text).unwrap();
        let i = &c.interfaces[0];
        assert_eq!(i.balancing, Balancing::Arp);
        assert_eq!(i.carpnodes.len(), 3);
        assert_eq!((i.vhid, i.advskew, i.carpnodes[2].vhid), (1, 0, 3));
        let err = parse(&text.replace(
            "carpnodes 1:0,2:100,3:50",
            "carpnodes 1:0,2:100,3:50 advskew 4",
        ))
        .unwrap_err();
        assert!(
            err.starts_with("/etc/carp/carp.toml:3: interface carp0: ifconfig: "),
            "{err}"
        );
    }

    #[test]
    fn pass_file_is_read_relative_to_the_config() {
        let dir = std::env::temp_dir().join(format!("carp-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("carp0.pass"), "hunter2\n").unwrap();
        let private = |mode| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.join("carp0.pass"),
                std::fs::Permissions::from_mode(mode),
            )
            .unwrap();
        };
        let text = "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\npass_file = \"carp0.pass\"\naddresses = [\"10.0.0.1/24\"]\n";
        private(0o644);
        let err = Config::parse(&dir.join("carp.toml"), text).unwrap_err();
        assert!(
            err.to_string()
                .contains("readable by every user (mode 0644)")
                && err.to_string().contains("chmod 600"),
            "{err}"
        );
        assert_eq!(err.line, Some(5));
        private(0o600);
        let c = Config::parse(&dir.join("carp.toml"), text).unwrap();
        assert_eq!(c.interfaces[0].pass, "hunter2");
        let err =
            Config::parse(&dir.join("carp.toml"), &text.replace("carp0.pass", "nope")).unwrap_err();
        assert_eq!(err.line, Some(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn carpnodes_syntax() {
        assert_eq!(
            parse_carpnodes("2:100, 1:0").unwrap(),
            vec![(1, 0), (2, 100)]
        );
        assert!(parse_carpnodes("1:255").is_err());
        assert!(parse_carpnodes("0:1").is_err());
        assert!(parse_carpnodes("1").is_err());
        assert!(parse_carpnodes("1:0,1:5").is_err());
    }

    #[test]
    fn ifconfig_line_is_an_alternative() {
        let text = "[[interface]]\nname = \"carp1\"\nifconfig = 'inet 192.168.100.1 255.255.255.0 192.168.100.255 vhid 2 pass x carpdev eth1 advskew 50 state MASTER description \"INSIDE\"'\n";
        let c = parse(text).unwrap();
        let i = &c.interfaces[0];
        assert_eq!((i.vhid, i.advskew, i.carpdev.as_str()), (2, 50, "eth1"));
        assert_eq!(i.addresses[0].to_string(), "192.168.100.1/24");
        assert_eq!(i.state, Some(InitialState::Master));
        assert_eq!(i.description.as_deref(), Some("INSIDE"));
        let both = text.replace("ifconfig", "advskew = 3\nifconfig");
        let err = parse(&both).unwrap_err();
        assert!(
            err.contains(":4: interface carp1: ifconfig: advskew is also given"),
            "{err}"
        );
        let bad = parse(&text.replace("advskew 50", "advskew 999")).unwrap_err();
        assert!(
            bad.starts_with("/etc/carp/carp.toml:3: interface carp1: ifconfig: "),
            "{bad}"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse("[carp]\npreempt = maybe\n").unwrap_err();
        assert!(err.starts_with("/etc/carp/carp.toml:2: "), "{err}");
    }
}
