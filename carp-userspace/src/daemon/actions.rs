//! Carrying out the engine's actions for one node: a transition (the dataplane's vhid state and MASTER
//! lease, the carp interface and its VIPs, the hooks, the standby senders), an advert (signed, sent to
//! the CARP groups or the unicast peer, handed to the standby senders), a gratuitous ARP/NA.
use super::{Daemon, advcache, hooks, nodes};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use carp_common::maps::{BalanceMode, VhidEntry, VhidState};

use crate::{
    engine::{Action, NodeId, State},
    wire::{
        AdvertRepr,
        ip::{Encap, emit_frame},
    },
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
    pub(super) async fn carry_out(&mut self, id: NodeId, action: Action) {
        // A node removed since the action was made (a reload) has nothing left to act on.
        let Some(i) = self.ifs.iter().position(|c| c.id == id) else {
            return;
        };
        let name = self.ifs[i].cfg.name.clone();
        let vhid = self.ifs[i].vhid;
        if let Some((from, to, reason)) = action.transition() {
            self.ifs[i].state = to;
            if to != State::Master {
                if let Some(s) = &self.standby {
                    s.clear(self.ifs[i].id);
                }
                // Before the new state takes effect: nothing queued may leave after it.
                self.withdraw_adverts(i);
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
            // net.inet.carp.log gates the line only; the observers always hear of it.
            if super::carplog::enabled(self.config.carp.log, super::carplog::STATE) {
                tracing::info!("{name} vhid {vhid}: {from} -> {to} ({reason})");
            }
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
                let queued = self.queues_adverts(i);
                if master && !queued {
                    self.renew_lease(i, advbase, advskew, None);
                } else if !master {
                    if let Some(s) = &self.standby {
                        // Before the bow-out leaves: no standby may repeat an advert after it.
                        s.clear(self.ifs[i].id);
                    }
                    self.withdraw_adverts(i);
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
                match self.send_advert(i, &repr, master && queued) {
                    Ok((frames, last_departure)) => {
                        self.ifs[i].opackets += 1;
                        match (master, last_departure) {
                            // The kernel keeps the schedule: the lease runs from its last advert,
                            // and no standby is needed.
                            (true, Some(last)) => {
                                self.renew_lease(i, advbase, advskew, Some(last));
                                if let Some(s) = &self.standby {
                                    s.clear(self.ifs[i].id);
                                }
                            }
                            (true, None) => self.standby_sent(i, frames, advbase, advskew),
                            _ => {}
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
            s.clear(self.ifs[i].id);
            return;
        }
        let netio = &self.devs[self.ifs[i].dev].netio;
        let now = std::time::Instant::now();
        s.sent(
            self.ifs[i].id,
            netio.packet_socket(),
            netio.ifindex,
            frames,
            crate::engine::advert_interval(advbase, advskew),
            now,
            now + lease_len(advbase, advskew),
        );
    }

    /// True when node `i`'s adverts go through its carpdev's kernel advert queue (`advq`): there is
    /// one, and the adverts go to the CARP groups (a unicast `peer` goes through the kernel's routing).
    pub(super) fn queues_adverts(&self, i: usize) -> bool {
        let c = &self.ifs[i];
        c.cfg.peer.is_none() && self.devs[c.dev].advq.is_some()
    }

    /// Withdraws whatever node `i` has queued in the kernel (before a bow-out, a state change or a
    /// demotion takes effect).
    pub(super) fn withdraw_adverts(&mut self, i: usize) {
        let now = self.now().as_nanos();
        let c = &self.ifs[i];
        let Some(q) = self.devs[c.dev].advq.as_mut() else {
            return;
        };
        match q.withdraw(c.vhid, now) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                "{} vhid {}: withdrew {n} queued advert(s)",
                c.cfg.name,
                c.vhid
            ),
            Err(e) => tracing::error!(
                "{} vhid {}: withdrawing the queued adverts failed: {e}",
                c.cfg.name,
                c.vhid
            ),
        }
    }

    /// The Ethernet frames of advert `repr` for node `i` (built once per content, `advcache`).
    pub(super) fn advert_frames(&mut self, i: usize, repr: &AdvertRepr) -> Result<Vec<Vec<u8>>> {
        let src_mac = self.advert_mac(i);
        let c = &self.ifs[i];
        let dev = &self.devs[c.dev];
        let sources = advcache::Sources::from_addrs(&self.own_addrs.of(&dev.name));
        let key = advcache::AdvertKey {
            advbase: repr.advbase,
            advskew: repr.advskew,
            demote: repr.demote,
            counter: repr.counter,
            digest: repr.digest,
            src_mac,
        };
        if let Some(f) = self.advcache.get(i, &key, &sources) {
            return Ok(f.to_vec());
        }
        let mut frames = Vec::new();
        let vips = c.cfg.vips();
        if vips.iter().any(IpAddr::is_ipv4) {
            let src = sources.v4.with_context(|| {
                format!("{} has no IPv4 address to send adverts from", dev.name)
            })?;
            let encap = Encap::group_v4(src, advcache::ip_ident(&repr.counter));
            frames.push(emit_frame(repr, &encap, src_mac, encap.group_mac()));
        }
        if vips.iter().any(IpAddr::is_ipv6) {
            let src = sources.v6_ll.with_context(|| {
                format!(
                    "{} has no IPv6 link-local address to send adverts from",
                    dev.name
                )
            })?;
            let encap = Encap::group_v6(src);
            frames.push(emit_frame(repr, &encap, src_mac, encap.group_mac()));
        }
        self.advcache.put(i, key, sources, frames.clone());
        Ok(frames)
    }

    /// Sends the advert `repr` for node `i`: through the kernel advert queue when `queue` (a MASTER's
    /// regular advert), through its direct queue for any other advert of a node that has one (a
    /// bow-out leaves behind anything already dequeued there), else from the carpdev's socket.
    /// Returns the Ethernet frames sent to the CARP groups (none for a unicast `peer`) and, when
    /// queued, the earliest time the last queued advert can leave.
    pub(super) fn send_advert(
        &mut self,
        i: usize,
        repr: &AdvertRepr,
        queue: bool,
    ) -> Result<(Vec<Vec<u8>>, Option<u64>)> {
        if let Some(IpAddr::V4(peer)) = self.ifs[i].cfg.peer {
            let dev = &mut self.devs[self.ifs[i].dev];
            let src = advcache::Sources::from_addrs(&self.own_addrs.of(&dev.name))
                .v4
                .context("carppeer needs an IPv4 address on the carpdev")?;
            dev.netio.send_peer_advert(repr, src, peer)?;
            return Ok((Vec::new(), None));
        }
        let frames = self.advert_frames(i, repr)?;
        let now = self.now().as_nanos();
        let c = &self.ifs[i];
        let interval = crate::engine::advert_interval(repr.advbase, repr.advskew);
        let dev = &mut self.devs[c.dev];
        match dev.advq.as_mut() {
            Some(q) if queue => {
                let last = q.advertise(c.vhid, &frames, interval, now)?;
                Ok((frames, Some(last)))
            }
            Some(q) => {
                q.send_now(&frames)?;
                Ok((frames, None))
            }
            None => {
                for f in &frames {
                    dev.netio.send_frame(f)?;
                }
                Ok((frames, None))
            }
        }
    }

    /// Extends the dataplane's MASTER lease of interface `i` by three advert intervals (plus slack for a
    /// late timer), about when peers would declare this node dead if its adverts stopped.
    /// With the kernel advert queue the lease runs from `from`, the earliest time the last queued
    /// advert can leave: a stopped carpd's dataplane answers as long as the kernel advertises for it,
    /// and stops about when the peers declare it dead.
    pub(super) fn renew_lease(&mut self, i: usize, advbase: u8, advskew: u8, from: Option<u64>) {
        let now = self.now().as_nanos();
        let from = from.unwrap_or(now).max(now);
        let len = lease_len(advbase, advskew) + Duration::from_nanos(from - now);
        let until = now + len.as_nanos() as u64;
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
        self.sync_role();
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
