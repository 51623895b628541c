//! Tag-based invalidation against real servers: the commands, every way a key leaves the
//! keyspace, persistence (RDB, AOF with and without preamble, DEBUG RELOAD), replicas after
//! full and partial resync and a switchover, CLIENT TRACKING, keyspace notifications, ACL,
//! limits, bad input.

use std::time::Duration;

use opt_core::report::TagInfoReport;
use opt_harness::redis::{self, Connection, Value};
use opt_harness::{
    command as cmd, each_key, err, has_command, info_int, ok, opt_set_many, tag_info, Server,
    ServerOptions,
};

fn tags(con: &mut Connection, key: &str) -> Vec<String> {
    let mut t: Vec<String> = redis::cmd("OPT.TAGS").arg(key).query(con).unwrap();
    t.sort();
    t
}

fn info(con: &mut Connection) -> TagInfoReport {
    opt_harness::tag_info(con)
}

fn exists(con: &mut Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(con).unwrap() == 1
}

#[test]
fn set_tag_untag_invalidate() {
    let server = Server::start();
    let mut c = server.conn();
    assert_eq!(
        ok(
            &mut c,
            &["OPT.SET", "page:1", "a", "EX", "100", "TAGS", "user:42", "post:7"]
        ),
        Value::Okay
    );
    ok(&mut c, &["OPT.SET", "page:2", "b", "TAGS", "user:42"]);
    ok(&mut c, &["SADD", "set:1", "m"]);
    assert_eq!(
        ok(&mut c, &["OPT.TAG", "set:1", "user:42", "extra"]),
        Value::Int(2)
    );
    assert_eq!(tags(&mut c, "page:1"), vec!["post:7", "user:42"]);
    let ttl: i64 = redis::cmd("TTL").arg("page:1").query(&mut c).unwrap();
    assert!((95..=100).contains(&ttl), "SET options apply: ttl {ttl}");
    assert_eq!(
        ok(&mut c, &["OPT.UNTAG", "set:1", "extra", "nope"]),
        Value::Int(1)
    );
    // SET semantics: NX on an existing key writes nothing, and keeps the old tags.
    assert_eq!(
        ok(&mut c, &["OPT.SET", "page:2", "x", "NX", "TAGS", "other"]),
        Value::Nil
    );
    assert_eq!(tags(&mut c, "page:2"), vec!["user:42"]);
    assert_eq!(
        ok(
            &mut c,
            &["OPT.SET", "page:2", "c", "GET", "TAGS", "user:42", "v2"]
        ),
        Value::BulkString(b"b".to_vec())
    );
    assert_eq!(tags(&mut c, "page:2"), vec!["user:42", "v2"]);
    let (cursor, keys): (String, Vec<String>) = redis::cmd("OPT.TAGKEYS")
        .arg("user:42")
        .arg("COUNT")
        .arg(2)
        .query(&mut c)
        .unwrap();
    assert_eq!(keys.len(), 2);
    let (cursor, rest): (String, Vec<String>) = redis::cmd("OPT.TAGKEYS")
        .arg("user:42")
        .arg("CURSOR")
        .arg(&cursor)
        .arg("COUNT")
        .arg(2)
        .query(&mut c)
        .unwrap();
    assert_eq!((cursor.as_str(), rest.len()), ("0", 1));

    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "user:42"]), Value::Int(3));
    for k in ["page:1", "page:2", "set:1"] {
        assert!(!exists(&mut c, k), "{k} survived");
    }
    let i = info(&mut c);
    assert_eq!((i.keys, i.tags, i.pairs), (0, 0, 0), "{i:?}");
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "user:42"]), Value::Int(0));
    ok(&mut c, &["OPT.SET", "lazy", "v", "TAGS", "t"]);
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "t", "ASYNC"]), Value::Int(1));
    assert!(!exists(&mut c, "lazy"));
}

/// Which writes drop a key's tags (the value is replaced) and which keep them (the value is
/// changed in place), on every server: Redis 8.2+ tells the index through `overwritten`
/// events, older servers and Valkey through each command's own event.
#[test]
fn replacing_writes_drop_tags_and_in_place_writes_keep_them() {
    let server = Server::start();
    let mut c = server.conn();
    let tag = |c: &mut Connection, k: &str| {
        ok(c, &["OPT.TAG", k, &format!("own:{k}")]);
    };
    // In place: the tags stay.
    for (k, setup, write) in [
        ("l", vec!["RPUSH", "l", "a"], vec!["LPUSH", "l", "b"]),
        ("n", vec!["SET", "n", "1"], vec!["INCR", "n"]),
        ("s", vec!["SET", "s", "x"], vec!["APPEND", "s", "y"]),
        (
            "r",
            vec!["SET", "r", "abc"],
            vec!["SETRANGE", "r", "1", "z"],
        ),
        (
            "h",
            vec!["HSET", "h", "f", "v"],
            vec!["HSET", "h", "g", "w"],
        ),
        (
            "z",
            vec!["ZADD", "z", "1", "a"],
            vec!["ZADD", "z", "2", "b"],
        ),
        ("e", vec!["SET", "e", "x"], vec!["EXPIRE", "e", "100"]),
    ] {
        ok(&mut c, &setup);
        tag(&mut c, k);
        ok(&mut c, &write);
        assert_eq!(
            tags(&mut c, k),
            vec![format!("own:{k}")],
            "{write:?} keeps the tags"
        );
    }
    // Replaced: the tags go.
    ok(&mut c, &["SADD", "src", "m"]);
    ok(&mut c, &["ZADD", "zsrc", "1", "m"]);
    ok(&mut c, &["SET", "plain", "v"]);
    for (k, write) in [
        ("a1", vec!["SET", "a1", "w"]),
        ("a2", vec!["MSET", "a2", "w", "other", "x"]),
        ("a3", vec!["BITOP", "OR", "a3", "plain"]),
        ("a4", vec!["SUNIONSTORE", "a4", "src"]),
        ("a5", vec!["ZUNIONSTORE", "a5", "1", "zsrc"]),
        ("a6", vec!["SORT", "src", "ALPHA", "STORE", "a6"]),
        ("a7", vec!["COPY", "plain", "a7", "REPLACE"]),
        ("a8", vec!["SET", "a8", "w", "GET"]),
    ] {
        ok(&mut c, &["SET", k, "old"]);
        tag(&mut c, k);
        ok(&mut c, &write);
        assert!(tags(&mut c, k).is_empty(), "{write:?} drops the tags");
    }
    // RENAME onto a tagged key: the destination carries the source's tags, not its own.
    ok(&mut c, &["SET", "from", "1"]);
    tag(&mut c, "from");
    ok(&mut c, &["SET", "to", "2"]);
    tag(&mut c, "to");
    ok(&mut c, &["RENAME", "from", "to"]);
    assert_eq!(tags(&mut c, "to"), vec!["own:from"]);
    // A RENAME to a new name, then a SET there: that SET replaces the value, tags and all.
    ok(&mut c, &["RENAME", "to", "fresh"]);
    assert_eq!(tags(&mut c, "fresh"), vec!["own:from"]);
    ok(&mut c, &["SET", "fresh", "3"]);
    assert!(tags(&mut c, "fresh").is_empty());
    // The same inside one transaction and one script: the SET still drops the tags, the
    // RENAME onto a tagged key still carries them.
    for src in ["m1", "m3"] {
        ok(&mut c, &["SET", src, "1"]);
        tag(&mut c, src);
    }
    ok(&mut c, &["SET", "m4", "old"]);
    tag(&mut c, "m4");
    let _: Value = redis::pipe()
        .atomic()
        .cmd("RENAME")
        .arg("m1")
        .arg("m2")
        .cmd("SET")
        .arg("m2")
        .arg("new")
        .cmd("RENAME")
        .arg("m3")
        .arg("m4")
        .query(&mut c)
        .unwrap();
    assert!(tags(&mut c, "m2").is_empty(), "SET after RENAME in MULTI");
    assert_eq!(
        tags(&mut c, "m4"),
        vec!["own:m3"],
        "RENAME onto a tagged key in MULTI"
    );
    ok(&mut c, &["SET", "s1", "1"]);
    tag(&mut c, "s1");
    ok(
        &mut c,
        &[
            "EVAL",
            "redis.call('RENAME', KEYS[1], KEYS[2]); redis.call('SET', KEYS[2], 'x')",
            "2",
            "s1",
            "s2",
        ],
    );
    assert!(
        tags(&mut c, "s2").is_empty(),
        "SET after RENAME in a script"
    );
    // The index counts only what is left: l, n, s, r, h, z, e and m4.
    assert_eq!(info(&mut c).keys, 8);
}

/// OPT.TAGINFO: the overview ranks the selected db's tags (most keys first, ties by name);
/// asked about one tag it gives that tag's keys and ranks nothing.
#[test]
fn taginfo_ranks_the_largest_tags_and_answers_for_one_tag() {
    let server = Server::start();
    let mut c = server.conn();
    for i in 0..15 {
        let mut tags = vec![format!("t{i:02}")];
        if i < 5 {
            tags.push("five".into());
        }
        if i < 3 {
            tags.push("three".into());
        }
        let mut set = redis::cmd("OPT.SET");
        set.arg(format!("k{i}")).arg("v").arg("TAGS").arg(&tags);
        let _: () = set.query(&mut c).unwrap();
    }
    let overview = info(&mut c);
    assert_eq!((overview.keys, overview.tags, overview.pairs), (15, 17, 23));
    assert_eq!(overview.tag, None);
    let ranked: Vec<(&str, u64)> = overview
        .largest
        .iter()
        .map(|t| (t.tag.as_str(), t.keys))
        .collect();
    assert_eq!(
        ranked,
        [
            ("five", 5),
            ("three", 3),
            ("t00", 1),
            ("t01", 1),
            ("t02", 1),
            ("t03", 1),
            ("t04", 1),
            ("t05", 1),
            ("t06", 1),
            ("t07", 1)
        ]
    );
    let one: TagInfoReport = opt_harness::json(&mut c, &["OPT.TAGINFO", "five"]);
    assert_eq!((one.tag.as_deref(), one.keys), (Some("five"), 5));
    assert!(one.largest.is_empty(), "{:?}", one.largest);
    assert_eq!(
        (one.tags, one.pairs, &one.digest),
        (17, 23, &overview.digest)
    );
    let missing: TagInfoReport = opt_harness::json(&mut c, &["OPT.TAGINFO", "nope"]);
    assert_eq!(missing.keys, 0);
    // Another db has no tags of its own to rank.
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert!(info(&mut c).largest.is_empty());
    assert!(err(&mut c, &["OPT.TAGINFO", "a", "b"]).contains("at most one tag"));
}

