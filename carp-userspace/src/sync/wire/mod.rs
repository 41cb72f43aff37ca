//! The sync packet format (ours; pfsync's semantics, not its bytes): [`SyncPacket`], a checked view
//! over the header, and [`PacketRepr`]/[`Message`], the plain values with `parse`/`emit`.
//!
//! ```text
//! packet  = header(24) message* tag(32)
//! header  = magic "CSYN"(4) version=1(1) flags(1) count(2) sender(4) seq(8) length(2) reserved(2)
//! message = type(1) flags(1) len(2) body(len - 4)
//! tag     = HMAC-SHA256(key, header || messages)
//! ```
//!
//! All integers are big-endian. `length` counts the whole packet, tag included, so trailing bytes
//! (Ethernet padding) are ignored. Every message carries its own length, so a receiver skips types it
//! does not know and a future version may append fields to a known type (extra bytes are ignored).
//! Times travel as ages relative to the sender's clock (see `state`), so parse and emit take `now_ms`.
//!
//! A packet is parsed completely before anything in it is used: one malformed message rejects the
//! whole packet, so a peer never half-applies a packet.
//!
//! The flow record bodies (ids, endpoints, peers, full and compressed records) are `flow`.

mod flow;

use super::auth::{SyncKey, TAG_LEN};
use super::state::{FlowId, FlowState, FlowUpdate};
use flow::{
    emit_compressed, emit_full, emit_id, parse_compressed, parse_flow_id, parse_full, parse_id,
};

/// The 4 bytes every sync packet starts with.
pub const MAGIC: [u8; 4] = *b"CSYN";
/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Length of the packet header.
pub const HEADER_LEN: usize = 24;
/// Length of a message's own header (type, flags, length).
pub const MSG_HEADER_LEN: usize = 4;
/// Bytes a packet costs beyond its messages: header and tag.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The largest packet the 16-bit length field can describe.
pub const MAX_PACKET: usize = u16::MAX as usize;

/// Message type numbers.
pub mod msg {
    /// Full state of a new flow.
    pub const INS: u8 = 1;
    /// Full state of an existing flow (replies to UPD_REQ, bulk).
    pub const UPD: u8 = 2;
    /// Compressed update: progress and times only.
    pub const UPD_C: u8 = 3;
    /// A flow was deleted.
    pub const DEL: u8 = 4;
    /// Every flow of one creator is gone.
    pub const CLR: u8 = 5;
    /// Please send the full state of this flow (0/0: of every flow).
    pub const UPD_REQ: u8 = 6;
    /// A bulk transfer begins.
    pub const BULK_START: u8 = 7;
    /// A bulk transfer ended.
    pub const BULK_END: u8 = 8;
    /// A deferred INS arrived.
    pub const INS_ACK: u8 = 9;

    /// Flag on INS: the creator holds the flow's first packet until it gets an INS_ACK.
    pub const FLAG_ACK: u8 = 0x01;
}

/// Body length of a full flow record (INS, UPD).
pub const FULL_BODY: usize = 128;
/// Body length of a compressed update (UPD_C).
pub const COMPRESSED_BODY: usize = 48;
/// Body length of an id + creator message (DEL, UPD_REQ, INS_ACK).
pub const ID_BODY: usize = 12;
/// Body length of CLR and BULK_START/BULK_END (one u32).
pub const WORD_BODY: usize = 4;

/// Why a sync packet was dropped; each reason is one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncRejection {
    /// Shorter than header + tag, or the length field disagrees with the bytes (`badlen`).
    #[error("bad length: {len} bytes")]
    BadLen {
        /// Bytes received.
        len: usize,
    },
    /// Not a sync packet at all: wrong magic (`hdrops`).
    #[error("not a sync packet (bad magic)")]
    BadMagic,
    /// A version we do not speak (`badver`).
    #[error("sync version {version} is not {VERSION}")]
    BadVersion {
        /// The version received.
        version: u8,
    },
    /// The HMAC does not match: forged, corrupted, or another key (`badauth`).
    #[error("bad HMAC: forged, corrupted or a different key_file")]
    BadAuth,
    /// The sequence number was seen already or is older than the window (`replay`).
    #[error("replayed or too old sequence number {seq}")]
    Replay {
        /// The sequence number received.
        seq: u64,
    },
    /// A message header is inconsistent: zero/short length, running past the packet, or a count
    /// that does not match (`badact`).
    #[error("malformed message: {why}")]
    BadAction {
        /// What was wrong.
        why: &'static str,
    },
    /// A field holds a value no sender writes (`badval`).
    #[error("bad field value: {why}")]
    BadValue {
        /// What was wrong.
        why: &'static str,
    },
    /// Our own packet came back (multicast loop) (`loop`).
    #[error("our own packet came back")]
    Loop,
}

