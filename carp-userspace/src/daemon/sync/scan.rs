//! The scan of the flow table, one slice per turn: traffic to report since the last pass, idle flows
//! to expire, and flows the LRU evicted to forget.
use super::{SCAN_SLICE, Seen, SyncDriver, flowmap};
use std::time::Duration;

use carp_common::maps::{self as km, FlowTcpState};

use super::learned::{entry_id, finish_writes};

use crate::dataplane::flows::ScanCursor;
use crate::{
    engine::Time,
    sync::{FlowId, SyncAction, SyncEvent},
};

/// A scan pass under way: where it stands and what it found so far.
pub(super) struct ScanPass {
    pub(super) cursor: ScanCursor,
    // Flows this pass found gone (deleted cluster-wide at its end if ours).
    pub(super) gone: Vec<FlowId>,
    // Flows created here per owner, counted by this pass (`own_flows` once it ends).
    pub(super) own: Box<[u32; 256]>,
    // Time spent on the pass so far (the next pass waits `SCAN_DUTY` times as long).
    pub(super) took: Duration,
    // The slice's buffer, kept between slices.
    pub(super) buf: Vec<(km::FlowKey, km::FlowEntry)>,
}

/// One slice of a pass over the flow table (`SCAN_SLICE` flows): report traffic since the last pass,
/// expire idle flows, and, at the pass's end, forget flows the LRU evicted. Per flow it costs a map
/// read (batched) and one hash lookup: at a million flows a whole pass is ~0.2 s, in ~60 slices.
/// Returns the whole pass's time when the pass ended with this slice.
pub(super) fn scan_slice(
    s: &mut SyncDriver,
    now: Time,
    actions: &mut Vec<SyncAction>,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    finish_writes(s);
    let mut p = match s.scan.take() {
        Some(p) => p,
        None => {
            s.pass = s.pass.wrapping_add(1);
            ScanPass {
                cursor: ScanCursor::default(),
                gone: Vec::new(),
                own: Box::new([0; 256]),
                took: Duration::ZERO,
                buf: Vec::new(),
            }
        }
    };
    let pass = s.pass;
    let now_ns = now.as_nanos();
    let me = s.node_id;
    let mut slice = std::mem::take(&mut p.buf);
    slice.clear();
    let end = s.table.scan_slice(&mut p.cursor, SCAN_SLICE, &mut slice);
    let own = &mut p.own;
    let gone = &mut p.gone;
    for &(k, e) in &slice {
        let id = entry_id(&e);
        let idle = now_ns.saturating_sub(e.last_seen_ns) / 1_000_000;
        if idle > flowmap::idle_timeout_ms(k.proto, FlowTcpState::from_u8(e.tcp_state)) {
            s.table.remove(&k);
            if let Some(old) = s.reported.remove(&k)
                && old.id != id
            {
                gone.push(old.id);
            }
            if let Some(r) = s.repl.as_mut() {
                actions.extend(r.engine.handle(now, SyncEvent::LocalDelete(id)));
            }
            continue;
        }
        if e.creator == me && e.owner != 0 {
            own[usize::from(e.owner)] += 1;
        }
        let traffic = match s.reported.entry(k) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let seen = o.get_mut();
                seen.pass = pass;
                if seen.id != id {
                    // The key holds another flow now (a new connection on the same 5-tuple).
                    gone.push(seen.id);
                    seen.id = id;
                }
                let moved = e.last_seen_ns > seen.last_seen_ns;
                seen.last_seen_ns = seen.last_seen_ns.max(e.last_seen_ns);
                moved
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Seen {
                    last_seen_ns: e.last_seen_ns,
                    id,
                    pass,
                });
                e.last_seen_ns > 0
            }
        };
        if traffic && let Some(r) = s.repl.as_mut() {
            let f = flowmap::flow_state(&k, &e);
            actions.extend(r.engine.handle(now, SyncEvent::LocalUpdate(f)));
        }
    }
    p.buf = slice;
    if !end {
        p.took += started.elapsed();
        s.scan = Some(p);
        return None;
    }
    // The pass's time, this last slice and the wrap-up below included.
    let took = || p.took + started.elapsed();
    let mut gone = std::mem::take(&mut p.gone);
    // Flows created while the pass was under way were counted by their events into the pass too
    // (some twice, if the pass then found them: an over-count the next pass corrects, where missing
    // them could release a carp interface that still has flows).
    *s.own_flows = *p.own;
    // Keys this pass did not find are gone from the map (the LRU evicted them).
    s.reported.retain(|_, seen| {
        if seen.pass == pass {
            return true;
        }
        gone.push(seen.id);
        false
    });
    // Our own flows that left the map are deleted cluster-wide. A learned id can be missing because the
    // key holds another id (both nodes created the same 5-tuple): deleting it would remove the peer's
    // flow, so learned ids are left to the creator's delete or expiry.
    let Some(r) = s.repl.as_mut() else {
        return Some(took());
    };
    for id in gone {
        if id.creator != me {
            continue;
        }
        let still_mapped = r
            .engine
            .table()
            .get(&id)
            .and_then(|f| flowmap::kernel_key(&f.key))
            .is_some_and(|k| s.reported.get(&k).is_some_and(|v| v.id == id));
        // Still in the map under its key (a flow seen twice in this pass's list).
        if !still_mapped {
            actions.extend(r.engine.handle(now, SyncEvent::LocalDelete(id)));
        }
    }
    Some(took())
}
