//! VRRP elections (RFC 9568 §6 for VRRPv3, RFC 3768 §6 for VRRPv2) on the same `Vhid` state machine
//! as CARP. A vhid whose `VhidConfig::vrrp` is set runs these rules instead of CARP's; everything
//! around the election (INIT on link loss, demote groups, forced states, the bow-out linger that
//! makes a planned stop make-before-break, the delayed gratuitous ARP) is shared.
//!
//! The rules, in RFC 9568's terms (our MASTER is the RFC's Active router):
//! - Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256 (v2: (256 - Priority) / 256 s);
//!   Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
//! - v3 backups learn Master_Adver_Interval from every advert they accept; v2 uses its own interval.
//! - The owner (priority 255) goes MASTER at start and ignores adverts.
//! - BACKUP: priority 0 -> master-down timer = Skew_Time; preempt off or priority >= ours -> learn the
//!   interval and restart the timer; otherwise discard (so a preempting backup takes over when the
//!   lower master's adverts stop counting, one Master_Down_Interval later).
//! - MASTER: priority 0 -> advertise at once; a higher priority, or an equal one from a higher
//!   primary address (unsigned, network order) -> BACKUP; otherwise discard (v3 also re-advertises
//!   at once, RFC 9568 §1.1 item 5, so the lower router hears us quickly).
//! - A planned stop sends priority 0.
//!
//! Interface-group demotion lowers the advertised priority (clamped to 1; an owner stays 255), the
//! way keepalived's tracking weights lower it.

use std::net::IpAddr;
use std::time::Duration;

use carp_common::vrrp::{VRRP_PRIORITY_OWNER, VRRP_PRIORITY_STOP};

use super::{Action, DropReason, State, Time, Vhid, vhid::ip_key};
use crate::wire::vrrp::VrrpVersion;

/// The VRRP settings of a vhid that runs VRRP instead of CARP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpElection {
    /// VRRPv3 or VRRPv2 (v2 does not learn the master's interval).
    pub version: VrrpVersion,
    /// Our priority: 1..=254, or 255 for the address owner.
    pub priority: u8,
    /// Our Advertisement_Interval in centiseconds (v2: seconds x 100).
    pub interval_cs: u16,
    /// Preempt_Mode: a higher-priority backup takes over from a lower master (RFC default true).
    pub preempt: bool,
}

/// The fields of a received, already validated VRRP advert that the election reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VrrpAdvertIn {
    /// IP source address (the sender's primary address, compared on equal priority).
    pub src: IpAddr,
    /// The VRID.
    pub vrid: u8,
    /// The sender's priority (0 = it is stopping).
    pub priority: u8,
    /// The advertised interval in centiseconds.
    pub interval_cs: u16,
}

/// Reasons for VRRP transitions, next to CARP's in `engine::reason`.
pub mod vrrp_reason {
    /// INIT -> MASTER at start: priority 255 owns the addresses.
    pub const OWNER: &str = "address owner (priority 255)";
    /// BACKUP -> MASTER: the master sent priority 0 and our skew time passed.
    pub const MASTER_STOPPED: &str = "master sent priority 0 (skew time expired)";
    /// MASTER -> BACKUP: a higher priority advertised.
    pub const HIGHER_PRIORITY: &str = "higher priority master seen";
    /// MASTER -> BACKUP: equal priority from a higher primary address.
    pub const HIGHER_ADDRESS: &str = "equal priority, higher primary address wins";
}

/// Shortest time a stopping VRRP master keeps serving after the new master's first advert.
pub const HANDOVER_GRACE_MIN: Duration = Duration::from_millis(500);

/// One centisecond.
const CS: Duration = Duration::from_millis(10);

/// Skew_Time for `priority` and a master interval of `interval_cs` (v3) or `(256-p)/256 s` (v2).
pub fn skew_time(version: VrrpVersion, priority: u8, interval_cs: u16) -> Duration {
    let weight = 256 - u64::from(priority);
    match version {
        VrrpVersion::V3 => Duration::from_nanos(weight * u64::from(interval_cs) * 10_000_000 / 256),
        VrrpVersion::V2 => Duration::from_nanos(weight * 1_000_000_000 / 256),
    }
}

/// Master_Down_Interval = 3 x Master_Adver_Interval + Skew_Time.
pub fn master_down_interval(version: VrrpVersion, priority: u8, interval_cs: u16) -> Duration {
    CS * 3 * u32::from(interval_cs) + skew_time(version, priority, interval_cs)
}

impl VrrpElection {
    /// The priority advertised with `demote` applied (an owner is never lowered, others stop at 1).
    pub fn effective_priority(&self, demote: u8) -> u8 {
        if self.priority == VRRP_PRIORITY_OWNER {
            return VRRP_PRIORITY_OWNER;
        }
        self.priority.saturating_sub(demote).max(1)
    }

    /// Our Advertisement_Interval.
    pub fn advert_interval(&self) -> Duration {
        CS * u32::from(self.interval_cs)
    }
}

impl Vhid {
    /// The VRRP settings, if this vhid runs VRRP.
    pub fn vrrp(&self) -> Option<&VrrpElection> {
        self.config.vrrp.as_ref()
    }

