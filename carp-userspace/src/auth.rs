//! Advert authentication (spec §2) and loop detection (spec §3).
//!
//! [`Key`] holds the passphrase as every implementation really uses it: the raw bytes, at most 19,
//! as an HMAC-SHA1 key (BSD strlcpy's it into 20 zero-padded bytes, which HMAC's own zero-padding makes
//! identical). [`AuthInput`] builds the exact hashed message (`02 01 [mac] vhid v4... v6... counter`),
//! and [`AuthContext`] pre-hashes everything before the counter once, so each advert costs one clone
//! and finish. [`ReplayCookie`] is OpenBSD's per-vhid constant counter used to spot our own adverts.
//!
//! There is deliberately no monotonic counter check: OpenBSD sends the same random cookie in every
//! advert and ucarp draws a fresh random counter for each one (see tests/vectors/README.txt), so a
//! "counter must grow" rule would reject every peer after its first advert. CARP has no real replay
//! protection; the cookie only detects loops.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_common::proto::{CARP_ADVERTISEMENT, CARP_DIGEST_LEN, CARP_VERSION};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::wire::AdvertRepr;

type HmacSha1 = Hmac<Sha1>;

/// Longest passphrase every implementation agrees on (the 20-byte key minus its NUL).
pub const MAX_PASSPHRASE_LEN: usize = 19;

/// Why a passphrase cannot be a CARP key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Longer than 19 bytes: BSD would silently truncate it and ucarp refuses it.
    #[error(
        "CARP passphrase is {len} bytes but at most {MAX_PASSPHRASE_LEN} bytes are used \
         (OpenBSD/FreeBSD silently keep only the first {MAX_PASSPHRASE_LEN}, ucarp refuses it); \
         use a passphrase of {MAX_PASSPHRASE_LEN} bytes or fewer"
    )]
    TooLong {
        /// Length of the passphrase given, in bytes.
        len: usize,
    },
    /// Contains a NUL byte, where BSD and ucarp would stop reading it.
    #[error(
        "CARP passphrase contains a NUL byte at offset {at}; peers stop reading there, \
         so remove it"
    )]
    Nul {
        /// Offset of the first NUL byte.
        at: usize,
    },
}

/// A CARP key: the raw passphrase bytes (at most 19), used directly as the HMAC-SHA1 key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; MAX_PASSPHRASE_LEN],
    len: usize,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keep the secret out of logs and panics.
        write!(f, "Key({} bytes, redacted)", self.len)
    }
}

impl Key {
    /// Makes a key from passphrase bytes; rejects more than 19 bytes or an embedded NUL.
    pub fn new(passphrase: &[u8]) -> Result<Self, KeyError> {
        if passphrase.len() > MAX_PASSPHRASE_LEN {
            return Err(KeyError::TooLong {
                len: passphrase.len(),
            });
        }
        if let Some(at) = passphrase.iter().position(|&b| b == 0) {
            return Err(KeyError::Nul { at });
        }
        let mut bytes = [0; MAX_PASSPHRASE_LEN];
        bytes[..passphrase.len()].copy_from_slice(passphrase);
        Ok(Key {
            bytes,
            len: passphrase.len(),
        })
    }

    /// Makes a key from a passphrase string (its UTF-8 bytes).
    pub fn from_passphrase(passphrase: &str) -> Result<Self, KeyError> {
        Self::new(passphrase.as_bytes())
    }

    /// The passphrase bytes (the HMAC key).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn mac(&self) -> HmacSha1 {
        // Zero-padding to SHA-1's 64-byte block is exactly what HMAC does with a short key (and
        // what BSD's 20-byte strlcpy'd key amounts to), and the fixed-size form cannot fail.
        let mut block = [0u8; 64];
        block[..self.len].copy_from_slice(self.as_bytes());
        <HmacSha1 as hmac::digest::KeyInit>::new(&block.into())
    }
}

/// Which IPv6 addresses go into the hash (spec §2 item 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthForm {
    /// OpenBSD's sending form: link-local (fe80::/10) addresses skipped. What we send.
    NoV6LinkLocal,
    /// OpenBSD's original and FreeBSD's form: link-locals included with bytes 2-3 zeroed.
    Orig,
}

/// The inputs of the hashed message apart from the counter: vhid, addresses, optional hand-set MAC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthInput {
    vhid: u8,
    mac: Option<[u8; 6]>,
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

