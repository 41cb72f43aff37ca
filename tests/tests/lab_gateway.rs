//! Labs beyond the plain pair: a split brain healed, and the product's gateway topology (carp0 outside,
//! carp1 inside, preempt on) where losing one link moves both carp interfaces to the other gateway through
//! the demote counter of group "carp", and its return moves them back. Real carpd processes; root only.
use carp_tests::{
    lab::{Daemon, Pair, VIP, VMAC1},
    require_root, sh,
};
use std::time::Duration;

/// Waits until `d` logs `needle` after byte `skip` of its log, or fails with the log.
fn expect(d: &Daemon, skip: usize, needle: &str, secs: u64) {
    assert!(
        d.wait_log_after(skip, needle, Duration::from_secs(secs)),
        "{}: no {needle:?} within {secs} s:\n{}",
        d.name,
        d.log()
    );
}

#[test]
fn split_brain_heals_to_exactly_one_master() {
    if !require_root("split_brain_heals_to_exactly_one_master") {
        return;
    }
    let pair = Pair::new("csb");
    let gw1 = pair.carpd(&pair.gw1, "gw1", &Pair::config(0));
    expect(&gw1, 0, "carp0 vhid 1: BACKUP -> MASTER", 8);
    let gw2 = pair.carpd(&pair.gw2, "gw2", &Pair::config(100));
    expect(&gw2, 0, "carp0 vhid 1: INIT -> BACKUP", 5);

    // Take gw2's port out of the bridge: its link stays up (no carrier loss), it just hears nobody.
    pair.sw.run("ip link set csb-p1 nomaster");
    expect(&gw2, 0, "carp0 vhid 1: BACKUP -> MASTER", 8);
    assert_eq!(
        gw1.carpd_state().as_deref(),
        Some("MASTER"),
        "split brain: both MASTER"
    );

    let skip1 = gw1.log().len();
    let skip2 = gw2.log().len();
    pair.sw.run("ip link set csb-p1 master br0");
    // The less preferred master yields as soon as it hears the other's advert.
    expect(&gw2, skip2, "carp0 vhid 1: MASTER -> BACKUP", 5);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !gw1.log()[skip1..].contains("MASTER ->"),
        "gw1 must stay MASTER:\n{}",
        gw1.log()
    );
    assert_eq!(gw1.carpd_state().as_deref(), Some("MASTER"));
    assert_eq!(gw2.carpd_state().as_deref(), Some("BACKUP"));
    pair.client.run("ip neigh flush dev eth0");
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
    assert_eq!(pair.client_vip_mac().as_deref(), Some(VMAC1));
}

/// carp0 on eth0 (outside, VIP 10.0.0.1) and carp1 on eth1 (inside, VIP 192.168.100.1), preempt on.
fn gateway_config(advskew: u8) -> String {
    format!(
        "[carp]\npreempt = true\n\n\
         [[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\npass = \"outside\"\n\
         advskew = {advskew}\naddresses = [\"{VIP}/24\"]\ngroups = [\"outside\"]\n\n\
         [[interface]]\nname = \"carp1\"\ncarpdev = \"eth1\"\nvhid = 2\npass = \"inside\"\n\
         advskew = {advskew}\naddresses = [\"192.168.100.1/24\"]\ngroups = [\"inside\"]\n"
    )
}

#[test]
fn gateway_both_carp_interfaces_fail_over_together_and_come_back() {
    if !require_root("gateway_both_carp_interfaces_fail_over_together_and_come_back") {
        return;
    }
    let pair = Pair::new("cgw");
    // The inside network: a second bridge and an eth1 on each gateway.
    pair.sw
        .run("ip link add br1 type bridge && ip link set br1 up");
    for (i, ns) in [&pair.gw1, &pair.gw2].into_iter().enumerate() {
        sh(&format!(
            "ip link add cgw-q{i} netns {} type veth peer name eth1 netns {}",
            pair.sw.name, ns.name
        ));
        pair.sw.run(&format!("ip link set cgw-q{i} master br1 up"));
        ns.run(&format!(
            "ip link set eth1 up && ip addr add 192.168.100.{}/24 dev eth1",
            11 + i
        ));
    }
    let gw1 = pair.carpd(&pair.gw1, "gw1", &gateway_config(0));
    expect(&gw1, 0, "carp0 vhid 1: BACKUP -> MASTER", 8);
    expect(&gw1, 0, "carp1 vhid 2: BACKUP -> MASTER", 8);
    let gw2 = pair.carpd(&pair.gw2, "gw2", &gateway_config(100));
    expect(&gw2, 0, "carp0 vhid 1: INIT -> BACKUP", 5);
    expect(&gw2, 0, "carp1 vhid 2: INIT -> BACKUP", 5);
    std::thread::sleep(Duration::from_secs(2));

    // gw1 loses its outside link: carp0 goes INIT and group "carp" is demoted, so carp1 on gw1
    // advertises demote 1 and gw2 takes carp1 too, not just carp0.
    let (skip1, skip2) = (gw1.log().len(), gw2.log().len());
    pair.sw.run("ip link set cgw-p0 down");
    expect(&gw1, skip1, "carp0 vhid 1: MASTER -> INIT", 5);
    expect(&gw2, skip2, "carp1 vhid 2: BACKUP -> MASTER", 6);
    expect(&gw2, skip2, "carp0 vhid 1: BACKUP -> MASTER", 8);
    expect(&gw1, skip1, "carp1 vhid 2: MASTER -> BACKUP", 5);

    // The link comes back: the demotion is lifted and, with preempt, gw1 takes both back.
    let (skip1, skip2) = (gw1.log().len(), gw2.log().len());
    pair.sw.run("ip link set cgw-p0 up");
    expect(&gw1, skip1, "carp0 vhid 1: INIT -> BACKUP", 5);
    expect(&gw1, skip1, "carp1 vhid 2: BACKUP -> MASTER", 6);
    expect(&gw1, skip1, "carp0 vhid 1: BACKUP -> MASTER", 8);
    expect(&gw2, skip2, "carp0 vhid 1: MASTER -> BACKUP", 5);
    expect(&gw2, skip2, "carp1 vhid 2: MASTER -> BACKUP", 5);
    assert!(pair.client_reaches_vip(Duration::from_secs(3)));
}

