//! Redis Cluster: 3 primaries with a replica each, made by `redis-cli --cluster create` on
//! loopback ports. Each node indexes the keys it owns; commands on keys are redirected as
//! usual; replicas serve reads of the tag index they replicate.

use std::time::Duration;

use opt_harness::{command, err, info_int, ok, optctl, redis, tag_info, Cluster, Server};

/// The keys of a tag on one node (the whole of OPT.TAGKEYS' first page).
fn tag_keys(con: &mut redis::Connection, tag: &str) -> redis::RedisResult<Vec<String>> {
    let (_, keys): (String, Vec<String>) = redis::cmd("OPT.TAGKEYS")
        .arg(tag)
        .arg("COUNT")
        .arg(1000)
        .query(con)?;
    Ok(keys)
}

/// A MOVED redirection (the redis crate spells it `Moved: <slot> <host:port>`).
fn is_moved(error: &str) -> bool {
    error.to_ascii_uppercase().starts_with("MOVED")
}

#[test]
fn every_node_serves_its_own_keys_and_redirects_the_rest() {
    let cluster = Cluster::start(3, 1, &[]);
    let owner = cluster.owner("page:1");
    let other = cluster.other_primary(owner);
    let mut c = owner.conn();
    ok(
        &mut c,
        &["OPT.SET", "page:1", "v", "TAGS", "user:1", "site"],
    );
    let moved = err(
        &mut other.conn(),
        &["OPT.SET", "page:1", "v", "TAGS", "user:1"],
    );
    assert!(is_moved(&moved), "{moved}");
    let moved = err(&mut other.conn(), &["OPT.TAG", "page:1", "x"]);
    assert!(is_moved(&moved), "{moved}");
    // Stampede protection on the owner; a redirection elsewhere.
    let moved = err(&mut other.conn(), &["OPT.FETCH", "page:1"]);
    assert!(is_moved(&moved), "{moved}");
    let fetched: Vec<Option<String>> = redis::cmd("OPT.FETCH").arg("page:1").query(&mut c).unwrap();
    let action = fetched
        .iter()
        .position(|f| f.as_deref() == Some("action"))
        .unwrap();
    assert_eq!(fetched[1].as_deref(), Some("v"));
    assert_eq!(fetched[action + 1].as_deref(), Some("hit"), "{fetched:?}");
    // A cluster node has db 0 alone (Valkey 9: `cluster-databases`, 1 by default): DB 1 is
    // refused up front, and no analysis starts.
    let refused = err(&mut c, &["OPT.KEYSPACE", "DB", "1"]);
    assert!(refused.contains("DB must be from 0 to 0"), "{refused}");
    let running = info_int(&mut c, "opt", "opt_keyspace_analyses_running");
    assert_eq!(running, 0);
    // The tag index is per shard: the other primary has no member for user:1.
    assert_eq!(tag_keys(&mut c, "user:1").unwrap(), ["page:1"]);
    assert!(tag_keys(&mut other.conn(), "user:1").unwrap().is_empty());

    // The owner's replica replicates the index and serves reads after READONLY.
    let replica = cluster.replicas_of(owner)[0];
    replica.wait_for(
        "the tag to reach the replica",
        Duration::from_secs(10),
        |r| {
            let _ = command(r, &["READONLY"]);
            tag_keys(r, "user:1").is_ok_and(|m| m == ["page:1"])
        },
    );
    let mut r = replica.conn();
    let refused = err(&mut r, &["OPT.SET", "page:1", "w", "TAGS", "user:1"]);
    assert!(is_moved(&refused), "{refused}");
}

/// Writes `n` keys spread over every slot, each tagged `site` and `user:<i % 10>`, on the
/// shard that owns it; returns how many went to each primary (by port).
fn load_tagged_keys(cluster: &Cluster, n: usize) -> std::collections::HashMap<u16, usize> {
    let mut per_node = std::collections::HashMap::new();
    let mut cons: std::collections::HashMap<u16, redis::Connection> = cluster
        .primaries()
        .into_iter()
        .map(|p| (p.port, p.conn()))
        .collect();
    let owners: Vec<(u16, Vec<(u16, u16)>)> = cluster
        .primaries()
        .into_iter()
        .map(|p| (p.port, opt_harness::own_slot_ranges(p)))
        .collect();
    for i in 0..n {
        let key = format!("page:{i}");
        let slot = opt_core::cluster::key_slot(key.as_bytes());
        let port = owners
            .iter()
            .find(|(_, r)| r.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|(p, _)| *p)
            .expect("an owner for every slot");
        let user = format!("user:{}", i % 10);
        ok(
            cons.get_mut(&port).unwrap(),
            &["OPT.SET", &key, "v", "TAGS", "site", &user],
        );
        *per_node.entry(port).or_insert(0) += 1;
    }
    per_node
}

