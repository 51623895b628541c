//! OPT.HOTKEYS against a real server: reads, writes and misses counted apart, Lua and MULTI,
//! namespaces, the recent window, replicas, ACL, sampling, loading, I/O threads, and bad input.

use std::time::Duration;

use opt_core::report::HotKeysReport;
use opt_harness::redis::{self, Connection, Value};
use opt_harness::{info_int, ok, optctl, Server, ServerOptions};

/// A server that counts every command, so counts are exact.
fn exact_server(extra: &[&str]) -> Server {
    let mut config = vec!["opt.hotkeys-sample-ratio 1".to_string()];
    config.extend(extra.iter().map(|s| s.to_string()));
    Server::start_with(ServerOptions {
        config,
        ..ServerOptions::default()
    })
}

fn hotkeys(con: &mut Connection, args: &[&str]) -> HotKeysReport {
    opt_harness::json(con, &[&["OPT.HOTKEYS"], args].concat())
}

fn count_of(r: &HotKeysReport, name: &str) -> Option<u64> {
    r.entries.iter().find(|e| e.name == name).map(|e| e.count)
}

fn run(con: &mut Connection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: Value = cmd.query(con).expect("command");
}

#[test]
fn reads_writes_and_a_hot_missing_key_are_counted_apart() {
    let server = exact_server(&[]);
    let mut con = server.conn();
    for _ in 0..5 {
        run(&mut con, &["SET", "user:1:profile", "v"]);
    }
    for _ in 0..50 {
        run(&mut con, &["GET", "user:1:profile"]);
    }
    for _ in 0..30 {
        run(&mut con, &["GET", "cache:missing"]);
    }
    run(&mut con, &["MSET", "a", "1", "b", "2"]);
    run(&mut con, &["HSET", "h", "f", "v"]);
    run(&mut con, &["HGETALL", "h"]);

    let r = hotkeys(&mut con, &[]);
    assert_eq!(r.sample_ratio, 1);
    assert_eq!(r.sampled_accesses, 5 + 50 + 30 + 2 + 2);
    assert_eq!(r.entries[0].name, "user:1:profile");
    assert_eq!((r.entries[0].count, r.entries[0].error), (55, 0));
    assert_eq!((r.entries[0].reads, r.entries[0].writes), (50, 5));
    assert_eq!(r.entries[1].name, "cache:missing");
    assert_eq!(r.entries[1].misses, 30);
    assert_eq!(count_of(&r, "a"), Some(1));
    assert_eq!(count_of(&r, "h"), Some(2));
    assert_eq!(r.detection_floor, 0, "nothing evicted yet");

    let misses = hotkeys(&mut con, &["TYPE", "miss"]);
    assert_eq!(misses.entries.len(), 1, "{:?}", misses.entries);
    assert_eq!(
        (misses.entries[0].name.as_str(), misses.entries[0].count),
        ("cache:missing", 30)
    );
    let writes = hotkeys(&mut con, &["TYPE", "write", "COUNT", "2"]);
    assert_eq!(writes.entries[0].name, "user:1:profile");
    assert_eq!(writes.entries[0].count, 5);
    assert_eq!(writes.entries.len(), 2);

    // RESP replies are structured too.
    let v: Value = redis::cmd("OPT.HOTKEYS")
        .arg("COUNT")
        .arg("1")
        .query(&mut server.conn_resp3())
        .unwrap();
    assert!(matches!(v, Value::Map(_)), "{v:?}");

    let info: String = redis::cmd("INFO").arg("opt").query(&mut con).unwrap();
    assert!(info.contains("opt_hotkeys_sampled_accesses:89"), "{info}");
    assert!(info.contains("opt_hotkeys_memory_bytes:"), "{info}");

    let ok: String = redis::cmd("OPT.HOTKEYS")
        .arg("RESET")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    let r = hotkeys(&mut con, &[]);
    assert!(
        r.entries.iter().all(|e| e.name != "user:1:profile"),
        "{:?}",
        r.entries
    );
}

