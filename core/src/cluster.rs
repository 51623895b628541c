//! Redis Cluster, as optctl sees it from outside: which primaries serve which slots (parsed
//! from CLUSTER NODES, which every server version has), the hash slot of a key, and how the
//! per-node reports merge into one cluster-wide answer. Pure functions, so the merge rules
//! are unit-tested here and the CLI only fetches and prints.

use crate::report::{HotEntry, HotKeysReport};

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u32 = 16384;

/// A primary of the cluster, from its line of CLUSTER NODES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Node id (40 hex characters).
    pub id: String,
    /// Host as announced (the IP, or the hostname when one is announced).
    pub host: String,
    /// Client port.
    pub port: u16,
    /// Whether the node is flagged `fail` or `pfail` (still listed, so it can be reported).
    pub failing: bool,
    /// Slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Number of slots served.
    pub fn slot_count(&self) -> u32 {
        self.slots
            .iter()
            .map(|&(a, b)| u32::from(b) - u32::from(a) + 1)
            .sum()
    }
}

/// The primaries in a CLUSTER NODES reply, in the order given. Lines that do not parse, and
/// replicas, are skipped. `seed_host` replaces an empty or `0.0.0.0` announced address (a
/// node that does not know its own IP yet).
pub fn parse_cluster_nodes(text: &str, seed_host: &str) -> Vec<ClusterNode> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let flags: Vec<&str> = f[2].split(',').collect();
        if !flags.contains(&"master") || flags.contains(&"noaddr") {
            continue;
        }
        // ip:port@cport[,hostname]
        let (addr, hostname) = match f[1].split_once(',') {
            Some((a, h)) => (a, Some(h)),
            None => (f[1], None),
        };
        let addr = addr.split('@').next().unwrap_or(addr);
        let Some((ip, port)) = addr.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        let host = match hostname {
            Some(h) if !h.is_empty() => h.to_string(),
            _ if ip.is_empty() || ip == "0.0.0.0" => seed_host.to_string(),
            _ => ip.to_string(),
        };
        let slots = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|x| (x, x)),
            })
            .collect();
        out.push(ClusterNode {
            id: f[0].to_string(),
            host,
            port,
            failing: flags.iter().any(|&x| x == "fail" || x == "fail?"),
            slots,
        });
    }
    out
}

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`, honouring `{hash tags}` as CLUSTER KEYSLOT does.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&c| c == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&c| c == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    (u32::from(crc16(hashed)) % SLOTS) as u16
}

/// Merges the hot keys (or patterns) of every primary into one ranking.
///
/// Keys live on one shard each, so key entries are ranked side by side, each with its node
/// and slot. A pattern spans shards, so pattern entries with the same name are summed
/// (counts, errors and the read/write/miss split), and `node` stays empty. Totals, the
/// detection floor (the largest node's, in accesses) and capacities add up or take the
/// maximum as fits; `seconds` is the longest window.
pub fn merge_hot(reports: &[(String, HotKeysReport)], count: usize) -> Option<HotKeysReport> {
    let (_, first) = reports.first()?;
    let namespaces = first.view == "namespaces";
    let mut merged = HotKeysReport {
        window: first.window.clone(),
        kind: first.kind.clone(),
        view: first.view.clone(),
        seconds: 0.0,
        sample_ratio: first.sample_ratio,
        sampled_accesses: 0,
        estimated_accesses: 0,
        detection_floor: 0,
        capacity: 0,
        tracked: 0,
        entries: Vec::new(),
    };
    let mut entries: Vec<HotEntry> = Vec::new();
    for (node, r) in reports {
        merged.seconds = merged.seconds.max(r.seconds);
        merged.sample_ratio = merged.sample_ratio.max(r.sample_ratio);
        merged.sampled_accesses += r.sampled_accesses;
        merged.estimated_accesses += r.estimated_accesses;
        merged.detection_floor = merged.detection_floor.max(r.detection_floor);
        merged.capacity += r.capacity;
        merged.tracked += r.tracked;
        for e in &r.entries {
            if namespaces {
                if let Some(m) = entries.iter_mut().find(|m| m.name == e.name) {
                    m.count += e.count;
                    m.error += e.error;
                    m.ops_per_sec += e.ops_per_sec;
                    m.reads += e.reads;
                    m.writes += e.writes;
                    m.misses += e.misses;
                    continue;
                }
                entries.push(HotEntry {
                    node: None,
                    slot: None,
                    ..e.clone()
                });
            } else {
                entries.push(HotEntry {
                    node: Some(node.clone()),
                    slot: (!e.truncated).then(|| key_slot(e.name.as_bytes())),
                    ..e.clone()
                });
            }
        }
    }
    entries.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    entries.truncate(count);
    let total = merged.estimated_accesses.max(1) as f64;
    for (i, e) in entries.iter_mut().enumerate() {
        e.rank = i as u64 + 1;
        e.share = e.count as f64 / total;
    }
    merged.entries = entries;
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_cluster_keyslot() {
        // Values from CLUSTER KEYSLOT on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"page:1"), 601);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag hashes the whole key.
        assert_eq!(key_slot(b"{}x"), u32::from(crc16(b"{}x")) as u16 % 16384);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn cluster_nodes_lines_parse_into_primaries_with_slots() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,cache-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master - 0 1426238316232 5 connected
garbage
";
        let nodes = parse_cluster_nodes(text, "10.0.0.9");
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].addr(), "127.0.0.1:30002");
        assert_eq!(nodes[0].slots, vec![(5461, 10922)]);
        assert!(nodes[1].failing);
        assert_eq!(nodes[2].addr(), "10.0.0.9:30001");
        assert_eq!(nodes[2].slots, vec![(0, 5460)]);
        assert_eq!(nodes[2].slot_count(), 5461);
        assert!(nodes[3].slots.is_empty());
    }

    fn entry(name: &str, count: u64, error: u64) -> HotEntry {
        HotEntry {
            rank: 0,
            name: name.to_string(),
            truncated: false,
            count,
            error,
            share: 0.0,
            ops_per_sec: count as f64,
            reads: count,
            writes: 0,
            misses: 0,
            node: None,
            slot: None,
        }
    }

    fn report(view: &str, total: u64, floor: u64, entries: Vec<HotEntry>) -> HotKeysReport {
        HotKeysReport {
            window: "total".into(),
            kind: "all".into(),
            view: view.into(),
            seconds: 10.0,
            sample_ratio: 1,
            sampled_accesses: total,
            estimated_accesses: total,
            detection_floor: floor,
            capacity: 1024,
            tracked: entries.len() as u64,
            entries,
        }
    }

    #[test]
    fn keys_from_every_shard_are_ranked_together_with_node_and_slot() {
        let a = report(
            "keys",
            1000,
            3,
            vec![entry("foo", 500, 0), entry("x", 10, 2)],
        );
        let b = report("keys", 3000, 7, vec![entry("bar", 900, 1)]);
        let m = merge_hot(&[("n1:1".into(), a), ("n2:2".into(), b)], 2).unwrap();
        assert_eq!(m.estimated_accesses, 4000);
        assert_eq!(m.detection_floor, 7);
        assert_eq!(m.capacity, 2048);
        let names: Vec<_> = m.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bar", "foo"]);
        assert_eq!(m.entries[0].node.as_deref(), Some("n2:2"));
        assert_eq!(m.entries[0].slot, Some(5061));
        assert_eq!(m.entries[1].rank, 2);
        assert!((m.entries[1].share - 500.0 / 4000.0).abs() < 1e-12);
    }

    #[test]
    fn patterns_that_span_shards_are_summed() {
        let a = report(
            "namespaces",
            100,
            0,
            vec![entry("user:*", 60, 1), entry("s:*", 40, 0)],
        );
        let b = report("namespaces", 100, 0, vec![entry("user:*", 30, 2)]);
        let m = merge_hot(&[("a".into(), a), ("b".into(), b)], 10).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[0].name, "user:*");
        assert_eq!((m.entries[0].count, m.entries[0].error), (90, 3));
        assert!(m.entries[0].node.is_none());
        assert!((m.entries[0].share - 0.45).abs() < 1e-12);
    }

    #[test]
    fn nothing_to_merge_is_none() {
        assert!(merge_hot(&[], 10).is_none());
    }
}
