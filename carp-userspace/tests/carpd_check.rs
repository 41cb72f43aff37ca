//! `carpd --check` as an operator runs it: the normalised config on stdout and exit 0, or one
//! `file:line: interface: key = value: reason` line on stderr and exit 1, with nothing started.
use std::process::Command;

fn check(config: &str) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!(
        "carpd-check-{}-{}",
        std::process::id(),
        config.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("carp.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_carpd"))
        .args(["-c", path.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).replace(dir.to_str().unwrap(), "DIR"),
    )
}

#[test]
fn check_prints_the_normalised_config() {
    let (code, out, err) = check(
        "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\npass = \"s3cret\"\naddresses = [\"10.0.0.1/24\"]\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("advbase = 1"), "{out}");
    assert!(out.contains("advskew = 0"), "{out}");
    assert!(out.contains("pass = \"<redacted>\""), "{out}");
    assert!(!out.contains("s3cret"));
}

#[test]
fn check_names_file_line_interface_and_key() {
    let (code, out, err) = check(
        "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\nvhid = 1\naddresses = [\"10.0.0.1/24\"]\nadvskew = 255\n",
    );
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(
        err.trim(),
        "carpd: DIR/carp.toml:6: interface carp0: advskew = 255: out of range 0..=254"
    );
}

#[test]
fn help_teaches() {
    let out = Command::new(env!("CARGO_BIN_EXE_carpd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--check",
        "--bpffs",
        "--xdp-mode",
        "--metrics",
        "carpctl",
        "SIGTERM",
        "[[interface]]",
    ] {
        assert!(
            help.contains(needle),
            "{needle} missing from --help:\n{help}"
        );
    }
}