/// Ranking the largest tags reads every tag. Past 100,000 tags OPT.TAGINFO blocks its client
/// and ranks them a part at a time (each at most `opt.scan-slice-us`), serving other clients
/// in between; inside MULTI it cannot block and ranks in one go. Both give the same answer,
/// and a client that leaves before its answer leaves nothing behind.
#[test]
fn a_big_tag_index_is_ranked_in_parts_and_inside_multi_at_once() {
    let server = Server::start();
    let mut c = server.conn();
    ok(&mut c, &["CONFIG", "SET", "opt.scan-slice-us", "100"]);
    let unique = 110_000;
    let mut pipe = redis::pipe();
    for i in 0..unique {
        let mut set = redis::cmd("OPT.SET");
        set.arg(format!("k:{i}"))
            .arg("v")
            .arg("TAGS")
            .arg(format!("u:{i}"));
        if i < 40 {
            set.arg("big");
        }
        if i < 25 {
            set.arg("mid");
        }
        pipe.add_command(set).ignore();
        if i % 10_000 == 9_999 {
            let _: () = pipe.query(&mut c).unwrap();
            pipe = redis::pipe();
        }
    }
    let mut singles: Vec<String> = (0..unique).map(|i| format!("u:{i}")).collect();
    singles.sort();
    let mut want = vec![("big".to_string(), 40), ("mid".to_string(), 25)];
    want.extend(singles.into_iter().take(8).map(|t| (t, 1)));
    let ranked = |r: &TagInfoReport| -> Vec<(String, u64)> {
        r.largest.iter().map(|t| (t.tag.clone(), t.keys)).collect()
    };
    let parts = |c: &mut Connection| info_int(c, "opt", "opt_tags_rank_parts");

    let before = parts(&mut c);
    let overview = info(&mut c);
    assert_eq!(ranked(&overview), want);
    assert_eq!((overview.keys, overview.tags), (unique, unique + 2));
    let used = parts(&mut c) - before;
    assert!(used >= 2, "ranked in {used} parts of 100 µs");

    // Inside MULTI: at once, the same answer, no part run.
    let before = parts(&mut c);
    let (report,): (String,) = redis::pipe()
        .atomic()
        .cmd("OPT.TAGINFO")
        .arg("FORMAT")
        .arg("JSON")
        .query(&mut c)
        .unwrap();
    let in_multi: TagInfoReport = serde_json::from_str(&report).unwrap();
    assert_eq!(ranked(&in_multi), want);
    assert_eq!(in_multi.digest, overview.digest);
    assert_eq!(parts(&mut c), before);

    // A client that leaves while its ranking runs.
    {
        use std::io::Write;
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        raw.write_all(b"*1\r\n$11\r\nOPT.TAGINFO\r\n").unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let again = info(&mut c);
    assert_eq!(ranked(&again), want);
    let log = server.log();
    assert!(!log.contains("panic"), "{log}");
}

/// KEEPTTL as SET has it: an existing key keeps its TTL (or its lack of one), a missing key is
/// written without one. The missing key case crashed Redis 8.6 (its RM_GetExpire reads an
/// empty key handle's value); the fuzz test found it.
#[test]
fn keepttl_keeps_an_existing_ttl_and_writes_a_missing_key_without_one() {
    let server = Server::start();
    let mut c = server.conn();
    let pttl =
        |c: &mut Connection, key: &str| -> i64 { redis::cmd("PTTL").arg(key).query(c).unwrap() };
    for (key, with_set) in [("fresh", false), ("fresh-set", true)] {
        let write = if with_set { "SET" } else { "OPT.SET" };
        let mut args = vec![write, key, "v", "KEEPTTL"];
        if !with_set {
            args.extend(["TAGS", "t"]);
        }
        ok(&mut c, &args);
        assert_eq!(pttl(&mut c, key), -1, "{write} KEEPTTL on a missing key");
    }
    ok(&mut c, &["SET", "timed", "old", "PX", "500000"]);
    ok(&mut c, &["OPT.SET", "timed", "new", "KEEPTTL", "TAGS", "t"]);
    assert!((400_000..=500_000).contains(&pttl(&mut c, "timed")));
    ok(
        &mut c,
        &[
            "OPT.SET", "fresh", "again", "KEEPTTL", "XX", "TAGS", "t", "u",
        ],
    );
    assert_eq!(pttl(&mut c, "fresh"), -1);
    assert_eq!(tags(&mut c, "fresh"), ["t", "u"]);
    assert_eq!(info(&mut c).keys, 2, "fresh and timed");
}

/// OPT.SET is SET plus tags: for every expiry option, NX/XX, and GET, on a missing key, a
/// string, a string with a TTL and a hash, OPT.SET on one key and SET on its twin give the
/// same reply (or the same error code), the same type, value, encoding, memory and TTL; and
/// OPT.SET's key carries its tag exactly when the value was written. Short values, and long
/// ones of two lengths (which OPT.SET writes over the old value in place).
#[test]
fn opt_set_behaves_as_set_for_every_option_and_key_state() {
    let server = Server::start();
    let mut c = server.conn();
    let time: Vec<String> = redis::cmd("TIME").query(&mut c).unwrap();
    let now_s: i64 = time[0].parse().unwrap();
    let (exat, pxat) = (
        (now_s + 300).to_string(),
        ((now_s + 400) * 1000).to_string(),
    );
    let expiries: [&[&str]; 6] = [
        &[],
        &["EX", "100"],
        &["PX", "200000"],
        &["EXAT", &exat],
        &["PXAT", &pxat],
        &["KEEPTTL"],
    ];
    let conditions: [&[&str]; 3] = [&[], &["NX"], &["XX"]];
    // 150 bytes: raw after SET everywhere, over the 116 bytes Valkey 8.1+ can embed with a
    // key, so written in place there too; and 300 bytes.
    let (mid_old, mid_new) = ("o".repeat(150), "n".repeat(150));
    let (long_old, long_new) = ("o".repeat(300), "n".repeat(300));
    let prepare = |c: &mut Connection, key: &str, state: &str, old: &str| match state {
        "missing" => {}
        "string" => drop(ok(c, &["SET", key, old])),
        "timed" => drop(ok(c, &["SET", key, old, "EX", "500"])),
        _ => drop(ok(c, &["HSET", key, "f", "v"])),
    };
    let observe = |c: &mut Connection, key: &str| {
        let kind: String = redis::cmd("TYPE").arg(key).query(c).unwrap();
        let (value, encoding, memory): (Option<String>, String, Option<i64>) = if kind == "string" {
            (
                redis::cmd("GET").arg(key).query(c).unwrap(),
                redis::cmd("OBJECT")
                    .arg("ENCODING")
                    .arg(key)
                    .query(c)
                    .unwrap(),
                redis::cmd("MEMORY").arg("USAGE").arg(key).query(c).unwrap(),
            )
        } else {
            (None, String::new(), None)
        };
        let pttl: i64 = redis::cmd("PTTL").arg(key).query(c).unwrap();
        (kind, value, encoding, memory, pttl)
    };
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    // Servers that write short values in place (Redis, Valkey 8.0; not Valkey 8.1+, which
    // embeds them with their key).
    let short_values_in_place = !info.contains("valkey_version:")
        || info.contains("valkey_version:8.0.")
        || info.contains("valkey_version:7.");
    let mut n = 0;
    for (old, new) in [
        ("old", "new"),
        (mid_old.as_str(), mid_new.as_str()),
        (long_old.as_str(), long_new.as_str()),
    ] {
        for state in ["missing", "string", "timed", "hash"] {
            for expiry in expiries {
                for condition in conditions {
                    for get in [false, true] {
                        n += 1;
                        // Twins of one name length, so that their memory compares.
                        let (plain, tagged) = (format!("set:{n:04}"), format!("opt:{n:04}"));
                        prepare(&mut c, &plain, state, old);
                        prepare(&mut c, &tagged, state, old);
                        let mut options: Vec<&str> = [expiry, condition].concat();
                        if get {
                            options.push("GET");
                        }
                        let set_args = [&["SET", plain.as_str(), new][..], &options].concat();
                        let opt_args = [
                            &["OPT.SET", tagged.as_str(), new][..],
                            &options,
                            &["TAGS", "t"],
                        ]
                        .concat();
                        let case = format!("{state} key, {} bytes, options {options:?}", new.len());
                        match (
                            opt_harness::command(&mut c, &set_args),
                            opt_harness::command(&mut c, &opt_args),
                        ) {
                            (Ok(a), Ok(b)) => assert_eq!(a, b, "{case}: replies"),
                            (Err(a), Err(b)) => assert_eq!(a.code(), b.code(), "{case}: {a} / {b}"),
                            (a, b) => panic!("{case}: SET {a:?}, OPT.SET {b:?}"),
                        }
                        let (want, got) = (observe(&mut c, &plain), observe(&mut c, &tagged));
                        assert_eq!((&want.0, &want.1), (&got.0, &got.1), "{case}: type, value");
                        // The one difference allowed: on Redis and Valkey 8.0 a short value
                        // written over one of the same length is written in place and stays
                        // raw, where SET embeds it (no memory difference there; README).
                        let short_in_place = short_values_in_place
                            && ["string", "timed"].contains(&state)
                            && new.len() == old.len()
                            && new.len() <= 44
                            && (want.2.as_str(), got.2.as_str()) == ("embstr", "raw");
                        if !short_in_place {
                            assert_eq!(want.2, got.2, "{case}: encoding");
                        }
                        // Memory is compared for the long values, which OPT.SET may write in
                        // place. A short value is a new object as with StringSet, where SET
                        // may keep the old one: on Valkey 9, which embeds a key's TTL in its
                        // object, SET over a key that had one keeps the larger object.
                        if new.len() > 116 {
                            assert_eq!(want.3, got.3, "{case}: memory");
                        }
                        if want.4 < 0 || got.4 < 0 {
                            assert_eq!(want.4, got.4, "{case}: PTTL");
                        } else {
                            assert!(
                                (want.4 - got.4).abs() < 2_000,
                                "{case}: PTTL {want:?} {got:?}"
                            );
                        }
                        let written = got.1.as_deref() == Some(new);
                        let expected: &[&str] = if written { &["t"] } else { &[] };
                        assert_eq!(tags(&mut c, &tagged), expected, "{case}: tags");
                    }
                }
            }
        }
    }
    assert_eq!(n, 432);
}

/// Key and tag names are bytes: OPT.TAGS and OPT.TAGKEYS give them back exactly (they went
/// through text before, which turned bytes that are not UTF-8 into U+FFFD), and reports show
/// such bytes as `\xNN`.
#[test]
fn binary_key_and_tag_names_come_back_as_they_are() {
    let server = Server::start();
    let mut c = server.conn();
    let key: &[u8] = b"\xff\xfe\x00k";
    let tag: &[u8] = b"t\xc3";
    let _: () = redis::cmd("OPT.SET")
        .arg(key)
        .arg("v")
        .arg("TAGS")
        .arg(tag)
        .arg("plain")
        .query(&mut c)
        .unwrap();
    let tags: Vec<Vec<u8>> = redis::cmd("OPT.TAGS").arg(key).query(&mut c).unwrap();
    assert_eq!(tags, vec![tag.to_vec(), b"plain".to_vec()]);
    let (cursor, keys): (String, Vec<Vec<u8>>) =
        redis::cmd("OPT.TAGKEYS").arg(tag).query(&mut c).unwrap();
    assert_eq!((cursor.as_str(), keys), ("0", vec![key.to_vec()]));
    let report: opt_core::report::KeyspaceReport =
        opt_harness::json(&mut c, &["OPT.KEYSPACE", "FULL"]);
    assert_eq!(report.top_by_bytes[0].key, "\\xff\\xfe\0k");
    let largest = info(&mut c).largest;
    assert!(largest.iter().any(|t| t.tag == "t\\xc3"), "{largest:?}");
    let deleted: i64 = redis::cmd("OPT.INVALIDATE").arg(tag).query(&mut c).unwrap();
    assert_eq!(deleted, 1);
}

fn used_memory(c: &mut Connection) -> i64 {
    opt_harness::info_int(c, "memory", "used_memory")
}

/// SWAPDB, FLUSHDB ASYNC and FLUSHALL ASYNC on big databases: the index's parts change places
/// or are handed to a thread to free (a million tagged keys held the server for about a second
/// on SWAPDB and 0.2 s on FLUSHDB ASYNC before), and everything is freed in the end.
#[test]
fn big_databases_swap_and_flush_and_free_everything() {
    let server = Server::start();
    let mut c = server.conn();
    let baseline = used_memory(&mut c);
    let n = 30_000;
    for db in [0, 1] {
        let mut p = redis::pipe();
        p.cmd("SELECT").arg(db).ignore();
        for i in 0..n {
            p.cmd("OPT.SET")
                .arg(format!("k{db}:{i}"))
                .arg("v")
                .arg("EX")
                .arg(600)
                .arg("DELTA")
                .arg(5)
                .arg("STALE")
                .arg(60)
                .arg("TAGS")
                .arg(format!("t{db}"))
                .arg(format!("u{}", i % 100))
                .ignore();
        }
        let _: () = p.query(&mut c).unwrap();
    }
    ok(&mut c, &["SELECT", "0"]);
    let before = info(&mut c);
    assert_eq!((before.keys, before.pairs), (2 * n, 4 * n));
    ok(&mut c, &["SWAPDB", "0", "1"]);
    assert_eq!(tags(&mut c, "k1:7"), vec!["t1", "u7"]);
    assert!(tags(&mut c, "k0:7").is_empty());
    // Freshness moved with its keys: OPT.FETCH counts k1:7's TTL to its logical expiry (600
    // s), not to the key's own (660 s, STALE included), which it would without its entry.
    let fetched: Vec<Value> = redis::cmd("OPT.FETCH").arg("k1:7").query(&mut c).unwrap();
    let ttl_ms = match &fetched[3] {
        redis::Value::Int(ms) => *ms,
        other => panic!("ttl_ms {other:?}"),
    };
    assert!((500_000..=600_000).contains(&ttl_ms), "ttl_ms {ttl_ms}");
    let swapped = info(&mut c);
    assert_eq!(swapped.pairs, before.pairs);
    assert_ne!(
        swapped.digest, before.digest,
        "the db is part of the digest"
    );
    ok(&mut c, &["SWAPDB", "1", "0"]);
    assert_eq!(info(&mut c).digest, before.digest);
    ok(&mut c, &["FLUSHDB", "ASYNC"]);
    let after = info(&mut c);
    assert_eq!((after.keys, after.pairs), (n, 2 * n));
    ok(&mut c, &["SELECT", "1"]);
    assert_eq!(tags(&mut c, "k1:7"), vec!["t1", "u7"]);
    ok(&mut c, &["FLUSHALL", "ASYNC"]);
    assert_eq!(info(&mut c).pairs, 0);
    // The thread that frees the flushed parts gives the memory back.
    server.wait_for(
        "memory freed after FLUSHALL ASYNC",
        Duration::from_secs(20),
        |c| used_memory(c) < baseline + 2_000_000,
    );
    // And the index works on.
    ok(&mut c, &["OPT.SET", "again", "v", "TAGS", "t"]);
    assert_eq!(info(&mut c).pairs, 1);
}

/// Valkey 8.1 and 9.0 leave a client in the destination database after MOVE or COPY ... DB
/// once a module follows keyspace events (valkey-io/valkey#4024), so its next commands would
/// run there; the module selects the client's own database back (module/src/client_db.rs).
/// Every server must end each case with the client where it was: the `probe` it writes last,
/// and the one written inside MULTI after the MOVE or COPY, are looked for in every database,
/// on the server and on its replica, whose link to the master runs the same commands (and
/// would otherwise apply the master's next writes to another database than the master did).
#[test]
fn a_client_stays_in_its_database_after_move_and_copy() {
    let server = Server::start();
    let replica = server.start_replica(ServerOptions::default());
    let mut admin = server.conn();
    let mut on_replica = replica.conn();
    // The index follows keyspace events from its first entry.
    ok(&mut admin, &["OPT.SET", "tagged", "v", "TAGS", "t"]);
    let cases: &[(&str, &[&[&str]], usize)] = &[
        ("MOVE", &[&["SET", "a", "v"], &["MOVE", "a", "1"]], 0),
        (
            "MOVE of a tagged key",
            &[&["OPT.SET", "b", "v", "TAGS", "t"], &["MOVE", "b", "1"]],
            0,
        ),
        (
            "COPY DB",
            &[&["SET", "c", "v"], &["COPY", "c", "c", "DB", "1"]],
            0,
        ),
        (
            "COPY DB from db 2",
            &[
                &["SELECT", "2"],
                &["SET", "d", "v"],
                &["COPY", "d", "d2", "REPLACE", "DB", "1"],
            ],
            2,
        ),
        (
            "COPY DB twice, the second refused",
            &[
                &["SET", "e", "v"],
                &["COPY", "e", "e", "DB", "1"],
                &["COPY", "e", "e", "DB", "1"],
            ],
            0,
        ),
        (
            "MOVE in MULTI",
            &[
                &["SET", "f", "v"],
                &["MULTI"],
                &["MOVE", "f", "1"],
                &["SET", "probe_in_multi", "x"],
                &["EXEC"],
            ],
            0,
        ),
        (
            "COPY DB in MULTI after a queued SELECT",
            &[
                &["SELECT", "2"],
                &["SET", "g", "v"],
                &["SELECT", "0"],
                &["MULTI"],
                &["SELECT", "2"],
                &["COPY", "g", "g", "DB", "1"],
                &["SET", "probe_in_multi", "x"],
                &["EXEC"],
            ],
            2,
        ),
    ];
    for (case, commands, want_db) in cases {
        let mut c = server.conn();
        for args in commands.iter() {
            ok(&mut c, args);
        }
        ok(&mut c, &["SET", "probe", "x"]);
        let synced: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut c).unwrap();
        assert_eq!(synced, 1, "{case}: the replica acknowledged");
        let in_multi = commands.iter().any(|args| args[0] == "MULTI");
        for db in 0..3 {
            for (con, side) in [(&mut admin, "server"), (&mut on_replica, "replica")] {
                ok(con, &["SELECT", &db.to_string()]);
                let want = db == *want_db;
                assert_eq!(exists(con, "probe"), want, "{case}: probe, db {db}, {side}");
                if in_multi {
                    assert_eq!(
                        exists(con, "probe_in_multi"),
                        want,
                        "{case}: the write after it in MULTI, db {db}, {side}"
                    );
                }
            }
            ok(&mut admin, &["DEL", "probe", "probe_in_multi"]);
        }
        ok(&mut admin, &["SELECT", "0"]);
    }
    // The tagged key moved with its tags.
    ok(&mut admin, &["SELECT", "1"]);
    assert_eq!(tags(&mut admin, "b"), vec!["t"]);
}

