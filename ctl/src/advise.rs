//! `optctl advise`: OPT.ADVISE's findings grouped by severity, with their fixes.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use opt_core::cluster::{
    cluster_findings, merge_hot, open_slots, parse_replicas, ClusterNode, OpenSlot, ShardSnapshot,
};
use opt_core::report::{AdviceReport, Finding, HotKeysReport};

use crate::{cluster, conn, Cli, CtlError};

/// Options of `optctl advise`.
#[derive(Args, Debug)]
pub struct AdviseArgs {
    /// Keys to sample for the keyspace rules (0: skip them). Without it the module decides:
    /// every key of a db of up to 200,000 keys, 10,000 random ones of a bigger one.
    #[arg(long)]
    pub samples: Option<u64>,
    /// Only this category (memory, expiry, keys, traffic, latency, persistence, clients,
    /// security, replication).
    #[arg(long)]
    pub category: Option<String>,
    /// Only findings at least this severe.
    #[arg(long, value_enum, default_value_t = Level::Info)]
    pub min_severity: Level,
    /// Exit with code 3 when a finding is at least this severe (for CI and cron).
    #[arg(long, value_enum)]
    pub fail_on: Option<Level>,
}

/// Severity levels.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Worth knowing.
    Info,
    /// Should be fixed.
    Warning,
    /// Fix now.
    Critical,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    fn of(s: &str) -> Level {
        match s {
            "critical" => Level::Critical,
            "warning" => Level::Warning,
            _ => Level::Info,
        }
    }
}

/// Whether to colour output: only on a terminal, and never with NO_COLOR.
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Runs `optctl advise`; Ok(true) when `--fail-on` is met.
pub fn run(cli: &Cli, args: &AdviseArgs) -> Result<bool, CtlError> {
    let mut con = conn::connect(cli)?;
    let mut a: Vec<String> = args
        .samples
        .map(|n| vec!["SAMPLES".to_string(), n.to_string()])
        .unwrap_or_default();
    if let Some(c) = &args.category {
        a.extend(["CATEGORY".into(), c.clone()]);
    }
    a.extend(["MIN-SEVERITY".into(), args.min_severity.as_str().into()]);
    if let Some(nodes) = cluster::primaries(cli, &mut con)? {
        return run_cluster(cli, args, &a, &nodes);
    }
    let report: AdviceReport = conn::call_json(&mut con, cli, "OPT.ADVISE", &a)?;
    if cli.json {
        crate::print_json(&report)?;
    } else {
        print!("{}", render(&report, use_color()));
    }
    Ok(args.fail_on.is_some_and(|level| {
        report
            .findings
            .iter()
            .any(|f| Level::of(&f.severity) >= level)
    }))
}

/// Findings grouped by severity, most severe first.
pub fn render(r: &AdviceReport, color: bool) -> String {
    let mut out = format!(
        "health score {}/100 ({} rules evaluated, {} findings)\n",
        r.score,
        r.rules_evaluated,
        r.findings.len()
    );
    out.push_str(&render_findings(&r.findings, color));
    if !r.skipped.is_empty() {
        out.push_str("\nskipped\n");
        for (id, why) in &r.skipped {
            out.push_str(&format!("  {id}: {why}\n"));
        }
    }
    out
}

/// Findings grouped by severity, most severe first, each with evidence, why and fix.
pub fn render_findings(findings: &[Finding], color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    for (level, code) in [("critical", "1;31"), ("warning", "1;33"), ("info", "1;36")] {
        let group: Vec<_> = findings.iter().filter(|f| f.severity == level).collect();
        if group.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{}\n", paint(code, &level.to_uppercase())));
        for f in group {
            out.push_str(&format!("\n  [{}] {}\n", f.rule, f.title));
            out.push_str(&format!("    evidence: {}\n", f.evidence));
            out.push_str(&format!("    why:      {}\n", f.advice));
            if let Some(e) = &f.effect {
                out.push_str(&format!("    effect:   {e}\n"));
            }
            if !f.subjects.is_empty() {
                out.push_str(&format!("    concerns: {}\n", f.subjects.join(", ")));
            }
            for fix in &f.fix {
                out.push_str(&format!("    fix:      {}\n", paint("32", fix)));
            }
        }
    }
    out
}

/// What one primary contributes to `optctl advise` in a cluster.
struct NodeAdvice {
    report: AdviceReport,
    snapshot: ShardSnapshot,
    hot: HotKeysReport,
}

