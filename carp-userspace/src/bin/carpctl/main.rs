//! carpctl, the command line for a running carpd (design §2). It parses and checks the operator's
//! input (so a typo is reported precisely and never reaches the daemon), sends one request over the
//! control socket (`carp::control`), and prints the answer as a table or as JSON. Exit codes: 0 ok,
//! 1 refused or failed with a one-line reason, 2 usage or a value out of range, 3 carpd not running
//! (as `systemctl is-active` has it).
//!
//! The argument checks and their translation into requests are `args`; this file holds the clap
//! definition, the request/answer exchange and the printing.

mod args;

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use carp::{
    config::ifconfig::parse_ifconfig_args,
    control::{
        self, CountersReport, Request, Response, SYSCTLS, StatusReport, parse_sysctl_value,
        render::{counters_table, groups_table, ifconfig_show, status_table},
        unknown_sysctl,
    },
};
use clap::{CommandFactory, Parser, Subcommand};

use args::{ifconfig_request, parse_demote, parse_settings};

/// How long carpctl waits for carpd's answer.
const TIMEOUT: Duration = Duration::from_secs(10);

const EXAMPLES: &str = "\
Examples:
  carpctl status                          every carp interface, its state and its groups
  carpctl status --json                   the same for scripts (fields: see design §2)
  carpctl counters --watch 1              XDP and election counters, refreshed every second
  carpctl set carp0 advskew 200           make this node less preferred (next advert carries it)
  carpctl set carp0 state backup          hand MASTER over to a peer now
  carpctl demote carp +1                  raise group carp's demote counter by one
  carpctl sysctl net.inet.carp.preempt=1  let a more preferred backup take over
  carpctl ifconfig carp0 advskew 254      OpenBSD ifconfig syntax
  carpctl ifconfig -g carp carpdemote 50  demote a whole group (maintenance)
  carpctl ifconfig carp0 down             bow out: the peer takes over at once

Runtime changes last until carpd restarts or reloads its config (systemctl reload carpd):
make them permanent in /etc/carp/carp.toml.";

