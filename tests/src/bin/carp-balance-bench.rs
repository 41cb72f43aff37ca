//! `cargo xtask bench` (balancing receive cost, issue #6 and design §4): a sender on a veth pair, the
//! receiver running one of several active-active filters, reported as the receive cost per frame: time
//! per frame with the receiver in place minus time per frame with the receiver down (sender alone).
//! Needs root. Two senders, two tables:
//!
//! - trafgen (the sender): a packet socket, so every frame reaches the receiver as an skb; on
//!   veth any XDP program (generic or native) then first costs a copy of that skb into a linear buffer
//!   with 256 bytes of headroom (`veth_convert_skb_to_xdp_buff`, `netif_skb_check_for_xdp`);
//! - xdp_frame (carp_tests::xdp_sender): a live-frames BPF_PROG_TEST_RUN whose XDP_TX leaves the sending
//!   veth through ndo_xdp_xmit, so the receiver gets xdp_frames and native XDP runs with no skb at all,
//!   as on a real NIC. veth takes xdp_frames only on a queue with NAPI, which an XDP program or GRO
//!   enables: GRO is on for the receiver in every variant of this table (real NICs have it on too).
//!
//! The frames are IPv4/UDP from 508 client addresses (10.8.0-3.x) to 10.9.1.1, sent to the receiver's
//! MAC, which is the carp interface MAC of `balancing ip-unicast` (00:00:5e:00:01:02); with two carpnodes
//! and one of them MASTER here, each filter keeps about half the flows. What the filter keeps goes on to
//! the stack, which drops it at the route lookup (forwarding is off): the same tail for every variant.
//! The filters:
//! - carp-xdp's balance decision in XDP, generic (skb) mode and native mode;
//! - the same split as an nftables netdev-ingress rule with `jhash`;
//! - iptables `-m cluster` (xt_cluster, the kernel's remaining active-active primitive; needs conntrack);
//! - a trivial XDP_PASS program, and no filter at all (the stack alone), for reference.
//!
//! Each variant's time per frame is the slope of the sender's CPU time between a run of N and one of 2N
//! frames (so start-up cancels out), the median over several interleaved rounds. On veth the receive
//! path runs in softirq on the sender's CPU (inside trafgen's send calls; after each batch of the test
//! run, when it re-enables bottom halves) and the tick accounting charges it to the sender; the
//! xdp_frame sender is pinned to one CPU and that CPU's ksoftirqd is added, in case softirq work is
//! deferred to it. Every variant checks that the frames arrived (receiver counters), so a variant where
//! frames vanish fails the bench instead of looking cheap.
use carp::dataplane::{AttachMode, Dataplane, if_index, maps::Maps};
use carp_common::maps::{BalanceMode, CarpStats};
use carp_tests::{
    bpffs_dir,
    netns::Netns,
    sh,
    xdp_sender::{self, XdpSender},
};
use std::{path::Path, sync::Arc, time::Duration};

const ROUNDS: usize = 5;
const RX_MAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 2];
const TX_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

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

/// Who sends the frames, and so what the receiving veth gets: an skb or an xdp_frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sender {
    Trafgen,
    XdpFrame,
}

impl Sender {
    fn name(self) -> &'static str {
        match self {
            Sender::Trafgen => "trafgen",
            Sender::XdpFrame => "xdp_frame",
        }
    }

    /// Frames in the short run; the long run sends twice as many. The xdp_frame sender is cheaper per
    /// frame, so it sends more to keep the slope well above the clock's resolution.
    fn frames(self) -> u64 {
        match self {
            Sender::Trafgen => 1_000_000,
            Sender::XdpFrame => 2_000_000,
        }
    }

    fn variants(self) -> &'static [Variant] {
        match self {
            Sender::Trafgen => &[
                Variant::SenderAlone,
                Variant::NoFilter,
                Variant::TrivialXdp,
                Variant::XdpGeneric,
                Variant::XdpNative,
                Variant::NftJhash,
                Variant::XtCluster,
            ],
            Sender::XdpFrame => &[
                Variant::SenderAlone,
                Variant::NoFilter,
                Variant::TrivialXdpNative,
                Variant::XdpNative,
                Variant::XdpGeneric,
                Variant::NftJhash,
                Variant::XtCluster,
            ],
        }
    }

    /// The variant the ratios are taken against: generic for trafgen (the cheaper carp-xdp mode with
    /// skbs), native for xdp_frames.
    fn reference(self) -> Variant {
        match self {
            Sender::Trafgen => Variant::XdpGeneric,
            Sender::XdpFrame => Variant::XdpNative,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    SenderAlone,
    NoFilter,
    TrivialXdp,
    TrivialXdpNative,
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
            Variant::TrivialXdpNative => "trivial XDP_PASS program, XDP native",
            Variant::XdpGeneric => "carp-xdp balance, XDP generic",
            Variant::XdpNative => "carp-xdp balance, XDP native",
            Variant::NftJhash => "nftables netdev ingress jhash",
            Variant::XtCluster => "iptables -m cluster (conntrack)",
        }
    }
}

