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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Longest passphrase: the key is 20 bytes including a NUL (BSD truncates longer ones, ucarp refuses).
pub const MAX_PASS_LEN: usize = 19;
/// Most carpnodes one interface may have (OpenBSD's CARP_MAXNODES).
pub const MAX_CARPNODES: usize = 32;
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
    /// `pass X`, at most 19 bytes.
    pub pass: Option<String>,
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

/// One token and its position, so that errors can point at it.
#[derive(Debug, Clone)]
struct Tok {
    text: String,
    index: usize,
}

fn err(token_index: usize, token: &str, message: String) -> IfconfigError {
    IfconfigError {
        token_index,
        token: token.to_string(),
        message,
    }
}

fn tok_err(tok: &Tok, message: String) -> IfconfigError {
    err(tok.index, &tok.text, message)
}

/// Splits a line the way sh would for netstart: quotes group, backslash escapes, `#` starts a comment
/// only at the start of a word (so `pass ab#c` keeps its `#`).
fn tokenize(line: &str) -> Result<Vec<Tok>, IfconfigError> {
    let mut out: Vec<Tok> = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let flush = |out: &mut Vec<Tok>, cur: &mut String| {
        let index = out.len();
        out.push(Tok {
            text: std::mem::take(cur),
            index,
        });
    };
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    flush(&mut out, &mut cur);
                    in_word = false;
                }
            }
            '#' if !in_word => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' | '"' => {
                in_word = true;
                let quote = c;
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == quote {
                        closed = true;
                        break;
                    }
                    // Inside double quotes sh honours only \" \\ and \<newline>; single quotes are raw.
                    if c == '\\' && quote == '"' {
                        match chars.peek() {
                            Some(&n @ ('"' | '\\')) => {
                                cur.push(n);
                                chars.next();
                            }
                            Some('\n') => {
                                chars.next();
                            }
                            _ => cur.push('\\'),
                        }
                    } else {
                        cur.push(c);
                    }
                }
                if !closed {
                    let index = out.len();
                    return Err(err(
                        index,
                        &format!("{quote}{cur}"),
                        format!(
                            "unterminated {quote} quote in token {quote}{cur}: close it with {quote}"
                        ),
                    ));
                }
            }
            '\\' => match chars.next() {
                // A backslash-newline joins lines, as in the man pages' long examples.
                Some('\n') => {}
                Some(n) => {
                    in_word = true;
                    cur.push(n);
                }
                None => {
                    in_word = true;
                    cur.push('\\');
                }
            },
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        flush(&mut out, &mut cur);
    }
    Ok(out)
}

/// An address as written, before defaults and duplicate checks.
#[derive(Debug)]
struct PendingAddr {
    addr: IpAddr,
    prefix: Option<u8>,
    /// True when the length came from `/len`, `netmask`, `prefixlen` or a positional mask.
    explicit: bool,
    tok: Tok,
}

/// Keywords that take a value; used to spot a missing value ("carpdev vhid 1").
pub const VALUE_KEYWORDS: [&str; 20] = [
    "vhid",
    "carpver",
    "vrrpprio",
    "vrrpinterval",
    "advbase",
    "advskew",
    "pass",
    "carpdev",
    "carppeer",
    "carpnodes",
    "balancing",
    "state",
    "description",
    "descr",
    "group",
    "lladdr",
    "mtu",
    "carpdemote",
    "netmask",
    "prefixlen",
];

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    spec: IfconfigSpec,
    addrs: Vec<PendingAddr>,
    /// First token of each key already set, for "given twice" and conflict messages.
    seen: Vec<(&'static str, Tok)>,
}

fn parse_tokens(toks: &[Tok]) -> Result<IfconfigSpec, IfconfigError> {
    let mut p = Parser {
        toks,
        pos: 0,
        spec: IfconfigSpec::default(),
        addrs: Vec::new(),
        seen: Vec::new(),
    };
    while let Some(tok) = p.next() {
        p.keyword(tok)?;
    }
    p.finish()
}

