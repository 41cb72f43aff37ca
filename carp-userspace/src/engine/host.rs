//! One machine's carp interfaces and their demote groups, wired together the OpenBSD way.
//!
//! `Host` owns a `Groups` table and the `Vhid` of each carp interface. It turns machine-level
//! events (a carpdev's link, `carpdemote` on a group, a received advert on a carpdev) into engine
//! events for the right vhids, so the daemon and the simulator share one composition instead of
//! each re-implementing "link down = INIT + demote +1 on its groups, and the others advertise".
//!
//! A carp interface with carpnodes (spec §6) is added once per node, under the same name: each node
//! is its own `CarpIf` entry with its own vhid and election, while the name ties them to one demote
//! group membership (so a lost carpdev demotes the interface once, not once per node). Events that
//! name an interface (up, down, forced state, demotion) reach every node of it.

use std::{fmt, time::Duration};

use super::{Action, Advert, Event, ForcedState, Groups, State, Time, Vhid, VhidConfig};

/// A carpnode's handle, given out by `Host::add_interface` and never reused: it names the same node
/// however many others are added or removed (a position in `Host::interfaces` does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    /// The handle with this number (for tables keyed by node outside the engine, and tests).
    pub fn from_raw(n: u32) -> NodeId {
        NodeId(n)
    }

    /// Its number.
    pub fn raw(self) -> u32 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// A carp interface: its name, its parent (carpdev) and its election state machine.
#[derive(Clone, Debug)]
pub struct CarpIf {
    /// Its handle.
    pub id: NodeId,
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
    /// A validated VRRP advert arrived on `carpdev` (routed to the VRRP vhid with its VRID).
    VrrpAdvert {
        /// Parent interface it arrived on.
        carpdev: String,
        /// The advert.
        advert: super::VrrpAdvertIn,
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

/// An engine action tagged with the carpnode it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAction {
    /// The node.
    pub node: NodeId,
    /// The action.
    pub action: Action,
}

/// The carp interfaces and demote groups of one machine.
#[derive(Clone, Debug, Default)]
pub struct Host {
    groups: Groups,
    ifaces: Vec<CarpIf>,
    // The next node's handle.
    next_id: u32,
}

impl Host {
    /// A machine with no carp interfaces and group "carp" at 0.
    pub fn new() -> Host {
        Host {
            groups: Groups::new(),
            ifaces: Vec::new(),
            next_id: 0,
        }
    }

    /// Adds a carp interface (in INIT, down) in group "carp" plus `groups`; returns its node's handle.
    /// Adding the same name again adds another carpnode of that interface.
    pub fn add_interface<S: AsRef<str>>(
        &mut self,
        name: &str,
        carpdev: &str,
        groups: &[S],
        config: VhidConfig,
    ) -> NodeId {
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
        let id = NodeId(self.next_id);
        self.next_id += 1;
        self.ifaces.push(CarpIf {
            id,
            name: name.to_string(),
            carpdev: carpdev.to_string(),
            vhid,
        });
        id
    }

    /// One node by its handle (None once its interface was removed).
    pub fn node(&self, id: NodeId) -> Option<&CarpIf> {
        self.ifaces.iter().find(|i| i.id == id)
    }

    /// The carp interfaces, in the order they were added.
    pub fn interfaces(&self) -> &[CarpIf] {
        &self.ifaces
    }

    /// The index of a carp interface by name (its first node).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.ifaces.iter().position(|i| i.name == name)
    }

