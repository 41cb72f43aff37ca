//! The metrics text (`[metrics] listen`, `carpd --metrics`, `carpctl metrics`), built from the same
//! reports carpctl shows, every line of it by prometheus-client.
//!
//! Naming follows Prometheus' conventions: base units in the name (`_seconds`), counters typed as
//! counters with `_total`, one metric per meaning instead of a catch-all `counter` label, an info
//! metric for the build, and the time of the last transition as a Unix timestamp. The registry is
//! built afresh per scrape from the reports, so nothing is kept between scrapes; its size is bounded
//! by the number of vhids and carpdevs, not by traffic.
//!
//! Two encodings of the same registry: OpenMetrics for scrapers that ask for it (Prometheus does,
//! in its Accept header) and the Prometheus text format 0.0.4 for everyone else, `carpctl metrics`
//! included, which is what `promtool check metrics` reads.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{prometheus_text, text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use super::report::{CountersReport, DataplaneCounters, StatusReport, SyncReport};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Sync counters that are levels, not totals (rendered as gauges without `_total`).
const SYNC_GAUGES: [&str; 1] = ["defer_holding"];

/// Which text encoding to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`application/openmetrics-text; version=1.0.0`), ends with `# EOF`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Text,
}

impl Format {
    /// The encoding an HTTP `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// Its Content-Type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_text::CONTENT_TYPE,
        }
    }
}

/// What the build says about itself (`carp_build_info`).
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// The package version (CARGO_PKG_VERSION).
    pub version: String,
    /// `release` or `debug`.
    pub profile: String,
}

impl BuildInfo {
    /// This binary's.
    pub fn this() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
        }
    }
}

fn vhid_labels(name: &str, carpdev: &str, vhid: u8) -> Labels {
    vec![
        ("interface".into(), name.into()),
        ("carpdev".into(), carpdev.into()),
        ("vhid".into(), vhid.to_string()),
    ]
}

