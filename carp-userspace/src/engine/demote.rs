//! Interface-group demotion (OpenBSD `ifconfig -g GROUP carpdemote [N]`, spec §4 and §8).
//!
//! `Groups` owns the per-group demote counters and which interfaces belong to which group. It is
//! as sans-IO as the election engine: it answers "what demote byte does this interface advertise"
//! and, on every change, "which interfaces are affected and must advertise at once". Feeding those
//! answers to the `Vhid`s is the caller's job (`Host` does it).

use std::collections::{BTreeMap, BTreeSet};

/// The group every carp interface (and pfsync) belongs to implicitly.
pub const DEFAULT_GROUP: &str = "carp";

/// What a group change did: each affected interface, and whether it must advertise immediately.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemoteChange {
    /// Affected interface name -> "advertise now" (a member of a group whose counter rose).
    pub interfaces: BTreeMap<String, bool>,
}

impl DemoteChange {
    fn merge(&mut self, other: DemoteChange) {
        for (iface, advertise) in other.interfaces {
            *self.interfaces.entry(iface).or_default() |= advertise;
        }
    }
}

/// Demote counters per interface group, and group membership per interface.
#[derive(Clone, Debug, Default)]
pub struct Groups {
    counters: BTreeMap<String, u8>,
    members: BTreeMap<String, BTreeSet<String>>,
    // Interfaces whose carpdev is down and that hold their +1; makes link events idempotent, as
    // OpenBSD's `sc_suppress` does.
    suppressed: BTreeSet<String>,
}

impl Groups {
    /// An empty table; group "carp" exists with counter 0.
    pub fn new() -> Groups {
        let mut g = Groups::default();
        g.counters.insert(DEFAULT_GROUP.to_string(), 0);
        g
    }

    /// Registers an interface in group "carp" and in `groups` (creating them at 0).
    pub fn add_interface<S: AsRef<str>>(&mut self, iface: &str, groups: &[S]) {
        let set = self.members.entry(iface.to_string()).or_default();
        set.insert(DEFAULT_GROUP.to_string());
        for g in groups {
            set.insert(g.as_ref().to_string());
            self.counters.entry(g.as_ref().to_string()).or_insert(0);
        }
    }

    /// Forgets an interface; a carpdev demotion it still held is released first.
    pub fn remove_interface(&mut self, iface: &str) -> DemoteChange {
        let change = self.carpdev_link(iface, true);
        self.members.remove(iface);
        change
    }

    /// The groups of an interface (including "carp"), empty if unknown.
    pub fn groups_of(&self, iface: &str) -> Vec<&str> {
        self.members
            .get(iface)
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The counter of one group (0 if it does not exist).
    pub fn counter(&self, group: &str) -> u8 {
        self.counters.get(group).copied().unwrap_or(0)
    }

    /// Every group and its counter, sorted by name (for `carpctl groups`).
    pub fn iter(&self) -> impl Iterator<Item = (&str, u8)> {
        self.counters.iter().map(|(g, c)| (g.as_str(), *c))
    }

    /// The demote byte an interface advertises: the sum of its groups' counters, capped at 255.
    pub fn demote(&self, iface: &str) -> u8 {
        let sum: u32 = self
            .members
            .get(iface)
            .into_iter()
            .flatten()
            .map(|g| u32::from(self.counter(g)))
            .sum();
        sum.min(255) as u8
    }

    /// `carpdemote N` / `-carpdemote N`: adds `delta` to a group's counter, saturating in 0..=255.
    pub fn adjust(&mut self, group: &str, delta: i32) -> DemoteChange {
        let old = self.counter(group);
        let new = (i32::from(old) + delta).clamp(0, 255) as u8;
        self.store(group, old, new)
    }

    /// Sets a group's counter (`carpctl demote GROUP N`).
    pub fn set(&mut self, group: &str, value: u8) -> DemoteChange {
        let old = self.counter(group);
        self.store(group, old, value)
    }

    /// Adds `delta` to every group of `iface` (send errors, carpdev link; OpenBSD's
    /// `carp_group_demote_adj`).
    pub fn adjust_interface_groups(&mut self, iface: &str, delta: i32) -> DemoteChange {
        let groups: Vec<String> = self
            .groups_of(iface)
            .iter()
            .map(|g| g.to_string())
            .collect();
        let mut change = DemoteChange::default();
        for g in groups {
            change.merge(self.adjust(&g, delta));
        }
        change
    }

    /// The carpdev of `iface` went down (+1 on its groups) or up (the +1 is removed). Repeated
    /// reports of the same link state change nothing.
    pub fn carpdev_link(&mut self, iface: &str, up: bool) -> DemoteChange {
        if !self.members.contains_key(iface) {
            return DemoteChange::default();
        }
        match (up, self.suppressed.contains(iface)) {
            (false, false) => {
                self.suppressed.insert(iface.to_string());
                self.adjust_interface_groups(iface, 1)
            }
            (true, true) => {
                self.suppressed.remove(iface);
                self.adjust_interface_groups(iface, -1)
            }
            _ => DemoteChange::default(),
        }
    }

    /// Whether `iface` currently holds a carpdev-down demotion.
    pub fn is_suppressed(&self, iface: &str) -> bool {
        self.suppressed.contains(iface)
    }

    fn store(&mut self, group: &str, old: u8, new: u8) -> DemoteChange {
        self.counters.insert(group.to_string(), new);
        // OpenBSD advertises when a counter rises to 1 internally, or on any positive
        // adjustment from ifconfig. We advertise on any rise (a superset): an extra advert is
        // harmless, a missed one delays failover by up to an advert interval.
        let advertise = new > old;
        let mut change = DemoteChange::default();
        if new == old {
            return change;
        }
        for (iface, groups) in &self.members {
            if groups.contains(group) {
                change.interfaces.insert(iface.clone(), advertise);
            }
        }
        change
    }
}
