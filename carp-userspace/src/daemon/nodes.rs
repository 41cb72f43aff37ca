//! Carpnodes and balancing in the daemon (spec §6): what a carp interface with several nodes needs
//! beyond one vhid each.
//!
//! Each carpnode is its own entry in `Daemon::ifs` (and its own `Vhid` in the engine, under the
//! interface's name), with its own vhid, advskew, election, adverts and `carp_vhids` entry; the carp
//! interface itself (one macvlan with MAC 00:00:5e:00:01:<leader>, the VIPs, the hooks) is shared.
//! This module owns what ties the nodes together:
//! - the `carp_balance` entry of the interface (mode, N, local mask: bit i = the i-th node is MASTER
//!   here), rewritten on every node transition, with the same MASTER lease as `carp_vhids`, renewed
//!   with every advert a local MASTER node sends;
//! - the carp interface is up with its VIPs while at least one node is MASTER here (the XDP filter
//!   takes only the buckets of those nodes) or, in the IP modes with `[pfsync]`, while flows created
//!   here in its nodes' buckets (`FlowEntry::owner`) are still in the flow table (the XDP filter keeps them with us after their buckets moved;
//!   without the interface the stack would drop them), and the hooks run when that changes;
//! - the MACs: the `carp_vhids` MAC of each node, the source MAC of each node's adverts (stealth: the
//!   carpdev's own MAC in `ip` and `ip-stealth`, so switches never learn the interface MAC; the
//!   interface MAC in `ip-unicast`; the node's own virtual MAC in `none` and `arp`), and the NIC
//!   filter: the `ip` multicast MAC goes into the carpdev's multicast list with SIOCADDMULTI (it
//!   outlives a hitless restart and is removed on a planned stop), the `arp` node MACs into its
//!   unicast list with PACKET_ADD_MEMBERSHIP (held by a socket, so they go when carpd goes).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use carp_common::{
    maps::{VhidEntry, VhidState},
    proto::virtual_mac,
};

use super::{Daemon, actions::lease_len, monotonic};
use crate::{
    balance,
    config::{Balancing, InterfaceConfig},
    engine::State,
    ifreq,
};

/// The MAC the dataplane keeps for node `node` of `cfg` in `carp_vhids`: in `arp` mode the carp
/// interface's MAC (XDP re-addresses a node's frames to it so the one macvlan receives them), else
/// the node's own virtual MAC.
pub(super) fn entry_mac(cfg: &InterfaceConfig, node: usize) -> [u8; 6] {
    if cfg.balancing == Balancing::Arp {
        virtual_mac(cfg.vhid)
    } else {
        node_mac(cfg, node)
    }
}

/// Node `node`'s own virtual MAC: the source of its adverts and gratuitous ARPs, so a switch learns
/// it on the port of the node's MASTER (in `arp` mode too, where `entry_mac` differs).
pub(super) fn node_mac(cfg: &InterfaceConfig, node: usize) -> [u8; 6] {
    super::vrrp::vmac(cfg).unwrap_or_else(|| virtual_mac(cfg.carpnodes[node].vhid))
}

/// The `carp_vhids` entry of node `node` of `cfg` in `state` (no lease).
pub(super) fn node_entry(cfg: &InterfaceConfig, node: usize, state: VhidState) -> VhidEntry {
    let mut entry = VhidEntry::new(state, cfg.balancing.mode(), entry_mac(cfg, node));
    // A VRRP VRID: the XDP intake runs the VRRP checks on its adverts (carp_common::vrrp).
    entry.mode |= super::vrrp::mode_flag(cfg);
    entry
}

/// Adds `macs` to the address filter of interface `ifindex` (multicast MACs to its multicast list,
/// unicast ones to its unicast list) for as long as the returned socket is open.
fn hold_macs(ifindex: u32, macs: &[[u8; 6]]) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    for mac in macs {
        // SAFETY: packet_mreq is plain data; zeroed is a valid start.
        let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mr.mr_ifindex = ifindex as i32;
        mr.mr_type = if mac[0] & 1 == 1 {
            libc::PACKET_MR_MULTICAST as u16
        } else {
            libc::PACKET_MR_UNICAST as u16
        };
        mr.mr_alen = 6;
        mr.mr_address[..6].copy_from_slice(mac);
        // SAFETY: a valid packet_mreq of the size given.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mr as *const libc::packet_mreq).cast(),
                size_of::<libc::packet_mreq>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(sock)
}

