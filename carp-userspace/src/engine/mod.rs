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
pub mod vrrp;

pub use demote::{DEFAULT_GROUP, DemoteChange, Groups};
pub use host::{CarpIf, Host, HostAction, HostEvent, NodeId};
pub use time::Time;
pub use timing::{
    MasterDownMode, advert_interval, going_to_time_out_threshold, master_down_interval, preference,
};
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

/// The election state machine of one vhid.
#[derive(Clone, Debug)]
pub struct Vhid {
    config: VhidConfig,
    state: State,
    demote: u8,
    admin_up: bool,
    link_up: bool,
    advert_at: Option<Time>,
    master_down_at: Option<Time>,
    linger_until: Option<Time>,
    // Adverts still to send before the delayed gratuitous ARP (spec §5).
    delayed_arp: Option<u8>,
    last_master: Option<IpAddr>,
    to_master_count: u64,
    // VRRPv3: the Master_Adver_Interval learned from the master's adverts (None: our own).
    learned_interval_cs: Option<u16>,
    // VRRP: the master-down timer was shortened to Skew_Time by a priority-0 advert.
    vrrp_stop_seen: bool,
    // VRRP: lingering after a planned stop, the new master was heard (the grace before INIT runs).
    vrrp_handed_over: bool,
    // Takeovers caused by an advert's unauthenticated fields, at most one per hold-down (`flipguard`).
    flip_guard: flipguard::FlipGuard,
}

