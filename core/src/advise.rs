//! The rules behind `OPT.ADVISE`: pure functions over a snapshot of the server.
//!
//! The module gathers the snapshot (INFO, CONFIG, SLOWLOG, ACL, `/proc` and `/sys`, the
//! hot-key tracker, a keyspace sample); each rule reads it and either fires a finding with its
//! evidence and exact fix, passes, or is skipped with the reason (a signal this server does not
//! give, CONFIG renamed...). Rule ids are part of the interface: keep them stable.

use std::collections::HashMap;

use crate::args::Args;
use crate::report::{AdviceReport, Finding, HotEntry, HotKeysReport, KeyspaceReport};

/// Everything the rules look at. Missing parts are `None`, and rules that need them are
/// skipped.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `INFO everything`, field -> value.
    pub info: HashMap<String, String>,
    /// `CONFIG GET *`, or None when CONFIG is unavailable.
    pub config: Option<HashMap<String, String>>,
    /// `SLOWLOG GET`: (command name, microseconds).
    pub slowlog: Option<Vec<(String, u64)>>,
    /// `COMMANDLOG GET 32 large-reply` (Valkey 8.1+): (command name, reply bytes); None where
    /// the server has no COMMANDLOG.
    pub large_replies: Option<Vec<(String, u64)>>,
    /// The `ACL LIST` line of the default user.
    pub default_user: Option<String>,
    /// Total system memory, bytes (`/proc/meminfo`).
    pub system_memory: Option<u64>,
    /// `/sys/kernel/mm/transparent_hugepage/enabled`.
    pub thp: Option<String>,
    /// `/proc/sys/vm/overcommit_memory`.
    pub overcommit_memory: Option<i64>,
    /// Bytes of the server's memory in swap (`VmSwap` of `/proc/self/status`, read inside the
    /// server).
    pub swapped_bytes: Option<u64>,
    /// Hot keys, all accesses (total window).
    pub hotkeys: Option<HotKeysReport>,
    /// Hot keys ranked by misses (total window).
    pub hot_misses: Option<HotKeysReport>,
    /// Hot keys, all accesses, over the recent window (`opt.hotkeys-window-seconds`): what is
    /// hot now, which a server's long history can hide in the total window.
    pub hotkeys_recent: Option<HotKeysReport>,
    /// Hot keys ranked by misses, over the recent window.
    pub hot_misses_recent: Option<HotKeysReport>,
    /// A keyspace profile (samples or full).
    pub keyspace: Option<KeyspaceReport>,
    /// Clients idle for more than 5 minutes (`CLIENT LIST`), if known.
    pub idle_clients: Option<u64>,
    /// The largest output buffer of a pub/sub client, bytes (`CLIENT LIST` omem).
    pub pubsub_max_omem: Option<u64>,
    /// Hot keys whose LFU counter is saturated (255), under an LFU policy.
    pub lfu_saturated: Option<u64>,
}

/// Parses `INFO` text into field -> value.
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The value of `name` in an INFO value made of `name=value` pairs separated by commas
/// (`db0:keys=1,expires=0`, `cmdstat_get:calls=2,usec=3`, `slave0:ip=...,port=...`).
pub fn info_subfield<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value
        .split(',')
        .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name))
        .map(|(_, v)| v)
}

/// The `VmSwap` line of a `/proc/<pid>/status` text, in bytes.
pub fn vm_swap_bytes(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSwap:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The error replies of INFO errorstats (Redis 6.2+) by code, most frequent first (ties by
/// code). A script whose error text starts with a variable makes a code of each error, so a
/// caller that shows them bounds the list.
pub fn error_counts(info: &HashMap<String, String>) -> Vec<(&str, u64)> {
    let mut counts: Vec<(&str, u64)> = info
        .iter()
        .filter_map(|(k, v)| {
            let code = k.strip_prefix("errorstat_")?;
            let n = info_subfield(v, "count")?.parse().ok()?;
            Some((code, n))
        })
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    counts
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Should be fixed.
    Warning,
    /// Fix now.
    Critical,
}

impl Severity {
    /// The word in the reply.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    fn points(self) -> u64 {
        match self {
            Severity::Info => 2,
            Severity::Warning => 8,
            Severity::Critical => 20,
        }
    }
}

/// Tunable thresholds (module configs).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A key with more than this share of traffic is hot (`opt.advise-hot-key-percent`).
    pub hot_key_percent: f64,
    /// Strings above this many bytes are big keys (`opt.advise-big-key-bytes`).
    pub big_string_bytes: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            hot_key_percent: 20.0,
            big_string_bytes: 100 * 1024,
        }
    }
}

/// What a rule concluded.
pub enum Outcome {
    /// Nothing to report.
    Pass,
    /// A finding (severity, title, evidence, advice, fix, effect, subjects).
    Fire(Fired),
    /// Not evaluated, and why.
    Skip(String),
}

/// The rule-specific part of a finding.
pub struct Fired {
    severity: Severity,
    title: String,
    evidence: String,
    advice: String,
    fix: Vec<String>,
    effect: Option<String>,
    subjects: Vec<String>,
}

fn fire(
    severity: Severity,
    title: impl Into<String>,
    evidence: impl Into<String>,
    advice: impl Into<String>,
    fix: &[&str],
) -> Outcome {
    Outcome::Fire(Fired {
        severity,
        title: title.into(),
        evidence: evidence.into(),
        advice: advice.into(),
        fix: fix.iter().map(|s| s.to_string()).collect(),
        effect: None,
        subjects: Vec::new(),
    })
}

fn with(o: Outcome, effect: Option<String>, subjects: Vec<String>) -> Outcome {
    match o {
        Outcome::Fire(mut f) => {
            f.effect = effect;
            f.subjects = subjects;
            Outcome::Fire(f)
        }
        other => other,
    }
}

/// One rule.
pub struct Rule {
    /// Stable id.
    pub id: &'static str,
    /// Category.
    pub category: &'static str,
    /// The check.
    pub check: fn(&Snapshot, &Thresholds) -> Outcome,
}

fn num(s: &Snapshot, field: &str) -> Option<f64> {
    s.info
        .get(field)
        .and_then(|v| v.trim_end_matches('%').parse().ok())
}

fn cfg<'a>(s: &'a Snapshot, name: &str) -> Result<&'a str, String> {
    match &s.config {
        None => Err("CONFIG is not available (renamed or not allowed)".into()),
        Some(c) => c
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("config {name} not reported by this server")),
    }
}

/// A numeric INFO field, or the reason a rule that needs it is skipped.
fn info_num(s: &Snapshot, field: &str) -> Result<f64, String> {
    num(s, field).ok_or_else(|| format!("INFO has no {field} on this server"))
}

macro_rules! try_skip {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(why) => return Outcome::Skip(why),
        }
    };
}

fn mb(b: f64) -> String {
    format!("{:.1} MB", b / 1e6)
}

fn db_keys(s: &Snapshot) -> (u64, u64, usize) {
    // db0:keys=1,expires=0,avg_ttl=0
    let mut keys = 0;
    let mut expires = 0;
    let mut dbs = 0;
    for (k, v) in &s.info {
        if k.starts_with("db") && k[2..].parse::<u32>().is_ok() {
            dbs += 1;
            for part in v.split(',') {
                if let Some(n) = part.strip_prefix("keys=") {
                    keys += n.parse::<u64>().unwrap_or(0);
                }
                if let Some(n) = part.strip_prefix("expires=") {
                    expires += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    (keys, expires, dbs)
}

fn maxmemory_unset(s: &Snapshot, _: &Thresholds) -> Outcome {
    let max = try_skip!(info_num(s, "maxmemory"));
    if max > 0.0 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "No memory limit: the cache can grow until the machine runs out of memory",
        "maxmemory 0 (no limit)",
        "Set maxmemory below the machine's memory, leaving room for the fork of BGSAVE, and pick an eviction policy so that Redis evicts instead of being killed.",
        &["CONFIG SET maxmemory 4gb", "CONFIG SET maxmemory-policy allkeys-lfu", "redis.conf: maxmemory 4gb"],
    )
}

fn noeviction_on_cache(s: &Snapshot, _: &Thresholds) -> Outcome {
    let policy = try_skip!(s
        .info
        .get("maxmemory_policy")
        .cloned()
        .ok_or("INFO has no maxmemory_policy".to_string()));
    let (keys, expires, _) = db_keys(s);
    if policy != "noeviction" || keys == 0 || (expires as f64) < 0.5 * keys as f64 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "A cache with the noeviction policy: writes fail with OOM when memory is full",
        format!("maxmemory-policy noeviction; {expires} of {keys} keys have a TTL (cache-like, threshold 50%)"),
        "A cache should evict: use an LFU or LRU policy so that cold keys make room instead of writes failing.",
        &["CONFIG SET maxmemory-policy allkeys-lfu"],
    )
}

fn volatile_policy_without_ttl(s: &Snapshot, _: &Thresholds) -> Outcome {
    let policy = try_skip!(s
        .info
        .get("maxmemory_policy")
        .cloned()
        .ok_or("INFO has no maxmemory_policy".to_string()));
    let (keys, expires, _) = db_keys(s);
    if !policy.starts_with("volatile") || keys == 0 || expires as f64 >= 0.1 * keys as f64 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "A volatile-* eviction policy, but few keys have a TTL: little can be evicted",
        format!("maxmemory-policy {policy}; only {expires} of {keys} keys have a TTL (threshold 10%)"),
        "volatile policies only evict keys with a TTL; with few of them Redis reaches OOM. Use an allkeys policy or set TTLs.",
        &["CONFIG SET maxmemory-policy allkeys-lfu"],
    )
}

fn memory_near_limit(s: &Snapshot, _: &Thresholds) -> Outcome {
    let max = try_skip!(info_num(s, "maxmemory"));
    let used = try_skip!(info_num(s, "used_memory"));
    if max <= 0.0 || used / max <= 0.9 {
        return Outcome::Pass;
    }
    fire(
        Severity::Critical,
        "Memory use is above 90% of maxmemory",
        format!("used_memory {} of maxmemory {} ({:.0}%, threshold 90%)", mb(used), mb(max), used / max * 100.0),
        "Close to the limit Redis evicts constantly (or refuses writes under noeviction). Raise maxmemory, shorten TTLs, or find what grew with OPT.KEYSPACE.",
        &["OPT.KEYSPACE", "CONFIG SET maxmemory <larger>"],
    )
}

fn evictions_occurring(s: &Snapshot, _: &Thresholds) -> Outcome {
    let ev = try_skip!(info_num(s, "evicted_keys"));
    let up = num(s, "uptime_in_seconds").unwrap_or(1.0).max(1.0);
    if ev <= 0.0 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "Keys are being evicted",
        format!("evicted_keys {ev:.0} since start ({:.2}/s on average, threshold 0)", ev / up),
        "Evictions mean the working set does not fit. If the hit ratio suffers, add memory, or make values smaller (OPT.KEYSPACE shows where memory goes).",
        &["INFO stats", "OPT.KEYSPACE"],
    )
}

fn fork_headroom_low(s: &Snapshot, _: &Thresholds) -> Outcome {
    let max = try_skip!(info_num(s, "maxmemory"));
    let total = try_skip!(s
        .system_memory
        .ok_or("system memory unknown (/proc/meminfo)".to_string())) as f64;
    if max <= 0.0 || max <= 0.75 * total {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "maxmemory leaves little room for BGSAVE/AOF-rewrite forks",
        format!("maxmemory {} is {:.0}% of system memory {} (threshold 75%)", mb(max), max / total * 100.0, mb(total)),
        "A fork duplicates pages that change while it runs; with little headroom the OOM killer may end Redis. Keep maxmemory at most 75% of RAM.",
        &["CONFIG SET maxmemory <75% of RAM>"],
    )
}

fn fragmentation_high(s: &Snapshot, _: &Thresholds) -> Outcome {
    let ratio = try_skip!(info_num(s, "mem_fragmentation_ratio"));
    let bytes = num(s, "mem_fragmentation_bytes").unwrap_or(0.0);
    // A small instance's RSS is mostly the process itself, not fragmentation: below 64 MB of
    // data the ratio says nothing (Redis' MEMORY DOCTOR ignores small instances too).
    let used = num(s, "used_memory").unwrap_or(0.0);
    if ratio <= 1.4 || bytes <= 10e6 || used < 64e6 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "High memory fragmentation",
        format!(
            "mem_fragmentation_ratio {ratio:.2} (threshold 1.4), {} wasted (threshold 10 MB)",
            mb(bytes)
        ),
        "RSS is much larger than the data. Active defragmentation reclaims it without a restart.",
        &["CONFIG SET activedefrag yes"],
    )
}

