//! carpd's control socket and metrics endpoint (design §2, issue #5).
//!
//! What this module owns: the control socket (mode 0600, root only; with `[control] group` 0666 and
//! the peer's credentials from SO_PEERCRED/SO_PEERGROUPS decide), one task per connection that reads
//! one JSON request line and writes one JSON response line (`carpctl monitor` a stream of them), the
//! metrics responder (`--metrics ADDR`, rendered by `control::metrics`), starting the
//! `[[track]]` checkers (`daemon::track`) and systemd's READY=1 notification. The tasks never touch
//! the engine: they pass a `Msg` over an mpsc channel to the main loop, which owns the engine and
//! replies on a oneshot (`daemon::control`), so a request is handled between two engine events like
//! any other input and its effect (an advert, a transition) is carried out by the same code as
//! everything else.

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
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
};

use crate::control::{
    MAX_LINE, MonitorEvent, Request, Response,
    metrics::{BuildInfo, Format},
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
        events: broadcast::Sender<MonitorEvent>,
        group: Option<u32>,
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
        // With [control] group, everyone may connect and the peer's credentials decide (root: all,
        // the group's members: read-only requests, anyone else: refused); chown-ing the socket to
        // the group instead would need CAP_CHOWN, which a hitless re-exec no longer has.
        let mode = if group.is_some() { 0o666 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
        if group.is_some()
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            // The socket's directory (systemd makes /run/carp 0700) must be searchable.
            let m = std::fs::metadata(dir)?.permissions().mode();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(m | 0o111))
                .with_context(|| format!("chmod a+x {}", dir.display()))?;
        }
        let (tx, rx) = mpsc::channel(16);
        let access = Access { group, events };
        let mut tasks = vec![tokio::spawn(accept_control(
            listener,
            tx.clone(),
            super::flowlist::listings(),
            access,
        ))];
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
    super::observe::notify(&[sd_notify::NotifyState::Ready]);
}

/// Who may use the control socket for what, and the monitor stream.
#[derive(Clone)]
struct Access {
    // `[control] group`'s gid: its members may send read-only requests.
    group: Option<u32>,
    events: broadcast::Sender<MonitorEvent>,
}

/// The peer's uid and every group it is in (primary and supplementary), from the kernel.
fn peer_groups(stream: &UnixStream) -> (Option<u32>, Vec<u32>) {
    use std::os::fd::AsRawFd;
    let Ok(cred) = stream.peer_cred() else {
        return (None, Vec::new());
    };
    let mut groups = vec![cred.gid()];
    let mut buf = vec![0u32; 256];
    let mut len = (buf.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
    // SAFETY: SO_PEERGROUPS writes at most `len` bytes of gid_t into buf and sets len to what it wrote.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc == 0 {
        buf.truncate(len as usize / std::mem::size_of::<u32>());
        groups.extend(buf);
    }
    (Some(cred.uid()), groups)
}

async fn accept_control(
    listener: UnixListener,
    tx: mpsc::Sender<Msg>,
    listings: std::sync::Arc<tokio::sync::Semaphore>,
    access: Access,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_control(
                    stream,
                    tx.clone(),
                    listings.clone(),
                    access.clone(),
                ));
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

