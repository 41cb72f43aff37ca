//! The kernel advert queue (`carp::daemon::advq`) on a real veth: adverts handed to the kernel ahead of
//! time leave one per interval while the process that queued them does nothing at all; the queue never
//! holds more than its limit (what the kernel sends for a stopped carpd is bounded), and the model's last
//! departure, which the MASTER lease runs from, is a lower bound of the real one; after a withdrawal
//! (bow-out, state change) or a change of content (demotion) no earlier frame leaves. Departure times are
//! the kernel's receive timestamps on the far end of the veth (SIOCGSTAMPNS). Needs root.
use std::time::Duration;

use carp::daemon::advq::{AdvQueue, queue_limit};
use carp_tests::{netns::Netns, require_root};

/// A local-experimental EtherType, so nothing else on the link matches.
const ETHERTYPE: [u8; 2] = [0x88, 0xb6];

fn frame(marker: u8) -> Vec<u8> {
    let mut f = vec![0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]; // the CARP group MAC
    f.extend([0x00, 0x00, 0x5e, 0x00, 0x01, 0x09]); // a virtual MAC
    f.extend(ETHERTYPE);
    f.extend([marker; 56]);
    f
}

fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Receives test frames on `ifname` for `window`: (marker, kernel receive time, CLOCK_MONOTONIC ns).
fn capture(ifname: &'static str, window: Duration) -> Vec<(u8, u64)> {
    let cname = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: plain syscalls with valid arguments; the fd is closed at the end.
    unsafe {
        let proto = u16::from_be_bytes(ETHERTYPE).to_be() as i32;
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto);
        assert!(fd >= 0);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = libc::if_nametoindex(cname.as_ptr()) as i32;
        assert_eq!(
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32
            ),
            0
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
        // Kernel (realtime) receive stamps, turned into CLOCK_MONOTONIC with one offset.
        let offset = realtime_ns() as i64 - monotonic_ns() as i64;
        let end = std::time::Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while std::time::Instant::now() < end {
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 20 || buf[12..14] != ETHERTYPE {
                continue;
            }
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SIOCGSTAMPNS: the kernel's timestamp of the last frame received.
            assert_eq!(libc::ioctl(fd, 0x8907, &mut ts), 0);
            let real = ts.tv_sec * 1_000_000_000 + ts.tv_nsec;
            got.push((buf[14], (real - offset) as u64));
        }
        libc::close(fd);
        got
    }
}

struct Lab {
    ns: Netns,
    q: Option<AdvQueue>,
}

fn lab(tag: &str, horizon: Duration) -> Lab {
    let ns = Netns::new(&format!("carpt-advq{tag}"));
    ns.run("ip link add aq0 type veth peer name aq1 && ip link set aq0 up && ip link set aq1 up");
    let q = ns.in_ns(move || {
        let ifindex = carp::dataplane::if_index("aq0").expect("aq0");
        AdvQueue::open(ifindex, horizon).expect("advert queue")
    });
    // carpd's own device, on the carpdev, with HTB and nothing else.
    let show = ns.run(&format!(
        "ip -d link show {} && tc qdisc show dev {}",
        q.name(),
        q.name()
    ));
    assert!(show.contains("macvlan mode private"), "{show}");
    assert!(show.contains("qdisc htb 1: root"), "{show}");
    Lab { ns, q: Some(q) }
}

/// Starts a capture on aq1 in the lab's namespace, then runs `act` (the "loop") on a thread in the
/// namespace too (the classes' sockets are opened where they are first used), then collects.
fn run<T: Send + 'static>(
    l: &mut Lab,
    window: Duration,
    act: impl FnOnce(&mut AdvQueue) -> T + Send + 'static,
) -> (Vec<(u8, u64)>, T) {
    let cap = l.ns.spawn_in(move || capture("aq1", window));
    std::thread::sleep(Duration::from_millis(50));
    let mut q = l.q.take().expect("queue");
    let (q, out) = l.ns.in_ns(move || {
        let out = act(&mut q);
        (q, out)
    });
    l.q = Some(q);
    (cap.join().expect("capture"), out)
}