fn allocator_fragmentation(s: &Snapshot, _: &Thresholds) -> Outcome {
    let ratio = try_skip!(info_num(s, "allocator_frag_ratio"));
    let bytes = num(s, "allocator_frag_bytes").unwrap_or(0.0);
    if ratio <= 1.1 || bytes <= 10e6 {
        return Outcome::Pass;
    }
    with(
        fire(
            Severity::Info,
            "Allocator fragmentation",
            format!("allocator_frag_ratio {ratio:.2} (threshold 1.1), {} (threshold 10 MB)", mb(bytes)),
            "jemalloc holds partly used pages; active defragmentation moves values to compact them.",
            &["CONFIG SET activedefrag yes"],
        ),
        Some(format!("up to {} reclaimed", mb(bytes))),
        Vec::new(),
    )
}

fn rss_peak(s: &Snapshot, _: &Thresholds) -> Outcome {
    let peak = try_skip!(info_num(s, "used_memory_peak"));
    let used = try_skip!(info_num(s, "used_memory")).max(1.0);
    if peak / used <= 1.5 || peak < 10e6 {
        return Outcome::Pass;
    }
    fire(
        Severity::Info,
        "Memory peaked far above current use",
        format!("used_memory_peak {} is {:.1}x used_memory {} (threshold 1.5x)", mb(peak), peak / used, mb(used)),
        "A burst (big keys, a mass import, client buffers) once needed much more memory; size maxmemory and the machine for that peak, or find its cause.",
        &["MEMORY STATS"],
    )
}

fn lfu_recommended(s: &Snapshot, _: &Thresholds) -> Outcome {
    let policy = try_skip!(s
        .info
        .get("maxmemory_policy")
        .cloned()
        .ok_or("INFO has no maxmemory_policy".to_string()));
    let hot = try_skip!(s.hotkeys.as_ref().ok_or("no hot-key data".to_string()));
    if !(policy.contains("lru") || policy.contains("random")) || hot.sampled_accesses < 1000 {
        return Outcome::Pass;
    }
    let top: f64 = hot.entries.iter().take(10).map(|e| e.share).sum();
    if top < 0.5 {
        return Outcome::Pass;
    }
    fire(
        Severity::Info,
        "Skewed traffic under an LRU/random policy: LFU keeps the hot set better",
        format!("maxmemory-policy {policy}; the top 10 keys take {:.0}% of accesses (threshold 50%)", top * 100.0),
        "With a few very hot keys, LFU evicts by frequency and keeps them even after a scan touches many cold keys.",
        &["CONFIG SET maxmemory-policy allkeys-lfu"],
    )
}

fn expired_stale_high(s: &Snapshot, _: &Thresholds) -> Outcome {
    let perc = try_skip!(info_num(s, "expired_stale_perc"));
    if perc <= 10.0 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "Many expired keys still hold memory",
        format!("expired_stale_perc {perc:.1}% (threshold 10%)"),
        "The active expiry cycle does not keep up; give it more effort so expired keys free their memory sooner.",
        &["CONFIG SET active-expire-effort 3"],
    )
}

fn big_key(s: &Snapshot, t: &Thresholds) -> Outcome {
    let ks = try_skip!(s
        .keyspace
        .as_ref()
        .ok_or("no keyspace profile (OPT.ADVISE SAMPLES 0)".to_string()));
    let big: Vec<&crate::report::KeyEntry> = ks
        .top_by_bytes
        .iter()
        .filter(|k| {
            if k.r#type == "string" {
                k.bytes > t.big_string_bytes
            } else {
                k.bytes > 1024 * 1024
            }
        })
        .collect();
    if big.is_empty() {
        // A sample says nothing of a few big keys that it did not measure, unless a pass over
        // every key found them (and the sample measured them whole).
        if ks.mode == "samples" && ks.big_keys_pass_at.is_none() {
            return Outcome::Skip(
                "the keyspace profile is a sample, and no pass over every key has found the big \
                 keys yet (OPT.KEYSPACE FULL once, or opt.keyspace-big-key-watch): a few big \
                 keys can escape a sample"
                    .into(),
            );
        }
        return Outcome::Pass;
    }
    let list: Vec<String> = big
        .iter()
        .map(|k| format!("{} ({} {} B)", k.key, k.r#type, k.bytes))
        .collect();
    with(
        fire(
            Severity::Warning,
            "Big keys",
            format!("{} (thresholds: strings {} B, collections 1 MB)", list.join(", "), t.big_string_bytes),
            "Big keys block the server while they are read, written, deleted or migrated, and concentrate traffic on one shard. Split them, or compress the values.",
            &["UNLINK <key>   (deletes without blocking)", "redis.conf: lazyfree-lazy-user-del yes"],
        ),
        None,
        big.iter().map(|k| k.key.clone()).collect(),
    )
}

fn lazyfree_off(s: &Snapshot, t: &Thresholds) -> Outcome {
    let ks = try_skip!(s.keyspace.as_ref().ok_or("no keyspace profile".to_string()));
    let evict = try_skip!(cfg(s, "lazyfree-lazy-eviction"));
    let expire = try_skip!(cfg(s, "lazyfree-lazy-expire"));
    let big = ks.top_by_bytes.iter().any(|k| k.bytes > t.big_string_bytes);
    if !big || (evict == "yes" && expire == "yes") {
        return Outcome::Pass;
    }
    fire(
        Severity::Info,
        "Big keys are freed on the main thread",
        format!("lazyfree-lazy-eviction {evict}, lazyfree-lazy-expire {expire}; keys above {} B exist", t.big_string_bytes),
        "Freeing a big key when it expires or is evicted blocks the server; lazy freeing moves that work to a background thread.",
        &["CONFIG SET lazyfree-lazy-eviction yes", "CONFIG SET lazyfree-lazy-expire yes", "CONFIG SET lazyfree-lazy-server-del yes"],
    )
}

fn keys_without_ttl(s: &Snapshot, _: &Thresholds) -> Outcome {
    let ks = try_skip!(s.keyspace.as_ref().ok_or("no keyspace profile".to_string()));
    let worst: Vec<&crate::report::PatternStats> = ks
        .patterns
        .iter()
        .filter(|p| {
            p.share >= 0.10 && p.keys >= 100 && p.ttl_buckets[0] as f64 >= 0.9 * p.keys as f64
        })
        .collect();
    if worst.is_empty() {
        return Outcome::Pass;
    }
    let list: Vec<String> = worst
        .iter()
        .map(|p| {
            format!(
                "{} ({:.0}% of memory, {} keys)",
                p.pattern,
                p.share * 100.0,
                p.keys
            )
        })
        .collect();
    with(
        fire(
            Severity::Info,
            "Large key patterns without TTLs",
            format!("{} (threshold: >= 10% of memory, >= 90% of keys without TTL)", list.join("; ")),
            "Cached data without a TTL stays forever unless evicted; give these patterns a TTL where they are caches.",
            &["EXPIRE <key> <seconds>   (or SET ... EX <seconds> when writing)"],
        ),
        None,
        worst.iter().map(|p| p.pattern.clone()).collect(),
    )
}

/// The keys of a pattern that were not read lately, and their bytes (the pattern's average
/// size times their number): idle for a week or more, or under an LFU policy with a counter
/// decayed below a new key's 5. None if the server gave neither idle times nor counters.
fn cold_keys(p: &crate::report::PatternStats) -> Option<(u64, u64, &'static str)> {
    let (cold, known, what) = if p.idle_buckets.iter().any(|&n| n > 0) {
        (
            p.idle_buckets[4],
            p.idle_buckets.iter().sum::<u64>(),
            "not read for a week or more",
        )
    } else if p.lfu_buckets.iter().any(|&n| n > 0) {
        (
            p.lfu_buckets[0],
            p.lfu_buckets.iter().sum::<u64>(),
            "LFU counter decayed below 5 (not read lately)",
        )
    } else {
        return None;
    };
    // The buckets count the keys measured (extrapolated), which may be fewer than `keys`.
    let cold_keys = (cold as f64 / known.max(1) as f64 * p.keys as f64).round() as u64;
    Some((cold_keys, cold_keys.saturating_mul(p.avg_bytes), what))
}

fn cold_memory(s: &Snapshot, _: &Thresholds) -> Outcome {
    let ks = try_skip!(s.keyspace.as_ref().ok_or("no keyspace profile".to_string()));
    let total = ks.total_bytes.max(1) as f64;
    let mut cold: Vec<(&crate::report::PatternStats, u64, u64, &str)> = ks
        .patterns
        .iter()
        .filter_map(|p| cold_keys(p).map(|(k, b, what)| (p, k, b, what)))
        .filter(|&(p, k, b, _)| {
            k >= 100 && b as f64 >= 0.05 * total && k as f64 >= 0.5 * p.keys as f64
        })
        .collect();
    if cold.is_empty() {
        let known = ks.patterns.iter().any(|p| cold_keys(p).is_some());
        return if known {
            Outcome::Pass
        } else {
            Outcome::Skip("the keyspace profile has no idle times or LFU counters".into())
        };
    }
    cold.sort_by_key(|&(_, _, b, _)| std::cmp::Reverse(b));
    let bytes: u64 = cold.iter().map(|c| c.2).sum();
    let list: Vec<String> = cold
        .iter()
        .map(|(p, k, b, what)| {
            format!(
                "{}: {k} of {} keys {what}, about {b} B ({:.0}% of memory)",
                p.pattern,
                p.keys,
                *b as f64 / total * 100.0
            )
        })
        .collect();
    with(
        fire(
            Severity::Info,
            "Memory held by keys nobody reads",
            format!("{} (threshold: >= 5% of memory, >= half of the pattern's keys)", list.join("; ")),
            "Most keys of these patterns are not read: a TTL on write would free them, or eviction under an LRU or LFU policy takes them first once memory is full.",
            &[
                "SET <key> <value> EX <seconds>   (expire what is not read again)",
                "CONFIG SET maxmemory-policy allkeys-lru",
            ],
        ),
        Some(format!("about {bytes} B could be freed")),
        cold.iter().map(|c| c.0.pattern.clone()).collect(),
    )
}

fn expiry_clustered(s: &Snapshot, _: &Thresholds) -> Outcome {
    let ks = try_skip!(s.keyspace.as_ref().ok_or("no keyspace profile".to_string()));
    match ks.worst_expiry_second {
        Some(w) if w.keys >= 1000 => fire(
            Severity::Warning,
            "Many keys expire in the same second",
            format!(
                "{} keys expire in the same second, {} (unix second {}; threshold 1000)",
                w.keys,
                crate::report::utc(w.unix_second as i64),
                w.unix_second
            ),
            "Keys that expire together are recomputed together (a stampede on the database behind the cache). Add random jitter to TTLs, or use OPT.FETCH with LOCK.",
            &["SET key value EX <ttl + random(0..ttl/10)>", "OPT.FETCH key LOCK 2000"],
        ),
        _ => Outcome::Pass,
    }
}

fn encoding_threshold(s: &Snapshot, _: &Thresholds) -> Outcome {
    let ks = try_skip!(s.keyspace.as_ref().ok_or("no keyspace profile".to_string()));
    let Some(c) = ks.encoding_candidates.first() else {
        return Outcome::Pass;
    };
    Outcome::Fire(Fired {
        severity: Severity::Info,
        title: "Collections just above their compact-encoding threshold".into(),
        evidence: format!("{} collections ({} B) are above {} {}", c.keys, c.bytes, c.config, c.current),
        advice: "Compact encodings (listpack, intset) use far less memory; a slightly higher threshold keeps these collections compact.".into(),
        fix: vec![
            format!("CONFIG SET {} {}", c.config, c.suggested),
            format!("redis.conf: {} {}", c.config, c.suggested),
        ],
        effect: Some(format!("about {} B saved", c.estimated_saving)),
        subjects: Vec::new(),
    })
}

fn multiple_databases(s: &Snapshot, _: &Thresholds) -> Outcome {
    let (_, _, dbs) = db_keys(s);
    if dbs <= 1 {
        return Outcome::Pass;
    }
    fire(
        Severity::Info,
        "Keys in several logical databases",
        format!("{dbs} databases hold keys (threshold 1)"),
        "Logical databases share one thread and one memory limit, and Redis Cluster supports only db 0. Prefer key prefixes or separate instances.",
        &["INFO keyspace"],
    )
}

/// Of the total and the recent hot-key windows, the one whose top entry takes the larger share
/// (the recent one on a tie), among those that `enough` accepts; with its top entry. A key hot
/// for the last minute on a server up for weeks shows only in the recent window, one hot all
/// along but quiet now only in the total. Err when neither window was read.
fn hottest<'a>(
    total: Option<&'a HotKeysReport>,
    recent: Option<&'a HotKeysReport>,
    enough: impl Fn(&HotKeysReport) -> bool,
    missing: &str,
) -> Result<Option<(&'a HotKeysReport, &'a HotEntry)>, String> {
    if total.is_none() && recent.is_none() {
        return Err(missing.to_string());
    }
    Ok([recent, total]
        .into_iter()
        .flatten()
        .filter(|r| enough(r))
        .filter_map(|r| r.entries.first().map(|top| (r, top)))
        .reduce(|best, next| {
            if next.1.share > best.1.share {
                next
            } else {
                best
            }
        }))
}

