//! The CARP election of one vhid (spec §4): states, the advert and master-down timers, preempt,
//! demotion, bow-out and forced states; the VRRP rules live beside it in `vrrp`. Sans-IO: every input
//! is an `Event` with the time, every output an `Action`.
use super::*;

/// The election state machine of one vhid.
#[derive(Clone, Debug)]
pub struct Vhid {
    pub(super) config: VhidConfig,
    pub(super) state: State,
    pub(super) demote: u8,
    pub(super) admin_up: bool,
    pub(super) link_up: bool,
    pub(super) advert_at: Option<Time>,
    pub(super) master_down_at: Option<Time>,
    pub(super) linger_until: Option<Time>,
    // Adverts still to send before the delayed gratuitous ARP (spec §5).
    pub(super) delayed_arp: Option<u8>,
    pub(super) last_master: Option<IpAddr>,
    pub(super) to_master_count: u64,
    // VRRPv3: the Master_Adver_Interval learned from the master's adverts (None: our own).
    pub(super) learned_interval_cs: Option<u16>,
    // VRRP: the master-down timer was shortened to Skew_Time by a priority-0 advert.
    pub(super) vrrp_stop_seen: bool,
    // VRRP: lingering after a planned stop, the new master was heard (the grace before INIT runs).
    pub(super) vrrp_handed_over: bool,
    // Takeovers caused by an advert's unauthenticated fields, at most one per hold-down (`flipguard`).
    pub(super) flip_guard: flipguard::FlipGuard,
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

    pub(super) fn on_up(&mut self, now: Time, out: &mut Vec<Action>) {
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

    pub(super) fn on_down(&mut self, now: Time, linger: Duration, out: &mut Vec<Action>) {
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

    pub(super) fn on_advert(&mut self, now: Time, adv: &Advert, out: &mut Vec<Action>) {
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
    pub(super) fn yield_reason(&self, adv: &Advert) -> Option<&'static str> {
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

    pub(super) fn own_addr_like(&self, other: &IpAddr) -> Option<IpAddr> {
        self.config
            .own_addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == other.is_ipv4())
    }

    pub(super) fn on_timer(&mut self, now: Time, out: &mut Vec<Action>) {
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

    pub(super) fn on_force(&mut self, now: Time, forced: ForcedState, out: &mut Vec<Action>) {
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

    pub(super) fn on_reconfigure(&mut self, now: Time, config: VhidConfig, out: &mut Vec<Action>) {
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
    pub(super) fn advert_interval(&self) -> Duration {
        match &self.config.vrrp {
            Some(v) => v.advert_interval(),
            None => self.config.advert_interval(),
        }
    }

    /// How long a BACKUP waits for an advert before taking over.
    pub(super) fn master_down_interval(&self) -> Duration {
        match &self.config.vrrp {
            Some(v) => self.vrrp_master_down(v),
            None => self.config.master_down_interval(),
        }
    }

    /// The master-down path: MASTER, advert, gratuitous ARP, advert timer (spec §4).
    pub(super) fn master_down(&mut self, now: Time, why: &'static str, out: &mut Vec<Action>) {
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

    pub(super) fn send_advert(&mut self, now: Time, out: &mut Vec<Action>) {
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

    pub(super) fn enter_backup(&mut self, now: Time, why: &'static str, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = State::Backup;
        self.advert_at = None;
        self.linger_until = None;
        self.delayed_arp = None;
        self.master_down_at = Some(now + self.master_down_interval());
        out.push(Action::BecameBackup { from, reason: why });
    }

    pub(super) fn enter_init(&mut self, why: &'static str, out: &mut Vec<Action>) {
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
pub(super) fn ip_key(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}
