//! Fuzzes the OpenBSD ifconfig carp syntax: a line either parses or fails with a message; a parsed line
//! renders back to a canonical line that parses to the same spec.
#![no_main]
use carp::config::ifconfig::{parse_ifconfig_args, parse_ifconfig_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = parse_ifconfig_line(line) {
        let canonical = spec.to_string();
        let again = parse_ifconfig_line(&canonical).expect("canonical line parses");
        assert_eq!(again, spec, "canonical line {canonical:?}");
    }
    let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let _ = parse_ifconfig_args(&args);
});
