//! Network namespaces for labs: created with iproute2, removed on drop, entered with `nsenter` (not `ip
//! netns exec`, which remounts /sys and hides the bpffs) or, for in-process work, by a thread that
//! `setns`es itself.
use crate::sh;
use std::os::fd::AsRawFd;

/// A named network namespace, deleted on drop.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates (or re-creates) a namespace with loopback up. Its name is `name` prefixed with
    /// `$CARP_LAB_TAG` when set, so that two checkouts can run their labs on one machine at once.
    pub fn new(name: &str) -> Self {
        let name = &format!(
            "{}{name}",
            std::env::var("CARP_LAB_TAG").unwrap_or_default()
        );
        // A leftover from a killed run would make `ip netns add` fail; usually there is none.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        sh(&format!("ip netns add {name}"));
        let ns = Self { name: name.into() };
        ns.run("ip link set lo up");
        ns
    }

    /// Runs a shell command inside the namespace (bpffs stays visible).
    pub fn run(&self, cmd: &str) -> String {
        sh(&format!(
            "nsenter --net=/run/netns/{} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        ))
    }

    /// Runs `f` on a thread that has entered the namespace, and returns its result.
    pub fn in_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in(f).join().expect("netns thread")
    }

    /// Starts `f` on a new thread that has entered the namespace.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns on this thread only; the fd is valid for the call.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A raw AF_PACKET socket bound to one interface, for sending and receiving whole frames.
pub struct PacketSocket {
    fd: i32,
}

impl PacketSocket {
    /// Opens a socket on `ifname` receiving every protocol, with a receive timeout.
    pub fn open(ifname: &str, timeout_ms: u64) -> Self {
        let cname = std::ffi::CString::new(ifname).expect("ifname");
        // SAFETY: plain syscalls with valid arguments.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            assert!(fd >= 0, "AF_PACKET socket");
            let ifindex = libc::if_nametoindex(cname.as_ptr());
            assert!(ifindex != 0, "no interface {ifname}");
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = ifindex as i32;
            let rc = libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(rc, 0, "bind AF_PACKET");
            let tv = libc::timeval {
                tv_sec: (timeout_ms / 1000) as i64,
                tv_usec: ((timeout_ms % 1000) * 1000) as i64,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            );
            Self { fd }
        }
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::send(self.fd, frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n as usize, frame.len(), "send frame");
    }

    /// Receives frames until `pred` accepts one or the timeout passes.
    pub fn recv_until(
        &self,
        deadline: std::time::Duration,
        pred: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let start = std::time::Instant::now();
        let mut buf = vec![0u8; 2048];
        while start.elapsed() < deadline {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 && pred(&buf[..n as usize]) {
                return Some(buf[..n as usize].to_vec());
            }
        }
        None
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: fd is ours.
        unsafe { libc::close(self.fd) };
    }
}
