//! OPT.ADVISE on real servers: a well-configured server gets no warning, and each rule that
//! can be provoked on a local server fires with its evidence; optctl advise --fail-on.

use opt_core::report::AdviceReport;
use opt_harness::redis::{self, Connection};
use opt_harness::{err, ok, optctl, Server};

fn advise(c: &mut Connection, args: &[&str]) -> AdviceReport {
    opt_harness::json(c, &[&["OPT.ADVISE"], args].concat())
}

fn rules(r: &AdviceReport) -> Vec<String> {
    r.findings.iter().map(|f| f.rule.clone()).collect()
}

/// The finding of rule `id`; fails the test, listing the rules that fired, if there is none.
fn finding<'a>(r: &'a AdviceReport, id: &str) -> &'a opt_core::report::Finding {
    r.findings
        .iter()
        .find(|f| f.rule == id)
        .unwrap_or_else(|| panic!("no {id} finding: {:?}", rules(r)))
}

/// Rules about the host kernel, which a test cannot configure.
const HOST_RULES: &str = "overcommit-memory thp-enabled fork-headroom-low memory-swapped";

#[test]
fn a_well_configured_server_gets_no_warning() {
    let server = Server::with_config(&[
        "maxmemory 256mb",
        "maxmemory-policy allkeys-lfu",
        "latency-monitor-threshold 100",
        "lazyfree-lazy-eviction yes",
        "lazyfree-lazy-expire yes",
        "user default on nopass ~* &* +@all -@dangerous",
        "user admin on >adminpw ~* &* +@all",
        &format!("opt.advise-ignore \"{HOST_RULES}\""),
    ]);
    let url = format!("redis://admin:adminpw@127.0.0.1:{}", server.port);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    // The harness's readiness check ran INFO as `default`, whose ACL denies it (NOPERM, which
    // errors-returned rightly reports): count from here.
    ok(&mut c, &["CONFIG", "RESETSTAT"]);
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("SET")
            .arg(format!("cache:item:{i}"))
            .arg("v")
            .arg("EX")
            .arg(600 + i)
            .ignore();
        p.cmd("GET").arg(format!("cache:item:{i}")).ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    let r = advise(&mut c, &[]);
    let serious: Vec<(&str, &str)> = r
        .findings
        .iter()
        .filter(|f| f.severity != "info")
        .map(|f| (f.rule.as_str(), f.evidence.as_str()))
        .collect();
    assert!(serious.is_empty(), "{serious:?}");
    assert!(r.score >= 90, "score {}: {:?}", r.score, rules(&r));
}

