//! `optctl report`: everything the module knows in one page, as text, JSON or one
//! self-contained HTML file (inline CSS and SVG charts; no script, font or network needed, so
//! it opens offline and as an e-mail attachment).

use std::fmt::Write as _;

use clap::Args;
use opt_core::cluster::{merge_keyspace, merge_taginfo, ClusterNode};
use opt_core::report::{
    AdviceReport, Finding, FullReport, HotKeysReport, KeyspaceReport, StatusReport, TagInfoReport,
};

use crate::{advise, cluster, conn, hotkeys, keyspace, status, table, Cli, CtlError};

/// Options of `optctl report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Random keys sampled for memory by pattern and the key rules (0: skip).
    #[arg(long, default_value_t = 10_000)]
    pub samples: u64,
    /// Write a self-contained HTML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
}

/// Gathers the whole report.
pub fn gather(cli: &Cli, samples: u64) -> Result<FullReport, CtlError> {
    let mut con = conn::connect(cli)?;
    if let Some(nodes) = cluster::primaries(cli, &mut con)? {
        return gather_cluster(cli, &mut con, &nodes, samples);
    }
    let status: StatusReport = conn::call_json(&mut con, cli, "OPT.STATUS", &[])?;
    let s = samples.to_string();
    let advice: Option<AdviceReport> =
        conn::call_json(&mut con, cli, "OPT.ADVISE", &["SAMPLES".into(), s.clone()]).ok();
    let top = |ns: bool| {
        let mut a = vec!["COUNT".to_string(), "10".to_string()];
        if ns {
            a.push("NAMESPACES".into());
        }
        a
    };
    let hot: Option<HotKeysReport> =
        conn::call_json(&mut con, cli, "OPT.HOTKEYS", &top(false)).ok();
    let namespaces: Option<HotKeysReport> =
        conn::call_json(&mut con, cli, "OPT.HOTKEYS", &top(true)).ok();
    // Every candidate of the recent window, for the rates now of the keys ranked above.
    let mut recent = |of: &Option<HotKeysReport>, ns: bool| {
        let capacity = of.as_ref()?.capacity;
        conn::call_json(&mut con, cli, "OPT.HOTKEYS", &recent_query(capacity, ns)).ok()
    };
    let hotkeys_recent = recent(&hot, false);
    let namespaces_recent = recent(&namespaces, true);
    let keyspace: Option<KeyspaceReport> = if samples > 0 {
        conn::call_json(&mut con, cli, "OPT.KEYSPACE", &["SAMPLES".into(), s]).ok()
    } else {
        None
    };
    let tags: Option<TagInfoReport> = conn::call_json(&mut con, cli, "OPT.TAGINFO", &[]).ok();
    Ok(FullReport {
        generated_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        server: conn::redacted(&cli.url),
        status,
        advice,
        hotkeys: hot,
        namespaces,
        hotkeys_recent,
        namespaces_recent,
        keyspace,
        tags,
    })
}

/// OPT.HOTKEYS's arguments for every candidate (up to `count`) of the recent window.
fn recent_query(count: u64, namespaces: bool) -> Vec<String> {
    let mut a = vec![
        "COUNT".to_string(),
        count.max(1).to_string(),
        "WINDOW".to_string(),
        "recent".to_string(),
    ];
    if namespaces {
        a.push("NAMESPACES".into());
    }
    a
}

