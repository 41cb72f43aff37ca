//! `carp::ifreq` reads interfaces of the namespace the calling thread is in, as carpd does when it is
//! started with `nsenter --net`, where `/sys/class/net` still shows the host's devices. Needs root.
use carp_tests::{netns::Netns, require_root};

#[test]
fn interface_ioctls_see_the_threads_own_namespace() {
    if !require_root("interface_ioctls_see_the_threads_own_namespace") {
        return;
    }
    let ns = Netns::new("carpt-ifreq");
    ns.run(
        "ip link add syncd0 type veth peer name syncd1 && ip link set syncd0 mtu 9000 address 02:00:5e:12:34:56 up",
    );
    // sysfs, as this process mounted it, does not have the namespace's device.
    assert!(!std::path::Path::new("/sys/class/net/syncd0").exists());
    let (mtu, mac, flags) = ns
        .spawn_in(|| {
            (
                carp::ifreq::mtu("syncd0").expect("MTU"),
                carp::ifreq::hw_addr("syncd0").expect("MAC"),
                carp::ifreq::flags("syncd0").expect("flags"),
            )
        })
        .join()
        .expect("thread in the namespace");
    assert_eq!(mtu, 9000);
    assert_eq!(mac, [0x02, 0x00, 0x5e, 0x12, 0x34, 0x56]);
    assert_ne!(flags & libc::IFF_UP, 0);
    // The host's namespace has no such device.
    assert!(carp::ifreq::mtu("syncd0").is_err());
}
