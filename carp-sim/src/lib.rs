//! A deterministic simulator of N CARP nodes on shared segments, over virtual time.
//!
//! It owns everything the engine leaves out: a clock, a network (per-link loss, delay, jitter,
//! partitions, a hypervisor-style echo), node crashes and restarts, and a scripted fault schedule.
//! Each node is an `engine::Host`; `SendAdvert` actions become deliveries to the other nodes on the
//! same carpdev name. All randomness comes from one seeded `StdRng`, so a (scenario, seed) pair
//! always yields the same `Timeline`. The built-in scenarios back `carp-sim` and the regression
//! tests; `tests/sim_props.rs` feeds it random fault schedules.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use carp::engine::{
    Action, Advert, DropReason, ForcedState, Host, HostEvent, MasterDownMode, State, Time,
    VhidConfig, VrrpAdvertIn, VrrpElection,
};
use carp::wire::vrrp::VrrpVersion;

/// One carp interface of a simulated node.
#[derive(Clone, Debug, PartialEq)]
pub struct IfaceSpec {
    /// Interface name, e.g. `carp0`.
    pub name: String,
    /// Segment (parent interface name) it advertises on; nodes share a segment by this name.
    pub carpdev: String,
    /// The vhid.
    pub vhid: u8,
    /// advbase in seconds.
    pub advbase: u8,
    /// advskew in 1/256 s.
    pub advskew: u8,
    /// Extra demote groups besides "carp".
    pub groups: Vec<String>,
    /// Master-down formula.
    pub master_down_mode: MasterDownMode,
    /// ucarp's address tie-break.
    pub ucarp_tiebreak: bool,
    /// State forced right after boot (config `state = ...`).
    pub initial_state: Option<ForcedState>,
    /// Run VRRP instead of CARP (`vhid` is the VRID; advbase/advskew are then unused).
    pub vrrp: Option<VrrpElection>,
}

impl IfaceSpec {
    /// `carp0` on `eth0` with the given vhid and advskew, advbase 1.
    pub fn new(vhid: u8, advskew: u8) -> IfaceSpec {
        IfaceSpec {
            name: "carp0".into(),
            carpdev: "eth0".into(),
            vhid,
            advbase: 1,
            advskew,
            groups: Vec::new(),
            master_down_mode: MasterDownMode::Classic,
            ucarp_tiebreak: false,
            initial_state: None,
            vrrp: None,
        }
    }

    /// Sets the interface and carpdev names.
    pub fn on(mut self, name: &str, carpdev: &str) -> IfaceSpec {
        self.name = name.into();
        self.carpdev = carpdev.into();
        self
    }

    /// Sets advbase.
    pub fn advbase(mut self, advbase: u8) -> IfaceSpec {
        self.advbase = advbase;
        self
    }

    /// Runs VRRPv3 with this priority and interval (centiseconds), preempt on.
    pub fn vrrp3(mut self, priority: u8, interval_cs: u16) -> IfaceSpec {
        self.vrrp = Some(VrrpElection {
            version: VrrpVersion::V3,
            priority,
            interval_cs,
            preempt: true,
        });
        self
    }

    /// Turns the ucarp tie-break on.
    pub fn tiebreak(mut self) -> IfaceSpec {
        self.ucarp_tiebreak = true;
        self
    }
}

/// A simulated machine.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// Name used in the timeline, e.g. `gw1`.
    pub name: String,
    /// Source address of its adverts.
    pub addr: Ipv4Addr,
    /// Its carp interfaces.
    pub ifaces: Vec<IfaceSpec>,
    /// Boot time; None = not booted until an `Op::Restart`.
    pub boot_at: Option<Time>,
}

impl NodeSpec {
    /// A node booting at time 0 with one interface.
    pub fn new(name: &str, addr: Ipv4Addr, iface: IfaceSpec) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            addr,
            ifaces: vec![iface],
            boot_at: Some(Time::ZERO),
        }
    }
}

/// Properties of one directed link between two nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// Probability an advert is lost.
    pub loss: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra uniformly random delay in 0..=jitter.
    pub jitter: Duration,
    /// Partitioned: nothing gets through.
    pub cut: bool,
}

impl Default for LinkParams {
    /// A clean LAN: 200 µs, no loss.
    fn default() -> LinkParams {
        LinkParams {
            loss: 0.0,
            delay: Duration::from_micros(200),
            jitter: Duration::ZERO,
            cut: false,
        }
    }
}

