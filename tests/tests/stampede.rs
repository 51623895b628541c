//! Cache-stampede protection against a real server: OPT.FETCH's actions, the single-flight
//! lock under concurrent clients, lock expiry and tokens, SOFT invalidation, replicas,
//! persistence of freshness, and bad input.

use std::collections::HashMap;
use std::time::Duration;

use opt_harness::redis::{self, Connection, Value};
use opt_harness::{
    each_key, encodings_and_sizes, err, info_int, ok, opt_set_many_with, Server, ServerOptions,
};

/// OPT.FETCH's reply as field -> value (RESP2 flat array).
fn fetch(c: &mut Connection, key: &str, extra: &[&str]) -> HashMap<String, Value> {
    let mut cmd = redis::cmd("OPT.FETCH");
    cmd.arg(key);
    for a in extra {
        cmd.arg(*a);
    }
    let v: Vec<Value> = cmd.query(c).expect("OPT.FETCH");
    v.chunks(2)
        .map(|kv| match &kv[0] {
            Value::BulkString(b) => (String::from_utf8_lossy(b).into_owned(), kv[1].clone()),
            other => panic!("field name {other:?}"),
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

fn action(f: &HashMap<String, Value>) -> String {
    text(&f["action"])
}

/// Reading a value must not change it: the module key API would turn a short (int or embstr)
/// string raw, which costs memory and, on a replica, makes the dataset differ from its master.
#[test]
fn reads_leave_values_as_they_were() {
    let server = Server::start();
    let mut c = server.conn();
    let long = "L".repeat(100);
    // The longest value Valkey 9.1 embeds with a 1-byte name (read through GET), and the
    // shortest the module reads in place there (raw everywhere).
    let (edge, past_edge) = ("E".repeat(112), "P".repeat(117));
    // (name, value, SET's options): the two at the edge without a TTL, which leaves the most
    // room to embed.
    let ttl: &[&str] = &["EX", "100"];
    let values = [
        ("n", "12345", ttl),
        ("s", "short", ttl),
        ("l", long.as_str(), ttl),
        ("e", edge.as_str(), &[]),
        ("p", past_edge.as_str(), &[]),
    ];
    let names = values.map(|(k, _, _)| k);
    // Written by SET, which stores integers as int; tagged afterwards.
    for (k, v, options) in values {
        ok(&mut c, &[&["SET", k, v][..], options].concat());
        ok(&mut c, &["OPT.TAG", k, "t"]);
    }
    let before = encodings_and_sizes(&mut c, &names);
    assert_eq!(
        (before[0].0.as_str(), before[1].0.as_str()),
        ("int", "embstr")
    );
    for (k, v, _) in values {
        let f = fetch(&mut c, k, &[]);
        assert_eq!(
            (action(&f), text(&f["value"])),
            ("hit".into(), v.to_string())
        );
        // NX with GET on an existing key: the old value comes back and nothing is written.
        let old: Value = redis::cmd("OPT.SET")
            .arg(k)
            .arg("other")
            .arg("NX")
            .arg("GET")
            .arg("TAGS")
            .arg("t")
            .query(&mut c)
            .unwrap();
        assert_eq!(text(&old), v);
    }
    assert_eq!(encodings_and_sizes(&mut c, &names), before);
}

#[test]
fn each_action() {
    let server = Server::start();
    let mut c = server.conn();
    // A miss without a lock: recompute.
    let f = fetch(&mut c, "k", &[]);
    assert_eq!(
        (action(&f), f["value"].clone()),
        ("recompute".into(), Value::Nil)
    );
    // A fresh value: hit, with its remaining ttl.
    ok(
        &mut c,
        &[
            "OPT.SET", "k", "v1", "PX", "400", "DELTA", "1", "STALE", "10",
        ],
    );
    let f = fetch(&mut c, "k", &["LOCK", "1000"]);
    assert_eq!(action(&f), "hit");
    assert_eq!(text(&f["value"]), "v1");
    let Value::Int(ttl) = f["ttl_ms"] else {
        panic!("{f:?}")
    };
    assert!((1..=400).contains(&ttl), "{ttl}");
    // Past its expiry but within STALE: one caller recomputes, the others get the stale copy.
    std::thread::sleep(Duration::from_millis(450));
    let first = fetch(&mut c, "k", &["LOCK", "1000"]);
    assert_eq!(action(&first), "recompute");
    assert_eq!(text(&first["lock"]), "taken");
    let Value::Int(ttl) = first["ttl_ms"] else {
        panic!()
    };
    assert!(ttl < 0, "stale values report a negative ttl: {ttl}");
    let second = fetch(&mut c, "k", &["LOCK", "1000"]);
    assert_eq!(
        (action(&second), text(&second["value"])),
        ("stale".into(), "v1".into())
    );
    // The recomputing caller writes with its token; everyone hits again.
    let token = text(&first["token"]);
    ok(
        &mut c,
        &[
            "OPT.SET", "k", "v2", "EX", "60", "DELTA", "1", "STALE", "10", "TOKEN", &token,
        ],
    );
    let f = fetch(&mut c, "k", &["LOCK", "1000"]);
    assert_eq!((action(&f), text(&f["value"])), ("hit".into(), "v2".into()));
    // A miss while someone recomputes: wait.
    assert_eq!(
        action(&fetch(&mut c, "gone", &["LOCK", "1000"])),
        "recompute"
    );
    assert_eq!(action(&fetch(&mut c, "gone", &["LOCK", "1000"])), "wait");
    // XFetch: a value that takes long to compute is recomputed before it expires.
    ok(
        &mut c,
        &["OPT.SET", "slow", "v", "PX", "2000", "DELTA", "100000"],
    );
    let early = (0..20)
        .filter(|_| action(&fetch(&mut c, "slow", &["BETA", "1"])) == "recompute")
        .count();
    assert!(early > 15, "recomputed early {early} of 20 times");
    ok(
        &mut c,
        &["OPT.SET", "quick", "v", "EX", "3600", "DELTA", "1"],
    );
    let early = (0..50)
        .filter(|_| action(&fetch(&mut c, "quick", &[])) == "recompute")
        .count();
    assert_eq!(
        early, 0,
        "far from expiry a quick value is never recomputed early"
    );
    // Values written without freshness are plain hits; RESP3 gets a map.
    ok(&mut c, &["SET", "plain", "p"]);
    assert_eq!(action(&fetch(&mut c, "plain", &["LOCK", "10"])), "hit");
    let v: Value = redis::cmd("OPT.FETCH")
        .arg("plain")
        .query(&mut server.conn_resp3())
        .unwrap();
    assert!(matches!(v, Value::Map(_)), "{v:?}");
}

#[test]
fn single_flight_under_concurrent_clients() {
    let server = Server::start();
    let port = server.port;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                let mut c = opt_harness::connect(port);
                b.wait();
                action(&fetch(&mut c, "hot", &["LOCK", "5000"]))
            })
        })
        .collect();
    let actions: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let recomputes = actions.iter().filter(|a| *a == "recompute").count();
    assert_eq!(recomputes, 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "wait").count(), 49);
}

