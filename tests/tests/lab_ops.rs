//! carpd as operators run it (issue #19), against live carpd processes in the "pair" lab: a package
//! upgrade's hitless re-exec runs the new binary on disk (two different builds, debug then release)
//! without a failover; systemd's notifications (READY, STATUS, WATCHDOG, RELOADING/READY around
//! SIGHUP) through a fake NOTIFY_SOCKET; syslog priorities on the journal stream; `carpctl monitor`,
//! `status` since/why, the exit codes and the `[control] group`; the metrics checked by `promtool
//! check metrics` (with a control run that shows promtool does reject a badly named metric). Needs root.
use carp_tests::{
    lab::{Daemon, Pair, VIP, carpctl_binary, carpd_binary},
    require_root, write_secret,
};
use serde_json::Value;
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::MetadataExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const SETTLE: Duration = Duration::from_secs(10);

fn ctl_as(sock: &Path, prefix: &[&str], args: &[&str]) -> (i32, String, String) {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(carpctl_binary());
            c
        }
        None => Command::new(carpctl_binary()),
    };
    let out = cmd
        .arg("--control-socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("run carpctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ctl(sock: &Path, args: &[&str]) -> (i32, String, String) {
    ctl_as(sock, &[], args)
}

fn ok(sock: &Path, args: &[&str]) -> String {
    let (code, out, err) = ctl(sock, args);
    assert_eq!(code, 0, "carpctl {args:?}: {out}{err}");
    out
}

fn argv<'a>(pair: &'a Pair, bin: &'a str, name: &str, config: &str) -> (Vec<String>, PathBuf) {
    let cfg = pair.dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).expect("write config");
    let sock = pair.dir.join(format!("{name}.sock"));
    (
        vec![
            bin.to_string(),
            "-c".into(),
            cfg.display().to_string(),
            "--bpffs".into(),
            pair.bpffs.join(name).display().to_string(),
            "--control-socket".into(),
            sock.display().to_string(),
            "--log".into(),
            "info".into(),
        ],
        sock,
    )
}

fn start(
    pair: &Pair,
    ns_gw1: bool,
    bin: &str,
    name: &str,
    config: &str,
    env: &[(&str, &str)],
) -> (Daemon, PathBuf) {
    let (args, sock) = argv(pair, bin, name, config);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ns = if ns_gw1 { &pair.gw1 } else { &pair.gw2 };
    (
        Daemon::spawn_with_env(ns, name, &pair.dir, &args, env),
        sock,
    )
}

/// A release build of carpd (the package's), built if missing: the second of the two builds.
fn release_carpd() -> PathBuf {
    let debug = carpd_binary();
    let release = debug
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("release/carpd");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "carp-userspace",
            "--bin",
            "carpd",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build --release carpd");
    assert!(status.success(), "building the release carpd failed");
    assert!(release.exists());
    release
}