impl<'a> Parser<'a> {
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos)?.clone();
        self.pos += 1;
        Some(t)
    }

    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos)
    }

    /// The value after keyword `kw`, or the "missing value" error naming the keyword.
    fn value(&mut self, kw: &Tok, expected: &str) -> Result<Tok, IfconfigError> {
        self.next().ok_or_else(|| {
            tok_err(
                kw,
                format!(
                    "{}: missing value at end of line (expected {expected})",
                    kw.text
                ),
            )
        })
    }

    fn first_seen(&self, key: &str) -> Option<&Tok> {
        self.seen.iter().find(|(k, _)| *k == key).map(|(_, t)| t)
    }

    /// Records `key` as set by `kw`, refusing a second setting.
    fn once(&mut self, key: &'static str, kw: &Tok) -> Result<(), IfconfigError> {
        if let Some(first) = self.first_seen(key) {
            return Err(tok_err(
                kw,
                format!(
                    "{}: {key} already set by token {} ({}); give it once",
                    kw.text, first.index, first.text
                ),
            ));
        }
        self.seen.push((key, kw.clone()));
        Ok(())
    }

    /// Refuses `kw` when `other` was given, explaining why they cannot be combined.
    fn conflicts(&self, kw: &Tok, other: &str, why: &str) -> Result<(), IfconfigError> {
        match self.first_seen(other) {
            Some(first) => Err(tok_err(
                kw,
                format!(
                    "{}: conflicts with {other} at token {} ({why}); drop one",
                    kw.text, first.index
                ),
            )),
            None => Ok(()),
        }
    }

    fn keyword(&mut self, tok: Tok) -> Result<(), IfconfigError> {
        match tok.text.as_str() {
            "inet" => self.family_address(&tok, false),
            "inet6" => self.family_address(&tok, true),
            // Every address is added, never replaced, so `alias` changes nothing.
            "alias" => Ok(()),
            // `create` makes the interface exist; carpd creates it from the config anyway.
            "create" => Ok(()),
            // carp-xdp never configures link-local addresses, which is what -inet6 asks for.
            "-inet6" => Ok(()),
            "netmask" => self.netmask(&tok),
            "prefixlen" => self.prefixlen(&tok),
            "broadcast" => self.broadcast(&tok),
            "vhid" => {
                self.once("vhid", &tok)?;
                self.conflicts(
                    &tok,
                    "carpnodes",
                    "carpnodes already names each vhid as vhid:advskew",
                )?;
                let v = self.value(&tok, "a number 1..=255")?;
                let n = number(
                    &v,
                    "vhid",
                    1,
                    255,
                    " (0 means no vhid; the vhid is one byte on the wire)",
                )?;
                self.spec.vhid = Some(to_u8(n));
                Ok(())
            }
            "advbase" => {
                self.once("advbase", &tok)?;
                let v = self.value(&tok, "a number 0..=254")?;
                let n = number(
                    &v,
                    "advbase",
                    0,
                    254,
                    " (255 is reserved for bow-out adverts)",
                )?;
                self.spec.advbase = Some(to_u8(n));
                Ok(())
            }
            "advskew" => {
                self.once("advskew", &tok)?;
                self.conflicts(
                    &tok,
                    "carpnodes",
                    "give each node's skew inside carpnodes, e.g. 1:0,2:100",
                )?;
                let v = self.value(&tok, "a number 0..=254")?;
                let n = number(
                    &v,
                    "advskew",
                    0,
                    254,
                    " (255 is reserved for bow-out adverts)",
                )?;
                self.spec.advskew = Some(to_u8(n));
                Ok(())
            }
            "pass" => {
                self.once("pass", &tok)?;
                let v = self.value(&tok, "a passphrase of at most 19 bytes")?;
                // Errors point at the keyword, not the value: a passphrase must not reach the logs.
                if v.text.len() > MAX_PASS_LEN {
                    return Err(tok_err(
                        &tok,
                        format!(
                            "pass: {} bytes is too long, at most {MAX_PASS_LEN} (the key is 20 bytes \
                             including its NUL; BSD would silently truncate it and ucarp refuses it)",
                            v.text.len()
                        ),
                    ));
                }
                if v.text.contains('\0') {
                    return Err(tok_err(
                        &tok,
                        "pass: contains a NUL byte, which would end the key early; remove it"
                            .to_string(),
                    ));
                }
                self.spec.pass = Some(v.text);
                Ok(())
            }
            "carpdev" => {
                self.once("carpdev", &tok)?;
                let v = self.value(&tok, "the parent interface, e.g. eth0")?;
                let name = self.name_value(&tok, &v, "an interface name")?;
                check_ifname(&name).map_err(|why| tok_err(&v, format!("carpdev {name}: {why}")))?;
                self.spec.carpdev = Some(name);
                Ok(())
            }
            "carppeer" => {
                self.once("carppeer", &tok)?;
                let v = self.value(&tok, "the peer's IP address")?;
                let ip = v.text.parse::<IpAddr>().map_err(|_| {
                    tok_err(
                        &v,
                        format!(
                            "carppeer {}: not an IP address (expected e.g. 10.0.0.12)",
                            v.text
                        ),
                    )
                })?;
                self.spec.carppeer = Some(ip);
                Ok(())
            }
            "carpnodes" => {
                self.once("carpnodes", &tok)?;
                self.conflicts(
                    &tok,
                    "vhid",
                    "carpnodes already names each vhid as vhid:advskew",
                )?;
                self.conflicts(
                    &tok,
                    "advskew",
                    "give each node's skew inside carpnodes, e.g. 1:0,2:100",
                )?;
                let v = self.value(&tok, "vhid:advskew,... e.g. 1:0,2:100")?;
                let nodes = carpnodes_value(&v.text).map_err(|m| tok_err(&v, m))?;
                self.spec.carpnodes = Some(nodes);
                Ok(())
            }
            "balancing" => {
                self.once("balancing", &tok)?;
                let v = self.value(&tok, "none, ip, ip-stealth, ip-unicast or arp")?;
                // OpenBSD compares modes with strcasecmp.
                let mode = v.text.to_ascii_lowercase();
                if !BALANCING_MODES.contains(&mode.as_str()) {
                    return Err(tok_err(
                        &v,
                        format!(
                            "balancing {}: unknown mode (expected none, ip, ip-stealth, ip-unicast or arp)",
                            v.text
                        ),
                    ));
                }
                self.spec.balancing = Some(mode);
                Ok(())
            }
            "state" => {
                self.once("state", &tok)?;
                let v = self.value(&tok, "master or backup")?;
                let state = v.text.to_ascii_lowercase();
                match state.as_str() {
                    "master" | "backup" => {
                        self.spec.state = Some(state);
                        Ok(())
                    }
                    "init" => Err(tok_err(
                        &v,
                        format!(
                            "state {}: cannot be forced (OpenBSD's kernel ignores a forced INIT); \
                             use down to stop the interface",
                            v.text
                        ),
                    )),
                    _ => Err(tok_err(
                        &v,
                        format!(
                            "state {}: unknown state (expected master or backup)",
                            v.text
                        ),
                    )),
                }
            }
            "description" | "descr" => {
                self.once("description", &tok)?;
                let v = self.value(&tok, "a description, quoted if it has spaces")?;
                if v.text.len() > MAX_DESCRIPTION_LEN {
                    return Err(tok_err(
                        &v,
                        format!(
                            "{} {:?}: {} bytes is too long, at most {MAX_DESCRIPTION_LEN} (IFDESCRSIZE)",
                            tok.text,
                            v.text,
                            v.text.len()
                        ),
                    ));
                }
                if v.text.chars().any(char::is_control) {
                    return Err(tok_err(
                        &v,
                        format!(
                            "{} {:?}: contains a control character; remove it",
                            tok.text, v.text
                        ),
                    ));
                }
                self.spec.description = Some(v.text);
                Ok(())
            }
            "group" => {
                let v = self.value(&tok, "a group name, e.g. outside")?;
                let name = self.name_value(&tok, &v, "a group name")?;
                check_group(&name).map_err(|why| tok_err(&v, format!("group {name}: {why}")))?;
                if self.spec.groups.contains(&name) {
                    return Err(tok_err(
                        &v,
                        format!("group {name}: given twice; give it once"),
                    ));
                }
                self.spec.groups.push(name);
                Ok(())
            }
            "up" | "down" => {
                self.once("up/down", &tok)?;
                self.spec.up = Some(tok.text == "up");
                Ok(())
            }
            "lladdr" => {
                self.once("lladdr", &tok)?;
                let v = self.value(&tok, "a MAC address like 00:00:5e:00:01:01")?;
                self.spec.lladdr = Some(lladdr_value(&v)?);
                Ok(())
            }
            "mtu" => {
                self.once("mtu", &tok)?;
                let v = self.value(&tok, "a number 68..=65535")?;
                let n = number(
                    &v,
                    "mtu",
                    68,
                    65535,
                    " (IPv4 needs at least 68; an IP packet is at most 65535 bytes)",
                )?;
                self.spec.mtu = Some(u32::try_from(n).unwrap_or(u32::MAX));
                Ok(())
            }
            // FreeBSD's VRRPv3 keywords (sbin/ifconfig/carp.c since FreeBSD 15).
            "carpver" => {
                self.once("carpver", &tok)?;
                let v = self.value(&tok, "2 (CARP) or 3 (VRRPv3)")?;
                let n = number(&v, "carpver", 2, 3, " (2 = CARP, 3 = VRRPv3)")?;
                self.spec.carpver = Some(to_u8(n));
                Ok(())
            }
            "vrrpprio" => {
                self.once("vrrpprio", &tok)?;
                let v = self.value(&tok, "a number 1..=255")?;
                let n = number(&v, "vrrpprio", 1, 255, " (255 = address owner)")?;
                self.spec.vrrpprio = Some(to_u8(n));
                Ok(())
            }
            "vrrpinterval" => {
                self.once("vrrpinterval", &tok)?;
                let v = self.value(&tok, "centiseconds 1..=4095")?;
                let n = number(&v, "vrrpinterval", 1, 4095, " (centiseconds, 12 bits)")?;
                self.spec.vrrpinterval = Some(u16::try_from(n).unwrap_or(u16::MAX));
                Ok(())
            }
            "carpdemote" => {
                self.once("carpdemote", &tok)?;
                let v = self.value(&tok, "a number 0..=255")?;
                let n = number(
                    &v,
                    "carpdemote",
                    0,
                    255,
                    " (the demote counter is one byte)",
                )?;
                self.spec.carpdemote = Some(to_u8(n));
                Ok(())
            }
            "-carpdemote" => Err(tok_err(
                &tok,
                "-carpdemote: only for groups; use -g GROUP -carpdemote [N], or carpdemote N here"
                    .to_string(),
            )),
            "-carppeer" | "-carpdev" | "-description" | "-descr" | "-group" | "-alias"
            | "delete" | "destroy" | "-inet" => Err(tok_err(
                &tok,
                format!(
                    "{}: removing a setting is not supported here; drop it from the config and reload",
                    tok.text
                ),
            )),
            "media" | "mediaopt" | "-mediaopt" | "mode" | "-mode" | "instance" | "inst" => {
                Err(tok_err(
                    &tok,
                    format!(
                        "{}: not applicable to a carp interface (set it on the carpdev; OpenBSD's \
                         ifconfig fails on a carp interface too)",
                        tok.text
                    ),
                ))
            }
            "dhcp" | "autoconf" | "-autoconf" | "rtsol" | "-rtsol" => Err(tok_err(
                &tok,
                format!(
                    "{}: a carp interface's addresses are static; give inet ADDR/LEN or inet6 ADDR/LEN",
                    tok.text
                ),
            )),
            text if text.starts_with('!') => Err(tok_err(
                &tok,
                format!(
                    "{text}: hostname.if shell commands are not run by carpd; use up_script/down_script"
                ),
            )),
            _ => self.bare_address(tok),
        }
    }

    /// A name-like value that is really the next keyword means the value was left out.
    fn name_value(&self, kw: &Tok, v: &Tok, what: &str) -> Result<String, IfconfigError> {
        if VALUE_KEYWORDS.contains(&v.text.as_str()) || matches!(v.text.as_str(), "up" | "down") {
            return Err(tok_err(
                v,
                format!(
                    "{} {}: expected {what}, got the keyword {} (value missing?)",
                    kw.text, v.text, v.text
                ),
            ));
        }
        Ok(v.text.clone())
    }

    /// `inet [alias] ADDR [MASK [BROADCAST]]` or `inet6 [alias] ADDR [PREFIXLEN]` (hostname.if(5)).
    fn family_address(&mut self, kw: &Tok, v6: bool) -> Result<(), IfconfigError> {
        let expected = if v6 {
            "an IPv6 address like 2001:db8::1/64"
        } else {
            "an IPv4 address like 10.0.0.1/24"
        };
        let mut v = self.value(kw, expected)?;
        if v.text == "alias" {
            v = self.value(&v, expected)?;
        }
        let (addr, prefix) = parse_addr(&v)?;
        if addr.is_ipv6() != v6 {
            return Err(tok_err(
                &v,
                format!("{} {}: expected {expected}", kw.text, v.text),
            ));
        }
        self.push_addr(addr, prefix, v)
    }

    /// An address with no family keyword, as in carp(4)'s `ifconfig carp0 192.168.1.1/24 ...`.
    fn bare_address(&mut self, tok: Tok) -> Result<(), IfconfigError> {
        let looks_like_address =
            tok.text.contains(':') || tok.text.chars().next().is_some_and(|c| c.is_ascii_digit());
        if !looks_like_address {
            return Err(tok_err(
                &tok,
                format!(
                    "unknown keyword {:?} (expected vhid, advbase, advskew, pass, carpdev, carppeer, \
                     carpnodes, balancing, state, description, group, up, down, lladdr, mtu, \
                     carpdemote, inet, inet6 or an address)",
                    tok.text
                ),
            ));
        }
        let (addr, prefix) = parse_addr(&tok)?;
        self.push_addr(addr, prefix, tok)
    }

    /// Records an address and takes the positional mask/broadcast (IPv4) or prefixlen (IPv6) after it.
    fn push_addr(
        &mut self,
        addr: IpAddr,
        prefix: Option<u8>,
        tok: Tok,
    ) -> Result<(), IfconfigError> {
        let explicit = prefix.is_some();
        self.addrs.push(PendingAddr {
            addr,
            prefix,
            explicit,
            tok,
        });
        if explicit {
            return Ok(());
        }
        let Some(next) = self.peek() else {
            return Ok(());
        };
        if addr.is_ipv4() {
            // hostname.if's `inet ADDR MASK BROADCAST`; NONE stands for "not given".
            let t = &next.text;
            // A token with a /len is the next address, never a mask.
            let mask_like = !t.contains('/')
                && (t == "NONE"
                    || t.starts_with("0x")
                    || t.starts_with("0X")
                    || (t.contains('.') && t.chars().next().is_some_and(|c| c.is_ascii_digit())));
            if !mask_like {
                return Ok(());
            }
            let mask = next.clone();
            self.pos += 1;
            if mask.text != "NONE" {
                let len = v4_mask_len(&mask)?;
                self.set_last_prefix(len);
            }
            // The broadcast address is always the standard one for carp VIPs; checked, not kept.
            if let Some(b) = self.peek()
                && (b.text == "NONE" || b.text.parse::<Ipv4Addr>().is_ok())
            {
                self.pos += 1;
            }
        } else if !next.text.is_empty() && next.text.chars().all(|c| c.is_ascii_digit()) {
            let len = next.clone();
            self.pos += 1;
            let n = number(
                &len,
                "prefixlen",
                0,
                128,
                " (an IPv6 prefix has at most 128 bits)",
            )?;
            self.set_last_prefix(to_u8(n));
        }
        Ok(())
    }

    fn set_last_prefix(&mut self, len: u8) {
        if let Some(last) = self.addrs.last_mut() {
            last.prefix = Some(len);
            last.explicit = true;
        }
    }

    /// The address a `netmask`/`prefixlen`/`broadcast` keyword applies to, if it may take a length.
    fn last_addr_for(&self, kw: &Tok, needs_len: bool) -> Result<&PendingAddr, IfconfigError> {
        let last = self.addrs.last().ok_or_else(|| {
            tok_err(
                kw,
                format!(
                    "{}: no address before it to apply to (write inet ADDR {} ...)",
                    kw.text, kw.text
                ),
            )
        })?;
        if needs_len && last.explicit {
            return Err(tok_err(
                kw,
                format!(
                    "{}: address {} already has a prefix length; give it once",
                    kw.text, last.tok.text
                ),
            ));
        }
        Ok(last)
    }

    fn netmask(&mut self, kw: &Tok) -> Result<(), IfconfigError> {
        let v = self.value(kw, "a netmask like 255.255.255.0 or 0xffffff00")?;
        let is_v6 = self.last_addr_for(kw, true)?.addr.is_ipv6();
        let len = if is_v6 {
            v6_mask_len(&v)?
        } else {
            v4_mask_len(&v)?
        };
        self.set_last_prefix(len);
        Ok(())
    }

    fn prefixlen(&mut self, kw: &Tok) -> Result<(), IfconfigError> {
        let v = self.value(kw, "a prefix length")?;
        let is_v6 = self.last_addr_for(kw, true)?.addr.is_ipv6();
        let n = if is_v6 {
            number(
                &v,
                "prefixlen",
                0,
                128,
                " (an IPv6 prefix has at most 128 bits)",
            )?
        } else {
            number(
                &v,
                "prefixlen",
                0,
                32,
                " (an IPv4 prefix has at most 32 bits)",
            )?
        };
        self.set_last_prefix(to_u8(n));
        Ok(())
    }

    fn broadcast(&mut self, kw: &Tok) -> Result<(), IfconfigError> {
        let v = self.value(kw, "an IPv4 broadcast address")?;
        if !self.last_addr_for(kw, false)?.addr.is_ipv4() {
            return Err(tok_err(
                kw,
                "broadcast: only for IPv4 addresses".to_string(),
            ));
        }
        if v.text.parse::<Ipv4Addr>().is_err() {
            return Err(tok_err(
                &v,
                format!("broadcast {}: not an IPv4 address", v.text),
            ));
        }
        Ok(())
    }

    fn finish(self) -> Result<IfconfigSpec, IfconfigError> {
        let mut spec = self.spec;
        let mut seen: Vec<IpAddr> = Vec::new();
        for a in &self.addrs {
            if seen.contains(&a.addr) {
                return Err(tok_err(
                    &a.tok,
                    format!("address {}: given twice; give it once", a.addr),
                ));
            }
            seen.push(a.addr);
            let len = a.prefix.unwrap_or(if a.addr.is_ipv4() {
                DEFAULT_V4_PREFIX
            } else {
                DEFAULT_V6_PREFIX
            });
            spec.addresses.push(format!("{}/{len}", a.addr));
        }
        Ok(spec)
    }
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

