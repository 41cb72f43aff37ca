//! The carp interface as a Linux link, through rtnetlink.
//!
//! This module owns the carp interfaces' kernel objects: each carp interface is a macvlan named after it
//! (e.g. `carp0`) on its carpdev, mode bridge, with the virtual MAC 00:00:5e:00:01:<vhid> and IPv6
//! `addrgenmode none`, so it never sends a link-local DAD, MLD report or router solicitation from the
//! virtual MAC (design §3: a BACKUP must never teach the switch the VMAC). It is kept DOWN without
//! addresses while BACKUP/INIT and brought UP with the VIPs (IPv6 with `nodad`) while MASTER. It also
//! turns the kernel's link and address notifications into `LinkEvent`s: a carpdev's carrier, and a VIP
//! deleted behind our back.

use std::net::IpAddr;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt, channel::mpsc::UnboundedReceiver};
use rtnetlink::{
    Handle, LinkMacVlan, LinkUnspec, MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags},
        link::{
            AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkFlags, LinkInfo,
            MacVlanMode,
        },
    },
    sys::SocketAddr,
};

use crate::config::IfAddr;

/// A notification the daemon cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link's carrier/running state (RTM_NEWLINK).
    Link {
        /// Interface index.
        index: u32,
        /// IFF_RUNNING and IFF_LOWER_UP.
        running: bool,
    },
    /// A link was deleted (RTM_DELLINK).
    Deleted {
        /// Interface index.
        index: u32,
    },
    /// An address was removed from a link (RTM_DELADDR).
    AddrRemoved {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
    },
}

/// Our rtnetlink connection.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

/// The raw notification stream of a `Netlink`.
pub type Notifications = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

impl Netlink {
    /// Connects (on the current tokio runtime) and subscribes to link and address notifications.
    pub fn connect() -> Result<(Netlink, Notifications)> {
        let (conn, handle, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .context("opening an rtnetlink socket")?;
        tokio::spawn(conn);
        Ok((Netlink { handle }, messages))
    }

    /// The index of a link by name, if it exists.
    pub async fn index_of(&self, name: &str) -> Option<u32> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Some(msg.header.index),
            _ => None,
        }
    }

    /// The name of a link by index, if it exists.
    pub async fn name_of(&self, index: u32) -> Option<String> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = links.try_next().await.ok()??;
        msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
    }

    /// True if the link is up with carrier (IFF_RUNNING and IFF_LOWER_UP).
    pub async fn is_running(&self, index: u32) -> Result<bool> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = links
            .try_next()
            .await?
            .with_context(|| format!("no link with index {index}"))?;
        Ok(running(msg.header.flags))
    }

    /// What decides whether an existing link named `name` is a carp interface carpd created
    /// (`existing::is_ours`); None if no link has that name.
    pub async fn link_facts(&self, name: &str) -> Option<super::existing::LinkFacts> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let msg = links.try_next().await.ok()??;
        let mut facts = super::existing::LinkFacts {
            index: msg.header.index,
            kind: None,
            parent: None,
            mac: None,
        };
        for a in &msg.attributes {
            match a {
                LinkAttribute::LinkInfo(infos) => {
                    facts.kind = infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(k.to_string()),
                        _ => None,
                    })
                }
                LinkAttribute::Link(p) => facts.parent = Some(*p),
                LinkAttribute::Address(m) => facts.mac = Some(m.clone()),
                _ => {}
            }
        }
        Some(facts)
    }

    /// Deletes a link by index.
    pub async fn delete(&self, index: u32) -> Result<()> {
        Ok(self.handle.link().del(index).execute().await?)
    }

    /// Creates the carp interface `name` on `carpdev_index`: macvlan bridge, MAC `vmac`, addrgenmode
    /// none, DOWN. Returns its index.
    pub async fn create_carp_if(
        &self,
        name: &str,
        carpdev_index: u32,
        vmac: [u8; 6],
    ) -> Result<u32> {
        let msg = LinkMacVlan::new(name, carpdev_index, MacVlanMode::Bridge)
            .address(vmac.to_vec())
            .down()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .with_context(|| format!("creating macvlan {name}"))?;
        let index = self
            .index_of(name)
            .await
            .with_context(|| format!("macvlan {name} vanished after creation"))?;
        // Set before the link ever goes up, so no link-local address is generated from the VMAC.
        let gen_none = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        if let Err(e) = self.handle.link().set(gen_none).execute().await {
            // A kernel without IPv6 has nothing to generate; anything else is worth a warning.
            tracing::warn!(carpif = name, "cannot set addrgenmode none: {e}");
        }
        Ok(index)
    }

    /// Sets a link administratively up or down.
    pub async fn set_up(&self, index: u32, up: bool) -> Result<()> {
        let b = LinkUnspec::new_with_index(index);
        let msg = if up { b.up() } else { b.down() }.build();
        Ok(self.handle.link().set(msg).execute().await?)
    }

    /// Adds (or refreshes) an address; IPv6 ones with `nodad` so the VIP is usable at once.
    pub async fn add_addr(&self, index: u32, addr: IfAddr) -> Result<()> {
        let mut req = self
            .handle
            .address()
            .add(index, addr.addr, addr.prefix)
            .replace();
        if addr.addr.is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .with_context(|| format!("adding {addr} to link {index}"))
    }

    /// The kernel's address messages for one link.
    async fn addr_messages(
        &self,
        index: u32,
    ) -> Result<Vec<rtnetlink::packet_route::address::AddressMessage>> {
        Ok(self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await?)
    }

    /// The addresses on a link.
    pub async fn addrs(&self, index: u32) -> Result<Vec<IpAddr>> {
        let msgs = self.addr_messages(index).await?;
        Ok(msgs.iter().filter_map(address_of).collect())
    }

    /// Removes every address of a link.
    pub async fn flush_addrs(&self, index: u32) -> Result<()> {
        for m in self.addr_messages(index).await? {
            self.handle.address().del(m).execute().await?;
        }
        Ok(())
    }
}

fn running(flags: LinkFlags) -> bool {
    flags.contains(LinkFlags::Running) && flags.contains(LinkFlags::LowerUp)
}

fn address_of(m: &rtnetlink::packet_route::address::AddressMessage) -> Option<IpAddr> {
    // For IPv4, IFA_LOCAL is the address; IFA_ADDRESS is the peer on point-to-point links.
    m.attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
}

/// Turns a raw notification into the event the daemon wants, if it is one.
pub fn decode(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<LinkEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => Some(LinkEvent::Link {
            index: l.header.index,
            running: running(l.header.flags),
        }),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => Some(LinkEvent::Deleted {
            index: l.header.index,
        }),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => {
            Some(LinkEvent::AddrRemoved {
                index: a.header.index,
                addr: address_of(&a)?,
            })
        }
        _ => None,
    }
}

/// Waits for the next decoded event (None when the socket closed).
pub async fn next_event(rx: &mut Notifications) -> Option<LinkEvent> {
    loop {
        let (msg, _) = rx.next().await?;
        if let Some(ev) = decode(msg) {
            return Some(ev);
        }
    }
}