/// How a finding names the hot-key window its figures come from.
fn window_words(r: &HotKeysReport) -> String {
    if r.window == "recent" {
        // A window that just started (after a RESET, or on a young server) gets its tenths:
        // "0 s" says nothing.
        let decimals = usize::from(r.seconds < 10.0);
        format!("over the last {:.*} s", decimals, r.seconds)
    } else {
        "since the start or the last OPT.HOTKEYS RESET".to_string()
    }
}

fn hot_key(s: &Snapshot, t: &Thresholds) -> Outcome {
    let found = try_skip!(hottest(
        s.hotkeys.as_ref(),
        s.hotkeys_recent.as_ref(),
        |r| r.sampled_accesses >= 1000,
        "no hot-key data (opt.hotkeys-enabled no)",
    ));
    let Some((hot, top)) = found else {
        return Outcome::Pass;
    };
    if top.share * 100.0 < t.hot_key_percent {
        return Outcome::Pass;
    }
    with(
        fire(
            Severity::Warning,
            "One key takes a large share of all traffic",
            format!("{} takes {:.0}% of accesses {} ({:.0} ops/s; threshold {}%)", top.name, top.share * 100.0, window_words(hot), top.ops_per_sec, t.hot_key_percent),
            "A hot key pins its shard's CPU and network. Cache it in the clients (CLIENT TRACKING), read it from replicas, or split it into several keys.",
            &["CLIENT TRACKING on   (client-side caching)", "READONLY on a replica connection", "split: <key>:{0..N} and read a random one"],
        ),
        None,
        vec![top.name.clone()],
    )
}

fn hot_missing_key(s: &Snapshot, _: &Thresholds) -> Outcome {
    let found = try_skip!(hottest(
        s.hot_misses.as_ref(),
        s.hot_misses_recent.as_ref(),
        |r| r.estimated_accesses >= 1000,
        "no hot-key data",
    ));
    let Some((hot, top)) = found else {
        return Outcome::Pass;
    };
    if top.share < 0.05 {
        return Outcome::Pass;
    }
    with(
        fire(
            Severity::Warning,
            "A key that does not exist is read very often (cache penetration)",
            format!("{} missed {} times {}, {:.0}% of all accesses (threshold 5%)", top.name, top.count, window_words(hot), top.share * 100.0),
            "Every miss goes to the database behind the cache. Cache the negative result (a short TTL placeholder) or put a Bloom filter in front.",
            &["SET <key> <placeholder> EX 60   (cache the miss)"],
        ),
        None,
        vec![top.name.clone()],
    )
}

/// The server's keyspace hits and misses from clients: less the lookups that the module's own
/// analyses made (`opt_keyspace_lookup_hits`, `opt_keyspace_lookup_misses`; MEMORY USAGE
/// counts as a hit on some versions, so a FULL analysis of a million keys would add a million).
fn client_lookups(s: &Snapshot) -> Result<(f64, f64), String> {
    let hits = info_num(s, "keyspace_hits")? - num(s, "opt_keyspace_lookup_hits").unwrap_or(0.0);
    let misses =
        info_num(s, "keyspace_misses")? - num(s, "opt_keyspace_lookup_misses").unwrap_or(0.0);
    Ok((hits.max(0.0), misses.max(0.0)))
}

fn low_hit_ratio(s: &Snapshot, _: &Thresholds) -> Outcome {
    let (hits, misses) = try_skip!(client_lookups(s));
    let total = hits + misses;
    if total < 1000.0 || hits / total >= 0.8 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "Low cache hit ratio",
        format!("{:.0}% of {total:.0} lookups hit (threshold 80%)", hits / total * 100.0),
        "Most reads miss: TTLs may be too short, memory too small (see evictions), or a few missing keys hammered (see hot-missing-key).",
        &["OPT.HOTKEYS TYPE miss", "INFO stats"],
    )
}

fn dangerous_commands_used(s: &Snapshot, _: &Thresholds) -> Outcome {
    let used: Vec<String> = ["keys", "flushall", "flushdb"]
        .iter()
        .filter_map(|c| {
            let calls = info_subfield(s.info.get(&format!("cmdstat_{c}"))?, "calls")?
                .parse::<u64>()
                .ok()?;
            (calls > 0).then(|| format!("{} ({calls} calls)", c.to_uppercase()))
        })
        .collect();
    if used.is_empty() {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "Commands that block the server are in use",
        format!("{} (threshold: any call)", used.join(", ")),
        "KEYS walks the whole keyspace and FLUSHALL/FLUSHDB free everything at once, blocking every client meanwhile. Use SCAN, and FLUSHALL ASYNC.",
        &["SCAN 0 MATCH <pattern> COUNT 1000", "FLUSHALL ASYNC", "ACL SETUSER <app-user> -keys -flushall -flushdb"],
    )
}

/// Error replies that tell of a problem with the server or its clients' setup (INFO
/// errorstats, Redis 6.2+), each with what it means. Syntax errors (`ERR`) and redirections
/// are left out: they are the clients' own.
const TELLING_ERRORS: &[(&str, &str)] = &[
    (
        "OOM",
        "writes refused at maxmemory (noeviction, or nothing evictable)",
    ),
    (
        "MISCONF",
        "writes refused after a failed BGSAVE or AOF write",
    ),
    (
        "NOREPLICAS",
        "writes refused for want of min-replicas-to-write replicas",
    ),
    ("READONLY", "writes sent to a replica"),
    (
        "MASTERDOWN",
        "reads refused by a replica without its master",
    ),
    (
        "CLUSTERDOWN",
        "commands refused while slots were not served",
    ),
    ("LOADING", "commands refused while the dataset loaded"),
    (
        "BUSY",
        "commands refused while a script or function ran too long",
    ),
    ("NOAUTH", "commands from clients that did not authenticate"),
    ("WRONGPASS", "logins with a wrong user or password"),
    ("NOPERM", "commands or keys an ACL denied"),
    (
        "WRONGTYPE",
        "commands on a key of another type (an application bug)",
    ),
    (
        "CROSSSLOT",
        "multi-key commands on keys of several slots (an application bug in a cluster)",
    ),
];