impl SyncRejection {
    /// Every counter a rejection can name, in check order.
    pub const COUNTERS: [&'static str; 8] = [
        "badlen", "hdrops", "badver", "badauth", "loop", "replay", "badact", "badval",
    ];

    /// The counter this rejection increments.
    pub fn counter(&self) -> &'static str {
        match self {
            SyncRejection::BadLen { .. } => "badlen",
            SyncRejection::BadMagic => "hdrops",
            SyncRejection::BadVersion { .. } => "badver",
            SyncRejection::BadAuth => "badauth",
            SyncRejection::Loop => "loop",
            SyncRejection::Replay { .. } => "replay",
            SyncRejection::BadAction { .. } => "badact",
            SyncRejection::BadValue { .. } => "badval",
        }
    }
}

mod field {
    use core::ops::Range;

    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const COUNT: Range<usize> = 6..8;
    pub const SENDER: Range<usize> = 8..12;
    pub const SEQ: Range<usize> = 12..20;
    pub const LENGTH: Range<usize> = 20..22;
}

/// A view over a buffer holding a sync packet; accessors panic unless built by `new_checked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SyncPacket<T> {
    /// Wraps a buffer without checking it (accessors panic on short buffers).
    pub const fn new_unchecked(buffer: T) -> Self {
        SyncPacket { buffer }
    }

    /// Wraps a buffer after checking header + tag fit and the length field fits the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, SyncRejection> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the length: at least header + tag, and `length` within the buffer.
    pub fn check_len(&self) -> Result<(), SyncRejection> {
        let len = self.buffer.as_ref().len();
        if len < OVERHEAD {
            return Err(SyncRejection::BadLen { len });
        }
        let claimed = usize::from(self.length());
        if claimed < OVERHEAD || claimed > len {
            return Err(SyncRejection::BadLen { len });
        }
        Ok(())
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The 4 magic bytes.
    pub fn magic(&self) -> [u8; 4] {
        arr(&self.bytes()[field::MAGIC])
    }

    /// The protocol version.
    pub fn version(&self) -> u8 {
        self.bytes()[field::VERSION]
    }

    /// How many messages the sender put in.
    pub fn count(&self) -> u16 {
        u16::from_be_bytes(arr(&self.bytes()[field::COUNT]))
    }

    /// The sender's node id.
    pub fn sender(&self) -> u32 {
        u32::from_be_bytes(arr(&self.bytes()[field::SENDER]))
    }

    /// The packet's sequence number.
    pub fn seq(&self) -> u64 {
        u64::from_be_bytes(arr(&self.bytes()[field::SEQ]))
    }

    /// The packet length, tag included.
    pub fn length(&self) -> u16 {
        u16::from_be_bytes(arr(&self.bytes()[field::LENGTH]))
    }

    /// Header and messages: what the tag covers.
    pub fn authenticated(&self) -> &[u8] {
        &self.bytes()[..usize::from(self.length()) - TAG_LEN]
    }

    /// The messages, without header and tag.
    pub fn body(&self) -> &[u8] {
        &self.bytes()[HEADER_LEN..usize::from(self.length()) - TAG_LEN]
    }

    /// The tag.
    pub fn tag(&self) -> &[u8] {
        let end = usize::from(self.length());
        &self.bytes()[end - TAG_LEN..end]
    }
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&b[..N]);
    out
}

