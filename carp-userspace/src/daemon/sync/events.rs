//! The daemon's side of each sync turn: starting the driver, rebuilding it on SIGHUP, following the
//! syncdev's link, one wake-up (flow events, sync packets, the scan, the bulk pace, deferrals) and
//! carrying out the engine's actions (send, apply, demote, release).
use super::{
    Deferral, EVENTS_PER_WAKE, MAX_BULK_RESERVE, PACKETS_PER_WAKE, Replication, SCAN_DUTY,
    SCAN_INTERVAL, SCAN_INTERVAL_MAX, Seen, SyncDriver, SyncWake, flowmap,
};

use carp_common::maps::{FLOW_EVENT_DEFER, FLOW_EVENT_NEW};

use super::{
    learned::{apply, finish_writes, flush_learned},
    scan::scan_slice,
};
use crate::daemon::{Daemon, monotonic, netlink::LinkEvent};

use crate::dataplane::flows::DeferredFrame;
use crate::engine::State;
use crate::sync::conntrack::CtRole;
use crate::{
    config::Config,
    engine::HostEvent,
    sync::{BulkState, SyncAction, SyncEvent},
};

/// Sends the engine's packets; failures are counted and logged (`log_due`).
pub(super) fn send(r: &mut Replication, packets: &[Vec<u8>], send_errors: &mut u64) {
    let sock = r.sock.get_mut();
    let gso_was_on = sock.gso_off().is_none();
    let (failed, err) = sock.send_all(packets);
    if gso_was_on && let Some(e) = sock.gso_off() {
        tracing::info!(
            "pfsync: the kernel refuses UDP GSO sends on {} ({e}): one send per sync packet from now on",
            r.syncdev
        );
    }
    if let Some(e) = err {
        let before = *send_errors;
        *send_errors += failed;
        if log_due(before, *send_errors) {
            tracing::warn!(
                "pfsync: send on {}: {e} ({} send errors in all)",
                r.syncdev,
                *send_errors
            );
        }
    }
}

/// True when a failure count that went from `before` to `after` is due a log line: the first
/// failure, then one per thousand (a dead link or a missing kernel feature must not flood the log).
pub(super) fn log_due(before: u64, after: u64) -> bool {
    before == 0 && after > 0 || before / 1000 != after / 1000
}

/// Puts a deferred first packet back into its carpdev's receive path.
pub(super) fn reinject(d: &mut Deferral, mut frame: DeferredFrame) {
    crate::dataplane::reinject::complete_partial_checksum(&mut frame.frame);
    let res = match &d.reinjector {
        Some(r) => r.inject(frame.ifindex, &frame.frame),
        None => Err(std::io::Error::other("no re-injection program")),
    };
    if let Err(e) = res {
        d.reinject_failed += 1;
        // A kernel without live frames would otherwise flood the log.
        if log_due(d.reinject_failed - 1, d.reinject_failed) {
            tracing::warn!(
                "pfsync: defer: re-injecting a first packet on ifindex {}: {e} ({} failures in all)",
                frame.ifindex,
                d.reinject_failed
            );
        }
    }
}

impl Daemon {
    /// Sync comes up: demote group "carp" and request the bulk transfer (spec §8).
    pub(in crate::daemon) async fn sync_start(&mut self) {
        let now = self.now();
        let (mut actions, index) = match self.sync.as_mut().and_then(|s| s.repl.as_mut()) {
            Some(r) => {
                // After the capability drop: the thread holds no more than the rest of carpd.
                if let Some(ct) = r.ct.as_mut() {
                    ct.start();
                }
                (r.engine.handle(now, SyncEvent::Start), r.syncdev_index)
            }
            None => return,
        };
        // A syncdev already down at start holds its +1 like one that goes down later.
        if let Ok(false) = self.nl.is_running(index).await
            && let Some(r) = self.sync.as_mut().and_then(|s| s.repl.as_mut())
        {
            tracing::warn!("pfsync: syncdev {} is down", r.syncdev);
            actions.extend(r.engine.handle(now, SyncEvent::Link { up: false }));
        }
        self.sync_actions(actions).await;
    }

