//! ARP for Ethernet/IPv4.

/// ARP packet for hardware type Ethernet and protocol IPv4 (28 bytes).
#[repr(C)]
pub struct ArpEthIpv4 {
    /// Hardware type (1).
    pub htype: [u8; 2],
    /// Protocol type (0x0800).
    pub ptype: [u8; 2],
    /// Hardware address length (6).
    pub hlen: u8,
    /// Protocol address length (4).
    pub plen: u8,
    /// Operation: 1 request, 2 reply.
    pub op: [u8; 2],
    /// Sender hardware address.
    pub sha: [u8; 6],
    /// Sender protocol address.
    pub spa: [u8; 4],
    /// Target hardware address.
    pub tha: [u8; 6],
    /// Target protocol address.
    pub tpa: [u8; 4],
}

/// ARP request.
pub const ARPOP_REQUEST: u16 = 1;
