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
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf();
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
        assert!(prefix.len() <= 6, "veth names must stay under 16 bytes");
        let sw = Netns::new(&format!("{prefix}-sw"));
        let gw1 = Netns::new(&format!("{prefix}-gw1"));
        let gw2 = Netns::new(&format!("{prefix}-gw2"));
        let client = Netns::new(&format!("{prefix}-cl"));
        sw.run("ip link add br0 type bridge && ip link set br0 up");
        for (i, (ns, ip)) in [
            (&gw1, "10.0.0.11"),
            (&gw2, "10.0.0.12"),
            (&client, "10.0.0.100"),
        ]
        .into_iter()
        .enumerate()
        {
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
        let bpffs = bpffs_dir(prefix);
        let dir = std::env::temp_dir().join(format!("carp-lab-{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab dir");
        Pair {
            sw,
            gw1,
            gw2,
            client,
            bpffs,
            dir,
        }
    }

    /// A carpd config for the pair: carp0 on eth0, vhid 1, the VIP, advbase 1 and `advskew`.
    pub fn config(advskew: u8) -> String {
        format!(
            "[carp]\npreempt = false\n\n[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\n\
             pass = \"labpass\"\nadvbase = 1\nadvskew = {advskew}\naddresses = [\"{VIP}/24\"]\n"
        )
    }

    /// Starts carpd in `ns` as `name` (e.g. "gw1") with `config`.
    pub fn carpd(&self, ns: &Netns, name: &str, config: &str) -> Daemon {
        let cfg = self.dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, config).expect("write config");
        let bpffs = self.bpffs.join(name);
        Daemon::spawn(
            ns,
            name,
            &self.dir,
            &[
                carpd_binary().to_str().unwrap(),
                "-c",
                cfg.to_str().unwrap(),
                "--bpffs",
                bpffs.to_str().unwrap(),
                "--control-socket",
                self.dir.join(format!("{name}.sock")).to_str().unwrap(),
                "--log",
                "info",
            ],
        )
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
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .args(argv)
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