fn build_profile(sock: &Path) -> String {
    let text = ok(sock, &["metrics"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("carp_build_info{"))
        .unwrap_or_else(|| panic!("no carp_build_info in\n{text}"));
    line.split("profile=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("profile label")
        .to_string()
}

#[test]
fn upgrade_reexecutes_the_new_binary_on_disk_without_a_failover() {
    if !require_root("upgrade_reexecutes_the_new_binary_on_disk_without_a_failover") {
        return;
    }
    let new_build = release_carpd();
    let pair = Pair::new("pkup");
    // The "installed" binary: the debug build, at a path the upgrade will replace.
    let bin_dir = pair.dir.join("usr-sbin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let installed = bin_dir.join("carpd");
    std::fs::copy(carpd_binary(), &installed).unwrap();
    let (gw1, sock1) = start(
        &pair,
        true,
        installed.to_str().unwrap(),
        "gw1",
        &Pair::config(0),
        &[],
    );
    let (gw2, _sock2) = start(
        &pair,
        false,
        carpd_binary().to_str().unwrap(),
        "gw2",
        &Pair::config(100),
        &[],
    );
    assert!(gw1.wait_log("-> MASTER", SETTLE), "{}", gw1.log());
    assert!(gw2.wait_log("-> BACKUP", SETTLE), "{}", gw2.log());
    assert!(pair.client_reaches_vip(Duration::from_secs(5)));
    // Control: the old build runs.
    assert_eq!(build_profile(&sock1), "debug");
    let pid = gw1.pid();

    // The package replaces the file the way dpkg does: a new inode renamed over the old path.
    let staged = bin_dir.join("carpd.dpkg-new");
    std::fs::copy(&new_build, &staged).unwrap();
    std::fs::rename(&staged, &installed).unwrap();
    let new_ino = std::fs::metadata(&installed).unwrap().ino();
    let skip1 = gw1.log().len();
    let skip2 = gw2.log().len();
    assert!(ok(&sock1, &["restart"]).contains("re-execut"));
    assert!(
        gw1.wait_log_after(
            skip1,
            &format!("re-executing {}", installed.display()),
            SETTLE
        ),
        "{}",
        gw1.log()
    );
    assert!(
        gw1.wait_log_after(skip1, "resumed vhid 1 as MASTER", SETTLE),
        "{}",
        gw1.log()
    );
    // Same process, now the new binary (the path's new inode, not the deleted old image).
    assert_eq!(gw1.pid(), pid);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        !exe.to_string_lossy().ends_with("(deleted)"),
        "{}",
        exe.display()
    );
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino(),
        new_ino
    );
    assert_eq!(build_profile(&sock1), "release");
    // No failover: the peer never left BACKUP, the client still reaches the VIP.
    std::thread::sleep(Duration::from_secs(4));
    let after = &gw2.log()[skip2..];
    assert!(!after.contains("-> MASTER"), "the peer took over:\n{after}");
    assert!(pair.client_reaches_vip(Duration::from_secs(5)));
    let status: Value = serde_json::from_str(&ok(&sock1, &["status", "--json"])).unwrap();
    assert_eq!(status["interfaces"][0]["state"], "MASTER");
}

/// A fake systemd notify socket: every datagram carpd sends, in order.
struct Notify {
    path: PathBuf,
    rx: mpsc::Receiver<String>,
}

impl Notify {
    fn new(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        Notify { path, rx }
    }

    /// Waits for a message containing `needle`; returns it.
    fn wait(&self, needle: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(m) if m.contains(needle) => return Some(m),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

#[test]
fn systemd_notifications_and_journal_priorities() {
    if !require_root("systemd_notifications_and_journal_priorities") {
        return;
    }
    let pair = Pair::new("pksd");
    let notify = Notify::new(&pair.dir);
    // stderr is the log file; JOURNAL_STREAM naming it is what systemd does for a journal stream.
    let log = pair.dir.join("gw1.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let (gw1, _sock) = start(
        &pair,
        true,
        carpd_binary().to_str().unwrap(),
        "gw1",
        &Pair::config(0),
        &[
            ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
            ("JOURNAL_STREAM", &stream),
        ],
    );
    assert!(
        notify.wait("READY=1", SETTLE).is_some(),
        "no READY=1:\n{}",
        gw1.log()
    );
    let status = notify.wait("STATUS=carp0 MASTER", SETTLE);
    assert!(
        status.is_some(),
        "no STATUS line with carp0 MASTER:\n{}",
        gw1.log()
    );
    // WATCHDOG=1 every 200 ms (half of WATCHDOG_USEC): several within a second.
    let t0 = Instant::now();
    for _ in 0..3 {
        assert!(
            notify.wait("WATCHDOG=1", Duration::from_secs(1)).is_some(),
            "watchdog stopped"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
    // SIGHUP: RELOADING=1, then READY=1.
    gw1.signal(libc::SIGHUP);
    let reloading = notify
        .wait("RELOADING=1", SETTLE)
        .expect("RELOADING=1 on SIGHUP");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(
        notify.wait("READY=1", SETTLE).is_some(),
        "no READY=1 after the reload"
    );
    // An invalid file on SIGHUP is refused with an error: priority 3 on the journal stream.
    std::fs::write(pair.dir.join("gw1.toml"), "[carp\n").unwrap();
    gw1.signal(libc::SIGHUP);
    assert!(
        gw1.wait_log("keeping the running config", SETTLE),
        "{}",
        gw1.log()
    );
    let text = gw1.log();
    let transition = text
        .lines()
        .find(|l| l.contains("carp0 vhid 1: ") && l.contains("-> MASTER"))
        .expect("a transition line");
    let error = text
        .lines()
        .find(|l| l.contains("keeping the running config"))
        .unwrap();
    assert!(
        transition.starts_with("<6>"),
        "info without <6>: {transition:?}"
    );
    assert!(error.starts_with("<3>"), "error without <3>: {error:?}");
    // journald stamps each line: no second timestamp (tracing's starts with the year).
    for line in text.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with('<'),
            "a line without its priority: {line:?}"
        );
        assert!(
            !line[3..].trim_start().starts_with("20"),
            "a timestamp in {line:?}"
        );
    }
    // Control run: without JOURNAL_STREAM the same carpd writes its usual timestamped lines.
    let (plain, _) = start(
        &pair,
        false,
        carpd_binary().to_str().unwrap(),
        "gw2",
        &Pair::config(100),
        &[],
    );
    assert!(plain.wait_log("-> BACKUP", SETTLE), "{}", plain.log());
    let first = plain.log().lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with("20") && !first.starts_with('<'),
        "{first:?}"
    );
}

/// Reads `carpctl monitor --json` lines on a thread.
fn monitor(sock: &Path) -> (std::process::Child, mpsc::Receiver<Value>) {
    let mut child = Command::new(carpctl_binary())
        .arg("--control-socket")
        .arg(sock)
        .args(["monitor", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("carpctl monitor");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    (child, rx)
}

fn next_event(rx: &mpsc::Receiver<Value>, kind: &str) -> Value {
    let end = Instant::now() + SETTLE;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(v) if v["event"] == kind => return v,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no {kind} event from carpctl monitor");
}

/// `promtool check metrics` on `text`: (passed, what it said).
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by cargo xtask setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn carpctl_monitor_status_exit_codes_group_access_and_promtool() {
    if !require_root("carpctl_monitor_status_exit_codes_group_access_and_promtool") {
        return;
    }
    // A group for the read-only carpctl users (idempotent: the group may be left from a run).
    let group = "carpview";
    let _ = Command::new("groupadd").args(["-f", group]).status();
    let gid = String::from_utf8(
        Command::new("getent")
            .args(["group", group])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .split(':')
    .nth(2)
    .expect("getent group")
    .to_string();
    let pair = Pair::new("pkmo");
    let key = pair.dir.join("sync.key");
    write_secret(&key, b"0123456789abcdef0123456789abcdef");
    let config = format!(
        "{}\n[pfsync]\nsyncdev = \"eth0\"\nsyncpeer = \"10.0.0.12\"\nkey_file = \"{}\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:9273\"\n\n[control]\ngroup = \"{group}\"\n",
        Pair::config(0),
        key.display()
    );
    let (gw1, sock) = start(
        &pair,
        true,
        carpd_binary().to_str().unwrap(),
        "gw1",
        &config,
        &[],
    );
    assert!(gw1.wait_log("-> MASTER", SETTLE), "{}", gw1.log());

    // status: since when and why.
    let status: Value = serde_json::from_str(&ok(&sock, &["status", "--json"])).unwrap();
    let node = &status["interfaces"][0]["nodes"][0];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let since = node["since"].as_f64().expect("since");
    assert!(
        since <= now && now - since < 60.0,
        "since {since}, now {now}"
    );
    assert_eq!(node["why"], "master down timer expired");
    let table = ok(&sock, &["status"]);
    assert!(
        table.contains("SINCE") && table.contains("master down timer expired"),
        "{table}"
    );

    // monitor: a demote change and a forced transition arrive as they happen.
    let (mut mon, events) = monitor(&sock);
    std::thread::sleep(Duration::from_millis(500));
    // The sync bulk's own +32/-32 on group carp may come and go meanwhile: look for ours.
    ok(&sock, &["demote", "carp", "+5"]);
    let end = Instant::now() + SETTLE;
    loop {
        let d = next_event(&events, "demote");
        let (old, new) = (d["old"].as_u64().unwrap(), d["new"].as_u64().unwrap());
        if d["group"] == "carp" && new == old + 5 {
            break;
        }
        assert!(Instant::now() < end, "no +5 demote event");
    }
    ok(&sock, &["set", "carp0", "state", "backup"]);
    let t = next_event(&events, "transition");
    assert_eq!(
        (
            t["interface"].as_str(),
            t["from"].as_str(),
            t["to"].as_str()
        ),
        (Some("carp0"), Some("MASTER"), Some("BACKUP"))
    );
    assert!(t["reason"].as_str().is_some_and(|r| !r.is_empty()), "{t}");
    let _ = mon.kill();
    let _ = mon.wait();

    // Exit codes: 3 without carpd, 2 for a value out of range, 1 when carpd refuses.
    assert_eq!(ctl(Path::new("/nonexistent/carpd.sock"), &["status"]).0, 3);
    assert_eq!(ctl(&sock, &["set", "carp0", "advskew", "300"]).0, 2);
    assert_eq!(ctl(&sock, &["set", "carp9", "advskew", "1"]).0, 1);
    assert_eq!(ctl(&sock, &["bogus"]).0, 2);

    // [control] group: its members read, only root changes; anyone else is refused.
    let member = ["setpriv", "--reuid=65534", "--regid=65534"];
    let groups_arg = format!("--groups={gid}");
    let member: Vec<&str> = member
        .iter()
        .copied()
        .chain([groups_arg.as_str()])
        .collect();
    let stranger = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let (code, out, err) = ctl_as(&sock, &member, &["status", "--json"]);
    assert_eq!(code, 0, "a member's status: {out}{err}");
    let (code, _, err) = ctl_as(&sock, &member, &["set", "carp0", "advskew", "10"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only root may change"), "{err}");
    let (code, _, err) = ctl_as(&sock, &stranger, &["status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("permission denied"), "{err}");

    // Metrics: carpctl metrics and the [metrics] listen endpoint, both passing promtool's lint.
    let text = ok(&sock, &["metrics"]);
    for name in [
        "carp_build_info",
        "carp_sync_flows",
        "carp_vhid_last_transition_timestamp_seconds",
        "carp_sync_badauth_total",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let (passed, said) = promtool(&text);
    assert!(passed, "promtool check metrics: {said}\n{text}");
    let scraped = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", pair.gw1.name))
        .args([
            "python3",
            "-c",
            "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9273/metrics').read().decode(),end='')",
        ])
        .output()
        .unwrap();
    assert!(
        scraped.status.success(),
        "{}",
        String::from_utf8_lossy(&scraped.stderr)
    );
    let scraped = String::from_utf8(scraped.stdout).unwrap();
    assert!(scraped.contains("carp_vhid_state{"), "{scraped}");
    let (passed, said) = promtool(&scraped);
    assert!(passed, "promtool on the endpoint: {said}");
    // Control run: promtool does reject what the old metrics had (a counter typed as a gauge with a
    // catch-all label is fine for it, but a gauge named like a counter is not).
    let (passed, _) =
        promtool("# HELP carp_old_total x\n# TYPE carp_old_total gauge\ncarp_old_total 1\n");
    assert!(
        !passed,
        "promtool accepted a gauge named _total: the check could not fail"
    );
    let _ = VIP;
}
