//! The tag index against a model, under random sequences of commands.
//!
//! `tags.rs` checks each way a key can leave the keyspace on its own. Leaks come from
//! sequences: a key renamed onto a tagged key that then expires, a MOVE after a SWAPDB, a COPY
//! over a key that is later invalidated. This test runs thousands of random steps (OPT.SET
//! with NX/XX, OPT.TAG, OPT.UNTAG, SET, APPEND, SADD, DEL, UNLINK, RENAME, MOVE, COPY, expiry,
//! OPT.INVALIDATE, FLUSHDB, SWAPDB, DEBUG RELOAD) over a dozen keys in two databases, keeps
//! a plain model of which keys exist with which tags, and after every step compares every
//! key's type and tags, and the index's pair count, with the model. Replies are checked too
//! (OK or nil for NX/XX, counts of tags added or removed and of keys invalidated). At the end
//! a replica that followed the whole run must have its master's index digest, and once every
//! key has expired the index must be empty.
//!
//! The seed is fixed so a failure repeats; `OPT_MODEL_SEED` and `OPT_MODEL_STEPS` explore more.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use opt_harness::redis::{self, Connection, Value};
use opt_harness::{env_number, info_int, ok, tag_info, Rng, Server, ServerOptions};

const KEYS: &[&str] = &[
    "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10", "k11",
];
const TAGS: &[&str] = &["a", "b", "c", "d", "e"];
/// Two values longer than any server embeds in the object, of one length (300 bytes).
const LONG_A: &str = concat!(
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
);
const LONG_B: &str = concat!(
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
);

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    /// "string" or "set", as TYPE answers.
    kind: &'static str,
    tags: BTreeSet<String>,
}

