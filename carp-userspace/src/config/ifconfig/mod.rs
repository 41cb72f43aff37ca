//! OpenBSD carp(4)/ifconfig(8) syntax for carp interfaces, as one pure parser.
//!
//! This module owns the text form: an `/etc/hostname.carpN` line (the config's `ifconfig = '...'`,
//! see [`parse_ifconfig_line`]) and the argument list of `carpctl ifconfig ...`
//! ([`parse_ifconfig_args`]), including `-g GROUP [-]carpdemote [N]`. It does no I/O and never
//! panics on input; every rejection is an [`IfconfigError`] naming the offending token and the fix.
//! [`IfconfigSpec`]'s `Display` renders the canonical OpenBSD line that parses back to the same spec.
//!
//! Semantics follow OpenBSD's `sbin/ifconfig/ifconfig.c`, with two deliberate differences: a key
//! given twice (or `vhid`/`advskew` next to `carpnodes`) is an error instead of "last one wins",
//! because in a failover config an ambiguity is more likely a mistake than an intent; and options
//! that do nothing on a carp interface (`media`, `dhcp`, ...) are refused rather than ignored.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

mod display;
mod lex;
mod parse;
#[cfg(test)]
mod tests;
mod value;

use lex::{Tok, err, tokenize};
pub use parse::VALUE_KEYWORDS;
use parse::parse_tokens;
use value::{carpnodes_value, check_group, check_ifname, number};

/// Longest passphrase: the key is 20 bytes including a NUL (BSD truncates longer ones, ucarp refuses).
pub const MAX_PASS_LEN: usize = 19;
/// Most carpnodes one interface may have (OpenBSD's CARP_MAXNODES), as the dataplane sizes it.
pub use carp_common::maps::MAX_CARPNODES;
/// Longest description: OpenBSD's IFDESCRSIZE is 64 bytes including the NUL.
pub const MAX_DESCRIPTION_LEN: usize = 63;
/// Longest interface or group name: IFNAMSIZ is 16 bytes including the NUL, on Linux and OpenBSD.
pub const MAX_NAME_LEN: usize = 15;
/// Largest single `-g GROUP [-]carpdemote N` step (OpenBSD ifconfig's strtonum bound).
pub const MAX_DEMOTE_STEP: i16 = 128;
/// The balancing modes, in OpenBSD's CARP_BAL_MODES order (`arp` is the historic pre-2016 mode).
pub const BALANCING_MODES: [&str; 5] = ["none", "ip", "ip-stealth", "ip-unicast", "arp"];

/// Prefix length given to an IPv4 address written without a mask: the VIP alone, never a subnet.
const DEFAULT_V4_PREFIX: u8 = 32;
/// Prefix length given to an IPv6 address written without one (OpenBSD ifconfig's default).
const DEFAULT_V6_PREFIX: u8 = 64;

/// The carp settings one hostname.carpN line (or one `carpctl ifconfig IF ...`) asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IfconfigSpec {
    /// Virtual addresses as "addr/len" (IPv4 host bits kept), in the order given.
    pub addresses: Vec<String>,
    /// `vhid N`, 1..=255.
    pub vhid: Option<u8>,
    /// `advbase N` seconds, 0..=254.
    pub advbase: Option<u8>,
    /// `advskew N` 1/256 s, 0..=254.
    pub advskew: Option<u8>,
    /// `pass X`, at most 19 bytes (a longer one cut to its first 19, as OpenBSD's ifconfig does).
    pub pass: Option<String>,
    /// The length of `pass` as written when it was longer than 19 bytes and cut (the caller warns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_cut_from: Option<usize>,
    /// `carpdev IF`: the parent interface.
    pub carpdev: Option<String>,
    /// `carppeer ADDR`: unicast adverts to this peer instead of the multicast group.
    pub carppeer: Option<IpAddr>,
    /// `carpnodes vhid:advskew,...`, sorted by ascending vhid (the first one is the leader).
    pub carpnodes: Option<Vec<(u8, u8)>>,
    /// `balancing MODE`, lowercase, one of [`BALANCING_MODES`].
    pub balancing: Option<String>,
    /// `state master|backup`, lowercase.
    pub state: Option<String>,
    /// `description X` (or `descr X`).
    pub description: Option<String>,
    /// `group X`, each given once, in order.
    pub groups: Vec<String>,
    /// `up` (true) or `down` (false).
    pub up: Option<bool>,
    /// `lladdr aa:bb:cc:dd:ee:ff`.
    pub lladdr: Option<[u8; 6]>,
    /// `mtu N`, 68..=65535.
    pub mtu: Option<u32>,
    /// `carpdemote N`: this interface's own demote counter (a carp-xdp extension; OpenBSD only has `-g`).
    pub carpdemote: Option<u8>,
    /// FreeBSD's `carpver 2|3`: 2 is CARP, 3 is VRRPv3.
    pub carpver: Option<u8>,
    /// FreeBSD's `vrrpprio N`, 1..=255 (the VRRP priority).
    pub vrrpprio: Option<u8>,
    /// FreeBSD's `vrrpinterval N`, centiseconds 1..=4095.
    pub vrrpinterval: Option<u16>,
}

