//! The operator's words into requests: `set` KEY VALUE pairs, `demote` values, a passphrase from
//! stdin, and OpenBSD `ifconfig carpN ...` argument lists, each checked here so a typo is reported
//! precisely and never reaches carpd.

use carp::{
    config::ifconfig::{IfconfigCommand, IfconfigSpec},
    control::{DemoteOp, ForceTo, Request, Setting, check_adv},
};

/// `set` arguments: KEY VALUE pairs and the words up/down.
pub(crate) fn parse_settings(args: &[String]) -> Result<Vec<Setting>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("set: {key} needs a value ({what})"))
        };
        let number = |key: &str, v: String| -> Result<u8, String> {
            let n: u32 = v
                .parse()
                .map_err(|_| format!("set: {key} {v:?} is not a number (0..=254)"))?;
            check_adv(key, n).map_err(|e| format!("set: {e}"))
        };
        let s = match key.as_str() {
            "advbase" => Setting::Advbase(number("advbase", value("0..=254 seconds")?)?),
            "advskew" => Setting::Advskew(number("advskew", value("0..=254")?)?),
            "state" => match value("master or backup")?.to_ascii_lowercase().as_str() {
                "master" => Setting::State(ForceTo::Master),
                "backup" => Setting::State(ForceTo::Backup),
                other => return Err(format!("set: state {other}: use master or backup")),
            },
            // `-` reads it from stdin: a passphrase on the command line is visible to every
            // user in the process list.
            "pass" => match value("the passphrase (at most 19 bytes), or - to read it from stdin")?
            {
                p if p == "-" => Setting::Pass(read_pass_from_stdin()?),
                p => Setting::Pass(p),
            },
            "up" => Setting::Up,
            "down" => Setting::Down,
            "carpnodes" => Setting::Carpnodes(
                carp::config::parse_carpnodes(&value("vhid:advskew,... e.g. 1:0,2:100")?)
                    .map_err(|e| format!("set: {e}"))?,
            ),
            other => {
                return Err(format!(
                    "set: unknown setting {other:?} (advbase, advskew, carpnodes, state, pass, up, down)"
                ));
            }
        };
        out.push(s);
    }
    Ok(out)
}

/// One line from stdin, without its line end: the passphrase of `set CARPIF pass -`.
fn read_pass_from_stdin() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("set: pass -: reading stdin: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `demote GROUP N|+N|-N`.
pub(crate) fn parse_demote(v: &str) -> Result<DemoteOp, String> {
    let bad = || format!("demote {v:?}: use N (0..=255), +N or -N");
    if let Some(n) = v.strip_prefix('+') {
        let n: u8 = n.parse().map_err(|_| bad())?;
        Ok(DemoteOp::Adjust(i32::from(n)))
    } else if let Some(n) = v.strip_prefix('-') {
        let n: u8 = n.parse().map_err(|_| bad())?;
        Ok(DemoteOp::Adjust(-i32::from(n)))
    } else {
        v.parse().map(DemoteOp::Set).map_err(|_| bad())
    }
}

/// Turns a parsed ifconfig line into a request (None: just show the interface).
pub(crate) fn ifconfig_request(cmd: IfconfigCommand) -> Result<Option<Request>, String> {
    let (name, spec) = match cmd {
        IfconfigCommand::GroupDemote { group, change } => {
            return Ok(Some(Request::Demote {
                group,
                change: Some(DemoteOp::Adjust(i32::from(change.delta()))),
            }));
        }
        IfconfigCommand::Interface { name, spec } => (name, spec),
    };
    let IfconfigSpec {
        addresses,
        vhid,
        advbase,
        advskew,
        pass,
        carpdev,
        carppeer,
        carpnodes,
        balancing,
        state,
        description,
        groups,
        up,
        lladdr,
        mtu,
        carpdemote,
        carpver,
        vrrpprio,
        vrrpinterval,
        pass_cut_from,
    } = spec;
    if let (Some(len), Some(p)) = (pass_cut_from, &pass) {
        eprintln!(
            "carpctl: warning: pass is {len} bytes; OpenBSD's ifconfig keeps its first {} (strlcpy \
             into the 20-byte key) and so does carpd: the effective key is {p:?}",
            p.len()
        );
    }
    let fixed = [
        ("carpver", carpver.is_some()),
        ("vrrpprio", vrrpprio.is_some()),
        ("vrrpinterval", vrrpinterval.is_some()),
        ("addresses", !addresses.is_empty()),
        ("vhid", vhid.is_some()),
        ("carpdev", carpdev.is_some()),
        ("carppeer", carppeer.is_some()),
        ("balancing", balancing.is_some()),
        ("description", description.is_some()),
        ("group", !groups.is_empty()),
        ("lladdr", lladdr.is_some()),
        ("mtu", mtu.is_some()),
        ("carpdemote", carpdemote.is_some()),
    ];
    if let Some((what, _)) = fixed.iter().find(|(_, given)| *given) {
        return Err(format!(
            "ifconfig {name}: {what} cannot be changed on a running carp interface; \
             edit the config and reload (systemctl reload carpd); nothing changed"
        ));
    }
    let mut changes = Vec::new();
    if let Some(v) = advbase {
        changes.push(Setting::Advbase(v));
    }
    if let Some(v) = advskew {
        changes.push(Setting::Advskew(v));
    }
    if let Some(nodes) = carpnodes {
        changes.push(Setting::Carpnodes(nodes));
    }
    if let Some(p) = pass {
        changes.push(Setting::Pass(p));
    }
    if let Some(s) = state {
        changes.push(Setting::State(match s.as_str() {
            "master" => ForceTo::Master,
            "backup" => ForceTo::Backup,
            other => {
                return Err(format!(
                    "ifconfig {name}: state {other}: use master or backup"
                ));
            }
        }));
    }
    match up {
        Some(true) => changes.push(Setting::Up),
        Some(false) => changes.push(Setting::Down),
        None => {}
    }
    if changes.is_empty() {
        return Ok(None);
    }
    Ok(Some(Request::Set {
        iface: name,
        changes,
    }))
}
