//! The VRRP keys of an `[[interface]]` table: `protocol = "carp" | "vrrp3" | "vrrp2"` (default carp)
//! and, for the VRRP kinds, `vrid`, `priority`, `interval`, `preempt`, `accept_mode`,
//! `unicast_peers` and `checksum`, in VRRP's own terms. This module owns their validation into a
//! [`VrrpConfig`] and the refusal of keys that belong to the other protocol, with the fix in the error.
//!
//! A VRRP interface reuses the CARP machinery around it (carpdev, addresses, groups, state, hooks):
//! its VRID becomes the interface's `vhid`, so a vhid and a VRID with the same number on one carpdev
//! are refused by the same duplicate check (CARP and VRRPv2 cannot share an id on a segment: both
//! start with 0x21 on protocol 112). FreeBSD's ifconfig keywords `carpver 3`, `vrrpprio N` and
//! `vrrpinterval N` arrive here through the ifconfig line as `protocol`, `priority` and `interval`.

use std::net::IpAddr;

use serde::Serialize;
use toml::Spanned;

use carp_common::vrrp::{VRRP_PRIORITY_DEFAULT, VRRP_PRIORITY_OWNER, VRRP3_DEFAULT_INTERVAL_CS};

use super::{ConfigError, Cx, RawInterface};
use crate::wire::vrrp::{ChecksumForm, VrrpVersion};
use crate::wire::vrrp2::Vrrp2Auth;

/// Which protocol a carp interface speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// CARP (OpenBSD/FreeBSD/ucarp), the default.
    #[default]
    Carp,
    /// VRRPv3, RFC 9568.
    Vrrp3,
    /// VRRPv2, RFC 3768.
    Vrrp2,
}

impl Protocol {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Carp => "carp",
            Protocol::Vrrp3 => "vrrp3",
            Protocol::Vrrp2 => "vrrp2",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "carp" => Some(Protocol::Carp),
            "vrrp3" => Some(Protocol::Vrrp3),
            "vrrp2" => Some(Protocol::Vrrp2),
            _ => None,
        }
    }
}

/// A VRRP interface's settings, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpConfig {
    /// `vrrp3` or `vrrp2`.
    #[serde(serialize_with = "version_str", rename = "protocol")]
    pub version: VrrpVersion,
    /// The virtual router id, 1..=255 (also the interface's vhid).
    pub vrid: u8,
    /// 1..=254, or 255 for the address owner (always MASTER, ignores adverts).
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2's whole seconds times 100).
    #[serde(skip)]
    pub interval_cs: u16,
    /// The interval as configured: centiseconds for v3, seconds for v2.
    pub interval: u16,
    /// Whether a higher-priority backup takes over from a lower-priority master (default true).
    pub preempt: bool,
    /// Whether the master accepts packets to the virtual addresses it does not own (default true, as
    /// keepalived without `vrrp_strict` and FRR behave; RFC 9568's default is false).
    pub accept_mode: bool,
    /// Unicast peers instead of the multicast group; adverts go to each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unicast_peers: Vec<IpAddr>,
    /// VRRPv3 over IPv4: send with the IPv4 pseudo-header (what keepalived/FRR/FreeBSD accept) or
    /// message-only (RFC 9568's letter). Either is accepted on receive.
    #[serde(serialize_with = "form_str")]
    pub checksum: ChecksumForm,
    /// VRRPv2 authentication (type 1 only with `pass`, accepted for migration and insecure).
    #[serde(skip)]
    pub auth: Vrrp2Auth,
}

impl VrrpConfig {
    /// The protocol this config is for.
    pub fn protocol(&self) -> Protocol {
        match self.version {
            VrrpVersion::V3 => Protocol::Vrrp3,
            VrrpVersion::V2 => Protocol::Vrrp2,
        }
    }
}

fn version_str<S: serde::Serializer>(v: &VrrpVersion, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match v {
        VrrpVersion::V3 => "vrrp3",
        VrrpVersion::V2 => "vrrp2",
    })
}

