//! `cargo xtask`: carp-xdp's task runner. It installs what a fresh machine lacks, runs the demo, every
//! test, the simulator, the labs and the benchmarks. It deliberately does not depend on carp-userspace:
//! that crate needs bpf-linker to build, and installing bpf-linker is this tool's first job.

mod demo;
mod package;
mod setup;
mod util;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// carp-xdp's task runner (run as `cargo xtask ...`).
#[derive(Parser)]
#[command(about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (Debian packages, bpf-linker 0.13.0 for LLVM 22, rust-src for nightly).
    /// Idempotent: prints what it checks and what it installs.
    Setup,
    /// Set up, then run the live demo (see README).
    Demo,
    /// Build the Debian package target/package/carp-xdp_<version>_<arch>.deb (only the build set-up:
    /// no test tools are installed).
    Package {
        /// Also run the package checks (root): contents, install and removal in a throwaway root,
        /// the installed carpd on the shipped example, systemd-analyze on the unit.
        #[arg(long)]
        check: bool,
    },
    /// Set up, then run every test: formatting, clippy, unit, property, simulator and root-only lab tests.
    Test {
        /// Skip `cargo fmt --check` and clippy (for quick local runs; CI runs them).
        #[arg(long)]
        no_lint: bool,
    },
    /// Set up, then run the benchmarks (needs root): XDP ns/packet against a trivial XDP_PASS program,
    /// written to target/bench/results.json, the receive cost per frame of the balancing filter on veth
    /// next to nftables jhash and xt_cluster (target/bench/balance-veth.json), the sync protocol (1M-flow
    /// bulk in memory and over UDP, replication lag) written to target/bench/sync.json, carpd's own bulk
    /// of 1M flows in the gateway lab (target/bench/sync-lab.json), conntrack replication against
    /// conntrackd (target/bench/conntrack.json), then the
    /// client-observed failover outage of carpd, ucarp and keepalived in the pair lab, written to
    /// target/bench/failover.json (BENCHMARKS.md keeps the latest tables).
    Bench {
        /// One repetition per failover scenario instead of three.
        #[arg(long)]
        quick: bool,
        /// Also leave carpd at advbase 0 idle for N minutes and count false failovers.
        #[arg(long, default_value_t = 0)]
        idle_minutes: u64,
    },
    /// Set up, then fuzz every parser (advert, config, ifconfig) for N seconds each with cargo-fuzz on
    /// nightly, starting from the seed corpora in fuzz/seeds. Crashes land in fuzz/artifacts/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Set up, then run a chaos test (needs root): three carpd gateways and a client pinging the VIP,
    /// with random SIGKILLs and restarts, link flaps, partitions and heals and demote changes; fails if
    /// there are ever two MASTERs (after a heal) or none for longer than master-down plus one interval,
    /// and prints a report with the longest client outage.
    Chaos {
        /// Minutes of faults.
        #[arg(long, default_value_t = 5)]
        minutes: u64,
        /// Seed of the fault sequence (default: random, printed for replay).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run a simulator scenario and print its timeline (`cargo xtask sim --list` lists them).
    Sim {
        /// Scenario name, or --list.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::ensure_all(),
        Command::Demo => {
            setup::ensure_all()?;
            demo()
        }
        Command::Package { check } => {
            setup::ensure_build()?;
            package::package(check)
        }
        Command::Test { no_lint } => {
            setup::ensure_all()?;
            test(no_lint)
        }
        Command::Bench {
            quick,
            idle_minutes,
        } => {
            setup::ensure_all()?;
            bench(quick, idle_minutes)
        }
        Command::Fuzz { seconds, targets } => {
            setup::ensure_all()?;
            fuzz(seconds, &targets)
        }
        Command::Chaos { minutes, seed } => {
            setup::ensure_all()?;
            chaos(minutes, seed)
        }
        Command::Sim { args } => sim(&args),
    }
}

/// `cargo run --quiet --release -p PACKAGE --bin BIN -- ARGS...`.
/// Builds the release carpd that a lab bench runs next to it, so it is the current one.
fn build_release_carpd() -> Result<()> {
    util::run(
        "cargo",
        &[
            "build",
            "--quiet",
            "--release",
            "-p",
            "carp-userspace",
            "--bin",
            "carpd",
        ],
    )
}

fn run_release(package: &str, bin: &str, args: &[&str]) -> Result<()> {
    let mut full = vec![
        "run",
        "--quiet",
        "--release",
        "-p",
        package,
        "--bin",
        bin,
        "--",
    ];
    full.extend_from_slice(args);
    util::run("cargo", &full)
}

fn cargo_sim(args: &[&str]) -> Result<()> {
    run_release("carp-sim", "carp-sim", args)
}

