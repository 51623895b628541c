//! OPT.HOTKEYS against the HOTKEYS command built into Redis 8.6, on the same traffic.
//!
//! One Redis 8.6 server (`REDIS_SERVER`; `scripts/fetch-newer-servers.sh` fetches one) runs
//! the module and the built-in tracker at once, so both see exactly the same commands. For
//! each Zipf exponent: 100,000 keys are written (before either tracker starts), then
//! 1,000,000 GETs with Zipf-distributed keys, whose true counts this program keeps. Every key
//! name has the same length and every value the same size, so a key's CPU time and network
//! bytes (what HOTKEYS ranks by) are proportional to its count, and the true ranking is the
//! same for both. Printed per tracker: whether its top 10 is the true top 10, its recall of
//! the true top 64 (HOTKEYS returns at most 64 keys), and for OPT.HOTKEYS the worst relative
//! error of the top 10's counts. Two settings: every command (HOTKEYS SAMPLE 1,
//! `opt.hotkeys-sample-ratio 1`) and one in ten (SAMPLE 10, the module's default 10).
//!
//!     REDIS_SERVER=target/newer-servers/bin/redis-server \
//!         cargo run --release -p redis-opt-benches --bin hotkeys_vs_builtin

use opt_harness::{redis, Server, ServerOptions};
use redis_opt_benches::{zipf_gets, ZipfTruth};

const KEYS: usize = 100_000;
const ACCESSES: usize = 1_000_000;
const BUILTIN_MAX: usize = 64;

fn name(rank: usize) -> String {
    format!("key:{rank:06}")
}

fn main() {
    redis_opt_benches::use_release_module();
    println!(
        "{ACCESSES} GETs over {KEYS} keys, both trackers on one server: {}",
        opt_harness::server_version()
    );
    println!(
        "{:>8} {:>7} {:<22} {:>9} {:>14} {:>18}",
        "exponent", "sample", "tracker", "top10 ok", "top64 recall", "top10 max rel err"
    );
    for exponent in [0.9, 1.0, 1.2] {
        for ratio in [1u32, 10] {
            run(exponent, ratio);
        }
    }
}

fn run(exponent: f64, ratio: u32) {
    let server = Server::start_with(ServerOptions {
        config: vec![format!("opt.hotkeys-sample-ratio {ratio}")],
        ..ServerOptions::default()
    });
    let mut c = server.conn();
    let truth = zipf_gets(&mut c, KEYS, ACCESSES, exponent, name, None, |c| {
        let _: () = redis::cmd("OPT.HOTKEYS")
            .arg("RESET")
            .query(c)
            .expect("reset");
        let started: redis::RedisResult<String> = redis::cmd("HOTKEYS")
            .arg("START")
            .arg("METRICS")
            .arg(2)
            .arg("CPU")
            .arg("NET")
            .arg("COUNT")
            .arg(BUILTIN_MAX)
            .arg("SAMPLE")
            .arg(ratio)
            .query(c);
        if let Err(e) = started {
            println!("this server has no HOTKEYS command ({e}); it needs Redis 8.6 or later");
            std::process::exit(1);
        }
    });

    // The built-in tracker: its two rankings.
    let reply: Vec<redis::Value> = redis::cmd("HOTKEYS").arg("GET").query(&mut c).expect("GET");
    for metric in ["by-cpu-time-us", "by-net-bytes"] {
        let ranked = builtin_ranking(&reply, metric);
        report(
            exponent,
            ratio,
            &format!("HOTKEYS {metric}"),
            &ranked,
            &truth,
            None,
        );
    }
    // OPT.HOTKEYS.
    let json: String = redis::cmd("OPT.HOTKEYS")
        .arg("COUNT")
        .arg(BUILTIN_MAX)
        .arg("FORMAT")
        .arg("JSON")
        .query(&mut c)
        .expect("OPT.HOTKEYS");
    let ours: opt_core::report::HotKeysReport = serde_json::from_str(&json).expect("report");
    let ranked: Vec<String> = ours.entries.iter().map(|e| e.name.clone()).collect();
    let worst = truth.worst_top10_count_error(&ours.entries);
    report(exponent, ratio, "OPT.HOTKEYS", &ranked, &truth, Some(worst));
}

/// The keys of `metric`'s list in a HOTKEYS GET reply (in RESP2 an array holding one flat
/// field/value array).
fn builtin_ranking(reply: &[redis::Value], metric: &str) -> Vec<String> {
    let text = |v: &redis::Value| -> Option<String> { redis::from_redis_value(v.clone()).ok() };
    let fields = match reply {
        [redis::Value::Array(inner)] => inner.as_slice(),
        flat => flat,
    };
    let mut it = fields.iter();
    while let Some(field) = it.next() {
        let value = it.next();
        if text(field).as_deref() == Some(metric) {
            if let Some(redis::Value::Array(items)) = value {
                return items.chunks(2).filter_map(|kv| text(&kv[0])).collect();
            }
        }
    }
    Vec::new()
}

fn report(
    exponent: f64,
    ratio: u32,
    tracker: &str,
    ranked: &[String],
    truth: &ZipfTruth,
    worst: Option<f64>,
) {
    let (top10_ok, recall) = truth.agreement(ranked, BUILTIN_MAX);
    println!(
        "{exponent:>8} {ratio:>7} {tracker:<22} {:>9} {recall:>14.3} {:>18}",
        if top10_ok { "yes" } else { "no" },
        worst.map_or("(no counts)".to_string(), |w| format!("{:.4}", w))
    );
}
