//! Fan-out over a Redis Cluster: when `--url` points at a node in cluster mode (or with
//! `--cluster`), optctl finds the primaries from CLUSTER NODES, asks each in parallel, and
//! merges the answers with the rules in `opt_core::cluster`. A node that does not answer is
//! reported on stderr and in the JSON, never fatal, as long as one node answers.

use opt_core::cluster::{
    parse_cluster_nodes, parse_cluster_replicas, uncovered_slots_finding, unreachable_findings,
    ClusterNode, UnreachablePrimary,
};
use redis::Connection;

use crate::{conn, Cli, CtlError};

/// The primaries to fan out to, or `None` to talk to `--url` alone (not a cluster, or
/// `--single-node`).
pub fn primaries(cli: &Cli, con: &mut Connection) -> Result<Option<Vec<ClusterNode>>, CtlError> {
    if cli.single_node {
        return Ok(None);
    }
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query(con)
        .map_err(|e| conn::command_error(cli, "INFO", &e))?;
    if !info.contains("cluster_enabled:1") {
        if cli.cluster {
            return Err(CtlError::unusable(format!(
                "--cluster: {} is not in cluster mode (cluster_enabled:0)",
                conn::redacted(&cli.url)
            )));
        }
        return Ok(None);
    }
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(con)
        .map_err(|e| conn::command_error(cli, "CLUSTER NODES", &e))?;
    let seed_host = conn::connection_info(cli)
        .map(|i| match i.addr() {
            redis::ConnectionAddr::Tcp(h, _) | redis::ConnectionAddr::TcpTls { host: h, .. } => {
                h.clone()
            }
            _ => "127.0.0.1".to_string(),
        })
        .unwrap_or_else(|_| "127.0.0.1".to_string());
    let nodes: Vec<ClusterNode> = parse_cluster_nodes(&text, &seed_host)
        .into_iter()
        .filter(|n| !n.slots.is_empty())
        .collect();
    if nodes.is_empty() {
        return Err(CtlError::unusable(
            "the cluster has no primary that serves slots yet (CLUSTER NODES)",
        ));
    }
    Ok(Some(nodes))
}

/// The replicas of `primaries` that are up, each with its primary's `host:port`: the nodes
/// that serve the reads clients send with READONLY, which only they count.
pub fn replicas(
    cli: &Cli,
    con: &mut Connection,
    primaries: &[ClusterNode],
) -> Result<Vec<(ClusterNode, String)>, CtlError> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(con)
        .map_err(|e| conn::command_error(cli, "CLUSTER NODES", &e))?;
    let seed_host = primaries
        .first()
        .map_or_else(|| "127.0.0.1".to_string(), |p| p.host.clone());
    Ok(parse_cluster_replicas(&text, &seed_host)
        .into_iter()
        .filter_map(|(replica, master_id)| {
            let primary = primaries.iter().find(|p| p.id == master_id)?;
            Some((replica, primary.addr()))
        })
        .collect())
}

/// Answers by node (`host:port`, value), and failures by node (`host:port`, why).
pub type Answered<T> = (Vec<(String, T)>, Vec<(String, String)>);

/// What one node answered.
pub struct NodeAnswer<T> {
    /// The node asked.
    pub node: ClusterNode,
    /// Its answer, or why there is none.
    pub result: Result<T, CtlError>,
}

/// Runs `ask` on every node in parallel, one connection each.
pub fn ask_each<T: Send>(
    cli: &Cli,
    nodes: &[ClusterNode],
    ask: impl Fn(&mut Connection) -> Result<T, CtlError> + Sync,
) -> Vec<NodeAnswer<T>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|n| {
                let ask = &ask;
                s.spawn(move || {
                    let mut con = conn::connect_to(cli, Some((&n.host, n.port)))?;
                    ask(&mut con)
                })
            })
            .collect();
        nodes
            .iter()
            .zip(handles)
            .map(|(n, h)| NodeAnswer {
                node: n.clone(),
                result: h.join().unwrap_or_else(|_| {
                    Err(CtlError::failed(format!(
                        "the query of {} panicked",
                        n.addr()
                    )))
                }),
            })
            .collect()
    })
}

/// The failures already printed by this process: a command that asks the nodes several times
/// (the total and recent hot keys, a report) says each once, and a refreshing view says a
/// node's failure again only when its message changes.
static PRINTED_FAILURES: std::sync::Mutex<Vec<(String, String)>> =
    std::sync::Mutex::new(Vec::new());

/// Prints that `node` did not answer, unless this process printed the same already.
fn print_failure(node: &str, message: &str) {
    let mut printed = PRINTED_FAILURES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let seen = printed.iter().any(|(n, m)| n == node && m == message);
    if !seen {
        eprintln!("optctl: node {node} did not answer: {message}");
        printed.retain(|(n, _)| n != node);
        printed.push((node.to_string(), message.to_string()));
    }
}

/// Splits answers into the ones that came and the failures, printing each failure on stderr
/// (once per process). Fails only when no node answered.
pub fn answered<T>(answers: Vec<NodeAnswer<T>>) -> Result<Answered<T>, CtlError> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for a in answers {
        match a.result {
            Ok(v) => ok.push((a.node.addr(), v)),
            Err(e) => {
                print_failure(&a.node.addr(), &e.message);
                failed.push((a.node.addr(), e.message));
            }
        }
    }
    if ok.is_empty() {
        let detail: Vec<String> = failed.iter().map(|(n, m)| format!("{n}: {m}")).collect();
        return Err(CtlError::unusable(format!(
            "no node of the cluster answered ({})",
            detail.join("; ")
        )));
    }
    Ok((ok, failed))
}

/// The findings the fan-out makes by itself, from the primaries of CLUSTER NODES and the ones
/// that did not answer (`failed`, by address, with why): slots no primary serves, then each
/// primary down. `seed` is the node the fixes name.
pub fn fan_out_findings(
    nodes: &[ClusterNode],
    failed: &[(String, String)],
    seed: &str,
) -> Vec<opt_core::report::Finding> {
    let down: Vec<UnreachablePrimary> = failed
        .iter()
        .map(|(addr, error)| UnreachablePrimary {
            addr: addr.clone(),
            slots: nodes
                .iter()
                .find(|n| &n.addr() == addr)
                .map_or(0, ClusterNode::slot_count),
            error: error.clone(),
        })
        .collect();
    let mut findings: Vec<_> = uncovered_slots_finding(nodes, seed).into_iter().collect();
    findings.extend(unreachable_findings(&down, seed));
    findings
}
