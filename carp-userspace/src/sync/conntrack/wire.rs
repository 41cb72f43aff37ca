//! The conntrack message kinds of the sync packet format (`sync::wire`): they travel in the same
//! authenticated, sequence-numbered packets as flow messages, so forged and replayed ones are refused
//! by the same checks, and a receiver that does not know them skips them (every message has a length).
//!
//! ```text
//! CT_UPD       (16) entry(112)                 flags: BULK = part of a bulk transfer
//! CT_DEL       (17) key(40)
//! CT_BULK_REQ  (18) word(4) = 0                send me every entry
//! CT_BULK_START(19) word(4) = entries to come
//! CT_BULK_END  (20) word(4) = entries sent
//!
//! entry = family(1: 4|6) proto(1) zone(2) status(4) timeout_s(4) mark(4)
//!         orig tuple(36) reply tuple(36) have(1: 1 tcp, 2 labels) tcp state(1) wscale o/r(2)
//!         tcp flags o/r(2) reserved(2) labels(16)
//! key   = family(1) proto(1) zone(2) orig tuple(36)
//! tuple = src(16) dst(16) sport(2) dport(2)     (IPv4 in the first 4 address bytes)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::entry::{CtEntry, CtKey, CtTuple, TcpInfo};
use crate::sync::wire::SyncRejection;

/// Message type numbers of the conntrack kinds.
pub mod msg {
    /// Full state of one entry (new, changed, refreshed or bulk).
    pub const CT_UPD: u8 = 16;
    /// An entry is gone.
    pub const CT_DEL: u8 = 17;
    /// Please send every entry.
    pub const CT_BULK_REQ: u8 = 18;
    /// A conntrack bulk transfer begins.
    pub const CT_BULK_START: u8 = 19;
    /// A conntrack bulk transfer ended.
    pub const CT_BULK_END: u8 = 20;

    /// Flag on CT_UPD: the entry is part of a bulk transfer (counted against BULK_END).
    pub const FLAG_BULK: u8 = 0x01;

    /// True for a conntrack message type.
    pub fn is_ct(kind: u8) -> bool {
        (CT_UPD..=CT_BULK_END).contains(&kind)
    }
}

/// Body length of CT_UPD.
pub const ENTRY_BODY: usize = 112;
/// Body length of CT_DEL.
pub const KEY_BODY: usize = 40;
/// Body length of the bulk messages.
pub const WORD_BODY: usize = 4;
const TUPLE: usize = 36;

/// One conntrack message of a sync packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtMessage {
    /// The full state of an entry; `bulk` when sent as part of a bulk transfer.
    Upd {
        /// The entry.
        entry: CtEntry,
        /// Part of a bulk transfer.
        bulk: bool,
    },
    /// The entry is gone.
    Del(CtKey),
    /// Send me every entry.
    BulkReq,
    /// A bulk transfer of this many entries begins.
    BulkStart(u32),
    /// The bulk transfer ended after this many entries.
    BulkEnd(u32),
}

impl CtMessage {
    /// The message type and flags.
    pub fn kind(&self) -> (u8, u8) {
        match self {
            CtMessage::Upd { bulk, .. } => (msg::CT_UPD, if *bulk { msg::FLAG_BULK } else { 0 }),
            CtMessage::Del(_) => (msg::CT_DEL, 0),
            CtMessage::BulkReq => (msg::CT_BULK_REQ, 0),
            CtMessage::BulkStart(_) => (msg::CT_BULK_START, 0),
            CtMessage::BulkEnd(_) => (msg::CT_BULK_END, 0),
        }
    }

    /// Body length (the message header not included).
    pub fn body_len(&self) -> usize {
        match self {
            CtMessage::Upd { .. } => ENTRY_BODY,
            CtMessage::Del(_) => KEY_BODY,
            _ => WORD_BODY,
        }
    }

    /// Appends the body.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            CtMessage::Upd { entry, .. } => emit_entry(entry, out),
            CtMessage::Del(k) => emit_key(k, out),
            CtMessage::BulkReq => out.extend_from_slice(&0u32.to_be_bytes()),
            CtMessage::BulkStart(n) | CtMessage::BulkEnd(n) => {
                out.extend_from_slice(&n.to_be_bytes())
            }
        }
    }

    /// Parses a conntrack message of type `kind` (see `msg::is_ct`) from its body.
    pub fn parse(kind: u8, flags: u8, body: &[u8]) -> Result<CtMessage, SyncRejection> {
        let need = match kind {
            msg::CT_UPD => ENTRY_BODY,
            msg::CT_DEL => KEY_BODY,
            _ => WORD_BODY,
        };
        if body.len() < need {
            return Err(SyncRejection::BadAction {
                why: "conntrack message shorter than its type",
            });
        }
        let word = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        Ok(match kind {
            msg::CT_UPD => CtMessage::Upd {
                entry: parse_entry(body)?,
                bulk: flags & msg::FLAG_BULK != 0,
            },
            msg::CT_DEL => CtMessage::Del(parse_key(body)?),
            msg::CT_BULK_REQ => CtMessage::BulkReq,
            msg::CT_BULK_START => CtMessage::BulkStart(word),
            _ => CtMessage::BulkEnd(word),
        })
    }
}

fn family(t: &CtTuple) -> u8 {
    if t.is_v6() { 6 } else { 4 }
}

fn emit_addr(a: &IpAddr, out: &mut Vec<u8>) {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v) => b[..4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => b.copy_from_slice(&v.octets()),
    }
    out.extend_from_slice(&b);
}

