//! What carpd may do with a link that already carries a carp interface's name (issue #16 item 4).
//!
//! What this module owns: the one decision "is this existing link a carp interface carpd created?",
//! kept pure so it is unit-tested without root. carpd creates each carp interface as a macvlan on its
//! carpdev with the virtual MAC 00:00:5e:00:01:<vhid> (`netlink::Netlink::create_carp_if`), so a link
//! with those three facts is one a killed carpd left behind, and replacing it is safe. Anything else
//! (a bridge, a VLAN, the syncdev, another carpdev, a macvlan on another parent or with another MAC)
//! belongs to someone else: deleting it would cut whatever runs over it, so the config is refused and
//! the error names the link and the fix.

/// The facts about an existing link that decide whether carpd made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    /// Interface index.
    pub index: u32,
    /// The link kind (`IFLA_INFO_KIND`: "macvlan", "bridge", "vlan", ...), None for a physical device.
    pub kind: Option<String>,
    /// The parent link's index (`IFLA_LINK`), for stacked devices.
    pub parent: Option<u32>,
    /// The MAC address.
    pub mac: Option<Vec<u8>>,
}

/// True when `link` is a carp interface carpd created: a macvlan on `carpdev_index` with `vmac`.
pub fn is_ours(link: &LinkFacts, carpdev_index: u32, vmac: [u8; 6]) -> bool {
    link.kind.as_deref() == Some("macvlan")
        && link.parent == Some(carpdev_index)
        && link.mac.as_deref() == Some(&vmac[..])
}

/// The refusal for a link named `name` that carpd did not create (`is_ours` false).
pub fn refusal(name: &str, link: &LinkFacts, carpdev: &str, carpdev_index: u32) -> String {
    let what = match (link.kind.as_deref(), link.parent) {
        (None, _) => "a device (no link kind: physical or driver-made)".to_string(),
        (Some("macvlan"), Some(p)) if p == carpdev_index => {
            "a macvlan on the carpdev with another MAC than the vhid's".to_string()
        }
        (Some("macvlan"), _) => format!("a macvlan on another parent than {carpdev}"),
        (Some(k), _) => format!("a {k}"),
    };
    let mac = link
        .mac
        .as_ref()
        .map(|m| {
            let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
            format!(", MAC {}", hex.join(":"))
        })
        .unwrap_or_default();
    format!(
        "carp interface {name}: a link named {name} already exists (ifindex {}: {what}{mac}) and carpd did not create it \
         (carpd makes a macvlan on {carpdev} with the vhid's virtual MAC); refusing to delete it: \
         give the carp interface another name, or remove the link (`ip link del {name}`) if it is not in use",
        link.index
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 1];

    fn link(kind: Option<&str>, parent: Option<u32>, mac: [u8; 6]) -> LinkFacts {
        LinkFacts {
            index: 9,
            kind: kind.map(str::to_string),
            parent,
            mac: Some(mac.to_vec()),
        }
    }

    #[test]
    fn only_a_macvlan_on_the_carpdev_with_the_vmac_is_ours() {
        assert!(is_ours(&link(Some("macvlan"), Some(3), VMAC), 3, VMAC));
        // The kinds the issue names: a bridge, a VLAN on the carpdev, a physical syncdev, another carpdev.
        assert!(!is_ours(&link(Some("bridge"), None, VMAC), 3, VMAC));
        assert!(!is_ours(&link(Some("vlan"), Some(3), VMAC), 3, VMAC));
        assert!(!is_ours(&link(None, None, [2, 0, 0, 0, 0, 1]), 3, VMAC));
        assert!(!is_ours(&link(Some("veth"), None, VMAC), 3, VMAC));
        // A macvlan on another parent, or with another vhid's MAC, is someone else's too.
        assert!(!is_ours(&link(Some("macvlan"), Some(4), VMAC), 3, VMAC));
        let other = [0, 0, 0x5e, 0, 1, 2];
        assert!(!is_ours(&link(Some("macvlan"), Some(3), other), 3, VMAC));
    }

    #[test]
    fn the_refusal_names_the_link_and_the_fix() {
        let e = refusal("br-x", &link(Some("bridge"), None, VMAC), "eth0", 3);
        assert!(e.contains("a link named br-x already exists"), "{e}");
        assert!(e.contains("a bridge"), "{e}");
        assert!(e.contains("ip link del br-x"), "{e}");
        let e = refusal("carp0", &link(Some("macvlan"), Some(4), VMAC), "eth0", 3);
        assert!(e.contains("another parent than eth0"), "{e}");
    }
}
