//! `optctl advise`: OPT.ADVISE's findings grouped by severity, with their fixes.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use opt_core::report::AdviceReport;

use crate::{conn, Cli, CtlError};

/// Options of `optctl advise`.
#[derive(Args, Debug)]
pub struct AdviseArgs {
    /// Random keys to sample for the keyspace rules (0: skip them).
    #[arg(long, default_value_t = 10_000)]
    pub samples: u64,
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
    let mut a = vec!["SAMPLES".to_string(), args.samples.to_string()];
    if let Some(c) = &args.category {
        a.extend(["CATEGORY".into(), c.clone()]);
    }
    a.extend(["MIN-SEVERITY".into(), args.min_severity.as_str().into()]);
    let report: AdviceReport = conn::call_json(&mut con, cli, "OPT.ADVISE", &a)?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|e| CtlError::failed(format!("cannot encode JSON: {e}")))?
        );
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
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = format!(
        "health score {}/100 ({} rules evaluated, {} findings)\n",
        r.score,
        r.rules_evaluated,
        r.findings.len()
    );
    for (level, code) in [("critical", "1;31"), ("warning", "1;33"), ("info", "1;36")] {
        let group: Vec<_> = r.findings.iter().filter(|f| f.severity == level).collect();
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
    if !r.skipped.is_empty() {
        out.push_str("\nskipped\n");
        for (id, why) in &r.skipped {
            out.push_str(&format!("  {id}: {why}\n"));
        }
    }
    out
}
