//! `optctl keyspace`: memory by key pattern, sizes, TTLs and the largest keys.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use opt_core::cluster::{merge_keyspace, ClusterNode};
use opt_core::keyspace_diff::{diff_keyspace, KeyspaceDiff};
use opt_core::report::{KeyspaceProgress, KeyspaceReport, PatternStats, SizeBucket};

use crate::table::{self, bar, human, render, Align};
use crate::{cluster, conn, Cli, CtlError};

/// Options of `optctl keyspace`.
#[derive(Args, Debug)]
pub struct KeyspaceArgs {
    /// Every key (exact) instead of random samples.
    #[arg(long, conflicts_with = "samples")]
    pub full: bool,
    /// Random keys to sample (default 10000).
    #[arg(long)]
    pub samples: Option<u64>,
    /// Only keys matching this glob.
    #[arg(long = "match", value_name = "GLOB")]
    pub glob: Option<String>,
    /// Only keys of this type (string, hash, list, set, zset, stream; module for every module
    /// data type, or one by its name as TYPE gives it: vectorset, ReJSON-RL...).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// The database (default: the URL's).
    #[arg(long)]
    pub db: Option<u64>,
    /// How many of the largest keys to list.
    #[arg(long, default_value_t = 10)]
    pub top: u32,
    /// Characters that split key names into segments (default: opt.key-delimiters).
    #[arg(long)]
    pub delimiters: Option<String>,
    /// Print the pattern table as CSV.
    #[arg(long, conflicts_with = "since")]
    pub csv: bool,
    /// Compare with a report saved earlier by `optctl keyspace --json`: what each pattern
    /// gained or lost, and whether that is more than the two reports' sampling error.
    #[arg(long, value_name = "FILE")]
    pub since: Option<PathBuf>,
    /// Read the report from a file saved by `optctl keyspace --json` instead of asking the
    /// server (with --since: compare two saved reports, no server needed).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["full", "samples", "glob", "kind", "db", "delimiters"])]
    pub report: Option<PathBuf>,
}

impl KeyspaceArgs {
    fn command_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.full {
            a.push("FULL".into());
        } else if let Some(n) = self.samples {
            a.extend(["SAMPLES".into(), n.to_string()]);
        }
        for (flag, v) in [
            ("MATCH", &self.glob),
            ("TYPE", &self.kind),
            ("DELIMITERS", &self.delimiters),
        ] {
            if let Some(v) = v {
                a.extend([flag.to_string(), v.clone()]);
            }
        }
        if let Some(db) = self.db {
            a.extend(["DB".into(), db.to_string()]);
        }
        a.extend(["TOP".into(), self.top.to_string()]);
        a
    }
}

/// Runs `optctl keyspace`.
pub fn run(cli: &Cli, args: &KeyspaceArgs) -> Result<(), CtlError> {
    // The earlier report is read first, so that a bad file does not cost an analysis.
    let since = args.since.as_deref().map(read_report).transpose()?;
    let (report, preface) = match &args.report {
        Some(path) => (read_report(path)?, String::new()),
        None => analyse(cli, args)?,
    };
    match (since, &args.since) {
        (Some(before), Some(path)) => print_diff(cli, &diff_keyspace(&before, &report), path),
        _ => print_report(cli, args, &report, &preface),
    }
}

/// A report saved by `optctl keyspace --json` (or `OPT.KEYSPACE ... FORMAT JSON`).
fn read_report(path: &Path) -> Result<KeyspaceReport, CtlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::failed(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        CtlError::failed(format!(
            "{} is not a report saved by `optctl keyspace --json`: {e}",
            path.display()
        ))
    })
}