/// One message of a sync packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A new flow (full state); `ack` asks for an INS_ACK because the creator defers its first packet.
    Ins {
        /// The flow.
        flow: FlowState,
        /// The creator holds the first packet until it is acknowledged.
        ack: bool,
    },
    /// Full state of an existing flow.
    Upd(FlowState),
    /// Compressed update of a flow the receiver should know.
    UpdC(FlowUpdate),
    /// The flow is gone.
    Del(FlowId),
    /// Every flow created by this node is gone.
    Clr {
        /// The creator whose flows are cleared.
        creator: u32,
    },
    /// Send me the full state of this flow; [`FlowId::BULK`] asks for every flow.
    UpdReq(FlowId),
    /// A bulk transfer of `flows` flows begins.
    BulkStart {
        /// How many flows the sender is about to send.
        flows: u32,
    },
    /// The bulk transfer ended after `flows` flows.
    BulkEnd {
        /// How many flows were sent.
        flows: u32,
    },
    /// The INS of this flow arrived.
    InsAck(FlowId),
    /// A conntrack message (`sync::conntrack::wire`): netfilter's state table, replicated.
    Ct(super::conntrack::CtMessage),
}

impl Message {
    /// Bytes this message takes on the wire, its header included.
    pub fn wire_len(&self) -> usize {
        MSG_HEADER_LEN
            + match self {
                Message::Ins { .. } | Message::Upd(_) => FULL_BODY,
                Message::UpdC(_) => COMPRESSED_BODY,
                Message::Del(_) | Message::UpdReq(_) | Message::InsAck(_) => ID_BODY,
                Message::Clr { .. } | Message::BulkStart { .. } | Message::BulkEnd { .. } => {
                    WORD_BODY
                }
                Message::Ct(m) => m.body_len(),
            }
    }

    /// Appends this message to `out`; times become ages relative to `now_ms`.
    pub fn emit(&self, now_ms: u64, out: &mut Vec<u8>) {
        let (kind, flags) = match self {
            Message::Ins { ack, .. } => (msg::INS, if *ack { msg::FLAG_ACK } else { 0 }),
            Message::Upd(_) => (msg::UPD, 0),
            Message::UpdC(_) => (msg::UPD_C, 0),
            Message::Del(_) => (msg::DEL, 0),
            Message::Clr { .. } => (msg::CLR, 0),
            Message::UpdReq(_) => (msg::UPD_REQ, 0),
            Message::BulkStart { .. } => (msg::BULK_START, 0),
            Message::BulkEnd { .. } => (msg::BULK_END, 0),
            Message::InsAck(_) => (msg::INS_ACK, 0),
            Message::Ct(m) => m.kind(),
        };
        // Every body is far below 64 KiB, so the cast loses nothing.
        let len = self.wire_len() as u16;
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&len.to_be_bytes());
        match self {
            Message::Ins { flow, .. } | Message::Upd(flow) => emit_full(flow, now_ms, out),
            Message::UpdC(u) => emit_compressed(u, now_ms, out),
            Message::Del(id) | Message::UpdReq(id) | Message::InsAck(id) => emit_id(*id, out),
            Message::Clr { creator } => out.extend_from_slice(&creator.to_be_bytes()),
            Message::BulkStart { flows } | Message::BulkEnd { flows } => {
                out.extend_from_slice(&flows.to_be_bytes())
            }
            Message::Ct(m) => m.emit_body(out),
        }
    }

    /// Parses one message of type `kind` from its body (header stripped); `Ok(None)` for an unknown
    /// type, which the caller skips.
    pub fn parse(
        kind: u8,
        flags: u8,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Option<Message>, SyncRejection> {
        let need = match kind {
            msg::INS | msg::UPD => FULL_BODY,
            msg::UPD_C => COMPRESSED_BODY,
            msg::DEL | msg::UPD_REQ | msg::INS_ACK => ID_BODY,
            msg::CLR | msg::BULK_START | msg::BULK_END => WORD_BODY,
            k if super::conntrack::wire::msg::is_ct(k) => {
                return super::conntrack::CtMessage::parse(k, flags, body)
                    .map(|m| Some(Message::Ct(m)));
            }
            _ => return Ok(None),
        };
        if body.len() < need {
            return Err(SyncRejection::BadAction {
                why: "message shorter than its type",
            });
        }
        let word = || u32::from_be_bytes(arr(body));
        Ok(Some(match kind {
            msg::INS => Message::Ins {
                flow: parse_full(body, now_ms)?,
                ack: flags & msg::FLAG_ACK != 0,
            },
            msg::UPD => Message::Upd(parse_full(body, now_ms)?),
            msg::UPD_C => Message::UpdC(parse_compressed(body, now_ms)?),
            msg::DEL => Message::Del(parse_flow_id(body)?),
            msg::INS_ACK => Message::InsAck(parse_flow_id(body)?),
            msg::UPD_REQ => {
                let id = parse_id(body);
                // 0/0 is the bulk request; creator 0 with any other id is nobody's flow.
                if id.creator == 0 && id.id != 0 {
                    return Err(SyncRejection::BadValue {
                        why: "creator 0 is reserved",
                    });
                }
                Message::UpdReq(id)
            }
            msg::CLR => {
                let creator = word();
                if creator == 0 {
                    return Err(SyncRejection::BadValue {
                        why: "creator 0 is reserved",
                    });
                }
                Message::Clr { creator }
            }
            msg::BULK_START => Message::BulkStart { flows: word() },
            _ => Message::BulkEnd { flows: word() },
        }))
    }
}

