//! `optctl invalidate` and `optctl tags`: tag-based invalidation and the tag index's size.

use clap::Args;
use opt_core::cluster::merge_taginfo;
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
    #[arg(long = "async")]
    pub lazy: bool,
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
        cmd.query(con)
            .map_err(|e| conn::command_error(cli, "OPT.INVALIDATE", &e))
    };
    let Some(nodes) = cluster::primaries(cli, &mut con)? else {
        let deleted = run(&mut con)?;
        if cli.json {
            println!(
                "{}",
                serde_json::json!({ "deleted": deleted, "tags": args.tags })
            );
        } else {
            println!("deleted {deleted} keys tagged {}", args.tags.join(", "));
        }
        return Ok(());
    };
    // Each shard indexes the keys it owns: invalidate on every primary, atomic per shard.
    let (shards, failed) = cluster::answered(cluster::ask_each(cli, &nodes, run))?;
    let deleted: i64 = shards.iter().map(|(_, n)| n).sum();
    if cli.json {
        let per: Vec<_> = shards
            .iter()
            .map(|(node, n)| serde_json::json!({ "node": node, "deleted": n }))
            .collect();
        let lost: Vec<_> = failed
            .iter()
            .map(|(node, e)| serde_json::json!({ "node": node, "error": e }))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "deleted": deleted, "tags": args.tags, "shards": per, "failed": lost })
        );
    } else {
        println!(
            "deleted {deleted} keys tagged {} on {} shards",
            args.tags.join(", "),
            shards.len()
        );
        for (node, n) in &shards {
            println!("  {node}: {n}");
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

/// Runs `optctl tags`.
pub fn tags(cli: &Cli, args: &TagsArgs) -> Result<(), CtlError> {
    let mut con = conn::connect(cli)?;
    let a: Vec<String> = args.tag.iter().cloned().collect();
    let report: TagInfoReport = match cluster::primaries(cli, &mut con)? {
        None => conn::call_json(&mut con, cli, "OPT.TAGINFO", &a)?,
        Some(nodes) => {
            // Each shard indexes its own keys: the cluster's index is the sum.
            let (reports, _) = cluster::answered(cluster::ask_each(cli, &nodes, |c| {
                conn::call_json::<TagInfoReport>(c, cli, "OPT.TAGINFO", &a)
            }))?;
            merge_taginfo(&reports, 10)
                .ok_or_else(|| CtlError::failed("no node of the cluster answered OPT.TAGINFO"))?
        }
    };
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|e| CtlError::failed(format!("cannot encode JSON: {e}")))?
        );
        return Ok(());
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
