//! The sans-IO election engine (spec §3 loop detection, §4 state machine, §5 ARP timing).
//!
//! A `Vhid` is the INIT/BACKUP/MASTER state machine of one virtual host. It is fed
//! `(now, Event)` and answers with `Action`s; it never reads a clock, opens a socket or sleeps.
//! The driver asks `next_deadline()` when to wake it with `Event::Timer`. Interface-group demotion
//! lives in `demote` (`Groups`), and `Host` ties several `Vhid`s and the groups of one machine
//! together the way OpenBSD does. HMAC verification and packet parsing happen before an advert
//! reaches the engine: `Advert` is only the fields the election reads.

mod demote;
pub mod flipguard;
mod host;
mod time;
mod timing;
mod vhid;
pub mod vrrp;

pub use demote::{DEFAULT_GROUP, DemoteChange, Groups};
pub use host::{CarpIf, Host, HostAction, HostEvent, NodeId};
pub use time::Time;
pub use timing::{
    MasterDownMode, advert_interval, going_to_time_out_threshold, master_down_interval, preference,
};
pub use vhid::Vhid;
pub use vrrp::{VrrpAdvertIn, VrrpElection};

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use carp_common::proto::CARP_BOW_OUT;

/// The state of one vhid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Not running: interface down, carpdev down or not started. Ignores adverts.
    Init,
    /// Listening for the master; takes over when the master-down timer expires.
    Backup,
    /// Owns the virtual addresses and advertises.
    Master,
}

impl State {
    /// The upper-case name used in logs and `carpctl status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-vhid configuration the election needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VhidConfig {
    /// The virtual host id, 1..=255.
    pub vhid: u8,
    /// Base advert interval in seconds (0..=254; 0 is OpenBSD's sub-second mode).
    pub advbase: u8,
    /// Skew in 1/256 s (0..=254); larger is less preferred.
    pub advskew: u8,
    /// `net.inet.carp.preempt` (a global sysctl, passed to every vhid).
    pub preempt: bool,
    /// Which master-down formula this backup uses.
    pub master_down_mode: MasterDownMode,
    /// ucarp's tie-break: on equal T a MASTER yields only to a numerically lower source address.
    pub ucarp_tiebreak: bool,
    /// Our own source addresses: adverts from them are loops, and the tie-break compares them.
    pub own_addrs: Vec<IpAddr>,
    /// The constant replay cookie sent as the counter of every advert (OpenBSD model, spec §3).
    pub cookie: [u8; 8],
    /// Run VRRP's election (`engine::vrrp`) instead of CARP's; `vhid` is then the VRID.
    pub vrrp: Option<VrrpElection>,
}

impl VhidConfig {
    /// A config with preempt off, classic master-down, no tie-break and no own addresses.
    pub fn new(vhid: u8, advbase: u8, advskew: u8, cookie: [u8; 8]) -> VhidConfig {
        VhidConfig {
            vhid,
            advbase,
            advskew,
            preempt: false,
            master_down_mode: MasterDownMode::Classic,
            ucarp_tiebreak: false,
            own_addrs: Vec::new(),
            cookie,
            vrrp: None,
        }
    }

    /// This vhid's advert interval as MASTER.
    pub fn advert_interval(&self) -> Duration {
        advert_interval(self.advbase, self.advskew)
    }

    /// This vhid's master-down interval as BACKUP.
    pub fn master_down_interval(&self) -> Duration {
        master_down_interval(self.advbase, self.advskew, self.master_down_mode)
    }
}

/// The fields of a received, already authenticated advert that the election reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    /// IP source address of the advert.
    pub src: IpAddr,
    /// vhid byte.
    pub vhid: u8,
    /// advbase byte (255 with advskew 255 = bow-out).
    pub advbase: u8,
    /// advskew byte.
    pub advskew: u8,
    /// demote byte (OpenBSD; FreeBSD and ucarp send 0).
    pub demote: u8,
    /// The 8 counter bytes as on the wire.
    pub counter: [u8; 8],
}

impl Advert {
    /// Whether this is a bow-out advert (advbase 255, advskew 255).
    pub fn is_bow_out(&self) -> bool {
        self.advbase == CARP_BOW_OUT && self.advskew == CARP_BOW_OUT
    }

    /// T of the sender in 1/256 s.
    pub fn preference(&self) -> u32 {
        preference(self.advbase, self.advskew)
    }
}

/// The state an operator forces (`ifconfig carpN state master|backup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForcedState {
    /// Run the master-down path now.
    Master,
    /// Stop advertising and restart the master-down timer.
    Backup,
}

/// An input to the engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The carp interface is administratively up (`ifconfig carpN up`, daemon start).
    Up,
    /// The carp interface goes down. A MASTER sends one bow-out advert first. With a zero
    /// `linger` it goes INIT at once (OpenBSD); otherwise it keeps MASTER (serving, not
    /// advertising) until another node's advert is heard or `linger` passes (make-before-break).
    Down {
        /// Longest time to keep serving after the bow-out.
        linger: Duration,
    },
    /// The carpdev's link came up.
    LinkUp,
    /// The carpdev's link went down: INIT without a bow-out (nothing can be sent).
    LinkDown,
    /// A valid advert (HMAC already checked by the caller) arrived on the carpdev.
    Advert(Advert),
    /// A valid VRRP advert (wire checks done by `wire::vrrp::check_vrrp`) for a VRRP vhid.
    VrrpAdvert(VrrpAdvertIn),
    /// A deadline from `next_deadline()` has been reached.
    Timer,
    /// The demote byte of this interface is now `demote`; `advertise` asks a MASTER to advertise
    /// at once (a group counter rose).
    Demote {
        /// Current demote byte (see `Groups::demote`).
        demote: u8,
        /// Send an advert now if MASTER.
        advertise: bool,
    },
    /// Forced state; ignored in INIT.
    Force(ForcedState),
    /// New settings (advbase, advskew, preempt, ...) while keeping the state.
    Reconfigure(VhidConfig),
}

