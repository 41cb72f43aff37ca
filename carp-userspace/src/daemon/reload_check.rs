//! SIGHUP's first phase (issue #16 item 11): everything a reload needs from the system, checked
//! before anything of the running config is touched, so a reload applies fully or changes nothing.
//!
//! What this module owns: the list of what can make applying a new config fail half-way, checked
//! without side effects. Before it, a carp interface whose identity changed was removed first and lost
//! when its re-creation failed (a carpdev that is not there, a name taken by another link), and a bad
//! syncdev dropped the running replication. What is checked: each carp interface to be (re)created
//! has its carpdev and may take its name (`existing`), and a changed `[pfsync]` has its syncdev, a node
//! id and a usable key. What cannot be checked without doing it (binding the sync socket, attaching
//! XDP to a new carpdev) is left to the apply phase, whose sync step falls back to the running tables
//! (`sync_reload`).

use super::{Daemon, existing, reload::same_identity};
use crate::{config::Config, dataplane::if_index};
use carp_common::proto::virtual_mac;

impl Daemon {
    /// Why `new` cannot be applied as a whole, if it cannot; nothing is changed either way.
    pub(super) async fn check_reload(&self, new: &Config) -> Result<(), String> {
        for n in &new.interfaces {
            let running = self.ifs.iter().find(|c| c.cfg.name == n.name);
            if running.is_some_and(|c| same_identity(&c.cfg, n)) {
                continue;
            }
            let known = self.devs.iter().find(|d| d.name == n.carpdev);
            let carpdev_index = match known {
                Some(d) => d.ifindex,
                None => if_index(&n.carpdev).map_err(|e| {
                    format!("carp interface {}: carpdev {}: {e}", n.name, n.carpdev)
                })?,
            };
            // A link with the name that is one of ours now is deleted before the re-creation.
            if running.is_none()
                && let Some(link) = self.nl.link_facts(&n.name).await
                && !existing::is_ours(&link, carpdev_index, virtual_mac(n.vhid))
            {
                return Err(existing::refusal(&n.name, &link, &n.carpdev, carpdev_index));
            }
        }
        if new.pfsync != self.config.pfsync
            && let Some(p) = &new.pfsync
        {
            if_index(&p.syncdev).map_err(|e| format!("[pfsync] syncdev {}: {e}", p.syncdev))?;
            if p.node_id.is_none() && crate::ifreq::hw_addr(&p.syncdev).is_err() {
                return Err(format!(
                    "[pfsync] syncdev {} has no MAC address to derive the node id from; set node_id",
                    p.syncdev
                ));
            }
            crate::sync::auth::SyncKey::from_bytes(&p.key)
                .map_err(|e| format!("[pfsync] key_file: {e}"))?;
        }
        Ok(())
    }
}
