//! carpd speaking VRRP with a live keepalived 2.2.7 (Debian's package) in the "pair" lab: carpd BACKUP
//! under a keepalived MASTER and the reverse, keepalived SIGKILLed with its link cut (carpd takes over
//! within master-down), carpd stopped with SIGTERM (keepalived takes over on the priority-0 advert and
//! a client pinging the VIP every 10 ms loses no probe), VRRPv3 at 1 s and 10 ms, VRRPv2 at 1 s, IPv6,
//! preempt on and off; every test also reads keepalived's log for checksum, interval or address
//! complaints. Needs root.
use carp_tests::{
    lab::{Daemon, Pair, VIP},
    require_root,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(10);

/// What one test runs: VRRP version, interval and family.
#[derive(Clone, Copy)]
struct Kind {
    v3: bool,
    /// keepalived's advert_int.
    advert: &'static str,
    /// The same interval in carpd's units (v3 centiseconds, v2 seconds).
    interval: u32,
    v6: bool,
    /// Adverts to the peer's unicast address instead of the group (keepalived's
    /// unicast_src_ip/unicast_peer, carpd's unicast_peers).
    unicast: bool,
}

const V3_1S: Kind = Kind {
    v3: true,
    advert: "1",
    interval: 100,
    v6: false,
    unicast: false,
};
const V3_10MS: Kind = Kind {
    v3: true,
    advert: "0.01",
    interval: 1,
    v6: false,
    unicast: false,
};
const V2_1S: Kind = Kind {
    v3: false,
    advert: "1",
    interval: 1,
    v6: false,
    unicast: false,
};
const V3_V6: Kind = Kind {
    v3: true,
    advert: "1",
    interval: 100,
    v6: true,
    unicast: false,
};

const V3_UNICAST: Kind = Kind {
    unicast: true,
    ..V3_1S
};
const V3_V6_UNICAST: Kind = Kind {
    unicast: true,
    ..V3_V6
};

const VIP6: &str = "2001:db8:99::1";

impl Kind {
    /// gw1's (carpd's) and gw2's (keepalived's) own addresses on eth0, of the VIP's family.
    fn own(&self, gw: u8) -> String {
        if self.v6 {
            format!("2001:db8:99::1{gw}")
        } else {
            format!("10.0.0.1{gw}")
        }
    }

    fn vip(&self) -> String {
        if self.v6 {
            format!("{VIP6}/64")
        } else {
            format!("{VIP}/24")
        }
    }

    /// Master-down of a priority-100 backup at this interval, plus slack for a loaded machine.
    fn takeover_bound(&self) -> Duration {
        let interval = if self.v3 {
            Duration::from_millis(u64::from(self.interval) * 10)
        } else {
            Duration::from_secs(u64::from(self.interval))
        };
        let skew = interval.mul_f64(156.0 / 256.0);
        let skew = if self.v3 {
            skew
        } else {
            Duration::from_secs_f64(156.0 / 256.0)
        };
        3 * interval + skew + Duration::from_millis(1500)
    }
}

fn carpd_config(k: Kind, priority: u8, preempt: bool) -> String {
    format!(
        "[[interface]]\nname = \"vr0\"\ncarpdev = \"eth0\"\nprotocol = \"{}\"\nvrid = 7\npriority = {priority}\n\
         interval = {}\npreempt = {preempt}\naddresses = [\"{}\"]\n{}",
        if k.v3 { "vrrp3" } else { "vrrp2" },
        k.interval,
        k.vip(),
        if k.unicast {
            format!("unicast_peers = [\"{}\"]\n", k.own(2))
        } else {
            String::new()
        }
    )
}

/// A keepalived.conf with one instance VI_7 (VRID 7) on eth0.
fn keepalived_conf(k: Kind, state: &str, priority: u8, nopreempt: bool) -> String {
    format!(
        "global_defs {{\n  router_id lab\n  vrrp_version {}\n}}\n\
         vrrp_instance VI_7 {{\n  state {state}\n  interface eth0\n  virtual_router_id 7\n  \
         priority {priority}\n  advert_int {}\n  {}\n  {}virtual_ipaddress {{\n    {}\n  }}\n}}\n",
        if k.v3 { 3 } else { 2 },
        k.advert,
        if nopreempt { "nopreempt" } else { "" },
        if k.unicast {
            format!(
                "unicast_src_ip {}\n  unicast_peer {{\n    {}\n  }}\n  ",
                k.own(2),
                k.own(1)
            )
        } else {
            String::new()
        },
        k.vip()
    )
}

/// keepalived with its VRRP child's pid file, both SIGKILLed on drop.
struct Keepalived {
    daemon: Daemon,
    vrrp_pid: PathBuf,
}

impl Keepalived {
    fn start(pair: &Pair, k: Kind, state: &str, priority: u8, nopreempt: bool) -> Keepalived {
        let conf = pair.dir.join("keepalived.conf");
        std::fs::write(&conf, keepalived_conf(k, state, priority, nopreempt))
            .expect("write keepalived.conf");
        Keepalived::run(pair, &pair.gw2, "keepalived", &conf)
    }

    fn run(
        pair: &Pair,
        ns: &carp_tests::netns::Netns,
        name: &str,
        conf: &std::path::Path,
    ) -> Keepalived {
        let pid = pair.dir.join(format!("{name}.pid"));
        let vrrp_pid = pair.dir.join(format!("{name}-vrrp.pid"));
        let daemon = Daemon::spawn(
            ns,
            name,
            &pair.dir,
            &[
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-P",
                "-f",
                conf.to_str().unwrap(),
                "-p",
                pid.to_str().unwrap(),
                "-r",
                vrrp_pid.to_str().unwrap(),
            ],
        );
        Keepalived { daemon, vrrp_pid }
    }

    fn kill9(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.vrrp_pid)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on keepalived's VRRP child, which this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.daemon.kill9();
    }

    /// Lines where keepalived complains about what carpd sent.
    fn complaints(&self) -> Vec<String> {
        self.daemon
            .log()
            .lines()
            .filter(|l| {
                [
                    "Invalid",
                    "invalid",
                    "mismatch",
                    "not present in MASTER advert",
                    "unexpected ip number",
                    "wrong version",
                    "too short",
                    "too long",
                ]
                .iter()
                .any(|n| l.contains(n))
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn ipv6_lab(pair: &Pair) {
    // Addresses of the lab are IPv4; link-locals come with the links. Wait for DAD so both sides
    // have a usable link-local source.
    for ns in [&pair.gw1, &pair.gw2, &pair.client] {
        ns.run("sysctl -qw net.ipv6.conf.eth0.accept_dad=0");
    }
    pair.client
        .run("ip -6 addr add 2001:db8:99::100/64 dev eth0 nodad");
    // Own global addresses, for unicast peers (carpd still sends from its link-local).
    pair.gw1
        .run("ip -6 addr add 2001:db8:99::11/64 dev eth0 nodad");
    pair.gw2
        .run("ip -6 addr add 2001:db8:99::12/64 dev eth0 nodad");
    std::thread::sleep(Duration::from_millis(500));
}

fn client_reaches(pair: &Pair, k: Kind, timeout: Duration) -> bool {
    if !k.v6 {
        return pair.client_reaches_vip(timeout);
    }
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if pair
            .client
            .run(&format!("ping -6 -c1 -W1 {VIP6} >/dev/null && echo ok"))
            .contains("ok")
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// keepalived MASTER (priority 200), carpd BACKUP (100); then keepalived SIGKILLed with its link cut.
fn keepalived_master_carpd_backup(prefix: &str, k: Kind) {
    let pair = Pair::new(prefix);
    if k.v6 {
        ipv6_lab(&pair);
    }
    let mut ka = Keepalived::start(&pair, k, "MASTER", 200, false);
    assert!(
        ka.daemon.wait_log("(VI_7) Entering MASTER STATE", SETTLE),
        "{}",
        ka.daemon.log()
    );
    let gw1 = pair.carpd(&pair.gw1, "gw1", &carpd_config(k, 100, true));
    assert!(
        gw1.wait_log("vr0 vhid 7: INIT -> BACKUP", SETTLE),
        "{}",
        gw1.log()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        gw1.carpd_state_of("vr0").as_deref(),
        Some("BACKUP"),
        "{}\ncarpd's counters:\n{}\nbpftool:\n{}",
        gw1.log(),
        pair.carpctl("gw1", &["counters"]),
        pair.gw1
            .run("ip -6 addr; nstat -az | grep -i icmp6 | grep -v ' 0 '")
    );
    assert!(client_reaches(&pair, k, Duration::from_secs(3)));
    // keepalived dies and its link goes: carpd takes over within master-down.
    let before = gw1.log().len();
    ka.kill9();
    pair.gw2.run("ip link set eth0 down");
    let t0 = Instant::now();
    assert!(
        gw1.wait_log_after(
            before,
            "vr0 vhid 7: BACKUP -> MASTER (master down timer expired)",
            k.takeover_bound() + Duration::from_secs(2)
        ),
        "{}",
        gw1.log()
    );
    let took = t0.elapsed();
    assert!(took <= k.takeover_bound(), "takeover after {took:?}");
    assert!(
        client_reaches(&pair, k, Duration::from_secs(3)),
        "{}",
        gw1.log()
    );
    assert!(ka.complaints().is_empty(), "{:?}", ka.complaints());
}

/// carpd MASTER (priority 200), keepalived BACKUP (100); then carpd SIGTERM: keepalived takes over on
/// the priority-0 advert while carpd keeps serving, and a 10 ms ping loses nothing.
fn carpd_master_keepalived_backup(prefix: &str, k: Kind) {
    let pair = Pair::new(prefix);
    if k.v6 {
        ipv6_lab(&pair);
    }
    if k.unicast {
        // What reaches keepalived's host: VRRP to the group and to its own address, counted before
        // any routing decision.
        let (l3, next, group) = if k.v6 {
            ("ip6", "ip6 nexthdr", "ff02::12")
        } else {
            ("ip", "ip protocol", "224.0.0.18")
        };
        let rules = format!(
            "table inet vrrp {{\n  counter to_group {{}}\n  counter to_peer {{}}\n  chain pre {{\n    \
             type filter hook prerouting priority -300;\n    \
             {next} 112 {l3} daddr {group} counter name to_group\n    \
             {next} 112 {l3} daddr {} counter name to_peer\n  }}\n}}\n",
            k.own(2)
        );
        let path = pair.dir.join("vrrp-count.nft");
        std::fs::write(&path, rules).expect("write the nft rules");
        pair.gw2.run(&format!("nft -f {}", path.display()));
    }
    let mut gw1 = pair.carpd(&pair.gw1, "gw1", &carpd_config(k, 200, true));
    assert!(
        gw1.wait_log("vr0 vhid 7: BACKUP -> MASTER", SETTLE),
        "{}",
        gw1.log()
    );
    let ka = Keepalived::start(&pair, k, "BACKUP", 100, false);
    assert!(
        ka.daemon.wait_log("(VI_7) Entering BACKUP STATE", SETTLE),
        "{}",
        ka.daemon.log()
    );
    // keepalived accepts carpd's adverts: it stays BACKUP well past its master-down.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !ka.daemon.log().contains("(VI_7) Entering MASTER STATE"),
        "keepalived did not accept carpd's adverts:\n{}\n{}",
        ka.daemon.log(),
        gw1.log()
    );
    assert!(ka.complaints().is_empty(), "{:?}", ka.complaints());
    assert_eq!(gw1.carpd_state_of("vr0").as_deref(), Some("MASTER"));
    if k.unicast {
        let packets = |name: &str| -> u64 {
            let out = pair.gw2.run(&format!("nft list counter inet vrrp {name}"));
            out.split("packets ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no counter {name}: {out}"))
        };
        let (group, unicast) = (packets("to_group"), packets("to_peer"));
        // keepalived, BACKUP, sends nothing: every advert here is carpd's.
        assert!(unicast >= 4, "carpd's unicast adverts: {unicast}");
        assert_eq!(group, 0, "carpd advertised to the group too");
    }
    assert!(client_reaches(&pair, k, Duration::from_secs(3)));
    // carpctl shows the protocol and the VRRP terms.
    let json: serde_json::Value =
        serde_json::from_str(&pair.carpctl("gw1", &["status", "--json"])).expect("status JSON");
    let i = &json["interfaces"][0];
    assert_eq!(
        i["protocol"],
        if k.v3 { "vrrp3" } else { "vrrp2" },
        "{json}"
    );
    assert_eq!(i["vrrp"]["vrid"], 7);
    assert_eq!(i["vrrp"]["priority"], 200);
    let cs = if k.v3 { k.interval } else { k.interval * 100 };
    assert_eq!(i["vrrp"]["interval_cs"], cs);
    let text = pair.carpctl("gw1", &["status"]);
    assert!(
        text.contains("MASTER INTERVAL") && text.contains("vrrp"),
        "{text}"
    );
    if k.v6 {
        gw1.signal(libc::SIGTERM);
        assert!(
            ka.daemon
                .wait_log("(VI_7) Entering MASTER STATE", Duration::from_secs(3)),
            "{}",
            ka.daemon.log()
        );
        return;
    }
    let ping = ping_fast(&pair, 400);
    std::thread::sleep(Duration::from_millis(1000));
    gw1.signal(libc::SIGTERM);
    assert!(
        ka.daemon
            .wait_log("(VI_7) Entering MASTER STATE", Duration::from_secs(3)),
        "{}",
        ka.daemon.log()
    );
    assert!(
        gw1.wait_exit(Duration::from_secs(5))
            .is_some_and(|s| s.success()),
        "{}",
        gw1.log()
    );
    let (sent, received) = ping.join().expect("ping thread");
    assert_eq!(sent, received, "probes lost over the planned handover");
    assert!(ka.complaints().is_empty(), "{:?}", ka.complaints());
}

fn ping_fast(pair: &Pair, count: u32) -> std::thread::JoinHandle<(u32, u32)> {
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
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let num = |word: &str| -> u32 {
            let at = words.iter().position(|w| *w == word).expect("summary word");
            words[at - 1].parse().expect("a count")
        };
        (num("packets"), num("received"))
    })
}

#[test]
fn vrrp3_1s_keepalived_master_carpd_backup_sigkill_and_link_cut() {
    if require_root("vrrp3_1s_keepalived_master_carpd_backup") {
        keepalived_master_carpd_backup("kv31", V3_1S);
    }
}

#[test]
fn vrrp3_1s_carpd_master_keepalived_backup_sigterm_no_probe_lost() {
    if require_root("vrrp3_1s_carpd_master_keepalived_backup") {
        carpd_master_keepalived_backup("kv32", V3_1S);
    }
}

#[test]
fn vrrp3_10ms_both_directions() {
    if require_root("vrrp3_10ms_both_directions") {
        keepalived_master_carpd_backup("kv33", V3_10MS);
        carpd_master_keepalived_backup("kv34", V3_10MS);
    }
}

#[test]
fn vrrp2_1s_both_directions() {
    if require_root("vrrp2_1s_both_directions") {
        keepalived_master_carpd_backup("kv21", V2_1S);
        carpd_master_keepalived_backup("kv22", V2_1S);
    }
}

#[test]
fn vrrp3_ipv6_both_directions() {
    if require_root("vrrp3_ipv6_both_directions") {
        keepalived_master_carpd_backup("kv61", V3_V6);
        carpd_master_keepalived_backup("kv62", V3_V6);
    }
}

#[test]
fn vrrp3_unicast_peers_ipv4_and_ipv6_both_directions() {
    if require_root("vrrp3_unicast_peers_ipv4_and_ipv6_both_directions") {
        for (k, a, b) in [
            (V3_UNICAST, "kvu1", "kvu2"),
            (V3_V6_UNICAST, "kvu61", "kvu62"),
        ] {
            keepalived_master_carpd_backup(a, k);
            carpd_master_keepalived_backup(b, k);
        }
    }
}

#[test]
fn preempt_on_and_off_against_keepalived() {
    if !require_root("preempt_on_and_off_against_keepalived") {
        return;
    }
    // keepalived (100) is MASTER alone; carpd (200) joins. With preempt on carpd takes over after its
    // master-down; with preempt off it stays BACKUP.
    for (preempt, p) in [(true, "kvp1"), (false, "kvp2")] {
        let pair = Pair::new(p);
        let ka = Keepalived::start(&pair, V3_1S, "BACKUP", 100, false);
        assert!(
            ka.daemon.wait_log("(VI_7) Entering MASTER STATE", SETTLE),
            "{}",
            ka.daemon.log()
        );
        let gw1 = pair.carpd(&pair.gw1, "gw1", &carpd_config(V3_1S, 200, preempt));
        assert!(
            gw1.wait_log("vr0 vhid 7: INIT -> BACKUP", SETTLE),
            "{}",
            gw1.log()
        );
        let took = gw1.wait_log("vr0 vhid 7: BACKUP -> MASTER", Duration::from_secs(6));
        assert_eq!(took, preempt, "preempt = {preempt}:\n{}", gw1.log());
        if preempt {
            assert!(
                ka.daemon
                    .wait_log("(VI_7) Entering BACKUP STATE", Duration::from_secs(3)),
                "{}",
                ka.daemon.log()
            );
        }
        assert!(ka.complaints().is_empty(), "{:?}", ka.complaints());
    }
}

#[test]
fn keepalived_2_2_7_refuses_the_message_only_checksum() {
    // The control for sending the pseudo-header form by default: with checksum = "message-only"
    // (RFC 9568's letter) keepalived 2.2.7 logs "Invalid VRRPv3 checksum" and takes over as if carpd
    // were silent.
    if !require_root("keepalived_2_2_7_refuses_the_message_only_checksum") {
        return;
    }
    let pair = Pair::new("kvck");
    let cfg = carpd_config(V3_1S, 200, true) + "checksum = \"message-only\"\n";
    let gw1 = pair.carpd(&pair.gw1, "gw1", &cfg);
    assert!(
        gw1.wait_log("vr0 vhid 7: BACKUP -> MASTER", SETTLE),
        "{}",
        gw1.log()
    );
    let ka = Keepalived::start(&pair, V3_1S, "BACKUP", 100, false);
    assert!(
        ka.daemon.wait_log("(VI_7) Invalid VRRPv3 checksum", SETTLE),
        "{}",
        ka.daemon.log()
    );
    assert!(
        ka.daemon.wait_log("(VI_7) Entering MASTER STATE", SETTLE),
        "{}",
        ka.daemon.log()
    );
    // carpd accepts keepalived's pseudo-header adverts all the same (either form on receive) and
    // yields to nobody: keepalived's priority is lower, so carpd stays MASTER and re-advertises.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        gw1.carpd_state_of("vr0").as_deref(),
        Some("MASTER"),
        "{}",
        gw1.log()
    );
}

