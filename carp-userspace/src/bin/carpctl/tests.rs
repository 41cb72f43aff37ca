//! carpctl's unit tests: the clap definition, `set`, `demote` and ifconfig arguments.

use carp::control::{DemoteOp, ForceTo, Setting};

use super::*;

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[test]
fn cli_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn settings_parse_and_ranges() {
    assert_eq!(
        parse_settings(&args("advbase 1 advskew 254 state MASTER down")).unwrap(),
        vec![
            Setting::Advbase(1),
            Setting::Advskew(254),
            Setting::State(ForceTo::Master),
            Setting::Down
        ]
    );
    assert!(
        parse_settings(&args("advskew 255"))
            .unwrap_err()
            .contains("0..=254")
    );
    assert!(
        parse_settings(&args("advskew"))
            .unwrap_err()
            .contains("needs a value")
    );
    assert!(
        parse_settings(&args("frob 1"))
            .unwrap_err()
            .contains("unknown setting")
    );
    assert_eq!(parse_demote("+5"), Ok(DemoteOp::Adjust(5)));
    assert_eq!(parse_demote("-5"), Ok(DemoteOp::Adjust(-5)));
    assert_eq!(parse_demote("50"), Ok(DemoteOp::Set(50)));
    assert!(parse_demote("256").is_err());
}

#[test]
fn ifconfig_lines_become_requests() {
    let r = ifconfig_request(parse_ifconfig_args(&args("carp0 advskew 254")).unwrap());
    assert_eq!(
        r.unwrap(),
        Some(Request::Set {
            iface: "carp0".into(),
            changes: vec![Setting::Advskew(254)]
        })
    );
    let r = ifconfig_request(parse_ifconfig_args(&args("carp0 carpnodes 2:50,1:0")).unwrap());
    assert_eq!(
        r.unwrap(),
        Some(Request::Set {
            iface: "carp0".into(),
            changes: vec![Setting::Carpnodes(vec![(1, 0), (2, 50)])]
        })
    );
    assert_eq!(
        parse_settings(&args("carpnodes 1:0,2:50")).unwrap(),
        vec![Setting::Carpnodes(vec![(1, 0), (2, 50)])]
    );
    assert!(
        ifconfig_request(parse_ifconfig_args(&args("carp0 balancing ip")).unwrap())
            .unwrap_err()
            .contains("balancing cannot be changed")
    );
    let r = ifconfig_request(parse_ifconfig_args(&args("-g test carpdemote 50")).unwrap());
    assert_eq!(
        r.unwrap(),
        Some(Request::Demote {
            group: "test".into(),
            change: Some(DemoteOp::Adjust(50))
        })
    );
    let r = ifconfig_request(parse_ifconfig_args(&args("carp0 down")).unwrap());
    assert_eq!(
        r.unwrap(),
        Some(Request::Set {
            iface: "carp0".into(),
            changes: vec![Setting::Down]
        })
    );
    let e = ifconfig_request(parse_ifconfig_args(&args("carp0 vhid 5")).unwrap());
    assert!(e.unwrap_err().contains("vhid cannot be changed"));
    assert!(parse_ifconfig_args(&args("carp0 vhid 0")).is_err());
    assert!(parse_ifconfig_args(&args("carp0 advskew 255")).is_err());
}
