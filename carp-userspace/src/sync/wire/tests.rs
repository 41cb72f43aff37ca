//! The sync wire format's test vectors and round trips.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::super::state::{ConnState, Endpoint, FlowKey};
use super::*;

fn key() -> SyncKey {
    SyncKey::from_bytes(b"cluster key").expect("key")
}

fn flow() -> FlowState {
    let (k, _) = FlowKey::new(
        6,
        Endpoint::new(Ipv4Addr::new(192, 0, 2, 1), 1234),
        Endpoint::new(Ipv6Addr::LOCALHOST, 80),
    );
    let mut f = FlowState::new(FlowId::new(3, 99), k, 2, 5_000, 90_000);
    f.peers[0].state = ConnState::TcpEstablished;
    f.peers[0].seqlo = 77;
    f.packets = [1, 2];
    f.bytes = [100, 200];
    f
}

fn all_messages() -> Vec<Message> {
    vec![
        Message::Ins {
            flow: flow(),
            ack: true,
        },
        Message::Upd(flow()),
        Message::UpdC(flow().update()),
        Message::Del(FlowId::new(3, 1)),
        Message::Clr { creator: 3 },
        Message::UpdReq(FlowId::BULK),
        Message::BulkStart { flows: 10 },
        Message::BulkEnd { flows: 10 },
        Message::InsAck(FlowId::new(4, 2)),
    ]
}

fn packet() -> PacketRepr {
    PacketRepr {
        sender: 3,
        seq: 42,
        messages: all_messages(),
    }
}

#[test]
fn roundtrip_every_message_type() {
    let bytes = packet().emit(&key(), 10_000);
    assert_eq!(PacketRepr::parse(&bytes, &key(), 10_000), Ok(packet()));
}

#[test]
fn wire_len_matches_emit() {
    for m in all_messages() {
        let mut out = Vec::new();
        m.emit(0, &mut out);
        assert_eq!(out.len(), m.wire_len(), "{m:?}");
    }
}

#[test]
fn unknown_type_skipped() {
    let mut b = PacketBuilder::new();
    b.push(&Message::Clr { creator: 9 }, 0);
    // Hand-written message of type 200 with a 6-byte body.
    b.buf.extend_from_slice(&[200, 0, 0, 10, 1, 2, 3, 4, 5, 6]);
    b.count += 1;
    b.push(&Message::BulkEnd { flows: 1 }, 0);
    let bytes = b.finish(&key(), 1, 1);
    let p = PacketRepr::parse(&bytes, &key(), 0).expect("parses");
    assert_eq!(
        p.messages,
        vec![Message::Clr { creator: 9 }, Message::BulkEnd { flows: 1 }]
    );
}

#[test]
fn longer_known_message_tolerated() {
    let mut b = PacketBuilder::new();
    b.buf
        .extend_from_slice(&[msg::CLR, 0, 0, 12, 0, 0, 0, 5, 0xee, 0xee, 0xee, 0xee]);
    b.count = 1;
    let bytes = b.finish(&key(), 1, 1);
    let p = PacketRepr::parse(&bytes, &key(), 0).expect("parses");
    assert_eq!(p.messages, vec![Message::Clr { creator: 5 }]);
}

#[test]
fn badlen_short_packet() {
    let bytes = packet().emit(&key(), 0);
    let e = PacketRepr::parse(&bytes[..OVERHEAD - 1], &key(), 0).unwrap_err();
    assert_eq!(e.counter(), "badlen");
    let e = PacketRepr::parse(&bytes[..bytes.len() - 1], &key(), 0).unwrap_err();
    assert_eq!(e.counter(), "badlen");
}

#[test]
fn trailing_bytes_ignored() {
    let mut bytes = packet().emit(&key(), 0);
    bytes.extend_from_slice(&[0; 9]);
    assert!(PacketRepr::parse(&bytes, &key(), 0).is_ok());
}

#[test]
fn hdrops_bad_magic() {
    let mut bytes = packet().emit(&key(), 0);
    bytes[0] = b'X';
    assert_eq!(
        PacketRepr::parse(&bytes, &key(), 0).unwrap_err().counter(),
        "hdrops"
    );
}

#[test]
fn badver_before_auth() {
    let mut bytes = packet().emit(&key(), 0);
    bytes[4] = 2;
    assert_eq!(
        PacketRepr::parse(&bytes, &key(), 0).unwrap_err(),
        SyncRejection::BadVersion { version: 2 }
    );
}

#[test]
fn badauth_other_key() {
    let bytes = packet().emit(&key(), 0);
    let other = SyncKey::from_bytes(b"another").expect("key");
    assert_eq!(
        PacketRepr::parse(&bytes, &other, 0).unwrap_err(),
        SyncRejection::BadAuth
    );
}

fn signed(body: &[u8], count: u16) -> Vec<u8> {
    let mut b = PacketBuilder::new();
    b.buf.extend_from_slice(body);
    b.count = count;
    b.finish(&key(), 1, 1)
}

#[test]
fn badact_zero_length_message() {
    let bytes = signed(&[msg::CLR, 0, 0, 0, 0, 0, 0, 1], 1);
    assert_eq!(
        PacketRepr::parse(&bytes, &key(), 0).unwrap_err().counter(),
        "badact"
    );
}

#[test]
fn badact_message_shorter_than_type() {
    let bytes = signed(&[msg::DEL, 0, 0, 8, 0, 0, 0, 1], 1);
    assert_eq!(
        PacketRepr::parse(&bytes, &key(), 0).unwrap_err().counter(),
        "badact"
    );
}

#[test]
fn badact_count_mismatch() {
    let bytes = signed(&[msg::CLR, 0, 0, 8, 0, 0, 0, 1], 2);
    assert_eq!(
        PacketRepr::parse(&bytes, &key(), 0).unwrap_err().counter(),
        "badact"
    );
}

#[test]
fn badlen_message_past_packet() {
    let bytes = signed(&[msg::CLR, 0, 0, 9, 0, 0, 0, 1], 1);
    assert_eq!(
        PacketRepr::parse(&bytes, &key(), 0).unwrap_err().counter(),
        "badlen"
    );
}

#[test]
fn badval_creator_zero_and_bad_state() {
    let bytes = signed(&[msg::CLR, 0, 0, 8, 0, 0, 0, 0], 1);
    assert_eq!(
        PacketRepr::parse(&bytes, &key(), 0).unwrap_err().counter(),
        "badval"
    );
    let mut m = Vec::new();
    Message::UpdC(flow().update()).emit(0, &mut m);
    m[4 + 16] = 3; // no state has byte 3
    let bytes = signed(&m, 1);
    assert_eq!(
        PacketRepr::parse(&bytes, &key(), 0).unwrap_err().counter(),
        "badval"
    );
}

#[test]
fn badval_unnormalised_key() {
    let mut f = flow();
    std::mem::swap(&mut f.key.lo, &mut f.key.hi);
    let mut m = Vec::new();
    Message::Upd(f).emit(0, &mut m);
    assert_eq!(
        PacketRepr::parse(&signed(&m, 1), &key(), 0)
            .unwrap_err()
            .counter(),
        "badval"
    );
}

#[test]
fn message_sizes() {
    assert_eq!(Message::Upd(flow()).wire_len(), 132);
    assert_eq!(Message::UpdC(flow().update()).wire_len(), 52);
    assert_eq!(Message::Del(FlowId::new(1, 1)).wire_len(), 16);
}
