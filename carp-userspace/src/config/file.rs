//! The `[[interface]]` table as written (`RawInterface`) and its checks, key by key, with the file's
//! line numbers (`Cx`); an `ifconfig = '...'` line is parsed by `config::ifconfig` and merged here.

use super::{
    Balancing, CarpNode, ConfigError, IfAddr, InitialState, InterfaceConfig, Warning, ifconfig,
    parse_carpnodes, read_secret, vrrp, world_readable,
};
use std::{
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use crate::auth::Key;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    pub(super) name: Option<Spanned<String>>,
    pub(super) carpdev: Option<Spanned<String>>,
    pub(super) vhid: Option<Spanned<i64>>,
    pub(super) pass: Option<Spanned<String>>,
    pub(super) pass_file: Option<Spanned<String>>,
    pub(super) advbase: Option<Spanned<i64>>,
    pub(super) advskew: Option<Spanned<i64>>,
    pub(super) addresses: Option<Spanned<Vec<String>>>,
    pub(super) groups: Option<Spanned<Vec<String>>>,
    pub(super) state: Option<Spanned<String>>,
    pub(super) description: Option<Spanned<String>>,
    pub(super) peer: Option<Spanned<String>>,
    pub(super) balancing: Option<Spanned<String>>,
    pub(super) carpnodes: Option<Spanned<String>>,
    pub(super) up_script: Option<Spanned<String>>,
    pub(super) down_script: Option<Spanned<String>>,
    pub(super) ifconfig: Option<Spanned<String>>,
    // VRRP keys, validated in `vrrp.rs`.
    pub(super) protocol: Option<Spanned<String>>,
    pub(super) vrid: Option<Spanned<i64>>,
    pub(super) priority: Option<Spanned<i64>>,
    pub(super) interval: Option<Spanned<i64>>,
    pub(super) preempt: Option<Spanned<bool>>,
    pub(super) accept_mode: Option<Spanned<bool>>,
    pub(super) unicast_peers: Option<Spanned<Vec<String>>>,
    pub(super) checksum: Option<Spanned<String>>,
}

pub(super) struct Cx<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    /// What was accepted but should be known; moved into `Config::warnings`.
    pub(super) warnings: std::cell::RefCell<Vec<Warning>>,
}

