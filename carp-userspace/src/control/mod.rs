//! The control-socket protocol between carpd and carpctl (design §2), and a small blocking client.
//!
//! What this module owns: the request and response types (one JSON object per line in each
//! direction, one request per connection), the report types behind `carpctl status|counters|groups
//! --json`, the validation both ends share (ranges, sysctl names), and `call`, which turns "no socket"
//! or "permission denied" into the one-line reasons carpctl prints. The server side lives in
//! `daemon::control`; it owns the engine's answers, this module owns only their shape.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub mod metrics;
pub mod render;
pub mod report;

pub use render::table;
pub use report::{
    CountersReport, DataplaneCounters, GroupStatus, InterfaceStatus, NodeStatus, StatusReport,
    VhidCounters, VrrpStatus,
};

/// Where carpd listens and carpctl connects by default.
pub const DEFAULT_SOCKET: &str = "/run/carp/carpd.sock";
/// The longest request or response line accepted (a status of 255 vhids fits easily).
pub const MAX_LINE: usize = 1 << 20;
/// The highest advbase and advskew an operator may set (255 is reserved for the bow-out advert).
pub const MAX_ADV: u8 = 254;
/// The sysctls carpctl can read and write (OpenBSD's `net.inet.carp.*`).
pub const SYSCTLS: [&str; 3] = [
    "net.inet.carp.preempt",
    "net.inet.carp.allow",
    "net.inet.carp.log",
];

/// One request from carpctl (or the metrics responder) to carpd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "request")]
pub enum Request {
    /// Every carp interface and group (`carpctl status`).
    Status,
    /// Per-vhid counters from the dataplane and the engine (`carpctl counters`).
    Counters,
    /// The demote groups (`carpctl groups`).
    Groups,
    /// Runtime settings of one carp interface (`carpctl set`, `carpctl ifconfig carpN ...`).
    Set {
        /// The carp interface, e.g. "carp0".
        iface: String,
        /// The changes, applied together or not at all.
        changes: Vec<Setting>,
    },
    /// Read (None) or change a group's demote counter (`carpctl demote`, `ifconfig -g`).
    Demote {
        /// The interface group.
        group: String,
        /// The change; None only reads the counter.
        change: Option<DemoteOp>,
    },
    /// Read (None) or write one of [`SYSCTLS`].
    Sysctl {
        /// The full name, e.g. "net.inet.carp.preempt".
        name: String,
        /// The new value as typed, e.g. "1".
        value: Option<String>,
    },
    /// Hitless restart (`carpctl restart`): carpd answers, then re-executes itself in place as on SIGUSR2.
    Restart,
    /// Flow replication state and counters (`carpctl sync`).
    Sync,
    /// The dataplane's flow table (`carpctl flows`), streamed in pages (`Response::FlowsPage` lines
    /// then one `Response::FlowsEnd`) by a thread of its own, never by the main loop.
    Flows(report::FlowQuery),
    /// Stream every transition and demote change as it happens (`carpctl monitor`): carpd answers
    /// with one `Response::Event` line per event until the client closes the connection.
    Monitor,
    /// The metrics text, as the metrics endpoint serves it (`carpctl metrics`).
    Metrics,
}

impl Request {
    /// True for the requests that change nothing, which members of `[control] group` may send;
    /// everything else is root only.
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Status
            | Request::Counters
            | Request::Groups
            | Request::Sync
            | Request::Flows(_)
            | Request::Monitor
            | Request::Metrics => true,
            Request::Demote { change, .. } => change.is_none(),
            Request::Sysctl { value, .. } => value.is_none(),
            Request::Set { .. } | Request::Restart => false,
        }
    }
}

/// One event of `carpctl monitor` (a JSON object per line with `--json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum MonitorEvent {
    /// A vhid changed state.
    Transition {
        /// Wall-clock time, seconds since the Unix epoch.
        time: f64,
        /// The carp interface.
        interface: String,
        /// The node's vhid.
        vhid: u8,
        /// The state before.
        from: String,
        /// The state after.
        to: String,
        /// Why, as the log line says it.
        reason: String,
    },
    /// An interface group's demote counter changed.
    Demote {
        /// Wall-clock time, seconds since the Unix epoch.
        time: f64,
        /// The group.
        group: String,
        /// The counter before.
        old: u8,
        /// The counter after.
        new: u8,
        /// Who changed it, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The client read too slowly and missed this many events.
    Lagged {
        /// Events left out.
        missed: u64,
    },
}