/// A node with the wrong passphrase on the segment: its adverts fail the HMAC check, the MASTER stays
/// MASTER, and the failure is logged once (rate-limited), not once per advert.
#[test]
fn wrong_password_adverts_are_logged_once_and_change_nothing() {
    if !require_root("wrong_password_adverts_are_logged_once_and_change_nothing") {
        return;
    }
    let pair = Pair::new("cwp");
    let gw1 = pair.carpd(&pair.gw1, "gw1", &Pair::config(0));
    expect(&gw1, 0, "carp0 vhid 1: BACKUP -> MASTER", 8);
    // The stranger cannot verify gw1 either, so it declares itself MASTER and advertises every second.
    let stranger = pair.carpd(
        &pair.gw2,
        "gw2",
        &Pair::config(100).replace("labpass", "wrongpass"),
    );
    expect(&stranger, 0, "carp0 vhid 1: BACKUP -> MASTER", 8);
    std::thread::sleep(Duration::from_secs(4));
    let log = gw1.log();
    assert_eq!(
        log.matches("fails HMAC").count(),
        1,
        "one line for many bad adverts:\n{log}"
    );
    assert!(!log.contains("MASTER -> "), "gw1 stayed MASTER:\n{log}");
}

/// `net.inet.carp.allow = 0` (config `allow = false`): the node accepts no advert, as OpenBSD does, so it
/// does not see the MASTER and takes over itself.
#[test]
fn allow_false_ignores_every_advert() {
    if !require_root("allow_false_ignores_every_advert") {
        return;
    }
    let pair = Pair::new("cal");
    let gw1 = pair.carpd(&pair.gw1, "gw1", &Pair::config(0));
    expect(&gw1, 0, "carp0 vhid 1: BACKUP -> MASTER", 8);
    let deaf = Pair::config(100).replace("preempt = false", "preempt = false\nallow = false");
    let gw2 = pair.carpd(&pair.gw2, "gw2", &deaf);
    expect(
        &gw2,
        0,
        "carp0 vhid 1: BACKUP -> MASTER (master down timer expired)",
        8,
    );
}

/// Adverts the XDP program drops (here: TTL 254, and a vhid nobody configured) are counted in the kernel
/// and reported by carpd in one rate-limited line per cause, never one per advert; the MASTER is unmoved.
#[test]
fn dataplane_drops_are_logged_once_per_cause() {
    if !require_root("dataplane_drops_are_logged_once_per_cause") {
        return;
    }
    use carp_tests::{frames, netns::PacketSocket};
    let pair = Pair::new("cdl");
    let gw1 = pair.carpd(&pair.gw1, "gw1", &Pair::config(0));
    expect(&gw1, 0, "carp0 vhid 1: BACKUP -> MASTER", 8);
    pair.client.in_ns(|| {
        let sock = PacketSocket::open("eth0", 100);
        let carp = frames::carp_header(0x21, 1, 0, 1, 0);
        let unknown = frames::carp_header(0x21, 9, 0, 1, 0);
        for _ in 0..200 {
            sock.send(&frames::advert_v4([10, 0, 0, 100], 1, 254, &carp, None));
            sock.send(&frames::advert_v4([10, 0, 0, 100], 9, 255, &unknown, None));
        }
    });
    expect(&gw1, 0, "(badttl)", 6);
    expect(&gw1, 0, "(badvhid)", 6);
    std::thread::sleep(Duration::from_secs(3));
    let log = gw1.log();
    assert_eq!(log.matches("(badttl)").count(), 1, "{log}");
    assert_eq!(log.matches("(badvhid)").count(), 1, "{log}");
    assert!(
        log.contains("advert(s): TTL or hop limit not 255 (badttl)"),
        "{log}"
    );
    assert!(!log.contains("MASTER -> "), "{log}");
}
