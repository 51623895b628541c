//! The longest single insert into the bookkeeping of keys in flight between cluster nodes
//! (`opt_core::expiring::ExpiringMap`), which the module updates on the main thread: N
//! entries of 200 bytes (335,000 reach the 64 MiB bound of held tags), then the same keys
//! three times again (before the twenty-third stop, this piled up old order lines until a
//! compaction walked them all). A pure timing of the structure, without a server.
//!
//! Run: `cargo run --release -p redis-opt-benches --bin expiring_stall [N]`

use std::time::{Duration, Instant};

use opt_core::expiring::ExpiringMap;

/// Inserts each of `n` keys once at `t0`; returns the longest insert and how many took over
/// a millisecond.
fn insert_all(m: &mut ExpiringMap<[u8; 64]>, n: u64, t0: Instant) -> (Duration, usize) {
    let mut longest = Duration::ZERO;
    let mut over = 0;
    for i in 0..n {
        let key = format!("user:{i}:profile:cache").into_bytes();
        let start = Instant::now();
        m.insert(0, &key, [0u8; 64], t0, 200);
        let took = start.elapsed();
        longest = longest.max(took);
        over += usize::from(took > Duration::from_millis(1));
    }
    (longest, over)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(335_000);
    let mut m = ExpiringMap::new();
    let t0 = Instant::now();
    let (longest, over) = insert_all(&mut m, n, t0);
    println!("{n} inserts: longest {longest:?}, {over} over 1 ms");
    let mut longest = Duration::ZERO;
    let mut over = 0;
    for _ in 0..3 {
        let (l, o) = insert_all(&mut m, n, t0);
        longest = longest.max(l);
        over += o;
    }
    println!("3 x {n} inserts of the same keys: longest {longest:?}, {over} over 1 ms");
}
