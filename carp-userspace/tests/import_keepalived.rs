//! `carpd --import-keepalived`: a keepalived.conf in the shape real deployments have (comments with
//! `#` and `!`, quoted words, `include` of a glob relative to the file and of a missing one, a
//! vrrp_script with weight, a sync group, unicast peers, VRRPv2 PASS authentication, IPv6) is turned
//! into a carp.toml that carpd's own parser accepts, and every unmapped setting is named with its line.

use std::path::{Path, PathBuf};

use carp::config::Config;
use carp::config::keepalived::import;
use carp::wire::vrrp::VrrpVersion;
use carp::wire::vrrp2::Vrrp2Auth;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keepalived/keepalived.conf")
}

fn imported() -> (Config, Vec<String>) {
    let i = import(&fixture()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config::parse(Path::new("imported.toml"), &i.toml)
        .unwrap_or_else(|e| panic!("{e}\n{}", i.toml));
    let unmapped = i
        .unmapped
        .iter()
        .map(|u| {
            format!(
                "{}:{}: {}: {}",
                u.file.file_name().unwrap().to_string_lossy(),
                u.line,
                u.setting,
                u.why
            )
        })
        .collect();
    (cfg, unmapped)
}

#[test]
fn instances_become_vrrp_interfaces() {
    let (cfg, _) = imported();
    let by_desc = |d: &str| {
        cfg.interfaces
            .iter()
            .find(|i| i.description.as_deref() == Some(d))
            .unwrap_or_else(|| panic!("{d} missing"))
    };
    let vi1 = by_desc("VI_1");
    let v = vi1.vrrp.as_ref().unwrap();
    assert_eq!(vi1.carpdev, "eth0");
    // global_defs vrrp_version 3; advert_int 0.5 s = 50 cs; nopreempt; keepalived's accept default.
    assert_eq!(
        (v.version, v.vrid, v.priority, v.interval_cs),
        (VrrpVersion::V3, 51, 150, 50)
    );
    assert!(!v.preempt && v.accept_mode);
    assert_eq!(
        v.unicast_peers,
        vec!["10.0.0.12".parse::<std::net::IpAddr>().unwrap()]
    );
    let addrs: Vec<String> = vi1.addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        addrs,
        ["10.0.0.1/24", "10.0.0.2/32"],
        "quoted VIP, default /32"
    );
    assert_eq!(
        vi1.up_script.as_deref(),
        Some(Path::new("/etc/keepalived/master.sh"))
    );
    assert_eq!(
        vi1.down_script.as_deref(),
        Some(Path::new("/etc/keepalived/backup.sh"))
    );

    // From the included conf.d/edge.conf: per-instance version 2 wins over vrrp_version 3.
    let out = by_desc("VI_OUT");
    let v = out.vrrp.as_ref().unwrap();
    assert_eq!(
        (v.version, v.interval_cs, v.priority),
        (VrrpVersion::V2, 100, 100)
    );
    assert_eq!(
        v.auth,
        Vrrp2Auth::simple("longpass").unwrap(),
        "truncated to 8 like keepalived"
    );
    // IPv6 instance: VRRPv3, state MASTER without priority is keepalived's 255 (owner).
    let inn = by_desc("VI_IN");
    let v = inn.vrrp.as_ref().unwrap();
    assert_eq!((v.version, v.priority), (VrrpVersion::V3, 255));
    // The sync group's members share one interface group.
    assert_eq!(out.groups, inn.groups);
    assert_ne!(out.groups, vi1.groups);
}

#[test]
fn tracks_keep_keepalived_weights() {
    let (cfg, _) = imported();
    let t: Vec<(String, String, u8)> = cfg
        .tracks
        .iter()
        .map(|t| (t.check.describe(), t.group.clone(), t.demote))
        .collect();
    assert!(
        t.contains(&("interface eth1".into(), "vi_1_g".into(), 30)),
        "{t:?}"
    );
    assert!(
        t.contains(&(
            "script /usr/local/bin/check-haproxy".into(),
            "vi_1_g".into(),
            20
        )),
        "{t:?}"
    );
    // A sync-group member's track has weight 0 in keepalived: FAULT, here demote 255.
    assert!(
        t.contains(&("interface eth3".into(), "sg_edge_g".into(), 255)),
        "{t:?}"
    );
    let script = cfg
        .tracks
        .iter()
        .find(|t| t.check.describe().starts_with("script"))
        .unwrap();
    assert_eq!((script.rise, script.fall), (3, 2));
    assert_eq!(script.interval.as_secs(), 2);
}

#[test]
fn unmapped_settings_are_listed_with_their_line() {
    let (_, unmapped) = imported();
    let text = unmapped.join("\n");
    for needle in [
        "keepalived.conf:5: global_defs: vrrp_garp_master_delay",
        "keepalived.conf:34: vrrp_instance VI_1: unicast_src_ip",
        "keepalived.conf:39: vrrp_instance VI_1: 10.0.0.1/24: address option \"label\"",
        "keepalived.conf:51: vrrp_instance VI_1: preempt_delay",
        "vrrp_instance VI_1: notify_fault",
        "vrrp_sync_group SG_EDGE: notify_master",
        "edge.conf:7: vrrp_instance VI_OUT: authentication: auth_pass longer than 8 bytes",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    // Control: settings that were carried over are not listed.
    for mapped in [
        "virtual_router_id",
        "advert_int",
        "nopreempt",
        "track_interface",
    ] {
        assert!(
            !text.contains(mapped),
            "{mapped} listed as unmapped:\n{text}"
        );
    }
}

#[test]
fn grammar_errors_name_file_and_line() {
    let dir = std::env::temp_dir().join(format!("carp-ka-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.conf");
    std::fs::write(&f, "vrrp_instance X {\n  interface eth0\n").unwrap();
    let e = import(&f).unwrap_err();
    assert!(
        e.to_string()
            .contains("bad.conf:2: a '{' block is not closed"),
        "{e}"
    );
    std::fs::write(&f, "}\n").unwrap();
    assert!(
        import(&f)
            .unwrap_err()
            .to_string()
            .contains("bad.conf:1: '}' without")
    );
    // includer (keepalived's strict include) of a missing file is an error, plain include is not.
    std::fs::write(&f, "includer nothere.conf\n").unwrap();
    assert!(import(&f).unwrap_err().to_string().contains("no such file"));
    std::fs::write(&f, "include nothere.conf\n").unwrap();
    assert!(import(&f).is_ok());
    // An include loop stops with an error instead of recursing forever.
    std::fs::write(&f, "include bad.conf\n").unwrap();
    assert!(
        import(&f)
            .unwrap_err()
            .to_string()
            .contains("nested more than")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keepalived_itself_reads_the_fixture() {
    // Control that the fixture is real keepalived grammar: keepalived 2.2.7's config test parses it
    // (it exits 5 only because the fixture's interfaces do not exist on this machine).
    let out = std::process::Command::new("keepalived")
        .args(["-t", "-f"])
        .arg(fixture())
        .output();
    let Ok(out) = out else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("keepalived is not installed (cargo xtask setup installs it)");
        }
        eprintln!("skipped: keepalived not installed");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("doesn't exist") && !l.contains("Non-existent interface"))
        .filter(|l| !l.contains("Truncating auth_pass") && !l.contains("Config files missing"))
        .collect();
    assert!(bad.is_empty(), "keepalived -t complained:\n{err}");
}