#[test]
fn optctl_merges_hot_keys_and_invalidates_across_every_shard() {
    let mut cluster = Cluster::start(3, 1, &["opt.hotkeys-sample-ratio 1"]);
    let per_node = load_tagged_keys(&cluster, 3000);
    assert_eq!(per_node.len(), 3, "keys on every shard: {per_node:?}");
    // One hot key per shard, with different heat.
    let hot = ["page:1", "page:2", "page:3"];
    let mut expected = Vec::new();
    for (i, key) in hot.iter().enumerate() {
        let owner = cluster.owner(key);
        let mut c = owner.conn();
        for _ in 0..(200 * (i + 1)) {
            let _: Option<String> = redis::cmd("GET").arg(*key).query(&mut c).unwrap();
        }
        expected.push((key.to_string(), owner.port, cluster.slot(key)));
    }
    let owners: std::collections::HashSet<u16> = expected.iter().map(|e| e.1).collect();
    let url = cluster.nodes[0].url();

    let (code, out, err) = optctl(&["--url", &url, "--json", "hotkeys", "--count", "3"], &[]);
    assert_eq!(code, 0, "{err}");
    let r: opt_core::report::HotKeysReport = serde_json::from_str(&out).unwrap();
    let got: Vec<(String, u16, u16)> = r
        .entries
        .iter()
        .map(|e| {
            let node = e.node.as_deref().expect("a node for every merged key");
            let port = node.rsplit_once(':').unwrap().1.parse().unwrap();
            (e.name.clone(), port, e.slot.expect("a slot for every key"))
        })
        .collect();
    expected.reverse();
    assert_eq!(got, expected, "hottest first, each with its owner and slot");
    if owners.len() > 1 {
        // Keys from several shards are in one ranking.
        let nodes: std::collections::HashSet<_> = got.iter().map(|g| g.1).collect();
        assert_eq!(nodes, owners);
    }
    // The cluster's accesses are the sum of the shards'.
    assert!(r.estimated_accesses >= 1200, "{}", r.estimated_accesses);
    // The table names the node and slot; --single-node asks one node only.
    let (code, out, _) = optctl(&["--url", &url, "hotkeys"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("3 primaries of the cluster") && out.contains("slot"),
        "{out}"
    );
    let (_, out, _) = optctl(&["--url", &url, "--single-node", "--json", "hotkeys"], &[]);
    let one: opt_core::report::HotKeysReport = serde_json::from_str(&out).unwrap();
    assert!(one.entries.iter().all(|e| e.node.is_none()));

    // Reads sent to a replica (READONLY) are that key's traffic too: page:1 read 600 times
    // on its primary's replica becomes the hottest key, under its primary, with 800 reads
    // (and the write that stored it).
    let owner = cluster.owner("page:1");
    let replica = cluster.replicas_of(owner)[0];
    let mut r = replica.conn();
    ok(&mut r, &["READONLY"]);
    for _ in 0..600 {
        let _: Option<String> = redis::cmd("GET").arg("page:1").query(&mut r).unwrap();
    }
    let (code, out, err) = optctl(&["--url", &url, "--json", "hotkeys", "--count", "3"], &[]);
    assert_eq!(code, 0, "{err}");
    let r: opt_core::report::HotKeysReport = serde_json::from_str(&out).unwrap();
    let first = &r.entries[0];
    assert_eq!(
        (first.name.as_str(), first.count, first.reads),
        ("page:1", 801, 800),
        "{r:?}"
    );
    assert_eq!(first.node, Some(format!("127.0.0.1:{}", owner.port)));
    assert_eq!(r.entries.iter().filter(|e| e.name == "page:1").count(), 1);
    let (code, out, _) = optctl(
        &[
            "--url",
            &url,
            "--json",
            "hotkeys",
            "--count",
            "3",
            "--primaries-only",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let p: opt_core::report::HotKeysReport = serde_json::from_str(&out).unwrap();
    let page1 = p
        .entries
        .iter()
        .find(|e| e.name == "page:1")
        .expect("page:1");
    assert_eq!(page1.count, 201, "the primary's own traffic: {p:?}");
    let (code, out, _) = optctl(&["--url", &url, "hotkeys"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("and their 3 replicas"), "{out}");
    // The report's hot keys are the same.
    let (code, out, err) = optctl(&["--url", &url, "--json", "report", "--samples", "0"], &[]);
    assert_eq!(code, 0, "{err}");
    let full: opt_core::report::FullReport = serde_json::from_str(&out).unwrap();
    let hot = full.hotkeys.expect("hot keys in the report");
    assert_eq!(
        (hot.entries[0].name.as_str(), hot.entries[0].count),
        ("page:1", 801)
    );

    // The tag index of the cluster is the sum of the shards'.
    let (code, out, err) = optctl(&["--url", &url, "--json", "tags"], &[]);
    assert_eq!(code, 0, "{err}");
    let t: opt_core::report::TagInfoReport = serde_json::from_str(&out).unwrap();
    assert_eq!((t.keys, t.pairs), (3000, 6000));
    assert_eq!(
        (t.largest[0].tag.as_str(), t.largest[0].keys),
        ("site", 3000)
    );
    // Status lists every primary with its slots.
    let (code, out, err) = optctl(&["--url", &url, "--json", "status"], &[]);
    assert_eq!(code, 0, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    let slots: u64 = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["slots"].as_u64().unwrap())
        .sum();
    assert_eq!(slots, 16384);
    assert_eq!(st["nodes"].as_array().unwrap().len(), 3);

    // One key in every one of the 16384 slots, all with one tag: a single invalidation
    // reaches every slot of every shard.
    let mut every_slot: Vec<Option<String>> = vec![None; 16384];
    let mut missing = 16384;
    let mut j = 0u64;
    while missing > 0 {
        let key = format!("s:{j}");
        let slot = usize::from(opt_core::cluster::key_slot(key.as_bytes()));
        if every_slot[slot].is_none() {
            every_slot[slot] = Some(key);
            missing -= 1;
        }
        j += 1;
    }
    for p in cluster.primaries() {
        let own = opt_harness::own_slot_ranges(p);
        let mut pipe = redis::pipe();
        for (slot, key) in every_slot.iter().enumerate() {
            if own
                .iter()
                .any(|&(a, b)| usize::from(a) <= slot && slot <= usize::from(b))
            {
                pipe.cmd("OPT.SET")
                    .arg(key.as_deref().unwrap())
                    .arg("v")
                    .arg("TAGS")
                    .arg("all-slots")
                    .ignore();
            }
        }
        let _: () = pipe.query(&mut p.conn()).unwrap();
    }
    let (code, out, err) = optctl(&["--url", &url, "--json", "invalidate", "all-slots"], &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["deleted"], 16384, "{v}");

    // Invalidation fans out: every shard deletes its own keys, atomically per shard.
    let (code, out, err) = optctl(&["--url", &url, "--json", "invalidate", "user:3"], &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["deleted"], 300, "{v}");
    assert_eq!(v["shards"].as_array().unwrap().len(), 3, "{v}");
    // No slot moves and no tags are on their way: one pass.
    assert!(v["second_pass"].is_null(), "{v}");
    // --soft marks them stale on every shard, and deletes none.
    let (code, out, err) = optctl(
        &["--url", &url, "--json", "invalidate", "site", "--soft"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["marked_stale"], 2700, "{v}");
    let per_shard: Vec<i64> = v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["marked_stale"].as_i64().unwrap())
        .collect();
    assert_eq!(per_shard.len(), 3, "{v}");
    assert!(per_shard.iter().all(|n| *n > 0), "{v}");
    let (code, out, err) = optctl(&["--url", &url, "invalidate", "site"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("deleted 2700 keys tagged site on 3 shards"),
        "{out}"
    );
    for p in cluster.primaries() {
        let keys: i64 = redis::cmd("DBSIZE").query(&mut p.conn()).unwrap();
        assert_eq!(keys, 0, "keys left on {}", p.port);
        let t = tag_info(&mut p.conn());
        assert_eq!((t.keys, t.tags), (0, 0), "the index leaked on {}", p.port);
    }

    // While a slot moves by MIGRATE, a key on its way may be missed by both nodes' pass:
    // optctl invalidates a second time once the tags had time to follow, and says so.
    let source = cluster.owner("{moving}");
    let target = cluster.other_primary(source);
    let mut src = source.conn();
    for i in 0..4 {
        ok(
            &mut src,
            &["OPT.SET", &format!("{{moving}}:{i}"), "v", "TAGS", "moving"],
        );
    }
    start_slot_move(source, target, cluster.slot("{moving}"));
    let port = target.port.to_string();
    ok(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, "{moving}:0", "0", "5000"],
    );
    // With --soft the second pass marks the same keys again: each is counted once.
    let (code, out, err) = optctl(
        &["--url", &url, "--json", "invalidate", "moving", "--soft"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["second_pass"].is_object(), "{v}");
    assert_eq!(v["marked_stale"], 4, "{v}");
    let (code, out, err) = optctl(&["--url", &url, "--json", "invalidate", "moving"], &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["deleted"], 4, "{v}");
    assert_eq!(
        v["second_pass"]["reason"], "slots were moving between nodes",
        "{v}"
    );
    assert!(v["second_pass"]["after_ms"].as_u64().unwrap() >= 200, "{v}");
    let (code, out, err) = optctl(&["--url", &url, "invalidate", "moving"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("slots were moving between nodes: invalidated again"),
        "{out}"
    );

    // A primary that does not answer is reported, and the others still answer.
    let down = cluster
        .nodes
        .iter()
        .position(|n| n.port != cluster.nodes[0].port && Cluster::role(n) == "master")
        .unwrap();
    let down_port = cluster.nodes[down].port;
    cluster.nodes[down].stop();
    let (code, out, err) = optctl(&["--url", &url, "--json", "hotkeys"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(":{down_port} did not answer")),
        "{err}"
    );
    let _: opt_core::report::HotKeysReport = serde_json::from_str(&out).unwrap();
    // For an invalidation that is an error: keys may remain on the missing shard.
    let (code, _, err) = optctl(&["--url", &url, "invalidate", "site"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1 of 3 shards did not answer"), "{err}");
}

/// A node's id (CLUSTER MYID).
fn node_id(node: &Server) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node.conn())
        .unwrap()
}

/// Marks `slot` as migrating from `source` to `target` (IMPORTING on the target, MIGRATING
/// on the source), and returns the two node ids.
fn start_slot_move(source: &Server, target: &Server, slot: u16) -> (String, String) {
    let (mut src, mut dst) = (source.conn(), target.conn());
    let slot = slot.to_string();
    let (src_id, dst_id) = (node_id(source), node_id(target));
    ok(
        &mut dst,
        &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id],
    );
    ok(
        &mut src,
        &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id],
    );
    (src_id, dst_id)
}

/// Starts moving `slot` from `source` to `target` (IMPORTING on the target, MIGRATING on the
/// source) and moves `keys` with one `MIGRATE ... KEYS`; returns both node ids.
fn move_keys(source: &Server, target: &Server, slot: u16, keys: &[&str]) -> (String, String) {
    let ids = start_slot_move(source, target, slot);
    let mut src = source.conn();
    let port = target.port.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    migrate.extend(keys);
    ok(&mut src, &migrate);
    ids
}

#[test]
fn the_tag_index_survives_a_failover_and_follows_a_slot_migration() {
    let cluster = Cluster::start(3, 1, &[]);
    let owner = cluster.owner("page:1");
    let mut c = owner.conn();
    // Keys in the slot of page:1 (hash tag) so they all live on one shard.
    for i in 0..20 {
        ok(
            &mut c,
            &["OPT.SET", &format!("{{page:1}}:{i}"), "v", "TAGS", "t1"],
        );
    }
    ok(&mut c, &["OPT.SET", "page:1", "v", "TAGS", "t1", "moving"]);
    let replica = cluster.replicas_of(owner)[0];
    replica.wait_for("the index on the replica", Duration::from_secs(10), |r| {
        let _ = command(r, &["READONLY"]);
        tag_keys(r, "t1").is_ok_and(|k| k.len() == 21)
    });

    // Failover: the replica becomes the primary with the same index.
    ok(&mut replica.conn(), &["CLUSTER", "FAILOVER"]);
    replica.wait_for("the replica to take over", Duration::from_secs(20), |r| {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(r)
            .unwrap_or_default();
        info.contains("role:master")
    });
    cluster.wait_healthy();
    // Every node must know the new primary before slots can move to or from it.
    let me = format!("127.0.0.1:{}@", replica.port);
    for n in &cluster.nodes {
        n.wait_for(
            "every node to see the failover",
            Duration::from_secs(20),
            |c| {
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(c)
                    .unwrap_or_default();
                nodes.lines().any(|l| {
                    l.contains(&me)
                        && l.split_whitespace()
                            .nth(2)
                            .is_some_and(|f| f.contains("master"))
                })
            },
        );
    }
    let mut new_primary = replica.conn();
    let mut keys = tag_keys(&mut new_primary, "t1").unwrap();
    keys.sort();
    assert_eq!(keys.len(), 21, "{keys:?}");
    // It invalidates, and the old primary (a replica now) follows through replication.
    let deleted: i64 = redis::cmd("OPT.INVALIDATE")
        .arg("t1")
        .query(&mut new_primary)
        .unwrap();
    assert_eq!(deleted, 21);
    owner.wait_for(
        "the old primary to drop the keys",
        Duration::from_secs(10),
        |o| {
            let _ = command(o, &["READONLY"]);
            tag_keys(o, "t1").is_ok_and(|k| k.is_empty())
                && redis::cmd("DBSIZE").query::<i64>(o).is_ok_and(|n| n == 0)
        },
    );

    // Slot migration with MIGRATE: the source's index drops the keys (no leak) and their tags
    // follow them to the target, in both of MIGRATE's forms.
    let primary = replica; // the shard's primary now
    let mut src = primary.conn();
    ok(
        &mut src,
        &["OPT.SET", "page:1", "v", "TAGS", "moving", "page"],
    );
    for i in 0..5 {
        ok(
            &mut src,
            &[
                "OPT.SET",
                &format!("{{page:1}}:m{i}"),
                "v",
                "TAGS",
                "moving",
            ],
        );
    }
    ok(&mut src, &["SET", "{page:1}:untagged", "v"]);
    // A value with freshness: logically fresh for 100 s, kept 60 s more to be served stale.
    ok(
        &mut src,
        &[
            "OPT.SET",
            "{page:1}:fresh",
            "v",
            "EX",
            "100",
            "STALE",
            "60",
            "TAGS",
            "moving",
        ],
    );
    let target = cluster.other_primary(primary);
    let mut dst = target.conn();
    let slot = cluster.slot("page:1").to_string();
    let moved = [0, 1, 2, 3, 4].map(|i| format!("{{page:1}}:m{i}"));
    let mut keys: Vec<&str> = moved.iter().map(String::as_str).collect();
    keys.extend(["{page:1}:untagged", "{page:1}:fresh"]);
    let (_, dst_id) = move_keys(primary, target, cluster.slot("page:1"), &keys);
    let port = target.port.to_string();
    ok(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, "page:1", "0", "5000"],
    );
    ok(&mut dst, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    ok(&mut src, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    assert!(
        tag_keys(&mut src, "moving").unwrap().is_empty(),
        "the source leaked"
    );
    let t = tag_info(&mut src);
    assert_eq!((t.keys, t.tags), (0, 0));
    let value: Option<String> = redis::cmd("GET").arg("page:1").query(&mut dst).unwrap();
    assert_eq!(value.as_deref(), Some("v"));
    // The tags arrive over the cluster bus right after the keys.
    target.wait_for("the tags on the target", Duration::from_secs(10), |d| {
        tag_keys(d, "moving").is_ok_and(|k| k.len() == 7)
    });
    // The freshness came along: the value expires logically in 100 s, not when the key does
    // (160 s), on the target and on its replica.
    let logical_ttl = |c: &mut redis::Connection| -> i64 {
        let reply: std::collections::HashMap<String, redis::Value> = redis::cmd("OPT.FETCH")
            .arg("{page:1}:fresh")
            .query(c)
            .unwrap();
        redis::from_redis_value(reply["ttl_ms"].clone()).unwrap()
    };
    let ttl = logical_ttl(&mut dst);
    assert!((90_000..=100_000).contains(&ttl), "ttl_ms {ttl}");
    let mut page_tags: Vec<String> = redis::cmd("OPT.TAGS")
        .arg("page:1")
        .query(&mut dst)
        .unwrap();
    page_tags.sort();
    assert_eq!(page_tags, ["moving", "page"]);
    assert_eq!(info_int(&mut src, "opt", "opt_tags_migrated_keys_sent"), 7);
    assert_eq!(
        info_int(&mut dst, "opt", "opt_tags_migrated_keys_received"),
        7
    );
    // The target's replica got them too (as OPT.TAG), and so equals its primary.
    let target_replica = cluster.replicas_of(target)[0];
    let want = tag_info(&mut dst).digest;
    target_replica.wait_for("the replica of the target", Duration::from_secs(10), |r| {
        tag_info(r).digest == want
    });
    let mut r = target_replica.conn();
    ok(&mut r, &["READONLY"]);
    let ttl = logical_ttl(&mut r);
    assert!((90_000..=100_000).contains(&ttl), "replica's ttl_ms {ttl}");
    // Invalidation on the new owner finds every moved key.
    let deleted: i64 = redis::cmd("OPT.INVALIDATE")
        .arg("moving")
        .query(&mut dst)
        .unwrap();
    assert_eq!(deleted, 7);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut dst).unwrap(), 1);
}

/// MIGRATE queued in MULTI. Where the filter sees its client (Redis 7.2+, Valkey), it keeps
/// the MIGRATE until the client's EXEC and sends the tags then, after the keys, as outside
/// MULTI: a `MIGRATE ... REPLACE` onto a key the target already has keeps them too, and a
/// DISCARD or a disconnect sends nothing. On Redis 7.0, whose filter cannot tell a queued
/// MIGRATE from one that runs, the keys that stay once a MIGRATE has returned wait for an
/// EXEC that deletes them, and their tags go once it has run: the outcome is the same. The
/// target replicates what it applied.
#[test]
fn tags_follow_a_migrate_queued_in_multi() {
    let filter_sees_client = !opt_harness::server_identity().starts_with("redis 7.0");
    let cluster = Cluster::start(3, 1, &[]);
    let source = cluster.owner("batch:1");
    let target = cluster.other_primary(source);
    let (mut src, mut dst) = (source.conn(), target.conn());
    let keys = ["{batch:1}:a", "{batch:1}:b", "{batch:1}:c"];
    let discarded = "{batch:1}:d";
    // The target already has these (REPLACE overwrites them, in MULTI and outside).
    let replaced = "{batch:1}:e";
    let overwritten = "{batch:1}:f";
    for k in keys.into_iter().chain([discarded, replaced, overwritten]) {
        ok(&mut src, &["OPT.SET", k, "v", "TAGS", "queued", k]);
    }
    let (_, dst_id) = start_slot_move(source, target, cluster.slot("batch:1"));
    ok(&mut dst, &["ASKING"]);
    ok(&mut dst, &["OPT.SET", replaced, "old", "TAGS", "stale"]);
    ok(&mut dst, &["ASKING"]);
    ok(
        &mut dst,
        &["OPT.SET", overwritten, "old", "TAGS", "overwritten"],
    );
    let slot = cluster.slot("batch:1").to_string();
    let port = target.port.to_string();
    // Asked on a connection of its own: `src` is inside MULTI at times.
    let queued_clients = || info_int(&mut source.conn(), "opt", "opt_tags_migrate_queued_clients");
    let awaiting_exec = || {
        info_int(
            &mut source.conn(),
            "opt",
            "opt_tags_migrate_keys_awaiting_exec",
        )
    };
    // A MIGRATE the target refuses (it has the key, and no REPLACE): the tags go only for
    // keys that moved, so nothing is sent, and the target's key keeps its own tags. On 7.0
    // its key waits for an EXEC that could move it.
    let refused = command(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, replaced, "0", "5000"],
    )
    .unwrap_err();
    assert!(refused.to_string().contains("BUSYKEY"), "{refused}");
    let sent = info_int(&mut src, "opt", "opt_tags_migrated_keys_sent");
    let stale: Vec<String> = redis::cmd("OPT.TAGS")
        .arg(replaced)
        .query(&mut src)
        .unwrap();
    assert_eq!(
        stale.len(),
        2,
        "the source keeps the tags of the key that stayed"
    );
    assert_eq!(sent, 0);
    assert_eq!(awaiting_exec(), if filter_sees_client { 0 } else { 1 });
    // Time for a message that should not come.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(tag_keys(&mut dst, "stale").unwrap(), [replaced]);
    assert!(tag_keys(&mut dst, "queued").unwrap().is_empty());
    // A MIGRATE ... REPLACE outside MULTI onto a key the target has (what `redis-cli
    // --cluster ... --cluster-replace` retries with): the new value comes with its tags, and
    // the old value's go.
    ok(
        &mut src,
        &[
            "MIGRATE",
            "127.0.0.1",
            &port,
            overwritten,
            "0",
            "5000",
            "REPLACE",
        ],
    );
    target.wait_for("the overwriting key's tags", Duration::from_secs(10), |d| {
        tag_keys(d, "queued").is_ok_and(|k| k == [overwritten])
    });
    assert!(tag_keys(&mut dst, "overwritten").unwrap().is_empty());
    // A MIGRATE that never runs: nothing is sent.
    ok(&mut src, &["MULTI"]);
    command(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, discarded, "0", "5000"],
    )
    .unwrap();
    ok(&mut src, &["DISCARD"]);
    // A client that leaves inside MULTI leaves nothing queued.
    let mut leaving = source.conn();
    ok(&mut leaving, &["MULTI"]);
    command(
        &mut leaving,
        &["MIGRATE", "127.0.0.1", &port, keys[0], "0", "5000"],
    )
    .unwrap();
    if filter_sees_client {
        assert_eq!(queued_clients(), 1);
        drop(leaving);
        source.wait_for("the client's queue to go", Duration::from_secs(10), |c| {
            info_int(c, "opt", "opt_tags_migrate_queued_clients") == 0
        });
    } else {
        drop(leaving);
    }
    ok(&mut src, &["MULTI"]);
    let queued = command(
        &mut src,
        &[
            "MIGRATE",
            "127.0.0.1",
            &port,
            "",
            "0",
            "5000",
            "KEYS",
            keys[0],
            keys[1],
        ],
    )
    .unwrap();
    assert_eq!(queued, redis::Value::SimpleString("QUEUED".into()));
    command(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, keys[2], "0", "5000"],
    )
    .unwrap();
    command(
        &mut src,
        &[
            "MIGRATE",
            "127.0.0.1",
            &port,
            replaced,
            "0",
            "5000",
            "REPLACE",
        ],
    )
    .unwrap();
    if filter_sees_client {
        assert_eq!(queued_clients(), 1);
    } else {
        // The keys of the refused MIGRATE, the discarded one, the leaving client's and these
        // three: e, d, a, b and c.
        assert_eq!(awaiting_exec(), 5);
    }
    // Only the key moved outside MULTI was sent.
    let sent = info_int(&mut source.conn(), "opt", "opt_tags_migrated_keys_sent");
    assert_eq!(sent, 1);
    std::thread::sleep(Duration::from_millis(200));
    // None applied yet: not even to the key the target already has.
    assert_eq!(tag_keys(&mut dst, "queued").unwrap(), [overwritten]);
    assert_eq!(tag_keys(&mut dst, "stale").unwrap(), [replaced]);
    let replies: Vec<String> = redis::cmd("EXEC").query(&mut src).unwrap();
    assert_eq!(replies, ["OK", "OK", "OK"]);
    assert_eq!(queued_clients(), 0);
    // On 7.0 the discarded MIGRATE's key stays, so it still waits for an EXEC.
    source.wait_for("the EXEC's tags to go", Duration::from_secs(10), |c| {
        info_int(c, "opt", "opt_tags_migrate_keys_awaiting_exec")
            == if filter_sees_client { 0 } else { 1 }
            && info_int(c, "opt", "opt_tags_migrated_keys_sent") == 5
    });
    // The source may give the slot away only once it holds none of its keys.
    let deleted: i64 = redis::cmd("DEL").arg(discarded).query(&mut src).unwrap();
    assert_eq!(deleted, 1);
    ok(&mut dst, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    ok(&mut src, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    // The replaced key carries the tags of the value that replaced it, not the old ones.
    let moved: Vec<&str> = keys.into_iter().chain([replaced, overwritten]).collect();
    target.wait_for("the tags on the target", Duration::from_secs(10), |d| {
        tag_keys(d, "queued").is_ok_and(|k| k.len() == moved.len())
    });
    for k in &moved {
        let tags: Vec<String> = redis::cmd("OPT.TAGS").arg(k).query(&mut dst).unwrap();
        let mut tags = tags;
        tags.sort();
        assert_eq!(tags, ["queued", k]);
    }
    assert!(tag_keys(&mut dst, "stale").unwrap().is_empty());
    let value: String = redis::cmd("GET").arg(replaced).query(&mut dst).unwrap();
    assert_eq!(value, "v");
    assert_eq!(info_int(&mut dst, "opt", "opt_tags_migrated_keys_held"), 0);
    // a, b, c and the two replaced keys.
    assert_eq!(
        info_int(&mut dst, "opt", "opt_tags_migrated_keys_received"),
        5
    );
    let t = tag_info(&mut src);
    assert_eq!((t.keys, t.tags), (0, 0), "the source leaked");
    // The target's replica got them as well.
    let want = tag_info(&mut dst).digest;
    cluster.replicas_of(target)[0].wait_for(
        "the replica of the target",
        Duration::from_secs(10),
        |r| tag_info(r).digest == want,
    );
    let deleted: i64 = redis::cmd("OPT.INVALIDATE")
        .arg("queued")
        .query(&mut dst)
        .unwrap();
    assert_eq!(deleted, moved.len() as i64);
}

/// MIGRATE ... COPY leaves every key on the source, so the module cannot tell which moved and
/// sends every key's tags when the MIGRATE runs (Redis 7.0: when it is queued), which can be
/// before the keys arrive: the target holds the tags of keys it does not have in a slot it
/// is importing, applies them when RESTORE brings the key, and drops them after 30 s when
/// it never does (a DISCARD on 7.0, whose filter cannot tell).
#[test]
fn tags_of_a_migrate_copy_are_held_until_the_key_comes() {
    let on_7_0 = opt_harness::server_identity().starts_with("redis 7.0");
    let cluster = Cluster::start(3, 0, &[]);
    let source = cluster.owner("copy:1");
    let target = cluster.other_primary(source);
    let (mut src, mut dst) = (source.conn(), target.conn());
    let (copied, discarded) = ("{copy:1}:a", "{copy:1}:b");
    for k in [copied, discarded] {
        ok(&mut src, &["OPT.SET", k, "v", "TAGS", "copied"]);
    }
    start_slot_move(source, target, cluster.slot("copy:1"));
    let port = target.port.to_string();
    let migrate_copy = |key: &str| -> Vec<String> {
        vec![
            "MIGRATE".into(),
            "127.0.0.1".into(),
            port.clone(),
            key.into(),
            "0".into(),
            "5000".into(),
            "COPY".into(),
        ]
    };
    let args = migrate_copy(copied);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&mut src, &["MULTI"]);
    command(&mut src, &args).unwrap();
    let replies: Vec<String> = redis::cmd("EXEC").query(&mut src).unwrap();
    assert_eq!(replies, ["OK"]);
    target.wait_for("the copied key's tags", Duration::from_secs(10), |d| {
        tag_keys(d, "copied").is_ok_and(|k| k == [copied])
    });
    // COPY: the source keeps its key and its tags.
    assert_eq!(tag_keys(&mut src, "copied").unwrap().len(), 2);
    let args = migrate_copy(discarded);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&mut src, &["MULTI"]);
    command(&mut src, &args).unwrap();
    ok(&mut src, &["DISCARD"]);
    std::thread::sleep(Duration::from_millis(200));
    let held = info_int(&mut dst, "opt", "opt_tags_migrated_keys_held");
    assert_eq!(held, i64::from(on_7_0));
    assert_eq!(tag_keys(&mut dst, "copied").unwrap(), [copied]);
    if on_7_0 {
        target.wait_for("held tags to expire", Duration::from_secs(45), |d| {
            info_int(d, "opt", "opt_tags_migrated_keys_held") == 0
        });
        assert_eq!(tag_keys(&mut dst, "copied").unwrap(), [copied]);
    }
}

