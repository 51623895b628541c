//! Tagged caching under `maxmemory` with eviction: the libraries' layout against the module.
//!
//! The libraries keep their tag sets as ordinary keys, so under memory pressure eviction
//! treats them like any key: a set may be evicted (and with it the names a later invalidation
//! needs, so cached entries survive the invalidation of their tag: stale data), and sets that
//! stay keep the names of evicted entries, which take memory from live entries. The module's
//! index holds live keys only and is never evicted (its memory counts toward maxmemory).
//!
//! Two servers side by side with `maxmemory 32mb` and `allkeys-lru`, one without the module
//! holding the libraries' layout (`SET key value|tags` + one `SADD tag:<t> key` per tag,
//! pipelined), one with the module (`OPT.SET key value TAGS ...`). `KEYS` entries of 100-byte
//! values with 3 tags each (1,000 user tags, 5,000 post tags, one site-wide tag) are written,
//! far more than fit. Printed: live entries, evicted keys, tag sets left and the dead names
//! they hold; then every user tag is invalidated (the library's Lua flush: SMEMBERS, UNLINK in
//! chunks of 1000, DEL; or OPT.INVALIDATE), and the entries still alive are counted: each
//! carries a user tag, so every one of them is stale.
//!
//!     cargo run --release -p redis-opt-benches --bin tags_evicted [KEYS]
//!
//! (`KEYS` defaults to 500,000.)

use opt_harness::redis::{self, Connection};
use opt_harness::{info_int, Server, ServerOptions};
use redis_opt_benches::{bench_tags, queue_library_write, queue_opt_set, scan_keys, LIBRARY_FLUSH};

/// Names held by the tag sets whose key no longer exists.
fn dead_members(c: &mut Connection, sets: &[String]) -> usize {
    let mut dead = 0;
    for set in sets {
        let members: Vec<String> = redis::cmd("SMEMBERS").arg(set).query(c).unwrap_or_default();
        for chunk in members.chunks(1000) {
            let mut p = redis::pipe();
            for m in chunk {
                p.cmd("EXISTS").arg(m);
            }
            let found: Vec<i64> = p.query(c).unwrap_or_default();
            dead += found.iter().filter(|&&e| e == 0).count();
        }
    }
    dead
}

fn main() {
    redis_opt_benches::use_release_module();
    let keys: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let config = vec![
        "maxmemory 32mb".to_string(),
        "maxmemory-policy allkeys-lru".to_string(),
    ];
    let lib = Server::start_with(ServerOptions {
        with_module: false,
        config: config.clone(),
        ..ServerOptions::default()
    });
    let ours = Server::start_with(ServerOptions {
        config,
        ..ServerOptions::default()
    });
    let (mut l, mut o) = (lib.conn(), ours.conn());
    let value = "x".repeat(100);
    for start in (0..keys).step_by(1000) {
        let (mut lp, mut op) = (redis::pipe(), redis::pipe());
        for i in start..(start + 1000).min(keys) {
            let key = format!("cache:page:{i}");
            let tags = bench_tags(i);
            queue_library_write(&mut lp, &key, &value, &tags, None);
            queue_opt_set(&mut op, &key, &value, &tags, None);
        }
        let _: () = lp.query(&mut l).expect("library writes");
        let _: () = op.query(&mut o).expect("OPT.SET writes");
    }
    println!(
        "{keys} entries of 100 bytes with 3 tags each, maxmemory 32mb, allkeys-lru: {}",
        opt_harness::server_version()
    );
    let sets = scan_keys(&mut l, "tag:*");
    let lib_live = scan_keys(&mut l, "cache:page:*").len();
    let our_live = scan_keys(&mut o, "cache:page:*").len();
    println!(
        "libraries: {lib_live} entries alive, {} keys evicted, {} of 6,001 tag sets left, \
         holding {} names of entries that are gone",
        info_int(&mut l, "stats", "evicted_keys"),
        sets.len(),
        dead_members(&mut l, &sets)
    );
    println!(
        "module:    {our_live} entries alive, {} keys evicted, index: {} pairs, {} bytes \
         (counted in maxmemory), all of live keys",
        info_int(&mut o, "stats", "evicted_keys"),
        info_int(&mut o, "opt", "opt_tags_pairs"),
        info_int(&mut o, "opt", "opt_tags_memory_bytes")
    );
    // Invalidate every user tag: every entry carries one.
    let (mut lib_deleted, mut our_deleted) = (0i64, 0i64);
    for u in 0..1000 {
        lib_deleted += redis::cmd("EVAL")
            .arg(LIBRARY_FLUSH)
            .arg(1)
            .arg(format!("tag:user:{u}"))
            .query::<i64>(&mut l)
            .unwrap_or(0);
        our_deleted += redis::cmd("OPT.INVALIDATE")
            .arg(format!("user:{u}"))
            .query::<i64>(&mut o)
            .unwrap_or(0);
    }
    let lib_stale = scan_keys(&mut l, "cache:page:*").len();
    let our_stale = scan_keys(&mut o, "cache:page:*").len();
    println!(
        "after invalidating all 1,000 user tags: libraries {lib_stale} entries still served \
         (stale; the flush named {lib_deleted}), module {our_stale} (OPT.INVALIDATE deleted \
         {our_deleted})"
    );
}