/// One run of the sender: its CPU time by each accounting.
#[derive(Clone, Copy, Default)]
struct Usage {
    /// CPU time of the sender (trafgen's rusage; the sending thread's CLOCK_THREAD_CPUTIME_ID).
    sender_ns: u64,
    /// CPU time of the sending CPU's ksoftirqd (xdp_frame sender only).
    ksoftirqd_ns: u64,
    /// Busy time of the sending CPU from /proc/stat (user+nice+system+irq+softirq; xdp_frame only).
    busy_ns: u64,
    /// The kernel's own mean wall time per frame of the test run (xdp_frame only).
    kernel_ns_per_frame: u32,
}

/// One variant's time per frame in one round, by each accounting, from the slope between N and 2N.
#[derive(Clone, Copy, Default)]
struct Slope {
    /// Sender plus ksoftirqd: the figure reported.
    cpu: f64,
    /// Of which ksoftirqd.
    ksoftirqd: f64,
    /// The sending CPU's busy time (includes whatever else ran on it).
    busy: f64,
    /// The test run's wall time per frame.
    kernel: f64,
}

struct Lab {
    tx: Netns,
    rx: Netns,
    cfg: std::path::PathBuf,
    sender: Arc<XdpSender>,
    tx_ifindex: u32,
    cpu: usize,
    ksoftirqd: Option<u32>,
}

/// Interface counters from /proc/net/dev of namespace `ns` (the file follows the reader's netns).
#[derive(Clone, Copy, Debug)]
struct DevCounters {
    rx_packets: u64,
    tx_dropped: u64,
}

fn dev_counters(ns: &Netns, dev: &str) -> DevCounters {
    let text = ns.run("cat /proc/net/dev");
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{dev}:")))
        .unwrap_or_else(|| panic!("{dev} not in /proc/net/dev"));
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("counter"))
        .collect();
    DevCounters {
        rx_packets: f[1],
        tx_dropped: f[11],
    }
}

/// The pid of `ksoftirqd/<cpu>`.
fn ksoftirqd_pid(cpu: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == want).then_some(pid)
    })
}

/// CPU time of task `pid` in ns (schedstat's exact sum_exec_runtime, not ticks).
fn task_ns(pid: Option<u32>) -> u64 {
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/schedstat")).ok())
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Busy time of `cpu` in ns from /proc/stat: user + nice + system + irq + softirq (USER_HZ ticks).
fn cpu_busy_ns(cpu: usize) -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let want = format!("cpu{cpu}");
    let f: Vec<u64> = stat
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(want.as_str())).then(|| it.filter_map(|v| v.parse().ok()).collect())
        })
        .expect("cpu line in /proc/stat");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (f[0] + f[1] + f[2] + f[5] + f[6]) * 1_000_000_000 / hz
}

