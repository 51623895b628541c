//! OPT.KEYSPACE against `redis-cli --memkeys` and `--bigkeys` (and `--keystats` where
//! redis-cli has it), on the same server in the same run, plus the latency other clients see while FULL runs and
//! how close SAMPLES 10000 comes to FULL.
//!
//! Data: 1,000,000 keys of mixed types and patterns (strings of several sizes, small hashes,
//! sets, sorted sets and lists, some with TTLs).
//! Run: `cargo build --release -p redis-opt-module && cargo run --release -p redis-opt-benches --bin keyspace_bench`.

use std::process::Command;
use std::time::{Duration, Instant};

use opt_core::report::KeyspaceReport;
use opt_harness::redis;
use opt_harness::{Server, ServerOptions};
use redis_opt_benches::{percentile, probe_while};

const KEYS: usize = 1_000_000;
/// Runs of SAMPLES 10000, each compared with FULL (`KEYSPACE_BENCH_SAMPLE_RUNS` overrides it,
/// to measure how often a run misses 5%).
const SAMPLE_RUNS: usize = 20;

fn load(server: &Server) {
    let mut c = server.conn();
    let mut p = redis::pipe();
    let blob = "x".repeat(300);
    for i in 0..KEYS {
        match i % 20 {
            0..=7 => {
                p.cmd("SET")
                    .arg(format!("cache:product:{i}"))
                    .arg(&blob[..100 + i % 200])
                    .ignore();
            }
            8..=11 => {
                p.cmd("SET")
                    .arg(format!("session:{:032x}", i * 2_654_435_761))
                    .arg("token")
                    .arg("EX")
                    .arg(3600 + i % 7200)
                    .ignore();
            }
            12..=13 => {
                p.cmd("SET")
                    .arg(format!("counter:views:{i}"))
                    .arg(i)
                    .ignore();
            }
            14..=16 => {
                p.cmd("HSET")
                    .arg(format!("user:{i}:profile"))
                    .arg("name")
                    .arg("someone")
                    .arg("plan")
                    .arg("pro")
                    .arg("email")
                    .arg("a@b.c")
                    .ignore();
            }
            17 => {
                p.cmd("SADD")
                    .arg(format!("tags:post:{i}"))
                    .arg("a")
                    .arg("b")
                    .arg("c")
                    .arg("d")
                    .ignore();
            }
            18 => {
                p.cmd("ZADD")
                    .arg(format!("rank:game:{i}"))
                    .arg(1)
                    .arg("p1")
                    .arg(2)
                    .arg("p2")
                    .ignore();
            }
            _ => {
                p.cmd("RPUSH")
                    .arg(format!("queue:jobs:{i}"))
                    .arg("j1")
                    .arg("j2")
                    .arg("j3")
                    .ignore();
            }
        }
        if i % 10_000 == 9_999 {
            let _: () = p.query(&mut c).unwrap();
            p = redis::pipe();
        }
    }
}

/// Runs `redis-cli` (`REDIS_CLI` picks another: Redis 7.4+'s has `--keystats`) with `flag`
/// against the server and times it; `None` when that redis-cli has no such flag or fails.
fn redis_cli(port: u16, flag: &str) -> Option<Duration> {
    let cli = std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".into());
    let help = Command::new(&cli).arg("--help").output().ok()?;
    if !String::from_utf8_lossy(&help.stdout).contains(flag)
        && !String::from_utf8_lossy(&help.stderr).contains(flag)
    {
        return None;
    }
    let start = Instant::now();
    let out = Command::new(&cli)
        .args(["-p", &port.to_string(), flag])
        .output()
        .ok()?;
    out.status.success().then(|| start.elapsed())
}

