//! `carpd --import-keepalived FILE`: reads a keepalived.conf (with its `include`s) and writes the
//! equivalent carp.toml, listing every setting it could not carry over and why.
//!
//! What this module owns: a reader for keepalived's grammar as far as VRRP needs it (`reader`: `{}`
//! blocks, `#` and `!` comments anywhere on a line, `"`/`'` quoting, `include GLOB` relative to the
//! including file, missing includes ignored as keepalived does), and the map from `vrrp_instance`,
//! `vrrp_script`, `vrrp_sync_group` and the VRRP `global_defs` onto `[[interface]]` (protocol vrrp3 or
//! vrrp2) and `[[track]]` entries. Preprocessor features (`@` conditionals, `$VAR` substitution,
//! `~SEQ`) are reported as unmapped, never guessed.
//!
//! The map keeps keepalived's semantics where carp-xdp has the same notion:
//! - priority: as given, else keepalived's default (255 with `state MASTER`, otherwise 100);
//! - `advert_int` seconds -> centiseconds (v3, rounded to 10 ms like keepalived) or whole seconds (v2);
//! - `nopreempt` -> `preempt = false`; `accept`/`no_accept` -> `accept_mode` (keepalived's default is
//!   accept unless `vrrp_strict`);
//! - track weights: a negative weight W demotes the instance's group by -W while the check fails; a
//!   positive weight W raises the priority by W and demotes by W while failing (the same two
//!   priorities keepalived ends up with); weight 0 (keepalived: FAULT) demotes by 255, which pins the
//!   advertised priority at 1, the nearest carp-xdp has to FAULT;
//! - `vrrp_sync_group` members share one interface group, so one member's failure demotes all;
//! - `notify_master` -> `up_script`, `notify_backup` (else `notify_fault`) -> `down_script`.

mod reader;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// One setting that has no carp.toml equivalent, with where it was and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// File it was read from.
    pub file: PathBuf,
    /// Line in that file.
    pub line: usize,
    /// The keyword (and context), e.g. `vrrp_instance VI_1: preempt_delay`.
    pub setting: String,
    /// Why it was not carried over.
    pub why: String,
}

/// The result of an import: the carp.toml text and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The generated carp.toml.
    pub toml: String,
    /// Settings not carried over, in file order.
    pub unmapped: Vec<Unmapped>,
}

/// A keepalived.conf that cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ImportError {
    /// File.
    pub file: String,
    /// Line (0 when the file itself could not be read).
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

use reader::{Item, Reader};

/// The settings of one vrrp_instance after reading it.
#[derive(Debug, Default)]
struct Instance {
    name: String,
    interface: Option<String>,
    vrid: Option<u8>,
    priority: Option<u8>,
    master: bool,
    advert_int: Option<f64>,
    version: Option<u8>,
    nopreempt: bool,
    accept: Option<bool>,
    vips: Vec<String>,
    peers: Vec<String>,
    pass: Option<String>,
    tracks: Vec<Track>,
    notify_master: Option<String>,
    notify_backup: Option<String>,
    notify_fault: Option<String>,
    line: usize,
    file: PathBuf,
}

#[derive(Debug, Clone)]
enum TrackKind {
    Interface(String),
    Script(String),
}

#[derive(Debug, Clone)]
struct Track {
    kind: TrackKind,
    weight: Option<i32>,
}

