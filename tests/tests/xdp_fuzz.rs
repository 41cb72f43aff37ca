//! The XDP advert intake fuzzed against its userspace twin in the kernel (issue #16 item 19): the
//! seed corpus, the kept regressions (`fuzz/regressions/advert`, `fuzz/regressions/xdp_verdict`) and
//! deterministic mutations of good vhid-1 adverts (bytes flipped, fields set to edge values, frames
//! cut or extended) go through the program carpd runs (BPF_PROG_TEST_RUN) and `receive_frame`;
//! `carp_tests::xdp_oracle` says what they must agree on. Needs root.
use carp_tests::{
    frames::{advert_v4, advert_v6, carp_header},
    require_root,
    xdp_oracle::Oracle,
};
use std::path::Path;

/// Mutations per good advert.
const MUTATIONS: usize = 3000;

fn corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "bin") {
                out.push(std::fs::read(e.path()).expect("corpus file"));
            }
        }
    }
    out
}

/// xorshift64: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, good: &[u8]) -> Vec<u8> {
    let mut f = good.to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(6) {
            0 => {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(f.len());
                f[i] = [0, 1, 0x21, 0x45, 0x60, 112, 254, 255][rng.below(8)];
            }
            2 => f.truncate(14 + rng.below(f.len().saturating_sub(14) + 1)),
            3 => f.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
            // The fields the checks look at: TTL/hop limit, lengths, IHL, protocol, version.
            4 => {
                let v6 = f.get(12..14) == Some(&[0x86, 0xdd]);
                let (off, vals): (usize, &[u8]) = if v6 {
                    (
                        [14 + 7, 14 + 4, 14 + 5, 14 + 6][rng.below(4)],
                        &[0, 36, 35, 255, 254, 112],
                    )
                } else {
                    (
                        [14, 14 + 2, 14 + 3, 14 + 8, 14 + 9, 14 + 6][rng.below(6)],
                        &[0x46, 0x44, 0x4f, 0, 56, 55, 255, 254, 112, 0x20],
                    )
                };
                if off < f.len() {
                    f[off] = vals[rng.below(vals.len())];
                }
            }
            _ => {
                let i = rng.below(f.len());
                f[i] = rng.next() as u8;
            }
        }
    }
    f
}

#[test]
fn xdp_intake_agrees_with_the_userspace_checks() {
    if !require_root("xdp_intake_agrees_with_the_userspace_checks") {
        return;
    }
    let mut oracle = Oracle::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut frames = corpus(&root.join("seeds/advert"));
    frames.extend(corpus(&root.join("regressions/advert")));
    frames.extend(corpus(&root.join("regressions/xdp_verdict")));
    let goods = [
        advert_v4(
            [10, 0, 0, 12],
            1,
            255,
            &carp_header(0x21, 1, 100, 1, 0),
            None,
        ),
        advert_v4(
            [10, 0, 0, 12],
            1,
            255,
            &carp_header(0x21, 1, 0, 0, 3),
            Some(5),
        ),
        advert_v6([0xfe; 16], 1, 255, &carp_header(0x21, 1, 7, 1, 0)),
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for good in &goods {
        frames.push(good.clone());
        for _ in 0..MUTATIONS {
            frames.push(mutate(&mut rng, good));
        }
    }
    let failures: Vec<String> = frames
        .iter()
        .filter_map(|f| oracle.check(f).err())
        .take(5)
        .collect();
    assert!(
        failures.is_empty(),
        "XDP and userspace disagree:\n{}",
        failures.join("\n")
    );
}