/// Inspect and steer a running carpd (CARP for Linux with an XDP dataplane).
///
/// carpctl talks to carpd over its control socket (root only). It shows the state of every carp
/// interface, the counters of the XDP dataplane, and changes settings at runtime: advbase/advskew,
/// forced state, passphrase, up/down, group demotion and the net.inet.carp sysctls, either with its
/// own commands or with OpenBSD's ifconfig(8) carp syntax. A change takes effect with the next
/// advert, and carpd logs it.
#[derive(Parser, Debug)]
#[command(name = "carpctl", version, after_help = EXAMPLES, arg_required_else_help = true)]
struct Cli {
    /// carpd's control socket.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET, global = true)]
    control_socket: PathBuf,
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL", hide = true)]
    generate_completions: Option<clap_complete::Shell>,
    /// Write man pages (carpctl.1, carpctl-<command>.1) into DIR and exit.
    #[arg(long, value_name = "DIR", hide = true)]
    generate_man: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show every carp interface (state, advbase, advskew, demote, addresses) and every group.
    #[command(
        after_help = "Example:\n  carpctl status --json | jq '.interfaces[] | {name, state}'"
    )]
    Status {
        /// JSON instead of a table: preempt, interfaces[], groups[] (design §2).
        #[arg(long)]
        json: bool,
    },
    /// Show the per-vhid counters: XDP (carp_stats, summed over CPUs) and the election's.
    #[command(after_help = "Example:\n  carpctl counters --watch 1")]
    Counters {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Refresh every SECS seconds in place until interrupted.
        #[arg(long, value_name = "SECS")]
        watch: Option<f64>,
    },
    /// Change runtime settings of a carp interface: advbase N, advskew N, state master|backup,
    /// pass X (or `pass -` to read it from stdin, off the process list), up, down.
    ///
    /// Several settings may be given at once; they are checked together and applied together, or
    /// none is. `down` on a MASTER sends a bow-out advert, so a backup takes over at once.
    #[command(
        after_help = "Examples:\n  carpctl set carp0 advbase 1 advskew 100\n  \
                            carpctl set carp0 state master\n  carpctl set carp0 down"
    )]
    Set {
        /// The carp interface, e.g. carp0.
        carpif: String,
        /// KEY VALUE pairs (advbase, advskew, state, pass) and the words up, down.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "KEY VALUE")]
        settings: Vec<String>,
    },
    /// Show (no value), set (N) or adjust (+N, -N) an interface group's demote counter.
    ///
    /// Every member of the group advertises the sum of its groups' counters; a node with a higher
    /// demote count yields MASTER to one with a lower count.
    #[command(after_help = "Examples:\n  carpctl demote carp 50\n  carpctl demote carp -50")]
    Demote {
        /// The group (\"carp\" holds every carp interface).
        group: String,
        /// N (0..=255), +N or -N.
        #[arg(allow_hyphen_values = true, value_name = "N|+N|-N")]
        value: Option<String>,
    },
    /// Show every interface group and its demote counter.
    Groups {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read or write net.inet.carp.preempt, net.inet.carp.allow or net.inet.carp.log.
    #[command(after_help = "Examples:\n  carpctl sysctl net.inet.carp.preempt\n  \
                            carpctl sysctl net.inet.carp.preempt=1")]
    Sysctl {
        /// NAME or NAME=VALUE.
        #[arg(value_name = "NAME[=VALUE]")]
        setting: String,
    },
    /// OpenBSD ifconfig(8) carp syntax: `IF [options]` or `-g GROUP [-]carpdemote [N]`.
    ///
    /// Runtime options: advbase, advskew, pass, state, up, down. Without options, shows the
    /// interface the way ifconfig does. Settings that define the interface (vhid, carpdev,
    /// addresses, ...) belong in the config file.
    #[command(after_help = "Examples:\n  carpctl ifconfig carp0 advskew 254\n  \
                            carpctl ifconfig -g test carpdemote 50\n  carpctl ifconfig carp0 down")]
    Ifconfig {
        /// The ifconfig arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Flow replication ([pfsync]): peer, bulk transfer, demotion, protocol and dataplane counters.
    Sync {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The dataplane's flow table: local and learned flows, TCP state, packets and bytes. Printed as
    /// carpd streams it (in the table's order, not sorted), so a table of any size lists.
    #[command(
        after_help = "Examples:\n  carpctl flows --proto tcp --port 443 --limit 20\n  carpctl flows --learned --addr 10.0.0.100 --json"
    )]
    Flows {
        /// JSON instead of a table: {"flows": [...]}.
        #[arg(long)]
        json: bool,
        /// List at most N flows.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Only this protocol: tcp, udp, icmp, icmp6 or a number.
        #[arg(long, value_name = "PROTO")]
        proto: Option<String>,
        /// Only flows with this address at either end.
        #[arg(long, value_name = "IP")]
        addr: Option<std::net::IpAddr>,
        /// Only flows with this port at either end.
        #[arg(long, value_name = "PORT")]
        port: Option<u16>,
        /// Only flows learned from a sync peer.
        #[arg(long, conflicts_with = "local")]
        learned: bool,
        /// Only flows created here.
        #[arg(long)]
        local: bool,
    },
    /// Re-execute carpd in place without a failover (same as SIGUSR2): MASTERs stay MASTER. carpd
    /// runs the binary at the path it was started from, so after an upgrade the new version runs.
    Restart,
    /// Stream state transitions and demote changes as they happen (like `ip monitor`), until
    /// interrupted or carpd stops.
    #[command(
        after_help = "Example:\n  carpctl monitor --json | jq -c 'select(.event == \"transition\")'"
    )]
    Monitor {
        /// One JSON object per line: {"event":"transition",time,interface,vhid,from,to,reason} or
        /// {"event":"demote",time,group,old,new}.
        #[arg(long)]
        json: bool,
    },
    /// Print the metrics (the text the metrics endpoint serves), without an HTTP listener.
    Metrics,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.generate_completions {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "carpctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = &cli.generate_man {
        return match write_man(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("writing man pages to {}: {e}", dir.display())),
        };
    }
    let Some(command) = cli.command else {
        let _ = Cli::command().print_help();
        return ExitCode::from(2);
    };
    match run(&cli.control_socket, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Refused(e)) => fail(&e),
        Err(Fail::Usage(e)) => {
            eprintln!("carpctl: {e}");
            ExitCode::from(2)
        }
        Err(Fail::NotRunning(e)) => {
            eprintln!("carpctl: {e}");
            ExitCode::from(3)
        }
    }
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("carpctl: {reason}");
    ExitCode::FAILURE
}

