//! OPT.ADVISE against Redis' own MEMORY DOCTOR and LATENCY DOCTOR, on one server with known
//! problems planted in it.
//!
//! The doctors are what a Redis operator already has; the question is what each one finds on
//! the same server, and whether it says what to do. The server (`REDIS_SERVER`, the module's
//! release build) gets ten problems, chosen so that each doctor has some on its own ground:
//! a memory peak far above the current use and the allocator fragmentation it leaves (85% of
//! 600,000 1 KB keys deleted), a client that holds a huge output buffer (it asked for a 50 MB
//! value three times and reads nothing), 1,100 EVAL scripts built per call (MEMORY DOCTOR's
//! "many scripts", on Redis 7.0, which keeps every one), a latency spike (DEBUG SLEEP 0.2,
//! with the latency monitor on, as LATENCY DOCTOR needs), and, on no doctor's ground, no
//! `maxmemory` on a cache, keys without TTLs, a 50 MB string, hashes just over
//! `hash-max-listpack-entries`, and a missing key read 83,000 times in a few seconds. Each
//! tool's answer is then checked
//! for each problem: the doctors' text for the heading of their finding, OPT.ADVISE's JSON for
//! the rule, once as typed (which looks at every key of a db of up to 200,000 keys) and once
//! with `SAMPLES 10000` (a single big key among 90,000 is in such a sample about one time in
//! nine).
//!
//!     cargo run --release -p redis-opt-benches --bin advise_vs_doctor

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use opt_harness::{redis, Server, ServerOptions};

/// A planted problem: what it is, the words MEMORY DOCTOR and LATENCY DOCTOR use when they
/// report it (None: outside what that doctor looks at), and OPT.ADVISE's rule for it.
struct Problem {
    what: &'static str,
    memory_doctor: Option<&'static str>,
    latency_doctor: Option<&'static str>,
    rule: &'static str,
}

const PROBLEMS: [Problem; 10] = [
    Problem {
        what: "a memory peak (600 MB of keys, 85% deleted)",
        memory_doctor: Some("* Peak memory:"),
        latency_doctor: None,
        rule: "rss-peak",
    },
    Problem {
        what: "allocator fragmentation after deletions",
        memory_doctor: Some("* High allocator fragmentation:"),
        latency_doctor: None,
        rule: "allocator-fragmentation",
    },
    Problem {
        what: "a client holding a 150 MB output buffer",
        memory_doctor: Some("* Big client buffers:"),
        latency_doctor: None,
        rule: "client-buffers-large",
    },
    Problem {
        what: "a 200 ms latency spike (DEBUG SLEEP)",
        memory_doctor: None,
        latency_doctor: Some("latency spikes ("),
        rule: "slow-commands",
    },
    Problem {
        what: "no maxmemory on a cache",
        memory_doctor: None,
        latency_doctor: None,
        rule: "maxmemory-unset",
    },
    Problem {
        what: "90,000 keys with no TTL",
        memory_doctor: None,
        latency_doctor: None,
        rule: "keys-without-ttl",
    },
    Problem {
        what: "a 50 MB string",
        memory_doctor: None,
        latency_doctor: None,
        rule: "big-key",
    },
    Problem {
        what: "hashes just over hash-max-listpack-entries",
        memory_doctor: None,
        latency_doctor: None,
        rule: "encoding-threshold",
    },
    Problem {
        what: "a missing key read 83,000 times",
        memory_doctor: None,
        latency_doctor: None,
        rule: "hot-missing-key",
    },
    Problem {
        what: "EVAL scripts built per call (1,100 texts)",
        memory_doctor: Some("* Many scripts:"),
        latency_doctor: None,
        rule: "script-cache-churn",
    },
];

