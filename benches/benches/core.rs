//! Criterion benches of the `opt_core` paths that sit on the server's hot path: the hot-key
//! update (per sampled access), a hot-key query, key-pattern inference (per key), and the command-name lookup
//! of the filter, the tag index's bulk removal after an invalidation, and what a SAMPLES
//! analysis does in its command with the most known big keys allowed. Run: `make bench` or
//! `cargo bench -p redis-opt-benches`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opt_core::hotkeys::{HotKeyTracker, HotKeysQuery, KindFilter, Window};
use opt_core::keyspec::{CommandRow, KeySpecTable};
use opt_core::known_big_keys::{KnownBigKeys, KNOWN_BIG_KEY_BYTES};
use opt_core::pattern::PatternInferrer;
use opt_core::sketch::Kind;
use opt_core::tags::TagIndex;
use redis_opt_benches::{key_name, Rng, Zipf};

/// A Zipf(1.0) stream of key names over 100,000 keys.
fn zipf_keys(n: usize) -> Vec<String> {
    let zipf = Zipf::new(100_000, 1.0);
    let mut rng = Rng::new(1);
    (0..n).map(|_| key_name(zipf.sample(&mut rng))).collect()
}

fn hotkeys_update(c: &mut Criterion) {
    let keys = zipf_keys(1 << 16);
    let mut g = c.benchmark_group("hotkeys");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("record zipf1.0 (per access = time / 65536)", |b| {
        let mut t = HotKeyTracker::new(1024, 60_000, b":", 0);
        b.iter(|| {
            for k in &keys {
                t.record(black_box(k.as_bytes()), Kind::Read);
            }
        })
    });
    let mut rng = Rng::new(3);
    let uniform: Vec<String> = (0..1 << 16)
        .map(|_| format!("key:{}", rng.next_u64() % 100_000))
        .collect();
    g.bench_function(
        "record uniform 100k keys (per access = time / 65536)",
        |b| {
            let mut t = HotKeyTracker::new(1024, 60_000, b":", 0);
            b.iter(|| {
                for k in &uniform {
                    t.record(black_box(k.as_bytes()), Kind::Read);
                }
            })
        },
    );
    g.finish();
}

/// A query of a full tracker: the past windows and the current one each hold 1,024 keys of
/// uniform traffic (the worst case: every slot taken, nothing dominant). OPT.ADVISE asks for
/// two such reports, and an `optctl` scrape asks for OPT.ADVISE.
fn hotkeys_query(c: &mut Criterion) {
    let mut rng = Rng::new(5);
    let mut t = HotKeyTracker::new(1024, 60_000, b":", 0);
    // One window, then the next one (the first is then both the past and the previous).
    for window in 0..2 {
        if window == 1 {
            t.tick(61_000, 0);
        }
        for _ in 0..300_000 {
            let kind = if rng.next_u64().is_multiple_of(3) {
                Kind::Write
            } else {
                Kind::Read
            };
            t.record(format!("key:{}", rng.next_u64() % 100_000).as_bytes(), kind);
        }
    }
    let mut g = c.benchmark_group("hotkeys query, full tracker");
    for (name, kind, window) in [
        ("total top 10", KindFilter::All, Window::Total),
        ("total top 10 misses", KindFilter::Miss, Window::Total),
        ("recent top 10", KindFilter::All, Window::Recent),
    ] {
        let q = HotKeysQuery {
            count: 10,
            kind,
            window,
            namespaces: false,
        };
        g.bench_function(name, |b| b.iter(|| t.query(black_box(&q), 62_000, 1)));
    }
    g.finish();
}

