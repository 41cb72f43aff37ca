//! Authentication of sync packets: the cluster key ([`SyncKey`], HMAC-SHA256 over header and body)
//! and the per-sender anti-replay window ([`ReplayWindow`]).
//!
//! pfsync itself has no authentication (spec §8, "Security"): anyone on the sync link can insert
//! states that bypass the ruleset. Our protocol closes that with a MAC keyed from `key_file` and a
//! 64-bit sequence number per packet, checked against a sliding window as IPsec does (RFC 4303 §3.4.3),
//! so a captured packet cannot be replayed and reordered packets within the window are still accepted.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of the HMAC-SHA256 tag that ends every sync packet.
pub const TAG_LEN: usize = 32;

/// The cluster key: the bytes of `key_file`, with the HMAC key schedule done once.
#[derive(Clone)]
pub struct SyncKey {
    // Cloning a keyed HMAC copies two hash states; that is much cheaper than re-keying per packet,
    // which matters at a million flows per bulk.
    mac: HmacSha256,
}

impl std::fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, not even in debug output.
        f.write_str("SyncKey(..)")
    }
}

/// Why a key cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key file is empty: every node would accept every forger's packets.
    #[error("the sync key is empty")]
    Empty,
}

impl SyncKey {
    /// A key from the raw bytes of `key_file` (used as they are, trailing newline included).
    pub fn from_bytes(bytes: &[u8]) -> Result<SyncKey, KeyError> {
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        let mac = HmacSha256::new_from_slice(bytes).map_err(|_| KeyError::Empty)?;
        Ok(SyncKey { mac })
    }

    /// The tag of `data` (header and body of a packet).
    pub fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// True if `tag` is the tag of `data`, compared in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

/// Width of the replay window in sequence numbers.
pub const REPLAY_WINDOW: u64 = 64;

/// The anti-replay state for one sender: the highest sequence number accepted and a bitmap of the
/// 64 numbers at and below it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    top: u64,
    // Bit i set = sequence number top - i was accepted.
    bitmap: u64,
    seen: bool,
}

impl ReplayWindow {
    /// An empty window: the first sequence number from a sender is accepted, whatever it is.
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            top: 0,
            bitmap: 0,
            seen: false,
        }
    }

    /// The highest sequence number accepted so far, if any.
    pub fn top(&self) -> Option<u64> {
        self.seen.then_some(self.top)
    }

    /// True if `seq` would be accepted: new, and not older than the window.
    pub fn check(&self, seq: u64) -> bool {
        if !self.seen || seq > self.top {
            return true;
        }
        let behind = self.top - seq;
        behind < REPLAY_WINDOW && self.bitmap & (1 << behind) == 0
    }

    /// Records `seq` as accepted; call only after `check` passed and the packet authenticated,
    /// so a forged packet can never move the window.
    pub fn accept(&mut self, seq: u64) {
        if !self.seen {
            self.seen = true;
            self.top = seq;
            self.bitmap = 1;
        } else if seq > self.top {
            let shift = seq - self.top;
            self.bitmap = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.bitmap << shift
            };
            self.bitmap |= 1;
            self.top = seq;
        } else {
            let behind = self.top - seq;
            if behind < REPLAY_WINDOW {
                self.bitmap |= 1 << behind;
            }
        }
    }

    /// `check`, then `accept` if it passed; returns whether `seq` was new.
    pub fn check_and_accept(&mut self, seq: u64) -> bool {
        let ok = self.check(seq);
        if ok {
            self.accept(seq);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_key_rejected() {
        assert_eq!(SyncKey::from_bytes(b"").unwrap_err(), KeyError::Empty);
    }

    #[test]
    fn tag_is_plain_hmac_sha256() {
        // RFC 4231 test case 2.
        let key = SyncKey::from_bytes(b"Jefe").expect("key");
        let tag = key.tag(b"what do ya want for nothing?");
        assert_eq!(
            tag[..4],
            [0x5b, 0xdc, 0xc1, 0x46],
            "RFC 4231 case 2 starts 5bdcc146"
        );
        assert!(key.verify(b"what do ya want for nothing?", &tag));
        assert!(!key.verify(b"what do ya want for nothing!", &tag));
    }

    #[test]
    fn debug_hides_key() {
        let key = SyncKey::from_bytes(b"hunter2").expect("key");
        assert!(!format!("{key:?}").contains("hunter2"));
    }

    #[test]
    fn replay_exact_duplicate_rejected() {
        let mut w = ReplayWindow::new();
        assert!(w.check_and_accept(100));
        assert!(!w.check_and_accept(100));
    }

    #[test]
    fn replay_reordered_within_window_accepted_once() {
        let mut w = ReplayWindow::new();
        assert!(w.check_and_accept(100));
        assert!(w.check_and_accept(90));
        assert!(!w.check_and_accept(90));
        assert!(w.check_and_accept(37));
        assert!(!w.check(36), "64 behind the top is outside the window");
    }

    #[test]
    fn replay_big_jump_clears_window() {
        let mut w = ReplayWindow::new();
        assert!(w.check_and_accept(1));
        assert!(w.check_and_accept(1000));
        assert!(w.check_and_accept(999));
        assert!(!w.check(1));
        assert_eq!(w.top(), Some(1000));
    }

    #[test]
    fn replay_first_packet_any_sequence() {
        assert!(ReplayWindow::new().check(0));
        assert!(ReplayWindow::new().check(u64::MAX));
    }
}