/// A scheduled fault or operator action. Nodes are indices into `Scenario::nodes`.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Power off: no bow-out, state lost.
    Crash(usize),
    /// Boot a crashed or never-booted node (no-op if it runs).
    Restart(usize),
    /// Planned stop of every carp interface (bow-out from MASTERs).
    Shutdown {
        /// Node.
        node: usize,
        /// Make-before-break wait.
        linger: Duration,
    },
    /// `ifconfig carpN up` on every interface of a node.
    Up(usize),
    /// Cut every link between `side` and the other nodes.
    Partition(Vec<usize>),
    /// Cut the links between two nodes, both directions.
    Cut(usize, usize),
    /// Restore every link to the scenario's base parameters.
    Heal,
    /// Loss probability on every link.
    Loss(f64),
    /// Delay and jitter on every link.
    Delay {
        /// Fixed part.
        delay: Duration,
        /// Random part.
        jitter: Duration,
    },
    /// A carpdev's link on one node.
    CarpdevLink {
        /// Node.
        node: usize,
        /// Parent interface.
        carpdev: String,
        /// New link state.
        up: bool,
    },
    /// `carpdemote` adjustment on a node's group.
    Demote {
        /// Node.
        node: usize,
        /// Group.
        group: String,
        /// Signed change.
        delta: i32,
    },
    /// Set a node's group counter.
    DemoteSet {
        /// Node.
        node: usize,
        /// Group.
        group: String,
        /// New value.
        value: u8,
    },
    /// Forced state on one interface of a node.
    Force {
        /// Node.
        node: usize,
        /// Interface name.
        iface: String,
        /// State.
        state: ForcedState,
    },
    /// `net.inet.carp.preempt` on every node.
    Preempt(bool),
    /// Hypervisor echo: every advert also comes back to its sender.
    Echo(bool),
    /// Make a node healthy again: boot if down, interfaces up, carpdev links up.
    Recover(usize),
}

/// A named, reproducible setup: nodes, network, fault schedule and length.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Name for `carp-sim NAME`.
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// RNG seed.
    pub seed: u64,
    /// `net.inet.carp.preempt` at boot.
    pub preempt: bool,
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// Base parameters of every link.
    pub link: LinkParams,
    /// Scheduled operations, by time.
    pub ops: Vec<(Time, Op)>,
    /// When the run stops.
    pub duration: Time,
}

impl Scenario {
    /// A scenario with the default LAN, seed 1, preempt off and no operations.
    pub fn new(name: &str, description: &str, nodes: Vec<NodeSpec>, duration: Time) -> Scenario {
        Scenario {
            name: name.into(),
            description: description.into(),
            seed: 1,
            preempt: false,
            nodes,
            link: LinkParams::default(),
            ops: Vec::new(),
            duration,
        }
    }

    /// Schedules `op` at `t`.
    pub fn at(mut self, t: Time, op: Op) -> Scenario {
        self.ops.push((t, op));
        self
    }

    /// Sets preempt.
    pub fn preempt(mut self, on: bool) -> Scenario {
        self.preempt = on;
        self
    }

    /// Index of the node called `name`.
    pub fn node(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

/// What happened in one timeline entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A vhid changed state.
    Transition {
        /// Interface name.
        iface: String,
        /// vhid.
        vhid: u8,
        /// Old state.
        from: State,
        /// New state.
        to: State,
        /// Engine's reason.
        reason: &'static str,
    },
    /// A MASTER sent its bow-out advert.
    BowOut {
        /// vhid.
        vhid: u8,
    },
    /// A scheduled operation was applied (description).
    Op(String),
}

/// One timeline line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// When.
    pub t: Time,
    /// Node name, or None for network-wide operations.
    pub node: Option<String>,
    /// What.
    pub kind: EntryKind,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={} ", self.t)?;
        match (&self.node, &self.kind) {
            (
                Some(n),
                EntryKind::Transition {
                    vhid,
                    from,
                    to,
                    reason,
                    ..
                },
            ) => {
                write!(f, "node {n} vhid {vhid}: {from} -> {to} ({reason})")
            }
            (Some(n), EntryKind::BowOut { vhid }) => {
                write!(f, "node {n} vhid {vhid}: sends bow-out advert")
            }
            (Some(n), EntryKind::Op(what)) => write!(f, "node {n}: {what}"),
            (None, EntryKind::Op(what)) => write!(f, "net: {what}"),
            (None, other) => write!(f, "{other:?}"),
        }
    }
}

