//! Criterion benches of the pure-Rust paths in `opt_core` that sit on the server's hot path.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn config_lookup(c: &mut Criterion) {
    c.bench_function("config::find", |b| {
        b.iter(|| opt_core::config::find(black_box("opt.hotkeys-sample-ratio")))
    });
}

criterion_group!(benches, config_lookup);
criterion_main!(benches);