/// Asks the server (or every primary of a cluster) for the report; returns it with the text
/// to print before its tables.
fn analyse(cli: &Cli, args: &KeyspaceArgs) -> Result<(KeyspaceReport, String), CtlError> {
    let mut con = conn::connect(cli)?;
    if let Some(nodes) = cluster::primaries(cli, &mut con)? {
        return analyse_cluster(cli, args, &nodes);
    }
    // A progress bar on the terminal while a FULL analysis runs, read over a second connection.
    let progress = (args.full && std::io::stderr().is_terminal()).then(|| {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let watcher = conn::connect(cli).ok().map(|mut c| {
            std::thread::spawn(move || {
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    let text: Result<String, _> = redis::cmd("OPT.KEYSPACE")
                        .arg("STATUS")
                        .arg("FORMAT")
                        .arg("JSON")
                        .query(&mut c);
                    if let Some(p) = text
                        .ok()
                        .and_then(|t| serde_json::from_str::<Vec<KeyspaceProgress>>(&t).ok())
                        .and_then(|v| v.into_iter().last())
                    {
                        let f = p.scanned as f64 / p.total.max(1) as f64;
                        eprint!("\r{} {:5.1}%  {} keys", bar(f, 30), f * 100.0, p.scanned);
                        let _ = std::io::stderr().flush();
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                eprint!("\r{}\r", " ".repeat(60));
            })
        });
        (stop, watcher)
    });
    let result: Result<KeyspaceReport, CtlError> =
        conn::call_json(&mut con, cli, "OPT.KEYSPACE", &args.command_args());
    if let Some((stop, watcher)) = progress {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(w) = watcher {
            let _ = w.join();
        }
    }
    Ok((result?, String::new()))
}

/// Prints the report as JSON, CSV or tables, with `preface` before the tables.
fn print_report(
    cli: &Cli,
    args: &KeyspaceArgs,
    report: &KeyspaceReport,
    preface: &str,
) -> Result<(), CtlError> {
    if cli.json {
        crate::print_json(report)?;
    } else if args.csv {
        print!("{}", csv(report));
    } else {
        print!("{preface}{}", render_report(report));
    }
    Ok(())
}

/// Prints the comparison with the report saved in `path`, as JSON or as a table.
fn print_diff(cli: &Cli, d: &KeyspaceDiff, path: &Path) -> Result<(), CtlError> {
    if cli.json {
        crate::print_json(d)?;
        return Ok(());
    }
    let saved = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|t| {
            format!(
                ", saved {} ago",
                table::span(table::unix_now() - t.as_secs() as i64)
            )
        });
    print!(
        "{}",
        render_diff(
            d,
            &format!("{}{}", path.display(), saved.unwrap_or_default())
        )
    );
    Ok(())
}

/// Bytes with a sign: `+1.2 MB`, `-800 B`, `0 B`.
fn signed_bytes(n: i64) -> String {
    match n {
        0 => "0 B".to_string(),
        n if n > 0 => format!("+{}", bytes(n.unsigned_abs())),
        n => format!("-{}", bytes(n.unsigned_abs())),
    }
}

/// A change relative to `before`, as `+4.7%`, or `new` when there was nothing before.
fn percent_change(change: i64, before: u64) -> String {
    if before == 0 {
        return if change == 0 { "0%" } else { "new" }.to_string();
    }
    format!("{:+.1}%", change as f64 * 100.0 / before as f64)
}

/// The comparison as text: the two reports, the overall change and the patterns that moved
/// most. `earlier` names the earlier report.
pub fn render_diff(d: &KeyspaceDiff, earlier: &str) -> String {
    let side = |s: &opt_core::keyspace_diff::DiffSide| {
        format!(
            "db {}, {}, {} keys, {}",
            s.db,
            s.mode,
            human(s.keys_matched as f64),
            bytes(s.total_bytes)
        )
    };
    let mut out = format!(
        "before ({earlier}): {}\nnow: {}\n",
        side(&d.before),
        side(&d.after)
    );
    for w in &d.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out.push_str(&format!(
        "change: {} ({}), {}{} keys\n\n",
        signed_bytes(d.total_bytes_change),
        percent_change(d.total_bytes_change, d.before.total_bytes),
        if d.keys_change >= 0 { "+" } else { "" },
        human(d.keys_change as f64)
    ));
    let rows: Vec<Vec<String>> = d
        .patterns
        .iter()
        .take(SHOWN_PATTERNS)
        .map(|p| {
            let change = if p.change_ci95 > 0 {
                format!("{} ±{}", signed_bytes(p.bytes_change), bytes(p.change_ci95))
            } else {
                signed_bytes(p.bytes_change)
            };
            let note = match p.status.as_str() {
                "new" | "gone" => p.status.clone(),
                _ if p.bytes_change == 0 => String::new(),
                _ if !p.significant => "within sampling error".to_string(),
                _ => percent_change(p.bytes_change, p.bytes_before),
            };
            let avg = match p.status.as_str() {
                "new" => bytes(p.avg_bytes_after),
                "gone" => bytes(p.avg_bytes_before),
                _ => format!(
                    "{} -> {}",
                    bytes(p.avg_bytes_before),
                    bytes(p.avg_bytes_after)
                ),
            };
            vec![
                p.pattern.clone(),
                bytes(p.bytes_before),
                bytes(p.bytes_after),
                change,
                note,
                format!(
                    "{} -> {}",
                    human(p.keys_before as f64),
                    human(p.keys_after as f64)
                ),
                avg,
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            ("pattern", Align::Left),
            ("before", Align::Right),
            ("now", Align::Right),
            ("change", Align::Right),
            ("", Align::Left),
            ("keys", Align::Right),
            ("avg size", Align::Right),
        ],
        &rows,
    ));
    out.push_str(&more_patterns(d.patterns.len(), "--json"));
    out
}

