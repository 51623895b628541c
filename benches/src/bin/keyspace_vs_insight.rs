//! OPT.KEYSPACE against the method of RedisInsight's database analysis, on the same server in
//! the same run: how long each takes, how close each comes to the exact figures (FULL), and
//! what each can tell apart.
//!
//! RedisInsight's analysis (api/src/modules/database-analysis: keys-scanner.ts and
//! database-analyzer.ts, read for this bench) SCANs from cursor 0 with COUNT 2000 until it has
//! asked for 10,000 keys per node, then pipelines `MEMORY USAGE key SAMPLES 0`, `TYPE` and `TTL`
//! for each key and a length command per key (STRLEN, HLEN, LLEN, SCARD, ZCARD, XLEN). It groups
//! keys by namespace, the bytes before the first delimiter (`user:1:feed` and `user:1:profile`
//! are both `user`; a key without the delimiter is in no namespace), and its page multiplies
//! the sample's sums by the database's keys over the keys analysed ("extrapolate results").
//! The bench sends those same commands from Rust, so its time is a floor for RedisInsight's
//! (no JavaScript, no HTTP, no GUI).
//!
//! Data: KEYS keys (default 1,000,000) of an application's shapes: four patterns under `user:`
//! (profile hashes, session tokens with TTLs, feed lists, settings strings), products and their
//! reviews, orders, rate counters and job results. SERVERS servers (default 3) are loaded one
//! after the other: Redis seeds its hash function at start, so each server orders its keys
//! differently and RedisInsight's sample (the first keys SCAN returns, the same keys on every
//! run against one server) differs between servers only.
//!
//! Each server first gets 10 runs of SAMPLES 10000, then FULL (the exact figures), then the
//! compared runs: by then the module remembers the big keys FULL measured
//! (`opt.keyspace-known-big-keys`) and SAMPLES measures them whole.
//!
//! Run: `cargo build --release -p redis-opt-module && cargo run --release -p redis-opt-benches
//! --bin keyspace_vs_insight [KEYS] [SERVERS]`.

use std::collections::BTreeMap;
use std::time::Instant;

use opt_core::report::KeyspaceReport;
use opt_harness::redis;
use opt_harness::Server;
use redis_opt_benches::{percentile, Rng};

/// OPT.KEYSPACE SAMPLES runs per server, each compared with FULL.
const SAMPLE_RUNS: usize = 20;
/// RedisInsight's keys asked for per node, and its SCAN COUNT.
const INSIGHT_KEYS: usize = 10_000;
const INSIGHT_SCAN_COUNT: usize = 2_000;
/// Big sorted sets among the keys, and the top keys by bytes compared.
const BIG_KEYS: usize = 20;
const TOP: usize = 15;
/// SAMPLES runs before FULL on each server.
const COLD_RUNS: usize = 10;