impl Vhid {
    /// A vhid in INIT, administratively down, carpdev link assumed up, demote 0.
    pub fn new(config: VhidConfig) -> Vhid {
        Vhid {
            config,
            state: State::Init,
            demote: 0,
            admin_up: false,
            link_up: true,
            advert_at: None,
            master_down_at: None,
            linger_until: None,
            delayed_arp: None,
            last_master: None,
            to_master_count: 0,
            learned_interval_cs: None,
            vrrp_stop_seen: false,
            vrrp_handed_over: false,
            flip_guard: flipguard::FlipGuard::default(),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> &VhidConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Advert-caused takeovers refused by the hold-down (`flipguard`): replayed or rewritten adverts.
    pub fn takeovers_held(&self) -> u64 {
        self.flip_guard.held()
    }

    /// The demote byte this vhid advertises and compares with.
    pub fn demote(&self) -> u8 {
        self.demote
    }

    /// True while a MASTER that bowed out keeps serving (make-before-break).
    pub fn is_lingering(&self) -> bool {
        self.linger_until.is_some()
    }

    /// Source address of the last advert heard as BACKUP (for status / counters).
    pub fn last_master(&self) -> Option<IpAddr> {
        self.last_master
    }

    /// How many times this vhid became MASTER (carpstats `preempt`).
    pub fn transitions_to_master(&self) -> u64 {
        self.to_master_count
    }

    /// When the driver must next deliver `Event::Timer`; None while nothing is pending.
    pub fn next_deadline(&self) -> Option<Time> {
        [self.advert_at, self.master_down_at, self.linger_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Feeds one event at time `now` and returns the actions to carry out, in order.
    pub fn handle(&mut self, now: Time, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Up => self.on_up(now, &mut out),
            Event::Down { linger } => self.on_down(now, linger, &mut out),
            Event::LinkUp => {
                self.link_up = true;
                if self.state == State::Init && self.admin_up {
                    self.enter_backup(now, reason::LINK_UP, &mut out);
                }
            }
            Event::LinkDown => {
                self.link_up = false;
                if self.state != State::Init {
                    self.enter_init(reason::LINK_DOWN, &mut out);
                }
            }
            Event::Advert(_) if self.config.vrrp.is_some() => {
                out.push(Action::Dropped(DropReason::WrongVhid));
            }
            Event::Advert(adv) => self.on_advert(now, &adv, &mut out),
            Event::VrrpAdvert(adv) => self.on_vrrp_advert(now, &adv, &mut out),
            Event::Timer => self.on_timer(now, &mut out),
            Event::Demote { demote, advertise } => {
                self.demote = demote;
                if advertise && self.state == State::Master && !self.is_lingering() {
                    self.send_advert(now, &mut out);
                }
            }
            Event::Force(forced) => self.on_force(now, forced, &mut out),
            Event::Reconfigure(config) => self.on_reconfigure(now, config, &mut out),
        }
        out
    }

    fn on_up(&mut self, now: Time, out: &mut Vec<Action>) {
        self.admin_up = true;
        if self.is_lingering() {
            // Brought back up before anyone took over: resume as a normal master.
            self.linger_until = None;
            self.send_advert(now, out);
        } else if self.state == State::Init && self.link_up {
            if self
                .config
                .vrrp
                .as_ref()
                .is_some_and(|v| v.priority == carp_common::vrrp::VRRP_PRIORITY_OWNER)
            {
                self.master_down(now, vrrp::vrrp_reason::OWNER, out);
            } else {
                self.enter_backup(now, reason::UP, out);
            }
        }
    }

    fn on_down(&mut self, now: Time, linger: Duration, out: &mut Vec<Action>) {
        self.admin_up = false;
        match self.state {
            State::Init => {}
            State::Backup => self.enter_init(reason::DOWN, out),
            State::Master if self.is_lingering() => self.enter_init(reason::DOWN, out),
            State::Master => {
                out.push(match &self.config.vrrp {
                    // VRRP's bow-out: priority 0 (RFC 9568 §6.4.3).
                    Some(v) => self.vrrp_advert(v, carp_common::vrrp::VRRP_PRIORITY_STOP),
                    None => Action::SendAdvert {
                        advbase: CARP_BOW_OUT,
                        advskew: CARP_BOW_OUT,
                        demote: self.demote,
                        counter: self.config.cookie,
                        bow_out: true,
                    },
                });
                if linger.is_zero() {
                    self.enter_init(reason::DOWN, out);
                } else {
                    self.advert_at = None;
                    self.delayed_arp = None;
                    self.linger_until = Some(now + linger);
                }
            }
        }
    }

    fn on_advert(&mut self, now: Time, adv: &Advert, out: &mut Vec<Action>) {
        if adv.vhid != self.config.vhid {
            out.push(Action::Dropped(DropReason::WrongVhid));
            return;
        }
        if self.config.own_addrs.contains(&adv.src) {
            out.push(Action::Dropped(DropReason::OwnAddress));
            return;
        }
        if adv.counter == self.config.cookie {
            out.push(Action::Dropped(DropReason::OwnCookie));
            return;
        }
        match self.state {
            State::Init => {}
            State::Master if self.is_lingering() => {
                if !adv.is_bow_out() {
                    self.enter_init(reason::HANDED_OVER, out);
                }
            }
            // A leaving node is never a reason to step down, whatever its demote says.
            State::Master if adv.is_bow_out() => {}
            State::Master => {
                if let Some(why) = self.yield_reason(adv) {
                    self.flip_guard.yielded();
                    self.enter_backup(now, why, out);
                }
            }
            State::Backup => {
                self.last_master = Some(adv.src);
                let own_t = preference(self.config.advbase, self.config.advskew);
                let adv_t = adv.preference();
                let threshold =
                    going_to_time_out_threshold(self.config.advbase, self.config.advskew);
                let takeover = if adv.is_bow_out() {
                    // Rule 3 covers this only for advbase <= 85; take over at once regardless.
                    Some(reason::BOW_OUT)
                } else if self.config.preempt && adv_t > own_t && adv.demote >= self.demote {
                    Some(reason::PREEMPT)
                } else if adv.demote > self.demote {
                    Some(reason::HIGHER_DEMOTE)
                } else if self.config.advbase != 0 && adv_t > threshold {
                    Some(reason::GOING_TO_TIME_OUT)
                } else {
                    None
                };
                // Each of these reads fields the HMAC does not cover: at most one per hold-down.
                let hold = flipguard::MIN_HOLD.max(self.master_down_interval());
                match takeover {
                    Some(why) if self.flip_guard.allow(now, hold) => {
                        self.master_down(now, why, out)
                    }
                    Some(_) => {
                        out.push(Action::Dropped(DropReason::TakeoverHeld));
                        self.master_down_at = Some(now + self.master_down_interval());
                    }
                    None => self.master_down_at = Some(now + self.master_down_interval()),
                }
            }
        }
    }

    /// OpenBSD: yield if (T_adv <= T_own and demote_adv <= demote_own) or demote_adv < demote_own,
    /// i.e. (demote, T) compared lexicographically; ucarp's address tie-break optionally on equal.
    fn yield_reason(&self, adv: &Advert) -> Option<&'static str> {
        let own_t = preference(self.config.advbase, self.config.advskew);
        let adv_t = adv.preference();
        if adv.demote != self.demote {
            return (adv.demote < self.demote).then_some(reason::LOWER_DEMOTE);
        }
        if adv_t != own_t {
            return (adv_t < own_t).then_some(reason::MORE_PREFERRED);
        }
        if !self.config.ucarp_tiebreak {
            return Some(reason::MORE_PREFERRED);
        }
        match self.own_addr_like(&adv.src) {
            Some(own) if ip_key(&adv.src) < ip_key(&own) => Some(reason::TIEBREAK),
            Some(_) => None,
            None => Some(reason::MORE_PREFERRED),
        }
    }

    fn own_addr_like(&self, other: &IpAddr) -> Option<IpAddr> {
        self.config
            .own_addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == other.is_ipv4())
    }

    fn on_timer(&mut self, now: Time, out: &mut Vec<Action>) {
        if self.linger_until.is_some_and(|t| t <= now) {
            let why = if self.vrrp_handed_over {
                reason::HANDED_OVER
            } else {
                reason::LINGER_EXPIRED
            };
            self.enter_init(why, out);
            return;
        }
        match self.state {
            State::Master if self.advert_at.is_some_and(|t| t <= now) => {
                let due = self.advert_at.unwrap_or(now);
                self.send_advert(now, out);
                // Keep the advert phase: a wake-up that came late (timer rounding, a busy CPU) must not
                // push every later advert back too, or the interval the peers see grows beyond the
                // nominal one and eats their master-down margin (at advbase 0 tokio's 1 ms rounding
                // alone turned 3.9 ms into 4-5 ms). Catching up never sends a burst: at most one advert
                // per wake-up, and after a delay of a whole interval or more the phase restarts from now.
                let next = due + self.advert_interval();
                if next > now {
                    self.advert_at = Some(next);
                }
            }
            State::Backup if self.master_down_at.is_some_and(|t| t <= now) => {
                let why = if self.vrrp_stop_seen {
                    vrrp::vrrp_reason::MASTER_STOPPED
                } else {
                    reason::MASTER_DOWN
                };
                self.master_down(now, why, out);
            }
            _ => {}
        }
    }

    fn on_force(&mut self, now: Time, forced: ForcedState, out: &mut Vec<Action>) {
        match (self.state, forced) {
            (State::Init, _) => {}
            (State::Backup, ForcedState::Master) => {
                self.master_down(now, reason::FORCED_MASTER, out)
            }
            (State::Master, ForcedState::Master) => {}
            (State::Master, ForcedState::Backup) => {
                self.enter_backup(now, reason::FORCED_BACKUP, out)
            }
            (State::Backup, ForcedState::Backup) => {
                self.master_down_at = Some(now + self.master_down_interval());
            }
        }
    }

    fn on_reconfigure(&mut self, now: Time, config: VhidConfig, out: &mut Vec<Action>) {
        let timing_changed = (config.advbase, config.advskew, config.master_down_mode)
            != (
                self.config.advbase,
                self.config.advskew,
                self.config.master_down_mode,
            )
            || config.vrrp != self.config.vrrp;
        self.config = config;
        if !timing_changed {
            return;
        }
        match self.state {
            State::Init => {}
            State::Backup => self.master_down_at = Some(now + self.master_down_interval()),
            // Tell the peers at once: with preempt on, a raised advskew hands over right away.
            State::Master if !self.is_lingering() => self.send_advert(now, out),
            State::Master => {}
        }
    }

    /// The interval between our adverts as MASTER (CARP's advbase/advskew, or VRRP's interval).
    fn advert_interval(&self) -> Duration {
        match &self.config.vrrp {
            Some(v) => v.advert_interval(),
            None => self.config.advert_interval(),
        }
    }

    /// How long a BACKUP waits for an advert before taking over.
    fn master_down_interval(&self) -> Duration {
        match &self.config.vrrp {
            Some(v) => self.vrrp_master_down(v),
            None => self.config.master_down_interval(),
        }
    }

    /// The master-down path: MASTER, advert, gratuitous ARP, advert timer (spec §4).
    fn master_down(&mut self, now: Time, why: &'static str, out: &mut Vec<Action>) {
        let from = self.state;
        self.vrrp_stop_seen = false;
        self.state = State::Master;
        self.master_down_at = None;
        self.to_master_count += 1;
        out.push(Action::BecameMaster { from, reason: why });
        self.delayed_arp = None;
        self.send_advert(now, out);
        out.push(Action::GratuitousArp { delayed: false });
        self.delayed_arp = Some(2);
    }

    fn send_advert(&mut self, now: Time, out: &mut Vec<Action>) {
        out.push(match &self.config.vrrp {
            Some(v) => self.vrrp_advert(v, v.effective_priority(self.demote)),
            None => Action::SendAdvert {
                advbase: self.config.advbase,
                advskew: self.config.advskew,
                demote: self.demote,
                counter: self.config.cookie,
                bow_out: false,
            },
        });
        self.advert_at = Some(now + self.advert_interval());
        if let Some(left) = self.delayed_arp {
            if left <= 1 {
                self.delayed_arp = None;
                out.push(Action::GratuitousArp { delayed: true });
            } else {
                self.delayed_arp = Some(left - 1);
            }
        }
    }

    fn enter_backup(&mut self, now: Time, why: &'static str, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = State::Backup;
        self.advert_at = None;
        self.linger_until = None;
        self.delayed_arp = None;
        self.master_down_at = Some(now + self.master_down_interval());
        out.push(Action::BecameBackup { from, reason: why });
    }

    fn enter_init(&mut self, why: &'static str, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = State::Init;
        // VRRP's Initialize state starts again from our own interval.
        self.learned_interval_cs = None;
        self.vrrp_stop_seen = false;
        self.vrrp_handed_over = false;
        self.advert_at = None;
        self.master_down_at = None;
        self.linger_until = None;
        self.delayed_arp = None;
        out.push(Action::BecameInit { from, reason: why });
    }
}

/// Addresses compared as unsigned numbers in network order (ucarp compares raw 32-bit values).
fn ip_key(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}
