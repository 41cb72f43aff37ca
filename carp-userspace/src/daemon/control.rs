//! carpd's answers to control requests (design §2, issue #5): status, counters and groups reports,
//! `carpctl set` (validated as a whole, then applied), demote, sysctls and restart. Called by the
//! main loop with each `Msg` the control socket (`daemon::server`) passes on, so a request is
//! handled between two engine events and its effect is carried out like any other.

use std::time::Duration;

use super::{Daemon, monotonic, server::Msg};
use crate::{
    auth::{AuthContext, AuthInput, Key},
    control::{
        CountersReport, DemoteOp, ForceTo, GroupStatus, InterfaceStatus, NodeStatus, Request,
        Response, SYSCTLS, Setting, StatusReport, VhidCounters, check_adv, parse_sysctl_value,
        unknown_sysctl,
    },
    engine::{ForcedState, HostEvent},
};

/// A change to a carp interface, validated, waiting to be applied.
struct Plan {
    i: usize,
    advbase: Option<u8>,
    advskew: Option<u8>,
    // Per node index in `ifs`: the new advskew.
    node_skews: Vec<(usize, u8)>,
    pass: Option<(String, Key)>,
    force: Option<ForceTo>,
    up: Option<bool>,
}

impl Daemon {
    /// Answers one control request (called by the main loop, which owns the engine).
    pub(super) async fn on_control(&mut self, msg: Msg) {
        let response = match msg.request {
            Request::Status => Response::Status(self.status_report()),
            Request::Counters => Response::Counters(self.counters_report()),
            Request::Groups => Response::Groups(self.group_report()),
            Request::Set { iface, changes } => match self.plan_set(&iface, &changes) {
                Ok(plan) => Response::Done(self.apply_set(plan).await),
                Err(e) => Response::Error(e),
            },
            Request::Demote { group, change } => self.demote(&group, change).await,
            Request::Sysctl { name, value } => self.sysctl(&name, value.as_deref()).await,
            Request::Restart => self.request_restart(),
            Request::Sync => self.sync_report(),
            Request::Flows(_) => self.flows_pin(),
            // Served by the connection's task itself (a stream, and a rendering off the loop).
            Request::Monitor | Request::Metrics => {
                Response::Error("internal: answered by the connection task".into())
            }
        };
        let _ = msg.reply.send(response);
    }

    /// `carpctl restart`: the main loop re-executes carpd once this answer is on its way (as on SIGUSR2).
    fn request_restart(&mut self) -> Response {
        if self.stopping {
            return Response::Error("carpd is stopping (planned stop with bow-out)".into());
        }
        self.restart = true;
        Response::Done(vec![
            "carpd re-executes itself in place; MASTERs stay MASTER (hitless restart)".into(),
        ])
    }

    fn group_report(&self) -> Vec<GroupStatus> {
        let groups = self.host.groups();
        groups
            .iter()
            .map(|(name, demote)| GroupStatus {
                name: name.to_string(),
                demote,
                members: {
                    let mut m: Vec<String> = self
                        .host
                        .interfaces()
                        .iter()
                        .filter(|c| groups.groups_of(&c.name).contains(&name))
                        .map(|c| c.name.clone())
                        .collect();
                    // Every carpnode of an interface is an engine entry under its name.
                    m.dedup();
                    m
                },
            })
            .collect()
    }

