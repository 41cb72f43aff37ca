//! One machine's carp interfaces and their demote groups, wired together the OpenBSD way.
//!
//! `Host` owns a `Groups` table and the `Vhid` of each carp interface. It turns machine-level
//! events (a carpdev's link, `carpdemote` on a group, a received advert on a carpdev) into engine
//! events for the right vhids, so the daemon and the simulator share one composition instead of
//! each re-implementing "link down = INIT + demote +1 on its groups, and the others advertise".

use std::time::Duration;

use super::{Action, Advert, Event, ForcedState, Groups, State, Time, Vhid, VhidConfig};

/// A carp interface: its name, its parent (carpdev) and its election state machine.
#[derive(Clone, Debug)]
pub struct CarpIf {
    /// Interface name, e.g. `carp0`.
    pub name: String,
    /// Parent interface adverts are sent and received on, e.g. `eth0`.
    pub carpdev: String,
    /// The election state machine.
    pub vhid: Vhid,
}

/// A machine-level input.
#[derive(Clone, Debug, PartialEq)]
pub enum HostEvent {
    /// Bring every carp interface administratively up.
    Start,
    /// Bring one carp interface up.
    Up(String),
    /// Take one carp interface down (bow-out if MASTER, see `Event::Down`).
    Down {
        /// Interface name.
        iface: String,
        /// Make-before-break wait after the bow-out.
        linger: Duration,
    },
    /// Take every carp interface down (planned stop).
    Shutdown {
        /// Make-before-break wait after the bow-out.
        linger: Duration,
    },
    /// An authenticated advert arrived on `carpdev`.
    Advert {
        /// Parent interface it arrived on.
        carpdev: String,
        /// The advert.
        advert: Advert,
    },
    /// A deadline from `Host::next_deadline` was reached.
    Timer,
    /// A carpdev's link changed.
    CarpdevLink {
        /// Parent interface name.
        carpdev: String,
        /// New link state.
        up: bool,
    },
    /// `carpdemote N` / `-carpdemote N` on a group.
    GroupAdjust {
        /// Group name.
        group: String,
        /// Signed adjustment.
        delta: i32,
    },
    /// Set a group's counter.
    GroupSet {
        /// Group name.
        group: String,
        /// New counter.
        value: u8,
    },
    /// Forced state on one carp interface.
    Force {
        /// Interface name.
        iface: String,
        /// The state.
        state: ForcedState,
    },
    /// `net.inet.carp.preempt` changed.
    SetPreempt(bool),
}

/// An engine action tagged with the carp interface (index into `Host::interfaces`) it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAction {
    /// Index of the carp interface.
    pub iface: usize,
    /// The action.
    pub action: Action,
}

/// The carp interfaces and demote groups of one machine.
#[derive(Clone, Debug, Default)]
pub struct Host {
    groups: Groups,
    ifaces: Vec<CarpIf>,
}

impl Host {
    /// A machine with no carp interfaces and group "carp" at 0.
    pub fn new() -> Host {
        Host {
            groups: Groups::new(),
            ifaces: Vec::new(),
        }
    }

    /// Adds a carp interface (in INIT, down) in group "carp" plus `groups`; returns its index.
    pub fn add_interface<S: AsRef<str>>(
        &mut self,
        name: &str,
        carpdev: &str,
        groups: &[S],
        config: VhidConfig,
    ) -> usize {
        self.groups.add_interface(name, groups);
        let mut vhid = Vhid::new(config);
        // Nothing can happen in INIT, so the time is irrelevant here.
        vhid.handle(
            Time::ZERO,
            Event::Demote {
                demote: self.groups.demote(name),
                advertise: false,
            },
        );
        self.ifaces.push(CarpIf {
            name: name.to_string(),
            carpdev: carpdev.to_string(),
            vhid,
        });
        self.ifaces.len() - 1
    }

    /// The carp interfaces, in the order they were added.
    pub fn interfaces(&self) -> &[CarpIf] {
        &self.ifaces
    }