/// Why a command failed, which decides the exit code.
enum Fail {
    /// Bad usage or a value out of range, found before carpd was asked (exit 2).
    Usage(String),
    /// carpd refused or the request failed (exit 1).
    Refused(String),
    /// carpd is not running (exit 3).
    NotRunning(String),
}

/// carpctl's own checks of the operator's input return plain strings: those are usage errors.
impl From<String> for Fail {
    fn from(e: String) -> Fail {
        Fail::Usage(e)
    }
}

impl From<control::ClientError> for Fail {
    fn from(e: control::ClientError) -> Fail {
        match e {
            control::ClientError::NotRunning(_) => Fail::NotRunning(e.to_string()),
            e => Fail::Refused(e.to_string()),
        }
    }
}

/// carpctl.1 and one page per subcommand (carpctl-status.1, ...).
fn write_man(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut buf = Vec::new();
    carp::manpage::command_page(cmd.clone(), "1", carp::manpage::CARPCTL_SECTIONS, &mut buf)?;
    std::fs::write(dir.join("carpctl.1"), buf)?;
    for sub in cmd.get_subcommands() {
        // clap names need a &'static str; leaking a dozen short strings in a one-shot generator is fine.
        let name: &'static str = Box::leak(format!("carpctl-{}", sub.get_name()).into_boxed_str());
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name)).render(&mut buf)?;
        std::fs::write(dir.join(format!("{name}.1")), buf)?;
    }
    Ok(())
}

fn call(socket: &Path, request: &Request) -> Result<Response, Fail> {
    match control::call(socket, request, TIMEOUT)? {
        Response::Error(e) => Err(Fail::Refused(e)),
        r => Ok(r),
    }
}

fn unexpected(r: &Response) -> Fail {
    Fail::Refused(format!("carpd sent an unexpected answer: {r:?}"))
}

fn run(socket: &Path, command: Cmd) -> Result<(), Fail> {
    match command {
        Cmd::Status { json } => {
            let status = status(socket)?;
            if json {
                print_json(&status);
            } else {
                print!("{}", status_table(&status));
            }
        }
        Cmd::Counters { json, watch } => match watch {
            None => {
                let c = counters(socket)?;
                if json {
                    print_json(&c);
                } else {
                    print!("{}", counters_table(&c));
                }
            }
            Some(secs) => {
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(Fail::Usage(format!(
                        "--watch {secs}: give a number of seconds above 0"
                    )));
                }
                watch_counters(socket, json, Duration::from_secs_f64(secs))?;
            }
        },
        Cmd::Set { carpif, settings } => {
            let changes = parse_settings(&settings)?;
            done(call(
                socket,
                &Request::Set {
                    iface: carpif,
                    changes,
                },
            )?)?;
        }
        Cmd::Demote { group, value } => {
            let change = value.as_deref().map(parse_demote).transpose()?;
            match call(socket, &Request::Demote { group, change })? {
                Response::Groups(g) => print!("{}", groups_table(&g)),
                r => return Err(unexpected(&r)),
            }
        }
        Cmd::Groups { json } => match call(socket, &Request::Groups)? {
            Response::Groups(g) if json => print_json(&g),
            Response::Groups(g) => print!("{}", groups_table(&g)),
            r => return Err(unexpected(&r)),
        },
        Cmd::Sysctl { setting } => {
            let (name, value) = match setting.split_once('=') {
                Some((n, v)) => (n.trim().to_string(), Some(v.trim().to_string())),
                None => (setting.trim().to_string(), None),
            };
            if !SYSCTLS.contains(&name.as_str()) {
                return Err(Fail::Usage(unknown_sysctl(&name)));
            }
            if let Some(v) = &value {
                parse_sysctl_value(&name, v)?;
            }
            match call(socket, &Request::Sysctl { name, value })? {
                Response::Sysctl { name, value } => println!("{name}={value}"),
                r => return Err(unexpected(&r)),
            }
        }
        Cmd::Ifconfig { args } => {
            let cmd = parse_ifconfig_args(&args).map_err(|e| format!("ifconfig: {e}"))?;
            match ifconfig_request(cmd)? {
                Some(request) => match call(socket, &request)? {
                    Response::Groups(g) => print!("{}", groups_table(&g)),
                    r => done(r)?,
                },
                None => {
                    let status = status(socket)?;
                    print!(
                        "{}",
                        ifconfig_show(&status, &args[0]).map_err(Fail::Refused)?
                    );
                }
            }
        }
        Cmd::Sync { json } => match call(socket, &Request::Sync)? {
            Response::Sync(r) if json => print_json(&r),
            Response::Sync(r) => print!("{}", carp::control::render::sync_text(&r)),
            r => return Err(unexpected(&r)),
        },
        Cmd::Flows {
            json,
            limit,
            proto,
            addr,
            port,
            learned,
            local,
        } => {
            let query = carp::control::report::FlowQuery {
                limit,
                proto,
                addr,
                port,
                learned: (learned || local).then_some(learned),
            };
            flows(socket, &query, json)?
        }
        Cmd::Restart => done(call(socket, &Request::Restart)?)?,
        Cmd::Monitor { json } => {
            control::monitor(socket, |ev| {
                let line = if json {
                    serde_json::to_string(&ev).expect("events serialise")
                } else {
                    ev.line()
                };
                let mut out = std::io::stdout().lock();
                // A closed pipe (`carpctl monitor | head`) ends the stream.
                writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
            })?;
        }
        Cmd::Metrics => match call(socket, &Request::Metrics)? {
            Response::Metrics(text) => print!("{text}"),
            r => return Err(unexpected(&r)),
        },
    }
    Ok(())
}

