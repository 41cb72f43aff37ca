//! `cargo xtask bench` (balancing receive cost, issue #6 and design §4): one trafgen sender on a veth pair,
//! the receiver running one of several active-active filters, reported as the receive cost per frame:
//! time per frame with the receiver in place minus time per frame with the receiver down (sender alone).
//! Needs root.
//!
//! The frames are IPv4/UDP from 508 client addresses (10.8.0-3.x) to 10.9.1.1, sent to the receiver's
//! MAC, which is the carp interface MAC of `balancing ip-unicast` (00:00:5e:00:01:02); with two carpnodes
//! and one of them MASTER here, each filter keeps about half the flows. What the filter keeps goes on to
//! the stack, which drops it at the route lookup (forwarding is off): the same tail for every variant.
//! The filters:
//! - carp-xdp's balance decision in XDP, generic (skb) mode and native mode;
//! - the same split as an nftables netdev-ingress rule with `jhash`;
//! - iptables `-m cluster` (xt_cluster, the kernel's remaining active-active primitive; needs conntrack);
//! - no filter at all (the stack alone), for reference.
//!
//! Each variant's time per frame is the slope of trafgen's CPU time between a run of N and one of 2N
//! frames (so trafgen's start-up cancels out), the median over several interleaved rounds. On veth the
//! receive path runs in softirq on the sender's CPU inside its send calls and is charged to it, so the
//! sender's CPU time contains it. veth hands XDP a ready skb: the saving XDP makes on real NICs (no skb
//! at all) cannot show here.
use carp::dataplane::{AttachMode, Dataplane, maps::Maps};
use carp_common::maps::{BalanceMode, CarpStats};
use carp_tests::{bpffs_dir, netns::Netns, sh};
use std::path::Path;
use std::time::Duration;

/// Frames in the short run; the long run sends twice as many.
const FRAMES: u64 = 1_000_000;
const ROUNDS: usize = 5;
const RX_MAC: &str = "00:00:5e:00:01:02";

/// trafgen's packet: Ethernet to RX_MAC, IPv4/UDP, 60 bytes, source address cycling over 508 clients.
const TRAFGEN_CFG: &str = "{
  0x00, 0x00, 0x5e, 0x00, 0x01, 0x02,
  0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
  0x08, 0x00,
  0x45, 0x00, const16(46), const16(0), 0x40, 0x00, 64, 17, csumip(14, 33),
  10, 8, dinc(0, 3), dinc(1, 127),
  10, 9, 1, 1,
  const16(4000), const16(5000), const16(26), const16(0),
  fill(0x00, 18)
}
";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    SenderAlone,
    NoFilter,
    TrivialXdp,
    XdpGeneric,
    XdpNative,
    NftJhash,
    XtCluster,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::SenderAlone => "sender alone (receiver down)",
            Variant::NoFilter => "no filter (stack drops at routing)",
            Variant::TrivialXdp => "trivial XDP_PASS program, XDP generic",
            Variant::XdpGeneric => "carp-xdp balance, XDP generic",
            Variant::XdpNative => "carp-xdp balance, XDP native",
            Variant::NftJhash => "nftables netdev ingress jhash",
            Variant::XtCluster => "iptables -m cluster (conntrack)",
        }
    }
}