/// The end of a window (once a minute by default): the window's summaries are merged into
/// the past ones, on the main thread, from the module's timer.
fn hotkeys_window_end(c: &mut Criterion) {
    let mut g = c.benchmark_group("hotkeys window end");
    g.sample_size(20);
    for capacity in [1024, 4096, 8192, 16_384] {
        let mut rng = Rng::new(6);
        let mut t = HotKeyTracker::new(capacity, 60_000, b":", 0);
        for window in 0..2u64 {
            if window == 1 {
                t.tick(61_000, 0);
            }
            for _ in 0..capacity * 200 {
                let key = format!("key:{}", rng.next_u64() % (capacity as u64 * 50));
                t.record(key.as_bytes(), Kind::Read);
            }
        }
        g.bench_function(format!("capacity {capacity}"), |b| {
            b.iter_batched(
                || t.clone(),
                |mut t| {
                    t.tick(122_000, 0);
                    t
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn pattern_inference(c: &mut Criterion) {
    let shapes = [
        "user:{}:profile",
        "session:{}",
        "cache:product:{}",
        "order:ORD-2026-{}",
        "feed:{}:items",
        "report:2026-11-{}:daily",
    ];
    let mut rng = Rng::new(9);
    let keys: Vec<String> = (0..1 << 16)
        .map(|i| {
            let shape = shapes[i % shapes.len()];
            shape.replace("{}", &format!("{:x}", rng.next_u64() % 1_000_000_007))
        })
        .collect();
    let inf = PatternInferrer::default();
    let mut out = Vec::with_capacity(64);
    let mut g = c.benchmark_group("pattern");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("infer (keys/s)", |b| {
        b.iter(|| {
            for k in &keys {
                inf.infer_into(black_box(k.as_bytes()), &mut out);
                black_box(&out);
            }
        })
    });
    g.finish();
}

fn command_lookup(c: &mut Criterion) {
    let rows: Vec<CommandRow> = [
        "get", "set", "hgetall", "mget", "del", "incr", "zadd", "lpush",
    ]
    .iter()
    .map(|n| CommandRow {
        name: n.to_string(),
        flags: vec!["readonly".into()],
        first: 1,
        last: 1,
        step: 1,
        has_subcommands: false,
        key_specs: Vec::new(),
    })
    .collect();
    let t = KeySpecTable::from_rows(&rows);
    c.bench_function("keyspec lookup HGETALL", |b| {
        b.iter(|| t.lookup(black_box(b"HGETALL")))
    });
}

/// What OPT.INVALIDATE runs on the index once its deletion succeeded: every key of a tag
/// leaves the index. 100,000 keys of one tag (as in `tags_bench` section 2), and 100,000 keys
/// with three tags each (two small ones and a shared one), the whole tag `site` invalidated,
/// alone in the index or beside 100,000 keys that stay.
fn tag_bulk_removal(c: &mut Criterion) {
    let mut g = c.benchmark_group("tag index bulk removal (per key = time / 100000)");
    g.sample_size(20);
    let mut one_tag = TagIndex::default();
    let mut three_tags = TagIndex::default();
    for i in 0..100_000 {
        let key = format!("page:{i}");
        one_tag.set_tags(0, key.as_bytes(), &[b"big"]);
        let (user, post) = (format!("user:{}", i % 1000), format!("post:{}", i % 5000));
        three_tags.set_tags(
            0,
            format!("cache:page:{i}").as_bytes(),
            &[user.as_bytes(), post.as_bytes(), b"site"],
        );
    }
    // The same 100k keys, among 100k others that stay (the key table is rebuilt from those).
    let mut half = three_tags.clone();
    for i in 100_000..200_000 {
        let (user, post) = (format!("user:{}", i % 1000), format!("post:{}", i % 5000));
        half.set_tags(
            0,
            format!("cache:page:{i}").as_bytes(),
            &[user.as_bytes(), post.as_bytes(), b"other"],
        );
    }
    g.bench_function("100k keys, three tags each, half the index", |b| {
        b.iter_batched(
            || half.clone(),
            |mut index| black_box(index.remove_keys_with_any(0, &[b"site"])),
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("100k keys, one tag", |b| {
        b.iter_batched(
            || one_tag.clone(),
            |mut index| black_box(index.remove_keys_with_any(0, &[b"big"])),
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("100k keys, three tags each", |b| {
        b.iter_batched(
            || three_tags.clone(),
            |mut index| black_box(index.remove_keys_with_any(0, &[b"site"])),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// What OPT.KEYSPACE SAMPLES does in its command (not in slices) with 10,000 known big keys,
/// the most `opt.keyspace-known-big-keys` allows: the db's names, sorted for the sample's
/// binary searches.
fn known_big_keys_census_start(c: &mut Criterion) {
    let mut known = KnownBigKeys::new();
    for i in 0..10_000u64 {
        let name = format!("leaderboard:{}", i.wrapping_mul(0x9e37_79b9) % 1_000_000);
        known.note(
            0,
            name.as_bytes(),
            KNOWN_BIG_KEY_BYTES + i * 37 % 5_000,
            10_000,
        );
    }
    c.bench_function("known_big_keys: census start, 10,000 names", |b| {
        b.iter(|| {
            let mut names = known.names_in(0);
            names.sort_unstable();
            black_box(names)
        })
    });
}

criterion_group!(
    benches,
    known_big_keys_census_start,
    tag_bulk_removal,
    hotkeys_update,
    hotkeys_query,
    hotkeys_window_end,
    pattern_inference,
    command_lookup
);
criterion_main!(benches);
