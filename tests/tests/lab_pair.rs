//! Real carpd processes (and a real ucarp) in the "pair" lab: election by advskew, failover after SIGKILL
//! with the client keeping the same virtual MAC, takeover through the bow-out on SIGTERM, restart after
//! SIGKILL, a second carpd refused, interop with ucarp as master and as backup, and hitless restarts
//! (SIGUSR2 re-exec, SIGKILL and start) that the peer never notices. Needs root.
use carp_tests::{
    lab::{Daemon, Pair, VIP, VMAC1},
    require_root,
};
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(8);

/// Starts gw1 (advskew 0) and waits for it to be MASTER, then gw2 (advskew 100) as BACKUP.
fn elect(pair: &Pair) -> (Daemon, Daemon) {
    pair.elect(&Pair::config(0), &Pair::config(100))
}

#[test]
fn election_by_advskew_one_master_client_reaches_vip() {
    if !require_root("election_by_advskew_one_master_client_reaches_vip") {
        return;
    }
    let pair = Pair::new("cpel");
    // Start both at once: the less skewed one's master-down timer expires first.
    let gw2 = pair.carpd(&pair.gw2, "gw2", &Pair::config(100));
    let gw1 = pair.carpd(&pair.gw1, "gw1", &Pair::config(0));
    assert!(
        gw1.wait_log("BACKUP -> MASTER", SETTLE),
        "gw1: {}",
        gw1.log()
    );
    // Several advert intervals later gw2 is still BACKUP: exactly one MASTER.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(gw1.carpd_state().as_deref(), Some("MASTER"));
    assert_eq!(
        gw2.carpd_state().as_deref(),
        Some("BACKUP"),
        "{}",
        gw2.log()
    );
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
    assert_eq!(pair.client_vip_mac().as_deref(), Some(VMAC1));

    // The BACKUP's carp interface is down with no address; the MASTER's is up with the VIP and no
    // link-local address generated from the virtual MAC (addrgenmode none).
    let b = pair.gw2.run("ip -o link show carp0");
    assert!(b.contains("state DOWN") && !b.contains(",UP"), "{b}");
    assert!(!pair.gw2.run("ip -o addr show dev carp0").contains(VIP));
    let m = pair.gw1.run("ip -o addr show dev carp0");
    assert!(m.contains(&format!("{VIP}/24")), "{m}");
    assert!(!m.contains("fe80"), "{m}");
    assert!(pair.gw1.run("ip -o link show carp0").contains(VMAC1));

    // Both carpdevs joined the CARP groups, so a real NIC's multicast filter admits adverts.
    for ns in [&pair.gw1, &pair.gw2] {
        let maddr = ns.run("ip maddr show dev eth0");
        assert!(maddr.contains("224.0.0.18"), "{maddr}");
        assert!(maddr.contains("ff02::12"), "{maddr}");
    }

    // The BACKUP never sends a frame from the virtual MAC (the switch must not learn it at its port).
    let captured = pair
        .sw
        .run("timeout 3 tcpdump -n -Q in -i cpel-p1 -c 1 ether src 00:00:5e:00:01:01 2>&1; true");
    assert!(captured.contains("0 packets captured"), "{captured}");

    // A second carpd on the same carpdev refuses to start and says why.
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", pair.gw1.name))
        .arg(carp_tests::lab::carpd_binary())
        .args(["-c", pair.dir.join("gw1.toml").to_str().unwrap()])
        .args(["--bpffs", pair.bpffs.join("other").to_str().unwrap()])
        .output()
        .expect("run second carpd");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another carpd already runs on eth0"), "{err}");
    assert_eq!(gw1.carpd_state().as_deref(), Some("MASTER"));
}