struct Lab {
    tx: Netns,
    rx: Netns,
    cfg: std::path::PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let tx = Netns::new("cbb-tx");
        let rx = Netns::new("cbb-rx");
        sh(&format!(
            "ip link add tx0 netns {} type veth peer name rx0 netns {}",
            tx.name, rx.name
        ));
        tx.run("ip link set tx0 address 02:00:00:00:00:01 up");
        rx.run(&format!(
            "ip link set rx0 address {RX_MAC} up && ip addr add 10.9.0.2/16 dev rx0 && \
             sysctl -qw net.ipv4.ip_forward=0"
        ));
        let cfg = std::env::temp_dir().join(format!("carp-trafgen-{}.cfg", std::process::id()));
        std::fs::write(&cfg, TRAFGEN_CFG).expect("write trafgen config");
        Lab { tx, rx, cfg }
    }

    /// trafgen goes through the qdisc layer (`-q`): with its default bypass, a receiver that is down
    /// stops the veth queue and trafgen spins on its ring instead of having veth drop the frames.
    ///
    /// CPU time (user + system) of one trafgen run of `frames` frames on one CPU. On veth the receive
    /// path runs in softirq context on the sender's CPU during its send calls, and the kernel charges that
    /// time to the sender (tick accounting), so this includes the receiver's work; unlike wall time it
    /// excludes what other processes on this shared machine take.
    #[expect(
        clippy::zombie_processes,
        reason = "reaped with wait4, which also returns its rusage"
    )]
    fn send(&self, frames: u64) -> Duration {
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.tx.name))
            .args(["trafgen", "-o", "tx0", "-i"])
            .arg(&self.cfg)
            .args(["-n", &frames.to_string(), "-P", "1", "-C", "-Q", "-q"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run trafgen");
        let mut status = 0;
        // SAFETY: wait4 on our own child with valid out-pointers.
        let usage = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            let pid = libc::wait4(child.id() as i32, &mut status, 0, &mut ru);
            assert_eq!(pid, child.id() as i32, "wait4 trafgen");
            ru
        };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "trafgen failed (status {status})"
        );
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }

    /// ns per frame: the slope between FRAMES and 2·FRAMES frames.
    fn ns_per_frame(&self) -> f64 {
        let short = self.send(FRAMES);
        let long = self.send(2 * FRAMES);
        (long.as_secs_f64() - short.as_secs_f64()) * 1e9 / FRAMES as f64
    }

    /// Puts variant `v` in place; returns the program object to keep alive for a non-pinned attachment.
    fn set_up(&self, v: Variant, bpffs: &Path) -> Option<Dataplane> {
        match v {
            Variant::SenderAlone => self.rx.run("ip link set rx0 down"),
            Variant::NoFilter => String::new(),
            Variant::TrivialXdp => {
                // Attached without a pin: it stays while the returned object lives.
                return Some(self.rx.in_ns(|| {
                    let mut dp = Dataplane::load_unattached().expect("load the XDP object");
                    dp.pass_program()
                        .expect("the pass program")
                        .attach("rx0", aya::programs::XdpMode::Skb)
                        .expect("attach XDP_PASS to rx0");
                    dp
                }));
            }
            Variant::XdpGeneric | Variant::XdpNative => {
                let mode = if v == Variant::XdpNative {
                    AttachMode::Native
                } else {
                    AttachMode::Skb
                };
                let pins = bpffs.to_path_buf();
                self.rx.in_ns(move || {
                    Dataplane::attach("rx0", &pins, mode).expect("attach XDP to rx0");
                });
                let mut maps = Maps::open_pinned(bpffs, "rx0").expect("open the pinned maps");
                // Two carpnodes (vhids 2 and 3), node 2 MASTER here: bucket 0 kept, bucket 1 dropped.
                let mut group = carp::balance::group(
                    BalanceMode::IpUnicast,
                    &[(2, true), (3, false)],
                    [2, 0, 0, 0, 0, 2],
                )
                .expect("balance group");
                // As carpd runs it: a MASTER lease, so XDP reads the clock for every frame.
                group.lease_until_ns = u64::MAX;
                maps.set_balance(group).expect("write carp_balance");
                String::new()
            }
            Variant::NftJhash => self.rx.run(
                "nft add table netdev cbb && \
                 nft add chain netdev cbb in '{ type filter hook ingress device rx0 priority 0; }' && \
                 nft add rule netdev cbb in meta protocol ip jhash ip saddr . ip daddr mod 2 seed 0x5eed != 0 drop",
            ),
            Variant::XtCluster => self.rx.run(
                "iptables -t mangle -A PREROUTING -i rx0 -m cluster --cluster-total-nodes 2 \
                 --cluster-local-node 1 --cluster-hash-seed 0x5eed -j MARK --set-mark 0xffff && \
                 iptables -t mangle -A PREROUTING -i rx0 -m mark ! --mark 0xffff -j DROP",
            ),
        };
        None
    }

    fn tear_down(&self, v: Variant, bpffs: &Path) {
        match v {
            Variant::SenderAlone => self.rx.run("ip link set rx0 up"),
            Variant::NoFilter | Variant::TrivialXdp => String::new(),
            Variant::XdpGeneric | Variant::XdpNative => {
                let pins = bpffs.to_path_buf();
                self.rx.in_ns(move || {
                    Dataplane::detach("rx0", &pins).expect("detach XDP from rx0");
                });
                String::new()
            }
            Variant::NftJhash => self.rx.run("nft delete table netdev cbb"),
            Variant::XtCluster => self.rx.run("iptables -t mangle -F PREROUTING"),
        };
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cfg);
    }
}

