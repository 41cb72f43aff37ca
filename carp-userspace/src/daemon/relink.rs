//! A carpdev deleted and created again (issue #16 item 10): a VLAN or bond re-created by the network
//! configuration, a veth re-made by a container runtime.
//!
//! What this module owns: noticing the deletion (RTM_DELLINK of a carpdev's ifindex) and the return of
//! a link with the carpdev's name, and what carpd does then. Deletion takes the XDP program, the carp
//! interfaces (macvlans) and their VIPs with the device, so carpd says so, puts that carpdev's vhids in
//! INIT (as for a lost carrier) and unpins the defunct XDP link. When a link of that name comes back,
//! carpd re-executes itself in place, the hitless restart of SIGUSR2: the fresh image attaches to the
//! new device with the very start-up code (XDP mode choice for the new driver, the carp interface
//! checks, the macvlans, the sockets), while the vhids on every other carpdev are resumed as MASTER from
//! their leases without a failover. Re-attaching in place instead would have been a second copy of the
//! start-up path that only this rare event runs; exiting with an error would fail over every vhid of
//! every carpdev and, under systemd, fail again at each restart until the device is back.

use super::Daemon;
use crate::{dataplane::Dataplane, engine::HostEvent};

impl Daemon {
    /// RTM_DELLINK: if `index` is a carpdev, its vhids go INIT until the device is back.
    pub(super) async fn carpdev_deleted(&mut self, index: u32) {
        let Some(d) = self
            .devs
            .iter()
            .position(|d| d.ifindex == index && index != 0)
        else {
            return;
        };
        let name = self.devs[d].name.clone();
        tracing::warn!(
            "{name}: the carpdev was deleted (its XDP program and carp interfaces went with it); its vhids are INIT until a link named {name} is back, then carpd re-executes itself to attach to it"
        );
        // 0 is never a real ifindex: it marks the carpdev as gone.
        self.devs[d].ifindex = 0;
        Dataplane::forget_link(&name, &self.options.bpffs);
        if self.devs[d].running {
            self.devs[d].running = false;
            self.feed(HostEvent::CarpdevLink {
                carpdev: name.clone(),
                up: false,
            })
            .await;
        }
        // It may be back already (deleted and re-created between two reads of the socket).
        if let Some(new) = self.nl.index_of(&name).await {
            self.carpdev_back(&name, new);
        }
    }

    /// A link event for an index carpd does not know: a deleted carpdev coming back?
    pub(super) async fn carpdev_maybe_back(&mut self, index: u32) {
        if !self.devs.iter().any(|d| d.ifindex == 0) {
            return;
        }
        let Some(name) = self.nl.name_of(index).await else {
            return;
        };
        if self.devs.iter().any(|d| d.ifindex == 0 && d.name == name) {
            self.carpdev_back(&name, index);
        }
    }

    fn carpdev_back(&mut self, name: &str, index: u32) {
        if self.stopping || self.restart {
            return;
        }
        tracing::info!(
            "{name}: the carpdev is back (ifindex {index}): re-executing carpd to attach to it (hitless for the other carpdevs)"
        );
        self.restart = true;
    }
}
