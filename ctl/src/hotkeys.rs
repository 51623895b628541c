//! `optctl hotkeys`: the hottest keys or key patterns as a table, once or refreshing.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, ValueEnum};
use opt_core::cluster::{merge_hot, ClusterNode};
use opt_core::report::HotKeysReport;

use crate::table::{bar, human, render, Align};
use crate::{cluster, conn, Cli, CtlError};

/// Options of `optctl hotkeys`.
#[derive(Args, Debug)]
pub struct HotKeysArgs {
    /// How many keys.
    #[arg(long, default_value_t = 10)]
    pub count: u32,
    /// Rank by all accesses, reads, writes or misses (reads of keys that do not exist).
    #[arg(long = "type", value_enum, default_value_t = KindArg::All)]
    pub kind: KindArg,
    /// Rank by the whole run (since start or reset) or by the recent window.
    #[arg(long, value_enum, default_value_t = WindowArg::Total)]
    pub window: WindowArg,
    /// Key patterns (user:*:profile) instead of keys.
    #[arg(long)]
    pub namespaces: bool,
    /// Refresh every SECONDS until interrupted (Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<u64>,
    /// With --watch: stop after this many refreshes.
    #[arg(long, value_name = "N", requires = "watch")]
    pub times: Option<u64>,
    /// In a cluster, ask only the primaries. By default their replicas are asked too, for
    /// the reads clients send them (READONLY): a key's traffic is the sum over its shard.
    #[arg(long)]
    pub primaries_only: bool,
}

/// `--type` values.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KindArg {
    /// Every access.
    All,
    /// Reads.
    Read,
    /// Writes.
    Write,
    /// Reads of keys that did not exist.
    Miss,
}

/// `--window` values.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum WindowArg {
    /// Since start or OPT.HOTKEYS RESET.
    Total,
    /// The last opt.hotkeys-window-seconds.
    Recent,
}

impl HotKeysArgs {
    fn query_args(&self, window: &str) -> Vec<String> {
        let kind = match self.kind {
            KindArg::All => "all",
            KindArg::Read => "read",
            KindArg::Write => "write",
            KindArg::Miss => "miss",
        };
        let mut a = vec![
            "COUNT".into(),
            self.count.to_string(),
            "TYPE".into(),
            kind.into(),
            "WINDOW".into(),
            window.into(),
        ];
        if self.namespaces {
            a.push("NAMESPACES".into());
        }
        a
    }

    fn window_name(&self) -> &'static str {
        match self.window {
            WindowArg::Total => "total",
            WindowArg::Recent => "recent",
        }
    }
}

/// OPT.HOTKEYS with `query` on the server, or on every primary of the cluster and the
/// `replicas` (each with its primary's address), merged; with how many primaries did not
/// answer (a replica that does not answer is said on stderr and leaves its reads out).
pub fn fetch(
    cli: &Cli,
    con: &mut redis::Connection,
    nodes: Option<&[ClusterNode]>,
    replicas: &[(ClusterNode, String)],
    query: &[String],
    count: usize,
) -> Result<(HotKeysReport, usize), CtlError> {
    let Some(nodes) = nodes else {
        return Ok((conn::call_json(con, cli, "OPT.HOTKEYS", query)?, 0));
    };
    let asked: Vec<ClusterNode> = nodes
        .iter()
        .cloned()
        .chain(replicas.iter().map(|(r, _)| r.clone()))
        .collect();
    let (reports, failed) = cluster::answered(cluster::ask_each(cli, &asked, |c| {
        conn::call_json::<HotKeysReport>(c, cli, "OPT.HOTKEYS", query)
    }))?;
    // A replica's keys are its primary's: they are merged under the primary's address, and
    // the primaries come first, so a key a primary lists keeps its place.
    let reports: Vec<(String, HotKeysReport)> = reports
        .into_iter()
        .map(|(addr, r)| {
            let shard = replicas
                .iter()
                .find(|(replica, _)| replica.addr() == addr)
                .map_or(addr, |(_, primary)| primary.clone());
            (shard, r)
        })
        .collect();
    let merged = merge_hot(&reports, count)
        .ok_or_else(|| CtlError::failed("no node of the cluster answered OPT.HOTKEYS"))?;
    let silent_primaries = failed
        .iter()
        .filter(|(addr, _)| nodes.iter().any(|n| n.addr() == *addr))
        .count();
    Ok((merged, silent_primaries))
}