fn sim(args: &[String]) -> Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cargo_sim(&args)
}

fn bench(quick: bool, idle_minutes: u64) -> Result<()> {
    util::step(
        "XDP fast path through BPF_PROG_TEST_RUN (each case next to a trivial XDP_PASS program)",
    );
    run_release("carp-tests", "carp-bench", &["target/bench/results.json"])?;
    util::step(
        "balancing receive cost on veth (a trafgen and an xdp_frame sender): carp-xdp generic/native, nft jhash, xt_cluster",
    );
    run_release(
        "carp-tests",
        "carp-balance-bench",
        &["target/bench/balance-veth.json"],
    )?;
    util::step(
        "sync: 1,000,000-flow bulk in memory and over the UDP transport on lo, replication lag at 50,000 new flows/s",
    );
    run_release(
        "carp-userspace",
        "carp-sync-bench",
        &[
            "--flows",
            "1000000",
            "--rounds",
            if quick { "1" } else { "3" },
            "--udp",
            "--rate",
            "50000",
            "--json-out",
            "target/bench/sync.json",
        ],
    )?;
    // The sync link at the usual MTU, then with jumbo frames (carpd fills the syncdev's MTU).
    for (mtu, json) in [
        ("1500", "target/bench/sync-lab.json"),
        ("9000", "target/bench/sync-lab-jumbo.json"),
    ] {
        util::step(&format!(
            "sync: carpd's own bulk transfer of 1,000,000 flows between two carpd in the gateway lab (sync MTU {mtu})"
        ));
        run_release(
            "carp-tests",
            "carp-sync-lab-bench",
            &[
                "--flows",
                "1000000",
                "--rounds",
                if quick { "1" } else { "3" },
                "--sync-mtu",
                mtu,
                "--json-out",
                json,
            ],
        )?;
    }
    util::step(
        "conntrack: 1,000,000-entry bulk into the peer's kernel table and replication lag at 20,000 new \
         connections/s, carpd against conntrackd (FTFW) over the same sync link",
    );
    build_release_carpd()?;
    run_release(
        "carp-tests",
        "carp-conntrack-bench",
        &[
            "--entries",
            if quick { "100000" } else { "1000000" },
            "--rate",
            "20000",
            "--lag-seconds",
            if quick { "3" } else { "10" },
            "--json-out",
            "target/bench/conntrack.json",
        ],
    )?;
    util::step(
        "failover: client-observed outage of carpd, ucarp and keepalived in the pair lab (probe every 5 ms)",
    );
    build_release_carpd()?;
    let idle = idle_minutes.to_string();
    let mut args = vec!["target/bench/failover.json", "--idle-minutes", &idle];
    if quick {
        args.push("--quick");
    }
    run_release("carp-tests", "carp-failover-bench", &args)
}

/// The cargo-fuzz targets in fuzz/fuzz_targets.
const FUZZ_TARGETS: [&str; 4] = ["advert", "config", "ifconfig", "sync"];

fn fuzz(seconds: u64, only: &[String]) -> Result<()> {
    if util::output("cargo", &["fuzz", "--version"]).is_none() {
        util::step("cargo-fuzz: installing");
        util::run("cargo", &["install", "cargo-fuzz", "--locked"])?;
    }
    let targets: Vec<&str> = if only.is_empty() {
        FUZZ_TARGETS.to_vec()
    } else {
        only.iter().map(String::as_str).collect()
    };
    for target in targets {
        anyhow::ensure!(
            FUZZ_TARGETS.contains(&target),
            "unknown fuzz target {target:?}: the targets are {}",
            FUZZ_TARGETS.join(", ")
        );
        util::step(&format!("fuzzing {target} for {seconds} s"));
        let corpus = format!("corpus/{target}");
        let seeds = format!("seeds/{target}");
        std::fs::create_dir_all(format!("fuzz/{corpus}"))?;
        let max_time = format!("-max_total_time={seconds}");
        let status = std::process::Command::new("cargo")
            .current_dir("fuzz")
            .args([
                "+nightly", "fuzz", "run", target, &corpus, &seeds, "--", &max_time,
            ])
            .status()?;
        anyhow::ensure!(
            status.success(),
            "fuzz target {target} found a crash: the input is in fuzz/artifacts/{target}/; copy it to \
             fuzz/regressions/{target}/ so carp-userspace/tests/fuzz_regressions.rs keeps it"
        );
    }
    Ok(())
}

fn chaos(minutes: u64, seed: Option<u64>) -> Result<()> {
    let minutes = minutes.to_string();
    let seed = seed.map(|s| s.to_string());
    let mut args = vec![
        "run",
        "--quiet",
        "-p",
        "carp-tests",
        "--bin",
        "carp-chaos",
        "--",
        "--minutes",
        &minutes,
    ];
    if let Some(seed) = &seed {
        args.extend(["--seed", seed]);
    }
    util::run("cargo", &args)
}

