//! `cargo xtask demo`: the live demo. Two real carpd gateways in network namespaces (the "pair" lab of
//! design §3) elect a MASTER, a client pings the virtual IP, the MASTER is killed with SIGKILL, the
//! BACKUP takes over and the client reaches the VIP again through the same virtual MAC; then the XDP
//! counters are printed with bpftool. Everything it creates is removed on exit, on error too (a guard's
//! Drop). It shells out to iproute2/nsenter/ping/bpftool and runs the release carpd binary, because
//! xtask must not depend on carp-userspace (it installs bpf-linker before that crate can build).

use anyhow::{Context, Result, bail};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::util;

const PREFIX: &str = "cdemo";
const VIP: &str = "10.0.0.1";
const BPFFS: &str = "/sys/fs/bpf/carp-demo";

/// Everything the demo created; removed on drop.
struct Lab {
    daemons: Vec<(String, Child)>,
    dir: PathBuf,
}

impl Lab {
    fn ns(name: &str) -> String {
        format!("{PREFIX}-{name}")
    }

    fn build() -> Result<Lab> {
        let lab = Lab {
            daemons: Vec::new(),
            dir: std::env::temp_dir().join("carp-demo"),
        };
        lab.teardown_netns();
        std::fs::create_dir_all(&lab.dir)?;
        for n in ["sw", "gw1", "gw2", "cl"] {
            sh(&format!(
                "ip netns add {0} && ip -n {0} link set lo up",
                Lab::ns(n)
            ))?;
        }
        let sw = Lab::ns("sw");
        sh(&format!(
            "ip -n {sw} link add br0 type bridge && ip -n {sw} link set br0 up"
        ))?;
        for (i, (n, ip)) in [
            ("gw1", "10.0.0.11"),
            ("gw2", "10.0.0.12"),
            ("cl", "10.0.0.100"),
        ]
        .into_iter()
        .enumerate()
        {
            let ns = Lab::ns(n);
            sh(&format!(
                "ip link add {PREFIX}-p{i} netns {sw} type veth peer name eth0 netns {ns} && \
                 ip -n {sw} link set {PREFIX}-p{i} master br0 up && \
                 ip -n {ns} link set eth0 up && ip -n {ns} addr add {ip}/24 dev eth0"
            ))?;
        }
        Ok(lab)
    }

