//! Frame builders for tests, deliberately independent of carp-userspace's wire module.

/// Internet checksum of `data` (one's complement of the one's-complement sum).
pub fn inet_csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 36-byte CARP header with a correct checksum (digest and counter are arbitrary test bytes).
pub fn carp_header(version_type: u8, vhid: u8, advskew: u8, advbase: u8, demote: u8) -> Vec<u8> {
    let mut h = vec![version_type, vhid, advskew, 7, demote, advbase, 0, 0];
    h.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    h.extend((0..20).map(|i| 0xa0 + i as u8));
    let c = inet_csum(&h);
    h[6..8].copy_from_slice(&c.to_be_bytes());
    h
}

/// Ethernet header, with an optional 802.1Q tag.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, vlan: Option<u16>) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(id) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 header (no options) with a correct checksum.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, ttl: u8, payload_len: usize) -> Vec<u8> {
    let tot = (20 + payload_len) as u16;
    let mut h = vec![0x45, 0x10];
    h.extend_from_slice(&tot.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, ttl, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = inet_csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// An IPv6 header.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, hop: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.push(next);
    h.push(hop);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

/// A whole IPv4 advert frame to 224.0.0.18.
pub fn advert_v4(src: [u8; 4], vhid: u8, ttl: u8, carp: &[u8], vlan: Option<u16>) -> Vec<u8> {
    let mut f = eth(
        [1, 0, 0x5e, 0, 0, 0x12],
        [0, 0, 0x5e, 0, 1, vhid],
        0x0800,
        vlan,
    );
    f.extend(ipv4(src, [224, 0, 0, 18], 112, ttl, carp.len()));
    f.extend_from_slice(carp);
    f
}

/// A whole IPv6 advert frame to ff02::12.
pub fn advert_v6(src: [u8; 16], vhid: u8, hop: u8, carp: &[u8]) -> Vec<u8> {
    let mut dst = [0u8; 16];
    dst[0] = 0xff;
    dst[1] = 0x02;
    dst[15] = 0x12;
    let mut f = eth(
        [0x33, 0x33, 0, 0, 0, 0x12],
        [0, 0, 0x5e, 0, 1, vhid],
        0x86dd,
        None,
    );
    f.extend(ipv6(src, dst, 112, hop, carp.len()));
    f.extend_from_slice(carp);
    f
}

/// An ARP request "who has `tpa` tell `spa`" from `sha`, broadcast.
pub fn arp_request(sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4], vlan: Option<u16>) -> Vec<u8> {
    let mut f = eth([0xff; 6], sha, 0x0806, vlan);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f
}

/// The solicited-node multicast address of `target`.
pub fn solicited_node(target: [u8; 16]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xff;
    a[1] = 0x02;
    a[11] = 1;
    a[12] = 0xff;
    a[13..].copy_from_slice(&target[13..]);
    a
}

/// ICMPv6 checksum over the pseudo-header and `msg`.
pub fn icmp6_csum(src: [u8; 16], dst: [u8; 16], msg: &[u8]) -> u16 {
    let mut p = Vec::new();
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 58]);
    p.extend_from_slice(msg);
    inet_csum(&p)
}

/// A neighbour solicitation for `target` from `src` (with a source link-layer option when `slla`).
pub fn neighbour_solicit(mac: [u8; 6], src: [u8; 16], target: [u8; 16], slla: bool) -> Vec<u8> {
    let dst = solicited_node(target);
    let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&target);
    if slla {
        msg.extend_from_slice(&[1, 1]);
        msg.extend_from_slice(&mac);
    }
    let c = icmp6_csum(src, dst, &msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut dmac = [0x33, 0x33, 0, 0, 0, 0];
    dmac[2..].copy_from_slice(&dst[12..]);
    let mut f = eth(dmac, mac, 0x86dd, None);
    f.extend(ipv6(src, dst, 58, 255, msg.len()));
    f.extend(msg);
    f
}
