//! What the tag index holds after tagged entries expire, against what tag libraries' sets hold.
//!
//! The libraries (Laravel's and Symfony's Redis tagged caches, django-cacheops) add each cached
//! key to one Redis set per tag, with a separate SADD, and nothing takes the key out of those
//! sets when it expires or is evicted: the sets keep every name ever written until the whole
//! tag is flushed, or until a periodic job walks every set and removes the dead names
//! (Laravel's `cache:prune-stale-tags`). Laravel #43850 reported over 1 GB a week this way.
//! The module's index follows the keyspace, so an expired key leaves it.
//!
//! Two servers side by side, one without the module holding the libraries' layout (`SET key
//! v EX 1` plus `SADD tag:<t> key` for each of its 3 tags, pipelined), one with the module
//! (`OPT.SET key v EX 1 TAGS t1 t2 t3`). Each round writes `KEYS` new keys, 3 tags each
//! (1,000 user tags, 5,000 post tags, one site-wide tag), then waits until every key has
//! expired (and 1.5 s more: the module's idle check runs each second), and prints what each
//! server still holds: used_memory above its start, keys, and (key, tag) entries: the
//! members of every tag set, or the index's pairs.
//!
//!     cargo run --release -p redis-opt-benches --bin tags_leak [ROUNDS] [KEYS]
//!
//! (defaults: 10 rounds of 100,000 keys).

use std::time::{Duration, Instant};

use opt_core::advise::{info_subfield, parse_info};
use opt_harness::redis::{self, Connection};
use opt_harness::{info_int, Server, ServerOptions};
use redis_opt_benches::{bench_tags, queue_library_write, queue_opt_set, scan_keys};

/// Keys with a TTL in db 0 (INFO keyspace's `expires`), 0 when none.
fn keys_with_ttl(c: &mut Connection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(c)
        .unwrap_or_default();
    parse_info(&info)
        .get("db0")
        .and_then(|db| info_subfield(db, "expires")?.parse().ok())
        .unwrap_or(0)
}

fn dbsize(c: &mut Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).unwrap_or(-1)
}

/// Members of every tag set (the libraries' (key, tag) entries).
fn set_members(c: &mut Connection) -> i64 {
    scan_keys(c, "tag:*")
        .iter()
        .map(|k| redis::cmd("SCARD").arg(k).query::<i64>(c).unwrap_or(0))
        .sum()
}

/// Waits until neither server holds a key with a TTL (every written key expired and was
/// reclaimed by the server's active expiry).
fn wait_for_expiry(a: &mut Connection, b: &mut Connection) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while (keys_with_ttl(a) > 0 || keys_with_ttl(b) > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() {
    redis_opt_benches::use_release_module();
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let keys: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let lib = Server::start_with(ServerOptions {
        with_module: false,
        ..ServerOptions::default()
    });
    let ours = Server::start_with(ServerOptions::default());
    let (mut l, mut o) = (lib.conn(), ours.conn());
    let (l0, o0) = (
        info_int(&mut l, "memory", "used_memory"),
        info_int(&mut o, "memory", "used_memory"),
    );
    println!(
        "{rounds} rounds of {keys} keys written with EX 1 and 3 tags, each round's keys expired \
         before the next: {}",
        opt_harness::server_version()
    );
    println!(
        "{:>5} {:>9} | {:>16} {:>6} {:>13} | {:>16} {:>6} {:>13}",
        "round",
        "written",
        "libraries: bytes",
        "keys",
        "set members",
        "module: bytes",
        "keys",
        "index pairs"
    );
    for round in 0..rounds {
        for start in (0..keys).step_by(1000) {
            let (mut lp, mut op) = (redis::pipe(), redis::pipe());
            for i in start..(start + 1000).min(keys) {
                let key = format!("cache:page:{round}:{i}");
                let tags = bench_tags(i);
                queue_library_write(&mut lp, &key, "v", &tags, Some(1));
                queue_opt_set(&mut op, &key, "v", &tags, Some(1));
            }
            let _: () = lp.query(&mut l).expect("library writes");
            let _: () = op.query(&mut o).expect("OPT.SET writes");
        }
        wait_for_expiry(&mut l, &mut o);
        // The index gives an emptied index's memory back at its next idle check (each second).
        std::thread::sleep(Duration::from_millis(1500));
        println!(
            "{:>5} {:>9} | {:>16} {:>6} {:>13} | {:>16} {:>6} {:>13}",
            round + 1,
            (round + 1) * keys,
            info_int(&mut l, "memory", "used_memory") - l0,
            dbsize(&mut l),
            set_members(&mut l),
            info_int(&mut o, "memory", "used_memory") - o0,
            dbsize(&mut o),
            info_int(&mut o, "opt", "opt_tags_pairs"),
        );
    }
}
