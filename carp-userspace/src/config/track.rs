//! Health tracking: `[[track]]` config entries that demote an interface group while a check fails
//! (issue #5). A check is an interface (failing while not up with carrier), a script (failing while it
//! exits non-zero or outlives its interval) or a file (failing while it exists, or while its content is a
//! given string). Rise/fall counts debounce flapping checks.
//!
//! What this module owns: the entries' shape and validation (with the config file's line numbers).
//! The checkers that run them live in `daemon::track`. Trackers are read at start-up; SIGHUP does
//! not change them (restart carpd for new `[[track]]`s).

use std::{
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, InterfaceConfig};
use crate::engine::DEFAULT_GROUP;

/// One validated `[[track]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackConfig {
    /// The interface group demoted while the check fails ("carp" by default).
    pub group: String,
    /// How much the group's counter rises while failing (1..=255, default 1).
    pub demote: u8,
    /// What is checked.
    #[serde(flatten)]
    pub check: Check,
    /// For a file check: the content that means "failing" (None: existing means failing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Time between checks (default 1 s); also a script's time limit.
    #[serde(serialize_with = "seconds")]
    pub interval: Duration,
    /// Consecutive good checks before a failing check counts as recovered (default 1).
    pub rise: u32,
    /// Consecutive bad checks before it counts as failing (default 1).
    pub fall: u32,
}

/// What a tracker checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// An interface: failing while it is not up with carrier (IFF_UP and IFF_RUNNING).
    Interface(String),
    /// A script run without arguments: failing while it exits non-zero or takes longer than the interval.
    Script(PathBuf),
    /// A file: failing while it exists, or, with `content`, while its trimmed content equals it.
    File(PathBuf),
}

impl Check {
    /// A short name for logs: `interface eth3`, `script /etc/carp/check`, `file /run/maint`.
    pub fn describe(&self) -> String {
        match self {
            Check::Interface(i) => format!("interface {i}"),
            Check::Script(p) => format!("script {}", p.display()),
            Check::File(file) => format!("file {}", file.display()),
        }
    }
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A `[[track]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrack {
    group: Option<Spanned<String>>,
    demote: Option<Spanned<i64>>,
    interface: Option<Spanned<String>>,
    script: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    content: Option<Spanned<String>>,
    interval: Option<Spanned<toml::Value>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
}

/// Validates the `[[track]]` entries against the carp interfaces (their groups must exist).
pub fn validate(
    file: &Path,
    text: &str,
    raw: Vec<Spanned<RawTrack>>,
    interfaces: &[InterfaceConfig],
) -> Result<Vec<TrackConfig>, ConfigError> {
    let err = |span: &Range<usize>, message: String| ConfigError {
        file: file.into(),
        line: Some(text[..span.start.min(text.len())].matches('\n').count() + 1),
        message,
    };
    let mut out = Vec::new();
    for (n, entry) in raw.into_iter().enumerate() {
        let span = entry.span();
        let t = entry.into_inner();
        let ctx = format!("track #{}", n + 1);
        let count = |v: &Option<Spanned<i64>>, key: &str, lo: i64, hi: i64, default: i64| match v {
            None => Ok(default),
            Some(v) if (lo..=hi).contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => Err(err(
                &v.span(),
                format!("{ctx}: {key} = {}: out of range {lo}..={hi}", v.get_ref()),
            )),
        };
        let demote = count(&t.demote, "demote", 1, 255, 1)? as u8;
        let rise = count(&t.rise, "rise", 1, 1000, 1)? as u32;
        let fall = count(&t.fall, "fall", 1, 1000, 1)? as u32;
        let interval = match &t.interval {
            None => Duration::from_secs(1),
            Some(v) => {
                let secs = match v.get_ref() {
                    toml::Value::Integer(i) => *i as f64,
                    toml::Value::Float(f) => *f,
                    _ => f64::NAN,
                };
                if !(0.05..=3600.0).contains(&secs) {
                    return Err(err(
                        &v.span(),
                        format!(
                            "{ctx}: interval = {}: give seconds in 0.05..=3600",
                            v.get_ref()
                        ),
                    ));
                }
                Duration::from_secs_f64(secs)
            }
        };
        let group = match &t.group {
            None => DEFAULT_GROUP.to_string(),
            Some(g) => {
                let name = g.get_ref();
                let known = name == DEFAULT_GROUP
                    || interfaces
                        .iter()
                        .any(|i| i.groups.iter().any(|x| x == name));
                if !known {
                    return Err(err(
                        &g.span(),
                        format!(
                            "{ctx}: group = {name:?}: no carp interface is in this group (add it to an interface's groups)"
                        ),
                    ));
                }
                name.clone()
            }
        };
        let check = match (&t.interface, &t.script, &t.file) {
            (Some(i), None, None) => Check::Interface(i.get_ref().clone()),
            (None, Some(s), None) => Check::Script(PathBuf::from(s.get_ref())),
            (None, None, Some(f)) => Check::File(PathBuf::from(f.get_ref())),
            _ => {
                return Err(err(
                    &span,
                    format!("{ctx}: give exactly one of interface, script or file"),
                ));
            }
        };
        if let (Some(c), false) = (&t.content, matches!(check, Check::File(_))) {
            return Err(err(
                &c.span(),
                format!("{ctx}: content only goes with file"),
            ));
        }
        out.push(TrackConfig {
            group,
            demote,
            check,
            content: t.content.map(Spanned::into_inner),
            interval,
            rise,
            fall,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_validate_with_file_lines() {
        use crate::config::Config;
        let base = "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\npass = \"x\"\n\
                    addresses = [\"10.0.0.1/24\"]\ngroups = [\"outside\"]\n";
        let parse = |tail: &str| Config::parse(Path::new("c.toml"), &format!("{base}{tail}"));
        let c = parse(
            "[[track]]\ninterface = \"eth3\"\ngroup = \"outside\"\ndemote = 5\n\
             [[track]]\nfile = \"/run/maint\"\ncontent = \"1\"\ninterval = 0.5\nfall = 2\n",
        )
        .unwrap();
        assert_eq!(c.tracks.len(), 2);
        assert_eq!(c.tracks[0].check, Check::Interface("eth3".into()));
        assert_eq!(
            (c.tracks[0].group.as_str(), c.tracks[0].demote),
            ("outside", 5)
        );
        assert_eq!(c.tracks[1].group, "carp");
        assert_eq!(c.tracks[1].interval, Duration::from_millis(500));
        assert_eq!(c.tracks[1].content.as_deref(), Some("1"));
        let printed = c.to_toml();
        assert!(printed.contains("interface = \"eth3\""), "{printed}");
        let e = parse("[[track]]\ninterface = \"eth3\"\ngroup = \"nope\"\n").unwrap_err();
        assert_eq!(e.line, Some(10));
        assert!(e.message.contains("group = \"nope\""), "{e}");
        let e = parse("[[track]]\ninterface = \"eth3\"\ndemote = 0\n").unwrap_err();
        assert!(
            e.message.contains("demote = 0: out of range 1..=255"),
            "{e}"
        );
        let e = parse("[[track]]\ninterface = \"eth3\"\nfile = \"/x\"\n").unwrap_err();
        assert!(e.message.contains("exactly one of"), "{e}");
        let e = parse("[[track]]\nscript = \"/x\"\ninterval = 0\n").unwrap_err();
        assert!(e.message.contains("interval"), "{e}");
    }
}