fn gauge(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn float_gauge(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, FloatGauge> {
    let f = Family::<Labels, FloatGauge>::default();
    reg.register(name, help, f.clone());
    f
}

/// A counter family; prometheus-client appends `_total` to `name`.
fn counter(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

/// Renders the reports in `format`.
pub fn render(
    format: Format,
    build: &BuildInfo,
    status: &StatusReport,
    counters: &CountersReport,
    sync: Option<&SyncReport>,
) -> String {
    let mut reg = Registry::default();
    reg.register(
        "carp_build",
        "The carpd build that serves these metrics",
        Info::new(vec![
            ("version".to_string(), build.version.clone()),
            ("profile".to_string(), build.profile.clone()),
        ]),
    );
    gauge(&mut reg, "carp_preempt", "net.inet.carp.preempt (1 = on)")
        .get_or_create(&Vec::new())
        .set(i64::from(status.preempt));
    let state = gauge(
        &mut reg,
        "carp_vhid_state",
        "1 for the state each vhid is in (INIT, BACKUP, MASTER), 0 for the others",
    );
    let since = float_gauge(
        &mut reg,
        "carp_vhid_last_transition_timestamp_seconds",
        "When each vhid entered its current state (Unix time); absent before its first transition in this carpd",
    );
    let advbase = gauge(
        &mut reg,
        "carp_vhid_advbase_seconds",
        "Running advbase (the advert interval is advbase + advskew/256 seconds)",
    );
    let advskew = gauge(
        &mut reg,
        "carp_vhid_advskew",
        "Running advskew, in 1/256 s (lower wins the election)",
    );
    let demote = gauge(
        &mut reg,
        "carp_vhid_demote",
        "Demote byte each vhid advertises (the sum of its groups' counters)",
    );
    let last_master = gauge(
        &mut reg,
        "carp_vhid_last_master_info",
        "Source address of the last master heard while BACKUP (value always 1)",
    );
    let vrrp_priority = gauge(
        &mut reg,
        "vrrp_priority",
        "VRRP interfaces: the priority advertised now (255 = owner), labelled with the protocol",
    );
    let vrrp_interval = gauge(
        &mut reg,
        "vrrp_master_interval_centiseconds",
        "VRRP interfaces: the Master_Adver_Interval in use (learned from the master in VRRPv3)",
    );
    for i in &status.interfaces {
        if let Some(v) = &i.vrrp {
            let mut l = vhid_labels(&i.name, &i.carpdev, i.vhid);
            l.push(("protocol".into(), i.protocol.clone()));
            vrrp_priority.get_or_create(&l).set(i64::from(v.priority));
            vrrp_interval
                .get_or_create(&l)
                .set(i64::from(v.master_interval_cs));
        }
        for n in &i.nodes {
            for s in ["INIT", "BACKUP", "MASTER"] {
                let mut l = vhid_labels(&i.name, &i.carpdev, n.vhid);
                l.push(("state".into(), s.into()));
                state.get_or_create(&l).set(i64::from(n.state == s));
            }
            let l = vhid_labels(&i.name, &i.carpdev, n.vhid);
            if let Some(t) = n.since {
                since.get_or_create(&l).set(t);
            }
            advbase.get_or_create(&l).set(i64::from(i.advbase));
            advskew.get_or_create(&l).set(i64::from(n.advskew));
            demote.get_or_create(&l).set(i64::from(i.demote));
            if let Some(m) = &i.last_master {
                let mut l = l.clone();
                l.push(("address".into(), m.clone()));
                last_master.get_or_create(&l).set(1);
            }
        }
    }
    let group_demote = gauge(
        &mut reg,
        "carp_group_demote",
        "Demote counter per interface group",
    );
    for g in &status.groups {
        group_demote
            .get_or_create(&vec![("group".into(), g.name.clone())])
            .set(i64::from(g.demote));
    }
    let transitions = counter(
        &mut reg,
        "carp_vhid_transitions_to_master",
        "Times each vhid became MASTER since carpd started",
    );
    let opackets = counter(
        &mut reg,
        "carp_vhid_opackets",
        "Adverts sent for each vhid since carpd started",
    );
    let badauth = counter(
        &mut reg,
        "carp_vhid_badauth",
        "Adverts for each vhid that failed the HMAC check since carpd started",
    );
    let age = float_gauge(
        &mut reg,
        "carp_vhid_last_advert_age_seconds",
        "Seconds since the XDP program last accepted an advert for the vhid",
    );
    let fields: Vec<Family<Labels, Counter>> = DataplaneCounters::default()
        .fields()
        .iter()
        .map(|(name, _)| {
            counter(
                &mut reg,
                &format!("carp_dataplane_{name}"),
                &format!("XDP counter {name} of carp_stats (summed over CPUs)"),
            )
        })
        .collect();
    for v in &counters.vhids {
        let l = vhid_labels(&v.name, &v.carpdev, v.vhid);
        transitions
            .get_or_create(&l)
            .inc_by(v.transitions_to_master);
        opackets.get_or_create(&l).inc_by(v.opackets);
        badauth.get_or_create(&l).inc_by(v.badauth);
        if let Some(a) = v.last_advert_age_seconds {
            age.get_or_create(&l).set(a);
        }
        if let Some(d) = &v.dataplane {
            for ((_, value), fam) in d.fields().iter().zip(&fields) {
                fam.get_or_create(&l).inc_by(*value);
            }
        }
    }
    if let Some(r) = sync {
        sync_metrics(&mut reg, r);
    }
    let senders: Vec<_> = counters
        .vhids
        .iter()
        .map(|v| (vhid_labels(&v.name, &v.carpdev, v.vhid), v.adverts))
        .collect();
    crate::daemon::stall::register_vhid_metrics(&mut reg, &senders);
    crate::daemon::stall::register_metrics(&mut reg, &counters.loop_stats);
    let mut out = String::new();
    let encoded = match format {
        Format::OpenMetrics => text::encode(&mut out, &reg),
        Format::Text => prometheus_text::encode(&mut out, &reg),
    };
    if encoded.is_err() {
        out.clear();
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
    }
    out
}

/// The `[pfsync]` part: one metric per sync counter and per dataplane flow counter.
fn sync_metrics(reg: &mut Registry, r: &SyncReport) {
    let none = Vec::new();
    gauge(reg, "carp_sync_enabled", "1 when [pfsync] replication runs")
        .get_or_create(&none)
        .set(i64::from(r.enabled));
    gauge(
        reg,
        "carp_sync_flows",
        "Flows the sync engine knows (local and learned)",
    )
    .get_or_create(&none)
    .set(i64::try_from(r.flows).unwrap_or(i64::MAX));
    gauge(
        reg,
        "carp_sync_demoted",
        "1 while the bulk demotion (+32 on group carp) is held",
    )
    .get_or_create(&none)
    .set(i64::from(r.demoted));
    gauge(
        reg,
        "carp_sync_live_peers",
        "Sync peers heard within the last 3 s",
    )
    .get_or_create(&none)
    .set(r.live_peers.len() as i64);
    if let Some(ms) = r.bulk_ms {
        float_gauge(
            reg,
            "carp_sync_bulk_duration_seconds",
            "How long the last bulk transfer to this node took",
        )
        .get_or_create(&none)
        .set(ms / 1000.0);
    }
    for (name, value) in &r.counters {
        if SYNC_GAUGES.contains(&name.as_str()) {
            gauge(
                reg,
                &format!("carp_sync_{name}"),
                &format!("Sync level {name} (carpctl sync)"),
            )
            .get_or_create(&none)
            .set(i64::try_from(*value).unwrap_or(i64::MAX));
        } else {
            counter(
                reg,
                &format!("carp_sync_{name}"),
                &format!("Sync counter {name} (carpctl sync)"),
            )
            .get_or_create(&none)
            .inc_by(*value);
        }
    }
    if let Some(c) = &r.conntrack {
        gauge(
            reg,
            "carp_conntrack_entries",
            "Conntrack entries the mirror knows ([pfsync] conntrack)",
        )
        .get_or_create(&none)
        .set(i64::try_from(c.entries).unwrap_or(i64::MAX));
        gauge(
            reg,
            "carp_conntrack_learned",
            "Conntrack entries learned from peers",
        )
        .get_or_create(&none)
        .set(i64::try_from(c.learned).unwrap_or(i64::MAX));
        for (name, value) in &c.counters {
            counter(
                reg,
                &format!("carp_conntrack_{name}"),
                &format!("Conntrack replication counter {name} (carpctl sync)"),
            )
            .get_or_create(&none)
            .inc_by(*value);
        }
        let refused = counter(
            reg,
            "carp_conntrack_refused_by_errno",
            "Conntrack changes the kernel refused, by errno (ENOMEM: the table is full)",
        );
        for (errno, value) in &c.refused {
            refused
                .get_or_create(&vec![("errno".into(), errno.clone())])
                .inc_by(*value);
        }
    }
    // The same counter names on every carpdev: one family per name, labelled by carpdev.
    let mut flow: Vec<(String, Family<Labels, Counter>)> = Vec::new();
    for d in &r.dataplane {
        for (name, value) in &d.counters {
            let fam = match flow.iter().find(|(n, _)| n == name) {
                Some((_, f)) => f.clone(),
                None => {
                    let f = counter(
                        reg,
                        &format!("carp_flow_{name}"),
                        &format!("Dataplane flow counter {name} per carpdev (carpctl sync)"),
                    );
                    flow.push((name.clone(), f.clone()));
                    f
                }
            };
            fam.get_or_create(&vec![("carpdev".into(), d.carpdev.clone())])
                .inc_by(*value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{
        InterfaceStatus, NodeStatus, VhidCounters, report::DataplaneFlowCounters,
    };

    fn status() -> StatusReport {
        StatusReport {
            preempt: true,
            allow: true,
            log: 2,
            interfaces: vec![InterfaceStatus {
                name: "carp0".into(),
                carpdev: "eth0".into(),
                vhid: 1,
                state: "MASTER".into(),
                advbase: 1,
                advskew: 100,
                demote: 0,
                addresses: vec!["10.0.0.1/24".into()],
                balancing: "none".into(),
                nodes: vec![NodeStatus {
                    vhid: 1,
                    state: "MASTER".into(),
                    advskew: 100,
                    since: Some(1_700_000_000.5),
                    why: Some("master down timer expired".into()),
                }],
                groups: vec!["carp".into()],
                last_master: None,
                protocol: "carp".into(),
                vrrp: None,
            }],
            groups: vec![],
        }
    }

    fn counters() -> CountersReport {
        CountersReport {
            vhids: vec![VhidCounters {
                name: "carp0".into(),
                carpdev: "eth0".into(),
                vhid: 1,
                state: "MASTER".into(),
                transitions_to_master: 2,
                opackets: 7,
                badauth: 3,
                last_master: None,
                last_advert_age_seconds: Some(0.25),
                dataplane: Some(DataplaneCounters {
                    ipackets: 5,
                    ..Default::default()
                }),
                adverts: crate::daemon::stall::AdvertCounts {
                    by_kernel: 30,
                    by_loop: 10,
                    ..Default::default()
                },
            }],
            loop_stats: Default::default(),
        }
    }

    #[test]
    fn names_types_and_units_follow_the_conventions() {
        let sync = SyncReport {
            enabled: true,
            flows: 12,
            counters: vec![("badauth".into(), 4), ("defer_holding".into(), 1)],
            dataplane: vec![DataplaneFlowCounters {
                carpdev: "eth0".into(),
                mode: "track".into(),
                inside: false,
                counters: vec![("new_flows".into(), 9)],
            }],
            ..Default::default()
        };
        let text = render(
            Format::OpenMetrics,
            &BuildInfo {
                version: "1.2.3".into(),
                profile: "release".into(),
            },
            &status(),
            &counters(),
            Some(&sync),
        );
        for line in [
            "# TYPE carp_build info",
            "carp_build_info{version=\"1.2.3\",profile=\"release\"} 1",
            "# TYPE carp_vhid_transitions_to_master counter",
            "carp_vhid_transitions_to_master_total{interface=\"carp0\",carpdev=\"eth0\",vhid=\"1\"} 2",
            "carp_vhid_badauth_total{interface=\"carp0\",carpdev=\"eth0\",vhid=\"1\"} 3",
            "carp_vhid_last_transition_timestamp_seconds{interface=\"carp0\",carpdev=\"eth0\",vhid=\"1\"} 1700000000.5",
            "carp_vhid_advbase_seconds{interface=\"carp0\",carpdev=\"eth0\",vhid=\"1\"} 1",
            "carp_vhid_state{interface=\"carp0\",carpdev=\"eth0\",vhid=\"1\",state=\"MASTER\"} 1",
            "carp_dataplane_ipackets_total{interface=\"carp0\",carpdev=\"eth0\",vhid=\"1\"} 5",
            "# TYPE carp_sync_badauth counter",
            "carp_sync_badauth_total 4",
            "# TYPE carp_sync_defer_holding gauge",
            "carp_sync_defer_holding 1",
            "carp_flow_new_flows_total{carpdev=\"eth0\"} 9",
            "carp_sync_flows 12",
            "carp_vhid_adverts_total{interface=\"carp0\",carpdev=\"eth0\",vhid=\"1\",sender=\"kernel\"} 30",
            "carp_vhid_adverts_total{interface=\"carp0\",carpdev=\"eth0\",vhid=\"1\",sender=\"loop\"} 10",
            "carp_loop_lateness_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            !text.contains("counter=\""),
            "a catch-all counter label: {text}"
        );
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn the_text_format_names_counters_with_their_suffix() {
        let text = render(
            Format::Text,
            &BuildInfo::this(),
            &status(),
            &counters(),
            None,
        );
        for line in [
            "# TYPE carp_vhid_badauth_total counter",
            "carp_vhid_badauth_total{interface=\"carp0\",carpdev=\"eth0\",vhid=\"1\"} 3",
            "# TYPE carp_vhid_advbase_seconds gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.contains("carp_build_info{"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
    }
}
