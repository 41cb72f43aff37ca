//! Set-up from nothing: a fresh machine has the Rust toolchains, gcc and Python. Two sets, kept apart:
//! what building carp-xdp and its package needs (`ensure_build`: LLVM 22, bpf-linker 0.13.0 against it,
//! rust-src for the installed nightly, dpkg-dev) and, on top, what only the tests need (`ensure_all`:
//! the interop peers, traffic tools and checkers the labs run). Neither is what carpd needs at run
//! time: that is the package's Depends (`package.rs`), a C library and nothing else. Every step checks
//! first, so a second run installs nothing.
use crate::util::{output, run, step};
use anyhow::{Result, bail};
use std::path::PathBuf;

/// Debian packages the build and the package need: LLVM 22 for bpf-linker, dpkg-dev for
/// dpkg-shlibdeps (the package's Depends) and strip.
const BUILD_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "dpkg-dev", "binutils"];

/// Debian packages only the tests need: the tools and interop peers the labs run, and the checkers
/// (promtool for the alert rules and the metrics, systemd-analyze for the unit).
const PACKAGES: &[&str] = &[
    "prometheus",
    "systemd",
    "bpftool",
    "iproute2",
    "ucarp",
    "keepalived",
    "nftables",
    "iptables",
    "tcpdump",
    "iperf3",
    "iputils-ping",
    "netsniff-ng",
    "ethtool",
    "conntrack",
    "conntrackd",
    "frr",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";

/// Installs what building and packaging need and checks the toolchain fits together.
pub fn ensure_build() -> Result<()> {
    apt_packages("build", BUILD_PACKAGES)?;
    rust_src()?;
    bpf_linker()?;
    llvm_matches()
}

/// Installs whatever the build and the tests need.
pub fn ensure_all() -> Result<()> {
    ensure_build()?;
    apt_packages("test", PACKAGES)?;
    step("set-up complete");
    Ok(())
}

fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

fn apt_packages(set: &str, packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        step(&format!("Debian packages ({set}): all present"));
        return Ok(());
    }
    step(&format!(
        "Debian packages ({set}): installing {}",
        missing.join(" ")
    ));
    if !is_root() {
        bail!(
            "installing Debian packages needs root: run `sudo apt-get install {}` or run this as root",
            missing.join(" ")
        );
    }
    run("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    // SAFETY of env: a non-interactive install must never stop at a debconf prompt.
    let status = std::process::Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", missing.join(" "));
    }
    Ok(())
}

fn rust_src() -> Result<()> {
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        step("rust-src for nightly: present");
        return Ok(());
    }
    step("rust-src for nightly: installing");
    run(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin").join(name)
}

fn bpf_linker() -> Result<()> {
    let bin = cargo_bin("bpf-linker");
    let version = output(bin.to_str().unwrap_or("bpf-linker"), &["--version"]).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        step(&format!("bpf-linker {BPF_LINKER_VERSION}: present"));
        return Ok(());
    }
    step(&format!(
        "bpf-linker {BPF_LINKER_VERSION}: building against LLVM {LLVM_MAJOR} (about a minute)"
    ));
    let llvm = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    let path = format!("{llvm}/bin:{}", std::env::var("PATH").unwrap_or_default());
    let status = std::process::Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM_MAJOR}"),
        ])
        .env("LLVM_PREFIX", &llvm)
        .env("PATH", path)
        .status()?;
    if !status.success() {
        bail!("cargo install bpf-linker failed ({status}); is llvm-{LLVM_MAJOR}-dev installed?");
    }
    Ok(())
}

fn llvm_matches() -> Result<()> {
    let vv = output("rustc", &["+nightly", "-vV"]).unwrap_or_default();
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .unwrap_or("?")
        .to_owned();
    if major != LLVM_MAJOR {
        bail!(
            "nightly rustc uses LLVM {major} but bpf-linker is built for LLVM {LLVM_MAJOR}: the eBPF \
             object would not link. Use the nightly that ships LLVM {LLVM_MAJOR} (1.97) instead of \
             updating it, or rebuild bpf-linker for LLVM {major}."
        );
    }
    step(&format!("nightly LLVM {major} matches bpf-linker"));
    Ok(())
}