impl MonitorEvent {
    /// The event as one human-readable line (`carpctl monitor` without `--json`).
    pub fn line(&self) -> String {
        match self {
            MonitorEvent::Transition {
                time,
                interface,
                vhid,
                from,
                to,
                reason,
            } => format!(
                "{} {interface} vhid {vhid}: {from} -> {to} ({reason})",
                format_time(*time)
            ),
            MonitorEvent::Demote {
                time,
                group,
                old,
                new,
                reason,
            } => format!(
                "{} group {group}: demote {old} -> {new}{}",
                format_time(*time),
                reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            MonitorEvent::Lagged { missed } => {
                format!("(missed {missed} events: carpctl read too slowly)")
            }
        }
    }
}

/// Seconds since the Unix epoch as `2026-12-03 13:02:11Z` (UTC, what `carpctl status` prints).
pub fn format_time(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One runtime setting of a carp interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    /// Base advert interval in seconds, 0..=254.
    Advbase(u8),
    /// Skew in 1/256 s, 0..=254.
    Advskew(u8),
    /// Force MASTER (true) or BACKUP (false).
    State(ForceTo),
    /// A new passphrase (at most 19 bytes).
    Pass(String),
    /// Administratively up.
    Up,
    /// Administratively down: a MASTER bows out, then goes INIT.
    Down,
    /// Per-node advskew of a carp interface with carpnodes, as `vhid:advskew` pairs; the vhids must
    /// be the interface's (changing them needs a config reload).
    Carpnodes(Vec<(u8, u8)>),
}

/// The state `set CARPIF state ...` forces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForceTo {
    /// Run the master-down path now.
    Master,
    /// Stop advertising and wait for the master-down timer.
    Backup,
}

/// How a group's demote counter moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemoteOp {
    /// Set the counter (`demote GROUP N`).
    Set(u8),
    /// Add a signed amount (`demote GROUP +N|-N`, `ifconfig -g GROUP [-]carpdemote N`); the result
    /// must stay in 0..=255, as OpenBSD's kernel insists.
    Adjust(i32),
}

/// carpd's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Answer to `Status`.
    Status(StatusReport),
    /// Answer to `Counters`.
    Counters(CountersReport),
    /// Answer to `Groups` and `Demote`.
    Groups(Vec<GroupStatus>),
    /// Answer to `Sync`.
    Sync(report::SyncReport),
    /// One page of a `Flows` listing (one line each; a listing is as long as the table).
    FlowsPage(Vec<report::FlowRow>),
    /// The last line of a `Flows` listing: how many flows it sent.
    FlowsEnd {
        /// Flows sent (after the filters and the limit).
        listed: u64,
    },
    /// The main loop's answer to `Flows`, for the control socket's own use (never sent to carpctl):
    /// where the connection's lister thread opens the pinned flow table.
    FlowsPin {
        /// carpd's bpffs directory.
        bpffs: PathBuf,
        /// A carpdev whose pin directory holds `carp_flows`.
        carpdev: String,
    },
    /// Answer to `Sysctl`: the value after the request.
    Sysctl {
        /// The full name.
        name: String,
        /// The value, as `sysctl` prints it.
        value: String,
    },
    /// A change was applied; what it did, one line per change.
    Done(Vec<String>),
    /// The request was refused and nothing changed; the one-line reason.
    Error(String),
    /// One event of a `Monitor` stream.
    Event(MonitorEvent),
    /// Answer to `Metrics`: the metrics text (Prometheus text format 0.0.4).
    Metrics(String),
}

/// Checks an advbase or advskew value; the error names the key and the allowed range.
pub fn check_adv(key: &str, value: u32) -> Result<u8, String> {
    if value > u32::from(MAX_ADV) {
        return Err(format!(
            "{key} {value} is out of range: use 0..={MAX_ADV} (255 is reserved for the bow-out advert)"
        ));
    }
    Ok(value as u8)
}

/// Parses a sysctl value for `name`: booleans as 0/1 (or true/false), `log` as 0..=7.
pub fn parse_sysctl_value(name: &str, value: &str) -> Result<u8, String> {
    let v = value.trim();
    match name {
        "net.inet.carp.preempt" | "net.inet.carp.allow" => match v {
            "0" | "false" | "off" => Ok(0),
            "1" | "true" | "on" => Ok(1),
            _ => Err(format!("{name}={v}: the value must be 0 or 1")),
        },
        "net.inet.carp.log" => match v.parse::<u8>() {
            Ok(n) if n <= 7 => Ok(n),
            _ => Err(format!("{name}={v}: the value must be 0..=7")),
        },
        _ => Err(unknown_sysctl(name)),
    }
}

/// The error for a sysctl name carpd does not have.
pub fn unknown_sysctl(name: &str) -> String {
    format!("unknown sysctl {name} (known: {})", SYSCTLS.join(", "))
}

/// Why talking to carpd failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the path.
    #[error("carpd is not running (no socket at {}); start it with `systemctl start carpd`", .0.display())]
    NotRunning(PathBuf),
    /// The socket is root-only (or for root and `[control] group`).
    #[error("permission denied on {}: carpctl must run as root (or, for read-only commands, in carpd's [control] group)", .0.display())]
    PermissionDenied(PathBuf),
    /// Any other socket error.
    #[error("talking to carpd at {}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    /// carpd answered something that is not a response.
    #[error("carpd sent an unreadable answer: {0}")]
    Protocol(String),
    /// carpd refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Sends `Monitor` and calls `each` with every event until carpd closes the connection (it
