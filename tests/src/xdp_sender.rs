//! A sender that hands a veth peer xdp_frames instead of skbs, for the balancing receive-cost bench and
//! its test. A tiny XDP program, assembled here from raw BPF instructions (it is test equipment, not
//! part of carp-ebpf), is run with BPF_PROG_TEST_RUN in live-frames mode (Linux >= 5.18) with the
//! sending veth as its ingress device: each run rewrites the frame's client address and answers XDP_TX,
//! which live-frames mode turns into a redirect out of that device (net/bpf/test_run.c), so the frame
//! reaches the peer through veth's ndo_xdp_xmit as an xdp_frame. The peer's native XDP program then
//! runs with no skb at all, as on a real NIC; without one, the peer needs NAPI (GRO on) to accept it.
//!
//! xdp-tools' xdp-trafficgen does the same, but the Debian 1.3.1 build fails to load on Linux 6.18
//! (it attaches to the `xdp_redirect_map_err` tracepoint, which is gone), hence this one.
use std::{
    io,
    os::fd::{AsFd, FromRawFd, OwnedFd},
};

/// Length of the frame: the 60-byte IPv4/UDP frame of the bench's trafgen configuration.
pub const FRAME_LEN: usize = 60;
/// Clients the sender cycles over: 10.8.c.d with c in 0..=3 and d in 1..=127, as trafgen's `dinc`s.
pub const CLIENTS: u32 = 4 * 127;
/// Frames per batch of the test run (the kernel's default; veth's NAPI budget is 64 too).
pub const BATCH: u32 = 64;

/// `BPF_PROG_LOAD` (enum bpf_cmd).
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TYPE_XDP` (enum bpf_prog_type).
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_FUNC_get_prandom_u32`.
const HELPER_GET_PRANDOM_U32: i32 = 7;
/// Offsets in the frame: IPv4 identification and the low 16 bits of the source address.
const IP_ID: i16 = 18;
const SRC_LOW: i16 = 28;

/// The `union bpf_attr` prefix BPF_PROG_LOAD reads (up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// One `struct bpf_insn`, as its 8 bytes in little-endian order.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst | (src << 4)) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// The program. r7 keeps the packet pointer across the helper call (r1-r5 are clobbered by calls).
///
/// ```text
///  0: r2 = *(u32 *)(r1 + 0)      data
///  1: r3 = *(u32 *)(r1 + 4)      data_end
///  2: r4 = r2
///  3: r4 += 60
///  4: if r4 > r3 goto 20         too short: drop
///  5: r7 = r2
///  6: call get_prandom_u32
///  7: r0 %= 508                  client index
///  8: r1 = r0
///  9: r1 /= 127                  third octet, 0..=3
/// 10: r0 %= 127
/// 11: r0 += 1                    fourth octet, 1..=127
/// 12: *(u8 *)(r7 + 28) = r1      source address low word w
/// 13: *(u8 *)(r7 + 29) = r0
/// 14: r1 ^= 0xff
/// 15: r0 ^= 0xff
/// 16: *(u8 *)(r7 + 18) = r1      IP id = !w: the header's ones' complement sum is unchanged
/// 17: *(u8 *)(r7 + 19) = r0
/// 18: r0 = XDP_TX
/// 19: exit
/// 20: r0 = XDP_DROP
/// 21: exit
/// ```
fn program() -> Vec<u64> {
    const LDX_W: u8 = 0x61;
    const MOV_X: u8 = 0xbf;
    const MOV_K: u8 = 0xb7;
    const ADD_K: u8 = 0x07;
    const JGT_X: u8 = 0x2d;
    const CALL: u8 = 0x85;
    const MOD_K: u8 = 0x97;
    const DIV_K: u8 = 0x37;
    const XOR_K: u8 = 0xa7;
    const STX_B: u8 = 0x73;
    const EXIT: u8 = 0x95;
    const XDP_DROP: i32 = 1;
    const XDP_TX: i32 = 3;
    vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(LDX_W, 3, 1, 4, 0),
        insn(MOV_X, 4, 2, 0, 0),
        insn(ADD_K, 4, 0, 0, FRAME_LEN as i32),
        insn(JGT_X, 4, 3, 15, 0),
        insn(MOV_X, 7, 2, 0, 0),
        insn(CALL, 0, 0, 0, HELPER_GET_PRANDOM_U32),
        insn(MOD_K, 0, 0, 0, CLIENTS as i32),
        insn(MOV_X, 1, 0, 0, 0),
        insn(DIV_K, 1, 0, 0, 127),
        insn(MOD_K, 0, 0, 0, 127),
        insn(ADD_K, 0, 0, 0, 1),
        insn(STX_B, 7, 1, SRC_LOW, 0),
        insn(STX_B, 7, 0, SRC_LOW + 1, 0),
        insn(XOR_K, 1, 0, 0, 0xff),
        insn(XOR_K, 0, 0, 0, 0xff),
        insn(STX_B, 7, 1, IP_ID, 0),
        insn(STX_B, 7, 0, IP_ID + 1, 0),
        insn(MOV_K, 0, 0, 0, XDP_TX),
        insn(EXIT, 0, 0, 0, 0),
        insn(MOV_K, 0, 0, 0, XDP_DROP),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// The frame template: Ethernet `src_mac` -> `dst_mac`, IPv4 10.8.0.0 -> 10.9.1.1, UDP 4000 -> 5000
/// with 18 zero bytes and no UDP checksum. The IP id is 0xffff so that the program's per-frame rewrite
/// (source low word w, id !w) keeps the header checksum computed here valid.
pub fn template(dst_mac: [u8; 6], src_mac: [u8; 6]) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14..34].copy_from_slice(&[
        0x45, 0, 0, 46, 0xff, 0xff, 0x40, 0, 64, 17, 0, 0, 10, 8, 0, 0, 10, 9, 1, 1,
    ]);
    let sum: u32 = f[14..34]
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let check = !(((folded & 0xffff) + (folded >> 16)) as u16);
    f[24..26].copy_from_slice(&check.to_be_bytes());
    f[34..42].copy_from_slice(&[0x0f, 0xa0, 0x13, 0x88, 0, 26, 0, 0]);
    f
}