async fn serve_control(
    stream: UnixStream,
    tx: mpsc::Sender<Msg>,
    listings: std::sync::Arc<tokio::sync::Semaphore>,
    access: Access,
) {
    let (uid, groups) = peer_groups(&stream);
    let root = uid == Some(0);
    let member = access.group.is_some_and(|g| groups.contains(&g));
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd.take(MAX_LINE as u64));
    let mut query = None;
    // The request is read before a refusal, so the client gets the reason rather than a broken pipe.
    let mut line = String::new();
    let read = tokio::time::timeout(READ_TIMEOUT, rd.read_line(&mut line)).await;
    let response = if !root && !member {
        Response::Error(match access.group {
            None => "permission denied: only root may use carpd's control socket".into(),
            Some(_) => "permission denied: only root and carpd's [control] group may use its control socket".into(),
        })
    } else {
        match read {
            Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                Ok(request) if !root && !request.is_read_only() => Response::Error(
                    "permission denied: only root may change carpd's state (the [control] group may only read)".into(),
                ),
                Ok(Request::Monitor) => {
                    monitor(access.events.subscribe(), &mut wr).await;
                    return;
                }
                Ok(Request::Metrics) => match scrape(&tx, Format::Text).await {
                    Some(text) => Response::Metrics(text),
                    None => Response::Error("carpd is stopping".into()),
                },
                Ok(request) => {
                    if let Request::Flows(q) = &request {
                        query = Some(q.clone());
                    }
                    ask(&tx, request).await
                }
                Err(e) => Response::Error(format!("malformed request: {e}")),
            },
            Ok(Err(e)) => Response::Error(format!("reading the request: {e}")),
            Err(_) => Response::Error("no request within 5 s".into()),
        }
    };
    // `Flows`: the loop said where the table is; a thread of its own streams it (`flowlist`).
    if let (Response::FlowsPin { bpffs, carpdev }, Some(query)) = (&response, query) {
        if let Ok(stream) = rd.into_inner().into_inner().reunite(wr) {
            super::flowlist::serve(stream, bpffs.clone(), carpdev.clone(), query, listings).await;
        }
        return;
    }
    let _ = write_line(&mut wr, &response).await;
}

/// One response as a JSON line.
async fn write_line(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut text = serde_json::to_string(response).map_err(std::io::Error::other)?;
    text.push('\n');
    wr.write_all(text.as_bytes()).await
}

/// `carpctl monitor`: every event as a line until the client goes away or carpd stops. A slow
/// client only lags its own receiver and is told how many events it missed.
async fn monitor(
    mut events: broadcast::Receiver<MonitorEvent>,
    wr: &mut tokio::net::unix::OwnedWriteHalf,
) {
    loop {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(missed)) => MonitorEvent::Lagged { missed },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if write_line(wr, &Response::Event(ev)).await.is_err() {
            return;
        }
    }
}

/// The metrics text: the main loop answers Status, Counters and Sync (cheap, bounded by the number
/// of vhids), and the rendering happens here, in the connection's task.
async fn scrape(tx: &mpsc::Sender<Msg>, format: Format) -> Option<String> {
    match (
        ask(tx, Request::Status).await,
        ask(tx, Request::Counters).await,
    ) {
        (Response::Status(s), Response::Counters(c)) => {
            let sync = match ask(tx, Request::Sync).await {
                Response::Sync(r) if r.enabled => Some(r),
                _ => None,
            };
            Some(crate::control::metrics::render(
                format,
                &BuildInfo::this(),
                &s,
                &c,
                sync.as_ref(),
            ))
        }
        _ => None,
    }
}

/// Scrapes served at once. A scrape takes milliseconds, so a few slots are plenty for any number of
/// Prometheus servers; beyond them connections wait in the kernel's backlog (costing carpd no
/// descriptor), so idle or slow clients can never take the descriptors carpctl, hooks and reloads need.
pub const METRICS_CONNECTIONS: usize = 16;
/// The most time one scrape connection may take, request and answer together.
pub const METRICS_DEADLINE: Duration = Duration::from_secs(10);

async fn accept_metrics(listener: TcpListener, tx: mpsc::Sender<Msg>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    loop {
        // A slot first, then the accept: at the limit nothing is accepted, so no descriptor is spent.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    // Dropping the future on the deadline closes the connection.
                    let _ = tokio::time::timeout(METRICS_DEADLINE, serve_metrics(stream, tx)).await;
                });
            }
            Err(e) => {
                drop(slot);
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
        // Prometheus asks for OpenMetrics; curl, promtool and older scrapers get the 0.0.4 text.
        let accept = head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
                .map(|(_, v)| v.trim())
        });
        let format = Format::from_accept(accept);
        match scrape(&tx, format).await {
            Some(text) => ("200 OK", format.content_type(), text),
            None => (
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