/// Parses a decimal number in `lo..=hi` as strtonum(3) would; `why` explains the bounds.
fn number(v: &Tok, kw: &str, lo: u64, hi: u64, why: &str) -> Result<u64, IfconfigError> {
    if v.text.is_empty() || !v.text.chars().all(|c| c.is_ascii_digit()) {
        return Err(tok_err(
            v,
            format!("{kw} {}: not a number (expected {lo}..={hi})", v.text),
        ));
    }
    // Saturate instead of overflowing: any huge number is simply out of range.
    let n = v.text.bytes().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    if n < lo || n > hi {
        return Err(tok_err(
            v,
            format!("{kw} {}: out of range {lo}..={hi}{why}", v.text),
        ));
    }
    Ok(n)
}

/// Narrows a value already range-checked to fit a byte.
fn to_u8(n: u64) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// `ADDR` or `ADDR/LEN`, IPv4 or IPv6.
fn parse_addr(tok: &Tok) -> Result<(IpAddr, Option<u8>), IfconfigError> {
    let malformed = || {
        tok_err(
            tok,
            format!(
                "{}: malformed address (expected A.B.C.D[/len] or an IPv6 address[/len])",
                tok.text
            ),
        )
    };
    let (addr_text, len_text) = match tok.text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (tok.text.as_str(), None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| malformed())?;
    let Some(len_text) = len_text else {
        return Ok((addr, None));
    };
    let max: u64 = if addr.is_ipv4() { 32 } else { 128 };
    if len_text.is_empty() || !len_text.chars().all(|c| c.is_ascii_digit()) {
        return Err(malformed());
    }
    let len = len_text.bytes().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    if len > max {
        return Err(tok_err(
            tok,
            format!("{}: prefix length out of range 0..={max}", tok.text),
        ));
    }
    Ok((addr, Some(to_u8(len))))
}

