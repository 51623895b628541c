//! Redis Cluster: 3 primaries with a replica each, made by `redis-cli --cluster create` on
//! loopback ports. Each node indexes the keys it owns; commands on keys are redirected as
//! usual; replicas serve reads of the tag index they replicate.

use std::time::Duration;

use opt_harness::{command, err, ok, redis, Cluster};

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
    let other = cluster
        .primaries()
        .into_iter()
        .find(|n| n.port != owner.port)
        .unwrap();
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
