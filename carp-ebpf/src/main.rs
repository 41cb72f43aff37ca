//! carp-xdp's kernel side. On the BPF target this is the XDP object; on the host it compiles to an empty
//! binary so `cargo test --workspace` and `cargo clippy --workspace` cover the crate.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