/// The recorded history of a run, one entry per transition or applied operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Entries in time order.
    pub entries: Vec<Entry>,
}

impl Timeline {
    /// The transitions of `node` on `vhid`, as (time, from, to, reason).
    pub fn transitions(&self, node: &str, vhid: u8) -> Vec<(Time, State, State, &'static str)> {
        self.entries
            .iter()
            .filter(|e| e.node.as_deref() == Some(node))
            .filter_map(|e| match e.kind {
                EntryKind::Transition {
                    vhid: v,
                    from,
                    to,
                    reason,
                    ..
                } if v == vhid => Some((e.t, from, to, reason)),
                _ => None,
            })
            .collect()
    }

    /// The number of transitions recorded.
    pub fn transition_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Transition { .. }))
            .count()
    }
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The set of MASTER nodes of one vhid from time `t` on (until the next change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterChange {
    /// When the set changed.
    pub t: Time,
    /// vhid.
    pub vhid: u8,
    /// Node indices that are MASTER, ascending.
    pub masters: Vec<usize>,
}

/// Packet and event counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Adverts sent (bow-outs included).
    pub adverts_sent: u64,
    /// Adverts handed to a running receiver.
    pub adverts_delivered: u64,
    /// Adverts lost to link loss.
    pub adverts_lost: u64,
    /// Received adverts dropped as our own (loop detection).
    pub loops_dropped: u64,
    /// Gratuitous ARP bursts (immediate and delayed).
    pub gratuitous_arps: u64,
}

/// What goes over a simulated segment: a CARP or a VRRP advert.
#[derive(Debug, Clone, Copy)]
enum Wire {
    Carp(Advert),
    Vrrp(VrrpAdvertIn),
}

#[derive(Debug)]
enum Pending {
    Deliver {
        to: usize,
        carpdev: String,
        advert: Wire,
    },
    Op(Op),
}

#[derive(Debug)]
struct Queued {
    t: Time,
    seq: u64,
    what: Pending,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Queued) -> bool {
        (self.t, self.seq) == (other.t, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Queued) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    // Reversed so that BinaryHeap (a max-heap) pops the earliest, then lowest sequence number.
    fn cmp(&self, other: &Queued) -> Ordering {
        (other.t, other.seq).cmp(&(self.t, self.seq))
    }
}

struct SimNode {
    spec: NodeSpec,
    host: Option<Host>,
}

/// A running simulation of one scenario.
pub struct Sim {
    scenario: Scenario,
    now: Time,
    nodes: Vec<SimNode>,
    links: Vec<Vec<LinkParams>>,
    preempt: bool,
    echo: bool,
    queue: BinaryHeap<Queued>,
    seq: u64,
    rng: StdRng,
    timeline: Timeline,
    stats: Stats,
    masters: BTreeMap<u8, Vec<usize>>,
    history: Vec<MasterChange>,
}