impl Daemon {
    /// The indices in `ifs` of every node of carp interface `name` (the leader first).
    pub(super) fn nodes_of(&self, name: &str) -> Vec<usize> {
        (0..self.ifs.len())
            .filter(|&i| self.ifs[i].cfg.name == name)
            .collect()
    }

    /// True when a node of `name` is MASTER here (or is being resumed as MASTER after a restart).
    pub(super) fn any_master(&self, name: &str) -> bool {
        self.nodes_of(name)
            .iter()
            .any(|&j| self.ifs[j].state == State::Master || self.ifs[j].resuming)
    }

    /// True when carp interface `name` stays up for flows this gateway keeps (module doc).
    pub(super) fn keeps_flows(&self, name: &str) -> bool {
        let Some(c) = self.ifs.iter().find(|c| c.cfg.name == name) else {
            return false;
        };
        let vhids: Vec<u8> = c.cfg.carpnodes.iter().map(|n| n.vhid).collect();
        matches!(
            c.cfg.balancing,
            Balancing::Ip | Balancing::IpStealth | Balancing::IpUnicast
        ) && self.sync.as_ref().is_some_and(|s| s.holds_flows(&vhids))
    }

    /// After a flow scan: brings a balanced carp interface down once it has no MASTER node and no
    /// kept flow left (or up again when flows appeared), with its hooks.
    pub(super) async fn refresh_kept_ifs(&mut self) {
        let leaders: Vec<usize> = (0..self.ifs.len())
            .filter(|&i| self.ifs[i].node == 0 && self.ifs[i].cfg.is_balanced())
            .collect();
        for i in leaders {
            let name = self.ifs[i].cfg.name.clone();
            let want = self.any_master(&name) || self.keeps_flows(&name);
            if want == self.ifs[i].if_up {
                continue;
            }
            let state = self.ifs[i].state;
            self.apply_state(i, state).await;
            let up = self.ifs[i].if_up;
            tracing::info!(
                "{name}: carp interface {} ({})",
                if up { "up" } else { "down" },
                if up {
                    "flows created here"
                } else {
                    "no node MASTER here and no kept flow left"
                }
            );
            let script = if up {
                self.ifs[i].cfg.up_script.clone()
            } else {
                self.ifs[i].cfg.down_script.clone()
            };
            if let Some(s) = script {
                let st = if up { "MASTER" } else { state.as_str() };
                super::hooks::spawn(s, name, st, self.ifs[i].cfg.vips());
            }
        }
    }

    /// The Ethernet source of node `i`'s adverts (module doc).
    pub(super) fn advert_mac(&self, i: usize) -> [u8; 6] {
        let c = &self.ifs[i];
        match c.cfg.balancing {
            Balancing::Ip | Balancing::IpStealth => self.devs[c.dev].mac,
            Balancing::IpUnicast => virtual_mac(c.cfg.vhid),
            Balancing::None | Balancing::Arp => c.vmac,
        }
    }

    /// Puts the carpdev's address filter in shape for a balanced interface whose leader is `ifs[i]`
    /// and writes its `carp_balance` entry (nodes resumed from a previous carpd keep their bits and
    /// the lease).
    pub(super) fn setup_balance(&mut self, i: usize) -> anyhow::Result<()> {
        let cfg = self.ifs[i].cfg.clone();
        let dev = self.ifs[i].dev;
        if cfg.balancing == Balancing::Ip {
            let mac = balance::interface_mac(cfg.balancing.mode(), cfg.vhid);
            ifreq::multicast_mac(&cfg.carpdev, mac, true).map_err(|e| {
                anyhow::anyhow!(
                    "{}: adding {mac:02x?} to {}'s multicast list: {e}",
                    cfg.name,
                    cfg.carpdev
                )
            })?;
        }
        // The leader's MAC is the macvlan's own, in the unicast list already.
        let macs: Vec<[u8; 6]> = match cfg.balancing {
            Balancing::Arp => cfg.carpnodes[1..]
                .iter()
                .map(|n| virtual_mac(n.vhid))
                .collect(),
            _ => Vec::new(),
        };
        if !macs.is_empty() {
            let sock = hold_macs(self.devs[dev].ifindex, &macs).map_err(|e| {
                anyhow::anyhow!(
                    "{}: adding {macs:02x?} to {}'s address filter: {e}",
                    cfg.name,
                    cfg.carpdev
                )
            })?;
            self.ifs[i].membership = Some(sock);
        }
        let old = self.devs[dev].maps.balance(cfg.vhid).ok();
        let lease = old.map(|g| g.lease_until_ns).unwrap_or(0);
        self.write_balance(i, lease)
    }

