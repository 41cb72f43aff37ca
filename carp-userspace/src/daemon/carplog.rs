//! `net.inet.carp.log`: which carp events carpd logs, at OpenBSD's syslog levels (ip_carp.c's
//! CARP_LOG: a message of level `l` is logged when the sysctl is at least `l`; default 2, LOG_CRIT).
//!
//! OpenBSD logs a MASTER/BACKUP change at LOG_CRIT, a received TTL other than 255 and a bad version at
//! LOG_NOTICE, a short packet, a bad checksum and a bad hash at LOG_INFO, a looped advert at
//! LOG_WARNING, and does not log a missing vhid or a failed pullup at all (here LOG_INFO, as their
//! neighbours). One departure: OpenBSD logs changes to or from INIT at LOG_WARNING, which its default
//! of 2 hides; carpd logs them with the other state changes at LOG_CRIT, because its one line per state
//! change (design §2) is how an operator sees a vhid come up. The counters never depend on the level.

/// LOG_CRIT: state changes.
pub const STATE: u8 = 2;
/// LOG_WARNING: a flood cut by the rate limits (carpd's own), a looped advert.
pub const WARNING: u8 = 4;
/// LOG_NOTICE: TTL not 255, CARP version not 2.
pub const NOTICE: u8 = 5;
/// LOG_INFO: short or truncated packets, bad checksum, unknown vhid, bad hash.
pub const INFO: u8 = 6;

/// The level of one of the dataplane's drop causes (`ratelog::DATAPLANE_CAUSES`).
pub fn cause_level(cause: &str) -> u8 {
    match cause {
        "badttl" | "badver" => NOTICE,
        "events_ratelimited" => WARNING,
        _ => INFO,
    }
}

/// True when a message of `level` is logged with the sysctl at `setting`.
pub fn enabled(setting: u8, level: u8) -> bool {
    setting >= level
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openbsd_levels() {
        // The default (2) logs state changes only.
        assert!(enabled(2, STATE));
        assert!(!enabled(2, cause_level("badttl")));
        assert!(!enabled(2, INFO));
        assert!(!enabled(1, STATE), "below LOG_CRIT not even state changes");
        assert!(enabled(5, cause_level("badver")) && !enabled(5, cause_level("badsum")));
        assert!(enabled(4, cause_level("events_ratelimited")));
        assert!(enabled(7, INFO));
    }
}