#[test]
fn every_way_a_key_leaves_the_keyspace_leaves_the_index() {
    let server = Server::with_config(&["maxmemory-policy allkeys-random"]);
    let mut c = server.conn();
    let tag = |c: &mut Connection, k: &str| {
        ok(c, &["OPT.SET", k, "v", "TAGS", "t", &format!("own:{k}")]);
    };
    for k in [
        "del", "unlink", "set", "restore", "expire", "lazy", "hash", "sunion",
    ] {
        tag(&mut c, k);
    }
    ok(&mut c, &["DEL", "del"]);
    ok(&mut c, &["UNLINK", "unlink"]);
    ok(&mut c, &["SET", "set", "plain"]);
    let dump: Vec<u8> = redis::cmd("DUMP").arg("hash").query(&mut c).unwrap();
    redis::cmd("RESTORE")
        .arg("restore")
        .arg(0)
        .arg(dump)
        .arg("REPLACE")
        .query::<()>(&mut c)
        .unwrap();
    ok(&mut c, &["PEXPIRE", "expire", "50"]);
    ok(&mut c, &["PEXPIRE", "lazy", "50"]);
    ok(&mut c, &["SADD", "src", "x"]);
    ok(&mut c, &["SUNIONSTORE", "sunion", "src"]);
    // HSET on a tagged hash keeps its tags (the key is modified, not replaced).
    ok(&mut c, &["DEL", "hash"]);
    ok(&mut c, &["HSET", "hash2", "f", "v"]);
    ok(&mut c, &["OPT.TAG", "hash2", "t"]);
    ok(&mut c, &["HSET", "hash2", "g", "w"]);
    assert_eq!(tags(&mut c, "hash2"), vec!["t"]);
    std::thread::sleep(Duration::from_millis(120));
    // "lazy" expires on access, "expire" by the active cycle or here.
    assert!(!exists(&mut c, "lazy"));
    // Left: set, restore, sunion, src, hash2.
    server.wait_for("active expiry", Duration::from_secs(5), |c| {
        redis::cmd("DBSIZE").query::<i64>(c).unwrap() == 5
    });
    let left: Vec<String> = redis::cmd("OPT.TAGKEYS")
        .arg("t")
        .query::<(String, Vec<String>)>(&mut c)
        .unwrap()
        .1;
    assert_eq!(
        left,
        vec!["hash2".to_string()],
        "only the live tagged key remains"
    );
    assert!(tags(&mut c, "set").is_empty(), "overwritten by SET");
    assert!(tags(&mut c, "restore").is_empty(), "replaced by RESTORE");
    assert!(tags(&mut c, "sunion").is_empty(), "replaced by SUNIONSTORE");

    // RENAME and MOVE carry tags; COPY does not copy them (documented).
    tag(&mut c, "r1");
    ok(&mut c, &["RENAME", "r1", "r2"]);
    assert_eq!(tags(&mut c, "r2"), vec!["own:r1", "t"]);
    assert!(tags(&mut c, "r1").is_empty());
    ok(&mut c, &["COPY", "r2", "r3"]);
    assert!(tags(&mut c, "r3").is_empty());
    ok(&mut c, &["MOVE", "r2", "1"]);
    assert!(tags(&mut c, "r2").is_empty());
    ok(&mut c, &["SELECT", "1"]);
    assert_eq!(tags(&mut c, "r2"), vec!["own:r1", "t"]);
    ok(&mut c, &["SWAPDB", "0", "1"]);
    assert!(tags(&mut c, "r2").is_empty());
    ok(&mut c, &["SELECT", "0"]);
    assert_eq!(tags(&mut c, "r2"), vec!["own:r1", "t"]);
    // db 1 now holds what db 0 held: hash2 is its one tagged key.
    ok(&mut c, &["FLUSHDB"]);
    assert_eq!(info(&mut c).keys, 1);
    ok(&mut c, &["SELECT", "1"]);
    assert_eq!(tags(&mut c, "hash2"), vec!["t"]);
    ok(&mut c, &["SELECT", "0"]);
    tag(&mut c, "f1");
    ok(&mut c, &["FLUSHALL"]);
    assert_eq!(info(&mut c).pairs, 0);

    // Eviction: fill past maxmemory with tagged keys; evicted ones leave the index.
    let used: i64 = {
        let i: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
        i.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "maxmemory",
            &(used + 2_000_000).to_string(),
        ],
    );
    let big = "x".repeat(10_000);
    for i in 0..600 {
        let _ = cmd(&mut c, &["OPT.SET", &format!("ev:{i}"), &big, "TAGS", "ev"]);
    }
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(dbsize < 600, "some keys were evicted ({dbsize} left)");
    let i = info(&mut c);
    assert_eq!(
        i.keys, dbsize as u64,
        "index holds exactly the live keys: {i:?}"
    );
}

