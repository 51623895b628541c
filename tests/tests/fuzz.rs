//! Random arguments for every OPT command against a real server.
//!
//! The rules "every bad input gets an ERR reply that names the problem and changes nothing"
//! and "no panic crosses into the server" are tested command by command elsewhere, with the
//! inputs someone thought of. This test throws thousands of argument lists built from every
//! option keyword, edge-case numbers, every key type, bad globs, empty and binary strings at
//! each command, and checks after each one that:
//! - the server still answers, within the connection's timeout;
//! - an error reply has a code and a message, and is not a caught panic ("internal error");
//! - after an error reply the data is unchanged: every key's DUMP and expiry, and the tag
//!   index's digest;
//! - at the end no panic was caught (`INFO opt`) and the log holds none.
//!
//! The seed is fixed so a failure repeats; `OPT_FUZZ_SEED` and `OPT_FUZZ_STEPS` explore more.

use std::collections::BTreeMap;
use std::time::Duration;

use opt_harness::{env_number, info_int, ok, redis, tag_info, Rng, Server};

/// Every command a client may call (OPT.DEBUG-PANIC panics on purpose and is left out).
const COMMANDS: &[&str] = &[
    "OPT.HELP",
    "OPT.STATUS",
    "OPT.HOTKEYS",
    "OPT.KEYSPACE",
    "OPT.ADVISE",
    "OPT.SET",
    "OPT.TAG",
    "OPT.UNTAG",
    "OPT.TAGS",
    "OPT.INVALIDATE",
    "OPT.FETCH",
    "OPT.TAGKEYS",
    "OPT.TAGINFO",
];

/// Keys and tags of the data set, and missing ones.
const NAMES: &[&str] = &[
    "s1",
    "h1",
    "l1",
    "set1",
    "z1",
    "st1",
    "vs1",
    "n1",
    "user:42:profile",
    "t:1",
    "t:2",
    "t:3",
    "missing",
    "red",
    "blue",
    "green",
];

/// Option keywords of all commands, values they take, and strings that parsers trip on.
fn vocabulary() -> Vec<Vec<u8>> {
    let words = [
        // options
        "COUNT",
        "TYPE",
        "WINDOW",
        "NAMESPACES",
        "FORMAT",
        "JSON",
        "RESET",
        "SAMPLES",
        "FULL",
        "MATCH",
        "DB",
        "TOP",
        "DELIMITERS",
        "EX",
        "PX",
        "EXAT",
        "PXAT",
        "KEEPTTL",
        "NX",
        "XX",
        "GET",
        "TAGS",
        "ASYNC",
        "CURSOR",
        "BETA",
        "LOCK",
        "TOKEN",
        "DELTA",
        "STALE",
        "FRESHUNTIL",
        "CANCEL",
        "MIN-SEVERITY",
        "SOFT",
        "format",
        "json",
        "tags",
        "count",
        // values of options
        "all",
        "read",
        "write",
        "miss",
        "total",
        "recent",
        "string",
        "hash",
        "list",
        "set",
        "zset",
        "stream",
        "module",
        "vectorset",
        "ReJSON-RL",
        "text",
        "yes",
        "no",
        "info",
        "warning",
        "critical",
        // numbers
        "0",
        "1",
        "2",
        "10",
        "-1",
        "-5",
        "100000",
        "4294967296",
        "9223372036854775807",
        "-9223372036854775808",
        "99999999999999999999",
        "1.5",
        "-0.5",
        "nan",
        "inf",
        "-inf",
        "1e3",
        "0x10",
        " 7",
        "7 ",
        // globs and delimiters
        "*",
        "t:*",
        "[",
        "[a-",
        "\\",
        "user:*:profile",
        ":",
        ":/|",
        "",
    ];
    let mut v: Vec<Vec<u8>> = words
        .iter()
        .chain(NAMES)
        .map(|w| w.as_bytes().to_vec())
        .collect();
    v.push(vec![0, 0xff, b'\r', b'\n']);
    v.push(vec![b'a'; 2000]);
    v.push(vec![b'x'; 1025]);
    v
}

/// Writes the data set's keys that are missing or were overwritten with another type (plain
/// commands, and OPT.SET for tagged ones).
fn restore_data(con: &mut redis::Connection) {
    let typed: [(&str, &str, &[&str]); 8] = [
        ("s1", "string", &["SET", "s1", "value"]),
        ("n1", "string", &["SET", "n1", "12345"]),
        (
            "user:42:profile",
            "string",
            &["SET", "user:42:profile", "{}"],
        ),
        ("h1", "hash", &["HSET", "h1", "f", "v"]),
        ("l1", "list", &["RPUSH", "l1", "a"]),
        ("set1", "set", &["SADD", "set1", "a"]),
        ("z1", "zset", &["ZADD", "z1", "1", "a"]),
        ("st1", "stream", &["XADD", "st1", "*", "f", "v"]),
    ];
    // A key of a module data type where the server has one (Redis 8's vector sets).
    let vectors: [(&str, &str, &[&str]); 1] = [(
        "vs1",
        "vectorset",
        &["VADD", "vs1", "VALUES", "2", "0.1", "0.2", "a"],
    )];
    let module_typed = if opt_harness::has_command(con, "VADD") {
        &vectors[..]
    } else {
        &[]
    };
    for &(key, kind, write) in typed.iter().chain(module_typed) {
        let now: String = redis::cmd("TYPE").arg(key).query(con).expect("TYPE");
        if now != kind {
            let _: i64 = redis::cmd("DEL").arg(key).query(con).expect("DEL");
            ok(con, write);
        }
    }
    for (key, tags) in [
        ("t:1", &["red", "blue"][..]),
        ("t:2", &["red"][..]),
        ("t:3", &["green"][..]),
    ] {
        let mut c = redis::cmd("OPT.SET");
        c.arg(key).arg("v").arg("NX").arg("TAGS").arg(tags);
        let _: redis::Value = c.query(con).expect("OPT.SET of the data set");
    }
}