fn errors_returned(s: &Snapshot, _: &Thresholds) -> Outcome {
    // Already sorted by count, most first.
    let seen: Vec<(&str, &str, u64)> = error_counts(&s.info)
        .into_iter()
        .filter_map(|(code, n)| {
            let &(kind, meaning) = TELLING_ERRORS.iter().find(|(kind, _)| *kind == code)?;
            Some((kind, meaning, n))
        })
        .collect();
    if seen.is_empty() {
        // No telling error since the start, or a server without errorstats.
        return Outcome::Pass;
    }
    let evidence = seen
        .iter()
        .map(|(kind, meaning, n)| format!("{kind} {n} ({meaning})"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut fix = vec!["INFO errorstats"];
    for (kind, _, _) in &seen {
        let step = match *kind {
            "OOM" => "CONFIG SET maxmemory-policy allkeys-lfu",
            "NOAUTH" | "WRONGPASS" | "NOPERM" => "ACL LOG 20",
            "READONLY" | "MASTERDOWN" => "ROLE",
            _ => continue,
        };
        // Several codes share a step, and they need not come one after the other.
        if !fix.contains(&step) {
            fix.push(step);
        }
    }
    fix.push("CONFIG RESETSTAT");
    fire(
        Severity::Warning,
        "Clients got error replies that point at a problem",
        format!("{evidence}; counted since the start or the last CONFIG RESETSTAT"),
        "Each of these errors reached an application. The counts cover the server's life; \
         CONFIG RESETSTAT (last fix) starts them over, so that the next report shows whether \
         they still happen.",
        &fix,
    )
}

/// The five commands of a SLOWLOG or COMMANDLOG (command, measure) with the largest measure,
/// as `name xN (worst)`, `worst` written by `describe`; ties by name.
fn worst_commands(log: &[(String, u64)], describe: impl Fn(u64) -> String) -> Vec<String> {
    let mut by_cmd: HashMap<&str, (u64, u64)> = HashMap::new();
    for (c, measure) in log {
        let e = by_cmd.entry(c.as_str()).or_default();
        e.0 += 1;
        e.1 = e.1.max(*measure);
    }
    let mut worst: Vec<(&str, (u64, u64))> = by_cmd.into_iter().collect();
    worst.sort_by_key(|w| (std::cmp::Reverse(w.1 .1), w.0));
    worst
        .iter()
        .take(5)
        .map(|(c, (n, measure))| format!("{c} x{n} ({})", describe(*measure)))
        .collect()
}

fn slow_commands(s: &Snapshot, _: &Thresholds) -> Outcome {
    let log = try_skip!(s
        .slowlog
        .as_ref()
        .ok_or("SLOWLOG is not available".to_string()));
    if log.is_empty() {
        return Outcome::Pass;
    }
    let list = worst_commands(log, |us| format!("worst {us} µs"));
    fire(
        Severity::Info,
        "Slow commands in the SLOWLOG",
        format!("{} (entries over slowlog-log-slower-than)", list.join(", ")),
        "These commands took long enough to delay every other client. Look at their arguments in SLOWLOG GET and use cheaper forms (SCAN family, smaller ranges, smaller keys).",
        &["SLOWLOG GET 32"],
    )
}

/// Commands whose replies were larger than `commandlog-reply-larger-than` (1 MB by default),
/// from Valkey's COMMANDLOG: each such reply fills an output buffer and the network, and the
/// server spends its time copying it. Redis has no such log.
fn large_replies(s: &Snapshot, _: &Thresholds) -> Outcome {
    let log = try_skip!(s
        .large_replies
        .as_ref()
        .ok_or("COMMANDLOG is not available (Valkey 8.1+ only)".to_string()));
    if log.is_empty() {
        return Outcome::Pass;
    }
    let list = worst_commands(log, |bytes| format!("largest {}", mb(bytes as f64)));
    fire(
        Severity::Warning,
        "Commands return very large replies",
        format!("{} (entries of COMMANDLOG large-reply, over commandlog-reply-larger-than)", list.join(", ")),
        "Each large reply is built in the client's output buffer and sent while other clients wait. Fetch in pages (HSCAN, SSCAN, ZRANGE ... LIMIT, LRANGE in ranges), ask for the fields needed (HMGET), or split big values.",
        &["COMMANDLOG GET 32 large-reply"],
    )
}

fn latency_monitor_off(s: &Snapshot, _: &Thresholds) -> Outcome {
    let v = try_skip!(cfg(s, "latency-monitor-threshold"));
    if v != "0" {
        return Outcome::Pass;
    }
    fire(
        Severity::Info,
        "The latency monitor is off",
        "latency-monitor-threshold 0",
        "With it on, LATENCY LATEST and LATENCY DOCTOR show which events (fork, expiry, commands) caused latency spikes.",
        &["CONFIG SET latency-monitor-threshold 100"],
    )
}

fn slowlog_misconfigured(s: &Snapshot, _: &Thresholds) -> Outcome {
    let slower = try_skip!(cfg(s, "slowlog-log-slower-than"))
        .parse::<i64>()
        .unwrap_or(10_000);
    let len = try_skip!(cfg(s, "slowlog-max-len"))
        .parse::<i64>()
        .unwrap_or(128);
    if (0..=100_000).contains(&slower) && len >= 32 {
        return Outcome::Pass;
    }
    fire(
        Severity::Info,
        "The SLOWLOG misses slow commands",
        format!("slowlog-log-slower-than {slower} (expected 0 to 100000 µs), slowlog-max-len {len} (expected >= 32)"),
        "A disabled or very high threshold, or a short log, hides the commands that slow the server down.",
        &["CONFIG SET slowlog-log-slower-than 10000", "CONFIG SET slowlog-max-len 128"],
    )
}

fn aof_fsync_always(s: &Snapshot, _: &Thresholds) -> Outcome {
    let aof = try_skip!(cfg(s, "appendonly"));
    let fsync = try_skip!(cfg(s, "appendfsync"));
    if aof != "yes" || fsync != "always" {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "appendfsync always: every write waits for the disk",
        "appendonly yes, appendfsync always",
        "For a cache, everysec loses at most a second of writes and is much faster.",
        &["CONFIG SET appendfsync everysec"],
    )
}

fn bgsave_failing(s: &Snapshot, _: &Thresholds) -> Outcome {
    let st = try_skip!(s
        .info
        .get("rdb_last_bgsave_status")
        .cloned()
        .ok_or("INFO has no rdb_last_bgsave_status".to_string()));
    if st == "ok" {
        return Outcome::Pass;
    }
    fire(
        Severity::Critical,
        "The last BGSAVE failed",
        format!("rdb_last_bgsave_status {st}"),
        "Without a working snapshot a restart loses data, and with stop-writes-on-bgsave-error writes are refused. Check the log for the cause (disk full, fork failed).",
        &["INFO persistence", "redis.conf: check dir, disk space and vm.overcommit_memory"],
    )
}

fn thp_enabled(s: &Snapshot, _: &Thresholds) -> Outcome {
    let thp = try_skip!(s
        .thp
        .as_ref()
        .ok_or("/sys/kernel/mm/transparent_hugepage/enabled not readable".to_string()));
    if !thp.contains("[always]") {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "Transparent huge pages are always on",
        format!("transparent_hugepage/enabled: {thp}"),
        "With THP, a fork copies 2 MB pages on every write, which raises latency and memory use during BGSAVE.",
        &["echo madvise > /sys/kernel/mm/transparent_hugepage/enabled"],
    )
}

fn memory_swapped(s: &Snapshot, _: &Thresholds) -> Outcome {
    let swapped = try_skip!(s
        .swapped_bytes
        .ok_or("/proc/self/status has no VmSwap here".to_string())) as f64;
    // A few pages swapped out long ago and never touched cost nothing; 1 MB is the floor.
    if swapped < 1_048_576.0 {
        return Outcome::Pass;
    }
    let rss = num(s, "used_memory_rss").unwrap_or(0.0);
    let check = format!(
        "grep VmSwap /proc/{}/status",
        s.info
            .get("process_id")
            .map_or("<redis-server pid>", String::as_str)
    );
    let share = if rss + swapped > 0.0 {
        swapped / (rss + swapped)
    } else {
        0.0
    };
    fire(
        if share >= 0.05 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        "Part of the server's memory is in swap",
        format!(
            "VmSwap {} ({:.1}% of the server's memory; used_memory_rss {}); threshold 1 MB, critical from 5%",
            mb(swapped),
            share * 100.0,
            mb(rss)
        ),
        "A command that touches a swapped page waits for the disk, milliseconds instead of \
         nanoseconds, and every client behind it waits too. Keep the dataset in RAM: lower \
         maxmemory or add memory, and tell the kernel to avoid swapping.",
        &[
            &check,
            "sysctl vm.swappiness=1",
            "CONFIG SET maxmemory <below the RAM left to Redis>",
        ],
    )
}

fn overcommit_memory(s: &Snapshot, _: &Thresholds) -> Outcome {
    let v = try_skip!(s
        .overcommit_memory
        .ok_or("/proc/sys/vm/overcommit_memory not readable".to_string()));
    if v == 1 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "vm.overcommit_memory is not 1: BGSAVE forks may fail",
        format!("vm.overcommit_memory {v} (expected 1)"),
        "The fork for BGSAVE or an AOF rewrite can fail under memory pressure unless the kernel allows overcommit.",
        &["sysctl vm.overcommit_memory=1", "/etc/sysctl.conf: vm.overcommit_memory = 1"],
    )
}

fn hz_low_for_expires(s: &Snapshot, _: &Thresholds) -> Outcome {
    let hz = try_skip!(info_num(s, "hz"));
    let (_, expires, _) = db_keys(s);
    if hz >= 10.0 || expires < 100_000 {
        return Outcome::Pass;
    }
    fire(
        Severity::Info,
        "hz is low for this many keys with TTLs",
        format!("hz {hz:.0} (threshold 10) with {expires} keys with a TTL (threshold 100000)"),
        "The active expiry cycle runs hz times per second; too few runs let expired keys pile up.",
        &["CONFIG SET hz 10"],
    )
}

/// EVAL caches every distinct script text. Clients that build the text per call (values
/// inlined instead of passed as KEYS/ARGV) grow the cache without bound on Redis 7.0, and make
/// Redis 7.4+ and Valkey 8+ evict scripts (so an EVALSHA of one may meet NOSCRIPT) and compile
/// a script on nearly every call.
fn script_cache_churn(s: &Snapshot, _: &Thresholds) -> Outcome {
    let cached = try_skip!(info_num(s, "number_of_cached_scripts"));
    let evicted = num(s, "evicted_scripts").unwrap_or(0.0);
    if cached < 1000.0 && evicted == 0.0 {
        return Outcome::Pass;
    }
    let bytes = num(s, "used_memory_scripts_eval")
        .or_else(|| num(s, "used_memory_scripts"))
        .unwrap_or(0.0);
    fire(
        Severity::Warning,
        "Scripts are generated per call: EVAL's cache churns",
        format!(
            "{cached:.0} scripts cached (threshold 1000), {} in the script cache, {evicted:.0} evicted from it since the start or CONFIG RESETSTAT (threshold 0)",
            mb(bytes)
        ),
        "Every distinct EVAL text is compiled and cached: Redis 7.0 never frees it, and newer servers evict the oldest scripts (an EVALSHA of one fails with NOSCRIPT) and compile again. Keep the script text constant and pass the values in KEYS and ARGV, or use SCRIPT LOAD once and EVALSHA (or FUNCTION LOAD and FCALL); SCRIPT FLUSH ASYNC frees what is cached now.",
        &["SCRIPT FLUSH ASYNC"],
    )
}

/// A fork (BGSAVE, an AOF rewrite, a replica's full sync) stops the server while the kernel
/// copies its page tables, for a time that grows with the dataset.
fn fork_slow(s: &Snapshot, _: &Thresholds) -> Outcome {
    let usec = try_skip!(info_num(s, "latest_fork_usec"));
    if usec < 100_000.0 {
        return Outcome::Pass;
    }
    let used = num(s, "used_memory").unwrap_or(0.0);
    fire(
        if usec >= 1_000_000.0 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        "Forks stop the server for a long time",
        format!(
            "latest_fork_usec {:.0} ms (threshold 100 ms, critical from 1 s) with {} used: every BGSAVE, AOF rewrite and replica full sync stalls every client that long",
            usec / 1000.0,
            mb(used)
        ),
        "Forking copies the page tables, so it takes longer as the dataset grows, and much longer on some hypervisors. Turn transparent huge pages off, keep instances smaller (shard), persist from a replica instead of the primary, or save less often.",
        &["CONFIG GET save", "LATENCY HISTORY fork"],
    )
}

fn connections_near_limit(s: &Snapshot, _: &Thresholds) -> Outcome {
    let clients = try_skip!(info_num(s, "connected_clients"));
    let max = try_skip!(info_num(s, "maxclients"));
    let rejected = num(s, "rejected_connections").unwrap_or(0.0);
    if clients < 0.8 * max && rejected == 0.0 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "Connections near the limit, or refused",
        format!("{clients:.0} of maxclients {max:.0} connected (threshold 80%), {rejected:.0} rejected (threshold 0)"),
        "New connections are refused at the limit. Use connection pools in the clients, or raise maxclients (and the file-descriptor limit).",
        &["CONFIG SET maxclients 20000", "ulimit -n 65535"],
    )
}

fn idle_clients(s: &Snapshot, _: &Thresholds) -> Outcome {
    let idle = try_skip!(s
        .idle_clients
        .ok_or("CLIENT LIST not available".to_string()));
    let timeout = try_skip!(cfg(s, "timeout"));
    if idle < 100 || timeout != "0" {
        return Outcome::Pass;
    }
    fire(
        Severity::Info,
        "Many idle clients, and no timeout",
        format!("{idle} clients idle for more than 5 minutes (threshold 100), timeout 0"),
        "Idle connections hold memory and count toward maxclients; clients should pool connections, and a timeout closes forgotten ones.",
        &["CONFIG SET timeout 300"],
    )
}

fn client_buffers_large(s: &Snapshot, _: &Thresholds) -> Outcome {
    let out = try_skip!(info_num(s, "client_recent_max_output_buffer"));
    if out <= 32e6 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "A client output buffer is very large",
        format!("client_recent_max_output_buffer {} (threshold 32 MB)", mb(out)),
        "A slow consumer or a huge reply (HGETALL/SMEMBERS of a big key, KEYS) buffers in Redis memory. Find it with CLIENT LIST and page big replies with the SCAN family.",
        &["CLIENT LIST", "CONFIG SET client-output-buffer-limit \"normal 256mb 128mb 60\""],
    )
}

fn pubsub_many_patterns(s: &Snapshot, _: &Thresholds) -> Outcome {
    let n = try_skip!(info_num(s, "pubsub_patterns"));
    if n <= 1000.0 {
        return Outcome::Pass;
    }
    fire(
        Severity::Info,
        "Many pub/sub pattern subscriptions",
        format!("pubsub_patterns {n:.0} (threshold 1000)"),
        "Every PUBLISH is matched against every pattern; many patterns make publishing slow. Prefer channel subscriptions.",
        &["PUBSUB NUMPAT"],
    )
}

fn no_auth(s: &Snapshot, _: &Thresholds) -> Outcome {
    let user = try_skip!(s
        .default_user
        .as_ref()
        .ok_or("ACL LIST not available".to_string()));
    let protected = try_skip!(cfg(s, "protected-mode"));
    let bind = try_skip!(cfg(s, "bind"));
    let loopback_only = !bind.is_empty()
        && bind
            .split_whitespace()
            .all(|b| b.starts_with("127.") || b == "::1" || b == "-::1" || b == "localhost");
    // Protected mode refuses non-loopback clients while the default user has no password.
    if !user.contains("nopass") || !user.contains(" on ") || protected == "yes" || loopback_only {
        return Outcome::Pass;
    }
    fire(
        Severity::Critical,
        "No password, and reachable beyond loopback",
        format!("default user: '{user}'; protected-mode {protected}; bind '{bind}'"),
        "Anyone who reaches the port can read, write and reconfigure Redis. Set a password (or ACL users) and bind to private addresses.",
        &["ACL SETUSER default on >long-random-password", "CONFIG SET protected-mode yes", "redis.conf: requirepass <long-random-password>"],
    )
}

fn dangerous_commands_open(s: &Snapshot, _: &Thresholds) -> Outcome {
    let user = try_skip!(s
        .default_user
        .as_ref()
        .ok_or("ACL LIST not available".to_string()));
    let open =
        user.contains("+@all") && !user.contains("-@dangerous") && !user.contains("-flushall");
    if !open {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "The default user may run FLUSHALL, CONFIG and DEBUG",
        format!("default user: '{user}'"),
        "Application connections rarely need dangerous commands; restrict them so a bug or an attacker cannot flush or reconfigure the cache.",
        &["ACL SETUSER default -@dangerous", "ACL SETUSER admin on >password +@all ~* &*   (for operators)"],
    )
}

fn repl_backlog_small(s: &Snapshot, _: &Thresholds) -> Outcome {
    let err = try_skip!(info_num(s, "sync_partial_err"));
    if err <= 0.0 {
        return Outcome::Pass;
    }
    let size = num(s, "repl_backlog_size").unwrap_or(0.0);
    fire(
        Severity::Warning,
        "Replicas needed full resyncs: the replication backlog is too small",
        format!("sync_partial_err {err:.0} (threshold 0), repl_backlog_size {}", mb(size)),
        "A full resync copies the whole dataset; a larger backlog lets a briefly disconnected replica catch up from it.",
        &["CONFIG SET repl-backlog-size 256mb"],
    )
}

fn replica_link_down(s: &Snapshot, _: &Thresholds) -> Outcome {
    let role = try_skip!(s.info.get("role").ok_or("INFO has no role".to_string()));
    if role != "slave" || s.info.get("master_link_status").map(String::as_str) == Some("up") {
        return Outcome::Pass;
    }
    let host = s.info.get("master_host").map_or("?", String::as_str);
    let port = s.info.get("master_port").map_or("?", String::as_str);
    // -1 (or absent): the link was never up since the server became a replica.
    let since = num(s, "master_link_down_since_seconds").filter(|&v| v >= 0.0);
    let syncing = s.info.get("master_sync_in_progress").map(String::as_str) == Some("1");
    let uptime = num(s, "uptime_in_seconds").unwrap_or(0.0);
    let (severity, state) = match since {
        _ if syncing => (Severity::Warning, ", a full sync in progress".to_string()),
        Some(v) => (Severity::Critical, format!(" for {v:.0} s")),
        // A replica just started waits for its master's first sync (a diskless sync starts
        // 5 s late by default); one that never got the link for a minute is misconfigured or
        // cut off.
        None if uptime < 60.0 => (Severity::Warning, ", not yet up since the start".into()),
        None => (
            Severity::Critical,
            ", never up since it became a replica".into(),
        ),
    };
    let advice = if severity == Severity::Warning {
        "Until its first sync ends this replica serves the data it had before, or none. A \
         sync that keeps starting over is a replication buffer limit or a timeout: see the log \
         of both servers."
    } else {
        "This replica serves data as old as the link's loss (or none), and a failover to it \
         loses the writes made since. Check that the master is up and reachable from here, and \
         masterauth/masteruser if it asks for a password; the replica's log says why."
    };
    let ping = format!("redis-cli -h {host} -p {port} PING");
    fire(
        severity,
        "This replica has no working link to its master",
        format!("master_link_status down{state}, master {host}:{port}"),
        advice,
        &[&ping, "INFO replication", "CONFIG GET masteruser"],
    )
}

