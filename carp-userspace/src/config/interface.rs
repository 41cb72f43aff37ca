//! One carp interface's validated settings (`InterfaceConfig`) and the value types of its keys:
//! addresses, the initial state, the balancing mode, carpnodes.

use super::vrrp;
use std::{fmt, net::IpAddr, path::PathBuf};

use serde::Serialize;

use crate::auth::Key;

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

pub(super) fn carpnodes_str<S: serde::Serializer>(
    nodes: &[CarpNode],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_carpnodes(nodes))
}

pub(super) fn single_node(nodes: &[CarpNode]) -> bool {
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

pub(super) fn redact<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
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
