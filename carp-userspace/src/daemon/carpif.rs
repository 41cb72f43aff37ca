//! The carp interfaces as carpd runs them, one `CarpIf` per carpnode: creating one (replacing a stale
//! interface, or keeping the one a resumed MASTER left), registering its vhids and VIPs with the
//! dataplane and the engine, starting it after a reload, and removing it.
use super::{Daemon, nodes, ratelog};
use std::{os::fd::OwnedFd, time::Duration};

use anyhow::Result;
use carp_common::maps::VhidState;

use super::actions::vhid_entry;
use crate::{
    auth::{AuthContext, AuthInput, ReplayCookie},
    config::{Config, InitialState, InterfaceConfig},
    engine::{Advert, ForcedState, HostEvent, NodeId, State, VhidConfig},
};

/// One carpnode of a carp interface as the daemon runs it (`id` = its node in the engine); a
/// plain carp interface is one node. The nodes of one interface share `cfg`, `dev` and `index`.
pub(super) struct CarpIf {
    // The engine's handle of this node: actions and standby slots name it, never a position.
    pub(super) id: NodeId,
    pub(super) cfg: InterfaceConfig,
    // Position in cfg.carpnodes (0 = the leader, the lowest vhid).
    pub(super) node: usize,
    // This node's vhid and virtual MAC 00:00:5e:00:01:<vhid>.
    pub(super) vhid: u8,
    pub(super) dev: usize,
    // The node's own virtual MAC, in arp mode too: adverts and gratuitous ARPs leave from it.
    pub(super) vmac: [u8; 6],
    // Leader only: the socket holding the balancing MACs in the carpdev's address filter.
    pub(super) membership: Option<OwnedFd>,
    // Leader only: the carp interface is up with its VIPs (some node MASTER, for a balanced one).
    pub(super) if_up: bool,
    pub(super) auth: AuthContext,
    pub(super) index: u32,
    pub(super) state: State,
    // Kernel time of the newest advert the controller processed for this vhid.
    pub(super) last_event_ktime: u64,
    // The newest authenticated advert heard, for the stalled-controller check.
    pub(super) last_verified: Option<Advert>,
    // Adverts that failed the HMAC check (the carpstats badauth counter), logged rate-limited.
    pub(super) badauth: ratelog::RateLog,
    // Adverts sent (the carpstats opackets counter).
    pub(super) opackets: u64,
    // Resuming a MASTER from a previous carpd: until the engine says MASTER, its transitions must not
    // touch the kernel (no VIP flush, no BACKUP in the map), or the restart would not be hitless.
    pub(super) resuming: bool,
}

pub(super) fn vhid_config(
    cfg: &InterfaceConfig,
    config: &Config,
    own_addrs: Vec<std::net::IpAddr>,
) -> VhidConfig {
    let mut v = VhidConfig::new(
        cfg.vhid,
        cfg.advbase,
        cfg.advskew,
        ReplayCookie::random().counter(),
    );
    v.preempt = config.carp.preempt;
    v.own_addrs = own_addrs;
    v.vrrp = super::vrrp::election(cfg);
    v
}

impl Daemon {
    /// The engine's side of daemon node `i`, found by its handle (not by position).
    pub(super) fn engine_node(&self, i: usize) -> &crate::engine::CarpIf {
        self.host
            .node(self.ifs[i].id)
            .expect("every daemon node is one of the engine's")
    }

