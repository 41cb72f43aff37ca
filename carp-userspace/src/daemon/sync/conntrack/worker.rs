//! The conntrack thread's loop: waits on its channel (the reader's kernel events, the runtime
//! thread's peer messages, at most `INPUTS_PER_TURN` a turn), feeds the mirror, and carries out what
//! it returns (batched kernel changes, sealed sync packets, the paced bulk and the resync after lost
//! events), so none of it runs on the daemon's runtime thread.
use super::*;
use std::sync::atomic::Ordering;

fn poll1(fd: i32, timeout: Duration) {
    let mut fds = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = timeout.as_millis().min(1000) as i32;
    // SAFETY: fds is a live array of one pollfd.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
}

impl Worker {
    pub(super) fn run(mut self) {
        let mut acts = Vec::new();
        // Input left in the channel by the last turn's bound: no waiting before the next.
        let mut more = false;
        loop {
            let now = monotonic();
            let wait = if more {
                Duration::ZERO
            } else {
                self.mirror
                    .next_deadline()
                    .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
            };
            poll1(self.wake.as_raw_fd(), wait);
            let mut drain = [0u8; 8];
            // SAFETY: reads at most 8 bytes into `drain`; a non-blocking eventfd may have nothing.
            unsafe { libc::read(self.wake.as_raw_fd(), drain.as_mut_ptr().cast(), 8) };
            let now = monotonic();
            let mut taken = 0;
            more = false;
            loop {
                if taken >= INPUTS_PER_TURN {
                    more = true;
                    break;
                }
                match self.rx.try_recv() {
                    Ok(Input::Start) => acts.extend(self.mirror.start(now)),
                    Ok(Input::Remote(v)) => {
                        taken += v.len();
                        for (from, m) in v {
                            acts.extend(self.mirror.remote(now, from, m));
                        }
                    }
                    Ok(Input::Local(v)) => {
                        taken += v.len();
                        self.reader.queued.fetch_sub(v.len(), Ordering::Relaxed);
                        for ev in v {
                            acts.extend(self.mirror.local(now, ev));
                        }
                    }
                    Ok(Input::Overrun { why, buffer }) => self.overrun(now, why, buffer, &mut acts),
                    Ok(Input::Live(p)) => self.mirror.set_live(p),
                    Ok(Input::Role(r)) => self.mirror.set_role(now, r),
                    Ok(Input::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                        self.execute(now, std::mem::take(&mut acts));
                        return;
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.check_bulk_room();
            acts.extend(self.mirror.timer(now, REFRESH_BUDGET));
            self.execute(now, std::mem::take(&mut acts));
            self.publish();
        }
    }

    /// Events were lost: count it and repair the table from a dump.
    fn overrun(&mut self, now: Time, why: &str, buffer: usize, acts: &mut Vec<CtAction>) {
        self.io.overruns += 1;
        tracing::warn!(
            "conntrack: events were lost ({why}, {} so far); resyncing from a table dump (event buffer now {} MiB)",
            self.io.overruns,
            buffer >> 20
        );
        match self.inject.dump() {
            Ok(t) => {
                self.io.dumped += t.len() as u64;
                acts.extend(self.mirror.resync(now, t));
            }
            Err(e) => tracing::error!("{e:#}"),
        }
    }

    /// A peer's bulk is coming: say so if the kernel table cannot take it.
    fn check_bulk_room(&mut self) {
        let Some(n) = self.mirror.bulk_expected() else {
            return;
        };
        if self.checked_bulk == Some(n) {
            return;
        }
        self.checked_bulk = Some(n);
        let max = ctnetlink::sysctl("nf_conntrack_max").unwrap_or(u64::MAX);
        let count = ctnetlink::sysctl("nf_conntrack_count").unwrap_or(0);
        if count + u64::from(n) > max {
            tracing::error!(
                "conntrack: the peer's bulk holds {n} entries but nf_conntrack_max is {max} ({count} in use): \
                 entries beyond it will be refused (ENOMEM); raise it: \
                 sysctl -w net.netfilter.nf_conntrack_max={}",
                (count + u64::from(n)) * 5 / 4
            );
        }
    }

    fn execute(&mut self, _now: Time, acts: Vec<CtAction>) {
        let mut ops = Vec::new();
        let mut packets = Vec::new();
        for a in acts {
            match a {
                CtAction::Send(msgs) => packets.push(self.seal(&msgs)),
                CtAction::Apply(op) => ops.push(op),
                CtAction::Dump => {
                    self.apply(&mut ops);
                    self.send(&mut packets);
                    match self.inject.dump() {
                        Ok(t) => {
                            self.io.dumped += t.len() as u64;
                            let n = t.len();
                            let started = std::time::Instant::now();
                            let bulk = self.mirror.bulk_out(t);
                            self.send_bulk(bulk);
                            tracing::info!(
                                "conntrack: bulk of {n} entries sent in {:?}",
                                started.elapsed()
                            );
                        }
                        Err(e) => tracing::error!("{e:#}"),
                    }
                    self.mirror.bulk_out_sent(monotonic());
                }
                CtAction::BulkApplied { complete } => {
                    // The entries before it must be in the kernel before the demotion may go.
                    self.apply(&mut ops);
                    tracing::info!(
                        "conntrack: bulk transfer {} ({} entries learned)",
                        if complete {
                            "applied"
                        } else {
                            "given up (no peer answered)"
                        },
                        self.mirror.learned()
                    );
                    self.shared
                        .notices
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Notice::BulkApplied { complete });
                    self.shared.notify.notify_one();
                }
            }
        }
        self.apply(&mut ops);
        self.send(&mut packets);
    }

    fn seal(&self, msgs: &[CtMessage]) -> Vec<u8> {
        let mut b = PacketBuilder::with_capacity(self.mtu);
        for m in msgs {
            b.push(&Message::Ct(m.clone()), 0);
        }
        self.sealer.seal(b)
    }

    fn send(&mut self, packets: &mut Vec<Vec<u8>>) {
        if packets.is_empty() {
            return;
        }
        let (failed, err) = self.sock.send_all(packets);
        if let Some(e) = err {
            let before = self.io.send_errors;
            self.io.send_errors += failed;
            if log_due(before + 1) {
                tracing::warn!(
                    "conntrack: sync send: {e} ({} failed so far)",
                    self.io.send_errors
                );
            }
        }
        packets.clear();
    }

    /// Sends a bulk paced like the flow bulk, so the peer's socket buffer keeps up.
    fn send_bulk(&mut self, acts: Vec<CtAction>) {
        let mut packets: Vec<Vec<u8>> = Vec::new();
        for a in acts {
            if let CtAction::Send(m) = a {
                packets.push(self.seal(&m));
            }
            if packets.len() >= BULK_PACKETS_PER_TICK {
                let t = std::time::Instant::now();
                self.send(&mut packets);
                std::thread::sleep(BULK_TICK.saturating_sub(t.elapsed()));
            }
        }
        self.send(&mut packets);
    }

    fn apply(&mut self, ops: &mut Vec<CtOp>) {
        if ops.is_empty() {
            return;
        }
        match self.inject.apply(ops) {
            Ok(errs) => {
                for (op, e) in ops.iter().zip(errs) {
                    if e == 0 {
                        continue;
                    }
                    self.io.refused += 1;
                    let n = self.refused.entry(e).or_default();
                    *n += 1;
                    if log_due(*n) {
                        let what = match op {
                            CtOp::Create(_) => "create",
                            CtOp::Update(_) => "update",
                            CtOp::Delete(_) => "delete",
                        };
                        let extra = if e == libc::ENOMEM {
                            format!(
                                " (nf_conntrack_count {} of nf_conntrack_max {})",
                                ctnetlink::sysctl("nf_conntrack_count").unwrap_or(0),
                                ctnetlink::sysctl("nf_conntrack_max").unwrap_or(0)
                            )
                        } else {
                            String::new()
                        };
                        tracing::warn!(
                            "conntrack: the kernel refused a {what} ({}, {n} so far): {}{extra}",
                            errno_name(e),
                            ctnetlink::explain(e)
                        );
                    }
                }
            }
            Err(e) => tracing::error!("{e:#}"),
        }
        ops.clear();
    }

    pub(super) fn publish(&mut self) {
        let mut s = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        s.mirror = *self.mirror.counters();
        self.io.echoes = self.reader.echoes.load(Ordering::Relaxed);
        s.io = self.io;
        s.refused = self
            .refused
            .iter()
            .map(|(e, n)| (errno_name(*e), *n))
            .collect();
        s.entries = self.mirror.len() as u64;
        s.learned = self.mirror.learned() as u64;
        s.bulk = Some(self.mirror.bulk_state());
    }
}