/// A whole sync packet: who sent it, its sequence number, and its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketRepr {
    /// The sender's node id.
    pub sender: u32,
    /// The sender's sequence number for this packet.
    pub seq: u64,
    /// The messages, in order (unknown types already skipped).
    pub messages: Vec<Message>,
}

impl PacketRepr {
    /// Checks and parses a packet: length -> magic -> version -> HMAC -> messages. The replay check
    /// needs per-sender state and is the caller's (`SyncEngine` does it, then `ReplayWindow::accept`).
    pub fn parse(buf: &[u8], key: &SyncKey, now_ms: u64) -> Result<PacketRepr, SyncRejection> {
        let packet = SyncPacket::new_checked(buf)?;
        if packet.magic() != MAGIC {
            return Err(SyncRejection::BadMagic);
        }
        if packet.version() != VERSION {
            return Err(SyncRejection::BadVersion {
                version: packet.version(),
            });
        }
        // Authenticate before reading a single message, so no forged byte reaches the parser below.
        if !key.verify(packet.authenticated(), packet.tag()) {
            return Err(SyncRejection::BadAuth);
        }
        let messages = parse_messages(packet.body(), packet.count(), now_ms)?;
        Ok(PacketRepr {
            sender: packet.sender(),
            seq: packet.seq(),
            messages,
        })
    }

    /// The packet bytes: header, messages, tag.
    pub fn emit(&self, key: &SyncKey, now_ms: u64) -> Vec<u8> {
        let mut b = PacketBuilder::new();
        for m in &self.messages {
            b.push(m, now_ms);
        }
        b.finish(key, self.sender, self.seq)
    }
}

fn parse_messages(mut body: &[u8], count: u16, now_ms: u64) -> Result<Vec<Message>, SyncRejection> {
    let mut out = Vec::with_capacity(usize::from(count).min(body.len() / MSG_HEADER_LEN));
    let mut seen: usize = 0;
    while !body.is_empty() {
        if body.len() < MSG_HEADER_LEN {
            return Err(SyncRejection::BadLen { len: body.len() });
        }
        let len = usize::from(u16::from_be_bytes([body[2], body[3]]));
        if len < MSG_HEADER_LEN {
            // A zero length would loop forever on the same message (pfsync's badact).
            return Err(SyncRejection::BadAction {
                why: "message length below its header",
            });
        }
        if len > body.len() {
            return Err(SyncRejection::BadLen { len: body.len() });
        }
        if let Some(m) = Message::parse(body[0], body[1], &body[MSG_HEADER_LEN..len], now_ms)? {
            out.push(m);
        }
        seen += 1;
        body = &body[len..];
    }
    if seen != usize::from(count) {
        return Err(SyncRejection::BadAction {
            why: "message count does not match the messages",
        });
    }
    Ok(out)
}

/// Builds one packet message by message; the caller watches `len` against its MTU.
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    buf: Vec<u8>,
    count: u16,
}

