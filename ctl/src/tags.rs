//! `optctl invalidate` and `optctl tags`: tag-based invalidation and the tag index's size.

use std::time::{Duration, Instant};

use clap::Args;
use opt_core::advise::parse_info;
use opt_core::cluster::{merge_taginfo, moving_slots, ClusterNode};
use opt_core::report::TagInfoReport;

use crate::table::{human, render, Align};
use crate::{cluster, conn, Cli, CtlError};

/// Options of `optctl invalidate`.
#[derive(Args, Debug)]
pub struct InvalidateArgs {
    /// Tags whose keys are deleted.
    #[arg(required = true)]
    pub tags: Vec<String>,
    /// Free the values lazily, as UNLINK does.
    #[arg(long = "async", conflicts_with = "soft")]
    pub lazy: bool,
    /// Mark the keys stale instead of deleting them (`OPT.INVALIDATE ... SOFT`): one client
    /// recomputes each while the others are served the stale copy.
    #[arg(long)]
    pub soft: bool,
}

/// Options of `optctl tags`.
#[derive(Args, Debug)]
pub struct TagsArgs {
    /// Show one tag's key count.
    #[arg(long)]
    pub tag: Option<String>,
}

/// Runs `optctl invalidate`.
pub fn invalidate(cli: &Cli, args: &InvalidateArgs) -> Result<(), CtlError> {
    let mut con = conn::connect(cli)?;
    let run = |con: &mut redis::Connection| -> Result<i64, CtlError> {
        let mut cmd = redis::cmd("OPT.INVALIDATE");
        for t in &args.tags {
            cmd.arg(t);
        }
        if args.lazy {
            cmd.arg("ASYNC");
        }
        if args.soft {
            cmd.arg("SOFT");
        }
        cmd.query(con)
            .map_err(|e| conn::command_error(cli, "OPT.INVALIDATE", &e))
    };
    // What the counts are, in JSON and in words.
    let (field, done) = if args.soft {
        ("marked_stale", "marked stale")
    } else {
        ("deleted", "deleted")
    };
    let Some(nodes) = cluster::primaries(cli, &mut con)? else {
        let n = run(&mut con)?;
        if cli.json {
            println!("{}", serde_json::json!({ field: n, "tags": args.tags }));
        } else {
            println!("{done} {n} keys tagged {}", args.tags.join(", "));
        }
        return Ok(());
    };
    // Each shard indexes the keys it owns: invalidate on every primary, atomic per shard.
    let (mut shards, mut failed) = cluster::answered(cluster::ask_each(cli, &nodes, run))?;
    // A key on its way between two nodes may be missed by both (README, "Resharding"): while
    // keys move, wait for their tags to land and invalidate again.
    let second_pass = match keys_on_the_move(cli, &nodes) {
        (false, 0) => None,
        (moving, pending) => {
            let waited = wait_for_tags_to_land(cli, &nodes, moving, pending);
            let (again, lost) = cluster::answered(cluster::ask_each(cli, &nodes, run))?;
            let more: i64 = again.iter().map(|(_, n)| n).sum();
            for (node, n) in again {
                // A node that answers now has had its invalidation.
                failed.retain(|(f, _)| *f != node);
                match shards.iter_mut().find(|(s, _)| *s == node) {
                    // SOFT keeps the keys, so the second pass marks the ones the first did
                    // again: its count is the node's. Deleted keys are counted once each.
                    Some((_, total)) if args.soft => *total = n,
                    Some((_, total)) => *total += n,
                    None => shards.push((node, n)),
                }
            }
            for (node, why) in lost {
                if !failed.iter().any(|(f, _)| *f == node) {
                    failed.push((node, why));
                }
            }
            let reason = if moving {
                "slots were moving between nodes"
            } else {
                "tag transfers between nodes were pending"
            };
            Some((reason, waited, more))
        }
    };
    let total: i64 = shards.iter().map(|(_, n)| n).sum();
    if cli.json {
        let per: Vec<_> = shards
            .iter()
            .map(|(node, n)| serde_json::json!({ "node": node, field: n }))
            .collect();
        let lost: Vec<_> = failed
            .iter()
            .map(|(node, e)| serde_json::json!({ "node": node, "error": e }))
            .collect();
        let second = second_pass.map(|(reason, waited, more)| {
            serde_json::json!({ "reason": reason, "after_ms": waited.as_millis() as u64, field: more })
        });
        println!(
            "{}",
            serde_json::json!({ field: total, "tags": args.tags, "shards": per, "failed": lost, "second_pass": second })
        );
    } else {
        println!(
            "{done} {total} keys tagged {} on {} shards",
            args.tags.join(", "),
            shards.len()
        );
        for (node, n) in &shards {
            println!("  {node}: {n}");
        }
        if let Some((reason, waited, more)) = second_pass {
            let which = if args.soft {
                "the counts above are its own"
            } else {
                "of the keys above"
            };
            println!(
                "{reason}: invalidated again {} ms later ({more} {which})",
                waited.as_millis()
            );
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CtlError::failed(format!(
            "{} of {} shards did not answer: keys with these tags may remain there; run it again",
            failed.len(),
            nodes.len()
        )))
    }
}