/// A dotted (255.255.255.0) or hex (0xffffff00) IPv4 netmask, which must be contiguous.
fn v4_mask_len(v: &Tok) -> Result<u8, IfconfigError> {
    let t = v.text.as_str();
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"));
    let mask = match hex {
        Some(h) if (1..=8).contains(&h.len()) && h.chars().all(|c| c.is_ascii_hexdigit()) => {
            u32::from_str_radix(h, 16).ok()
        }
        Some(_) => None,
        None => t.parse::<Ipv4Addr>().ok().map(u32::from),
    };
    let Some(mask) = mask else {
        return Err(tok_err(
            v,
            format!(
                "netmask {t}: malformed netmask (expected dotted like 255.255.255.0, hex like \
                 0xffffff00, or write ADDR/LEN)"
            ),
        ));
    };
    if mask.leading_ones() + mask.trailing_zeros() != 32 {
        return Err(tok_err(
            v,
            format!(
                "netmask {t}: not contiguous (ones then zeros, e.g. 255.255.255.0 or 0xffffff00)"
            ),
        ));
    }
    Ok(to_u8(u64::from(mask.leading_ones())))
}

/// An IPv6 netmask such as ffff:ffff:ffff:ffff::, which must be contiguous.
fn v6_mask_len(v: &Tok) -> Result<u8, IfconfigError> {
    let Ok(mask) = v.text.parse::<Ipv6Addr>().map(u128::from) else {
        return Err(tok_err(
            v,
            format!(
                "netmask {}: malformed IPv6 netmask (expected e.g. ffff:ffff:ffff:ffff::, or prefixlen 64)",
                v.text
            ),
        ));
    };
    if mask.leading_ones() + mask.trailing_zeros() != 128 {
        return Err(tok_err(
            v,
            format!("netmask {}: not contiguous (ones then zeros)", v.text),
        ));
    }
    Ok(to_u8(u64::from(mask.leading_ones())))
}