fn form_str<S: serde::Serializer>(v: &ChecksumForm, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match v {
        ChecksumForm::PseudoHeader => "pseudo-header",
        ChecksumForm::MessageOnly => "message-only",
    })
}

/// Keys of one protocol given on an interface of the other, with the hint printed after the key.
const CARP_ONLY: [(&str, &str); 4] = [
    (
        "advbase",
        "use interval (VRRPv3: centiseconds, VRRPv2: seconds)",
    ),
    ("advskew", "use priority (1..=254, higher wins)"),
    ("carpnodes", "VRRP has no load balancing"),
    ("balancing", "VRRP has no load balancing"),
];

impl Cx<'_> {
    /// Takes the VRRP keys out of `raw` and validates them; `None` for a CARP interface.
    ///
    /// On a VRRP interface the VRID is written into `raw.vhid` and a VRRPv2 `pass` is taken out of
    /// `raw`, so the shared CARP validation that follows never treats it as an HMAC key.
    pub(super) fn take_vrrp(
        &self,
        ctx: &str,
        name_span: &std::ops::Range<usize>,
        raw: &mut RawInterface,
    ) -> Result<Option<VrrpConfig>, ConfigError> {
        let protocol = match &raw.protocol {
            None => Protocol::Carp,
            Some(p) => Protocol::parse(p.get_ref()).ok_or_else(|| {
                self.err(
                    &p.span(),
                    format!(
                        "{ctx}: protocol = {:?}: use \"carp\", \"vrrp3\" or \"vrrp2\"",
                        p.get_ref()
                    ),
                )
            })?,
        };
        let version = match protocol {
            Protocol::Carp => {
                let vrrp_keys = [
                    ("vrid", raw.vrid.as_ref().map(Spanned::span)),
                    ("priority", raw.priority.as_ref().map(Spanned::span)),
                    ("interval", raw.interval.as_ref().map(Spanned::span)),
                    ("preempt", raw.preempt.as_ref().map(Spanned::span)),
                    ("accept_mode", raw.accept_mode.as_ref().map(Spanned::span)),
                    (
                        "unicast_peers",
                        raw.unicast_peers.as_ref().map(Spanned::span),
                    ),
                    ("checksum", raw.checksum.as_ref().map(Spanned::span)),
                ];
                if let Some((key, Some(span))) = vrrp_keys.into_iter().find(|(_, s)| s.is_some()) {
                    return Err(self.err(
                        &span,
                        format!(
                            "{ctx}: {key}: a VRRP key on a CARP interface; set protocol = \"vrrp3\" or \"vrrp2\" (CARP uses vhid, advbase, advskew and the [carp] preempt)"
                        ),
                    ));
                }
                return Ok(None);
            }
            Protocol::Vrrp3 => VrrpVersion::V3,
            Protocol::Vrrp2 => VrrpVersion::V2,
        };
        let p = protocol.as_str();
        for (key, hint) in CARP_ONLY {
            let span = match key {
                "advbase" => raw.advbase.as_ref().map(Spanned::span),
                "advskew" => raw.advskew.as_ref().map(Spanned::span),
                "carpnodes" => raw.carpnodes.as_ref().map(Spanned::span),
                _ => raw.balancing.as_ref().map(Spanned::span),
            };
            if let Some(span) = span {
                return Err(self.err(&span, format!("{ctx}: {key}: not a {p} setting; {hint}")));
            }
        }
        if let Some(peer) = &raw.peer {
            return Err(self.err(
                &peer.span(),
                format!("{ctx}: peer: for {p} give unicast_peers = [\"ADDR\", ...]"),
            ));
        }
        if let Some(pf) = &raw.pass_file {
            return Err(self.err(
                &pf.span(),
                format!("{ctx}: pass_file: {p} takes no key file (VRRPv2 `pass` is a clear-text password)"),
            ));
        }

        // The VRID: `vrid`, or `vhid` (FreeBSD's ifconfig names the VRID with vhid).
        let vrid = match (&raw.vrid, &raw.vhid) {
            (Some(v), Some(h)) if v.get_ref() != h.get_ref() => {
                return Err(self.err(
                    &v.span(),
                    format!(
                        "{ctx}: vrid = {}: differs from vhid = {}; give one of them",
                        v.get_ref(),
                        h.get_ref()
                    ),
                ));
            }
            (Some(v), _) | (None, Some(v)) => self.ranged(v, 1, 255, ctx, "vrid")?,
            (None, None) => {
                return Err(self.err(name_span, format!("{ctx}: vrid is missing (1..=255)")));
            }
        };
        raw.vhid = Some(Spanned::new(
            raw.vrid
                .as_ref()
                .or(raw.vhid.as_ref())
                .map_or(0..0, Spanned::span),
            i64::from(vrid),
        ));

        let priority = match &raw.priority {
            None => VRRP_PRIORITY_DEFAULT,
            Some(v) if *v.get_ref() == 0 => {
                return Err(self.err(
                    &v.span(),
                    format!("{ctx}: priority = 0: 0 is only sent by a stopping master; use 1..=254 (or 255 for the address owner)"),
                ));
            }
            Some(v) => self.ranged(v, 1, i64::from(VRRP_PRIORITY_OWNER), ctx, "priority")?,
        };

        let (interval, interval_cs) = match (version, &raw.interval) {
            (VrrpVersion::V3, None) => (VRRP3_DEFAULT_INTERVAL_CS, VRRP3_DEFAULT_INTERVAL_CS),
            (VrrpVersion::V2, None) => (1, 100),
            (VrrpVersion::V3, Some(v)) => {
                let n = *v.get_ref();
                if !(1..=4095).contains(&n) {
                    return Err(self.err(
                        &v.span(),
                        format!("{ctx}: interval = {n}: VRRPv3 intervals are centiseconds 1..=4095 (100 = 1 s)"),
                    ));
                }
                (n as u16, n as u16)
            }
            (VrrpVersion::V2, Some(v)) => {
                let n = *v.get_ref();
                if !(1..=255).contains(&n) {
                    return Err(self.err(
                        &v.span(),
                        format!(
                            "{ctx}: interval = {n}: VRRPv2 intervals are whole seconds 1..=255"
                        ),
                    ));
                }
                (n as u16, n as u16 * 100)
            }
        };

        let checksum = match (&raw.checksum, version) {
            (None, _) => ChecksumForm::PseudoHeader,
            (Some(c), VrrpVersion::V2) => {
                return Err(self.err(
                    &c.span(),
                    format!("{ctx}: checksum: VRRPv2 has one checksum form (no pseudo-header)"),
                ));
            }
            (Some(c), VrrpVersion::V3) => match c.get_ref().as_str() {
                "pseudo-header" => ChecksumForm::PseudoHeader,
                "message-only" | "rfc9568" => ChecksumForm::MessageOnly,
                other => {
                    return Err(self.err(
                        &c.span(),
                        format!("{ctx}: checksum = {other:?}: use \"pseudo-header\" (keepalived, FRR, FreeBSD; the default) or \"message-only\" (RFC 9568 §5.2.8)"),
                    ));
                }
            },
        };

        let auth = match (raw.pass.take(), version) {
            (None, _) => Vrrp2Auth::None,
            (Some(pw), VrrpVersion::V3) => {
                return Err(self.err(
                    &pw.span(),
                    format!("{ctx}: pass: VRRPv3 has no authentication (RFC 9568); remove pass"),
                ));
            }
            (Some(pw), VrrpVersion::V2) => {
                let a = Vrrp2Auth::simple(pw.get_ref()).ok_or_else(|| {
                    self.err(
                        &pw.span(),
                        format!(
                            "{ctx}: pass: a VRRPv2 password is 1..=8 bytes (keepalived's auth_pass)"
                        ),
                    )
                })?;
                tracing::warn!(
                    "{ctx}: VRRPv2 simple-text authentication (type 1) is insecure: the password is sent in clear; use it only to migrate a keepalived pair"
                );
                a
            }
        };

        let mut unicast_peers = Vec::new();
        if let Some(peers) = &raw.unicast_peers {
            for s in peers.get_ref() {
                let ip: IpAddr = s.parse().map_err(|_| {
                    self.err(
                        &peers.span(),
                        format!("{ctx}: unicast_peers: {s:?} is not an IP address"),
                    )
                })?;
                if ip.is_multicast() || ip.is_unspecified() {
                    return Err(self.err(
                        &peers.span(),
                        format!("{ctx}: unicast_peers: {ip} is not a unicast address"),
                    ));
                }
                if unicast_peers.contains(&ip) {
                    return Err(self.err(
                        &peers.span(),
                        format!("{ctx}: unicast_peers: {ip} is listed twice"),
                    ));
                }
                unicast_peers.push(ip);
            }
        }

        // One family per virtual router (RFC 9568 §5.2.9); VRRPv2 is IPv4 only.
        if let Some(addrs) = &raw.addresses {
            let v6: Vec<bool> = addrs.get_ref().iter().map(|a| a.contains(':')).collect();
            if version == VrrpVersion::V2 && v6.iter().any(|&x| x) {
                return Err(self.err(
                    &addrs.span(),
                    format!(
                        "{ctx}: addresses: VRRPv2 is IPv4 only; use protocol = \"vrrp3\" for IPv6"
                    ),
                ));
            }
            if v6.iter().any(|&x| x) && v6.iter().any(|&x| !x) {
                return Err(self.err(
                    &addrs.span(),
                    format!("{ctx}: addresses: a VRRP virtual router is one address family; put IPv4 and IPv6 on two interfaces, each with its own VRID"),
                ));
            }
            if let Some(peer) = unicast_peers.first()
                && v6.first().is_some_and(|&x| x != peer.is_ipv6())
            {
                return Err(self.err(
                    &peers_span(raw),
                    format!("{ctx}: unicast_peers: {peer} is not of the addresses' family"),
                ));
            }
        }

        Ok(Some(VrrpConfig {
            version,
            vrid,
            priority,
            interval_cs,
            interval,
            preempt: raw.preempt.as_ref().is_none_or(|v| *v.get_ref()),
            accept_mode: raw.accept_mode.as_ref().is_none_or(|v| *v.get_ref()),
            unicast_peers,
            checksum,
            auth,
        }))
    }
}

