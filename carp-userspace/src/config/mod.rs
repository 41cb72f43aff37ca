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
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub mod conntrack;
mod file;
pub mod ifconfig;
mod interface;
pub mod keepalived;
pub mod service;
pub mod sync;
pub mod timing;
pub mod track;
pub mod vrrp;

#[cfg(test)]
mod tests;

use file::{Cx, RawInterface};
pub use interface::{Balancing, CarpNode, IfAddr, InitialState, InterfaceConfig, format_carpnodes};

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

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Where it was read from.
    #[serde(skip)]
    pub file: PathBuf,
    /// What was accepted but should be known (see [`Warning`]).
    #[serde(skip)]
    pub warnings: Vec<Warning>,
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
    /// The metrics endpoint (`[metrics]`, see `crate::config::service`).
    pub metrics: service::MetricsConfig,
    /// Who may use the control socket (`[control]`).
    pub control: service::ControlConfig,
    /// Advert timing (`[timing]`, see `crate::config::timing`).
    pub timing: timing::TimingConfig,
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
        let cx = Cx {
            file: path,
            text,
            warnings: Default::default(),
        };
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
        let metrics = service::metrics(path, text, raw.metrics)?;
        let control = service::control(path, text, raw.control)?;
        let timing = timing::validate(path, text, raw.timing)?;
        Ok(Config {
            file: path.into(),
            warnings: cx.warnings.take(),
            carp,
            interfaces,
            tracks,
            pfsync,
            flows,
            metrics,
            control,
            timing,
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
    metrics: Option<service::RawMetrics>,
    control: Option<service::RawControl>,
    timing: Option<timing::RawTiming>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCarp {
    preempt: Option<Spanned<bool>>,
    log: Option<Spanned<i64>>,
    allow: Option<Spanned<bool>>,
}

/// Reads a file holding a secret (a carp passphrase), refusing one that other users can read: whoever
/// knows the passphrase can take over every VIP of the vhid.
pub fn read_secret(path: &Path) -> Result<String, String> {
    String::from_utf8(read_secret_bytes(path)?).map_err(|_| "not UTF-8 text".to_string())
}

/// The bytes of a secret file (a carp passphrase, a sync key). Refused unless it is a regular file
/// private to its owner (no group or other bits: whoever can read it can take over the vhid or
/// forge flows, whoever can write it can change the key) and owned by root or by the user carpd
/// runs as. The checks look at the opened descriptor (fstat), so the file read is the file checked.
pub fn read_secret_bytes(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mode = meta.permissions().mode() & 0o777;
    let fix = format!("make it private with `chmod 600 {}`", path.display());
    if mode & 0o007 != 0 {
        return Err(format!("readable by every user (mode {mode:04o}); {fix}"));
    }
    if mode & 0o070 != 0 {
        return Err(format!("open to its group (mode {mode:04o}); {fix}"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!(
            "owned by uid {}, neither root nor carpd's user (uid {euid}): its owner could change \
             the key; `chown root {}`",
            meta.uid(),
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// True when every user may read `path` (false if it cannot be looked at, e.g. a test's made-up
/// path).
pub(super) fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// Something in a config that carpd accepts but the operator should know about (printed by
/// `carpd --check`, logged at start and on reload). A secret it names (`{key}` in the text) is
/// shown only by [`Warning::with_secrets`], never by `Display` (the daemon's log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    text: String,
    secret: Option<String>,
}

impl Warning {
    /// A warning without secrets.
    pub fn new(text: String) -> Warning {
        Warning { text, secret: None }
    }

    /// A warning whose `{key}` placeholder stands for `secret`.
    pub fn with_secret(text: String, secret: String) -> Warning {
        Warning {
            text,
            secret: Some(secret),
        }
    }

    /// The text with its secret shown (for `carpd --check`, run by whoever can read the config).
    pub fn with_secrets(&self) -> String {
        self.text
            .replace("{key}", self.secret.as_deref().unwrap_or("(none)"))
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .text
                .replace("{key}", "(not logged; `carpd --check` names it)"),
        )
    }
}

/// Parses OpenBSD's `carpnodes vhid:advskew,...` (the ifconfig parser's rules; in a TOML string spaces
/// after the commas are allowed too); nodes come back sorted by vhid (the first is the leader).
pub fn parse_carpnodes(s: &str) -> Result<Vec<(u8, u8)>, String> {
    let compact: Vec<&str> = s.split(',').map(str::trim).collect();
    ifconfig::parse_carpnodes(&compact.join(",")).map_err(|e| e.to_string())
}