impl Cx<'_> {
    pub(super) fn warn(&self, w: Warning) {
        self.warnings.borrow_mut().push(w);
    }

    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    pub(super) fn err(&self, span: &Range<usize>, message: String) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            line: Some(self.line(span)),
            message,
        }
    }

    pub(super) fn ranged(
        &self,
        v: &Spanned<i64>,
        lo: i64,
        hi: i64,
        ctx: &str,
        key: &str,
    ) -> Result<u8, ConfigError> {
        let n = *v.get_ref();
        if n < lo || n > hi {
            return Err(self.err(
                &v.span(),
                format!("{ctx}: {key} = {n}: out of range {lo}..={hi}"),
            ));
        }
        Ok(n as u8)
    }

    pub(super) fn interface(&self, mut raw: RawInterface) -> Result<InterfaceConfig, ConfigError> {
        let name = match &raw.name {
            Some(n) => n.clone(),
            None => {
                let span = [raw.carpdev.as_ref().map(|s| s.span())]
                    .into_iter()
                    .flatten()
                    .next()
                    .unwrap_or(0..0);
                return Err(self.err(&span, "interface: name is missing".into()));
            }
        };
        let ctx = format!("interface {}", name.get_ref());
        let n = name.get_ref();
        if n.is_empty() || n.len() > 15 || n.contains(['/', ' ', '\t']) {
            return Err(self.err(
                &name.span(),
                format!("{ctx}: name = {n:?}: not a valid interface name (1..15 bytes, no '/' or spaces)"),
            ));
        }
        if let Some(line) = raw.ifconfig.take() {
            self.merge_ifconfig(&ctx, &line, &mut raw)?;
        }
        let name_span = name.span();
        let vrrp = self.take_vrrp(&ctx, &name_span, &mut raw)?;
        let missing = |key: &str| self.err(&name_span, format!("{ctx}: {key} is missing"));

        let carpdev = raw.carpdev.as_ref().ok_or_else(|| missing("carpdev"))?;
        let cd = carpdev.get_ref();
        if cd.is_empty() || cd.len() > 15 || cd.contains(['/', ' ']) || cd == n {
            return Err(self.err(
                &carpdev.span(),
                format!("{ctx}: carpdev = {cd:?}: not a valid parent interface name"),
            ));
        }

        // carpnodes: the leader (lowest vhid) gives the interface's vhid and advskew.
        let mut nodes: Vec<(u8, u8)> = Vec::new();
        if let Some(cn) = &raw.carpnodes {
            nodes = parse_carpnodes(cn.get_ref()).map_err(|m| {
                self.err(
                    &cn.span(),
                    format!("{ctx}: carpnodes = {:?}: {m}", cn.get_ref()),
                )
            })?;
            // The normalised output repeats the leader's vhid and advskew; anything else is a mistake.
            if nodes.len() > 1 {
                let (lv, ls) = nodes[0];
                for (key, v, want) in [("vhid", &raw.vhid, lv), ("advskew", &raw.advskew, ls)] {
                    if let Some(v) = v
                        && *v.get_ref() != i64::from(want)
                    {
                        return Err(self.err(
                            &v.span(),
                            format!(
                                "{ctx}: {key} = {}: give each node's vhid and advskew inside carpnodes only (e.g. carpnodes = \"1:0,2:100\")",
                                v.get_ref()
                            ),
                        ));
                    }
                }
            }
        }
        let node = nodes.first().copied();

        let vhid = match (&raw.vhid, node) {
            (Some(v), _) => self.ranged(v, 1, 255, &ctx, "vhid")?,
            (None, Some((v, _))) => v,
            (None, None) => return Err(missing("vhid")),
        };
        if let (Some(v), Some((nv, _))) = (&raw.vhid, node)
            && nv != vhid
        {
            return Err(self.err(
                &v.span(),
                format!("{ctx}: vhid = {vhid}: differs from the carpnodes vhid {nv}"),
            ));
        }

        let pass = match (&raw.pass, &raw.pass_file) {
            (Some(_), Some(pf)) => {
                return Err(self.err(
                    &pf.span(),
                    format!("{ctx}: pass_file: give either pass or pass_file, not both"),
                ));
            }
            (Some(p), None) => {
                Key::from_passphrase(p.get_ref())
                    .map_err(|e| self.err(&p.span(), format!("{ctx}: pass: {e}")))?;
                if !p.get_ref().is_empty() && world_readable(self.file) {
                    // OpenBSD's netstart also only warns (and fixes the mode) for a hostname.carpN
                    // file others can read: refusing would stop a running cluster at its next
                    // start for a file mode.
                    self.warn(Warning::new(format!(
                        "{}:{}: {ctx}: pass is written in a file every user can read: anyone on \
                         this host can take over the vhid; use pass_file or `chmod 600 {}`",
                        self.file.display(),
                        self.line(&p.span()),
                        self.file.display()
                    )));
                }
                p.get_ref().clone()
            }
            (None, Some(pf)) => {
                let path = self.relative(pf.get_ref());
                let text = read_secret(&path).map_err(|e| {
                    self.err(
                        &pf.span(),
                        format!("{ctx}: pass_file = {:?}: {e}", pf.get_ref()),
                    )
                })?;
                let p = text.trim_end_matches(['\n', '\r']).to_string();
                Key::from_passphrase(&p).map_err(|e| {
                    self.err(
                        &pf.span(),
                        format!("{ctx}: pass_file = {:?}: {e}", pf.get_ref()),
                    )
                })?;
                p
            }
            // No passphrase: the key of 20 zero bytes, as BSD does with an empty pass.
            (None, None) => String::new(),
        };
        // A VRRP interface has no CARP key (its VRRPv2 pass was taken out above).
        if pass.is_empty() && vrrp.is_none() {
            // Legitimate (a BSD carp without `pass` keys its HMAC with 20 zero bytes), but it
            // should not go unnoticed.
            self.warn(Warning::new(format!(
                "{}: {ctx}: no passphrase: the HMAC key is 20 zero bytes, as a BSD carp without \
                 `pass` uses; anyone on the segment can forge this vhid's adverts",
                self.file.display()
            )));
        }

        let advbase = match &raw.advbase {
            Some(v) => self.ranged(v, 0, 254, &ctx, "advbase")?,
            None => 1,
        };
        let advskew = match (&raw.advskew, node) {
            (Some(v), _) => self.ranged(v, 0, 254, &ctx, "advskew")?,
            (None, Some((_, s))) => s,
            (None, None) => 0,
        };

        let mut addresses = Vec::new();
        if let Some(addrs) = &raw.addresses {
            for a in addrs.get_ref() {
                let parsed: IfAddr = a.parse().map_err(|m: String| {
                    self.err(&addrs.span(), format!("{ctx}: addresses: {m}"))
                })?;
                if addresses.iter().any(|x: &IfAddr| x.addr == parsed.addr) {
                    return Err(self.err(
                        &addrs.span(),
                        format!("{ctx}: addresses: {} is listed twice", parsed.addr),
                    ));
                }
                addresses.push(parsed);
            }
        }
        if addresses.is_empty() {
            let span = raw
                .addresses
                .as_ref()
                .map(|a| a.span())
                .unwrap_or(name_span.clone());
            return Err(self.err(
                &span,
                format!("{ctx}: addresses: at least one virtual address is needed"),
            ));
        }

        let groups = match &raw.groups {
            None => Vec::new(),
            Some(g) => {
                let mut out: Vec<String> = Vec::new();
                for grp in g.get_ref() {
                    if grp.is_empty()
                        || grp.len() > 15
                        || grp.ends_with(|c: char| c.is_ascii_digit())
                    {
                        return Err(self.err(
                            &g.span(),
                            format!("{ctx}: groups: {grp:?}: a group name is 1..15 bytes and must not end in a digit"),
                        ));
                    }
                    if grp != crate::engine::DEFAULT_GROUP && !out.contains(grp) {
                        out.push(grp.clone());
                    }
                }
                out
            }
        };

        let state = match &raw.state {
            None => None,
            Some(s) => match s.get_ref().to_ascii_lowercase().as_str() {
                "master" => Some(InitialState::Master),
                "backup" => Some(InitialState::Backup),
                other => {
                    return Err(self.err(
                        &s.span(),
                        format!("{ctx}: state = {other:?}: use \"master\" or \"backup\""),
                    ));
                }
            },
        };

        let peer = match &raw.peer {
            None => None,
            Some(p) => {
                let ip: IpAddr = p.get_ref().parse().map_err(|_| {
                    self.err(
                        &p.span(),
                        format!("{ctx}: peer = {:?}: not an IP address", p.get_ref()),
                    )
                })?;
                if !ip.is_ipv4() || ip.is_multicast() {
                    return Err(self.err(
                        &p.span(),
                        format!("{ctx}: peer = {ip}: carppeer must be a unicast IPv4 address"),
                    ));
                }
                Some(ip)
            }
        };

        let mut balancing = match &raw.balancing {
            None => Balancing::None,
            Some(b) => Balancing::parse(b.get_ref()).ok_or_else(|| {
                self.err(
                    &b.span(),
                    format!(
                        "{ctx}: balancing = {:?}: use none, ip, ip-stealth, ip-unicast or arp",
                        b.get_ref()
                    ),
                )
            })?,
        };
        // OpenBSD: more than one carpnode with balancing none silently means ip.
        if nodes.len() > 1 && balancing == Balancing::None {
            balancing = Balancing::Ip;
        }
        if balancing != Balancing::None && peer.is_some() {
            let span = raw
                .peer
                .as_ref()
                .map(|p| p.span())
                .unwrap_or(name_span.clone());
            return Err(self.err(
                &span,
                format!(
                    "{ctx}: peer: a unicast carppeer cannot be combined with balancing {}",
                    balancing.as_str()
                ),
            ));
        }
        if balancing == Balancing::Arp && !addresses.iter().any(|a| a.addr.is_ipv4()) {
            let span = raw
                .balancing
                .as_ref()
                .map(|p| p.span())
                .unwrap_or(name_span.clone());
            return Err(self.err(
                &span,
                format!(
                    "{ctx}: balancing = \"arp\": needs an IPv4 address (ARP balances IPv4 only)"
                ),
            ));
        }
        let carpnodes = if nodes.is_empty() {
            vec![CarpNode { vhid, advskew }]
        } else {
            nodes
                .iter()
                .map(|&(vhid, advskew)| CarpNode { vhid, advskew })
                .collect()
        };

        let script =
            |v: &Option<Spanned<String>>, key: &str| -> Result<Option<PathBuf>, ConfigError> {
                match v {
                    None => Ok(None),
                    Some(s) if Path::new(s.get_ref()).is_absolute() => Ok(Some(s.get_ref().into())),
                    Some(s) => Err(self.err(
                        &s.span(),
                        format!("{ctx}: {key} = {:?}: must be an absolute path", s.get_ref()),
                    )),
                }
            };

        Ok(InterfaceConfig {
            name: n.clone(),
            carpdev: cd.clone(),
            vhid,
            pass,
            advbase,
            advskew,
            addresses,
            groups,
            state,
            description: raw.description.map(|d| d.into_inner()),
            peer,
            balancing,
            carpnodes,
            up_script: script(&raw.up_script, "up_script")?,
            down_script: script(&raw.down_script, "down_script")?,
            vrrp,
        })
    }

    pub(super) fn relative(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.into();
        }
        self.file.parent().unwrap_or(Path::new(".")).join(p)
    }

    /// Fills the interface's keys from an OpenBSD ifconfig line; a key given both ways is an error.
    pub(super) fn merge_ifconfig(
        &self,
        ctx: &str,
        line: &Spanned<String>,
        raw: &mut RawInterface,
    ) -> Result<(), ConfigError> {
        let span = line.span();
        let spec = ifconfig::parse_ifconfig_line(line.get_ref())
            .map_err(|m| self.err(&span, format!("{ctx}: ifconfig: {m}")))?;
        macro_rules! set {
            ($field:ident, $key:literal, $value:expr) => {
                if let Some(v) = $value {
                    if raw.$field.is_some() {
                        return Err(self.err(
                            &span,
                            format!(
                                concat!(
                                    "{}: ifconfig: ",
                                    $key,
                                    " is also given as a key; give it once"
                                ),
                                ctx
                            ),
                        ));
                    }
                    raw.$field = Some(Spanned::new(span.clone(), v));
                }
            };
        }
        set!(vhid, "vhid", spec.vhid.map(i64::from));
        set!(advbase, "advbase", spec.advbase.map(i64::from));
        set!(advskew, "advskew", spec.advskew.map(i64::from));
        if let (Some(len), Some(key)) = (spec.pass_cut_from, &spec.pass) {
            self.warn(Warning::with_secret(
                format!(
                    "{}:{}: {ctx}: ifconfig: pass is {len} bytes; OpenBSD's ifconfig copies it \
                     into the 20-byte key with strlcpy, so a BSD peer configured with this line \
                     uses its first {} bytes, and so does carpd: the effective key is {{key}} \
                     (ucarp refuses passphrases over 19 bytes; shorten it on every peer to be clear)",
                    self.file.display(),
                    self.line(&span),
                    ifconfig::MAX_PASS_LEN
                ),
                format!("{key:?}"),
            ));
        }
        set!(pass, "pass", spec.pass);
        set!(carpdev, "carpdev", spec.carpdev);
        set!(peer, "carppeer", spec.carppeer.map(|p| p.to_string()));
        set!(balancing, "balancing", spec.balancing);
        set!(state, "state", spec.state);
        set!(description, "description", spec.description);
        set!(
            protocol,
            "carpver",
            spec.carpver.map(vrrp::carpver_protocol)
        );
        set!(priority, "vrrpprio", spec.vrrpprio.map(i64::from));
        set!(interval, "vrrpinterval", spec.vrrpinterval.map(i64::from));
        set!(
            carpnodes,
            "carpnodes",
            spec.carpnodes.map(|n| {
                n.iter()
                    .map(|(v, s)| format!("{v}:{s}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
        );
        if !spec.addresses.is_empty() {
            set!(addresses, "addresses", Some(spec.addresses));
        }
        if !spec.groups.is_empty() {
            set!(groups, "groups", Some(spec.groups));
        }
        if spec.lladdr.is_some() || spec.mtu.is_some() || spec.carpdemote.is_some() {
            return Err(self.err(
                &span,
                format!("{ctx}: ifconfig: lladdr, mtu and carpdemote are not supported in the config yet"),
            ));
        }
        if spec.up == Some(false) {
            return Err(self.err(
                &span,
                format!("{ctx}: ifconfig: \"down\" is not supported in a config (remove the interface instead)"),
            ));
        }
        Ok(())
    }
}
