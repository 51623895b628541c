//! `optctl metrics` and `optctl exporter`: Prometheus text exposition.
//!
//! Server metrics use redis_exporter's names where the meaning is the same
//! (`redis_memory_used_bytes`, `redis_keyspace_hits_total`...), so existing dashboards and
//! alert rules keep working. The module's own metrics are under `opt_`. Label cardinality is
//! bounded: at most 10 hot keys, 10 hot patterns, 20 memory patterns, one series per advice
//! rule (50), per error code (20), per command the server has run (its command table) and
//! per connected replica.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use clap::Args;
use opt_core::advise::info_subfield;
use opt_core::cluster::{ClusterNode, ReplicaState};
use opt_core::report::{AdviceReport, HotKeysReport, KeyspaceReport};

use crate::{cluster, conn, Cli, CtlError};

/// Options shared by `metrics` and `exporter`.
#[derive(Args, Debug, Clone)]
pub struct MetricsArgs {
    /// Random keys sampled per scrape for the memory-by-pattern series (0: none).
    #[arg(long, default_value_t = 1000)]
    pub keyspace_samples: u64,
    /// Also run OPT.ADVISE (without a keyspace sample) for the findings series.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub advice: bool,
}

/// Options of `optctl exporter`.
#[derive(Args, Debug)]
pub struct ExporterArgs {
    /// Address to listen on, e.g. 127.0.0.1:9121.
    #[arg(long, default_value = "127.0.0.1:9121")]
    pub listen: String,
    /// Stop after this many scrapes (for tests).
    #[arg(long, hide = true)]
    pub max_scrapes: Option<u64>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = writeln!(self.0, "{name}{{{}}} {v}", l.join(","));
        }
    }
}

/// Collects every metric from the server at `--url`, or, in a cluster, from every primary,
/// each sample labelled with its `node`.
pub fn collect(cli: &Cli, args: &MetricsArgs) -> Result<String, CtlError> {
    let mut con = conn::connect(cli)?;
    let Some(nodes) = cluster::primaries(cli, &mut con)? else {
        return collect_from(cli, &mut con, args);
    };
    let answers = cluster::ask_each(cli, &nodes, |c| collect_from(cli, c, args));
    let mut per_node = Vec::new();
    let mut failed = Vec::new();
    for a in answers {
        let text = a.result.unwrap_or_else(|e| {
            failed.push((a.node.addr(), e.message.clone()));
            format!(
                "# HELP redis_up Whether the server answered.\n# TYPE redis_up gauge\n\
                 # optctl: {}\nredis_up 0\n",
                e.message.replace('\n', " ")
            )
        });
        per_node.push((a.node.addr(), text));
    }
    let mut out = label_by_node(&per_node);
    out.push_str(&cluster_findings_series(&nodes, &failed));
    Ok(out)
}