/// A collection whose last element its own command removes is deleted by the server (the
/// command's event, then `del`): such keys leave the index, as do a string read by GETDEL and,
/// where the server has them, a hash whose every field expired (HPEXPIRE: Redis 7.4+, Valkey
/// 9) or was taken by HGETDEL (Redis 8), and strings replaced or deleted by the newer
/// servers' conditional writes. Keys left with elements keep their tags.
#[test]
fn collections_emptied_by_their_own_commands_leave_the_index() {
    let server = Server::start();
    let mut c = server.conn();
    let mut emptied: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        ("set", vec!["SADD", "set", "a"], vec!["SPOP", "set"]),
        ("srem", vec!["SADD", "srem", "a"], vec!["SREM", "srem", "a"]),
        ("list", vec!["RPUSH", "list", "a"], vec!["LPOP", "list"]),
        (
            "lmove",
            vec!["RPUSH", "lmove", "a"],
            vec!["LMOVE", "lmove", "dest", "LEFT", "RIGHT"],
        ),
        (
            "hash",
            vec!["HSET", "hash", "f", "v"],
            vec!["HDEL", "hash", "f"],
        ),
        (
            "zset",
            vec!["ZADD", "zset", "1", "a"],
            vec!["ZPOPMIN", "zset"],
        ),
        (
            "zrem",
            vec!["ZADD", "zrem", "1", "a", "2", "b"],
            vec!["ZREMRANGEBYSCORE", "zrem", "0", "5"],
        ),
        (
            "getdel",
            vec!["SET", "getdel", "v"],
            vec!["GETDEL", "getdel"],
        ),
        (
            "ltrim",
            vec!["RPUSH", "ltrim", "a", "b"],
            vec!["LTRIM", "ltrim", "5", "10"],
        ),
    ];
    if has_command(&mut c, "HGETDEL") {
        emptied.push((
            "hgetdel",
            vec!["HSET", "hgetdel", "f", "v"],
            vec!["HGETDEL", "hgetdel", "FIELDS", "1", "f"],
        ));
    }
    let field_ttls = has_command(&mut c, "HPEXPIRE");
    if field_ttls {
        emptied.push((
            "fields",
            vec!["HSET", "fields", "f", "v", "g", "w"],
            vec!["HPEXPIRE", "fields", "50", "FIELDS", "2", "f", "g"],
        ));
    }
    // Newer servers' conditional and multi-key writes: SET IFEQ (Redis 8.4+, Valkey 8.1+)
    // replaces the value, MSETEX (Redis 8.4+) too, DELEX (Redis 8.4+) and DELIFEQ (Valkey 9)
    // delete.
    let conditional: [(&str, &str, Vec<&str>); 4] = [
        (
            "MSETEX",
            "msetex",
            vec!["MSETEX", "1", "msetex", "w", "EX", "100"],
        ),
        ("DELEX", "delex", vec!["DELEX", "delex", "IFEQ", "v"]),
        ("DELIFEQ", "delifeq", vec!["DELIFEQ", "delifeq", "v"]),
        ("SET", "ifeq", vec!["SET", "ifeq", "w", "IFEQ", "v"]),
    ];
    let mut replaced = Vec::new();
    for (command, key, write) in conditional {
        let has_ifeq = command != "SET" || {
            let probe = cmd(&mut c, &["SET", "probe", "v", "IFEQ", "v"]);
            let _: i64 = redis::cmd("DEL").arg("probe").query(&mut c).unwrap();
            probe.is_ok()
        };
        if has_ifeq && has_command(&mut c, command) {
            ok(&mut c, &["SET", key, "v"]);
            replaced.push((key, write));
        }
    }
    for (key, write, _) in &emptied {
        ok(&mut c, write);
        ok(&mut c, &["OPT.TAG", key, "t", &format!("own:{key}")]);
    }
    for (key, _) in &replaced {
        ok(&mut c, &["OPT.TAG", key, "t", &format!("own:{key}")]);
    }
    // Keys that keep an element keep their tags.
    ok(&mut c, &["SADD", "kept", "a", "b"]);
    ok(&mut c, &["OPT.TAG", "kept", "t"]);
    ok(&mut c, &["SPOP", "kept"]);
    for (_, _, empty) in &emptied {
        ok(&mut c, empty);
    }
    for (key, write) in &replaced {
        ok(&mut c, write);
        assert!(
            tags(&mut c, key).is_empty(),
            "{write:?} kept the tags of {key}"
        );
    }
    if field_ttls {
        server.wait_for("the hash's fields to expire", Duration::from_secs(5), |c| {
            !exists(c, "fields")
        });
    }
    for (key, _, _) in &emptied {
        assert!(!exists(&mut c, key), "{key} still exists");
        assert!(tags(&mut c, key).is_empty(), "{key} kept its tags");
    }
    let left: Vec<String> = redis::cmd("OPT.TAGKEYS")
        .arg("t")
        .query::<(String, Vec<String>)>(&mut c)
        .unwrap()
        .1;
    assert_eq!(left, ["kept"]);
    let i = info(&mut c);
    assert_eq!((i.keys, i.pairs), (1, 1), "{i:?}");
}

#[test]
fn all_tagged_keys_expired_leaves_an_empty_index() {
    let server = Server::start();
    let mut c = server.conn();
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("OPT.SET")
            .arg(format!("k{i}"))
            .arg("v")
            .arg("PX")
            .arg(100 + i % 50)
            .arg("TAGS")
            .arg("a")
            .arg(format!("b{}", i % 7))
            .ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    assert_eq!(info(&mut c).keys, 500);
    server.wait_for("every key to expire", Duration::from_secs(10), |c| {
        redis::cmd("DBSIZE").query::<i64>(c).unwrap() == 0
    });
    let i = info(&mut c);
    assert_eq!(
        (i.keys, i.tags, i.pairs, i.digest.as_str()),
        (0, 0, 0, "0000000000000000")
    );
}

#[test]
fn the_index_survives_rdb_restart_and_debug_reload() {
    let mut server = Server::start();
    let mut c = server.conn();
    for i in 0..50 {
        ok(
            &mut c,
            &[
                "OPT.SET",
                &format!("k{i}"),
                "v",
                "TAGS",
                "all",
                &format!("g{}", i % 5),
            ],
        );
    }
    ok(&mut c, &["SELECT", "2"]);
    ok(&mut c, &["OPT.SET", "other-db", "v", "TAGS", "all"]);
    ok(&mut c, &["SELECT", "0"]);
    let before = info(&mut c);
    ok(&mut c, &["DEBUG", "RELOAD"]);
    assert_eq!(info(&mut c).digest, before.digest);
    ok(&mut c, &["SAVE"]);
    server.restart();
    let mut c = server.conn();
    let after = info(&mut c);
    assert_eq!((after.digest, after.pairs), (before.digest, before.pairs));
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "g3"]), Value::Int(10));
}

/// The module subscribes to keyspace events only once the index has an entry. An index that
/// comes from an RDB must be followed from the end of the load, before any tag command runs.
#[test]
fn an_index_loaded_at_startup_follows_deletions_without_a_tag_command() {
    let mut server = Server::start();
    let mut c = server.conn();
    for k in ["a", "b", "c"] {
        ok(&mut c, &["OPT.SET", k, "v", "TAGS", "t"]);
    }
    ok(&mut c, &["SAVE"]);
    server.restart();
    let mut c = server.conn();
    assert_eq!(info(&mut c).keys, 3);
    ok(&mut c, &["DEL", "a"]);
    ok(&mut c, &["SET", "b", "replaced"]);
    let i = info(&mut c);
    assert_eq!((i.keys, i.pairs), (1, 1), "{i:?}");
    assert_eq!(tags(&mut c, "c"), vec!["t"]);
}

