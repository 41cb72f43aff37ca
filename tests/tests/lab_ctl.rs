//! carpctl against live carpd processes in the "pair" lab (design §2, issue #5): every command, the
//! JSON fields of `status --json`, OpenBSD ifconfig lines that move MASTER (advskew 254 with preempt,
//! `-g GROUP carpdemote`, `down` = bow-out), bad input refused with nothing changed (exit 1 when carpd
//! refuses, 2 when carpctl's own checks do), usage errors with exit 2, exit 3 without a carpd, the root-only socket, and the OpenMetrics endpoint scraped and parsed. Needs root.
use carp_tests::{
    lab::{Daemon, Pair, VIP, carpctl_binary, carpd_binary},
    require_root,
};
use serde_json::{Value, json};
use std::{
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const SETTLE: Duration = Duration::from_secs(8);
const METRICS: &str = "127.0.0.1:9273";

/// What one carpctl run printed.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `carpctl --control-socket SOCK ARGS...`.
fn ctl(sock: &Path, args: &[&str]) -> Out {
    let out = Command::new(carpctl_binary())
        .arg("--control-socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("run carpctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs carpctl and insists on exit 0.
fn ok(sock: &Path, args: &[&str]) -> String {
    let o = ctl(sock, args);
    assert_eq!(o.code, 0, "carpctl {args:?}: {}{}", o.stdout, o.stderr);
    o.stdout
}

/// Runs carpctl and insists on exit `code` with `needle` in its one-line reason.
fn refused_with(sock: &Path, args: &[&str], needle: &str, code: i32) {
    let o = ctl(sock, args);
    assert_eq!(
        o.code, code,
        "carpctl {args:?} should fail: {}{}",
        o.stdout, o.stderr
    );
    assert!(
        o.stderr.contains(needle) && o.stderr.trim().lines().count() == 1,
        "carpctl {args:?}: expected one line with {needle:?}, got {:?}",
        o.stderr
    );
}

fn status(sock: &Path) -> Value {
    serde_json::from_str(&ok(sock, &["status", "--json"])).expect("status --json is JSON")
}

fn group_demote(sock: &Path, group: &str) -> u64 {
    let groups: Value = serde_json::from_str(&ok(sock, &["groups", "--json"])).expect("JSON");
    groups
        .as_array()
        .expect("groups --json is an array")
        .iter()
        .find(|g| g["name"] == group)
        .unwrap_or_else(|| panic!("no group {group} in {groups}"))["demote"]
        .as_u64()
        .expect("demote is a number")
}

/// The pair config with carp0 also in group "test".
fn config(advskew: u8) -> String {
    Pair::config(advskew) + "groups = [\"test\"]\n"
}

/// Starts carpd like `Pair::carpd`, plus `--metrics`.
fn carpd_with_metrics(pair: &Pair, name: &str, cfg: &str) -> Daemon {
    let cfg_path = pair.dir.join(format!("{name}.toml"));
    std::fs::write(&cfg_path, cfg).expect("write config");
    let sock = pair.dir.join(format!("{name}.sock"));
    let bpffs = pair.bpffs.join(name);
    Daemon::spawn(
        &pair.gw1,
        name,
        &pair.dir,
        &[
            carpd_binary().to_str().unwrap(),
            "-c",
            cfg_path.to_str().unwrap(),
            "--bpffs",
            bpffs.to_str().unwrap(),
            "--control-socket",
            sock.to_str().unwrap(),
            "--metrics",
            METRICS,
            "--log",
            "info",
        ],
    )
}

/// One HTTP GET inside gw1's namespace; returns the whole response.
fn scrape(pair: &Pair, path: &'static str) -> String {
    pair.gw1.in_ns(move || {
        let mut s = std::net::TcpStream::connect(METRICS).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // As Prometheus asks (carpd answers others with the 0.0.4 text format).
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read metrics");
        out
    })
}

/// Parses OpenMetrics samples: `name{labels} value` -> (name{labels}, value).
fn samples(body: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            let v: f64 = v.parse().unwrap_or_else(|_| panic!("bad value in {l}"));
            (k.to_string(), v)
        })
        .collect()
}

#[test]
fn every_carpctl_command_against_a_live_carpd() {
    if !require_root("every_carpctl_command_against_a_live_carpd") {
        return;
    }
    // No carpd: a clear reason and exit 3 (as `systemctl is-active` has it).
    refused_with(
        Path::new("/nonexistent/carpd.sock"),
        &["status"],
        "carpd is not running (no socket at /nonexistent/carpd.sock); start it with `systemctl start carpd`",
        3,
    );

    let pair = Pair::new("ctl1");
    let gw1 = carpd_with_metrics(&pair, "gw1", &config(0));
    assert!(
        gw1.wait_log("carp0 vhid 1: BACKUP -> MASTER", SETTLE),
        "gw1 never became MASTER:\n{}",
        gw1.log()
    );
    let sock = pair.dir.join("gw1.sock");
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // status --json: the fields of design §2.
    let s = status(&sock);
    assert_eq!(s["preempt"], json!(false));
    let i = &s["interfaces"][0];
    for (k, v) in [
        ("name", json!("carp0")),
        ("carpdev", json!("eth0")),
        ("vhid", json!(1)),
        ("state", json!("MASTER")),
        ("advbase", json!(1)),
        ("advskew", json!(0)),
        ("demote", json!(0)),
        ("addresses", json!([format!("{VIP}/24")])),
        ("balancing", json!("none")),
    ] {
        assert_eq!(i[k], v, "interfaces[0].{k} in {s}");
    }
    let node = &i["nodes"][0];
    assert_eq!(i["nodes"].as_array().map(Vec::len), Some(1), "{s}");
    for (k, v) in [
        ("vhid", json!(1)),
        ("state", json!("MASTER")),
        ("advskew", json!(0)),
    ] {
        assert_eq!(node[k], v, "interfaces[0].nodes[0].{k} in {s}");
    }
    // Since when and why (issue #19): the transition that made it MASTER.
    assert!(node["since"].as_f64().is_some(), "{s}");
    assert_eq!(node["why"], json!("master down timer expired"), "{s}");
    let groups = s["groups"].as_array().expect("groups");
    for g in ["carp", "test"] {
        assert!(
            groups.iter().any(|x| x["name"] == g && x["demote"] == 0),
            "{g} in {s}"
        );
    }
    let table = ok(&sock, &["status"]);
    for needle in ["carp0", "eth0", "MASTER", "10.0.0.1/24", "GROUP", "test"] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }
    assert!(ok(&sock, &["groups"]).contains("test"));
    let show = ok(&sock, &["ifconfig", "carp0"]);
    assert!(
        show.contains("carp: MASTER carpdev eth0 vhid 1 advbase 1 advskew 0"),
        "{show}"
    );

    // Bad input: a precise reason and nothing changed; exit 2 when carpctl's own checks catch it
    // (a value out of range, a malformed command), exit 1 when carpd refuses it.
    let before = status(&sock);
    for (args, needle, code) in [
        (
            &["set", "carp0", "advskew", "255"][..],
            "advskew 255 is out of range",
            2,
        ),
        (
            &["set", "carp0", "advbase", "255"],
            "advbase 255 is out of range",
            2,
        ),
        (&["set", "carp0", "advskew"], "advskew needs a value", 2),
        (
            &["set", "carp0", "state", "sideways"],
            "use master or backup",
            2,
        ),
        (&["set", "carp0", "frob", "1"], "unknown setting", 2),
        (
            &["set", "carp9", "advskew", "1"],
            "no carp interface carp9",
            1,
        ),
        (&["ifconfig", "carp0", "advskew", "255"], "advskew", 2),
        (&["ifconfig", "carp0", "vhid", "0"], "vhid", 2),
        (&["ifconfig", "carp0", "vhid", "256"], "vhid", 2),
        (
            &["ifconfig", "carp0", "vhid", "5"],
            "vhid cannot be changed",
            2,
        ),
        (&["ifconfig", "carp0", "frobnicate"], "frobnicate", 2),
        (
            &["ifconfig", "carp9", "advskew", "1"],
            "no carp interface carp9",
            1,
        ),
        (
            &["ifconfig", "-g", "nosuch", "carpdemote", "1"],
            "no interface group nosuch",
            1,
        ),
        (&["demote", "nosuch", "1"], "no interface group nosuch", 1),
        (&["demote", "test", "-1"], "out of range", 1),
        (&["demote", "test", "256"], "use N (0..=255)", 2),
        (&["sysctl", "net.inet.carp.log=9"], "0..=7", 2),
        (&["sysctl", "net.inet.carp.bogus=1"], "unknown sysctl", 2),
    ] {
        refused_with(&sock, args, needle, code);
    }
    assert_eq!(status(&sock), before, "a refused command changed something");

    // Usage errors: exit 2.
    for args in [
        &[][..],
        &["bogus"],
        &["status", "--bogus"],
        &["set", "carp0"],
    ] {
        let o = ctl(&sock, args);
        assert_eq!(o.code, 2, "carpctl {args:?}: {}{}", o.stdout, o.stderr);
    }

    // OpenBSD's group demotion, then carpctl's own forms.
    ok(&sock, &["ifconfig", "-g", "test", "carpdemote", "50"]);
    assert_eq!(group_demote(&sock, "test"), 50);
    assert_eq!(status(&sock)["interfaces"][0]["demote"], json!(50));
    assert!(gw1.wait_log("group test: demote 0 -> 50", SETTLE));
    ok(&sock, &["ifconfig", "-g", "test", "-carpdemote", "50"]);
    assert_eq!(group_demote(&sock, "test"), 0);
    ok(&sock, &["demote", "test", "7"]);
    ok(&sock, &["demote", "test", "+5"]);
    ok(&sock, &["demote", "test", "-2"]);
    assert!(ok(&sock, &["demote", "test"]).contains("10"));
    assert_eq!(group_demote(&sock, "test"), 10);
    ok(&sock, &["demote", "test", "0"]);

    // set: several settings at once, logged, shown by status.
    let done = ok(&sock, &["set", "carp0", "advbase", "2", "advskew", "10"]);
    assert!(done.contains("advbase 1 -> 2, advskew 0 -> 10"), "{done}");
    assert!(gw1.wait_log("carpctl: carp0: advbase 1 -> 2, advskew 0 -> 10", SETTLE));
    let s = status(&sock);
    assert_eq!(
        (
            &s["interfaces"][0]["advbase"],
            &s["interfaces"][0]["advskew"]
        ),
        (&json!(2), &json!(10))
    );
    ok(
        &sock,
        &[
            "set", "carp0", "advbase", "1", "advskew", "0", "pass", "labpass",
        ],
    );

    // Forced states.
    let skip = gw1.log().len();
    ok(&sock, &["set", "carp0", "state", "backup"]);
    assert!(gw1.wait_log_after(skip, "MASTER -> BACKUP (forced backup)", SETTLE));
    assert_eq!(status(&sock)["interfaces"][0]["state"], json!("BACKUP"));
    ok(&sock, &["set", "carp0", "state", "master"]);
    assert!(gw1.wait_log_after(skip, "BACKUP -> MASTER (forced master)", SETTLE));
    assert_eq!(status(&sock)["interfaces"][0]["state"], json!("MASTER"));

    // sysctl.
    assert_eq!(
        ok(&sock, &["sysctl", "net.inet.carp.preempt"]).trim(),
        "net.inet.carp.preempt=0"
    );
    assert_eq!(
        ok(&sock, &["sysctl", "net.inet.carp.preempt=1"]).trim(),
        "net.inet.carp.preempt=1"
    );
    assert_eq!(status(&sock)["preempt"], json!(true));
    assert!(gw1.wait_log("carpctl: net.inet.carp.preempt=1", SETTLE));
    assert_eq!(
        ok(&sock, &["sysctl", "net.inet.carp.log=3"]).trim(),
        "net.inet.carp.log=3"
    );

    // counters: JSON, table, and --watch refreshing.
    let c: Value = serde_json::from_str(&ok(&sock, &["counters", "--json"])).expect("JSON");
    let v = &c["vhids"][0];
    assert_eq!((&v["name"], &v["vhid"]), (&json!("carp0"), &json!(1)));
    assert!(v["transitions_to_master"].as_u64().unwrap() >= 2, "{c}");
    assert!(v["opackets"].as_u64().unwrap() > 0, "adverts sent: {c}");
    assert!(v["badauth"].is_u64(), "{c}");
    for f in [
        "ipackets",
        "badvhid",
        "arp_replies",
        "vmac_passed",
        "balanced_drop",
    ] {
        assert!(v["dataplane"][f].is_u64(), "dataplane.{f} in {c}");
    }
    assert!(ok(&sock, &["counters"]).contains("arp_replies"));
    let mut watch = Command::new(carpctl_binary())
        .arg("--control-socket")
        .arg(&sock)
        .args(["counters", "--watch", "0.3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("carpctl counters --watch");
    std::thread::sleep(Duration::from_millis(1200));
    let _ = watch.kill();
    let mut text = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = watch.wait();
    assert!(
        text.matches("carp0 vhid 1 on eth0").count() >= 2,
        "--watch did not refresh:\n{text}"
    );

    // No [pfsync] in this config: sync says so, and the flow table is empty (tracking is off).
    assert!(ok(&sock, &["sync"]).contains("sync: not configured"));
    assert!(ok(&sock, &["flows", "--json"]).contains("\"flows\": []"));

    // Root only: the socket refuses everyone else.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(carpctl_binary())
        .arg("--control-socket")
        .arg(&sock)
        .arg("status")
        .output()
        .expect("setpriv");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Metrics: OpenMetrics, parsed, with the values carpctl shows.
    ok(&sock, &["demote", "test", "3"]);
    let resp = scrape(&pair, "/metrics");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let m = samples(body);
    let get = |k: &str| {
        m.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no sample {k} in\n{body}"))
    };
    let l = r#"interface="carp0",carpdev="eth0",vhid="1""#;
    assert_eq!(
        get(&format!(r#"carp_vhid_state{{{l},state="MASTER"}}"#)),
        1.0
    );
    assert_eq!(
        get(&format!(r#"carp_vhid_state{{{l},state="BACKUP"}}"#)),
        0.0
    );
    assert_eq!(get(r#"carp_group_demote{group="test"}"#), 3.0);
    assert_eq!(get(&format!("carp_vhid_demote{{{l}}}")), 3.0);
    assert_eq!(get("carp_preempt"), 1.0);
    assert!(get(&format!("carp_vhid_transitions_to_master_total{{{l}}}")) >= 2.0);
    assert!(get(&format!("carp_dataplane_vmac_passed_total{{{l}}}")) >= 0.0);
    assert!(scrape(&pair, "/nope").starts_with("HTTP/1.1 404"));

    // `carpctl restart` answers first, then carpd re-executes in place (same PID) and resumes MASTER;
    // runtime changes are gone (the config file rules again). The peer's view is lab_pair.rs's test.
    let (skip, pid) = (gw1.log().len(), gw1.pid());
    assert!(ok(&sock, &["restart"]).contains("re-executes"));
    assert!(
        gw1.wait_log_after(skip, "carp0: resumed vhid 1 as MASTER", SETTLE),
        "{}",
        gw1.log()
    );
    // Re-executed, not spawned-and-exited: the very process the test started still runs.
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(st.contains("State:") && !st.contains("zombie"), "{st}");
    assert!(!gw1.log()[skip..].contains("bowing out"));
    let s = status(&sock);
    assert_eq!(s["interfaces"][0]["state"], json!("MASTER"));
    assert_eq!(s["interfaces"][0]["advbase"], json!(1));
}

#[test]
fn openbsd_ifconfig_lines_hand_master_over() {
    if !require_root("openbsd_ifconfig_lines_hand_master_over") {
        return;
    }
    let pair = Pair::new("ctl2");
    let gw1 = pair.carpd(&pair.gw1, "gw1", &config(0));
    assert!(
        gw1.wait_log("carp0 vhid 1: BACKUP -> MASTER", SETTLE),
        "gw1: {}",
        gw1.log()
    );
    let gw2 = pair.carpd(&pair.gw2, "gw2", &config(100));
    assert!(
        gw2.wait_log("carp0 vhid 1: INIT -> BACKUP", SETTLE),
        "gw2: {}",
        gw2.log()
    );
    let (s1, s2) = (pair.dir.join("gw1.sock"), pair.dir.join("gw2.sock"));

    // `ifconfig carp0 advskew 254` on the master: with preempt on, the peer takes MASTER.
    ok(&s2, &["sysctl", "net.inet.carp.preempt=1"]);
    ok(&s1, &["ifconfig", "carp0", "advskew", "254"]);
    assert!(
        gw2.wait_log(
            "BACKUP -> MASTER (preempting a less preferred master)",
            SETTLE
        ),
        "gw2: {}",
        gw2.log()
    );
    assert!(
        gw1.wait_log("MASTER -> BACKUP (more preferred master seen)", SETTLE),
        "gw1: {}",
        gw1.log()
    );
    let st1 = status(&s1);
    assert_eq!(st1["interfaces"][0]["state"], json!("BACKUP"));
    assert_eq!(st1["interfaces"][0]["advskew"], json!(254));
    assert_eq!(status(&s2)["interfaces"][0]["state"], json!("MASTER"));
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));

    // Group demotion on the new master hands it back (a lower demote wins).
    let skip1 = gw1.log().len();
    ok(&s2, &["ifconfig", "-g", "test", "carpdemote", "50"]);
    assert!(
        gw1.wait_log_after(
            skip1,
            "BACKUP -> MASTER (master has a higher demote count)",
            SETTLE
        ),
        "gw1: {}",
        gw1.log()
    );
    assert_eq!(group_demote(&s2, "test"), 50);
    assert_eq!(status(&s2)["interfaces"][0]["state"], json!("BACKUP"));
    // Demotion lifted: gw2 (preempt on, less skewed) takes MASTER back.
    let skip2 = gw2.log().len();
    ok(&s2, &["ifconfig", "-g", "test", "-carpdemote", "50"]);
    assert!(
        gw2.wait_log_after(
            skip2,
            "BACKUP -> MASTER (preempting a less preferred master)",
            SETTLE
        ),
        "gw2: {}",
        gw2.log()
    );

    // `ifconfig carp0 down` on the master: bow-out, the peer takes over at once.
    let skip1 = gw1.log().len();
    let t0 = Instant::now();
    ok(&s2, &["ifconfig", "carp0", "down"]);
    assert!(
        gw1.wait_log_after(skip1, "BACKUP -> MASTER (master bowed out)", SETTLE),
        "gw1: {}",
        gw1.log()
    );
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "bow-out takeover took {took:?}"
    );
    assert_eq!(status(&s2)["interfaces"][0]["state"], json!("INIT"));
    assert_eq!(status(&s1)["interfaces"][0]["state"], json!("MASTER"));
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
    ok(&s2, &["ifconfig", "carp0", "up"]);
    assert!(gw2.wait_log_after(skip2, "INIT -> BACKUP (interface up)", SETTLE));
}

#[test]
fn track_entries_demote_groups_while_failing() {
    if !require_root("track_entries_demote_groups_while_failing") {
        return;
    }
    let pair = Pair::new("ctl3");
    pair.gw1.run(
        "ip link add trk0 type veth peer name trk1 && ip link set trk1 up && ip link set trk0 up",
    );
    let maint = pair.dir.join("maintenance");
    let cfg = format!(
        "{}\n[[track]]\ninterface = \"trk0\"\ngroup = \"test\"\ndemote = 5\ninterval = 0.1\n\n\
         [[track]]\nfile = \"{}\"\ndemote = 20\ninterval = 0.1\nfall = 2\n",
        config(0),
        maint.display()
    );
    let gw1 = pair.carpd(&pair.gw1, "gw1", &cfg);
    assert!(gw1.wait_log("control socket", SETTLE), "{}", gw1.log());
    let sock = pair.dir.join("gw1.sock");
    let wait_demote = |group: &str, want: u64| {
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if group_demote(&sock, group) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("group {group} never reached demote {want}:\n{}", gw1.log());
    };
    wait_demote("test", 0);
    pair.gw1.run("ip link set trk0 down");
    wait_demote("test", 5);
    assert!(gw1.wait_log(
        "track interface trk0: failing; group test demote +5",
        SETTLE
    ));
    assert_eq!(status(&sock)["interfaces"][0]["demote"], json!(5));
    pair.gw1.run("ip link set trk0 up");
    wait_demote("test", 0);
    std::fs::write(&maint, "").unwrap();
    wait_demote("carp", 20);
    std::fs::remove_file(&maint).unwrap();
    wait_demote("carp", 0);
    assert!(gw1.wait_log("recovered; group carp demote -20", SETTLE));
}