#[test]
fn queued_adverts_leave_on_time_while_the_sender_does_nothing_and_the_limit_bounds_them() {
    if !require_root(
        "queued_adverts_leave_on_time_while_the_sender_does_nothing_and_the_limit_bounds_them",
    ) {
        return;
    }
    let horizon = Duration::from_millis(100);
    let mut l = lab("t", horizon);
    let interval = carp::engine::advert_interval(0, 0); // 3.906 ms, advbase 0
    let limit = queue_limit(horizon, interval);
    assert_eq!(limit, 25);
    let (got, (t0, last)) = run(&mut l, Duration::from_millis(400), move |q| {
        let t0 = monotonic_ns();
        let last = q
            .advertise(9, &[frame(1)], interval, t0)
            .expect("advertise");
        // Offered again and again at once (a loop on time would offer one per interval): the kernel
        // refuses what the queue cannot hold.
        for _ in 0..40 {
            q.advertise(9, &[frame(1)], interval, monotonic_ns())
                .expect("advertise");
        }
        // ... and then the "loop" is stopped: nothing more is handed over.
        (t0, last)
    });
    let counts = l.q.as_ref().unwrap().counts(9);
    let tc = l.ns.run(&format!(
        "tc -s -d class show dev {n}; tc -s qdisc show dev {n}",
        n = l.q.as_ref().unwrap().name()
    ));
    // One at once through the direct queue, `limit` through the class (its first leaves at once
    // too), and at most one more taken while the first was leaving.
    assert!(
        (limit as usize + 1..=limit as usize + 2).contains(&got.len()),
        "{} frames left for a queue of {limit}: {counts:?}\n{tc}",
        got.len()
    );
    assert!(counts.refused >= 38, "{counts:?}");
    // One per interval, on time: the kernel spaces them, nobody else.
    let times: Vec<u64> = got.iter().map(|g| g.1).collect();
    let gaps: Vec<u64> = times.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
    let mean = gaps.iter().sum::<u64>() / gaps.len() as u64;
    let nominal = interval.as_nanos() as u64;
    // Never early (that would be a wrong rate); late by a little under load: the class has no
    // burst to catch up with, so a release the softirq runs late pushes the rest back (seen here:
    // +2.9 % with the rest of the suite running). That slack is the backups' to absorb (master-down
    // is three intervals and a skew), so the bound is loose on that side.
    assert!(
        mean + nominal / 50 >= nominal && mean <= nominal + nominal / 10,
        "mean gap {mean} ns against {nominal}"
    );
    let worst = *gaps.iter().max().unwrap();
    assert!(
        worst < 2 * nominal,
        "a gap of {worst} ns (nominal {nominal}): {gaps:?}"
    );
    // The whole queue is out within limit intervals of the hand-over, and nothing after.
    let span = times.last().unwrap() - t0;
    assert!(
        span <= u64::from(limit) * nominal + 5_000_000,
        "the kernel advertised for {span} ns after the last hand-over"
    );
    // The lease runs from the model's last departure: never after the real one.
    let real_last = *times.last().unwrap();
    assert!(
        last <= real_last + 500_000,
        "model last departure {} ns after the real one",
        last as i64 - real_last as i64
    );
    assert!(
        real_last - last < 10_000_000,
        "the model is {} ns early",
        real_last - last
    );
    l.q.take().unwrap().remove();
}

#[test]
fn nothing_queued_leaves_after_a_demotion_or_a_bow_out() {
    if !require_root("nothing_queued_leaves_after_a_demotion_or_a_bow_out") {
        return;
    }
    let horizon = Duration::from_millis(100);
    let mut l = lab("w", horizon);
    let interval = carp::engine::advert_interval(0, 0);
    let (got, ()) = run(&mut l, Duration::from_millis(300), move |q| {
        q.advertise(9, &[frame(1)], interval, monotonic_ns())
            .expect("advertise");
        std::thread::sleep(Duration::from_millis(20));
        // Demoted: other bytes. The old ones must not follow the first new one.
        q.advertise(9, &[frame(2)], interval, monotonic_ns())
            .expect("advertise demoted");
        std::thread::sleep(Duration::from_millis(20));
        // Bow-out: withdraw, then the bow-out through the direct queue.
        q.withdraw(9, monotonic_ns()).expect("withdraw");
        q.send_now(&[frame(3)]).expect("bow-out");
    });
    let markers: Vec<u8> = got.iter().map(|g| g.0).collect();
    let first2 = markers
        .iter()
        .position(|&m| m == 2)
        .expect("a demoted advert left");
    let bow = markers
        .iter()
        .position(|&m| m == 3)
        .expect("the bow-out left");
    assert!(
        markers[first2..].iter().all(|&m| m != 1),
        "an advert from before the demotion followed it: {markers:?}"
    );
    assert_eq!(
        bow,
        markers.len() - 1,
        "frames followed the bow-out: {markers:?}"
    );
    // The queues were full each time: ~5 of each left before the next step, none of the 20 left over.
    let ones = markers.iter().filter(|&&m| m == 1).count();
    let twos = markers.iter().filter(|&&m| m == 2).count();
    assert!(
        (2..=12).contains(&ones) && (2..=12).contains(&twos),
        "{markers:?}"
    );
    let c = l.q.as_ref().unwrap().counts(9);
    assert!(c.withdrawn >= 30, "{c:?}");
    l.q.take().unwrap().remove();
}
