//! Carrying out the engine's actions for one node: a transition (the dataplane's vhid state and MASTER
//! lease, the carp interface and its VIPs, the hooks, the standby senders), an advert (signed, sent to
//! the CARP groups or the unicast peer, handed to the standby senders), a gratuitous ARP/NA.
use super::{Daemon, hooks, nodes};
use std::net::IpAddr;

use anyhow::{Context, Result};
use carp_common::maps::{BalanceMode, VhidEntry, VhidState};

use crate::{
    engine::{Action, State},
    wire::{AdvertRepr, ip::Encap},
};

pub(super) fn vhid_entry(state: VhidState, vmac: [u8; 6]) -> VhidEntry {
    VhidEntry::new(state, BalanceMode::None, vmac)
}

/// How long the dataplane keeps acting as MASTER without hearing from the controller: three advert
/// intervals plus 10 ms for a late timer and the kernel clock's tick resolution.
pub(super) fn lease_len(advbase: u8, advskew: u8) -> std::time::Duration {
    3 * crate::engine::advert_interval(advbase, advskew) + std::time::Duration::from_millis(10)
}

pub(super) fn map_state(state: State) -> VhidState {
    match state {
        State::Init => VhidState::Init,
        State::Backup => VhidState::Backup,
        State::Master => VhidState::Master,
    }
}

impl Daemon {
    /// Carries out one engine action for carp interface `i`.
    pub(super) async fn carry_out(&mut self, i: usize, action: Action) {
        let name = self.ifs[i].cfg.name.clone();
        let vhid = self.ifs[i].vhid;
        if let Some((from, to, reason)) = action.transition() {
            self.ifs[i].state = to;
            if to != State::Master
                && let Some(s) = &self.standby
            {
                s.clear(i);
            }
            if self.ifs[i].resuming {
                if to != State::Master {
                    // On the way to the forced MASTER: the kernel already is MASTER, leave it be.
                    tracing::debug!("{name} vhid {vhid}: {from} -> {to} while resuming");
                    return;
                }
                self.ifs[i].resuming = false;
                self.apply_state(i, to).await;
                // No up script: nothing changed for the network, the previous carpd ran it already.
                tracing::info!(
                    "{name}: resumed vhid {vhid} as MASTER (the previous carpd's lease was valid)"
                );
                self.obs.transition(
                    &name,
                    vhid,
                    from.as_str(),
                    to.as_str(),
                    "resumed after a hitless restart",
                );
                self.update_status();
                return;
            }
            let if_was_up = self.leader_if_up(i);
            self.apply_state(i, to).await;
            // Logged once the dataplane and the carp interface are in the new state, so whoever
            // reads the line (an operator, a test) can rely on it.
            tracing::info!("{name} vhid {vhid}: {from} -> {to} ({reason})");
            self.obs
                .transition(&name, vhid, from.as_str(), to.as_str(), reason);
            self.update_status();
            if self.ifs[i].cfg.is_balanced() {
                // The hooks follow the carp interface: up when its first node became MASTER here,
                // down when its last one left.
                let is_up = self.leader_if_up(i);
                let script = match (if_was_up, is_up) {
                    (false, true) => self.ifs[i].cfg.up_script.clone(),
                    (true, false) => self.ifs[i].cfg.down_script.clone(),
                    _ => None,
                };
                let state = if is_up { "MASTER" } else { to.as_str() };
                if let Some(s) = script {
                    hooks::spawn(s, name, state, self.ifs[i].cfg.vips());
                }
                return;
            }
            let script = if to == State::Master {
                self.ifs[i].cfg.up_script.clone()
            } else if from == State::Master {
                self.ifs[i].cfg.down_script.clone()
            } else {
                None
            };
            if let Some(s) = script {
                hooks::spawn(s, name, to.as_str(), self.ifs[i].cfg.vips());
            }
            return;
        }
        match action {
            Action::SendAdvert {
                advbase,
                advskew,
                demote,
                counter,
                bow_out,
            } => {
                let master = !bow_out && self.ifs[i].state == State::Master;
                if master {
                    self.renew_lease(i, advbase, advskew);
                } else if let Some(s) = &self.standby {
                    // Before the bow-out leaves: no standby may repeat an advert after it.
                    s.clear(i);
                }
                let c = &self.ifs[i];
                let repr = AdvertRepr {
                    vhid,
                    advskew,
                    advbase,
                    demote,
                    counter,
                    digest: c.auth.sign(&counter),
                };
                match self.send_advert(i, &repr) {
                    Ok(frames) => {
                        self.ifs[i].opackets += 1;
                        if master {
                            self.standby_sent(i, frames, advbase, advskew);
                        }
                    }
                    Err(e) => tracing::warn!("{name} vhid {vhid}: sending an advert failed: {e:#}"),
                }
            }
            // Balanced interfaces send none: in the IP modes the interface MAC never moves (spec
            // §6), and OpenBSD announces only with balancing none.
            Action::GratuitousArp { .. } if self.ifs[i].cfg.is_balanced() => {}
            Action::GratuitousArp { delayed } => {
                let c = &self.ifs[i];
                let netio = &self.devs[c.dev].netio;
                for a in &c.cfg.addresses {
                    let r = match a.addr {
                        IpAddr::V4(v4) => netio.send_gratuitous_arp(v4, c.vmac),
                        IpAddr::V6(v6) => netio.send_unsolicited_na(v6, c.vmac),
                    };
                    if let Err(e) = r {
                        tracing::warn!("{name}: gratuitous ARP/NA for {} failed: {e}", a.addr);
                    }
                }
                tracing::debug!("{name}: gratuitous ARP/NA sent (delayed: {delayed})");
            }
            Action::SendVrrp {
                priority,
                interval_cs,
            } => self.carry_out_vrrp(i, priority, interval_cs),
            Action::Dropped(reason) => {
                tracing::debug!("{name} vhid {vhid}: advert dropped: {reason:?}")
            }
            _ => {}
        }
    }