fn emit_tuple(t: &CtTuple, out: &mut Vec<u8>) {
    emit_addr(&t.src, out);
    emit_addr(&t.dst, out);
    out.extend_from_slice(&t.sport.to_be_bytes());
    out.extend_from_slice(&t.dport.to_be_bytes());
}

fn emit_head(k: &CtKey, out: &mut Vec<u8>) {
    out.push(family(&k.orig));
    out.push(k.orig.proto);
    out.extend_from_slice(&k.zone.to_be_bytes());
}

fn emit_key(k: &CtKey, out: &mut Vec<u8>) {
    emit_head(k, out);
    emit_tuple(&k.orig, out);
}

fn emit_entry(e: &CtEntry, out: &mut Vec<u8>) {
    emit_head(&e.key, out);
    out.extend_from_slice(&e.status.to_be_bytes());
    out.extend_from_slice(&e.timeout.to_be_bytes());
    out.extend_from_slice(&e.mark.to_be_bytes());
    emit_tuple(&e.key.orig, out);
    emit_tuple(&e.reply, out);
    let have = u8::from(e.tcp.is_some()) | u8::from(e.labels.is_some()) << 1;
    let t = e.tcp.unwrap_or_default();
    out.extend_from_slice(&[
        have,
        t.state,
        t.wscale[0],
        t.wscale[1],
        t.flags[0],
        t.flags[1],
        0,
        0,
    ]);
    out.extend_from_slice(&e.labels.unwrap_or([0; 16]));
}

fn parse_addr(v6: bool, b: &[u8]) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    if v6 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    }
}

fn parse_tuple(v6: bool, proto: u8, b: &[u8]) -> CtTuple {
    CtTuple {
        src: parse_addr(v6, &b[0..16]),
        dst: parse_addr(v6, &b[16..32]),
        proto,
        sport: u16::from_be_bytes([b[32], b[33]]),
        dport: u16::from_be_bytes([b[34], b[35]]),
    }
}

fn parse_head(b: &[u8]) -> Result<(bool, u8, u16), SyncRejection> {
    let v6 = match b[0] {
        4 => false,
        6 => true,
        _ => {
            return Err(SyncRejection::BadValue {
                why: "conntrack entry of an unknown address family",
            });
        }
    };
    Ok((v6, b[1], u16::from_be_bytes([b[2], b[3]])))
}

fn parse_key(b: &[u8]) -> Result<CtKey, SyncRejection> {
    let (v6, proto, zone) = parse_head(b)?;
    Ok(CtKey {
        zone,
        orig: parse_tuple(v6, proto, &b[4..4 + TUPLE]),
    })
}

fn parse_entry(b: &[u8]) -> Result<CtEntry, SyncRejection> {
    let (v6, proto, zone) = parse_head(b)?;
    let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let have = b[88];
    let mut labels = [0u8; 16];
    labels.copy_from_slice(&b[96..112]);
    Ok(CtEntry {
        key: CtKey {
            zone,
            orig: parse_tuple(v6, proto, &b[16..52]),
        },
        reply: parse_tuple(v6, proto, &b[52..88]),
        status: word(4),
        timeout: word(8),
        mark: word(12),
        tcp: (have & 1 != 0).then(|| TcpInfo {
            state: b[89],
            wscale: [b[90], b[91]],
            flags: [b[92], b[93]],
        }),
        labels: (have & 2 != 0).then_some(labels),
    })
}

#[cfg(test)]
mod tests {
    use super::super::entry::{proto, status, tcp};
    use super::*;

    fn entry(v6: bool) -> CtEntry {
        let (a, b): (IpAddr, IpAddr) = if v6 {
            ("fd00::100".parse().unwrap(), "2001:db8::1".parse().unwrap())
        } else {
            (
                "192.168.100.100".parse().unwrap(),
                "10.0.0.100".parse().unwrap(),
            )
        };
        let orig = CtTuple {
            src: a,
            dst: b,
            proto: proto::TCP,
            sport: 40000,
            dport: 80,
        };
        CtEntry {
            key: CtKey { zone: 7, orig },
            reply: orig.invert(),
            status: status::CONFIRMED | status::ASSURED,
            timeout: 431999,
            mark: 0xdead_beef,
            labels: Some([3; 16]),
            tcp: Some(TcpInfo {
                state: tcp::ESTABLISHED,
                wscale: [7, 9],
                flags: [0x23, 0x21],
            }),
        }
    }

    #[test]
    fn messages_round_trip() {
        for v6 in [false, true] {
            let e = entry(v6);
            let mut no_extras = e;
            no_extras.tcp = None;
            no_extras.labels = None;
            for m in [
                CtMessage::Upd {
                    entry: e,
                    bulk: true,
                },
                CtMessage::Upd {
                    entry: no_extras,
                    bulk: false,
                },
                CtMessage::Del(e.key),
                CtMessage::BulkReq,
                CtMessage::BulkStart(5),
                CtMessage::BulkEnd(1_000_000),
            ] {
                let mut body = Vec::new();
                m.emit_body(&mut body);
                assert_eq!(body.len(), m.body_len(), "{m:?}");
                let (k, f) = m.kind();
                assert_eq!(CtMessage::parse(k, f, &body), Ok(m.clone()));
                assert!(CtMessage::parse(k, f, &body[..body.len() - 1]).is_err());
            }
        }
    }

    #[test]
    fn unknown_family_is_a_bad_value() {
        let mut body = Vec::new();
        CtMessage::Del(entry(false).key).emit_body(&mut body);
        body[0] = 5;
        assert!(matches!(
            CtMessage::parse(msg::CT_DEL, 0, &body),
            Err(SyncRejection::BadValue { .. })
        ));
    }
}
