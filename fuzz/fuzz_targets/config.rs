//! Fuzzes the carpd config parser (TOML and hostname.carpN `ifconfig` lines): any text either parses or
//! yields an error naming file, line and key; a parsed config always renders back to TOML.
#![no_main]
use carp::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("fuzz.toml"), text) {
        Ok(config) => {
            let _ = config.to_toml();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