/// The loaded sender program and the frame it sends.
pub struct XdpSender {
    prog: OwnedFd,
    frame: [u8; FRAME_LEN],
}

impl XdpSender {
    /// Loads the program; `frame` is normally [`template`]'s.
    pub fn load(frame: [u8; FRAME_LEN]) -> io::Result<Self> {
        let insns = program();
        let license = c"GPL";
        let mut log = vec![0u8; 64 * 1024];
        let mut name = [0u8; 16];
        name[..10].copy_from_slice(b"carp_xsend");
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            prog_name: name,
            ..Default::default()
        };
        // SAFETY: a correctly laid out bpf_attr prefix; insns, license and log outlive the call.
        let fd = match unsafe { carp::dataplane::sys_bpf(BPF_PROG_LOAD, &mut attr) } {
            Ok(fd) => fd,
            Err(err) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                return Err(io::Error::new(
                    err.kind(),
                    format!(
                        "BPF_PROG_LOAD of the sender: {err}\n{}",
                        String::from_utf8_lossy(&log[..end])
                    ),
                ));
            }
        };
        // SAFETY: the kernel returned a new fd that nothing else owns.
        let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Self { prog, frame })
    }

    /// Sends `frames` frames out of interface `ifindex` (of the calling thread's network namespace), in
    /// batches of [`BATCH`]; returns the kernel's mean wall time per frame in ns. Frames the peer
    /// refuses (down, or no NAPI) are dropped by veth and counted there, not reported here.
    pub fn send(&self, ifindex: u32, frames: u32) -> io::Result<u32> {
        carp::dataplane::reinject::run_live_repeat(
            self.prog.as_fd(),
            ifindex,
            &self.frame,
            frames,
            BATCH,
        )
    }
}

/// Pins the calling thread to `cpu`, so that the softirq work its sends trigger stays on that CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity(0) applies to this thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rewrite_keeps_the_ip_checksum_valid_for_every_client() {
        let t = template([0, 0, 0x5e, 0, 1, 2], [2, 0, 0, 0, 0, 1]);
        for i in 0..CLIENTS {
            let (c, d) = ((i / 127) as u8, (i % 127 + 1) as u8);
            let mut f = t;
            f[SRC_LOW as usize] = c;
            f[SRC_LOW as usize + 1] = d;
            f[IP_ID as usize] = !c;
            f[IP_ID as usize + 1] = !d;
            let sum: u32 = f[14..34]
                .chunks_exact(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum();
            let folded = (sum & 0xffff) + (sum >> 16);
            assert_eq!((folded & 0xffff) + (folded >> 16), 0xffff, "client {i}");
        }
    }
}
