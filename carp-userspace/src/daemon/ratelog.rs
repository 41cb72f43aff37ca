//! Rate-limited logging of bad input: a stranger flooding adverts with a wrong passphrase must not flood
//! the journal too. Each cause is logged the first time, then at most once per interval with the number
//! of occurrences in between; the counts themselves are never lost.
use std::time::{Duration, Instant};

/// How often one cause may be logged again.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// One cause's log budget and count.
#[derive(Debug, Default)]
pub struct RateLog {
    last: Option<Instant>,
    since_last: u64,
    /// Every occurrence ever, logged or not.
    pub total: u64,
}

impl RateLog {
    /// Counts one occurrence; returns `Some(n)` when it should be logged now, `n` being the occurrences
    /// since the last line (1 for the first).
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.hit_many(now, 1)
    }

    /// Counts `n` occurrences that are not to be logged (`net.inet.carp.log` below their level): they
    /// still count, and the next line logged reports them.
    pub fn count_only(&mut self, n: u64) {
        self.total += n;
        self.since_last += n;
    }

    /// Counts `n` occurrences at once (read from a kernel counter); like `hit` otherwise.
    pub fn hit_many(&mut self, now: Instant, n: u64) -> Option<u64> {
        self.total += n;
        self.since_last += n;
        match self.last {
            Some(t) if now.duration_since(t) < LOG_INTERVAL => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.since_last))
            }
        }
    }
}

/// The dataplane's drop causes the controller reports: the carpstats counter name, what it means.
pub const DATAPLANE_CAUSES: [(&str, &str); 7] = [
    ("badttl", "TTL or hop limit not 255"),
    ("badlen", "IP payload shorter than a CARP header"),
    ("hdrops", "truncated frame"),
    ("badsum", "bad CARP checksum"),
    ("badver", "CARP version not 2"),
    ("badvhid", "a vhid not configured on this carpdev"),
    (
        "events_ratelimited",
        "over the advert event rate of its source or vhid (a flood of valid-looking adverts)",
    ),
];

/// The value of one of `DATAPLANE_CAUSES` in a counter set.
pub fn cause_count(s: &carp_common::maps::CarpStats, cause: &str) -> u64 {
    match cause {
        "badttl" => s.badttl,
        "badlen" => s.badlen,
        "hdrops" => s.hdrops,
        "badsum" => s.badsum,
        "badver" => s.badver,
        "badvhid" => s.badvhid,
        "events_ratelimited" => s.events_ratelimited,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_first_then_once_per_interval_with_the_count() {
        let mut r = RateLog::default();
        let t0 = Instant::now();
        assert_eq!(r.hit(t0), Some(1));
        for _ in 0..49_999 {
            assert_eq!(r.hit(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(r.hit(t0 + LOG_INTERVAL), Some(50_000));
        assert_eq!(r.total, 50_001);
        assert_eq!(r.hit_many(t0 + LOG_INTERVAL, 7), None);
        assert_eq!(r.hit_many(t0 + 2 * LOG_INTERVAL, 3), Some(10));
    }

    #[test]
    fn every_cause_reads_its_own_counter() {
        let s = carp_common::maps::CarpStats {
            badttl: 1,
            badlen: 2,
            hdrops: 3,
            badsum: 4,
            badver: 5,
            badvhid: 6,
            events_ratelimited: 7,
            ..Default::default()
        };
        let got: Vec<u64> = DATAPLANE_CAUSES
            .iter()
            .map(|(c, _)| cause_count(&s, c))
            .collect();
        assert_eq!(got, [1, 2, 3, 4, 5, 6, 7]);
    }
}
