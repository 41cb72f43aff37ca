//! Types shared by the XDP programs (carp-ebpf) and the controller (carp-userspace).
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers so the same bytes mean the same thing on
//! both sides of a BPF map. Protocol constants live here too so the kernel parser and the userspace
//! parser cannot drift apart.
#![no_std]

pub mod maps;
pub mod proto;
pub mod vrrp;
