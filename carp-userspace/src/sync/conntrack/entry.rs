//! One netfilter conntrack entry as the mirror sees it, independent of netlink: its tuples, zone,
//! status bits, timeout, TCP state, mark and labels, plus the NAT binding inferred from the tuples
//! (ctnetlink events never carry `CTA_NAT_*`; `../shared/spec/conntrack.md` §2 explains the rule).
//!
//! The kernel's own numbers (status bits, TCP states and flags) are kept as they are, so that what a
//! peer sends back to its kernel is exactly what ours reported.

use std::net::IpAddr;

/// IP protocol numbers the mirror knows by name.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// DCCP.
    pub const DCCP: u8 = 33;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
    /// UDP-Lite.
    pub const UDPLITE: u8 = 136;

    /// The protocol's name in config files (`conntrack_protocols`), if it has one.
    pub fn name(p: u8) -> Option<&'static str> {
        Some(match p {
            ICMP => "icmp",
            TCP => "tcp",
            UDP => "udp",
            DCCP => "dccp",
            GRE => "gre",
            ICMPV6 => "icmpv6",
            SCTP => "sctp",
            UDPLITE => "udplite",
            _ => return None,
        })
    }

    /// The protocol number for a config name.
    pub fn by_name(n: &str) -> Option<u8> {
        [ICMP, TCP, UDP, DCCP, GRE, ICMPV6, SCTP, UDPLITE]
            .into_iter()
            .find(|&p| name(p) == Some(n))
    }

    /// True for protocols whose tuple holds ports (a NAT binding may move them).
    pub fn has_ports(p: u8) -> bool {
        matches!(p, TCP | UDP | DCCP | SCTP | UDPLITE)
    }

    /// True for ICMP and ICMPv6, whose tuple holds id, type and code instead of ports.
    pub fn is_icmp(p: u8) -> bool {
        matches!(p, ICMP | ICMPV6)
    }
}

/// Conntrack status bits (`enum ip_conntrack_status`, uapi `nf_conntrack_common.h`).
pub mod status {
    /// The entry was created from an expectation.
    pub const EXPECTED: u32 = 1 << 0;
    /// Packets were seen in both directions.
    pub const SEEN_REPLY: u32 = 1 << 1;
    /// The entry is assured (not dropped early when the table fills).
    pub const ASSURED: u32 = 1 << 2;
    /// The entry is in the hash table.
    pub const CONFIRMED: u32 = 1 << 3;
    /// Source NAT rewrites packets of this entry.
    pub const SRC_NAT: u32 = 1 << 4;
    /// Destination NAT rewrites packets of this entry.
    pub const DST_NAT: u32 = 1 << 5;
    /// Source NAT was set up.
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    /// Destination NAT was set up.
    pub const DST_NAT_DONE: u32 = 1 << 8;
    /// The entry is being destroyed.
    pub const DYING: u32 = 1 << 9;
    /// The timeout does not move (an update of it fails with EPERM).
    pub const FIXED_TIMEOUT: u32 = 1 << 10;
    /// A helper is attached.
    pub const HELPER: u32 = 1 << 13;
    /// Offloaded to a flowtable (dumped without timeout and protoinfo).
    pub const OFFLOAD: u32 = 1 << 14;

    /// The bits a peer's kernel lets us set (`nf_ct_change_status_common` ignores the rest or refuses
    /// them with EBUSY), less FIXED_TIMEOUT (it would refuse our refreshes) and HELPER (no helper is
    /// replicated).
    pub const REPLICATED: u32 = SEEN_REPLY | ASSURED;
}

/// TCP conntrack states (`enum tcp_conntrack`) and per-direction flags (`IP_CT_TCP_FLAG_*`).
pub mod tcp {
    /// No state.
    pub const NONE: u8 = 0;
    /// SYN sent.
    pub const SYN_SENT: u8 = 1;
    /// SYN+ACK seen.
    pub const SYN_RECV: u8 = 2;
    /// Established.
    pub const ESTABLISHED: u8 = 3;
    /// FIN seen in one direction.
    pub const FIN_WAIT: u8 = 4;
    /// FIN acked, the other side still sends.
    pub const CLOSE_WAIT: u8 = 5;
    /// The last FIN was sent.
    pub const LAST_ACK: u8 = 6;
    /// Both FINs acked.
    pub const TIME_WAIT: u8 = 7;
    /// Closed (RST).
    pub const CLOSE: u8 = 8;
    /// Simultaneous open: SYN seen from both ends.
    pub const SYN_SENT2: u8 = 9;

    /// The window scale option was seen.
    pub const FLAG_WINDOW_SCALE: u8 = 0x01;
    /// Window tracking accepts any window (what an injected entry needs: it has no window data).
    pub const FLAG_BE_LIBERAL: u8 = 0x08;