    /// Hands the advert just sent for node `i` to the standby senders (unicast `peer` adverts go
    /// through the kernel's routing: none are repeated).
    pub(super) fn standby_sent(&self, i: usize, frames: Vec<Vec<u8>>, advbase: u8, advskew: u8) {
        let Some(s) = &self.standby else {
            return;
        };
        if frames.is_empty() {
            s.clear(i);
            return;
        }
        let netio = &self.devs[self.ifs[i].dev].netio;
        let now = std::time::Instant::now();
        s.sent(
            i,
            netio.packet_socket(),
            netio.ifindex,
            frames,
            crate::engine::advert_interval(advbase, advskew),
            now,
            now + lease_len(advbase, advskew),
        );
    }

    /// Sends the advert `repr` for node `i`; returns the Ethernet frames sent to the CARP groups (none
    /// for a unicast `peer`).
    pub(super) fn send_advert(&mut self, i: usize, repr: &AdvertRepr) -> Result<Vec<Vec<u8>>> {
        let src_mac = self.advert_mac(i);
        let c = &self.ifs[i];
        let dev = &mut self.devs[c.dev];
        let addrs = self.own_addrs.of(&dev.name);
        let src4 = addrs.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            _ => None,
        });
        if let Some(IpAddr::V4(peer)) = c.cfg.peer {
            let src = src4.context("carppeer needs an IPv4 address on the carpdev")?;
            dev.netio.send_peer_advert(repr, src, peer)?;
            return Ok(Vec::new());
        }
        let mut frames = Vec::new();
        let vips = c.cfg.vips();
        if vips.iter().any(IpAddr::is_ipv4) {
            let src = src4.with_context(|| {
                format!("{} has no IPv4 address to send adverts from", dev.name)
            })?;
            frames.push(dev.netio.send_group_advert(
                repr,
                &Encap::group_v4(src, rand::random()),
                src_mac,
            )?);
        }
        if vips.iter().any(IpAddr::is_ipv6) {
            let ll = addrs.iter().find_map(|a| match a {
                IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(*v6),
                _ => None,
            });
            let src = ll.with_context(|| {
                format!(
                    "{} has no IPv6 link-local address to send adverts from",
                    dev.name
                )
            })?;
            frames.push(
                dev.netio
                    .send_group_advert(repr, &Encap::group_v6(src), src_mac)?,
            );
        }
        Ok(frames)
    }

    /// Extends the dataplane's MASTER lease of interface `i` by three advert intervals (plus slack for a
    /// late timer), about when peers would declare this node dead if its adverts stopped.
    pub(super) fn renew_lease(&mut self, i: usize, advbase: u8, advskew: u8) {
        let len = lease_len(advbase, advskew);
        let until = self.now().as_nanos() + len.as_nanos() as u64;
        let c = &self.ifs[i];
        let entry = nodes::node_entry(&c.cfg, c.node, VhidState::Master).with_lease(until);
        if let Err(e) = self.devs[c.dev].maps.set_vhid(c.vhid, entry) {
            tracing::error!("{}: renewing the MASTER lease failed: {e}", c.cfg.name);
        }
        self.sync_balance(i, Some(len));
    }

    /// True when the carp interface of node `i` is up with its VIPs.
    pub(super) fn leader_if_up(&self, i: usize) -> bool {
        let name = &self.ifs[i].cfg.name;
        self.ifs
            .iter()
            .find(|c| &c.cfg.name == name)
            .is_some_and(|c| c.if_up)
    }

    /// Makes the dataplane and the carp interface match a state.
    pub(super) async fn apply_state(&mut self, i: usize, state: State) {
        let c = &self.ifs[i];
        let mut entry = nodes::node_entry(&c.cfg, c.node, map_state(state));
        let len = self.node_lease(i);
        if state == State::Master {
            let until = self.now().as_nanos() + len.as_nanos() as u64;
            entry = entry.with_lease(until);
        }
        let c = &self.ifs[i];
        let name = c.cfg.name.clone();
        if let Err(e) = self.devs[c.dev].maps.set_vhid(c.vhid, entry) {
            tracing::error!("{name}: writing the vhid state to the dataplane failed: {e}");
        }
        // A balanced interface is up while any of its nodes is MASTER here, or while it keeps flows
        // created here (`nodes` module doc); its bits in the dataplane's mask follow every node's
        // transition.
        let up = if self.ifs[i].cfg.is_balanced() {
            self.sync_balance(i, (state == State::Master).then_some(len));
            let up = self.any_master(&name) || self.keeps_flows(&name);
            let leader = self.nodes_of(&name)[0];
            if self.ifs[leader].if_up == up {
                return;
            }
            self.ifs[leader].if_up = up;
            up
        } else {
            state == State::Master
        };
        let c = &self.ifs[i];
        let (index, addresses) = (c.index, c.cfg.addresses.clone());
        let result = async {
            if up {
                self.nl.set_up(index, true).await?;
                for a in addresses {
                    self.nl.add_addr(index, a).await?;
                }
            } else {
                self.nl.flush_addrs(index).await?;
                self.nl.set_up(index, false).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!("{name}: updating the carp interface failed: {e:#}");
        }
    }
}