/// The carpnodes list as OpenBSD's setcarp_nodes reads it, but strict about each entry.
fn carpnodes_value(list: &str) -> Result<Vec<(u8, u8)>, String> {
    // strtok(3) skips empty fields, so "1:0,,2:0" is the same list as "1:0,2:0" on OpenBSD.
    let entries: Vec<&str> = list.split(',').filter(|e| !e.is_empty()).collect();
    if entries.is_empty() {
        return Err(format!(
            "carpnodes {list}: no nodes (expected vhid:advskew,... e.g. 1:0,2:100)"
        ));
    }
    if entries.len() > MAX_CARPNODES {
        return Err(format!(
            "carpnodes {list}: {} nodes, at most {MAX_CARPNODES} (CARP_MAXNODES)",
            entries.len()
        ));
    }
    let digits = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some(s.bytes().fold(0u64, |acc, d| {
            acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        }))
    };
    let mut nodes: Vec<(u8, u8)> = Vec::with_capacity(entries.len());
    for e in entries {
        let parsed = e
            .split_once(':')
            .and_then(|(v, s)| Some((digits(v)?, digits(s)?)));
        let Some((vhid, skew)) = parsed else {
            return Err(format!(
                "carpnodes {list}: entry {e:?} is not vhid:advskew (e.g. 1:100)"
            ));
        };
        // OpenBSD's ifconfig refuses vhid >= 255 here, and a 0 would end the kernel's node list.
        if !(1..=254).contains(&vhid) {
            return Err(format!(
                "carpnodes {list}: vhid {vhid} out of range 1..=254 (0 ends OpenBSD's node list and \
                 its ifconfig refuses 255 in carpnodes)"
            ));
        }
        if skew > 254 {
            return Err(format!(
                "carpnodes {list}: advskew {skew} out of range 0..=254 (255 is reserved for bow-out adverts)"
            ));
        }
        let (vhid, skew) = (to_u8(vhid), to_u8(skew));
        if nodes.iter().any(|&(v, _)| v == vhid) {
            return Err(format!(
                "carpnodes {list}: vhid {vhid} appears twice (each carpnode needs its own vhid)"
            ));
        }
        nodes.push((vhid, skew));
    }
    // The kernel keeps nodes in ascending vhid order; position i is bit i of the balancing mask.
    nodes.sort_unstable();
    Ok(nodes)
}