    /// A state's progress: an update never moves an entry to a lower rank (the merge rule).
    pub fn rank(state: u8) -> u8 {
        match state {
            NONE => 0,
            SYN_SENT => 1,
            SYN_SENT2 => 2,
            SYN_RECV => 3,
            ESTABLISHED => 4,
            FIN_WAIT | CLOSE_WAIT => 5,
            LAST_ACK => 6,
            TIME_WAIT => 7,
            CLOSE => 8,
            _ => 0,
        }
    }
}

/// One direction of a connection: addresses, protocol, and ports (for ICMP: `sport` is the id and
/// `dport` is type << 8 | code; for protocols without ports both are 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (ICMP: the id).
    pub sport: u16,
    /// Destination port (ICMP: type << 8 | code).
    pub dport: u16,
}

/// The ICMP type a reply to `t` carries (echo -> echo reply ...), as the kernel's `invmap`.
fn icmp_reply_type(proto: u8, t: u8) -> u8 {
    match (proto, t) {
        (proto::ICMP, 8) => 0,
        (proto::ICMP, 0) => 8,
        (proto::ICMP, 13) => 14,
        (proto::ICMP, 14) => 13,
        (proto::ICMP, 15) => 16,
        (proto::ICMP, 16) => 15,
        (proto::ICMP, 17) => 18,
        (proto::ICMP, 18) => 17,
        (proto::ICMPV6, 128) => 129,
        (proto::ICMPV6, 129) => 128,
        (proto::ICMPV6, 139) => 140,
        (proto::ICMPV6, 140) => 139,
        (_, t) => t,
    }
}

impl CtTuple {
    /// The tuple a reply would have if no NAT touched the connection (`nf_ct_invert_tuple`).
    pub fn invert(&self) -> CtTuple {
        if proto::is_icmp(self.proto) {
            let (t, c) = self.icmp_type_code();
            let rt = icmp_reply_type(self.proto, t);
            return CtTuple {
                src: self.dst,
                dst: self.src,
                proto: self.proto,
                sport: self.sport,
                dport: u16::from(rt) << 8 | u16::from(c),
            };
        }
        CtTuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
        }
    }

    /// ICMP type and code (meaningful for ICMP tuples only).
    pub fn icmp_type_code(&self) -> (u8, u8) {
        ((self.dport >> 8) as u8, self.dport as u8)
    }

    /// True for an IPv6 tuple.
    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// What names an entry in a kernel table: its zone and original tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    /// The conntrack zone (0 by default).
    pub zone: u16,
    /// The original direction's tuple.
    pub orig: CtTuple,
}

/// TCP protocol state (`CTA_PROTOINFO_TCP`): state, window scales and flags of both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// The TCP conntrack state (`tcp::*`).
    pub state: u8,
    /// Window scale of the original and the reply direction.
    pub wscale: [u8; 2],
    /// Flags (`IP_CT_TCP_FLAG_*`) of the original and the reply direction.
    pub flags: [u8; 2],
}

/// A NAT binding of one side: the address and, for protocols with ports or ICMP ids, the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatBinding {
    /// The translated address.
    pub addr: IpAddr,
    /// The translated port (ICMP: id), if the binding moves it.
    pub port: Option<u16>,
}

/// The NAT of an entry, inferred from its tuples: what `CTA_NAT_SRC`/`CTA_NAT_DST` re-create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Nat {
    /// Source NAT (masquerade, snat).
    pub src: Option<NatBinding>,
    /// Destination NAT (dnat, port forwards, redirect).
    pub dst: Option<NatBinding>,
}

/// One conntrack entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEntry {
    /// Zone and original tuple.
    pub key: CtKey,
    /// The reply direction's tuple as the kernel holds it (NAT applied).
    pub reply: CtTuple,
    /// Status bits (`status::*`).
    pub status: u32,
    /// Seconds left before the entry expires, when it was read.
    pub timeout: u32,
    /// The connection mark.
    pub mark: u32,
    /// Connection labels (128 bits), if any are set.
    pub labels: Option<[u8; 16]>,
    /// TCP state, for TCP entries whose event or dump carried it.
    pub tcp: Option<TcpInfo>,
}

impl CtEntry {
    /// The NAT binding the tuples show: the source was translated if the reply goes to another
    /// address or port than the original came from; the destination if the reply comes from another
    /// address or port than the original went to (conntrackd's rule, `build.c`).
    pub fn nat(&self) -> Nat {
        let o = &self.key.orig;
        let r = &self.reply;
        let plain = o.invert();
        let ports = proto::has_ports(o.proto);
        let icmp = proto::is_icmp(o.proto);
        let mut nat = Nat::default();
        // ICMP: the id is in both tuples' `sport`; the type/code in `dport` never moves.
        let (src_moved_port, dst_moved_port) = if icmp {
            (r.sport != o.sport, false)
        } else if ports {
            (r.dport != plain.dport, r.sport != plain.sport)
        } else {
            (false, false)
        };
        if r.dst != plain.dst || src_moved_port {
            nat.src = Some(NatBinding {
                addr: r.dst,
                port: if icmp {
                    Some(r.sport)
                } else {
                    ports.then_some(r.dport)
                },
            });
        }
        if r.src != plain.src || dst_moved_port {
            nat.dst = Some(NatBinding {
                addr: r.src,
                port: ports.then_some(r.sport),
            });
        }
        nat
    }