    /// The index of a carp interface by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.ifaces.iter().position(|i| i.name == name)
    }

    /// The demote groups.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// The state of the interface carrying `vhid` on `carpdev`, if any.
    pub fn state_of(&self, carpdev: &str, vhid: u8) -> Option<State> {
        self.ifaces
            .iter()
            .find(|i| i.carpdev == carpdev && i.vhid.config().vhid == vhid)
            .map(|i| i.vhid.state())
    }

    /// The earliest deadline over all interfaces.
    pub fn next_deadline(&self) -> Option<Time> {
        self.ifaces
            .iter()
            .filter_map(|i| i.vhid.next_deadline())
            .min()
    }

    /// Feeds one machine-level event at `now`; returns the actions per interface, in order.
    pub fn handle(&mut self, now: Time, event: HostEvent) -> Vec<HostAction> {
        let mut out = Vec::new();
        match event {
            HostEvent::Start => {
                for i in 0..self.ifaces.len() {
                    self.feed(now, i, Event::Up, &mut out);
                }
            }
            HostEvent::Up(name) => {
                if let Some(i) = self.index_of(&name) {
                    self.feed(now, i, Event::Up, &mut out);
                }
            }
            HostEvent::Down { iface, linger } => {
                if let Some(i) = self.index_of(&iface) {
                    self.feed(now, i, Event::Down { linger }, &mut out);
                }
            }
            HostEvent::Shutdown { linger } => {
                for i in 0..self.ifaces.len() {
                    self.feed(now, i, Event::Down { linger }, &mut out);
                }
            }
            HostEvent::Advert { carpdev, advert } => {
                let target = self
                    .ifaces
                    .iter()
                    .position(|i| i.carpdev == carpdev && i.vhid.config().vhid == advert.vhid);
                if let Some(i) = target {
                    self.feed(now, i, Event::Advert(advert), &mut out);
                }
            }
            HostEvent::Timer => {
                for i in 0..self.ifaces.len() {
                    if self.ifaces[i]
                        .vhid
                        .next_deadline()
                        .is_some_and(|t| t <= now)
                    {
                        self.feed(now, i, Event::Timer, &mut out);
                    }
                }
            }
            HostEvent::CarpdevLink { carpdev, up } => {
                let idx: Vec<usize> = (0..self.ifaces.len())
                    .filter(|&i| self.ifaces[i].carpdev == carpdev)
                    .collect();
                for &i in &idx {
                    // State first, then demotion: the interface that lost its link goes INIT
                    // before its siblings advertise the raised demote (OpenBSD order).
                    let ev = if up { Event::LinkUp } else { Event::LinkDown };
                    self.feed(now, i, ev, &mut out);
                    let name = self.ifaces[i].name.clone();
                    let change = self.groups.carpdev_link(&name, up);
                    self.apply_demote(now, change, &mut out);
                }
            }
            HostEvent::GroupAdjust { group, delta } => {
                let change = self.groups.adjust(&group, delta);
                self.apply_demote(now, change, &mut out);
            }
            HostEvent::GroupSet { group, value } => {
                let change = self.groups.set(&group, value);
                self.apply_demote(now, change, &mut out);
            }
            HostEvent::Force { iface, state } => {
                if let Some(i) = self.index_of(&iface) {
                    self.feed(now, i, Event::Force(state), &mut out);
                }
            }
            HostEvent::SetPreempt(on) => {
                for i in 0..self.ifaces.len() {
                    let mut config = self.ifaces[i].vhid.config().clone();
                    if config.preempt != on {
                        config.preempt = on;
                        self.feed(now, i, Event::Reconfigure(config), &mut out);
                    }
                }
            }
        }
        out
    }

    /// New election settings (advbase, advskew, preempt, ...) for one interface, keeping its state
    /// (`Event::Reconfigure`); used by the daemon's SIGHUP reload.
    pub fn reconfigure(&mut self, now: Time, name: &str, config: VhidConfig) -> Vec<HostAction> {
        let mut out = Vec::new();
        if let Some(i) = self.index_of(name) {
            self.feed(now, i, Event::Reconfigure(config), &mut out);
        }
        out
    }

    /// Forgets a carp interface (the caller takes it down first); later interfaces move down one
    /// index. Returns the actions of the demote change its removal causes on the others.
    pub fn remove_interface(&mut self, now: Time, name: &str) -> Vec<HostAction> {
        let mut out = Vec::new();
        if let Some(i) = self.index_of(name) {
            self.ifaces.remove(i);
            let change = self.groups.remove_interface(name);
            self.apply_demote(now, change, &mut out);
        }
        out
    }

    fn apply_demote(&mut self, now: Time, change: super::DemoteChange, out: &mut Vec<HostAction>) {
        for (name, advertise) in change.interfaces {
            if let Some(i) = self.index_of(&name) {
                let demote = self.groups.demote(&name);
                self.feed(now, i, Event::Demote { demote, advertise }, out);
            }
        }
    }

    fn feed(&mut self, now: Time, i: usize, event: Event, out: &mut Vec<HostAction>) {
        let actions = self.ifaces[i].vhid.handle(now, event);
        out.extend(
            actions
                .into_iter()
                .map(|action| HostAction { iface: i, action }),
        );
    }
}