#[test]
fn sigkill_master_backup_takes_over_same_mac() {
    if !require_root("sigkill_master_backup_takes_over_same_mac") {
        return;
    }
    let pair = Pair::new("cpkl");
    let (mut gw1, gw2) = elect(&pair);
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
    assert_eq!(pair.client_vip_mac().as_deref(), Some(VMAC1));
    gw1.kill9();
    let t0 = Instant::now();
    assert!(
        gw2.wait_log(
            "carp0 vhid 1: BACKUP -> MASTER (master down timer expired)",
            Duration::from_secs(8)
        ),
        "gw2: {}",
        gw2.log()
    );
    let took = t0.elapsed();
    // Master-down = 3 * advbase + advskew/256 = ~3.4 s.
    assert!(took < Duration::from_secs(6), "takeover took {took:?}");
    // The client forgets the VIP's MAC and asks again: gw2's XDP answers (with the same virtual MAC),
    // and gw1's dataplane, whose controller is dead and whose MASTER lease ran out, stays silent.
    let before = arp_replies(&pair, "gw2");
    let gw1_before = stats(&pair, "gw1");
    pair.client.run("ip neigh flush dev eth0");
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
    assert!(
        arp_replies(&pair, "gw2") > before,
        "gw2 did not answer ARP for the VIP"
    );
    let gw1_after = stats(&pair, "gw1");
    assert_eq!(
        gw1_after.arp_replies, gw1_before.arp_replies,
        "the killed master's dataplane must not keep answering ARP"
    );
    assert!(
        gw1_after.arp_dropped_backup > gw1_before.arp_dropped_backup,
        "the killed master's dataplane saw the request and dropped it"
    );
    assert_eq!(pair.client_vip_mac().as_deref(), Some(VMAC1));
    assert!(pair.gw2.run("ip -o addr show dev carp0").contains(VIP));
}

#[test]
fn sigterm_bow_out_hands_over_fast_and_cleans_up() {
    if !require_root("sigterm_bow_out_hands_over_fast_and_cleans_up") {
        return;
    }
    let pair = Pair::new("cptm");
    let (mut gw1, gw2) = elect(&pair);
    let skip = gw2.log().len();
    let t0 = Instant::now();
    gw1.signal(libc::SIGTERM);
    assert!(
        gw2.wait_log_after(
            skip,
            "carp0 vhid 1: BACKUP -> MASTER (master bowed out)",
            Duration::from_secs(2)
        ),
        "gw2: {}",
        gw2.log()
    );
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "bow-out takeover took {took:?}"
    );
    let status = gw1.wait_exit(Duration::from_secs(5)).expect("gw1 exits");
    assert!(status.success(), "gw1 exit: {status:?}\n{}", gw1.log());
    // Make-before-break: gw1 kept serving until it heard gw2.
    assert!(
        gw1.log()
            .contains("carp0 vhid 1: MASTER -> INIT (new master heard after bow-out)"),
        "{}",
        gw1.log()
    );
    // Clean-up: no carp interface, no pins.
    assert!(!pair.gw1.run("ip -o link").contains("carp0"));
    assert!(!pair.bpffs.join("gw1").join("eth0").exists());
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
    assert_eq!(pair.client_vip_mac().as_deref(), Some(VMAC1));
}

#[test]
fn restart_after_sigkill_needs_no_cleanup() {
    if !require_root("restart_after_sigkill_needs_no_cleanup") {
        return;
    }
    let pair = Pair::new("cprs");
    let (mut gw1, gw2) = elect(&pair);
    gw1.kill9();
    assert!(
        gw2.wait_log("BACKUP -> MASTER", Duration::from_secs(8)),
        "{}",
        gw2.log()
    );
    // The old carp0 and the pinned dataplane are still there; a new carpd takes them over.
    let skip = gw1.log().len();
    let gw1b = pair.carpd(&pair.gw1, "gw1", &Pair::config(0));
    assert!(
        gw1b.wait_log_after(skip, "carp0 vhid 1: INIT -> BACKUP (interface up)", SETTLE),
        "{}",
        gw1b.log()
    );
    let log = gw1b.log()[skip..].to_string();
    assert!(log.contains("adopted"), "{log}");
    assert!(log.contains("removed a stale carp interface"), "{log}");
    // No preempt: the restarted, more preferred gw1 stays BACKUP behind gw2.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(gw1b.carpd_state().as_deref(), Some("BACKUP"));
    assert_eq!(gw2.carpd_state().as_deref(), Some("MASTER"));
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
}