    /// Takes what a partial event carries into this (cached) copy: events carry protoinfo, labels and
    /// mark only when those changed, so absent ones keep what we knew.
    pub fn absorb(&mut self, ev: &CtEntry, has_mark: bool) {
        self.reply = ev.reply;
        self.status |= ev.status;
        self.timeout = ev.timeout;
        if has_mark {
            self.mark = ev.mark;
        }
        if ev.labels.is_some() {
            self.labels = ev.labels;
        }
        if ev.tcp.is_some() {
            self.tcp = ev.tcp;
        }
    }

    /// True if this copy holds nothing `ours` lacks: the same reply tuple, TCP state (or none) and
    /// mark, labels equal (or none), and no replicated status bit ours has not. The timeout is left
    /// out: it is only when each side read it.
    pub fn tells_nothing_new(&self, ours: &CtEntry) -> bool {
        self.key == ours.key
            && self.reply == ours.reply
            && self.status & status::REPLICATED & !ours.status == 0
            && self.mark == ours.mark
            && (self.labels.is_none() || self.labels == ours.labels)
            && (self.tcp.is_none() || self.tcp == ours.tcp)
    }

    /// The TCP state's rank (0 for other protocols).
    pub fn rank(&self) -> u8 {
        self.tcp.map_or(0, |t| tcp::rank(t.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn t(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, p: u8) -> CtTuple {
        CtTuple {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            proto: p,
            sport,
            dport,
        }
    }

    fn entry(orig: CtTuple, reply: CtTuple) -> CtEntry {
        CtEntry {
            key: CtKey { zone: 0, orig },
            reply,
            status: status::CONFIRMED,
            timeout: 60,
            mark: 0,
            labels: None,
            tcp: None,
        }
    }

    #[test]
    fn no_nat_when_reply_is_the_inverse() {
        let o = t([192, 168, 100, 100], 40000, [10, 0, 0, 100], 80, proto::TCP);
        assert_eq!(entry(o, o.invert()).nat(), Nat::default());
    }

    #[test]
    fn snat_to_the_outside_vip_with_port_kept_or_moved() {
        let o = t([192, 168, 100, 100], 40000, [10, 0, 0, 100], 80, proto::TCP);
        let r = t([10, 0, 0, 100], 80, [10, 0, 0, 1], 40000, proto::TCP);
        let n = entry(o, r).nat();
        assert_eq!(
            n.src,
            Some(NatBinding {
                addr: "10.0.0.1".parse().unwrap(),
                port: Some(40000)
            })
        );
        assert_eq!(n.dst, None);
        let r2 = t([10, 0, 0, 100], 80, [10, 0, 0, 1], 1025, proto::TCP);
        assert_eq!(entry(o, r2).nat().src.unwrap().port, Some(1025));
    }

    #[test]
    fn dnat_port_forward() {
        // Outside client -> VIP:8080, forwarded to the inside server's port 80.
        let o = t([10, 0, 0, 100], 50000, [10, 0, 0, 1], 8080, proto::TCP);
        let r = t([192, 168, 100, 100], 80, [10, 0, 0, 100], 50000, proto::TCP);
        let n = entry(o, r).nat();
        assert_eq!(n.src, None);
        assert_eq!(
            n.dst,
            Some(NatBinding {
                addr: "192.168.100.100".parse().unwrap(),
                port: Some(80)
            })
        );
    }

    #[test]
    fn icmp_echo_inverts_type_and_snat_keeps_the_id() {
        let o = t(
            [192, 168, 100, 100],
            7,
            [10, 0, 0, 100],
            8 << 8,
            proto::ICMP,
        );
        let plain = o.invert();
        assert_eq!(plain.dport, 0);
        assert_eq!(plain.sport, 7);
        let r = t([10, 0, 0, 100], 7, [10, 0, 0, 1], 0, proto::ICMP);
        let n = entry(o, r).nat();
        assert_eq!(
            n.src,
            Some(NatBinding {
                addr: "10.0.0.1".parse().unwrap(),
                port: Some(7)
            })
        );
        assert_eq!(n.dst, None);
    }

    #[test]
    fn tcp_ranks_only_move_forward_through_a_close() {
        let path = [
            tcp::SYN_SENT,
            tcp::SYN_RECV,
            tcp::ESTABLISHED,
            tcp::FIN_WAIT,
            tcp::LAST_ACK,
            tcp::TIME_WAIT,
            tcp::CLOSE,
        ];
        for w in path.windows(2) {
            assert!(tcp::rank(w[0]) < tcp::rank(w[1]), "{w:?}");
        }
        assert_eq!(proto::by_name("icmpv6"), Some(proto::ICMPV6));
        assert_eq!(proto::by_name("nope"), None);
    }
}
