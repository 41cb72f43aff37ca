//! The XDP entry point (placeholder until the dataplane issue lands: passes every frame).
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// Entry point attached to a carpdev.
#[xdp]
pub fn carp_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
