//! Ethernet II header, and the 802.1Q (or 802.1ad) tag that marks a frame as another segment's.
//!
//! The program runs on the carpdev itself, which sees its own segment untagged (a VLAN carpdev gets
//! a program of its own and its frames without the tag). A tagged frame therefore belongs to a VLAN
//! on top of this carpdev: another segment, whose vhids and virtual MACs may be the same numbers as
//! ours. It is passed up untouched.
use crate::packet::{Truncated, be16, ptr_at};
use aya_ebpf::programs::XdpContext;
use carp_common::proto::{ETH_P_8021AD, ETH_P_8021Q};

/// Ethernet II header.
#[repr(C)]
pub struct EthHdr {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType (or TPID of a VLAN tag).
    pub ethertype: [u8; 2],
}

/// 802.1Q tag after the MACs.
#[repr(C)]
pub struct VlanTag {
    /// Priority, DEI and VLAN id.
    pub tci: [u8; 2],
    /// EtherType of the payload.
    pub ethertype: [u8; 2],
}

/// Result of L2 parsing: the payload's EtherType and where the payload starts. Only scalars, so it can
/// cross a BPF-to-BPF call without the verifier losing track of packet pointers.
#[derive(Clone, Copy)]
pub struct L2 {
    /// EtherType of the L3 payload.
    pub proto: u16,
    /// Offset of the L3 header.
    pub l3: usize,
    /// The frame carries a VLAN tag: another segment's (see the module doc).
    pub tagged: bool,
}

/// Parses Ethernet and at most one VLAN tag (`tagged`).
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<L2, Truncated> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked the bounds.
    let proto = be16(unsafe { (*eth).ethertype });
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let tag: *mut VlanTag = ptr_at(ctx, 14)?;
        // SAFETY: ptr_at checked the bounds.
        let inner = be16(unsafe { (*tag).ethertype });
        return Ok(L2 {
            proto: inner,
            l3: 18,
            tagged: true,
        });
    }
    Ok(L2 {
        proto,
        l3: 14,
        tagged: false,
    })
}

/// The Ethernet header of the frame.
#[inline(always)]
pub fn header(ctx: &XdpContext) -> Result<&'static mut EthHdr, Truncated> {
    // SAFETY: ptr_at checked the bounds; the struct is all bytes.
    ptr_at::<EthHdr>(ctx, 0).map(|p| unsafe { &mut *p })
}
