//! Placeholder for the sync protocol benchmark (filled in by the next commit).
fn main() {}
