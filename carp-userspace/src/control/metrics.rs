//! The OpenMetrics rendering of the reports, served by carpd's `--metrics` endpoint
//! (`daemon::control`): built afresh per scrape from the same shapes carpctl prints.

use std::fmt::Write as _;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::report::{CountersReport, DataplaneCounters, StatusReport, SyncReport};

type Labels = Vec<(String, String)>;

/// Renders a status and the counters as OpenMetrics text (built afresh per scrape: the values are
/// carpd's and the kernel's, so there is nothing to keep between scrapes).
pub fn render_metrics(status: &StatusReport, counters: &CountersReport) -> String {
    let mut reg = Registry::default();
    let gauge = |reg: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, Gauge>::default();
        reg.register(name, help, f.clone());
        f
    };
    let vhid_labels = |name: &str, carpdev: &str, vhid: u8| -> Labels {
        vec![
            ("interface".into(), name.into()),
            ("carpdev".into(), carpdev.into()),
            ("vhid".into(), vhid.to_string()),
        ]
    };
    let preempt = gauge(&mut reg, "carp_preempt", "net.inet.carp.preempt (1 = on)");
    preempt
        .get_or_create(&Vec::new())
        .set(i64::from(status.preempt));
    let state = gauge(
        &mut reg,
        "carp_vhid_state",
        "1 for the state each vhid is in (INIT, BACKUP, MASTER), 0 for the others",
    );
    let advbase = gauge(&mut reg, "carp_vhid_advbase", "Running advbase in seconds");
    let advskew = gauge(&mut reg, "carp_vhid_advskew", "Running advskew in 1/256 s");
    let demote = gauge(
        &mut reg,
        "carp_vhid_demote",
        "Demote byte each vhid advertises (sum of its groups' counters)",
    );
    let last_master = gauge(
        &mut reg,
        "carp_vhid_last_master",
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
    let transitions = Family::<Labels, Counter>::default();
    reg.register(
        "carp_vhid_transitions_to_master",
        "Times each vhid became MASTER since carpd started",
        transitions.clone(),
    );
    let opackets = Family::<Labels, Counter>::default();
    reg.register(
        "carp_vhid_opackets",
        "Adverts sent for each vhid since carpd started",
        opackets.clone(),
    );
    let badauth = Family::<Labels, Counter>::default();
    reg.register(
        "carp_vhid_badauth",
        "Adverts for each vhid that failed the HMAC check since carpd started",
        badauth.clone(),
    );
    let age = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    reg.register(
        "carp_vhid_last_advert_age_seconds",
        "Seconds since the XDP program last accepted an advert for the vhid",
        age.clone(),
    );
    let fields: Vec<(&str, Family<Labels, Counter>)> = DataplaneCounters::default()
        .fields()
        .iter()
        .map(|(name, _)| {
            let f = Family::<Labels, Counter>::default();
            reg.register(
                format!("carp_dataplane_{name}"),
                format!("XDP counter {name} of carp_stats (summed over CPUs)"),
                f.clone(),
            );
            (*name, f)
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
            for ((_, value), (_, fam)) in d.fields().iter().zip(&fields) {
                fam.get_or_create(&l).inc_by(*value);
            }
        }
    }
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        out.clear();
        let _ = writeln!(out, "# EOF");
    }
    out
}