fn main() {
    redis_opt_benches::use_release_module();
    // KEYSPACE_BENCH_SLICE_US sets opt.scan-slice-us (default 1000), to see what shorter slices
    // do to the other clients' latency and to FULL's time. KEYSPACE_BENCH_CONFIG adds redis.conf
    // lines, separated by `;` (`rename-command SCAN ""` measures the RandomKey sampling).
    let mut options = ServerOptions::default();
    if let Ok(us) = std::env::var("KEYSPACE_BENCH_SLICE_US") {
        options.config.push(format!("opt.scan-slice-us {us}"));
    }
    if let Ok(lines) = std::env::var("KEYSPACE_BENCH_CONFIG") {
        options
            .config
            .extend(lines.split(';').map(|l| l.trim().to_string()));
    }
    let server = Server::start_with(options);
    let t = Instant::now();
    load(&server);
    let mut c = server.conn();
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    println!("{dbsize} keys loaded in {:.1} s", t.elapsed().as_secs_f64());

    // KEYSPACE_BENCH_NO_CLI=1 skips the redis-cli runs (a minute or more) while working on
    // the module itself; the figures in docs/benchmarks.md come from full runs.
    let with_cli = std::env::var_os("KEYSPACE_BENCH_NO_CLI").is_none();
    let memkeys = with_cli
        .then(|| redis_cli(server.port, "--memkeys"))
        .flatten();
    let keystats = with_cli
        .then(|| redis_cli(server.port, "--keystats"))
        .flatten();
    let bigkeys = with_cli
        .then(|| redis_cli(server.port, "--bigkeys"))
        .flatten();

    // The same probes with nothing else running, to tell this VM's own latency from what the
    // analysis adds; then FULL while another client measures PING and GET latency.
    let (mut idle_ping, mut idle_get) = probe_while(server.port, "cache:product:20", || {
        std::thread::sleep(Duration::from_millis(2500));
    });
    let mut full_wall = Duration::ZERO;
    let mut text = String::new();
    let (mut ping, mut get) = probe_while(server.port, "cache:product:20", || {
        let t = Instant::now();
        text = redis::cmd("OPT.KEYSPACE")
            .arg("FULL")
            .arg("FORMAT")
            .arg("JSON")
            .query(&mut c)
            .unwrap();
        full_wall = t.elapsed();
    });
    let full: KeyspaceReport = serde_json::from_str(&text).unwrap();

    // SAMPLES is random: one run says little about how often it misses. Run it many times.
    let runs = std::env::var("KEYSPACE_BENCH_SAMPLE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SAMPLE_RUNS);
    let mut sample_runs = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let text: String = redis::cmd("OPT.KEYSPACE")
            .arg("SAMPLES")
            .arg(10_000)
            .arg("FORMAT")
            .arg("JSON")
            .query(&mut c)
            .unwrap();
        let wall = t.elapsed();
        let report: KeyspaceReport = serde_json::from_str(&text).unwrap();
        sample_runs.push((wall, report));
    }
    println!(
        "\nOPT.KEYSPACE FULL: {:.2} s ({} keys)",
        full_wall.as_secs_f64(),
        full.keys_scanned
    );
    match memkeys {
        Some(d) => println!(
            "redis-cli --memkeys: {:.2} s -> OPT.KEYSPACE FULL is {:.1}x faster (target >= 10x)",
            d.as_secs_f64(),
            d.as_secs_f64() / full_wall.as_secs_f64()
        ),
        None => println!("redis-cli --memkeys: failed"),
    }
    match bigkeys {
        Some(d) => println!(
            "redis-cli --bigkeys: {:.2} s -> {:.1}x (it reads lengths, not bytes)",
            d.as_secs_f64(),
            d.as_secs_f64() / full_wall.as_secs_f64()
        ),
        None => println!("redis-cli --bigkeys: failed"),
    }
    match keystats {
        Some(d) => println!(
            "redis-cli --keystats: {:.2} s -> {:.1}x",
            d.as_secs_f64(),
            d.as_secs_f64() / full_wall.as_secs_f64()
        ),
        None => println!("redis-cli --keystats: not in this redis-cli (Redis 7.4+)"),
    }
    println!(
        "nothing else running, a client: PING p99 {:.2} ms (max {:.2}), GET p99 {:.2} ms (max {:.2}) over {} probes",
        percentile(&mut idle_ping, 0.99),
        percentile(&mut idle_ping, 1.0),
        percentile(&mut idle_get, 0.99),
        percentile(&mut idle_get, 1.0),
        idle_ping.len(),
    );
    let slice_max = opt_harness::info_int(&mut c, "opt", "opt_keyspace_slice_max_us");
    println!("longest analysis slice (INFO opt): {slice_max} us");
    let probes = ping.len();
    println!(
        "while FULL ran, another client: PING p99 {:.2} ms (max {:.2}), GET p99 {:.2} ms (max {:.2}) over {probes} probes (target <= 2 ms)",
        percentile(&mut ping, 0.99),
        percentile(&mut ping, 1.0),
        percentile(&mut get, 0.99),
        percentile(&mut get, 1.0),
    );
    println!(
        "  PING p50 {:.2} / p90 {:.2} ms, GET p50 {:.2} / p90 {:.2} ms; probes over 1 ms: {:.1}%",
        percentile(&mut ping, 0.5),
        percentile(&mut ping, 0.9),
        percentile(&mut get, 0.5),
        percentile(&mut get, 0.9),
        100.0 * (ping.iter().chain(get.iter()).filter(|&&v| v > 1.0).count() as f64)
            / (2 * probes).max(1) as f64,
    );
    let mut walls: Vec<f64> = sample_runs
        .iter()
        .map(|(w, _)| w.as_secs_f64() * 1e3)
        .collect();
    println!(
        "\nOPT.KEYSPACE SAMPLES 10000, {runs} runs: median {:.0} ms, slowest {:.0} ms (target <= 100 ms); {} more names drawn per run",
        percentile(&mut walls, 0.5),
        percentile(&mut walls, 1.0),
        sample_runs[0].1.names_drawn,
    );
    println!(
        "{:<22} {:>12} {:>11} {:>11} {:>14} {:>14} {:>14} {:>10}",
        "pattern (>= 5% of memory)",
        "FULL bytes",
        "mean error",
        "error sd",
        "median |err|",
        "worst error",
        "runs over 5%",
        "ci95 / bytes"
    );
    let mut worst: f64 = 0.0;
    let mut runs_over = vec![false; sample_runs.len()];
    for p in full.patterns.iter().filter(|p| p.share >= 0.05) {
        let mut errors = Vec::new();
        let mut signed = Vec::new();
        let mut ci = Vec::new();
        for (i, (_, r)) in sample_runs.iter().enumerate() {
            let s = r.patterns.iter().find(|x| x.pattern == p.pattern);
            let sb = s.map_or(0, |x| x.bytes);
            let relative = (sb as f64 - p.bytes as f64) / p.bytes as f64;
            signed.push(relative * 100.0);
            let err = relative.abs();
            runs_over[i] |= err > 0.05;
            errors.push(err * 100.0);
            ci.push(s.map_or(0.0, |x| x.bytes_ci95 as f64 / p.bytes as f64 * 100.0));
        }
        let over = errors.iter().filter(|&&e| e > 5.0).count();
        // A mean far from 0 is a bias; an sd above ci95 / 1.96 is an interval too narrow.
        let n = signed.len().max(1) as f64;
        let mean = signed.iter().sum::<f64>() / n;
        let sd = (signed.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n).sqrt();
        let pattern_worst = percentile(&mut errors, 1.0);
        worst = worst.max(pattern_worst);
        println!(
            "{:<22} {:>12} {:>+10.2}% {:>10.2}% {:>13.2}% {:>13.2}% {:>14} {:>9.2}%",
            p.pattern,
            p.bytes,
            mean,
            sd,
            percentile(&mut errors, 0.5),
            pattern_worst,
            over,
            percentile(&mut ci, 0.5),
        );
    }
    println!(
        "worst per-pattern error over {runs} runs: {:.2}%; runs with a pattern over 5%: {} (target: every pattern <= 5%)",
        worst,
        runs_over.iter().filter(|&&o| o).count()
    );
}
