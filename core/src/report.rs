//! Serde types of every structured reply, shared by the module and `optctl`.
//!
//! The module serialises these for `FORMAT JSON` replies and turns the same values into RESP
//! maps and arrays otherwise; `optctl` deserialises the JSON. One definition means the two can
//! never drift apart.

use serde::{Deserialize, Serialize};

/// A key, tag or pattern name as report text: valid UTF-8 as it is, and each byte that is not
/// part of valid UTF-8 as `\xNN`, so that a binary name stays readable and tells its bytes
/// (replacing them with U+FFFD would make different names look the same).
pub fn display_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Reply of `OPT.STATUS`: what `optctl status` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Module name as listed by `MODULE LIST` (`opt`).
    pub module: String,
    /// Module version (the crate's version).
    pub module_version: String,
    /// Server version, `major.minor.patch`.
    pub server_version: String,
    /// Optional server APIs the module looked for at load, and whether each was found.
    pub features: Vec<Feature>,
    /// Every `opt.*` config with its current value.
    pub configs: Vec<ConfigValue>,
}

/// An optional server capability detected at load time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    /// Short name, e.g. `command-filter`.
    pub name: String,
    /// Whether this server provides it.
    pub available: bool,
    /// What the module does with it, or how it degrades without it.
    pub note: String,
}

/// One config and its current value, as `CONFIG GET` would print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigValue {
    /// Full name, `opt.<name>`.
    pub name: String,
    /// Current value as text.
    pub value: String,
}

/// One line of `OPT.HELP`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelpEntry {
    /// Command name.
    pub command: String,
    /// Syntax on one line.
    pub syntax: String,
    /// What it does.
    pub summary: String,
}

/// Reply of `OPT.HOTKEYS`: the hottest keys (or key patterns) with their error bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotKeysReport {
    /// `total` (since start or RESET) or `recent` (the last `opt.hotkeys-window-seconds`).
    pub window: String,
    /// Which accesses rank the list: `all`, `read`, `write` or `miss`.
    pub kind: String,
    /// `keys` or `namespaces` (inferred key patterns).
    pub view: String,
    /// Seconds of traffic the figures cover.
    pub seconds: f64,
    /// One command in this many is counted (`opt.hotkeys-sample-ratio`).
    pub sample_ratio: u64,
    /// Accesses actually counted in this window.
    pub sampled_accesses: u64,
    /// Accesses in this window, scaled back by the sample ratio.
    pub estimated_accesses: u64,
    /// Every key whose count is above this is guaranteed to be listed when COUNT reaches it;
    /// an unlisted key had at most this many accesses (scaled).
    pub detection_floor: u64,
    /// Candidates the tracker keeps (`opt.hotkeys-capacity`).
    pub capacity: u64,
    /// Candidates tracked now.
    pub tracked: u64,
    /// The entries, hottest first.
    pub entries: Vec<HotEntry>,
}

impl HotKeysReport {
    /// How many accesses each counted one stands for: all accesses (estimated) over the ones
    /// counted. With time-sliced sampling this is measured, not the configured ratio.
    pub fn counted_one_in(&self) -> f64 {
        if self.sampled_accesses == 0 {
            self.sample_ratio as f64
        } else {
            (self.estimated_accesses as f64 / self.sampled_accesses as f64).max(1.0)
        }
    }

    /// The half-width of a 95% interval around an entry's `count` that comes from sampling
    /// alone (0 when every access was counted): a count of c made of accesses each counted
    /// with probability 1/r varies by about sqrt(c (r - 1)). It assumes steady traffic; a
    /// burst that fell between the sampler's slices is off by more (README, "Hot keys").
    /// `HotEntry::error` is the summary's own bound, on top of this.
    pub fn sampling_margin(&self, count: u64) -> f64 {
        let r = self.counted_one_in();
        if r <= 1.0 {
            return 0.0;
        }
        1.96 * (count as f64 * (r - 1.0)).sqrt()
    }
}

/// One hot key or key pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotEntry {
    /// 1 for the hottest.
    pub rank: u64,
    /// Key name or pattern (invalid UTF-8 replaced; cut at 128 bytes when `truncated`).
    pub name: String,
    /// Whether `name` was cut.
    pub truncated: bool,
    /// Estimated accesses of the ranking kind (an upper bound).
    pub count: u64,
    /// Upper bound of the overestimate: the true count is at least `count - error`.
    pub error: u64,
    /// `count` as a share of all accesses in the window (0 to 1).
    pub share: f64,
    /// Accesses per second over the window.
    pub ops_per_sec: f64,
    /// Reads counted while tracked (scaled).
    pub reads: u64,
    /// Writes counted while tracked (scaled).
    pub writes: u64,
    /// Reads of the key while it did not exist (scaled): cache penetration.
    pub misses: u64,
    /// In a cluster-wide view merged by optctl: the node (`host:port`) that counted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// In a cluster-wide view of keys: the key's hash slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u16>,
}

