//! VRRP protocol constants (RFC 9568 for VRRPv3, RFC 3768 for VRRPv2) shared by the XDP intake and the
//! controller. VRRP shares IP protocol 112, the groups 224.0.0.18 / ff02::12 and TTL 255 with CARP
//! (those constants stay in `proto`); what differs is collected here.

/// Version nibble of VRRPv3 (RFC 9568 §5.2.1).
pub const VRRP3_VERSION: u8 = 3;
/// Version nibble of VRRPv2 (RFC 3768 §5.3.1); the same as CARP's, so byte 0 is 0x21 for both.
pub const VRRP2_VERSION: u8 = 2;
/// The only VRRP packet type, "advertisement".
pub const VRRP_ADVERTISEMENT: u8 = 1;
/// Length of the fixed VRRPv3 header before the addresses.
pub const VRRP3_FIXED_LEN: usize = 8;
/// Length of the fixed VRRPv2 header before the addresses.
pub const VRRP2_FIXED_LEN: usize = 8;
/// Length of VRRPv2's trailing authentication data.
pub const VRRP2_AUTH_DATA_LEN: usize = 8;
/// Priority of the address owner: always MASTER, never listens.
pub const VRRP_PRIORITY_OWNER: u8 = 255;
/// Priority a MASTER sends when it stops, inviting the backups to take over at once.
pub const VRRP_PRIORITY_STOP: u8 = 0;
/// Default priority of a backup (RFC 9568 §6.1, keepalived, FRR).
pub const VRRP_PRIORITY_DEFAULT: u8 = 100;
/// Highest VRRPv3 Max Advertise Interval in centiseconds (a 12-bit field).
pub const VRRP3_MAX_INTERVAL_CS: u16 = 4095;
/// Default VRRPv3 interval: 100 centiseconds.
pub const VRRP3_DEFAULT_INTERVAL_CS: u16 = 100;

/// The IPv4 VRRP virtual MAC: 00:00:5e:00:01:<VRID> (the same as CARP's).
pub const fn vrrp_mac_v4(vrid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vrid]
}

/// The IPv6 VRRP virtual MAC: 00:00:5e:00:02:<VRID> (RFC 9568 §7.3).
pub const fn vrrp_mac_v6(vrid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x02, vrid]
}

/// Flag in `VhidEntry::mode` (above the `BalanceMode` values, which VRRP never uses): this vhid is a
/// VRRPv3 VRID, so the XDP intake runs the VRRP checks on its adverts and passes them up to carpd's
/// packet socket instead of parsing them as CARP.
pub const VHID_MODE_VRRP3: u8 = 0x40;
/// Flag in `VhidEntry::mode`: this vhid is a VRRPv2 VRID (see `VHID_MODE_VRRP3`).
pub const VHID_MODE_VRRP2: u8 = 0x80;
/// Both VRRP flags.
pub const VHID_MODE_VRRP: u8 = VHID_MODE_VRRP3 | VHID_MODE_VRRP2;
/// Flag in `VhidEntry::mode` of a VRRP VRID: Accept_Mode is False and this router does not own the
/// addresses (priority below 255), so as MASTER it drops IP packets to them (RFC 9568 §6.4.3),
/// neighbour discovery excepted.
pub const VHID_MODE_NO_ACCEPT: u8 = 0x20;
/// Flag in `VhidEntry::mode` of a VRRP VRID with unicast peers: an advert sent to this host's own
/// (unicast) address passes the XDP intake at any TTL, for carpd to accept only from a configured
/// peer. keepalived sends IPv6 unicast adverts with the default hop limit, not 255, and accepts any
/// TTL on unicast itself (unless `min_ttl`/`max_ttl` say otherwise).
pub const VHID_MODE_UNICAST_PEERS: u8 = 0x10;