#[test]
fn entries_of_keys_gone_at_load_are_dropped() {
    let mut server = Server::start();
    let mut c = server.conn();
    ok(&mut c, &["OPT.SET", "short", "v", "PX", "300", "TAGS", "t"]);
    ok(&mut c, &["OPT.SET", "long", "v", "TAGS", "t"]);
    ok(&mut c, &["SAVE"]);
    std::thread::sleep(Duration::from_millis(400));
    server.restart();
    let mut c = server.conn();
    let i = info(&mut c);
    assert_eq!(i.keys, 1, "{i:?}");
    assert_eq!(tags(&mut c, "long"), vec!["t"]);

    // From an AOF: the replay writes `short` again with its PXAT in the past (active expiry
    // off here, so that the AOF holds no deletion of it). OPT.SET gives the key that time, as
    // SET does, so the server counts it expired at once and its entry is dropped when loading
    // ends. (OPT.SET gave such keys 1 ms from now, alive through the end of the loading.)
    let mut server = Server::with_config(&["appendonly yes"]);
    let mut c = server.conn();
    ok(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    ok(&mut c, &["OPT.SET", "short", "v", "PX", "300", "TAGS", "t"]);
    ok(&mut c, &["OPT.SET", "long", "v", "TAGS", "t"]);
    std::thread::sleep(Duration::from_millis(400));
    server.restart();
    let mut c = server.conn();
    let i = info(&mut c);
    assert_eq!(i.keys, 1, "from the AOF: {i:?}");
    assert_eq!(tags(&mut c, "long"), vec!["t"]);
}

#[test]
fn the_index_survives_aof_restarts_with_and_without_preamble() {
    for preamble in ["yes", "no"] {
        let mut server = Server::with_config(&[
            "appendonly yes",
            &format!("aof-use-rdb-preamble {preamble}"),
        ]);
        let mut c = server.conn();
        ok(
            &mut c,
            &["OPT.SET", "a", "1", "EX", "1000", "TAGS", "x", "y"],
        );
        ok(&mut c, &["OPT.SET", "b", "2", "TAGS", "y"]);
        ok(&mut c, &["OPT.SET", "c", "3", "TAGS", "z"]);
        ok(&mut c, &["OPT.TAG", "c", "y"]);
        ok(&mut c, &["OPT.UNTAG", "a", "x"]);
        ok(&mut c, &["OPT.INVALIDATE", "z"]);
        let before = info(&mut c);
        server.restart();
        let mut c = server.conn();
        assert_eq!(info(&mut c).digest, before.digest, "preamble {preamble}");
        assert_eq!(tags(&mut c, "a"), vec!["y"]);
        if preamble == "yes" {
            // A rewrite puts the index into the RDB preamble.
            ok(&mut c, &["BGREWRITEAOF"]);
            server.wait_for("the AOF rewrite", Duration::from_secs(10), |c| {
                let i: String = redis::cmd("INFO").arg("persistence").query(c).unwrap();
                i.contains("aof_rewrite_in_progress:0") && i.contains("aof_rewrite_scheduled:0")
            });
            ok(&mut c, &["OPT.SET", "d", "4", "TAGS", "y"]);
            let before = info(&mut c);
            server.restart();
            let mut c = server.conn();
            assert_eq!(info(&mut c).digest, before.digest, "after rewrite");
        }
    }
}

fn wait_synced(master: &Server, replica: &Server) {
    let target = info_int(&mut master.conn(), "replication", "master_repl_offset");
    replica.wait_for("replica to catch up", Duration::from_secs(10), |c| {
        info_int(c, "replication", "slave_repl_offset") >= target
    });
}

#[test]
fn a_replica_index_equals_its_master_after_full_and_partial_resync() {
    let master = Server::start();
    let mut m = master.conn();
    for i in 0..100 {
        ok(
            &mut m,
            &[
                "OPT.SET",
                &format!("k{i}"),
                "v",
                "EX",
                "1000",
                "TAGS",
                "all",
                &format!("g{}", i % 10),
            ],
        );
    }
    let replica = master.start_replica(ServerOptions::default());
    let mut r = replica.conn();
    assert_eq!(
        info(&mut r).digest,
        info(&mut m).digest,
        "after the full resync (RDB aux)"
    );
    // The command stream: sets, tags, untags, invalidations, expiries.
    ok(&mut m, &["OPT.SET", "new", "v", "TAGS", "g1"]);
    ok(&mut m, &["OPT.TAG", "k5", "extra"]);
    ok(&mut m, &["OPT.UNTAG", "k6", "all"]);
    ok(&mut m, &["OPT.INVALIDATE", "g2"]);
    ok(&mut m, &["OPT.SET", "brief", "v", "PX", "50", "TAGS", "g3"]);
    std::thread::sleep(Duration::from_millis(200));
    let _ = cmd(&mut m, &["GET", "brief"]);
    // Invalidations inside MULTI and a script reach the replica in their place.
    ok(&mut m, &["MULTI"]);
    ok(&mut m, &["OPT.INVALIDATE", "g6"]);
    ok(&mut m, &["SET", "after:multi", "x"]);
    ok(&mut m, &["EXEC"]);
    let from_lua = ok(
        &mut m,
        &["EVAL", "return redis.call('OPT.INVALIDATE', 'g7')", "0"],
    );
    assert!(matches!(from_lua, Value::Int(n) if n > 0), "{from_lua:?}");
    wait_synced(&master, &replica);
    assert_eq!(
        info(&mut r).digest,
        info(&mut m).digest,
        "after the command stream"
    );
    for c in [&mut m, &mut r] {
        let tagged: i64 = redis::cmd("EXISTS")
            .arg(&["k6", "k7", "k16", "k17"][..])
            .query(c)
            .unwrap();
        assert_eq!(tagged, 0, "g6 and g7 invalidated");
        assert!(exists(c, "after:multi"));
    }
    let sizes: Vec<i64> = [&mut m, &mut r]
        .into_iter()
        .map(|c| redis::cmd("DBSIZE").query(c).unwrap())
        .collect();
    assert_eq!(sizes[0], sizes[1]);
    // A partial resync: drop the link, write meanwhile, let the replica reconnect.
    let partial_before = info_int(&mut m, "stats", "sync_partial_ok");
    ok(&mut m, &["CLIENT", "KILL", "TYPE", "replica"]);
    ok(&mut m, &["OPT.INVALIDATE", "g4"]);
    ok(&mut m, &["OPT.SET", "during", "v", "TAGS", "g5"]);
    replica.wait_for("the link to come back", Duration::from_secs(10), |c| {
        let i: String = redis::cmd("INFO").arg("replication").query(c).unwrap();
        i.contains("master_link_status:up")
    });
    wait_synced(&master, &replica);
    let partial_after = info_int(&mut m, "stats", "sync_partial_ok");
    assert!(
        partial_after > partial_before,
        "the reconnection was a partial resync"
    );
    assert_eq!(
        info(&mut r).digest,
        info(&mut m).digest,
        "after the partial resync"
    );
    // Writes are refused on the replica.
    let e = err(&mut r, &["OPT.SET", "x", "v", "TAGS", "t"]);
    assert!(e.to_ascii_uppercase().contains("READONLY"), "{e}");
}

/// A replica with `repl-diskless-load swapdb` loads its full syncs from the socket into
/// databases of their own while the old ones serve, then swaps them in: the module says it
/// can follow that (without it the server falls back to a file on disk). The index follows
/// the swap (the replica's own tagged key goes with its old data), a second full sync with the
/// same replication id (async loading: reads served during the load) brings the master's
/// changes, and a transfer that fails halfway leaves the data and the index as they were.
#[test]
fn a_swapdb_full_sync_swaps_the_index_with_the_data() {
    let master = Server::with_config(&["repl-diskless-sync yes", "repl-diskless-sync-delay 0"]);
    let mut m = master.conn();
    for i in 0..300 {
        let key = format!("k{i}");
        let group = format!("g{}", i % 3);
        ok(&mut m, &["OPT.SET", &key, "v", "TAGS", "all", &group]);
    }
    let replica = Server::with_config(&[
        "repl-diskless-load swapdb",
        "loading-process-events-interval-bytes 1024",
    ]);
    let mut r = replica.conn();
    ok(&mut r, &["OPT.SET", "replica:own", "v", "TAGS", "mine"]);
    ok(
        &mut r,
        &["REPLICAOF", "127.0.0.1", &master.port.to_string()],
    );
    let linked = |c: &mut Connection| {
        let i: String = redis::cmd("INFO").arg("replication").query(c).unwrap();
        i.contains("master_link_status:up")
    };
    replica.wait_for("the first sync", Duration::from_secs(20), linked);
    wait_synced(&master, &replica);
    let log = replica.log();
    assert!(
        log.contains("Swapping active DB with loaded DB")
            && !log.contains("Skipping diskless-load"),
        "the swapdb load was used:\n{log}"
    );
    assert_eq!(
        info(&mut r).digest,
        info(&mut m).digest,
        "after the first sync"
    );
    assert!(!exists(&mut r, "replica:own") && tags(&mut r, "replica:own").is_empty());

    // The master changes its index while the replica is cut off, beyond a backlog too small
    // to replay: the replica syncs in full again, with the same replication id.
    // (Frozen meanwhile, so that it cannot reconnect before the backlog has moved on.)
    let full_syncs = info_int(&mut m, "stats", "sync_full");
    ok(&mut m, &["CONFIG", "SET", "repl-backlog-size", "16384"]);
    replica.freeze(true);
    ok(&mut m, &["CLIENT", "KILL", "TYPE", "replica"]);
    assert_eq!(ok(&mut m, &["OPT.INVALIDATE", "g0"]), Value::Int(100));
    ok(&mut m, &["OPT.TAG", "k1", "extra"]);
    ok(&mut m, &["SET", "filler", &"x".repeat(100_000)]);
    replica.freeze(false);
    master.wait_for("the second full sync", Duration::from_secs(20), |c| {
        info_int(c, "stats", "sync_full") > full_syncs
    });
    replica.wait_for("the link after it", Duration::from_secs(20), linked);
    wait_synced(&master, &replica);
    assert_eq!(
        info(&mut r).digest,
        info(&mut m).digest,
        "after the second sync"
    );
    assert_eq!(tags(&mut r, "k1"), vec!["all", "extra", "g1"]);
    assert!(!exists(&mut r, "k3"));

    // A transfer that fails: the master goes away while the replica loads slowly, with 40 MB
    // still to send (more than the sockets buffer). The replica keeps its data and its index.
    // Random bytes: the RDB compresses repeated ones to nothing.
    let mut rng = opt_harness::Rng::new(7);
    let big: Vec<u8> = (0..200_000).map(|_| rng.next_u64() as u8).collect();
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("SET").arg(format!("big:{i}")).arg(&big).ignore();
    }
    pipe.query::<()>(&mut m).unwrap();
    wait_synced(&master, &replica);
    let before = info(&mut r);
    ok(&mut r, &["CONFIG", "SET", "key-load-delay", "5000"]);
    ok(&mut r, &["CONFIG", "SET", "repl-timeout", "2"]);
    let full_syncs = info_int(&mut m, "stats", "sync_full");
    replica.freeze(true);
    ok(&mut m, &["CLIENT", "KILL", "TYPE", "replica"]);
    ok(&mut m, &["OPT.SET", "late", "v", "TAGS", "g1"]);
    ok(&mut m, &["SET", "filler", &"y".repeat(100_000)]);
    replica.freeze(false);
    master.wait_for("a third full sync", Duration::from_secs(20), |c| {
        info_int(c, "stats", "sync_full") > full_syncs
    });
    replica.wait_for("the replica to be loading", Duration::from_secs(10), |c| {
        info_int(c, "persistence", "async_loading") == 1
            || info_int(c, "persistence", "loading") == 1
    });
    // The master stalls halfway through the transfer: the replica's read times out
    // (repl-timeout) and it gives the load up.
    // Its forked child too: Redis 8 sends the RDB from the child straight to the replica.
    let stall = |frozen: bool| {
        master.freeze(frozen);
        let pid = master.pid().expect("the master runs");
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: signalling a child process of our own server by its pid.
            unsafe { libc::kill(child, signal) };
        }
    };
    stall(true);
    replica.wait_for("the load to be given up", Duration::from_secs(30), |c| {
        let i: String = redis::cmd("INFO").arg("persistence").query(c).unwrap();
        i.contains("async_loading:0") && i.contains("\r\nloading:0")
    });
    // No further sync: the replica leaves its master with what it has.
    ok(&mut r, &["REPLICAOF", "NO", "ONE"]);
    stall(false);
    ok(&mut r, &["CONFIG", "SET", "key-load-delay", "0"]);
    let after = info(&mut r);
    assert_eq!(
        after.digest,
        before.digest,
        "the index is as before the failed sync: {after:?} {before:?} late={} {}",
        exists(&mut r, "late"),
        replica.log()
    );
    assert!(!exists(&mut r, "late") && tags(&mut r, "late").is_empty());
    assert_eq!(tags(&mut r, "k1"), vec!["all", "extra", "g1"]);
    assert!(
        replica.log().contains("Discarding temporary DB"),
        "{}",
        replica.log()
    );
}

