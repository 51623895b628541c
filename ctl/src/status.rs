//! `optctl status`: versions, optional features and configs of one server.

use opt_core::report::StatusReport;

use crate::{conn, Cli, CtlError};

/// Prints the module status of the server at `--url`.
pub fn run(cli: &Cli) -> Result<(), CtlError> {
    let mut con = conn::connect(cli)?;
    let report: StatusReport = conn::call_json(&mut con, cli, "OPT.STATUS", &[])?;
    if cli.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| CtlError::failed(format!("cannot encode JSON: {e}")))?;
        println!("{text}");
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
