//! Redis Cluster, as optctl sees it from outside: which primaries serve which slots (parsed
//! from CLUSTER NODES, which every server version has), the hash slot of a key, how the
//! per-node reports merge into one cluster-wide answer, and the findings about the cluster as
//! a whole (a primary down, slots without a primary or being moved, shards out of balance, a
//! replica behind or missing). Pure functions, so the merge and the rules are unit-tested here
//! and the CLI only fetches and prints.

use std::cmp::Reverse;

use crate::report::{
    Finding, HotEntry, HotKeysReport, KeyspaceReport, PatternStats, TagInfoReport, TagSize,
};

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

/// The slot states (`[slot-<-source]`, `[slot->-target]`) on the `myself` line of a CLUSTER
/// NODES reply: nodes show them for themselves only.
fn own_slot_states(cluster_nodes: &str) -> Vec<&str> {
    cluster_nodes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2].split(',').any(|x| x == "myself"))
        .map(|f| {
            f.into_iter()
                .skip(8)
                .filter(|t| t.starts_with('['))
                .collect()
        })
        .unwrap_or_default()
}

/// The slots this node is importing (`[slot-<-source]` on the `myself` line of
/// `CLUSTER NODES`): their keys arrive by MIGRATE before the node owns the slot.
pub fn importing_slots(cluster_nodes: &str) -> Vec<u16> {
    own_slot_states(cluster_nodes)
        .into_iter()
        .filter_map(|t| t.strip_prefix('[')?.split_once("-<-")?.0.parse().ok())
        .collect()
}

/// Whether the node that gave this CLUSTER NODES reply is moving slots by MIGRATE: its
/// `myself` line lists a slot it is migrating (`[slot->-target]`) or importing
/// (`[slot-<-source]`).
pub fn moving_slots(cluster_nodes: &str) -> bool {
    own_slot_states(cluster_nodes)
        .iter()
        .any(|t| t.contains("->-") || t.contains("-<-"))
}

/// A slot a node is moving by MIGRATE, as its own CLUSTER NODES line shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSlot {
    /// The slot.
    pub slot: u16,
    /// Whether the node is importing it (`[slot-<-source]`), else migrating it away
    /// (`[slot->-target]`).
    pub importing: bool,
    /// The other node: its id as CLUSTER NODES gives it, or its `host:port` once resolved.
    pub peer: String,
}

/// The slots the node that gave this CLUSTER NODES reply is migrating or importing.
pub fn open_slots(cluster_nodes: &str) -> Vec<OpenSlot> {
    own_slot_states(cluster_nodes)
        .into_iter()
        .filter_map(|t| {
            let t = t.strip_prefix('[')?.strip_suffix(']')?;
            let (slot, importing, peer) = match t.split_once("->-") {
                Some((slot, peer)) => (slot, false, peer),
                None => {
                    let (slot, peer) = t.split_once("-<-")?;
                    (slot, true, peer)
                }
            };
            Some(OpenSlot {
                slot: slot.parse().ok()?,
                importing,
                peer: peer.to_string(),
            })
        })
        .collect()
}

/// One CLUSTER NODES line: the node, its flags and its master's id (`-` for a primary), or
/// None for a line that does not parse or a node without an address.
fn parse_cluster_line<'a>(
    line: &'a str,
    seed_host: &str,
) -> Option<(ClusterNode, Vec<&'a str>, &'a str)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let flags: Vec<&str> = f[2].split(',').collect();
    if flags.contains(&"noaddr") {
        return None;
    }
    // ip:port@cport[,hostname]
    let (addr, hostname) = match f[1].split_once(',') {
        Some((a, h)) => (a, Some(h)),
        None => (f[1], None),
    };
    let addr = addr.split('@').next().unwrap_or(addr);
    let (ip, port) = addr.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
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
    let node = ClusterNode {
        id: f[0].to_string(),
        host,
        port,
        failing: flags.iter().any(|&x| x == "fail" || x == "fail?"),
        slots,
    };
    Some((node, flags, f[3]))
}

/// The primaries in a CLUSTER NODES reply, in the order given. Lines that do not parse, and
/// replicas, are skipped. `seed_host` replaces an empty or `0.0.0.0` announced address (a
/// node that does not know its own IP yet).
pub fn parse_cluster_nodes(text: &str, seed_host: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| parse_cluster_line(line, seed_host))
        .filter(|(_, flags, _)| flags.contains(&"master"))
        .map(|(node, _, _)| node)
        .collect()
}

/// The replicas in a CLUSTER NODES reply that are up, each with its primary's id, in the
/// order given. Clients may send them reads (READONLY), which only they count.
pub fn parse_cluster_replicas(text: &str, seed_host: &str) -> Vec<(ClusterNode, String)> {
    text.lines()
        .filter_map(|line| parse_cluster_line(line, seed_host))
        .filter(|(node, flags, master)| {
            (flags.contains(&"slave") || flags.contains(&"replica"))
                && !node.failing
                && *master != "-"
        })
        .map(|(node, _, master)| (node, master.to_string()))
        .collect()
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

/// A set of hash slots (one bit each), built from the slot ranges a server reports.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet {
    bits: Box<[u64; (SLOTS / 64) as usize]>,
}

impl SlotSet {
    /// The slots of the inclusive `ranges`; a range with its start past its end, or past the
    /// last slot, is an error (the server gave something this module does not understand).
    pub fn from_ranges(ranges: &[(u32, u32)]) -> Result<SlotSet, String> {
        let mut set = SlotSet {
            bits: Box::new([0; (SLOTS / 64) as usize]),
        };
        for &(start, end) in ranges {
            if start > end || end >= SLOTS {
                return Err(format!(
                    "slot range {start}-{end} is not within 0-{}",
                    SLOTS - 1
                ));
            }
            for slot in start..=end {
                set.bits[(slot / 64) as usize] |= 1 << (slot % 64);
            }
        }
        Ok(set)
    }

    /// Whether `slot` is in the set.
    pub fn contains(&self, slot: u16) -> bool {
        let slot = u32::from(slot);
        slot < SLOTS && self.bits[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    /// Whether the slot of `key` is in the set.
    pub fn holds_key(&self, key: &[u8]) -> bool {
        self.contains(key_slot(key))
    }

    /// How many slots the set holds.
    pub fn len(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }

    /// Whether the set holds no slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet({} slots)", self.len())
    }
}

/// Which atomic slot migration (slots moved by the servers themselves, not key by key with
/// MIGRATE) a server has, if any. The two differ in their module events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicSlotMigration {
    /// Redis 8.4+: `CLUSTER MIGRATION IMPORT`, with the CLUSTER_SLOT_MIGRATION (18) and
    /// CLUSTER_SLOT_MIGRATION_TRIM (19) module events.
    Redis,
    /// Valkey 9.0+: `CLUSTER MIGRATESLOTS`, with the ATOMIC_SLOT_MIGRATION (19) module event.
    Valkey,
}