impl Sim {
    /// Sets up `scenario`: schedules boots and operations; nothing runs until `run_until`.
    pub fn new(scenario: Scenario) -> Sim {
        let n = scenario.nodes.len();
        let mut sim = Sim {
            now: Time::ZERO,
            nodes: scenario
                .nodes
                .iter()
                .map(|spec| SimNode {
                    spec: spec.clone(),
                    host: None,
                })
                .collect(),
            links: vec![vec![scenario.link; n]; n],
            preempt: scenario.preempt,
            echo: false,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(scenario.seed),
            timeline: Timeline::default(),
            stats: Stats::default(),
            masters: BTreeMap::new(),
            history: Vec::new(),
            scenario,
        };
        let boots: Vec<(Time, usize)> = sim
            .scenario
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.boot_at.map(|t| (t, i)))
            .collect();
        for (t, i) in boots {
            sim.push(t, Pending::Op(Op::Restart(i)));
        }
        for (t, op) in sim.scenario.ops.clone() {
            sim.push(t, Pending::Op(op));
        }
        sim
    }

    /// Runs a scenario to its end and returns the finished simulation.
    pub fn run_scenario(scenario: Scenario) -> Sim {
        let end = scenario.duration;
        let mut sim = Sim::new(scenario);
        sim.run_until(end);
        sim
    }

    /// The scenario being run.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Current virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The timeline so far.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every change of a vhid's MASTER set, in time order.
    pub fn master_history(&self) -> &[MasterChange] {
        &self.history
    }

    /// Node indices currently MASTER on `vhid`.
    pub fn masters(&self, vhid: u8) -> Vec<usize> {
        self.masters.get(&vhid).cloned().unwrap_or_default()
    }

    /// Names of the nodes currently MASTER on `vhid`.
    pub fn master_names(&self, vhid: u8) -> Vec<&str> {
        self.masters(vhid)
            .into_iter()
            .map(|i| self.nodes[i].spec.name.as_str())
            .collect()
    }

    /// The state of `vhid` on the named node; None if it is down or has no such vhid.
    pub fn state(&self, node: &str, vhid: u8) -> Option<State> {
        let n = self.nodes.iter().find(|n| n.spec.name == node)?;
        let host = n.host.as_ref()?;
        host.interfaces()
            .iter()
            .find(|i| i.vhid.config().vhid == vhid)
            .map(|i| i.vhid.state())
    }

    /// The running engine host of node `i`, if it is up.
    pub fn host(&self, i: usize) -> Option<&Host> {
        self.nodes[i].host.as_ref()
    }

    /// Processes every event up to and including `end`, then sets the clock to `end`.
    pub fn run_until(&mut self, end: Time) {
        loop {
            let queued = self.queue.peek().map(|q| q.t);
            let timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.host.as_ref()?.next_deadline().map(|t| (t, i)))
                .min();
            // Ties go to queued events first: a packet that arrives exactly at a deadline is seen.
            let (t, timer_node) = match (queued, timer) {
                (Some(q), Some((d, _))) if q <= d => (q, None),
                (_, Some((d, i))) => (d, Some(i)),
                (Some(q), None) => (q, None),
                (None, None) => break,
            };
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            match timer_node {
                Some(i) => self.node_event(i, HostEvent::Timer),
                None => {
                    let q = self.queue.pop().expect("peeked");
                    match q.what {
                        Pending::Deliver {
                            to,
                            carpdev,
                            advert,
                        } => {
                            if self.nodes[to].host.is_some() {
                                self.stats.adverts_delivered += 1;
                                let event = match advert {
                                    Wire::Carp(advert) => HostEvent::Advert { carpdev, advert },
                                    Wire::Vrrp(advert) => HostEvent::VrrpAdvert { carpdev, advert },
                                };
                                self.node_event(to, event);
                            }
                        }
                        Pending::Op(op) => self.apply_op(op),
                    }
                }
            }
        }
        self.now = self.now.max(end);
    }

    /// A one-block summary: final states, counters and mastership changes.
    pub fn summary(&self) -> Summary {
        let mut lines = Vec::new();
        for node in &self.nodes {
            let spec = &node.spec;
            for ifs in &spec.ifaces {
                let (state, demote) = match &node.host {
                    Some(h) => {
                        let i = h.index_of(&ifs.name).expect("configured interface");
                        let v = &h.interfaces()[i].vhid;
                        (v.state().to_string(), v.demote())
                    }
                    None => ("DOWN".to_string(), 0),
                };
                lines.push(format!(
                    "{} {} vhid {} (advbase {}, advskew {}, demote {}): {}",
                    spec.name, ifs.name, ifs.vhid, ifs.advbase, ifs.advskew, demote, state
                ));
            }
        }
        let mut vhids: Vec<u8> = self
            .nodes
            .iter()
            .flat_map(|n| n.spec.ifaces.iter().map(|i| i.vhid))
            .collect();
        vhids.sort_unstable();
        vhids.dedup();
        let masters = vhids
            .into_iter()
            .map(|v| {
                let changes = self.history.iter().filter(|c| c.vhid == v).count();
                (v, self.master_names(v).join(","), changes)
            })
            .map(|(v, m, c)| format!("vhid {v}: master {m} ({c} master-set changes)"))
            .collect();
        Summary {
            scenario: self.scenario.name.clone(),
            seed: self.scenario.seed,
            end: self.now,
            nodes: lines,
            masters,
            stats: self.stats,
            transitions: self.timeline.transition_count(),
        }
    }

    fn push(&mut self, t: Time, what: Pending) {
        self.seq += 1;
        self.queue.push(Queued {
            t,
            seq: self.seq,
            what,
        });
    }

    fn name(&self, i: usize) -> String {
        self.nodes[i].spec.name.clone()
    }

    fn record(&mut self, node: Option<usize>, kind: EntryKind) {
        let node = node.map(|i| self.name(i));
        self.timeline.entries.push(Entry {
            t: self.now,
            node,
            kind,
        });
    }

    fn op(&mut self, node: Option<usize>, what: String) {
        self.record(node, EntryKind::Op(what));
    }

    fn apply_op(&mut self, op: Op) {
        match op {
            Op::Crash(i) => {
                if self.nodes[i].host.take().is_some() {
                    self.op(Some(i), "crash".into());
                    self.refresh_masters();
                }
            }
            Op::Restart(i) => {
                if self.nodes[i].host.is_none() {
                    self.op(Some(i), "boot".into());
                    self.boot(i);
                }
            }
            Op::Shutdown { node, linger } => {
                self.op(Some(node), format!("shutdown (linger {linger:?})"));
                self.node_event(node, HostEvent::Shutdown { linger });
            }
            Op::Up(i) => {
                self.op(Some(i), "interfaces up".into());
                self.node_event(i, HostEvent::Start);
            }
            Op::Partition(side) => {
                let n = self.nodes.len();
                for a in 0..n {
                    for b in 0..n {
                        if side.contains(&a) != side.contains(&b) {
                            self.links[a][b].cut = true;
                        }
                    }
                }
                let names = |inside: bool| {
                    (0..n)
                        .filter(|i| side.contains(i) == inside)
                        .map(|i| self.name(i))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let what = format!("partition {{{}}} | {{{}}}", names(true), names(false));
                self.op(None, what);
            }
            Op::Cut(a, b) => {
                self.links[a][b].cut = true;
                self.links[b][a].cut = true;
                let what = format!("cut {} <-> {}", self.name(a), self.name(b));
                self.op(None, what);
            }
            Op::Heal => {
                let n = self.nodes.len();
                self.links = vec![vec![self.scenario.link; n]; n];
                self.op(None, "heal (links back to normal)".into());
            }
            Op::Loss(p) => {
                self.links.iter_mut().flatten().for_each(|l| l.loss = p);
                self.op(None, format!("loss {:.0}%", p * 100.0));
            }
            Op::Delay { delay, jitter } => {
                for l in self.links.iter_mut().flatten() {
                    l.delay = delay;
                    l.jitter = jitter;
                }
                self.op(None, format!("delay {delay:?} + jitter {jitter:?}"));
            }
            Op::CarpdevLink { node, carpdev, up } => {
                let state = if up { "up" } else { "down" };
                self.op(Some(node), format!("carpdev {carpdev} link {state}"));
                self.node_event(node, HostEvent::CarpdevLink { carpdev, up });
            }
            Op::Demote { node, group, delta } => {
                self.op(
                    Some(node),
                    format!("ifconfig -g {group} carpdemote {delta:+}"),
                );
                self.node_event(node, HostEvent::GroupAdjust { group, delta });
            }
            Op::DemoteSet { node, group, value } => {
                self.op(Some(node), format!("demote group {group} = {value}"));
                self.node_event(node, HostEvent::GroupSet { group, value });
            }
            Op::Force { node, iface, state } => {
                let s = match state {
                    ForcedState::Master => "master",
                    ForcedState::Backup => "backup",
                };
                self.op(Some(node), format!("ifconfig {iface} state {s}"));
                self.node_event(node, HostEvent::Force { iface, state });
            }
            Op::Preempt(on) => {
                self.preempt = on;
                self.op(
                    None,
                    format!("sysctl net.inet.carp.preempt={}", u8::from(on)),
                );
                for i in 0..self.nodes.len() {
                    self.node_event(i, HostEvent::SetPreempt(on));
                }
            }
            Op::Echo(on) => {
                self.echo = on;
                let s = if on { "on" } else { "off" };
                self.op(None, format!("hypervisor echo {s}"));
            }
            Op::Recover(i) => {
                if self.nodes[i].host.is_none() {
                    self.op(Some(i), "boot".into());
                    self.boot(i);
                    return;
                }
                self.op(Some(i), "recover (interfaces and links up)".into());
                let carpdevs: Vec<String> = self.nodes[i]
                    .spec
                    .ifaces
                    .iter()
                    .map(|f| f.carpdev.clone())
                    .collect();
                for carpdev in carpdevs {
                    self.node_event(i, HostEvent::CarpdevLink { carpdev, up: true });
                }
                self.node_event(i, HostEvent::Start);
            }
        }
    }

    fn boot(&mut self, i: usize) {
        let spec = self.nodes[i].spec.clone();
        let mut host = Host::new();
        for f in &spec.ifaces {
            let mut config = VhidConfig::new(f.vhid, f.advbase, f.advskew, self.rng.random());
            config.preempt = self.preempt;
            config.master_down_mode = f.master_down_mode;
            config.ucarp_tiebreak = f.ucarp_tiebreak;
            config.own_addrs = vec![IpAddr::V4(spec.addr)];
            config.vrrp = f.vrrp.clone();
            host.add_interface(&f.name, &f.carpdev, &f.groups, config);
        }
        self.nodes[i].host = Some(host);
        self.node_event(i, HostEvent::Start);
        for f in &spec.ifaces {
            if let Some(state) = f.initial_state {
                let iface = f.name.clone();
                self.node_event(i, HostEvent::Force { iface, state });
            }
        }
    }

    fn node_event(&mut self, i: usize, event: HostEvent) {
        let now = self.now;
        let Some(host) = self.nodes[i].host.as_mut() else {
            return;
        };
        let actions = host.handle(now, event);
        let tagged: Vec<(String, String, u8, Action)> = actions
            .into_iter()
            .map(|a| {
                let f = host.node(a.node).expect("actions name nodes of this host");
                (
                    f.name.clone(),
                    f.carpdev.clone(),
                    f.vhid.config().vhid,
                    a.action,
                )
            })
            .collect();
        let mut changed = false;
        for (iface, carpdev, vhid, action) in tagged {
            if let Some((from, to, reason)) = action.transition() {
                let kind = EntryKind::Transition {
                    iface,
                    vhid,
                    from,
                    to,
                    reason,
                };
                self.record(Some(i), kind);
                changed = true;
                continue;
            }
            match action {
                Action::SendAdvert {
                    advbase,
                    advskew,
                    demote,
                    counter,
                    bow_out,
                } => {
                    if bow_out {
                        self.record(Some(i), EntryKind::BowOut { vhid });
                    }
                    let advert = Advert {
                        src: IpAddr::V4(self.nodes[i].spec.addr),
                        vhid,
                        advbase,
                        advskew,
                        demote,
                        counter,
                    };
                    self.transmit(i, &carpdev, Wire::Carp(advert));
                }
                Action::SendVrrp {
                    priority,
                    interval_cs,
                } => {
                    if priority == 0 {
                        self.record(Some(i), EntryKind::BowOut { vhid });
                    }
                    let advert = VrrpAdvertIn {
                        src: IpAddr::V4(self.nodes[i].spec.addr),
                        vrid: vhid,
                        priority,
                        interval_cs,
                    };
                    self.transmit(i, &carpdev, Wire::Vrrp(advert));
                }
                Action::GratuitousArp { .. } => self.stats.gratuitous_arps += 1,
                Action::Dropped(DropReason::OwnAddress | DropReason::OwnCookie) => {
                    self.stats.loops_dropped += 1;
                }
                _ => {}
            }
        }
        if changed {
            self.refresh_masters();
        }
    }

    fn transmit(&mut self, from: usize, carpdev: &str, advert: Wire) {
        self.stats.adverts_sent += 1;
        for to in 0..self.nodes.len() {
            let link = if to == from {
                if !self.echo {
                    continue;
                }
                self.scenario.link
            } else {
                self.links[from][to]
            };
            if link.cut {
                continue;
            }
            if link.loss > 0.0 && self.rng.random_bool(link.loss.min(1.0)) {
                self.stats.adverts_lost += 1;
                continue;
            }
            let jitter = if link.jitter.is_zero() {
                Duration::ZERO
            } else {
                let max = u64::try_from(link.jitter.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(self.rng.random_range(0..=max))
            };
            let at = self.now + link.delay + jitter;
            let carpdev = carpdev.to_string();
            self.push(
                at,
                Pending::Deliver {
                    to,
                    carpdev,
                    advert,
                },
            );
        }
    }

    fn refresh_masters(&mut self) {
        let mut now_masters: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for f in &node.spec.ifaces {
                now_masters.entry(f.vhid).or_default();
            }
            if let Some(h) = &node.host {
                for f in h.interfaces() {
                    if f.vhid.state() == State::Master {
                        now_masters.entry(f.vhid.config().vhid).or_default().push(i);
                    }
                }
            }
        }
        for (vhid, mut masters) in now_masters {
            masters.dedup();
            if self.masters.get(&vhid) != Some(&masters) {
                self.history.push(MasterChange {
                    t: self.now,
                    vhid,
                    masters: masters.clone(),
                });
                self.masters.insert(vhid, masters);
            }
        }
    }
}