/// The report of a cluster: the seed node's status; every primary's findings (titles name
/// the node) plus the cluster findings, scored by the worst node; hot keys, memory by pattern
/// and the tag index merged across shards.
fn gather_cluster(
    cli: &Cli,
    con: &mut redis::Connection,
    nodes: &[ClusterNode],
    samples: u64,
) -> Result<FullReport, CtlError> {
    let status: StatusReport = conn::call_json(con, cli, "OPT.STATUS", &[])?;
    let s = samples.to_string();
    let advice = advise::cluster_advice(cli, nodes, &["SAMPLES".into(), s.clone()])
        .ok()
        .and_then(|c| {
            let mut base = c.nodes.iter().min_by_key(|(_, r)| r.score)?.1.clone();
            let mut findings = c.findings;
            for (node, r) in &c.nodes {
                findings.extend(r.findings.iter().map(|f| Finding {
                    title: format!("{node}: {}", f.title),
                    ..f.clone()
                }));
            }
            let rank = |f: &Finding| match f.severity.as_str() {
                "critical" => 0,
                "warning" => 1,
                _ => 2,
            };
            findings.sort_by_key(rank);
            base.findings = findings;
            Some(base)
        });
    fn across<T: serde::de::DeserializeOwned + Send>(
        cli: &Cli,
        nodes: &[ClusterNode],
        command: &str,
        args: &[String],
        merge: impl Fn(&[(String, T)]) -> Option<T>,
    ) -> Option<T> {
        let answers =
            cluster::ask_each(cli, nodes, |c| conn::call_json::<T>(c, cli, command, args));
        let (ok, _) = cluster::answered(answers).ok()?;
        merge(&ok)
    }
    let top = |ns: bool| {
        let mut a = vec!["COUNT".to_string(), "10".to_string()];
        if ns {
            a.push("NAMESPACES".into());
        }
        a
    };
    // Hot keys from the primaries and their replicas (the reads clients send those).
    let replicas = cluster::replicas(cli, con, nodes).unwrap_or_default();
    let mut hot = |args: &[String], count: usize| {
        crate::hotkeys::fetch(cli, con, Some(nodes), &replicas, args, count)
            .ok()
            .map(|(r, _)| r)
    };
    let hotkeys = hot(&top(false), 10);
    let namespaces = hot(&top(true), 10);
    // Every candidate of each node's recent window (the merged capacity is the nodes' sum).
    let asked = (nodes.len() + replicas.len()).max(1) as u64;
    let mut recent = |of: &Option<HotKeysReport>, ns: bool| {
        let per_node = of.as_ref()?.capacity / asked;
        hot(&recent_query(per_node, ns), usize::MAX)
    };
    let hotkeys_recent = recent(&hotkeys, false);
    let namespaces_recent = recent(&namespaces, true);
    let keyspace = (samples > 0)
        .then(|| {
            across(cli, nodes, "OPT.KEYSPACE", &["SAMPLES".into(), s], |r| {
                merge_keyspace(r, 10)
            })
        })
        .flatten();
    let tags = across(cli, nodes, "OPT.TAGINFO", &[], |r| merge_taginfo(r, 10));
    Ok(FullReport {
        generated_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        server: format!(
            "cluster of {} primaries via {}",
            nodes.len(),
            conn::redacted(&cli.url)
        ),
        status,
        advice,
        hotkeys,
        namespaces,
        hotkeys_recent,
        namespaces_recent,
        keyspace,
        tags,
    })
}