/// ARP replies sent by a gateway's XDP program for vhid 1 (read through its pinned counters map).
fn stats(pair: &Pair, gw: &str) -> carp_common::maps::CarpStats {
    let maps =
        carp::dataplane::maps::Maps::open_pinned(&pair.bpffs.join(gw), "eth0").expect("pins");
    maps.stats(1).expect("carp_stats")
}

fn arp_replies(pair: &Pair, gw: &str) -> u64 {
    stats(pair, gw).arp_replies
}

fn ucarp(pair: &Pair, advskew: u8) -> Daemon {
    let skew = advskew.to_string();
    Daemon::spawn(
        &pair.gw2,
        "ucarp",
        &pair.dir,
        &[
            "ucarp",
            "-i",
            "eth0",
            "-s",
            "10.0.0.12",
            "-v",
            "1",
            "-p",
            "labpass",
            "-a",
            VIP,
            "-b",
            "1",
            "-k",
            &skew,
            "-u",
            "/bin/true",
            "-d",
            "/bin/true",
        ],
    )
}

#[test]
fn interop_ucarp_backup_carpd_master() {
    if !require_root("interop_ucarp_backup_carpd_master") {
        return;
    }
    let pair = Pair::new("cpu1");
    let gw1 = pair.carpd(&pair.gw1, "gw1", &Pair::config(0));
    assert!(gw1.wait_log("BACKUP -> MASTER", SETTLE), "{}", gw1.log());
    let uc = ucarp(&pair, 100);
    assert!(
        uc.wait_log("Switching to state: BACKUP", SETTLE),
        "{}",
        uc.log()
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(uc.ucarp_state().as_deref(), Some("BACKUP"), "{}", uc.log());
    assert_eq!(gw1.carpd_state().as_deref(), Some("MASTER"));
    assert!(
        !uc.log().to_lowercase().contains("bad digest"),
        "{}",
        uc.log()
    );
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
    // carpd's bow-out makes ucarp take over at once (its "master is going to time out" rule).
    let mut gw1 = gw1;
    gw1.signal(libc::SIGTERM);
    assert!(
        uc.wait_log("Switching to state: MASTER", Duration::from_secs(2)),
        "{}",
        uc.log()
    );
    assert!(
        gw1.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn interop_ucarp_master_carpd_backup() {
    if !require_root("interop_ucarp_master_carpd_backup") {
        return;
    }
    let pair = Pair::new("cpu2");
    let uc = ucarp(&pair, 0);
    assert!(
        uc.wait_log("Switching to state: MASTER", SETTLE),
        "{}",
        uc.log()
    );
    let gw1 = pair.carpd(&pair.gw1, "gw1", &Pair::config(100));
    assert!(gw1.wait_log("INIT -> BACKUP", SETTLE), "{}", gw1.log());
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        gw1.carpd_state().as_deref(),
        Some("BACKUP"),
        "{}",
        gw1.log()
    );
    assert_eq!(uc.ucarp_state().as_deref(), Some("MASTER"), "{}", uc.log());
    assert!(!gw1.log().contains("fails HMAC"), "{}", gw1.log());
    assert!(!uc.log().to_lowercase().contains("bad digest"));
    // ucarp dies without a bow-out: carpd takes over after master-down.
    let mut uc = uc;
    uc.kill9();
    assert!(
        gw1.wait_log(
            "BACKUP -> MASTER (master down timer expired)",
            Duration::from_secs(8)
        ),
        "{}",
        gw1.log()
    );
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
}

#[test]
fn carpdev_carrier_loss_goes_init_and_backup_takes_over() {
    if !require_root("carpdev_carrier_loss_goes_init_and_backup_takes_over") {
        return;
    }
    let pair = Pair::new("cplk");
    let gw1 = pair.carpd(&pair.gw1, "gw1", &Pair::config(0));
    assert!(gw1.wait_log("BACKUP -> MASTER", SETTLE), "{}", gw1.log());
    // gw2 runs hooks: `script <carpif> <state> <vip...>`, with a clean environment.
    let hook = pair.dir.join("hook.sh");
    let hook_log = pair.dir.join("hook.log");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$* home=${{HOME:-unset}}\" >> {}\n",
            hook_log.display()
        ),
    )
    .unwrap();
    pair.gw2.run(&format!("chmod +x {}", hook.display()));
    let hooks = format!(
        "up_script = \"{0}\"\ndown_script = \"{0}\"\n",
        hook.display()
    );
    let gw2 = pair.carpd(&pair.gw2, "gw2", &(Pair::config(100) + &hooks));
    assert!(gw2.wait_log("INIT -> BACKUP", SETTLE), "{}", gw2.log());
    // Unplug gw1's cable at the switch: its eth0 loses carrier.
    pair.sw.run("ip link set cplk-p0 down");
    assert!(
        gw1.wait_log(
            "carp0 vhid 1: MASTER -> INIT (carpdev link down)",
            Duration::from_secs(3)
        ),
        "{}",
        gw1.log()
    );
    assert!(
        gw2.wait_log("BACKUP -> MASTER", Duration::from_secs(8)),
        "{}",
        gw2.log()
    );
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
    // Plugged back in: gw1 comes back as BACKUP (no preempt), gw2 stays MASTER.
    pair.sw.run("ip link set cplk-p0 up");
    assert!(
        gw1.wait_log(
            "carp0 vhid 1: INIT -> BACKUP (carpdev link up)",
            Duration::from_secs(3)
        ),
        "{}",
        gw1.log()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(gw1.carpd_state().as_deref(), Some("BACKUP"));
    assert_eq!(gw2.carpd_state().as_deref(), Some("MASTER"));
    let hook_ran = std::fs::read_to_string(&hook_log).unwrap_or_default();
    assert_eq!(hook_ran, "carp0 MASTER 10.0.0.1 home=unset\n");
}

#[test]
fn sighup_reload_keeps_unchanged_state_adds_and_removes() {
    if !require_root("sighup_reload_keeps_unchanged_state_adds_and_removes") {
        return;
    }
    let pair = Pair::new("cphp");
    let (gw1, gw2) = elect(&pair);
    let cfg = pair.dir.join("gw1.toml");
    let transitions = |d: &Daemon| d.log().matches(" -> ").count();
    let before = transitions(&gw1);

    // A new advskew applies in place: still MASTER, no transition.
    std::fs::write(&cfg, Pair::config(0).replace("advskew = 0", "advskew = 50")).unwrap();
    let skip = gw1.log().len();
    gw1.signal(libc::SIGHUP);
    assert!(
        gw1.wait_log_after(
            skip,
            "carp0: advbase 1 advskew 50 (state kept)",
            Duration::from_secs(3)
        ),
        "{}",
        gw1.log()
    );

    // A second carp interface appears; carp0 is untouched.
    let two = format!(
        "{}\n[[interface]]\nname = \"carp1\"\ncarpdev = \"eth0\"\nvhid = 2\npass = \"labpass\"\n\
         addresses = [\"10.0.0.2/24\"]\n",
        Pair::config(0).replace("advskew = 0", "advskew = 50")
    );
    std::fs::write(&cfg, &two).unwrap();
    gw1.signal(libc::SIGHUP);
    assert!(
        gw1.wait_log("carp1 vhid 2: BACKUP -> MASTER", SETTLE),
        "{}",
        gw1.log()
    );
    assert!(
        pair.gw1
            .run("ip -o addr show dev carp1")
            .contains("10.0.0.2/24")
    );
    assert_eq!(transitions(&gw1), before + 2, "{}", gw1.log());

    // And goes away again.
    std::fs::write(&cfg, Pair::config(0).replace("advskew = 0", "advskew = 50")).unwrap();
    gw1.signal(libc::SIGHUP);
    assert!(
        gw1.wait_log("carp1 vhid 2: MASTER -> INIT", Duration::from_secs(3)),
        "{}",
        gw1.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!pair.gw1.run("ip -o link").contains("carp1"));
    assert_eq!(gw1.carpd_state_of("carp0").as_deref(), Some("MASTER"));
    assert_eq!(gw2.carpd_state().as_deref(), Some("BACKUP"));
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
}

#[test]
fn ipv6_vip_answered_by_master_and_moves_on_failover() {
    if !require_root("ipv6_vip_answered_by_master_and_moves_on_failover") {
        return;
    }
    let pair = Pair::new("cpv6");
    for (ns, ip) in [
        (&pair.gw1, "2001:db8::11"),
        (&pair.gw2, "2001:db8::12"),
        (&pair.client, "2001:db8::100"),
    ] {
        ns.run(&format!("ip -6 addr add {ip}/64 dev eth0 nodad"));
    }
    let config = |skew: u8| {
        Pair::config(skew).replace(
            "addresses = [\"10.0.0.1/24\"]",
            "addresses = [\"10.0.0.1/24\", \"2001:db8::1/64\"]",
        )
    };
    let mut gw1 = pair.carpd(&pair.gw1, "gw1", &config(0));
    assert!(gw1.wait_log("BACKUP -> MASTER", SETTLE), "{}", gw1.log());
    let gw2 = pair.carpd(&pair.gw2, "gw2", &config(100));
    assert!(gw2.wait_log("INIT -> BACKUP", SETTLE), "{}", gw2.log());
    let ping6 = || {
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            let ok = std::process::Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", pair.client.name))
                .args(["ping", "-6", "-c1", "-W1", "2001:db8::1"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    assert!(ping6(), "the client cannot reach the IPv6 VIP");
    let neigh = pair.client.run("ip -6 neigh show 2001:db8::1");
    assert!(neigh.contains(VMAC1), "{neigh}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        gw2.carpd_state().as_deref(),
        Some("BACKUP"),
        "{}",
        gw2.log()
    );
    gw1.kill9();
    pair.gw1.run("ip link set eth0 down");
    assert!(
        gw2.wait_log("BACKUP -> MASTER", Duration::from_secs(8)),
        "{}",
        gw2.log()
    );
    pair.client.run("ip -6 neigh flush dev eth0");
    assert!(
        ping6(),
        "the client cannot reach the IPv6 VIP after failover"
    );
    let neigh = pair.client.run("ip -6 neigh show 2001:db8::1");
    assert!(neigh.contains(VMAC1), "{neigh}");
}

#[test]
fn carppeer_unicast_adverts_elect_and_fail_over() {
    if !require_root("carppeer_unicast_adverts_elect_and_fail_over") {
        return;
    }
    let pair = Pair::new("cppe");
    let gw1 = pair.carpd(
        &pair.gw1,
        "gw1",
        &(Pair::config(0) + "peer = \"10.0.0.12\"\n"),
    );
    assert!(gw1.wait_log("BACKUP -> MASTER", SETTLE), "{}", gw1.log());
    let gw2 = pair.carpd(
        &pair.gw2,
        "gw2",
        &(Pair::config(100) + "peer = \"10.0.0.11\"\n"),
    );
    assert!(gw2.wait_log("INIT -> BACKUP", SETTLE), "{}", gw2.log());
    // Adverts go to the peer, not the group.
    let seen = pair
        .sw
        .run("timeout 2 tcpdump -n -Q in -i cppe-p0 -c 1 ip proto 112 2>/dev/null; true");
    assert!(seen.contains("10.0.0.11 > 10.0.0.12"), "{seen}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        gw2.carpd_state().as_deref(),
        Some("BACKUP"),
        "{}",
        gw2.log()
    );
    let mut gw1 = gw1;
    gw1.signal(libc::SIGTERM);
    assert!(
        gw2.wait_log(
            "BACKUP -> MASTER (master bowed out)",
            Duration::from_secs(2)
        ),
        "{}",
        gw2.log()
    );
    assert!(
        gw1.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
}

#[test]
fn stalled_backup_controller_does_not_fail_over_falsely() {
    if !require_root("stalled_backup_controller_does_not_fail_over_falsely") {
        return;
    }
    let pair = Pair::new("cpst");
    let (gw1, gw2) = elect(&pair);
    // Freeze gw2's controller for longer than master-down; the XDP program keeps queueing adverts.
    gw2.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(5));
    gw2.signal(libc::SIGCONT);
    // On waking, the master-down timer is overdue; the queued adverts must be read first.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        gw2.carpd_state().as_deref(),
        Some("BACKUP"),
        "{}",
        gw2.log()
    );
    assert_eq!(
        gw1.carpd_state().as_deref(),
        Some("MASTER"),
        "{}",
        gw1.log()
    );
}

/// Pings the VIP from the client every 10 ms, `count` times; returns (sent, received) when done.
fn ping_vip_fast(pair: &Pair, count: u32) -> std::thread::JoinHandle<(u32, u32)> {
    let ns = pair.client.name.clone();
    std::thread::spawn(move || {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c"])
            .arg(count.to_string())
            .arg(VIP)
            .output()
            .expect("run ping");
        let text = String::from_utf8_lossy(&out.stdout);
        // "400 packets transmitted, 399 received, ..."
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        let num = |word: &str| -> u32 {
            let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
            let at = words.iter().position(|w| *w == word).expect("summary word");
            words[at - 1].parse().expect("a count")
        };
        (num("packets"), num("received"))
    })
}

/// CAP_NET_ADMIN (12), CAP_NET_RAW (13), CAP_PERFMON (38), CAP_BPF (39): all carpd keeps after start-up.
const RUNTIME_CAPS: u64 = 1 << 12 | 1 << 13 | 1 << 38 | 1 << 39;

#[test]
fn hitless_restart_sigusr2_and_sigkill_no_failover() {
    if !require_root("hitless_restart_sigusr2_and_sigkill_no_failover") {
        return;
    }
    let pair = Pair::new("cphr");
    let (mut gw1, gw2) = elect(&pair);
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
    let pid = gw1.pid();
    assert_eq!(
        gw1.capabilities(),
        (RUNTIME_CAPS, RUNTIME_CAPS),
        "after start-up"
    );

    // Both ways of restarting: re-exec on SIGUSR2 (same PID), then SIGKILL and a new start.
    for how in ["SIGUSR2", "SIGKILL"] {
        let (skip1, skip2) = (gw1.log().len(), gw2.log().len());
        // 400 pings a 10 ms: ~4 s, beyond gw2's master-down interval (~3.4 s) after the restart.
        let ping = ping_vip_fast(&pair, 400);
        std::thread::sleep(Duration::from_millis(300));
        if how == "SIGUSR2" {
            gw1.signal(libc::SIGUSR2);
        } else {
            gw1.kill9();
            gw1 = pair.carpd(&pair.gw1, "gw1", &Pair::config(0));
        }
        assert!(
            gw1.wait_log_after(
                skip1,
                "carp0: resumed vhid 1 as MASTER",
                Duration::from_secs(3)
            ),
            "{how}: gw1 did not resume:\n{}",
            gw1.log()
        );
        let log = gw1.log()[skip1..].to_string();
        // Least privilege survives the re-exec (which starts from the reduced bounding set) and a new start.
        assert_eq!(gw1.capabilities(), (RUNTIME_CAPS, RUNTIME_CAPS), "{how}");
        assert!(log.contains("adopted"), "{how}: {log}");
        assert!(log.contains("kept the carp interface"), "{how}: {log}");
        assert!(
            !log.contains("removed a stale carp interface"),
            "{how}: {log}"
        );
        if how == "SIGUSR2" {
            // Re-executed, not spawned-and-exited: the very process the test started still runs.
            let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            assert!(st.contains("State:") && !st.contains("zombie"), "{st}");
            assert!(log.contains("hitless restart"), "{log}");
            assert!(!log.contains("bowing out"), "{log}");
        }
        let (sent, received) = ping.join().expect("ping thread");
        assert!(
            sent >= 390 && sent - received <= 1,
            "{how}: {received} of {sent} pings answered"
        );
        // Past the master-down interval: gw2 never saw the master go away.
        std::thread::sleep(Duration::from_millis(500));
        let log2 = gw2.log()[skip2..].to_string();
        assert!(!log2.contains(" -> "), "{how}: gw2 changed state:\n{log2}");
        assert!(pair.gw1.run("ip -o addr show dev carp0").contains(VIP));
        assert_eq!(pair.client_vip_mac().as_deref(), Some(VMAC1));
    }
    assert_eq!(gw1.carpd_state().as_deref(), Some("MASTER"));
    assert_eq!(gw2.carpd_state().as_deref(), Some("BACKUP"));
}
