//! Fuzzes the advert receive path: Ethernet/VLAN/IP parsing, the checks in OpenBSD's order and the HMAC
//! verification. Accepted adverts must survive emit -> parse unchanged.
#![no_main]
use carp::{
    auth::{AuthContext, AuthInput, Key},
    wire::ip::{Encap, emit_frame, receive_frame},
};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};

fuzz_target!(|frame: &[u8]| {
    let key = Key::from_passphrase("secret").expect("key");
    let input = AuthInput::with_addrs(1, [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);
    let ctx = AuthContext::new(&key, &input);
    let Ok((eth, repr)) = receive_frame(frame, |v| v == 1, |r| ctx.verify_repr(r)) else {
        return;
    };
    if let IpAddr::V4(src) = eth.ip.facts.src {
        let again = emit_frame(&repr, &Encap::group_v4(src, 7), eth.src_mac, eth.dst_mac);
        let (_, reparsed) = receive_frame(&again, |v| v == 1, |r| ctx.verify_repr(r))
            .expect("re-emitted advert parses");
        assert_eq!(reparsed, repr);
    }
});