/// A switchover as Sentinel or an operator does it outside a cluster: the replica is
/// promoted (`REPLICAOF NO ONE`), takes tagged writes, expires the tagged keys that expired
/// while it was a replica, and the old master follows it with a partial resync. Both
/// indexes then hold the same entries.
#[test]
fn a_promoted_replica_serves_tags_and_its_old_master_follows_it() {
    let old_master = Server::start();
    let mut m = old_master.conn();
    for i in 0..50 {
        let key = format!("k{i}");
        let group = format!("g{}", i % 5);
        ok(&mut m, &["OPT.SET", &key, "v", "TAGS", "all", &group]);
    }
    ok(
        &mut m,
        &["OPT.SET", "brief", "v", "PX", "100", "TAGS", "short"],
    );
    let new_master = old_master.start_replica(ServerOptions::default());
    let mut r = new_master.conn();
    wait_synced(&old_master, &new_master);
    assert_eq!(info(&mut r).digest, info(&mut m).digest, "before");
    // Let `brief` expire with no client reading it on the old master: a replica does not
    // expire keys itself, so the replica's index keeps it until after the promotion.
    ok(&mut m, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    std::thread::sleep(Duration::from_millis(200));

    ok(&mut r, &["REPLICAOF", "NO", "ONE"]);
    new_master.wait_for(
        "the promoted server to expire the short-lived tagged key",
        Duration::from_secs(10),
        |c| tag_info(c).pairs == 100,
    );
    assert!(tags(&mut r, "brief").is_empty());
    ok(&mut r, &["OPT.SET", "after", "v", "TAGS", "g1", "new"]);
    ok(&mut r, &["OPT.TAG", "k3", "new"]);
    let deleted = ok(&mut r, &["OPT.INVALIDATE", "g2"]);
    assert_eq!(deleted, Value::Int(10), "g2's ten keys");

    // The old master becomes a replica of the promoted one and continues from its offset.
    let partial_before = info_int(&mut r, "stats", "sync_partial_ok");
    ok(
        &mut m,
        &["REPLICAOF", "127.0.0.1", &new_master.port.to_string()],
    );
    old_master.wait_for("the old master to follow", Duration::from_secs(10), |c| {
        let i: String = redis::cmd("INFO").arg("replication").query(c).unwrap();
        i.contains("master_link_status:up")
    });
    wait_synced(&new_master, &old_master);
    assert!(
        info_int(&mut r, "stats", "sync_partial_ok") > partial_before,
        "the old master continued with a partial resync"
    );
    let mut m = old_master.conn();
    let (a, b) = (info(&mut r), info(&mut m));
    assert_eq!(
        (a.keys, a.pairs),
        (41, 83),
        "50 keys + after - g2's 10; brief expired"
    );
    assert_eq!(
        a.digest, b.digest,
        "the old master's index follows the new one"
    );
    assert_eq!(tags(&mut m, "k3"), vec!["all", "g3", "new"]);
    assert!(!exists(&mut m, "k2") && !exists(&mut m, "brief"));
    // And it keeps following: an invalidation on the new master reaches it.
    ok(&mut r, &["OPT.INVALIDATE", "new"]);
    wait_synced(&new_master, &old_master);
    assert_eq!(info(&mut m).digest, info(&mut r).digest);
    assert!(!exists(&mut m, "k3") && !exists(&mut m, "after"));
}

/// A connection that receives CLIENT TRACKING invalidations (RESP2, on a redirect
/// connection) for `key`, which the second connection returned has just read.
fn track_key(server: &Server, key: &str) -> (Connection, Connection) {
    let mut listener = server.conn();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut listener).unwrap();
    let mut reader = server.conn();
    ok(
        &mut reader,
        &["CLIENT", "TRACKING", "on", "REDIRECT", &id.to_string()],
    );
    ok(&mut reader, &["GET", key]);
    (listener, reader)
}

#[test]
fn invalidation_notifies_tracking_clients_and_keyspace_subscribers() {
    let server = Server::with_config(&["notify-keyspace-events Eg"]);
    let mut c = server.conn();
    ok(&mut c, &["OPT.SET", "tracked", "v", "TAGS", "t"]);
    let (mut listener, _reader) = track_key(&server, "tracked");
    let mut pubsub = listener.as_pubsub();
    pubsub.subscribe("__redis__:invalidate").unwrap();
    let mut events = server.conn();
    let mut ev = events.as_pubsub();
    ev.subscribe("__keyevent@0__:del").unwrap();
    ev.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "t"]), Value::Int(1));
    let msg = pubsub.get_message().expect("tracking invalidation");
    let payload: Vec<String> = msg.get_payload().unwrap();
    assert_eq!(payload, vec!["tracked".to_string()]);
    let del = ev.get_message().expect("del event");
    let key: String = del.get_payload().unwrap();
    assert_eq!(key, "tracked");
}

/// OPT.SET over a long string of the same length writes it in place (no delete and add): the
/// write must still be one for WATCH, CLIENT TRACKING, keyspace subscribers and replicas.
#[test]
fn a_value_written_in_place_is_a_write_for_watch_tracking_events_and_replicas() {
    let master = Server::with_config(&["notify-keyspace-events E$"]);
    let replica = master.start_replica(ServerOptions::default());
    let mut c = master.conn();
    let (first, second, third) = ("a".repeat(300), "b".repeat(300), "c".repeat(300));
    ok(&mut c, &["SET", "page", &first, "EX", "500"]);
    // A transaction that watched the key fails after the write.
    let mut watcher = master.conn();
    ok(&mut watcher, &["WATCH", "page"]);
    ok(&mut c, &["OPT.SET", "page", &second, "TAGS", "t"]);
    ok(&mut watcher, &["MULTI"]);
    ok(&mut watcher, &["GET", "page"]);
    assert_eq!(
        ok(&mut watcher, &["EXEC"]),
        Value::Nil,
        "EXEC after a watched key was written"
    );
    // A tracking client is told, and keyevent subscribers see `set`.
    let (mut listener, _reader) = track_key(&master, "page");
    let mut invalidations = listener.as_pubsub();
    invalidations.subscribe("__redis__:invalidate").unwrap();
    invalidations
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut events_conn = master.conn();
    let mut events = events_conn.as_pubsub();
    events.subscribe("__keyevent@0__:set").unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    ok(&mut c, &["OPT.SET", "page", &third, "TAGS", "t"]);
    let msg = invalidations.get_message().expect("tracking invalidation");
    let keys: Vec<String> = msg.get_payload().unwrap();
    assert_eq!(keys, vec!["page".to_string()]);
    let set: String = events
        .get_message()
        .expect("set event")
        .get_payload()
        .unwrap();
    assert_eq!(set, "page");
    // The TTL went with the old value, as SET drops it; the replica has the same value.
    assert_eq!(ok(&mut c, &["PTTL", "page"]), Value::Int(-1));
    wait_synced(&master, &replica);
    let mut r = replica.conn();
    let on_replica: String = redis::cmd("GET").arg("page").query(&mut r).unwrap();
    assert_eq!(on_replica, third);
    assert_eq!(ok(&mut r, &["PTTL", "page"]), Value::Int(-1));
    assert_eq!(info(&mut r).digest, info(&mut c).digest);
}

/// Over `maxmemory` with `noeviction`, the tagged writes are refused as SET is (`OOM`,
/// nothing written, the index unchanged), and what frees memory still runs: OPT.UNTAG and
/// OPT.INVALIDATE.
#[test]
fn over_maxmemory_tagged_writes_are_refused_and_invalidation_still_frees() {
    let server = Server::with_config(&["maxmemory-policy noeviction"]);
    let mut c = server.conn();
    opt_set_many(&mut c, (0..100).map(|i| format!("k{i}")), &["t", "other"]);
    let before = info(&mut c);
    ok(&mut c, &["CONFIG", "SET", "maxmemory", "1"]);
    for args in [
        &["SET", "plain", "v"][..],
        &["OPT.SET", "new", "v", "TAGS", "t"],
        &["OPT.SET", "k1", "v2", "TAGS", "t"],
        &["OPT.TAG", "k2", "more"],
    ] {
        let e = err(&mut c, args);
        assert!(e.contains("OOM"), "{args:?}: {e}");
    }
    let after = info(&mut c);
    assert_eq!(
        after.digest, before.digest,
        "refused writes changed nothing"
    );
    assert!(!exists(&mut c, "new"));
    assert_eq!(
        redis::cmd("GET").arg("k1").query::<String>(&mut c).unwrap(),
        "v"
    );
    ok(&mut c, &["OPT.UNTAG", "k3", "other"]);
    assert_eq!(tags(&mut c, "k3"), vec!["t"]);
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "t"]), Value::Int(100));
    assert_eq!(info(&mut c).pairs, 0);
    ok(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
    ok(&mut c, &["OPT.SET", "new", "v", "TAGS", "t"]);
    assert_eq!(tags(&mut c, "new"), vec!["t"]);
}

#[test]
fn invalidation_respects_the_callers_acl() {
    let server = Server::with_config(&["user app on >pw ~allowed:* +@all"]);
    let mut admin = server.conn();
    ok(
        &mut admin,
        &["OPT.SET", "allowed:1", "v", "TAGS", "mixed", "safe"],
    );
    ok(&mut admin, &["OPT.SET", "secret:1", "v", "TAGS", "mixed"]);
    let url = format!("redis://app:pw@127.0.0.1:{}", server.port);
    let mut app = redis::Client::open(url).unwrap().get_connection().unwrap();
    let e = err(&mut app, &["OPT.INVALIDATE", "mixed"]);
    assert!(e.contains("NOPERM") || e.contains("NoPerm"), "{e}");
    assert!(
        exists(&mut admin, "allowed:1") && exists(&mut admin, "secret:1"),
        "nothing deleted"
    );
    assert_eq!(ok(&mut app, &["OPT.INVALIDATE", "safe"]), Value::Int(1));
    assert!(!exists(&mut admin, "allowed:1"));
}