fn aof_write_failing(s: &Snapshot, _: &Thresholds) -> Outcome {
    let enabled = try_skip!(info_num(s, "aof_enabled"));
    if enabled == 0.0 {
        return Outcome::Pass;
    }
    let status = |field: &str| s.info.get(field).map_or("ok", String::as_str);
    let write = status("aof_last_write_status");
    let rewrite = status("aof_last_bgrewrite_status");
    if write == "ok" && rewrite == "ok" {
        return Outcome::Pass;
    }
    if write != "ok" {
        fire(
            Severity::Critical,
            "Writes to the AOF fail: the server refuses writes",
            format!("aof_last_write_status {write}, aof_last_bgrewrite_status {rewrite}"),
            "While the append-only file cannot be written, every write command gets a MISCONF \
             error. The log gives the cause (disk full, I/O error, permissions).",
            &[
                "INFO persistence",
                "df -h $(redis-cli CONFIG GET dir | tail -1)",
            ],
        )
    } else {
        fire(
            Severity::Warning,
            "The last AOF rewrite failed",
            format!("aof_last_bgrewrite_status {rewrite}"),
            "The AOF keeps growing until a rewrite succeeds, and a restart replays all of it. \
             The log gives the cause (fork failed, disk full).",
            &["INFO persistence", "BGREWRITEAOF"],
        )
    }
}

fn min_replicas_unmet(s: &Snapshot, _: &Thresholds) -> Outcome {
    // INFO shows min_slaves_good_slaves only while min-replicas-to-write is set.
    let Some(good) = num(s, "min_slaves_good_slaves") else {
        return Outcome::Pass;
    };
    let wanted: f64 = try_skip!(cfg(s, "min-replicas-to-write"))
        .parse()
        .unwrap_or(0.0);
    if wanted == 0.0 || good >= wanted {
        return Outcome::Pass;
    }
    fire(
        Severity::Critical,
        "Too few replicas: the server refuses writes",
        format!(
            "{good:.0} replicas acknowledged within min-replicas-max-lag, min-replicas-to-write {wanted:.0}"
        ),
        "Every write command gets a NOREPLICAS error until enough replicas are connected and \
         caught up. Bring the replicas back, or lower the setting if the cache can do without.",
        &["INFO replication", "CONFIG SET min-replicas-to-write 0"],
    )
}

fn big_collection(s: &Snapshot, _: &Thresholds) -> Outcome {
    let ks = try_skip!(s.keyspace.as_ref().ok_or("no keyspace profile".to_string()));
    let big: Vec<&crate::report::KeyEntry> = ks
        .top_by_length
        .iter()
        .filter(|k| match k.r#type.as_str() {
            "hash" => k.length > 5000,
            "set" | "list" | "zset" => k.length > 1000,
            _ => false,
        })
        .collect();
    if big.is_empty() {
        return Outcome::Pass;
    }
    let list: Vec<String> = big
        .iter()
        .map(|k| format!("{} ({} with {} elements)", k.key, k.r#type, k.length))
        .collect();
    with(
        fire(
            Severity::Warning,
            "Big collections",
            format!("{} (thresholds: hash 5000 fields, set/list/zset 1000 elements)", list.join(", ")),
            "Reading a whole big collection (HGETALL, SMEMBERS, LRANGE 0 -1) blocks the server and floods the network. Shard it into several keys, and page with HSCAN/SSCAN.",
            &["HSCAN <key> 0 COUNT 100", "split: <key>:{0..N} by hash of the field"],
        ),
        None,
        big.iter().map(|k| k.key.clone()).collect(),
    )
}

fn long_key_names(s: &Snapshot, _: &Thresholds) -> Outcome {
    let ks = try_skip!(s.keyspace.as_ref().ok_or("no keyspace profile".to_string()));
    let long: Vec<&crate::report::PatternStats> = ks
        .patterns
        .iter()
        .filter(|p| p.keys >= 1000 && p.largest_key.len() > 100)
        .collect();
    if long.is_empty() {
        return Outcome::Pass;
    }
    let list: Vec<String> = long
        .iter()
        .map(|p| {
            format!(
                "{} ({} keys, e.g. {} bytes long)",
                p.pattern,
                p.keys,
                p.largest_key.len()
            )
        })
        .collect();
    with(
        fire(
            Severity::Info,
            "Long key names",
            format!("{} (threshold 100 bytes, 1000 keys)", list.join("; ")),
            "Key names are stored in full for every key; shorter names (or a hash of the long part) save memory and network.",
            &["rename the pattern with shorter segments, e.g. u:<id>:p instead of user:<id>:profile"],
        ),
        None,
        long.iter().map(|p| p.pattern.clone()).collect(),
    )
}

fn small_strings_to_hash(s: &Snapshot, _: &Thresholds) -> Outcome {
    let ks = try_skip!(s.keyspace.as_ref().ok_or("no keyspace profile".to_string()));
    let many: Vec<&crate::report::PatternStats> = ks
        .patterns
        .iter()
        .filter(|p| {
            p.keys >= 10_000
                && p.avg_bytes < 100
                && p.types.first().is_some_and(|t| t.0 == "string")
                && p.ttl_buckets[0] as f64 >= 0.9 * p.keys as f64
        })
        .collect();
    if many.is_empty() {
        return Outcome::Pass;
    }
    // Each key costs a dictEntry, a key sds and a robj (about 40-60 bytes) beyond its value;
    // in a listpack-encoded hash bucket a field costs a few bytes.
    let saving: u64 = many.iter().map(|p| p.keys * 40).sum();
    let list: Vec<String> = many
        .iter()
        .map(|p| {
            format!(
                "{} ({} keys, {} B on average)",
                p.pattern, p.keys, p.avg_bytes
            )
        })
        .collect();
    with(
        fire(
            Severity::Info,
            "Many tiny strings without TTL: hash buckets would hold them in far less memory",
            format!("{} (thresholds: 10000 keys under 100 B, 90% without TTL)", list.join("; ")),
            "Store them as fields of hash buckets (HSET bucket:<id/1000> <id> <value>), each bucket small enough to stay listpack-encoded.",
            &["HSET <prefix>:<id / 1000> <id> <value>", "CONFIG SET hash-max-listpack-entries 1024"],
        ),
        Some(format!("about {saving} B saved")),
        many.iter().map(|p| p.pattern.clone()).collect(),
    )
}

fn lfu_counter_saturated(s: &Snapshot, _: &Thresholds) -> Outcome {
    let n = try_skip!(s
        .lfu_saturated
        .ok_or("not under an LFU policy, or no hot keys".to_string()));
    if n < 3 {
        return Outcome::Pass;
    }
    fire(
        Severity::Info,
        "LFU counters of the hottest keys are saturated",
        format!("{n} of the hottest keys have OBJECT FREQ 255 (threshold 3)"),
        "Saturated counters cannot tell hot keys apart any more; a higher lfu-log-factor spreads them.",
        &["CONFIG SET lfu-log-factor 100"],
    )
}

fn pubsub_slow_subscriber(s: &Snapshot, _: &Thresholds) -> Outcome {
    let omem = try_skip!(s
        .pubsub_max_omem
        .ok_or("CLIENT LIST not available".to_string()));
    let limits = try_skip!(cfg(s, "client-output-buffer-limit"));
    // "normal 0 0 0 replica ... pubsub <hard> <soft> <seconds>"
    let words: Vec<&str> = limits.split_whitespace().collect();
    let hard = words
        .iter()
        .position(|w| *w == "pubsub")
        .and_then(|i| words.get(i + 1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(32 * 1024 * 1024);
    if hard == 0 || (omem as f64) < 0.5 * hard as f64 {
        return Outcome::Pass;
    }
    fire(
        Severity::Warning,
        "A pub/sub subscriber cannot keep up",
        format!("largest pub/sub output buffer {} of the {} hard limit (threshold 50%)", mb(omem as f64), mb(hard as f64)),
        "A slow subscriber buffers in Redis memory and is disconnected at the limit, losing messages. Make the consumer faster, or use Streams for durable delivery.",
        &["CLIENT LIST TYPE pubsub"],
    )
}

/// Every rule, in a stable order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "maxmemory-unset",
        category: "memory",
        check: maxmemory_unset,
    },
    Rule {
        id: "noeviction-on-cache",
        category: "memory",
        check: noeviction_on_cache,
    },
    Rule {
        id: "volatile-policy-without-ttl",
        category: "memory",
        check: volatile_policy_without_ttl,
    },
    Rule {
        id: "memory-near-limit",
        category: "memory",
        check: memory_near_limit,
    },
    Rule {
        id: "evictions-occurring",
        category: "memory",
        check: evictions_occurring,
    },
    Rule {
        id: "fork-headroom-low",
        category: "memory",
        check: fork_headroom_low,
    },
    Rule {
        id: "fragmentation-high",
        category: "memory",
        check: fragmentation_high,
    },
    Rule {
        id: "allocator-fragmentation",
        category: "memory",
        check: allocator_fragmentation,
    },
    Rule {
        id: "rss-peak",
        category: "memory",
        check: rss_peak,
    },
    Rule {
        id: "lfu-recommended",
        category: "memory",
        check: lfu_recommended,
    },
    Rule {
        id: "lfu-counter-saturated",
        category: "memory",
        check: lfu_counter_saturated,
    },
    Rule {
        id: "expired-stale-high",
        category: "expiry",
        check: expired_stale_high,
    },
    Rule {
        id: "keys-without-ttl",
        category: "expiry",
        check: keys_without_ttl,
    },
    Rule {
        id: "cold-memory",
        category: "memory",
        check: cold_memory,
    },
    Rule {
        id: "expiry-clustered",
        category: "expiry",
        check: expiry_clustered,
    },
    Rule {
        id: "lazyfree-off",
        category: "expiry",
        check: lazyfree_off,
    },
    Rule {
        id: "big-key",
        category: "keys",
        check: big_key,
    },
    Rule {
        id: "big-collection",
        category: "keys",
        check: big_collection,
    },
    Rule {
        id: "long-key-names",
        category: "keys",
        check: long_key_names,
    },
    Rule {
        id: "small-strings-to-hash",
        category: "keys",
        check: small_strings_to_hash,
    },
    Rule {
        id: "encoding-threshold",
        category: "keys",
        check: encoding_threshold,
    },
    Rule {
        id: "multiple-databases",
        category: "keys",
        check: multiple_databases,
    },
    Rule {
        id: "hot-key",
        category: "traffic",
        check: hot_key,
    },
    Rule {
        id: "hot-missing-key",
        category: "traffic",
        check: hot_missing_key,
    },
    Rule {
        id: "low-hit-ratio",
        category: "traffic",
        check: low_hit_ratio,
    },
    Rule {
        id: "dangerous-commands-used",
        category: "traffic",
        check: dangerous_commands_used,
    },
    Rule {
        id: "errors-returned",
        category: "clients",
        check: errors_returned,
    },
    Rule {
        id: "slow-commands",
        category: "traffic",
        check: slow_commands,
    },
    Rule {
        id: "latency-monitor-off",
        category: "latency",
        check: latency_monitor_off,
    },
    Rule {
        id: "slowlog-misconfigured",
        category: "latency",
        check: slowlog_misconfigured,
    },
    Rule {
        id: "aof-fsync-always",
        category: "persistence",
        check: aof_fsync_always,
    },
    Rule {
        id: "bgsave-failing",
        category: "persistence",
        check: bgsave_failing,
    },
    Rule {
        id: "thp-enabled",
        category: "latency",
        check: thp_enabled,
    },
    Rule {
        id: "memory-swapped",
        category: "latency",
        check: memory_swapped,
    },
    Rule {
        id: "overcommit-memory",
        category: "persistence",
        check: overcommit_memory,
    },
    Rule {
        id: "hz-low-for-expires",
        category: "expiry",
        check: hz_low_for_expires,
    },
    Rule {
        id: "connections-near-limit",
        category: "clients",
        check: connections_near_limit,
    },
    Rule {
        id: "idle-clients",
        category: "clients",
        check: idle_clients,
    },
    Rule {
        id: "client-buffers-large",
        category: "clients",
        check: client_buffers_large,
    },
    Rule {
        id: "pubsub-many-patterns",
        category: "clients",
        check: pubsub_many_patterns,
    },
    Rule {
        id: "pubsub-slow-subscriber",
        category: "clients",
        check: pubsub_slow_subscriber,
    },
    Rule {
        id: "no-auth",
        category: "security",
        check: no_auth,
    },
    Rule {
        id: "dangerous-commands-open",
        category: "security",
        check: dangerous_commands_open,
    },
    Rule {
        id: "replica-link-down",
        category: "replication",
        check: replica_link_down,
    },
    Rule {
        id: "aof-write-failing",
        category: "persistence",
        check: aof_write_failing,
    },
    Rule {
        id: "min-replicas-unmet",
        category: "replication",
        check: min_replicas_unmet,
    },
    Rule {
        id: "repl-backlog-small",
        category: "replication",
        check: repl_backlog_small,
    },
    Rule {
        id: "script-cache-churn",
        category: "memory",
        check: script_cache_churn,
    },
    Rule {
        id: "fork-slow",
        category: "persistence",
        check: fork_slow,
    },
    Rule {
        id: "large-replies",
        category: "traffic",
        check: large_replies,
    },
];

/// Without `SAMPLES`, OPT.ADVISE looks at every key of a db of at most this many keys (about
/// a quarter of a second of slices on the reference machine), and samples 10,000 of a bigger
/// one. A sample finds a single big key among 90,000 about one time in nine; the key rules are
/// worth that quarter second.
pub const ADVISE_WHOLE_DB_UP_TO: u64 = 200_000;

/// A parsed `OPT.ADVISE` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdviseQuery {
    /// Keys to sample for the keyspace rules (0: none).
    pub samples: u64,
    /// Look at every key instead when the db holds at most this many (0 when `SAMPLES` was
    /// given: then it is the sample asked for; see [`ADVISE_WHOLE_DB_UP_TO`]).
    pub whole_db_up_to: u64,
    /// Only this category.
    pub category: Option<String>,
    /// Only findings at least this severe.
    pub min_severity: Severity,
}

