//! The event reader: a thread of its own that owns the ctnetlink event socket and drains it while
//! the conntrack thread is busy (a bulk's inserts, a dump, a paced bulk send), so the kernel's
//! events never wait in the socket buffer behind our own work. Events go to the conntrack thread
//! through its input channel, in arrival order with the peers' messages.
//!
//! The queue between the two is bounded (`MAX_QUEUED` events): past it, events are dropped and the
//! conntrack thread told, as for a socket overrun, so it repairs the table from a dump instead of
//! the daemon growing without bound. An overrun (ENOBUFS) doubles the socket buffer up to
//! `EVENT_BUFFER_MAX` and is reported the same way.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::{EVENT_BUFFER, EVENT_BUFFER_MAX, EVENT_READS, Input, send_input};
use crate::ctnetlink::{self, CtEvent, CtSocket, EventRead};
use crate::sync::conntrack::LocalEvent;

/// Events queued for the conntrack thread at most (about 200 MB of entries).
pub(super) const MAX_QUEUED: usize = 1 << 20;
/// How long the reader sleeps in poll before it looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// What the reader shares with the conntrack thread and the driver.
pub(super) struct ReaderShared {
    /// Events sent and not yet taken by the conntrack thread.
    pub(super) queued: AtomicUsize,
    /// Set by the driver to end the thread.
    pub(super) stop: AtomicBool,
    /// Echoes of our own changes that got past the kernel's socket filter.
    pub(super) echoes: AtomicU64,
}

/// The reader thread's state.
pub(super) struct Reader {
    pub(super) events: CtSocket,
    pub(super) portid: u32,
    pub(super) tx: mpsc::Sender<Input>,
    pub(super) wake: Arc<std::os::fd::OwnedFd>,
    pub(super) shared: Arc<ReaderShared>,
}

/// Why events were lost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// The socket buffer overran (ENOBUFS): it grows.
    Overrun,
    /// The queue to the conntrack thread was full.
    QueueFull,
}

impl Reader {
    fn send(&self, i: Input) -> bool {
        send_input(&self.tx, &self.wake, i)
    }

    /// Grows the socket buffer after an overrun and tells the conntrack thread to resync.
    fn lost(&mut self, buffer: &mut usize, lost: Lost) -> bool {
        if lost == Lost::Overrun && *buffer < EVENT_BUFFER_MAX {
            *buffer *= 2;
            let _ = ctnetlink::force_rcvbuf(self.events.as_raw_fd(), *buffer);
        }
        self.send(Input::Overrun {
            why: match lost {
                Lost::Overrun => "overrun",
                Lost::QueueFull => "queue full",
            },
            buffer: ctnetlink::rcvbuf(self.events.as_raw_fd()),
        })
    }

    /// Runs until the driver sets `stop` or the conntrack thread is gone.
    pub(super) fn run(mut self) {
        let mut buffer = EVENT_BUFFER;
        let mut dropping = false;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let mut fds = [libc::pollfd {
                fd: self.events.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: fds is a live array of one pollfd.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, STOP_CHECK.as_millis() as i32) };
            let mut batch = Vec::new();
            let mut echoes = 0;
            let portid = self.portid;
            let read = self.events.read_events(EVENT_READS, |pid, ev| {
                // The socket filter drops these in the kernel; this catches any that slip past.
                if pid == portid {
                    echoes += 1;
                    return;
                }
                batch.push(match ev {
                    CtEvent::Update {
                        entry, has_mark, ..
                    } => LocalEvent::Update { entry, has_mark },
                    CtEvent::Destroy(k) => LocalEvent::Destroy(k),
                });
            });
            if echoes > 0 {
                self.shared.echoes.fetch_add(echoes, Ordering::Relaxed);
            }
            if !batch.is_empty() {
                let queued = self.shared.queued.load(Ordering::Relaxed);
                if queued + batch.len() > MAX_QUEUED {
                    // Tell once per stretch of drops; the resync after it repairs them all.
                    if !dropping && !self.lost(&mut buffer, Lost::QueueFull) {
                        return;
                    }
                    dropping = true;
                } else {
                    dropping = false;
                    self.shared.queued.fetch_add(batch.len(), Ordering::Relaxed);
                    if !self.send(Input::Local(batch)) {
                        return;
                    }
                }
            }
            match read {
                Ok(EventRead::Overrun) => {
                    if !self.lost(&mut buffer, Lost::Overrun) {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("conntrack: reading events: {e}");
                    std::thread::sleep(STOP_CHECK);
                }
            }
        }
    }
}
