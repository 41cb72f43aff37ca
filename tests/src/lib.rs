//! Helpers for the root-only integration tests: network-namespace labs and process management.

/// True when the tests run as root; under `CI=true` a non-root run is an error, not a skip.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: needs root and CI=true: refusing to skip");
        }
        eprintln!("{test}: skipped, needs root");
    }
    root
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
