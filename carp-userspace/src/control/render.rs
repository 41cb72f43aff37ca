//! The text renderings of every report (what carpctl prints without `--json`): the status, groups and
//! counters tables, OpenBSD ifconfig's view of one carp interface, `carpctl sync` and `carpctl flows`.
//! The JSON rendering is serde's over the same shapes (`report`), and the metrics are `metrics`.

use super::report::{CountersReport, FlowRow, FlowsReport, GroupStatus, StatusReport, SyncReport};

/// The text of `carpctl sync`.
pub fn sync_text(r: &SyncReport) -> String {
    let mut out = String::new();
    if !r.enabled {
        out.push_str("sync: not configured (no [pfsync] table)\n");
    } else {
        out.push_str(&format!(
            "sync: syncdev {} -> {}, node id {}, bulk {}{}, {} flows\n",
            r.syncdev.as_deref().unwrap_or("-"),
            r.destination.as_deref().unwrap_or("-"),
            r.node_id,
            r.bulk,
            if r.demoted {
                " (group carp demoted +32)"
            } else {
                ""
            },
            r.flows
        ));
        let live: Vec<String> = r.live_peers.iter().map(u32::to_string).collect();
        out.push_str(&format!(
            "live peers: {}\n",
            if live.is_empty() {
                "none".to_string()
            } else {
                live.join(", ")
            }
        ));
    }
    out.push_str(&format!(
        "flows: {}\n",
        if r.stateful {
            "stateful"
        } else {
            "not stateful"
        }
    ));
    if r.enabled {
        let mut rows = vec![vec!["COUNTER".to_string(), "VALUE".to_string()]];
        rows.extend(
            r.counters
                .iter()
                .map(|(n, v)| vec![n.clone(), v.to_string()]),
        );
        out.push_str(&table(&rows));
    }
    if let Some(c) = &r.conntrack {
        out.push_str(&format!(
            "conntrack: {} entries ({} learned), bulk {}\n",
            c.entries, c.learned, c.bulk
        ));
        let mut rows = vec![vec!["CONNTRACK".to_string(), "VALUE".to_string()]];
        rows.extend(
            c.counters
                .iter()
                .map(|(n, v)| vec![n.clone(), v.to_string()]),
        );
        rows.extend(
            c.refused
                .iter()
                .map(|(n, v)| vec![format!("refused {n}"), v.to_string()]),
        );
        out.push_str(&table(&rows));
    }
    for d in &r.dataplane {
        out.push_str(&format!(
            "{} ({}{}):",
            d.carpdev,
            d.mode,
            if d.inside { ", inside" } else { "" }
        ));
        for (n, v) in &d.counters {
            out.push_str(&format!(" {n}={v}"));
        }
        out.push('\n');
    }
    out
}

/// The header of `carpctl flows`' table; rows follow as `flow_line` prints them.
pub fn flows_header() -> String {
    flow_columns(&[
        "PROTO", "LO", "HI", "STATE", "CREATOR", "LEARNED", "PKTS", "BYTES", "AGE", "IDLE",
    ])
}

/// One row of `carpctl flows`' table. Fixed column widths (a wider value pushes the rest right), so
/// a listing prints as it arrives instead of after the whole table was read.
pub fn flow_line(f: &FlowRow) -> String {
    flow_columns(&[
        &f.proto,
        &f.lo,
        &f.hi,
        &f.state,
        &format!("{}/{:x}", f.creator, f.id),
        if f.learned { "yes" } else { "no" },
        &format!("{}/{}", f.packets[0], f.packets[1]),
        &format!("{}/{}", f.bytes[0], f.bytes[1]),
        &format!("{}s", f.age_s),
        &format!("{}s", f.idle_s),
    ])
}

fn flow_columns(cols: &[&str; 10]) -> String {
    const WIDTHS: [usize; 10] = [5, 21, 21, 11, 12, 7, 13, 17, 7, 0];
    let line: Vec<String> = cols
        .iter()
        .zip(WIDTHS)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect();
    let mut out = line.join("  ").trim_end().to_string();
    out.push('\n');
    out
}