/// The atomic slot migration of the server `identity` names (`redis 8.6.3`, `valkey 9.1.2`,
/// as [`crate::version::server_identity`] gives it).
pub fn atomic_slot_migration(identity: &str) -> Option<AtomicSlotMigration> {
    let (name, version) = identity.split_once(' ')?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next()??, parts.next().flatten().unwrap_or(0));
    match name {
        "redis" if (major, minor) >= (8, 4) => Some(AtomicSlotMigration::Redis),
        "valkey" if major >= 9 => Some(AtomicSlotMigration::Valkey),
        _ => None,
    }
}

/// Adds `e`'s traffic (counts, error bounds, rate and split) to `m`.
fn add_traffic(m: &mut HotEntry, e: &HotEntry) {
    m.count += e.count;
    m.error += e.error;
    m.ops_per_sec += e.ops_per_sec;
    m.reads += e.reads;
    m.writes += e.writes;
    m.misses += e.misses;
}

/// Merges the hot keys (or patterns) of every primary into one ranking.
///
/// Keys live on one shard each, so key entries are ranked side by side, each with its node
/// and slot; the same key from several reports (a primary and its replicas, which count the
/// reads clients send them) is summed under the node of the first. A pattern spans shards,
/// so pattern entries with the same name are summed (counts, errors and the read/write/miss
/// split), and `node` stays empty. Totals, the
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
    // Where each name (and whether it was cut) already is in `entries`: a pattern from every
    // shard, or a key from its primary and its replicas, is one entry with their sum. Patterns
    // keep no node; a key keeps the node named first.
    let mut at: std::collections::HashMap<(&str, bool), usize> = Default::default();
    for (node, r) in reports {
        merged.seconds = merged.seconds.max(r.seconds);
        merged.sample_ratio = merged.sample_ratio.max(r.sample_ratio);
        merged.sampled_accesses += r.sampled_accesses;
        merged.estimated_accesses += r.estimated_accesses;
        merged.detection_floor = merged.detection_floor.max(r.detection_floor);
        merged.capacity += r.capacity;
        merged.tracked += r.tracked;
        for e in &r.entries {
            let key = (e.name.as_str(), !namespaces && e.truncated);
            if let Some(&i) = at.get(&key) {
                add_traffic(&mut entries[i], e);
                continue;
            }
            at.insert(key, entries.len());
            entries.push(if namespaces {
                HotEntry {
                    node: None,
                    slot: None,
                    ..e.clone()
                }
            } else {
                HotEntry {
                    node: Some(node.clone()),
                    slot: (!e.truncated).then(|| key_slot(e.name.as_bytes())),
                    ..e.clone()
                }
            });
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

/// Adds `(name, count)` pairs into `into`, by name.
fn add_counts(into: &mut Vec<(String, u64)>, from: &[(String, u64)]) {
    for (name, n) in from {
        match into.iter_mut().find(|(x, _)| x == name) {
            Some((_, m)) => *m += n,
            None => into.push((name.clone(), *n)),
        }
    }
}

/// Merges the keyspace analyses of every primary into one: a pattern's keys, bytes, types,
/// encodings and TTL, idle and LFU buckets add up across shards (confidence intervals add in
/// quadrature, as independent samples do), the top lists are re-ranked, and the per-hour
/// expiries add up. So do the size distributions, range by range, and the size percentiles
/// are those of the sum; when a node sent no distribution (a module older than the field),
/// each percentile is the largest node's value instead, an upper bound. `elapsed_ms` is the
/// slowest node's.
pub fn merge_keyspace(reports: &[(String, KeyspaceReport)], top: usize) -> Option<KeyspaceReport> {
    let (_, first) = reports.first()?;
    let mut m = KeyspaceReport {
        patterns: Vec::new(),
        bytes_by_type: Vec::new(),
        top_by_bytes: Vec::new(),
        top_by_length: Vec::new(),
        expiring_per_hour: vec![0; first.expiring_per_hour.len()],
        size_histogram: Vec::new(),
        worst_expiry_second: None,
        encoding_candidates: Vec::new(),
        db_keys: 0,
        keys_scanned: 0,
        names_drawn: 0,
        big_keys_measured_whole: 0,
        keys_matched: 0,
        total_bytes: 0,
        elapsed_ms: 0,
        ..first.clone()
    };
    let mut ci2: Vec<f64> = Vec::new();
    for (_, r) in reports {
        m.db_keys += r.db_keys;
        m.keys_scanned += r.keys_scanned;
        m.names_drawn += r.names_drawn;
        m.big_keys_measured_whole += r.big_keys_measured_whole;
        // The oldest node's pass, or none if a node has none.
        m.big_keys_pass_at = match (m.big_keys_pass_at, r.big_keys_pass_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
        m.keys_matched += r.keys_matched;
        m.total_bytes += r.total_bytes;
        m.elapsed_ms = m.elapsed_ms.max(r.elapsed_ms);
        if r.mode != m.mode {
            m.mode = "mixed".into();
        }
        for p in &r.patterns {
            let i = match m.patterns.iter().position(|x| x.pattern == p.pattern) {
                Some(i) => i,
                None => {
                    m.patterns.push(PatternStats {
                        keys: 0,
                        bytes: 0,
                        bytes_ci95: 0,
                        largest_bytes: 0,
                        largest_key: String::new(),
                        types: Vec::new(),
                        encodings: Vec::new(),
                        ttl_buckets: [0; 6],
                        idle_buckets: [0; 5],
                        lfu_buckets: [0; 5],
                        ..p.clone()
                    });
                    ci2.push(0.0);
                    m.patterns.len() - 1
                }
            };
            let x = &mut m.patterns[i];
            x.keys += p.keys;
            x.bytes += p.bytes;
            ci2[i] += (p.bytes_ci95 as f64).powi(2);
            // Ties go to the smaller name, whatever order the nodes answered in.
            if x.largest_key.is_empty()
                || (p.largest_bytes, Reverse(&p.largest_key))
                    > (x.largest_bytes, Reverse(&x.largest_key))
            {
                x.largest_bytes = p.largest_bytes;
                x.largest_key = p.largest_key.clone();
            }
            add_counts(&mut x.types, &p.types);
            add_counts(&mut x.encodings, &p.encodings);
            for (a, b) in x.ttl_buckets.iter_mut().zip(p.ttl_buckets) {
                *a += b;
            }
            for (a, b) in x.idle_buckets.iter_mut().zip(p.idle_buckets) {
                *a += b;
            }
            for (a, b) in x.lfu_buckets.iter_mut().zip(p.lfu_buckets) {
                *a += b;
            }
        }
        for t in &r.bytes_by_type {
            match m.bytes_by_type.iter_mut().find(|x| x.r#type == t.r#type) {
                Some(x) => {
                    x.keys += t.keys;
                    x.bytes += t.bytes;
                }
                None => m.bytes_by_type.push(t.clone()),
            }
        }
        for b in &r.size_histogram {
            match m
                .size_histogram
                .binary_search_by_key(&b.from_bytes, |x| x.from_bytes)
            {
                Ok(i) => {
                    m.size_histogram[i].keys += b.keys;
                    m.size_histogram[i].bytes += b.bytes;
                }
                Err(i) => m.size_histogram.insert(i, *b),
            }
        }
        let sp = &mut m.size_percentiles;
        sp.p50 = sp.p50.max(r.size_percentiles.p50);
        sp.p90 = sp.p90.max(r.size_percentiles.p90);
        sp.p99 = sp.p99.max(r.size_percentiles.p99);
        sp.max = sp.max.max(r.size_percentiles.max);
        m.top_by_bytes.extend(r.top_by_bytes.iter().cloned());
        m.top_by_length.extend(r.top_by_length.iter().cloned());
        for (a, b) in m.expiring_per_hour.iter_mut().zip(&r.expiring_per_hour) {
            *a += b;
        }
        if let Some(w) = r.worst_expiry_second {
            if m.worst_expiry_second.is_none_or(|x| w.keys > x.keys) {
                m.worst_expiry_second = Some(w);
            }
        }
        for c in &r.encoding_candidates {
            match m
                .encoding_candidates
                .iter_mut()
                .find(|x| x.config == c.config)
            {
                Some(x) => {
                    x.keys += c.keys;
                    x.bytes += c.bytes;
                    x.estimated_saving += c.estimated_saving;
                    x.suggested = x.suggested.max(c.suggested);
                }
                None => m.encoding_candidates.push(c.clone()),
            }
        }
    }
    let total = m.total_bytes.max(1) as f64;
    for (p, c) in m.patterns.iter_mut().zip(&ci2) {
        p.bytes_ci95 = c.sqrt().round() as u64;
        p.share = p.bytes as f64 / total;
        p.avg_bytes = p.bytes / p.keys.max(1);
    }
    m.patterns.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| a.pattern.cmp(&b.pattern))
    });
    m.bytes_by_type.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    if reports
        .iter()
        .all(|(_, r)| r.keys_matched == 0 || !r.size_histogram.is_empty())
    {
        m.size_percentiles =
            crate::keyspace::size_percentiles(&m.size_histogram, m.size_percentiles.max);
    }
    // Ties in name order, as on each node, so the merged list does not depend on which node
    // answered first.
    m.top_by_bytes
        .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.key.cmp(&b.key)));
    m.top_by_bytes.truncate(top);
    m.top_by_length
        .sort_by(|a, b| b.length.cmp(&a.length).then_with(|| a.key.cmp(&b.key)));
    m.top_by_length.truncate(top);
    Some(m)
}