    fn status_report(&self) -> StatusReport {
        let interfaces = self
            .ifs
            .iter()
            .zip(self.host.interfaces())
            .filter(|(c, _)| c.node == 0)
            .map(|(c, h)| {
                let vc = h.vhid.config();
                let state = h.vhid.state().as_str().to_string();
                InterfaceStatus {
                    name: c.cfg.name.clone(),
                    carpdev: c.cfg.carpdev.clone(),
                    vhid: vc.vhid,
                    state: state.clone(),
                    advbase: vc.advbase,
                    advskew: vc.advskew,
                    demote: h.vhid.demote(),
                    addresses: c.cfg.addresses.iter().map(|a| a.to_string()).collect(),
                    balancing: c.cfg.balancing.as_str().to_string(),
                    nodes: self
                        .nodes_of(&c.cfg.name)
                        .into_iter()
                        .map(|j| {
                            let n = &self.engine_node(j).vhid;
                            let vhid = n.config().vhid;
                            let (since, why) = match self.obs.since(&c.cfg.name, vhid) {
                                Some((t, why)) => (Some(t), Some(why)),
                                None => (None, None),
                            };
                            NodeStatus {
                                vhid,
                                state: n.state().as_str().to_string(),
                                advskew: n.config().advskew,
                                since,
                                why,
                            }
                        })
                        .collect(),
                    groups: self
                        .host
                        .groups()
                        .groups_of(&c.cfg.name)
                        .iter()
                        .map(|g| g.to_string())
                        .collect(),
                    last_master: h.vhid.last_master().map(|a| a.to_string()),
                    protocol: c
                        .cfg
                        .vrrp
                        .as_ref()
                        .map_or("carp", |v| v.protocol().as_str())
                        .to_string(),
                    vrrp: c.cfg.vrrp.as_ref().map(|v| crate::control::VrrpStatus {
                        vrid: v.vrid,
                        priority: h.vhid.vrrp_priority().unwrap_or(v.priority),
                        configured_priority: v.priority,
                        interval_cs: v.interval_cs,
                        master_interval_cs: h
                            .vhid
                            .master_adver_interval_cs()
                            .unwrap_or(v.interval_cs),
                        preempt: v.preempt,
                        accept_mode: v.accept_mode,
                        checksum: match v.checksum {
                            crate::wire::vrrp::ChecksumForm::PseudoHeader => "pseudo-header",
                            crate::wire::vrrp::ChecksumForm::MessageOnly => "message-only",
                        }
                        .to_string(),
                    }),
                }
            })
            .collect();
        StatusReport {
            preempt: self.config.carp.preempt,
            allow: self.config.carp.allow,
            log: self.config.carp.log,
            interfaces,
            groups: self.group_report(),
        }
    }

    fn counters_report(&self) -> CountersReport {
        let now = monotonic().as_nanos();
        let vhids = self
            .ifs
            .iter()
            .zip(self.host.interfaces())
            .map(|(c, h)| {
                let maps = &self.devs[c.dev].maps;
                let vhid = c.vhid;
                let last = maps.last_advert(vhid).ok().filter(|l| l.ktime_ns != 0);
                VhidCounters {
                    name: c.cfg.name.clone(),
                    carpdev: c.cfg.carpdev.clone(),
                    vhid,
                    state: h.vhid.state().as_str().to_string(),
                    transitions_to_master: h.vhid.transitions_to_master(),
                    opackets: c.opackets,
                    badauth: c.badauth.total,
                    last_master: h.vhid.last_master().map(|a| a.to_string()),
                    last_advert_age_seconds: last
                        .map(|l| now.saturating_sub(l.ktime_ns) as f64 / 1e9),
                    dataplane: maps.stats(vhid).ok(),
                    adverts: match &self.devs[c.dev].advq {
                        Some(q) => {
                            let a = q.counts(vhid);
                            super::stall::AdvertCounts {
                                by_kernel: a.kernel_sent(),
                                by_loop: a.immediate,
                                withdrawn: a.withdrawn,
                                refused_full: a.refused,
                            }
                        }
                        None => super::stall::AdvertCounts {
                            by_loop: c.opackets,
                            ..Default::default()
                        },
                    },
                }
            })
            .collect();
        let mut loop_stats = self.loop_stats.clone();
        loop_stats.standby_repeats = self.standby.as_ref().map_or(0, |s| s.resent());
        CountersReport { vhids, loop_stats }
    }

