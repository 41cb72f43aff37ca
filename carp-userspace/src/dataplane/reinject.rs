//! Re-injection of deferred first packets (issue #7, spec §8 "Deferral"). XDP cannot hold a packet, so
//! with `defer` the dataplane hands a new flow's first frame to carpd and drops it; once a peer has the
//! flow (or after the 20 ms bound) carpd puts the frame back into the carpdev's receive path with
//! BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, Linux >= 5.18), running the
//! object's trivial `carp_pass` program: an XDP_PASS frame of a live-frames run becomes an skb handed
//! to the stack as if received on `ctx_in.ingress_ifindex` (net/bpf/test_run.c, xdp_recv_frames).
//!
//! What this module owns: the raw bpf(2) call (aya 0.14's `TestRunOptions` has neither `flags` nor
//! `ctx_in`) and a handle on a loaded `carp_pass`. In generic XDP mode the new skb passes the
//! carpdev's XDP hook once more; the flow exists by then, so it is not deferred again.
use super::{DataplaneError, PASS_PROGRAM_NAME, XDP_OBJECT, load_with_pins, pin_dir};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Program, Xdp},
};
use carp_common::proto;
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::Path,
};

/// `BPF_PROG_TEST_RUN` (include/uapi/linux/bpf.h, enum bpf_cmd).
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`: XDP verdicts of the run are carried out (PASS into the stack).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// The running kernel's release (`uname -r`), or "unknown".
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether a kernel release string is at least `major.minor` (distribution suffixes ignored).
/// Unparsable releases count as new enough: the first re-injection then fails loudly (counted and
/// logged) rather than switching deferral off on a guess.
pub fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(ma)), Some(Ok(mi))) => (ma, mi) >= (major, minor),
        _ => true,
    }
}

/// Whether this kernel can re-inject frames: BPF_F_TEST_XDP_LIVE_FRAMES arrived in Linux 5.18.
pub fn live_frames_supported() -> bool {
    release_at_least(&kernel_release(), 5, 18)
}

/// `union bpf_attr`, the `test` member used by BPF_PROG_TEST_RUN.
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// `struct xdp_md`, the context handed in: only `data_end` and `ingress_ifindex` are set.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Runs the XDP program `prog` once on `frame` in live-frames mode, as if `frame` was received on
/// interface `ifindex` (of the caller's network namespace): with a program answering XDP_PASS the
/// frame enters the stack on that interface. Errors are the kernel's (EINVAL before 5.18).
pub fn run_live(prog: BorrowedFd<'_>, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    run_live_repeat(prog, ifindex, frame, 1, 0).map(|_| ())
}

/// Like [`run_live`], `repeat` times, in batches of `batch_size` frames (0: the kernel's default, 64;
/// at most 256), for carp-tests' veth sender. Each run gets a page of the kernel's page pool that was
/// filled with `frame` when first allocated; a recycled page keeps what earlier runs wrote into it.
/// Returns the kernel's `duration`: the mean wall time per frame in ns, including the softirq work
/// the batches' verdicts trigger on this CPU.
pub fn run_live_repeat(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    frame: &[u8],
    repeat: u32,
    batch_size: u32,
) -> io::Result<u32> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..Default::default()
    };
    let mut attr = TestAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: (&raw const ctx) as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..Default::default()
    };
    // SAFETY: the attr is a correctly laid out bpf_attr prefix whose pointers (frame, ctx) are alive
    // for the call; live-frames mode writes no output buffer, only retval and duration into the attr.
    unsafe { super::sys_bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok(attr.duration)
}

/// A loaded `carp_pass`, to re-inject deferred frames with.
pub struct Reinjector {
    ebpf: Ebpf,
}

impl Reinjector {
    /// Loads the object's `carp_pass` with private maps (the program never touches them; for tests).
    pub fn load() -> Result<Self, DataplaneError> {
        Self::with(EbpfLoader::new().load(XDP_OBJECT)?)
    }

    /// Loads the object's `carp_pass` reusing a carpdev's pinned maps, so no second flow table is
    /// allocated.
    pub fn open_pinned(bpffs: &Path, carpdev: &str) -> Result<Self, DataplaneError> {
        Self::with(load_with_pins(&pin_dir(bpffs, carpdev))?)
    }

    fn with(mut ebpf: Ebpf) -> Result<Self, DataplaneError> {
        let program: &mut Xdp = ebpf
            .program_mut(PASS_PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram(PASS_PROGRAM_NAME))?
            .try_into()
            .map_err(|source| DataplaneError::Program {
                carpdev: "reinject".into(),
                source,
            })?;
        program.load().map_err(|source| DataplaneError::Program {
            carpdev: "reinject".into(),
            source,
        })?;
        Ok(Self { ebpf })
    }

    /// Puts `frame` into the receive path of interface `ifindex` (see the module doc). Callers with
    /// frames from a same-host sender complete their checksum first (`complete_partial_checksum`).
    pub fn inject(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        let Some(Program::Xdp(p)) = self.ebpf.program(PASS_PROGRAM_NAME) else {
            return Err(io::Error::other("carp_pass is not loaded"));
        };
        let fd = p.fd().map_err(io::Error::other)?;
        run_live(fd.as_fd(), ifindex, frame)
    }
}

/// The 16-bit ones' complement sum of `data` added to `sum` (not folded).
fn ones_sum(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds a ones' complement sum to 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Completes the TCP or UDP checksum of a frame that was captured with an offloaded
/// (CHECKSUM_PARTIAL) one: a sender on the same host (veth, containers) leaves only the pseudo-header
/// sum in the field, and the skb's metadata, which says so, is not part of the copy XDP took. Such a
/// frame re-injected as-is is dropped by its receiver as corrupt. Only a field holding exactly the
/// pseudo-header sum is completed; a valid checksum or any other (corrupt) value is left alone.
/// Returns true if it changed the frame.
pub fn complete_partial_checksum(frame: &mut [u8]) -> bool {
    let mut l3 = 14;
    let mut ethertype = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if ethertype == Some(0x8100) {
        ethertype = frame.get(16..18).map(|b| u16::from_be_bytes([b[0], b[1]]));
        l3 = 18;
    }
    // (proto, L4 offset, L4 length, pseudo-header sum without the length and protocol)
    let (proto, l4, len, pseudo) = match ethertype {
        Some(0x0800) => {
            let Some(ip) = frame.get(l3..l3 + 20) else {
                return false;
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            if ihl < 20 || tot < ihl || frag != 0 {
                return false;
            }
            (ip[9], l3 + ihl, tot - ihl, ones_sum(0, &ip[12..20]))
        }
        Some(0x86dd) => {
            let Some(ip) = frame.get(l3..l3 + 40) else {
                return false;
            };
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            (ip[6], l3 + 40, plen, ones_sum(0, &ip[8..40]))
        }
        _ => return false,
    };
    let field = match proto {
        proto::IPPROTO_TCP => 16,
        proto::IPPROTO_UDP => 6,
        _ => return false,
    };
    let Some(seg) = frame.get_mut(l4..l4 + len) else {
        return false;
    };
    if seg.len() < field + 2 {
        return false;
    }
    let pseudo = pseudo + u32::from(proto) + len as u32;
    let check = u16::from_be_bytes([seg[field], seg[field + 1]]);
    if proto == proto::IPPROTO_UDP && check == 0 {
        // No UDP checksum (IPv4).
        return false;
    }
    if fold(ones_sum(pseudo, seg)) == 0xffff {
        return false;
    }
    if check != fold(pseudo) {
        return false;
    }
    seg[field] = 0;
    seg[field + 1] = 0;
    let mut full = !fold(ones_sum(pseudo, seg));
    if proto == proto::IPPROTO_UDP && full == 0 {
        full = 0xffff;
    }
    seg[field..field + 2].copy_from_slice(&full.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 UDP frame 10.0.0.1:1000 -> 10.0.0.2:2000 with `payload`, checksum field `check`.
    fn udp4(payload: &[u8], check: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let tot = (28 + payload.len()) as u16;
        f.extend([
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f[16..18].copy_from_slice(&tot.to_be_bytes());
        f.extend(1000u16.to_be_bytes());
        f.extend(2000u16.to_be_bytes());
        f.extend(((8 + payload.len()) as u16).to_be_bytes());
        f.extend(check.to_be_bytes());
        f.extend(payload);
        f
    }

    #[test]
    fn a_partial_udp_checksum_is_completed_and_others_are_left_alone() {
        let payload = b"hello, deferred";
        let len = 8 + payload.len() as u32;
        let pseudo = ones_sum(0, &[10, 0, 0, 1, 10, 0, 0, 2]) + 17 + len;
        // What a CHECKSUM_PARTIAL sender leaves in the field.
        let mut f = udp4(payload, fold(pseudo));
        assert!(complete_partial_checksum(&mut f));
        assert_eq!(fold(ones_sum(pseudo, &f[34..])), 0xffff, "now valid");
        // Valid already: unchanged.
        let before = f.clone();
        assert!(!complete_partial_checksum(&mut f));
        assert_eq!(f, before);
        // Corrupt (neither valid nor partial): unchanged.
        let mut bad = udp4(payload, 0x1234);
        assert!(!complete_partial_checksum(&mut bad));
        // No checksum: unchanged.
        let mut none = udp4(payload, 0);
        assert!(!complete_partial_checksum(&mut none));
    }

    #[test]
    fn live_frames_need_linux_5_18() {
        assert!(!release_at_least("5.15.0-91-generic", 5, 18));
        assert!(!release_at_least("4.19.304", 5, 18));
        assert!(release_at_least("5.18.0", 5, 18));
        assert!(release_at_least("6.1.0-13-amd64", 5, 18));
        assert!(release_at_least("6.18.44-fc-v595", 5, 18));
        assert!(
            release_at_least("weird", 5, 18),
            "unparsable: not switched off on a guess"
        );
        // The running kernel's release is read, not guessed.
        assert_ne!(kernel_release(), "unknown");
    }

    #[test]
    fn a_partial_tcp_checksum_over_ipv6_is_completed() {
        let (src, dst) = (
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfd; 16],
        );
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x02;
        tcp.extend(b"odd");
        let pseudo = ones_sum(ones_sum(0, &src), &dst) + 6 + tcp.len() as u32;
        tcp[16..18].copy_from_slice(&fold(pseudo).to_be_bytes());
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        f.extend([0x60, 0, 0, 0]);
        f.extend((tcp.len() as u16).to_be_bytes());
        f.extend([6, 64]);
        f.extend(src);
        f.extend(dst);
        f.extend(&tcp);
        assert!(complete_partial_checksum(&mut f));
        assert_eq!(fold(ones_sum(pseudo, &f[54..])), 0xffff, "now valid");
        assert!(!complete_partial_checksum(&mut f));
    }
}