    /// Creates a carp interface (replacing a stale one), registers its vhid and VIPs with the
    /// dataplane and adds it to the engine, in INIT.
    pub(super) async fn add_carp_if(&mut self, cfg: &InterfaceConfig) -> Result<()> {
        let dev = match self.devs.iter().position(|d| d.name == cfg.carpdev) {
            Some(d) => d,
            None => {
                let d = self.attach_carpdev(&cfg.carpdev).await?;
                // A carpdev the snapshot does not know yet (created after it was taken): read now,
                // here rather than on the advert path.
                if self.own_addrs.of(&cfg.carpdev).is_empty() {
                    self.own_addrs.refresh_now();
                }
                d
            }
        };
        let vmac = nodes::entry_mac(cfg, 0);
        // A MASTER left by the previous carpd keeps its carp interface (and so its VIPs): deleting and
        // re-creating it would drop traffic to the VIPs. For carpnodes, any resumed node keeps it.
        let resumed: Vec<bool> = cfg
            .carpnodes
            .iter()
            .map(|n| self.devs[dev].inherited.remove(&n.vhid).is_some())
            .collect();
        // Only a link carpd created may be kept or replaced (`existing`): anything else with the name is
        // someone else's and the config is refused.
        let carpdev_index = self.devs[dev].ifindex;
        let existing = self.nl.link_facts(&cfg.name).await;
        if let Some(link) = &existing
            && !super::existing::is_ours(link, carpdev_index, vmac)
        {
            anyhow::bail!(super::existing::refusal(
                &cfg.name,
                link,
                &cfg.carpdev,
                carpdev_index
            ));
        }
        let kept = match resumed.contains(&true) {
            true => existing.as_ref().map(|l| l.index),
            false => None,
        };
        let index = match kept {
            Some(index) => {
                tracing::info!(
                    "{}: kept the carp interface of the previous carpd (vhid {} MASTER, lease valid)",
                    cfg.name,
                    cfg.vhid
                );
                index
            }
            None => {
                if let Some(link) = &existing {
                    self.nl.delete(link.index).await.map_err(|e| {
                        anyhow::anyhow!("deleting the stale carp interface {}: {e:#}", cfg.name)
                    })?;
                    tracing::info!("{}: removed a stale carp interface", cfg.name);
                }
                self.nl
                    .create_carp_if(&cfg.name, self.devs[dev].ifindex, vmac)
                    .await?
            }
        };
        let leader = self.ifs.len();
        for (n, node) in cfg.carpnodes.iter().enumerate() {
            let auth = AuthContext::new(&cfg.key(), &AuthInput::with_addrs(node.vhid, cfg.vips()));
            let resuming = kept.is_some() && resumed[n];
            let mut vc = vhid_config(cfg, &self.config, self.own_addrs.of(&self.devs[dev].name));
            vc.vhid = node.vhid;
            vc.advskew = node.advskew;
            let id = self
                .host
                .add_interface(&cfg.name, &cfg.carpdev, &cfg.groups, vc);
            self.ifs.push(CarpIf {
                id,
                cfg: cfg.clone(),
                node: n,
                vhid: node.vhid,
                dev,
                vmac: nodes::node_mac(cfg, n),
                membership: None,
                if_up: n == 0 && kept.is_some(),
                auth,
                index,
                state: State::Init,
                last_event_ktime: 0,
                last_verified: None,
                badauth: ratelog::RateLog::default(),
                opackets: 0,
                resuming,
            });
            if !resuming {
                self.devs[dev]
                    .maps
                    .set_vhid(node.vhid, nodes::node_entry(cfg, n, VhidState::Init))?;
            }
        }
        if cfg.vrrp.is_some() {
            self.ensure_vrrp_rx(dev)?;
        }
        let maps = &mut self.devs[dev].maps;
        for a in &cfg.addresses {
            maps.add_vip(a.addr, cfg.vhid)?;
        }
        if cfg.is_balanced() {
            self.setup_balance(leader)?;
        }
        Ok(())
    }

    /// Takes a carp interface down (no linger) and removes it from the engine, the dataplane and
    /// the kernel.
    pub(super) async fn remove_carp_if(&mut self, name: &str) {
        let Some(i) = self.ifs.iter().position(|c| c.cfg.name == name) else {
            return;
        };
        self.feed(HostEvent::Down {
            iface: name.into(),
            linger: Duration::ZERO,
        })
        .await;
        let c = self.ifs.remove(i);
        // The other carpnodes of the interface follow their leader out.
        self.ifs.retain(|o| o.cfg.name != name);
        let maps = &mut self.devs[c.dev].maps;
        for node in &c.cfg.carpnodes {
            let _ = maps.set_vhid(node.vhid, vhid_entry(VhidState::Unconfigured, [0; 6]));
        }
        if c.cfg.is_balanced() {
            let _ = maps.clear_balance(c.cfg.vhid);
            Daemon::release_balance_macs(&c.cfg);
        }
        for a in &c.cfg.addresses {
            let _ = maps.remove_vip(a.addr);
        }
        if let Err(e) = self.nl.delete(c.index).await {
            tracing::warn!("{name}: deleting the carp interface: {e}");
        }
        let now = self.now();
        let actions = self.host.remove_interface(now, name);
        for a in actions {
            self.carry_out(a.node, a.action).await;
        }
    }

    /// Brings a just-added carp interface up (after a reload), honouring its link and `state`.
    pub(super) async fn start_carp_if(&mut self, name: &str) {
        let Some(i) = self.ifs.iter().position(|c| c.cfg.name == name) else {
            return;
        };
        self.feed(HostEvent::Up(name.into())).await;
        if !self.devs[self.ifs[i].dev].running {
            let carpdev = self.ifs[i].cfg.carpdev.clone();
            self.feed(HostEvent::CarpdevLink { carpdev, up: false })
                .await;
        }
        if self.ifs[i].cfg.state == Some(InitialState::Master) {
            self.feed(HostEvent::Force {
                iface: name.into(),
                state: ForcedState::Master,
            })
            .await;
        }
    }
}