#[test]
fn provoked_rules_fire_with_evidence_and_fixes() {
    let server = Server::with_config(&[
        "maxmemory-policy allkeys-lru",
        "opt.hotkeys-sample-ratio 1",
        "slowlog-log-slower-than 0",
        "appendonly yes",
        "appendfsync always",
        "maxclients 12",
        // Valkey 8 frees lazily by default; Redis 7.0 does not.
        "lazyfree-lazy-eviction no",
        "lazyfree-lazy-expire no",
    ]);
    let mut c = server.conn();
    // big-key, lazyfree-off, keys-without-ttl, encoding-threshold, expiry-clustered.
    ok(&mut c, &["SET", "report:big", &"x".repeat(300_000)]);
    let mut p = redis::pipe();
    // One absolute second for all of them: with EX the pipeline could straddle a second
    // boundary and split them below the rule's threshold (it did, once in a while).
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3000;
    for i in 0..1500 {
        p.cmd("SET")
            .arg(format!("session:{i}"))
            .arg("t")
            .arg("EXAT")
            .arg(at)
            .ignore();
    }
    for i in 0..600 {
        p.cmd("SET")
            .arg(format!("cache:item:{i}"))
            .arg("y".repeat(600))
            .ignore();
    }
    for i in 0..30 {
        let mut h = redis::cmd("HSET");
        h.arg(format!("profile:{i}:fields"));
        // Just above hash-max-listpack-entries (512): stored as a hashtable.
        for f in 0..600 {
            h.arg(format!("f{f}")).arg("v");
        }
        p.add_command(h).ignore();
    }
    // hot-key, hot-missing-key, low-hit-ratio, lfu-recommended.
    p.cmd("SET").arg("hot:key").arg("v").ignore();
    for _ in 0..3000 {
        p.cmd("GET").arg("hot:key").ignore();
        p.cmd("GET").arg("missing:key").ignore();
        p.cmd("GET").arg("missing:key").ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    // multiple-databases, dangerous-commands-used, pubsub-many-patterns, connections.
    ok(&mut c, &["SELECT", "2"]);
    ok(&mut c, &["SET", "other", "1"]);
    ok(&mut c, &["SELECT", "0"]);
    let _: Vec<String> = redis::cmd("KEYS").arg("nothing*").query(&mut c).unwrap();
    let mut sub = server.conn();
    let mut pubsub = sub.as_pubsub();
    for i in 0..1001 {
        pubsub.psubscribe(format!("chan{i}.*")).unwrap();
    }
    let held: Vec<Connection> = (0..9).map(|_| server.conn()).collect();
    // Sampling with replacement: 30,000 samples of ~2,200 keys see the one big key for sure.
    let r = advise(&mut c, &["SAMPLES", "30000"]);
    drop(held);
    let fired = rules(&r);
    for id in [
        "maxmemory-unset",
        "big-key",
        "lazyfree-off",
        "keys-without-ttl",
        "expiry-clustered",
        "encoding-threshold",
        "hot-key",
        "hot-missing-key",
        "low-hit-ratio",
        "lfu-recommended",
        "multiple-databases",
        "dangerous-commands-used",
        "slow-commands",
        "latency-monitor-off",
        "aof-fsync-always",
        "connections-near-limit",
        "pubsub-many-patterns",
        "dangerous-commands-open",
    ] {
        assert!(
            fired.contains(&id.to_string()),
            "{id} did not fire; fired: {fired:?}"
        );
    }
    let spike = r
        .findings
        .iter()
        .find(|f| f.rule == "expiry-clustered")
        .unwrap();
    assert!(
        spike.evidence.contains(" UTC (unix second "),
        "{}",
        spike.evidence
    );
    let big = r.findings.iter().find(|f| f.rule == "big-key").unwrap();
    assert!(
        big.subjects.contains(&"report:big".to_string()) && big.evidence.contains("report:big")
    );
    assert!(!big.fix.is_empty());
    let hot = r
        .findings
        .iter()
        .find(|f| f.rule == "hot-missing-key")
        .unwrap();
    assert_eq!(hot.subjects, vec!["missing:key".to_string()]);
    // Most severe first, and the score pays for each.
    let order: Vec<u8> = r
        .findings
        .iter()
        .map(|f| match f.severity.as_str() {
            "critical" => 0,
            "warning" => 1,
            _ => 2,
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
    assert!(r.score < 50, "{}", r.score);
    // Filters and silencing.
    let only = advise(&mut c, &["SAMPLES", "0", "CATEGORY", "persistence"]);
    assert!(only.findings.iter().all(|f| f.category == "persistence"));
    ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "opt.advise-ignore",
            "aof-fsync-always,big-key",
        ],
    );
    let quiet = advise(&mut c, &["SAMPLES", "0"]);
    assert!(!rules(&quiet).contains(&"aof-fsync-always".to_string()));
    let e = err(
        &mut c,
        &["CONFIG", "SET", "opt.advise-ignore", "no-such-rule"],
    );
    assert!(e.contains("no-such-rule"), "{e}");
}

#[test]
fn rules_are_skipped_with_the_reason_when_config_is_renamed() {
    let server = Server::with_config(&["rename-command CONFIG \"\""]);
    let r = advise(&mut server.conn(), &["SAMPLES", "0"]);
    let skipped: Vec<&str> = r.skipped.iter().map(|(id, _)| id.as_str()).collect();
    assert!(skipped.contains(&"latency-monitor-off"), "{skipped:?}");
    assert!(r
        .skipped
        .iter()
        .any(|(_, why)| why.contains("CONFIG is not available")));
    assert!(
        rules(&r).contains(&"maxmemory-unset".to_string()),
        "INFO-based rules still run"
    );
}

/// Without MEMORY USAGE (renamed away) nothing can be sized: OPT.KEYSPACE refuses with the
/// reason instead of reporting 0 bytes, and OPT.ADVISE skips the rules that need a keyspace
/// profile.
#[test]
fn without_memory_usage_the_analysis_refuses_and_the_advice_skips_it() {
    let server = Server::with_config(&["rename-command MEMORY \"\""]);
    let mut c = server.conn();
    for i in 0..200 {
        ok(&mut c, &["SET", &format!("cache:item:{i}"), "v"]);
    }
    let e = err(&mut c, &["OPT.KEYSPACE", "FULL"]);
    assert!(e.contains("MEMORY USAGE") && e.contains("renamed"), "{e}");
    let r = advise(&mut c, &["SAMPLES", "100"]);
    assert!(
        r.skipped
            .iter()
            .any(|(id, why)| id == "keys-without-ttl" && why.contains("no keyspace profile")),
        "{:?}",
        r.skipped
    );
    assert!(rules(&r).contains(&"maxmemory-unset".to_string()));
}

#[test]
fn optctl_advise_groups_findings_and_fails_on_request() {
    let server = Server::start();
    let (code, out, err) = optctl(
        &["--url", &server.url(), "advise", "--samples", "0"],
        &[("NO_COLOR", "1")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("health score") && out.contains("WARNING"),
        "{out}"
    );
    assert!(
        out.contains("[maxmemory-unset]") && out.contains("fix:"),
        "{out}"
    );
    assert!(!out.contains("\u{1b}["), "no colour when not a terminal");
    let (code, _, _) = optctl(
        &[
            "--url",
            &server.url(),
            "advise",
            "--samples",
            "0",
            "--fail-on",
            "warning",
        ],
        &[],
    );
    assert_eq!(code, 3, "a warning is present");
    let (code, _, _) = optctl(
        &[
            "--url",
            &server.url(),
            "advise",
            "--samples",
            "0",
            "--fail-on",
            "critical",
            "--category",
            "latency",
        ],
        &[],
    );
    assert_eq!(code, 0, "no critical latency finding");
    let (code, out, _) = optctl(
        &["--url", &server.url(), "--json", "advise", "--samples", "0"],
        &[],
    );
    assert_eq!(code, 0);
    let r: AdviceReport = serde_json::from_str(&out).unwrap();
    assert!(r.rules_evaluated > 30);
}

#[test]
fn more_provoked_rules() {
    // Memory, persistence and security settings.
    let server = Server::with_config(&[
        "maxmemory 30gb",
        "slowlog-max-len 5",
        "protected-mode no",
        "bind 0.0.0.0",
        "enable-protected-configs yes",
    ]);
    let mut c = server.conn();
    ok(&mut c, &["CONFIG", "SET", "dir", "/proc"]);
    let _ = redis::cmd("BGSAVE").query::<String>(&mut c);
    server.wait_for(
        "the failed BGSAVE",
        std::time::Duration::from_secs(10),
        |c| {
            let i: String = redis::cmd("INFO").arg("persistence").query(c).unwrap();
            i.contains("rdb_last_bgsave_status:err")
        },
    );
    let mut p = redis::pipe();
    // small-strings-to-hash, long-key-names, big-collection, noeviction-on-cache (TTLs).
    for i in 0..12_000 {
        p.cmd("SET").arg(format!("flag:{i}")).arg("1").ignore();
    }
    for i in 0..1200 {
        p.cmd("SET")
            .arg(format!(
                "{}:{i}",
                "segment-of-a-rather-long-key-name".repeat(4)
            ))
            .arg("v")
            .arg("EX")
            .arg(100 + i)
            .ignore();
    }
    for i in 0..30_000 {
        p.cmd("SET")
            .arg(format!("cached:{i}"))
            .arg("v")
            .arg("EX")
            .arg(5000 + i)
            .ignore();
    }
    let mut sadd = redis::cmd("SADD");
    sadd.arg("members:all");
    for m in 0..1500 {
        sadd.arg(format!("m{m}"));
    }
    p.add_command(sadd).ignore();
    let _: () = p.query(&mut c).unwrap();
    // rss-peak: a burst that is gone again.
    ok(&mut c, &["SET", "burst", &"z".repeat(60_000_000)]);
    ok(&mut c, &["DEL", "burst"]);
    let r = advise(&mut c, &["SAMPLES", "100000"]);
    let fired = rules(&r);
    for id in [
        "fork-headroom-low",
        "slowlog-misconfigured",
        "bgsave-failing",
        "no-auth",
        "small-strings-to-hash",
        "long-key-names",
        "big-collection",
        "noeviction-on-cache",
        "rss-peak",
    ] {
        assert!(
            fired.contains(&id.to_string()),
            "{id} did not fire; fired: {fired:?}"
        );
    }
    assert_eq!(r.findings[0].severity, "critical");

    // Eviction settings on a small instance.
    let small = Server::with_config(&["maxmemory 4mb", "maxmemory-policy volatile-lru"]);
    let mut c = small.conn();
    for i in 0..20 {
        let _ = redis::cmd("SET")
            .arg(format!("plain:{i}"))
            .arg("x".repeat(1000))
            .query::<()>(&mut c);
    }
    ok(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-random"],
    );
    for i in 0..400 {
        let _ = redis::cmd("SET")
            .arg(format!("fill:{i}"))
            .arg("y".repeat(20_000))
            .query::<()>(&mut c);
    }
    ok(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "volatile-lru"],
    );
    let r = advise(&mut c, &["SAMPLES", "0"]);
    let fired = rules(&r);
    for id in [
        "evictions-occurring",
        "volatile-policy-without-ttl",
        "memory-near-limit",
    ] {
        assert!(
            fired.contains(&id.to_string()),
            "{id} did not fire; fired: {fired:?}"
        );
    }
}

/// Keys nobody reads: restored with an idle time of 8 days (LRU) or a counter of 0 (LFU), they
/// show in the keyspace profile's idle or LFU buckets, and `cold-memory` names their pattern
/// and the bytes a TTL would free. Recently written keys beside them do not count.
#[test]
fn cold_memory_finds_keys_nobody_reads() {
    for policy in ["allkeys-lru", "allkeys-lfu"] {
        let server = Server::with_config(&[&format!("maxmemory-policy {policy}")]);
        let mut c = server.conn();
        ok(&mut c, &["SET", "template", &"a".repeat(1000)]);
        let dump: Vec<u8> = redis::cmd("DUMP").arg("template").query(&mut c).unwrap();
        let mut p = redis::pipe();
        for i in 0..300 {
            let restore = p
                .cmd("RESTORE")
                .arg(format!("archive:{i}"))
                .arg(0)
                .arg(&dump);
            if policy == "allkeys-lru" {
                restore.arg("IDLETIME").arg(8 * 86_400);
            } else {
                restore.arg("FREQ").arg(0);
            }
            restore.ignore();
        }
        for i in 0..100 {
            p.cmd("SET").arg(format!("cache:{i}")).arg("v").ignore();
        }
        let _: () = p.query(&mut c).unwrap();
        ok(&mut c, &["DEL", "template"]);
        let r = advise(&mut c, &["SAMPLES", "1000"]);
        let f = r
            .findings
            .iter()
            .find(|f| f.rule == "cold-memory")
            .unwrap_or_else(|| panic!("{policy}: no cold-memory finding: {:?}", rules(&r)));
        assert_eq!(f.subjects, ["archive:*"], "{policy}");
        assert!(
            f.evidence.contains("archive:*: 300 of 300 keys"),
            "{policy}: {}",
            f.evidence
        );
        // 300 keys of MEMORY USAGE's size each.
        let each: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg("archive:0")
            .query(&mut c)
            .unwrap();
        assert_eq!(
            f.effect.as_deref(),
            Some(format!("about {} B could be freed", 300 * each).as_str()),
            "{policy}"
        );
    }
}

#[test]
fn a_key_missed_now_is_found_behind_a_long_history_of_other_traffic() {
    // 400,000 writes, then, once they have left the 1 s recent window, 10,000 reads of a key
    // that does not exist: 2.4% of all accesses since the start (under the rule's 5%), nearly
    // all of the last second's. The advice must find it, and say over which window. (Every
    // command is counted, so the figures do not depend on where sampling slices fall.)
    let server =
        Server::with_config(&["opt.hotkeys-window-seconds 1", "opt.hotkeys-sample-ratio 1"]);
    let mut c = server.conn();
    let mut p = redis::pipe();
    for batch in 0..400 {
        let mut mset = redis::cmd("MSET");
        for i in 0..1000 {
            mset.arg(format!("history:{}", batch * 1000 + i)).arg("v");
        }
        p.add_command(mset).ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    for _ in 0..10 {
        let mut p = redis::pipe();
        for _ in 0..1000 {
            p.cmd("GET").arg("user:404:profile").ignore();
        }
        let _: () = p.query(&mut c).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let r = advise(&mut c, &["SAMPLES", "0"]);
    let f = finding(&r, "hot-missing-key");
    assert_eq!(f.subjects, ["user:404:profile"]);
    assert!(f.evidence.contains("over the last"), "{}", f.evidence);
    // Since the start, it is under the threshold: the total window alone would miss it.
    let total: opt_core::report::HotKeysReport =
        opt_harness::json(&mut c, &["OPT.HOTKEYS", "TYPE", "miss", "COUNT", "1"]);
    assert!(total.entries[0].share < 0.05, "{:?}", total.entries[0]);
}

#[test]
fn without_samples_every_key_of_a_db_up_to_200_000_is_looked_at() {
    // One big key among 90,000: a sample of 10,000 holds it about one time in nine; without
    // SAMPLES the advice looks at every key of a db this size, and finds it every time.
    let server = Server::start();
    let mut c = server.conn();
    ok(&mut c, &["DEBUG", "POPULATE", "90000", "page"]);
    ok(&mut c, &["SETRANGE", "report:big", "5242879", "x"]);
    for _ in 0..3 {
        let r = advise(&mut c, &[]);
        assert_eq!(finding(&r, "big-key").subjects, ["report:big"]);
    }
}

#[test]
fn a_replica_that_lost_its_master_and_writes_refused_for_want_of_replicas_are_found() {
    let mut master = Server::start();
    let replica = master.start_replica(opt_harness::ServerOptions::default());
    let mut r = replica.conn();
    assert!(
        !rules(&advise(&mut r, &["SAMPLES", "0"])).contains(&"replica-link-down".to_string()),
        "fired while the link is up"
    );

    // The master wants two replicas acknowledging writes and has one: writes are refused.
    let mut m = master.conn();
    ok(&mut m, &["CONFIG", "SET", "min-replicas-to-write", "2"]);
    assert!(err(&mut m, &["SET", "k", "v"]).contains("NOREPLICAS"));
    // A login with a wrong password too: both error replies are counted and named.
    let mut other = master.conn();
    assert!(err(&mut other, &["AUTH", "nobody", "wrong"]).contains("WRONGPASS"));
    let report = advise(&mut m, &["SAMPLES", "0"]);
    let f = finding(&report, "min-replicas-unmet");
    assert_eq!(f.severity, "critical");
    assert!(
        f.evidence.contains("min-replicas-to-write 2"),
        "{}",
        f.evidence
    );
    let e = &finding(&report, "errors-returned").evidence;
    assert!(
        e.contains("NOREPLICAS 1 (") && e.contains("WRONGPASS 1 ("),
        "{e}"
    );

    // The replication series an alert on lag needs, on both sides, by redis_exporter's names.
    let (code, out, err) = optctl(&["--url", &master.url(), "metrics"], &[]);
    assert_eq!(code, 0, "{err}");
    // (Its state may still be `wait_bgsave` on the master's side: the replica's link is up
    // before the master has seen the sync through.)
    let lag = format!(
        "redis_connected_slave_lag_seconds{{slave_ip=\"127.0.0.1\",slave_port=\"{}\",\
         slave_state=\"",
        replica.port
    );
    assert!(
        out.lines().any(|l| l.starts_with(&lag)),
        "{lag} missing:\n{out}"
    );
    let (code, out, err) = optctl(&["--url", &replica.url(), "metrics"], &[]);
    assert_eq!(code, 0, "{err}");
    let io = format!(
        "redis_master_last_io_seconds_ago{{master_host=\"127.0.0.1\",master_port=\"{}\"}}",
        master.port
    );
    assert!(
        out.lines().any(|l| l.starts_with(&io)),
        "{io} missing:\n{out}"
    );

    let master_port = master.port;
    master.stop();
    replica.wait_for(
        "the replica to see its master gone",
        std::time::Duration::from_secs(10),
        |c| {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(c)
                .unwrap_or_default();
            info.contains("master_link_status:down")
        },
    );
    let report = advise(&mut r, &["SAMPLES", "0"]);
    let f = finding(&report, "replica-link-down");
    assert_eq!(f.severity, "critical");
    assert!(
        f.evidence
            .contains(&format!("master 127.0.0.1:{master_port}")),
        "{}",
        f.evidence
    );
    assert_eq!(
        f.fix[0],
        format!("redis-cli -h 127.0.0.1 -p {master_port} PING")
    );
    // The exporter's series for alerting on it, by redis_exporter's name.
    let (code, out, err) = optctl(&["--url", &replica.url(), "metrics"], &[]);
    assert_eq!(code, 0, "{err}");
    let link = format!(
        "redis_master_link_up{{master_host=\"127.0.0.1\",master_port=\"{master_port}\"}} 0"
    );
    assert!(out.lines().any(|l| l == link), "{link} missing:\n{out}");
}

#[test]
fn a_sampled_advice_clears_big_keys_only_after_a_pass_found_them() {
    // 30,000 keys and SAMPLES 1000: a sample. Without a pass over every key, big-key is not
    // checked (a sample would miss the one big key most of the time) and says why.
    let server = Server::start();
    let mut c = server.conn();
    ok(&mut c, &["DEBUG", "POPULATE", "30000", "page"]);
    let r = advise(&mut c, &["SAMPLES", "1000"]);
    assert!(
        r.skipped
            .iter()
            .any(|(id, why)| id == "big-key" && why.contains("no pass over every key")),
        "{:?}",
        r.skipped
    );
    // After one FULL the sampled advice measures the big key whole, every time.
    ok(&mut c, &["SETRANGE", "report:big", "5242879", "x"]);
    ok(&mut c, &["OPT.KEYSPACE", "FULL"]);
    for _ in 0..3 {
        let r = advise(&mut c, &["SAMPLES", "1000"]);
        assert_eq!(finding(&r, "big-key").subjects, ["report:big"]);
    }
    // And with no big key left, it passes: checked, not skipped.
    ok(&mut c, &["DEL", "report:big"]);
    let r = advise(&mut c, &["SAMPLES", "1000"]);
    assert!(!rules(&r).contains(&"big-key".to_string()));
    assert!(
        !r.skipped.iter().any(|(id, _)| id == "big-key"),
        "{:?}",
        r.skipped
    );
}

/// Clients that build an EVAL script per call: Redis 7.0 caches every text (1,100 here), newer
/// servers evict beyond 500 and count it; either way `script-cache-churn` names the numbers,
/// and a script whose text stays the same with its values in ARGV does not. `fork-slow` reads
/// the fork this server just made for a BGSAVE, a quick one.
#[test]
fn scripts_built_per_call_are_found_and_a_quick_fork_is_not() {
    let server = Server::start();
    let mut c = server.conn();
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("EVAL")
            .arg("return redis.call('SET', KEYS[1], ARGV[1])")
            .arg(1)
            .arg(format!("k:{i}"))
            .arg(i)
            .ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    let _: String = redis::cmd("BGSAVE").query(&mut c).unwrap();
    server.wait_for("the BGSAVE", std::time::Duration::from_secs(10), |c| {
        opt_harness::info_int(c, "persistence", "rdb_bgsave_in_progress") == 0
            && opt_harness::info_int(c, "stats", "latest_fork_usec") > 0
    });
    let r = advise(&mut c, &["SAMPLES", "0"]);
    let fired = rules(&r);
    let skipped: Vec<&str> = r.skipped.iter().map(|(id, _)| id.as_str()).collect();
    for id in ["script-cache-churn", "fork-slow"] {
        assert!(
            !fired.contains(&id.to_string()) && !skipped.contains(&id),
            "{id}: fired {fired:?}, skipped {skipped:?}"
        );
    }

    let mut p = redis::pipe();
    for i in 0..1100 {
        p.cmd("EVAL")
            .arg(format!("return redis.call('SET', KEYS[1], '{i}')"))
            .arg(1)
            .arg(format!("k:{i}"))
            .ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    let r = advise(&mut c, &["SAMPLES", "0", "CATEGORY", "memory"]);
    let f = finding(&r, "script-cache-churn");
    assert_eq!(f.severity, "warning");
    let cached = opt_harness::info_int(&mut c, "memory", "number_of_cached_scripts");
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    match info
        .lines()
        .find_map(|l| l.strip_prefix("evicted_scripts:"))
    {
        // Redis 7.4+ and Valkey 8+ keep 500 EVAL scripts.
        Some(evicted) => {
            assert!(evicted.trim().parse::<u64>().unwrap() >= 600, "{info}");
            assert!(
                f.evidence.contains(&format!("{} evicted", evicted.trim())),
                "{}",
                f.evidence
            );
        }
        None => assert!(
            cached >= 1101 && f.evidence.starts_with(&format!("{cached} scripts cached")),
            "{cached}: {}",
            f.evidence
        ),
    }
    assert!(
        f.fix.iter().any(|c| c == "SCRIPT FLUSH ASYNC"),
        "{:?}",
        f.fix
    );
}

/// Valkey 8.1+ logs replies larger than `commandlog-reply-larger-than` in COMMANDLOG:
/// `large-replies` names the commands with their largest reply. Where the server has no
/// COMMANDLOG (Redis, Valkey 8.0) the rule is skipped with the reason.
#[test]
fn large_replies_are_found_in_valkeys_command_log() {
    let server = Server::start();
    let mut c = server.conn();
    ok(&mut c, &["SET", "report:big", &"r".repeat(2_500_000)]);
    for _ in 0..3 {
        let _: Vec<u8> = redis::cmd("GET").arg("report:big").query(&mut c).unwrap();
    }
    let r = advise(&mut c, &["SAMPLES", "0", "CATEGORY", "traffic"]);
    if !opt_harness::has_command(&mut c, "COMMANDLOG") {
        let why = r
            .skipped
            .iter()
            .find(|(id, _)| id == "large-replies")
            .map(|(_, why)| why.as_str());
        assert_eq!(why, Some("COMMANDLOG is not available (Valkey 8.1+ only)"));
        return;
    }
    let f = finding(&r, "large-replies");
    assert_eq!(f.severity, "warning");
    assert!(
        f.evidence.starts_with("get x3 (largest 2.5 MB)"),
        "{}",
        f.evidence
    );
    // Small replies are not logged.
    ok(&mut c, &["COMMANDLOG", "RESET", "large-reply"]);
    let _: Option<String> = redis::cmd("GET").arg("missing").query(&mut c).unwrap();
    let r = advise(&mut c, &["SAMPLES", "0", "CATEGORY", "traffic"]);
    assert!(
        !rules(&r).contains(&"large-replies".to_string()),
        "{:?}",
        rules(&r)
    );
}
