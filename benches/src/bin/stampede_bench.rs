//! Cache-stampede benchmark: 200 concurrent clients read a few hot keys whose values expire
//! every second and take 50 ms to recompute.
//!
//! - Protected: `OPT.FETCH key LOCK 500`; on `recompute` the client computes and writes with
//!   `OPT.SET ... PX 1000 DELTA 50 STALE 5 TOKEN t`; on `wait` it retries after 5 ms; `hit`
//!   and `stale` are served at once.
//! - Baseline: `GET`; on a miss every client computes and `SET ... PX 1000`.
//!
//! It reports recomputations per expiry (every caller that recomputes, divided by the number
//! of times a key was found expired) and the readers' latency (time to get a usable value, for
//! callers that did not compute) during expiries, against steady state (the same clients and
//! keys with a TTL that does not run out during the measurement).
//! Run: `cargo run --release -p redis-opt-benches --bin stampede_bench`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opt_harness::redis::{self, Value};
use opt_harness::{Server, ServerOptions};

const CLIENTS: usize = 200;
const KEYS: usize = 4;
const COMPUTE: Duration = Duration::from_millis(50);
const RUN: Duration = Duration::from_secs(8);

#[derive(Default)]
struct Stats {
    recomputes: AtomicU64,
    expiries: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

fn field<'a>(v: &'a [Value], name: &str) -> Option<&'a Value> {
    v.chunks(2)
        .find(|kv| matches!(&kv[0], Value::BulkString(b) if b == name.as_bytes()))
        .map(|kv| &kv[1])
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

/// Runs the clients for `RUN`; `ttl_ms` is the values' TTL.
fn run(port: u16, protected: bool, ttl_ms: u64) -> (f64, u64, u64) {
    let stats = Arc::new(Stats::default());
    // Per key: whether an expiry was already counted since the last write.
    let expired: Arc<Vec<AtomicBool>> =
        Arc::new((0..KEYS).map(|_| AtomicBool::new(false)).collect());
    let stop = Instant::now() + RUN;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let stats = stats.clone();
            let expired = expired.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let mut lat = Vec::new();
                let mut i = t;
                while Instant::now() < stop {
                    i += 1;
                    let k = i % KEYS;
                    let key = format!("hot:{k}");
                    let start = Instant::now();
                    let mut computed = false;
                    loop {
                        if protected {
                            let v: Vec<Value> = redis::cmd("OPT.FETCH")
                                .arg(&key)
                                .arg("LOCK")
                                .arg(500)
                                .query(&mut c)
                                .unwrap();
                            match text(field(&v, "action")).as_str() {
                                "hit" => break,
                                "stale" => {
                                    if !expired[k].swap(true, Ordering::Relaxed) {
                                        stats.expiries.fetch_add(1, Ordering::Relaxed);
                                    }
                                    break;
                                }
                                "wait" => {
                                    if !expired[k].swap(true, Ordering::Relaxed) {
                                        stats.expiries.fetch_add(1, Ordering::Relaxed);
                                    }
                                    std::thread::sleep(Duration::from_millis(5));
                                }
                                _ => {
                                    if !expired[k].swap(true, Ordering::Relaxed) {
                                        stats.expiries.fetch_add(1, Ordering::Relaxed);
                                    }
                                    stats.recomputes.fetch_add(1, Ordering::Relaxed);
                                    std::thread::sleep(COMPUTE);
                                    let token = text(field(&v, "token"));
                                    let mut set = redis::cmd("OPT.SET");
                                    set.arg(&key)
                                        .arg("value")
                                        .arg("PX")
                                        .arg(ttl_ms)
                                        .arg("DELTA")
                                        .arg(50)
                                        .arg("STALE")
                                        .arg(5);
                                    if !token.is_empty() {
                                        set.arg("TOKEN").arg(&token);
                                    }
                                    let _: Result<Value, _> = set.query(&mut c);
                                    expired[k].store(false, Ordering::Relaxed);
                                    computed = true;
                                    break;
                                }
                            }
                        } else {
                            let v: Option<String> =
                                redis::cmd("GET").arg(&key).query(&mut c).unwrap();
                            if v.is_some() {
                                break;
                            }
                            if !expired[k].swap(true, Ordering::Relaxed) {
                                stats.expiries.fetch_add(1, Ordering::Relaxed);
                            }
                            stats.recomputes.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(COMPUTE);
                            let _: () = redis::cmd("SET")
                                .arg(&key)
                                .arg("value")
                                .arg("PX")
                                .arg(ttl_ms)
                                .query(&mut c)
                                .unwrap();
                            expired[k].store(false, Ordering::Relaxed);
                            computed = true;
                            break;
                        }
                    }
                    if !computed {
                        lat.push(start.elapsed().as_micros() as u64);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                stats.latencies_us.lock().unwrap().extend(lat);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut lat = std::mem::take(&mut *stats.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or(0);
    let p50 = lat.get(lat.len() / 2).copied().unwrap_or(0);
    let exp = stats.expiries.load(Ordering::Relaxed);
    let ratio = if exp == 0 {
        f64::NAN
    } else {
        stats.recomputes.load(Ordering::Relaxed) as f64 / exp as f64
    };
    (ratio, p50, p99)
}

fn main() {
    redis_opt_benches::use_release_module();
    let server = Server::start_with(ServerOptions {
        config: vec!["maxclients 1000".into()],
        ..ServerOptions::default()
    });
    println!("{CLIENTS} clients, {KEYS} hot keys, values expire every 1 s and take 50 ms to compute, {} s per run", RUN.as_secs());
    println!(
        "{:<34} {:>22} {:>12} {:>12}",
        "mode", "recomputes per expiry", "reader p50", "reader p99"
    );
    println!("(NaN: nothing expired during the run)");
    for (name, protected, ttl) in [
        ("plain GET/SET, steady (TTL 1 h)", false, 3_600_000),
        ("plain GET/SET, expiring (TTL 1 s)", false, 1_000),
        ("OPT.FETCH LOCK, steady (TTL 1 h)", true, 3_600_000),
        ("OPT.FETCH LOCK, expiring (TTL 1 s)", true, 1_000),
    ] {
        // Warm: every key holds a value when the clients start.
        let mut c = server.conn();
        let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
        for k in 0..KEYS {
            let _: () = redis::cmd("OPT.SET")
                .arg(format!("hot:{k}"))
                .arg("value")
                .arg("PX")
                .arg(ttl)
                .arg("DELTA")
                .arg(50)
                .arg("STALE")
                .arg(5)
                .query(&mut c)
                .unwrap();
        }
        let (ratio, p50, p99) = run(server.port, protected, ttl);
        println!(
            "{name:<34} {ratio:>22.2} {:>10.2}ms {:>10.2}ms",
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0
        );
    }
}
