//! Writing what the engine learned from peers into the flow map: one change at a time in the engine's
//! order, inserts gathered into BPF_MAP_UPDATE_BATCH writes handed to a writer thread, merges with the
//! map's own copy.
use super::{Seen, SyncDriver, flowmap};

use carp_common::maps::{self as km};

use crate::dataplane::flows::BatchWriter;
use crate::sync::{FlowId, FlowOp};

/// Learned flows waiting to be written to the flow map in one BPF_MAP_UPDATE_BATCH (`flush_learned`).
#[derive(Default)]
pub(super) struct LearnedBatch {
    pub(super) keys: Vec<km::FlowKey>,
    pub(super) entries: Vec<km::FlowEntry>,
    /// False once the kernel refused a batch update (before Linux 5.6): one syscall per flow from then.
    pub(super) unsupported: bool,
}

/// Writes one change the engine learned from a peer into the flow map, marked learned. Inserts are
/// gathered and written together by `flush_learned` (a bulk transfer brings ~10 per packet and a
/// million in all: one syscall per flow was most of the receiver's time); every other op first
/// flushes them, so the map sees the ops in the engine's order.
pub(super) fn apply(s: &mut SyncDriver, op: FlowOp) {
    match op {
        FlowOp::Insert(f) => {
            let Some(k) = flowmap::kernel_key(&f.key) else {
                return;
            };
            s.learned.keys.push(k);
            s.learned.entries.push(flowmap::kernel_entry(&f));
        }
        FlowOp::Update(f) => {
            flush_learned(s);
            finish_writes(s);
            let Some(k) = flowmap::kernel_key(&f.key) else {
                return;
            };
            write_learned(s, k, flowmap::kernel_entry(&f));
        }
        FlowOp::Delete(f) => {
            flush_learned(s);
            finish_writes(s);
            let Some(k) = flowmap::kernel_key(&f.key) else {
                return;
            };
            // The key may hold another flow by now (a new connection on the same 5-tuple).
            if s.table.get(&k).is_some_and(|e| entry_id(&e) == f.id) {
                s.table.remove(&k);
                s.reported.remove(&k);
            }
        }
        FlowOp::Clear { creator } => {
            flush_learned(s);
            finish_writes(s);
            for (k, e) in s.table.scan() {
                if e.creator == creator && e.learned() {
                    s.table.remove(&k);
                    s.reported.remove(&k);
                }
            }
        }
    }
}

/// Writes one learned flow, merged into the map's copy if the key is there already.
pub(super) fn write_learned(s: &mut SyncDriver, k: km::FlowKey, theirs: km::FlowEntry) {
    let id = entry_id(&theirs);
    let entry = match s.table.get(&k) {
        Some(ours) => flowmap::merge_kernel_entries(&ours, &theirs),
        None => theirs,
    };
    if let Err(e) = s.table.insert(k, entry) {
        tracing::warn!("flows: writing a learned flow: {e}");
        return;
    }
    // Written by us, not seen here: a scan must not report it back as local traffic.
    let seen = s.reported.entry(k).or_insert(Seen {
        last_seen_ns: 0,
        id,
        pass: s.pass,
    });
    seen.last_seen_ns = seen.last_seen_ns.max(entry.last_seen_ns);
    seen.id = id;
}

/// The flow a learned entry holds.
pub(super) fn entry_id(e: &km::FlowEntry) -> FlowId {
    FlowId::new(e.creator, e.id)
}

/// Logs why a batch write of learned flows failed; true if the kernel refuses batch updates
/// altogether (before Linux 5.6), so they are written one by one from now on.
pub(super) fn batch_refused(e: &std::io::Error) -> bool {
    if matches!(e.raw_os_error(), Some(libc::EINVAL | 524 /* ENOTSUPP */)) {
        tracing::info!(
            "flows: the kernel refuses batch map updates ({e}): learned flows are written one by one"
        );
        true
    } else {
        tracing::warn!("flows: batch-writing learned flows: {e}; writing them one by one");
        false
    }
}

/// Writes the gathered learned inserts with one BPF_MAP_UPDATE_BATCH. The batch overwrites, so a key
/// the map holds already (the dataplane saw the flow here too; every such key is in `reported`, from its
/// event, a scan or an earlier write) is merged on its own first, as `write_learned` does. (The kernel
/// takes no BPF_NOEXIST in a batch; a flow the dataplane creates in the instant between our look and the
/// write is overwritten, as it would be between `write_learned`'s read and write.)
pub(super) fn flush_learned(s: &mut SyncDriver) {
    // The batch in flight goes first (a key of this one may be in it).
    finish_writes(s);
    if s.learned.keys.is_empty() {
        return;
    }
    let mut b = std::mem::take(&mut s.learned);
    let mut fresh = 0;
    for i in 0..b.keys.len() {
        // One look-up per flow decides and, for a new key, does the bookkeeping of the write ahead (a
        // failed batch is written again one by one below, which redoes it).
        let known = match s.reported.entry(b.keys[i]) {
            std::collections::hash_map::Entry::Occupied(_) => true,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Seen {
                    last_seen_ns: b.entries[i].last_seen_ns,
                    id: entry_id(&b.entries[i]),
                    pass: s.pass,
                });
                false
            }
        };
        if b.unsupported || known {
            write_learned(s, b.keys[i], b.entries[i]);
        } else {
            if fresh != i {
                b.keys[fresh] = b.keys[i];
                b.entries[fresh] = b.entries[i];
            }
            fresh += 1;
        }
    }
    if fresh > 0 && !b.unsupported {
        if !s.writer_tried {
            s.writer_tried = true;
            s.writer = BatchWriter::spawn(&s.table);
        }
        if let Some(w) = s.writer.as_mut() {
            b.keys.truncate(fresh);
            b.entries.truncate(fresh);
            let keys = std::mem::take(&mut b.keys);
            let entries = std::mem::take(&mut b.entries);
            match w.start(keys, entries) {
                Ok(()) => fresh = 0,
                Err((keys, entries)) => {
                    // The thread is gone: write them here from now on.
                    s.writer = None;
                    b.keys = keys;
                    b.entries = entries;
                }
            }
        }
    }
    if fresh > 0 {
        match s.table.insert_batch(&b.keys[..fresh], &b.entries[..fresh]) {
            Ok(_) => {}
            Err(e) => {
                b.unsupported |= batch_refused(&e);
                // Each write is idempotent: the ones the batch did write are written again.
                for i in 0..fresh {
                    write_learned(s, b.keys[i], b.entries[i]);
                }
            }
        }
    }
    b.keys.clear();
    b.entries.clear();
    s.learned = b;
}

/// Waits for the writer thread's batch in flight: afterwards the map holds every learned flow written
/// so far (a failed batch is written here one by one, as `flush_learned` would have).
pub(super) fn finish_writes(s: &mut SyncDriver) {
    let Some(done) = s.writer.as_mut().and_then(BatchWriter::finish) else {
        return;
    };
    if let Err(e) = done.result {
        s.learned.unsupported |= batch_refused(&e);
        for (k, e) in done.keys.iter().zip(&done.entries) {
            write_learned(s, *k, *e);
        }
    }
    // The buffers go round again.
    if s.learned.keys.is_empty() && s.learned.keys.capacity() == 0 {
        let (mut keys, mut entries) = (done.keys, done.entries);
        keys.clear();
        entries.clear();
        s.learned.keys = keys;
        s.learned.entries = entries;
    }
}