/// `carpctl flows`: prints each page as it arrives (JSON as one `{"flows": [...]}` document).
fn flows(socket: &Path, query: &carp::control::report::FlowQuery, json: bool) -> Result<(), Fail> {
    use carp::control::render::{flow_line, flows_header};
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    let mut failed = None;
    let mut ended = false;
    if json {
        let _ = write!(out, "{{\n  \"flows\": [");
    } else {
        let _ = write!(out, "{}", flows_header());
    }
    control::stream(
        socket,
        &Request::Flows(query.clone()),
        TIMEOUT,
        |r| match r {
            Response::FlowsPage(rows) => {
                for f in &rows {
                    if json {
                        let row = serde_json::to_string(f).expect("rows serialise");
                        let _ = write!(out, "{}\n    {row}", if first { "" } else { "," });
                    } else {
                        let _ = write!(out, "{}", flow_line(f));
                    }
                    first = false;
                }
                true
            }
            Response::FlowsEnd { .. } => {
                ended = true;
                false
            }
            Response::Error(e) => {
                failed = Some(Fail::Refused(e));
                false
            }
            r => {
                failed = Some(unexpected(&r));
                false
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e);
    }
    if !ended {
        return Err(Fail::Refused("carpd ended the flow listing early".into()));
    }
    if json {
        let _ = writeln!(out, "{}]\n}}", if first { "" } else { "\n  " });
    }
    out.flush()
        .map_err(|e| Fail::Refused(format!("writing the listing: {e}")))
}

fn done(r: Response) -> Result<(), Fail> {
    match r {
        Response::Done(lines) => {
            for l in lines {
                println!("{l}");
            }
            Ok(())
        }
        r => Err(unexpected(&r)),
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("reports serialise")
    );
}

fn status(socket: &Path) -> Result<StatusReport, Fail> {
    match call(socket, &Request::Status)? {
        Response::Status(s) => Ok(s),
        r => Err(unexpected(&r)),
    }
}

fn counters(socket: &Path) -> Result<CountersReport, Fail> {
    match call(socket, &Request::Counters)? {
        Response::Counters(c) => Ok(c),
        r => Err(unexpected(&r)),
    }
}

fn watch_counters(socket: &Path, json: bool, every: Duration) -> Result<(), Fail> {
    let tty = std::io::stdout().is_terminal();
    loop {
        let c = counters(socket)?;
        let body = if json {
            serde_json::to_string(&c).expect("reports serialise") + "\n"
        } else {
            counters_table(&c)
        };
        let mut out = std::io::stdout().lock();
        // On a terminal, redraw in place; in a pipe, one block per refresh.
        let _ = if tty {
            write!(
                out,
                "\x1b[H\x1b[2J(every {:.1} s, Ctrl-C to stop)\n{body}",
                every.as_secs_f64()
            )
        } else {
            writeln!(out, "{body}")
        };
        let _ = out.flush();
        drop(out);
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests;