/// Six colon-separated hex bytes (one or two digits each, as ether_aton(3) takes them).
fn lladdr_value(v: &Tok) -> Result<[u8; 6], IfconfigError> {
    if v.text == "random" {
        return Err(tok_err(
            v,
            "lladdr random: not supported (a carp interface's MAC is 00:00:5e:00:01:<vhid>)"
                .to_string(),
        ));
    }
    let malformed = || {
        tok_err(
            v,
            format!(
                "lladdr {}: malformed (expected six colon-separated hex bytes like 00:00:5e:00:01:01)",
                v.text
            ),
        )
    };
    let mut mac = [0u8; 6];
    let mut parts = v.text.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(malformed)?;
        if !(1..=2).contains(&part.len()) || !part.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| malformed())?;
    }
    if parts.next().is_some() {
        return Err(malformed());
    }
    Ok(mac)
}

/// Why `name` cannot be an interface name, if it cannot.
fn check_ifname(name: &str) -> Result<(), String> {
    check_name_chars(name)?;
    if name == "." || name == ".." {
        return Err("not a valid interface name".to_string());
    }
    Ok(())
}

/// Why `name` cannot be an interface group, if it cannot (OpenBSD ifconfig(8)'s `group` rules).
fn check_group(name: &str) -> Result<(), String> {
    check_name_chars(name)?;
    if name.ends_with(|c: char| c.is_ascii_digit()) {
        return Err("ends with a digit (OpenBSD reserves those names for interfaces)".to_string());
    }
    Ok(())
}