    fn start_carpd(&mut self, carpd: &Path, gw: &str, advskew: u8) -> Result<()> {
        let cfg = self.dir.join(format!("{gw}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\npass = \"demo\"\n\
                 advbase = 1\nadvskew = {advskew}\naddresses = [\"{VIP}/24\"]\n"
            ),
        )?;
        let log = std::fs::File::create(self.log_path(gw))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", Lab::ns(gw)))
            .arg(carpd)
            .args(["-c", cfg.to_str().unwrap()])
            .args(["--bpffs", &format!("{BPFFS}/{gw}")])
            .args([
                "--control-socket",
                self.dir.join(format!("{gw}.sock")).to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting carpd")?;
        println!(
            "    {gw}: carpd pid {} (advskew {advskew}), log {}",
            child.id(),
            self.log_path(gw).display()
        );
        self.daemons.push((gw.into(), child));
        Ok(())
    }

    fn log_path(&self, gw: &str) -> PathBuf {
        self.dir.join(format!("{gw}.log"))
    }

    fn log(&self, gw: &str) -> String {
        std::fs::read_to_string(self.log_path(gw)).unwrap_or_default()
    }

    /// The state of the last transition line in a gateway's log.
    fn state(&self, gw: &str) -> String {
        self.log(gw)
            .lines()
            .rev()
            .find_map(|l| l.split_once(" -> ").map(|(_, r)| r))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("INIT")
            .to_string()
    }

    fn wait_for(&self, gw: &str, needle: &str, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log(gw).contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{gw} did not log {needle:?} within {timeout:?}:\n{}",
            self.log(gw)
        )
    }

    fn print_transitions(&self, gw: &str) {
        for l in self.log(gw).lines().filter(|l| l.contains(" -> ")) {
            println!(
                "    {gw}: {}",
                l.split_once("  ").map_or(l, |(_, r)| r.trim())
            );
        }
    }

    fn kill(&mut self, gw: &str, signal: &str) -> Result<()> {
        let (_, child) = self
            .daemons
            .iter_mut()
            .find(|(n, _)| n == gw)
            .context("no such daemon")?;
        sh(&format!("kill -{signal} {}", child.id()))?;
        let _ = child.wait();
        Ok(())
    }

    fn teardown_netns(&self) {
        for n in ["sw", "gw1", "gw2", "cl"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &Lab::ns(n)])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A planned stop first (carpd removes its interface and pins), then make sure.
        for (_, child) in &mut self.daemons {
            if let Ok(None) = child.try_wait() {
                let _ = Command::new("kill").arg(child.id().to_string()).status();
            }
        }
        for (_, child) in &mut self.daemons {
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.teardown_netns();
        let _ = std::fs::remove_dir_all(BPFFS);
        let _ = std::fs::remove_dir_all(&self.dir);
        println!("==> demo lab removed");
    }
}

fn sh(cmd: &str) -> Result<()> {
    util::run("sh", &["-c", cmd])
}

fn in_ns(ns: &str, cmd: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", Lab::ns(ns)))
        .args(["sh", "-c", cmd])
        .output();
    match out {
        Ok(o) => {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        }
        Err(e) => format!("({e})"),
    }
}

/// Runs the live demo.
pub fn run() -> Result<()> {
    if util::output("id", &["-u"]).as_deref().map(str::trim) != Some("0") {
        bail!("the live demo builds network namespaces and attaches XDP: run it as root");
    }
    util::step("building carpd (release)");
    util::run(
        "cargo",
        &[
            "build",
            "--release",
            "--quiet",
            "-p",
            "carp-userspace",
            "--bin",
            "carpd",
        ],
    )?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let carpd = root.join("target/release/carpd");

    util::step(
        "lab \"pair\": bridge br0; gw1 10.0.0.11, gw2 10.0.0.12, client 10.0.0.100; VIP 10.0.0.1 (vhid 1)",
    );
    let mut lab = Lab::build()?;

    util::step("starting carpd on gw1 (advskew 0) and gw2 (advskew 100)");
    lab.start_carpd(&carpd, "gw1", 0)?;
    lab.start_carpd(&carpd, "gw2", 100)?;
    lab.wait_for("gw1", "BACKUP -> MASTER", Duration::from_secs(8))?;
    std::thread::sleep(Duration::from_secs(2));
    lab.print_transitions("gw1");
    lab.print_transitions("gw2");
    println!(
        "    gw1 is {}, gw2 is {}",
        lab.state("gw1"),
        lab.state("gw2")
    );
    println!(
        "    gw1 carp0: {}",
        in_ns("gw1", "ip -br addr show dev carp0").trim()
    );
    println!(
        "    gw2 carp0: {}",
        in_ns("gw2", "ip -br addr show dev carp0").trim()
    );

    util::step("the client pings the VIP");
    print!(
        "{}",
        indent(&in_ns(
            "cl",
            &format!("ping -c 3 -i 0.2 -W 1 {VIP} | tail -2")
        ))
    );
    println!(
        "    client ARP cache: {}",
        in_ns("cl", &format!("ip neigh show {VIP}")).trim()
    );

    util::step(
        "gw1 crashes: SIGKILL its carpd and cut its link, while the client pings every 100 ms",
    );
    println!(
        "    (after a SIGKILL alone, gw1's XDP program stays attached for a hitless restart and stops acting\n     \
         as MASTER when its lease runs out, three advert intervals after carpd's last advert;\n     \
         cutting eth0 as well makes gw1 a dead gateway)"
    );
    let ping_log = lab.dir.join("ping.log");
    let mut ping = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", Lab::ns("cl")))
        .args(["ping", "-i", "0.1", "-W", "1", VIP])
        .stdout(std::fs::File::create(&ping_log)?)
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    lab.kill("gw1", "KILL")?;
    sh(&format!("ip -n {} link set eth0 down", Lab::ns("gw1")))?;
    let waited = lab.wait_for("gw2", "BACKUP -> MASTER", Duration::from_secs(8));
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let _ = ping.kill();
    let _ = ping.wait();
    waited?;
    lab.print_transitions("gw2");
    println!(
        "    gw2 took over {:.2} s after the crash (master down = 3 x advbase + advskew/256 = 3.39 s after gw1's last advert)",
        took.as_secs_f64()
    );
    let text = std::fs::read_to_string(&ping_log).unwrap_or_default();
    let replies: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    let longest_gap = replies.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    println!(
        "    client: {} replies, longest gap {} pings = ~{:.1} s outage",
        replies.len(),
        longest_gap.saturating_sub(1),
        longest_gap.saturating_sub(1) as f64 * 0.1
    );
    println!(
        "    client ARP cache: {} (the same virtual MAC)",
        in_ns("cl", &format!("ip neigh show {VIP}")).trim()
    );
    print!(
        "{}",
        indent(&in_ns(
            "cl",
            &format!("ping -c 2 -i 0.2 -W 1 {VIP} | tail -2")
        ))
    );

    let pin = format!("{BPFFS}/gw2/eth0/carp_stats");
    util::step(&format!(
        "gw2's XDP counters for vhid 1: bpftool map lookup pinned {pin} key 1 0 0 0 (map dump shows every vhid)"
    ));
    let out = util::output(
        "bpftool",
        &["map", "lookup", "pinned", &pin, "key", "1", "0", "0", "0"],
    )
    .unwrap_or_else(|| "(bpftool failed)".into());
    print!("{}", indent(&summarise_percpu(&out)));

    util::step("planned stop of gw2 (SIGTERM: bow-out, then clean-up)");
    lab.kill("gw2", "TERM")?;
    for l in lab
        .log("gw2")
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        println!(
            "    gw2: {}",
            l.split_once("  ").map_or(l, |(_, r)| r.trim())
        );
    }
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// Sums bpftool's per-CPU values field by field: one `name: total` line per non-zero counter.
fn summarise_percpu(out: &str) -> String {
    let mut totals: Vec<(String, u64)> = Vec::new();
    for line in out.lines() {
        let t = line.trim().trim_end_matches(',');
        let Some((k, v)) = t.split_once(": ") else {
            continue;
        };
        let k = k.trim_matches('"');
        let Ok(v) = v.trim().parse::<u64>() else {
            continue;
        };
        if k == "cpu" || k == "key" {
            continue;
        }
        match totals.iter_mut().find(|(n, _)| n == k) {
            Some((_, s)) => *s += v,
            None => totals.push((k.to_string(), v)),
        }
    }
    if totals.is_empty() {
        return out.to_string();
    }
    totals
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect()
}
