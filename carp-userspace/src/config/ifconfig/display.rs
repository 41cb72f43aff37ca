//! The canonical OpenBSD form of a spec or a command (`Display`), which parses back to the same value.

use super::{IfconfigCommand, IfconfigSpec};
use std::fmt;

/// Writes `s` as one token: bare when that is unambiguous, else double-quoted with \" and \\.
pub(super) fn write_word(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/,@+%=".contains(c));
    if bare {
        return f.write_str(s);
    }
    f.write_str("\"")?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

impl fmt::Display for IfconfigSpec {
    /// The canonical OpenBSD line: addresses in CIDR form, then carp options in ifconfig(8)'s order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut word =
            |f: &mut fmt::Formatter<'_>, key: &str, value: Option<&str>| -> fmt::Result {
                f.write_str(sep)?;
                sep = " ";
                f.write_str(key)?;
                if let Some(v) = value {
                    f.write_str(" ")?;
                    write_word(f, v)?;
                }
                Ok(())
            };
        for (i, a) in self.addresses.iter().enumerate() {
            let family = if a.contains(':') { "inet6" } else { "inet" };
            // hostname.if's form for every address after the first.
            let key = if i == 0 {
                family.to_string()
            } else {
                format!("{family} alias")
            };
            word(f, &key, Some(a))?;
        }
        if let Some(v) = self.vhid {
            word(f, "vhid", Some(&v.to_string()))?;
        }
        if let Some(nodes) = &self.carpnodes {
            let list: Vec<String> = nodes.iter().map(|(v, s)| format!("{v}:{s}")).collect();
            word(f, "carpnodes", Some(&list.join(",")))?;
        }
        if let Some(v) = self.advbase {
            word(f, "advbase", Some(&v.to_string()))?;
        }
        if let Some(v) = self.advskew {
            word(f, "advskew", Some(&v.to_string()))?;
        }
        if let Some(v) = &self.pass {
            word(f, "pass", Some(v))?;
        }
        if let Some(v) = &self.carpdev {
            word(f, "carpdev", Some(v))?;
        }
        if let Some(v) = self.carppeer {
            word(f, "carppeer", Some(&v.to_string()))?;
        }
        if let Some(v) = &self.balancing {
            word(f, "balancing", Some(v))?;
        }
        if let Some(v) = &self.state {
            word(f, "state", Some(v))?;
        }
        if let Some(v) = self.carpdemote {
            word(f, "carpdemote", Some(&v.to_string()))?;
        }
        if let Some(v) = self.carpver {
            word(f, "carpver", Some(&v.to_string()))?;
        }
        if let Some(v) = self.vrrpprio {
            word(f, "vrrpprio", Some(&v.to_string()))?;
        }
        if let Some(v) = self.vrrpinterval {
            word(f, "vrrpinterval", Some(&v.to_string()))?;
        }
        if let Some(v) = &self.description {
            word(f, "description", Some(v))?;
        }
        for g in &self.groups {
            word(f, "group", Some(g))?;
        }
        if let Some(m) = self.lladdr {
            let text = m
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            word(f, "lladdr", Some(&text))?;
        }
        if let Some(v) = self.mtu {
            word(f, "mtu", Some(&v.to_string()))?;
        }
        match self.up {
            Some(true) => word(f, "up", None)?,
            Some(false) => word(f, "down", None)?,
            None => {}
        }
        Ok(())
    }
}

impl fmt::Display for IfconfigCommand {
    /// The argument list as `carpctl ifconfig` takes it (the interface line is shell-quoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IfconfigCommand::Interface { name, spec } => {
                write_word(f, name)?;
                let rest = spec.to_string();
                if !rest.is_empty() {
                    write!(f, " {rest}")?;
                }
                Ok(())
            }
            IfconfigCommand::GroupDemote { group, change } => {
                let d = change.delta();
                let attr = if d < 0 { "-carpdemote" } else { "carpdemote" };
                write!(f, "-g ")?;
                write_word(f, group)?;
                write!(f, " {attr} {}", d.unsigned_abs())
            }
        }
    }
}
