//! A hold-down on takeovers that an advert's unauthenticated fields cause (issue #16 item 7).
//!
//! What CARP's HMAC does not cover: the digest is computed over the version/type byte, the vhid, the
//! virtual addresses and the 8 counter bytes (spec §2), so an advert's advbase, advskew and demote bytes,
//! and the IP header around it, can be rewritten by anyone on the segment without the HMAC failing. CARP
//! has no replay window either (the counter is only a per-node cookie), so a captured advert of the
//! real master can be sent again at will with, say, demote 255: a BACKUP then takes over (rule "master
//! has a higher demote count"), the real master's next advert puts it back to BACKUP, and every replayed
//! packet flips it once more (gratuitous ARPs, hooks, a VIP moving back and forth). The same holds for a
//! rewritten advbase/advskew (preempt, "going to time out") and for a replayed bow-out (255/255).
//!
//! The guard: after a takeover caused by what an advert says (not by the master-down timer) and a
//! step-down to a better master after it, a further advert-caused takeover within the hold-down
//! (`hold`) is refused, and the advert then only restarts the master-down timer, as a normal advert
//! from a live master does. So a replayer gets one flip and back per hold-down instead of one per
//! packet, and sequences without the flip back are untouched. It is per vhid, not per
//! source as one might first think: the IP source is not covered by the HMAC either, so a replayer
//! rotating source addresses would pass a per-source limit every time. A
//! master that really stops advertising is still taken over by the timer, and stepping down to a better
//! master (the safe direction) is never held. The cost: a real master that demotes itself twice within
//! the hold-down, having taken the role back in between, is taken over the second time only when the
//! hold-down ends.

use std::time::Duration;

use super::Time;

/// The shortest hold-down; the engine holds for one master-down interval if that is longer (as long
/// as a backup waits anyway before it believes a silent master dead).
pub const MIN_HOLD: Duration = Duration::from_secs(3);

/// When the last advert-caused takeover happened, whether a better master was yielded to since, and
/// how many takeovers were held.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlipGuard {
    last: Option<Time>,
    yielded: bool,
    held: u64,
}

impl FlipGuard {
    /// True (and recorded) when a takeover caused by an advert may happen at `now`: unless this vhid
    /// took over on an advert and then stepped down to a better master within the last `hold`, the
    /// flip-flop a replay makes. Takeovers that do not flip back (a master that demoted itself and
    /// stays demoted, a bow-out) are never held.
    pub fn allow(&mut self, now: Time, hold: Duration) -> bool {
        if self.yielded && self.last.is_some_and(|at| now < at + hold) {
            self.held += 1;
            return false;
        }
        self.last = Some(now);
        self.yielded = false;
        true
    }

    /// This vhid stepped down because an advert showed a better master.
    pub fn yielded(&mut self) {
        self.yielded = true;
    }

    /// Takeovers refused so far.
    pub fn held(&self) -> u64 {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flip_back_holds_the_next_takeover() {
        let mut g = FlipGuard::default();
        let t = |s: u64| Time::from_nanos(s * 1_000_000_000);
        // Takeovers without a step-down to a better master in between are never held.
        assert!(g.allow(t(100), MIN_HOLD));
        assert!(g.allow(t(101), MIN_HOLD));
        g.yielded();
        assert!(!g.allow(t(102), MIN_HOLD));
        assert!(!g.allow(t(103), MIN_HOLD));
        assert_eq!(g.held(), 2);
        assert!(g.allow(t(104), MIN_HOLD));
        g.yielded();
        assert!(!g.allow(t(106), MIN_HOLD));
        assert!(g.allow(t(107), MIN_HOLD));
    }
}