/// Runs `optctl report`.
pub fn run(cli: &Cli, args: &ReportArgs) -> Result<(), CtlError> {
    let r = gather(cli, args.samples)?;
    if let Some(path) = &args.html {
        std::fs::write(path, html(&r))
            .map_err(|e| CtlError::failed(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("optctl: wrote {}", path.display());
        return Ok(());
    }
    if cli.json {
        crate::print_json(&r)?;
        return Ok(());
    }
    print!("{}", text(&r));
    Ok(())
}

/// The text report: every section one after the other.
pub fn text(r: &FullReport) -> String {
    let mut out = String::new();
    out.push_str("== status\n");
    out.push_str(&status::render(&r.status, &r.server));
    if let Some(a) = &r.advice {
        out.push_str("\n== advice\n");
        out.push_str(&advise::render(a, false));
    }
    // Ranked by the total window; the rates now come from the recent one (a report without
    // it shows each entry's average over the total window, and says so).
    if let Some(h) = &r.hotkeys {
        out.push_str("\n== hot keys\n");
        out.push_str(&hotkeys::render_report(
            h,
            r.hotkeys_recent.as_ref(),
            &r.server,
        ));
    }
    if let Some(n) = &r.namespaces {
        out.push_str("\n== hot key patterns\n");
        out.push_str(&hotkeys::render_report(
            n,
            r.namespaces_recent.as_ref(),
            &r.server,
        ));
    }
    if let Some(k) = &r.keyspace {
        out.push_str("\n== memory by key pattern\n");
        out.push_str(&keyspace::render_report(k));
    }
    if let Some(t) = &r.tags {
        let _ = writeln!(
            out,
            "\n== tag index\n{} keys, {} tags, {} pairs, {} bytes",
            t.keys, t.tags, t.pairs, t.memory_bytes
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart as inline SVG: (label, value, shown value).
fn bars(rows: &[(String, f64, String)], color: &str) -> String {
    if rows.is_empty() {
        return "<p class=\"muted\">nothing to show</p>".into();
    }
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9);
    let h = 22;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 900 {}\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">",
        rows.len() * h + 4
    );
    for (i, (label, v, shown)) in rows.iter().enumerate() {
        let y = i * h + 2;
        let w = (v / max * 420.0).max(1.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" class=\"lbl\">{}</text><rect x=\"300\" y=\"{}\" width=\"{w:.1}\" height=\"16\" fill=\"{color}\" rx=\"2\"/><text x=\"{:.1}\" y=\"{}\" class=\"val\">{}</text>",
            y + 13,
            esc(&truncate(label, 44)),
            y + 1,
            300.0 + w + 6.0,
            y + 13,
            esc(shown)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn human_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

/// The self-contained HTML report.
pub fn html(r: &FullReport) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1>Redis report</h1><p>{} &middot; {} &middot; module {} {}</p></header>",
        esc(&r.server),
        esc(&r.status.server_version),
        esc(&r.status.module),
        esc(&r.status.module_version)
    );
    if let Some(a) = &r.advice {
        let color = if a.score >= 80 {
            "#2e7d32"
        } else if a.score >= 50 {
            "#ef6c00"
        } else {
            "#c62828"
        };
        let _ = write!(
            body,
            "<section><h2>Health</h2><div class=\"score\" style=\"color:{color}\">{}<span>/100</span></div><p>{} rules evaluated, {} findings</p>",
            a.score,
            a.rules_evaluated,
            a.findings.len()
        );
        for f in &a.findings {
            let _ = write!(
                body,
                "<div class=\"finding {sev}\"><div class=\"head\"><span class=\"sev\">{sev}</span> <b>{title}</b> <code>{rule}</code></div><p><b>Evidence:</b> {ev}</p><p>{adv}</p>{effect}<pre>{fix}</pre></div>",
                sev = esc(&f.severity),
                title = esc(&f.title),
                rule = esc(&f.rule),
                ev = esc(&f.evidence),
                adv = esc(&f.advice),
                effect = f.effect.as_ref().map(|e| format!("<p><b>Effect:</b> {}</p>", esc(e))).unwrap_or_default(),
                fix = esc(&f.fix.join("\n"))
            );
        }
        body.push_str("</section>");
    }
    if let Some(k) = &r.keyspace {
        let rows: Vec<(String, f64, String)> = k
            .patterns
            .iter()
            .take(15)
            .map(|p| {
                (
                    p.pattern.clone(),
                    p.bytes as f64,
                    format!("{} ({:.1}%)", human_bytes(p.bytes as f64), p.share * 100.0),
                )
            })
            .collect();
        let _ = write!(
            body,
            "<section><h2>Memory by key pattern</h2><p>{} of {} keys {}, {} in all</p>{}",
            k.keys_scanned,
            k.db_keys,
            if k.mode == "full" {
                "analysed"
            } else {
                "sampled (figures extrapolated)"
            },
            human_bytes(k.total_bytes as f64),
            bars(&rows, "#1565c0")
        );
        let ttl = keyspace::summed(k, |p| p.ttl_buckets);
        let ttl_rows: Vec<(String, f64, String)> = [
            "no TTL",
            "< 1 minute",
            "< 1 hour",
            "< 1 day",
            "< 1 week",
            ">= 1 week",
        ]
        .iter()
        .zip(ttl)
        .map(|(l, v)| (l.to_string(), v as f64, v.to_string()))
        .collect();
        let _ = write!(
            body,
            "<h3>Keys by time to live</h3>{}",
            bars(&ttl_rows, "#6a1b9a")
        );
        for (title, labels, counts) in [
            (
                "Keys by idle time (since their last access)",
                &keyspace::IDLE_LABELS,
                keyspace::summed(k, |p| p.idle_buckets),
            ),
            (
                "Keys by LFU access counter (a new key starts at 5; unread keys decay below it)",
                &keyspace::LFU_LABELS,
                keyspace::summed(k, |p| p.lfu_buckets),
            ),
        ] {
            if counts.iter().any(|&n| n > 0) {
                let rows: Vec<(String, f64, String)> = labels
                    .iter()
                    .zip(counts)
                    .map(|(l, v)| (l.to_string(), v as f64, v.to_string()))
                    .collect();
                let _ = write!(body, "<h3>{}</h3>{}", esc(title), bars(&rows, "#2e7d32"));
            }
        }
        if let Some(last) = k.expiring_per_hour.iter().rposition(|&n| n > 0) {
            let hour_rows: Vec<(String, f64, String)> = k
                .expiring_per_hour
                .iter()
                .take(last + 1)
                .enumerate()
                .map(|(h, &n)| (format!("{h}-{} h from now", h + 1), n as f64, n.to_string()))
                .collect();
            let _ = write!(
                body,
                "<h3>Keys expiring over the next 24 hours</h3>{}",
                bars(&hour_rows, "#4527a0")
            );
        }
        if let Some(w) = k.worst_expiry_second {
            let _ = write!(
                body,
                "<p>Most keys expiring in one second: <b>{}</b>, at {}. Many keys expiring together are recomputed together; spread TTLs with jitter if that is large.</p>",
                w.keys,
                table::utc(w.unix_second as i64)
            );
        }
        let s = k.size_percentiles;
        let size_rows: Vec<(String, f64, String)> = keyspace::size_ranges(&k.size_histogram)
            .into_iter()
            .map(|(label, keys, bytes)| {
                (
                    label.to_string(),
                    keys as f64,
                    format!(
                        "{keys} {}, {}",
                        if keys == 1 { "key" } else { "keys" },
                        human_bytes(bytes as f64)
                    ),
                )
            })
            .collect();
        let _ = write!(
            body,
            "<h3>Key sizes</h3><p>p50 {} &middot; p90 {} &middot; p99 {} &middot; largest {}</p>{}",
            human_bytes(s.p50 as f64),
            human_bytes(s.p90 as f64),
            human_bytes(s.p99 as f64),
            human_bytes(s.max as f64),
            if size_rows.is_empty() {
                String::new()
            } else {
                bars(&size_rows, "#00838f")
            }
        );
        let top: String = k
            .top_by_bytes
            .iter()
            .map(|e| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                    esc(&e.key),
                    esc(&e.r#type),
                    human_bytes(e.bytes as f64)
                )
            })
            .collect();
        let _ = write!(body, "<h3>Largest keys</h3><table><tr><th>key</th><th>type</th><th>memory</th></tr>{top}</table>");
        for c in &k.encoding_candidates {
            let _ = write!(
                body,
                "<p>{} collections ({}) are just above {} {}: <code>CONFIG SET {} {}</code> would keep them compact and save about {}.</p>",
                c.keys,
                human_bytes(c.bytes as f64),
                esc(&c.config),
                c.current,
                esc(&c.config),
                c.suggested,
                human_bytes(c.estimated_saving as f64)
            );
        }
        body.push_str("</section>");
    }
    // One bar per hot key or pattern: its count and share.
    let hot_rows = |h: &HotKeysReport| -> Vec<(String, f64, String)> {
        h.entries
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.count as f64,
                    format!("{} ({:.1}%)", e.count, e.share * 100.0),
                )
            })
            .collect()
    };
    if let Some(h) = &r.hotkeys {
        let rows = hot_rows(h);
        let _ = write!(
            body,
            "<section><h2>Hot keys</h2><p>{} accesses counted (about 1 in {:.0})</p>{}",
            h.sampled_accesses,
            h.counted_one_in(),
            bars(&rows, "#d84315")
        );
        if let Some(n) = &r.namespaces {
            let rows = hot_rows(n);
            let _ = write!(body, "<h3>Hot key patterns</h3>{}", bars(&rows, "#f9a825"));
        }
        body.push_str("</section>");
    }
    if let Some(t) = &r.tags {
        let _ = write!(
            body,
            "<section><h2>Tag index</h2><p>{} keys, {} tags, {} pairs, {}</p></section>",
            t.keys,
            t.tags,
            t.pairs,
            human_bytes(t.memory_bytes as f64)
        );
    }
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Redis report: {}</title><style>{CSS}</style></head><body>{body}<footer>generated by optctl at {}</footer></body></html>\n",
        esc(&r.server),
        table::utc(r.generated_at as i64)
    )
}

const CSS: &str = "body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:980px;margin:2em auto;color:#222;padding:0 1em}\
h1{margin-bottom:0}header p{color:#666;margin-top:.3em}section{margin:2em 0;border-top:1px solid #ddd}\
.score{font-size:3em;font-weight:700}.score span{font-size:.4em;color:#888}\
.finding{border-left:4px solid #999;padding:.2em .8em;margin:.8em 0;background:#fafafa}\
.finding.critical{border-color:#c62828}.finding.warning{border-color:#ef6c00}.finding.info{border-color:#1565c0}\
.sev{text-transform:uppercase;font-size:.75em;font-weight:700}pre{background:#f0f0f0;padding:.5em;white-space:pre-wrap}\
.chart{width:100%;height:auto}.lbl{font-size:12px;fill:#333}.val{font-size:12px;fill:#555}\
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #eee;text-align:left}.num{text-align:right}\
.muted{color:#888}footer{color:#999;font-size:.8em;margin-top:3em}";
