//! Tag index benchmarks against real servers, each against its baseline in the same run:
//!
//! 1. index memory per (key, tag) pair, against the layout tag libraries use (one Redis set
//!    per tag holding key names, the tag list stored in the cached item), as used_memory deltas;
//! 2. OPT.INVALIDATE of a 100k-key tag against the Lua script a library runs (SMEMBERS, UNLINK
//!    in chunks of 1000, DEL of the set) on a server without the module, alone in the index
//!    and beside 100k tagged keys that stay;
//! 3. OPT.SET with 3 tags against SET + 3 SADD pipelined, and against plain SET (pipelines of
//!    16, 4 client threads);
//! 4. GET throughput while 200k keys expire, tagged against untagged.
//!
//! Run: `cargo run --release -p redis-opt-benches --bin tags_bench` (builds the release module
//! first: `cargo build --release -p redis-opt-module`).

use std::time::{Duration, Instant};

use opt_harness::redis::{self, Connection};
use opt_harness::{Server, ServerOptions};
use redis_opt_benches::{bench_tags, queue_library_write, queue_opt_set, LIBRARY_FLUSH};

const KEYS: usize = 100_000;

fn used_memory(c: &mut Connection) -> i64 {
    let info: String = redis::cmd("INFO").arg("memory").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn key(i: usize) -> String {
    format!("cache:page:{i}")
}

fn server(with_module: bool) -> Server {
    Server::start_with(ServerOptions {
        with_module,
        ..ServerOptions::default()
    })
}

fn memory() {
    // Baseline: the same keys and values, no tags at all.
    let plain = server(true);
    let mut c = plain.conn();
    let base0 = used_memory(&mut c);
    let mut p = redis::pipe();
    for i in 0..KEYS {
        p.cmd("SET").arg(key(i)).arg("v").ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    let base = used_memory(&mut c) - base0;

    let ours = server(true);
    let mut c = ours.conn();
    let m0 = used_memory(&mut c);
    let mut p = redis::pipe();
    for i in 0..KEYS {
        queue_opt_set(&mut p, &key(i), "v", &bench_tags(i), None);
    }
    let _: () = p.query(&mut c).unwrap();
    let opt = used_memory(&mut c) - m0 - base;

    let lib = server(false);
    let mut c = lib.conn();
    let l0 = used_memory(&mut c);
    let mut p = redis::pipe();
    for i in 0..KEYS {
        // The item keeps its tag list next to the value, as Symfony's and Laravel's do.
        queue_library_write(&mut p, &key(i), "v", &bench_tags(i), None);
    }
    let _: () = p.query(&mut c).unwrap();
    let libm = used_memory(&mut c) - l0 - base;
    let pairs = (KEYS * 3) as f64;
    println!(
        "1. index memory, {KEYS} keys x 3 tags (used_memory deltas over the same keys untagged)"
    );
    println!(
        "   OPT.SET index:           {:>10} bytes, {:6.1} per pair",
        opt,
        opt as f64 / pairs
    );
    println!(
        "   sets + tag list in item: {:>10} bytes, {:6.1} per pair",
        libm,
        libm as f64 / pairs
    );
    println!(
        "   ratio ours/library: {:.3} (target <= 0.5)",
        opt as f64 / libm as f64
    );
}

fn invalidate() {
    invalidate_beside(0);
    // When the tag's keys are all the index holds, the index frees them at once; beside keys
    // that stay, each leaves its slot and the key table on its own.
    invalidate_beside(KEYS);
}

/// Section 2, on a server where `others` more keys are tagged (`stay`) and stay. The Lua
/// flush runs on a server without the module, holding the same keys in the library's layout
/// (`others` more in a set `tag:stay`): that is the server a library's user runs. (Until the
/// twenty-third stop it ran beside OPT.INVALIDATE on the module's server, where each of its
/// UNLINKs also delivered a `del` event to the tag index, which made the baseline slower.)
fn invalidate_beside(others: usize) {
    let mut ours_times = Vec::new();
    let mut lua_times = Vec::new();
    let s = server(true);
    let lib = server(false);
    let mut c = s.conn();
    let mut lc = lib.conn();
    if others > 0 {
        let mut p = redis::pipe();
        let mut lp = redis::pipe();
        for i in 0..others {
            p.cmd("OPT.SET")
                .arg(format!("other:{i}"))
                .arg("v")
                .arg("TAGS")
                .arg("stay")
                .ignore();
            lp.cmd("SET").arg(format!("other:{i}")).arg("v").ignore();
            lp.cmd("SADD")
                .arg("tag:stay")
                .arg(format!("other:{i}"))
                .ignore();
        }
        let _: () = p.query(&mut c).unwrap();
        let _: () = lp.query(&mut lc).unwrap();
    }
    for _ in 0..3 {
        let mut p = redis::pipe();
        let mut lp = redis::pipe();
        for i in 0..KEYS {
            p.cmd("OPT.SET")
                .arg(key(i))
                .arg("v")
                .arg("TAGS")
                .arg("big")
                .ignore();
            lp.cmd("SET").arg(key(i)).arg("v").ignore();
            lp.cmd("SADD").arg("tag:big").arg(key(i)).ignore();
        }
        let _: () = p.query(&mut c).unwrap();
        let _: () = lp.query(&mut lc).unwrap();
        let t = Instant::now();
        let n: i64 = redis::cmd("OPT.INVALIDATE")
            .arg("big")
            .arg("ASYNC")
            .query(&mut c)
            .unwrap();
        ours_times.push(t.elapsed());
        assert_eq!(n, KEYS as i64);
        let t = Instant::now();
        let n: i64 = redis::cmd("EVAL")
            .arg(LIBRARY_FLUSH)
            .arg(1)
            .arg("tag:big")
            .query(&mut lc)
            .unwrap();
        lua_times.push(t.elapsed());
        assert_eq!(n, KEYS as i64);
    }
    ours_times.sort();
    lua_times.sort();
    let (o, l) = (ours_times[1], lua_times[1]);
    if others == 0 {
        println!("2. invalidate a tag of {KEYS} keys (median of 3)");
    } else {
        println!("2b. the same, beside {others} tagged keys that stay (median of 3)");
    }
    println!(
        "   OPT.INVALIDATE big ASYNC: {:8.1} ms",
        o.as_secs_f64() * 1e3
    );
    println!(
        "   Lua SMEMBERS+UNLINK+DEL:  {:8.1} ms (server without the module)",
        l.as_secs_f64() * 1e3
    );
    println!(
        "   speed-up: {:.2}x (target >= 2)",
        l.as_secs_f64() / o.as_secs_f64()
    );
}

/// Logical writes per second with `threads` clients sending pipelines of 16 logical writes.
fn write_rate(port: u16, kind: &'static str, total: usize) -> f64 {
    let threads = 4;
    let per = total / threads;
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                for chunk in 0..per / 16 {
                    let mut p = redis::pipe();
                    for j in 0..16 {
                        let i = (t * per + chunk * 16 + j) % KEYS;
                        match kind {
                            "opt" => queue_opt_set(&mut p, &key(i), "v", &bench_tags(i), None),
                            "lib" => {
                                queue_library_write(&mut p, &key(i), "v", &bench_tags(i), None)
                            }
                            _ => {
                                p.cmd("SET").arg(key(i)).arg("v").ignore();
                            }
                        }
                    }
                    let _: () = p.query(&mut c).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    (per / 16 * 16 * threads) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn write_throughput() {
    let ours = server(true);
    let lib = server(false);
    let plain = server(false);
    let (mut o, mut l, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        o.push(write_rate(ours.port, "opt", 200_000));
        l.push(write_rate(lib.port, "lib", 200_000));
        p.push(write_rate(plain.port, "plain", 200_000));
    }
    let (o, l, p) = (median(o), median(l), median(p));
    println!("3. tagged writes, pipelines of 16, 4 clients, median of 5 alternated rounds");
    println!("   OPT.SET with 3 tags:  {o:>10.0} writes/s");
    println!(
        "   SET + 3 SADD:         {l:>10.0} writes/s  -> OPT.SET is {:.2}x (target >= 1.5)",
        o / l
    );
    println!(
        "   plain SET:            {p:>10.0} writes/s  -> OPT.SET is {:.2}x (target >= 0.7)",
        o / p
    );
}

/// GET ops/s on other keys for `secs` while the preloaded keys expire.
fn get_rate_while_expiring(s: &Server, tagged: bool) -> f64 {
    let mut c = s.conn();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let mut p = redis::pipe();
    for i in 0..200_000 {
        let ttl = 500 + (i % 2000);
        if tagged {
            p.cmd("OPT.SET")
                .arg(format!("exp:{i}"))
                .arg("v")
                .arg("PX")
                .arg(ttl)
                .arg("TAGS")
                .arg(format!("t{}", i % 100))
                .arg("all")
                .ignore();
        } else {
            p.cmd("SET")
                .arg(format!("exp:{i}"))
                .arg("v")
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
    }
    for i in 0..1000 {
        p.cmd("SET").arg(format!("hot:{i}")).arg("v").ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(2500) {
        let mut p = redis::pipe();
        for j in 0..16 {
            p.cmd("GET")
                .arg(format!("hot:{}", (n as usize + j) % 1000))
                .ignore();
        }
        let _: () = p.query(&mut c).unwrap();
        n += 16;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    // Every expired key must have left the index.
    std::thread::sleep(Duration::from_millis(1000));
    let text: String = redis::cmd("OPT.TAGINFO")
        .arg("FORMAT")
        .arg("JSON")
        .query(&mut c)
        .unwrap();
    let left: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    if tagged {
        assert_eq!(left["keys"].as_i64().unwrap(), dbsize - 1000);
    }
    rate
}

/// Untagged keys run on a server that never saw a tag: the module follows keyspace events only
/// once the index has an entry, so that is what an application that does not tag pays. (On
/// the tagging server, untagged keys pay the event delivery too; that figure is printed as
/// well.)
fn expiry() {
    let tagging = server(true);
    let untagged_only = server(true);
    // More rounds narrow the median on a noisy machine: TAGS_BENCH_EXPIRY_ROUNDS (default 5).
    let rounds = std::env::var("TAGS_BENCH_EXPIRY_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(5)
        .max(1);
    let (mut t, mut u, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        u.push(get_rate_while_expiring(&untagged_only, false));
        t.push(get_rate_while_expiring(&tagging, true));
        w.push(get_rate_while_expiring(&tagging, false));
    }
    // Each round's own ratio too: the rounds are alternated, so a slow stretch of the machine
    // weighs on both sides of a round's ratio.
    let mut per_round: Vec<f64> = t.iter().zip(&u).map(|(t, u)| t / u).collect();
    per_round.sort_by(|a, b| a.total_cmp(b));
    let quartile = |q: usize| per_round[(per_round.len() - 1) * q / 4];
    let (t, u, w) = (median(t), median(u), median(w));
    println!("4. GETs (pipelines of 16) while 200k keys expire within 2.5 s, median of {rounds}");
    println!("   untagged keys, server that never tagged:  {u:>10.0} GET/s");
    println!(
        "   tagged keys expiring:                     {t:>10.0} GET/s  -> ratio {:.3} (target >= 0.95)",
        t / u
    );
    println!(
        "   untagged keys, server that tags others:   {w:>10.0} GET/s  -> ratio {:.3}",
        w / u
    );
    println!(
        "   tagged / never tagged, round by round: median {:.3}, quartiles {:.3} to {:.3}, \
         lowest {:.3}, highest {:.3}",
        quartile(2),
        quartile(1),
        quartile(3),
        per_round[0],
        per_round[per_round.len() - 1]
    );
}

fn main() {
    redis_opt_benches::use_release_module();
    println!("server: {}", opt_harness::server_version());
    // Sections to run (1 to 4); all by default: `tags_bench 4` reruns the expiry one.
    let only: Vec<String> = std::env::args().skip(1).collect();
    let run = |n: &str| only.is_empty() || only.iter().any(|a| a == n);
    if run("1") {
        memory();
    }
    if run("2") {
        invalidate();
    }
    if run("3") {
        write_throughput();
    }
    if run("4") {
        expiry();
    }
}