fn main() {
    redis_opt_benches::use_release_module();
    let server = Server::start_with(ServerOptions {
        config: vec!["latency-monitor-threshold 100".into()],
        ..ServerOptions::default()
    });
    let mut c = server.conn();
    let q = |c: &mut redis::Connection, args: &[&str]| -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(c).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };

    // A 50 MB string, and 200 hashes of 600 fields (the threshold is 512).
    q(&mut c, &["SETRANGE", "report:big", "52428799", "x"]);
    let mut p = redis::pipe();
    for h in 0..200 {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(format!("user:{h}:visits"));
        for f in 0..600 {
            cmd.arg(format!("d{f}")).arg(f);
        }
        p.add_command(cmd).ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    // The peak, and the fragmentation that deleting most keys of it leaves.
    q(
        &mut c,
        &["DEBUG", "POPULATE", "600000", "cache:page", "1000"],
    );
    let mut p = redis::pipe();
    for i in 0..600_000 {
        if i % 20 >= 3 {
            p.cmd("DEL").arg(format!("cache:page:{i}")).ignore();
        }
    }
    let _: () = p.query(&mut c).unwrap();
    // The missing key, read 83,000 times over a few seconds, among 17,000 hits: steady
    // traffic, as from many clients (the sampler works by time; see the README).
    for round in 0..500 {
        let mut p = redis::pipe();
        for i in 0..200 {
            p.cmd("GET")
                .arg(if i % 6 == 5 {
                    format!("cache:page:{}", (round * 200 + i) % 20 * 20)
                } else {
                    "user:404:profile".to_string()
                })
                .ignore();
        }
        let _: () = p.query(&mut c).unwrap();
        std::thread::sleep(Duration::from_millis(4));
    }
    // A client that writes each value into its script's text: 1,100 distinct scripts (Redis
    // 7.0 keeps them all; 7.4+ and Valkey keep 500 and evict the rest).
    let mut p = redis::pipe();
    for i in 0..1100 {
        p.cmd("EVAL")
            .arg(format!("return redis.call('SET', KEYS[1], '{i}')"))
            .arg(1)
            .arg(format!("counter:{i}"))
            .ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    // The latency spike.
    q(&mut c, &["DEBUG", "SLEEP", "0.2"]);
    // The client that asks for 150 MB and reads nothing; it stays connected until the end.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(b"GET report:big\r\nGET report:big\r\nGET report:big\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // INFO's client_recent_max_output_buffer is the largest of the last few seconds, refreshed
    // by the server's cron.
    std::thread::sleep(Duration::from_secs(2));

    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let memory_line = format!(
        "used_memory {:.0} MB, peak {:.0} MB ({:.1}x), allocator_frag_ratio {:.2}",
        field("used_memory:") / 1e6,
        field("used_memory_peak:") / 1e6,
        field("used_memory_peak:") / field("used_memory:").max(1.0),
        field("allocator_frag_ratio:")
    );
    let memory_doctor: String = redis::cmd("MEMORY").arg("DOCTOR").query(&mut c).unwrap();
    let latency_doctor: String = redis::cmd("LATENCY").arg("DOCTOR").query(&mut c).unwrap();
    // As an operator types it (every key of a db this size), then a sample of 10,000 keys.
    let advise = |c: &mut redis::Connection, samples: Option<u64>| {
        let mut cmd = redis::cmd("OPT.ADVISE");
        if let Some(n) = samples {
            cmd.arg("SAMPLES").arg(n);
        }
        let advice: String = cmd.arg("FORMAT").arg("JSON").query(c).unwrap();
        let advice: serde_json::Value = serde_json::from_str(&advice).unwrap();
        let findings: Vec<(String, String)> = advice["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["rule"].as_str().unwrap_or("").to_string(),
                    f["severity"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        (findings, advice["score"].clone())
    };
    let (findings, score) = advise(&mut c, None);
    let (sampled_findings, _) = advise(&mut c, Some(10_000));
    drop(slow);
    let mut misses = Vec::new();
    for (window, kind) in [("total", "miss"), ("recent", "miss"), ("total", "all")] {
        let r: String = redis::cmd("OPT.HOTKEYS")
            .arg("TYPE")
            .arg(kind)
            .arg("WINDOW")
            .arg(window)
            .arg("COUNT")
            .arg(1)
            .arg("FORMAT")
            .arg("JSON")
            .query(&mut c)
            .unwrap();
        let r: serde_json::Value = serde_json::from_str(&r).unwrap();
        misses.push(format!(
            "{window}, {kind}: {} counted {} times, share {:.3}, sample ratio {}, {} accesses estimated",
            r["entries"][0]["name"],
            r["entries"][0]["count"],
            r["entries"][0]["share"].as_f64().unwrap_or(0.0),
            r["sample_ratio"],
            r["estimated_accesses"]
        ));
    }

    println!("{}\n{memory_line}", opt_harness::server_version());
    println!(
        "{:<44} {:<15} {:<15} {:<36} OPT.ADVISE SAMPLES 10000",
        "planted problem", "MEMORY DOCTOR", "LATENCY DOCTOR", "OPT.ADVISE"
    );
    let found = |text: &str, words: Option<&str>| match words {
        None => "not its ground",
        Some(w) if text.to_lowercase().contains(&w.to_lowercase()) => "found",
        Some(_) => "missed",
    };
    let opt_found = |findings: &[(String, String)], rule: &str| {
        findings
            .iter()
            .find(|(r, _)| r == rule)
            .map(|(r, s)| format!("found: {r} ({s})"))
            .unwrap_or_else(|| format!("missed ({rule})"))
    };
    let mut counts = [0, 0, 0, 0];
    for p in &PROBLEMS {
        let md = found(&memory_doctor, p.memory_doctor);
        let ld = found(&latency_doctor, p.latency_doctor);
        let opt = opt_found(&findings, p.rule);
        let opt_sampled = opt_found(&sampled_findings, p.rule);
        counts[0] += (md == "found") as usize;
        counts[1] += (ld == "found") as usize;
        counts[2] += opt.starts_with("found") as usize;
        counts[3] += opt_sampled.starts_with("found") as usize;
        println!(
            "{:<44} {:<15} {:<15} {:<36} {}",
            p.what, md, ld, opt, opt_sampled
        );
    }
    println!(
        "found: MEMORY DOCTOR {} of {n}, LATENCY DOCTOR {} of {n}, OPT.ADVISE {} of {n} ({} findings in all, score {score}), {} of {n} with SAMPLES 10000",
        counts[0],
        counts[1],
        counts[2],
        findings.len(),
        counts[3],
        n = PROBLEMS.len(),
    );
    println!("\n--- MEMORY DOCTOR ---\n{memory_doctor}\n--- LATENCY DOCTOR ---\n{latency_doctor}");
    println!("--- OPT.HOTKEYS TYPE miss ---\n{}", misses.join("\n"));
    println!("--- OPT.ADVISE findings ---");
    for (rule, severity) in &findings {
        println!("{severity:<8} {rule}");
    }
}
