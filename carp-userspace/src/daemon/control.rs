//! carpd's control socket and metrics endpoint (design §2, issue #5).
//!
//! What this module owns: the root-only Unix socket (mode 0600, peers checked with SO_PEERCRED),
//! one task per connection that reads one JSON request line and writes one JSON response line, the
//! OpenMetrics responder (`--metrics ADDR`), starting the `[[track]]` checkers (`crate::config::track`, run by `crate::daemon::track`),
//! systemd's READY=1 notification, and the daemon's
//! answers to each request (`Daemon::on_control`). The tasks never touch the engine: they pass a
//! `Msg` over an mpsc channel to the main loop, which owns the engine and replies on a oneshot, so a
//! request is handled between two engine events like any other input and its effect (an advert, a
//! transition) is carried out by the same code as everything else.

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{Daemon, monotonic};
use crate::{
    auth::{AuthContext, AuthInput, Key},
    control::{
        CountersReport, DemoteOp, ForceTo, GroupStatus, InterfaceStatus, MAX_LINE, NodeStatus,
        Request, Response, SYSCTLS, Setting, StatusReport, VhidCounters, check_adv,
        parse_sysctl_value, unknown_sysctl,
    },
    engine::{ForcedState, HostEvent},
};

/// How long a client may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One request on its way to the main loop, with the channel its answer goes back on.
pub struct Msg {
    /// The request.
    pub request: Request,
    /// Where the main loop sends the response.
    pub reply: oneshot::Sender<Response>,
}

/// The listening control socket (and metrics endpoint); the socket file is removed on drop.
pub struct Server {
    rx: mpsc::Receiver<Msg>,
    path: PathBuf,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the control socket at `path` (and the metrics endpoint at `metrics`), starts the
    /// `[[track]]` checkers, then tells systemd the daemon is ready: this is the last step of
    /// start-up, so READY=1 means carpctl works.
    pub fn start(
        path: &Path,
        metrics: Option<SocketAddr>,
        tracks: &[crate::config::track::TrackConfig],
    ) -> Result<Server> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            // A socket someone still answers on belongs to a live carpd; a dead one is ours to replace.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another carpd serves the control socket {}; give this one its own --control-socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding the control socket {}", path.display()))?;
        // Root only; peers are also checked with SO_PEERCRED, which covers the instant before chmod.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
        let (tx, rx) = mpsc::channel(16);
        let mut tasks = vec![tokio::spawn(accept_control(listener, tx.clone()))];
        if let Some(addr) = metrics {
            let std_listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding the metrics endpoint {addr}"))?;
            std_listener.set_nonblocking(true)?;
            let listener = TcpListener::from_std(std_listener)?;
            tasks.push(tokio::spawn(accept_metrics(listener, tx.clone())));
            tracing::info!("metrics at http://{addr}/metrics");
        }
        // Trackers talk to the main loop exactly as carpctl does (`carpctl demote GROUP +N`).
        tasks.extend(super::track::spawn(tracks, tx));
        tracing::info!("control socket {}", path.display());
        notify_ready();
        Ok(Server {
            rx,
            path: path.to_path_buf(),
            tasks,
        })
    }

    /// The next request for the main loop (never returns if every sender is gone).
    pub async fn next(&mut self) -> Msg {
        match self.rx.recv().await {
            Some(m) => m,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Tells systemd (Type=notify) that carpd is up.
fn notify_ready() {
    notify("READY=1");
}

/// Sends one sd_notify(3) state (e.g. "READY=1") to $NOTIFY_SOCKET; a no-op outside systemd.
pub(super) fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        use std::os::{linux::net::SocketAddrExt, unix::ffi::OsStrExt};
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = target.as_bytes();
        // "@name" is an abstract socket; anything else is a path.
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
            None => std::os::unix::net::SocketAddr::from_pathname(Path::new(&target))?,
        };
        sock.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!("telling systemd {state:?} (NOTIFY_SOCKET): {e}");
    }
}

