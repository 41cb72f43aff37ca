//! `carpctl flows`: the flow table listed in pages by a thread of its own (issue #16 item 3).
//!
//! What this module owns: reading the pinned `carp_flows` map slice by slice (BPF_MAP_LOOKUP_BATCH,
//! `PAGE` flows a syscall round), turning each flow into a `FlowRow`, applying the request's filters and
//! limit, and writing `Response::FlowsPage` lines of at most `ROWS_PER_LINE` flows to the carpctl connection, then one
//! `Response::FlowsEnd`. The work grows with the table (a million flows is ~0.2 s of map reads plus
//! the JSON), so none of it runs on carpd's runtime thread: the main loop only says where the table is
//! pinned (`Response::FlowsPin`, O(1)), and the listing runs on a blocking thread that opens the pin
//! itself. Nothing is collected, sorted or held beyond one page, so the memory a listing costs is one
//! page's and carpctl reads a listing of any length. At most `MAX_LISTINGS` run at once, so a loop of
//! carpctl calls cannot take every CPU from the loop; a reader that stops reading is dropped after
//! `WRITE_TIMEOUT`.

use carp_common::proto;
use std::{io::Write, path::PathBuf, sync::Arc, time::Duration};

use carp_common::maps::FlowTcpState;
use tokio::{net::UnixStream, sync::Semaphore};

use super::{monotonic, sync::flowmap};
use crate::{
    control::{
        Response,
        report::{FlowQuery, FlowRow},
    },
    dataplane::flows::{FlowTable, ScanCursor},
};

/// Flows read per slice (whole hash buckets, so a few more).
pub const PAGE: usize = 4096;
/// Flows per line: a row is ~250 bytes of JSON, so a line stays well under `control::MAX_LINE`.
pub const ROWS_PER_LINE: usize = 1024;
/// Listings that may run at once; a further request is refused with a reason.
pub const MAX_LISTINGS: usize = 2;
/// How long a write to a carpctl that stopped reading may block before the listing is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The permits of the running listings.
pub fn listings() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_LISTINGS))
}

/// Streams the flow table pinned under `bpffs`/`carpdev` to `stream` (a control connection whose
/// request was `Flows(query)`), on a blocking thread.
pub async fn serve(
    stream: UnixStream,
    bpffs: PathBuf,
    carpdev: String,
    query: FlowQuery,
    permits: Arc<Semaphore>,
) {
    let Ok(permit) = permits.try_acquire_owned() else {
        let mut s = stream;
        let msg = format!(
            "{MAX_LISTINGS} flow listings are already running; try again when one has finished"
        );
        write_async(&mut s, &Response::Error(msg)).await;
        return;
    };
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("carpctl flows: {e}");
            return;
        }
    };
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        if let Err(e) = list(std_stream, &bpffs, &carpdev, &query) {
            tracing::debug!("carpctl flows: the listing stopped: {e}");
        }
    });
    let _ = task.await;
}

/// One JSON line on a connection still owned by the runtime (a refusal).
async fn write_async(stream: &mut UnixStream, r: &Response) {
    use tokio::io::AsyncWriteExt;
    if let Ok(mut text) = serde_json::to_string(r) {
        text.push('\n');
        let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(text.as_bytes())).await;
    }
}

/// Writes one response line on the blocking connection.
fn write_line(stream: &mut std::os::unix::net::UnixStream, r: &Response) -> std::io::Result<()> {
    let mut text = serde_json::to_string(r).map_err(std::io::Error::other)?;
    text.push('\n');
    stream.write_all(text.as_bytes())
}

/// The listing itself (blocking thread).
fn list(
    mut stream: std::os::unix::net::UnixStream,
    bpffs: &std::path::Path,
    carpdev: &str,
    query: &FlowQuery,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let table = match FlowTable::open_pinned(bpffs, carpdev, false) {
        Ok(t) => t,
        Err(e) => {
            return write_line(
                &mut stream,
                &Response::Error(format!("opening the flow table: {e}")),
            );
        }
    };
    let limit = query.limit.unwrap_or(u64::MAX);
    let mut listed = 0u64;
    let mut cursor = ScanCursor::default();
    let mut slice = Vec::with_capacity(PAGE + 64);
    loop {
        slice.clear();
        let end = table.scan_slice(&mut cursor, PAGE, &mut slice);
        let now_ns = monotonic().as_nanos();
        let mut page = Vec::new();
        for (k, e) in &slice {
            if listed == limit {
                break;
            }
            let r = row(k, e, now_ns);
            if query.matches(&r) {
                page.push(r);
                listed += 1;
            }
        }
        for rows in page.chunks(ROWS_PER_LINE) {
            write_line(&mut stream, &Response::FlowsPage(rows.to_vec()))?;
        }
        if end || listed == limit {
            break;
        }
    }
    write_line(&mut stream, &Response::FlowsEnd { listed })
}

/// One flow as `carpctl flows` shows it.
pub fn row(
    k: &carp_common::maps::FlowKey,
    e: &carp_common::maps::FlowEntry,
    now_ns: u64,
) -> FlowRow {
    let key = flowmap::key_from_kernel(k);
    let ep = |e: &crate::sync::Endpoint| match e.addr {
        std::net::IpAddr::V6(a) => format!("[{a}]:{}", e.port),
        a => format!("{a}:{}", e.port),
    };
    FlowRow {
        proto: match k.proto {
            proto::IPPROTO_TCP => "tcp".into(),
            proto::IPPROTO_UDP => "udp".into(),
            proto::IPPROTO_ICMP => "icmp".into(),
            proto::IPPROTO_ICMPV6 => "icmp6".into(),
            p => p.to_string(),
        },
        lo: ep(&key.lo),
        hi: ep(&key.hi),
        state: FlowTcpState::from_u8(e.tcp_state).as_str().into(),
        creator: e.creator,
        id: e.id,
        owner: e.owner,
        learned: e.learned(),
        packets: e.packets,
        bytes: e.bytes,
        age_s: now_ns.saturating_sub(e.created_ns) / 1_000_000_000,
        idle_s: now_ns.saturating_sub(e.last_seen_ns) / 1_000_000_000,
    }
}
