//! What comes in from the kernel: advert events from each carpdev's ring buffer (HMAC-checked here,
//! then fed to the engine), the engine's deadline with the stalled-controller guard (the kernel's
//! last-advert record re-confirms a live master the controller missed), and link and address
//! notifications.
use super::{Daemon, netlink::LinkEvent, stall};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{
    engine::{Advert, HostEvent, State, Time},
    wire::{AdvertPacket, AdvertRepr},
};

impl Daemon {
    /// A deadline passed. Drain every ring first, and re-check the kernel's last-advert time, so a
    /// controller that was stalled (or lost events) never declares a live master down. The kernel's
    /// record is believed only if its header passes the HMAC check: an advert that failed
    /// authentication (or any advert, with net.inet.carp.allow = 0) never delays a takeover.
    pub(super) async fn on_timer(&mut self) {
        for d in 0..self.devs.len() {
            self.drain(d).await;
        }
        // VRRP adverts already queued count before any master-down: select! picks among ready
        // branches at random, so the timer may win over a readable VRRP socket.
        for k in 0..self.vrrp_rx.len() {
            self.on_vrrp_rx(k).await;
        }
        // A late master-down deadline: let pending frames be delivered, then judge by the wire
        // (`stall` module doc).
        let late = self.late_master_down();
        if !late.is_empty() {
            std::thread::sleep(stall::GRACE);
            for d in 0..self.devs.len() {
                self.drain(d).await;
            }
            for k in 0..self.vrrp_rx.len() {
                self.on_vrrp_rx(k).await;
            }
        }
        let now = self.now();
        let guard = if self.config.carp.allow {
            self.ifs.len()
        } else {
            0
        };
        for i in 0..guard {
            let (state, vhid, dev) = (self.ifs[i].state, self.ifs[i].vhid, self.ifs[i].dev);
            let due = self
                .engine_node(i)
                .vhid
                .next_deadline()
                .is_some_and(|t| t <= now);
            if state != State::Backup || !due {
                continue;
            }
            let Ok(last) = self.devs[dev].maps.last_advert(vhid) else {
                continue;
            };
            let Some(known) = self.ifs[i].last_verified else {
                continue;
            };
            let window = self.engine_node(i).vhid.config().master_down_interval();
            let src = match last.family {
                6 => IpAddr::V6(Ipv6Addr::from(last.src)),
                _ => IpAddr::V4(Ipv4Addr::new(
                    last.src[0],
                    last.src[1],
                    last.src[2],
                    last.src[3],
                )),
            };
            // The record as received must verify, like an advert from the ring.
            let verified = AdvertPacket::new_checked(&last.carp[..])
                .ok()
                .and_then(|p| AdvertRepr::parse(&p).ok())
                .is_some_and(|r| r.vhid == vhid && self.ifs[i].auth.verify_repr(&r));
            // Only re-confirm a master we already authenticated, advertising the same values.
            if verified
                && last.ktime_ns > self.ifs[i].last_event_ktime
                && Time::from_nanos(last.ktime_ns) + window > now
                && src == known.src
                && (last.advbase, last.advskew, last.demote)
                    == (known.advbase, known.advskew, known.demote)
            {
                tracing::warn!(
                    "{} vhid {vhid}: the kernel saw an advert from {src} the controller missed; not declaring the master down",
                    self.ifs[i].cfg.name
                );
                self.ifs[i].last_event_ktime = last.ktime_ns;
                let carpdev = self.devs[dev].name.clone();
                self.feed(HostEvent::Advert {
                    carpdev,
                    advert: known,
                })
                .await;
            }
        }
        for i in late {
            let still_due = self.ifs[i].state == State::Backup
                && self.host.interfaces()[i]
                    .vhid
                    .next_deadline()
                    .is_some_and(|t| t <= now);
            if still_due {
                self.loop_stats.late_wakeups_master_down += 1;
            } else {
                self.loop_stats.late_wakeups_master_alive += 1;
                tracing::info!(
                    "{} vhid {}: master-down deadline served late, but the master's advert arrived: still BACKUP",
                    self.ifs[i].cfg.name,
                    self.ifs[i].vhid
                );
            }
        }
        self.feed(HostEvent::Timer).await;
    }