/// True for addresses whose bytes 2-3 KAME uses for the scope id: link-local unicast and
/// interface-/link-local multicast.
fn is_scope_embedded(addr: &Ipv6Addr) -> bool {
    let o = addr.octets();
    let link_local = o[0] == 0xfe && (o[1] & 0xc0) == 0x80;
    let scoped_multicast = o[0] == 0xff && matches!(o[1] & 0x0f, 0x01 | 0x02);
    link_local || scoped_multicast
}

fn is_link_local(addr: &Ipv6Addr) -> bool {
    let o = addr.octets();
    o[0] == 0xfe && (o[1] & 0xc0) == 0x80
}

impl AuthInput {
    /// An input for `vhid` with no addresses yet.
    pub fn new(vhid: u8) -> Self {
        AuthInput {
            vhid,
            ..Self::default()
        }
    }

    /// An input for `vhid` with these virtual addresses (order and duplicates do not matter).
    pub fn with_addrs(vhid: u8, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut input = Self::new(vhid);
        for addr in addrs {
            input.add_addr(addr);
        }
        input
    }

    /// Adds one virtual address, keeping each family sorted and free of duplicates.
    pub fn add_addr(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => {
                // Ipv4Addr orders by numeric value, which is the order BSD hashes in.
                if let Err(at) = self.v4.binary_search(&a) {
                    self.v4.insert(at, a);
                }
            }
            IpAddr::V6(a) => {
                // BSD compares after zeroing the scope bytes, so two addresses differing only
                // there are one address to the hash.
                let mut o = a.octets();
                if is_scope_embedded(&a) {
                    o[2] = 0;
                    o[3] = 0;
                }
                let a = Ipv6Addr::from(o);
                if let Err(at) = self.v6.binary_search(&a) {
                    self.v6.insert(at, a);
                }
            }
        }
    }

    /// Sets OpenBSD's hand-set MAC prefix (6 bytes after `02 01`); only for a hand-set carp MAC.
    pub fn hand_set_mac(mut self, mac: [u8; 6]) -> Self {
        self.mac = Some(mac);
        self
    }

    /// The vhid hashed.
    pub fn vhid(&self) -> u8 {
        self.vhid
    }

    /// The bytes hashed before the counter, for `form`.
    pub fn prefix(&self, form: AuthForm) -> Vec<u8> {
        let mut msg = Vec::with_capacity(3 + 6 + 4 * self.v4.len() + 16 * self.v6.len());
        msg.push(CARP_VERSION);
        msg.push(CARP_ADVERTISEMENT);
        if let Some(mac) = self.mac {
            msg.extend_from_slice(&mac);
        }
        msg.push(self.vhid);
        for a in &self.v4 {
            msg.extend_from_slice(&a.octets());
        }
        for a in &self.v6 {
            if form == AuthForm::NoV6LinkLocal && is_link_local(a) {
                continue;
            }
            msg.extend_from_slice(&a.octets());
        }
        msg
    }

    /// The whole hashed message for `form` and `counter`.
    pub fn message(&self, form: AuthForm, counter: &[u8; 8]) -> Vec<u8> {
        let mut msg = self.prefix(form);
        msg.extend_from_slice(counter);
        msg
    }

    fn has_link_local(&self) -> bool {
        self.v6.iter().any(is_link_local)
    }
}

/// A key and input pre-hashed up to the counter: signs and verifies adverts of one vhid.
#[derive(Clone)]
pub struct AuthContext {
    vhid: u8,
    nov6ll: HmacSha1,
    // Only differs from NOV6LL when link-locals are configured; None saves a second HMAC per verify.
    orig: Option<HmacSha1>,
}

impl std::fmt::Debug for AuthContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthContext")
            .field("vhid", &self.vhid)
            .field("orig_form", &self.orig.is_some())
            .finish_non_exhaustive()
    }
}

impl AuthContext {
    /// Prepares both forms of the hash for `key` and `input`.
    pub fn new(key: &Key, input: &AuthInput) -> Self {
        let mut nov6ll = key.mac();
        nov6ll.update(&input.prefix(AuthForm::NoV6LinkLocal));
        let orig = input.has_link_local().then(|| {
            let mut mac = key.mac();
            mac.update(&input.prefix(AuthForm::Orig));
            mac
        });
        AuthContext {
            vhid: input.vhid,
            nov6ll,
            orig,
        }
    }