/// Runs `optctl hotkeys`.
pub fn run(cli: &Cli, args: &HotKeysArgs) -> Result<(), CtlError> {
    let mut con = conn::connect(cli)?;
    let nodes = cluster::primaries(cli, &mut con)?;
    let replicas = match &nodes {
        Some(n) if !args.primaries_only => cluster::replicas(cli, &mut con, n)?,
        _ => Vec::new(),
    };
    let where_ = match &nodes {
        Some(n) => format!(
            "the {} primaries of the cluster at {}{}",
            n.len(),
            conn::redacted(&cli.url),
            match replicas.len() {
                0 => String::new(),
                r => format!(" and their {r} replicas (the reads they serve)"),
            }
        ),
        None => conn::redacted(&cli.url),
    };
    let tty = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    loop {
        let (ranked, silent) = fetch(
            cli,
            &mut con,
            nodes.as_deref(),
            &replicas,
            &args.query_args(args.window_name()),
            args.count as usize,
        )?;
        if cli.json {
            crate::print_json(&ranked)?;
        } else {
            // The "ops/s now" column always comes from the recent window.
            let recent: HotKeysReport = if args.window_name() == "recent" {
                ranked.clone()
            } else {
                let mut q = args.query_args("recent");
                let asked = nodes
                    .as_ref()
                    .map_or(1, |n| (n.len() + replicas.len()).max(1));
                q[1] = (ranked.capacity / asked as u64).max(1).to_string();
                fetch(cli, &mut con, nodes.as_deref(), &replicas, &q, usize::MAX)?.0
            };
            if args.watch.is_some() && tty {
                // Clear the screen and go home, so the view refreshes in place.
                print!("\x1b[2J\x1b[H");
            }
            // The counts leave out primaries that did not answer: the header says so.
            let where_now = if silent > 0 {
                format!("{where_} ({silent} did not answer)")
            } else {
                where_.clone()
            };
            print!("{}", render_report(&ranked, Some(&recent), &where_now));
        }
        shown += 1;
        let Some(secs) = args.watch else { break };
        if args.times.is_some_and(|t| shown >= t) {
            break;
        }
        std::thread::sleep(Duration::from_secs(secs.max(1)));
        if !tty && !cli.json {
            println!();
        }
    }
    Ok(())
}

/// How long a window has run: tenths of a second under 10 s (a window just RESET), else its
/// two largest units (a total window on a server up for weeks: `23d 4h`, not `2001600 s`).
fn window_length(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{:.1}s", seconds.max(0.0))
    } else {
        crate::table::span(seconds as i64)
    }
}

