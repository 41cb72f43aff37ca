//! The periodic audit: the dataplane's drop counters and the standby senders' repeats, logged at most
//! once a minute per cause (the kernel never logs per packet).
use super::{Daemon, ratelog};
use std::time::Duration;

/// How often the controller reads the dataplane's drop counters for the log.
pub(super) const AUDIT_INTERVAL: Duration = Duration::from_secs(2);

impl Daemon {
    /// Logs, at most once a minute, that the standby senders repeated adverts: the loop was held up
    /// past half an advert interval, which without them the peers would have seen as a gap.
    pub(super) fn audit_standby(&mut self) {
        let Some(s) = &self.standby else {
            return;
        };
        let total = s.resent();
        let due = self
            .standby_logged
            .is_none_or(|t| t.elapsed() >= ratelog::LOG_INTERVAL);
        if total > self.standby_seen && due {
            tracing::info!(
                "standby senders repeated {} adverts since the last report (carpd's loop was held up past half an advert interval; {total} in all)",
                total - self.standby_seen
            );
            self.standby_seen = total;
            self.standby_logged = Some(std::time::Instant::now());
        }
    }

    /// Logs (rate-limited) the adverts each carpdev's XDP program dropped since the last look, per cause,
    /// summed over every vhid slot (unknown vhids count in their own slots).
    pub(super) fn audit_dataplane(&mut self) {
        let now = std::time::Instant::now();
        let level = self.config.carp.log;
        for dev in &mut self.devs {
            let mut totals = [0u64; ratelog::DATAPLANE_CAUSES.len()];
            for vhid in 0..=255u8 {
                let Ok(s) = dev.maps.stats(vhid) else {
                    continue;
                };
                for (t, (cause, _)) in totals.iter_mut().zip(ratelog::DATAPLANE_CAUSES) {
                    *t += ratelog::cause_count(&s, cause);
                }
            }
            for ((total, (seen, log)), (cause, what)) in totals
                .iter()
                .zip(dev.audit.iter_mut())
                .zip(ratelog::DATAPLANE_CAUSES)
            {
                // After a hitless restart the first look also reports what the previous carpd saw: the
                // counters belong to the dataplane, which outlives controllers.
                let fresh = total.saturating_sub(*seen);
                *seen = *total;
                if fresh == 0 {
                    continue;
                }
                if !super::carplog::enabled(level, super::carplog::cause_level(cause)) {
                    log.count_only(fresh);
                } else if let Some(n) = log.hit_many(now, fresh) {
                    tracing::warn!(
                        "{}: the dataplane dropped {n} advert(s): {what} ({cause}); {} in all (logged at most once a minute)",
                        dev.name,
                        log.total
                    );
                }
            }
        }
    }
}
