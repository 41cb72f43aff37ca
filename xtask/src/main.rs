//! `cargo xtask`: placeholder while the task runner is written.
fn main() {}