/// What the cluster rules need from one primary.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardSnapshot {
    /// `host:port`.
    pub node: String,
    /// INFO used_memory.
    pub used_memory: u64,
    /// Keys in every database.
    pub keys: u64,
    /// Accesses per second over the recent window (OPT.HOTKEYS, scaled by the sample ratio).
    pub ops_per_sec: f64,
    /// Its replicas.
    pub replicas: Vec<ReplicaState>,
    /// Slots it is migrating or importing.
    pub open_slots: Vec<OpenSlot>,
}

/// One replica as its primary's INFO replication lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaState {
    /// `ip:port`.
    pub addr: String,
    /// `online`, `wait_bgsave`, `send_bulk`...
    pub state: String,
    /// The replication offset it acknowledged.
    pub offset: u64,
    /// Bytes of replication stream it has not acknowledged.
    pub bytes_behind: u64,
    /// Seconds since its last acknowledgement.
    pub lag_seconds: u64,
}

/// Parses the `slaveN:` lines of INFO replication against its `master_repl_offset`.
pub fn parse_replicas(info: &str) -> Vec<ReplicaState> {
    let field = crate::advise::info_subfield;
    let master_offset: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains(":ip="))
        .filter_map(|l| {
            let body = l.split_once(':')?.1.trim();
            let offset: u64 = field(body, "offset")?.parse().ok()?;
            Some(ReplicaState {
                addr: format!("{}:{}", field(body, "ip")?, field(body, "port")?),
                state: field(body, "state").unwrap_or_default().to_string(),
                offset,
                bytes_behind: master_offset.saturating_sub(offset),
                lag_seconds: field(body, "lag").and_then(|v| v.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// Share above the mean at which a shard counts as skewed (`cluster-imbalance`, `hot-shard`).
pub const SKEW: f64 = 0.20;
/// Share of the cluster's accesses in one slot that makes it a `hot-slot`.
pub const HOT_SLOT_SHARE: f64 = 0.10;
/// Replication bytes not yet acknowledged that make `replica-lag` fire.
pub const LAG_BYTES: u64 = 1 << 20;
/// Seconds without acknowledgement that make `replica-lag` fire.
pub const LAG_SECONDS: u64 = 10;

fn finding(rule: &str, severity: &str, category: &str, title: String) -> Finding {
    Finding {
        rule: rule.into(),
        severity: severity.into(),
        category: category.into(),
        title,
        evidence: String::new(),
        advice: String::new(),
        fix: Vec::new(),
        effect: None,
        subjects: Vec::new(),
    }
}

/// The largest value and its shard, and how far it is above the mean (0.25 = 25% above).
/// `None` without shards.
fn skew(
    shards: &[ShardSnapshot],
    v: impl Fn(&ShardSnapshot) -> f64,
) -> Option<(&ShardSnapshot, f64, f64)> {
    let top = shards.iter().max_by(|a, b| v(a).total_cmp(&v(b)))?;
    let mean = shards.iter().map(&v).sum::<f64>() / shards.len() as f64;
    let over = if mean > 0.0 { v(top) / mean - 1.0 } else { 0.0 };
    Some((top, over, mean))
}

/// Findings about the cluster as a whole, from every primary's snapshot and the merged hot
/// keys (with slots): `cluster-imbalance`, `hot-shard`, `hot-slot`, `replica-lag`,
/// `replica-missing`.
/// `seed` is a node address for the fix commands.
pub fn cluster_findings(
    shards: &[ShardSnapshot],
    hot: Option<&HotKeysReport>,
    seed: &str,
) -> Vec<Finding> {
    let mut out = Vec::new();
    /// One "a shard is far above the mean" rule.
    struct Skewed {
        rule: &'static str,
        category: &'static str,
        measure: fn(&ShardSnapshot) -> f64,
        /// Whether the figures are large enough to mean anything (total, largest shard).
        significant: fn(f64, f64) -> bool,
        /// "shard X {verb} N% more {noun} than the mean".
        verb_noun: (&'static str, &'static str),
        evidence: &'static str,
        advice: &'static str,
    }
    let rules = [
        Skewed {
            rule: "cluster-imbalance",
            category: "keys",
            measure: |s| s.keys as f64,
            // Below a thousand keys any split looks skewed.
            significant: |total, _| total >= 1000.0,
            verb_noun: ("holds", "keys"),
            evidence: "keys per shard",
            advice: "Slots are spread evenly, so uneven keys usually come from hash tags ({...}) \
                     that put many keys in a few slots, or from slots assigned unevenly. One \
                     shard then runs out of memory first.",
        },
        Skewed {
            rule: "cluster-imbalance",
            category: "memory",
            measure: |s| s.used_memory as f64,
            // Each node has a few MB of baseline; only skew above 64 MiB means data.
            significant: |_, top| top >= f64::from(64u32 << 20),
            verb_noun: ("uses", "memory"),
            evidence: "used_memory per shard",
            advice: "The heaviest shard reaches maxmemory (and evicts or refuses writes) while \
                     the others have room. Move slots to the lighter shards, weighted by memory.",
        },
        Skewed {
            rule: "hot-shard",
            category: "traffic",
            measure: |s| s.ops_per_sec,
            significant: |total, _| total >= 100.0,
            verb_noun: ("serves", "traffic"),
            evidence: "accesses/s per shard (recent window)",
            advice: "One shard's CPU saturates first and its latency rises for every key it \
                     owns. Find its hot keys (optctl hotkeys, node column), split them, serve \
                     reads from its replicas (READONLY), or move busy slots away.",
        },
    ];
    for r in rules.iter().filter(|_| shards.len() >= 2) {
        let total: f64 = shards.iter().map(r.measure).sum();
        let Some((top, over, mean)) = skew(shards, r.measure) else {
            continue;
        };
        if !(r.significant)(total, (r.measure)(top)) || over <= SKEW {
            continue;
        }
        let (verb, noun) = r.verb_noun;
        let mut f = finding(
            r.rule,
            "warning",
            r.category,
            format!(
                "shard {} {verb} {:.0}% more {noun} than the mean",
                top.node,
                over * 100.0
            ),
        );
        f.evidence = format!(
            "{}: {}; mean {mean:.0}; threshold {:.0}% above the mean",
            r.evidence,
            shards
                .iter()
                .map(|s| format!("{} {:.0}", s.node, (r.measure)(s)))
                .collect::<Vec<_>>()
                .join(", "),
            SKEW * 100.0
        );
        f.advice = r.advice.into();
        f.fix = if r.rule == "hot-shard" {
            vec![
                format!("optctl --url redis://{} hotkeys --single-node", top.node),
                format!("redis-cli --cluster reshard {seed}"),
            ]
        } else {
            vec![
                format!("redis-cli --cluster rebalance {seed}"),
                format!("redis-cli --cluster check {seed}"),
            ]
        };
        f.subjects = vec![top.node.clone()];
        out.push(f);
    }
    if let Some(h) = hot {
        let total = h.estimated_accesses.max(1) as f64;
        let mut by_slot: Vec<(u16, u64, Vec<String>, String)> = Vec::new();
        for e in &h.entries {
            let Some(slot) = e.slot else { continue };
            let sure = e.count.saturating_sub(e.error);
            match by_slot.iter_mut().find(|x| x.0 == slot) {
                Some(x) => {
                    x.1 += sure;
                    x.2.push(e.name.clone());
                }
                None => by_slot.push((
                    slot,
                    sure,
                    vec![e.name.clone()],
                    e.node.clone().unwrap_or_default(),
                )),
            }
        }
        for (slot, count, keys, node) in by_slot {
            let share = count as f64 / total;
            if h.estimated_accesses >= 1000 && share >= HOT_SLOT_SHARE {
                let mut f = finding(
                    "hot-slot",
                    "warning",
                    "traffic",
                    format!(
                        "slot {slot} on {node} takes {:.0}% of the cluster's accesses",
                        share * 100.0
                    ),
                );
                f.evidence = format!(
                    "at least {count} of ~{} accesses ({} window) go to slot {slot}; threshold {:.0}%",
                    h.estimated_accesses,
                    h.window,
                    HOT_SLOT_SHARE * 100.0
                );
                f.advice = "A slot lives on one shard, so resharding cannot spread this load. Split \
                            the hot key into copies in other slots (key:{1..N}, read one at random), \
                            cache it in the client (CLIENT TRACKING), or read it from replicas."
                    .into();
                f.fix = vec![format!(
                    "redis-cli -h {} CLUSTER COUNTKEYSINSLOT {slot}",
                    node.rsplit_once(':').map_or(node.as_str(), |x| x.0)
                )];
                f.subjects = keys;
                out.push(f);
            }
        }
    }
    for s in shards {
        for r in &s.replicas {
            let down = r.state != "online";
            if down || r.bytes_behind > LAG_BYTES || r.lag_seconds > LAG_SECONDS {
                let mut f = finding(
                    "replica-lag",
                    if down { "critical" } else { "warning" },
                    "replication",
                    format!("replica {} of {} is behind", r.addr, s.node),
                );
                f.evidence = format!(
                    "state {}, {} bytes not acknowledged (threshold {LAG_BYTES}), last ack {} s ago \
                     (threshold {LAG_SECONDS} s)",
                    r.state, r.bytes_behind, r.lag_seconds
                );
                f.advice = "A lagging replica serves stale reads and, after a failover, loses the \
                            writes it has not received. Check its network and load; a replica that \
                            keeps resyncing needs a larger repl-backlog-size."
                    .into();
                f.fix = vec![
                    format!(
                        "redis-cli -h {} INFO replication",
                        r.addr.rsplit_once(':').map_or(r.addr.as_str(), |x| x.0)
                    ),
                    "CONFIG SET repl-backlog-size 256mb".into(),
                ];
                f.subjects = vec![r.addr.clone()];
                out.push(f);
            }
        }
    }
    out.extend(replica_missing(shards, seed));
    out.extend(slots_open(shards, seed));
    out
}

/// `slot-open`: a slot some primary is migrating or importing. A reshard in progress shows
/// it; once none runs, an open slot is one a reshard left halfway: writes to its keys get
/// ASK redirections and a later reshard or failover of those nodes can fail.
fn slots_open(shards: &[ShardSnapshot], seed: &str) -> Vec<Finding> {
    let mut slots: Vec<u16> = shards
        .iter()
        .flat_map(|s| s.open_slots.iter().map(|o| o.slot))
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots
        .into_iter()
        .map(|slot| {
            // The side that gives the slot first, then the side that takes it.
            let mut states: Vec<(bool, String)> = shards
                .iter()
                .flat_map(|s| {
                    s.open_slots.iter().filter(|o| o.slot == slot).map(|o| {
                        let text = if o.importing {
                            format!("{} imports it from {}", s.node, o.peer)
                        } else {
                            format!("{} migrates it to {}", s.node, o.peer)
                        };
                        (o.importing, text)
                    })
                })
                .collect();
            states.sort_by_key(|(importing, _)| *importing);
            let states: Vec<String> = states.into_iter().map(|(_, text)| text).collect();
            let mut f = finding(
                "slot-open",
                "warning",
                "replication",
                format!("slot {slot} is being moved (a reshard running, or one stopped halfway)"),
            );
            f.evidence = states.join("; ");
            f.advice = "While a slot is open, commands on its keys may be redirected with ASK, \
                        and multi-key commands on it fail with TRYAGAIN. If no reshard is \
                        running, it stopped halfway: finish or undo it."
                .into();
            f.fix = vec![
                format!("redis-cli --cluster check {seed}"),
                format!("redis-cli --cluster fix {seed}"),
            ];
            f.subjects = shards
                .iter()
                .filter(|s| s.open_slots.iter().any(|o| o.slot == slot))
                .map(|s| s.node.clone())
                .collect();
            f
        })
        .collect()
}

/// `replica-missing`: primaries without a replica in a cluster where another primary has one,
/// which is what a lost replica or a failover (the promoted replica left alone) looks like. A
/// cluster run without replicas by choice gets nothing.
fn replica_missing(shards: &[ShardSnapshot], seed: &str) -> Vec<Finding> {
    let most = shards.iter().map(|s| s.replicas.len()).max().unwrap_or(0);
    if most == 0 {
        return Vec::new();
    }
    let counts = shards
        .iter()
        .map(|s| format!("{} {}", s.node, s.replicas.len()))
        .collect::<Vec<_>>()
        .join(", ");
    shards
        .iter()
        .filter(|s| s.replicas.is_empty())
        .map(|s| {
            let mut f = finding(
                "replica-missing",
                "warning",
                "replication",
                format!("primary {} has no replica", s.node),
            );
            f.evidence = format!("replicas per primary: {counts}");
            f.advice = format!(
                "If this primary fails, nothing takes over its slots: they stay down until it \
                 comes back, and its keys are lost if it does not. Other primaries have up to \
                 {most}. A spare replica moves to it by itself only from a primary that keeps \
                 cluster-migration-barrier (1) others; otherwise attach a new node."
            );
            let (host, port) = s.node.rsplit_once(':').unwrap_or((s.node.as_str(), "6379"));
            f.fix = vec![format!(
                "redis-cli --cluster add-node NEW_HOST:NEW_PORT {seed} --cluster-slave \
                 --cluster-master-id $(redis-cli -h {host} -p {port} CLUSTER MYID)"
            )];
            f.subjects = vec![s.node.clone()];
            f
        })
        .collect()
}

/// A primary that did not answer optctl: its address, the slots it serves, and the error.
pub struct UnreachablePrimary {
    /// `host:port`.
    pub addr: String,
    /// How many slots CLUSTER NODES gives it.
    pub slots: u32,
    /// Why it did not answer, as optctl saw it.
    pub error: String,
}

/// `primary-unreachable`, critical, for each primary that did not answer. Every other finding
/// and merged figure leaves these nodes out, so without this rule a cluster with a primary
/// down could get a clean report (and `optctl advise --fail-on` would not fail).
/// `seed` is a node that answered, for the fix commands.
pub fn unreachable_findings(down: &[UnreachablePrimary], seed: &str) -> Vec<Finding> {
    down.iter()
        .map(|d| {
            let mut f = finding(
                "primary-unreachable",
                "critical",
                "replication",
                format!("primary {} did not answer", d.addr),
            );
            f.evidence = format!("it serves {} slots; {}", d.slots, d.error);
            f.advice = "While it is unreachable, commands on the keys of its slots fail or time \
                        out, and this report leaves its keys, memory and traffic out. With a \
                        replica, the cluster promotes it after cluster-node-timeout; without \
                        one, the node must come back (its keys are lost if it cannot)."
                .into();
            let (host, port) = d.addr.rsplit_once(':').unwrap_or((d.addr.as_str(), "6379"));
            f.fix = vec![
                format!("redis-cli -h {host} -p {port} PING"),
                format!("redis-cli --cluster check {seed}"),
            ];
            f.subjects = vec![d.addr.clone()];
            f
        })
        .collect()
}

/// `slots-uncovered`, critical, when the primaries of a CLUSTER NODES reply serve fewer than
/// all 16384 slots: commands on the keys of the others fail (CLUSTERDOWN, or the whole
/// cluster refuses them under `cluster-require-full-coverage yes`). A reshard or a
/// `CLUSTER DELSLOTS` that stopped halfway, or a primary forgotten with its slots, leaves
/// this. `seed` is a node address for the fix commands.
pub fn uncovered_slots_finding(primaries: &[ClusterNode], seed: &str) -> Option<Finding> {
    let served: Vec<(u32, u32)> = primaries
        .iter()
        .flat_map(|n| &n.slots)
        .map(|&(a, b)| (u32::from(a), u32::from(b)))
        .filter(|&(a, b)| a <= b && b < SLOTS)
        .collect();
    // Only valid ranges are left, so this does not fail.
    let covered = SlotSet::from_ranges(&served).ok()?;
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for slot in (0..SLOTS).filter(|&s| !covered.contains(s as u16)) {
        match ranges.last_mut() {
            Some(r) if r.1 + 1 == slot => r.1 = slot,
            _ => ranges.push((slot, slot)),
        }
    }
    let missing: u32 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    if missing == 0 {
        return None;
    }
    let mut shown: Vec<String> = ranges
        .iter()
        .take(8)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if ranges.len() > 8 {
        shown.push(format!("and {} more ranges", ranges.len() - 8));
    }
    let mut f = finding(
        "slots-uncovered",
        "critical",
        "replication",
        format!("{missing} of {SLOTS} slots have no primary"),
    );
    f.evidence = format!(
        "slots no primary serves (CLUSTER NODES): {}",
        shown.join(", ")
    );
    f.advice = "Commands on the keys of these slots fail, and with cluster-require-full-coverage \
                yes (the default) the whole cluster refuses commands on keys. A reshard or \
                CLUSTER DELSLOTS that stopped halfway, or a failed primary forgotten with its \
                slots, leaves this. redis-cli --cluster fix assigns them to the primaries \
                (their keys are gone if their primary is)."
        .into();
    f.fix = vec![
        format!("redis-cli --cluster check {seed}"),
        format!("redis-cli --cluster fix {seed}"),
    ];
    Some(f)
}

/// Merges the tag index summaries of every primary. Keys and (key, tag) pairs add up (a key
/// lives on one shard); a tag used on several shards counts once per shard in `tags`; the
/// largest tags add their keys by name; `digest` lists each shard's digest in node order.
pub fn merge_taginfo(reports: &[(String, TagInfoReport)], top: usize) -> Option<TagInfoReport> {
    let (_, first) = reports.first()?;
    let mut m = TagInfoReport {
        keys: 0,
        tags: 0,
        pairs: 0,
        memory_bytes: 0,
        digest: String::new(),
        tag: first.tag.clone(),
        largest: Vec::new(),
    };
    let mut digests = Vec::new();
    for (node, r) in reports {
        m.keys += r.keys;
        m.tags += r.tags;
        m.pairs += r.pairs;
        m.memory_bytes += r.memory_bytes;
        digests.push(format!("{node}={}", r.digest));
        for t in &r.largest {
            match m.largest.iter_mut().find(|x| x.tag == t.tag) {
                Some(x) => x.keys += t.keys,
                None => m.largest.push(TagSize {
                    tag: t.tag.clone(),
                    keys: t.keys,
                }),
            }
        }
    }
    m.digest = digests.join(",");
    m.largest
        .sort_by(|a, b| b.keys.cmp(&a.keys).then_with(|| a.tag.cmp(&b.tag)));
    m.largest.truncate(top);
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_alone_beside_primaries_with_replicas_is_found() {
        let shard = |node: &str, replicas: usize| ShardSnapshot {
            node: node.into(),
            used_memory: 0,
            keys: 0,
            ops_per_sec: 0.0,
            replicas: (0..replicas)
                .map(|i| ReplicaState {
                    addr: format!("10.0.1.{i}:7000"),
                    state: "online".into(),
                    offset: 0,
                    bytes_behind: 0,
                    lag_seconds: 0,
                })
                .collect(),
            open_slots: vec![],
        };
        let rules = |shards: &[ShardSnapshot]| -> Vec<(String, Vec<String>)> {
            cluster_findings(shards, None, "10.0.0.1:7001")
                .into_iter()
                .map(|f| (f.rule, f.subjects))
                .collect()
        };
        let lost = [
            shard("10.0.0.1:7001", 1),
            shard("10.0.0.2:7002", 0),
            shard("10.0.0.3:7003", 1),
        ];
        assert_eq!(
            rules(&lost),
            [(
                "replica-missing".to_string(),
                vec!["10.0.0.2:7002".to_string()]
            )]
        );
        let f = cluster_findings(&lost, None, "10.0.0.1:7001");
        assert_eq!(
            f[0].evidence,
            "replicas per primary: 10.0.0.1:7001 1, 10.0.0.2:7002 0, 10.0.0.3:7003 1"
        );
        assert!(
            f[0].fix[0]
                .contains("--cluster-master-id $(redis-cli -h 10.0.0.2 -p 7002 CLUSTER MYID)"),
            "{}",
            f[0].fix[0]
        );
        // Without replicas anywhere (a cache run so by choice), or with one each: nothing.
        assert!(rules(&[shard("10.0.0.1:7001", 0), shard("10.0.0.2:7002", 0)]).is_empty());
        assert!(rules(&[shard("10.0.0.1:7001", 1), shard("10.0.0.2:7002", 2)]).is_empty());
    }

    #[test]
    fn slots_without_a_primary_are_a_critical_finding_with_their_ranges() {
        let node = |slots: Vec<(u16, u16)>| ClusterNode {
            id: "x".repeat(40),
            host: "10.0.0.1".into(),
            port: 7001,
            failing: false,
            slots,
        };
        let whole = [node(vec![(0, 5460)]), node(vec![(5461, 16383)])];
        assert!(uncovered_slots_finding(&whole, "10.0.0.1:7001").is_none());
        let holes = [node(vec![(0, 99), (101, 5460)]), node(vec![(5461, 16379)])];
        let f = uncovered_slots_finding(&holes, "10.0.0.1:7001").unwrap();
        assert_eq!(
            (f.rule.as_str(), f.severity.as_str()),
            ("slots-uncovered", "critical")
        );
        assert_eq!(f.title, "5 of 16384 slots have no primary");
        assert!(f.evidence.ends_with(": 100, 16380-16383"), "{}", f.evidence);
        assert_eq!(f.fix[1], "redis-cli --cluster fix 10.0.0.1:7001");
        // Many holes: the first eight ranges, then how many more.
        let every_other = [node((0..16384u16).step_by(2).map(|s| (s, s)).collect())];
        let f = uncovered_slots_finding(&every_other, "10.0.0.1:7001").unwrap();
        assert_eq!(f.title, "8192 of 16384 slots have no primary");
        assert!(
            f.evidence.ends_with("15, and 8184 more ranges"),
            "{}",
            f.evidence
        );
        assert!(uncovered_slots_finding(&[], "s").is_some());
    }

    #[test]
    fn a_slot_left_open_by_a_reshard_is_one_finding_naming_both_sides() {
        let a = "aaaa 10.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460 [77->-bbbb] [78-<-cccc]";
        assert_eq!(
            open_slots(a),
            [
                OpenSlot {
                    slot: 77,
                    importing: false,
                    peer: "bbbb".into()
                },
                OpenSlot {
                    slot: 78,
                    importing: true,
                    peer: "cccc".into()
                }
            ]
        );
        let other = "aaaa 10.0.0.1:7001@17001 master - 0 0 1 connected 0-5460 [77->-bbbb]";
        assert!(open_slots(other).is_empty(), "only the myself line counts");
        let node = |name: &str, open: Vec<OpenSlot>| ShardSnapshot {
            node: name.into(),
            used_memory: 0,
            keys: 0,
            ops_per_sec: 0.0,
            replicas: vec![],
            open_slots: open,
        };
        // The importing side answered first: the evidence still starts with the giver.
        let shards = [
            node(
                "10.0.0.2:7002",
                vec![OpenSlot {
                    slot: 77,
                    importing: true,
                    peer: "10.0.0.1:7001".into(),
                }],
            ),
            node(
                "10.0.0.1:7001",
                vec![OpenSlot {
                    slot: 77,
                    importing: false,
                    peer: "10.0.0.2:7002".into(),
                }],
            ),
            node("10.0.0.3:7003", vec![]),
        ];
        let f = cluster_findings(&shards, None, "10.0.0.1:7001");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "slot-open");
        assert!(
            f[0].title.starts_with("slot 77 is being moved"),
            "{}",
            f[0].title
        );
        assert_eq!(
            f[0].evidence,
            "10.0.0.1:7001 migrates it to 10.0.0.2:7002; 10.0.0.2:7002 imports it from 10.0.0.1:7001"
        );
        assert_eq!(f[0].subjects, ["10.0.0.2:7002", "10.0.0.1:7001"]);
    }

    #[test]
    fn a_primary_that_did_not_answer_is_a_critical_finding_with_its_slots() {
        let down = [UnreachablePrimary {
            addr: "10.0.0.3:7003".into(),
            slots: 5461,
            error: "cannot reach node 10.0.0.3:7003: Connection refused".into(),
        }];
        let f = unreachable_findings(&down, "10.0.0.1:7001");
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].rule.as_str(), f[0].severity.as_str()),
            ("primary-unreachable", "critical")
        );
        assert!(f[0].title.contains("10.0.0.3:7003"), "{}", f[0].title);
        assert!(
            f[0].evidence.contains("5461 slots") && f[0].evidence.contains("Connection refused"),
            "{}",
            f[0].evidence
        );
        assert_eq!(
            f[0].fix,
            [
                "redis-cli -h 10.0.0.3 -p 7003 PING",
                "redis-cli --cluster check 10.0.0.1:7001"
            ]
        );
        assert_eq!(f[0].subjects, ["10.0.0.3:7003"]);
        assert!(unreachable_findings(&[], "10.0.0.1:7001").is_empty());
    }

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
        // The replica that is up, with its primary's id; a failing one and a primary are not.
        let text = format!(
            "{text}5f1e7c5a47a43a7e0ed1e5c1db3b5b0c9c4a7d11 127.0.0.1:30006@31006 slave,fail 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 0 2 disconnected\n"
        );
        let replicas = parse_cluster_replicas(&text, "10.0.0.9");
        assert_eq!(replicas.len(), 1, "{replicas:?}");
        assert_eq!(
            replicas[0].0.addr(),
            "cache-4:30004",
            "the announced hostname"
        );
        assert_eq!(replicas[0].1, "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca");
    }

    #[test]
    fn a_key_from_its_primary_and_its_replica_is_one_entry_with_their_sum() {
        let primary = report(
            "keys",
            1_000,
            0,
            vec![entry("page:1", 300, 0), entry("a", 200, 0)],
        );
        let replica = report(
            "keys",
            900,
            0,
            vec![entry("page:1", 500, 2), entry("b", 100, 0)],
        );
        let other = report("keys", 700, 0, vec![entry("c", 600, 0)]);
        let m = merge_hot(
            &[
                ("10.0.0.1:7000".to_string(), primary),
                ("10.0.0.1:7000".to_string(), replica),
                ("10.0.0.2:7000".to_string(), other),
            ],
            3,
        )
        .unwrap();
        let got: Vec<(&str, u64, u64, Option<&str>)> = m
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.count, e.error, e.node.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("page:1", 800, 2, Some("10.0.0.1:7000")),
                ("c", 600, 0, Some("10.0.0.2:7000")),
                ("a", 200, 0, Some("10.0.0.1:7000")),
            ]
        );
        assert_eq!(m.entries[0].reads, 800);
        assert_eq!(m.estimated_accesses, 2_600);
        assert!((m.entries[0].share - 800.0 / 2_600.0).abs() < 1e-12);
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

    fn keyspace(pattern_bytes: &[(&str, u64, u64)], top: &[(&str, u64)]) -> KeyspaceReport {
        KeyspaceReport {
            mode: "full".into(),
            db: 0,
            db_keys: pattern_bytes.iter().map(|p| p.1).sum(),
            keys_scanned: pattern_bytes.iter().map(|p| p.1).sum(),
            names_drawn: 0,
            big_keys_measured_whole: 0,
            big_keys_pass_at: None,
            keys_matched: pattern_bytes.iter().map(|p| p.1).sum(),
            total_bytes: pattern_bytes.iter().map(|p| p.2).sum(),
            elapsed_ms: 5,
            patterns: pattern_bytes
                .iter()
                .map(|&(p, keys, bytes)| PatternStats {
                    pattern: p.into(),
                    keys,
                    bytes,
                    bytes_ci95: 30,
                    share: 0.0,
                    avg_bytes: 0,
                    largest_key: format!("{p}-big"),
                    largest_bytes: bytes / 2,
                    types: vec![("string".into(), keys)],
                    encodings: vec![],
                    ttl_buckets: [keys, 0, 0, 0, 0, 0],
                    idle_buckets: [keys, 0, 0, 0, 0],
                    lfu_buckets: [0, 0, keys, 0, 0],
                })
                .collect(),
            bytes_by_type: vec![],
            size_percentiles: Default::default(),
            size_histogram: vec![],
            top_by_bytes: top
                .iter()
                .map(|&(k, b)| crate::report::KeyEntry {
                    key: k.into(),
                    r#type: "string".into(),
                    bytes: b,
                    length: b,
                })
                .collect(),
            top_by_length: vec![],
            expiring_per_hour: vec![1; 24],
            worst_expiry_second: None,
            encoding_candidates: vec![],
        }
    }

    #[test]
    fn a_cluster_report_s_big_key_pass_is_its_oldest_node_s_or_none() {
        let at = |t: Option<u64>, whole: u64| KeyspaceReport {
            big_keys_pass_at: t,
            big_keys_measured_whole: whole,
            ..keyspace(&[("user:*", 1, 10)], &[])
        };
        let merged = |a, b| merge_keyspace(&[("a".into(), a), ("b".into(), b)], 2).unwrap();
        let m = merged(at(Some(100), 2), at(Some(50), 3));
        assert_eq!(
            (m.big_keys_pass_at, m.big_keys_measured_whole),
            (Some(50), 5)
        );
        assert_eq!(merged(at(Some(100), 1), at(None, 0)).big_keys_pass_at, None);
        assert_eq!(merged(at(None, 0), at(Some(100), 1)).big_keys_pass_at, None);
    }

    #[test]
    fn memory_by_pattern_adds_up_across_shards() {
        let a = keyspace(
            &[("user:*", 10, 1000), ("s:*", 5, 100)],
            &[("k1", 500), ("k2", 10)],
        );
        let b = keyspace(&[("user:*", 20, 3000), ("big:*", 1, 5000)], &[("k3", 900)]);
        let m = merge_keyspace(&[("a".into(), a), ("b".into(), b)], 2).unwrap();
        assert_eq!((m.db_keys, m.total_bytes), (36, 9100));
        let p: Vec<(&str, u64, u64)> = m
            .patterns
            .iter()
            .map(|p| (p.pattern.as_str(), p.keys, p.bytes))
            .collect();
        assert_eq!(
            p,
            [("big:*", 1, 5000), ("user:*", 30, 4000), ("s:*", 5, 100)]
        );
        let user = &m.patterns[1];
        assert_eq!(user.bytes_ci95, 42); // sqrt(30^2 + 30^2)
        assert_eq!(user.largest_key, "user:*-big");
        assert_eq!(user.largest_bytes, 1500);
        assert_eq!(user.types, vec![("string".to_string(), 30)]);
        assert_eq!(user.ttl_buckets[0], 30);
        assert_eq!(user.avg_bytes, 133);
        assert!((user.share - 4000.0 / 9100.0).abs() < 1e-12);
        let top: Vec<&str> = m.top_by_bytes.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(top, ["k3", "k1"]);
        assert_eq!(m.expiring_per_hour, vec![2; 24]);
    }

    /// The FULL report of an aggregator fed keys of these sizes.
    fn sized(sizes: &[u64]) -> KeyspaceReport {
        use crate::keyspace::{Aggregator, KeyFacts, Mode, Thresholds};
        let mut agg = Aggregator::new(b":", 5, Thresholds::default());
        for (i, &bytes) in sizes.iter().enumerate() {
            agg.add(&KeyFacts {
                name: format!("k:{i}").as_bytes(),
                type_name: "string",
                encoding: "raw",
                bytes,
                length: bytes,
                ttl_ms: None,
                idle_s: None,
                lfu: None,
                now_ms: 0,
                integer_members: None,
            });
        }
        let n = sizes.len() as u64;
        agg.finish(Mode::Full, 0, n, n, 1)
    }

    #[test]
    fn size_distributions_add_up_and_give_the_cluster_its_percentiles() {
        // Shard a holds the small keys, shard b the big ones: neither shard's percentiles are
        // the cluster's.
        let small: Vec<u64> = (0..900).map(|i| 50 + i % 40).collect();
        let big: Vec<u64> = (0..100).map(|i| 10_000 + 1_000 * i).collect();
        let all: Vec<u64> = small.iter().chain(&big).copied().collect();
        let m =
            merge_keyspace(&[("a".into(), sized(&small)), ("b".into(), sized(&big))], 5).unwrap();
        let whole = sized(&all);
        assert_eq!(m.size_histogram, whole.size_histogram);
        assert_eq!(m.size_percentiles, whole.size_percentiles);
        assert!(m.size_percentiles.p50 < 100, "{:?}", m.size_percentiles);
        assert!(m.size_percentiles.p99 >= 90_000, "{:?}", m.size_percentiles);
        assert_eq!(
            m.size_histogram
                .iter()
                .map(|b| (b.keys, b.bytes))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
            (1000, all.iter().sum())
        );
        // A node without a distribution (an older module): the percentiles stay upper bounds.
        let mut old = sized(&small);
        old.size_histogram.clear();
        let m = merge_keyspace(&[("a".into(), old), ("b".into(), sized(&big))], 5).unwrap();
        assert_eq!(m.size_percentiles.p50, sized(&big).size_percentiles.p50);
    }

    fn shard(node: &str, keys: u64, mem: u64, ops: f64) -> ShardSnapshot {
        ShardSnapshot {
            node: node.into(),
            used_memory: mem,
            keys,
            ops_per_sec: ops,
            replicas: vec![],
            open_slots: vec![],
        }
    }

    #[test]
    fn skewed_keys_memory_and_traffic_are_found_balanced_ones_are_not() {
        let even = [
            shard("a:1", 1000, 100 << 20, 500.0),
            shard("b:2", 1100, 105 << 20, 550.0),
        ];
        assert!(cluster_findings(&even, None, "a:1").is_empty());
        let skewed = [
            shard("a:1", 1000, 100 << 20, 100.0),
            shard("b:2", 1000, 100 << 20, 100.0),
            shard("c:3", 3000, 300 << 20, 900.0),
        ];
        let f = cluster_findings(&skewed, None, "a:1");
        let rules: Vec<(&str, &str)> = f
            .iter()
            .map(|f| (f.rule.as_str(), f.category.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                ("cluster-imbalance", "keys"),
                ("cluster-imbalance", "memory"),
                ("hot-shard", "traffic")
            ]
        );
        assert!(f.iter().all(|f| f.subjects == ["c:3"]));
        assert!(f[0].evidence.contains("c:3 3000"), "{}", f[0].evidence);
        // Small clusters and idle ones say nothing.
        let tiny = [
            shard("a:1", 10, 1 << 20, 1.0),
            shard("b:2", 300, 3 << 20, 20.0),
        ];
        assert!(cluster_findings(&tiny, None, "a:1").is_empty());
    }

    #[test]
    fn a_slot_with_a_tenth_of_the_traffic_is_hot() {
        let mut h = report(
            "keys",
            10_000,
            0,
            vec![entry("hot", 1500, 100), entry("warm", 500, 0)],
        );
        h.entries[0].slot = Some(42);
        h.entries[0].node = Some("a:1".into());
        h.entries[1].slot = Some(43);
        let f = cluster_findings(&[], Some(&h), "a:1");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "hot-slot");
        assert_eq!(f[0].subjects, ["hot"]);
        assert!(f[0].evidence.contains("at least 1400"));
    }

    #[test]
    fn replicas_behind_or_down_are_reported() {
        let info = "role:master\r\nconnected_slaves:2\r\n\
slave0:ip=10.0.0.2,port=7001,state=online,offset=1000,lag=0\r\n\
slave1:ip=10.0.0.3,port=7002,state=online,offset=10,lag=30\r\n\
master_repl_offset:3000000\r\n";
        let r = parse_replicas(info);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].addr, "10.0.0.2:7001");
        assert_eq!(r[0].bytes_behind, 2_999_000);
        assert_eq!((r[0].offset, r[1].offset), (1000, 10));
        let mut s = shard("a:1", 0, 0, 0.0);
        s.replicas = r;
        s.replicas.push(ReplicaState {
            addr: "10.0.0.4:7003".into(),
            state: "wait_bgsave".into(),
            offset: 0,
            bytes_behind: 0,
            lag_seconds: 0,
        });
        let f = cluster_findings(&[s], None, "a:1");
        let sev: Vec<&str> = f.iter().map(|f| f.severity.as_str()).collect();
        assert_eq!(sev, ["warning", "warning", "critical"]);
        let ok = parse_replicas(
            "slave0:ip=h,port=1,state=online,offset=5,lag=1\r\nmaster_repl_offset:5\r\n",
        );
        let mut s = shard("a:1", 0, 0, 0.0);
        s.replicas = ok;
        assert!(cluster_findings(&[s], None, "a:1").is_empty());
    }

    #[test]
    fn tag_index_sizes_add_up_across_shards() {
        let r = |keys, tags: &[(&str, u64)]| TagInfoReport {
            keys,
            tags: tags.len() as u64,
            pairs: keys * 2,
            memory_bytes: keys * 80,
            digest: format!("d{keys}"),
            tag: None,
            largest: tags
                .iter()
                .map(|&(t, k)| TagSize {
                    tag: t.into(),
                    keys: k,
                })
                .collect(),
        };
        let m = merge_taginfo(
            &[
                ("a".into(), r(10, &[("site", 10), ("u:1", 3)])),
                ("b".into(), r(5, &[("site", 5)])),
            ],
            10,
        )
        .unwrap();
        assert_eq!((m.keys, m.pairs, m.memory_bytes), (15, 30, 1200));
        assert_eq!(m.largest[0].tag, "site");
        assert_eq!(m.largest[0].keys, 15);
        assert_eq!(m.digest, "a=d10,b=d5");
    }

    #[test]
    fn importing_slots_come_from_the_myself_line() {
        let text = "\
a1 127.0.0.1:7101@17101 myself,master - 0 0 1 connected 0-5460 [16023-<-c3] [99->-b2]
b2 127.0.0.1:7102@17102 master - 0 0 2 connected 5461-10922 [7-<-a1]
c3 127.0.0.1:7103@17103 master - 0 0 3 connected 10923-16383 [16023->-a1]
";
        assert_eq!(importing_slots(text), [16023]);
        assert!(importing_slots("").is_empty());
        assert!(importing_slots("x y myself,master").is_empty());
    }

    #[test]
    fn moving_slots_come_from_the_myself_line() {
        let line = |myself: &str, other: &str| {
            format!(
                "a1 127.0.0.1:7101@17101 myself,master - 0 0 1 connected 0-5460{myself}\n\
                 b2 127.0.0.1:7102@17102 master - 0 0 2 connected 5461-10922{other}\n"
            )
        };
        assert!(moving_slots(&line(" [16023-<-c3]", "")));
        assert!(moving_slots(&line(" [99->-b2]", "")));
        // Another node's state is not this node's.
        assert!(!moving_slots(&line("", " [7-<-a1]")));
        assert!(!moving_slots(&line("", "")));
        assert!(!moving_slots(""));
    }

    #[test]
    fn slot_sets_hold_their_ranges_and_refuse_bad_ones() {
        let set = SlotSet::from_ranges(&[(0, 0), (100, 163), (16383, 16383)]).unwrap();
        assert_eq!(set.len(), 66);
        assert!(set.contains(0) && set.contains(100) && set.contains(163));
        assert!(set.contains(16383) && !set.contains(99) && !set.contains(164));
        assert!(set.holds_key(b"{a}x") == set.contains(key_slot(b"a")));
        assert!(SlotSet::from_ranges(&[]).unwrap().is_empty());
        assert!(SlotSet::from_ranges(&[(5, 4)]).is_err());
        assert!(SlotSet::from_ranges(&[(0, 16384)]).is_err());
    }

    #[test]
    fn atomic_slot_migration_comes_with_redis_8_4_and_valkey_9() {
        use AtomicSlotMigration::*;
        assert_eq!(atomic_slot_migration("redis 8.6.3"), Some(Redis));
        assert_eq!(atomic_slot_migration("redis 8.4.0"), Some(Redis));
        assert_eq!(atomic_slot_migration("redis 10.0"), Some(Redis));
        assert_eq!(atomic_slot_migration("redis 8.2.1"), None);
        assert_eq!(atomic_slot_migration("redis 7.0.15"), None);
        assert_eq!(atomic_slot_migration("valkey 9.1.2"), Some(Valkey));
        assert_eq!(atomic_slot_migration("valkey 8.1.1"), None);
        assert_eq!(atomic_slot_migration("keydb 9.0"), None);
        assert_eq!(atomic_slot_migration("redis x"), None);
        assert_eq!(atomic_slot_migration(""), None);
    }
}
