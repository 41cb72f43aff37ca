//! Fuzzes the sync receive path: header checks, HMAC, message parsing and the engine behind them.
//! Input byte 0 picks the mode: 0 = the rest is a raw packet (exercises everything before the HMAC);
//! anything else = bytes 1..3 are a message count and the rest are messages, which the target signs
//! with the test key so the fuzzer reaches the message parser and the engine. Accepted packets must
//! survive emit -> parse unchanged.
#![no_main]
use carp::engine::Time;
use carp::sync::{PacketRepr, SyncConfig, SyncEngine, SyncEvent, SyncKey, seal_raw};
use libfuzzer_sys::fuzz_target;

const NOW_MS: u64 = 1_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    let key = SyncKey::from_bytes(b"fuzz sync key").expect("key");
    let packet = match data.split_first() {
        Some((0, rest)) => rest.to_vec(),
        Some((_, rest)) if rest.len() >= 2 => {
            seal_raw(&key, 2, 1, u16::from_be_bytes([rest[0], rest[1]]), &rest[2..])
        }
        _ => return,
    };
    if let Ok(p) = PacketRepr::parse(&packet, &key, NOW_MS) {
        let again = p.emit(&key, NOW_MS);
        assert_eq!(PacketRepr::parse(&again, &key, NOW_MS), Ok(p));
    }
    let mut engine = SyncEngine::new(SyncConfig::new(1), key).expect("config");
    let now = Time::from_millis(NOW_MS);
    engine.handle(now, SyncEvent::Packet(&packet));
    engine.handle(now + std::time::Duration::from_secs(60), SyncEvent::Timer);
});