/// The end-of-run report printed by `carp-sim`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Virtual time at the end.
    pub end: Time,
    /// One line per node and interface with its final state.
    pub nodes: Vec<String>,
    /// One line per vhid with its final master(s).
    pub masters: Vec<String>,
    /// Counters.
    pub stats: Stats,
    /// Number of transitions.
    pub transitions: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "summary of {} (seed {}) at t={}:",
            self.scenario, self.seed, self.end
        )?;
        for l in &self.nodes {
            writeln!(f, "  {l}")?;
        }
        for l in &self.masters {
            writeln!(f, "  {l}")?;
        }
        let s = &self.stats;
        writeln!(
            f,
            "  adverts: {} sent, {} delivered, {} lost, {} own dropped as loops; {} gratuitous ARP bursts; {} transitions",
            s.adverts_sent,
            s.adverts_delivered,
            s.adverts_lost,
            s.loops_dropped,
            s.gratuitous_arps,
            self.transitions
        )
    }
}

fn gw(n: u8, iface: IfaceSpec) -> NodeSpec {
    NodeSpec::new(&format!("gw{n}"), Ipv4Addr::new(10, 0, 0, 10 + n), iface)
}

fn pair(skew1: u8, skew2: u8) -> Vec<NodeSpec> {
    vec![
        gw(1, IfaceSpec::new(1, skew1)),
        gw(2, IfaceSpec::new(1, skew2)),
    ]
}

