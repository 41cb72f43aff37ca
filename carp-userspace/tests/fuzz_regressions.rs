//! Replays the fuzz seed corpora and every input the fuzzers ever crashed on (fuzz/seeds/<target>/ and
//! fuzz/regressions/<target>/) through the same checks as the fuzz targets, so a fixed crash stays fixed
//! in the ordinary test run.
use carp::{
    auth::{AuthContext, AuthInput, Key},
    config::Config,
    config::ifconfig::{parse_ifconfig_args, parse_ifconfig_line},
    engine::Time,
    sync::{PacketRepr, SyncConfig, SyncEngine, SyncEvent, SyncKey, seal_raw},
    wire::ip::{Encap, emit_frame, receive_frame},
};
use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "README.txt") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("read fuzz input");
            out.push((path, bytes));
        }
    }
    out
}

#[test]
fn advert_inputs() {
    let key = Key::from_passphrase("secret").expect("key");
    let input = AuthInput::with_addrs(1, [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);
    let ctx = AuthContext::new(&key, &input);
    let all = inputs("advert");
    assert!(
        !all.is_empty(),
        "the advert seed corpus is in fuzz/seeds/advert"
    );
    for (path, frame) in all {
        if let Ok((eth, repr)) = receive_frame(&frame, |v| v == 1, |r| ctx.verify_repr(r))
            && let IpAddr::V4(src) = eth.ip.facts.src
        {
            let again = emit_frame(&repr, &Encap::group_v4(src, 7), eth.src_mac, eth.dst_mac);
            let (_, reparsed) = receive_frame(&again, |v| v == 1, |r| ctx.verify_repr(r))
                .unwrap_or_else(|e| panic!("{}: re-emitted advert rejected: {e}", path.display()));
            assert_eq!(reparsed, repr, "{}", path.display());
        }
    }
}

#[test]
fn config_inputs() {
    let all = inputs("config");
    assert!(
        !all.is_empty(),
        "the config seed corpus is in fuzz/seeds/config"
    );
    for (path, data) in all {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        match Config::parse(Path::new("fuzz.toml"), text) {
            Ok(config) => {
                let _ = config.to_toml();
            }
            Err(e) => {
                assert!(!e.to_string().is_empty(), "{}", path.display());
            }
        }
    }
}

#[test]
fn ifconfig_inputs() {
    let all = inputs("ifconfig");
    assert!(
        !all.is_empty(),
        "the ifconfig seed corpus is in fuzz/seeds/ifconfig"
    );
    for (path, data) in all {
        let Ok(line) = std::str::from_utf8(&data) else {
            continue;
        };
        if let Ok(spec) = parse_ifconfig_line(line) {
            let canonical = spec.to_string();
            let again = parse_ifconfig_line(&canonical).unwrap_or_else(|e| {
                panic!("{}: canonical line {canonical:?}: {e}", path.display())
            });
            assert_eq!(again, spec, "{}", path.display());
        }
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let _ = parse_ifconfig_args(&args);
    }
}

#[test]
fn sync_inputs() {
    const NOW_MS: u64 = 1_000_000_000_000;
    let key = SyncKey::from_bytes(b"fuzz sync key").expect("key");
    let all = inputs("sync");
    assert!(
        !all.is_empty(),
        "the sync seed corpus is in fuzz/seeds/sync"
    );
    let mut accepted = 0;
    for (path, data) in all {
        // Same modes as fuzz/fuzz_targets/sync.rs: 0 = raw packet, else count + messages to sign.
        let packet = match data.split_first() {
            Some((0, rest)) => rest.to_vec(),
            Some((_, rest)) if rest.len() >= 2 => seal_raw(
                &key,
                2,
                1,
                u16::from_be_bytes([rest[0], rest[1]]),
                &rest[2..],
            ),
            _ => continue,
        };
        if let Ok(p) = PacketRepr::parse(&packet, &key, NOW_MS) {
            accepted += 1;
            let again = p.emit(&key, NOW_MS);
            assert_eq!(
                PacketRepr::parse(&again, &key, NOW_MS),
                Ok(p),
                "{}",
                path.display()
            );
        }
        let mut engine = SyncEngine::new(SyncConfig::new(1), key.clone()).expect("config");
        let now = Time::from_millis(NOW_MS);
        engine.handle(now, SyncEvent::Packet(&packet));
        engine.handle(now + std::time::Duration::from_secs(60), SyncEvent::Timer);
    }
    assert!(accepted > 0, "the seeds include valid signed packets");
}
