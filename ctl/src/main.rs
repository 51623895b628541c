//! optctl: the operator's command line for redis-cache-optimizer.
//!
//! It talks to servers that run the `opt` module, reads the module's `FORMAT JSON` replies into
//! the serde types of `opt_core::report`, and prints them for people (tables) or programs
//! (`--json`). Exit codes: 0 success, 1 a command failed, 2 the server cannot be used (not
//! reachable, authentication refused, module not loaded), 3 `advise --fail-on` was met.

mod advise;
mod cluster;
mod conn;
mod hotkeys;
mod keyspace;
mod metrics;
mod report;
mod status;
mod table;
mod tags;
mod top;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// optctl: hot keys, memory by pattern and advice from the redis-cache-optimizer module.
#[derive(Parser, Debug)]
#[command(name = "optctl", version, about, long_about = None)]
pub struct Cli {
    /// Server URL, e.g. redis://127.0.0.1:6379/0, redis://user@host:port, or rediss://host:port
    /// for TLS (see --cacert, --cert, --key, --insecure).
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub url: String,
    /// ACL user name (overrides the one in the URL).
    #[arg(long, global = true, env = "REDIS_USERNAME")]
    pub user: Option<String>,
    /// Password (overrides the one in the URL); prefer the REDISCLI_AUTH variable, which
    /// keeps it out of the process list. Never printed.
    #[arg(long, global = true, env = "REDISCLI_AUTH", hide_env_values = true)]
    pub password: Option<String>,
    /// CA certificate (PEM) to verify a rediss:// server with, instead of the system's store.
    #[arg(long, global = true, env = "REDIS_CACERT", value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for servers that check clients (tls-auth-clients yes).
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// rediss:// without verifying the server's certificate (as redis-cli --insecure).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Fan out to every primary of the cluster and merge (the default when --url is a node
    /// in cluster mode; with this flag, a server that is not in cluster mode is an error).
    #[arg(long, global = true, conflicts_with = "single_node")]
    pub cluster: bool,
    /// In a cluster, ask only the node of --url.
    #[arg(long, global = true)]
    pub single_node: bool,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Server version, module version, optional features and every opt.* config.
    ///
    /// Example: optctl --url redis://10.0.0.5:6379 status
    Status,
    /// The hottest keys (or key patterns) from live traffic, with error bounds.
    ///
    /// Examples:
    ///   optctl hotkeys                       top 10 since start, with ops/s now
    ///   optctl hotkeys --type miss           hot keys that do not exist (cache penetration)
    ///   optctl hotkeys --namespaces          hot key patterns (user:*:profile)
    ///   optctl hotkeys --window recent --watch 2    live view, refreshed every 2 s
    #[command(verbatim_doc_comment)]
    Hotkeys(hotkeys::HotKeysArgs),
    /// Prioritized findings with their evidence and the exact fix (OPT.ADVISE).
    ///
    /// Examples:
    ///   optctl advise                            every finding, grouped by severity
    ///   optctl advise --min-severity warning
    ///   optctl advise --fail-on critical         exit code 3 if anything is critical (CI, cron)
    #[command(verbatim_doc_comment)]
    Advise(advise::AdviseArgs),
    /// Where the memory goes, by key pattern (OPT.KEYSPACE), with sizes, TTLs and big keys.
    ///
    /// Examples:
    ///   optctl keyspace                      10,000 random keys, extrapolated
    ///   optctl keyspace --full               every key (progress bar on a terminal)
    ///   optctl keyspace --match 'user:*' --csv > users.csv
    ///   optctl keyspace --json > today.json
    ///   optctl keyspace --since yesterday.json       what grew or shrank since then
    ///   optctl keyspace --report today.json --since yesterday.json    two saved reports
    #[command(verbatim_doc_comment)]
    Keyspace(keyspace::KeyspaceArgs),
    /// Everything in one page: status, advice, hot keys, memory by pattern, tags.
    ///
    /// Examples:
    ///   optctl report                         text
    ///   optctl report --json > report.json
    ///   optctl report --html report.html      one self-contained file to open or send
    #[command(verbatim_doc_comment)]
    Report(report::ReportArgs),
    /// A live full-screen view: ops/s, hit ratio, memory, evictions, expirations, clients,
    /// the hottest keys and patterns now. Refreshed every second; q quits. Scrolls when not
    /// a terminal.
    ///
    /// Example: optctl --url redis://10.0.0.5:6379 top
    Top(top::TopArgs),
    /// Prometheus text exposition of the server and the module (print once).
    ///
    /// Example: optctl metrics --keyspace-samples 0
    Metrics(metrics::MetricsArgs),
    /// Serves the Prometheus exposition on /metrics.
    ///
    /// Example: optctl --url redis://10.0.0.5:6379 exporter --listen 0.0.0.0:9121
    Exporter(metrics::ExporterArgs),
    /// Shell completions.
    ///
    /// Example: optctl completions bash > /etc/bash_completion.d/optctl
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Deletes every key carrying any of the tags, atomically (OPT.INVALIDATE).
    ///
    /// Examples:
    ///   optctl invalidate user:42            every key tagged user:42
    ///   optctl invalidate post:7 post:8 --async
    #[command(verbatim_doc_comment)]
    Invalidate(tags::InvalidateArgs),
    /// The tag index: keys, tags, memory, digest and the largest tags (OPT.TAGINFO).
    ///
    /// Examples:
    ///   optctl tags
    ///   optctl tags --tag user:42
    #[command(verbatim_doc_comment)]
    Tags(tags::TagsArgs),
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CtlError {
    /// What went wrong and what to do about it, on one line.
    pub message: String,
    /// Process exit code.
    pub code: u8,
}

impl CtlError {
    /// The server cannot be used (exit code 2).
    pub fn unusable(message: impl Into<String>) -> Self {
        CtlError {
            message: message.into(),
            code: 2,
        }
    }

    /// A command failed (exit code 1).
    pub fn failed(message: impl Into<String>) -> Self {
        CtlError {
            message: message.into(),
            code: 1,
        }
    }
}

/// Prints `value` as pretty JSON on standard output (what `--json` prints).
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), CtlError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CtlError::failed(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`optctl hotkeys | head`), instead of panicking on a broken pipe.
    // SAFETY: restoring the default SIGPIPE disposition at start, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let ok = |r: Result<(), CtlError>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Cmd::Advise(ref args) => advise::run(&cli, args).map(|met| {
            if met {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }),
        Cmd::Status => ok(status::run(&cli)),
        Cmd::Hotkeys(ref args) => ok(hotkeys::run(&cli, args)),
        Cmd::Invalidate(ref args) => ok(tags::invalidate(&cli, args)),
        Cmd::Keyspace(ref args) => ok(keyspace::run(&cli, args)),
        Cmd::Tags(ref args) => ok(tags::tags(&cli, args)),
        Cmd::Metrics(ref args) => ok(metrics::print(&cli, args)),
        Cmd::Report(ref args) => ok(report::run(&cli, args)),
        Cmd::Top(ref args) => ok(top::run(&cli, args)),
        Cmd::Exporter(ref args) => ok(metrics::serve(&cli, args)),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "optctl", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("optctl: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
