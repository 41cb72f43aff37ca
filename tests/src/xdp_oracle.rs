//! The XDP advert intake against its userspace twin (issue #16 item 19): one frame goes through the
//! XDP program carpd runs (BPF_PROG_TEST_RUN) and through `carp::wire::ip::receive_frame` (the
//! checks in OpenBSD's order, HMAC left out: the kernel hands adverts over for the controller to
//! verify). They must agree on whether the frame is a well-formed advert for vhid 1, which the
//! program then hands to the controller and drops. Used by the in-suite fuzz test
//! (`tests/tests/xdp_fuzz.rs`); there is no cargo-fuzz target for it (libFuzzer would need root and
//! the loaded program in its process).
use carp::dataplane::{Dataplane, maps::Maps};
use carp_common::maps::{AdvertLimit, BalanceMode, VhidEntry, VhidState};
use std::net::{IpAddr, Ipv4Addr};

/// XDP_DROP.
const XDP_DROP: u32 = 1;

/// The program loaded with vhid 1 BACKUP (running, not answering for the VIP) and limits lifted.
pub struct Oracle {
    dp: Dataplane,
    maps: Maps,
}

impl Oracle {
    /// Loads the program unattached (needs root).
    pub fn new() -> Oracle {
        let mut dp = Dataplane::load_unattached().expect("load XDP object");
        let mut maps = dp.maps().expect("maps");
        maps.set_vhid(
            1,
            VhidEntry::new(VhidState::Backup, BalanceMode::None, [0, 0, 0x5e, 0, 1, 1]),
        )
        .expect("vhid");
        maps.add_vip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1)
            .expect("vip");
        maps.set_advert_limit(
            1,
            AdvertLimit::new(1_000_000_000, 1_000_000, 1_000_000_000, 1_000_000),
        )
        .expect("limits");
        Oracle { dp, maps }
    }

    /// Runs `frame` through both; Err describes a disagreement.
    pub fn check(&mut self, frame: &[u8]) -> Result<(), String> {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, as no NIC delivers one.
        if frame.len() < 14 {
            return Ok(());
        }
        let before = self.maps.stats(1).expect("stats").adverts_to_controller;
        let (verdict, _) = crate::run_xdp(self.dp.program().expect("program"), frame);
        let handed = self.maps.stats(1).expect("stats").adverts_to_controller - before;
        self.maps.drain_events();
        let user = carp::wire::ip::receive_frame(frame, |v| v == 1, |_| true);
        // A VLAN-tagged frame belongs to another segment: the program passes it untouched (see
        // carp-ebpf eth.rs); the twin parses through one tag.
        let tagged = matches!(&user, Ok((eth, _)) if eth.vlan.is_some());
        let accepted = user.is_ok() && !tagged;
        match (accepted, handed, verdict) {
            (true, 1, XDP_DROP) | (false, 0, _) => Ok(()),
            _ => Err(format!(
                "userspace {}, XDP handed {handed} with verdict {verdict}: {frame:02x?}",
                match &user {
                    Ok(_) if tagged => "accepts (VLAN-tagged)".to_string(),
                    Ok(_) => "accepts".to_string(),
                    Err(e) => format!("rejects ({e:?})"),
                }
            )),
        }
    }
}

impl Default for Oracle {
    fn default() -> Self {
        Self::new()
    }
}