    /// The Master_Adver_Interval this VRRP backup currently uses, in centiseconds (learned from the
    /// master's adverts in v3; our own interval before any advert, and always in v2).
    pub fn master_adver_interval_cs(&self) -> Option<u16> {
        let v = self.config.vrrp.as_ref()?;
        Some(match v.version {
            VrrpVersion::V3 => self.learned_interval_cs.unwrap_or(v.interval_cs),
            VrrpVersion::V2 => v.interval_cs,
        })
    }

    /// The priority this VRRP vhid advertises now (demotion applied).
    pub fn vrrp_priority(&self) -> Option<u8> {
        self.config
            .vrrp
            .as_ref()
            .map(|v| v.effective_priority(self.demote))
    }

    /// VRRP's Master_Down_Interval with the current (learned) interval and priority.
    pub(super) fn vrrp_master_down(&self, v: &VrrpElection) -> Duration {
        let cs = self.master_adver_interval_cs().unwrap_or(v.interval_cs);
        master_down_interval(v.version, v.effective_priority(self.demote), cs)
    }

    /// The advert a VRRP master sends now.
    pub(super) fn vrrp_advert(&self, v: &VrrpElection, priority: u8) -> Action {
        Action::SendVrrp {
            priority,
            interval_cs: v.interval_cs,
        }
    }

    /// A received VRRP advert, after the wire checks (TTL, version, checksum, VRID, owner).
    pub(super) fn on_vrrp_advert(&mut self, now: Time, adv: &VrrpAdvertIn, out: &mut Vec<Action>) {
        let Some(v) = self.config.vrrp.clone() else {
            // A VRRP advert for a CARP vhid: the caller parsed it as the wrong protocol.
            out.push(Action::Dropped(DropReason::WrongVhid));
            return;
        };
        if adv.vrid != self.config.vhid {
            out.push(Action::Dropped(DropReason::WrongVhid));
            return;
        }
        if self.config.own_addrs.contains(&adv.src) {
            out.push(Action::Dropped(DropReason::OwnAddress));
            return;
        }
        // RFC 9568 §7.1: the owner discards every advert.
        if v.priority == VRRP_PRIORITY_OWNER {
            return;
        }
        let ours = v.effective_priority(self.demote);
        match self.state {
            State::Init => {}
            // Make-before-break: after our priority-0 advert, the new master's first advert ends it.
            State::Master if self.is_lingering() => {
                if adv.priority != VRRP_PRIORITY_STOP && !self.vrrp_handed_over {
                    // Keep serving a little longer: a new master without a virtual MAC (keepalived's
                    // default) moves clients with gratuitous ARP, which may leave after its first
                    // advert; frames still addressed to our MAC meanwhile must find the VIP here.
                    self.vrrp_handed_over = true;
                    let grace = (3 * v.advert_interval()).max(HANDOVER_GRACE_MIN);
                    let until = now + grace;
                    self.linger_until = Some(self.linger_until.map_or(until, |t| t.min(until)));
                }
            }
            State::Master => {
                if adv.priority == VRRP_PRIORITY_STOP {
                    self.send_advert(now, out);
                } else if adv.priority > ours {
                    self.learn_interval(&v, adv);
                    self.enter_backup(now, vrrp_reason::HIGHER_PRIORITY, out);
                } else if adv.priority == ours && self.sender_wins_tie(&adv.src) {
                    self.learn_interval(&v, adv);
                    self.enter_backup(now, vrrp_reason::HIGHER_ADDRESS, out);
                } else if v.version == VrrpVersion::V3 {
                    // Discard, and tell the lower router at once who is master.
                    self.send_advert(now, out);
                }
            }
            State::Backup => {
                self.last_master = Some(adv.src);
                if adv.priority == VRRP_PRIORITY_STOP {
                    let cs = self.master_adver_interval_cs().unwrap_or(v.interval_cs);
                    self.master_down_at = Some(now + skew_time(v.version, ours, cs));
                    self.vrrp_stop_seen = true;
                } else if !v.preempt || adv.priority >= ours {
                    self.learn_interval(&v, adv);
                    self.vrrp_stop_seen = false;
                    self.master_down_at = Some(now + self.vrrp_master_down(&v));
                }
                // Otherwise (preempt, lower priority): discard; the master-down timer runs out.
            }
        }
    }

    /// v3 backups take the master's interval (RFC 9568 §6.4.2); v2 keeps its own.
    fn learn_interval(&mut self, v: &VrrpElection, adv: &VrrpAdvertIn) {
        if v.version == VrrpVersion::V3 && adv.interval_cs != 0 {
            self.learned_interval_cs = Some(adv.interval_cs);
        }
    }

    /// On equal priority the higher primary address wins (compared as unsigned, network order).
    fn sender_wins_tie(&self, src: &IpAddr) -> bool {
        match self.own_addr_like(src) {
            Some(own) => ip_key(src) > ip_key(&own),
            // Without an own address to compare, yield: two masters are worse than one more election.
            None => true,
        }
    }
}