/// Parses `OPT.ADVISE [SAMPLES n] [CATEGORY c] [MIN-SEVERITY s]`.
pub fn parse_query(raw: &[&[u8]]) -> Result<AdviseQuery, String> {
    let mut args = Args::new("OPT.ADVISE", raw);
    let mut q = AdviseQuery {
        samples: 10_000,
        whole_db_up_to: ADVISE_WHOLE_DB_UP_TO,
        category: None,
        min_severity: Severity::Info,
    };
    const CATEGORIES: &[&str] = &[
        "memory",
        "expiry",
        "keys",
        "traffic",
        "latency",
        "persistence",
        "clients",
        "security",
        "replication",
    ];
    while let Some(word) = args.next_keyword() {
        match word.as_str() {
            "SAMPLES" => {
                q.samples = args.int_value("SAMPLES", 0, 1_000_000)? as u64;
                q.whole_db_up_to = 0;
            }
            "CATEGORY" => {
                q.category = Some(CATEGORIES[args.choice("CATEGORY", CATEGORIES)?].to_string())
            }
            "MIN-SEVERITY" => {
                q.min_severity = [Severity::Info, Severity::Warning, Severity::Critical]
                    [args.choice("MIN-SEVERITY", &["info", "warning", "critical"])?]
            }
            _ => return Err(args.unknown(&word)),
        }
    }
    Ok(q)
}