    /// The vhid this context signs for.
    pub fn vhid(&self) -> u8 {
        self.vhid
    }

    fn state(&self, form: AuthForm) -> &HmacSha1 {
        match (form, &self.orig) {
            (AuthForm::Orig, Some(orig)) => orig,
            _ => &self.nov6ll,
        }
    }

    /// The digest of `counter` in `form`.
    pub fn digest(&self, form: AuthForm, counter: &[u8; 8]) -> [u8; CARP_DIGEST_LEN] {
        let mut mac = self.state(form).clone();
        mac.update(counter);
        mac.finalize().into_bytes().into()
    }

    /// The digest we send (NOV6LL form).
    pub fn sign(&self, counter: &[u8; 8]) -> [u8; CARP_DIGEST_LEN] {
        self.digest(AuthForm::NoV6LinkLocal, counter)
    }

    /// Verifies `digest` in one form, in constant time.
    pub fn verify_form(&self, form: AuthForm, counter: &[u8; 8], digest: &[u8]) -> bool {
        let mut mac = self.state(form).clone();
        mac.update(counter);
        mac.verify_slice(digest).is_ok()
    }

    /// Verifies `digest` as OpenBSD does: NOV6LL first, then ORIG.
    pub fn verify(&self, counter: &[u8; 8], digest: &[u8]) -> bool {
        self.verify_form(AuthForm::NoV6LinkLocal, counter, digest)
            || (self.orig.is_some() && self.verify_form(AuthForm::Orig, counter, digest))
    }

    /// Verifies a parsed advert (its vhid must also be ours; the vhid is hashed too).
    pub fn verify_repr(&self, repr: &AdvertRepr) -> bool {
        repr.vhid == self.vhid && self.verify(&repr.counter, &repr.digest)
    }
}

/// OpenBSD's per-vhid replay cookie: one random counter sent in every advert, so seeing it come
/// back means our own advert looped (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayCookie([u8; 8]);

impl ReplayCookie {
    /// Draws a fresh random cookie (once per vhid, before its first advert).
    pub fn random() -> Self {
        ReplayCookie(rand::random())
    }

