//! carp-xdp's controller library: the CARP wire format, advert authentication, the sans-IO election
//! engine, flow replication's protocol core, the config front ends, the control protocol and carpd
//! itself. The binaries `carpd` and `carpctl` are thin shells around it; the simulator is its own
//! crate (`carp-sim`).
//!
//! Where to look:
//! - `wire::advert`: the 36-byte CARP header (checked view + `Repr`), checksum.
//! - `wire::ip`: IPv4/IPv6 encapsulation of adverts.
//! - `balance`: carpnodes load balancing: the reference bucket hashes and the `carp_balance` value.
//! - `auth`: the HMAC-SHA1 key and input (spec §2), replay cookie and loop detection (spec §3).
//! - `engine`: the election rules (spec §4), one state machine per vhid, and interface-group demotion.
//! - `config`: carpd's configuration: the TOML file, the ifconfig-line front end (`config::ifconfig`),
//!   the `[pfsync]`/`[flows]` sections (`config::sync`) and `[[track]]` (`config::track`), validated
//!   with file:line:key errors.
//! - `control`: the control-socket protocol between carpd and carpctl (requests, every report shape,
//!   their text, JSON and metrics renderings, the client).
//! - `daemon`: carpd itself: the engine driven by real time, the XDP dataplane, netlink and AF_PACKET,
//!   the sync driver (`daemon::sync`: transport, flow map) and the `[[track]]` checkers.
//! - `sync`: pfsync-style flow-state replication, sans-IO: wire format, HMAC, merge rules, engine.
//! - `logfmt`: carpd's log lines (syslog priorities and no timestamp of their own under journald).
//! - `manpage`: the man pages' hand-written sections and the config reference (Markdown in docs/) as roff.
//! - `ctnetlink`: netfilter's conntrack table over netlink (events, dumps, batched changes).
//! - `ifreq`: interface ioctls (MAC, MTU, flags, multicast list) in the process's own namespace.

pub mod auth;
pub mod balance;
pub mod config;
pub mod control;
pub mod ctnetlink;
pub mod daemon;
pub mod dataplane;
pub mod engine;
pub mod ifreq;
pub mod logfmt;
pub mod manpage;
pub mod sync;
pub mod wire;
