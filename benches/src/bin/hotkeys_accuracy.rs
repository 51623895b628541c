//! Accuracy of the hot-key tracker on Zipf traffic, against ground truth counted here.
//!
//! For each Zipf exponent: 1,000,000 accesses over 100,000 distinct keys go through
//! `HotKeyTracker` exactly as the module feeds it (at the default capacity), optionally
//! sampled the way the module samples at ratio N: every access during slices, none during
//! random gaps that average N - 1 slices (traffic of 1M ops/s: a 10 ms slice holds 10,000
//! accesses), with counts scaled by all accesses over the ones seen. Ratio 100 is what the
//! default (auto, 5,000 commands a second) comes to at about 500,000 commands a second. Prints whether the top 10 equals
//! the true top 10, top-100 recall, the worst relative error of the top 10's counts, and the
//! tracker's memory. Run: `cargo run --release -p redis-opt-benches --bin hotkeys_accuracy`.

use std::collections::HashMap;

use opt_core::config::{idx, ConfigKind, CONFIGS};
use opt_core::hotkeys::{HotKeyTracker, HotKeysQuery, KindFilter, Window};
use opt_core::sketch::Kind;
use redis_opt_benches::{key_name, Rng, Zipf};

const KEYS: usize = 100_000;
const ACCESSES: usize = 1_000_000;

fn default_capacity() -> usize {
    match CONFIGS[idx::HOTKEYS_CAPACITY].kind {
        ConfigKind::Int { default, .. } => default as usize,
        _ => 1024,
    }
}

fn main() {
    let capacity = default_capacity();
    println!(
        "{ACCESSES} accesses, {KEYS} distinct keys, capacity {capacity} (opt.hotkeys-capacity default)"
    );
    println!(
        "{:>8} {:>6} {:>10} {:>14} {:>20} {:>12}",
        "exponent", "ratio", "top10 ok", "top100 recall", "top10 max rel err", "memory KiB"
    );
    for exponent in [0.9, 1.0, 1.2] {
        for ratio in [1u64, 10, 100] {
            run(exponent, ratio, capacity);
        }
    }
}

fn run(exponent: f64, ratio: u64, capacity: usize) {
    let zipf = Zipf::new(KEYS, exponent);
    let mut rng = Rng::new(42);
    let mut sampler = Rng::new(7);
    let names: Vec<String> = (0..KEYS).map(key_name).collect();
    let mut truth: HashMap<usize, u64> = HashMap::new();
    let mut tracker = HotKeyTracker::new(capacity, 60_000, b":", 0);
    const SLICE: u64 = 10_000;
    let mut on = true;
    let mut left = SLICE;
    let mut seen = 0u64;
    for _ in 0..ACCESSES {
        let rank = zipf.sample(&mut rng);
        *truth.entry(rank).or_default() += 1;
        if ratio == 1 || on {
            tracker.record(names[rank].as_bytes(), Kind::Read);
            seen += 1;
        }
        left = left.saturating_sub(1);
        if left == 0 {
            on = !on;
            left = if on {
                SLICE
            } else {
                // Exponential gap with a mean of ratio - 1 slices.
                let u = ((sampler.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                ((-u.ln() * (ratio - 1) as f64 * SLICE as f64) as u64).max(1)
            };
        }
    }
    tracker.observe(seen, ACCESSES as u64);
    let mut true_order: Vec<(usize, u64)> = truth.into_iter().collect();
    true_order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let q = HotKeysQuery {
        count: 100,
        kind: KindFilter::All,
        window: Window::Total,
        namespaces: false,
    };
    let report = tracker.query(&q, 1_000, ratio);
    let got: Vec<&str> = report.entries.iter().map(|e| e.name.as_str()).collect();
    let want: Vec<&str> = true_order
        .iter()
        .take(100)
        .map(|(r, _)| names[*r].as_str())
        .collect();
    // Top-10 equality as sets: ties in the truth may be listed in either order.
    let top10_ok = {
        let mut a = got[..10.min(got.len())].to_vec();
        let mut b = want[..10].to_vec();
        a.sort();
        b.sort();
        a == b
    };
    let recall = want.iter().filter(|k| got.contains(k)).count() as f64 / want.len() as f64;
    let max_rel = true_order
        .iter()
        .take(10)
        .map(|(r, t)| {
            let est = report
                .entries
                .iter()
                .find(|e| e.name == names[*r])
                .map_or(0, |e| e.count);
            (est as f64 - *t as f64).abs() / *t as f64
        })
        .fold(0.0, f64::max);
    println!(
        "{:>8.1} {:>6} {:>10} {:>14.3} {:>19.3}% {:>12.0}",
        exponent,
        ratio,
        if top10_ok { "yes" } else { "NO" },
        recall,
        max_rel * 100.0,
        tracker.memory_bytes() as f64 / 1024.0
    );
}