fn load(server: &Server, keys: usize) {
    let mut c = server.conn();
    let mut rng = Rng::new(7);
    let mut p = redis::pipe();
    let item = "i".repeat(40);
    for i in 0..keys {
        let r = rng.next_u64();
        match i % 20 {
            0..=3 => {
                p.cmd("HSET")
                    .arg(format!("user:{i}:profile"))
                    .arg(&[
                        "name",
                        "someone",
                        "email",
                        "someone@example.com",
                        "plan",
                        "pro",
                        "lang",
                        "en",
                    ])
                    .ignore();
            }
            4..=5 => {
                p.cmd("SET")
                    .arg(format!("user:{i}:session"))
                    .arg(format!("{r:032x}"))
                    .arg("EX")
                    .arg(3600 + r % 7200)
                    .ignore();
            }
            6 => {
                let n = 10 + (r % 40) as usize;
                p.cmd("RPUSH")
                    .arg(format!("user:{i}:feed"))
                    .arg(vec![item.as_str(); n])
                    .ignore();
            }
            7..=8 => {
                p.cmd("SET")
                    .arg(format!("user:{i}:settings"))
                    .arg(r#"{"theme":"dark","notify":true,"tz":"Europe/Paris"}"#)
                    .ignore();
            }
            9..=12 => {
                p.cmd("SET")
                    .arg(format!("product:{i}"))
                    .arg("p".repeat(200 + (r % 300) as usize))
                    .ignore();
            }
            13 => {
                let mut z = p.cmd("ZADD");
                z = z.arg(format!("product:{i}:reviews"));
                for m in 0..8 {
                    z = z.arg(m).arg(format!("review:{}", r % 100_000 + m));
                }
                z.ignore();
            }
            14..=16 => {
                p.cmd("HSET")
                    .arg(format!("order:{r:016x}"))
                    .arg(&[
                        "user",
                        "12345",
                        "total",
                        "99.90",
                        "state",
                        "paid",
                        "items",
                        "3",
                        "created",
                        "2026-11-29",
                        "carrier",
                        "dhl",
                    ])
                    .ignore();
            }
            17..=18 => {
                p.cmd("SET")
                    .arg(format!(
                        "rate:10.{}.{}.{}:{}",
                        r % 256,
                        (r >> 8) % 256,
                        (r >> 16) % 256,
                        i
                    ))
                    .arg(r % 100)
                    .arg("EX")
                    .arg(60)
                    .ignore();
            }
            _ => {
                p.cmd("SET")
                    .arg(format!("job:{i}:result"))
                    .arg("r".repeat(100))
                    .arg("EX")
                    .arg(86_400)
                    .ignore();
            }
        }
        if i % 10_000 == 9_999 {
            let _: () = p.query(&mut c).expect("load");
            p = redis::pipe();
        }
    }
    if !keys.is_multiple_of(10_000) {
        let _: () = p.query(&mut c).expect("load");
    }
    // The big keys a user wants found: BIG_KEYS leaderboards of 10,000 to 29,000 members.
    for b in 0..BIG_KEYS {
        let members = 10_000 + 1_000 * b;
        for start in (0..members).step_by(1_000) {
            let mut z = redis::cmd("ZADD");
            z.arg(format!("leaderboard:{b}"));
            for m in start..start + 1_000 {
                z.arg(m).arg(format!("player:{m}"));
            }
            let _: () = z.query(&mut c).expect("load a leaderboard");
        }
    }
}

/// The namespace RedisInsight puts a name or a pattern in: what comes before the first `:`.
fn namespace(name: &str) -> Option<&str> {
    name.find(':').map(|i| &name[..i])
}

/// What RedisInsight's analysis finds: bytes by namespace, extrapolated, and its wall time.
struct InsightResult {
    bytes: BTreeMap<String, f64>,
    /// Its top keys by bytes (of the sample).
    top: Vec<String>,
    analysed: usize,
    ms: f64,
}

/// RedisInsight's analysis of one node, its commands sent from Rust.
fn insight_analysis(c: &mut redis::Connection) -> InsightResult {
    let t = Instant::now();
    let total: u64 = redis::cmd("DBSIZE").query(c).expect("DBSIZE");
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let (mut scanned, mut cursor) = (0, None);
    while scanned < INSIGHT_KEYS && cursor != Some(0u64) {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor.unwrap_or(0))
            .arg("COUNT")
            .arg(INSIGHT_SCAN_COUNT)
            .arg("MATCH")
            .arg("*")
            .query(c)
            .expect("SCAN");
        cursor = Some(next);
        scanned += INSIGHT_SCAN_COUNT;
        keys.extend(batch);
    }
    let query = |c: &mut redis::Connection, f: &dyn Fn(&mut redis::Pipeline, &[u8])| {
        let mut p = redis::pipe();
        for k in &keys {
            f(&mut p, k);
        }
        p.query::<Vec<redis::Value>>(c).expect("pipeline")
    };
    let sizes = query(c, &|p, k| {
        p.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
    });
    let types = query(c, &|p, k| {
        p.cmd("TYPE").arg(k);
    });
    let _ttls = query(c, &|p, k| {
        p.cmd("TTL").arg(k);
    });
    let type_names: Vec<String> = types
        .iter()
        .map(|v| redis::from_redis_value(v.clone()).unwrap_or_default())
        .collect();
    let mut p = redis::pipe();
    for (k, t) in keys.iter().zip(&type_names) {
        let length = match t.as_str() {
            "string" => "STRLEN",
            "hash" => "HLEN",
            "list" => "LLEN",
            "set" => "SCARD",
            "zset" => "ZCARD",
            "stream" => "XLEN",
            _ => "EXISTS",
        };
        p.cmd(length).arg(k);
    }
    let _lengths: Vec<redis::Value> = p.query(c).expect("lengths");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let scale = total as f64 / keys.len().max(1) as f64;
    let mut bytes = BTreeMap::new();
    let mut by_size = Vec::new();
    for (k, size) in keys.iter().zip(&sizes) {
        let size: u64 = redis::from_redis_value(size.clone()).unwrap_or(0);
        let name = String::from_utf8_lossy(k).into_owned();
        if let Some(ns) = namespace(&name) {
            *bytes.entry(ns.to_string()).or_insert(0.0) += size as f64 * scale;
        }
        by_size.push((size, name));
    }
    by_size.sort_by(|a, b| b.cmp(a));
    InsightResult {
        bytes,
        top: by_size.into_iter().take(TOP).map(|(_, n)| n).collect(),
        analysed: keys.len(),
        ms,
    }
}