/// Runs `carpd --import-keepalived FILE` and returns the carp.toml it prints.
fn import(conf: &std::path::Path) -> String {
    let out = std::process::Command::new(carp_tests::lab::carpd_binary())
        .arg("--import-keepalived")
        .arg(conf)
        .output()
        .expect("run carpd --import-keepalived");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn rolling_swap_from_a_keepalived_pair_loses_no_probe() {
    if !require_root("rolling_swap_from_a_keepalived_pair_loses_no_probe") {
        return;
    }
    // A keepalived pair (VRRPv3, 100 ms): gw1 MASTER (150), gw2 BACKUP (100), a client pinging the VIP.
    let k = Kind {
        v3: true,
        advert: "0.1",
        interval: 10,
        v6: false,
        unicast: false,
    };
    let pair = Pair::new("kvsw");
    let conf1 = pair.dir.join("gw1-keepalived.conf");
    let conf2 = pair.dir.join("gw2-keepalived.conf");
    std::fs::write(&conf1, keepalived_conf(k, "MASTER", 150, false)).unwrap();
    std::fs::write(&conf2, keepalived_conf(k, "BACKUP", 100, false)).unwrap();
    let mut ka1 = Keepalived::run(&pair, &pair.gw1, "ka1", &conf1);
    assert!(
        ka1.daemon.wait_log("(VI_7) Entering MASTER STATE", SETTLE),
        "{}",
        ka1.daemon.log()
    );
    let mut ka2 = Keepalived::run(&pair, &pair.gw2, "ka2", &conf2);
    assert!(
        ka2.daemon.wait_log("(VI_7) Entering BACKUP STATE", SETTLE),
        "{}",
        ka2.daemon.log()
    );
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
    let ping = ping_fast(&pair, 2500);
    std::thread::sleep(Duration::from_millis(500));

    // Step 1: the BACKUP is replaced by carpd running the imported config.
    ka2.daemon.signal(libc::SIGTERM);
    assert!(ka2.daemon.wait_exit(Duration::from_secs(5)).is_some());
    ka2.kill9();
    let toml2 = import(&conf2);
    assert!(
        toml2.contains("protocol = \"vrrp3\"") && toml2.contains("priority = 100"),
        "{toml2}"
    );
    let gw2 = pair.carpd(&pair.gw2, "gw2", &toml2);
    assert!(
        gw2.wait_log("vrrp0 vhid 7: INIT -> BACKUP", SETTLE),
        "{}",
        gw2.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        gw2.carpd_state_of("vrrp0").as_deref(),
        Some("BACKUP"),
        "{}",
        gw2.log()
    );

    // Step 2: the MASTER's planned stop. Its priority goes below carpd's (keepalived reload), carpd
    // preempts after its master-down, keepalived yields on carpd's first advert; then it stops.
    std::fs::write(&conf1, keepalived_conf(k, "MASTER", 50, false)).unwrap();
    ka1.daemon.signal(libc::SIGHUP);
    assert!(
        gw2.wait_log("vrrp0 vhid 7: BACKUP -> MASTER", Duration::from_secs(5)),
        "{}\n{}",
        gw2.log(),
        ka1.daemon.log()
    );
    assert!(
        ka1.daemon
            .wait_log("(VI_7) Entering BACKUP STATE", Duration::from_secs(3)),
        "{}",
        ka1.daemon.log()
    );
    ka1.daemon.signal(libc::SIGTERM);
    assert!(ka1.daemon.wait_exit(Duration::from_secs(5)).is_some());
    ka1.kill9();

    // Step 3: gw1 comes back as carpd with its original (priority 150) imported config and, preempt
    // being on, takes the VIP back from carpd on gw2: the same virtual MAC, so nothing moves for the
    // client but the switch port.
    std::fs::write(&conf1, keepalived_conf(k, "MASTER", 150, false)).unwrap();
    let gw1 = pair.carpd(&pair.gw1, "gw1", &import(&conf1));
    assert!(
        gw1.wait_log("vrrp0 vhid 7: BACKUP -> MASTER", SETTLE),
        "{}",
        gw1.log()
    );
    assert!(
        gw2.wait_log("vrrp0 vhid 7: MASTER -> BACKUP", Duration::from_secs(3)),
        "{}",
        gw2.log()
    );
    let (sent, received) = ping.join().expect("ping thread");
    assert_eq!(
        sent, received,
        "probes lost during the planned steps of the swap"
    );
    assert!(ka1.complaints().is_empty() && ka2.complaints().is_empty());
}

/// Stops carpd (VRRPv3 MASTER at 10 ms) `times` times for 40 ms, resuming it for 200 ms in between;
/// returns how often keepalived took over meanwhile.
fn stop_carpd_again_and_again(gw1: &Daemon, ka: &Keepalived, times: u32) -> usize {
    gw1.stop_again_and_again(
        times,
        Duration::from_millis(40),
        Duration::from_millis(200),
        &ka.daemon,
        "(VI_7) Entering MASTER STATE",
    )
}

/// Issue #17 against a live keepalived: carpd is VRRPv3 MASTER at 10 ms adverts, keepalived BACKUP
/// (master-down about 36 ms). carpd stopped with SIGSTOP for 40 ms, ten times, is never taken over,
/// because the kernel keeps sending the adverts carpd queued ahead (`[timing] advert_queue_ms`,
/// default 100). Control: the same stops with the queue off are taken over.
#[test]
fn vrrp3_10ms_carpd_stopped_40_ms_again_and_again_keepalived_stays_backup() {
    if !require_root("vrrp3_10ms_carpd_stopped_40_ms_again_and_again_keepalived_stays_backup") {
        return;
    }
    for (queue_ms, prefix) in [(0u32, "kvs0"), (100, "kvs1")] {
        let pair = Pair::new(prefix);
        let config = carpd_config(V3_10MS, 200, true)
            + &format!("\n[timing]\nadvert_queue_ms = {queue_ms}\n");
        let gw1 = pair.carpd(&pair.gw1, "gw1", &config);
        assert!(
            gw1.wait_log("vr0 vhid 7: BACKUP -> MASTER", SETTLE),
            "{}",
            gw1.log()
        );
        assert_eq!(
            gw1.log().contains("kernel-timed adverts through carpadv"),
            queue_ms > 0,
            "{}",
            gw1.log()
        );
        let ka = Keepalived::start(&pair, V3_10MS, "BACKUP", 100, false);
        assert!(
            ka.daemon.wait_log("(VI_7) Entering BACKUP STATE", SETTLE),
            "{}",
            ka.daemon.log()
        );
        std::thread::sleep(Duration::from_secs(1));
        let takeovers = stop_carpd_again_and_again(&gw1, &ka, 10);
        if queue_ms == 0 {
            assert!(
                takeovers >= 1,
                "control: 40 ms stops of a loop-timed VRRP master were never taken over (the test cannot fail):\n{}",
                ka.daemon.log()
            );
        } else {
            assert_eq!(
                takeovers,
                0,
                "40 ms stops of carpd were taken over:\nkeepalived:\n{}\ncarpd:\n{}",
                ka.daemon.log(),
                gw1.log()
            );
            assert_eq!(gw1.carpd_state_of("vr0").as_deref(), Some("MASTER"));
            assert!(ka.complaints().is_empty(), "{:?}", ka.complaints());
        }
    }
}