/// CPU time of the calling thread in ns.
fn thread_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Lab {
    fn new() -> Lab {
        let tx = Netns::new("cbb-tx");
        let rx = Netns::new("cbb-rx");
        sh(&format!(
            "ip link add tx0 netns {} type veth peer name rx0 netns {}",
            tx.name, rx.name
        ));
        // No IPv6: only the sender's frames arrive, so the receiver's counters can be checked exactly.
        for ns in [&tx, &rx] {
            ns.run(
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
            );
        }
        tx.run("ip link set tx0 address 02:00:00:00:00:01 up");
        rx.run(
            "ip link set rx0 address 00:00:5e:00:01:02 up && ip addr add 10.9.0.2/16 dev rx0 && \
             sysctl -qw net.ipv4.ip_forward=0",
        );
        let cfg = std::env::temp_dir().join(format!("carp-trafgen-{}.cfg", std::process::id()));
        std::fs::write(&cfg, TRAFGEN_CFG).expect("write trafgen config");
        let (sender, tx_ifindex) = tx.in_ns(|| {
            let sender = XdpSender::load(xdp_sender::template(RX_MAC, TX_MAC))
                .expect("load the xdp_frame sender");
            (Arc::new(sender), if_index("tx0").expect("tx0"))
        });
        // The last CPU: the one the xdp_frame sender is pinned to.
        let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
        Lab {
            tx,
            rx,
            cfg,
            sender,
            tx_ifindex,
            cpu,
            ksoftirqd: ksoftirqd_pid(cpu),
        }
    }

    fn send(&self, sender: Sender, frames: u64) -> Usage {
        match sender {
            Sender::Trafgen => Usage {
                sender_ns: self.send_trafgen(frames).as_nanos() as u64,
                ..Default::default()
            },
            Sender::XdpFrame => self.send_xdp(frames),
        }
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
    fn send_trafgen(&self, frames: u64) -> Duration {
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

    /// One live-frames test run of `frames` frames from a thread in the sender's namespace pinned to
    /// `self.cpu`. The receive work runs in softirq on that CPU: mostly in the thread itself, when the
    /// test run re-enables bottom halves after each batch (tick accounting charges it to the thread);
    /// what overflows to ksoftirqd is added from its own CPU time.
    fn send_xdp(&self, frames: u64) -> Usage {
        let (sender, ifindex, cpu, ksoftirqd) = (
            self.sender.clone(),
            self.tx_ifindex,
            self.cpu,
            self.ksoftirqd,
        );
        let frames = u32::try_from(frames).expect("frames fit the test run's repeat");
        self.tx.in_ns(move || {
            xdp_sender::pin_to_cpu(cpu).expect("pin the sender to its CPU");
            std::thread::yield_now();
            let (k0, b0) = (task_ns(ksoftirqd), cpu_busy_ns(cpu));
            let t0 = thread_ns();
            let kernel_ns_per_frame = sender
                .send(ifindex, frames)
                .expect("live-frames BPF_PROG_TEST_RUN");
            let t1 = thread_ns();
            // Let a NAPI poll that went to ksoftirqd finish before reading its time.
            std::thread::sleep(Duration::from_millis(10));
            Usage {
                sender_ns: t1 - t0,
                ksoftirqd_ns: task_ns(ksoftirqd) - k0,
                busy_ns: cpu_busy_ns(cpu) - b0,
                kernel_ns_per_frame,
            }
        })
    }

    /// Time per frame: the slope between N and 2N frames.
    fn slope(&self, sender: Sender) -> Slope {
        let n = sender.frames();
        let short = self.send(sender, n);
        let long = self.send(sender, 2 * n);
        let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
        Slope {
            cpu: per(
                short.sender_ns + short.ksoftirqd_ns,
                long.sender_ns + long.ksoftirqd_ns,
            ),
            ksoftirqd: per(short.ksoftirqd_ns, long.ksoftirqd_ns),
            busy: per(short.busy_ns, long.busy_ns),
            kernel: 2.0 * f64::from(long.kernel_ns_per_frame)
                - f64::from(short.kernel_ns_per_frame),
        }
    }

    /// Puts variant `v` in place; returns the program object to keep alive for a non-pinned attachment.
    fn set_up(&self, v: Variant, bpffs: &Path) -> Option<Dataplane> {
        match v {
            Variant::SenderAlone => self.rx.run("ip link set rx0 down"),
            Variant::NoFilter => String::new(),
            Variant::TrivialXdp | Variant::TrivialXdpNative => {
                let mode = if v == Variant::TrivialXdpNative {
                    aya::programs::XdpMode::Driver
                } else {
                    aya::programs::XdpMode::Skb
                };
                // Attached without a pin: it stays while the returned object lives.
                return Some(self.rx.in_ns(move || {
                    let mut dp = Dataplane::load_unattached().expect("load the XDP object");
                    dp.pass_program()
                        .expect("the pass program")
                        .attach("rx0", mode)
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
            Variant::NoFilter | Variant::TrivialXdp | Variant::TrivialXdpNative => String::new(),
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

    /// The receiver's GRO: on for the xdp_frame sender (veth then has NAPI and takes xdp_frames without
    /// an XDP program), off (veth's default) for trafgen.
    fn set_gro(&self, sender: Sender) {
        let on = if sender == Sender::XdpFrame {
            "on"
        } else {
            "off"
        };
        self.rx.run(&format!("ethtool -K rx0 gro {on}"));
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

/// Runs variant `v` once with `sender` (N then 2N frames) and checks that the frames arrived where
/// they should: at rx0 (or, receiver down, in veth's drop counter) and, for carp-xdp, through its
/// balance decision, about half each way.
fn measure(lab: &Lab, sender: Sender, v: Variant, bpffs: &Path) -> anyhow::Result<Slope> {
    let sent = 3 * sender.frames();
    // At least 99.9% must arrive: a lost frame costs the receiver nothing and would flatter it.
    let enough = sent - sent / 1000;
    let attached = lab.set_up(v, bpffs);
    let (rx0, tx0) = (dev_counters(&lab.rx, "rx0"), dev_counters(&lab.tx, "tx0"));
    let slope = lab.slope(sender);
    let (rx1, tx1) = (dev_counters(&lab.rx, "rx0"), dev_counters(&lab.tx, "tx0"));
    drop(attached);
    let arrived = rx1.rx_packets - rx0.rx_packets;
    if v == Variant::SenderAlone {
        let dropped = tx1.tx_dropped - tx0.tx_dropped;
        anyhow::ensure!(
            arrived == 0,
            "{}: {arrived} frames arrived at a receiver that is down",
            v.name()
        );
        // trafgen's frames to a down peer are dropped by veth_xmit and counted there too.
        anyhow::ensure!(
            dropped >= enough,
            "{} ({}): veth dropped {dropped} of {sent} frames",
            v.name(),
            sender.name()
        );
    } else {
        anyhow::ensure!(
            arrived >= enough,
            "{} ({}): {arrived} of {sent} frames arrived at rx0",
            v.name(),
            sender.name()
        );
    }
    if matches!(v, Variant::XdpGeneric | Variant::XdpNative) {
        let (pass, drop) = balanced(bpffs).unwrap_or((0, 0));
        let total = pass + drop;
        anyhow::ensure!(
            total >= enough && pass.abs_diff(drop) < total / 5,
            "{} ({}): the XDP filter saw {pass} passed and {drop} dropped frames of {sent} sent",
            v.name(),
            sender.name()
        );
    }
    lab.tear_down(v, bpffs);
    Ok(slope)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Prints one sender's table and returns its JSON object.
fn report(sender: Sender, slopes: &[Vec<Slope>], rounds: usize) -> String {
    let variants = sender.variants();
    let col = |i: usize, f: fn(&Slope) -> f64| slopes[i].iter().map(f).collect::<Vec<f64>>();
    let alone = median(&col(0, |s| s.cpu));
    let at = |v: Variant| variants.iter().position(|x| *x == v).expect("variant");
    let reference = sender.reference();
    let ref_cost = median(&col(at(reference), |s| s.cpu)) - alone;
    println!(
        "\nsender {}: {} and {} frames, median of {rounds} rounds",
        sender.name(),
        sender.frames(),
        2 * sender.frames()
    );
    println!(
        "{:<40} {:>9} {:>15} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "receiver", "ns/frame", "(min-max)", "rx cost", "ksoftirq", "cpu busy", "kernel", "vs ref"
    );
    let mut rows = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let t = median(&col(i, |s| s.cpu));
        let (lo, hi) = min_max(&col(i, |s| s.cpu));
        let cost = t - alone;
        let (ks, busy, kernel) = (
            median(&col(i, |s| s.ksoftirqd)),
            median(&col(i, |s| s.busy)),
            median(&col(i, |s| s.kernel)),
        );
        let vs = if *v == Variant::SenderAlone {
            String::from("-")
        } else {
            format!("{:.2}x", cost / ref_cost)
        };
        // trafgen's figure is its rusage alone: no ksoftirqd, busy or test-run columns.
        let extra_cols = if sender == Sender::XdpFrame {
            format!("{ks:>9.1} {busy:>9.1} {kernel:>9.1}")
        } else {
            format!("{:>9} {:>9} {:>9}", "-", "-", "-")
        };
        println!(
            "{:<40} {t:>9.1} {:>15} {cost:>9.1} {extra_cols} {vs:>8}",
            v.name(),
            format!("{lo:.0}-{hi:.0}"),
        );
        let extra = if sender == Sender::XdpFrame {
            format!(
                ",\"ksoftirqd_ns\":{ks:.1},\"cpu_busy_ns_per_frame\":{busy:.1},\"test_run_ns_per_frame\":{kernel:.1}"
            )
        } else {
            String::new()
        };
        rows.push(format!(
            "{{\"receiver\":{:?},\"ns_per_frame\":{t:.1},\"min\":{lo:.1},\"max\":{hi:.1},\"receive_cost_ns\":{cost:.1},\"vs_{}\":{:.3}{extra}}}",
            v.name(),
            match reference {
                Variant::XdpNative => "carp_xdp_native",
                _ => "carp_xdp_generic",
            },
            if *v == Variant::SenderAlone { 0.0 } else { cost / ref_cost }
        ));
    }
    format!(
        "{{\"sender\":{:?},\"frames\":{},\"rounds\":{rounds},\"rows\":[\n{}\n]}}",
        sender.name(),
        sender.frames(),
        rows.join(",\n")
    )
}

fn main() -> anyhow::Result<()> {
    if !carp_tests::require_root("carp-balance-bench") {
        anyhow::bail!("needs root");
    }
    // carp-balance-bench [OUT.json] [--rounds R] [--only trafgen|xdp_frame]
    let mut out = String::from("target/bench/balance-veth.json");
    let mut rounds = ROUNDS;
    let mut senders = vec![Sender::Trafgen, Sender::XdpFrame];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|r| r.parse().ok()).unwrap_or(ROUNDS),
            "--only" => {
                let which = args.next().unwrap_or_default();
                senders.retain(|s| s.name() == which);
                anyhow::ensure!(!senders.is_empty(), "--only trafgen or xdp_frame");
            }
            _ => out = a,
        }
    }
    let date = sh("date -u '+%Y-%m-%d %H:%M UTC'").trim().to_string();
    let load_start = loadavg();
    let lab = Lab::new();
    let bpffs = bpffs_dir("balance-bench");
    let mut slopes: Vec<Vec<Vec<Slope>>> = senders
        .iter()
        .map(|s| vec![Vec::new(); s.variants().len()])
        .collect();
    // Warm-up: conntrack's module, trafgen's page cache, the veth's first frames.
    lab.set_up(Variant::XtCluster, &bpffs);
    for s in &senders {
        lab.set_gro(*s);
        lab.send(*s, s.frames() / 10);
    }
    lab.tear_down(Variant::XtCluster, &bpffs);
    for _ in 0..rounds {
        for (si, sender) in senders.iter().enumerate() {
            lab.set_gro(*sender);
            for (i, v) in sender.variants().iter().enumerate() {
                slopes[si][i].push(measure(&lab, *sender, *v, &bpffs)?);
            }
        }
    }
    let load_end = loadavg();
    println!("{date}, load average {load_start} at the start, {load_end} at the end");
    let tables: Vec<String> = senders
        .iter()
        .enumerate()
        .map(|(si, s)| report(*s, &slopes[si], rounds))
        .collect();
    if let Some(dir) = Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &out,
        format!(
            "{{\"date\":{date:?},\"loadavg_start\":{load_start:?},\"loadavg_end\":{load_end:?},\"tables\":[\n{}\n]}}\n",
            tables.join(",\n")
        ),
    )?;
    println!("written to {out}");
    let _ = std::fs::remove_dir_all(&bpffs);
    Ok(())
}