    /// The BACKUP nodes whose master-down deadline passed more than `stall::LATE` ago.
    fn late_master_down(&mut self) -> Vec<usize> {
        let now = self.now();
        (0..self.ifs.len())
            .filter(|&i| {
                self.ifs[i].state == State::Backup
                    && self.host.interfaces()[i]
                        .vhid
                        .next_deadline()
                        .is_some_and(|t| t + stall::LATE < now)
            })
            .collect()
    }

    /// Processes every pending advert event of one carpdev.
    pub(super) async fn drain(&mut self, d: usize) {
        let events = self.devs[d].maps.drain_events();
        // net.inet.carp.allow = 0: like OpenBSD, accept no advert at all (the kernel still counts them).
        if !self.config.carp.allow {
            return;
        }
        for ev in events {
            let Ok(packet) = AdvertPacket::new_checked(&ev.carp[..]) else {
                continue;
            };
            let Ok(repr) = AdvertRepr::parse(&packet) else {
                continue;
            };
            let Some(i) = self
                .ifs
                .iter()
                .position(|c| c.dev == d && c.vhid == repr.vhid)
            else {
                continue;
            };
            let src = match ev.family {
                6 => IpAddr::V6(Ipv6Addr::from(ev.src)),
                _ => IpAddr::V4(Ipv4Addr::new(ev.src[0], ev.src[1], ev.src[2], ev.src[3])),
            };
            if !self.ifs[i].auth.verify_repr(&repr) {
                if !super::carplog::enabled(self.config.carp.log, super::carplog::INFO) {
                    self.ifs[i].badauth.count_only(1);
                } else if let Some(n) = self.ifs[i].badauth.hit(std::time::Instant::now()) {
                    tracing::warn!(
                        "{} vhid {}: advert from {src} fails HMAC (wrong pass or addresses?); {n} since the last such line, {} in all (logged at most once a minute)",
                        self.ifs[i].cfg.name,
                        repr.vhid,
                        self.ifs[i].badauth.total
                    );
                }
                continue;
            }
            let advert = Advert {
                src,
                vhid: repr.vhid,
                advbase: repr.advbase,
                advskew: repr.advskew,
                demote: repr.demote,
                counter: repr.counter,
            };
            // An authenticated source that is not ours (our cookie: our own advert came back) earns
            // the kernel's protected limits slot; written only when the source changes.
            let own = repr.counter == self.engine_node(i).vhid.config().cookie;
            if !own
                && self.ifs[i].last_verified.map(|a| a.src) != Some(src)
                && let Err(e) = self.devs[d]
                    .maps
                    .set_advert_owner(repr.vhid, ev.family, ev.src)
            {
                tracing::warn!(
                    "{}: naming the advert limits' owner: {e}",
                    self.devs[d].name
                );
            }
            self.ifs[i].last_event_ktime = self.ifs[i].last_event_ktime.max(ev.ktime_ns);
            self.ifs[i].last_verified = Some(advert);
            let carpdev = self.devs[d].name.clone();
            self.feed(HostEvent::Advert { carpdev, advert }).await;
        }
    }

    pub(super) async fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Deleted { index } => self.carpdev_deleted(index).await,
            LinkEvent::Link { index, running } => {
                let Some(d) = self.devs.iter().position(|d| d.ifindex == index) else {
                    self.carpdev_maybe_back(index).await;
                    return;
                };
                if self.devs[d].running != running {
                    self.devs[d].running = running;
                    let carpdev = self.devs[d].name.clone();
                    tracing::info!("{carpdev}: link {}", if running { "up" } else { "down" });
                    self.feed(HostEvent::CarpdevLink {
                        carpdev,
                        up: running,
                    })
                    .await;
                }
            }
            LinkEvent::AddrRemoved { index, addr } => {
                let Some(i) = self.ifs.iter().position(|c| c.index == index) else {
                    return;
                };
                if !self.any_master(&self.ifs[i].cfg.name.clone()) {
                    return;
                }
                if let Some(a) = self.ifs[i]
                    .cfg
                    .addresses
                    .iter()
                    .find(|a| a.addr == addr)
                    .copied()
                {
                    tracing::warn!(
                        "{}: {a} was removed behind carpd's back while MASTER; putting it back",
                        self.ifs[i].cfg.name
                    );
                    if let Err(e) = self.nl.add_addr(index, a).await {
                        tracing::warn!("{}: {e:#}", self.ifs[i].cfg.name);
                    }
                }
            }
        }
    }
}
