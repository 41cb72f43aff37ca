//! Interface ioctls (SIOCGIFHWADDR, SIOCGIFMTU, SIOCGIFFLAGS, SIOCADDMULTI/SIOCDELMULTI) on a
//! throwaway socket. They act on the process's own network namespace, which `/sys/class/net` may not
//! show: a process entered into a namespace with `nsenter --net` (or `setns`) still sees the sysfs of
//! the namespace it was mounted in.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// Runs `request` on interface `name` with an ifreq that `fill` prepared; returns what the kernel
/// wrote back.
fn ioctl(
    name: &str,
    request: libc::c_ulong,
    fill: impl FnOnce(&mut libc::ifreq),
) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is not 1-15 bytes"),
        ));
    }
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid start.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    fill(&mut req);
    // SAFETY: every request used here reads ifr_name (and what `fill` set) and writes at most the
    // ifr_ifru union of this live ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req)
}

/// The interface's MAC address.
pub fn hw_addr(name: &str) -> io::Result<[u8; 6]> {
    let req = ioctl(name, libc::SIOCGIFHWADDR, |_| {})?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// The interface's MTU.
pub fn mtu(name: &str) -> io::Result<u32> {
    let req = ioctl(name, libc::SIOCGIFMTU, |_| {})?;
    // SAFETY: SIOCGIFMTU filled the mtu member.
    Ok(unsafe { req.ifr_ifru.ifru_mtu }.max(0) as u32)
}

/// The interface's flags (IFF_UP, IFF_RUNNING, ...).
pub fn flags(name: &str) -> io::Result<i32> {
    let req = ioctl(name, libc::SIOCGIFFLAGS, |_| {})?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    Ok(i32::from(unsafe { req.ifr_ifru.ifru_flags }))
}

/// Adds (SIOCADDMULTI) or removes (SIOCDELMULTI) a multicast MAC in the interface's multicast list.
pub fn multicast_mac(name: &str, mac: [u8; 6], add: bool) -> io::Result<()> {
    let request = if add {
        libc::SIOCADDMULTI
    } else {
        libc::SIOCDELMULTI
    };
    ioctl(name, request, |req| {
        // SAFETY: writing the hwaddr member of the union the kernel then reads.
        unsafe {
            req.ifr_ifru.ifru_hwaddr.sa_family = libc::AF_UNSPEC as u16;
            for (d, m) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
                *d = m as libc::c_char;
            }
        }
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_is_read_and_bad_names_are_refused() {
        assert_eq!(hw_addr("lo").expect("lo's MAC"), [0; 6]);
        assert!(mtu("lo").expect("lo's MTU") >= 1500);
        assert_ne!(flags("lo").expect("lo's flags") & libc::IFF_LOOPBACK, 0);
        assert_eq!(
            mtu("no-such-dev0").map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENODEV))
        );
        assert_eq!(
            mtu("a-name-far-too-long").map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidInput)
        );
        assert_eq!(
            mtu("").map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidInput)
        );
    }
}
