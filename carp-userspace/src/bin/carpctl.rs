//! carpctl, the CLI for carpd. Not built yet: it lands with the control-socket issue (#5).
fn main() {
    eprintln!("carpctl: not implemented yet (issue #5); see README.md");
    std::process::exit(1);
}