#[derive(Debug, Clone, Default)]
struct Script {
    script: Option<String>,
    interval: Option<f64>,
    weight: Option<i32>,
    rise: Option<u32>,
    fall: Option<u32>,
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// An interface or group name carp.toml accepts, derived from a keepalived name.
fn group_name(instance: &str) -> String {
    let mut g: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(13)
        .collect();
    // A group name must not end in a digit (OpenBSD's rule): add a letter suffix.
    g.push_str("_g");
    g
}

/// Reads `path` and returns the carp.toml for its VRRP instances and the unmapped settings.
pub fn import(path: &Path) -> Result<Import, ImportError> {
    let mut reader = Reader {
        unmapped: Vec::new(),
    };
    let items = reader.read_file(path, 0)?;
    let mut unmapped = std::mem::take(&mut reader.unmapped);
    let mut skip = |item: &Item, ctx: &str, why: &str| {
        unmapped.push(Unmapped {
            file: item.file.clone(),
            line: item.line,
            setting: if ctx.is_empty() {
                item.key.clone()
            } else if item.key.is_empty() {
                ctx.to_string()
            } else {
                format!("{ctx}: {}", item.key)
            },
            why: why.into(),
        });
    };

    let mut default_version = 2u8;
    let mut strict = false;
    let mut instances: Vec<Instance> = Vec::new();
    let mut scripts: Vec<(String, Script)> = Vec::new();
    let mut sync_groups: Vec<(String, Vec<String>, Vec<Item>)> = Vec::new();

    for item in &items {
        match item.key.as_str() {
            "global_defs" => {
                for g in item.block.iter().flatten() {
                    match g.key.as_str() {
                        "vrrp_version" => {
                            default_version =
                                g.args.first().and_then(|v| v.parse().ok()).unwrap_or(2)
                        }
                        "vrrp_strict" => strict = true,
                        "router_id"
                        | "script_user"
                        | "enable_script_security"
                        | "max_auto_priority" => {}
                        k if k.starts_with("vrrp_") || k == "v3_checksum_as_v2" => skip(
                            g,
                            "global_defs",
                            "no carp.toml equivalent; carp-xdp's behaviour is described in README \"Coming from keepalived\"",
                        ),
                        _ => {}
                    }
                }
            }
            "vrrp_script" => {
                let name = item.args.first().cloned().unwrap_or_default();
                let mut s = Script::default();
                for k in item.block.iter().flatten() {
                    let a = k.args.first().cloned().unwrap_or_default();
                    match k.key.as_str() {
                        "script" => s.script = Some(k.args.join(" ")),
                        "interval" => s.interval = a.parse().ok(),
                        "weight" => s.weight = a.parse().ok(),
                        "rise" => s.rise = a.parse().ok(),
                        "fall" => s.fall = a.parse().ok(),
                        _ => skip(k, &format!("vrrp_script {name}"), "no [[track]] equivalent"),
                    }
                }
                scripts.push((name, s));
            }
            "vrrp_sync_group" => {
                let name = item.args.first().cloned().unwrap_or_default();
                let mut members = Vec::new();
                let mut rest = Vec::new();
                for k in item.block.iter().flatten() {
                    if k.key == "group" {
                        for m in k.block.iter().flatten() {
                            members.push(m.key.clone());
                            members.extend(m.args.iter().cloned());
                        }
                    } else {
                        rest.push(k.clone());
                    }
                }
                sync_groups.push((name, members, rest));
            }
            "vrrp_instance" => {
                let mut inst = Instance {
                    name: item.args.first().cloned().unwrap_or_default(),
                    line: item.line,
                    file: item.file.clone(),
                    ..Instance::default()
                };
                let ctx = format!("vrrp_instance {}", inst.name);
                for k in item.block.iter().flatten() {
                    let a = k.args.first().cloned().unwrap_or_default();
                    match k.key.as_str() {
                        "state" => inst.master = a == "MASTER",
                        "interface" => inst.interface = Some(a),
                        "virtual_router_id" => inst.vrid = a.parse().ok(),
                        "priority" => inst.priority = a.parse().ok(),
                        "advert_int" => inst.advert_int = a.parse().ok(),
                        "version" => inst.version = a.parse().ok(),
                        "nopreempt" => inst.nopreempt = true,
                        "preempt" => {}
                        "accept" => inst.accept = Some(true),
                        "no_accept" => inst.accept = Some(false),
                        "virtual_ipaddress" => {
                            for v in k.block.iter().flatten() {
                                inst.vips.push(v.key.clone());
                                let mut it = v.args.iter();
                                while let Some(opt) = it.next() {
                                    match opt.as_str() {
                                        "dev" => {
                                            let dev = it.next().cloned().unwrap_or_default();
                                            if inst.interface.as_deref() != Some(dev.as_str()) {
                                                skip(
                                                    v,
                                                    &ctx,
                                                    &format!(
                                                        "virtual address {} on another device {dev}: carp-xdp puts every address of an interface on its carpdev",
                                                        v.key
                                                    ),
                                                );
                                            }
                                        }
                                        "no_track" => {}
                                        other => {
                                            skip(
                                                v,
                                                &ctx,
                                                &format!(
                                                    "address option {other:?} of {}: carp-xdp adds the plain address with its prefix",
                                                    v.key
                                                ),
                                            );
                                            // Options with a value: skip it too.
                                            if matches!(
                                                other,
                                                "brd" | "scope" | "label" | "peer" | "metric"
                                            ) {
                                                it.next();
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        "unicast_peer" => {
                            for p in k.block.iter().flatten() {
                                inst.peers.push(p.key.clone());
                                if !p.args.is_empty() {
                                    skip(
                                        p,
                                        &ctx,
                                        "unicast_peer min_ttl/max_ttl: carp-xdp checks TTL 255 on every advert",
                                    );
                                }
                            }
                        }
                        "unicast_src_ip" | "mcast_src_ip" => skip(
                            k,
                            &ctx,
                            "carpd sends from the carpdev's primary address (IPv4) or link-local (IPv6); give that address the carpdev first",
                        ),
                        "authentication" => {
                            let mut ty = String::new();
                            let mut pw = None;
                            for x in k.block.iter().flatten() {
                                match x.key.as_str() {
                                    "auth_type" => ty = x.args.first().cloned().unwrap_or_default(),
                                    "auth_pass" => pw = x.args.first().cloned(),
                                    _ => {}
                                }
                            }
                            if ty == "PASS" {
                                // keepalived keeps the first 8 bytes.
                                if pw.as_ref().is_some_and(|p| p.len() > 8) {
                                    skip(
                                        k,
                                        &ctx,
                                        "auth_pass longer than 8 bytes: truncated to 8, as keepalived does",
                                    );
                                }
                                inst.pass = pw.map(|p| p.chars().take(8).collect());
                            } else {
                                skip(
                                    k,
                                    &ctx,
                                    "auth_type AH (RFC 2338 IP authentication header) is refused: remove it from both peers first",
                                );
                            }
                        }
                        "track_interface" => {
                            for t in k.block.iter().flatten() {
                                inst.tracks.push(Track {
                                    kind: TrackKind::Interface(t.key.clone()),
                                    weight: weight_of(&t.args),
                                });
                                if t.args.iter().any(|a| a == "reverse") {
                                    skip(
                                        t,
                                        &ctx,
                                        "track_interface ... reverse: a [[track]] fails while the interface is down, not while it is up",
                                    );
                                }
                            }
                        }
                        "track_script" => {
                            for t in k.block.iter().flatten() {
                                inst.tracks.push(Track {
                                    kind: TrackKind::Script(t.key.clone()),
                                    weight: weight_of(&t.args),
                                });
                            }
                        }
                        "track_file" => skip(
                            k,
                            &ctx,
                            "track_file multiplies the file's number by a weight; carp-xdp's file check fails while the file exists (or has a given content): write a [[track]] file entry by hand",
                        ),
                        "notify_master" => inst.notify_master = Some(k.args.join(" ")),
                        "notify_backup" => inst.notify_backup = Some(k.args.join(" ")),
                        "notify_fault" => inst.notify_fault = Some(k.args.join(" ")),
                        _ => skip(k, &ctx, "no carp.toml equivalent"),
                    }
                }
                instances.push(inst);
            }
            "virtual_server" | "virtual_server_group" | "real_server" => skip(
                item,
                "",
                "IPVS load balancing is not VRRP; keep keepalived's checker (keepalived -C) or another load balancer for it",
            ),
            "static_ipaddress"
            | "static_routes"
            | "static_rules"
            | "linkbeat_use_polling"
            | "track_file"
            | "net_namespace"
            | "vrrp_track_process"
            | "track_process" => skip(item, "", "no carp.toml equivalent"),
            _ => {}
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# carp.toml imported from {} by carpd --import-keepalived.\n# Settings that could not be carried over are listed on stderr.",
        path.display()
    );
    let mut tracks = String::new();
    for (n, inst) in instances.iter().enumerate() {
        let ctx = format!("vrrp_instance {}", inst.name);
        let anchor = Item {
            key: String::new(),
            args: vec![],
            block: None,
            file: inst.file.clone(),
            line: inst.line,
        };
        let Some(dev) = &inst.interface else {
            skip(&anchor, &ctx, "no interface: the instance is left out");
            continue;
        };
        let Some(vrid) = inst.vrid else {
            skip(
                &anchor,
                &ctx,
                "no virtual_router_id: the instance is left out",
            );
            continue;
        };
        let v6 = inst.vips.first().is_some_and(|a| a.contains(':'));
        // keepalived forces IPv6 instances to VRRPv3.
        let version = if v6 {
            3
        } else {
            inst.version.unwrap_or(default_version)
        };
        let sync = sync_groups.iter().find(|(_, m, _)| m.contains(&inst.name));
        let group = sync
            .map(|(g, _, _)| group_name(g))
            .unwrap_or_else(|| group_name(&inst.name));
        let base = inst.priority.unwrap_or(if inst.master { 255 } else { 100 });
        let mut priority = i32::from(base);
        let _ = writeln!(out, "\n# vrrp_instance {}", inst.name);
        let _ = writeln!(out, "[[interface]]");
        let _ = writeln!(out, "name = {}", q(&format!("vrrp{n}")));
        let _ = writeln!(out, "description = {}", q(&inst.name));
        let _ = writeln!(out, "carpdev = {}", q(dev));
        let _ = writeln!(
            out,
            "protocol = {}",
            q(if version == 3 { "vrrp3" } else { "vrrp2" })
        );
        let _ = writeln!(out, "vrid = {vrid}");
        let advert = inst.advert_int.unwrap_or(1.0);
        let interval = if version == 3 {
            ((advert * 100.0).round() as i64).clamp(1, 4095)
        } else {
            (advert.round() as i64).clamp(1, 255)
        };
        // Tracking: build the entries first, since a positive weight raises the base priority.
        for t in &inst.tracks {
            let (check, script) = match &t.kind {
                TrackKind::Interface(i) => (format!("interface = {}", q(i)), None),
                TrackKind::Script(name) => match scripts.iter().find(|(s, _)| s == name) {
                    None => {
                        skip(
                            &anchor,
                            &ctx,
                            &format!("track_script {name}: no vrrp_script {name} defined"),
                        );
                        continue;
                    }
                    Some((_, s)) => {
                        let cmd = s.script.clone().unwrap_or_default();
                        if !Path::new(&cmd).is_absolute() || cmd.contains(char::is_whitespace) {
                            skip(
                                &anchor,
                                &ctx,
                                &format!(
                                    "track_script {name}: script {cmd:?}: carp-xdp runs an absolute path without arguments; wrap the command in a script"
                                ),
                            );
                            continue;
                        }
                        (format!("script = {}", q(&cmd)), Some(s.clone()))
                    }
                },
            };
            // keepalived forces the weights of sync-group members to 0: any failure faults the group.
            let weight = if sync.is_some() {
                0
            } else {
                t.weight
                    .or(script.as_ref().and_then(|s| s.weight))
                    .unwrap_or(0)
            };
            let demote = match weight {
                0 => 255,
                w if w > 0 => {
                    priority += w;
                    w
                }
                w => -w,
            };
            let _ = writeln!(tracks, "\n# {ctx}: track weight {weight}");
            let _ = writeln!(
                tracks,
                "[[track]]\n{check}\ngroup = {}\ndemote = {}",
                q(&group),
                demote.min(255)
            );
            if let Some(s) = script {
                if let Some(i) = s.interval {
                    let _ = writeln!(tracks, "interval = {}", i.clamp(0.05, 3600.0));
                }
                if let Some(r) = s.rise {
                    let _ = writeln!(tracks, "rise = {}", r.max(1));
                }
                if let Some(f) = s.fall {
                    let _ = writeln!(tracks, "fall = {}", f.max(1));
                }
            }
        }
        if base != 255 {
            // keepalived clamps a tracked priority to 1..=254; a configured 255 never moves.
            priority = priority.clamp(1, 254);
        }
        let _ = writeln!(out, "priority = {priority}");
        let _ = writeln!(out, "interval = {interval}");
        if inst.nopreempt {
            let _ = writeln!(out, "preempt = false");
        }
        let accept = inst.accept.unwrap_or(!strict);
        if !accept {
            // carp-xdp's default is true (keepalived's without vrrp_strict); strict means RFC 9568's.
            let _ = writeln!(out, "accept_mode = false");
        }
        let vips: Vec<String> = inst
            .vips
            .iter()
            .map(|a| {
                if a.contains('/') {
                    a.clone()
                } else if a.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
                    format!("{a}/128")
                } else {
                    format!("{a}/32")
                }
            })
            .collect();
        let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
        let _ = writeln!(out, "addresses = [{}]", list(&vips));
        if !inst.peers.is_empty() {
            let _ = writeln!(out, "unicast_peers = [{}]", list(&inst.peers));
        }
        if let Some(p) = &inst.pass {
            if version == 3 {
                skip(
                    &anchor,
                    &ctx,
                    "authentication: keepalived ignores it in VRRPv3, and so does carp-xdp",
                );
            } else {
                let _ = writeln!(
                    out,
                    "# VRRPv2 simple-text password: insecure, keep it only for the migration"
                );
                let _ = writeln!(out, "pass = {}", q(p));
            }
        }
        let _ = writeln!(out, "groups = [{}]", q(&group));
        let hook = |s: &Option<String>,
                    key: &str,
                    out: &mut String,
                    skip: &mut dyn FnMut(&Item, &str, &str)| {
            if let Some(cmd) = s {
                if Path::new(cmd).is_absolute() && !cmd.contains(char::is_whitespace) {
                    let _ = writeln!(out, "{key} = {}", q(cmd));
                } else {
                    skip(
                        &anchor,
                        &ctx,
                        &format!(
                            "{key} from {cmd:?}: carp-xdp runs an absolute path without arguments (called with <carpif> <state> <vip...>)"
                        ),
                    );
                }
            }
        };
        hook(&inst.notify_master, "up_script", &mut out, &mut skip);
        let down = inst.notify_backup.clone().or(inst.notify_fault.clone());
        hook(&down, "down_script", &mut out, &mut skip);
        if inst.notify_backup.is_some() && inst.notify_fault.is_some() {
            skip(
                &anchor,
                &ctx,
                "notify_fault: carp-xdp has one down_script (notify_backup's) for every state but MASTER",
            );
        }
    }
    for (name, _, rest) in &sync_groups {
        for k in rest {
            skip(
                k,
                &format!("vrrp_sync_group {name}"),
                "only the group membership is carried over (as a shared interface group); put hooks and tracks on the instances",
            );
        }
    }
    out.push_str(&tracks);
    Ok(Import {
        toml: out,
        unmapped,
    })
}

/// `weight N` among a track's arguments.
fn weight_of(args: &[String]) -> Option<i32> {
    let i = args.iter().position(|a| a == "weight")?;
    args.get(i + 1)?.parse().ok()
}
