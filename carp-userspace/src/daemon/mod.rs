//! The carpd daemon: drives the sans-IO engine with real time, the XDP dataplane and the network.
use std::path::PathBuf;

use crate::{config::Config, dataplane::AttachMode};

/// How the daemon was started (the command line minus the config).
#[derive(Debug, Clone)]
pub struct Options {
    /// The config file (re-read on SIGHUP).
    pub config_path: PathBuf,
    /// bpffs directory for pins.
    pub bpffs: PathBuf,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
    /// Control socket path (not served yet).
    pub control_socket: PathBuf,
}

/// Runs the daemon until a planned stop.
pub fn run(_config: Config, _options: Options) -> anyhow::Result<()> {
    anyhow::bail!("the daemon loop is not implemented yet")
}