/// With I/O threads reading and writing for many clients at once (`io-threads 4`), every
/// command is still counted once, with its kind: the filter and the keymiss events run on
/// the main thread, whichever thread parsed the command.
#[test]
fn io_threads_lose_and_double_count_nothing() {
    let server = exact_server(&["io-threads 4", "io-threads-do-reads yes"]);
    const CLIENTS: usize = 48;
    const ROUNDS: usize = 60;
    const PIPELINE: usize = 99;
    run(&mut server.conn(), &["SET", "hot", "v"]);
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            let server = &server;
            s.spawn(move || {
                let mut con = server.conn();
                for round in 0..ROUNDS {
                    let mut pipe = redis::pipe();
                    for i in 0..PIPELINE / 3 {
                        pipe.cmd("SET")
                            .arg(format!("k:{client}:{round}:{i}"))
                            .arg("v")
                            .ignore();
                        pipe.cmd("GET").arg("hot").ignore();
                        pipe.cmd("GET").arg("missing").ignore();
                    }
                    pipe.query::<()>(&mut con).expect("pipeline");
                }
            });
        }
    });
    let mut con = server.conn();
    let threaded = info_int(&mut con, "stats", "io_threaded_reads_processed");
    let r = hotkeys(&mut con, &["COUNT", "2"]);
    let each = (CLIENTS * ROUNDS * PIPELINE / 3) as u64;
    assert_eq!(
        r.sampled_accesses,
        3 * each + 1,
        "threaded reads: {threaded}"
    );
    let hot = r.entries.iter().find(|e| e.name == "hot").expect("hot");
    assert_eq!(
        (hot.count, hot.reads, hot.writes, hot.misses),
        (each + 1, each, 1, 0)
    );
    let missing = r
        .entries
        .iter()
        .find(|e| e.name == "missing")
        .expect("missing");
    assert_eq!((missing.count, missing.misses), (each, each));
    // Patterns are counted for one access in 16, so their counts are estimates.
    let writes = hotkeys(&mut con, &["TYPE", "write", "NAMESPACES"]);
    assert_eq!(writes.entries[0].name, "k:*:*:*");
    assert!(
        writes.entries[0].count.abs_diff(each) < each / 10,
        "{:?}",
        writes.entries
    );
    assert!(
        threaded > 0,
        "the I/O threads read nothing: the test tested nothing"
    );
}