/// Merges the expositions of several nodes: each family once (HELP and TYPE from the first
/// node that has it), its samples from every node together, each with a `node` label.
fn label_by_node(per_node: &[(String, String)]) -> String {
    let mut families: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for (node, text) in per_node {
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split_whitespace().next().unwrap_or("").to_string();
                current = Some(match families.iter().position(|f| f.0 == name) {
                    Some(i) => i,
                    None => {
                        families.push((name, vec![line.to_string()], Vec::new()));
                        families.len() - 1
                    }
                });
            } else if line.starts_with("# TYPE ") {
                if let Some(i) = current {
                    if families[i].1.len() < 2 {
                        families[i].1.push(line.to_string());
                    }
                }
            } else if line.starts_with('#') || line.is_empty() {
                continue;
            } else if let Some(i) = current {
                let node_label = format!("node=\"{}\"", label(node));
                let labelled = match line.split_once('{') {
                    Some((name, rest)) => format!("{name}{{{node_label},{rest}"),
                    None => match line.split_once(' ') {
                        Some((name, v)) => format!("{name}{{{node_label}}} {v}"),
                        None => continue,
                    },
                };
                families[i].2.push(labelled);
            }
        }
    }
    let mut out = String::new();
    for (_, header, samples) in families {
        for l in header.iter().chain(&samples) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The link of a replica to its master (how long since it heard from it, whether a full sync
/// runs) and, on a primary, each replica's lag and offset, by redis_exporter's names and
/// labels. At most one series per replica.
fn replication_series(
    o: &mut Out,
    info: &std::collections::HashMap<String, String>,
    info_text: &str,
) {
    let field = |k: &str| info.get(k).map_or("", String::as_str);
    if field("role") == "slave" {
        let master = [
            ("master_host", field("master_host")),
            ("master_port", field("master_port")),
        ];
        for (name, key, help) in [
            (
                "redis_master_last_io_seconds_ago",
                "master_last_io_seconds_ago",
                "Seconds since the replica last heard from its master (-1 while the link is down).",
            ),
            (
                "redis_master_sync_in_progress",
                "master_sync_in_progress",
                "1 while the replica loads a full sync from its master.",
            ),
        ] {
            if let Ok(v) = field(key).parse::<f64>() {
                o.family(name, "gauge", help);
                o.sample(name, &master, v);
            }
        }
    }
    let replicas = opt_core::cluster::parse_replicas(info_text);
    if replicas.is_empty() {
        return;
    }
    for (name, help, value) in [
        (
            "redis_connected_slave_lag_seconds",
            "Seconds since each replica last acknowledged (INFO replication lag).",
            (|r| r.lag_seconds) as fn(&ReplicaState) -> u64,
        ),
        (
            "redis_connected_slave_offset_bytes",
            "Replication offset each replica acknowledged.",
            |r| r.offset,
        ),
    ] {
        o.family(name, "gauge", help);
        for r in &replicas {
            let (ip, port) = r.addr.rsplit_once(':').unwrap_or((&r.addr, ""));
            o.sample(
                name,
                &[
                    ("slave_ip", ip),
                    ("slave_port", port),
                    ("slave_state", &r.state),
                ],
                value(r) as f64,
            );
        }
    }
}

/// Calls, time, refused and failed calls by command (INFO commandstats), by redis_exporter's
/// names: one series per command the server has run, a bounded set (its command table).
fn command_series(o: &mut Out, info: &std::collections::HashMap<String, String>) {
    let mut stats: Vec<(&str, &String)> = info
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("cmdstat_").map(|cmd| (cmd, v)))
        .collect();
    if stats.is_empty() {
        return;
    }
    stats.sort();
    let value = |v: &str, field: &str| info_subfield(v, field).and_then(|n| n.parse::<f64>().ok());
    for (name, field, scale, help) in [
        ("redis_commands_total", "calls", 1.0, "Calls by command."),
        (
            "redis_commands_duration_seconds_total",
            "usec",
            1e-6,
            "Seconds spent executing each command.",
        ),
        (
            "redis_commands_rejected_calls_total",
            "rejected_calls",
            1.0,
            "Calls refused before they ran (bad arity, ACL, OOM...), by command.",
        ),
        (
            "redis_commands_failed_calls_total",
            "failed_calls",
            1.0,
            "Calls that ran and returned an error, by command.",
        ),
    ] {
        let samples: Vec<(&str, f64)> = stats
            .iter()
            .filter_map(|(cmd, v)| value(v, field).map(|n| (*cmd, n * scale)))
            .collect();
        if samples.is_empty() {
            continue;
        }
        o.family(name, "counter", help);
        for (cmd, n) in samples {
            o.sample(name, &[("cmd", cmd)], n);
        }
    }
}

/// CLUSTER INFO of a node in cluster mode, under redis_exporter's names: the state an alert on
/// a cluster watches (`redis_cluster_state` 0 when the node sees slots unserved or most
/// primaries gone) and the slot counts behind it. Nothing when CLUSTER is renamed or denied.
fn cluster_info_series(o: &mut Out, con: &mut redis::Connection) {
    let Ok(text) = redis::cmd("CLUSTER").arg("INFO").query::<String>(con) else {
        return;
    };
    let fields = opt_core::advise::parse_info(&text);
    if let Some(state) = fields.get("cluster_state") {
        o.family(
            "redis_cluster_state",
            "gauge",
            "1 while this node's view of the cluster is ok (CLUSTER INFO cluster_state).",
        );
        o.sample(
            "redis_cluster_state",
            &[],
            f64::from(u8::from(state == "ok")),
        );
    }
    for (name, field, help) in [
        (
            "redis_cluster_slots_assigned",
            "cluster_slots_assigned",
            "Slots assigned to a node (16384 when every slot is served).",
        ),
        (
            "redis_cluster_slots_ok",
            "cluster_slots_ok",
            "Slots whose node is in neither PFAIL nor FAIL.",
        ),
        (
            "redis_cluster_slots_pfail",
            "cluster_slots_pfail",
            "Slots whose node this node cannot reach (PFAIL).",
        ),
        (
            "redis_cluster_slots_fail",
            "cluster_slots_fail",
            "Slots whose node the cluster agrees has failed (FAIL).",
        ),
        (
            "redis_cluster_known_nodes",
            "cluster_known_nodes",
            "Nodes this node knows, replicas included.",
        ),
        (
            "redis_cluster_size",
            "cluster_size",
            "Primaries serving at least one slot.",
        ),
    ] {
        if let Some(v) = fields.get(field).and_then(|v| v.parse::<f64>().ok()) {
            o.family(name, "gauge", help);
            o.sample(name, &[], v);
        }
    }
    open_slot_series(o, con);
}

/// At most this many open slots are listed by slot (a reshard moves one slot at a time; a
/// script gone wrong could leave thousands open, and the series must stay bounded).
const OPEN_SLOTS_LISTED: usize = 16;

/// The slots this node is migrating or importing (its own CLUSTER NODES line): a reshard
/// running, or stopped halfway, which leaves the slot's keys split between two nodes until
/// someone runs `redis-cli --cluster fix`. A count, and the first slots with their direction
/// and the other node.
fn open_slot_series(o: &mut Out, con: &mut redis::Connection) {
    let Ok(text) = redis::cmd("CLUSTER").arg("NODES").query::<String>(con) else {
        return;
    };
    let open = opt_core::cluster::open_slots(&text);
    let nodes = opt_core::cluster::parse_cluster_nodes(&text, "127.0.0.1");
    o.family(
        "opt_cluster_open_slots",
        "gauge",
        "Slots this node is migrating or importing (a reshard running or stopped halfway).",
    );
    o.sample("opt_cluster_open_slots", &[], open.len() as f64);
    o.family(
        "opt_cluster_slot_open",
        "gauge",
        "1 for each slot this node is migrating or importing (the first 16), with the other node.",
    );
    for slot in open.iter().take(OPEN_SLOTS_LISTED) {
        let peer = nodes
            .iter()
            .find(|n| n.id == slot.peer)
            .map_or_else(|| slot.peer.clone(), ClusterNode::addr);
        let state = if slot.importing {
            "importing"
        } else {
            "migrating"
        };
        o.sample(
            "opt_cluster_slot_open",
            &[
                ("slot", &slot.slot.to_string()),
                ("state", state),
                ("peer", &peer),
            ],
            1.0,
        );
    }
}

/// The cluster's own findings that the fan-out sees without asking more: primaries that did
/// not answer (`failed`, by address) and slots no primary serves, as `opt_cluster_finding`
/// (no `node` label: they are about the cluster). The series exists, empty, while there is
/// none, so that an alert can tell "no finding" from "not scraped".
fn cluster_findings_series(nodes: &[ClusterNode], failed: &[(String, String)]) -> String {
    let seed = nodes.first().map(ClusterNode::addr).unwrap_or_default();
    let findings = cluster::fan_out_findings(nodes, failed, &seed);
    let mut o = Out(String::new());
    o.family(
        "opt_cluster_finding",
        "gauge",
        "1 for each cluster-wide finding (a primary that did not answer, slots no primary \
         serves), by rule, severity and subject.",
    );
    for f in &findings {
        let subject = f.subjects.first().map_or("", String::as_str);
        o.sample(
            "opt_cluster_finding",
            &[
                ("rule", &f.rule),
                ("severity", &f.severity),
                ("subject", subject),
            ],
            1.0,
        );
    }
    o.0
}

/// The error series: INFO errorstats by code, the 20 most frequent (a script can make a code
/// of each error text, and the series must stay bounded).
fn error_counts(info: &std::collections::HashMap<String, String>) -> Vec<(&str, u64)> {
    let mut counts = opt_core::advise::error_counts(info);
    counts.truncate(20);
    counts
}

/// Collects every metric from one server.
fn collect_from(
    cli: &Cli,
    con: &mut redis::Connection,
    args: &MetricsArgs,
) -> Result<String, CtlError> {
    let info_text: String = redis::cmd("INFO")
        .arg("everything")
        .query(con)
        .map_err(|e| conn::command_error(cli, "INFO", &e))?;
    let info = opt_core::advise::parse_info(&info_text);
    let mut o = Out(String::new());
    let num = |k: &str| info.get(k).and_then(|v| v.parse::<f64>().ok());
    o.family("redis_up", "gauge", "Whether the server answered.");
    o.sample("redis_up", &[], 1.0);
    o.family("redis_instance_info", "gauge", "Server version and role.");
    o.sample(
        "redis_instance_info",
        &[
            (
                "redis_version",
                info.get("redis_version").map_or("", String::as_str),
            ),
            ("role", info.get("role").map_or("", String::as_str)),
        ],
        1.0,
    );
    for (name, field, kind, help) in [
        (
            "redis_uptime_in_seconds",
            "uptime_in_seconds",
            "gauge",
            "Seconds since start.",
        ),
        (
            "redis_connected_clients",
            "connected_clients",
            "gauge",
            "Connected clients.",
        ),
        (
            "redis_blocked_clients",
            "blocked_clients",
            "gauge",
            "Blocked clients.",
        ),
        (
            "redis_memory_used_bytes",
            "used_memory",
            "gauge",
            "Memory used by data and overhead.",
        ),
        (
            "redis_memory_used_rss_bytes",
            "used_memory_rss",
            "gauge",
            "Resident set size.",
        ),
        (
            "redis_memory_used_peak_bytes",
            "used_memory_peak",
            "gauge",
            "Peak used_memory.",
        ),
        (
            "redis_memory_max_bytes",
            "maxmemory",
            "gauge",
            "maxmemory (0: no limit).",
        ),
        (
            "redis_mem_fragmentation_ratio",
            "mem_fragmentation_ratio",
            "gauge",
            "RSS / used memory.",
        ),
        (
            "redis_commands_processed_total",
            "total_commands_processed",
            "counter",
            "Commands processed.",
        ),
        (
            "redis_connections_received_total",
            "total_connections_received",
            "counter",
            "Connections accepted.",
        ),
        (
            "redis_rejected_connections_total",
            "rejected_connections",
            "counter",
            "Connections refused (maxclients).",
        ),
        (
            "redis_keyspace_hits_total",
            "keyspace_hits",
            "counter",
            "Lookups that found the key.",
        ),
        (
            "redis_keyspace_misses_total",
            "keyspace_misses",
            "counter",
            "Lookups that did not.",
        ),
        (
            "redis_evicted_keys_total",
            "evicted_keys",
            "counter",
            "Keys evicted under maxmemory.",
        ),
        (
            "redis_expired_keys_total",
            "expired_keys",
            "counter",
            "Keys expired.",
        ),
        (
            "redis_connected_slaves",
            "connected_slaves",
            "gauge",
            "Connected replicas.",
        ),
        (
            "redis_cpu_sys_seconds_total",
            "used_cpu_sys",
            "counter",
            "System CPU seconds of the server process.",
        ),
        (
            "redis_cpu_user_seconds_total",
            "used_cpu_user",
            "counter",
            "User CPU seconds of the server process.",
        ),
        (
            "redis_net_input_bytes_total",
            "total_net_input_bytes",
            "counter",
            "Bytes read from the network.",
        ),
        (
            "redis_net_output_bytes_total",
            "total_net_output_bytes",
            "counter",
            "Bytes written to the network.",
        ),
        (
            "redis_rdb_changes_since_last_save",
            "rdb_changes_since_last_save",
            "gauge",
            "Writes since the last RDB save (lost if the server dies now, without AOF).",
        ),
        (
            "redis_rdb_last_save_timestamp_seconds",
            "rdb_last_save_time",
            "gauge",
            "Unix time of the last successful RDB save.",
        ),
        (
            "redis_rdb_bgsave_in_progress",
            "rdb_bgsave_in_progress",
            "gauge",
            "1 while a BGSAVE runs.",
        ),
        (
            "redis_aof_enabled",
            "aof_enabled",
            "gauge",
            "1 when the AOF is on.",
        ),
        (
            "redis_aof_rewrite_in_progress",
            "aof_rewrite_in_progress",
            "gauge",
            "1 while an AOF rewrite runs.",
        ),
        (
            "redis_loading_dump_file",
            "loading",
            "gauge",
            "1 while the server loads its RDB or AOF (and answers LOADING).",
        ),
        (
            "redis_latest_fork_usec",
            "latest_fork_usec",
            "gauge",
            "Microseconds the last fork held the server.",
        ),
        (
            "redis_master_repl_offset",
            "master_repl_offset",
            "gauge",
            "Replication offset of this server.",
        ),
        (
            "redis_replication_backlog_bytes",
            "repl_backlog_size",
            "gauge",
            "Size of the replication backlog.",
        ),
        (
            "redis_pubsub_channels",
            "pubsub_channels",
            "gauge",
            "Channels with subscribers.",
        ),
        (
            "redis_pubsub_patterns",
            "pubsub_patterns",
            "gauge",
            "Patterns with subscribers.",
        ),
        (
            "redis_lazyfree_pending_objects",
            "lazyfree_pending_objects",
            "gauge",
            "Values waiting to be freed by the lazy-free thread.",
        ),
    ] {
        if let Some(v) = num(field) {
            o.family(name, kind, help);
            o.sample(name, &[], v);
        }
    }
    let dbs: Vec<(&String, &String)> = info
        .iter()
        .filter(|(k, _)| k.starts_with("db") && k[2..].parse::<u32>().is_ok())
        .collect();
    if !dbs.is_empty() {
        o.family("redis_db_keys", "gauge", "Keys per database.");
        for (db, v) in &dbs {
            let keys = info_subfield(v, "keys")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
            o.sample("redis_db_keys", &[("db", db)], keys);
        }
        o.family(
            "redis_db_keys_expiring",
            "gauge",
            "Keys with a TTL per database.",
        );
        for (db, v) in &dbs {
            let keys = info_subfield(v, "expires")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
            o.sample("redis_db_keys_expiring", &[("db", db)], keys);
        }
    }
    // What an alert on a failing replica, persistence or error replies needs, by the names
    // redis_exporter gives them.
    if info.get("role").map(String::as_str) == Some("slave") {
        o.family(
            "redis_master_link_up",
            "gauge",
            "1 while the replica's link to its master is up.",
        );
        o.sample(
            "redis_master_link_up",
            &[
                (
                    "master_host",
                    info.get("master_host").map_or("", String::as_str),
                ),
                (
                    "master_port",
                    info.get("master_port").map_or("", String::as_str),
                ),
            ],
            f64::from(u8::from(
                info.get("master_link_status").map(String::as_str) == Some("up"),
            )),
        );
    }
    for (name, field, help) in [
        (
            "redis_rdb_last_bgsave_status",
            "rdb_last_bgsave_status",
            "1 if the last BGSAVE succeeded.",
        ),
        (
            "redis_aof_last_write_status",
            "aof_last_write_status",
            "1 if the last write to the AOF succeeded.",
        ),
    ] {
        if let Some(v) = info.get(field) {
            o.family(name, "gauge", help);
            o.sample(name, &[], f64::from(u8::from(v == "ok")));
        }
    }
    replication_series(&mut o, &info, &info_text);
    command_series(&mut o, &info);
    if info.get("cluster_enabled").map(String::as_str) == Some("1") {
        cluster_info_series(&mut o, con);
    }
    let errors = error_counts(&info);
    if !errors.is_empty() {
        o.family(
            "redis_errors_total",
            "counter",
            "Error replies by error code (INFO errorstats; the 20 most frequent).",
        );
        for (err, count) in errors {
            o.sample("redis_errors_total", &[("err", err)], count as f64);
        }
    }
    // The module's own series.
    for (name, field, kind, help) in [
        (
            "opt_hotkeys_sampled_accesses_total",
            "opt_hotkeys_sampled_accesses",
            "counter",
            "Key accesses counted by the hot-key tracker.",
        ),
        (
            "opt_hotkeys_memory_bytes",
            "opt_hotkeys_memory_bytes",
            "gauge",
            "Memory of the hot-key tracker.",
        ),
        (
            "opt_tag_index_keys",
            "opt_tags_keys",
            "gauge",
            "Keys in the tag index.",
        ),
        // From INFO, not OPT.TAGINFO: TAGINFO also ranks every tag for its largest ones (a
        // few ms per million tags), which a scrape every few seconds should not cost.
        (
            "opt_tags_total",
            "opt_tags_tags",
            "gauge",
            "Distinct tags in the tag index.",
        ),
        (
            "opt_tag_index_pairs",
            "opt_tags_pairs",
            "gauge",
            "(key, tag) pairs in the tag index.",
        ),
        (
            "opt_tag_index_memory_bytes",
            "opt_tags_memory_bytes",
            "gauge",
            "Memory of the tag index.",
        ),
        (
            "opt_tag_migrated_keys_sent_total",
            "opt_tags_migrated_keys_sent",
            "counter",
            "Keys whose tags were sent to the node a MIGRATE or a slot migration moved them to.",
        ),
        (
            "opt_tag_migrated_keys_received_total",
            "opt_tags_migrated_keys_received",
            "counter",
            "Keys tagged from a MIGRATE's or a slot migration's transfer from another node.",
        ),
        (
            "opt_tag_keys_deleted_on_arrival_total",
            "opt_tags_deleted_on_arrival",
            "counter",
            "Keys deleted when they arrived from another node with a tag invalidated here in the last 2 s (the invalidation ran while they moved).",
        ),
        (
            "opt_tag_keys_marked_stale_on_arrival_total",
            "opt_tags_marked_stale_on_arrival",
            "counter",
            "Keys marked stale when they arrived from another node with a tag invalidated here with SOFT in the last 2 s.",
        ),
        (
            "opt_tag_transfers_pending",
            "opt_tags_transfers_pending",
            "gauge",
            "Tag transfers between cluster nodes not finished on this node (received and not applied, to send after a MIGRATE, slot handovers running).",
        ),
        (
            "opt_tag_index_following_keyspace",
            "opt_tags_following_keyspace",
            "gauge",
            "1 while the tag index follows keyspace events (0 before the first tag, and on Redis 8.2+ while the index is empty).",
        ),
        (
            "opt_stampede_locks",
            "opt_stampede_locks",
            "gauge",
            "OPT.FETCH recomputation locks held (at most opt.max-locks).",
        ),
        (
            "opt_panics_caught_total",
            "opt_panics_caught",
            "counter",
            "Internal errors caught by the module.",
        ),
        (
            "opt_keyspace_lookup_hits_total",
            "opt_keyspace_lookup_hits",
            "counter",
            "Keyspace hits that OPT.KEYSPACE analyses added to redis_keyspace_hits_total; subtract them for the clients' hit ratio.",
        ),
        (
            "opt_keyspace_lookup_misses_total",
            "opt_keyspace_lookup_misses",
            "counter",
            "Keyspace misses that OPT.KEYSPACE analyses added to redis_keyspace_misses_total.",
        ),
    ] {
        if let Some(v) = num(field) {
            o.family(name, kind, help);
            o.sample(name, &[], v);
        }
    }
    let args10 = |ns: bool| {
        let mut a = vec![
            "COUNT".to_string(),
            "10".to_string(),
            "WINDOW".into(),
            "recent".into(),
        ];
        if ns {
            a.push("NAMESPACES".into());
        }
        a
    };
    if let Ok(hot) = conn::call_json::<HotKeysReport>(con, cli, "OPT.HOTKEYS", &args10(false)) {
        o.family(
            "opt_hotkey_ops_per_second",
            "gauge",
            "Accesses per second of the 10 hottest keys (recent window).",
        );
        for e in &hot.entries {
            o.sample(
                "opt_hotkey_ops_per_second",
                &[("key", &e.name)],
                e.ops_per_sec,
            );
        }
    }
    if let Ok(hot) = conn::call_json::<HotKeysReport>(con, cli, "OPT.HOTKEYS", &args10(true)) {
        o.family(
            "opt_namespace_ops_per_second",
            "gauge",
            "Accesses per second of the 10 hottest key patterns.",
        );
        for e in &hot.entries {
            o.sample(
                "opt_namespace_ops_per_second",
                &[("pattern", &e.name)],
                e.ops_per_sec,
            );
        }
    }
    if args.keyspace_samples > 0 {
        let a = vec!["SAMPLES".to_string(), args.keyspace_samples.to_string()];
        if let Ok(ks) = conn::call_json::<KeyspaceReport>(con, cli, "OPT.KEYSPACE", &a) {
            o.family(
                "opt_keyspace_bytes",
                "gauge",
                "Memory by key pattern (the 20 largest; sampled).",
            );
            for p in ks.patterns.iter().take(20) {
                o.sample(
                    "opt_keyspace_bytes",
                    &[("pattern", &p.pattern)],
                    p.bytes as f64,
                );
            }
            o.family(
                "opt_keyspace_keys",
                "gauge",
                "Keys by key pattern (the 20 largest by memory; sampled).",
            );
            for p in ks.patterns.iter().take(20) {
                o.sample(
                    "opt_keyspace_keys",
                    &[("pattern", &p.pattern)],
                    p.keys as f64,
                );
            }
        }
    }
    if args.advice {
        let a = vec!["SAMPLES".to_string(), "0".to_string()];
        if let Ok(adv) = conn::call_json::<AdviceReport>(con, cli, "OPT.ADVISE", &a) {
            o.family(
                "opt_health_score",
                "gauge",
                "OPT.ADVISE health score, 0 to 100.",
            );
            o.sample("opt_health_score", &[], adv.score as f64);
            o.family(
                "opt_advice_finding",
                "gauge",
                "1 for each rule that fires, by rule and severity.",
            );
            for f in &adv.findings {
                o.sample(
                    "opt_advice_finding",
                    &[("rule", &f.rule), ("severity", &f.severity)],
                    1.0,
                );
            }
        }
    }
    Ok(o.0)
}

/// Runs `optctl metrics`: prints the exposition once.
pub fn print(cli: &Cli, args: &MetricsArgs) -> Result<(), CtlError> {
    print!("{}", collect(cli, args)?);
    Ok(())
}

/// Runs `optctl exporter`: serves the exposition on `/metrics`.
pub fn serve(cli: &Cli, args: &ExporterArgs) -> Result<(), CtlError> {
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| CtlError::failed(format!("cannot listen on {}: {e}", args.listen)))?;
    eprintln!(
        "optctl exporter: serving /metrics on http://{}",
        args.listen
    );
    let mut scrapes = 0u64;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request_line = String::new();
        let mut reader = BufReader::new(match stream.try_clone() {
            Ok(s) => s,
            Err(_) => continue,
        });
        if reader.read_line(&mut request_line).is_err() {
            continue;
        }
        // Drain the headers.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body, ctype) = if path == "/metrics" {
            scrapes += 1;
            match collect(cli, &args.metrics) {
                Ok(text) => ("200 OK", text, "text/plain; version=0.0.4; charset=utf-8"),
                Err(e) => (
                    "200 OK",
                    format!("# optctl: {}\n# HELP redis_up Whether the server answered.\n# TYPE redis_up gauge\nredis_up 0\n", e.message),
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
            }
        } else {
            ("404 Not Found", "see /metrics\n".to_string(), "text/plain")
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if args.max_scrapes.is_some_and(|m| scrapes >= m) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_series_are_the_twenty_most_frequent_codes() {
        let mut info = std::collections::HashMap::new();
        info.insert("errorstat_WRONGTYPE".to_string(), "count=7".to_string());
        info.insert("errorstat_ERR".to_string(), "count=9".to_string());
        // A script that starts its error text with a variable: a code per call.
        for i in 0..100 {
            info.insert(format!("errorstat_last_{i},"), "count=1".to_string());
        }
        info.insert("used_memory".to_string(), "1".to_string());
        let counts = error_counts(&info);
        assert_eq!(counts.len(), 20);
        assert_eq!(&counts[..2], &[("ERR", 9), ("WRONGTYPE", 7)]);
    }
}