/// The table: rank, key, ops/s now (from `recent`, the last window; without it, each entry's
/// average over `r`'s window, and the column says so), total, error, share with a bar,
/// read/write/miss.
pub fn render_report(r: &HotKeysReport, recent: Option<&HotKeysReport>, url: &str) -> String {
    let what = if r.view == "namespaces" {
        "pattern"
    } else {
        "key"
    };
    let mut out = format!(
        "hot {}s on {url}: {} window ({}), ranked by {} accesses; {} accesses counted \
         (about 1 in {:.0}), ~{} in all\n",
        what,
        r.window,
        window_length(r.seconds),
        r.kind,
        r.sampled_accesses,
        r.counted_one_in(),
        human(r.estimated_accesses as f64),
    );
    out.push_str(&format!(
        "detection floor {}: every {what} with more accesses is listed ({} of {} candidate \
         slots in use in the current window)\n\n",
        human(r.detection_floor as f64),
        r.tracked,
        r.capacity
    ));
    if r.entries.is_empty() {
        out.push_str("(no traffic counted yet)\n");
        return out;
    }
    // Sampled counts are estimates: the error column adds their sampling margin to the
    // summary's bound, so that a sampled count never shows "± 0".
    let sampled = r.counted_one_in() > 1.0;
    if sampled {
        out.push_str(
            "± error: the summary's bound plus the sampling margin (95%, for steady traffic)\n\n",
        );
    }
    let mut header = vec![
        ("rank", Align::Right),
        (what, Align::Left),
        (
            if recent.is_some() {
                "ops/s now"
            } else {
                "ops/s avg"
            },
            Align::Right,
        ),
        ("total", Align::Right),
        ("± error", Align::Right),
        ("share", Align::Left),
        ("read", Align::Right),
        ("write", Align::Right),
        ("miss", Align::Right),
    ];
    // Merged from a cluster: where each key lives.
    let located = r.entries.iter().any(|e| e.node.is_some());
    if located {
        header.push(("node", Align::Left));
        header.push(("slot", Align::Right));
    }
    let rows: Vec<Vec<String>> = r
        .entries
        .iter()
        .map(|e| {
            let now = match recent {
                Some(recent) => recent
                    .entries
                    .iter()
                    .find(|x| x.name == e.name)
                    .map_or(0.0, |x| x.ops_per_sec),
                None => e.ops_per_sec,
            };
            let name = if e.truncated {
                format!("{}…", e.name)
            } else {
                e.name.clone()
            };
            let mut row = vec![
                e.rank.to_string(),
                name,
                human(now),
                human(e.count as f64),
                human(e.error as f64 + r.sampling_margin(e.count)),
                format!("{} {:5.1}%", bar(e.share, 20), e.share * 100.0),
                human(e.reads as f64),
                human(e.writes as f64),
                human(e.misses as f64),
            ];
            if located {
                row.push(e.node.clone().unwrap_or_default());
                row.push(e.slot.map_or_else(String::new, |s| s.to_string()));
            }
            row
        })
        .collect();
    out.push_str(&render(&header, &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opt_core::report::HotEntry;

    #[test]
    fn a_window_reads_in_tenths_of_a_second_when_short_and_in_units_when_long() {
        assert_eq!(window_length(0.246), "0.2s");
        assert_eq!(window_length(9.96), "10.0s");
        assert_eq!(window_length(60.0), "1m 0s");
        assert_eq!(window_length(2_001_600.0), "23d 4h");
        assert_eq!(window_length(-1.0), "0.0s");
    }

    fn entry(name: &str, count: u64, error: u64) -> HotEntry {
        HotEntry {
            rank: 1,
            name: name.into(),
            truncated: false,
            count,
            error,
            share: 0.5,
            ops_per_sec: 0.0,
            reads: count,
            writes: 0,
            misses: 0,
            node: None,
            slot: None,
        }
    }

    fn report(sampled: u64, estimated: u64, entries: Vec<HotEntry>) -> HotKeysReport {
        HotKeysReport {
            window: "total".into(),
            kind: "all".into(),
            view: "namespaces".into(),
            seconds: 10.0,
            sample_ratio: 1,
            sampled_accesses: sampled,
            estimated_accesses: estimated,
            detection_floor: 0,
            capacity: 256,
            tracked: entries.len() as u64,
            entries,
        }
    }

    /// The row of `name` in a rendered table, split into its cells.
    fn row_of(table: &str, name: &str) -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .map(|l| l.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_sampled_count_shows_its_sampling_margin_and_a_counted_one_only_its_bound() {
        // One access in 16 counted: 62,300 estimated from about 3,900 counted.
        let r = report(8_554, 136_864, vec![entry("cache:product:*", 62_300, 0)]);
        let margin = r.sampling_margin(62_300);
        assert!((1_850.0..1_950.0).contains(&margin), "{margin}");
        let table = render_report(&r, Some(&r), "redis://x");
        assert!(table.contains("sampling margin"), "{table}");
        let shown: f64 = row_of(&table, "cache:product:*")[4].parse().unwrap_or(0.0);
        assert!((1_850.0..1_950.0).contains(&shown), "{table}");
        // Every access counted: the bound alone, and no note.
        let r = report(136_864, 136_864, vec![entry("user:1", 20_000, 2)]);
        assert_eq!(r.sampling_margin(20_000), 0.0);
        let table = render_report(&r, Some(&r), "redis://x");
        assert!(!table.contains("sampling margin"), "{table}");
        assert_eq!(row_of(&table, "user:1")[4], "2", "{table}");
    }

    #[test]
    fn without_a_recent_window_the_rate_column_is_the_window_average_and_says_so() {
        let mut e = entry("user:1", 20_000, 2);
        e.ops_per_sec = 2_000.0;
        let r = report(136_864, 136_864, vec![e]);
        let mut now = r.clone();
        now.entries[0].ops_per_sec = 50.0;
        let table = render_report(&r, Some(&now), "redis://x");
        assert!(table.contains("ops/s now"), "{table}");
        assert_eq!(row_of(&table, "user:1")[2], "50", "{table}");
        let table = render_report(&r, None, "redis://x");
        assert!(
            table.contains("ops/s avg") && !table.contains("ops/s now"),
            "{table}"
        );
        assert_eq!(row_of(&table, "user:1")[2], "2000", "{table}");
    }
}