/// Whether the server has numbered databases in cluster mode (Valkey 9+, `cluster-databases`);
/// says so when it has not, for the test that then skips.
fn has_cluster_databases() -> bool {
    let identity = opt_harness::server_identity();
    let major = identity
        .strip_prefix("valkey ")
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    let has = major.is_some_and(|m| m >= 9);
    if !has {
        eprintln!("skipped: {identity} has no numbered databases in cluster mode (Valkey 9+)");
    }
    has
}

/// Valkey 9 can have numbered databases in cluster mode. A MIGRATE run from db 1 into db 1
/// carries the tags of db 1's keys (the filter reads its client's database), alone and queued
/// in MULTI, and the key of the same name in db 0 keeps its own. Other servers have only
/// db 0 in a cluster: skipped.
#[test]
fn tags_follow_a_migrate_from_another_database() {
    if !has_cluster_databases() {
        return;
    }
    let cluster = Cluster::start(3, 0, &["cluster-databases 2"]);
    let source = cluster.owner("{db1}");
    let target = cluster.other_primary(source);
    let (mut src, mut dst) = (source.conn(), target.conn());
    let (alone, queued) = ("{db1}:alone", "{db1}:queued");
    ok(&mut src, &["OPT.SET", alone, "db0", "TAGS", "first-db"]);
    ok(&mut src, &["SELECT", "1"]);
    ok(&mut dst, &["SELECT", "1"]);
    for k in [alone, queued] {
        ok(&mut src, &["OPT.SET", k, "v", "TAGS", "second-db", k]);
    }
    start_slot_move(source, target, cluster.slot("{db1}"));
    let port = target.port.to_string();
    ok(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, alone, "1", "5000"],
    );
    ok(&mut src, &["MULTI"]);
    command(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, queued, "1", "5000"],
    )
    .unwrap();
    let replies: Vec<String> = redis::cmd("EXEC").query(&mut src).unwrap();
    assert_eq!(replies, ["OK"]);
    target.wait_for(
        "the tags in db 1 of the target",
        Duration::from_secs(10),
        |d| {
            let _ = command(d, &["SELECT", "1"]);
            tag_keys(d, "second-db").is_ok_and(|k| k.len() == 2)
        },
    );
    for k in [alone, queued] {
        // The target imports the slot: it serves its keys after ASKING.
        ok(&mut dst, &["ASKING"]);
        let mut tags: Vec<String> = redis::cmd("OPT.TAGS").arg(k).query(&mut dst).unwrap();
        tags.sort();
        assert_eq!(tags, ["second-db", k]);
    }
    // Db 0 on both nodes: the source's key of the same name stayed, with its own tag; the
    // target got nothing there.
    ok(&mut src, &["SELECT", "0"]);
    let tags: Vec<String> = redis::cmd("OPT.TAGS").arg(alone).query(&mut src).unwrap();
    assert_eq!(tags, ["first-db"]);
    let mut dst0 = target.conn();
    assert!(tag_keys(&mut dst0, "second-db").unwrap().is_empty());
    assert_eq!(
        info_int(&mut dst0, "opt", "opt_tags_migrated_keys_received"),
        2
    );
}

