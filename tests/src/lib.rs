//! Helpers for the root-only integration tests: privilege checks, bpffs, frame builders that are written
//! independently of the product's own wire module (so a shared mistake cannot hide), and network
//! namespaces.

pub mod chaos;
pub mod frames;
pub mod lab;
pub mod netns;
pub mod xdp_oracle;
pub mod xdp_sender;

use std::path::{Path, PathBuf};

/// True when the tests run as root; under `CI=true` a non-root run is an error, not a skip. A skipped
/// test's name is appended to the file `$CARP_SKIPPED_LOG` names (`cargo xtask test` sets it and
/// names the skipped tests in its closing line, where cargo's own summary counts them as passed).
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let log = std::env::var_os("CARP_SKIPPED_LOG").map(PathBuf::from);
    may_run(root, ci, log.as_deref(), test)
}

/// `require_root`'s decision, its inputs passed in (so it is tested without changing users).
pub fn may_run(root: bool, ci: bool, skipped_log: Option<&Path>, test: &str) -> bool {
    if !root {
        assert!(!ci, "{test}: needs root and CI=true: refusing to skip");
        eprintln!("{test}: skipped, needs root");
        if let Some(path) = skipped_log {
            use std::io::Write;
            // One short line per append: concurrent tests do not interleave within a line.
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{test}");
            }
        }
    }
    root
}

/// Mounts a bpffs at /sys/fs/bpf if none is there, and returns a fresh directory in it for one test.
pub fn bpffs_dir(test: &str) -> PathBuf {
    let root = Path::new("/sys/fs/bpf");
    let is_bpffs = std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
        })
        .unwrap_or(false);
    if !is_bpffs {
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting bpffs at /sys/fs/bpf failed");
    }
    let dir = root.join(format!("carp-test-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bpffs test dir");
    dir
}

/// Runs a command and panics with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs one frame through an XDP program with BPF_PROG_TEST_RUN; returns the verdict and the frame as the
/// program left it (grown or shrunk by at most 256 bytes).
pub fn run_xdp(prog: &aya::programs::Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    use aya::programs::{TestRun, TestRunOptions};
    let mut out = vec![0u8; frame.len() + 256];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

/// Writes a secret file (a pass or sync key file) private to root (mode 0600), as carpd insists.
pub fn write_secret(path: &Path, secret: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, secret).expect("write the secret file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the dataplane's leases and flow timestamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A skip is recorded for the closing line; under CI=true it is a failure instead (issue #16
    /// item 18).
    #[test]
    fn a_skipped_root_test_is_recorded_and_ci_refuses_to_skip() {
        let log = std::env::temp_dir().join(format!("carp-skipped-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        assert!(!may_run(false, false, Some(&log), "some_root_test"));
        assert!(may_run(true, false, Some(&log), "another"));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "some_root_test\n");
        let _ = std::fs::remove_file(&log);
        let ci = std::panic::catch_unwind(|| may_run(false, true, None, "x"));
        assert!(ci.is_err(), "CI=true must not skip");
    }
}
