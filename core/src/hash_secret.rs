//! A random secret per process for the hash tables whose keys clients choose (key names, tag
//! names), as Redis seeds its own dictionaries' SipHash at startup.
//!
//! Why: with a hash anyone can compute, a client can pick names that all land in one bucket
//! (a few million hash evaluations per name offline to fix 20 low bits), and then every insert
//! into that table walks the whole run (quadratic), and one growth of the table re-places
//! them all inside one command. With the secret mixed in, the bucket of a name cannot be
//! predicted outside the server. Digests that two servers compare (OPT.TAGINFO) do not use it.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

static SECRET: AtomicU64 = AtomicU64::new(0);

/// The process's secret: drawn from the OS's randomness (through std's `RandomState`) on
/// first use, never 0, then fixed for the life of the process.
pub fn process_secret() -> u64 {
    let s = SECRET.load(Ordering::Relaxed);
    if s != 0 {
        return s;
    }
    let fresh =
        std::collections::hash_map::RandomState::new().hash_one(0x6f70_745f_7365_6564u64) | 1;
    match SECRET.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => fresh,
        Err(current) => current,
    }
}

/// Mixes a public 64-bit hash with the secret into 32 well-spread bits: a bucket tag. The
/// mixer is a bijection of `hash ^ secret` with full avalanche, so only names whose whole
/// 64-bit hashes collide share a tag for every secret.
pub fn keyed_tag(hash: u64, secret: u64) -> u32 {
    let mut z = hash ^ secret;
    z = (z ^ (z >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    z = (z ^ (z >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    (z ^ (z >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_drawn_once_and_kept() {
        let s = process_secret();
        assert_ne!(s, 0);
        assert_eq!(process_secret(), s);
    }

    /// Hashes that share their low 32 bits (what an attacker aims at when the table used them
    /// directly) spread over the buckets once mixed.
    #[test]
    fn hashes_equal_in_their_low_bits_spread_out() {
        let secret = process_secret();
        let mut buckets = [0u32; 64];
        for i in 0..6400u64 {
            buckets[(keyed_tag((i << 32) | 0x1234, secret) & 63) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (50..=150).contains(&n)),
            "{buckets:?}"
        );
    }
}
