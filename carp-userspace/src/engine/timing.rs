//! The timer formulas of spec §4: advert interval, master-down interval and the preference value T.
//!
//! All of them are pure functions of (advbase, advskew) so the engine, the simulator's property
//! bounds and the daemon's status output agree on one definition.

use std::time::Duration;

/// One advskew step: 1/256 s, exactly 3 906 250 ns.
const SKEW_STEP_NS: u64 = 1_000_000_000 / 256;

/// How a BACKUP computes its master-down interval (spec §4; the choice only affects how fast this
/// node takes over, never interop).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MasterDownMode {
    /// FreeBSD, ucarp and OpenBSD 1.342: 3·advbase + advskew/256 s; the skew is tripled only when
    /// advbase is 0, and 3/256 s is used when both are 0. Our default (fastest takeover).
    #[default]
    Classic,
    /// OpenBSD 1.370: 3·(advbase + advskew/256) s, 3/256 s when both are 0.
    Obsd1370,
}

/// The advert interval of a MASTER: advbase + advskew/256 s, or 1/256 s when both are 0 (OpenBSD).
pub fn advert_interval(advbase: u8, advskew: u8) -> Duration {
    if advbase == 0 && advskew == 0 {
        return Duration::from_nanos(SKEW_STEP_NS);
    }
    Duration::from_secs(u64::from(advbase))
        + Duration::from_nanos(u64::from(advskew) * SKEW_STEP_NS)
}

/// The master-down interval of a BACKUP under `mode`.
pub fn master_down_interval(advbase: u8, advskew: u8, mode: MasterDownMode) -> Duration {
    let base = Duration::from_secs(3 * u64::from(advbase));
    let skew = u64::from(advskew) * SKEW_STEP_NS;
    match mode {
        _ if advbase == 0 && advskew == 0 => Duration::from_nanos(3 * SKEW_STEP_NS),
        MasterDownMode::Classic if advbase == 0 => Duration::from_nanos(3 * skew),
        MasterDownMode::Classic => base + Duration::from_nanos(skew),
        MasterDownMode::Obsd1370 => base + Duration::from_nanos(3 * skew),
    }
}

/// T = advbase + advskew/256 in units of 1/256 s; smaller is more preferred. Integer so that
/// equality (the BSD tie) is exact.
pub fn preference(advbase: u8, advskew: u8) -> u32 {
    u32::from(advbase) * 256 + u32::from(advskew)
}

/// The rule-3 threshold 3·advbase + advskew/256 in 1/256 s units: an advertised T above it means
/// the master would time out anyway (spec §4, BACKUP rule 3; the own skew counts, not tripled).
pub fn going_to_time_out_threshold(advbase: u8, advskew: u8) -> u32 {
    3 * u32::from(advbase) * 256 + u32::from(advskew)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_step_is_exact() {
        assert_eq!(advert_interval(0, 128), Duration::from_millis(500));
        assert_eq!(advert_interval(254, 254).as_nanos(), 254_992_187_500);
    }

    #[test]
    fn preference_orders_like_seconds() {
        assert!(preference(1, 255) < preference(2, 0));
        assert!(preference(0, 1) > preference(0, 0));
        assert_eq!(preference(255, 255), 65535);
    }

    #[test]
    fn rule3_threshold_counts_own_skew_once() {
        assert_eq!(going_to_time_out_threshold(1, 100), 3 * 256 + 100);
    }
}
