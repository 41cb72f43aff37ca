//! carpd, the CARP daemon. Not built yet: the daemon lands with its own issue (#4).
fn main() {
    eprintln!("carpd: the daemon is not implemented yet (issue #4); see README.md");
    std::process::exit(1);
}
