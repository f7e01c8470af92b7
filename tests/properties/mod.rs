//! The properties the fuzz targets check, written once and driven twice: by
//! libFuzzer from `fuzz/fuzz_targets/*.rs` (which include this directory by path) and
//! by proptest from `tests/fuzz_properties.rs`, so `cargo test` always runs them even
//! where `cargo fuzz` is not installed.
//!
//! Each `check` panics with a message naming the broken property; it never returns an
//! error. Everything here goes through `sse_gateway::fuzzing` (thin wrappers over the
//! code the gateway runs) or the public `config` module.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod config;
pub mod routes;
pub mod sse;

/// FNV-1a: a stable, dependency-free hash, so a libFuzzer input always makes the
/// same choices (chunk splits, line bound) and a saved crash reproduces.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// xorshift64*: enough randomness to pick split points from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
