//! carp-xdp's kernel side: the XDP program attached to every carpdev.
//!
//! On the BPF target this builds the object the controller loads; on the host the same code compiles
//! (helpers are never called there) so `cargo clippy --workspace` and `cargo test --workspace` cover it.
//!
//! Layout: one module per header (`eth`, `ipv4`, `ipv6`, `arp`, `carp`) and one per decision
//! (`advert` intake, `vrrp` intake for VRRP VRIDs, `responder` for ARP/NS, `vmac` filter, `balance` for carpnodes load balancing,
//! `flow` for the pfsync-style flow table);
//! `maps` holds the BTF maps and counters.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic adds on shared flow entries (`flow`): core's AtomicU64 has no fetch_add on the BPF target.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![cfg_attr(not(target_arch = "bpf"), allow(dead_code))]

mod advert;
mod arp;
mod balance;
mod carp;
mod eth;
mod flow;
mod ipv4;
mod ipv6;
mod maps;
mod packet;
mod program;
mod responder;
mod vmac;
mod vrrp;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
