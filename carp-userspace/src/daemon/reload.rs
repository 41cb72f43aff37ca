//! SIGHUP: re-reading the config and applying the difference, keeping the state of every carp
//! interface whose identity did not change.

use super::Daemon;
use crate::{
    config::{Config, InterfaceConfig},
    engine::HostEvent,
};

/// True when two configs of one carp interface differ at most in settings that apply in place.
pub(super) fn same_identity(a: &InterfaceConfig, b: &InterfaceConfig) -> bool {
    let vhids = |c: &InterfaceConfig| c.carpnodes.iter().map(|n| n.vhid).collect::<Vec<_>>();
    (
        &a.carpdev,
        a.vhid,
        &a.pass,
        &a.addresses,
        a.peer,
        &a.groups,
        a.balancing,
        vhids(a),
    ) == (
        &b.carpdev,
        b.vhid,
        &b.pass,
        &b.addresses,
        b.peer,
        &b.groups,
        b.balancing,
        vhids(b),
    )
}

impl Daemon {
    /// SIGHUP: re-reads the config. Unchanged carp interfaces keep their state; a change of advbase,
    /// advskew, state, description or hooks is applied in place (state kept); any other change
    /// (carpdev, vhid, pass, addresses, peer, groups) re-creates that interface; removed ones go away.
    pub(super) async fn reload(&mut self) {
        let new = match Config::load(&self.options.config_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("SIGHUP: keeping the running config: {e}");
                return;
            }
        };
        // All or nothing: what could fail half-way is checked before anything changes (`reload_check`).
        if let Err(e) = self.check_reload(&new).await {
            tracing::error!("SIGHUP: keeping the running config: {e}");
            return;
        }
        for w in &new.warnings {
            tracing::warn!("SIGHUP: {w}");
        }
        if new.carp.preempt != self.config.carp.preempt {
            tracing::info!("SIGHUP: preempt = {}", new.carp.preempt);
            self.feed(HostEvent::SetPreempt(new.carp.preempt)).await;
        }
        self.config.carp = new.carp.clone();
        let old: Vec<InterfaceConfig> = self.ifs.iter().map(|c| c.cfg.clone()).collect();
        for o in &old {
            let keep = new
                .interfaces
                .iter()
                .any(|n| n.name == o.name && same_identity(n, o));
            if !keep {
                tracing::info!("SIGHUP: {}: removed or re-created", o.name);
                self.remove_carp_if(&o.name).await;
            }
        }
        let mut unchanged = 0;
        for n in &new.interfaces {
            match self.ifs.iter().position(|c| c.cfg.name == n.name) {
                Some(i) if self.ifs[i].cfg == *n => unchanged += 1,
                Some(_) => {
                    let skews = match n.carpnodes.len() {
                        1 => format!("advskew {}", n.advskew),
                        _ => format!(
                            "carpnodes {}",
                            crate::config::format_carpnodes(&n.carpnodes)
                        ),
                    };
                    tracing::info!(
                        "SIGHUP: {}: advbase {} {skews} (state kept)",
                        n.name,
                        n.advbase
                    );
                    for j in self.nodes_of(&n.name) {
                        let mut vc = self.engine_node(j).vhid.config().clone();
                        vc.advbase = n.advbase;
                        vc.advskew = n.carpnodes[self.ifs[j].node].advskew;
                        self.ifs[j].cfg = n.clone();
                        let now = self.now();
                        let actions = self.host.reconfigure(now, &n.name, vc);
                        for a in actions {
                            self.carry_out(a.node, a.action).await;
                        }
                    }
                }
                None => {
                    tracing::info!("SIGHUP: {}: new carp interface", n.name);
                    if let Err(e) = self.add_carp_if(n).await {
                        tracing::error!("SIGHUP: {}: {e:#}", n.name);
                        continue;
                    }
                    self.start_carp_if(&n.name).await;
                }
            }
        }
        self.config.interfaces = self
            .ifs
            .iter()
            .filter(|c| c.node == 0)
            .map(|c| c.cfg.clone())
            .collect();
        self.sync_reload(&new).await;
        tracing::info!("SIGHUP: config reloaded ({unchanged} carp interface(s) unchanged)");
    }
}