/// Reply of `OPT.TAGINFO`: the size of the tag index, or of one tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagInfoReport {
    /// Tagged keys (in the selected db when `tag` is set, else in all dbs).
    pub keys: u64,
    /// Distinct tags (all dbs).
    pub tags: u64,
    /// (key, tag) pairs (all dbs).
    pub pairs: u64,
    /// Bytes held by the index.
    pub memory_bytes: u64,
    /// Digest of every (db, key, tag): equal on two servers whose indexes are equal.
    pub digest: String,
    /// The tag asked about, if any.
    pub tag: Option<String>,
    /// The largest tags of the selected db, with their key counts.
    pub largest: Vec<TagSize>,
}

/// A tag and how many keys carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagSize {
    /// The tag.
    pub tag: String,
    /// Keys carrying it.
    pub keys: u64,
}

/// Reply of `OPT.KEYSPACE`: where the memory goes, by inferred key pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyspaceReport {
    /// `full` (every key, exact) or `samples` (random keys, extrapolated).
    pub mode: String,
    /// The database analysed.
    pub db: u64,
    /// Keys in the database when the analysis started.
    pub db_keys: u64,
    /// Keys looked at.
    pub keys_scanned: u64,
    /// SAMPLES only: further random names drawn just to count each pattern's keys (two-phase
    /// sampling: many cheap draws give each pattern's share of the keys, the measured samples
    /// its average size).
    #[serde(default)]
    pub names_drawn: u64,
    /// SAMPLES only: the known big keys measured whole beside the sample (see
    /// `opt.keyspace-known-big-keys`), counted in `keys_scanned` too.
    #[serde(default)]
    pub big_keys_measured_whole: u64,
    /// SAMPLES only: when the last pass over every key of the db began (unix seconds), which
    /// found the big keys measured whole (a FULL without MATCH or TYPE, or a round of
    /// `opt.keyspace-big-key-watch`); None when none ended since the server started or the db
    /// was flushed: big keys the samples never measured are then missed or scaled up.
    #[serde(default)]
    pub big_keys_pass_at: Option<u64>,
    /// Keys that matched MATCH/TYPE.
    pub keys_matched: u64,
    /// Bytes of the matched keys (extrapolated in samples mode).
    pub total_bytes: u64,
    /// Wall time of the analysis in milliseconds.
    pub elapsed_ms: u64,
    /// Memory by pattern, largest first.
    pub patterns: Vec<PatternStats>,
    /// Bytes by type.
    pub bytes_by_type: Vec<TypeBytes>,
    /// Key size percentiles in bytes: p50, p90, p99, max.
    pub size_percentiles: SizePercentiles,
    /// The key-size distribution: keys and bytes by size range, in increasing order, empty
    /// ranges left out (extrapolated in samples mode). The ranges are log-linear, 16 to each
    /// power of two, so any two reports' distributions add up range by range (a cluster's
    /// percentiles come from the sum) and a display can group them coarser. Empty from
    /// modules older than the field.
    #[serde(default)]
    pub size_histogram: Vec<SizeBucket>,
    /// The largest keys by bytes.
    pub top_by_bytes: Vec<KeyEntry>,
    /// The largest keys by length (elements, or bytes for strings).
    pub top_by_length: Vec<KeyEntry>,
    /// Keys expiring in each of the next 24 hours (index 0: within the hour).
    pub expiring_per_hour: Vec<u64>,
    /// The second of the next 24 hours in which the most keys expire, and how many.
    pub worst_expiry_second: Option<ExpirySpike>,
    /// Collections just above their compact-encoding thresholds.
    pub encoding_candidates: Vec<EncodingCandidate>,
}

/// Memory of one key pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternStats {
    /// The pattern, `(other)` past the pattern bound.
    pub pattern: String,
    /// Keys (extrapolated in samples mode).
    pub keys: u64,
    /// Bytes (extrapolated in samples mode).
    pub bytes: u64,
    /// Half-width of the 95% confidence interval of `bytes` (0 in full mode).
    pub bytes_ci95: u64,
    /// Share of the matched bytes.
    pub share: f64,
    /// Average key size in bytes.
    pub avg_bytes: u64,
    /// Largest key of the pattern and its size.
    pub largest_key: String,
    /// Its bytes.
    pub largest_bytes: u64,
    /// Keys by type (`string`, `hash`...).
    pub types: Vec<(String, u64)>,
    /// Keys by encoding (`embstr`, `listpack`...).
    pub encodings: Vec<(String, u64)>,
    /// Keys by TTL bucket: none, <1m, <1h, <1d, <1w, >=1w.
    pub ttl_buckets: [u64; 6],
    /// Keys by idle time: <1m, <1h, <1d, <1w, >=1w (under an LRU or no eviction policy).
    pub idle_buckets: [u64; 5],
    /// Keys by LFU access counter: <5 (decayed: not read lately), 5-9, 10-19, 20-99, >=100
    /// (under an LFU policy, where the server keeps a counter instead of an idle time).
    #[serde(default)]
    pub lfu_buckets: [u64; 5],
}