#[test]
fn locks_expire_and_tokens_are_checked() {
    let server = Server::start();
    let mut c = server.conn();
    let first = fetch(&mut c, "k", &["LOCK", "150"]);
    assert_eq!(action(&first), "recompute");
    assert_eq!(action(&fetch(&mut c, "k", &["LOCK", "150"])), "wait");
    std::thread::sleep(Duration::from_millis(200));
    let second = fetch(&mut c, "k", &["LOCK", "5000"]);
    assert_eq!(action(&second), "recompute", "the first lock timed out");
    // The first caller's token no longer matches: its late write is refused, nothing changes.
    let e = err(
        &mut c,
        &[
            "OPT.SET",
            "k",
            "late",
            "EX",
            "60",
            "TOKEN",
            &text(&first["token"]),
        ],
    );
    assert!(e.contains("TOKEN does not match"), "{e}");
    assert_eq!(ok(&mut c, &["EXISTS", "k"]), Value::Int(0));
    let e = err(
        &mut c,
        &["OPT.SET", "k", "v", "EX", "60", "TOKEN", "not-hex"],
    );
    assert!(e.contains("TOKEN must be a token"), "{e}");
    ok(
        &mut c,
        &[
            "OPT.SET",
            "k",
            "fresh",
            "EX",
            "60",
            "TOKEN",
            &text(&second["token"]),
        ],
    );
    assert_eq!(action(&fetch(&mut c, "k", &["LOCK", "5000"])), "hit");
}

