//! The `[metrics]` and `[control]` tables: how carpd is watched and who may watch it.
//!
//! What this module owns: their validation, with the config file's line numbers (an address that is
//! not `ADDR:PORT`, a group that does not exist on this host). The listeners themselves are the
//! daemon's (`daemon::control`).

use std::{ffi::CString, net::SocketAddr, path::Path};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::ConfigError;

/// `[metrics]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    listen: Option<Spanned<String>>,
}

/// `[control]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    group: Option<Spanned<String>>,
}

/// The validated `[metrics]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricsConfig {
    /// Where the metrics endpoint listens (`carpd --metrics` overrides it); None = off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// The validated `[control]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ControlConfig {
    /// The group whose members may run carpctl's read-only commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its gid, looked up when the config is read.
    #[serde(skip)]
    pub gid: Option<u32>,
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// Validates `[metrics]`.
pub fn metrics(
    file: &Path,
    text: &str,
    raw: Option<RawMetrics>,
) -> Result<MetricsConfig, ConfigError> {
    let Some(listen) = raw.and_then(|r| r.listen) else {
        return Ok(MetricsConfig::default());
    };
    let addr = listen
        .get_ref()
        .parse::<SocketAddr>()
        .map_err(|_| ConfigError {
            file: file.into(),
            line: Some(line_of(text, listen.span().start)),
            message: format!(
                "metrics: listen = {:?}: give ADDR:PORT, e.g. \"127.0.0.1:9273\" or \"[::1]:9273\"",
                listen.get_ref()
            ),
        })?;
    Ok(MetricsConfig { listen: Some(addr) })
}

/// Validates `[control]`: the group must exist here.
pub fn control(
    file: &Path,
    text: &str,
    raw: Option<RawControl>,
) -> Result<ControlConfig, ConfigError> {
    let Some(group) = raw.and_then(|r| r.group) else {
        return Ok(ControlConfig::default());
    };
    let name = group.get_ref();
    let err = |message: String| ConfigError {
        file: file.into(),
        line: Some(line_of(text, group.span().start)),
        message,
    };
    let gid = gid_of(name).ok_or_else(|| {
        err(format!(
            "control: group = {name:?}: no such group on this host (create it with `groupadd {name}`)"
        ))
    })?;
    Ok(ControlConfig {
        group: Some(name.clone()),
        gid: Some(gid),
    })
}

/// The gid of a group name (getgrnam_r), None if there is none.
fn gid_of(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: getgrnam_r fills `grp` with pointers into `buf`, which outlives the call; `result` is
    // null when there is no such group or on error.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const IFACE: &str = "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\npass = \"x\"\naddresses = [\"10.0.0.1/24\"]\n";

    #[test]
    fn metrics_listen_and_control_group_parse() {
        let text =
            format!("{IFACE}[metrics]\nlisten = \"127.0.0.1:9273\"\n[control]\ngroup = \"root\"\n");
        let c = Config::parse(Path::new("/x.toml"), &text).expect("valid");
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9273".parse().unwrap()));
        assert_eq!(
            (c.control.group.as_deref(), c.control.gid),
            (Some("root"), Some(0))
        );
        assert!(c.to_toml().contains("listen = \"127.0.0.1:9273\""));
    }

    #[test]
    fn bad_listen_and_unknown_group_name_the_line_and_key() {
        let text = format!("{IFACE}[metrics]\nlisten = \"localhost\"\n");
        let e = Config::parse(Path::new("/x.toml"), &text).unwrap_err();
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.message.contains("metrics: listen = \"localhost\""), "{e}");
        let text = format!("{IFACE}[control]\ngroup = \"no-such-group-here\"\n");
        let e = Config::parse(Path::new("/x.toml"), &text).unwrap_err();
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.message.contains("no such group"), "{e}");
    }
}