/// Bytes of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeBytes {
    /// Type name.
    pub r#type: String,
    /// Keys of that type.
    pub keys: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The keys whose size falls in one range of the key-size distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SizeBucket {
    /// The range's smallest size in bytes; it reaches up to the next range's.
    pub from_bytes: u64,
    /// Keys in the range.
    pub keys: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Key size percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SizePercentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// One key in a top list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Key name.
    pub key: String,
    /// Type.
    pub r#type: String,
    /// Bytes.
    pub bytes: u64,
    /// Length (elements, or bytes for strings).
    pub length: u64,
}

/// The second with the most expiries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpirySpike {
    /// Unix second.
    pub unix_second: u64,
    /// Keys expiring then.
    pub keys: u64,
}

/// Collections just above a compact-encoding threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodingCandidate {
    /// The config to raise (`hash-max-listpack-entries`...).
    pub config: String,
    /// Its current value.
    pub current: u64,
    /// A value that would keep these collections compact.
    pub suggested: u64,
    /// Collections concerned.
    pub keys: u64,
    /// Their bytes now.
    pub bytes: u64,
    /// Estimated bytes saved if they were compact (about half, measured on Redis 7).
    pub estimated_saving: u64,
}

/// Progress of a running `OPT.KEYSPACE` (`OPT.KEYSPACE STATUS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyspaceProgress {
    /// Analysis id.
    pub id: u64,
    /// `full` or `samples`.
    pub mode: String,
    /// Keys looked at so far.
    pub scanned: u64,
    /// Keys to look at (the db size at the start, or the sample count).
    pub total: u64,
    /// Milliseconds since the start.
    pub elapsed_ms: u64,
}

/// Reply of `OPT.ADVISE`: findings, most severe first, and a health score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdviceReport {
    /// 0 (bad) to 100 (nothing to fix).
    pub score: u64,
    /// Points each firing rule cost.
    pub deductions: Vec<(String, u64)>,
    /// The findings.
    pub findings: Vec<Finding>,
    /// Rules not evaluated, with the reason (a signal missing on this server, CONFIG blocked...).
    pub skipped: Vec<(String, String)>,
    /// Rules evaluated.
    pub rules_evaluated: u64,
}

/// One finding of `OPT.ADVISE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable rule id (part of the interface).
    pub rule: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// memory, expiry, keys, traffic, latency, persistence, clients, security, replication.
    pub category: String,
    /// One line.
    pub title: String,
    /// The measured values and the threshold they crossed.
    pub evidence: String,
    /// What to do, and why.
    pub advice: String,
    /// Exact fix: redis-cli commands and redis.conf lines.
    pub fix: Vec<String>,
    /// Expected effect, where it can be estimated.
    pub effect: Option<String>,
    /// Keys or patterns concerned.
    pub subjects: Vec<String>,
}

/// `optctl report --json`: everything the module knows, in one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FullReport {
    /// When the report was made (Unix seconds).
    pub generated_at: u64,
    /// The server (URL without password).
    pub server: String,
    /// Versions, features, configs.
    pub status: StatusReport,
    /// Findings and score.
    pub advice: Option<AdviceReport>,
    /// The hottest keys since start.
    pub hotkeys: Option<HotKeysReport>,
    /// The hottest key patterns since start.
    pub namespaces: Option<HotKeysReport>,
    /// The recent window of the hot keys, every candidate: their ops/s now. Absent from
    /// reports of optctl versions before the field.
    #[serde(default)]
    pub hotkeys_recent: Option<HotKeysReport>,
    /// The same for the hot key patterns.
    #[serde(default)]
    pub namespaces_recent: Option<HotKeysReport>,
    /// Memory by pattern (sampled).
    pub keyspace: Option<KeyspaceReport>,
    /// The tag index.
    pub tags: Option<TagInfoReport>,
}

#[cfg(test)]
mod display_name_tests {
    use super::display_name;

    #[test]
    fn invalid_bytes_show_as_hex_and_valid_text_stays() {
        assert_eq!(display_name(b"user:1"), "user:1");
        assert_eq!(display_name("café".as_bytes()), "café");
        assert_eq!(display_name(b"\xff\xfe\x00bin"), "\\xff\\xfe\x00bin");
        assert_ne!(display_name(b"a\xff"), display_name(b"a\xfe"));
    }
}

/// A Unix time as `2026-11-28 10:11:43 UTC`, for the reports' text (the civil-from-days
/// conversion of the proleptic Gregorian calendar, so that no date crate is needed for it).
pub fn utc(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_860_703), "2026-11-28 10:11:43 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
    }
}