/// Runs every rule not in `ignore` on `snap`.
pub fn advise(snap: &Snapshot, t: &Thresholds, q: &AdviseQuery, ignore: &[&str]) -> AdviceReport {
    let mut findings = Vec::new();
    let mut skipped = Vec::new();
    let mut deductions = Vec::new();
    let mut evaluated = 0;
    for rule in RULES {
        if ignore.contains(&rule.id) || q.category.as_deref().is_some_and(|c| c != rule.category) {
            continue;
        }
        evaluated += 1;
        match (rule.check)(snap, t) {
            Outcome::Pass => {}
            Outcome::Skip(why) => skipped.push((rule.id.to_string(), why)),
            Outcome::Fire(f) => {
                deductions.push((rule.id.to_string(), f.severity.points()));
                if f.severity >= q.min_severity {
                    findings.push((
                        f.severity,
                        Finding {
                            rule: rule.id.to_string(),
                            severity: f.severity.as_str().to_string(),
                            category: rule.category.to_string(),
                            title: f.title,
                            evidence: f.evidence,
                            advice: f.advice,
                            fix: f.fix,
                            effect: f.effect,
                            subjects: f.subjects,
                        },
                    ));
                }
            }
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.0));
    let lost: u64 = deductions.iter().map(|d| d.1).sum();
    AdviceReport {
        score: 100u64.saturating_sub(lost),
        deductions,
        findings: findings.into_iter().map(|f| f.1).collect(),
        skipped,
        rules_evaluated: evaluated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{
        EncodingCandidate, ExpirySpike, HotEntry, KeyEntry, PatternStats, SizePercentiles,
    };

    #[test]
    fn info_subfields_are_found_by_their_whole_name() {
        let v = "calls=12,usec=30,usec_per_call=2.50,rejected_calls=1";
        assert_eq!(info_subfield(v, "calls"), Some("12"));
        assert_eq!(info_subfield(v, "usec"), Some("30"), "not usec_per_call");
        assert_eq!(info_subfield(v, "rejected_calls"), Some("1"));
        assert_eq!(info_subfield(v, "failed_calls"), None);
        assert_eq!(info_subfield("", "calls"), None);
    }

    fn hot(entries: &[(&str, f64, u64)], total: u64) -> HotKeysReport {
        HotKeysReport {
            window: "total".into(),
            kind: "all".into(),
            view: "keys".into(),
            seconds: 10.0,
            sample_ratio: 1,
            sampled_accesses: total,
            estimated_accesses: total,
            detection_floor: 0,
            capacity: 1024,
            tracked: entries.len() as u64,
            entries: entries
                .iter()
                .enumerate()
                .map(|(i, (n, share, count))| HotEntry {
                    rank: i as u64 + 1,
                    name: n.to_string(),
                    truncated: false,
                    count: *count,
                    error: 0,
                    share: *share,
                    ops_per_sec: *count as f64 / 10.0,
                    reads: *count,
                    writes: 0,
                    misses: 0,
                    node: None,
                    slot: None,
                })
                .collect(),
        }
    }

    fn pattern(name: &str, keys: u64, share: f64, no_ttl: u64) -> PatternStats {
        PatternStats {
            pattern: name.into(),
            keys,
            bytes: 1000 * keys,
            bytes_ci95: 0,
            share,
            avg_bytes: 1000,
            largest_key: format!("{name}1"),
            largest_bytes: 1000,
            types: vec![("string".into(), keys)],
            encodings: vec![("raw".into(), keys)],
            ttl_buckets: [no_ttl, 0, keys - no_ttl, 0, 0, 0],
            idle_buckets: [keys, 0, 0, 0, 0],
            lfu_buckets: [0; 5],
        }
    }

    fn keyspace() -> KeyspaceReport {
        KeyspaceReport {
            mode: "samples".into(),
            db: 0,
            db_keys: 1000,
            keys_scanned: 1000,
            names_drawn: 0,
            big_keys_measured_whole: 0,
            big_keys_pass_at: Some(1),
            keys_matched: 1000,
            total_bytes: 1_000_000,
            elapsed_ms: 1,
            patterns: vec![pattern("cache:*", 1000, 1.0, 0)],
            bytes_by_type: Vec::new(),
            size_percentiles: SizePercentiles::default(),
            size_histogram: Vec::new(),
            top_by_bytes: vec![KeyEntry {
                key: "cache:1".into(),
                r#type: "string".into(),
                bytes: 2000,
                length: 1500,
            }],
            top_by_length: Vec::new(),
            expiring_per_hour: vec![0; 24],
            worst_expiry_second: Some(ExpirySpike {
                unix_second: 1,
                keys: 3,
            }),
            encoding_candidates: Vec::new(),
        }
    }

    /// A well-configured, healthy server: no rule fires.
    fn healthy() -> Snapshot {
        let info: HashMap<String, String> = [
            ("maxmemory", "1000000000"),
            ("used_memory", "100000000"),
            ("used_memory_peak", "120000000"),
            ("maxmemory_policy", "allkeys-lfu"),
            ("evicted_keys", "0"),
            ("uptime_in_seconds", "1000"),
            ("mem_fragmentation_ratio", "1.10"),
            ("mem_fragmentation_bytes", "1000000"),
            ("allocator_frag_ratio", "1.01"),
            ("allocator_frag_bytes", "100000"),
            ("expired_stale_perc", "1.00"),
            ("keyspace_hits", "9000"),
            ("keyspace_misses", "1000"),
            ("rdb_last_bgsave_status", "ok"),
            ("role", "master"),
            ("aof_enabled", "0"),
            ("hz", "10"),
            ("connected_clients", "10"),
            ("maxclients", "10000"),
            ("rejected_connections", "0"),
            ("client_recent_max_output_buffer", "1000"),
            ("pubsub_patterns", "0"),
            ("sync_partial_err", "0"),
            ("repl_backlog_size", "1048576"),
            ("number_of_cached_scripts", "12"),
            ("evicted_scripts", "0"),
            ("latest_fork_usec", "3000"),
            ("db0", "keys=1000,expires=900,avg_ttl=1000"),
            ("cmdstat_get", "calls=100,usec=10,usec_per_call=0.1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config: HashMap<String, String> = [
            ("lazyfree-lazy-eviction", "yes"),
            ("lazyfree-lazy-expire", "yes"),
            ("latency-monitor-threshold", "100"),
            ("slowlog-log-slower-than", "10000"),
            ("slowlog-max-len", "128"),
            ("appendonly", "no"),
            ("appendfsync", "everysec"),
            ("timeout", "300"),
            ("protected-mode", "yes"),
            ("bind", "127.0.0.1 -::1"),
            (
                "client-output-buffer-limit",
                "normal 0 0 0 replica 268435456 67108864 60 pubsub 33554432 8388608 60",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Snapshot {
            info,
            config: Some(config),
            slowlog: Some(Vec::new()),
            large_replies: Some(Vec::new()),
            default_user: Some("user default on #5e88 ~* &* +@all -@dangerous".into()),
            system_memory: Some(4_000_000_000),
            thp: Some("always madvise [never]".into()),
            overcommit_memory: Some(1),
            swapped_bytes: Some(0),
            hotkeys: Some(hot(&[("a", 0.05, 500), ("b", 0.04, 400)], 10_000)),
            hot_misses: Some(hot(&[], 10_000)),
            hotkeys_recent: Some(recent(hot(&[("a", 0.05, 50), ("b", 0.04, 40)], 1_000))),
            hot_misses_recent: Some(recent(hot(&[], 1_000))),
            keyspace: Some(keyspace()),
            idle_clients: Some(0),
            pubsub_max_omem: Some(0),
            lfu_saturated: Some(0),
        }
    }

    fn set(s: &mut Snapshot, k: &str, v: &str) {
        s.info.insert(k.into(), v.into());
    }

    fn conf(s: &mut Snapshot, k: &str, v: &str) {
        s.config.as_mut().unwrap().insert(k.into(), v.into());
    }

    /// Every finding on `s`, infos included.
    fn findings(s: &Snapshot) -> Vec<Finding> {
        let q = AdviseQuery {
            samples: 0,
            whole_db_up_to: 0,
            category: None,
            min_severity: Severity::Info,
        };
        advise(s, &Thresholds::default(), &q, &[]).findings
    }

    fn fired(s: &Snapshot) -> Vec<String> {
        findings(s).into_iter().map(|f| f.rule).collect()
    }

    #[test]
    fn a_healthy_server_gets_no_finding() {
        let r = advise(
            &healthy(),
            &Thresholds::default(),
            &AdviseQuery {
                samples: 0,
                whole_db_up_to: 0,
                category: None,
                min_severity: Severity::Info,
            },
            &[],
        );
        assert!(
            r.findings.is_empty(),
            "{:?}",
            r.findings.iter().map(|f| &f.rule).collect::<Vec<_>>()
        );
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert_eq!(r.score, 100);
        assert_eq!(r.rules_evaluated as usize, RULES.len());
    }

    #[test]
    fn every_rule_fires_on_its_signal_and_only_then() {
        type Provoke = fn(&mut Snapshot);
        let cases: Vec<(&str, Provoke)> = vec![
            ("maxmemory-unset", |s| set(s, "maxmemory", "0")),
            ("noeviction-on-cache", |s| {
                set(s, "maxmemory_policy", "noeviction")
            }),
            ("volatile-policy-without-ttl", |s| {
                set(s, "maxmemory_policy", "volatile-lru");
                set(s, "db0", "keys=1000,expires=10,avg_ttl=1");
            }),
            ("memory-near-limit", |s| set(s, "used_memory", "950000000")),
            ("evictions-occurring", |s| set(s, "evicted_keys", "42")),
            ("fork-headroom-low", |s| {
                s.system_memory = Some(1_100_000_000)
            }),
            ("fragmentation-high", |s| {
                set(s, "mem_fragmentation_ratio", "1.8");
                set(s, "mem_fragmentation_bytes", "80000000");
            }),
            ("allocator-fragmentation", |s| {
                set(s, "allocator_frag_ratio", "1.3");
                set(s, "allocator_frag_bytes", "30000000");
            }),
            ("rss-peak", |s| set(s, "used_memory_peak", "400000000")),
            ("script-cache-churn", |s| set(s, "evicted_scripts", "3")),
            ("fork-slow", |s| set(s, "latest_fork_usec", "250000")),
            ("large-replies", |s| {
                s.large_replies = Some(vec![("hgetall".into(), 5_000_000)])
            }),
            ("lfu-recommended", |s| {
                set(s, "maxmemory_policy", "allkeys-lru");
                s.hotkeys = Some(hot(&[("a", 0.4, 4000), ("b", 0.2, 2000)], 10_000));
            }),
            ("expired-stale-high", |s| {
                set(s, "expired_stale_perc", "25.5")
            }),
            ("keys-without-ttl", |s| {
                s.keyspace.as_mut().unwrap().patterns = vec![pattern("user:*", 500, 0.6, 500)]
            }),
            ("cold-memory", |s| {
                let mut p = pattern("archive:*", 400, 0.4, 0);
                p.idle_buckets = [100, 0, 0, 0, 300];
                s.keyspace.as_mut().unwrap().patterns.push(p);
            }),
            ("expiry-clustered", |s| {
                s.keyspace.as_mut().unwrap().worst_expiry_second = Some(ExpirySpike {
                    unix_second: 9,
                    keys: 5000,
                })
            }),
            ("lazyfree-off", |s| {
                conf(s, "lazyfree-lazy-expire", "no");
                s.keyspace.as_mut().unwrap().top_by_bytes[0].bytes = 500_000;
            }),
            ("big-key", |s| {
                let k = &mut s.keyspace.as_mut().unwrap().top_by_bytes[0];
                k.bytes = 5_000_000;
            }),
            ("encoding-threshold", |s| {
                s.keyspace.as_mut().unwrap().encoding_candidates = vec![EncodingCandidate {
                    config: "hash-max-listpack-entries".into(),
                    current: 128,
                    suggested: 256,
                    keys: 10,
                    bytes: 100_000,
                    estimated_saving: 50_000,
                }]
            }),
            ("multiple-databases", |s| {
                set(s, "db3", "keys=5,expires=0,avg_ttl=0")
            }),
            ("hot-key", |s| {
                s.hotkeys = Some(hot(&[("hot", 0.35, 3500)], 10_000))
            }),
            ("hot-missing-key", |s| {
                s.hot_misses = Some(hot(&[("nope", 0.1, 1000)], 10_000))
            }),
            ("low-hit-ratio", |s| set(s, "keyspace_hits", "100")),
            ("dangerous-commands-used", |s| {
                set(s, "cmdstat_keys", "calls=3,usec=100,usec_per_call=33")
            }),
            ("slow-commands", |s| {
                s.slowlog = Some(vec![("hgetall".into(), 25_000)])
            }),
            ("latency-monitor-off", |s| {
                conf(s, "latency-monitor-threshold", "0")
            }),
            ("slowlog-misconfigured", |s| {
                conf(s, "slowlog-log-slower-than", "-1")
            }),
            ("aof-fsync-always", |s| {
                conf(s, "appendonly", "yes");
                conf(s, "appendfsync", "always");
            }),
            ("bgsave-failing", |s| {
                set(s, "rdb_last_bgsave_status", "err")
            }),
            ("thp-enabled", |s| {
                s.thp = Some("[always] madvise never".into())
            }),
            ("overcommit-memory", |s| s.overcommit_memory = Some(0)),
            ("hz-low-for-expires", |s| {
                set(s, "hz", "1");
                set(s, "db0", "keys=200000,expires=200000,avg_ttl=1");
            }),
            ("connections-near-limit", |s| {
                set(s, "rejected_connections", "7")
            }),
            ("idle-clients", |s| {
                s.idle_clients = Some(500);
                conf(s, "timeout", "0");
            }),
            ("client-buffers-large", |s| {
                set(s, "client_recent_max_output_buffer", "64000000")
            }),
            ("pubsub-many-patterns", |s| {
                set(s, "pubsub_patterns", "5000")
            }),
            ("no-auth", |s| {
                s.default_user = Some("user default on nopass ~* &* +@all".into());
                conf(s, "protected-mode", "no");
                conf(s, "bind", "0.0.0.0");
            }),
            ("dangerous-commands-open", |s| {
                s.default_user = Some("user default on #5e88 ~* &* +@all".into())
            }),
            ("repl-backlog-small", |s| set(s, "sync_partial_err", "3")),
            ("errors-returned", |s| set(s, "errorstat_OOM", "count=12")),
            ("memory-swapped", |s| s.swapped_bytes = Some(50_000_000)),
            ("replica-link-down", |s| {
                set(s, "role", "slave");
                set(s, "master_host", "10.0.0.1");
                set(s, "master_port", "6379");
                set(s, "master_link_status", "down");
            }),
            ("aof-write-failing", |s| {
                set(s, "aof_enabled", "1");
                set(s, "aof_last_write_status", "err");
            }),
            ("min-replicas-unmet", |s| {
                set(s, "min_slaves_good_slaves", "0");
                conf(s, "min-replicas-to-write", "1");
            }),
            ("big-collection", |s| {
                s.keyspace.as_mut().unwrap().top_by_length = vec![KeyEntry {
                    key: "h".into(),
                    r#type: "hash".into(),
                    bytes: 1,
                    length: 9000,
                }]
            }),
            ("long-key-names", |s| {
                let p = &mut s.keyspace.as_mut().unwrap().patterns[0];
                p.largest_key = "k".repeat(150);
            }),
            ("small-strings-to-hash", |s| {
                let mut p = pattern("tiny:*", 50_000, 0.5, 50_000);
                p.avg_bytes = 60;
                s.keyspace.as_mut().unwrap().patterns.push(p);
            }),
            ("lfu-counter-saturated", |s| s.lfu_saturated = Some(5)),
            ("pubsub-slow-subscriber", |s| {
                s.pubsub_max_omem = Some(20_000_000)
            }),
        ];
        assert_eq!(cases.len(), RULES.len(), "a case for every rule");
        for (id, provoke) in cases {
            let mut s = healthy();
            provoke(&mut s);
            let f = fired(&s);
            assert!(f.contains(&id.to_string()), "{id} did not fire: {f:?}");
            assert!(RULES.iter().any(|r| r.id == id));
        }
    }

    /// Redis 7.0 has no `evicted_scripts`: its cache's size tells. A fork of a second or more
    /// is critical.
    #[test]
    fn script_churn_without_evictions_and_a_very_slow_fork() {
        let check = |s: &Snapshot, id: &str| {
            let r = RULES.iter().find(|r| r.id == id).unwrap();
            match (r.check)(s, &Thresholds::default()) {
                Outcome::Fire(f) => Some((f.severity, f.evidence)),
                _ => None,
            }
        };
        let mut s = healthy();
        s.info.remove("evicted_scripts");
        set(&mut s, "number_of_cached_scripts", "999");
        assert_eq!(check(&s, "script-cache-churn"), None);
        set(&mut s, "number_of_cached_scripts", "4200");
        set(&mut s, "used_memory_scripts_eval", "9000000");
        let (severity, evidence) = check(&s, "script-cache-churn").unwrap();
        assert_eq!(severity, Severity::Warning);
        assert!(
            evidence.starts_with("4200 scripts cached") && evidence.contains("9.0 MB"),
            "{evidence}"
        );

        set(&mut s, "latest_fork_usec", "99999");
        assert_eq!(check(&s, "fork-slow"), None);
        set(&mut s, "latest_fork_usec", "100000");
        assert_eq!(check(&s, "fork-slow").unwrap().0, Severity::Warning);
        set(&mut s, "latest_fork_usec", "1500000");
        let (severity, evidence) = check(&s, "fork-slow").unwrap();
        assert_eq!(severity, Severity::Critical);
        assert!(
            evidence.starts_with("latest_fork_usec 1500 ms"),
            "{evidence}"
        );
    }

    #[test]
    fn replication_and_aof_failures_fire_by_their_severity() {
        let outcome = |s: &Snapshot, id: &str| {
            let r = RULES.iter().find(|r| r.id == id).unwrap();
            match (r.check)(s, &Thresholds::default()) {
                Outcome::Fire(f) => Some((f.severity, f.evidence, f.fix)),
                _ => None,
            }
        };
        let mut s = healthy();
        set(&mut s, "role", "slave");
        set(&mut s, "master_host", "10.0.0.1");
        set(&mut s, "master_port", "6380");
        set(&mut s, "master_link_status", "up");
        assert!(outcome(&s, "replica-link-down").is_none());
        set(&mut s, "master_link_status", "down");
        set(&mut s, "master_link_down_since_seconds", "42");
        let (sev, evidence, fix) = outcome(&s, "replica-link-down").unwrap();
        assert_eq!(sev, Severity::Critical);
        assert_eq!(
            evidence,
            "master_link_status down for 42 s, master 10.0.0.1:6380"
        );
        assert_eq!(fix[0], "redis-cli -h 10.0.0.1 -p 6380 PING");
        // A replica still in its first full sync, or just started: a warning; one whose
        // link was never up for a minute: critical.
        set(&mut s, "master_sync_in_progress", "1");
        let (sev, evidence, _) = outcome(&s, "replica-link-down").unwrap();
        assert_eq!(sev, Severity::Warning);
        assert!(evidence.contains(", a full sync in progress"), "{evidence}");
        set(&mut s, "master_sync_in_progress", "0");
        set(&mut s, "master_link_down_since_seconds", "-1");
        set(&mut s, "uptime_in_seconds", "5");
        assert_eq!(
            outcome(&s, "replica-link-down").unwrap().0,
            Severity::Warning
        );
        set(&mut s, "uptime_in_seconds", "600");
        let (sev, evidence, _) = outcome(&s, "replica-link-down").unwrap();
        assert_eq!(sev, Severity::Critical);
        assert!(evidence.contains("never up"), "{evidence}");

        let mut s = healthy();
        set(&mut s, "aof_enabled", "1");
        set(&mut s, "aof_last_write_status", "ok");
        set(&mut s, "aof_last_bgrewrite_status", "ok");
        assert!(outcome(&s, "aof-write-failing").is_none());
        set(&mut s, "aof_last_bgrewrite_status", "err");
        assert_eq!(
            outcome(&s, "aof-write-failing").unwrap().0,
            Severity::Warning
        );
        set(&mut s, "aof_last_write_status", "err");
        assert_eq!(
            outcome(&s, "aof-write-failing").unwrap().0,
            Severity::Critical
        );
        set(&mut s, "aof_enabled", "0");
        assert!(outcome(&s, "aof-write-failing").is_none());

        let mut s = healthy();
        conf(&mut s, "min-replicas-to-write", "2");
        set(&mut s, "min_slaves_good_slaves", "2");
        assert!(outcome(&s, "min-replicas-unmet").is_none());
        set(&mut s, "min_slaves_good_slaves", "1");
        let (sev, evidence, _) = outcome(&s, "min-replicas-unmet").unwrap();
        assert_eq!(sev, Severity::Critical);
        assert!(
            evidence.starts_with("1 replicas acknowledged"),
            "{evidence}"
        );
    }

    #[test]
    fn telling_error_replies_are_listed_by_count_and_syntax_errors_are_not() {
        let r = RULES.iter().find(|r| r.id == "errors-returned").unwrap();
        let run = |s: &Snapshot| match (r.check)(s, &Thresholds::default()) {
            Outcome::Fire(f) => Some(f),
            _ => None,
        };
        let mut s = healthy();
        set(&mut s, "errorstat_ERR", "count=500");
        assert!(run(&s).is_none(), "ERR alone is the clients' own");
        set(&mut s, "errorstat_WRONGPASS", "count=3");
        set(&mut s, "errorstat_OOM", "count=40");
        let f = run(&s).unwrap();
        assert!(
            f.evidence.starts_with(
                "OOM 40 (writes refused at maxmemory (noeviction, or nothing evictable)); \
                 WRONGPASS 3 ("
            ),
            "{}",
            f.evidence
        );
        assert_eq!(
            f.fix,
            [
                "INFO errorstats",
                "CONFIG SET maxmemory-policy allkeys-lfu",
                "ACL LOG 20",
                "CONFIG RESETSTAT"
            ]
        );
        // NOPERM above OOM and WRONGPASS below it: the step they share is listed once.
        set(&mut s, "errorstat_NOPERM", "count=50");
        let f = run(&s).unwrap();
        assert_eq!(
            f.fix,
            [
                "INFO errorstats",
                "ACL LOG 20",
                "CONFIG SET maxmemory-policy allkeys-lfu",
                "CONFIG RESETSTAT"
            ]
        );
    }

    #[test]
    fn swapped_memory_is_read_from_the_process_status_and_graded_by_its_share() {
        let status = "Name:\tredis-server\nVmRSS:\t  102400 kB\nVmSwap:\t    2048 kB\n";
        assert_eq!(vm_swap_bytes(status), Some(2048 * 1024));
        assert_eq!(vm_swap_bytes("Name:\tx\n"), None);
        let r = RULES.iter().find(|r| r.id == "memory-swapped").unwrap();
        let severity = |swapped: u64| {
            let mut s = healthy();
            set(&mut s, "used_memory_rss", "100000000");
            set(&mut s, "process_id", "4242");
            s.swapped_bytes = Some(swapped);
            match (r.check)(&s, &Thresholds::default()) {
                Outcome::Fire(f) => {
                    assert_eq!(f.fix[0], "grep VmSwap /proc/4242/status");
                    Some(f.severity)
                }
                _ => None,
            }
        };
        assert_eq!(severity(500_000), None, "under 1 MB");
        assert_eq!(severity(2_000_000), Some(Severity::Warning));
        assert_eq!(severity(10_000_000), Some(Severity::Critical));
    }

    /// `r` as the recent window's report (60 s).
    fn recent(mut r: HotKeysReport) -> HotKeysReport {
        r.window = "recent".into();
        r.seconds = 60.0;
        r
    }

    fn evidence(s: &Snapshot, id: &str) -> Option<String> {
        let r = RULES.iter().find(|r| r.id == id).unwrap();
        match (r.check)(s, &Thresholds::default()) {
            Outcome::Fire(f) => Some(f.evidence),
            _ => None,
        }
    }

    #[test]
    fn hot_keys_are_found_in_the_recent_window_when_the_total_hides_them() {
        // A server with a long quiet history: a key missed at 30% of the last minute's
        // traffic is 0.1% of all traffic since the start.
        let mut s = healthy();
        s.hot_misses = Some(hot(&[("user:404", 0.001, 1000)], 1_000_000));
        assert_eq!(evidence(&s, "hot-missing-key"), None);
        s.hot_misses_recent = Some(recent(hot(&[("user:404", 0.3, 30_000)], 100_000)));
        let e = evidence(&s, "hot-missing-key").expect("found in the recent window");
        assert!(
            e.contains("user:404") && e.contains("over the last 60 s"),
            "{e}"
        );
        // A window that just started says how long it is, not "0 s".
        let mut young = recent(hot(&[("user:404", 0.3, 30_000)], 100_000));
        young.seconds = 0.4;
        s.hot_misses_recent = Some(young);
        let e = evidence(&s, "hot-missing-key").expect("found in the young window");
        assert!(e.contains("over the last 0.4 s"), "{e}");
        s.hot_misses_recent = Some(recent(hot(&[("user:404", 0.3, 30_000)], 100_000)));
        // The same for a hot key; and one hot all along but quiet now is still found, named
        // with its window.
        s.hotkeys_recent = Some(recent(hot(&[("sku:1", 0.5, 50_000)], 100_000)));
        let e = evidence(&s, "hot-key").expect("found in the recent window");
        assert!(
            e.contains("sku:1") && e.contains("over the last 60 s"),
            "{e}"
        );
        s.hotkeys_recent = Some(recent(hot(&[("sku:2", 0.02, 20)], 1_000)));
        s.hotkeys = Some(hot(&[("sku:1", 0.4, 400_000)], 1_000_000));
        let e = evidence(&s, "hot-key").expect("found in the total window");
        assert!(e.contains("sku:1") && e.contains("since the start"), "{e}");
        // A window with too few accesses to judge is not used.
        s.hotkeys = Some(hot(&[], 1_000_000));
        s.hotkeys_recent = Some(recent(hot(&[("sku:3", 0.9, 90)], 100)));
        assert_eq!(evidence(&s, "hot-key"), None);
        // Without the tracker neither rule can say anything.
        s.hotkeys = None;
        s.hotkeys_recent = None;
        let r = RULES.iter().find(|r| r.id == "hot-key").unwrap();
        assert!(matches!(
            (r.check)(&s, &Thresholds::default()),
            Outcome::Skip(_)
        ));
    }

    #[test]
    fn cold_memory_counts_idle_keys_or_decayed_counters_and_their_bytes() {
        let cold = |s: &Snapshot| findings(s).into_iter().find(|f| f.rule == "cold-memory");
        // Healthy: every key read within the minute.
        assert!(cold(&healthy()).is_none());
        // 300 of 400 measured keys idle for over a week, of a pattern of 800 keys: 600 keys of
        // 1,000 bytes.
        let mut s = healthy();
        let mut p = pattern("archive:*", 800, 0.4, 0);
        p.idle_buckets = [100, 0, 0, 0, 300];
        s.keyspace.as_mut().unwrap().patterns.push(p.clone());
        let f = cold(&s).expect("fires");
        assert!(
            f.evidence
                .contains("archive:*: 600 of 800 keys not read for a week"),
            "{}",
            f.evidence
        );
        assert_eq!(f.effect.as_deref(), Some("about 600000 B could be freed"));
        assert_eq!(f.subjects, ["archive:*"]);
        // The same under LFU: counters decayed below 5.
        let mut s = healthy();
        p.idle_buckets = [0; 5];
        p.lfu_buckets = [300, 100, 0, 0, 0];
        for q in &mut s.keyspace.as_mut().unwrap().patterns {
            q.idle_buckets = [0; 5];
            q.lfu_buckets = [0, q.keys, 0, 0, 0];
        }
        s.keyspace.as_mut().unwrap().patterns.push(p.clone());
        assert!(cold(&s)
            .expect("fires under LFU")
            .evidence
            .contains("LFU counter decayed"));
        // Under half of the pattern cold: nothing to say.
        let mut s = healthy();
        p.lfu_buckets = [0; 5];
        p.idle_buckets = [300, 0, 0, 0, 100];
        s.keyspace.as_mut().unwrap().patterns.push(p);
        assert!(cold(&s).is_none());
    }

    #[test]
    fn the_hit_ratio_leaves_out_the_lookups_of_the_module_own_analyses() {
        let low = |s: &Snapshot| fired(s).contains(&"low-hit-ratio".to_string());
        // 9,000 hits and 1,000 misses: 90%, healthy.
        let mut s = healthy();
        assert!(!low(&s));
        // Of the hits, 8,500 were an analysis' MEMORY USAGE calls: clients hit 500 of 1,500.
        set(&mut s, "opt_keyspace_lookup_hits", "8500");
        assert!(low(&s));
        // The other way round: the analysis' misses hid a healthy ratio.
        let mut s = healthy();
        set(&mut s, "keyspace_misses", "9000");
        assert!(low(&s));
        set(&mut s, "opt_keyspace_lookup_misses", "8500");
        assert!(!low(&s));
        assert_eq!(client_lookups(&s), Ok((9000.0, 500.0)));
    }

    #[test]
    fn fragmentation_of_a_tiny_instance_is_not_reported() {
        let mut s = healthy();
        set(&mut s, "mem_fragmentation_ratio", "9.0");
        set(&mut s, "mem_fragmentation_bytes", "12000000");
        set(&mut s, "used_memory", "1500000");
        set(&mut s, "used_memory_peak", "1500000");
        assert!(!fired(&s).contains(&"fragmentation-high".to_string()));
    }

    #[test]
    fn a_sample_without_a_pass_over_every_key_does_not_clear_big_keys() {
        let q = AdviseQuery {
            samples: 0,
            whole_db_up_to: 0,
            category: None,
            min_severity: Severity::Info,
        };
        let mut s = healthy();
        let skipped = |s: &Snapshot| {
            advise(s, &Thresholds::default(), &q, &[])
                .skipped
                .iter()
                .any(|(id, why)| id == "big-key" && why.contains("no pass over every key"))
        };
        assert!(!skipped(&s), "a pass found the big keys: big-key passes");
        s.keyspace.as_mut().unwrap().big_keys_pass_at = None;
        assert!(skipped(&s));
        s.keyspace.as_mut().unwrap().mode = "full".into();
        assert!(!skipped(&s), "FULL saw every key");
        // A big key in the sample fires whatever the pass.
        s.keyspace.as_mut().unwrap().mode = "samples".into();
        s.keyspace.as_mut().unwrap().top_by_bytes[0].bytes = 5_000_000;
        assert!(fired(&s).contains(&"big-key".to_string()));
    }

    #[test]
    fn missing_signals_skip_rules_and_filters_apply() {
        let mut s = healthy();
        s.config = None;
        s.keyspace = None;
        s.thp = None;
        let q = AdviseQuery {
            samples: 0,
            whole_db_up_to: 0,
            category: None,
            min_severity: Severity::Info,
        };
        let r = advise(&s, &Thresholds::default(), &q, &[]);
        let skipped: Vec<&str> = r.skipped.iter().map(|(id, _)| id.as_str()).collect();
        for id in ["latency-monitor-off", "big-key", "thp-enabled", "no-auth"] {
            assert!(skipped.contains(&id), "{id} not skipped: {skipped:?}");
        }
        assert!(r
            .skipped
            .iter()
            .any(|(_, why)| why.contains("CONFIG is not available")));
        // Severity order, MIN-SEVERITY, CATEGORY and ignore.
        let mut s = healthy();
        set(&mut s, "rdb_last_bgsave_status", "err");
        set(&mut s, "evicted_keys", "5");
        conf(&mut s, "latency-monitor-threshold", "0");
        let r = advise(&s, &Thresholds::default(), &q, &[]);
        assert_eq!(r.findings[0].severity, "critical");
        assert_eq!(r.score, 100 - 20 - 8 - 2);
        let warn = AdviseQuery {
            min_severity: Severity::Warning,
            ..q.clone()
        };
        assert_eq!(
            advise(&s, &Thresholds::default(), &warn, &[])
                .findings
                .len(),
            2
        );
        let persist = AdviseQuery {
            category: Some("persistence".into()),
            ..q.clone()
        };
        assert_eq!(
            advise(&s, &Thresholds::default(), &persist, &[])
                .findings
                .len(),
            1
        );
        let r = advise(&s, &Thresholds::default(), &q, &["bgsave-failing"]);
        assert!(r.findings.iter().all(|f| f.rule != "bgsave-failing"));
    }

    #[test]
    fn parses_queries() {
        let p = |a: &[&str]| {
            let raw: Vec<&[u8]> = a.iter().map(|s| s.as_bytes()).collect();
            parse_query(&raw)
        };
        let q = p(&[
            "SAMPLES",
            "0",
            "CATEGORY",
            "memory",
            "MIN-SEVERITY",
            "warning",
        ])
        .unwrap();
        assert_eq!(
            (q.samples, q.category.as_deref(), q.min_severity),
            (0, Some("memory"), Severity::Warning)
        );
        // Without SAMPLES: every key of a db up to 200,000 keys, else 10,000 samples; with
        // it, the sample asked for.
        let d = p(&[]).unwrap();
        assert_eq!(
            (d.samples, d.whole_db_up_to),
            (10_000, ADVISE_WHOLE_DB_UP_TO)
        );
        let given = p(&["SAMPLES", "500"]).unwrap();
        assert_eq!((given.samples, given.whole_db_up_to), (500, 0));
        assert!(p(&["CATEGORY", "nope"])
            .unwrap_err()
            .contains("CATEGORY must be one of"));
        assert!(p(&["MIN-SEVERITY", "high"]).is_err());
        assert!(p(&["SAMPLES", "-1"]).is_err());
        assert!(p(&["WHAT"]).unwrap_err().contains("unknown option"));
        let info = parse_info("# Server\r\nredis_version:7.0.15\r\nmaxmemory:0\r\n");
        assert_eq!(info.get("maxmemory").map(String::as_str), Some("0"));
    }
}