/// The table of `carpctl flows` for a collected listing.
pub fn flows_table(r: &FlowsReport) -> String {
    let mut out = flows_header();
    for f in &r.flows {
        out.push_str(&flow_line(f));
    }
    out
}

/// Left-aligned columns, two spaces apart, for the CLI's tables.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// One interface the way OpenBSD's ifconfig prints a carp interface.
pub fn ifconfig_show(status: &StatusReport, name: &str) -> Result<String, String> {
    let i = status
        .interfaces
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = status.interfaces.iter().map(|i| i.name.as_str()).collect();
            format!("no carp interface {name} (carpd runs {})", names.join(", "))
        })?;
    let mut s = format!(
        "{}: carp: {} carpdev {} vhid {} advbase {} advskew {}\n",
        i.name, i.state, i.carpdev, i.vhid, i.advbase, i.advskew
    );
    if i.nodes.len() > 1 {
        let nodes: Vec<String> = i
            .nodes
            .iter()
            .map(|n| format!("{}:{}:{}", n.state, n.vhid, n.advskew))
            .collect();
        s += &format!(
            "\tcarp: carpnodes {} balancing {}\n",
            nodes.join(","),
            i.balancing
        );
    }
    s += &format!("\tgroups: {}\n", i.groups.join(" "));
    s += &format!("\tdemote: {}\n", i.demote);
    for a in &i.addresses {
        let family = if a.contains(':') { "inet6" } else { "inet" };
        s += &format!("\t{family} {a}\n");
    }
    Ok(s)
}