#[test]
fn limits_and_bad_input_write_nothing() {
    let server = Server::with_config(&["opt.max-tags-per-key 2", "opt.max-tag-length 5"]);
    let mut c = server.conn();
    for (args, expect) in [
        (vec!["OPT.SET", "k", "v"], "needs TAGS"),
        (vec!["OPT.SET", "k", "v", "TAGS"], "at least one tag"),
        (vec!["OPT.SET", "k", "v", "TAGS", ""], "may not be empty"),
        (
            vec!["OPT.SET", "k", "v", "TAGS", "a", "b", "c"],
            "opt.max-tags-per-key",
        ),
        (
            vec!["OPT.SET", "k", "v", "TAGS", "toolong"],
            "opt.max-tag-length",
        ),
        (
            vec!["OPT.SET", "k", "v", "EX", "0", "TAGS", "a"],
            "EX must be from 1",
        ),
        (
            vec!["OPT.SET", "k", "v", "EX", "5", "PX", "5", "TAGS", "a"],
            "conflicts",
        ),
        (
            vec!["OPT.SET", "k", "v", "BOGUS", "TAGS", "a"],
            "unknown option 'BOGUS'",
        ),
        (vec!["OPT.SET", "k", "TAGS", "a"], "a key and a value"),
        (vec!["OPT.TAG", "missing", "a"], "no such key"),
        (vec!["OPT.TAG", "k"], "at least one tag"),
        (vec!["OPT.INVALIDATE"], "at least one tag"),
        (
            vec!["OPT.TAGKEYS", "a", "COUNT", "0"],
            "COUNT must be from 1",
        ),
        (
            vec!["OPT.TAGKEYS", "a", "COUNT", "10001"],
            "COUNT must be from 1 to 10000",
        ),
        (vec!["OPT.TAGS"], "exactly one key"),
    ] {
        let e = err(&mut c, &args);
        assert!(e.contains(expect), "{args:?}: {e}");
    }
    assert!(!exists(&mut c, "k"), "no failed command wrote the key");
    ok(&mut c, &["OPT.SET", "k", "v", "TAGS", "a", "b"]);
    assert!(err(&mut c, &["OPT.TAG", "k", "c"]).contains("opt.max-tags-per-key"));
    assert_eq!(tags(&mut c, "k"), vec!["a", "b"]);
    let i: String = redis::cmd("INFO").arg("opt").query(&mut c).unwrap();
    assert!(
        i.contains("opt_tags_pairs:2") && i.contains("opt_tags_memory_bytes:"),
        "{i}"
    );
}

#[test]
fn concurrent_writers_and_an_invalidation_never_show_half_a_flush() {
    let server = Server::start();
    let mut c = server.conn();
    opt_set_many(&mut c, (0..2000).map(|i| format!("item:{i}")), &["batch"]);
    let port = server.port;
    let watcher = std::thread::spawn(move || {
        let mut con = opt_harness::connect(port);
        let mut seen = Vec::new();
        for _ in 0..2000 {
            let n: i64 = redis::cmd("EXISTS")
                .arg("item:0")
                .arg("item:1999")
                .query(&mut con)
                .unwrap();
            seen.push(n);
            if n == 0 {
                break;
            }
        }
        seen
    });
    let writers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let mut con = opt_harness::connect(port);
                for i in 0..200 {
                    let _: () = redis::cmd("OPT.SET")
                        .arg(format!("w{w}:{i}"))
                        .arg("v")
                        .arg("TAGS")
                        .arg(format!("w{w}"))
                        .query(&mut con)
                        .unwrap();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "batch"]), Value::Int(2000));
    for w in writers {
        w.join().unwrap();
    }
    let seen = watcher.join().unwrap();
    assert!(
        seen.iter().all(|&n| n == 0 || n == 2),
        "a reader saw half a flush: {seen:?}"
    );
    let i = info(&mut c);
    assert_eq!((i.keys, i.tags), (800, 4), "{i:?}");
}