/// On Valkey 9 with `cluster-databases 2`, OPT.KEYSPACE analyses db 1 of a cluster node and
/// refuses db 2 up front. Other servers have only db 0 in a cluster (checked in
/// `every_node_serves_its_own_keys_and_redirects_the_rest`): skipped.
#[test]
fn keyspace_analyses_the_numbered_databases_of_a_valkey_9_cluster() {
    if !has_cluster_databases() {
        return;
    }
    let cluster = Cluster::start(3, 0, &["cluster-databases 2"]);
    let node = cluster.owner("{k}");
    let mut c = node.conn();
    ok(&mut c, &["SELECT", "1"]);
    for i in 0..5 {
        ok(&mut c, &["SET", &format!("{{k}}:item:{i}"), "v"]);
    }
    let report: opt_core::report::KeyspaceReport =
        opt_harness::json(&mut c, &["OPT.KEYSPACE", "FULL", "DB", "1"]);
    assert_eq!((report.db, report.keys_scanned), (1, 5));
    let refused = err(&mut c, &["OPT.KEYSPACE", "DB", "2"]);
    assert!(refused.contains("DB must be from 0 to 1"), "{refused}");
}

/// A key's tags reach the node MIGRATE moves it to a moment after the key: an OPT.INVALIDATE
/// of one of its tags on that node in between misses it (and the node it left no longer has
/// it). So a node deletes, instead of tagging, a key that arrives with a tag it invalidated
/// in the last 2 s, when the user who invalidated may delete that key; the deletion reaches
/// its replica. The test makes the order certain: the target's invalidation runs after the
/// MIGRATE is queued in MULTI and before its EXEC.
#[test]
fn a_key_arriving_with_a_tag_just_invalidated_is_deleted() {
    let cluster = Cluster::start(3, 1, &[]);
    let source = cluster.owner("{late}");
    let target = cluster.other_primary(source);
    let (mut src, mut dst) = (source.conn(), target.conn());
    let (gone, kept, forbidden, after) = ("{late}:a", "{late}:c", "{late}:b", "{late}:d");
    ok(&mut src, &["OPT.SET", gone, "v", "TAGS", "late", "page"]);
    ok(&mut src, &["OPT.SET", kept, "v", "TAGS", "other"]);
    ok(&mut src, &["OPT.SET", forbidden, "v", "TAGS", "late"]);
    ok(&mut src, &["OPT.SET", after, "v", "TAGS", "old"]);
    let (_, dst_id) = start_slot_move(source, target, cluster.slot("{late}"));
    let port = target.port.to_string();
    let migrate_in_multi =
        |src: &mut redis::Connection, keys: &[&str], between: &mut dyn FnMut()| {
            ok(src, &["MULTI"]);
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            command(src, &args).unwrap();
            between();
            let replies: Vec<String> = redis::cmd("EXEC").query(src).unwrap();
            assert_eq!(replies, ["OK"]);
        };
    let deleted_on_arrival =
        |d: &mut redis::Connection| info_int(d, "opt", "opt_tags_deleted_on_arrival");
    migrate_in_multi(&mut src, &[gone, kept], &mut || {
        let n: i64 = redis::cmd("OPT.INVALIDATE")
            .arg("late")
            .query(&mut dst)
            .unwrap();
        assert_eq!(n, 0, "the key is not here yet");
    });
    target.wait_for("the invalidated key to go", Duration::from_secs(10), |d| {
        deleted_on_arrival(d) == 1
    });
    let exists = |c: &mut redis::Connection, key: &str| -> i64 {
        ok(c, &["ASKING"]);
        redis::cmd("EXISTS").arg(key).query(c).unwrap()
    };
    assert_eq!(exists(&mut dst, gone), 0);
    // The source gave it away (its other key of the tag stays).
    assert_eq!(tag_keys(&mut src, "late").unwrap(), [forbidden]);
    // The key with another tag came, tagged.
    target.wait_for("the other key's tags", Duration::from_secs(10), |d| {
        tag_keys(d, "other").is_ok_and(|k| k == [kept])
    });
    assert!(tag_keys(&mut dst, "page").unwrap().is_empty());
    // Invalidated by a user who may not delete that key: it comes, tagged.
    ok(
        &mut dst,
        &[
            "ACL",
            "SETUSER",
            "limited",
            "on",
            "nopass",
            "+@all",
            "~{late}:a*",
            "~{late}:c*",
        ],
    );
    let mut limited = target.conn();
    ok(&mut limited, &["AUTH", "limited", "x"]);
    migrate_in_multi(&mut src, &[forbidden], &mut || {
        let n: i64 = redis::cmd("OPT.INVALIDATE")
            .arg("late")
            .query(&mut limited)
            .unwrap();
        assert_eq!(n, 0);
    });
    target.wait_for("the forbidden key's tags", Duration::from_secs(10), |d| {
        tag_keys(d, "late").is_ok_and(|k| k == [forbidden])
    });
    assert_eq!(deleted_on_arrival(&mut dst), 1);

    // Past 2 s the invalidation is forgotten: a key that arrives then keeps its tags.
    let n: i64 = redis::cmd("OPT.INVALIDATE")
        .arg("old")
        .query(&mut dst)
        .unwrap();
    assert_eq!(n, 0);
    std::thread::sleep(Duration::from_millis(2200));
    migrate_in_multi(&mut src, &[after], &mut || {});
    target.wait_for("the late key's tags", Duration::from_secs(10), |d| {
        tag_keys(d, "old").is_ok_and(|k| k == [after])
    });
    assert_eq!(deleted_on_arrival(&mut dst), 1);

    // Once the slot is the target's, its replica holds the three keys that stayed, not the
    // one deleted on arrival, and the same index.
    let slot = cluster.slot("{late}").to_string();
    ok(&mut dst, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    ok(&mut src, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut dst).unwrap(), 3);
    let want = tag_info(&mut dst).digest;
    cluster.replicas_of(target)[0].wait_for("the replica", Duration::from_secs(10), |r| {
        tag_info(r).digest == want && redis::cmd("DBSIZE").query::<i64>(r).is_ok_and(|n| n == 3)
    });
}