/// Deletes keys that would expire within two minutes, so that nothing expires between two
/// snapshots of the same step.
fn drop_short_lived(con: &mut redis::Connection) {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS");
    for k in keys {
        let pttl: i64 = redis::cmd("PTTL").arg(&k).query(con).expect("PTTL");
        if (0..120_000).contains(&pttl) {
            let _: i64 = redis::cmd("DEL").arg(&k).query(con).expect("DEL");
        }
    }
}

/// Every key with its DUMP and whether it has an expiry, and the tag index's digest and size.
type Snapshot = (BTreeMap<Vec<u8>, (Vec<u8>, bool)>, String, u64);

fn snapshot(con: &mut redis::Connection) -> Snapshot {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS");
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("DUMP").arg(k).cmd("PTTL").arg(k);
    }
    let replies: Vec<redis::Value> = pipe.query(con).expect("DUMP and PTTL");
    let mut data = BTreeMap::new();
    for (k, pair) in keys.into_iter().zip(replies.chunks(2)) {
        let dump = match &pair[0] {
            redis::Value::BulkString(b) => b.clone(),
            _ => Vec::new(),
        };
        let volatile = matches!(pair[1], redis::Value::Int(t) if t >= 0);
        data.insert(k, (dump, volatile));
    }
    let index = tag_info(con);
    (data, index.digest, index.pairs)
}

fn printable(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| {
            let s = String::from_utf8_lossy(&a[..a.len().min(24)]).into_owned();
            if a.len() > 24 {
                format!("{s}...({} bytes)", a.len())
            } else {
                format!("{s:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn random_arguments_never_panic_and_errors_change_nothing() {
    let seed = env_number("OPT_FUZZ_SEED", 0x005e_ed0f_0de5);
    let steps = env_number("OPT_FUZZ_STEPS", 150) as usize;
    let server = Server::start();
    let mut con = server.conn();
    con.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a read timeout");
    let words = vocabulary();
    let mut rng = Rng::new(seed);
    let (mut errors, mut replies) = (0usize, 0usize);
    restore_data(&mut con);
    for step in 0..steps {
        for name in COMMANDS {
            let mut args: Vec<Vec<u8>> = (0..rng.below(9))
                .map(|_| words[rng.below(words.len())].clone())
                .collect();
            // Half the time, start with a key or tag of the data set, as real calls do.
            if rng.below(2) == 0 && !args.is_empty() {
                args[0] = NAMES[rng.below(NAMES.len())].as_bytes().to_vec();
            }
            let before = snapshot(&mut con);
            let mut c = redis::cmd(name);
            for a in &args {
                c.arg(a.as_slice());
            }
            let call = format!("{name} {} (seed {seed:#x}, step {step})", printable(&args));
            match c.query::<redis::Value>(&mut con) {
                Ok(_) => replies += 1,
                Err(e) => {
                    if e.kind() == redis::ErrorKind::Io || e.is_timeout() {
                        // Give the server a moment to finish its crash report, then show it.
                        std::thread::sleep(Duration::from_millis(500));
                        // The crash report if there is one, else the log's end.
                        let log = server.log().into_bytes();
                        let from = log
                            .windows(17)
                            .position(|w| w == b"crashed by signal")
                            .map_or(log.len().saturating_sub(6_000), |i| i.saturating_sub(200));
                        let part = &log[from..(from + 6_000).min(log.len())];
                        let part = String::from_utf8_lossy(part);
                        panic!("{call}: the server did not answer: {e}\nserver log:\n{part}");
                    }
                    let text = e.to_string();
                    assert!(
                        !text.contains("internal error"),
                        "{call}: a panic was caught: {text}"
                    );
                    assert!(
                        e.code().is_some() && e.detail().is_some_and(|d| d.len() >= 8),
                        "{call}: the error has no code or no message: {text}"
                    );
                    let after = snapshot(&mut con);
                    assert!(
                        after == before,
                        "{call}: replied an error ({text}) but changed the data or the index"
                    );
                    errors += 1;
                }
            }
            drop_short_lived(&mut con);
        }
        if step % 10 == 9 {
            restore_data(&mut con);
        }
    }
    ok(&mut con, &["PING"]);
    assert_eq!(info_int(&mut con, "opt", "opt_panics_caught"), 0);
    assert!(!server.log().contains("panic"), "{}", server.log());
    // Both kinds of outcome were exercised, or the vocabulary is off.
    assert!(
        errors > steps && replies > steps,
        "{errors} errors, {replies} replies"
    );
}