    /// Takes the `ip` multicast MAC of a carp interface out of its carpdev's multicast list (planned
    /// stop, interface removed); a hitless restart leaves it.
    pub(super) fn release_balance_macs(cfg: &InterfaceConfig) {
        if cfg.balancing == Balancing::Ip {
            let mac = balance::interface_mac(cfg.balancing.mode(), cfg.vhid);
            if let Err(e) = ifreq::multicast_mac(&cfg.carpdev, mac, false) {
                tracing::warn!(
                    "{}: removing {mac:02x?} from {}'s multicast list: {e}",
                    cfg.name,
                    cfg.carpdev
                );
            }
        }
    }

    /// Rewrites the `carp_balance` entry of node `i`'s interface from its nodes' states; a
    /// `renew` (the lease length of a MASTER that just advertised or took over) extends the lease.
    pub(super) fn sync_balance(&mut self, i: usize, renew: Option<std::time::Duration>) {
        let c = &self.ifs[i];
        if !c.cfg.is_balanced() {
            return;
        }
        let old = self.devs[c.dev]
            .maps
            .balance(c.cfg.vhid)
            .map(|g| g.lease_until_ns)
            .unwrap_or(0);
        let lease = match renew {
            Some(len) => old.max(monotonic().as_nanos() + len.as_nanos() as u64),
            None => old,
        };
        let name = c.cfg.name.clone();
        if let Err(e) = self.write_balance(i, lease) {
            tracing::error!("{name}: writing the balancing group to the dataplane failed: {e:#}");
        }
    }

    fn write_balance(&mut self, i: usize, lease: u64) -> anyhow::Result<()> {
        let name = self.ifs[i].cfg.name.clone();
        let nodes: Vec<(u8, bool)> = self
            .nodes_of(&name)
            .iter()
            .map(|&j| {
                let c = &self.ifs[j];
                (c.vhid, c.state == State::Master || c.resuming)
            })
            .collect();
        let c = &self.ifs[i];
        let dev = &mut self.devs[c.dev];
        let mut group = balance::group(c.cfg.balancing.mode(), &nodes, dev.mac)?;
        group.lease_until_ns = lease;
        dev.maps.set_balance(group)?;
        Ok(())
    }

    /// The MASTER lease length of node `i` (three of its advert intervals plus slack).
    pub(super) fn node_lease(&self, i: usize) -> std::time::Duration {
        let vc = self.engine_node(i).vhid.config();
        match &vc.vrrp {
            Some(v) => super::vrrp::lease_len(v),
            None => lease_len(vc.advbase, vc.advskew),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn iface(balancing: &str) -> InterfaceConfig {
        let text = format!(
            "[[interface]]\nname = \"carp0\"\ncarpdev = \"eth0\"\ncarpnodes = \"3:0,7:100\"\nbalancing = \"{balancing}\"\naddresses = [\"10.0.0.1/24\"]\n"
        );
        crate::config::Config::parse(Path::new("t.toml"), &text)
            .expect("config")
            .interfaces
            .remove(0)
    }

    #[test]
    fn node_entries_carry_the_mode_and_the_right_mac() {
        let ip = iface("ip");
        let e = node_entry(&ip, 1, VhidState::Backup);
        assert_eq!(e.mode, carp_common::maps::BalanceMode::Ip as u8);
        assert_eq!(
            e.vmac,
            virtual_mac(7),
            "a node keeps its own MAC in the IP modes"
        );
        // arp mode: every node's frames go to the carp interface, whose MAC is the leader's.
        let arp = iface("arp");
        assert_eq!(entry_mac(&arp, 1), virtual_mac(3));
        assert_eq!(
            node_entry(&arp, 0, VhidState::Master).state(),
            VhidState::Master
        );
    }
}