/// While a slot moves, its tagged keys sit partly on the source and partly on the target,
/// which does not own the slot yet: an invalidation on each node deletes the keys it holds
/// (the target through the key API, since the server refuses a module's DEL there), the
/// target's replica follows, and a user whose ACL forbids one key deletes nothing.
#[test]
fn invalidation_during_a_slot_migration_deletes_on_both_nodes() {
    let cluster = Cluster::start(3, 1, &[]);
    let source = cluster.owner("{p}");
    let target = cluster.other_primary(source);
    let (mut src, mut dst) = (source.conn(), target.conn());
    for i in 0..6 {
        ok(
            &mut src,
            &["OPT.SET", &format!("{{p}}:{i}"), "v", "TAGS", "tg"],
        );
    }
    ok(&mut src, &["OPT.SET", "{p}:other", "v", "TAGS", "keep"]);
    // Keys of two slots, and a user who may delete only the one in the lower slot (the first
    // deleted): it deletes nothing, not the first slot's key.
    let low = (0..)
        .map(|i| format!("low:{i}"))
        .find(|k| cluster.owner(k).port == source.port && cluster.slot(k) < cluster.slot("{p}"))
        .unwrap();
    ok(&mut src, &["OPT.SET", &low, "v", "TAGS", "two-slots"]);
    ok(&mut src, &["OPT.SET", "{p}:high", "v", "TAGS", "two-slots"]);
    ok(
        &mut src,
        &[
            "ACL",
            "SETUSER",
            "lowonly",
            "on",
            ">pw",
            "+@all",
            &format!("~{low}"),
        ],
    );
    let mut lowonly = source.conn();
    ok(&mut lowonly, &["AUTH", "lowonly", "pw"]);
    let refused = err(&mut lowonly, &["OPT.INVALIDATE", "two-slots"]);
    assert!(
        refused.contains("NoPerm") && refused.contains("{p}:high"),
        "{refused}"
    );
    for k in [low.as_str(), "{p}:high"] {
        assert_eq!(
            redis::cmd("EXISTS").arg(k).query::<i64>(&mut src).unwrap(),
            1,
            "{k}"
        );
    }
    let both: i64 = redis::cmd("OPT.INVALIDATE")
        .arg("two-slots")
        .query(&mut src)
        .unwrap();
    assert_eq!(both, 2);
    move_keys(
        source,
        target,
        cluster.slot("{p}"),
        &["{p}:0", "{p}:1", "{p}:2"],
    );
    target.wait_for("the tags on the target", Duration::from_secs(10), |d| {
        tag_info(d).pairs == 3
    });
    // A user who may not delete {p}:2 deletes nothing on the target.
    ok(
        &mut dst,
        &[
            "ACL", "SETUSER", "limited", "on", ">pw", "+@all", "~{p}:0", "~{p}:1",
        ],
    );
    let mut limited = target.conn();
    ok(&mut limited, &["AUTH", "limited", "pw"]);
    let refused = err(&mut limited, &["OPT.INVALIDATE", "tg"]);
    assert!(
        refused.contains("NoPerm") && refused.contains("{p}:2"),
        "{refused}"
    );
    assert_eq!(tag_info(&mut dst).pairs, 3);
    // The default user deletes the keys each node holds.
    let on_target: i64 = redis::cmd("OPT.INVALIDATE")
        .arg("tg")
        .query(&mut dst)
        .unwrap();
    let on_source: i64 = redis::cmd("OPT.INVALIDATE")
        .arg("tg")
        .query(&mut src)
        .unwrap();
    assert_eq!((on_target, on_source), (3, 3));
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut dst).unwrap(), 0);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut src).unwrap(), 1);
    assert_eq!(tag_info(&mut dst).pairs, 0);
    let replica = cluster.replicas_of(target)[0];
    replica.wait_for(
        "the target's replica to follow",
        Duration::from_secs(10),
        |r| redis::cmd("DBSIZE").query::<i64>(r).is_ok_and(|n| n == 0) && tag_info(r).pairs == 0,
    );
}

/// `redis-cli --cluster reshard`, as operators run it, moves all but one slot of a primary to
/// another (MIGRATE ... KEYS in batches; a primary left with no slot becomes a replica of the
/// node that took its last one): the tags travel with the keys, the source keeps none, and
/// one `optctl invalidate` afterwards deletes every key.
#[test]
fn tags_follow_keys_through_redis_cli_reshard() {
    let cluster = Cluster::start(3, 0, &[]);
    let primaries = cluster.primaries();
    let (source, target) = (primaries[0], primaries[1]);
    let mut src = source.conn();
    let ranges = opt_harness::own_slot_ranges(source);
    let kept = ranges.iter().map(|r| r.1).max().unwrap();
    // Tagged keys across the source's slots, but not the one it keeps.
    let mut names = Vec::new();
    let mut i = 0;
    while names.len() < 200 {
        let name = format!("item:{i}");
        if cluster.owner(&name).port == source.port && cluster.slot(&name) != kept {
            ok(
                &mut src,
                &[
                    "OPT.SET",
                    &name,
                    "v",
                    "TAGS",
                    "catalog",
                    &format!("g{}", i % 4),
                ],
            );
            names.push(name);
        }
        i += 1;
    }
    let before = tag_info(&mut src);
    assert_eq!((before.keys, before.pairs), (200, 400));
    let slots: usize = ranges
        .iter()
        .map(|(a, b)| (b - a + 1) as usize)
        .sum::<usize>()
        - 1;
    opt_harness::redis_cli(&[
        "--cluster",
        "reshard",
        &format!("127.0.0.1:{}", source.port),
        "--cluster-from",
        &node_id(source),
        "--cluster-to",
        &node_id(target),
        "--cluster-slots",
        &slots.to_string(),
        "--cluster-yes",
    ]);
    cluster.wait_healthy();
    let mut dst = target.conn();
    target.wait_for("the tags on the target", Duration::from_secs(10), |d| {
        tag_info(d).pairs == 400
    });
    let t = tag_info(&mut src);
    assert_eq!((t.keys, t.pairs), (0, 0), "the source leaked");
    assert_eq!(opt_harness::own_slot_ranges(source), [(kept, kept)]);
    assert_eq!(tag_info(&mut dst).keys, 200);
    let (code, stdout, stderr) = optctl(
        &[
            "--url",
            &format!("redis://127.0.0.1:{}", target.port),
            "invalidate",
            "catalog",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("200"), "{stdout}");
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut dst).unwrap(), 0);
}

/// Runs `redis-cli --cluster reshard` of the first 60 slots of a primary, holding 2,400 keys
/// tagged `purge` (40 a slot), in a 3-primary cluster, and calls `invalidate` once 200 keys
/// have reached the target, while the rest still move. Returns what `invalidate` returned,
/// and what the cluster holds once the reshard is over.
fn invalidate_during_a_reshard<T>(invalidate: impl FnOnce(&Cluster) -> T) -> (T, AfterReshard) {
    let cluster = Cluster::start(3, 0, &[]);
    let primaries = cluster.primaries();
    let (source, target) = (primaries[0], primaries[1]);
    let mut src = source.conn();
    // redis-cli moves the source's first slots: fill 60 of them.
    let first = opt_harness::own_slot_ranges(source)[0].0;
    for slot in first..first + 60 {
        let tag = (0..)
            .map(|i| format!("h{i}"))
            .find(|t| opt_core::cluster::key_slot(t.as_bytes()) == slot)
            .unwrap();
        opt_harness::opt_set_many(
            &mut src,
            (0..40).map(|i| format!("{{{tag}}}:{i}")),
            &["purge"],
        );
    }
    let (from, to) = (node_id(source), node_id(target));
    let seed = format!("127.0.0.1:{}", source.port);
    let reshard = std::thread::spawn(move || {
        opt_harness::redis_cli(&[
            "--cluster",
            "reshard",
            &seed,
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            "60",
            "--cluster-pipeline",
            "5",
            "--cluster-yes",
        ]);
    });
    let mut dst = target.conn();
    let started = std::time::Instant::now();
    while redis::cmd("DBSIZE").query::<i64>(&mut dst).unwrap() < 200
        && started.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let result = invalidate(&cluster);
    reshard.join().unwrap();
    cluster.wait_healthy();
    assert_eq!(opt_harness::own_slot_ranges(source)[0].0, first + 60);
    // The last keys' tags land a moment after the reshard ends.
    for p in &primaries {
        p.wait_for("the tag transfers to land", Duration::from_secs(10), |c| {
            info_int(c, "opt", "opt_tags_transfers_pending") == 0
        });
    }
    // The transfers went to the target alone, not to every node.
    let third = info_int(
        &mut primaries[2].conn(),
        "opt",
        "opt_tags_transfer_messages_received",
    );
    assert_eq!(third, 0, "the node that took no part got tag transfers");
    assert!(
        info_int(
            &mut target.conn(),
            "opt",
            "opt_tags_transfer_messages_received"
        ) > 0
    );
    let left = primaries
        .iter()
        .map(|p| redis::cmd("DBSIZE").query::<i64>(&mut p.conn()).unwrap())
        .sum();
    let fresh = primaries.iter().map(|p| fresh_keys(&mut p.conn())).sum();
    let count = |field: &str| -> i64 {
        primaries
            .iter()
            .map(|p| info_int(&mut p.conn(), "opt", field))
            .sum()
    };
    let after = AfterReshard {
        left,
        fresh,
        marked_stale_on_arrival: count("opt_tags_marked_stale_on_arrival"),
    };
    (result, after)
}

/// What the cluster of [`invalidate_during_a_reshard`] holds once the reshard is over.
#[derive(Debug)]
struct AfterReshard {
    /// Keys left (the test's keys are the cluster's only ones).
    left: i64,
    /// Keys OPT.FETCH calls fresh.
    fresh: usize,
    /// Keys marked stale as they arrived, on all primaries.
    marked_stale_on_arrival: i64,
}

/// How many of a node's keys OPT.FETCH calls fresh (action `hit`).
fn fresh_keys(c: &mut redis::Connection) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c).unwrap();
    if keys.is_empty() {
        return 0;
    }
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("OPT.FETCH").arg(k);
    }
    let replies: Vec<Vec<redis::Value>> = pipe.query(c).unwrap();
    let hit = redis::Value::BulkString(b"hit".to_vec());
    replies.iter().filter(|r| r.contains(&hit)).count()
}