/// Appends the sync counters to an OpenMetrics text (before its `# EOF`).
pub fn append_metrics(text: &mut String, r: &SyncReport) {
    let eof = text.ends_with("# EOF\n");
    if eof {
        text.truncate(text.len() - "# EOF\n".len());
    }
    text.push_str("# HELP carp_sync_enabled 1 when [pfsync] replication runs.\n");
    text.push_str("# TYPE carp_sync_enabled gauge\n");
    text.push_str(&format!("carp_sync_enabled {}\n", u8::from(r.enabled)));
    text.push_str("# HELP carp_sync_flows Flows the sync engine knows (local and learned).\n");
    text.push_str("# TYPE carp_sync_flows gauge\n");
    text.push_str(&format!("carp_sync_flows {}\n", r.flows));
    text.push_str("# HELP carp_sync_demoted 1 while the bulk demotion of group carp is held.\n");
    text.push_str("# TYPE carp_sync_demoted gauge\n");
    text.push_str(&format!("carp_sync_demoted {}\n", u8::from(r.demoted)));
    text.push_str(
        "# HELP carp_sync_counter Sync protocol and transport counters (badauth, replay, ...).\n",
    );
    text.push_str("# TYPE carp_sync_counter gauge\n");
    for (n, v) in &r.counters {
        text.push_str(&format!("carp_sync_counter{{counter=\"{n}\"}} {v}\n"));
    }
    if let Some(c) = &r.conntrack {
        text.push_str("# HELP carp_conntrack_entries Conntrack entries the mirror knows.\n");
        text.push_str("# TYPE carp_conntrack_entries gauge\n");
        text.push_str(&format!("carp_conntrack_entries {}\n", c.entries));
        text.push_str("# HELP carp_conntrack_learned Conntrack entries learned from peers.\n");
        text.push_str("# TYPE carp_conntrack_learned gauge\n");
        text.push_str(&format!("carp_conntrack_learned {}\n", c.learned));
        text.push_str(
            "# HELP carp_conntrack_counter Conntrack replication counters (events, sent, applied, overruns, ...).\n",
        );
        text.push_str("# TYPE carp_conntrack_counter gauge\n");
        for (n, v) in &c.counters {
            text.push_str(&format!("carp_conntrack_counter{{counter=\"{n}\"}} {v}\n"));
        }
        text.push_str(
            "# HELP carp_conntrack_refused Conntrack changes the kernel refused, by errno.\n",
        );
        text.push_str("# TYPE carp_conntrack_refused gauge\n");
        for (n, v) in &c.refused {
            text.push_str(&format!("carp_conntrack_refused{{errno=\"{n}\"}} {v}\n"));
        }
    }
    text.push_str("# HELP carp_flow_counter The dataplane's flow table counters per carpdev.\n");
    text.push_str("# TYPE carp_flow_counter gauge\n");
    for d in &r.dataplane {
        for (n, v) in &d.counters {
            text.push_str(&format!(
                "carp_flow_counter{{carpdev=\"{}\",counter=\"{n}\"}} {v}\n",
                d.carpdev
            ));
        }
    }
    if eof {
        text.push_str("# EOF\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::report::{GroupStatus, InterfaceStatus, NodeStatus, VhidCounters};

    #[test]
    fn metrics_render_as_openmetrics() {
        let status = StatusReport {
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
                }],
                groups: vec!["carp".into()],
                last_master: None,
                protocol: "carp".into(),
                vrrp: None,
            }],
            groups: vec![GroupStatus {
                name: "carp".into(),
                demote: 3,
                members: vec!["carp0".into()],
            }],
        };
        let counters = CountersReport {
            vhids: vec![VhidCounters {
                name: "carp0".into(),
                carpdev: "eth0".into(),
                vhid: 1,
                state: "MASTER".into(),
                transitions_to_master: 2,
                opackets: 40,
                badauth: 3,
                last_master: None,
                last_advert_age_seconds: Some(0.5),
                dataplane: Some(DataplaneCounters {
                    ipackets: 7,
                    ..Default::default()
                }),
            }],
        };
        let text = render_metrics(&status, &counters);
        let labels = r#"interface="carp0",carpdev="eth0",vhid="1""#;
        for want in [
            format!(r#"carp_vhid_state{{{labels},state="MASTER"}} 1"#),
            format!("carp_vhid_opackets_total{{{labels}}} 40"),
            format!("carp_vhid_badauth_total{{{labels}}} 3"),
            format!(r#"carp_vhid_state{{{labels},state="BACKUP"}} 0"#),
            format!("carp_vhid_transitions_to_master_total{{{labels}}} 2"),
            format!("carp_dataplane_ipackets_total{{{labels}}} 7"),
            format!("carp_vhid_advskew{{{labels}}} 100"),
            r#"carp_group_demote{group="carp"} 3"#.to_string(),
            "carp_preempt 1".to_string(),
        ] {
            assert!(text.contains(&want), "missing {want} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
