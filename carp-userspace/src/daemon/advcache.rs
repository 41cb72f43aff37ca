//! The bytes of each MASTER's adverts, built once per content.
//!
//! A MASTER's adverts repeat the same bytes (the replay cookie as counter, so the same HMAC; spec §3), so
//! building one costs a digest and an IP header only when something in it changed: advbase, advskew,
//! demote, the counter or the carpdev's source address (from `ownaddrs`, never read on the loop).
//! At 32 vhids and advbase 1 that was most of the ~130 us of CPU carpd spent per advert. The IP id is
//! fixed per vhid (from its cookie): the frame is an atomic datagram (DF, RFC 6864), and the standby
//! senders and the kernel advert queue repeat it byte for byte anyway.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// What an advert's bytes depend on besides the node's fixed settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertKey {
    /// advbase byte.
    pub advbase: u8,
    /// advskew byte.
    pub advskew: u8,
    /// demote byte.
    pub demote: u8,
    /// The counter bytes.
    pub counter: [u8; 8],
    /// The HMAC digest (so a new pass builds new frames).
    pub digest: [u8; 20],
    /// The Ethernet source (virtual or, stealth, the carpdev's MAC).
    pub src_mac: [u8; 6],
}

/// The source addresses adverts leave from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sources {
    /// The carpdev's first IPv4 address.
    pub v4: Option<Ipv4Addr>,
    /// The carpdev's first IPv6 link-local address.
    pub v6_ll: Option<Ipv6Addr>,
}

impl Sources {
    /// Picks the sources from a list of addresses (getifaddrs order, see `ownaddrs`).
    pub fn from_addrs(addrs: &[IpAddr]) -> Sources {
        Sources {
            v4: addrs.iter().find_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                _ => None,
            }),
            v6_ll: addrs.iter().find_map(|a| match a {
                IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(*v6),
                _ => None,
            }),
        }
    }
}

/// The frames of one node's advert and what they were built from.
#[derive(Debug, Clone)]
struct Built {
    key: AdvertKey,
    sources: Sources,
    frames: Vec<Vec<u8>>,
}

/// The caches of one daemon.
#[derive(Debug, Default)]
pub struct AdvCache {
    built: HashMap<usize, Built>,
}

impl AdvCache {
    /// The frames built for node `node` if they match `key` and `sources`.
    pub fn get(&self, node: usize, key: &AdvertKey, sources: &Sources) -> Option<&[Vec<u8>]> {
        self.built
            .get(&node)
            .filter(|b| b.key == *key && b.sources == *sources)
            .map(|b| b.frames.as_slice())
    }

    /// Keeps the frames built for `node`.
    pub fn put(&mut self, node: usize, key: AdvertKey, sources: Sources, frames: Vec<Vec<u8>>) {
        self.built.insert(
            node,
            Built {
                key,
                sources,
                frames,
            },
        );
    }

    /// Forgets everything (nodes were renumbered or re-created).
    pub fn clear(&mut self) {
        self.built.clear();
    }
}

/// The fixed IP id of a vhid's IPv4 adverts, from its random cookie.
pub fn ip_ident(counter: &[u8; 8]) -> u16 {
    u16::from_be_bytes([counter[6], counter[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_pick_the_first_v4_and_the_link_local() {
        let addrs: Vec<IpAddr> = ["2001:db8::1", "10.0.0.11", "fe80::1", "10.0.0.12"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let s = Sources::from_addrs(&addrs);
        assert_eq!(s.v4, Some(Ipv4Addr::new(10, 0, 0, 11)));
        assert_eq!(s.v6_ll, Some("fe80::1".parse().unwrap()));
    }

    #[test]
    fn a_changed_key_or_source_misses() {
        let key = AdvertKey {
            advbase: 0,
            advskew: 0,
            demote: 0,
            counter: [1; 8],
            digest: [2; 20],
            src_mac: [0, 0, 0x5e, 0, 1, 1],
        };
        let s = Sources {
            v4: Some(Ipv4Addr::new(10, 0, 0, 11)),
            v6_ll: None,
        };
        let mut c = AdvCache::default();
        c.put(3, key, s, vec![vec![1, 2, 3]]);
        assert!(c.get(3, &key, &s).is_some());
        assert!(c.get(4, &key, &s).is_none());
        let demoted = AdvertKey { demote: 1, ..key };
        assert!(c.get(3, &demoted, &s).is_none());
        let moved = Sources {
            v4: Some(Ipv4Addr::new(10, 0, 0, 13)),
            ..s
        };
        assert!(c.get(3, &key, &moved).is_none());
    }
}