fn check_name_chars(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} bytes is too long, at most {MAX_NAME_LEN} (IFNAMSIZ)",
            name.len()
        ));
    }
    if name.starts_with('-') {
        return Err("must not start with '-' (it would read as an option)".to_string());
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '"' | '\'' | '\\' | '#'))
    {
        return Err("contains whitespace, a control character or one of / \" ' \\ #".to_string());
    }
    Ok(())
}

/// Writes `s` as one token: bare when that is unambiguous, else double-quoted with \" and \\.
fn write_word(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        tokenize(line)
            .map(|t| t.into_iter().map(|t| t.text).collect())
            .unwrap_or_default()
    }

    #[test]
    fn tokenizer_quotes_escapes_comments() {
        assert_eq!(
            texts(r#"description "INSIDE WAN" pass 'a b'"#),
            ["description", "INSIDE WAN", "pass", "a b"]
        );
        assert_eq!(texts(r#"pass "a\"b\\c""#), ["pass", r#"a"b\c"#]);
        assert_eq!(texts("pass ab#c # comment\nup"), ["pass", "ab#c", "up"]);
        assert_eq!(
            texts("carpnodes 1:0 \\\n  balancing ip"),
            ["carpnodes", "1:0", "balancing", "ip"]
        );
        assert_eq!(texts(r"pass a\ b"), ["pass", "a b"]);
        assert_eq!(texts("pass ''"), ["pass", ""]);
        let e = tokenize("description \"open").unwrap_err();
        assert_eq!(e.token_index, 1);
        assert_eq!(
            e.message,
            "unterminated \" quote in token \"open: close it with \""
        );
    }

    #[test]
    fn netmask_forms() {
        let t = |s: &str| {
            v4_mask_len(&Tok {
                text: s.to_string(),
                index: 0,
            })
        };
        assert_eq!(t("255.255.255.0"), Ok(24));
        assert_eq!(t("0xffffff00"), Ok(24));
        assert_eq!(t("0XFFFFFFF0"), Ok(28));
        assert_eq!(t("0.0.0.0"), Ok(0));
        assert_eq!(t("255.255.255.255"), Ok(32));
        assert!(t("255.0.255.0").is_err());
        assert!(t("0x").is_err());
        assert!(t("0x1ffffffff").is_err());
        assert!(t("255.255.255").is_err());
    }

    #[test]
    fn number_saturates_instead_of_overflowing() {
        let tok = Tok {
            text: "99999999999999999999999999".to_string(),
            index: 2,
        };
        let e = number(&tok, "vhid", 1, 255, "").unwrap_err();
        assert_eq!(
            e.message,
            "vhid 99999999999999999999999999: out of range 1..=255"
        );
    }

    #[test]
    fn display_quotes_only_when_needed() {
        let spec = IfconfigSpec {
            pass: Some("a \"b\"".to_string()),
            description: Some("x".to_string()),
            ..IfconfigSpec::default()
        };
        assert_eq!(spec.to_string(), r#"pass "a \"b\"" description x"#);
        assert_eq!(parse_ifconfig_line(&spec.to_string()), Ok(spec));
    }

    #[test]
    fn demote_command_display() {
        let c = IfconfigCommand::GroupDemote {
            group: "carp".into(),
            change: DemoteChange::Adjust(-50),
        };
        assert_eq!(c.to_string(), "-g carp -carpdemote 50");
    }
}