/// What a `carpctl ifconfig ...` argument list asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "one command per carpctl run; a Box would only make matching on `spec` clumsier"
)]
pub enum IfconfigCommand {
    /// `IF options...`: change settings of one carp interface.
    Interface {
        /// The interface name, e.g. "carp0".
        name: String,
        /// The settings to change.
        spec: IfconfigSpec,
    },
    /// `-g GROUP carpdemote [N]` or `-g GROUP -carpdemote [N]`.
    GroupDemote {
        /// The interface group, e.g. "carp".
        group: String,
        /// How the group's demote counter moves.
        change: DemoteChange,
    },
}

/// A change of a group's demote counter, as OpenBSD's ifconfig sends it (SIOCSIFGATTR).
///
/// OpenBSD has no absolute form: `carpdemote [N]` adds N (default 1) and `-carpdemote [N]` subtracts
/// N (default 1), N in 0..=128; the kernel refuses a result outside 0..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DemoteChange {
    /// Add this (possibly negative) amount, -128..=128, to the group's counter.
    Adjust(i16),
}

impl DemoteChange {
    /// The signed amount added to the group's demote counter.
    pub fn delta(self) -> i16 {
        match self {
            DemoteChange::Adjust(d) => d,
        }
    }
}

/// A rejected line or argument list: which token, and a message that names it and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfconfigError {
    /// Zero-based index of the offending token (of the line's tokens, or of the argument list).
    pub token_index: usize,
    /// The offending token as written (the keyword instead, for secrets such as `pass`).
    pub token: String,
    /// What is wrong and how to fix it; this is also the `Display` form.
    pub message: String,
}

impl fmt::Display for IfconfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IfconfigError {}

/// Parses one hostname.carpN line (or a whole file: newlines separate nothing but tokens).
///
/// Handles single and double quotes, backslash escapes and continuations, and `#` comments, as
/// /etc/netstart's shell would. An empty line gives an empty spec.
pub fn parse_ifconfig_line(line: &str) -> Result<IfconfigSpec, IfconfigError> {
    let tokens = tokenize(line)?;
    parse_tokens(&tokens)
}

/// Parses `carpctl ifconfig` arguments (already split by the shell): `IF options...` or
/// `-g GROUP [-]carpdemote [N]`.
pub fn parse_ifconfig_args(args: &[String]) -> Result<IfconfigCommand, IfconfigError> {
    let Some(first) = args.first() else {
        return Err(err(
            0,
            "",
            "missing interface name or -g GROUP (e.g. carp0 advskew 100, or -g carp carpdemote 50)"
                .to_string(),
        ));
    };
    if first == "-g" {
        return parse_group_demote(args);
    }
    if first.starts_with('-') {
        return Err(err(
            0,
            first,
            format!(
                "{first}: unknown option (expected an interface name such as carp0, or -g GROUP)"
            ),
        ));
    }
    check_ifname(first).map_err(|why| err(0, first, format!("interface {first}: {why}")))?;
    let tokens: Vec<Tok> = args
        .iter()
        .enumerate()
        .skip(1)
        .map(|(index, text)| Tok {
            text: text.clone(),
            index,
        })
        .collect();
    let spec = parse_tokens(&tokens)?;
    Ok(IfconfigCommand::Interface {
        name: first.clone(),
        spec,
    })
}

/// Parses a carpnodes list such as "1:0,2:100" (also the config's `carpnodes = "..."` key).
///
/// The result is sorted by vhid, as the OpenBSD kernel stores it; the error's token is the list.
pub fn parse_carpnodes(list: &str) -> Result<Vec<(u8, u8)>, IfconfigError> {
    carpnodes_value(list).map_err(|message| err(0, list, message))
}

/// `-g GROUP carpdemote [N]` / `-g GROUP -carpdemote [N]`, as OpenBSD's setgroupattribs reads them.
fn parse_group_demote(args: &[String]) -> Result<IfconfigCommand, IfconfigError> {
    let Some(group) = args.get(1) else {
        return Err(err(
            0,
            "-g",
            "-g: missing group name (e.g. -g carp carpdemote 50)".to_string(),
        ));
    };
    check_group(group).map_err(|why| err(1, group, format!("group {group}: {why}")))?;
    let Some(attr) = args.get(2) else {
        return Err(err(
            1,
            group,
            format!(
                "-g {group}: missing carpdemote or -carpdemote (e.g. -g {group} carpdemote 50); \
                 carpctl groups shows the counters"
            ),
        ));
    };
    let sign: i16 = match attr.as_str() {
        "carpdemote" => 1,
        "-carpdemote" => -1,
        _ => {
            return Err(err(
                2,
                attr,
                format!(
                    "{attr}: unknown group attribute (expected carpdemote [N] or -carpdemote [N])"
                ),
            ));
        }
    };
    let amount = match args.get(3) {
        None => 1,
        Some(text) => {
            let tok = Tok {
                text: text.clone(),
                index: 3,
            };
            let n = number(
                &tok,
                attr,
                0,
                128,
                " (OpenBSD's limit per change; repeat the command to go further)",
            )?;
            i16::try_from(n).unwrap_or(MAX_DEMOTE_STEP)
        }
    };
    if let Some(extra) = args.get(4) {
        return Err(err(
            4,
            extra,
            format!("{extra}: unexpected after {attr} {amount} (one change per command)"),
        ));
    }
    Ok(IfconfigCommand::GroupDemote {
        group: group.clone(),
        change: DemoteChange::Adjust(sign * amount),
    })
}