#[test]
fn optctl_invalidate_and_tags() {
    let server = Server::start();
    let mut c = server.conn();
    for i in 0..30 {
        ok(
            &mut c,
            &[
                "OPT.SET",
                &format!("p{i}"),
                "v",
                "TAGS",
                "site",
                &format!("user:{}", i % 3),
            ],
        );
    }
    let (code, out, err) = opt_harness::optctl(&["--url", &server.url(), "tags"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("30 keys") && out.contains("60 (key, tag) pairs"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("site") && l.trim_end().ends_with("30")),
        "{out}"
    );
    let (code, out, _) =
        opt_harness::optctl(&["--url", &server.url(), "tags", "--tag", "user:1"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("tag user:1: 10 keys"), "{out}");
    let (code, out, err) = opt_harness::optctl(
        &["--url", &server.url(), "invalidate", "user:1", "user:2"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted 20 keys"), "{out}");
    // --soft marks the keys stale and deletes none.
    let url = server.url();
    let (code, out, err) = opt_harness::optctl(
        &["--url", &url, "--json", "invalidate", "site", "--soft"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["marked_stale"], 10, "{v}");
    let mut c = server.conn();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 10);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    let fetched: Vec<Value> = redis::cmd("OPT.FETCH").arg(&keys[0]).query(&mut c).unwrap();
    assert!(
        fetched.contains(&Value::BulkString(b"recompute".to_vec())),
        "{fetched:?}"
    );
    let (code, out, err) =
        opt_harness::optctl(&["--url", &url, "invalidate", "site", "--soft"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("marked stale 10 keys tagged site"), "{out}");
    let (code, _, err) = opt_harness::optctl(
        &["--url", &url, "invalidate", "site", "--soft", "--async"],
        &[],
    );
    assert_ne!(code, 0, "--soft and --async do not go together: {err}");
    let (code, out, _) = opt_harness::optctl(
        &[
            "--url",
            &server.url(),
            "--json",
            "invalidate",
            "site",
            "--async",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["deleted"], 10);
    let (code, _, err) = opt_harness::optctl(&["--url", &server.url(), "invalidate"], &[]);
    assert_ne!(code, 0, "a tag is required: {err}");
}

/// The raw bytes a server sends back for `commands`, each a list of arguments, on a fresh
/// connection (the protocol version is whatever the commands set), read until they end with
/// `last`.
fn raw_replies(server: &Server, commands: &[&[&str]], last: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    for args in commands {
        let mut out = format!("*{}\r\n", args.len());
        for a in *args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(out.as_bytes()).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(last) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn opt_set_answers_a_plain_ok_in_every_context() {
    // OPT.SET replays a +OK kept from load instead of composing it: check RESP2, RESP3,
    // MULTI and a script see exactly what SET would answer.
    let server = Server::start();
    let resp2 = raw_replies(
        &server,
        &[&["OPT.SET", "a", "1", "TAGS", "t"], &["PING"]],
        b"+PONG\r\n",
    );
    assert_eq!(resp2, b"+OK\r\n+PONG\r\n");
    let resp3 = raw_replies(
        &server,
        &[
            &["HELLO", "3"],
            &["OPT.SET", "b", "1", "TAGS", "t"],
            &["PING"],
        ],
        b"+PONG\r\n",
    );
    assert!(resp3.starts_with(b"%"), "HELLO 3 answers a map");
    assert!(resp3.ends_with(b"\r\n+OK\r\n+PONG\r\n"));
    let multi = raw_replies(
        &server,
        &[
            &["MULTI"],
            &["OPT.SET", "c", "1", "TAGS", "t"],
            &["SET", "d", "1"],
            &["EXEC"],
        ],
        b"*2\r\n+OK\r\n+OK\r\n",
    );
    assert_eq!(multi, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n");
    let mut c = server.conn();
    let from_lua: String = redis::cmd("EVAL")
        .arg("return redis.call('OPT.SET', KEYS[1], '1', 'TAGS', 't')['ok']")
        .arg(1)
        .arg("e")
        .query(&mut c)
        .unwrap();
    assert_eq!(from_lua, "OK");
    assert_eq!(tags(&mut c, "e"), vec!["t".to_string()]);
}

/// Where the server can drop a keyspace subscription (Redis 8.2+), an index that became empty
/// stops following keyspace events within a second or so (a SET then pays nothing for tags),
/// and the next tagged key follows them again before it enters the index. Elsewhere the
/// subscription stays. Either way the index keeps following the keyspace while it has keys.
#[test]
fn an_empty_index_stops_following_the_keyspace_where_the_server_can() {
    let identity = opt_harness::server_identity();
    let can_drop = match identity.split_once(' ') {
        Some(("redis", v)) => {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (8, 2)
        }
        _ => false,
    };
    let server = Server::start();
    let mut c = server.conn();
    let following = |c: &mut redis::Connection| info_int(c, "opt", "opt_tags_following_keyspace");
    assert_eq!(following(&mut c), 0, "nothing tagged yet");
    ok(&mut c, &["OPT.SET", "k", "v", "TAGS", "t"]);
    assert_eq!(following(&mut c), 1);
    ok(&mut c, &["DEL", "k"]);
    if can_drop {
        server.wait_for("the subscription to go", Duration::from_secs(5), |c| {
            following(c) == 0
        });
    } else {
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(following(&mut c), 1, "{identity} cannot drop it");
    }
    // Tagged again: followed again, so overwriting the key drops its tags.
    ok(&mut c, &["OPT.SET", "k2", "v", "TAGS", "t"]);
    assert_eq!(following(&mut c), 1);
    ok(&mut c, &["SET", "k2", "plain"]);
    assert_eq!(tag_info(&mut c).keys, 0, "the overwrite was missed");
    // A key tagged while another is held keeps the subscription.
    ok(&mut c, &["OPT.SET", "k3", "v", "TAGS", "t"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(following(&mut c), 1);
}

/// Expired keys leave the index in batches (their removals' cache misses overlap), but no
/// reader ever sees one: 40 keys expire (a batch of 32 and 8 waiting), then a key of the same
/// name is tagged anew, and the index holds exactly the new key and tag. The same with lazy
/// expiry, where a GET expires the key just before OPT.SET writes it again.
#[test]
fn expired_keys_leave_the_index_before_anyone_looks() {
    let server = Server::start();
    let mut c = server.conn();
    for i in 0..40 {
        ok(
            &mut c,
            &["OPT.SET", &format!("k{i}"), "v", "PX", "100", "TAGS", "old"],
        );
    }
    server.wait_for("every key to expire", Duration::from_secs(5), |c| {
        redis::cmd("DBSIZE").query::<i64>(c).unwrap_or(-1) == 0
    });
    ok(&mut c, &["OPT.SET", "k39", "v", "TAGS", "new"]);
    let tags: Vec<String> = redis::cmd("OPT.TAGS").arg("k39").query(&mut c).unwrap();
    assert_eq!(tags, ["new"]);
    let t = tag_info(&mut c);
    assert_eq!((t.keys, t.tags, t.pairs), (1, 1, 1));
    // Lazy expiry: the GET expires the key, its removal waits, OPT.SET comes right after.
    ok(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    ok(&mut c, &["OPT.SET", "lazy", "v", "PX", "50", "TAGS", "old"]);
    std::thread::sleep(Duration::from_millis(100));
    let gone: Option<String> = redis::cmd("GET").arg("lazy").query(&mut c).unwrap();
    assert_eq!(gone, None);
    ok(&mut c, &["OPT.SET", "lazy", "v2", "TAGS", "fresh"]);
    let tags: Vec<String> = redis::cmd("OPT.TAGS").arg("lazy").query(&mut c).unwrap();
    assert_eq!(tags, ["fresh"]);
    let keys: (String, Vec<String>) = redis::cmd("OPT.TAGKEYS").arg("old").query(&mut c).unwrap();
    assert!(keys.1.is_empty(), "{keys:?}");
    assert_eq!(tag_info(&mut c).pairs, 2);
}

/// An invalidation deletes only its own keys' entries, and on Redis 8.2+ drops the index's
/// keyspace subscription while it runs (its events are its own): afterwards the index must
/// follow the keyspace again, deletion and expiry alike, and pub/sub still got every `del`.
#[test]
fn the_index_follows_the_keyspace_again_after_an_invalidation() {
    let server = Server::start();
    let mut c = server.conn();
    ok(&mut c, &["CONFIG", "SET", "notify-keyspace-events", "Eg"]);
    for i in 0..50 {
        ok(
            &mut c,
            &["OPT.SET", &format!("gone:{i}"), "v", "TAGS", "gone"],
        );
    }
    ok(&mut c, &["OPT.SET", "kept:1", "v", "TAGS", "kept"]);
    ok(
        &mut c,
        &["OPT.SET", "kept:2", "v", "PX", "300", "TAGS", "kept"],
    );
    let mut events_conn = server.conn();
    let mut events = events_conn.as_pubsub();
    events.subscribe("__keyevent@0__:del").unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "gone"]), Value::Int(50));
    let mut deleted: Vec<String> = (0..50)
        .map(|_| events.get_message().unwrap().get_payload().unwrap())
        .collect();
    deleted.sort();
    let mut expected: Vec<String> = (0..50).map(|i| format!("gone:{i}")).collect();
    expected.sort();
    assert_eq!(deleted, expected);
    assert_eq!(info(&mut c).keys, 2);
    assert_eq!(info_int(&mut c, "opt", "opt_tags_following_keyspace"), 1);
    // A DEL and an expiry after it still take their keys out of the index.
    ok(&mut c, &["DEL", "kept:1"]);
    assert_eq!(info(&mut c).keys, 1);
    server.wait_for(
        "the expired key to leave the index",
        Duration::from_secs(10),
        |con| info(con).keys == 0,
    );
    assert!(tags(&mut c, "kept:2").is_empty());
}

/// A tag whose keys leave gives its room back before it is empty: the index's memory in
/// `INFO opt` falls with the keys, not only when the last one goes.
#[test]
fn a_tag_gives_its_memory_back_as_its_keys_are_deleted() {
    let server = Server::start();
    let mut c = server.conn();
    opt_set_many(
        &mut c,
        (0..20_000).map(|i| format!("k:{i}")),
        &["big", "wide", "all"],
    );
    let full = info_int(&mut c, "opt", "opt_tags_memory_bytes");
    each_key(&mut c, "DEL", (10..20_000).map(|i| format!("k:{i}")));
    assert_eq!(info(&mut c).keys, 10);
    let after = info_int(&mut c, "opt", "opt_tags_memory_bytes");
    // Each tag's list held five chunks of 4,096 key ids (80 KiB); ten need a few bytes. The
    // freed keys' slots stay for reuse, and their ids go to a free list (a vector with room for
    // 32,768: 128 KiB), so the index shrinks by the three lists less the free list: 115 KB.
    assert!(full - after >= 100_000, "{full} -> {after}");
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "big"]), Value::Int(10));
}

/// Once every tagged key has gone, the index holds no memory: not the slots it kept for reuse
/// nor tables sized for its largest day (20,000 keys: over a megabyte, freed on a thread),
/// whichever way the last key left. It is usable again afterwards.
#[test]
fn the_index_gives_all_its_memory_back_once_the_last_tagged_key_has_gone() {
    let server = Server::start();
    let mut c = server.conn();
    let empty = info_int(&mut c, "opt", "opt_tags_memory_bytes");
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("OPT.SET")
            .arg(format!("short:{i}"))
            .arg("v")
            .arg("PX")
            .arg(300)
            .arg("TAGS")
            .arg(format!("user:{}", i % 100))
            .arg("all")
            .ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    let full = info_int(&mut c, "opt", "opt_tags_memory_bytes");
    assert!(full > 1_000_000, "{empty} -> {full}");
    std::thread::sleep(Duration::from_millis(400));
    // Reading each key expires it now (an `expired` event), wherever active expiry got to.
    each_key(&mut c, "EXISTS", (0..20_000).map(|i| format!("short:{i}")));
    assert_eq!(info(&mut c).keys, 0);
    let after_expiry = info_int(&mut c, "opt", "opt_tags_memory_bytes");
    assert_eq!(after_expiry, empty, "{full} -> {after_expiry}");

    // The last key leaving by DEL, then by OPT.UNTAG, gives it back too.
    opt_set_many(&mut c, (0..100).map(|i| format!("k:{i}")), &["t", "u"]);
    assert!(info_int(&mut c, "opt", "opt_tags_memory_bytes") > empty);
    each_key(&mut c, "DEL", (0..100).map(|i| format!("k:{i}")));
    assert_eq!(info_int(&mut c, "opt", "opt_tags_memory_bytes"), empty);
    ok(&mut c, &["OPT.SET", "one", "v", "TAGS", "t"]);
    assert!(info_int(&mut c, "opt", "opt_tags_memory_bytes") > empty);
    assert_eq!(ok(&mut c, &["OPT.UNTAG", "one", "t"]), Value::Int(1));
    assert_eq!(info_int(&mut c, "opt", "opt_tags_memory_bytes"), empty);

    // Usable again: tags, invalidation.
    ok(&mut c, &["OPT.SET", "again", "v", "TAGS", "x"]);
    assert_eq!(
        ok(&mut c, &["OPT.TAGS", "again"]),
        Value::Array(vec![Value::BulkString(b"x".to_vec())])
    );
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "x"]), Value::Int(1));
    assert!(!exists(&mut c, "again"));
    assert_eq!(info_int(&mut c, "opt", "opt_tags_memory_bytes"), empty);
}

/// The memory of an index emptied by expiry goes back to the allocator within seconds even
/// when nothing uses the module afterwards: `INFO memory` (which does not ask the module for
/// its section) and `DBSIZE` are the only commands sent once the keys are written. Before,
/// on servers without Redis 8.2's unsubscribe, the emptied index stayed allocated until the
/// next OPT command or `INFO opt`.
#[test]
fn an_index_emptied_by_expiry_gives_its_memory_back_while_the_server_is_idle() {
    let server = Server::start();
    let mut c = server.conn();
    let used = |c: &mut redis::Connection| info_int(c, "memory", "used_memory");
    let before = used(&mut c);
    let mut pipe = redis::pipe();
    // Not a multiple of the 32 keys the index gathers from events before applying them.
    for i in 0..20_017 {
        pipe.cmd("OPT.SET")
            .arg(format!("idle:{i}"))
            .arg("v")
            .arg("PX")
            .arg(200)
            .arg("TAGS")
            .arg(format!("page:{i}"))
            .arg(format!("user:{}", i % 100))
            .arg("all")
            .ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    let written = used(&mut c) - before;
    assert!(written > 2_000_000, "{written}");
    // Active expiry reclaims the keys; nothing else touches the module from here on.
    server.wait_for("every key to expire", Duration::from_secs(20), |c| {
        redis::cmd("DBSIZE").query::<i64>(c).unwrap() == 0
    });
    // What is left: the server's own tables, sized for 20,017 keys until it shrinks them.
    server.wait_for(
        "the emptied index to give its memory back",
        Duration::from_secs(10),
        |c| used(c) - before < written / 4,
    );
    assert_eq!(info(&mut c).keys, 0);
    assert_eq!(info_int(&mut c, "opt", "opt_tags_pairs"), 0);
}

/// OPT.INVALIDATE deletes as DEL does: a tagged key whose time has passed but which nothing
/// has reclaimed yet expires (an `expired` event, `expired_keys`), is not counted, and the
/// live keys raise `del`. Pub/sub sees nothing else: no event of the module's own. On Redis
/// 7.0 the deletion runs inside the index's event callback (so that its `del` events cost
/// the index nothing); newer servers switch lazy expiry off there, and would count the
/// expired key and raise `del` for it.
#[test]
fn an_invalidation_counts_and_reports_keys_past_their_expiry_as_del_does() {
    let server = Server::start();
    let mut c = server.conn();
    // Generic and expired events published, and sorted-set ones: the module must not raise
    // an event of its own in any class someone can see.
    ok(
        &mut c,
        &["CONFIG", "SET", "notify-keyspace-events", "KEgxz"],
    );
    ok(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    ok(&mut c, &["OPT.SET", "old", "v", "PX", "50", "TAGS", "t"]);
    for i in 0..20 {
        ok(&mut c, &["OPT.SET", &format!("live:{i}"), "v", "TAGS", "t"]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut events_conn = server.conn();
    let mut events = events_conn.as_pubsub();
    events.psubscribe("__key*@0__:*").unwrap();
    events
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(ok(&mut c, &["OPT.INVALIDATE", "t"]), Value::Int(20));
    assert_eq!(info_int(&mut c, "stats", "expired_keys"), 1);
    let mut seen = Vec::new();
    while let Ok(message) = events.get_message() {
        let payload: String = message.get_payload().unwrap();
        seen.push(format!("{} {payload}", message.get_channel_name()));
    }
    seen.sort();
    let mut expected = vec![
        "__keyevent@0__:expired old".to_string(),
        "__keyspace@0__:old expired".to_string(),
    ];
    for i in 0..20 {
        expected.push(format!("__keyevent@0__:del live:{i}"));
        expected.push(format!("__keyspace@0__:live:{i} del"));
    }
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(info(&mut c).keys, 0);
    ok(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"]);
}