    fn unknown_iface(&self, name: &str) -> String {
        let names: Vec<&str> = self.ifs.iter().map(|c| c.cfg.name.as_str()).collect();
        format!(
            "no carp interface {name} (carpd runs {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )
    }

    /// Checks every change first, so a request is applied whole or not at all.
    fn plan_set(&self, iface: &str, changes: &[Setting]) -> Result<Plan, String> {
        let i = self
            .ifs
            .iter()
            .position(|c| c.cfg.name == iface)
            .ok_or_else(|| self.unknown_iface(iface))?;
        if changes.is_empty() {
            return Err(format!("nothing to change on {iface}"));
        }
        let mut plan = Plan {
            i,
            advbase: None,
            advskew: None,
            node_skews: Vec::new(),
            pass: None,
            force: None,
            up: None,
        };
        for ch in changes {
            match ch {
                Setting::Advbase(v) => plan.advbase = Some(check_adv("advbase", u32::from(*v))?),
                Setting::Advskew(v) => plan.advskew = Some(check_adv("advskew", u32::from(*v))?),
                Setting::Pass(p) => {
                    let key = Key::from_passphrase(p).map_err(|e| format!("pass: {e}"))?;
                    plan.pass = Some((p.clone(), key));
                }
                Setting::State(s) => plan.force = Some(*s),
                Setting::Up => plan.up = Some(true),
                Setting::Down => plan.up = Some(false),
                Setting::Carpnodes(nodes) => {
                    let have: Vec<u8> = self.ifs[i].cfg.carpnodes.iter().map(|n| n.vhid).collect();
                    let mut want: Vec<u8> = nodes.iter().map(|n| n.0).collect();
                    want.sort_unstable();
                    if want != have {
                        return Err(format!(
                            "{iface}: carpnodes {}: the vhids must stay {have:?} (changing them needs a config reload)",
                            nodes
                                .iter()
                                .map(|(v, s)| format!("{v}:{s}"))
                                .collect::<Vec<_>>()
                                .join(",")
                        ));
                    }
                    for &(vhid, skew) in nodes {
                        check_adv("advskew", u32::from(skew))?;
                        let j = self
                            .nodes_of(iface)
                            .into_iter()
                            .find(|&j| self.ifs[j].vhid == vhid)
                            .expect("vhids checked");
                        plan.node_skews.push((j, skew));
                    }
                }
            }
        }
        Ok(plan)
    }

    async fn apply_set(&mut self, plan: Plan) -> Vec<String> {
        let i = plan.i;
        let name = self.ifs[i].cfg.name.clone();
        let mut done = Vec::new();
        let nodes = self.nodes_of(&name);
        if let Some((pass, key)) = plan.pass {
            for &j in &nodes {
                let c = &mut self.ifs[j];
                c.auth = AuthContext::new(&key, &AuthInput::with_addrs(c.vhid, c.cfg.vips()));
                c.cfg.pass = pass.clone();
            }
            done.push(format!("{name}: pass changed"));
        }
        // advbase is the interface's (every node); advskew is the leader's, as OpenBSD's ifconfig
        // advskew sets the first node's; carpnodes sets each node's.
        let mut skews: Vec<(usize, u8)> = plan.node_skews.clone();
        if let Some(s) = plan.advskew {
            skews.retain(|(j, _)| *j != i);
            skews.push((i, s));
        }
        if plan.advbase.is_some() || !skews.is_empty() {
            for &j in &nodes {
                let mut vc = self.engine_node(j).vhid.config().clone();
                let (old_base, old_skew) = (vc.advbase, vc.advskew);
                vc.advbase = plan.advbase.unwrap_or(vc.advbase);
                if let Some(&(_, s)) = skews.iter().find(|(k, _)| *k == j) {
                    vc.advskew = s;
                }
                if (vc.advbase, vc.advskew) == (old_base, old_skew) && plan.advbase.is_none() {
                    continue;
                }
                // The running config follows, so SIGHUP compares the file with what really runs.
                let node = self.ifs[j].node;
                for &k in &nodes {
                    let cfg = &mut self.ifs[k].cfg;
                    cfg.advbase = vc.advbase;
                    cfg.carpnodes[node].advskew = vc.advskew;
                    if node == 0 {
                        cfg.advskew = vc.advskew;
                    }
                }
                let what = if nodes.len() > 1 {
                    format!("{name} vhid {}", vc.vhid)
                } else {
                    name.clone()
                };
                done.push(format!(
                    "{what}: advbase {old_base} -> {}, advskew {old_skew} -> {}",
                    vc.advbase, vc.advskew
                ));
                let now = self.now();
                let actions = self.host.reconfigure(now, &name, vc);
                for a in actions {
                    self.carry_out(a.node, a.action).await;
                }
            }
        }
        if let Some(up) = plan.up {
            done.push(format!("{name}: {}", if up { "up" } else { "down" }));
            let event = if up {
                HostEvent::Up(name.clone())
            } else {
                // ifconfig down: bow out and go INIT at once, as OpenBSD does.
                HostEvent::Down {
                    iface: name.clone(),
                    linger: Duration::ZERO,
                }
            };
            self.feed(event).await;
        }
        if let Some(s) = plan.force {
            let state = match s {
                ForceTo::Master => ForcedState::Master,
                ForceTo::Backup => ForcedState::Backup,
            };
            done.push(format!("{name}: state {s:?} forced"));
            self.feed(HostEvent::Force {
                iface: name.clone(),
                state,
            })
            .await;
        }
        for line in &done {
            tracing::info!("carpctl: {line}");
        }
        done
    }

    async fn demote(&mut self, group: &str, change: Option<DemoteOp>) -> Response {
        let Some(old) = self
            .host
            .groups()
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, c)| c)
        else {
            let known: Vec<&str> = self.host.groups().iter().map(|(g, _)| g).collect();
            return Response::Error(format!(
                "no interface group {group} (groups: {})",
                known.join(", ")
            ));
        };
        let new = match change {
            None => old,
            Some(DemoteOp::Set(v)) => v,
            Some(DemoteOp::Adjust(d)) => match u8::try_from(i32::from(old) + d) {
                Ok(v) => v,
                Err(_) => {
                    return Response::Error(format!(
                        "group {group}: demote {old} {d:+} = {} is out of range 0..=255; nothing changed",
                        i32::from(old) + d
                    ));
                }
            },
        };
        if new != old {
            // A tracker or carpctl asked; a tracker logs its own reason just before.
            tracing::info!("group {group}: demote {old} -> {new}");
            self.feed(HostEvent::GroupSet {
                group: group.to_string(),
                value: new,
            })
            .await;
        }
        Response::Groups(
            self.group_report()
                .into_iter()
                .filter(|g| g.name == group)
                .collect(),
        )
    }

    async fn sysctl(&mut self, name: &str, value: Option<&str>) -> Response {
        if !SYSCTLS.contains(&name) {
            return Response::Error(unknown_sysctl(name));
        }
        if let Some(v) = value {
            let v = match parse_sysctl_value(name, v) {
                Ok(v) => v,
                Err(e) => return Response::Error(e),
            };
            let carp = &mut self.config.carp;
            match name {
                "net.inet.carp.preempt" => {
                    let on = v == 1;
                    if carp.preempt != on {
                        carp.preempt = on;
                        tracing::info!("carpctl: {name}={v}");
                        self.feed(HostEvent::SetPreempt(on)).await;
                    }
                }
                "net.inet.carp.allow" => {
                    // Stored and reported; carpd does not yet ignore adverts when it is 0.
                    carp.allow = v == 1;
                    tracing::info!("carpctl: {name}={v}");
                }
                _ => {
                    carp.log = v;
                    tracing::info!("carpctl: {name}={v}");
                }
            }
        }
        let carp = &self.config.carp;
        let value = match name {
            "net.inet.carp.preempt" => u8::from(carp.preempt),
            "net.inet.carp.allow" => u8::from(carp.allow),
            _ => carp.log,
        };
        Response::Sysctl {
            name: name.to_string(),
            value: value.to_string(),
        }
    }
}