/// Reads one primary: its own findings, and what the cluster rules need.
fn node_advice(
    cli: &Cli,
    con: &mut redis::Connection,
    advise_args: &[String],
) -> Result<NodeAdvice, CtlError> {
    let report: AdviceReport = conn::call_json(con, cli, "OPT.ADVISE", advise_args)?;
    let info: String = redis::cmd("INFO")
        .arg("everything")
        .query(con)
        .map_err(|e| conn::command_error(cli, "INFO", &e))?;
    let num = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let keys = info
        .lines()
        .filter(|l| l.starts_with("db") && l.contains(":keys="))
        .filter_map(|l| {
            l.split("keys=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let q = |window: &str| -> Vec<String> {
        ["COUNT", "50", "WINDOW", window].map(String::from).to_vec()
    };
    let recent: HotKeysReport = conn::call_json(con, cli, "OPT.HOTKEYS", &q("recent"))?;
    let hot: HotKeysReport = conn::call_json(con, cli, "OPT.HOTKEYS", &q("total"))?;
    // A node shows the slots it is moving on its own line only. Without it (CLUSTER denied
    // to this user) the node still answered: no open slot is known, nothing more.
    let cluster_nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(con)
        .unwrap_or_default();
    Ok(NodeAdvice {
        report,
        snapshot: ShardSnapshot {
            node: String::new(),
            used_memory: num("used_memory"),
            keys,
            ops_per_sec: recent.estimated_accesses as f64 / recent.seconds.max(1.0),
            replicas: parse_replicas(&info),
            open_slots: open_slots(&cluster_nodes),
        },
        hot,
    })
}

/// Each primary's advice, and the cluster's own findings (unfiltered).
pub struct ClusterAdvice {
    /// slots-uncovered, primary-unreachable, cluster-imbalance, hot-shard, hot-slot, replica-lag,
    /// replica-missing, slot-open.
    pub findings: Vec<Finding>,
    /// Each primary's own report.
    pub nodes: Vec<(String, AdviceReport)>,
    /// Primaries that did not answer, and why.
    pub failed: Vec<(String, String)>,
}

/// Asks every primary for its advice and what the cluster rules need, and runs those rules.
pub fn cluster_advice(
    cli: &Cli,
    nodes: &[ClusterNode],
    advise_args: &[String],
) -> Result<ClusterAdvice, CtlError> {
    let (answers, failed) = cluster::answered(cluster::ask_each(cli, nodes, |c| {
        node_advice(cli, c, advise_args)
    }))?;
    // The other side of a moving slot by address where it is a primary with slots (a new,
    // empty node keeps its id).
    let addr_of = |id: &str| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map_or_else(|| id.to_string(), ClusterNode::addr)
    };
    let shards: Vec<ShardSnapshot> = answers
        .iter()
        .map(|(node, a)| ShardSnapshot {
            node: node.clone(),
            open_slots: a
                .snapshot
                .open_slots
                .iter()
                .map(|o| OpenSlot {
                    peer: addr_of(&o.peer),
                    ..o.clone()
                })
                .collect(),
            ..a.snapshot.clone()
        })
        .collect();
    let hot: Vec<(String, HotKeysReport)> = answers
        .iter()
        .map(|(node, a)| (node.clone(), a.hot.clone()))
        .collect();
    let merged = merge_hot(&hot, usize::MAX);
    let mut findings = cluster_findings(&shards, merged.as_ref(), &answers[0].0);
    findings.splice(
        0..0,
        cluster::fan_out_findings(nodes, &failed, &answers[0].0),
    );
    Ok(ClusterAdvice {
        findings,
        nodes: answers.into_iter().map(|(n, a)| (n, a.report)).collect(),
        failed,
    })
}

/// `optctl advise` on a cluster: each primary's findings, plus the cluster's own.
fn run_cluster(
    cli: &Cli,
    args: &AdviseArgs,
    advise_args: &[String],
    nodes: &[ClusterNode],
) -> Result<bool, CtlError> {
    let ClusterAdvice {
        mut findings,
        nodes: answers,
        failed,
    } = cluster_advice(cli, nodes, advise_args)?;
    let min = Level::of(args.min_severity.as_str());
    findings.retain(|f| {
        Level::of(&f.severity) >= min && args.category.as_ref().is_none_or(|c| &f.category == c)
    });
    let all = findings
        .iter()
        .chain(answers.iter().flat_map(|(_, a)| &a.findings));
    let fail = args
        .fail_on
        .is_some_and(|level| all.clone().any(|f| Level::of(&f.severity) >= level));
    if cli.json {
        let doc = serde_json::json!({
            "cluster": { "findings": findings },
            "nodes": answers
                .iter()
                .map(|(node, a)| serde_json::json!({ "node": node, "report": a }))
                .collect::<Vec<_>>(),
            "failed": failed
                .iter()
                .map(|(node, e)| serde_json::json!({ "node": node, "error": e }))
                .collect::<Vec<_>>(),
        });
        crate::print_json(&doc)?;
    } else {
        let color = use_color();
        let primaries = if failed.is_empty() {
            format!("{} primaries", answers.len())
        } else {
            format!("{} primaries, {} did not answer", nodes.len(), failed.len())
        };
        println!("== cluster ({primaries}): {} findings", findings.len());
        print!("{}", render_findings(&findings, color));
        for (node, a) in &answers {
            println!("\n== node {node}");
            print!("{}", render(a, color));
        }
    }
    Ok(fail)
}