/// stopped: a normal end) or `each` returns false. No read timeout: events come when they happen.
pub fn monitor(path: &Path, mut each: impl FnMut(MonitorEvent) -> bool) -> Result<(), ClientError> {
    let io = |e: std::io::Error| ClientError::Io(path.to_path_buf(), e);
    let mut stream = connect(path, Duration::from_secs(10))?;
    let mut line = serde_json::to_string(&Request::Monitor)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    stream.set_read_timeout(None).map_err(io)?;
    let mut rd = BufReader::new(&stream);
    loop {
        let mut answer = String::new();
        let n = (&mut rd)
            .take(MAX_LINE as u64)
            .read_line(&mut answer)
            .map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        match serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))? {
            Response::Event(ev) => {
                if !each(ev) {
                    return Ok(());
                }
            }
            Response::Error(e) => return Err(ClientError::Refused(e)),
            other => return Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }
}

/// Sends `request` and hands every response line to `each` until it returns false or carpd closes
/// the connection; for answers of many lines (`Flows`). Each line may be up to `MAX_LINE` bytes, the
/// whole answer any length; `timeout` bounds each read, not the whole answer.
pub fn stream(
    path: &Path,
    request: &Request,
    timeout: Duration,
    mut each: impl FnMut(Response) -> bool,
) -> Result<(), ClientError> {
    let io = |e: std::io::Error| ClientError::Io(path.to_path_buf(), e);
    let mut stream = connect(path, timeout)?;
    let mut line =
        serde_json::to_string(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut rd = BufReader::new(&stream);
    loop {
        let mut answer = String::new();
        (&mut rd)
            .take(MAX_LINE as u64)
            .read_line(&mut answer)
            .map_err(io)?;
        if answer.is_empty() {
            return Err(ClientError::Protocol(
                "the connection closed before the answer's end".into(),
            ));
        }
        let r = serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !each(r) {
            return Ok(());
        }
    }
}

/// The whole flow listing for `query` (`Request::Flows`), collected; carpd's refusal as `Err`.
pub fn flows(
    path: &Path,
    query: &report::FlowQuery,
    timeout: Duration,
) -> Result<Result<report::FlowsReport, String>, ClientError> {
    let mut out = Ok(report::FlowsReport::default());
    stream(path, &Request::Flows(query.clone()), timeout, |r| match r {
        Response::FlowsPage(rows) => {
            if let Ok(rep) = &mut out {
                rep.flows.extend(rows);
            }
            true
        }
        Response::Error(e) => {
            out = Err(e);
            false
        }
        _ => false,
    })?;
    Ok(out)
}

/// Connects to carpd's socket with read and write timeouts, naming "not running" and "not root".
fn connect(path: &Path, timeout: Duration) -> Result<UnixStream, ClientError> {
    let io = |e: std::io::Error| ClientError::Io(path.to_path_buf(), e);
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(path.to_path_buf())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_path_buf()),
        _ => io(e),
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    Ok(stream)
}

/// Sends one request to the carpd listening at `path` and waits (at most `timeout`) for the answer.
pub fn call(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let io = |e: std::io::Error| ClientError::Io(path.to_path_buf(), e);
    let mut stream = connect(path, timeout)?;
    let mut line =
        serde_json::to_string(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .take(MAX_LINE as u64)
        .read_line(&mut answer)
        .map_err(io)?;
    if answer.is_empty() {
        return Err(ClientError::Protocol(
            "the connection closed without an answer".into(),
        ));
    }
    serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_json_line() {
        let reqs = [
            Request::Status,
            Request::Set {
                iface: "carp0".into(),
                changes: vec![
                    Setting::Advskew(254),
                    Setting::State(ForceTo::Master),
                    Setting::Down,
                ],
            },
            Request::Demote {
                group: "test".into(),
                change: Some(DemoteOp::Adjust(-5)),
            },
            Request::Sysctl {
                name: "net.inet.carp.preempt".into(),
                value: Some("1".into()),
            },
        ];
        for r in reqs {
            let s = serde_json::to_string(&r).unwrap();
            assert!(!s.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        }
    }

    #[test]
    fn ranges_and_sysctls() {
        assert_eq!(check_adv("advskew", 254), Ok(254));
        assert!(check_adv("advskew", 255).unwrap_err().contains("0..=254"));
        assert_eq!(parse_sysctl_value("net.inet.carp.preempt", "1"), Ok(1));
        assert!(parse_sysctl_value("net.inet.carp.log", "8").is_err());
        assert!(
            parse_sysctl_value("net.inet.carp.nope", "1")
                .unwrap_err()
                .contains("unknown sysctl")
        );
    }

    #[test]
    fn no_socket_says_carpd_is_not_running() {
        let e = call(
            Path::new("/nonexistent/carpd.sock"),
            &Request::Status,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("carpd is not running"), "{e}");
    }
}