    /// SIGHUP: applies changed `[pfsync]` and `[flows]` tables. The driver is rebuilt from the new
    /// config (the old socket and ring are closed first): each carpdev's flow settings are rewritten,
    /// the flows in the dataplane are adopted as at a restart, and with `[pfsync]` a bulk transfer is
    /// requested without the +32 demotion (a running gateway already has the flows; demoting it would
    /// hand its MASTERs to the peer). A demotion the old engine held is given back. Call it after the
    /// carp interfaces were reloaded, so new carpdevs are attached.
    pub(in crate::daemon) async fn sync_reload(&mut self, new: &Config) {
        if new.pfsync == self.config.pfsync && new.flows == self.config.flows {
            return;
        }
        let running = (self.config.pfsync.clone(), self.config.flows.clone());
        self.config.pfsync = new.pfsync.clone();
        self.config.flows = new.flows.clone();
        let held = self
            .sync
            .as_ref()
            .and_then(|s| s.repl.as_ref())
            .map_or(0, |r| r.engine.held_demotion());
        if let Some(s) = self.sync.as_mut() {
            // The new engine does not know these holds: the frames go on now rather than never.
            for (_, frame) in std::mem::take(&mut s.defer.held) {
                s.defer.released_timeout += 1;
                reinject(&mut s.defer, frame);
            }
        }
        self.sync = None;
        if held != 0 {
            tracing::info!("pfsync: group carp demote {:+} (sync reloaded)", -held);
            self.feed(HostEvent::GroupAdjust {
                group: crate::engine::DEFAULT_GROUP.to_string(),
                delta: -held,
            })
            .await;
        }
        match SyncDriver::open(&self.config, &self.options.bpffs, true) {
            Ok(driver) => self.sync = driver,
            Err(e) => {
                // The checks before the reload passed, but opening failed anyway (the socket's bind,
                // say): the running tables come back, so a bad reload never drops replication.
                (self.config.pfsync, self.config.flows) = running;
                match SyncDriver::open(&self.config, &self.options.bpffs, true) {
                    Ok(driver) => {
                        tracing::error!(
                            "SIGHUP: [pfsync]/[flows]: {e:#}; keeping the running [pfsync]/[flows]"
                        );
                        self.sync = driver;
                        self.sync_start().await;
                    }
                    Err(e2) => tracing::error!(
                        "SIGHUP: [pfsync]/[flows]: {e:#}; re-opening the running ones failed too ({e2:#}): flows are not tracked until fixed"
                    ),
                }
                return;
            }
        }
        self.sync_start().await;
        tracing::info!(
            "SIGHUP: [pfsync]/[flows] applied (tracking {}, stateful {}, sync {})",
            if self.sync.is_some() { "on" } else { "off" },
            self.config.flows.stateful,
            self.config
                .pfsync
                .as_ref()
                .map_or("off".to_string(), |p| format!("on {}", p.syncdev))
        );
    }

    /// The syncdev's link changed: the engine holds +1 on group "carp" while it is down.
    pub(in crate::daemon) async fn sync_link(&mut self, ev: &LinkEvent) {
        let LinkEvent::Link { index, running } = *ev else {
            return;
        };
        let now = self.now();
        let actions = match self.sync.as_mut().and_then(|s| s.repl.as_mut()) {
            Some(r) if r.syncdev_index == index => {
                r.engine.handle(now, SyncEvent::Link { up: running })
            }
            _ => return,
        };
        self.sync_actions(actions).await;
    }