/// A report's bytes summed by namespace.
fn by_namespace(r: &KeyspaceReport) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for p in &r.patterns {
        if let Some(ns) = namespace(&p.pattern) {
            *out.entry(ns.to_string()).or_insert(0.0) += p.bytes as f64;
        }
    }
    out
}

fn keyspace(c: &mut redis::Connection, mode: &[&str]) -> (KeyspaceReport, f64) {
    let t = Instant::now();
    let text: String = redis::cmd("OPT.KEYSPACE")
        .arg(mode)
        .arg("TOP")
        .arg(TOP)
        .arg("FORMAT")
        .arg("JSON")
        .query(c)
        .expect("OPT.KEYSPACE");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    (serde_json::from_str(&text).expect("a keyspace report"), ms)
}

/// The share of the true top keys by bytes that `found` names.
fn top_recall(found: &[String], truth: &KeyspaceReport) -> f64 {
    let want: Vec<&String> = truth.top_by_bytes.iter().map(|k| &k.key).collect();
    want.iter().filter(|k| found.contains(k)).count() as f64 / want.len().max(1) as f64
}

/// The worst relative error (%) over the namespaces holding at least 5% of the memory.
fn worst_error(
    estimate: &BTreeMap<String, f64>,
    truth: &BTreeMap<String, f64>,
    total: f64,
) -> (f64, String) {
    truth
        .iter()
        .filter(|(_, &b)| b >= 0.05 * total)
        .map(|(ns, &b)| {
            let e = estimate.get(ns).copied().unwrap_or(0.0);
            (100.0 * (e - b).abs() / b, ns.clone())
        })
        .fold((0.0, String::new()), |a, b| if b.0 > a.0 { b } else { a })
}

