//! The flow message bodies of the sync packet format: flow ids, endpoints, peers, and the full
//! (`FULL_BODY`) and compressed (`COMPRESSED_BODY`) flow records, with times turned into ages and
//! remaining lifetimes relative to the sender's clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::super::state::{ConnState, Endpoint, FlowId, FlowKey, FlowState, FlowUpdate, Peer};
use super::{SyncRejection, arr};

/// Appends a flow id (id, creator).
pub(super) fn emit_id(id: FlowId, out: &mut Vec<u8>) {
    out.extend_from_slice(&id.id.to_be_bytes());
    out.extend_from_slice(&id.creator.to_be_bytes());
}

/// A flow id from its 12 bytes (the caller checked the length).
pub(super) fn parse_id(b: &[u8]) -> FlowId {
    FlowId {
        id: u64::from_be_bytes(arr(&b[0..8])),
        creator: u32::from_be_bytes(arr(&b[8..12])),
    }
}

/// A flow id, creator 0 (reserved) rejected.
pub(super) fn parse_flow_id(b: &[u8]) -> Result<FlowId, SyncRejection> {
    let id = parse_id(b);
    if id.creator == 0 {
        return Err(SyncRejection::BadValue {
            why: "creator 0 is reserved",
        });
    }
    Ok(id)
}

fn emit_endpoint(e: &Endpoint, out: &mut Vec<u8>) {
    let mut addr = [0u8; 16];
    match e.addr {
        IpAddr::V4(a) => addr[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => addr.copy_from_slice(&a.octets()),
    }
    out.extend_from_slice(&addr);
    out.extend_from_slice(&e.port.to_be_bytes());
}

fn af(e: &Endpoint) -> u8 {
    match e.addr {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 6,
    }
}

fn parse_endpoint(af: u8, b: &[u8]) -> Result<Endpoint, SyncRejection> {
    let addr = match af {
        4 => IpAddr::V4(Ipv4Addr::from(arr::<4>(&b[..4]))),
        6 => IpAddr::V6(Ipv6Addr::from(arr::<16>(&b[..16]))),
        _ => {
            return Err(SyncRejection::BadValue {
                why: "address family is neither 4 nor 6",
            });
        }
    };
    Ok(Endpoint {
        addr,
        port: u16::from_be_bytes(arr(&b[16..18])),
    })
}

fn emit_peer(p: &Peer, out: &mut Vec<u8>) {
    out.extend_from_slice(&[p.state.to_byte(), 0, 0, 0]);
    out.extend_from_slice(&p.seqlo.to_be_bytes());
    out.extend_from_slice(&p.seqhi.to_be_bytes());
}

fn parse_peer(b: &[u8]) -> Result<Peer, SyncRejection> {
    Ok(Peer {
        state: ConnState::from_byte(b[0]).ok_or(SyncRejection::BadValue {
            why: "unknown connection state",
        })?,
        seqlo: u32::from_be_bytes(arr(&b[4..8])),
        seqhi: u32::from_be_bytes(arr(&b[8..12])),
    })
}

fn age_u32(now_ms: u64, t: u64) -> u32 {
    u32::try_from(now_ms.saturating_sub(t)).unwrap_or(u32::MAX)
}

fn remaining_u32(now_ms: u64, t: u64) -> u32 {
    u32::try_from(t.saturating_sub(now_ms)).unwrap_or(u32::MAX)
}

/// Appends a full flow record (`FULL_BODY` bytes), times as ages from `now_ms`.
pub(super) fn emit_full(f: &FlowState, now_ms: u64, out: &mut Vec<u8>) {
    emit_id(f.id, out); // 0..12
    out.extend_from_slice(&[
        f.owner,
        f.key.proto,
        f.timeout,
        af(&f.key.lo),
        af(&f.key.hi),
        0,
        0,
        0,
    ]); // 12..20
    emit_endpoint(&f.key.lo, out); // 20..38
    emit_endpoint(&f.key.hi, out); // 38..56
    for d in 0..2 {
        emit_peer(&f.peers[d], out);
        out.extend_from_slice(&f.packets[d].to_be_bytes());
        out.extend_from_slice(&f.bytes[d].to_be_bytes());
    } // 56..112
    out.extend_from_slice(&now_ms.saturating_sub(f.created_ms).to_be_bytes());
    out.extend_from_slice(&age_u32(now_ms, f.last_seen_ms).to_be_bytes());
    out.extend_from_slice(&remaining_u32(now_ms, f.expire_ms).to_be_bytes()); // 112..128
}

/// A full flow record, its times taken back onto our clock at `now_ms`.
pub(super) fn parse_full(b: &[u8], now_ms: u64) -> Result<FlowState, SyncRejection> {
    let id = parse_flow_id(b)?;
    let lo = parse_endpoint(b[15], &b[20..38])?;
    let hi = parse_endpoint(b[16], &b[38..56])?;
    let key = FlowKey {
        proto: b[13],
        lo,
        hi,
    };
    if !key.is_normalised() {
        // Both directions must map to one record; a sender that does not normalise would split flows.
        return Err(SyncRejection::BadValue {
            why: "flow key not normalised",
        });
    }
    let mut peers = [Peer::IDLE; 2];
    let mut packets = [0; 2];
    let mut bytes = [0; 2];
    for d in 0..2 {
        let p = &b[56 + 28 * d..56 + 28 * (d + 1)];
        peers[d] = parse_peer(p)?;
        packets[d] = u64::from_be_bytes(arr(&p[12..20]));
        bytes[d] = u64::from_be_bytes(arr(&p[20..28]));
    }
    let created_age = u64::from_be_bytes(arr(&b[112..120]));
    let seen_age = u32::from_be_bytes(arr(&b[120..124]));
    let expire_in = u32::from_be_bytes(arr(&b[124..128]));
    Ok(FlowState {
        id,
        key,
        owner: b[12],
        created_ms: now_ms.saturating_sub(created_age),
        last_seen_ms: now_ms.saturating_sub(u64::from(seen_age)),
        expire_ms: now_ms.saturating_add(u64::from(expire_in)),
        timeout: b[14],
        peers,
        packets,
        bytes,
    })
}

/// Appends a compressed update (`COMPRESSED_BODY` bytes): id, timeout, peers and times.
pub(super) fn emit_compressed(u: &FlowUpdate, now_ms: u64, out: &mut Vec<u8>) {
    emit_id(u.id, out); // 0..12
    out.extend_from_slice(&[u.timeout, 0, 0, 0]); // 12..16
    for p in &u.peers {
        emit_peer(p, out);
    } // 16..40
    out.extend_from_slice(&age_u32(now_ms, u.last_seen_ms).to_be_bytes());
    out.extend_from_slice(&remaining_u32(now_ms, u.expire_ms).to_be_bytes()); // 40..48
}

/// A compressed update, its times taken back onto our clock at `now_ms`.
pub(super) fn parse_compressed(b: &[u8], now_ms: u64) -> Result<FlowUpdate, SyncRejection> {
    Ok(FlowUpdate {
        id: parse_flow_id(b)?,
        timeout: b[12],
        peers: [parse_peer(&b[16..28])?, parse_peer(&b[28..40])?],
        last_seen_ms: now_ms.saturating_sub(u64::from(u32::from_be_bytes(arr(&b[40..44])))),
        expire_ms: now_ms.saturating_add(u64::from(u32::from_be_bytes(arr(&b[44..48])))),
    })
}