/// The built-in scenarios, in the order `carp-sim --list` prints them.
pub fn scenarios() -> Vec<Scenario> {
    let s = Time::from_secs;
    let two_vhids = |n: u8, skew: u8| NodeSpec {
        ifaces: vec![
            IfaceSpec::new(1, skew).on("carp0", "eth0"),
            IfaceSpec::new(2, skew).on("carp1", "eth1"),
        ],
        ..gw(n, IfaceSpec::new(1, skew))
    };
    let late = |mut node: NodeSpec, t: Time| {
        node.boot_at = Some(t);
        node
    };
    let mut lossy = Scenario::new(
        "three-nodes-lossy",
        "three nodes, 30% loss and jitter for 30 s, preempt on: flaps, then gw1 (advskew 0) settles as MASTER",
        vec![
            gw(1, IfaceSpec::new(1, 0)),
            gw(2, IfaceSpec::new(1, 50)),
            gw(3, IfaceSpec::new(1, 100)),
        ],
        s(45),
    )
    .preempt(true)
    .at(s(5), Op::Loss(0.3))
    .at(
        s(5),
        Op::Delay {
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(20),
        },
    )
    .at(s(35), Op::Heal);
    lossy.seed = 7;
    let echo = Scenario::new(
        "loop-echo",
        "a hypervisor echoes every advert back to its sender: loop detection drops them, gw1 stays MASTER",
        pair(0, 100),
        s(15),
    )
    .at(Time::ZERO, Op::Echo(true));
    vec![
        Scenario::new(
            "basic",
            "two nodes boot together; gw1 (advskew 0) becomes MASTER after 3 s, gw2 (advskew 100) stays BACKUP",
            pair(0, 100),
            s(15),
        ),
        Scenario::new(
            "master-crash",
            "gw1 (MASTER) crashes at 10 s: gw2 takes over after master-down; gw1 reboots at 20 s and stays BACKUP (no preempt)",
            pair(0, 100),
            s(30),
        )
        .at(s(10), Op::Crash(0))
        .at(s(20), Op::Restart(0)),
        Scenario::new(
            "bow-out",
            "gw1 (MASTER) is stopped at 10 s: its bow-out advert hands over to gw2 at once, gw1 leaves when it hears gw2",
            pair(0, 100),
            s(15),
        )
        .at(
            s(10),
            Op::Shutdown {
                node: 0,
                linger: Duration::from_secs(1),
            },
        ),
        Scenario::new(
            "mixed-carp-vrrp",
            "each node runs CARP vhid 1 and VRRPv3 VRID 2 on eth0; gw1 (advskew 0, priority 200) crashes at 10 s: gw2 takes both; gw1 reboots at 20 s: VRRP preempts back to gw1, CARP (preempt off) stays on gw2",
            vec![
                NodeSpec {
                    ifaces: vec![
                        IfaceSpec::new(1, 0).on("carp0", "eth0"),
                        IfaceSpec::new(2, 0).on("vr0", "eth0").vrrp3(200, 100),
                    ],
                    ..gw(1, IfaceSpec::new(1, 0))
                },
                NodeSpec {
                    ifaces: vec![
                        IfaceSpec::new(1, 100).on("carp0", "eth0"),
                        IfaceSpec::new(2, 0).on("vr0", "eth0").vrrp3(100, 100),
                    ],
                    ..gw(2, IfaceSpec::new(1, 100))
                },
            ],
            s(30),
        )
        .at(s(10), Op::Crash(0))
        .at(s(20), Op::Restart(0)),
        Scenario::new(
            "vrrp-stop",
            "VRRPv3 at 10 ms: gw1 (priority 200) stops at 5 s with priority 0 and lingers; gw2 (100) takes over after its skew time (6.1 ms), gw1 leaves 500 ms after it hears gw2",
            vec![
                gw(1, IfaceSpec::new(1, 0).vrrp3(200, 1)),
                gw(2, IfaceSpec::new(1, 0).vrrp3(100, 1)),
            ],
            s(6),
        )
        .at(
            s(5),
            Op::Shutdown {
                node: 0,
                linger: Duration::from_secs(1),
            },
        ),
        Scenario::new(
            "preempt",
            "preempt on: gw2 is MASTER alone, gw1 (more preferred) boots at 10 s and takes over on gw2's next advert",
            vec![gw(1, IfaceSpec::new(1, 0)), gw(2, IfaceSpec::new(1, 100))]
                .into_iter()
                .enumerate()
                .map(|(i, n)| if i == 0 { late(n, s(10)) } else { n })
                .collect(),
            s(20),
        )
        .preempt(true),
        Scenario::new(
            "partition-heal",
            "the segment splits at 10 s (two MASTERs), heals at 20 s: gw2 yields to gw1's next advert",
            pair(0, 100),
            s(30),
        )
        .at(s(10), Op::Partition(vec![0]))
        .at(s(20), Op::Heal),
        Scenario::new(
            "demote",
            "carpdemote +1 on gw1's group carp at 10 s: gw1 advertises at once, gw2 takes over (rule 2); -1 at 20 s changes nothing without preempt",
            pair(0, 100),
            s(30),
        )
        .at(
            s(10),
            Op::Demote {
                node: 0,
                group: "carp".into(),
                delta: 1,
            },
        )
        .at(
            s(20),
            Op::Demote {
                node: 0,
                group: "carp".into(),
                delta: -1,
            },
        ),
        Scenario::new(
            "link-down",
            "two vhids on eth0/eth1, preempt on: gw1's eth1 goes down at 10 s (INIT + demote on group carp), so gw2 takes both; link back at 20 s returns both to gw1",
            vec![two_vhids(1, 0), two_vhids(2, 100)],
            s(30),
        )
        .preempt(true)
        .at(
            s(10),
            Op::CarpdevLink {
                node: 0,
                carpdev: "eth1".into(),
                up: false,
            },
        )
        .at(
            s(20),
            Op::CarpdevLink {
                node: 0,
                carpdev: "eth1".into(),
                up: true,
            },
        ),
        lossy,
        Scenario::new(
            "forced-state",
            "gw2 forced MASTER at 10 s yields to gw1's next advert; gw1 forced BACKUP at 20 s, gw2 takes over after master-down",
            pair(0, 100),
            s(30),
        )
        .at(
            s(10),
            Op::Force {
                node: 1,
                iface: "carp0".into(),
                state: ForcedState::Master,
            },
        )
        .at(
            s(20),
            Op::Force {
                node: 0,
                iface: "carp0".into(),
                state: ForcedState::Backup,
            },
        ),
        Scenario::new(
            "equal-skew",
            "the BSD hazard: equal advskew and no tie-break, both time out together, both yield, forever",
            pair(0, 0),
            s(15),
        ),
        Scenario::new(
            "ucarp-tiebreak",
            "equal advskew with ucarp's tie-break: both become MASTER at 3 s, gw2 yields to the lower address",
            vec![
                gw(1, IfaceSpec::new(1, 0).tiebreak()),
                gw(2, IfaceSpec::new(1, 0).tiebreak()),
            ],
            s(15),
        ),
        echo,
        Scenario::new(
            "advbase-0",
            "OpenBSD sub-second mode (advbase 0): gw1 crashes at 2 s, gw2 (advskew 10) takes over in 3*10/256 s",
            vec![
                gw(1, IfaceSpec::new(1, 0).advbase(0)),
                gw(2, IfaceSpec::new(1, 10).advbase(0)),
            ],
            s(3),
        )
        .at(s(2), Op::Crash(0)),
    ]
}

/// The built-in scenario called `name`.
pub fn scenario(name: &str) -> Option<Scenario> {
    scenarios().into_iter().find(|s| s.name == name)
}
