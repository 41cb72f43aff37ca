//! carp-sim: runs one of the built-in deterministic CARP scenarios (`carp_sim`) and prints its
//! timeline and a summary. `cargo xtask sim SCENARIO` wraps this binary.

use std::process::ExitCode;

use clap::Parser;

use carp_sim::{Sim, scenario, scenarios};

/// Command line of carp-sim.
#[derive(Parser, Debug)]
#[command(name = "carp-sim", about = "Deterministic CARP election simulator")]
struct Args {
    /// List the built-in scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Override the scenario's RNG seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print only the summary, not the timeline.
    #[arg(long, short)]
    quiet: bool,
    /// The scenario to run (see --list).
    scenario: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for s in scenarios() {
            println!("{:<18} {}", s.name, s.description);
        }
        return ExitCode::SUCCESS;
    }
    let Some(name) = args.scenario else {
        eprintln!("carp-sim: name a scenario (carp-sim --list shows them)");
        return ExitCode::from(2);
    };
    let Some(mut sc) = scenario(&name) else {
        eprintln!("carp-sim: no scenario named {name:?} (carp-sim --list shows them)");
        return ExitCode::from(2);
    };
    if let Some(seed) = args.seed {
        sc.seed = seed;
    }
    println!("scenario {}: {}", sc.name, sc.description);
    let sim = Sim::run_scenario(sc);
    if !args.quiet {
        print!("{}", sim.timeline());
    }
    print!("{}", sim.summary());
    ExitCode::SUCCESS
}
