//! The "pair" lab of design §3 with real daemons: ns `<p>-sw` holds bridge br0; `<p>-gw1`, `<p>-gw2` and
//! `<p>-cl` each have an eth0 on it (10.0.0.11, 10.0.0.12, 10.0.0.100/24); the VIP is 10.0.0.1/24.
//!
//! Each test picks its own short prefix so tests run in parallel. Daemons are started with `nsenter
//! --net=...` (which execs, so the child's pid is the daemon's pid and signals reach it directly), each
//! with its own `--bpffs` directory and control-socket path, and their stderr goes to a log file the
//! test reads. The carpd binary is the one next to the test executable (`target/<profile>/carpd`); it
//! is built once per test run with `$CARGO build -p carp-userspace --bin carpd`, because Cargo does not
//! build a dependency's binaries for another package's tests.
use crate::{bpffs_dir, netns::Netns};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The virtual IP of the pair lab.
pub const VIP: &str = "10.0.0.1";
/// The virtual MAC of vhid 1.
pub const VMAC1: &str = "00:00:5e:00:01:01";

/// The carpd binary, built on first use.
pub fn carpd_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // A test runs as target/<profile>/deps/<test>, a binary (carp-chaos) as target/<profile>/<bin>.
        let mut profile_dir = exe
            .parent()
            .expect("the executable's directory")
            .to_path_buf();
        if profile_dir.file_name().is_some_and(|n| n == "deps") {
            profile_dir.pop();
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "carp-userspace", "--bin", "carpd"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for carpd");
        assert!(status.success(), "building carpd failed");
        let bin = profile_dir.join("carpd");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// Builds ns `<prefix>-sw` holding bridge br0 and, per (suffix, address), ns `<prefix>-<suffix>` with an
/// eth0 on br0 carrying the address/24 (prefix at most 6 bytes, so veth names stay under 16 bytes).
pub fn lan(prefix: &str, hosts: &[(&str, &str)]) -> (Netns, Vec<Netns>) {
    assert!(prefix.len() <= 6, "veth names must stay under 16 bytes");
    let sw = Netns::new(&format!("{prefix}-sw"));
    let nss: Vec<Netns> = hosts
        .iter()
        .map(|(suffix, _)| Netns::new(&format!("{prefix}-{suffix}")))
        .collect();
    sw.run("ip link add br0 type bridge && ip link set br0 up");
    for (i, (ns, (_, ip))) in nss.iter().zip(hosts).enumerate() {
        let port = format!("{prefix}-p{i}");
        crate::sh(&format!(
            "ip link add {port} netns {} type veth peer name eth0 netns {}",
            sw.name, ns.name
        ));
        sw.run(&format!("ip link set {port} master br0 up"));
        ns.run(&format!(
            "ip link set eth0 up && ip addr add {ip}/24 dev eth0"
        ));
    }
    (sw, nss)
}

/// A fresh bpffs directory and scratch directory (configs, logs, sockets) for a lab.
fn lab_dirs(prefix: &str) -> (PathBuf, PathBuf) {
    let bpffs = bpffs_dir(prefix);
    let dir = std::env::temp_dir().join(format!("carp-lab-{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("lab dir");
    (bpffs, dir)
}

/// Writes `config` to `<dir>/<name>.toml` and starts carpd as `name` in `ns`, with pins under
/// `<bpffs>/<name>` and the control socket `<dir>/<name>.sock`.
pub fn spawn_carpd(dir: &Path, bpffs: &Path, ns: &Netns, name: &str, config: &str) -> Daemon {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).expect("write config");
    let bpffs = bpffs.join(name);
    Daemon::spawn(
        ns,
        name,
        dir,
        &[
            carpd_binary().to_str().unwrap(),
            "-c",
            cfg.to_str().unwrap(),
            "--bpffs",
            bpffs.to_str().unwrap(),
            "--control-socket",
            dir.join(format!("{name}.sock")).to_str().unwrap(),
            "--log",
            "info",
        ],
    )
}

/// The "cluster" lab for active-active balancing: ns `<p>-sw` with br0, gateways `<p>-gw1`..`<p>-gwN`
/// (eth0 10.0.0.11, .12, ...) and `<p>-cl`, a client whose eth0 holds many addresses (10.0.0.100 and
/// up), so flows from many sources can be sent to the VIP 10.0.0.1. Removed on drop.
pub struct Cluster {
    /// Namespace holding br0.
    pub sw: Netns,
    /// The gateways; gateway g is named `gw<g+1>` (logs, sockets, pins).
    pub gws: Vec<Netns>,
    /// The client.
    pub client: Netns,
    /// The client's addresses.
    pub client_addrs: Vec<std::net::Ipv4Addr>,
    /// Further clients `<p>-cl2`, `<p>-cl3`, ... with one address each (10.0.0.200, .201, ...): each
    /// has its own ARP cache, which `arp` balancing needs.
    pub more_clients: Vec<Netns>,
    /// A bpffs directory of this lab; each daemon gets a subdirectory.
    pub bpffs: PathBuf,
    /// A scratch directory for configs, logs and control sockets.
    pub dir: PathBuf,
}

impl Cluster {
    /// Builds `gateways` gateways and a client with `client_addrs` addresses (at most 150).
    pub fn new(prefix: &str, gateways: usize, client_addrs: usize) -> Cluster {
        Self::with_clients(prefix, gateways, client_addrs, 0)
    }

    /// `new` plus `more` single-address clients (at most 50).
    pub fn with_clients(
        prefix: &str,
        gateways: usize,
        client_addrs: usize,
        more: usize,
    ) -> Cluster {
        assert!((1..=9).contains(&gateways) && (1..=150).contains(&client_addrs) && more <= 50);
        let names: Vec<(String, String)> = (0..gateways)
            .map(|g| (format!("gw{}", g + 1), format!("10.0.0.{}", 11 + g)))
            .chain([("cl".to_string(), "10.0.0.100".to_string())])
            .chain((0..more).map(|c| (format!("cl{}", c + 2), format!("10.0.0.{}", 200 + c))))
            .collect();
        let hosts: Vec<(&str, &str)> = names
            .iter()
            .map(|(n, a)| (n.as_str(), a.as_str()))
            .collect();
        let (sw, mut gws) = lan(prefix, &hosts);
        let more_clients = gws.split_off(gateways + 1);
        let client = gws.pop().expect("client");
        let client_addrs: Vec<std::net::Ipv4Addr> = (0..client_addrs)
            .map(|i| std::net::Ipv4Addr::new(10, 0, 0, 100 + i as u8))
            .collect();
        if client_addrs.len() > 1 {
            client.run(&format!(
                "for i in $(seq 101 {}); do ip addr add 10.0.0.$i/24 dev eth0; done",
                99 + client_addrs.len()
            ));
        }
        let (bpffs, dir) = lab_dirs(prefix);
        Cluster {
            sw,
            gws,
            client,
            client_addrs,
            more_clients,
            bpffs,
            dir,
        }
    }

    /// The name of gateway `g` (`gw1`, ...).
    pub fn name(g: usize) -> String {
        format!("gw{}", g + 1)
    }

    /// Starts carpd on gateway `g` with `config`.
    pub fn carpd(&self, g: usize, config: &str) -> Daemon {
        spawn_carpd(&self.dir, &self.bpffs, &self.gws[g], &Self::name(g), config)
    }

    /// The control socket of gateway `g`'s carpd.
    pub fn socket(&self, g: usize) -> PathBuf {
        self.dir.join(format!("{}.sock", Self::name(g)))
    }

    /// Gateway `g`'s pinned dataplane maps (they outlive a killed carpd).
    pub fn maps(&self, g: usize) -> carp::dataplane::maps::Maps {
        carp::dataplane::maps::Maps::open_pinned(&self.bpffs.join(Self::name(g)), "eth0")
            .expect("open the pinned maps")
    }

    /// Sends `per_flow` UDP datagrams to `dst`:9 from every client address, over `ports` source ports
    /// each (one socket per port), paced so that no veth backlog overflows. Returns, per client
    /// address, how many datagrams it sent.
    pub fn send_flows(
        &self,
        dst: std::net::Ipv4Addr,
        ports: usize,
        per_flow: usize,
    ) -> Vec<(std::net::Ipv4Addr, u64)> {
        let addrs = self.client_addrs.clone();
        self.client.in_ns(move || {
            let mut out = Vec::new();
            let mut since_pause = 0;
            for a in addrs {
                let mut sent = 0;
                for _ in 0..ports {
                    let s = std::net::UdpSocket::bind((a, 0)).expect("bind a client address");
                    for k in 0..per_flow {
                        s.send_to(&(k as u32).to_be_bytes(), (dst, 9))
                            .expect("send a datagram");
                        sent += 1;
                        since_pause += 1;
                        if since_pause == 32 {
                            since_pause = 0;
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                }
                out.push((a, sent));
            }
            out
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pair topology; everything is removed on drop.
pub struct Pair {
    /// Namespace holding br0.
    pub sw: Netns,
    /// First gateway (10.0.0.11).
    pub gw1: Netns,
    /// Second gateway (10.0.0.12).
    pub gw2: Netns,
    /// The client (10.0.0.100).
    pub client: Netns,
    /// A bpffs directory of this test; each daemon gets a subdirectory.
    pub bpffs: PathBuf,
    /// A scratch directory for configs and logs.
    pub dir: PathBuf,
}

impl Pair {
    /// Builds the lab with namespace names `<prefix>-sw` etc. (prefix at most 6 bytes).
    pub fn new(prefix: &str) -> Pair {
        let (sw, mut hosts) = lan(
            prefix,
            &[
                ("gw1", "10.0.0.11"),
                ("gw2", "10.0.0.12"),
                ("cl", "10.0.0.100"),
            ],
        );
        let client = hosts.pop().expect("client");
        let gw2 = hosts.pop().expect("gw2");
        let gw1 = hosts.pop().expect("gw1");
        let (bpffs, dir) = lab_dirs(prefix);
        Pair {
            sw,
            gw1,
            gw2,
            client,
            bpffs,
            dir,
        }
    }

    /// A carpd config for the pair: carp0 on eth0, vhid 1, the VIP, advbase 1 and `advskew`; `log = 6`
    /// (LOG_INFO), so bad packets are logged for the tests that look for those lines.
    pub fn config(advskew: u8) -> String {
        format!(
            "[carp]\npreempt = false\nlog = 6\n\n[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\n\
             pass = \"labpass\"\nadvbase = 1\nadvskew = {advskew}\naddresses = [\"{VIP}/24\"]\n"
        )
    }

    /// Starts carpd in `ns` as `name` (e.g. "gw1") with `config`.
    pub fn carpd(&self, ns: &Netns, name: &str, config: &str) -> Daemon {
        spawn_carpd(&self.dir, &self.bpffs, ns, name, config)
    }

    /// Starts carpd in gw1 with `gw1_config` and waits for it to be MASTER of carp0 vhid 1, then
    /// carpd in gw2 with `gw2_config` and waits for it to come up (BACKUP).
    pub fn elect(&self, gw1_config: &str, gw2_config: &str) -> (Daemon, Daemon) {
        let settle = Duration::from_secs(8);
        let gw1 = self.carpd(&self.gw1, "gw1", gw1_config);
        assert!(
            gw1.wait_log(
                "carp0 vhid 1: BACKUP -> MASTER (master down timer expired)",
                settle
            ),
            "gw1 never became MASTER:\n{}",
            gw1.log()
        );
        let gw2 = self.carpd(&self.gw2, "gw2", gw2_config);
        assert!(
            gw2.wait_log("carp0 vhid 1: INIT -> BACKUP (interface up)", settle),
            "gw2 never came up:\n{}",
            gw2.log()
        );
        (gw1, gw2)
    }

    /// True if the client gets an echo reply from the VIP within `timeout` (one ping a 200 ms).
    pub fn client_reaches_vip(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let ok = Command::new("nsenter")
                .args([
                    &format!("--net=/run/netns/{}", self.client.name),
                    "ping",
                    "-c1",
                    "-W1",
                    VIP,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// The MAC the client has in its ARP cache for the VIP.
    pub fn client_vip_mac(&self) -> Option<String> {
        let out = self.client.run(&format!("ip neigh show {VIP}"));
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "lladdr" {
                return words.next().map(str::to_string);
            }
        }
        None
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bpffs);
        // Logs of a failing test were printed by the daemons' Drop; keep nothing behind.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A daemon (carpd or ucarp) in a namespace, SIGKILLed on drop if still running.
pub struct Daemon {
    /// Its name in the test.
    pub name: String,
    /// Where its stderr/stdout go.
    pub log_path: PathBuf,
    child: Child,
}

impl Daemon {
    /// Runs `argv` in `ns` through nsenter with output to `<dir>/<name>.log` (appended).
    pub fn spawn(ns: &Netns, name: &str, dir: &Path, argv: &[&str]) -> Daemon {
        Daemon::spawn_with_env(ns, name, dir, argv, &[])
    }

    /// `spawn` with extra environment variables (e.g. NOTIFY_SOCKET for a fake systemd).
    pub fn spawn_with_env(
        ns: &Netns,
        name: &str,
        dir: &Path,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .args(argv)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        Daemon {
            name: name.into(),
            log_path,
            child,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's effective and bounding capability sets, as /proc/<pid>/status shows them.
    pub fn capabilities(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or_else(|| panic!("no {name} for {}: {status}", self.name))
        };
        (field("CapEff:"), field("CapBnd:"))
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (counting only text after `skip` bytes).
    pub fn wait_log_after(&self, skip: usize, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().get(skip..).is_some_and(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_log_after(0, needle, timeout)
    }

    /// The state named by the last carpd transition line (`... -> MASTER (...)`).
    pub fn carpd_state(&self) -> Option<String> {
        self.log()
            .lines()
            .rev()
            .find_map(|l| l.split_once(" -> ").map(|(_, r)| r))
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    }

    /// The state named by the last transition line of one carp interface (e.g. "carp0").
    pub fn carpd_state_of(&self, carpif: &str) -> Option<String> {
        let prefix = format!("{carpif} vhid ");
        self.log()
            .lines()
            .rev()
            .filter(|l| l.contains(&prefix))
            .find_map(|l| l.split_once(" -> ").map(|(_, r)| r))
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    }

    /// The state named by ucarp's last `Switching to state:` line.
    pub fn ucarp_state(&self) -> Option<String> {
        self.log().lines().rev().find_map(|l| {
            l.split_once("Switching to state: ")
                .map(|(_, r)| r.trim().to_string())
        })
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Stops the process with SIGSTOP `times` times for `stop` each, letting it run for `gap` in
    /// between, then waits 300 ms; returns how often `watcher` logged `needle` meanwhile (e.g. a
    /// backup's takeovers while this master was frozen).
    pub fn stop_again_and_again(
        &self,
        times: u32,
        stop: Duration,
        gap: Duration,
        watcher: &Daemon,
        needle: &str,
    ) -> usize {
        let skip = watcher.log().len();
        for _ in 0..times {
            self.signal(libc::SIGSTOP);
            std::thread::sleep(stop);
            self.signal(libc::SIGCONT);
            std::thread::sleep(gap);
        }
        std::thread::sleep(Duration::from_millis(300));
        watcher.log()[skip..].matches(needle).count()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
    }
}

/// The inside VIP of the gateway lab.
pub const INSIDE_VIP: &str = "192.168.100.1";

/// The "gateway" lab of design §3, built on [`Pair`] (whose br0 is the outside and whose client is the
/// outside client, 10.0.0.100): ns `<p>-sw` also holds br1 (the inside); `<p>-gw1`/`<p>-gw2` get eth1 on
/// br1 (192.168.100.11/.12) and eth2, a veth straight between them (172.16.1.1/.2, the sync link);
/// `<p>-in` is the inside client (192.168.100.100, default route via the inside VIP). The outside
/// client routes 192.168.100.0/24 via the outside VIP, and both gateways forward (ip_forward = 1).
pub struct Gateway {
    /// The outside half (br0, gw1, gw2, the outside client) and the scratch directories.
    pub pair: Pair,
    /// The inside client.
    pub inside: Netns,
}

impl Gateway {
    /// Builds the lab with namespace names `<prefix>-sw` etc. (prefix at most 6 bytes).
    pub fn new(prefix: &str) -> Gateway {
        let pair = Pair::new(prefix);
        let inside = Netns::new(&format!("{prefix}-in"));
        pair.sw
            .run("ip link add br1 type bridge && ip link set br1 up");
        for (i, (ns, ip)) in [
            (&pair.gw1, "192.168.100.11"),
            (&pair.gw2, "192.168.100.12"),
            (&inside, "192.168.100.100"),
        ]
        .into_iter()
        .enumerate()
        {
            let port = format!("{prefix}-q{i}");
            crate::sh(&format!(
                "ip link add {port} netns {} type veth peer name eth1 netns {}",
                pair.sw.name, ns.name
            ));
            pair.sw.run(&format!("ip link set {port} master br1 up"));
            ns.run(&format!(
                "ip link set eth1 up && ip addr add {ip}/24 dev eth1"
            ));
        }
        crate::sh(&format!(
            "ip link add eth2 netns {} type veth peer name eth2 netns {}",
            pair.gw1.name, pair.gw2.name
        ));
        for (ns, ip) in [(&pair.gw1, "172.16.1.1"), (&pair.gw2, "172.16.1.2")] {
            ns.run(&format!(
                "ip link set eth2 up && ip addr add {ip}/24 dev eth2 && sysctl -qw net.ipv4.ip_forward=1"
            ));
        }
        inside.run(&format!("ip route add default via {INSIDE_VIP}"));
        pair.client
            .run(&format!("ip route add 192.168.100.0/24 via {VIP}"));
        Gateway { pair, inside }
    }

    /// A carpd config for a gateway: carp0 outside (eth0, vhid 1, the VIP), carp1 inside (eth1, vhid 2,
    /// the inside VIP), both at `advskew`, preempt on, plus `extra` (e.g. `[pfsync]` and `[flows]`).
    pub fn config(advskew: u8, extra: &str) -> String {
        format!(
            "[carp]\npreempt = true\n\n\
             [[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\npass = \"outside\"\n\
             advskew = {advskew}\naddresses = [\"{VIP}/24\"]\ngroups = [\"outside\"]\n\n\
             [[interface]]\nname = \"carp1\"\ncarpdev = \"eth1\"\nvhid = 2\npass = \"inside\"\n\
             advskew = {advskew}\naddresses = [\"{INSIDE_VIP}/24\"]\ngroups = [\"inside\"]\n\n{extra}"
        )
    }

    /// Starts carpd in gateway `n` (1 or 2) with `config`.
    pub fn carpd(&self, n: u8, config: &str) -> Daemon {
        let ns = if n == 1 {
            &self.pair.gw1
        } else {
            &self.pair.gw2
        };
        self.pair.carpd(ns, &format!("gw{n}"), config)
    }

    /// The control socket of gateway `n`'s carpd.
    pub fn control_socket(&self, n: u8) -> PathBuf {
        self.pair.dir.join(format!("gw{n}.sock"))
    }
}

/// The carpctl binary next to carpd, built on first use (as `carpd_binary` builds carpd).
pub fn carpctl_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let carpd = carpd_binary();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "carp-userspace", "--bin", "carpctl"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if carpd
            .parent()
            .is_some_and(|d| d.file_name().is_some_and(|n| n == "release"))
        {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo build carpctl").success(),
            "building carpctl failed"
        );
        let bin = carpd.with_file_name("carpctl");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

impl Pair {
    /// Runs carpctl against the daemon started as `name` (e.g. "gw1"); panics unless it exits 0.
    pub fn carpctl(&self, name: &str, args: &[&str]) -> String {
        let out = Command::new(carpctl_binary())
            .arg("--control-socket")
            .arg(self.dir.join(format!("{name}.sock")))
            .args(args)
            .output()
            .expect("run carpctl");
        assert!(
            out.status.success(),
            "carpctl {args:?} against {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// CPU time (user + system) a process has used so far, from /proc/<pid>/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}
