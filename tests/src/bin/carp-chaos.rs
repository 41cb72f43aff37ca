//! `carp-chaos`: the chaos run of issue #8 (see `carp_tests::chaos`), run by `cargo xtask chaos`. Needs
//! root; builds its own namespaces and removes them. Exit status 0 when both invariants held, 1 if not.
use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

/// Three carpd gateways, a client probing the VIP, random faults; checks that there is never more than
/// one MASTER (outside partitions) or no MASTER for longer than master-down plus one advert interval.
#[derive(Parser)]
#[command(about)]
struct Cli {
    /// Minutes of faults.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Seed of the fault sequence (default: random; printed so a failure can be replayed).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !carp_tests::require_root("carp-chaos") {
        return ExitCode::FAILURE;
    }
    let seed = cli.seed.unwrap_or_else(rand::random);
    println!(
        "chaos: {} minute(s), seed {seed} (replay with --seed {seed})",
        cli.minutes
    );
    let report = carp_tests::chaos::run(&carp_tests::chaos::Options {
        duration: Duration::from_secs(cli.minutes * 60),
        seed,
        prefix: "chaos".into(),
    });
    print!("{}", report.render());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