/// `opt.max-locks` bounds the locks held: past it a caller is told to recompute without one
/// (`unavailable-limit`), and a lock released by the write of its value makes room again.
#[test]
fn the_number_of_locks_held_is_bounded() {
    let server = Server::start();
    let mut c = server.conn();
    ok(&mut c, &["CONFIG", "SET", "opt.max-locks", "3"]);
    let mut tokens = Vec::new();
    for k in ["a", "b", "c"] {
        let f = fetch(&mut c, k, &["LOCK", "60000"]);
        assert_eq!(
            (action(&f), text(&f["lock"])),
            ("recompute".into(), "taken".into())
        );
        tokens.push(text(&f["token"]));
    }
    assert_eq!(
        opt_harness::info_int(&mut c, "opt", "opt_stampede_locks"),
        3
    );
    let f = fetch(&mut c, "d", &["LOCK", "60000"]);
    assert_eq!(
        (action(&f), text(&f["lock"]), f["token"].clone()),
        ("recompute".into(), "unavailable-limit".into(), Value::Nil)
    );
    // A held lock still holds: other callers of "a" wait.
    let f = fetch(&mut c, "a", &["LOCK", "60000"]);
    assert_eq!(
        (action(&f), text(&f["lock"])),
        ("wait".into(), "held-by-other".into())
    );
    // Writing "a" with its token ends its lock: "d" gets one now.
    ok(
        &mut c,
        &[
            "OPT.SET", "a", "v", "EX", "60", "TOKEN", &tokens[0], "TAGS", "t",
        ],
    );
    let f = fetch(&mut c, "d", &["LOCK", "60000"]);
    assert_eq!(text(&f["lock"]), "taken");
    assert_eq!(
        opt_harness::info_int(&mut c, "opt", "opt_stampede_locks"),
        3
    );
    let e = err(&mut c, &["CONFIG", "SET", "opt.max-locks", "0"]);
    assert!(e.contains("opt.max-locks"), "{e}");
}

#[test]
fn soft_invalidation_serves_stale_copies_while_one_recomputes() {
    let server = Server::start();
    let mut c = server.conn();
    for i in 0..5 {
        ok(
            &mut c,
            &[
                "OPT.SET",
                &format!("page:{i}"),
                "old",
                "EX",
                "600",
                "TAGS",
                "user:1",
            ],
        );
    }
    assert_eq!(
        ok(&mut c, &["OPT.INVALIDATE", "user:1", "SOFT"]),
        Value::Int(5)
    );
    assert_eq!(
        ok(&mut c, &["EXISTS", "page:0"]),
        Value::Int(1),
        "SOFT deletes nothing"
    );
    let first = fetch(&mut c, "page:0", &["LOCK", "1000"]);
    assert_eq!(action(&first), "recompute");
    let other = fetch(&mut c, "page:0", &["LOCK", "1000"]);
    assert_eq!(
        (action(&other), text(&other["value"])),
        ("stale".into(), "old".into())
    );
    let tags: Vec<String> = redis::cmd("OPT.TAGS").arg("page:0").query(&mut c).unwrap();
    assert_eq!(
        tags,
        vec!["user:1".to_string()],
        "stale keys keep their tags"
    );
    ok(
        &mut c,
        &[
            "OPT.SET",
            "page:0",
            "new",
            "EX",
            "600",
            "TOKEN",
            &text(&first["token"]),
            "TAGS",
            "user:1",
        ],
    );
    assert_eq!(action(&fetch(&mut c, "page:0", &["LOCK", "1000"])), "hit");
    // A hard invalidation still deletes them all.
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "user:1"]), Value::Int(5));
}

#[test]
fn a_replica_answers_without_taking_locks_and_follows_freshness() {
    let master = Server::start();
    let replica = master.start_replica(ServerOptions::default());
    let mut m = master.conn();
    ok(
        &mut m,
        &[
            "OPT.SET", "k", "v", "PX", "300", "DELTA", "1", "STALE", "30", "TAGS", "t",
        ],
    );
    ok(&mut m, &["OPT.SET", "p", "v", "EX", "600", "TAGS", "soft"]);
    ok(&mut m, &["OPT.INVALIDATE", "soft", "SOFT"]);
    let mut r = replica.conn();
    replica.wait_for("the writes to replicate", Duration::from_secs(10), |c| {
        redis::cmd("EXISTS").arg("p").query::<i64>(c).unwrap_or(0) == 1
    });
    std::thread::sleep(Duration::from_millis(400));
    let f = fetch(&mut r, "k", &["LOCK", "1000"]);
    assert_eq!(action(&f), "recompute", "stale on the replica too: {f:?}");
    assert_eq!(text(&f["lock"]), "unavailable-on-replica");
    assert_eq!(f["token"], Value::Nil);
    let f = fetch(&mut r, "p", &[]);
    assert_eq!(action(&f), "recompute", "SOFT reached the replica: {f:?}");
    let f = fetch(&mut r, "missing", &["LOCK", "1000"]);
    assert_eq!(text(&f["lock"]), "unavailable-on-replica");
}