fn peers_span(raw: &RawInterface) -> std::ops::Range<usize> {
    raw.unicast_peers.as_ref().map_or(0..0, Spanned::span)
}

/// The protocol FreeBSD's `carpver N` names: 2 is CARP (FreeBSD's carp(4) cannot speak VRRPv2), 3 is
/// VRRPv3; anything else is refused by the ifconfig parser before it gets here.
pub(super) fn carpver_protocol(carpver: u8) -> String {
    if carpver == 3 { "vrrp3" } else { "carp" }.to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(body: &str) -> Result<crate::config::Config, String> {
        let text = format!("[[interface]]\nname = \"vr0\"\ncarpdev = \"eth0\"\n{body}");
        Config::parse(Path::new("/etc/carp/carp.toml"), &text).map_err(|e| e.to_string())
    }

    fn vrrp(body: &str) -> VrrpConfig {
        parse(body)
            .unwrap_or_else(|e| panic!("{e}"))
            .interfaces
            .remove(0)
            .vrrp
            .expect("a VRRP interface")
    }

    #[test]
    fn defaults_per_rfc() {
        let v = vrrp("protocol = \"vrrp3\"\nvrid = 51\naddresses = [\"10.0.0.1/24\"]\n");
        assert_eq!(v.version, VrrpVersion::V3);
        assert_eq!(v.vrid, 51);
        assert_eq!(v.priority, 100);
        assert_eq!(v.interval_cs, 100);
        assert!(v.preempt, "RFC 9568 §6.1: Preempt_Mode defaults to True");
        assert!(
            v.accept_mode,
            "Accept_Mode defaults to True, as keepalived (not strict) and FRR (RFC 9568: False)"
        );
        assert_eq!(v.checksum, ChecksumForm::PseudoHeader);
        let v2 = vrrp("protocol = \"vrrp2\"\nvrid = 5\naddresses = [\"10.0.0.1/24\"]\n");
        assert_eq!((v2.interval, v2.interval_cs), (1, 100));
    }

    #[test]
    fn vrid_becomes_the_vhid_and_collides_with_carp() {
        let c = parse("protocol = \"vrrp3\"\nvrid = 7\naddresses = [\"10.0.0.1/24\"]\n").unwrap();
        assert_eq!(c.interfaces[0].vhid, 7);
        let text = "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 7\naddresses = [\"10.0.0.2/24\"]\n\
                    [[interface]]\nname = \"vr0\"\ncarpdev = \"eth0\"\nprotocol = \"vrrp2\"\nvrid = 7\naddresses = [\"10.0.0.1/24\"]\n";
        let e = Config::parse(Path::new("c.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("vhid = 7: already used on carpdev eth0"), "{e}");
    }

    #[test]
    fn ranges_and_units() {
        let ok = |b: &str| parse(&format!("vrid = 1\naddresses = [\"10.0.0.1/24\"]\n{b}"));
        assert!(ok("protocol = \"vrrp3\"\ninterval = 4095\n").is_ok());
        let e = ok("protocol = \"vrrp3\"\ninterval = 4096\n").unwrap_err();
        assert!(
            e.contains(":7: interface vr0: interval = 4096: VRRPv3 intervals are centiseconds"),
            "{e}"
        );
        let e = ok("protocol = \"vrrp2\"\ninterval = 256\n").unwrap_err();
        assert!(e.contains("whole seconds 1..=255"), "{e}");
        let v =
            vrrp("protocol = \"vrrp2\"\nvrid = 1\ninterval = 3\naddresses = [\"10.0.0.1/24\"]\n");
        assert_eq!(v.interval_cs, 300);
        let e = ok("protocol = \"vrrp3\"\npriority = 0\n").unwrap_err();
        assert!(
            e.contains("priority = 0: 0 is only sent by a stopping master"),
            "{e}"
        );
        assert!(
            ok("protocol = \"vrrp3\"\npriority = 255\n").is_ok(),
            "owner"
        );
        let e = ok("protocol = \"vrrp3\"\npriority = 256\n").unwrap_err();
        assert!(e.contains("out of range 1..=255"), "{e}");
        let e = parse("protocol = \"vrrp3\"\naddresses = [\"10.0.0.1/24\"]\n").unwrap_err();
        assert!(e.contains("vrid is missing"), "{e}");
        let e = ok("protocol = \"vrrp4\"\n").unwrap_err();
        assert!(e.contains("use \"carp\", \"vrrp3\" or \"vrrp2\""), "{e}");
    }

    #[test]
    fn keys_of_the_other_protocol_are_refused_with_the_fix() {
        let base = "vrid = 1\naddresses = [\"10.0.0.1/24\"]\n";
        for (extra, needle) in [
            (
                "advskew = 10\n",
                "advskew: not a vrrp3 setting; use priority",
            ),
            (
                "advbase = 1\n",
                "advbase: not a vrrp3 setting; use interval",
            ),
            ("balancing = \"ip\"\n", "balancing: not a vrrp3 setting"),
            ("peer = \"10.0.0.2\"\n", "for vrrp3 give unicast_peers"),
            ("pass = \"x\"\n", "VRRPv3 has no authentication"),
        ] {
            let e = parse(&format!("protocol = \"vrrp3\"\n{base}{extra}")).unwrap_err();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        let e = parse("vhid = 1\naddresses = [\"10.0.0.1/24\"]\npriority = 50\n").unwrap_err();
        assert!(
            e.contains("priority: a VRRP key on a CARP interface; set protocol"),
            "{e}"
        );
        // Control: the same CARP interface without the VRRP key is fine.
        assert!(
            parse("vhid = 1\naddresses = [\"10.0.0.1/24\"]\n")
                .unwrap()
                .interfaces[0]
                .vrrp
                .is_none()
        );
    }

    #[test]
    fn families_peers_checksum_and_auth() {
        let e = parse("protocol = \"vrrp2\"\nvrid = 1\naddresses = [\"2001:db8::1/64\"]\n")
            .unwrap_err();
        assert!(e.contains("VRRPv2 is IPv4 only"), "{e}");
        let e = parse(
            "protocol = \"vrrp3\"\nvrid = 1\naddresses = [\"10.0.0.1/24\", \"2001:db8::1/64\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("one address family"), "{e}");
        let v = vrrp(
            "protocol = \"vrrp3\"\nvrid = 1\naddresses = [\"fe80::1/64\", \"2001:db8::1/64\"]\n",
        );
        assert_eq!(v.version, VrrpVersion::V3);
        let v = vrrp(
            "protocol = \"vrrp3\"\nvrid = 1\naddresses = [\"10.0.0.1/24\"]\nunicast_peers = [\"10.0.0.12\"]\nchecksum = \"message-only\"\npreempt = false\naccept_mode = true\n",
        );
        assert_eq!(
            v.unicast_peers,
            vec!["10.0.0.12".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(v.checksum, ChecksumForm::MessageOnly);
        assert!(!v.preempt && v.accept_mode);
        let e = parse("protocol = \"vrrp3\"\nvrid = 1\naddresses = [\"10.0.0.1/24\"]\nunicast_peers = [\"2001:db8::2\"]\n")
            .unwrap_err();
        assert!(e.contains("not of the addresses' family"), "{e}");
        let e = parse("protocol = \"vrrp2\"\nvrid = 1\naddresses = [\"10.0.0.1/24\"]\nchecksum = \"message-only\"\n")
            .unwrap_err();
        assert!(e.contains("VRRPv2 has one checksum form"), "{e}");
        let v = vrrp(
            "protocol = \"vrrp2\"\nvrid = 1\naddresses = [\"10.0.0.1/24\"]\npass = \"secret12\"\n",
        );
        assert_eq!(v.auth, Vrrp2Auth::simple("secret12").unwrap());
        let e = parse(
            "protocol = \"vrrp2\"\nvrid = 1\naddresses = [\"10.0.0.1/24\"]\npass = \"secret123\"\n",
        )
        .unwrap_err();
        assert!(e.contains("1..=8 bytes"), "{e}");
    }

    #[test]
    fn freebsd_ifconfig_keywords() {
        let c = parse(
            "ifconfig = 'inet 192.0.2.203/24 vhid 1 carpver 3 vrrpprio 150 vrrpinterval 50'\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let v = c.interfaces[0].vrrp.clone().expect("carpver 3 is VRRPv3");
        assert_eq!((v.vrid, v.priority, v.interval_cs), (1, 150, 50));
        // carpver 2 is CARP: the VRRP keywords are then refused.
        let e =
            parse("ifconfig = 'inet 192.0.2.203/24 vhid 1 carpver 2 vrrpprio 150'\n").unwrap_err();
        assert!(e.contains("a VRRP key on a CARP interface"), "{e}");
        let e = parse("ifconfig = 'inet 192.0.2.203/24 vhid 1 carpver 4'\n").unwrap_err();
        assert!(e.contains("carpver"), "{e}");
    }

    #[test]
    fn check_output_names_the_protocol() {
        let c = parse("protocol = \"vrrp3\"\nvrid = 9\npriority = 150\ninterval = 10\naddresses = [\"10.0.0.1/24\"]\n")
            .unwrap();
        let t = c.to_toml();
        for needle in [
            "protocol = \"vrrp3\"",
            "vrid = 9",
            "priority = 150",
            "interval = 10",
            "checksum = \"pseudo-header\"",
        ] {
            assert!(t.contains(needle), "{needle} missing in\n{t}");
        }
    }
}