/// The table of `carpctl status`.
pub fn status_table(s: &StatusReport) -> String {
    let mut out = format!(
        "net.inet.carp.preempt={} allow={} log={}\n\n",
        u8::from(s.preempt),
        u8::from(s.allow),
        s.log
    );
    let mut rows = vec![
        [
            "INTERFACE",
            "CARPDEV",
            "VHID",
            "STATE",
            "ADVBASE",
            "ADVSKEW",
            "DEMOTE",
            "LAST MASTER",
            "ADDRESSES",
            "SINCE",
            "WHY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for i in &s.interfaces {
        // Since when and why: the interface's first (leader) node, whose state is the interface's.
        let leader = i.nodes.first();
        rows.push(vec![
            i.name.clone(),
            i.carpdev.clone(),
            i.vhid.to_string(),
            i.state.clone(),
            // advbase/advskew are CARP terms: a VRRP interface has its own table below.
            if i.vrrp.is_some() {
                "-".into()
            } else {
                i.advbase.to_string()
            },
            if i.vrrp.is_some() {
                "-".into()
            } else {
                i.advskew.to_string()
            },
            i.demote.to_string(),
            i.last_master.clone().unwrap_or_else(|| "-".into()),
            i.addresses.join(","),
            leader
                .and_then(|n| n.since)
                .map(super::format_time)
                .unwrap_or_else(|| "-".into()),
            leader
                .and_then(|n| n.why.clone())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    out += &table(&rows);
    // VRRP interfaces in VRRP's terms.
    let vrrp: Vec<_> = s
        .interfaces
        .iter()
        .filter_map(|i| Some((i, i.vrrp.as_ref()?)))
        .collect();
    if !vrrp.is_empty() {
        out.push('\n');
        let mut rows = vec![
            [
                "INTERFACE",
                "PROTOCOL",
                "VRID",
                "PRIORITY",
                "INTERVAL",
                "MASTER INTERVAL",
                "PREEMPT",
                "ACCEPT",
                "CHECKSUM",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for (i, v) in vrrp {
            let prio = if v.priority == v.configured_priority {
                v.priority.to_string()
            } else {
                format!("{} ({} configured)", v.priority, v.configured_priority)
            };
            rows.push(vec![
                i.name.clone(),
                i.protocol.clone(),
                v.vrid.to_string(),
                prio,
                format!("{} cs", v.interval_cs),
                format!("{} cs", v.master_interval_cs),
                if v.preempt { "on" } else { "off" }.into(),
                if v.accept_mode { "on" } else { "off" }.into(),
                v.checksum.clone(),
            ]);
        }
        out += &table(&rows);
    }
    // Carp interfaces with carpnodes: one line per node (OpenBSD's ifconfig prints "carp: carpnodes").
    let balanced: Vec<_> = s.interfaces.iter().filter(|i| i.nodes.len() > 1).collect();
    if !balanced.is_empty() {
        out.push('\n');
        let mut rows = vec![
            [
                "INTERFACE",
                "BALANCING",
                "NODE VHID",
                "STATE",
                "ADVSKEW",
                "SINCE",
                "WHY",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for i in balanced {
            for n in &i.nodes {
                rows.push(vec![
                    i.name.clone(),
                    i.balancing.clone(),
                    n.vhid.to_string(),
                    n.state.clone(),
                    n.advskew.to_string(),
                    n.since
                        .map(super::format_time)
                        .unwrap_or_else(|| "-".into()),
                    n.why.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
        }
        out += &table(&rows);
    }
    out.push('\n');
    out += &groups_table(&s.groups);
    out
}

/// The table of `carpctl groups`.
pub fn groups_table(groups: &[GroupStatus]) -> String {
    let mut rows = vec![["GROUP", "DEMOTE", "MEMBERS"].map(String::from).to_vec()];
    for g in groups {
        rows.push(vec![
            g.name.clone(),
            g.demote.to_string(),
            g.members.join(" "),
        ]);
    }
    table(&rows)
}

/// The text of `carpctl counters`.
pub fn counters_table(c: &CountersReport) -> String {
    let mut out = String::new();
    for v in &c.vhids {
        out += &format!(
            "{} vhid {} on {}: {}, became MASTER {} time(s), {} adverts sent, {} failed HMAC, last master {}, last advert {}\n",
            v.name,
            v.vhid,
            v.carpdev,
            v.state,
            v.transitions_to_master,
            v.opackets,
            v.badauth,
            v.last_master.as_deref().unwrap_or("-"),
            v.last_advert_age_seconds
                .map(|a| format!("{a:.1} s ago"))
                .unwrap_or_else(|| "never".into()),
        );
        match &v.dataplane {
            Some(d) => {
                let rows: Vec<Vec<String>> = d
                    .fields()
                    .iter()
                    .map(|(k, n)| vec![format!("  {k}"), n.to_string()])
                    .collect();
                out += &table(&rows);
            }
            None => out += "  (the dataplane counters could not be read)\n",
        }
        let a = &v.adverts;
        out += &format!(
            "  adverts by kernel timer {}, by loop {}, withdrawn {}, refused (queue full) {}\n",
            a.by_kernel, a.by_loop, a.withdrawn, a.refused_full
        );
    }
    let l = &c.loop_stats;
    out += &format!(
        "loop: {} deadlines, lateness max {:.1} ms, mean {:.3} ms; late master-down wake-ups: master alive {}, master down {}; standby repeats {}\n",
        l.deadlines,
        l.lateness_max_seconds * 1e3,
        if l.deadlines > 0 {
            l.lateness_sum_seconds * 1e3 / l.deadlines as f64
        } else {
            0.0
        },
        l.late_wakeups_master_alive,
        l.late_wakeups_master_down,
        l.standby_repeats
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(proto: &str, lo: &str, hi: &str, learned: bool) -> FlowRow {
        FlowRow {
            proto: proto.into(),
            lo: lo.into(),
            hi: hi.into(),
            state: "-".into(),
            creator: 1,
            id: 2,
            owner: 0,
            learned,
            packets: [1, 2],
            bytes: [3, 4],
            age_s: 5,
            idle_s: 6,
        }
    }

    #[test]
    fn the_table_prints_row_by_row_under_its_header() {
        let r = FlowsReport {
            flows: vec![row("udp", "10.0.0.100:4000", "10.0.0.1:53", false)],
        };
        let t = flows_table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("PROTO  LO"), "{t}");
        assert_eq!(lines[0].find("HI"), lines[1].find("10.0.0.1:53"), "{t}");
    }
}