/// `OPT.SET ... FRESHUNTIL t` gives the logical expiry apart from the key's TTL, which KEEPTTL
/// keeps (or which the key does without): what replicas and the AOF receive for a value whose
/// freshness no longer matches its TTL (marked stale by SOFT, then moved by MIGRATE).
#[test]
fn freshuntil_sets_the_logical_expiry_apart_from_the_ttl() {
    let master = Server::start();
    let replica = master.start_replica(ServerOptions::default());
    let mut m = master.conn();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    ok(&mut m, &["SET", "kept", "old", "EX", "500"]);
    let past = (now_ms() - 5_000).to_string();
    let future = (now_ms() + 50_000).to_string();
    ok(
        &mut m,
        &[
            "OPT.SET",
            "kept",
            "v",
            "KEEPTTL",
            "FRESHUNTIL",
            &past,
            "STALE",
            "30",
            "TAGS",
            "t",
        ],
    );
    ok(&mut m, &["OPT.SET", "none", "v", "FRESHUNTIL", &future]);
    let pttl: i64 = redis::cmd("PTTL").arg("kept").query(&mut m).unwrap();
    assert!(
        pttl > 490_000,
        "KEEPTTL kept the TTL, STALE added nothing: {pttl}"
    );
    let f = fetch(&mut m, "kept", &[]);
    let Value::Int(ttl) = f["ttl_ms"] else {
        panic!("{f:?}")
    };
    assert!((-6_000..=-4_000).contains(&ttl), "stale for 5 s: {ttl}");
    assert_eq!(text(&f["value"]), "v");
    let pttl: i64 = redis::cmd("PTTL").arg("none").query(&mut m).unwrap();
    assert_eq!(pttl, -1);
    let f = fetch(&mut m, "none", &[]);
    let Value::Int(ttl) = f["ttl_ms"] else {
        panic!("{f:?}")
    };
    assert!((40_000..=50_000).contains(&ttl), "fresh for 50 s: {ttl}");
    let mut r = replica.conn();
    replica.wait_for("the writes to replicate", Duration::from_secs(10), |c| {
        redis::cmd("EXISTS")
            .arg("none")
            .query::<i64>(c)
            .unwrap_or(0)
            == 1
    });
    let pttl: i64 = redis::cmd("PTTL").arg("kept").query(&mut r).unwrap();
    assert!(pttl > 490_000, "the replica kept the TTL: {pttl}");
    let f = fetch(&mut r, "kept", &[]);
    let Value::Int(ttl) = f["ttl_ms"] else {
        panic!("{f:?}")
    };
    assert!(
        (-6_000..=-4_000).contains(&ttl),
        "stale on the replica: {ttl}"
    );
    let pttl: i64 = redis::cmd("PTTL").arg("none").query(&mut r).unwrap();
    assert_eq!(pttl, -1);
}

#[test]
fn freshness_survives_a_reload() {
    let mut server = Server::start();
    let mut c = server.conn();
    ok(
        &mut c,
        &[
            "OPT.SET", "k", "v", "EX", "100", "DELTA", "5", "STALE", "50",
        ],
    );
    let ttl_before: i64 = redis::cmd("TTL").arg("k").query(&mut c).unwrap();
    assert!(
        ttl_before > 100,
        "the key lives STALE longer than its expiry: {ttl_before}"
    );
    ok(&mut c, &["DEBUG", "RELOAD"]);
    let f = fetch(&mut c, "k", &[]);
    let Value::Int(ttl) = f["ttl_ms"] else {
        panic!("{f:?}")
    };
    assert!((90_000..=100_000).contains(&ttl), "logical ttl kept: {ttl}");
    ok(&mut c, &["SAVE"]);
    server.restart();
    let mut c = server.conn();
    let f = fetch(&mut c, "k", &[]);
    let Value::Int(ttl) = f["ttl_ms"] else {
        panic!("{f:?}")
    };
    assert!(ttl <= 100_000 && ttl > 80_000, "after restart: {ttl}");
}