    /// Does whatever is due: flow events, sync packets, the scan, engine timers.
    pub(in crate::daemon) async fn on_sync(&mut self, _wake: SyncWake) {
        let Some(s) = self.sync.as_mut() else {
            return;
        };
        let mut actions = Vec::new();
        let now = monotonic().max(self.last_now);
        if let Some(r) = s.repl.as_mut()
            && let Some(ct) = r.ct.as_ref()
        {
            for n in ct.take_notices() {
                match n {
                    super::conntrack::Notice::BulkApplied { .. } => {
                        actions.extend(r.engine.conntrack_bulk_done())
                    }
                }
            }
        }
        // Kernel events first, so a flow's INS precedes any update the scan might find.
        let events = s.table.drain_events_with_frames(EVENTS_PER_WAKE);
        // A full batch may have left events behind, which no new readiness would announce.
        s.backlog = events.len() >= EVENTS_PER_WAKE;
        for (ev, frame) in events {
            let f = flowmap::flow_state(&ev.key, &ev.entry);
            if let Some(frame) = frame {
                s.defer.held_total += 1;
                if s.repl.is_some() {
                    s.defer.held.insert(f.id, frame);
                } else {
                    // Cannot happen (deferral is only on with [pfsync]); never lose the packet.
                    reinject(&mut s.defer, frame);
                }
            }
            let seen = s.reported.entry(ev.key).or_insert(Seen {
                last_seen_ns: 0,
                id: f.id,
                pass: s.pass,
            });
            seen.last_seen_ns = seen.last_seen_ns.max(ev.entry.last_seen_ns);
            seen.id = f.id;
            let new = ev.kind == FLOW_EVENT_NEW || ev.kind == FLOW_EVENT_DEFER;
            if new && ev.entry.creator == s.node_id && ev.entry.owner != 0 {
                let owner = usize::from(ev.entry.owner);
                s.own_flows[owner] += 1;
                if let Some(p) = s.scan.as_mut() {
                    p.own[owner] += 1;
                }
            }
            if let Some(r) = s.repl.as_mut() {
                let event = if new {
                    SyncEvent::LocalInsert(f)
                } else {
                    SyncEvent::LocalUpdate(f)
                };
                actions.extend(r.engine.handle(now, event));
            }
        }
        let mut received = false;
        // Every datagram read spends one, junk (a wrong TTL) included: a flood faster than recvmsg
        // must not keep the loop here.
        let mut budget = PACKETS_PER_WAKE;
        if let Some(r) = s.repl.as_mut() {
            loop {
                let got = r.sock.get_mut().recv(&mut s.buf, &mut budget);
                match got {
                    Ok(Some(rx)) => {
                        received = true;
                        for packet in rx.datagrams(&s.buf) {
                            actions.extend(r.engine.handle(now, SyncEvent::Packet(packet)));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("pfsync: receive on {}: {e}", r.syncdev);
                        break;
                    }
                }
            }
        }
        // The socket's readiness was cleared before this read: packets left in it (a bulk transfer
        // arrives faster than one turn reads) would wait for the next packet or timer to wake us.
        if budget == 0 {
            s.backlog = true;
        }
        // Room for a big bulk transfer up front: growing a map of a million keys by doubling would
        // rehash it ~20 times while the flows arrive.
        if let Some(n) = s.repl.as_ref().and_then(|r| r.engine.bulk_expected()) {
            let n = (n as usize).min(MAX_BULK_RESERVE);
            s.reported.reserve(n.saturating_sub(s.reported.len()));
        }
        // A bulk transfer in either direction goes first: a pass over a million flows would stall it
        // for a fifth of a second. The bound on a bulk (its timeouts) bounds the wait.
        let bulk_busy = s.repl.as_ref().is_some_and(|r| {
            r.engine.bulk_sending() || matches!(r.engine.bulk_state(), BulkState::Receiving { .. })
        });
        let scan_due = now >= s.next_scan;
        let mut scanned = false;
        if bulk_busy && scan_due {
            // Postponed (a pass under way pauses), not due again at once (the loop would spin on it).
            s.next_scan = now + SCAN_INTERVAL;
        } else if scan_due {
            match scan_slice(s, now, &mut actions) {
                Some(took) => {
                    scanned = true;
                    s.next_scan = now + SCAN_INTERVAL.max(took * SCAN_DUTY).min(SCAN_INTERVAL_MAX);
                }
                // The next slice once the loop has served whatever else is waiting.
                None => s.backlog = true,
            }
        }
        // The lease on the live-peer view is renewed every second, scan or bulk or not; a peer that
        // (re)appeared is written at once (the dataplane leaves its flows to it from now).
        if now.saturating_duration_since(s.live_written_at) >= SCAN_INTERVAL
            || (received && s.live_peers(now) != s.written_live)
        {
            s.write_live(now);
        }
        if let Some(r) = s.repl.as_mut()
            && r.engine.next_deadline().is_some_and(|t| t <= now)
        {
            actions.extend(r.engine.handle(now, SyncEvent::Timer));
        }
        self.sync_actions(actions).await;
        if scanned {
            self.refresh_kept_ifs().await;
        }
    }

    /// Carries out the engine's actions.
    pub(in crate::daemon) async fn sync_actions(&mut self, actions: Vec<SyncAction>) {
        let mut demotes = Vec::new();
        let mut conntrack_in = Vec::new();
        if let Some(s) = self.sync.as_mut() {
            // Sent together at the end: a bulk tick's packets leave in a few GSO sends. (Nothing
            // below waits on them: the other actions are local.)
            let mut sends = Vec::new();
            for a in actions {
                match a {
                    SyncAction::Send(bytes) => sends.push(bytes),
                    SyncAction::Apply(op) => apply(s, op),
                    SyncAction::Demote {
                        group,
                        delta,
                        reason,
                    } => demotes.push((group, delta, reason)),
                    // The engine keeps the deadline; the frame (if the dataplane deferred one) is here.
                    SyncAction::Hold { .. } => {}
                    SyncAction::Conntrack { from, msg } => conntrack_in.push((from, msg)),
                    SyncAction::Release { flow, acked } => {
                        if let Some(frame) = s.defer.held.remove(&flow) {
                            if acked {
                                s.defer.released_ack += 1;
                            } else {
                                s.defer.released_timeout += 1;
                            }
                            reinject(&mut s.defer, frame);
                        }
                    }
                }
            }
            flush_learned(s);
            // The end of a bulk transfer lifts the demotion: the map must hold every learned flow
            // before this node may take MASTER with it (and before `carpctl sync` says done), not
            // only once the writer thread gets to the last batch.
            if !demotes.is_empty() {
                finish_writes(s);
            }
            if let Some(r) = s.repl.as_mut()
                && !sends.is_empty()
            {
                send(r, &sends, &mut s.send_errors);
            }
            // One hand-over per turn; without `conntrack = true` a peer's conntrack messages are dropped.
            if let Some(ct) = s.repl.as_ref().and_then(|r| r.ct.as_ref()) {
                ct.remote(std::mem::take(&mut conntrack_in));
            }
        }
        for (group, delta, reason) in demotes {
            tracing::info!("pfsync: group {group} demote {delta:+} ({reason})");
            self.feed(HostEvent::GroupAdjust {
                group: group.to_string(),
                delta,
            })
            .await;
        }
    }
}

impl Daemon {
    /// Tells the conntrack thread this node's CARP role: MASTER (or resuming as MASTER) of every
    /// vhid or of none, without balancing; otherwise shared (the mirror's `CtRole` says why).
    pub(in crate::daemon) fn sync_role(&mut self) {
        let role = if self.ifs.is_empty() || self.ifs.iter().any(|c| c.cfg.is_balanced()) {
            CtRole::Shared
        } else if self
            .ifs
            .iter()
            .all(|c| c.state == State::Master || c.resuming)
        {
            CtRole::Master
        } else if self
            .ifs
            .iter()
            .all(|c| c.state != State::Master && !c.resuming)
        {
            CtRole::Backup
        } else {
            CtRole::Shared
        };
        if let Some(ct) = self
            .sync
            .as_mut()
            .and_then(|s| s.repl.as_mut())
            .and_then(|r| r.ct.as_mut())
        {
            ct.role(role);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_logged_first_then_once_a_thousand() {
        let logged: Vec<u64> = (1..=3001).filter(|&n| log_due(n - 1, n)).collect();
        assert_eq!(logged, [1, 1000, 2000, 3000]);
        // A GSO run of 44 failing together crosses a thousand without landing on it.
        assert!(log_due(0, 44));
        assert!(!log_due(44, 88));
        assert!(log_due(980, 1024));
        assert!(!log_due(5, 5));
    }
}
