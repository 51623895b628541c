//! `optctl status`: versions, optional features and configs of one server.

use opt_core::cluster::ClusterNode;
use opt_core::report::StatusReport;

use crate::table::{render as table, Align};
use crate::{cluster, conn, Cli, CtlError};

/// Prints the module status of the server at `--url`.
pub fn run(cli: &Cli) -> Result<(), CtlError> {
    let mut con = conn::connect(cli)?;
    if let Some(nodes) = cluster::primaries(cli, &mut con)? {
        return run_cluster(cli, &nodes);
    }
    let report: StatusReport = conn::call_json(&mut con, cli, "OPT.STATUS", &[])?;
    if cli.json {
        crate::print_json(&report)?;
        return Ok(());
    }
    print!("{}", render(&report, &conn::redacted(&cli.url)));
    Ok(())
}

/// The human-readable status page.
pub fn render(report: &StatusReport, url: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!("server   {url} ({})\n", report.server_version));
    out.push_str(&format!(
        "module   {} {}\n\nfeatures\n",
        report.module, report.module_version
    ));
    for f in &report.features {
        let mark = if f.available { "yes" } else { "no " };
        out.push_str(&format!("  {mark}  {:<24} {}\n", f.name, f.note));
    }
    out.push_str("\nconfigs\n");
    let width = report
        .configs
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for c in &report.configs {
        out.push_str(&format!("  {:<width$}  {}\n", c.name, c.value));
    }
    out
}

/// In a cluster: one line per primary (slots, versions), then the seed node's full status.
fn run_cluster(cli: &Cli, nodes: &[ClusterNode]) -> Result<(), CtlError> {
    let answers = cluster::ask_each(cli, nodes, |c| {
        conn::call_json::<StatusReport>(c, cli, "OPT.STATUS", &[])
    });
    if cli.json {
        let doc: Vec<_> = answers
            .iter()
            .map(|a| match &a.result {
                Ok(r) => serde_json::json!({
                    "node": a.node.addr(), "slots": a.node.slot_count(), "status": r
                }),
                Err(e) => serde_json::json!({
                    "node": a.node.addr(), "slots": a.node.slot_count(), "error": e.message
                }),
            })
            .collect();
        crate::print_json(&serde_json::json!({ "nodes": doc }))?;
    } else {
        let rows: Vec<Vec<String>> = answers
            .iter()
            .map(|a| {
                let (server, module) = match &a.result {
                    Ok(r) => (r.server_version.clone(), r.module_version.clone()),
                    Err(e) => (format!("unreachable: {}", e.message), String::new()),
                };
                vec![
                    a.node.addr(),
                    a.node.slot_count().to_string(),
                    server,
                    module,
                ]
            })
            .collect();
        println!("cluster of {} primaries\n", nodes.len());
        print!(
            "{}",
            table(
                &[
                    ("primary", Align::Left),
                    ("slots", Align::Right),
                    ("server", Align::Left),
                    ("module", Align::Left),
                ],
                &rows
            )
        );
    }
    if answers.iter().all(|a| a.result.is_err()) {
        return Err(CtlError::unusable("no primary of the cluster answered"));
    }
    Ok(())
}