/// `opt.keyspace-big-key-watch` at `WATCH_RATE` keys a second (default 10,000): on one more
/// server, how long after the load the walk knows every big key without any analysis, and
/// what it cost the main thread.
fn watch(keys: usize) {
    let rate: u64 = std::env::var("WATCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let server = Server::with_config(&[&format!("opt.keyspace-big-key-watch {rate}")]);
    let started = Instant::now();
    load(&server, keys);
    let loaded = started.elapsed();
    let mut c = server.conn();
    let info = |c: &mut redis::Connection, f: &str| opt_harness::info_int(c, "opt", f);
    let mut found_after = None;
    while started.elapsed().as_secs() < 600 {
        if info(&mut c, "opt_keyspace_known_big_keys") >= BIG_KEYS as i64 {
            found_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let wall = started.elapsed().as_secs_f64();
    let busy_us = info(&mut c, "opt_keyspace_big_key_watch_us");
    let (s, _) = keyspace(&mut c, &["SAMPLES", "10000"]);
    println!(
        "\nthe background walk at {rate} keys/s: loaded in {:.1} s; all {BIG_KEYS} big keys known {} after the start ({} keys looked at, {} sized, {} rounds); main thread busy {:.0} us a second ({:.2}% of a core); then SAMPLES 10000 measured {} whole",
        loaded.as_secs_f64(),
        found_after.map_or("never (600 s)".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
        info(&mut c, "opt_keyspace_big_key_watch_keys"),
        info(&mut c, "opt_keyspace_big_key_watch_sized"),
        info(&mut c, "opt_keyspace_big_key_watch_rounds"),
        busy_us as f64 / wall,
        busy_us as f64 / wall / 1e4,
        s.big_keys_measured_whole,
    );
}

fn main() {
    redis_opt_benches::use_release_module();
    let mut args = std::env::args().skip(1);
    let keys: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let servers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let (mut insight_ms, mut samples_ms, mut full_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut insight_worst, mut samples_worst) = (Vec::new(), Vec::new());
    let (mut insight_recall, mut samples_recall) = (Vec::new(), Vec::new());
    for s in 0..servers {
        let server = Server::start();
        load(&server, keys);
        let mut c = server.conn();
        // SAMPLES before any FULL: the module knows no big key yet, and learns those its
        // samples hit (`opt.keyspace-known-big-keys`).
        let cold: Vec<(KeyspaceReport, i64)> = (0..COLD_RUNS)
            .map(|_| {
                let r = keyspace(&mut c, &["SAMPLES", "10000"]).0;
                let known = opt_harness::info_int(&mut c, "opt", "opt_keyspace_known_big_keys");
                (r, known)
            })
            .collect();
        let (full, ms) = keyspace(&mut c, &["FULL"]);
        full_ms.push(ms);
        let truth = by_namespace(&full);
        let total = full.total_bytes as f64;
        println!(
            "\nserver {}: {} keys, {:.1} MB by FULL in {:.0} ms",
            s + 1,
            full.keys_scanned,
            total / 1e6,
            ms
        );
        println!(
            "SAMPLES 10000 before any FULL (run: worst namespace error, big keys known after it):"
        );
        for (i, (r, known)) in cold.iter().enumerate() {
            let (e, ns) = worst_error(&by_namespace(r), &truth, total);
            println!("  run {:>2}: {:>7.2}% ({ns}), {known} known", i + 1, e);
        }
        // RedisInsight's sample is the first keys SCAN returns: the same on every run here.
        let insight: Vec<InsightResult> = (0..3).map(|_| insight_analysis(&mut c)).collect();
        let same = insight.windows(2).all(|w| w[0].bytes == w[1].bytes);
        insight_ms.extend(insight.iter().map(|r| r.ms));
        let (ri_err, ri_ns) = worst_error(&insight[0].bytes, &truth, total);
        insight_worst.push(ri_err);
        let mut runs = Vec::new();
        for _ in 0..SAMPLE_RUNS {
            let (r, ms) = keyspace(&mut c, &["SAMPLES", "10000"]);
            samples_ms.push(ms);
            runs.push(r);
        }
        let errors: Vec<(f64, String)> = runs
            .iter()
            .map(|r| worst_error(&by_namespace(r), &truth, total))
            .collect();
        let mut worst_each: Vec<f64> = errors.iter().map(|e| e.0).collect();
        let ri_recall = top_recall(&insight[0].top, &full);
        let mut our_recall: Vec<f64> = runs
            .iter()
            .map(|r| {
                let names: Vec<String> = r.top_by_bytes.iter().map(|k| k.key.clone()).collect();
                top_recall(&names, &full)
            })
            .collect();
        insight_recall.push(ri_recall);
        samples_recall.extend(our_recall.iter().copied());
        samples_worst.extend(worst_each.iter().copied());
        println!(
            "{:<10} {:>8} {:>14} {:>20} {:>26}",
            "namespace", "share", "FULL bytes", "RedisInsight error", "SAMPLES 10000 error, mean"
        );
        for (ns, &b) in truth.iter().filter(|(_, &b)| b >= 0.05 * total) {
            let ri = insight[0].bytes.get(ns).copied().unwrap_or(0.0);
            let ours: f64 = runs
                .iter()
                .map(|r| {
                    let e = by_namespace(r).get(ns).copied().unwrap_or(0.0);
                    100.0 * (e - b).abs() / b
                })
                .sum::<f64>()
                / runs.len() as f64;
            println!(
                "{:<10} {:>7.1}% {:>14.0} {:>+19.2}% {:>25.2}%",
                ns,
                100.0 * b / total,
                b,
                100.0 * (ri - b) / b,
                ours
            );
        }
        println!(
            "RedisInsight: {} keys analysed, worst namespace error {:.2}% ({}), the same figures on all 3 runs: {}",
            insight[0].analysed, ri_err, ri_ns, same
        );
        println!(
            "top {TOP} keys by bytes found: RedisInsight {:.0}%, SAMPLES 10000 median {:.0}% (worst {:.0}%), FULL 100%",
            100.0 * ri_recall,
            100.0 * percentile(&mut our_recall, 0.5),
            100.0 * percentile(&mut our_recall, 0.0),
        );
        println!(
            "SAMPLES 10000: worst namespace error per run median {:.2}%, worst {:.2}% over {} runs",
            percentile(&mut worst_each, 0.5),
            percentile(&mut worst_each, 1.0),
            runs.len()
        );
        // What only the patterns show: the namespace `user` split by what its keys hold.
        println!("patterns under user: (FULL), which RedisInsight shows as one namespace:");
        for p in full
            .patterns
            .iter()
            .filter(|p| p.pattern.starts_with("user:"))
        {
            println!(
                "  {:<22} {:>8} keys {:>6.1}% of memory",
                p.pattern,
                p.keys,
                100.0 * p.share
            );
        }
    }
    println!(
        "\nover {servers} servers: RedisInsight's method {:.0} ms median ({:.0} to {:.0}); OPT.KEYSPACE SAMPLES 10000 {:.0} ms median ({:.0} to {:.0}); FULL {:.0} ms median",
        percentile(&mut insight_ms, 0.5),
        percentile(&mut insight_ms, 0.0),
        percentile(&mut insight_ms, 1.0),
        percentile(&mut samples_ms, 0.5),
        percentile(&mut samples_ms, 0.0),
        percentile(&mut samples_ms, 1.0),
        percentile(&mut full_ms, 0.5),
    );
    println!(
        "worst namespace error (namespaces >= 5% of memory): RedisInsight per server {:?}; SAMPLES 10000 per run median {:.2}%, worst {:.2}% over {} runs",
        insight_worst
            .iter()
            .map(|e| format!("{e:.2}%"))
            .collect::<Vec<_>>(),
        percentile(&mut samples_worst, 0.5),
        percentile(&mut samples_worst, 1.0),
        samples_worst.len()
    );
    watch(keys);
    println!(
        "top {TOP} keys by bytes found: RedisInsight per server {:?}; SAMPLES 10000 median {:.0}%, worst {:.0}%; FULL 100%",
        insight_recall
            .iter()
            .map(|r| format!("{:.0}%", 100.0 * r))
            .collect::<Vec<_>>(),
        100.0 * percentile(&mut samples_recall, 0.5),
        100.0 * percentile(&mut samples_recall, 0.0),
    );
}
