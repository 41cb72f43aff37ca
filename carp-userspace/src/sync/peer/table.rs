//! The replicated flow table's type and its fast, seeded hasher for flow ids.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::sync::state::{FlowId, FlowState};

/// A fast hasher for [`FlowId`] keys (the FxHash fold: rotate, xor, multiply).
///
/// std's SipHash guards against hash flooding by untrusted keys; flow ids reach this table only from
/// the dataplane or from authenticated peers, and at a million flows per bulk SipHash was a visible
/// share of the transfer time.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowIdHasher(u64);

impl Hasher for FlowIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Eight bytes at a time: a kernel flow key (40 bytes) is five steps, not forty.
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// Builds [`FlowIdHasher`]s from a per-process random seed, for tables keyed by what traffic chooses
/// (kernel flow keys: the 5-tuple): unlike a fixed seed, colliding keys cannot be computed in advance.
#[derive(Clone, Copy, Debug)]
pub struct SeededFlowHash(u64);

impl Default for SeededFlowHash {
    fn default() -> Self {
        use std::hash::BuildHasher;
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        SeededFlowHash(
            *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u64)),
        )
    }
}

impl std::hash::BuildHasher for SeededFlowHash {
    type Hasher = FlowIdHasher;

    fn build_hasher(&self) -> FlowIdHasher {
        FlowIdHasher(self.0)
    }
}

/// The replicated flow table: every flow this node knows, local and learned, by id.
pub type FlowTable = HashMap<FlowId, FlowState, BuildHasherDefault<FlowIdHasher>>;
