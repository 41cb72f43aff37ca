//! The daemon loop's timer for the election engines' deadlines (adverts, master-down): a timerfd on
//! CLOCK_MONOTONIC armed with an absolute expiry, in nanoseconds.
//!
//! tokio's timer rounds every sleep up to a whole millisecond on its 1 ms wheel: at advbase 0 an advert
//! interval is 3.9 ms, so each one left up to a quarter interval late, and master-down intervals fired
//! up to 1-2 ms late. An absolute expiry also keeps the schedule where the engine put it however long
//! the loop took to get round to arming it.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use crate::engine::Time;

/// A one-shot timer the loop re-arms with the next deadline.
pub struct Deadline {
    fd: AsyncFd<OwnedFd>,
    armed: Option<Time>,
}

impl Deadline {
    /// A disarmed timer (needs a tokio runtime with IO enabled).
    pub fn new() -> io::Result<Deadline> {
        // SAFETY: timerfd_create takes no pointers; the fd it returns is ours alone.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the fd is owned by the AsyncFd, which deregisters it before closing it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(Deadline { fd, armed: None })
    }

    /// Fires at `at` (CLOCK_MONOTONIC, as `daemon::monotonic` reads it), at once if that has passed;
    /// None disarms it.
    pub fn arm(&mut self, at: Option<Time>) -> io::Result<()> {
        if self.armed == at {
            return Ok(());
        }
        let ns = at.map_or(0, |t| t.as_nanos().max(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: spec is a valid itimerspec; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = at;
        Ok(())
    }

    /// Waits until the armed deadline passes (forever if disarmed), then disarms.
    pub async fn wait(&mut self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return std::future::pending().await;
            };
            let mut expirations = 0u64;
            // SAFETY: reads 8 bytes into a u64 from our timerfd.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut expirations as *mut u64).cast(),
                    size_of::<u64>(),
                )
            };
            if n == size_of::<u64>() as isize {
                self.armed = None;
                return;
            }
            // EAGAIN: readiness without an expiry (the timer was re-armed meanwhile).
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn now() -> Time {
        crate::daemon::monotonic()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn fires_at_the_absolute_deadline_not_before() {
        rt().block_on(async {
            let mut d = Deadline::new().expect("timerfd");
            for _ in 0..20 {
                let at = now() + Duration::from_micros(3906);
                d.arm(Some(at)).expect("arm");
                d.wait().await;
                assert!(now() >= at, "fired early");
            }
        });
    }

    #[test]
    fn a_past_deadline_fires_at_once_and_disarmed_never_fires() {
        rt().block_on(async {
            let mut d = Deadline::new().expect("timerfd");
            d.arm(Some(Time::from_nanos(1))).expect("arm");
            tokio::time::timeout(Duration::from_secs(1), d.wait())
                .await
                .expect("a past deadline fires at once");
            d.arm(Some(now() + Duration::from_millis(5))).expect("arm");
            d.arm(None).expect("disarm");
            assert!(
                tokio::time::timeout(Duration::from_millis(50), d.wait())
                    .await
                    .is_err(),
                "a disarmed timer fired"
            );
            // Re-armed later than before: the earlier expiry is gone.
            let at = now() + Duration::from_millis(20);
            d.arm(Some(now() + Duration::from_millis(2))).expect("arm");
            d.arm(Some(at)).expect("re-arm");
            d.wait().await;
            assert!(now() >= at, "fired at the replaced expiry");
        });
    }
}