#[test]
fn bad_input_changes_nothing() {
    let server = Server::start();
    let mut c = server.conn();
    ok(&mut c, &["HSET", "h", "f", "v"]);
    for (args, expect) in [
        (
            vec!["OPT.SET", "k", "v", "EX", "10", "DELTA", "-5"],
            "DELTA must be from 0",
        ),
        (
            vec!["OPT.SET", "k", "v", "EX", "10", "DELTA", "999999999999"],
            "DELTA must be from 0",
        ),
        (
            vec!["OPT.SET", "k", "v", "EX", "10", "STALE", "-1"],
            "STALE must be from 0",
        ),
        (
            vec!["OPT.SET", "k", "v", "STALE", "10"],
            "STALE needs an expiry",
        ),
        (vec!["OPT.SET", "k", "v"], "needs TAGS"),
        (
            vec!["OPT.SET", "k", "v", "EX", "10", "FRESHUNTIL", "5"],
            "FRESHUNTIL goes with KEEPTTL or no expiry",
        ),
        (
            vec!["OPT.SET", "k", "v", "FRESHUNTIL", "0"],
            "FRESHUNTIL must be from 1",
        ),
        (
            vec!["OPT.SET", "k", "v", "FRESHUNTIL", "soon"],
            "FRESHUNTIL needs an integer",
        ),
        (
            vec!["OPT.SET", "k", "v", "FRESHUNTIL", "5", "FRESHUNTIL", "6"],
            "conflicts with another option",
        ),
        (
            vec!["OPT.FETCH", "k", "BETA", "-1"],
            "BETA must be a number",
        ),
        (
            vec!["OPT.FETCH", "k", "BETA", "nan"],
            "BETA must be a number",
        ),
        (
            vec!["OPT.FETCH", "k", "BETA", "1e9"],
            "BETA must be a number",
        ),
        (vec!["OPT.FETCH", "k", "LOCK", "0"], "LOCK must be from 1"),
        (
            vec!["OPT.FETCH", "k", "LOCK", "99999999999"],
            "LOCK must be from 1",
        ),
        (vec!["OPT.FETCH", "k", "NOPE"], "unknown option"),
        (vec!["OPT.FETCH", "h"], "WRONGTYPE"),
        (
            vec!["OPT.INVALIDATE", "t", "SOFT", "ASYNC"],
            "ASYNC does not apply",
        ),
    ] {
        let e = err(&mut c, &args);
        assert!(e.contains(expect), "{args:?}: {e}");
    }
    assert_eq!(ok(&mut c, &["EXISTS", "k"]), Value::Int(0));
    // No lock was taken by the refused calls.
    assert_eq!(action(&fetch(&mut c, "k", &["LOCK", "1000"])), "recompute");
}

/// Once the last key with freshness has gone, the module gives back the room its freshness
/// table kept for its largest size (about 4 MB for 50,000 keys, measured below), which
/// `used_memory` and so `maxmemory` count.
#[test]
fn the_freshness_table_gives_its_room_back_once_its_last_key_has_gone() {
    let server = Server::start();
    let mut c = server.conn();
    let used = |c: &mut Connection| info_int(c, "memory", "used_memory");
    let before = used(&mut c);
    opt_set_many_with(
        &mut c,
        (0..50_000).map(|i| format!("fresh:{i}")),
        &["EX", "3600", "DELTA", "10"],
    );
    let full = used(&mut c) - before;
    each_key(&mut c, "DEL", (0..50_000).map(|i| format!("fresh:{i}")));
    // One more command through the module settles the index and frees what it held.
    ok(&mut c, &["OPT.TAGS", "fresh:0"]);
    let left = used(&mut c) - before;
    // The keys themselves are gone either way. Measured on Redis 7.0: with the table kept,
    // 5.5 of the 11.8 MB the writes took stayed; with its room given back 1.1 MB, most of it
    // the server's own key table, which it shrinks later (0.1 to 0.2 MB on 8.6 and Valkey).
    assert!(
        left < full / 4,
        "{full} bytes for the keys, {left} left after deleting them"
    );
}
