//! OPT.HOTKEYS against `redis-cli --hotkeys`, on the same traffic and the same server.
//!
//! `redis-cli --hotkeys` is what Redis ships for the question "which keys are hot": it needs an
//! LFU eviction policy, then SCANs the whole keyspace and asks OBJECT FREQ of every key, and
//! ranks keys by that 8-bit logarithmic counter (incremented with falling probability, halved
//! by idle minutes), with no counts. Here one server runs under `allkeys-lfu` with the module
//! loaded, so both see exactly the same commands. For each Zipf exponent: `KEYS` keys are
//! written, then 1,000,000 GETs with Zipf-distributed keys, whose true counts this program
//! keeps, sent at a steady 50,000 a second (20 s: traffic to leave a tracker on for, not a
//! burst, which the module's time-sliced default sampling may miss; README, "Hot keys"). Printed per tool: the time it took to answer, whether its top 10 is the true top 10,
//! its recall of the true top 16 (`--hotkeys` lists 16 keys), and the worst relative error of
//! the top 10's counts (OPT.HOTKEYS only; `--hotkeys` gives counters, not counts). The module
//! runs once with every command counted (`opt.hotkeys-sample-ratio 1`) and once at its
//! default (auto: about 5,000 commands a second counted under load).
//!
//!     cargo run --release -p redis-opt-benches --bin hotkeys_vs_cli [KEYS]
//!
//! (`KEYS` defaults to 1,000,000; `REDIS_CLI` picks another redis-cli.)

use std::process::Command;
use std::time::{Duration, Instant};

use opt_harness::{redis, Server, ServerOptions};
use redis_opt_benches::{zipf_gets, ZipfTruth};

const ACCESSES: usize = 1_000_000;
/// GETs a second the traffic is held to.
const RATE: f64 = 50_000.0;
/// Keys `redis-cli --hotkeys` lists.
const CLI_LISTS: usize = 16;

fn name(rank: usize) -> String {
    format!("key:{rank:07}")
}

fn main() {
    redis_opt_benches::use_release_module();
    let keys: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "{ACCESSES} GETs over {keys} keys, allkeys-lfu, module loaded: {}",
        opt_harness::server_version()
    );
    println!(
        "{:>8} {:<34} {:>10} {:>9} {:>13} {:>18}",
        "exponent", "tool", "answer in", "top10 ok", "top16 recall", "top10 max rel err"
    );
    for exponent in [0.9, 1.0, 1.2] {
        for ratio in ["1", "0"] {
            run(keys, exponent, ratio);
        }
    }
}

fn run(keys: usize, exponent: f64, ratio: &str) {
    let server = Server::start_with(ServerOptions {
        config: vec![
            "maxmemory-policy allkeys-lfu".into(),
            format!("opt.hotkeys-sample-ratio {ratio}"),
        ],
        ..ServerOptions::default()
    });
    let mut c = server.conn();
    let truth = zipf_gets(&mut c, keys, ACCESSES, exponent, name, Some(RATE), |c| {
        let _: () = redis::cmd("OPT.HOTKEYS")
            .arg("RESET")
            .query(c)
            .expect("reset");
    });

    let label = if ratio == "1" {
        "OPT.HOTKEYS, every command"
    } else {
        "OPT.HOTKEYS, default (auto)"
    };
    let t = Instant::now();
    let json: String = redis::cmd("OPT.HOTKEYS")
        .arg("COUNT")
        .arg(CLI_LISTS)
        .arg("FORMAT")
        .arg("JSON")
        .query(&mut c)
        .expect("OPT.HOTKEYS");
    let took = t.elapsed();
    let ours: opt_core::report::HotKeysReport = serde_json::from_str(&json).expect("report");
    let ranked: Vec<String> = ours.entries.iter().map(|e| e.name.clone()).collect();
    let worst = truth.worst_top10_count_error(&ours.entries);
    report(exponent, label, took, &ranked, &truth, Some(worst));

    // redis-cli --hotkeys once per exponent (the module's setting does not change it).
    if ratio == "1" {
        match cli_hotkeys(server.port) {
            Some((took, ranked)) => {
                report(exponent, "redis-cli --hotkeys", took, &ranked, &truth, None)
            }
            None => println!("{exponent:>8} redis-cli --hotkeys failed"),
        }
    }
}

/// Runs `redis-cli --hotkeys` against the server: its time and the keys of its summary, in
/// the order listed (highest counter first).
fn cli_hotkeys(port: u16) -> Option<(Duration, Vec<String>)> {
    let cli = std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".into());
    let t = Instant::now();
    let out = Command::new(cli)
        .args(["-p", &port.to_string(), "--hotkeys"])
        .output()
        .ok()?;
    let took = t.elapsed();
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let keys: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("hot key found with counter:"))
        .filter_map(|l| l.split("keyname: ").nth(1))
        .map(|k| k.trim().trim_matches('"').to_string())
        .collect();
    (!keys.is_empty()).then_some((took, keys))
}

fn report(
    exponent: f64,
    tool: &str,
    took: Duration,
    ranked: &[String],
    truth: &ZipfTruth,
    worst: Option<f64>,
) {
    let (top10_ok, recall) = truth.agreement(ranked, CLI_LISTS);
    println!(
        "{exponent:>8} {tool:<34} {:>8.1}ms {:>9} {recall:>13.3} {:>18}",
        took.as_secs_f64() * 1e3,
        if top10_ok { "yes" } else { "no" },
        worst.map_or("(no counts)".to_string(), |w| format!("{:.4}", w))
    );
}