    /// A cookie with a fixed value (for tests and for adopting a previous process's cookie).
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        ReplayCookie(bytes)
    }

    /// The counter bytes to put in every advert.
    pub const fn counter(&self) -> [u8; 8] {
        self.0
    }

    /// True if a received counter equals ours: our own advert came back (drop it, count a loop).
    pub fn is_own_loop(&self, counter: &[u8; 8]) -> bool {
        self.0 == *counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().expect("test address"))
    }

    #[test]
    fn nineteen_bytes_is_the_limit() {
        assert!(Key::from_passphrase("nineteen-byte-pass!").is_ok());
        let err = Key::from_passphrase("twenty-bytes-pass!!!").unwrap_err();
        assert_eq!(err, KeyError::TooLong { len: 20 });
        let msg = err.to_string();
        assert!(msg.contains("19"), "{msg}");
        assert!(msg.contains("20 bytes"), "{msg}");
        assert!(
            msg.contains("use a passphrase of 19 bytes or fewer"),
            "{msg}"
        );
        assert!(Key::from_passphrase("").is_ok());
    }

    #[test]
    fn nul_rejected() {
        assert_eq!(Key::new(b"ab\0cd").unwrap_err(), KeyError::Nul { at: 2 });
    }

    #[test]
    fn debug_redacts() {
        let key = Key::from_passphrase("hunter2").expect("short");
        assert!(!format!("{key:?}").contains("hunter2"));
    }

    #[test]
    fn ucarp_message_layout() {
        let input = AuthInput::with_addrs(7, [v4(10, 99, 0, 1)]);
        let counter = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            input.message(AuthForm::NoV6LinkLocal, &counter),
            vec![2, 1, 7, 10, 99, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn v4_sorted_numerically_and_deduplicated() {
        let input = AuthInput::with_addrs(
            1,
            [
                v4(10, 0, 0, 10),
                v4(9, 255, 0, 1),
                v4(10, 0, 0, 2),
                v4(10, 0, 0, 10),
            ],
        );
        assert_eq!(
            input.prefix(AuthForm::Orig),
            vec![2, 1, 1, 9, 255, 0, 1, 10, 0, 0, 2, 10, 0, 0, 10]
        );
    }

    #[test]
    fn nov6ll_vs_orig() {
        let input = AuthInput::with_addrs(
            5,
            [
                v6("2001:db8::1"),
                v6("fe80:1234::7"),
                v4(192, 0, 2, 1),
                v6("fe80::7"),
            ],
        );
        let nov6ll = input.prefix(AuthForm::NoV6LinkLocal);
        let orig = input.prefix(AuthForm::Orig);
        let mut expect = vec![2, 1, 5, 192, 0, 2, 1];
        expect.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("a").octets());
        assert_eq!(nov6ll, expect);
        // Both link-locals collapse to fe80::7 once the scope bytes are zeroed, and sort after 2001:.
        expect.extend_from_slice(&"fe80::7".parse::<Ipv6Addr>().expect("a").octets());
        assert_eq!(orig, expect);

        let key = Key::from_passphrase("pw").expect("short");
        let ctx = AuthContext::new(&key, &input);
        let counter = [9; 8];
        let sent = ctx.sign(&counter);
        let freebsd = ctx.digest(AuthForm::Orig, &counter);
        assert_ne!(sent, freebsd);
        assert!(ctx.verify(&counter, &sent));
        assert!(ctx.verify(&counter, &freebsd));
        assert!(!ctx.verify_form(AuthForm::NoV6LinkLocal, &counter, &freebsd));
        assert!(!ctx.verify(&[8; 8], &sent));
    }

    #[test]
    fn forms_equal_without_link_locals() {
        let input = AuthInput::with_addrs(5, [v6("2001:db8::2"), v6("2001:db8::1")]);
        assert_eq!(
            input.prefix(AuthForm::Orig),
            input.prefix(AuthForm::NoV6LinkLocal)
        );
        let ctx = AuthContext::new(&Key::from_passphrase("x").expect("short"), &input);
        let c = [0; 8];
        assert_eq!(ctx.digest(AuthForm::Orig, &c), ctx.sign(&c));
    }

    #[test]
    fn hand_set_mac_prefix() {
        let input = AuthInput::with_addrs(9, [v4(10, 0, 0, 1)]).hand_set_mac([2, 0, 0, 0, 0, 1]);
        assert_eq!(
            input.message(AuthForm::NoV6LinkLocal, &[0; 8])[..9],
            [2, 1, 2, 0, 0, 0, 0, 1, 9]
        );
    }

    #[test]
    fn digest_matches_plain_hmac() {
        let key = Key::from_passphrase("secret").expect("short");
        let input = AuthInput::with_addrs(7, [v4(10, 99, 0, 1)]);
        let counter = [0x45, 0x7d, 0xe1, 0x4b, 0x2a, 0xdd, 0xcd, 0x3f];
        let mut mac = HmacSha1::new_from_slice(b"secret").expect("any key length");
        mac.update(&input.message(AuthForm::NoV6LinkLocal, &counter));
        let plain: [u8; 20] = mac.finalize().into_bytes().into();
        assert_eq!(AuthContext::new(&key, &input).sign(&counter), plain);
    }

    #[test]
    fn verify_repr_requires_same_vhid_and_length() {
        let key = Key::from_passphrase("secret").expect("short");
        let ctx = AuthContext::new(&key, &AuthInput::with_addrs(7, [v4(10, 0, 0, 1)]));
        let counter = [3; 8];
        let mut repr = AdvertRepr {
            vhid: 7,
            advskew: 0,
            advbase: 1,
            demote: 0,
            counter,
            digest: ctx.sign(&counter),
        };
        assert!(ctx.verify_repr(&repr));
        assert!(!ctx.verify(&counter, &repr.digest[..19]));
        repr.vhid = 8;
        assert!(!ctx.verify_repr(&repr));
    }

    #[test]
    fn replay_cookie_detects_loops_only() {
        let cookie = ReplayCookie::from_bytes([1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(cookie.is_own_loop(&[1, 2, 3, 4, 5, 6, 7, 8]));
        // A smaller or equal-looking peer counter is not a replay: no monotonic check.
        assert!(!cookie.is_own_loop(&[0; 8]));
        assert!(!cookie.is_own_loop(&[1, 2, 3, 4, 5, 6, 7, 9]));
        assert_ne!(ReplayCookie::random(), ReplayCookie::random());
    }
}