/// How long the second pass waits at least when slots move by MIGRATE: longer than a moved
/// key's tags take to follow it (the cluster bus, then the target's next 1 ms tick).
const SECOND_PASS_AFTER: Duration = Duration::from_millis(200);
/// How long optctl waits at most for the nodes' pending tag transfers before the second pass.
const PENDING_WAIT_MAX: Duration = Duration::from_secs(10);

/// Whether any of `nodes` is moving slots by MIGRATE (`CLUSTER NODES`), and how many tag
/// transfers they have not finished (`INFO opt`: `opt_tags_transfers_pending`). A node that
/// does not answer counts for nothing here (the passes report it).
fn keys_on_the_move(cli: &Cli, nodes: &[ClusterNode]) -> (bool, u64) {
    let answers = cluster::ask_each(cli, nodes, |c| {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(c)
            .map_err(|e| conn::command_error(cli, "CLUSTER NODES", &e))?;
        let info: String = redis::cmd("INFO")
            .arg("opt")
            .query(c)
            .map_err(|e| conn::command_error(cli, "INFO", &e))?;
        let pending = parse_info(&info)
            .get("opt_tags_transfers_pending")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        Ok((moving_slots(&text), pending))
    });
    answers
        .into_iter()
        .filter_map(|a| a.result.ok())
        .fold((false, 0), |(m, p), (moving, pending)| {
            (m || moving, p + pending)
        })
}

/// Waits until the tags of keys on the move have landed: at least [`SECOND_PASS_AFTER`] when
/// slots move, then until no node has a transfer pending, at most [`PENDING_WAIT_MAX`].
/// Returns how long it waited.
fn wait_for_tags_to_land(cli: &Cli, nodes: &[ClusterNode], moving: bool, pending: u64) -> Duration {
    let started = Instant::now();
    if moving {
        std::thread::sleep(SECOND_PASS_AFTER);
    }
    let mut pending = pending;
    while pending > 0 && started.elapsed() < PENDING_WAIT_MAX {
        std::thread::sleep(Duration::from_millis(50));
        pending = keys_on_the_move(cli, nodes).1;
    }
    started.elapsed()
}

/// Runs `optctl tags`.
pub fn tags(cli: &Cli, args: &TagsArgs) -> Result<(), CtlError> {
    let mut con = conn::connect(cli)?;
    let a: Vec<String> = args.tag.iter().cloned().collect();
    // With the primaries of a cluster that did not answer, and how many there are.
    let (report, silent): (TagInfoReport, Option<(usize, usize)>) =
        match cluster::primaries(cli, &mut con)? {
            None => (conn::call_json(&mut con, cli, "OPT.TAGINFO", &a)?, None),
            Some(nodes) => {
                // Each shard indexes its own keys: the cluster's index is the sum.
                let (reports, failed) = cluster::answered(cluster::ask_each(cli, &nodes, |c| {
                    conn::call_json::<TagInfoReport>(c, cli, "OPT.TAGINFO", &a)
                }))?;
                let merged = merge_taginfo(&reports, 10).ok_or_else(|| {
                    CtlError::failed("no node of the cluster answered OPT.TAGINFO")
                })?;
                (merged, Some((failed.len(), nodes.len())))
            }
        };
    if cli.json {
        crate::print_json(&report)?;
        return Ok(());
    }
    if let Some((failed, all)) = silent.filter(|&(failed, _)| failed > 0) {
        println!("{failed} of {all} primaries did not answer: their keys and tags are not counted");
    }
    if let Some(t) = &report.tag {
        println!("tag {t}: {} keys", report.keys);
        return Ok(());
    }
    println!(
        "tag index: {} keys, {} tags, {} (key, tag) pairs, {} bytes ({:.1} per pair), digest {}\n",
        report.keys,
        report.tags,
        report.pairs,
        report.memory_bytes,
        report.memory_bytes as f64 / report.pairs.max(1) as f64,
        report.digest
    );
    if report.largest.is_empty() {
        println!("(no tags)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .largest
        .iter()
        .map(|t| vec![t.tag.clone(), human(t.keys as f64)])
        .collect();
    print!(
        "{}",
        render(
            &[("largest tags", Align::Left), ("keys", Align::Right)],
            &rows
        )
    );
    Ok(())
}