/// The line under a pattern table cut at `SHOWN_PATTERNS` rows: how many more, and which
/// option lists them all. Empty when nothing was cut.
fn more_patterns(patterns: usize, option: &str) -> String {
    match patterns.checked_sub(SHOWN_PATTERNS) {
        Some(more) if more > 0 => format!("(+{more} more patterns; {option} lists all)\n"),
        _ => String::new(),
    }
}

/// Rows of a pattern table on the terminal.
const SHOWN_PATTERNS: usize = 20;

/// Every primary analyses its own keys in parallel; the reports merge into one.
fn analyse_cluster(
    cli: &Cli,
    args: &KeyspaceArgs,
    nodes: &[ClusterNode],
) -> Result<(KeyspaceReport, String), CtlError> {
    let (reports, failed) = cluster::answered(cluster::ask_each(cli, nodes, |c| {
        conn::call_json::<KeyspaceReport>(c, cli, "OPT.KEYSPACE", &args.command_args())
    }))?;
    let report = merge_keyspace(&reports, args.top as usize)
        .ok_or_else(|| CtlError::failed("no node of the cluster answered OPT.KEYSPACE"))?;
    let mut preface = format!("cluster of {} primaries, by shard:\n", nodes.len());
    for (node, r) in &reports {
        preface.push_str(&format!(
            "  {node:<22} {:>10} keys {:>10}\n",
            r.db_keys,
            bytes(r.total_bytes)
        ));
    }
    // Left out of every figure below.
    for (node, _) in &failed {
        preface.push_str(&format!("  {node:<22} did not answer\n"));
    }
    preface.push('\n');
    Ok((report, preface))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The pattern table as CSV.
pub fn csv(r: &KeyspaceReport) -> String {
    let mut out = String::from(
        "pattern,keys,bytes,bytes_ci95,share,avg_bytes,largest_key,largest_bytes,ttl_none,ttl_lt_1m,ttl_lt_1h,ttl_lt_1d,ttl_lt_1w,ttl_ge_1w\n",
    );
    for p in &r.patterns {
        let t = p.ttl_buckets;
        out.push_str(&format!(
            "{},{},{},{},{:.4},{},{},{},{},{},{},{},{},{}\n",
            csv_field(&p.pattern),
            p.keys,
            p.bytes,
            p.bytes_ci95,
            p.share,
            p.avg_bytes,
            csv_field(&p.largest_key),
            p.largest_bytes,
            t[0],
            t[1],
            t[2],
            t[3],
            t[4],
            t[5]
        ));
    }
    out
}

/// What a sampled report says of the big keys: found by a pass over every key (and measured
/// whole), or possibly missed.
fn big_keys_line(r: &KeyspaceReport, now: i64) -> String {
    match r.big_keys_pass_at {
        Some(at) => format!(
            "big keys: {} measured whole, as found by a pass over every key that began {} ago\n\n",
            r.big_keys_measured_whole,
            table::span((now - at as i64).max(0))
        ),
        None => "big keys: no pass over every key of this db yet, so a few big keys may be missed \
                 or scaled up; run `optctl keyspace --full` once, or set \
                 opt.keyspace-big-key-watch\n\n"
            .to_string(),
    }
}

/// The human-readable report: tables and bar charts.
pub fn render_report(r: &KeyspaceReport) -> String {
    // Expiry times are told from this machine's clock.
    let now = table::unix_now();
    let whole = if r.big_keys_measured_whole > 0 {
        format!(
            ", {} known big keys measured whole",
            r.big_keys_measured_whole
        )
    } else {
        String::new()
    };
    let what = if r.mode == "full" {
        "keys (every key) analysed".to_string()
    } else if r.names_drawn > 0 {
        format!(
            "random keys measured{whole} and {} more names counted by pattern (sampled, extrapolated)",
            r.names_drawn
        )
    } else {
        format!("random keys measured{whole} (sampled, extrapolated)")
    };
    let mut out = format!(
        "db {}: {} keys; {} {what} in {} ms; {} matched, {} in all\n\n",
        r.db,
        r.db_keys,
        r.keys_scanned.saturating_sub(r.big_keys_measured_whole),
        r.elapsed_ms,
        human(r.keys_matched as f64),
        bytes(r.total_bytes)
    );
    if r.mode == "samples" {
        out.push_str(&big_keys_line(r, now));
    }
    let rows: Vec<Vec<String>> = r
        .patterns
        .iter()
        .take(SHOWN_PATTERNS)
        .map(|p| {
            let no_ttl = p.ttl_buckets[0] as f64 / p.keys.max(1) as f64;
            vec![
                p.pattern.clone(),
                human(p.keys as f64),
                if p.bytes_ci95 > 0 {
                    format!("{} ±{}", bytes(p.bytes), bytes(p.bytes_ci95))
                } else {
                    bytes(p.bytes)
                },
                format!("{} {:5.1}%", bar(p.share, 16), p.share * 100.0),
                bytes(p.avg_bytes),
                format!("{:.0}%", no_ttl * 100.0),
                p.types.first().map(|t| t.0.clone()).unwrap_or_default(),
                format!("{} ({})", p.largest_key, bytes(p.largest_bytes)),
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            ("pattern", Align::Left),
            ("keys", Align::Right),
            ("memory", Align::Right),
            ("share", Align::Left),
            ("avg", Align::Right),
            ("no TTL", Align::Right),
            ("type", Align::Left),
            ("largest key", Align::Left),
        ],
        &rows,
    ));
    out.push_str(&more_patterns(r.patterns.len(), "--csv"));
    let s = r.size_percentiles;
    out.push_str(&format!(
        "\nkey sizes: p50 {}  p90 {}  p99 {}  max {}\n",
        bytes(s.p50),
        bytes(s.p90),
        bytes(s.p99),
        bytes(s.max)
    ));
    out.push_str(&size_chart(&r.size_histogram));
    out.push_str("\nmemory by type\n");
    let total = r.total_bytes.max(1) as f64;
    // Module data types have names of 9 characters (`vectorset`).
    let width = r
        .bytes_by_type
        .iter()
        .map(|t| t.r#type.len())
        .max()
        .unwrap_or(0)
        .max(7);
    for t in &r.bytes_by_type {
        out.push_str(&format!(
            "  {:<width$} {} {:>9} ({} {})\n",
            t.r#type,
            bar(t.bytes as f64 / total, 30),
            bytes(t.bytes),
            human(t.keys as f64),
            if t.keys == 1 { "key" } else { "keys" }
        ));
    }
    out.push_str(&bucket_chart(
        "TTL of keys",
        &TTL_LABELS,
        &summed(r, |p| p.ttl_buckets),
    ));
    // The server keeps an idle time (LRU, no policy) or an access counter (LFU), not both.
    let idle = summed(r, |p| p.idle_buckets);
    if idle.iter().any(|&n| n > 0) {
        out.push_str(&bucket_chart(
            "idle time of keys (since their last access)",
            &IDLE_LABELS,
            &idle,
        ));
    }
    let lfu = summed(r, |p| p.lfu_buckets);
    if lfu.iter().any(|&n| n > 0) {
        out.push_str(&bucket_chart(
            "LFU access counter of keys (logarithmic; a new key starts at 5, unread keys decay below it)",
            &LFU_LABELS,
            &lfu,
        ));
    }
    out.push_str(&expiry_timeline(&r.expiring_per_hour));
    if let Some(w) = r.worst_expiry_second {
        let when = w.unix_second as i64;
        let relative = if when >= now {
            format!("in {}, ", table::span(when - now))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "\nmost keys expiring in one second: {} ({relative}{}, unix second {when}); spread TTLs with jitter if that is large\n",
            human(w.keys as f64),
            table::utc(when)
        ));
    }
    let top: Vec<Vec<String>> = r
        .top_by_bytes
        .iter()
        .map(|k| {
            vec![
                k.key.clone(),
                k.r#type.clone(),
                bytes(k.bytes),
                human(k.length as f64),
            ]
        })
        .collect();
    out.push_str("\nlargest keys\n");
    out.push_str(&render(
        &[
            ("key", Align::Left),
            ("type", Align::Left),
            ("memory", Align::Right),
            ("length", Align::Right),
        ],
        &top,
    ));
    for c in &r.encoding_candidates {
        out.push_str(&format!(
            "\n{} collections ({}) are just above {} {}: CONFIG SET {} {} would keep them compact and save about {}\n",
            human(c.keys as f64),
            bytes(c.bytes),
            c.config,
            c.current,
            c.config,
            c.suggested,
            bytes(c.estimated_saving)
        ));
    }
    out
}

/// The TTL buckets of [`PatternStats::ttl_buckets`].
pub const TTL_LABELS: [&str; 6] = ["none", "< 1m", "< 1h", "< 1d", "< 1w", ">= 1w"];
/// The idle-time buckets of [`PatternStats::idle_buckets`].
pub const IDLE_LABELS: [&str; 5] = ["< 1m", "< 1h", "< 1d", "< 1w", ">= 1w"];
/// The LFU counter buckets of [`PatternStats::lfu_buckets`].
pub const LFU_LABELS: [&str; 5] = ["< 5", "5-9", "10-19", "20-99", ">= 100"];

/// One of the patterns' bucket counts, summed over the patterns.
pub fn summed<const N: usize>(
    r: &KeyspaceReport,
    buckets: impl Fn(&PatternStats) -> [u64; N],
) -> [u64; N] {
    let mut sum = [0u64; N];
    for p in &r.patterns {
        for (s, v) in sum.iter_mut().zip(buckets(p)) {
            *s += v;
        }
    }
    sum
}

/// A bar chart of keys by bucket under `title`: a row per label, each bar the bucket's share of
/// the keys counted.
fn bucket_chart(title: &str, labels: &[&str], counts: &[u64]) -> String {
    let keys = counts.iter().sum::<u64>().max(1) as f64;
    let mut out = format!("\n{title}\n");
    for (label, &n) in labels.iter().zip(counts) {
        out.push_str(&format!(
            "  {label:<6} {} {}\n",
            bar(n as f64 / keys, 30),
            human(n as f64)
        ));
    }
    out
}

/// Upper bounds of the size ranges shown (each a power of two, so that every range of the
/// report's finer distribution falls in one of them), and their labels; the last range has no
/// bound.
const SIZE_RANGES: [(u64, &str); 9] = [
    (64, "< 64 B"),
    (256, "< 256 B"),
    (1 << 10, "< 1 KiB"),
    (4 << 10, "< 4 KiB"),
    (16 << 10, "< 16 KiB"),
    (64 << 10, "< 64 KiB"),
    (256 << 10, "< 256 KiB"),
    (1 << 20, "< 1 MiB"),
    (u64::MAX, ">= 1 MiB"),
];

/// The report's key-size distribution in the coarser ranges of [`SIZE_RANGES`], from the first
/// range holding keys to the last: (label, keys, bytes).
pub fn size_ranges(histogram: &[SizeBucket]) -> Vec<(&'static str, u64, u64)> {
    let mut ranges: Vec<(&'static str, u64, u64)> = SIZE_RANGES
        .iter()
        .map(|&(_, label)| (label, 0, 0))
        .collect();
    for b in histogram {
        let i = SIZE_RANGES
            .iter()
            .position(|&(below, _)| b.from_bytes < below)
            .unwrap_or(SIZE_RANGES.len() - 1);
        ranges[i].1 += b.keys;
        ranges[i].2 += b.bytes;
    }
    let first = ranges.iter().position(|r| r.1 > 0).unwrap_or(0);
    let last = ranges.iter().rposition(|r| r.1 > 0).map_or(0, |l| l + 1);
    ranges.truncate(last);
    ranges.drain(..first.min(last));
    ranges
}

/// The key-size distribution as two bar charts side by side: the share of the keys and the
/// share of the memory in each size range. Nothing from a module that sends no distribution.
fn size_chart(histogram: &[SizeBucket]) -> String {
    let ranges = size_ranges(histogram);
    if ranges.is_empty() {
        return String::new();
    }
    let keys = ranges.iter().map(|r| r.1).sum::<u64>().max(1) as f64;
    let memory = ranges.iter().map(|r| r.2).sum::<u64>().max(1) as f64;
    let mut out = format!("  {:<9} {:<27} {:<30}\n", "size", "keys", "memory");
    for (label, k, b) in ranges {
        out.push_str(&format!(
            "  {label:<9} {} {:>6} {} {:>9}\n",
            bar(k as f64 / keys, 20),
            human(k as f64),
            bar(b as f64 / memory, 20),
            bytes(b)
        ));
    }
    out
}

/// The keys expiring in each of the next 24 hours as a bar chart, one row an hour up to the
/// last hour in which any key expires: what a cache will have to recompute, and when.
fn expiry_timeline(per_hour: &[u64]) -> String {
    let Some(last) = per_hour.iter().rposition(|&n| n > 0) else {
        return "\nno key expires in the next 24 hours\n".to_string();
    };
    let max = per_hour.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut out = String::from("\nkeys expiring over the next 24 hours, by hour from now\n");
    for (hour, &n) in per_hour.iter().enumerate().take(last + 1) {
        out.push_str(&format!(
            "  {:<7} {} {}\n",
            format!("{hour}-{} h", hour + 1),
            bar(n as f64 / max, 30),
            human(n as f64)
        ));
    }
    out
}

/// Bytes in a short human form.
fn bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.1} GB", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1} MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1} kB", f / 1e3)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_written_with_their_sign_and_cut_tables_say_so() {
        assert_eq!(signed_bytes(0), "0 B");
        assert_eq!(signed_bytes(1_500_000), "+1.5 MB");
        assert_eq!(signed_bytes(-800), "-800 B");
        assert_eq!(signed_bytes(i64::MIN), "-9223372036.9 GB");
        assert_eq!(percent_change(47, 1_000), "+4.7%");
        assert_eq!(percent_change(-500, 1_000), "-50.0%");
        assert_eq!(percent_change(10, 0), "new");
        assert_eq!(more_patterns(SHOWN_PATTERNS, "--csv"), "");
        assert_eq!(
            more_patterns(SHOWN_PATTERNS + 3, "--json"),
            "(+3 more patterns; --json lists all)\n"
        );
    }

    #[test]
    fn size_ranges_group_the_fine_distribution() {
        let b = |from_bytes, keys, bytes| SizeBucket {
            from_bytes,
            keys,
            bytes,
        };
        // 63 and 64 bytes fall on both sides of the first bound; 1,000 and 1,023 below 1 KiB;
        // 5 MB past the last bound.
        let h = [
            b(63, 2, 126),
            b(64, 1, 64),
            b(1_000, 3, 3_050),
            b(1_023, 1, 1_023),
            b(5_000_000, 1, 5_000_000),
        ];
        let r = size_ranges(&h);
        assert_eq!(r.first(), Some(&("< 64 B", 2, 126)));
        assert_eq!(r[1], ("< 256 B", 1, 64));
        assert_eq!(r[2], ("< 1 KiB", 4, 4_073));
        assert_eq!(r.last(), Some(&(">= 1 MiB", 1, 5_000_000)));
        assert_eq!(r.len(), 9);
        // Leading and trailing empty ranges are left out, inner ones kept.
        let r = size_ranges(&[b(300, 1, 300), b(20_000, 1, 20_000)]);
        let labels: Vec<&str> = r.iter().map(|x| x.0).collect();
        assert_eq!(labels, ["< 1 KiB", "< 4 KiB", "< 16 KiB", "< 64 KiB"]);
        assert!(size_ranges(&[]).is_empty());
        assert_eq!(size_chart(&[]), "");
        let chart = size_chart(&h);
        assert_eq!(chart.lines().count(), 10, "{chart}");
        assert!(chart.lines().nth(1).unwrap().contains("< 64 B"), "{chart}");
    }

    #[test]
    fn expiry_timeline_stops_at_the_last_busy_hour() {
        let mut hours = vec![0u64; 24];
        hours[0] = 200;
        hours[2] = 100;
        let t = expiry_timeline(&hours);
        let rows: Vec<&str> = t.lines().filter(|l| l.contains(" h ")).collect();
        assert_eq!(rows.len(), 3, "{t}");
        assert!(
            rows[0].contains("0-1 h") && rows[0].ends_with(" 200"),
            "{t}"
        );
        assert!(rows[1].contains("1-2 h") && rows[1].ends_with(" 0"), "{t}");
        assert!(
            rows[2].contains("2-3 h") && rows[2].contains(&bar(0.5, 30)),
            "{t}"
        );
        assert_eq!(
            expiry_timeline(&[0; 24]),
            "\nno key expires in the next 24 hours\n"
        );
        assert_eq!(
            expiry_timeline(&[]),
            "\nno key expires in the next 24 hours\n"
        );
    }
}
