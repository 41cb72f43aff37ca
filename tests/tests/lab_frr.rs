//! VRRPv3 interop with FRR's vrrpd (Debian package frr, 8.4) in the "pair" lab (issue #18 item 5):
//! FRR runs in gw2 as the operator would run it (zebra and vrrpd, the `vrrp4-2-7` macvlan with the
//! virtual MAC holding the VIP, as FRR's documentation asks), carpd in gw1, both at 1 s adverts.
//! - FRR MASTER, carpd BACKUP with a lower priority: carpd stays BACKUP (it accepts FRR's adverts,
//!   checksum form included); FRR's vrrpd SIGKILLed and gw2's link cut: carpd takes over within its
//!   master-down and the client reaches the VIP through it.
//! - carpd MASTER, FRR BACKUP: FRR stays Backup and counts carpd's adverts as received; carpd stopped
//!   with SIGTERM: its priority-0 advert makes FRR Master at once (well before a master-down).
//!
//! Needs root and FRR (`cargo xtask setup` installs it).
use carp_tests::{
    lab::{Daemon, Pair, VIP},
    require_root,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(10);

/// carpd's VRRPv3 interface, VRID 7 at 1 s (100 centiseconds).
fn carpd_config(priority: u8) -> String {
    format!(
        "[[interface]]\nname = \"vr0\"\ncarpdev = \"eth0\"\nprotocol = \"vrrp3\"\nvrid = 7\n\
         priority = {priority}\ninterval = 100\npreempt = true\naddresses = [\"{VIP}/24\"]\n"
    )
}

/// FRR's zebra and vrrpd in gw2, in a pathspace of their own, SIGKILLed on drop.
struct Frr {
    zebra: Daemon,
    vrrpd: Daemon,
    pathspace: String,
    ns: String,
}

impl Frr {
    fn start(pair: &Pair, priority: u8) -> Frr {
        // One per lab: two tests of this file run at once, and vtysh finds a daemon by its pathspace.
        let pathspace = format!("carplab-{}-{}", std::process::id(), pair.gw2.name);
        let conf = pair.dir.join("vrrpd.conf");
        std::fs::write(
            &conf,
            format!(
                "interface eth0\n vrrp 7 version 3\n vrrp 7 priority {priority}\n \
                 vrrp 7 advertisement-interval 1000\n vrrp 7 ip {VIP}\n!\n"
            ),
        )
        .unwrap();
        let zconf = pair.dir.join("zebra.conf");
        std::fs::write(&zconf, "!\n").unwrap();
        // FRR's daemons drop to user frr: it must read the files and own its run directory.
        let run = PathBuf::from("/var/run/frr").join(&pathspace);
        std::fs::create_dir_all(&run).unwrap();
        for p in [&conf, &zconf, &pair.dir, &run] {
            std::process::Command::new("chown")
                .args(["frr:frr", p.to_str().unwrap()])
                .status()
                .unwrap();
        }
        // The macvlan FRR's vrrpd looks for: on eth0, the virtual MAC, the VIP on it.
        pair.gw2.run(&format!(
            "ip link add link eth0 name vrrp4-2-7 type macvlan mode bridge && \
             ip link set vrrp4-2-7 address 00:00:5e:00:01:07 && \
             ip addr add {VIP}/24 dev vrrp4-2-7 && ip link set vrrp4-2-7 up"
        ));
        let daemon = |bin: &str, conf: &PathBuf| {
            let pid = pair.dir.join(format!("{bin}.pid"));
            Daemon::spawn(
                &pair.gw2,
                bin,
                &pair.dir,
                &[
                    &format!("/usr/lib/frr/{bin}"),
                    "-N",
                    &pathspace,
                    "-f",
                    conf.to_str().unwrap(),
                    "-i",
                    pid.to_str().unwrap(),
                    "--log",
                    "stdout",
                ],
            )
        };
        let zebra = daemon("zebra", &zconf);
        std::thread::sleep(Duration::from_millis(500));
        let vrrpd = daemon("vrrpd", &conf);
        Frr {
            zebra,
            vrrpd,
            pathspace,
            ns: pair.gw2.name.clone(),
        }
    }

    /// What `show vrrp json` prints.
    fn raw(&self) -> String {
        std::process::Command::new("nsenter")
            .args([
                &format!("--net=/run/netns/{}", self.ns),
                "vtysh",
                "-N",
                &self.pathspace,
                "-c",
                "show vrrp json",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `show vrrp json` for VRID 7, IPv4 side: (status, adverts received).
    fn v4(&self) -> Option<(String, u64)> {
        let json: serde_json::Value = serde_json::from_str(&self.raw()).ok()?;
        let vr = json
            .as_array()?
            .iter()
            .find(|v| v["vrid"].as_u64() == Some(7))?;
        Some((
            vr["v4"]["status"].as_str()?.to_string(),
            vr["v4"]["stats"]["adverRx"].as_u64().unwrap_or(0),
        ))
    }

    fn wait_status(&self, want: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.v4().is_some_and(|(s, _)| s == want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn logs(&self) -> String {
        format!(
            "{}\n{}\n{:?}",
            self.zebra.log(),
            self.vrrpd.log(),
            self.v4()
        )
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.vrrpd.kill9();
        self.zebra.kill9();
        let _ = std::fs::remove_dir_all(PathBuf::from("/var/run/frr").join(&self.pathspace));
    }
}

#[test]
fn frr_master_carpd_backup_then_frr_killed_and_cut() {
    if !require_root("frr_master_carpd_backup_then_frr_killed_and_cut") {
        return;
    }
    let pair = Pair::new("fr1");
    let mut frr = Frr::start(&pair, 100);
    assert!(frr.wait_status("Master", SETTLE), "{}", frr.logs());
    let gw1 = pair.carpd(&pair.gw1, "gw1", &carpd_config(50));
    assert!(
        gw1.wait_log("vr0 vhid 7: INIT -> BACKUP", SETTLE),
        "{}",
        gw1.log()
    );
    // Well past carpd's master-down (3 s + skew): it hears FRR and stays BACKUP.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !gw1.log().contains("vr0 vhid 7: BACKUP -> MASTER"),
        "carpd did not accept FRR's adverts:\n{}\n{}",
        gw1.log(),
        frr.logs()
    );
    assert_eq!(frr.v4().map(|v| v.0).as_deref(), Some("Master"));
    // FRR's host dies: vrrpd SIGKILLed and its link cut in the same instant.
    frr.vrrpd.kill9();
    pair.gw2.run("ip link set eth0 down");
    let t0 = Instant::now();
    assert!(
        gw1.wait_log(
            "vr0 vhid 7: BACKUP -> MASTER (master down timer expired)",
            Duration::from_secs(8)
        ),
        "{}",
        gw1.log()
    );
    // Master-down of priority 50 at 1 s: 3 s + (256 - 50) / 256 s, plus slack for a loaded host.
    assert!(
        t0.elapsed() < Duration::from_millis(3805 + 1500),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        pair.client_reaches_vip(Duration::from_secs(5)),
        "{}",
        gw1.log()
    );
}

#[test]
fn carpd_master_frr_backup_then_carpd_sigterm() {
    if !require_root("carpd_master_frr_backup_then_carpd_sigterm") {
        return;
    }
    let pair = Pair::new("fr2");
    let mut gw1 = pair.carpd(&pair.gw1, "gw1", &carpd_config(200));
    assert!(
        gw1.wait_log("vr0 vhid 7: BACKUP -> MASTER", SETTLE),
        "{}",
        gw1.log()
    );
    let frr = Frr::start(&pair, 100);
    assert!(frr.wait_status("Backup", SETTLE), "{}", frr.logs());
    let rx0 = frr.v4().map(|v| v.1).unwrap_or(0);
    // Past FRR's master-down: it stays Backup and keeps counting carpd's adverts.
    std::thread::sleep(Duration::from_secs(5));
    let (status, rx) = frr.v4().expect("FRR's status");
    assert_eq!(status, "Backup", "{}\n{}", frr.logs(), gw1.log());
    assert!(
        rx >= rx0 + 4,
        "FRR received {} adverts in 5 s: {}",
        rx - rx0,
        frr.raw()
    );
    assert_eq!(gw1.carpd_state_of("vr0").as_deref(), Some("MASTER"));
    // Planned stop: carpd's priority-0 advert makes FRR Master after its skew time (0.6 s), not after
    // a master-down (3.6 s).
    let t0 = Instant::now();
    gw1.signal(libc::SIGTERM);
    assert!(
        frr.wait_status("Master", Duration::from_secs(3)),
        "{}\n{}",
        frr.logs(),
        gw1.log()
    );
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        gw1.wait_exit(Duration::from_secs(10)).is_some(),
        "{}",
        gw1.log()
    );
}
