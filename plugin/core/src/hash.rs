//! The fast hasher of the flow table and of the core's other maps: keyed by socket cookies,
//! cgroup ids, local addresses, listeners, peers and container names.
#![forbid(unsafe_code)]

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

/// A small, fast hasher for the tables' keys. It is NOT resistant to hash flooding, and not all
/// of its keys are the node's to choose: socket cookies and cgroup ids come from the kernel, but
/// a pod chooses the addresses it connects to (the peers' keys: `container:peers`), can give
/// itself addresses in its own network namespace with CAP_NET_ADMIN there (the hosts' keys) and names its containers
/// (the container series' keys). What it can do with crafted keys is limited by the maps' sizes,
/// all bounded (`max_flows`, `max_hosts`, `max_peers_per_container`, the cgroups still in use):
/// longer probes in a bounded map, never a larger map.
/// Per word: rotate, xor, multiply (FxHash's round); at the end a folded 64x64->128 multiply, so
/// the low bits (bucket index) and the high bits (hashbrown's tag) both depend on every input bit.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    const FOLD: u64 = 0x9e_37_79_b9_7f_4a_7c_15;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let m = u128::from(self.0) * u128::from(Self::FOLD);
        (m as u64) ^ ((m >> 64) as u64)
    }
}

/// `BuildHasher` of [`FastHasher`].
pub(crate) type FastState = BuildHasherDefault<FastHasher>;
/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, FastState>;
/// A `HashSet` with [`FastHasher`].
pub type FastSet<K> = HashSet<K, FastState>;