async fn accept_control(listener: UnixListener, tx: mpsc::Sender<Msg>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_control(stream, tx.clone()));
            }
            Err(e) => {
                tracing::warn!("control socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sends a request to the main loop and waits for its answer.
async fn ask(tx: &mpsc::Sender<Msg>, request: Request) -> Response {
    let (reply, answer) = oneshot::channel();
    if tx.send(Msg { request, reply }).await.is_err() {
        return Response::Error("carpd is stopping".into());
    }
    answer
        .await
        .unwrap_or_else(|_| Response::Error("carpd is stopping".into()))
}

async fn serve_control(stream: UnixStream, tx: mpsc::Sender<Msg>) {
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let (rd, mut wr) = stream.into_split();
    let response = if uid != Some(0) {
        Response::Error("permission denied: only root may use carpd's control socket".into())
    } else {
        let mut line = String::new();
        let mut rd = BufReader::new(rd.take(MAX_LINE as u64));
        match tokio::time::timeout(READ_TIMEOUT, rd.read_line(&mut line)).await {
            Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                Ok(request) => ask(&tx, request).await,
                Err(e) => Response::Error(format!("malformed request: {e}")),
            },
            Ok(Err(e)) => Response::Error(format!("reading the request: {e}")),
            Err(_) => Response::Error("no request within 5 s".into()),
        }
    };
    if let Ok(mut text) = serde_json::to_string(&response) {
        text.push('\n');
        let _ = wr.write_all(text.as_bytes()).await;
    }
}

async fn accept_metrics(listener: TcpListener, tx: mpsc::Sender<Msg>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_metrics(stream, tx.clone()));
            }
            Err(e) => {
                tracing::warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A deliberately tiny HTTP/1.x responder: one GET per connection, then close.
async fn serve_metrics(mut stream: TcpStream, tx: mpsc::Sender<Msg>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        )
    } else if path != "/metrics" && path != "/" {
        ("404 Not Found", "text/plain", "try /metrics\n".to_string())
    } else {
        match (
            ask(&tx, Request::Status).await,
            ask(&tx, Request::Counters).await,
        ) {
            (Response::Status(s), Response::Counters(c)) => {
                let mut text = crate::control::metrics::render_metrics(&s, &c);
                if let Response::Sync(r) = ask(&tx, Request::Sync).await {
                    crate::control::metrics::append_metrics(&mut text, &r);
                }
                (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                )
            }
            _ => (
                "503 Service Unavailable",
                "text/plain",
                "carpd is stopping\n".to_string(),
            ),
        }
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A change to a carp interface, validated, waiting to be applied.
struct Plan {
    i: usize,
    advbase: Option<u8>,
    advskew: Option<u8>,
    // Per node index in `ifs`: the new advskew.
    node_skews: Vec<(usize, u8)>,
    pass: Option<(String, Key)>,
    force: Option<ForceTo>,
    up: Option<bool>,
}

impl Daemon {
    /// Answers one control request (called by the main loop, which owns the engine).
    pub(super) async fn on_control(&mut self, msg: Msg) {
        let response = match msg.request {
            Request::Status => Response::Status(self.status_report()),
            Request::Counters => Response::Counters(self.counters_report()),
            Request::Groups => Response::Groups(self.group_report()),
            Request::Set { iface, changes } => match self.plan_set(&iface, &changes) {
                Ok(plan) => Response::Done(self.apply_set(plan).await),
                Err(e) => Response::Error(e),
            },
            Request::Demote { group, change } => self.demote(&group, change).await,
            Request::Sysctl { name, value } => self.sysctl(&name, value.as_deref()).await,
            Request::Restart => self.request_restart(),
            Request::Sync => self.sync_report(),
            Request::Flows => self.flows_report(),
        };
        let _ = msg.reply.send(response);
    }

    /// `carpctl restart`: the main loop re-executes carpd once this answer is on its way (as on SIGUSR2).
    fn request_restart(&mut self) -> Response {
        if self.stopping {
            return Response::Error("carpd is stopping (planned stop with bow-out)".into());
        }
        self.restart = true;
        Response::Done(vec![
            "carpd re-executes itself in place; MASTERs stay MASTER (hitless restart)".into(),
        ])
    }

    fn group_report(&self) -> Vec<GroupStatus> {
        let groups = self.host.groups();
        groups
            .iter()
            .map(|(name, demote)| GroupStatus {
                name: name.to_string(),
                demote,
                members: {
                    let mut m: Vec<String> = self
                        .host
                        .interfaces()
                        .iter()
                        .filter(|c| groups.groups_of(&c.name).contains(&name))
                        .map(|c| c.name.clone())
                        .collect();
                    // Every carpnode of an interface is an engine entry under its name.
                    m.dedup();
                    m
                },
            })
            .collect()
    }

    fn status_report(&self) -> StatusReport {
        let interfaces = self
            .ifs
            .iter()
            .zip(self.host.interfaces())
            .filter(|(c, _)| c.node == 0)
            .map(|(c, h)| {
                let vc = h.vhid.config();
                let state = h.vhid.state().as_str().to_string();
                InterfaceStatus {
                    name: c.cfg.name.clone(),
                    carpdev: c.cfg.carpdev.clone(),
                    vhid: vc.vhid,
                    state: state.clone(),
                    advbase: vc.advbase,
                    advskew: vc.advskew,
                    demote: h.vhid.demote(),
                    addresses: c.cfg.addresses.iter().map(|a| a.to_string()).collect(),
                    balancing: c.cfg.balancing.as_str().to_string(),
                    nodes: self
                        .nodes_of(&c.cfg.name)
                        .into_iter()
                        .map(|j| {
                            let n = &self.host.interfaces()[j].vhid;
                            NodeStatus {
                                vhid: n.config().vhid,
                                state: n.state().as_str().to_string(),
                                advskew: n.config().advskew,
                            }
                        })
                        .collect(),
                    groups: self
                        .host
                        .groups()
                        .groups_of(&c.cfg.name)
                        .iter()
                        .map(|g| g.to_string())
                        .collect(),
                    last_master: h.vhid.last_master().map(|a| a.to_string()),
                }
            })
            .collect();
        StatusReport {
            preempt: self.config.carp.preempt,
            allow: self.config.carp.allow,
            log: self.config.carp.log,
            interfaces,
            groups: self.group_report(),
        }
    }

    fn counters_report(&self) -> CountersReport {
        let now = monotonic().as_nanos();
        let vhids = self
            .ifs
            .iter()
            .zip(self.host.interfaces())
            .map(|(c, h)| {
                let maps = &self.devs[c.dev].maps;
                let vhid = c.vhid;
                let last = maps.last_advert(vhid).ok().filter(|l| l.ktime_ns != 0);
                VhidCounters {
                    name: c.cfg.name.clone(),
                    carpdev: c.cfg.carpdev.clone(),
                    vhid,
                    state: h.vhid.state().as_str().to_string(),
                    transitions_to_master: h.vhid.transitions_to_master(),
                    opackets: c.opackets,
                    badauth: c.badauth.total,
                    last_master: h.vhid.last_master().map(|a| a.to_string()),
                    last_advert_age_seconds: last
                        .map(|l| now.saturating_sub(l.ktime_ns) as f64 / 1e9),
                    dataplane: maps.stats(vhid).ok(),
                }
            })
            .collect();
        CountersReport { vhids }
    }

    fn unknown_iface(&self, name: &str) -> String {
        let names: Vec<&str> = self.ifs.iter().map(|c| c.cfg.name.as_str()).collect();
        format!(
            "no carp interface {name} (carpd runs {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )
    }

    /// Checks every change first, so a request is applied whole or not at all.
    fn plan_set(&self, iface: &str, changes: &[Setting]) -> Result<Plan, String> {
        let i = self
            .ifs
            .iter()
            .position(|c| c.cfg.name == iface)
            .ok_or_else(|| self.unknown_iface(iface))?;
        if changes.is_empty() {
            return Err(format!("nothing to change on {iface}"));
        }
        let mut plan = Plan {
            i,
            advbase: None,
            advskew: None,
            node_skews: Vec::new(),
            pass: None,
            force: None,
            up: None,
        };
        for ch in changes {
            match ch {
                Setting::Advbase(v) => plan.advbase = Some(check_adv("advbase", u32::from(*v))?),
                Setting::Advskew(v) => plan.advskew = Some(check_adv("advskew", u32::from(*v))?),
                Setting::Pass(p) => {
                    let key = Key::from_passphrase(p).map_err(|e| format!("pass: {e}"))?;
                    plan.pass = Some((p.clone(), key));
                }
                Setting::State(s) => plan.force = Some(*s),
                Setting::Up => plan.up = Some(true),
                Setting::Down => plan.up = Some(false),
                Setting::Carpnodes(nodes) => {
                    let have: Vec<u8> = self.ifs[i].cfg.carpnodes.iter().map(|n| n.vhid).collect();
                    let mut want: Vec<u8> = nodes.iter().map(|n| n.0).collect();
                    want.sort_unstable();
                    if want != have {
                        return Err(format!(
                            "{iface}: carpnodes {}: the vhids must stay {have:?} (changing them needs a config reload)",
                            nodes
                                .iter()
                                .map(|(v, s)| format!("{v}:{s}"))
                                .collect::<Vec<_>>()
                                .join(",")
                        ));
                    }
                    for &(vhid, skew) in nodes {
                        check_adv("advskew", u32::from(skew))?;
                        let j = self
                            .nodes_of(iface)
                            .into_iter()
                            .find(|&j| self.ifs[j].vhid == vhid)
                            .expect("vhids checked");
                        plan.node_skews.push((j, skew));
                    }
                }
            }
        }
        Ok(plan)
    }

    async fn apply_set(&mut self, plan: Plan) -> Vec<String> {
        let i = plan.i;
        let name = self.ifs[i].cfg.name.clone();
        let mut done = Vec::new();
        let nodes = self.nodes_of(&name);
        if let Some((pass, key)) = plan.pass {
            for &j in &nodes {
                let c = &mut self.ifs[j];
                c.auth = AuthContext::new(&key, &AuthInput::with_addrs(c.vhid, c.cfg.vips()));
                c.cfg.pass = pass.clone();
            }
            done.push(format!("{name}: pass changed"));
        }
        // advbase is the interface's (every node); advskew is the leader's, as OpenBSD's ifconfig
        // advskew sets the first node's; carpnodes sets each node's.
        let mut skews: Vec<(usize, u8)> = plan.node_skews.clone();
        if let Some(s) = plan.advskew {
            skews.retain(|(j, _)| *j != i);
            skews.push((i, s));
        }
        if plan.advbase.is_some() || !skews.is_empty() {
            for &j in &nodes {
                let mut vc = self.host.interfaces()[j].vhid.config().clone();
                let (old_base, old_skew) = (vc.advbase, vc.advskew);
                vc.advbase = plan.advbase.unwrap_or(vc.advbase);
                if let Some(&(_, s)) = skews.iter().find(|(k, _)| *k == j) {
                    vc.advskew = s;
                }
                if (vc.advbase, vc.advskew) == (old_base, old_skew) && plan.advbase.is_none() {
                    continue;
                }
                // The running config follows, so SIGHUP compares the file with what really runs.
                let node = self.ifs[j].node;
                for &k in &nodes {
                    let cfg = &mut self.ifs[k].cfg;
                    cfg.advbase = vc.advbase;
                    cfg.carpnodes[node].advskew = vc.advskew;
                    if node == 0 {
                        cfg.advskew = vc.advskew;
                    }
                }
                let what = if nodes.len() > 1 {
                    format!("{name} vhid {}", vc.vhid)
                } else {
                    name.clone()
                };
                done.push(format!(
                    "{what}: advbase {old_base} -> {}, advskew {old_skew} -> {}",
                    vc.advbase, vc.advskew
                ));
                let now = self.now();
                let actions = self.host.reconfigure(now, &name, vc);
                for a in actions {
                    self.carry_out(a.iface, a.action).await;
                }
            }
        }
        if let Some(up) = plan.up {
            done.push(format!("{name}: {}", if up { "up" } else { "down" }));
            let event = if up {
                HostEvent::Up(name.clone())
            } else {
                // ifconfig down: bow out and go INIT at once, as OpenBSD does.
                HostEvent::Down {
                    iface: name.clone(),
                    linger: Duration::ZERO,
                }
            };
            self.feed(event).await;
        }
        if let Some(s) = plan.force {
            let state = match s {
                ForceTo::Master => ForcedState::Master,
                ForceTo::Backup => ForcedState::Backup,
            };
            done.push(format!("{name}: state {s:?} forced"));
            self.feed(HostEvent::Force {
                iface: name.clone(),
                state,
            })
            .await;
        }
        for line in &done {
            tracing::info!("carpctl: {line}");
        }
        done
    }

    async fn demote(&mut self, group: &str, change: Option<DemoteOp>) -> Response {
        let Some(old) = self
            .host
            .groups()
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, c)| c)
        else {
            let known: Vec<&str> = self.host.groups().iter().map(|(g, _)| g).collect();
            return Response::Error(format!(
                "no interface group {group} (groups: {})",
                known.join(", ")
            ));
        };
        let new = match change {
            None => old,
            Some(DemoteOp::Set(v)) => v,
            Some(DemoteOp::Adjust(d)) => match u8::try_from(i32::from(old) + d) {
                Ok(v) => v,
                Err(_) => {
                    return Response::Error(format!(
                        "group {group}: demote {old} {d:+} = {} is out of range 0..=255; nothing changed",
                        i32::from(old) + d
                    ));
                }
            },
        };
        if new != old {
            // A tracker or carpctl asked; a tracker logs its own reason just before.
            tracing::info!("group {group}: demote {old} -> {new}");
            self.feed(HostEvent::GroupSet {
                group: group.to_string(),
                value: new,
            })
            .await;
        }
        Response::Groups(
            self.group_report()
                .into_iter()
                .filter(|g| g.name == group)
                .collect(),
        )
    }

    async fn sysctl(&mut self, name: &str, value: Option<&str>) -> Response {
        if !SYSCTLS.contains(&name) {
            return Response::Error(unknown_sysctl(name));
        }
        if let Some(v) = value {
            let v = match parse_sysctl_value(name, v) {
                Ok(v) => v,
                Err(e) => return Response::Error(e),
            };
            let carp = &mut self.config.carp;
            match name {
                "net.inet.carp.preempt" => {
                    let on = v == 1;
                    if carp.preempt != on {
                        carp.preempt = on;
                        tracing::info!("carpctl: {name}={v}");
                        self.feed(HostEvent::SetPreempt(on)).await;
                    }
                }
                "net.inet.carp.allow" => {
                    // Stored and reported; carpd does not yet ignore adverts when it is 0.
                    carp.allow = v == 1;
                    tracing::info!("carpctl: {name}={v}");
                }
                _ => {
                    carp.log = v;
                    tracing::info!("carpctl: {name}={v}");
                }
            }
        }
        let carp = &self.config.carp;
        let value = match name {
            "net.inet.carp.preempt" => u8::from(carp.preempt),
            "net.inet.carp.allow" => u8::from(carp.allow),
            _ => carp.log,
        };
        Response::Sysctl {
            name: name.to_string(),
            value: value.to_string(),
        }
    }
}
