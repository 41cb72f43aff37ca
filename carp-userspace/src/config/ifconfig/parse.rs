//! The parser of one hostname.carpN line or ifconfig argument list: keyword by keyword, with OpenBSD's
//! rules and the two deliberate differences of the module doc.

use super::{
    BALANCING_MODES, DEFAULT_V4_PREFIX, DEFAULT_V6_PREFIX, IfconfigError, IfconfigSpec,
    MAX_DESCRIPTION_LEN, MAX_PASS_LEN,
    lex::{Tok, tok_err},
    value::{
        carpnodes_value, check_group, check_ifname, lladdr_value, number, parse_addr, to_u8,
        v4_mask_len, v6_mask_len,
    },
};
use std::net::{IpAddr, Ipv4Addr};

/// An address as written, before defaults and duplicate checks.
#[derive(Debug)]
pub(super) struct PendingAddr {
    pub(super) addr: IpAddr,
    pub(super) prefix: Option<u8>,
    /// True when the length came from `/len`, `netmask`, `prefixlen` or a positional mask.
    pub(super) explicit: bool,
    pub(super) tok: Tok,
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

pub(super) struct Parser<'a> {
    pub(super) toks: &'a [Tok],
    pub(super) pos: usize,
    pub(super) spec: IfconfigSpec,
    pub(super) addrs: Vec<PendingAddr>,
    /// First token of each key already set, for "given twice" and conflict messages.
    pub(super) seen: Vec<(&'static str, Tok)>,
}

pub(super) fn parse_tokens(toks: &[Tok]) -> Result<IfconfigSpec, IfconfigError> {
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
                let mut v = self.value(&tok, "a passphrase of at most 19 bytes")?;
                // Errors point at the keyword, not the value: a passphrase must not reach the logs.
                if v.text.len() > MAX_PASS_LEN {
                    // OpenBSD's ifconfig strlcpy's the pass into the 20-byte key: a BSD peer
                    // configured with this very line keys its HMAC with the first 19 bytes, so
                    // that is the key that agrees with it (the caller warns, naming it).
                    if !v.text.is_char_boundary(MAX_PASS_LEN) {
                        return Err(tok_err(
                            &tok,
                            format!(
                                "pass: {} bytes, cut at {MAX_PASS_LEN} by OpenBSD's ifconfig (the key \
                                 is 20 bytes including its NUL) inside a UTF-8 character; use a \
                                 passphrase of at most {MAX_PASS_LEN} bytes",
                                v.text.len()
                            ),
                        ));
                    }
                    self.spec.pass_cut_from = Some(v.text.len());
                    v.text.truncate(MAX_PASS_LEN);
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