fn demo() -> Result<()> {
    demo::run()
}

fn test(no_lint: bool) -> Result<()> {
    if !no_lint {
        util::step("cargo fmt --check");
        util::run("cargo", &["fmt", "--all", "--", "--check"])?;
        util::step("cargo clippy --workspace --all-targets -- -D warnings");
        util::run(
            "cargo",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )?;
    }
    // The packaging checks run first so that cargo test's summary stays the last line; a failure
    // here is reported after the tests have run too.
    let packaging = packaging_checks();
    util::step("cargo test --workspace");
    // Root-only tests that skip (not root, CI unset) pass in cargo's count; they record their names
    // here so the closing line says so.
    let skipped_log =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/skipped-root-tests.txt");
    let _ = std::fs::remove_file(&skipped_log);
    let status = std::process::Command::new("cargo")
        .args(["test", "--workspace", "--no-fail-fast"])
        .env("CARP_SKIPPED_LOG", &skipped_log)
        .status()
        .context("could not start `cargo test`")?;
    if let Err(e) = &packaging {
        eprintln!("packaging checks failed: {e:#}");
    }
    let skipped = std::fs::read_to_string(&skipped_log).unwrap_or_default();
    println!("{}", closing_line(status.success(), &skipped));
    if !status.success() {
        bail!("`cargo test --workspace` failed ({status})");
    }
    packaging
}

/// The last line `cargo xtask test` prints: the verdict, and every root-only test that skipped.
fn closing_line(ok: bool, skipped: &str) -> String {
    let names: std::collections::BTreeSet<&str> =
        skipped.lines().filter(|l| !l.is_empty()).collect();
    let verdict = if ok { "tests passed" } else { "tests FAILED" };
    if names.is_empty() {
        format!("{verdict}; no root-only test skipped")
    } else {
        format!(
            "{verdict}; {} root-only tests SKIPPED (not root; CI=true fails them instead): {}",
            names.len(),
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    }
}

/// The package (built, listed, installed and removed in a throwaway root), the unit (verify and the
/// security rating), the alert rules (`promtool test rules`) and the dashboard's JSON.
fn packaging_checks() -> Result<()> {
    util::step("package: build and check (cargo xtask package --check)");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut passed = 0;
    let deb = package::build()?;
    if util::output("id", &["-u"]).is_some_and(|u| u.trim() == "0") {
        passed += package::check(&deb)?;
    } else if std::env::var_os("CI").is_some_and(|v| v == "true") {
        anyhow::bail!(
            "the package checks need root (dpkg --root) and CI=true: failing instead of skipping"
        );
    } else {
        println!("package checks SKIPPED: not root (dpkg --root needs it)");
    }
    util::step("systemd-analyze security --offline=true packaging/carpd.service (<= 3.5)");
    let exposure = package::unit_exposure(&root.join("packaging/carpd.service"))?;
    anyhow::ensure!(
        exposure <= 3.5,
        "carpd.service's systemd-analyze security exposure is {exposure}, above 3.5"
    );
    println!("exposure {exposure}");
    passed += 1;
    util::step("promtool check rules / test rules packaging/prometheus-alerts.yml");
    let packaging = root.join("packaging");
    let status = std::process::Command::new("promtool")
        .current_dir(&packaging)
        .args(["check", "rules", "prometheus-alerts.yml"])
        .status()?;
    anyhow::ensure!(status.success(), "promtool check rules failed");
    let status = std::process::Command::new("promtool")
        .current_dir(&packaging)
        .args(["test", "rules", "prometheus-alerts.test.yml"])
        .status()?;
    anyhow::ensure!(status.success(), "promtool test rules failed");
    passed += 2;
    println!("packaging: {passed} passed, 0 failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closing line names every skipped root-only test once (issue #16 item 18).
    #[test]
    fn closing_line_names_skipped_root_tests() {
        assert_eq!(
            closing_line(true, ""),
            "tests passed; no root-only test skipped"
        );
        let l = closing_line(true, "lab_a\nxdp_b\nlab_a\n");
        assert!(
            l.contains("2 root-only tests SKIPPED") && l.ends_with("lab_a, xdp_b"),
            "{l}"
        );
        assert!(closing_line(false, "x\n").starts_with("tests FAILED"));
    }

    /// CI runs the root-only tests for real: `.ci/run` sets CI=true itself before the tests.
    #[test]
    fn ci_run_sets_ci_true() {
        let run = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/run"))
            .expect(".ci/run");
        let set = run.find("export CI=true").expect(".ci/run exports CI=true");
        assert!(set < run.find("cargo xtask test").expect("runs the tests"));
    }
}