/// Why a received advert was dropped before the election saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The counter equals our replay cookie: our own advert came back (network loop).
    OwnCookie,
    /// The IP source is one of our addresses.
    OwnAddress,
    /// The advert is for another vhid.
    WrongVhid,
    /// The advert asked for a takeover (its demote, advskew or advbase, or a bow-out), but one did so
    /// within the hold-down already: those fields are not authenticated (`flipguard`).
    TakeoverHeld,
}

/// An output of the engine, to be carried out by the driver in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with these fields and `counter` as the 8 counter bytes.
    SendAdvert {
        /// advbase byte.
        advbase: u8,
        /// advskew byte.
        advskew: u8,
        /// demote byte.
        demote: u8,
        /// counter bytes (our cookie).
        counter: [u8; 8],
        /// True for the single bow-out advert (advbase = advskew = 255).
        bow_out: bool,
    },
    /// Send a VRRP advert (VRRP vhids only) with this priority (0 on a planned stop) and interval.
    SendVrrp {
        /// Priority byte.
        priority: u8,
        /// Our Advertisement_Interval in centiseconds.
        interval_cs: u16,
    },
    /// Now MASTER: take the virtual addresses, answer ARP/ND.
    BecameMaster {
        /// Previous state.
        from: State,
        /// Why, for the log line.
        reason: &'static str,
    },
    /// Now BACKUP: stop answering for the virtual addresses.
    BecameBackup {
        /// Previous state.
        from: State,
        /// Why, for the log line.
        reason: &'static str,
    },
    /// Now INIT.
    BecameInit {
        /// Previous state.
        from: State,
        /// Why, for the log line.
        reason: &'static str,
    },
    /// Send gratuitous ARP for each IPv4 VIP and an unsolicited NA for each IPv6 VIP (spec §5).
    GratuitousArp {
        /// False right after taking over; true for the delayed repeat two adverts later.
        delayed: bool,
    },
    /// A received advert was dropped (count it: loop_drops / badvhid).
    Dropped(DropReason),
}

impl Action {
    /// For transitions: (from, to, reason).
    pub fn transition(&self) -> Option<(State, State, &'static str)> {
        match *self {
            Action::BecameMaster { from, reason } => Some((from, State::Master, reason)),
            Action::BecameBackup { from, reason } => Some((from, State::Backup, reason)),
            Action::BecameInit { from, reason } => Some((from, State::Init, reason)),
            _ => None,
        }
    }
}

/// Reasons logged with transitions, public so drivers and tests can match on them.
pub mod reason {
    /// BACKUP -> MASTER: no advert for the master-down interval.
    pub const MASTER_DOWN: &str = "master down timer expired";
    /// BACKUP -> MASTER: preempt is on and the master is less preferred.
    pub const PREEMPT: &str = "preempting a less preferred master";
    /// BACKUP -> MASTER: the master advertises a higher demote (rule 2).
    pub const HIGHER_DEMOTE: &str = "master has a higher demote count";
    /// BACKUP -> MASTER: the master's T exceeds our master-down threshold (rule 3).
    pub const GOING_TO_TIME_OUT: &str = "master is going to time out";
    /// BACKUP -> MASTER: the master sent a bow-out advert.
    pub const BOW_OUT: &str = "master bowed out";
    /// MASTER -> BACKUP: a more preferred master advertised.
    pub const MORE_PREFERRED: &str = "more preferred master seen";
    /// MASTER -> BACKUP: a master with a lower demote count advertised.
    pub const LOWER_DEMOTE: &str = "master with lower demote seen";
    /// MASTER -> BACKUP: equal T, the ucarp tie-break favours the lower address.
    pub const TIEBREAK: &str = "equal advertisement, lower address wins";
    /// Operator forced MASTER.
    pub const FORCED_MASTER: &str = "forced master";
    /// Operator forced BACKUP.
    pub const FORCED_BACKUP: &str = "forced backup";
    /// INIT -> BACKUP: interface came up.
    pub const UP: &str = "interface up";
    /// -> INIT: interface went down.
    pub const DOWN: &str = "interface down";
    /// INIT -> BACKUP: carpdev link came up.
    pub const LINK_UP: &str = "carpdev link up";
    /// -> INIT: carpdev link went down.
    pub const LINK_DOWN: &str = "carpdev link down";
    /// MASTER -> INIT after a bow-out: the new master was heard.
    pub const HANDED_OVER: &str = "new master heard after bow-out";
    /// MASTER -> INIT after a bow-out: nobody took over within the linger time.
    pub const LINGER_EXPIRED: &str = "bow-out linger expired";
}