fn string_entry(tags: &[&str]) -> Entry {
    Entry {
        kind: "string",
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

/// What the server should hold: per database, each existing key with its tags.
type Model = [BTreeMap<String, Entry>; 2];

fn run(con: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// Compares every key of both databases and the index's size with the model.
fn check(cons: &mut [Connection; 2], model: &Model, context: &str) {
    let mut pairs = 0;
    for db in 0..2 {
        let mut pipe = redis::pipe();
        for key in KEYS {
            pipe.cmd("TYPE").arg(*key).cmd("OPT.TAGS").arg(*key);
        }
        let replies: Vec<Value> = pipe.query(&mut cons[db]).unwrap();
        for (key, pair) in KEYS.iter().zip(replies.chunks(2)) {
            let expected = model[db].get(*key);
            let kind: String = redis::from_redis_value(pair[0].clone()).unwrap();
            let mut tags: Vec<String> = redis::from_redis_value(pair[1].clone()).unwrap();
            tags.sort();
            let want_kind = expected.map_or("none", |e| e.kind);
            let want_tags: Vec<String> = expected
                .map(|e| e.tags.iter().cloned().collect())
                .unwrap_or_default();
            assert_eq!(
                (kind.as_str(), &tags),
                (want_kind, &want_tags),
                "db {db} key {key} after {context}"
            );
            pairs += want_tags.len() as u64;
        }
    }
    assert_eq!(
        tag_info(&mut cons[0]).pairs,
        pairs,
        "index size after {context}"
    );
}

/// One random step on database `db`; returns what it did, for failure messages.
fn step(rng: &mut Rng, cons: &mut [Connection; 2], model: &mut Model) -> String {
    let db = rng.below(2);
    let other = 1 - db;
    let key = rng.pick(KEYS);
    let key2 = rng.pick(KEYS);
    let tag_list: Vec<&str> = (0..1 + rng.below(3)).map(|_| rng.pick(TAGS)).collect();
    let con = &mut cons[db];
    let exists = model[db].contains_key(key);
    let mut args: Vec<&str>;
    match rng.below(100) {
        0..=24 => {
            let cond = rng.pick(&["", "", "NX", "XX"]);
            // Short values, and long ones of one length, which OPT.SET writes over each other
            // in place.
            let value = rng.pick(&["v", LONG_A, LONG_B]);
            args = vec!["OPT.SET", key, value];
            if !cond.is_empty() {
                args.push(cond);
            }
            args.push("TAGS");
            args.extend(&tag_list);
            let writes = match cond {
                "NX" => !exists,
                "XX" => exists,
                _ => true,
            };
            let reply = run(con, &args).unwrap();
            assert_eq!(reply == Value::Okay, writes, "{args:?}: {reply:?}");
            if writes {
                model[db].insert(key.into(), string_entry(&tag_list));
                let stored = run(con, &["GET", key]).unwrap();
                assert_eq!(
                    stored,
                    Value::BulkString(value.into()),
                    "{args:?}: GET after"
                );
            }
        }
        25..=36 => {
            args = vec!["OPT.TAG", key];
            args.extend(&tag_list);
            match model[db].get_mut(key) {
                Some(e) => {
                    let before = e.tags.len();
                    e.tags.extend(tag_list.iter().map(|t| t.to_string()));
                    let added = (e.tags.len() - before) as i64;
                    assert_eq!(int(&run(con, &args).unwrap()), added, "{args:?}");
                }
                None => assert!(run(con, &args).is_err(), "{args:?} on a missing key"),
            }
        }
        37..=44 => {
            args = vec!["OPT.UNTAG", key];
            args.extend(&tag_list);
            match model[db].get_mut(key) {
                Some(e) => {
                    let before = e.tags.len();
                    for t in &tag_list {
                        e.tags.remove(*t);
                    }
                    let removed = (before - e.tags.len()) as i64;
                    assert_eq!(int(&run(con, &args).unwrap()), removed, "{args:?}");
                }
                None => assert!(run(con, &args).is_err(), "{args:?} on a missing key"),
            }
        }
        45..=49 => {
            args = vec!["SET", key, "plain"];
            run(con, &args).unwrap();
            model[db].insert(key.into(), string_entry(&[]));
        }
        50..=53 => {
            args = vec!["APPEND", key, "x"];
            let result = run(con, &args);
            match model[db].get(key).map(|e| e.kind) {
                Some("set") => assert!(result.is_err(), "{args:?} on a set"),
                Some(_) => {
                    result.unwrap();
                }
                None => {
                    result.unwrap();
                    model[db].insert(key.into(), string_entry(&[]));
                }
            }
        }
        54..=57 => {
            args = vec!["SADD", key, "m"];
            let result = run(con, &args);
            match model[db].get(key).map(|e| e.kind) {
                Some("string") => assert!(result.is_err(), "{args:?} on a string"),
                Some(_) => {
                    result.unwrap();
                }
                None => {
                    result.unwrap();
                    let e = Entry {
                        kind: "set",
                        tags: BTreeSet::new(),
                    };
                    model[db].insert(key.into(), e);
                }
            }
        }
        58..=63 => {
            args = vec![rng.pick(&["DEL", "UNLINK"]), key];
            let n = int(&run(con, &args).unwrap());
            assert_eq!(n, i64::from(exists), "{args:?}");
            model[db].remove(key);
        }
        64..=69 => {
            args = vec!["RENAME", key, key2];
            let result = run(con, &args);
            match model[db].remove(key) {
                Some(e) => {
                    result.unwrap();
                    model[db].insert(key2.into(), e);
                }
                None => assert!(result.is_err(), "{args:?} of a missing key"),
            }
        }
        70..=74 => {
            let to = if other == 1 { "1" } else { "0" };
            args = vec!["MOVE", key, to];
            let moves = exists && !model[other].contains_key(key);
            assert_eq!(int(&run(con, &args).unwrap()), i64::from(moves), "{args:?}");
            if moves {
                let e = model[db].remove(key).unwrap();
                model[other].insert(key.into(), e);
            }
        }
        75..=79 => {
            let replace = rng.below(2) == 0;
            args = vec!["COPY", key, key2];
            if replace {
                args.push("REPLACE");
            }
            let copies = key != key2 && exists && (replace || !model[db].contains_key(key2));
            let reply = run(con, &args);
            if key == key2 {
                // COPY onto itself is an error (or 0 on some versions): nothing changes.
                assert!(reply.as_ref().map_or(true, |v| int(v) == 0), "{args:?}");
            } else {
                assert_eq!(int(&reply.unwrap()), i64::from(copies), "{args:?}");
            }
            if copies {
                // The copy is a new key: it carries no tags.
                let mut e = model[db][key].clone();
                e.tags.clear();
                model[db].insert(key2.into(), e);
            }
        }
        80..=85 => {
            args = vec!["PEXPIRE", key, "1"];
            run(con, &args).unwrap();
            std::thread::sleep(Duration::from_millis(3));
            // The access expires the key at once.
            let n: i64 = redis::cmd("EXISTS").arg(key).query(con).unwrap();
            assert_eq!(n, 0, "{key} after PEXPIRE 1");
            model[db].remove(key);
        }
        86..=94 => {
            args = vec!["OPT.INVALIDATE"];
            args.extend(&tag_list);
            if rng.below(2) == 0 {
                args.push("ASYNC");
            }
            let doomed: Vec<String> = model[db]
                .iter()
                .filter(|(_, e)| tag_list.iter().any(|t| e.tags.contains(*t)))
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(
                int(&run(con, &args).unwrap()),
                doomed.len() as i64,
                "{args:?}"
            );
            for k in doomed {
                model[db].remove(&k);
            }
        }
        95..=96 => {
            args = vec!["SWAPDB", "0", "1"];
            run(con, &args).unwrap();
            model.swap(0, 1);
        }
        97 => {
            args = vec!["FLUSHDB"];
            run(con, &args).unwrap();
            model[db].clear();
        }
        _ => {
            args = vec!["DEBUG", "RELOAD"];
            run(con, &args).unwrap();
        }
    }
    format!("db {db}: {}", args.join(" "))
}

#[test]
fn the_index_matches_a_model_under_random_commands() {
    let seed = env_number("OPT_MODEL_SEED", 0x7a9);
    let steps = env_number("OPT_MODEL_STEPS", 1500) as usize;
    let master = Server::start();
    let replica = master.start_replica(ServerOptions::default());
    let mut cons = [master.conn(), master.conn()];
    ok(&mut cons[1], &["SELECT", "1"]);
    let mut model: Model = Default::default();
    let mut rng = Rng::new(seed);
    for n in 0..steps {
        let what = step(&mut rng, &mut cons, &mut model);
        check(
            &mut cons,
            &model,
            &format!("step {n} ({what}; seed {seed:#x})"),
        );
    }
    // The replica followed every step: same index.
    let offset = info_int(&mut cons[0], "replication", "master_repl_offset");
    replica.wait_for("the replica to catch up", Duration::from_secs(10), |c| {
        info_int(c, "replication", "slave_repl_offset") >= offset
    });
    let (m, r) = (tag_info(&mut cons[0]), tag_info(&mut replica.conn()));
    assert_eq!((m.digest, m.pairs), (r.digest, r.pairs), "replica's index");
    // And the same data, values written in place included.
    let digest = |c: &mut Connection| run(c, &["DEBUG", "DIGEST"]).unwrap();
    assert_eq!(
        digest(&mut cons[0]),
        digest(&mut replica.conn()),
        "replica's data"
    );
    // Every key expires: nothing may stay behind.
    for (db, con) in cons.iter_mut().enumerate() {
        for key in model[db].keys() {
            ok(con, &["PEXPIRE", key, "1"]);
        }
    }
    std::thread::sleep(Duration::from_millis(5));
    for con in cons.iter_mut() {
        for key in KEYS {
            ok(con, &["EXISTS", key]);
        }
    }
    let after = tag_info(&mut cons[0]);
    assert_eq!((after.pairs, after.keys), (0, 0), "{after:?}");
}
