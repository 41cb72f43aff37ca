//! `[timing]`: how carpd keeps its adverts on time when its own thread is not (issue #17): the kernel
//! advert queue's horizon, and the opt-in real-time scheduling of the loop and the standby senders.
//!
//! ```toml
//! [timing]
//! advert_queue_ms = 100   # hand a MASTER's adverts to the kernel this far ahead (0 = off)
//! rt_priority = 0         # SCHED_RR priority 1..=99 for carpd's loop and standby senders (0 = off)
//! mlockall = false        # lock carpd's memory (no page-fault stalls); on by default with rt_priority
//! ```

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::ConfigError;

/// The default horizon of the kernel advert queue.
pub const DEFAULT_ADVERT_QUEUE: Duration = Duration::from_millis(100);
/// The longest horizon accepted: a carpd stopped longer than this plus the peers' master-down is
/// declared dead, as it should be.
pub const MAX_ADVERT_QUEUE_MS: i64 = 1000;

/// The validated `[timing]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimingConfig {
    /// How far ahead a MASTER queues its adverts in the kernel (zero: off, the loop sends them).
    #[serde(serialize_with = "as_ms", rename = "advert_queue_ms")]
    pub advert_queue: Duration,
    /// SCHED_RR priority of the loop and the standby senders (0: normal scheduling).
    pub rt_priority: u8,
    /// mlockall(MCL_CURRENT | MCL_FUTURE) at start-up.
    pub mlockall: bool,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig {
            advert_queue: DEFAULT_ADVERT_QUEUE,
            rt_priority: 0,
            mlockall: false,
        }
    }
}

/// `[timing]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTiming {
    advert_queue_ms: Option<Spanned<i64>>,
    rt_priority: Option<Spanned<i64>>,
    mlockall: Option<bool>,
}

/// Checks `[timing]`; errors name the file, the line and the key.
pub fn validate(
    file: &Path,
    text: &str,
    raw: Option<RawTiming>,
) -> Result<TimingConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(TimingConfig::default());
    };
    let err = |v: &Spanned<i64>, message: String| ConfigError {
        file: file.into(),
        line: Some(text[..v.span().start.min(text.len())].matches('\n').count() + 1),
        message,
    };
    let advert_queue = match raw.advert_queue_ms {
        None => DEFAULT_ADVERT_QUEUE,
        Some(v) if (0..=MAX_ADVERT_QUEUE_MS).contains(v.get_ref()) => {
            Duration::from_millis(*v.get_ref() as u64)
        }
        Some(v) => {
            return Err(err(
                &v,
                format!(
                    "timing.advert_queue_ms = {} is out of range: use 0 (off) ..= {MAX_ADVERT_QUEUE_MS}",
                    v.get_ref()
                ),
            ));
        }
    };
    let rt_priority = match raw.rt_priority {
        None => 0,
        Some(v) if (0..=99).contains(v.get_ref()) => *v.get_ref() as u8,
        Some(v) => {
            return Err(err(
                &v,
                format!(
                    "timing.rt_priority = {} is out of range: use 0 (off) or a SCHED_RR priority 1..=99",
                    v.get_ref()
                ),
            ));
        }
    };
    Ok(TimingConfig {
        advert_queue,
        rt_priority,
        mlockall: raw.mlockall.unwrap_or(rt_priority > 0),
    })
}
