//! carpd, the CARP daemon: reads the TOML config, attaches the XDP dataplane to each carpdev, runs the
//! election for every carp interface and moves the virtual addresses. `carp::daemon` does the work; this
//! file is only the command line (design §2).
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use carp::{config::Config, dataplane::AttachMode};
use clap::{CommandFactory, Parser};

/// CARP (OpenBSD's Common Address Redundancy Protocol) for Linux, with an XDP dataplane.
///
/// Each [[interface]] of the config becomes a carp interface: a macvlan named after it (e.g. carp0) on
/// its carpdev, carrying the virtual MAC 00:00:5e:00:01:<vhid>. carpd sends adverts, elects a MASTER
/// with its peers (OpenBSD, FreeBSD, ucarp or another carpd), puts the virtual addresses on the carp
/// interface while MASTER and keeps it down while BACKUP. The XDP program on the carpdev consumes the
/// adverts, answers ARP/ND for the virtual addresses only while MASTER, and counts (bpftool map dump
/// pinned <bpffs>/<carpdev>/carp_stats).
///
/// Signals: SIGTERM/SIGINT = planned stop (bow-out advert, keep serving until the new master is heard,
/// then remove the addresses and detach); SIGHUP = reload the config (unchanged carp interfaces keep
/// their state, advbase/advskew changes apply in place, other changes re-create that interface only).
/// After a crash the next start cleans up and adopts the pinned dataplane. State changes are logged one
/// line each to stderr: `carp0 vhid 1: BACKUP -> MASTER (master down timer expired)`.
///
/// carpd sets net.ipv4.conf.<carpdev>.arp_announce = 2, so replies from a virtual address never teach
/// clients the carpdev's real MAC. One carpd per carpdev and network namespace (a lock under /run/carp).
///
/// Example config (/etc/carp/carp.toml):
///
///   [carp]
///   preempt = false
///
///   [[interface]]
///   name = "carp0"
///   carpdev = "eth0"
///   vhid = 1
///   pass = "secret"
///   advskew = 100
///   addresses = ["10.0.0.1/24"]
///
/// Check it first: carpd -c /etc/carp/carp.toml --check
///
/// Once it runs: carpctl status, carpctl counters --watch 1, carpctl ifconfig carp0 advskew 200
/// (see carpctl --help); metrics with --metrics 127.0.0.1:9273.
#[derive(Parser, Debug)]
#[command(name = "carpd", version, verbatim_doc_comment)]
struct Cli {
    /// The config file (TOML, see above).
    #[arg(short = 'c', long = "config", value_name = "FILE", default_value = carp::config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Control socket for carpctl (root only, mode 0600).
    #[arg(long, value_name = "PATH", default_value = carp::control::DEFAULT_SOCKET)]
    control_socket: PathBuf,
    /// bpffs directory for the pinned maps and XDP link (<DIR>/<carpdev>/carp_stats, ...).
    #[arg(long, value_name = "DIR", default_value = carp::dataplane::DEFAULT_BPFFS)]
    bpffs: PathBuf,
    /// XDP attach mode: auto picks native where the driver transmits XDP_TX frames, generic otherwise.
    #[arg(long, value_name = "auto|native|skb", default_value = "auto")]
    xdp_mode: AttachMode,
    /// Log filter (tracing EnvFilter syntax), e.g. info, debug, carp=debug. Overrides RUST_LOG.
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Serve OpenMetrics (Prometheus) at http://ADDR/metrics, e.g. 127.0.0.1:9273: per-vhid state,
    /// advbase/advskew/demote, transitions, last master, the XDP counters and group demotion.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Validate the config, print it normalised (passphrases redacted) and exit: 0 if valid, 1 if not.
    #[arg(long)]
    check: bool,
    /// Print a carp.toml equivalent to the VRRP instances of a keepalived.conf (includes followed)
    /// and exit; every setting that could not be carried over is listed on stderr with the reason.
    #[arg(long, value_name = "FILE")]
    import_keepalived: Option<PathBuf>,
    /// Print a completion script for SHELL and exit (packaging).
    #[arg(long, value_name = "SHELL", hide = true)]
    generate_completions: Option<clap_complete::Shell>,
    /// Write the man pages carpd.8 and carp.toml.5 into DIR and exit (packaging).
    #[arg(long, value_name = "DIR", hide = true)]
    generate_man: Option<PathBuf>,
}

/// `--generate-man DIR`: carpd.8 from the clap definition (so the page never drifts from --help) with
/// the SIGNALS, FILES and EXIT STATUS sections, and carp.toml.5, the config reference.
fn write_man(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut buf = Vec::new();
    carp::manpage::command_page(Cli::command(), "8", carp::manpage::CARPD_SECTIONS, &mut buf)?;
    std::fs::write(dir.join("carpd.8"), buf)?;
    std::fs::write(
        dir.join("carp.toml.5"),
        carp::manpage::config_page(env!("CARGO_PKG_VERSION")),
    )
}

/// `--import-keepalived FILE`: the carp.toml on stdout, the unmapped settings on stderr; the output is
/// validated with carpd's own config parser so a bad conversion never reaches a deployment.
fn import_keepalived(file: &std::path::Path) -> ExitCode {
    let import = match carp::config::keepalived::import(file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("carpd: --import-keepalived: {e}");
            return ExitCode::FAILURE;
        }
    };
    for u in &import.unmapped {
        eprintln!(
            "carpd: {}:{}: {}: not carried over: {}",
            u.file.display(),
            u.line,
            u.setting,
            u.why
        );
    }
    if let Err(e) = Config::parse(std::path::Path::new("imported carp.toml"), &import.toml) {
        eprintln!("carpd: --import-keepalived: the converted config does not validate: {e}");
        eprint!("{}", import.toml);
        return ExitCode::FAILURE;
    }
    print!("{}", import.toml);
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.generate_completions {
        clap_complete::generate(shell, &mut Cli::command(), "carpd", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = &cli.generate_man {
        if let Err(e) = write_man(dir) {
            eprintln!("carpd: writing the man page to {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    if let Some(file) = &cli.import_keepalived {
        return import_keepalived(file);
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("carpd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        for w in &config.warnings {
            eprintln!("carpd: warning: {}", w.with_secrets());
        }
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    carp::logfmt::init(&filter);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let options = carp::daemon::Options {
        config_path: cli.config,
        bpffs: cli.bpffs,
        xdp_mode: cli.xdp_mode,
        control_socket: cli.control_socket,
        metrics: cli.metrics,
    };
    match carp::daemon::run(config, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