/// The balance counters summed over CPUs for leader vhid 2, to prove the XDP filter did decide.
fn balanced(bpffs: &Path) -> Option<(u64, u64)> {
    let maps = Maps::open_pinned(bpffs, "rx0").ok()?;
    let s: CarpStats = maps.stats(2).ok()?;
    Some((s.balanced_pass, s.balanced_drop))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    if !carp_tests::require_root("carp-balance-bench") {
        anyhow::bail!("needs root");
    }
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/bench/balance-veth.json".into());
    let lab = Lab::new();
    let bpffs = bpffs_dir("balance-bench");
    let variants = [
        Variant::SenderAlone,
        Variant::NoFilter,
        Variant::TrivialXdp,
        Variant::XdpGeneric,
        Variant::XdpNative,
        Variant::NftJhash,
        Variant::XtCluster,
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    // Warm-up: conntrack's module, trafgen's page cache, the veth's first frames.
    lab.set_up(Variant::XtCluster, &bpffs);
    lab.send(FRAMES / 10);
    lab.tear_down(Variant::XtCluster, &bpffs);
    for _ in 0..ROUNDS {
        for (i, v) in variants.iter().enumerate() {
            let attached = lab.set_up(*v, &bpffs);
            times[i].push(lab.ns_per_frame());
            drop(attached);
            if matches!(v, Variant::XdpGeneric | Variant::XdpNative) {
                let (pass, drop) = balanced(&bpffs).unwrap_or((0, 0));
                let total = pass + drop;
                anyhow::ensure!(
                    total >= 3 * FRAMES && pass.abs_diff(drop) < total / 5,
                    "{}: the XDP filter saw {pass} passed and {drop} dropped frames of {} sent",
                    v.name(),
                    3 * FRAMES
                );
            }
            lab.tear_down(*v, &bpffs);
        }
    }
    let alone = median(&mut times[0].clone());
    println!(
        "{:<40} {:>12} {:>14} {:>10}",
        "receiver", "ns/frame", "receive cost", "vs XDP gen"
    );
    let mut rows = Vec::new();
    let xdp_at = variants
        .iter()
        .position(|v| *v == Variant::XdpGeneric)
        .expect("XDP generic variant");
    let xdp_cost = median(&mut times[xdp_at].clone()) - alone;
    for (i, v) in variants.iter().enumerate() {
        let t = median(&mut times[i]);
        let cost = t - alone;
        let vs = if *v == Variant::SenderAlone {
            String::from("-")
        } else {
            format!("{:.2}x", cost / xdp_cost)
        };
        println!("{:<40} {:>12.1} {:>14.1} {:>10}", v.name(), t, cost, vs);
        rows.push(format!(
            "{{\"receiver\":{:?},\"ns_per_frame\":{t:.1},\"receive_cost_ns\":{cost:.1}}}",
            v.name()
        ));
    }
    if let Some(dir) = Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, format!("[{}]\n", rows.join(",\n")))?;
    println!("written to {out}");
    let _ = std::fs::remove_dir_all(&bpffs);
    Ok(())
}