impl Default for PacketBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuilder {
    /// An empty packet (header space reserved).
    pub fn new() -> PacketBuilder {
        Self::with_capacity(1500)
    }

    /// An empty packet with room for `bytes` bytes before reallocating.
    pub fn with_capacity(bytes: usize) -> PacketBuilder {
        let mut buf = Vec::with_capacity(bytes.max(OVERHEAD));
        buf.resize(HEADER_LEN, 0);
        PacketBuilder { buf, count: 0 }
    }

    /// The length the finished packet will have, tag included.
    pub fn len(&self) -> usize {
        self.buf.len() + TAG_LEN
    }

    /// True if no message was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many messages were pushed.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// True if `m` still fits under `mtu` (the packet length limit, tag included).
    pub fn fits(&self, m: &Message, mtu: usize) -> bool {
        self.len() + m.wire_len() <= mtu.min(MAX_PACKET)
    }

    /// Appends a message; times become ages relative to `now_ms`.
    pub fn push(&mut self, m: &Message, now_ms: u64) {
        m.emit(now_ms, &mut self.buf);
        self.count = self.count.saturating_add(1);
    }

    /// Appends a full flow as INS (`Some(ack)`) or UPD (`None`) without building a [`Message`]
    /// (the bulk path sends a million of these; cloning each flow into a message would double the work).
    pub fn push_full(&mut self, flow: &FlowState, ins_ack: Option<bool>, now_ms: u64) {
        let (kind, flags) = match ins_ack {
            Some(true) => (msg::INS, msg::FLAG_ACK),
            Some(false) => (msg::INS, 0),
            None => (msg::UPD, 0),
        };
        self.buf.push(kind);
        self.buf.push(flags);
        self.buf
            .extend_from_slice(&((MSG_HEADER_LEN + FULL_BODY) as u16).to_be_bytes());
        emit_full(flow, now_ms, &mut self.buf);
        self.count = self.count.saturating_add(1);
    }

    /// Appends a compressed update (UPD_C) without building a [`Message`].
    pub fn push_compressed(&mut self, update: &FlowUpdate, now_ms: u64) {
        self.buf.push(msg::UPD_C);
        self.buf.push(0);
        self.buf
            .extend_from_slice(&((MSG_HEADER_LEN + COMPRESSED_BODY) as u16).to_be_bytes());
        emit_compressed(update, now_ms, &mut self.buf);
        self.count = self.count.saturating_add(1);
    }

    /// Fills the header and appends the tag; the packet is ready to send.
    pub fn finish(mut self, key: &SyncKey, sender: u32, seq: u64) -> Vec<u8> {
        // Packets are built against an MTU far below 64 KiB; saturating keeps a misuse detectable
        // (the receiver's length check fails) rather than silently wrapping.
        let total = u16::try_from(self.len()).unwrap_or(u16::MAX);
        let h = &mut self.buf[..HEADER_LEN];
        h[field::MAGIC].copy_from_slice(&MAGIC);
        h[field::VERSION] = VERSION;
        h[5] = 0;
        h[field::COUNT].copy_from_slice(&self.count.to_be_bytes());
        h[field::SENDER].copy_from_slice(&sender.to_be_bytes());
        h[field::SEQ].copy_from_slice(&seq.to_be_bytes());
        h[field::LENGTH].copy_from_slice(&total.to_be_bytes());
        h[22] = 0;
        h[23] = 0;
        let tag = key.tag(&self.buf);
        self.buf.extend_from_slice(&tag);
        self.buf
    }
}

/// Wraps raw message bytes in a signed packet claiming `count` messages, without checking them.
///
/// For fuzzing and tests: it lets a fuzzer reach the message parser behind the HMAC, as a key holder
/// writing nonsense could. Bodies too long for the length field give a packet receivers reject.
pub fn seal_raw(key: &SyncKey, sender: u32, seq: u64, count: u16, messages: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::with_capacity(OVERHEAD + messages.len());
    b.buf.extend_from_slice(messages);
    b.count = count;
    b.finish(key, sender, seq)
}

#[cfg(test)]
mod tests;
