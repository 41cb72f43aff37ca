//! `cargo xtask`: carp-xdp's task runner. It installs what a fresh machine lacks, runs the demo, every
//! test, the simulator, the labs and the benchmarks. It deliberately does not depend on carp-userspace:
//! that crate needs bpf-linker to build, and installing bpf-linker is this tool's first job.

mod demo;
mod setup;
mod util;

use anyhow::Result;
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
    /// Set up, then run every test: formatting, clippy, unit, property, simulator and root-only lab tests.
    Test {
        /// Skip `cargo fmt --check` and clippy (for quick local runs; CI runs them).
        #[arg(long)]
        no_lint: bool,
    },
    /// Set up, then run the benchmarks (needs root): XDP ns/packet against a trivial XDP_PASS program,
    /// written to target/bench/results.json (BENCHMARKS.md keeps the latest table).
    Bench,
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
        Command::Test { no_lint } => {
            setup::ensure_all()?;
            test(no_lint)
        }
        Command::Bench => {
            setup::ensure_all()?;
            bench()
        }
        Command::Sim { args } => sim(&args),
    }
}

fn cargo_sim(args: &[&str]) -> Result<()> {
    let mut full = vec![
        "run",
        "--quiet",
        "--release",
        "-p",
        "carp-userspace",
        "--bin",
        "carp-sim",
        "--",
    ];
    full.extend_from_slice(args);
    util::run("cargo", &full)
}

fn sim(args: &[String]) -> Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cargo_sim(&args)
}

fn bench() -> Result<()> {
    util::step(
        "XDP fast path through BPF_PROG_TEST_RUN (each case next to a trivial XDP_PASS program)",
    );
    util::run(
        "cargo",
        &[
            "run",
            "--quiet",
            "--release",
            "-p",
            "carp-tests",
            "--bin",
            "carp-bench",
            "--",
            "target/bench/results.json",
        ],
    )
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
    util::step("cargo test --workspace");
    util::run("cargo", &["test", "--workspace", "--no-fail-fast"])
}
