//! Small process helpers: print what runs, fail with the command line that failed.
use anyhow::{Context, Result, bail};
use std::process::Command;

/// Prints a step header the operator can follow.
pub fn step(what: &str) {
    println!("==> {what}");
}

/// Runs a command with inherited stdio; an error names the command.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("could not start `{program}`"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs a command and returns its stdout, or None if it could not run or failed.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
