//! Shared helpers for the benches: deterministic random numbers and Zipf-distributed streams.

/// A small deterministic generator (SplitMix64), so every run sees the same stream.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws ranks 0..n with probability proportional to 1 / (rank + 1)^exponent.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A Zipf distribution over `n` items.
    pub fn new(n: usize, exponent: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for r in 0..n {
            sum += 1.0 / ((r + 1) as f64).powf(exponent);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// The key name of rank `rank`, shuffled so that hot keys are not the first ids.
pub fn key_name(rank: usize) -> String {
    let id = (rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    format!("user:{id}:profile")
}

/// Points the harness at the release build of the module (`OPT_MODULE`), unless set already.
pub fn use_release_module() {
    if std::env::var_os("OPT_MODULE").is_none() {
        let so = opt_harness::workspace_root().join("target/release/libredis_opt.so");
        assert!(
            so.exists(),
            "build it first: cargo build --release -p redis-opt-module"
        );
        std::env::set_var("OPT_MODULE", so);
    }
}

/// The truth of a Zipf workload sent by [`zipf_gets`]: each key's true count, hottest first.
pub struct ZipfTruth {
    /// Key names, hottest first (ties by rank).
    pub names: Vec<String>,
    /// Each key's true count.
    pub counts: std::collections::HashMap<String, u64>,
}

/// Writes `keys` keys named by `name` (8-byte values), then sends `accesses` GETs of
/// Zipf-distributed ranks with `exponent` (seed 42, pipelines of 1,000), held to `rate` GETs
/// a second when given, and returns the true counts. `before_traffic` runs between the two
/// (to reset or start the trackers being compared).
pub fn zipf_gets(
    c: &mut opt_harness::redis::Connection,
    keys: usize,
    accesses: usize,
    exponent: f64,
    name: impl Fn(usize) -> String,
    rate: Option<f64>,
    before_traffic: impl FnOnce(&mut opt_harness::redis::Connection),
) -> ZipfTruth {
    use opt_harness::redis;
    for start in (0..keys).step_by(10_000) {
        let mut p = redis::pipe();
        for rank in start..(start + 10_000).min(keys) {
            p.cmd("SET").arg(name(rank)).arg("vvvvvvvv").ignore();
        }
        let _: () = p.query(c).expect("preload");
    }
    before_traffic(c);
    let zipf = Zipf::new(keys, exponent);
    let mut rng = Rng::new(42);
    let mut truth: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    let began = std::time::Instant::now();
    for batch in 0..accesses / 1000 {
        if let Some(rate) = rate {
            let due = std::time::Duration::from_secs_f64(batch as f64 * 1000.0 / rate);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut p = redis::pipe();
        for _ in 0..1000 {
            let rank = zipf.sample(&mut rng);
            *truth.entry(rank).or_default() += 1;
            p.cmd("GET").arg(name(rank)).ignore();
        }
        let _: () = p.query(c).expect("GETs");
    }
    let mut order: Vec<(usize, u64)> = truth.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ZipfTruth {
        names: order.iter().map(|&(r, _)| name(r)).collect(),
        counts: order.iter().map(|&(r, n)| (name(r), n)).collect(),
    }
}

impl ZipfTruth {
    /// Whether the first 10 of `ranked` are the true top 10 (as sets), and the share of the
    /// true top `n` found among the first `n` of `ranked`.
    pub fn agreement(&self, ranked: &[String], n: usize) -> (bool, f64) {
        let top = |v: &[String], n: usize| -> std::collections::HashSet<String> {
            v.iter().take(n).cloned().collect()
        };
        let want = top(&self.names, n);
        let recall = top(ranked, n).intersection(&want).count() as f64 / want.len() as f64;
        (top(ranked, 10) == top(&self.names, 10), recall)
    }

    /// The worst relative error of the first 10 entries' counts.
    pub fn worst_top10_count_error(&self, entries: &[opt_core::report::HotEntry]) -> f64 {
        entries
            .iter()
            .take(10)
            .filter_map(|e| {
                let t = *self.counts.get(&e.name)? as f64;
                Some((e.count as f64 - t).abs() / t)
            })
            .fold(0.0f64, f64::max)
    }
}

/// The 3 tags of entry `i` in the tag benches: one of 1,000 user tags, one of 5,000 post tags,
/// and the site-wide tag.
pub fn bench_tags(i: usize) -> [String; 3] {
    [
        format!("user:{}", i % 1000),
        format!("post:{}", i % 5000),
        "site".to_string(),
    ]
}

/// Queues one tagged write in the layout tag libraries use (Symfony's, Laravel's): the item
/// with its tag list next to the value (`SET key value|t1,t2 [EX ex]`), then one
/// `SADD tag:<t> key` per tag.
pub fn queue_library_write(
    p: &mut opt_harness::redis::Pipeline,
    key: &str,
    value: &str,
    tags: &[String],
    ex: Option<u64>,
) {
    let set = p
        .cmd("SET")
        .arg(key)
        .arg(format!("{value}|{}", tags.join(",")));
    if let Some(ex) = ex {
        set.arg("EX").arg(ex);
    }
    set.ignore();
    for t in tags {
        p.cmd("SADD").arg(format!("tag:{t}")).arg(key).ignore();
    }
}

/// Queues the same write through the module: `OPT.SET key value [EX ex] TAGS t1 t2 ...`.
pub fn queue_opt_set(
    p: &mut opt_harness::redis::Pipeline,
    key: &str,
    value: &str,
    tags: &[String],
    ex: Option<u64>,
) {
    let set = p.cmd("OPT.SET").arg(key).arg(value);
    if let Some(ex) = ex {
        set.arg("EX").arg(ex);
    }
    set.arg("TAGS").arg(tags).ignore();
}

/// The Lua script a tag library runs to flush a tag (`KEYS[1]` is the tag's set): SMEMBERS,
/// UNLINK of the members in chunks of 1,000, DEL of the set; it returns the members named.
pub const LIBRARY_FLUSH: &str = "local m = redis.call('SMEMBERS', KEYS[1]) \
    for i = 1, #m, 1000 do redis.call('UNLINK', unpack(m, i, math.min(i + 999, #m))) end \
    redis.call('DEL', KEYS[1]) return #m";

/// Every key matching `pattern`, walked with SCAN (1,000 buckets a call; a failed call ends
/// the walk).
pub fn scan_keys(c: &mut opt_harness::redis::Connection, pattern: &str) -> Vec<String> {
    let mut cursor = 0u64;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = opt_harness::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(c)
            .unwrap_or((0, Vec::new()));
        out.extend(keys);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

/// The `q` quantile (0 to 1) of `v`, sorting it in place; 0 for an empty slice.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// The round trips (ms) of PING and of `GET get_key` that a second client sees while `work`
/// runs, one pair every 200 µs, starting 200 ms before it.
pub fn probe_while(port: u16, get_key: &str, work: impl FnOnce()) -> (Vec<f64>, Vec<f64>) {
    use opt_harness::redis;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let get_key = get_key.to_string();
    let prober = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|c| c.get_connection())
            .expect("the probing client connects");
        let (mut ping, mut get) = (Vec::new(), Vec::new());
        while !stop2.load(Ordering::Relaxed) {
            let t = Instant::now();
            let _: String = redis::cmd("PING").query(&mut c).expect("PING");
            ping.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let _: Option<String> = redis::cmd("GET").arg(&get_key).query(&mut c).expect("GET");
            get.push(t.elapsed().as_secs_f64() * 1e3);
            std::thread::sleep(Duration::from_micros(200));
        }
        (ping, get)
    });
    std::thread::sleep(Duration::from_millis(200));
    work();
    stop.store(true, Ordering::Relaxed);
    prober.join().expect("the probing thread")
}
