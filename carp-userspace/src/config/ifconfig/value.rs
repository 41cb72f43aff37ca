//! The value parsers and checks of single tokens: numbers in range, addresses and masks, carpnodes,
//! lladdr, interface and group names.

use super::{
    IfconfigError, MAX_CARPNODES, MAX_NAME_LEN,
    lex::{Tok, tok_err},
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses a decimal number in `lo..=hi` as strtonum(3) would; `why` explains the bounds.
pub(super) fn number(v: &Tok, kw: &str, lo: u64, hi: u64, why: &str) -> Result<u64, IfconfigError> {
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
pub(super) fn to_u8(n: u64) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// `ADDR` or `ADDR/LEN`, IPv4 or IPv6.
pub(super) fn parse_addr(tok: &Tok) -> Result<(IpAddr, Option<u8>), IfconfigError> {
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
pub(super) fn v4_mask_len(v: &Tok) -> Result<u8, IfconfigError> {
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
pub(super) fn v6_mask_len(v: &Tok) -> Result<u8, IfconfigError> {
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
pub(super) fn carpnodes_value(list: &str) -> Result<Vec<(u8, u8)>, String> {
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
pub(super) fn lladdr_value(v: &Tok) -> Result<[u8; 6], IfconfigError> {
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
pub(super) fn check_ifname(name: &str) -> Result<(), String> {
    check_name_chars(name)?;
    if name == "." || name == ".." {
        return Err("not a valid interface name".to_string());
    }
    Ok(())
}

/// Why `name` cannot be an interface group, if it cannot (OpenBSD ifconfig(8)'s `group` rules).
pub(super) fn check_group(name: &str) -> Result<(), String> {
    check_name_chars(name)?;
    if name.ends_with(|c: char| c.is_ascii_digit()) {
        return Err("ends with a digit (OpenBSD reserves those names for interfaces)".to_string());
    }
    Ok(())
}

pub(super) fn check_name_chars(name: &str) -> Result<(), String> {
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