    /// The indices of every node of a carp interface, in the order they were added.
    pub fn indices_of(&self, name: &str) -> Vec<usize> {
        (0..self.ifaces.len())
            .filter(|&i| self.ifaces[i].name == name)
            .collect()
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
                for i in self.indices_of(&name) {
                    self.feed(now, i, Event::Up, &mut out);
                }
            }
            HostEvent::Down { iface, linger } => {
                for i in self.indices_of(&iface) {
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
            HostEvent::VrrpAdvert { carpdev, advert } => {
                let target = self.ifaces.iter().position(|i| {
                    i.carpdev == carpdev
                        && i.vhid.config().vhid == advert.vrid
                        && i.vhid.config().vrrp.is_some()
                });
                if let Some(i) = target {
                    self.feed(now, i, Event::VrrpAdvert(advert), &mut out);
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
                for i in self.indices_of(&iface) {
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

    /// Forced state on one node only; `HostEvent::Force` forces every node of an interface, as
    /// OpenBSD's `ifconfig carpN state` does. Used to resume one node after a restart.
    pub fn force_node(&mut self, now: Time, id: NodeId, state: ForcedState) -> Vec<HostAction> {
        let mut out = Vec::new();
        if let Some(i) = self.ifaces.iter().position(|n| n.id == id) {
            self.feed(now, i, Event::Force(state), &mut out);
        }
        out
    }

    /// New election settings (advbase, advskew, preempt, ...) for the node of interface `name` whose
    /// vhid is `config.vhid`, keeping its state (`Event::Reconfigure`); used by the daemon's SIGHUP
    /// reload and `carpctl set`.
    pub fn reconfigure(&mut self, now: Time, name: &str, config: VhidConfig) -> Vec<HostAction> {
        let mut out = Vec::new();
        let node = self
            .ifaces
            .iter()
            .position(|i| i.name == name && i.vhid.config().vhid == config.vhid);
        if let Some(i) = node {
            self.feed(now, i, Event::Reconfigure(config), &mut out);
        }
        out
    }

    /// Forgets a carp interface with all its nodes (the caller takes it down first); the others keep
    /// their handles. Returns the actions of the demote change its removal causes on the others.
    pub fn remove_interface(&mut self, now: Time, name: &str) -> Vec<HostAction> {
        let mut out = Vec::new();
        if self.index_of(name).is_some() {
            self.ifaces.retain(|i| i.name != name);
            let change = self.groups.remove_interface(name);
            self.apply_demote(now, change, &mut out);
        }
        out
    }

    fn apply_demote(&mut self, now: Time, change: super::DemoteChange, out: &mut Vec<HostAction>) {
        for (name, advertise) in change.interfaces {
            for i in self.indices_of(&name) {
                let demote = self.groups.demote(&name);
                self.feed(now, i, Event::Demote { demote, advertise }, out);
            }
        }
    }

    fn feed(&mut self, now: Time, i: usize, event: Event, out: &mut Vec<HostAction>) {
        let node = self.ifaces[i].id;
        let actions = self.ifaces[i].vhid.handle(now, event);
        out.extend(
            actions
                .into_iter()
                .map(|action| HostAction { node, action }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_node_host() -> Host {
        let mut h = Host::new();
        h.add_interface(
            "carp0",
            "eth0",
            &["outside"],
            VhidConfig::new(1, 1, 0, [1; 8]),
        );
        h.add_interface(
            "carp0",
            "eth0",
            &["outside"],
            VhidConfig::new(2, 1, 100, [2; 8]),
        );
        h.add_interface(
            "carp1",
            "eth0",
            &[] as &[&str],
            VhidConfig::new(3, 1, 0, [3; 8]),
        );
        h
    }

    #[test]
    fn carpnodes_share_the_interface_events() {
        let mut h = two_node_host();
        let t = Time::from_nanos(1_000_000_000);
        h.handle(t, HostEvent::Start);
        assert_eq!(h.indices_of("carp0"), vec![0, 1]);
        h.handle(
            t,
            HostEvent::Force {
                iface: "carp0".into(),
                state: ForcedState::Master,
            },
        );
        let states: Vec<State> = h.interfaces().iter().map(|i| i.vhid.state()).collect();
        assert_eq!(states, vec![State::Master, State::Master, State::Backup]);
        // One carpdev loss demotes group carp once, not once per node.
        h.handle(
            t,
            HostEvent::CarpdevLink {
                carpdev: "eth0".into(),
                up: false,
            },
        );
        assert_eq!(h.groups().counter("carp"), 2, "carp0 and carp1, once each");
        assert_eq!(h.groups().counter("outside"), 1);
        assert!(h.interfaces().iter().all(|i| i.vhid.state() == State::Init));
        // A reconfiguration reaches only the node with that vhid.
        let mut vc = h.interfaces()[1].vhid.config().clone();
        vc.advskew = 7;
        h.reconfigure(t, "carp0", vc);
        let skews: Vec<u8> = h
            .interfaces()
            .iter()
            .map(|i| i.vhid.config().advskew)
            .collect();
        assert_eq!(skews, vec![0, 7, 0]);
        h.remove_interface(t, "carp0");
        assert_eq!(h.interfaces().len(), 1);
        assert_eq!(h.groups().counter("carp"), 1);
    }
}
