//! What the loop learns about its own stalls: how late each engine deadline was served (a histogram),
//! and the backup's rule for a late wake-up.
//!
//! A BACKUP whose master-down deadline fires late cannot tell a dead master from its own stall: while
//! its thread was held up, the master's adverts may still sit in a NIC queue or a softirq backlog of the
//! same stalled CPU, not yet seen by XDP. So when the deadline was served more than `LATE` past its time,
//! the loop gives the kernel `GRACE` to deliver what is pending (sleeping, so softirqs and ksoftirqd get
//! the CPU), drains the advert rings again and judges the master by the wire: an authenticated advert
//! (from the ring, or the kernel's HMAC-checked last-advert record) restarts the master-down timer as
//! usual, and the decision is counted as "late wake-up, master still alive". Only when nothing arrived
//! does the engine declare the master down. The grace is paid only after a late wake-up, so an on-time
//! backup takes over exactly as before; a late one at most `GRACE` later than it already was.

use std::time::Duration;

/// A deadline served later than this counts as a late wake-up for the backup's rule.
pub const LATE: Duration = Duration::from_millis(1);
/// How long a late backup lets pending frames be delivered before judging the master.
pub const GRACE: Duration = Duration::from_millis(2);

/// Upper bounds of the lateness histogram's buckets, in seconds (the last, +Inf, is implied).
pub const BUCKETS: [f64; 10] = [
    0.000_1, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5,
];

/// The loop's lateness histogram and the backup's late wake-up decisions.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoopStats {
    /// Deadlines served per lateness bucket (not cumulative; one more than `BUCKETS`: +Inf).
    pub lateness_buckets: Vec<u64>,
    /// The sum of all lateness, seconds.
    pub lateness_sum_seconds: f64,
    /// Deadlines served.
    pub deadlines: u64,
    /// The worst lateness seen, seconds.
    pub lateness_max_seconds: f64,
    /// Late master-down deadlines after which an authenticated advert showed the master alive.
    pub late_wakeups_master_alive: u64,
    /// Late master-down deadlines after which the master was declared down (nothing arrived).
    pub late_wakeups_master_down: u64,
    /// Adverts the standby senders repeated (all vhids).
    pub standby_repeats: u64,
}

impl LoopStats {
    /// Counts one deadline served `late` past its time.
    pub fn record(&mut self, late: Duration) {
        if self.lateness_buckets.len() != BUCKETS.len() + 1 {
            self.lateness_buckets = vec![0; BUCKETS.len() + 1];
        }
        let s = late.as_secs_f64();
        let b = BUCKETS
            .iter()
            .position(|&u| s <= u)
            .unwrap_or(BUCKETS.len());
        self.lateness_buckets[b] += 1;
        self.lateness_sum_seconds += s;
        self.deadlines += 1;
        self.lateness_max_seconds = self.lateness_max_seconds.max(s);
    }

    /// The buckets as (upper bound, count) pairs, +Inf last, for a metrics encoder.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(
                self.lateness_buckets
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(0)),
            )
            .collect()
    }
}

/// Who sent one vhid's adverts (`carpctl counters`, metrics `carp_vhid_adverts_total{sender}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdvertCounts {
    /// Queued ahead in the kernel advert queue and released by the qdisc's timer.
    pub by_kernel: u64,
    /// Sent at once by carpd's loop (without the queue: every advert; with it: the first after a
    /// change, bow-outs).
    pub by_loop: u64,
    /// Queued adverts withdrawn before they left (bow-out, state change, demotion).
    pub withdrawn: u64,
    /// Offers the kernel refused because the queue held its limit already.
    pub refused_full: u64,
}

/// The loop lateness as an OpenMetrics histogram.
#[derive(Debug)]
pub struct LatenessHistogram(pub LoopStats);

impl prometheus_client::metrics::TypedMetric for LatenessHistogram {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for LatenessHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.lateness_sum_seconds,
            self.0.deadlines,
            &self.0.buckets(),
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// Registers the per-vhid advert sender counters; `vhids` gives (labels, counts) per vhid.
pub fn register_vhid_metrics(
    reg: &mut prometheus_client::registry::Registry,
    vhids: &[(Vec<(String, String)>, AdvertCounts)],
) {
    use prometheus_client::metrics::{counter::Counter, family::Family};
    let sent = Family::<Vec<(String, String)>, Counter>::default();
    reg.register(
        "carp_vhid_adverts",
        "Adverts each vhid sent, by sender: kernel (queued ahead, released by the qdisc timer), loop (sent by carpd's thread at once)",
        sent.clone(),
    );
    let withdrawn = Family::<Vec<(String, String)>, Counter>::default();
    reg.register(
        "carp_vhid_adverts_withdrawn",
        "Queued adverts withdrawn before they left (bow-out, state change, demotion)",
        withdrawn.clone(),
    );
    for (l, c) in vhids {
        for (sender, n) in [("kernel", c.by_kernel), ("loop", c.by_loop)] {
            let mut l = l.clone();
            l.push(("sender".into(), sender.into()));
            sent.get_or_create(&l).inc_by(n);
        }
        withdrawn.get_or_create(l).inc_by(c.withdrawn);
    }
}

/// Registers carpd's loop metrics (`carp_loop_*`) in `reg`, from `s`.
pub fn register_metrics(reg: &mut prometheus_client::registry::Registry, s: &LoopStats) {
    use prometheus_client::metrics::counter::{ConstCounter, Counter};
    reg.register(
        "carp_loop_lateness_seconds",
        "How late carpd's loop served each engine deadline (advert or master-down timer)",
        LatenessHistogram(s.clone()),
    );
    let c = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    reg.register(
        "carp_loop_late_wakeups_master_alive",
        "Late master-down deadlines after which an authenticated advert showed the master alive",
        c(s.late_wakeups_master_alive),
    );
    reg.register(
        "carp_loop_late_wakeups_master_down",
        "Late master-down deadlines after which nothing had arrived and the master was declared down",
        c(s.late_wakeups_master_down),
    );
    reg.register(
        "carp_standby_repeats",
        "Adverts the standby senders repeated because the loop was held up",
        ConstCounter::new(s.standby_repeats),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_lands_in_its_bucket() {
        let mut s = LoopStats::default();
        s.record(Duration::from_micros(50));
        s.record(Duration::from_micros(1500));
        s.record(Duration::from_millis(30));
        s.record(Duration::from_secs(2));
        let b = s.buckets();
        assert_eq!(b.len(), BUCKETS.len() + 1);
        assert_eq!(b[0], (0.000_1, 1));
        assert_eq!(b[3], (0.002, 1));
        assert_eq!(b[7], (0.05, 1));
        assert_eq!(b[10].1, 1);
        assert!(b[10].0.is_infinite());
        assert_eq!(s.deadlines, 4);
        assert!((s.lateness_max_seconds - 2.0).abs() < 1e-9);
    }

    #[test]
    fn the_histogram_encodes_cumulatively() {
        let mut s = LoopStats::default();
        s.record(Duration::from_micros(50));
        s.record(Duration::from_millis(3));
        let mut reg = prometheus_client::registry::Registry::default();
        register_metrics(&mut reg, &s);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("carp_loop_lateness_seconds_bucket{le=\"0.0001\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("carp_loop_lateness_seconds_bucket{le=\"0.005\"} 2"),
            "{out}"
        );
        assert!(out.contains("carp_loop_lateness_seconds_count 2"), "{out}");
        assert!(
            out.contains("carp_loop_late_wakeups_master_alive_total 0"),
            "{out}"
        );
    }
}