#[test]
fn commands_from_lua_and_multi_count_once() {
    let server = exact_server(&[]);
    let mut con = server.conn();
    run(&mut con, &["SET", "lua:key", "v"]);
    for _ in 0..10 {
        let _: Value = redis::cmd("EVAL")
            .arg("redis.call('GET', KEYS[1]); return redis.call('GET', 'lua:other')")
            .arg(1)
            .arg("lua:key")
            .query(&mut con)
            .unwrap();
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    for _ in 0..7 {
        pipe.cmd("GET").arg("multi:key");
    }
    let _: Value = pipe.query(&mut con).unwrap();
    let r = hotkeys(&mut con, &["COUNT", "10"]);
    // EVAL's declared key is not counted on its own: the GET inside the script is.
    assert_eq!(count_of(&r, "lua:key"), Some(11));
    assert_eq!(count_of(&r, "lua:other"), Some(10));
    assert_eq!(count_of(&r, "multi:key"), Some(7));
}

/// The reads and writes counted for `name`; fails the test when it is not listed.
fn reads_and_writes(r: &HotKeysReport, name: &str) -> (u64, u64) {
    r.entries
        .iter()
        .find(|e| e.name == name)
        .map(|e| (e.reads, e.writes))
        .unwrap_or_else(|| panic!("{name} not in {:?}", r.entries))
}

/// Commands that read some keys and write others are counted key by key, from their key
/// specs: the sources of SUNIONSTORE, COPY and BITOP are reads, their destinations writes.
#[test]
fn store_commands_count_sources_as_reads_and_destinations_as_writes() {
    let server = exact_server(&[]);
    let mut con = server.conn();
    run(&mut con, &["SADD", "src:a", "1"]);
    run(&mut con, &["SADD", "src:b", "2"]);
    run(&mut con, &["SET", "bits:a", "x"]);
    run(&mut con, &["SET", "bits:b", "y"]);
    ok(&mut con, &["OPT.HOTKEYS", "RESET"]);
    for _ in 0..3 {
        run(&mut con, &["SUNIONSTORE", "dst:union", "src:a", "src:b"]);
        run(&mut con, &["COPY", "src:a", "dst:copy", "REPLACE"]);
        run(&mut con, &["BITOP", "AND", "dst:bits", "bits:a", "bits:b"]);
        run(
            &mut con,
            &["LMOVE", "list:from", "list:to", "LEFT", "RIGHT"],
        );
    }
    let r = hotkeys(&mut con, &["COUNT", "20"]);
    let split = |name: &str| reads_and_writes(&r, name);
    assert_eq!(split("src:a"), (6, 0));
    assert_eq!(split("src:b"), (3, 0));
    assert_eq!(split("bits:a"), (3, 0));
    assert_eq!(split("dst:union"), (0, 3));
    assert_eq!(split("dst:copy"), (0, 3));
    assert_eq!(split("dst:bits"), (0, 3));
    // LMOVE writes both of its keys (its source loses an element).
    assert_eq!(split("list:from"), (0, 3));
    assert_eq!(split("list:to"), (0, 3));

    // Commands whose keys an argument counts (movable keys): followed from their key specs,
    // each key with its spec's access, where the server's key lookup would call every key a
    // write (and finds none for MSETEX on Redis 8.6).
    run(&mut con, &["ZADD", "z:a", "1", "m"]);
    run(&mut con, &["ZADD", "z:b", "2", "m"]);
    run(&mut con, &["SADD", "s:a", "x"]);
    run(&mut con, &["XADD", "x:a", "*", "f", "v"]);
    run(&mut con, &["GEOADD", "g:src", "13.36", "38.11", "palermo"]);
    ok(&mut con, &["OPT.HOTKEYS", "RESET"]);
    let has_msetex = opt_harness::has_command(&mut con, "MSETEX");
    for _ in 0..3 {
        run(
            &mut con,
            &[
                "ZUNIONSTORE",
                "z:dest",
                "2",
                "z:a",
                "z:b",
                "WEIGHTS",
                "1",
                "2",
            ],
        );
        run(&mut con, &["ZUNION", "2", "z:a", "z:b"]);
        run(&mut con, &["SINTERCARD", "2", "s:a", "s:b"]);
        run(&mut con, &["RPUSH", "l:b", "v"]);
        run(&mut con, &["LMPOP", "2", "l:a", "l:b", "LEFT"]);
        // Keys after a keyword: XREAD's STREAMS (the first half of what follows), GEORADIUS's
        // STORE.
        run(
            &mut con,
            &["XREAD", "COUNT", "1", "STREAMS", "x:a", "x:b", "0", "0"],
        );
        run(
            &mut con,
            &[
                "GEORADIUS",
                "g:src",
                "15",
                "37",
                "200",
                "km",
                "STORE",
                "g:dst",
            ],
        );
        if has_msetex {
            run(
                &mut con,
                &["MSETEX", "2", "m:1", "v", "m:2", "v", "EX", "100"],
            );
        }
    }
    let r = hotkeys(&mut con, &["COUNT", "30"]);
    let split = |name: &str| reads_and_writes(&r, name);
    assert_eq!(split("z:dest"), (0, 3));
    assert_eq!(split("z:a"), (6, 0));
    assert_eq!(split("z:b"), (6, 0));
    assert_eq!(split("s:a"), (3, 0));
    assert_eq!(split("s:b"), (3, 0));
    assert_eq!(split("l:a"), (0, 3));
    assert_eq!(split("l:b"), (0, 6));
    assert_eq!(split("x:a"), (3, 0));
    assert_eq!(split("x:b"), (3, 0));
    assert_eq!(split("g:src"), (3, 0));
    assert_eq!(split("g:dst"), (0, 3));
    if has_msetex {
        assert_eq!(split("m:1"), (0, 3));
        assert_eq!(split("m:2"), (0, 3));
    }
    assert!(r.entries.iter().all(|e| ![
        "2", "v", "0", "km", "WEIGHTS", "LEFT", "STREAMS", "STORE"
    ]
    .contains(&e.name.as_str())));
}

/// Loaded with tracking off, the module subscribes to nothing (misses would cost a module
/// context each); turned on at runtime, it counts reads and misses from then on.
#[test]
fn tracking_turned_on_at_runtime_counts_misses() {
    let server = exact_server(&["opt.hotkeys-enabled no"]);
    let mut con = server.conn();
    for _ in 0..5 {
        run(&mut con, &["GET", "absent:key"]);
    }
    assert_eq!(hotkeys(&mut con, &[]).sampled_accesses, 0);
    ok(&mut con, &["CONFIG", "SET", "opt.hotkeys-enabled", "yes"]);
    // The sampler looks at the configuration every 100 ms.
    server.wait_for("tracking to start", Duration::from_secs(5), |c| {
        run(c, &["GET", "probe"]);
        hotkeys(c, &[]).sampled_accesses > 0
    });
    for _ in 0..7 {
        run(&mut con, &["GET", "absent:key"]);
    }
    let r = hotkeys(&mut con, &["TYPE", "miss"]);
    let e = r.entries.iter().find(|e| e.name == "absent:key").unwrap();
    assert_eq!((e.reads, e.misses), (7, 7), "{:?}", r.entries);
}

#[test]
fn namespaces_roll_traffic_up_by_pattern() {
    let server = exact_server(&[]);
    let mut con = server.conn();
    let mut pipe = redis::pipe();
    for i in 0..6000 {
        pipe.cmd("GET").arg(format!("user:{i}:profile")).ignore();
        if i % 3 == 0 {
            pipe.cmd("GET")
                .arg(format!("session:{:032x}", i * 7919))
                .ignore();
        }
    }
    let _: () = pipe.query(&mut con).unwrap();
    let r = hotkeys(&mut con, &["NAMESPACES", "COUNT", "5"]);
    assert_eq!(r.view, "namespaces");
    assert_eq!(r.entries[0].name, "user:*:profile");
    assert_eq!(r.entries[1].name, "session:*");
    let share = r.entries[0].share;
    assert!((share - 0.75).abs() < 0.1, "user:*:profile share {share}");
}

#[test]
fn recent_window_shows_what_is_hot_now() {
    let server = exact_server(&["opt.hotkeys-window-seconds 1"]);
    let mut con = server.conn();
    for _ in 0..40 {
        run(&mut con, &["GET", "early"]);
    }
    // Two windows later the early key is no longer recent, but still in the total.
    std::thread::sleep(Duration::from_millis(3200));
    for _ in 0..10 {
        run(&mut con, &["GET", "late"]);
    }
    let recent = hotkeys(&mut con, &["WINDOW", "recent"]);
    assert_eq!(recent.window, "recent");
    assert_eq!(count_of(&recent, "early"), None, "{:?}", recent.entries);
    assert_eq!(count_of(&recent, "late"), Some(10));
    assert!(recent.entries[0].ops_per_sec > 0.0);
    let total = hotkeys(&mut con, &["WINDOW", "total"]);
    assert_eq!(count_of(&total, "early"), Some(40));
    assert_eq!(count_of(&total, "late"), Some(10));
}

#[test]
fn a_replica_counts_client_reads_and_never_the_replication_stream() {
    let master = exact_server(&[]);
    let replica = master.start_replica(ServerOptions {
        config: vec!["opt.hotkeys-sample-ratio 1".into()],
        ..ServerOptions::default()
    });
    let mut m = master.conn();
    for i in 0..200 {
        run(&mut m, &["SET", "written:on:master", &i.to_string()]);
    }
    replica.wait_for("the writes to replicate", Duration::from_secs(10), |c| {
        redis::cmd("GET")
            .arg("written:on:master")
            .query::<String>(c)
            .ok()
            .as_deref()
            == Some("199")
    });
    run(&mut m, &["SADD", "union:src", "a"]);
    run(&mut m, &["ZADD", "zunion:src", "1", "a"]);
    let mut r = replica.conn();
    let _: () = redis::cmd("OPT.HOTKEYS")
        .arg("RESET")
        .query(&mut r)
        .unwrap();
    for _ in 0..3 {
        run(&mut m, &["SET", "written:on:master", "x"]);
        // Commands that write one key and read others: the reads are the master's too.
        run(&mut m, &["SUNIONSTORE", "union:dest", "union:src"]);
        run(&mut m, &["ZUNIONSTORE", "zunion:dest", "1", "zunion:src"]);
    }
    for _ in 0..25 {
        run(&mut r, &["GET", "read:on:replica"]);
    }
    // Wait by replication offsets, not by reading the key (that read would count).
    let target = info_int(&mut m, "replication", "master_repl_offset");
    replica.wait_for(
        "the last write to replicate",
        Duration::from_secs(10),
        |c| info_int(c, "replication", "slave_repl_offset") >= target,
    );
    let report = hotkeys(&mut r, &["COUNT", "10"]);
    assert_eq!(count_of(&report, "read:on:replica"), Some(25));
    assert_eq!(report.entries.len(), 1, "{:?}", report.entries);
    // Reads of the replicated key sent to the replica count.
    run(&mut r, &["GET", "written:on:master"]);
    let report = hotkeys(&mut r, &["COUNT", "10"]);
    assert_eq!(count_of(&report, "written:on:master"), Some(1));
}

#[test]
fn nothing_is_counted_while_the_aof_loads() {
    let server = exact_server(&["appendonly yes"]);
    let mut con = server.conn();
    for i in 0..20 {
        run(&mut con, &["SET", "aof:key", &i.to_string()]);
    }
    let _: () = redis::cmd("OPT.HOTKEYS")
        .arg("RESET")
        .query(&mut con)
        .unwrap();
    let _: String = redis::cmd("DEBUG").arg("LOADAOF").query(&mut con).unwrap();
    let v: String = redis::cmd("GET").arg("aof:key").query(&mut con).unwrap();
    assert_eq!(v, "19");
    let r = hotkeys(&mut con, &[]);
    assert_eq!(
        count_of(&r, "aof:key"),
        Some(1),
        "only the GET: {:?}",
        r.entries
    );
}

/// At sample ratio 10 the filter is registered for about a tenth of the time, in slices at
/// random times; counts are scaled back by the commands seen. Steady traffic for two seconds
/// spans about twenty slices.
/// The default, auto (ratio 0): every command counts while fewer than
/// `opt.hotkeys-sample-budget` come a second, so a quiet server's counts are exact; a busy one
/// is sampled, about the budget a second, and its counts scaled back.
#[test]
fn auto_sampling_counts_all_when_quiet_and_samples_when_busy() {
    let server = Server::start();
    let mut con = server.conn();
    let budget: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("opt.hotkeys-sample-budget")
        .query(&mut con)
        .unwrap();
    assert_eq!(budget[1], "5000");
    // Let the sampler's first short slice pass, so the traffic below falls in 100 ms periods
    // of at most 400 commands: 4,000 a second at most, under the budget.
    std::thread::sleep(Duration::from_millis(150));
    for _ in 0..300 {
        run(&mut con, &["GET", "quiet:key"]);
    }
    for _ in 0..100 {
        run(&mut con, &["SET", "quiet:other", "v"]);
    }
    let r = hotkeys(&mut con, &[]);
    assert_eq!(r.sample_ratio, 1, "{r:?}");
    assert_eq!(count_of(&r, "quiet:key"), Some(300));
    assert_eq!(count_of(&r, "quiet:other"), Some(100));

    // Busy: a budget of 100 commands a second against tens of thousands.
    ok(
        &mut con,
        &["CONFIG", "SET", "opt.hotkeys-sample-budget", "100"],
    );
    ok(&mut con, &["OPT.HOTKEYS", "RESET"]);
    let mut sent = 0u64;
    for _ in 0..50 {
        let mut pipe = redis::pipe();
        for _ in 0..2000 {
            pipe.cmd("GET").arg("busy:key").ignore();
        }
        let _: () = pipe.query(&mut con).unwrap();
        sent += 2000;
    }
    let r = hotkeys(&mut con, &[]);
    let c = count_of(&r, "busy:key").unwrap() as f64;
    let sent = sent as f64;
    assert!(
        (c - sent).abs() < 0.05 * sent,
        "scaled count {c} for {sent} sent"
    );
    assert!(
        (r.sampled_accesses as f64) < sent / 4.0 && r.sample_ratio >= 4,
        "{} of {sent} recorded, ratio {}",
        r.sampled_accesses,
        r.sample_ratio
    );
}

#[test]
fn sampling_scales_counts_back() {
    let server = Server::with_config(&["opt.hotkeys-sample-ratio 10"]);
    let mut con = server.conn();
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < std::time::Duration::from_secs(2) {
        let mut pipe = redis::pipe();
        for _ in 0..20 {
            pipe.cmd("GET").arg("sampled:key").ignore();
        }
        let _: () = pipe.query(&mut con).unwrap();
        sent += 20;
    }
    let r = hotkeys(&mut con, &[]);
    assert_eq!(r.sample_ratio, 10);
    let c = count_of(&r, "sampled:key").unwrap() as f64;
    let sent = sent as f64;
    // Scaled by all commands over the ones seen: every command here reads this key.
    assert!(
        (c - sent).abs() < 0.05 * sent,
        "scaled count {c} for {sent} sent"
    );
    // Only a fraction was recorded (about a tenth; a third allows for timer jitter).
    assert!(
        (r.sampled_accesses as f64) < sent / 3.0,
        "{} of {sent}",
        r.sampled_accesses
    );
}

#[test]
fn only_admins_or_granted_users_see_key_names() {
    let server = exact_server(&[
        "user app on >app-pw ~* &* +@all -@admin",
        "user monitor on >mon-pw +opt.hotkeys +monitor",
    ]);
    let url = |user: &str, pw: &str| format!("redis://{user}:{pw}@127.0.0.1:{}", server.port);
    let mut app = redis::Client::open(url("app", "app-pw"))
        .unwrap()
        .get_connection()
        .unwrap();
    let err = redis::cmd("OPT.HOTKEYS")
        .query::<Value>(&mut app)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    let mut mon = redis::Client::open(url("monitor", "mon-pw"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: Value = redis::cmd("OPT.HOTKEYS")
        .query(&mut mon)
        .expect("granted user");
    let (code, _, err) = optctl(&["--url", &url("app", "app-pw"), "hotkeys"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not allow"), "{err}");
}

#[test]
fn bad_input_is_refused_and_capacity_resizes_at_runtime() {
    let server = exact_server(&["opt.hotkeys-capacity 64"]);
    let mut con = server.conn();
    for i in 0..200 {
        run(&mut con, &["GET", &format!("k{i}")]);
    }
    for (args, expect) in [
        (vec!["COUNT", "0"], "COUNT must be from 1 to 64"),
        (vec!["COUNT", "65"], "COUNT must be from 1 to 64"),
        (vec!["COUNT", "x"], "needs an integer"),
        (vec!["TYPE", "hot"], "TYPE must be one of"),
        (vec!["WINDOW", "week"], "WINDOW must be one of"),
        (vec!["BOGUS"], "unknown option 'BOGUS'"),
        (vec!["RESET", "NOW"], "RESET takes no other arguments"),
    ] {
        let mut cmd = redis::cmd("OPT.HOTKEYS");
        for a in &args {
            cmd.arg(*a);
        }
        let err = cmd.query::<Value>(&mut con).unwrap_err().to_string();
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    let before = hotkeys(&mut con, &["COUNT", "64"]);
    assert_eq!(before.capacity, 64);
    ok(&mut con, &["CONFIG", "SET", "opt.hotkeys-capacity", "16"]);
    let after = hotkeys(&mut con, &["COUNT", "16"]);
    assert_eq!((after.capacity, after.tracked), (16, 16));
    ok(&mut con, &["CONFIG", "SET", "opt.hotkeys-capacity", "4096"]);
    for _ in 0..5 {
        run(&mut con, &["GET", "after:grow"]);
    }
    let grown = hotkeys(&mut con, &["COUNT", "1"]);
    assert_eq!(grown.capacity, 4096);
    assert_eq!(grown.entries[0].name, "after:grow");
    ok(&mut con, &["CONFIG", "SET", "opt.hotkeys-enabled", "no"]);
    run(&mut con, &["GET", "while:disabled"]);
    let off = hotkeys(&mut con, &["COUNT", "100"]);
    assert_eq!(count_of(&off, "while:disabled"), None);
}

#[test]
fn optctl_hotkeys_prints_a_table_and_json() {
    let server = exact_server(&[]);
    let mut con = server.conn();
    for _ in 0..30 {
        run(&mut con, &["GET", "product:42"]);
    }
    for _ in 0..10 {
        run(&mut con, &["SET", "product:7", "x"]);
    }
    let (code, out, err) = optctl(&["--url", &server.url(), "hotkeys"], &[]);
    assert_eq!(code, 0, "{err}");
    let first = out.lines().find(|l| l.contains("product:42")).expect(&out);
    assert!(first.trim_start().starts_with('1'), "{out}");
    assert!(out.contains("product:7") && out.contains("floor"), "{out}");
    let (code, out, _) = optctl(&["--url", &server.url(), "hotkeys", "--namespaces"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("product:*"), "{out}");
    let (code, out, _) = optctl(
        &[
            "--url",
            &server.url(),
            "--json",
            "hotkeys",
            "--type",
            "write",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let r: HotKeysReport = serde_json::from_str(&out).unwrap();
    assert_eq!(r.entries[0].name, "product:7");
    let (code, _, err) = optctl(&["--url", &server.url(), "hotkeys", "--count", "0"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("COUNT must be from 1"), "{err}");
}

#[test]
fn a_quiet_window_keeps_its_counts_beside_a_sampled_busy_one() {
    // Auto sampling with a budget of 1,000 commands a second: 500 GETs of "quiet" over a
    // second, under the budget, so every one is recorded; the window ends; then 300,000
    // pipelined GETs of "busy", sampled. Scaling the whole history by one ratio (all commands
    // over those seen) multiplied "quiet" by the busy window's sampling; each window is now
    // scaled by its own.
    let server = Server::with_config(&[
        "opt.hotkeys-window-seconds 1",
        "opt.hotkeys-sample-budget 1000",
    ]);
    let mut c = server.conn();
    for _ in 0..20 {
        let mut p = redis::pipe();
        for _ in 0..25 {
            p.cmd("GET").arg("quiet").ignore();
        }
        let _: () = p.query(&mut c).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(2200));
    for _ in 0..300 {
        let mut p = redis::pipe();
        for _ in 0..1_000 {
            p.cmd("GET").arg("busy").ignore();
        }
        let _: () = p.query(&mut c).unwrap();
    }
    let r = hotkeys(&mut c, &["COUNT", "5"]);
    assert!(r.sample_ratio >= 2, "the busy window was sampled: {r:?}");
    let quiet = count_of(&r, "quiet").expect("quiet is listed");
    assert!((450..=550).contains(&quiet), "quiet counted {quiet}: {r:?}");
    assert!(count_of(&r, "busy").is_some_and(|n| n > 100_000), "{r:?}");
}