/// `optctl invalidate` during a reshard: every key that carried the tag when it started is
/// gone afterwards, including keys that were between two nodes at that moment. It saw the
/// slots move (or tags on their way) and invalidated a second time (which also covers nodes
/// whose module does not delete late arrivals, or arrivals later than 2 s).
#[test]
fn optctl_invalidate_during_a_reshard_misses_no_key() {
    let (v, after) = invalidate_during_a_reshard(|cluster| {
        let url = format!("redis://127.0.0.1:{}", cluster.nodes[2].port);
        let (code, out, err) = optctl(&["--url", &url, "--json", "invalidate", "purge"], &[]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    });
    assert!(v["second_pass"].is_object(), "{v}");
    assert_eq!(after.left, 0, "keys survived the invalidation: {v}");
    // Keys deleted as they arrived on their new node are not in the replies' counts.
    assert!(v["deleted"].as_i64().unwrap() <= 2400, "{v}");
}

/// `OPT.INVALIDATE args...` sent to each primary in turn, as an application sends it; the
/// replies.
fn invalidate_on_each_primary(cluster: &Cluster, args: &[&str]) -> Vec<i64> {
    cluster
        .primaries()
        .iter()
        .map(|p| {
            redis::cmd("OPT.INVALIDATE")
                .arg(args)
                .query::<i64>(&mut p.conn())
                .unwrap()
        })
        .collect()
}

/// One OPT.INVALIDATE on each primary, as an application sends it, during a reshard: no key
/// survives either. Keys whose tags had not reached their new node when it ran are deleted
/// as they arrive (`opt_tags_deleted_on_arrival`).
#[test]
fn one_invalidation_per_node_during_a_reshard_misses_no_key() {
    let (per_node, after) =
        invalidate_during_a_reshard(|cluster| invalidate_on_each_primary(cluster, &["purge"]));
    // Both the source and the target held keys when it ran (else this test shows nothing).
    assert!(per_node[0] > 0 && per_node[1] > 0, "{per_node:?}");
    assert_eq!(
        after.left, 0,
        "keys survived the invalidation ({per_node:?} deleted by the calls)"
    );
}

/// The same with SOFT: no key is deleted, and none is left fresh, including the keys that were
/// between two nodes when it ran (marked stale as they arrive,
/// `opt_tags_marked_stale_on_arrival`).
#[test]
fn one_soft_invalidation_per_node_during_a_reshard_leaves_no_key_fresh() {
    let (marked, after) = invalidate_during_a_reshard(|cluster| {
        invalidate_on_each_primary(cluster, &["purge", "SOFT"])
    });
    assert!(marked[0] > 0 && marked[1] > 0, "{marked:?}");
    eprintln!(
        "SOFT during a reshard: {marked:?} marked by the calls, {} as they arrived",
        after.marked_stale_on_arrival
    );
    assert_eq!(after.left, 2400, "SOFT deletes nothing");
    assert_eq!(
        after.fresh, 0,
        "keys left fresh ({marked:?} marked by the calls)"
    );
}

#[test]
fn optctl_merges_memory_by_pattern_and_finds_cluster_problems() {
    let mut cluster = Cluster::start(3, 1, &["opt.hotkeys-sample-ratio 1"]);
    // 3000 keys behind one hash tag: one slot, one shard. 300 keys spread over all shards.
    let tagged = cluster.owner("{hot}");
    let mut c = tagged.conn();
    for chunk in (0..3000).collect::<Vec<_>>().chunks(500) {
        let mut mset = redis::cmd("MSET");
        for i in chunk {
            mset.arg(format!("{{hot}}:item:{i}")).arg("x".repeat(100));
        }
        let _: () = mset.query(&mut c).unwrap();
    }
    let spread = load_tagged_keys(&cluster, 300);
    // Traffic: one key of the tagged slot gets most of it.
    for _ in 0..3000 {
        let _: Option<String> = redis::cmd("GET").arg("{hot}:item:1").query(&mut c).unwrap();
    }
    for p in cluster.primaries() {
        let mut pc = p.conn();
        let own = opt_harness::own_slot_ranges(p);
        let cold = (0..)
            .map(|j| format!("cold:{j}"))
            .find(|k| {
                let slot = opt_core::cluster::key_slot(k.as_bytes());
                own.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .unwrap();
        for _ in 0..100 {
            let _: Option<String> = redis::cmd("GET").arg(&cold).query(&mut pc).unwrap();
        }
    }
    let url = cluster.nodes[0].url();

    let (code, out, err) = optctl(&["--url", &url, "--json", "keyspace", "--full"], &[]);
    assert_eq!(code, 0, "{err}");
    let k: opt_core::report::KeyspaceReport = serde_json::from_str(&out).unwrap();
    assert_eq!(k.db_keys, 3300);
    assert_eq!(k.keys_scanned, 3300);
    let pattern = |name: &str| k.patterns.iter().find(|p| p.pattern == name);
    let hot = pattern("{hot}:item:*").unwrap_or_else(|| panic!("{:?}", k.patterns));
    assert_eq!(hot.keys, 3000);
    let pages: u64 = k
        .patterns
        .iter()
        .filter(|p| p.pattern.starts_with("page:"))
        .map(|p| p.keys)
        .sum();
    assert_eq!(pages, 300, "{:?}", k.patterns);
    // The shards' size distributions add up to the cluster's, and its median is in them.
    let h = &k.size_histogram;
    assert_eq!(h.iter().map(|b| b.keys).sum::<u64>(), 3300);
    assert_eq!(h.iter().map(|b| b.bytes).sum::<u64>(), k.total_bytes);
    assert!(h.windows(2).all(|w| w[0].from_bytes < w[1].from_bytes));
    assert!(h.iter().any(|b| b.from_bytes == k.size_percentiles.p50));
    assert_eq!(spread.len(), 3);
    let (code, out, _) = optctl(&["--url", &url, "keyspace", "--full"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("cluster of 3 primaries, by shard"), "{out}");

    let (code, out, err) = optctl(&["--url", &url, "--json", "advise"], &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rules: Vec<&str> = v["cluster"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    for rule in ["cluster-imbalance", "hot-slot", "hot-shard"] {
        assert!(rules.contains(&rule), "{rule} missing from {rules:?}");
    }
    assert!(!rules.contains(&"replica-lag"), "{rules:?}");
    let imbalance = v["cluster"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "cluster-imbalance")
        .unwrap();
    let tagged_addr = format!("127.0.0.1:{}", tagged.port);
    assert_eq!(imbalance["subjects"][0], tagged_addr.as_str());
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3);
    // Prometheus: every primary's series once per family, each sample with its node.
    let (code, out, err) = optctl(&["--url", &url, "metrics", "--keyspace-samples", "0"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("# TYPE redis_up gauge").count(), 1, "{out}");
    let ups: Vec<&str> = out.lines().filter(|l| l.starts_with("redis_up{")).collect();
    assert_eq!(ups.len(), 3, "{ups:?}");
    assert!(ups
        .iter()
        .all(|l| l.contains("node=\"127.0.0.1:") && l.ends_with(" 1")));
    for l in out.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            l.contains("{node=\"127.0.0.1:"),
            "a sample without its node: {l}"
        );
    }
    // Each primary's CLUSTER INFO, under redis_exporter's names; no cluster finding.
    let states: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("redis_cluster_state{"))
        .collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(states.iter().all(|l| l.ends_with(" 1")), "{states:?}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("redis_cluster_slots_ok{") && l.ends_with(" 16384"))
            .count(),
        3,
        "{out}"
    );
    assert!(out.contains("# TYPE opt_cluster_finding gauge"), "{out}");
    let hot_line = format!(
        "opt_hotkey_ops_per_second{{node=\"127.0.0.1:{}\",key=\"{{hot}}:item:1\"}}",
        tagged.port
    );
    assert!(out.contains(&hot_line), "{hot_line} missing:\n{out}");
    // Families stay contiguous: a family's samples are not split by another family.
    let mut seen = std::collections::HashSet::new();
    let mut last = String::new();
    for l in out.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split('{').next().unwrap().to_string();
        if name != last {
            assert!(seen.insert(name.clone()), "{name} appears in two places");
            last = name;
        }
    }

    // top sums the primaries and shows where the hot key lives.
    for _ in 0..2000 {
        let _: Option<String> = redis::cmd("GET").arg("{hot}:item:1").query(&mut c).unwrap();
    }
    let (code, out, err) = optctl(&["--url", &url, "top", "--times", "1"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cluster of 3 primaries"), "{out}");
    assert!(
        out.contains(&format!("{{hot}}:item:1  (127.0.0.1:{})", tagged.port)),
        "{out}"
    );
    let clients: f64 = out
        .split("clients")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(clients >= 3.0, "clients of every primary are summed: {out}");

    // The one-page report covers the cluster: merged memory, cluster and node findings.
    let (code, out, err) = optctl(
        &["--url", &url, "--json", "report", "--samples", "5000"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let r: opt_core::report::FullReport = serde_json::from_str(&out).unwrap();
    assert!(r.server.contains("cluster of 3 primaries"), "{}", r.server);
    assert_eq!(r.keyspace.as_ref().unwrap().db_keys, 3300);
    assert!(r.hotkeys_recent.is_some() && r.namespaces_recent.is_some());
    let advice = r.advice.unwrap();
    assert!(advice.findings.iter().any(|f| f.rule == "hot-slot"));
    assert_eq!(r.tags.unwrap().keys, 300);
    // --fail-on sees the cluster findings too.
    let (code, _, _) = optctl(&["--url", &url, "advise", "--fail-on", "warning"], &[]);
    assert_eq!(code, 3);

    // A slot left open by a reshard (MIGRATING on its owner, IMPORTING on the other side) is
    // one finding naming both nodes by address; once stable again, it is gone.
    let from = &cluster.nodes[0];
    let to = *cluster
        .primaries()
        .iter()
        .find(|p| p.port != from.port)
        .unwrap();
    let open_slot = opt_harness::own_slot_ranges(from)[0].0;
    start_slot_move(from, to, open_slot);
    let v = advise_cluster(&url);
    let open = cluster_findings_of(&v, "slot-open");
    assert_eq!(open.len(), 1, "{open:?}");
    let (from_addr, to_addr) = (
        format!("127.0.0.1:{}", from.port),
        format!("127.0.0.1:{}", to.port),
    );
    assert_eq!(
        open[0]["evidence"],
        format!("{from_addr} migrates it to {to_addr}; {to_addr} imports it from {from_addr}")
            .as_str(),
        "{}",
        open[0]
    );
    // Prometheus: each side's open slot, with its direction and the other node.
    let (code, out, err) = optctl(&["--url", &url, "metrics", "--keyspace-samples", "0"], &[]);
    assert_eq!(code, 0, "{err}");
    for (node, state, peer) in [
        (&from_addr, "migrating", &to_addr),
        (&to_addr, "importing", &from_addr),
    ] {
        let line = format!(
            "opt_cluster_slot_open{{node=\"{node}\",slot=\"{open_slot}\",state=\"{state}\",\
             peer=\"{peer}\"}} 1"
        );
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }
    for node in [from, to] {
        let slot = open_slot.to_string();
        ok(&mut node.conn(), &["CLUSTER", "SETSLOT", &slot, "STABLE"]);
    }
    assert!(cluster_findings_of(&advise_cluster(&url), "slot-open").is_empty());
    let (code, out, err) = optctl(&["--url", &url, "metrics", "--keyspace-samples", "0"], &[]);
    assert_eq!(code, 0, "{err}");
    let counts: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("opt_cluster_open_slots{"))
        .collect();
    assert_eq!(counts.len(), 3, "{out}");
    assert!(counts.iter().all(|l| l.ends_with(" 0")), "{counts:?}");

    // A primary that does not answer is a critical finding (every other figure leaves it
    // out), and --fail-on critical fails on it. Its replica stops first, so that no failover
    // replaces it while optctl runs.
    let victim = *cluster
        .primaries()
        .iter()
        .find(|p| p.port != from.port)
        .unwrap();
    let victim_addr = format!("127.0.0.1:{}", victim.port);
    let stopping: Vec<u16> = cluster
        .replicas_of(victim)
        .iter()
        .map(|r| r.port)
        .chain([victim.port])
        .collect();
    for port in stopping {
        cluster.stop_node(port);
    }
    let v = advise_cluster(&url);
    let down = cluster_findings_of(&v, "primary-unreachable");
    assert_eq!(down.len(), 1, "{}", v["cluster"]);
    assert_eq!(down[0]["severity"], "critical");
    assert_eq!(down[0]["subjects"][0], victim_addr.as_str());
    assert!(
        down[0]["evidence"].as_str().unwrap().contains("slots"),
        "{}",
        down[0]
    );
    assert_eq!(v["failed"][0]["node"], victim_addr.as_str());
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2);
    let (code, out, _) = optctl(&["--url", &url, "advise", "--fail-on", "critical"], &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("3 primaries, 1 did not answer"), "{out}");
    // Prometheus has it too, as a cluster-wide series without a node label.
    let (code, out, err) = optctl(&["--url", &url, "metrics", "--keyspace-samples", "0"], &[]);
    assert_eq!(code, 0, "{err}");
    let finding = format!(
        "opt_cluster_finding{{rule=\"primary-unreachable\",severity=\"critical\",\
         subject=\"{victim_addr}\"}} 1"
    );
    assert!(
        out.lines().any(|l| l == finding),
        "{finding} missing:\n{out}"
    );
    assert!(
        out.contains(&format!("redis_up{{node=\"{victim_addr}\"}} 0")),
        "{out}"
    );
    // The hot keys are those of the primaries that answered, and the header says so.
    let (code, out, err) = optctl(&["--url", &url, "hotkeys"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.contains("the 3 primaries") && l.contains("(1 did not answer)")),
        "{out}"
    );
    // Each node that did not answer is said once: the primary, and its replica, which
    // optctl hotkeys asks too for the reads it serves.
    assert_eq!(err.matches("did not answer").count(), 2, "{err}");
    assert_eq!(
        err.matches(&format!("node {victim_addr} did not answer"))
            .count(),
        1,
        "said once: {err}"
    );
    let (code, out, err) = optctl(&["--url", &url, "tags"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("1 of 3 primaries did not answer: their keys and tags are not counted"),
        "{out}"
    );
    let (code, out, err) = optctl(&["--url", &url, "keyspace"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("cluster of 3 primaries, by shard")
            && out.contains(&format!("{victim_addr:<22} did not answer")),
        "{out}"
    );

    // A slot that no primary serves (a DELSLOTS, as a reshard stopped halfway leaves) is
    // named, in the view of the node optctl asked.
    let seed_slot = opt_harness::own_slot_ranges(&cluster.nodes[0])[0].0;
    ok(
        &mut cluster.nodes[0].conn(),
        &["CLUSTER", "DELSLOTS", &seed_slot.to_string()],
    );
    let v = advise_cluster(&url);
    let uncovered = cluster_findings_of(&v, "slots-uncovered");
    assert_eq!(uncovered.len(), 1, "{}", v["cluster"]);
    assert_eq!(uncovered[0]["title"], "1 of 16384 slots have no primary");
    assert!(
        uncovered[0]["evidence"]
            .as_str()
            .unwrap()
            .ends_with(&format!(": {seed_slot}")),
        "{}",
        uncovered[0]
    );
}

/// `optctl --json advise` on the cluster of `url`, which must succeed.
fn advise_cluster(url: &str) -> serde_json::Value {
    let (code, out, err) = optctl(&["--url", url, "--json", "advise"], &[]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The cluster findings of `rule` in an `optctl --json advise` document.
fn cluster_findings_of<'a>(v: &'a serde_json::Value, rule: &str) -> Vec<&'a serde_json::Value> {
    v["cluster"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == rule)
        .collect()
}

#[test]
fn a_lagging_replica_is_found_and_catches_up_by_partial_resync() {
    let mut cluster = Cluster::start(3, 1, &[]);
    let primary = cluster.owner("{r}");
    let replica = cluster.replicas_of(primary)[0];
    let mut p = primary.conn();
    ok(&mut p, &["OPT.SET", "{r}:0", "v", "TAGS", "a"]);
    let synced = |r: &mut redis::Connection| {
        let _ = command(r, &["READONLY"]);
        tag_info(r).digest == tag_info(&mut primary.conn()).digest
    };
    replica.wait_for("the replica index", Duration::from_secs(10), synced);
    let full_syncs = |c: &mut redis::Connection| opt_harness::info_int(c, "stats", "sync_full");
    let full_before = full_syncs(&mut p);

    // A stalled replica: 2 MiB of tagged writes it does not acknowledge.
    replica.freeze(true);
    let value = "x".repeat(4096);
    for i in 1..=512 {
        ok(
            &mut p,
            &["OPT.SET", &format!("{{r}}:{i}"), &value, "TAGS", "a", "b"],
        );
    }
    let url = cluster.nodes[0].url();
    let (code, out, err) = optctl(&["--url", &url, "--json", "advise"], &[]);
    replica.freeze(false);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The frozen replica is named (on a loaded machine another may lag too).
    let frozen = format!("127.0.0.1:{}", replica.port);
    let lagging: Vec<&serde_json::Value> = v["cluster"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "replica-lag")
        .map(|f| &f["subjects"][0])
        .collect();
    assert!(
        lagging.iter().any(|s| **s == frozen.as_str()),
        "{frozen} not in the replica-lag findings {lagging:?}"
    );

    // The replica catches up from the backlog (no full sync) with the same index; then a
    // broken link resumes with PSYNC, and the index still matches.
    replica.wait_for("the replica to catch up", Duration::from_secs(20), synced);
    let mut r = replica.conn();
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut r)
        .unwrap();
    for i in 1..=100 {
        ok(&mut p, &["OPT.UNTAG", &format!("{{r}}:{i}"), "b"]);
    }
    ok(&mut p, &["OPT.INVALIDATE", "a"]);
    ok(&mut p, &["OPT.SET", "{r}:last", "v", "TAGS", "c"]);
    replica.wait_for("the replica to resync", Duration::from_secs(20), synced);
    assert_eq!(full_syncs(&mut p), full_before, "a full sync happened");
    assert!(opt_harness::info_int(&mut p, "stats", "sync_partial_ok") >= 1);
    let t = tag_info(&mut r);
    assert_eq!((t.keys, t.tags), (1, 1));

    // The replica gone for good: its primary, now without a copy beside primaries that have
    // one, is named.
    let primary_addr = format!("127.0.0.1:{}", primary.port);
    cluster.stop_node(replica.port);
    let v = advise_cluster(&url);
    let alone: Vec<&serde_json::Value> = cluster_findings_of(&v, "replica-missing")
        .into_iter()
        .map(|f| &f["subjects"][0])
        .collect();
    assert_eq!(alone, [primary_addr.as_str()], "{}", v["cluster"]);
}

/// Redis 8.4+ and Valkey 9+ move whole slots themselves (atomic slot migration: CLUSTER
/// MIGRATION IMPORT on the target, CLUSTER MIGRATESLOTS on the source), without MIGRATE and
/// without a `del` event per key on the source. The moved keys' tags and freshness reach the
/// target and its replica, the source and its replica keep none, and an invalidation on the
/// target deletes every moved key. On older servers (no such migration) it checks nothing
/// and says so.
#[test]
fn tags_follow_atomic_slot_migration() {
    let identity = opt_harness::server_identity();
    let Some(kind) = opt_core::cluster::atomic_slot_migration(&identity) else {
        eprintln!("skipped: {identity} has no atomic slot migration (Redis 8.4+, Valkey 9+)");
        return;
    };
    let valkey = kind == opt_core::cluster::AtomicSlotMigration::Valkey;
    // Valkey 9 can have numbered databases in cluster mode: a tagged key in db 1 moves too.
    let config: &[&str] = if valkey {
        &["cluster-databases 2"]
    } else {
        &[]
    };
    let cluster = Cluster::start(3, 1, config);
    let primaries = cluster.primaries();
    let (source, target) = (primaries[0], primaries[1]);
    let mut src = source.conn();
    // A hash tag whose slot the source owns.
    let tag = (0..)
        .map(|i| format!("s{i}"))
        .find(|t| cluster.owner(t).port == source.port)
        .unwrap();
    let slot = cluster.slot(&tag);
    for i in 0..100 {
        ok(
            &mut src,
            &[
                "OPT.SET",
                &format!("{{{tag}}}:{i}"),
                "v",
                "TAGS",
                "moving",
                &format!("g{}", i % 3),
            ],
        );
    }
    ok(&mut src, &["SET", &format!("{{{tag}}}:untagged"), "v"]);
    let fresh = format!("{{{tag}}}:fresh");
    ok(
        &mut src,
        &[
            "OPT.SET", &fresh, "v", "EX", "100", "STALE", "60", "TAGS", "moving",
        ],
    );
    // Freshness and no tag: walked apart from the tag index (in slices too).
    let fresh_only = format!("{{{tag}}}:fresh-only");
    ok(
        &mut src,
        &["OPT.SET", &fresh_only, "v", "EX", "200", "STALE", "60"],
    );
    // A tagged key in another slot of the source stays where it is, tagged.
    let stays = (0..)
        .map(|i| format!("stay{i}"))
        .find(|k| cluster.owner(k).port == source.port && cluster.slot(k) != slot)
        .unwrap();
    ok(&mut src, &["OPT.SET", &stays, "v", "TAGS", "moving"]);
    let in_db1 = format!("{{{tag}}}:db1");
    if valkey {
        let mut db1 = source.conn();
        ok(&mut db1, &["SELECT", "1"]);
        ok(
            &mut db1,
            &["OPT.SET", &in_db1, "v", "TAGS", "moving", "db1"],
        );
    }
    let source_replica = cluster.replicas_of(source)[0];
    let want = tag_info(&mut src).digest;
    source_replica.wait_for("the source's replica", Duration::from_secs(10), |r| {
        tag_info(r).digest == want
    });

    // The snapshot takes 20 ms a key (about 2 s), so the writes below land while the slot is
    // moving: they reach the target in the migration's command stream, and the source's
    // index at the handover has their result.
    ok(&mut src, &["CONFIG", "SET", "rdb-key-save-delay", "20000"]);
    let slot_text = slot.to_string();
    match kind {
        opt_core::cluster::AtomicSlotMigration::Redis => {
            command(
                &mut target.conn(),
                &["CLUSTER", "MIGRATION", "IMPORT", &slot_text, &slot_text],
            )
            .unwrap();
        }
        opt_core::cluster::AtomicSlotMigration::Valkey => {
            let target_id = node_id(target);
            ok(
                &mut src,
                &[
                    "CLUSTER",
                    "MIGRATESLOTS",
                    "SLOTSRANGE",
                    &slot_text,
                    &slot_text,
                    "NODE",
                    &target_id,
                ],
            );
        }
    }
    let key = |i: &str| format!("{{{tag}}}:{i}");
    ok(&mut src, &["OPT.TAG", &key("0"), "extra"]);
    command(&mut src, &["OPT.UNTAG", &key("1"), "g1"]).unwrap();
    ok(&mut src, &["OPT.SET", &key("2"), "v2", "TAGS", "other"]);
    command(&mut src, &["DEL", &key("3")]).unwrap();
    ok(&mut src, &["SET", &key("4"), "plain"]);
    ok(&mut src, &["OPT.SET", &key("new"), "v", "TAGS", "moving"]);
    let moved_yet = opt_harness::own_slot_ranges(target)
        .iter()
        .any(|&(a, b)| (a..=b).contains(&slot));
    eprintln!(
        "writes done while the slot was still on the source: {}",
        !moved_yet
    );
    target.wait_for("the slot on the target", Duration::from_secs(20), |_| {
        opt_harness::own_slot_ranges(target)
            .iter()
            .any(|&(a, b)| (a..=b).contains(&slot))
    });
    let mut dst = target.conn();
    // 100 tagged keys and `fresh`, less key 2 (now tagged `other` only), key 3 (deleted) and
    // key 4 (overwritten by SET), plus `new`.
    target.wait_for("the tags on the target", Duration::from_secs(10), |d| {
        tag_keys(d, "moving").is_ok_and(|k| k.len() == 99)
    });
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut dst).unwrap(), 103);
    let tags_of = |c: &mut redis::Connection, k: &str| -> Vec<String> {
        let mut t: Vec<String> = redis::cmd("OPT.TAGS").arg(k).query(c).unwrap();
        t.sort();
        t
    };
    // db 1's key may come in a later message than db 0's: waited for before OPT.TAGINFO,
    // which counts every db (a server slowed down by valgrind had it first).
    if valkey {
        let mut db1 = target.conn();
        ok(&mut db1, &["SELECT", "1"]);
        target.wait_for(
            "the tags of db 1 on the target",
            Duration::from_secs(10),
            |_| tags_of(&mut db1, &in_db1) == ["db1", "moving"],
        );
    }
    let t = tag_info(&mut dst);
    // db 1's key and its two tags on Valkey.
    let db1_key = u64::from(valkey);
    assert_eq!((t.keys, t.pairs), (100 + db1_key, 197 + 2 * db1_key));
    assert_eq!(tags_of(&mut dst, &key("0")), ["extra", "g0", "moving"]);
    assert_eq!(tags_of(&mut dst, &key("1")), ["moving"]);
    assert_eq!(tags_of(&mut dst, &key("2")), ["other"]);
    assert!(tags_of(&mut dst, &key("4")).is_empty());
    assert_eq!(tags_of(&mut dst, &key("new")), ["moving"]);
    // The freshness came along: logically fresh for 100 s, not until the key expires.
    let reply: std::collections::HashMap<String, redis::Value> =
        redis::cmd("OPT.FETCH").arg(&fresh).query(&mut dst).unwrap();
    let ttl: i64 = redis::from_redis_value(reply["ttl_ms"].clone()).unwrap();
    assert!((90_000..=100_000).contains(&ttl), "ttl_ms {ttl}");
    // Nodes that got the transfer (on Valkey every node does) and do not hold a key keep
    // nothing for it: only keys of slots a node imports wait for RESTORE.
    for n in &cluster.nodes {
        assert_eq!(
            info_int(&mut n.conn(), "opt", "opt_tags_migrated_keys_held"),
            0,
            "node {}",
            n.port
        );
    }
    // The key without tags may come in a later message than the tagged ones.
    target.wait_for(
        "the freshness of the key without tags",
        Duration::from_secs(10),
        |d| {
            let reply: std::collections::HashMap<String, redis::Value> =
                redis::cmd("OPT.FETCH").arg(&fresh_only).query(d).unwrap();
            let ttl: i64 = redis::from_redis_value(reply["ttl_ms"].clone()).unwrap();
            (190_000..=200_000).contains(&ttl)
        },
    );
    // Once the handover is done no node has a transfer pending (what `optctl invalidate`
    // waits for before its second pass).
    for n in &cluster.nodes {
        n.wait_for("no tag transfer pending", Duration::from_secs(10), |c| {
            info_int(c, "opt", "opt_tags_transfers_pending") == 0
        });
    }
    // The source keeps only the key of the slot it kept (OPT.TAGINFO counts every db), and so
    // does its replica.
    source.wait_for("the source's index", Duration::from_secs(10), |s| {
        tag_info(s).keys == 1
    });
    assert_eq!(tag_keys(&mut src, "moving").unwrap(), [stays]);
    let want = tag_info(&mut src).digest;
    source_replica.wait_for(
        "the source's replica to drop them",
        Duration::from_secs(10),
        |r| tag_info(r).digest == want,
    );
    // The target's replica equals its primary.
    let target_replica = cluster.replicas_of(target)[0];
    let want = tag_info(&mut dst).digest;
    target_replica.wait_for("the target's replica", Duration::from_secs(10), |r| {
        tag_info(r).digest == want
    });
    let deleted: i64 = redis::cmd("OPT.INVALIDATE")
        .arg("moving")
        .query(&mut dst)
        .unwrap();
    assert_eq!(deleted, 99);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut dst).unwrap(), 4);
}

/// The key's time to live and its logical one (OPT.FETCH's `ttl_ms`, None when the key is
/// gone) on one node.
fn ttls(c: &mut redis::Connection, key: &str) -> (i64, Option<i64>) {
    let pttl: i64 = redis::cmd("PTTL").arg(key).query(c).unwrap();
    let reply: std::collections::HashMap<String, redis::Value> =
        redis::cmd("OPT.FETCH").arg(key).query(c).unwrap();
    let logical = redis::from_redis_value(reply["ttl_ms"].clone()).ok();
    (pttl, logical)
}

/// `OPT.INVALIDATE ... SOFT` and keys that move. A key marked stale keeps its own time to
/// live when MIGRATE moves it: on the target and on the target's replica alike (the replica
/// once got an expiry of 1 ms plus STALE from the replicated transfer). A key that arrives
/// with a tag the target marked stale a moment before is marked stale too, as the soft
/// invalidation would have marked it had it been there (`opt_tags_marked_stale_on_arrival`).
#[test]
fn soft_invalidation_follows_keys_that_move() {
    let cluster = Cluster::start(3, 1, &[]);
    let source = cluster.owner("{soft}");
    let target = cluster.other_primary(source);
    let (mut src, mut dst) = (source.conn(), target.conn());
    let (no_ttl, with_stale, late) = ("{soft}:plain", "{soft}:fresh", "{soft}:late");
    ok(&mut src, &["OPT.SET", no_ttl, "v", "TAGS", "s"]);
    ok(
        &mut src,
        &[
            "OPT.SET", with_stale, "v", "EX", "100", "STALE", "60", "TAGS", "s",
        ],
    );
    ok(
        &mut src,
        &["OPT.SET", late, "v", "EX", "100", "TAGS", "later"],
    );
    let marked: i64 = redis::cmd("OPT.INVALIDATE")
        .arg("s")
        .arg("SOFT")
        .query(&mut src)
        .unwrap();
    assert_eq!(marked, 2);
    let (_, dst_id) = move_keys(
        source,
        target,
        cluster.slot("{soft}"),
        &[no_ttl, with_stale],
    );
    target.wait_for("the moved keys' tags", Duration::from_secs(10), |d| {
        tag_keys(d, "s").is_ok_and(|k| k.len() == 2)
    });
    // The target soft-invalidates `later` while the key is on its way, between the MIGRATE
    // queued in MULTI and its EXEC: the key is marked stale when its tags arrive.
    let port = target.port.to_string();
    ok(&mut src, &["MULTI"]);
    command(
        &mut src,
        &["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", late],
    )
    .unwrap();
    let n: i64 = redis::cmd("OPT.INVALIDATE")
        .arg("later")
        .arg("SOFT")
        .query(&mut dst)
        .unwrap();
    assert_eq!(n, 0, "the key is not here yet");
    let replies: Vec<String> = redis::cmd("EXEC").query(&mut src).unwrap();
    assert_eq!(replies, ["OK"]);
    target.wait_for("the late key's tags", Duration::from_secs(10), |d| {
        tag_keys(d, "later").is_ok_and(|k| k == [late])
    });
    let slot = cluster.slot("{soft}").to_string();
    ok(&mut dst, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    ok(&mut src, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);

    let on_target = [no_ttl, with_stale, late].map(|k| ttls(&mut dst, k));
    assert_eq!(on_target[0].0, -1, "{no_ttl} has no expiry");
    assert!(
        on_target[1].0 > 150_000,
        "{with_stale} lives 160 s: {on_target:?}"
    );
    assert!(on_target[2].0 > 90_000, "{late} lives 100 s: {on_target:?}");
    for (key, (_, logical)) in [no_ttl, with_stale, late].iter().zip(on_target) {
        assert!(
            logical.is_some_and(|l| l <= 0),
            "{key} is stale on the target: {on_target:?}"
        );
    }
    assert_eq!(
        info_int(&mut dst, "opt", "opt_tags_marked_stale_on_arrival"),
        1
    );
    let replica = cluster.replicas_of(target)[0];
    let want = tag_info(&mut dst).digest;
    replica.wait_for("the target's replica", Duration::from_secs(10), |r| {
        tag_info(r).digest == want
    });
    let mut r = replica.conn();
    ok(&mut r, &["READONLY"]);
    for (key, (pttl, logical)) in [no_ttl, with_stale, late].iter().zip(on_target) {
        let (r_pttl, r_logical) = ttls(&mut r, key);
        assert!(
            (r_pttl == -1 && pttl == -1) || (r_pttl - pttl).abs() < 5_000,
            "{key}: the replica's PTTL {r_pttl}, the target's {pttl}"
        );
        assert!(
            r_logical.is_some_and(|l| l <= 0),
            "{key} is stale on the replica too ({r_logical:?}; target {logical:?})"
        );
    }
}
