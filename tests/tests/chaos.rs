//! The one-minute chaos run that `cargo xtask test` includes (`cargo xtask chaos --minutes N` runs longer
//! ones): random SIGKILLs, link flaps, partitions and demotes on three gateways must never leave two
//! MASTERs (after a heal) or none for longer than master-down plus one interval.
use carp_tests::{chaos, require_root};
use std::time::Duration;

#[test]
fn one_minute_of_chaos_keeps_exactly_one_master() {
    if !require_root("one_minute_of_chaos_keeps_exactly_one_master") {
        return;
    }
    // A fixed seed in the test suite (a failure replays exactly); `cargo xtask chaos` picks random ones.
    let report = chaos::run(&chaos::Options {
        duration: Duration::from_secs(60),
        seed: 20261129,
        prefix: "tchaos".into(),
    });
    print!("{}", report.render());
    assert!(report.passed(), "{}", report.render());
    assert!(
        report.faults.len() >= 6,
        "too few faults: {:?}",
        report.faults
    );
    assert!(report.pings.1 > 0, "the client never reached the VIP");
}
