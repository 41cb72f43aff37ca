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
use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::Path,
};

/// `BPF_PROG_TEST_RUN` (include/uapi/linux/bpf.h, enum bpf_cmd).
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`: XDP verdicts of the run are carried out (PASS into the stack).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

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
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..Default::default()
    };
    let attr = TestAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: (&raw const ctx) as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..Default::default()
    };
    // SAFETY: the attr is a correctly laid out bpf_attr prefix whose pointers (frame, ctx) are alive
    // for the call; live-frames mode writes no output buffer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw const attr,
            size_of::<TestAttr>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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

    /// Puts `frame` into the receive path of interface `ifindex` (see the module doc).
    pub fn inject(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        let Some(Program::Xdp(p)) = self.ebpf.program(PASS_PROGRAM_NAME) else {
            return Err(io::Error::other("carp_pass is not loaded"));
        };
        let fd = p.fd().map_err(io::Error::other)?;
        run_live(fd.as_fd(), ifindex, frame)
    }
}
