//! Bounds-checked access to the frame: every header read goes through `ptr_at`, which is the one place
//! the verifier sees the `data + off + len <= data_end` comparison.
use aya_ebpf::programs::XdpContext;

/// A frame that ended before the header we wanted (counted as hdrops where it matters).
#[derive(Clone, Copy)]
pub struct Truncated;

/// A pointer to a `T` at byte offset `off`, if the frame is long enough.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*mut T, Truncated> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return Err(Truncated);
    }
    Ok((start + off) as *mut T)
}

/// Reads a big-endian u16 from two bytes.
#[inline(always)]
pub fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Adds the big-endian 16-bit words of the frame's `len` bytes at `off` (at most `MAX_WORDS` words, the
/// verifier's loop bound) to a one's-complement accumulator; None if the frame ends first.
#[inline(always)]
pub fn csum_frame<const MAX_WORDS: usize>(
    ctx: &XdpContext,
    off: usize,
    len: usize,
    mut sum: u32,
) -> Option<u32> {
    let mut i = 0;
    while i < MAX_WORDS {
        if 2 * i + 2 > len {
            break;
        }
        let w = ptr_at::<[u8; 2]>(ctx, off + 2 * i).ok()?;
        // SAFETY: ptr_at checked the bounds.
        sum += u16::from_be_bytes(unsafe { *w }) as u32;
        i += 1;
    }
    Some(sum)
}

/// Folds a 32-bit one's-complement accumulator to 16 bits.
#[inline(always)]
pub fn csum_fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Adds the big-endian 16-bit words of `bytes` to a one's-complement accumulator.
#[inline(always)]
pub fn csum_add<const N: usize>(mut sum: u32, bytes: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    sum
}
