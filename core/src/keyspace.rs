//! The keyspace profile behind `OPT.KEYSPACE`: where memory goes, by inferred key pattern.
//!
//! The module walks the keyspace (every key, or random samples) in short slices and hands each
//! key's facts to [`Aggregator::add`]; everything else (grouping by pattern, TTL and idle
//! buckets, percentiles, top keys, expiry spikes, encoding thresholds, extrapolation with
//! confidence intervals) happens here, without a server, so it is unit-tested.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;

use crate::freshness::KeyHasher;
use crate::glob::Glob;

/// Maps keyed per key or pattern: hashed with xxh3, not SipHash (they sit on the per-key path).
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// Counts under a handful of distinct names (types, encodings): a linear scan of a short
/// vector is cheaper than hashing the name.
#[derive(Debug, Default, Clone)]
struct SmallCounts<K, V>(Vec<(K, V)>);

impl<K, V: Default> SmallCounts<K, V> {
    /// The counter of `name`, created by `make` on first use.
    fn get_or_insert(&mut self, name: &str, make: impl FnOnce() -> K) -> &mut V
    where
        K: AsRef<str>,
    {
        let i = match self.0.iter().position(|(k, _)| k.as_ref() == name) {
            Some(i) => i,
            None => {
                self.0.push((make(), V::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<K: AsRef<str>> SmallCounts<K, u64> {
    /// The counts, each passed through `scale`, largest first.
    fn ranked(&self, scale: impl Fn(u64) -> u64) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .0
            .iter()
            .map(|(k, c)| (k.as_ref().to_string(), scale(*c)))
            .collect();
        v.sort_by_key(|x| Reverse(x.1));
        v
    }
}

use crate::args::Args;
use crate::pattern::PatternInferrer;
use crate::report::{
    EncodingCandidate, ExpirySpike, KeyEntry, KeyspaceReport, PatternStats, SizeBucket,
    SizePercentiles, TypeBytes,
};

/// Distinct patterns kept; the rest go to `(other)`.
pub const MAX_PATTERNS: usize = 1000;
/// First-segment groups (`page:*`) allowed past [`MAX_PATTERNS`] before `(other)`.
pub const MAX_OVERFLOW_PREFIXES: usize = 100;
/// The longest part of a key name the analysis keeps (for its pattern, the largest key of a
/// pattern and the top lists). Names can be up to 512 MB; past this the rest is left out and
/// the kept part ends with `…`, so an analysis holds at most this much per name it keeps.
pub const MAX_KEPT_NAME: usize = 1024;

/// `name` as the analysis keeps it (see [`MAX_KEPT_NAME`]).
fn kept_name(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if name.len() <= MAX_KEPT_NAME {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut kept = name[..MAX_KEPT_NAME].to_vec();
    kept.extend_from_slice("…".as_bytes());
    std::borrow::Cow::Owned(kept)
}

/// Default number of random keys in SAMPLES mode.
pub const DEFAULT_SAMPLES: u64 = 10_000;

/// Every key, or random samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every key: exact.
    Full,
    /// This many random keys, extrapolated.
    Samples(u64),
}

/// A parsed `OPT.KEYSPACE` analysis request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyspaceQuery {
    /// FULL or SAMPLES n.
    pub mode: Mode,
    /// MATCH glob, compiled.
    pub glob: Option<Glob>,
    /// TYPE filter: a built-in type (`string`, `hash`...), `module` (every module data type) or
    /// one module data type by its name (`vectorset`, `ReJSON-RL`...).
    pub type_filter: Option<String>,
    /// DB n (None: the client's db).
    pub db: Option<u64>,
    /// TOP n.
    pub top: usize,
    /// DELIMITERS chars (None: `opt.key-delimiters`).
    pub delimiters: Option<Vec<u8>>,
}

impl KeyspaceQuery {
    /// Whether a key named `name` passes MATCH.
    pub fn name_matches(&self, name: &[u8]) -> bool {
        self.glob.as_ref().is_none_or(|g| g.matches(name))
    }

    /// Whether a key of type `type_name` passes TYPE. `type_name` is a built-in type, a module
    /// data type's name, or `module` for a key of a module type not named yet, which may be
    /// the one a `TYPE <module type>` filter asks for (see [`Self::type_matches_named`]).
    pub fn type_matches(&self, type_name: &str) -> bool {
        let Some(filter) = self.type_filter.as_deref() else {
            return true;
        };
        filter == type_name
            || (filter == "module" && !BUILTIN_TYPES.contains(&type_name))
            || (type_name == "module" && !BUILTIN_TYPES.contains(&filter))
    }

    /// [`Self::type_matches`] for a key whose type is settled: a module key whose type could
    /// not be named (`module`) does not pass a filter that names one module type.
    pub fn type_matches_named(&self, type_name: &str) -> bool {
        self.type_matches(type_name)
            && !(type_name == "module"
                && self.type_filter.as_deref().is_some_and(|f| f != "module"))
    }
}

/// What `OPT.KEYSPACE ...` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyspaceCommand {
    /// Run an analysis.
    Run(KeyspaceQuery),
    /// `OPT.KEYSPACE STATUS`: progress of running analyses.
    Status,
    /// `OPT.KEYSPACE CANCEL [id]`: cancel one (or every) running analysis.
    Cancel(Option<u64>),
}

const TYPES: &[&str] = &["string", "list", "set", "zset", "hash", "stream", "module"];

/// The server's own types, as TYPE names them.
const BUILTIN_TYPES: &[&str] = &["string", "list", "set", "zset", "hash", "stream"];

/// Whether `name` can be a module data type's name: `RedisModule_CreateDataType` takes exactly
/// 9 characters from A-Z, a-z, 0-9, `-` and `_` (`vectorset`, `ReJSON-RL`, `MBbloom--`), so no
/// such name is also a built-in type's.
pub fn is_module_type_name(name: &[u8]) -> bool {
    name.len() == 9
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a set member could be stored in an intset: the canonical decimal form of a 64-bit
/// integer (`string2ll`'s rule: no sign but `-`, no leading zero, no spaces).
pub fn is_intset_member(member: &[u8]) -> bool {
    std::str::from_utf8(member)
        .ok()
        .and_then(|t| t.parse::<i64>().ok().map(|v| v.to_string() == t))
        .unwrap_or(false)
}

/// The TYPE filter named by `raw`: a built-in type or `module` (any case), or one module data
/// type by its exact name.
fn type_filter(raw: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(raw);
    if let Some(t) = TYPES.iter().find(|t| t.eq_ignore_ascii_case(&text)) {
        return Ok((*t).to_string());
    }
    if is_module_type_name(raw) {
        return Ok(text.into_owned());
    }
    Err(format!(
        "OPT.KEYSPACE TYPE must be one of {} or a module data type's 9-character name \
         (as TYPE replies: vectorset, ReJSON-RL...), got '{text}'",
        TYPES.join("|")
    ))
}

/// Parses the arguments of `OPT.KEYSPACE`; `databases` is the server's db count.
pub fn parse_command(raw: &[&[u8]], databases: u64) -> Result<KeyspaceCommand, String> {
    match raw
        .first()
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
    {
        Some(w) if w == "STATUS" && raw.len() == 1 => return Ok(KeyspaceCommand::Status),
        Some(w) if w == "CANCEL" => {
            let mut a = Args::new("OPT.KEYSPACE", &raw[1..]);
            let id = match a.next_arg() {
                None => None,
                Some(_) => {
                    let mut b = Args::new("OPT.KEYSPACE", &raw[1..]);
                    Some(b.int_value("CANCEL", 1, i64::MAX)? as u64)
                }
            };
            if raw.len() > 2 {
                return Err("OPT.KEYSPACE CANCEL takes at most one id".into());
            }
            return Ok(KeyspaceCommand::Cancel(id));
        }
        _ => {}
    }
    let mut args = Args::new("OPT.KEYSPACE", raw);
    let mut q = KeyspaceQuery {
        mode: Mode::Samples(DEFAULT_SAMPLES),
        glob: None,
        type_filter: None,
        db: None,
        top: 10,
        delimiters: None,
    };
    let mut mode_word: Option<String> = None;
    while let Some(word) = args.next_keyword() {
        if word == "SAMPLES" || word == "FULL" {
            if let Some(first) = mode_word.replace(word.clone()) {
                return Err(format!(
                    "OPT.KEYSPACE takes one of SAMPLES n or FULL, got {first} and {word}"
                ));
            }
        }
        match word.as_str() {
            "SAMPLES" => q.mode = Mode::Samples(args.int_value("SAMPLES", 1, 10_000_000)? as u64),
            "FULL" => q.mode = Mode::Full,
            "MATCH" => {
                q.glob = Some(Glob::compile(args.value("MATCH")?)?);
            }
            "TYPE" => q.type_filter = Some(type_filter(args.value("TYPE")?)?),
            "DB" => q.db = Some(args.int_value("DB", 0, databases as i64 - 1)? as u64),
            "TOP" => q.top = args.int_value("TOP", 1, 1000)? as usize,
            "DELIMITERS" => {
                let d = args.value("DELIMITERS")?;
                if d.is_empty() || d.len() > 8 || !d.iter().all(|b| b.is_ascii_punctuation()) {
                    return Err(format!(
                        "OPT.KEYSPACE DELIMITERS must be 1 to 8 punctuation characters, got '{}'",
                        String::from_utf8_lossy(d)
                    ));
                }
                q.delimiters = Some(d.to_vec());
            }
            _ => return Err(args.unknown(&word)),
        }
    }
    Ok(KeyspaceCommand::Run(q))
}

/// How long after the last client command between slices the analysis keeps its slices short.
pub const CLIENTS_ACTIVE_FOR_MS: u64 = 100;

/// The shortest slice, in microseconds (the configuration's floor too).
pub const MIN_SLICE_US: u64 = 100;

/// The main-thread time of the next analysis slice, in microseconds.
///
/// `max_us` is `opt.scan-slice-us`; `since_clients_ms` is how long ago client commands last
/// ran between two slices (None: not since the analysis started). A command that arrives
/// during a slice waits for the rest of it, so while clients are active the slices are half
/// as long (their latency halves, the analysis takes a few percent longer); on an idle server
/// the analysis runs full slices and ends sooner.
pub fn slice_budget_us(max_us: u64, since_clients_ms: Option<u64>) -> u64 {
    let max_us = max_us.max(MIN_SLICE_US);
    match since_clients_ms {
        Some(ms) if ms < CLIENTS_ACTIVE_FOR_MS => (max_us / 2).max(MIN_SLICE_US),
        _ => max_us,
    }
}

/// What the module learns about one key.
#[derive(Debug, Clone, Copy)]
pub struct KeyFacts<'a> {
    /// Key name.
    pub name: &'a [u8],
    /// `string`, `hash`...
    pub type_name: &'static str,
    /// `embstr`, `listpack`... (may be empty when unknown).
    pub encoding: &'a str,
    /// Bytes, as MEMORY USAGE reports.
    pub bytes: u64,
    /// Elements (bytes for strings).
    pub length: u64,
    /// Milliseconds to live, None without TTL.
    pub ttl_ms: Option<i64>,
    /// Idle seconds (LRU), None when unknown (LFU policy).
    pub idle_s: Option<u64>,
    /// The LFU access counter (0 to 255, logarithmic, decayed by the server), under an LFU
    /// policy only.
    pub lfu: Option<u8>,
    /// Now, Unix ms (to place expiries in time).
    pub now_ms: i64,
    /// For a set in its hashtable encoding whose size is just above `set-max-intset-entries`:
    /// whether its members are integers (the module reads one), which decides whether that
    /// threshold is what keeps it out of the compact encoding. None otherwise.
    pub integer_members: Option<bool>,
}

#[derive(Debug, Clone, Default)]
struct PatternAcc {
    /// Names of this pattern drawn in the name phase of SAMPLES (see [`Aggregator::add_name`]).
    names: u64,
    keys: u64,
    bytes: u64,
    sum_sq: f64,
    largest: (u64, Vec<u8>),
    types: SmallCounts<&'static str, u64>,
    encodings: SmallCounts<String, u64>,
    ttl: [u64; 6],
    idle: [u64; 5],
    lfu: [u64; 5],
}

/// Compact-encoding thresholds of the server (from CONFIG at the start of an analysis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// `hash-max-listpack-entries`.
    pub hash_entries: u64,
    /// `zset-max-listpack-entries`.
    pub zset_entries: u64,
    /// `set-max-intset-entries`.
    pub set_intset_entries: u64,
    /// `set-max-listpack-entries` (Redis 7.2+, Valkey); None where sets of strings have no
    /// compact encoding (Redis 7.0) or CONFIG cannot be read.
    pub set_listpack_entries: Option<u64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        // Redis 7.0's defaults.
        Thresholds {
            hash_entries: 512,
            zset_entries: 128,
            set_intset_entries: 512,
            set_listpack_entries: None,
        }
    }
}

/// The threshold whose raising would give the collection `k` its compact encoding, when it is
/// in its big encoding and just above that threshold (at most twice it). A collection under
/// the entry thresholds is big for another reason (a long element: `*-max-listpack-value`;
/// members that are not integers, on Redis 7.0; field TTLs, on Valkey 9), which no entry
/// threshold changes, so it is no candidate.
fn encoding_candidate(th: &Thresholds, k: &KeyFacts) -> Option<&'static str> {
    let just_above = |threshold: u64| k.length > threshold && k.length <= 2 * threshold;
    match (k.type_name, k.encoding) {
        ("hash", "hashtable") if just_above(th.hash_entries) => Some("hash-max-listpack-entries"),
        ("zset", "skiplist") if just_above(th.zset_entries) => Some("zset-max-listpack-entries"),
        ("set", "hashtable") => {
            if k.integer_members == Some(true) && just_above(th.set_intset_entries) {
                Some("set-max-intset-entries")
            } else if k.integer_members != Some(true)
                && th.set_listpack_entries.is_some_and(just_above)
            {
                Some("set-max-listpack-entries")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Collects key facts into a report.
#[derive(Debug)]
pub struct Aggregator {
    inferrer: PatternInferrer,
    buf: Vec<u8>,
    patterns: FastMap<Vec<u8>, PatternAcc>,
    other: PatternAcc,
    types: SmallCounts<&'static str, (u64, u64)>,
    /// Log-linear size histogram, 16 sub-buckets per power of two: keys and their bytes.
    sizes: Vec<(u64, u64)>,
    max_size: u64,
    top_bytes: TopHeap,
    top_length: TopHeap,
    top: usize,
    expiry_hours: [u64; 24],
    /// Keys expiring in each second of the next 24 hours (at most 86,400 entries).
    expiry_seconds: FastMap<u64, u64>,
    thresholds: Thresholds,
    candidates: FastMap<&'static str, (u64, u64, u64)>,
    keys: u64,
    bytes: u64,
    /// Random names drawn in the name phase of SAMPLES, matching or not.
    name_draws: u64,
    /// The name whose pattern `buf` holds after [`Aggregator::keys_of_pattern`], so that the
    /// [`Aggregator::add`] of the same key does not infer it again.
    prepared: Vec<u8>,
}

/// A pattern's bytes under two-phase sampling, and the half-width of their 95% interval.
/// bytes = N * W * mean, with N the database's keys, W the pattern's share of the `draws`
/// names and mean the average of its measured sizes: the variance is N^2 (W^2 var(size) /
/// keys + mean^2 W (1 - W) / draws). The pattern must have measured keys.
fn sampled_estimate(a: &PatternAcc, draws: f64, total_keys: f64) -> (f64, f64) {
    let k = a.keys.max(1) as f64;
    let mean = a.bytes as f64 / k;
    let var = (a.sum_sq / k - mean * mean).max(0.0);
    let w = (a.names + a.keys) as f64 / draws;
    let v = w * w * var / k + mean * mean * w * (1.0 - w) / draws;
    (total_keys * w * mean, 1.96 * total_keys * v.sqrt())
}

fn size_bucket(v: u64) -> usize {
    if v < 16 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as usize; // >= 4
    let sub = ((v >> (exp - 4)) & 15) as usize;
    (exp - 3) * 16 + sub
}

/// The LFU bucket of an access counter: below 5 (decayed below the counter a new key starts
/// with: not read lately), 5 to 9 (new, or read now and then), 10 to 19, 20 to 99, and 100 or
/// more (read hundreds of thousands of times at the default `lfu-log-factor` 10).
pub fn lfu_bucket(counter: u8) -> usize {
    match counter {
        0..=4 => 0,
        5..=9 => 1,
        10..=19 => 2,
        20..=99 => 3,
        _ => 4,
    }
}

/// Ranges of the key-size histogram: 16 for the sizes below 16 bytes, then 16 to each power
/// of two up to 2^63.
const SIZE_BUCKETS: usize = 64 * 16;

/// The percentiles of a key-size histogram (ranges in increasing order), each the lower bound
/// of the range it falls in and at most `max`: at most 1/16 below the true value. The
/// aggregator and the merge of a cluster's reports both take theirs from here.
pub fn size_percentiles(histogram: &[SizeBucket], max: u64) -> SizePercentiles {
    let keys: u64 = histogram.iter().map(|b| b.keys).sum();
    let at = |q: f64| {
        let target = ((keys as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for b in histogram {
            seen += b.keys;
            if seen >= target {
                return b.from_bytes.min(max);
            }
        }
        max
    };
    if keys == 0 {
        return SizePercentiles {
            max,
            ..SizePercentiles::default()
        };
    }
    SizePercentiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max,
    }
}

fn bucket_floor(b: usize) -> u64 {
    if b < 16 {
        return b as u64;
    }
    let exp = b / 16 + 3;
    let sub = (b % 16) as u64;
    (16 + sub) << (exp - 4)
}

impl Aggregator {
    /// The compact-encoding thresholds this aggregator judges collections by.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Whether a set of `length` members needs [`KeyFacts::integer_members`] to be judged: it
    /// is just above `set-max-intset-entries`.
    pub fn wants_member_kind(&self, length: u64) -> bool {
        let t = self.thresholds.set_intset_entries;
        length > t && length <= 2 * t
    }

    /// An aggregator splitting names on `delimiters`, keeping the `top` largest keys.
    pub fn new(delimiters: &[u8], top: usize, thresholds: Thresholds) -> Self {
        Aggregator {
            inferrer: PatternInferrer::new(delimiters),
            buf: Vec::with_capacity(64),
            patterns: FastMap::default(),
            other: PatternAcc::default(),
            types: SmallCounts::default(),
            sizes: vec![(0, 0); SIZE_BUCKETS],
            max_size: 0,
            top_bytes: BinaryHeap::new(),
            top_length: BinaryHeap::new(),
            top,
            expiry_hours: [0; 24],
            expiry_seconds: FastMap::default(),
            thresholds,
            candidates: FastMap::default(),
            keys: 0,
            bytes: 0,
            name_draws: 0,
            prepared: Vec::new(),
        }
    }

    /// An empty aggregator with this one's delimiters, top size and thresholds: what an
    /// analysis that starts over aggregates into.
    pub fn restarted(&self) -> Self {
        let mut fresh = Aggregator::new(b"", self.top, self.thresholds);
        fresh.inferrer = self.inferrer.clone();
        fresh
    }

    /// Infers `name`'s pattern into `self.buf`. Past the pattern bound a new pattern is folded
    /// into its first segment (`page:*`) while there is room for those, so big keys are not
    /// lost in `(other)`.
    fn infer_pattern(&mut self, name: &[u8]) {
        self.prepared.clear();
        let name = &name[..name.len().min(MAX_KEPT_NAME)];
        self.inferrer.infer_into(name, &mut self.buf);
        if self.patterns.len() >= MAX_PATTERNS && !self.patterns.contains_key(&self.buf) {
            let cut = self.buf.iter().position(|&b| self.inferrer.is_delimiter(b));
            if let Some(i) = cut {
                self.buf.truncate(i + 1);
                self.buf.extend_from_slice(b"*");
            }
        }
    }

    /// Counts one random name drawn in the name phase of SAMPLES: a cheap draw (no value is
    /// read) that only says which pattern the name belongs to. `matched` is false when the key
    /// fails MATCH or TYPE. Many such draws pin down each pattern's share of the keys far
    /// better than the fully measured samples alone, which then only have to estimate each
    /// pattern's average size (two-phase sampling, see [`Aggregator::finish`]).
    pub fn add_name(&mut self, name: &[u8], matched: bool) {
        self.name_draws += 1;
        if !matched {
            return;
        }
        self.infer_pattern(name);
        if let Some(a) = self.patterns.get_mut(&self.buf) {
            a.names += 1;
        } else if self.patterns.len() < MAX_PATTERNS + MAX_OVERFLOW_PREFIXES {
            self.patterns.entry(self.buf.clone()).or_default().names += 1;
        } else {
            self.other.names += 1;
        }
    }

    /// Keys added so far.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// SAMPLES, while it runs: the widest 95% interval of a pattern's bytes, relative to its
    /// bytes, among the patterns holding at least `min_share` of the estimated memory (0 when
    /// none does yet). `db_keys` is the database size and `scanned` the keys measured, as
    /// [`Aggregator::finish`] takes them, which gives the same intervals.
    pub fn widest_sampled_ci(&self, db_keys: u64, scanned: u64, min_share: f64) -> f64 {
        let draws = (self.name_draws + scanned).max(1) as f64;
        let total_keys = db_keys as f64;
        let total = self.sampled_total_bytes(draws, total_keys);
        if total <= 0.0 {
            return 0.0;
        }
        self.patterns
            .values()
            .chain(std::iter::once(&self.other))
            .filter(|a| a.keys > 0)
            .map(|a| sampled_estimate(a, draws, total_keys))
            .filter(|&(bytes, _)| bytes > 0.0 && bytes / total >= min_share)
            .map(|(bytes, ci)| ci / bytes)
            .fold(0.0, f64::max)
    }

    /// The estimated bytes of all patterns under two-phase sampling, from `draws` names and
    /// a database of `total_keys`. Patterns only the name phase saw are counted at the
    /// average size of all measured keys.
    fn sampled_total_bytes(&self, draws: f64, total_keys: f64) -> f64 {
        let mean_bytes = self.bytes as f64 / self.keys.max(1) as f64;
        self.patterns
            .values()
            .chain(std::iter::once(&self.other))
            .map(|a| match a.keys {
                0 => total_keys * (a.names as f64 / draws) * mean_bytes,
                _ => sampled_estimate(a, draws, total_keys).0,
            })
            .sum()
    }

    /// How many keys of `name`'s pattern were added so far. The pattern inferred here is
    /// reused by an [`Self::add`] of the same name that follows.
    pub fn keys_of_pattern(&mut self, name: &[u8]) -> u64 {
        self.infer_pattern(name);
        self.prepared.extend_from_slice(name);
        match self.patterns.get(&self.buf) {
            Some(a) => a.keys,
            None if self.patterns.len() < MAX_PATTERNS + MAX_OVERFLOW_PREFIXES => 0,
            // Past the bound the key goes to `(other)`.
            None => self.other.keys,
        }
    }

    /// Adds one key.
    pub fn add(&mut self, k: &KeyFacts) {
        if self.prepared != k.name {
            self.infer_pattern(k.name);
        }
        self.prepared.clear();
        self.keys += 1;
        self.bytes += k.bytes;
        let name = kept_name(k.name);
        // Below the bound (the common case) one lookup is enough.
        let acc = if let Some(a) = self.patterns.get_mut(&self.buf) {
            a
        } else if self.patterns.len() < MAX_PATTERNS + MAX_OVERFLOW_PREFIXES {
            self.patterns.entry(self.buf.clone()).or_default()
        } else {
            &mut self.other
        };
        acc.keys += 1;
        acc.bytes += k.bytes;
        acc.sum_sq += (k.bytes as f64) * (k.bytes as f64);
        // Ties go to the smaller name, so the result does not depend on the scan's order.
        if acc.largest.1.is_empty()
            || (k.bytes, Reverse(&*name)) > (acc.largest.0, Reverse(&acc.largest.1[..]))
        {
            acc.largest = (k.bytes, name.to_vec());
        }
        *acc.types.get_or_insert(k.type_name, || k.type_name) += 1;
        if !k.encoding.is_empty() {
            *acc.encodings
                .get_or_insert(k.encoding, || k.encoding.to_string()) += 1;
        }
        let ttl_bucket = match k.ttl_ms {
            None => 0,
            Some(t) if t < 60_000 => 1,
            Some(t) if t < 3_600_000 => 2,
            Some(t) if t < 86_400_000 => 3,
            Some(t) if t < 604_800_000 => 4,
            Some(_) => 5,
        };
        acc.ttl[ttl_bucket] += 1;
        if let Some(idle) = k.idle_s {
            let b = match idle {
                i if i < 60 => 0,
                i if i < 3600 => 1,
                i if i < 86_400 => 2,
                i if i < 604_800 => 3,
                _ => 4,
            };
            acc.idle[b] += 1;
        }
        if let Some(counter) = k.lfu {
            acc.lfu[lfu_bucket(counter)] += 1;
        }
        let t = self.types.get_or_insert(k.type_name, || k.type_name);
        t.0 += 1;
        t.1 += k.bytes;
        let size = &mut self.sizes[size_bucket(k.bytes).min(SIZE_BUCKETS - 1)];
        size.0 += 1;
        size.1 += k.bytes;
        self.max_size = self.max_size.max(k.bytes);
        push_top(&mut self.top_bytes, self.top, k.bytes, &name, || {
            (k.bytes, Reverse(name.to_vec()), k.type_name, k.length)
        });
        push_top(&mut self.top_length, self.top, k.length, &name, || {
            (k.length, Reverse(name.to_vec()), k.type_name, k.bytes)
        });
        if let Some(ttl) = k.ttl_ms {
            let hour = (ttl.max(0) / 3_600_000) as usize;
            // Only the next 24 hours: that bounds the per-second counts at 86,400 entries,
            // where keys with TTLs spread over months would make one entry each.
            if hour < 24 {
                self.expiry_hours[hour] += 1;
                let second = ((k.now_ms + ttl.max(0)) / 1000) as u64;
                *self.expiry_seconds.entry(second).or_default() += 1;
            }
        }
        let candidate = encoding_candidate(&self.thresholds, k);
        if let Some(c) = candidate {
            let e = self.candidates.entry(c).or_default();
            e.0 += 1;
            e.1 += k.bytes;
            e.2 = e.2.max(k.length);
        }
    }

    /// The report. `db_keys` is the database size; in samples mode every count is scaled by
    /// `db_keys / keys sampled` and each pattern's bytes get a 95% confidence interval.
    pub fn finish(
        self,
        mode: Mode,
        db: u64,
        db_keys: u64,
        scanned: u64,
        elapsed_ms: u64,
    ) -> KeyspaceReport {
        let sampled = matches!(mode, Mode::Samples(_));
        let n = scanned.max(1) as f64;
        let scale = if sampled { db_keys as f64 / n } else { 1.0 };
        let s = |v: u64| (v as f64 * scale).round() as u64;
        // Two-phase sampling. A pattern's key count comes from every name drawn (the name phase
        // plus the measured samples), its average size from the measured samples alone, and
        // its bytes are their product. Without a name phase this is the plain extrapolation.
        let draws = (self.name_draws + scanned).max(1) as f64;
        let total_keys = db_keys as f64;
        let key_share = |a: &PatternAcc| (a.names + a.keys) as f64 / draws;
        let pattern_scale = |a: &PatternAcc| {
            if sampled {
                total_keys * key_share(a) / a.keys.max(1) as f64
            } else {
                1.0
            }
        };
        let all_accs = || self.patterns.values().chain(std::iter::once(&self.other));
        let (total_bytes, keys_matched) = if sampled {
            let bytes = self.sampled_total_bytes(draws, total_keys);
            let keys: f64 = all_accs().map(|a| total_keys * key_share(a)).sum();
            (bytes.round() as u64, keys.round() as u64)
        } else {
            (self.bytes, self.keys)
        };
        let mut patterns: Vec<PatternStats> = self
            .patterns
            .iter()
            .map(|(p, a)| (crate::report::display_name(p), a))
            .chain((self.other.keys > 0).then(|| ("(other)".to_string(), &self.other)))
            .filter(|(_, a)| a.keys > 0)
            .map(|(name, a)| {
                let scale = pattern_scale(a);
                let sp = |v: u64| (v as f64 * scale).round() as u64;
                let bytes = a.bytes as f64 * scale;
                let ci = if sampled {
                    sampled_estimate(a, draws, total_keys).1.round() as u64
                } else {
                    0
                };
                let types = a.types.ranked(sp);
                let encodings = a.encodings.ranked(sp);
                PatternStats {
                    pattern: name,
                    keys: sp(a.keys),
                    bytes: bytes.round() as u64,
                    bytes_ci95: ci,
                    share: if total_bytes > 0 {
                        bytes / total_bytes as f64
                    } else {
                        0.0
                    },
                    avg_bytes: a.bytes / a.keys,
                    largest_key: crate::report::display_name(&a.largest.1),
                    largest_bytes: a.largest.0,
                    types,
                    encodings,
                    ttl_buckets: a.ttl.map(sp),
                    idle_buckets: a.idle.map(sp),
                    lfu_buckets: a.lfu.map(sp),
                }
            })
            .collect();
        patterns.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then_with(|| a.pattern.cmp(&b.pattern))
        });
        let mut bytes_by_type: Vec<TypeBytes> = self
            .types
            .iter()
            .map(|(t, (k, b))| TypeBytes {
                r#type: t.to_string(),
                keys: s(*k),
                bytes: s(*b),
            })
            .collect();
        bytes_by_type.sort_by_key(|t| Reverse(t.bytes));
        let measured_sizes: Vec<SizeBucket> = self
            .sizes
            .iter()
            .enumerate()
            .filter(|(_, &(keys, _))| keys > 0)
            .map(|(b, &(keys, bytes))| SizeBucket {
                from_bytes: bucket_floor(b),
                keys,
                bytes,
            })
            .collect();
        let size_percentiles = size_percentiles(&measured_sizes, self.max_size);
        let size_histogram = measured_sizes
            .iter()
            .map(|b| SizeBucket {
                keys: s(b.keys),
                bytes: s(b.bytes),
                ..*b
            })
            .collect();
        let to_entries = |heap: TopHeap, by_len: bool| {
            let mut v: Vec<KeyEntry> = heap
                .into_iter()
                .map(|Reverse((a, Reverse(name), t, b))| KeyEntry {
                    key: crate::report::display_name(&name),
                    r#type: t.to_string(),
                    bytes: if by_len { b } else { a },
                    length: if by_len { a } else { b },
                })
                .collect();
            v.sort_by(|x, y| {
                let (kx, ky) = if by_len {
                    (x.length, y.length)
                } else {
                    (x.bytes, y.bytes)
                };
                ky.cmp(&kx).then_with(|| x.key.cmp(&y.key))
            });
            v
        };
        let worst = self
            .expiry_seconds
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(sec, n)| ExpirySpike {
                unix_second: *sec,
                keys: s(*n),
            });
        let th = self.thresholds;
        let mut encoding_candidates: Vec<EncodingCandidate> = self
            .candidates
            .iter()
            .map(|(config, (keys, bytes, longest))| {
                let current = match *config {
                    "hash-max-listpack-entries" => th.hash_entries,
                    "zset-max-listpack-entries" => th.zset_entries,
                    "set-max-listpack-entries" => th.set_listpack_entries.unwrap_or(0),
                    _ => th.set_intset_entries,
                };
                EncodingCandidate {
                    config: config.to_string(),
                    current,
                    suggested: longest.next_power_of_two().max(current * 2),
                    keys: s(*keys),
                    bytes: s(*bytes),
                    estimated_saving: s(*bytes) / 2,
                }
            })
            .collect();
        encoding_candidates.sort_by_key(|c| Reverse(c.bytes));
        KeyspaceReport {
            mode: if sampled { "samples" } else { "full" }.to_string(),
            db,
            db_keys,
            keys_scanned: scanned,
            names_drawn: self.name_draws,
            big_keys_measured_whole: 0,
            big_keys_pass_at: None,
            keys_matched,
            total_bytes,
            elapsed_ms,
            patterns,
            bytes_by_type,
            size_percentiles,
            size_histogram,
            top_by_bytes: to_entries(self.top_bytes, false),
            top_by_length: to_entries(self.top_length, true),
            expiring_per_hour: self.expiry_hours.map(s).to_vec(),
            worst_expiry_second: worst,
            encoding_candidates,
        }
    }
}

/// (ranking value, key name, type, the other measure). The name is reversed so that among
/// equal ranks the smaller name ranks higher: the list is then the same whatever order the
/// keys came in.
type TopItem = (u64, Reverse<Vec<u8>>, &'static str, u64);
type TopHeap = BinaryHeap<Reverse<TopItem>>;

/// Keeps the `n` largest by `rank`; the item (and its name copy) is built only if it enters.
/// A key already listed is not listed again: random sampling can draw the same key twice.
fn push_top(heap: &mut TopHeap, n: usize, rank: u64, name: &[u8], item: impl FnOnce() -> TopItem) {
    let enters = heap.len() < n
        || heap
            .peek()
            .is_some_and(|Reverse(min)| (rank, Reverse(name)) > (min.0, Reverse(&min.1 .0[..])));
    if !enters || heap.iter().any(|Reverse(x)| x.1 .0 == name) {
        return;
    }
    if heap.len() >= n {
        heap.pop();
    }
    heap.push(Reverse(item()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_half_as_long_while_clients_are_active() {
        assert_eq!(slice_budget_us(1000, None), 1000);
        assert_eq!(slice_budget_us(1000, Some(0)), 500);
        assert_eq!(slice_budget_us(1000, Some(CLIENTS_ACTIVE_FOR_MS - 1)), 500);
        assert_eq!(slice_budget_us(1000, Some(CLIENTS_ACTIVE_FOR_MS)), 1000);
        // Never below the floor, whatever the configuration says.
        assert_eq!(slice_budget_us(150, Some(1)), MIN_SLICE_US);
        assert_eq!(slice_budget_us(10, None), MIN_SLICE_US);
    }

    fn facts<'a>(
        name: &'a str,
        t: &'static str,
        enc: &'a str,
        bytes: u64,
        len: u64,
        ttl: Option<i64>,
    ) -> KeyFacts<'a> {
        KeyFacts {
            name: name.as_bytes(),
            type_name: t,
            encoding: enc,
            bytes,
            length: len,
            ttl_ms: ttl,
            idle_s: Some(10),
            lfu: None,
            now_ms: 1_000_000,
            integer_members: None,
        }
    }

    /// A collection in its big encoding is a candidate only for the threshold it is just
    /// above: not when it is under every entry threshold (a long element made it big), and a
    /// set only for the threshold of its kind of members.
    #[test]
    fn encoding_candidates_only_where_an_entry_threshold_is_the_cause() {
        let candidates = |th: Thresholds, keys: &[KeyFacts]| {
            let mut agg = Aggregator::new(b":", 10, th);
            for k in keys {
                agg.add(k);
            }
            let r = agg.finish(Mode::Full, 0, keys.len() as u64, keys.len() as u64, 1);
            let mut c: Vec<(String, u64, u64, u64)> = r
                .encoding_candidates
                .into_iter()
                .map(|c| (c.config, c.current, c.suggested, c.keys))
                .collect();
            c.sort();
            c
        };
        let set = |name, len, integers| KeyFacts {
            integer_members: integers,
            ..facts(name, "set", "hashtable", 10_000, len, None)
        };
        let redis70 = Thresholds::default();
        let keys = [
            // Hashes and sorted sets under their thresholds: a long value made them big.
            facts("h:1", "hash", "hashtable", 5_000, 3, None),
            facts("z:1", "zset", "skiplist", 5_000, 100, None),
            // Just above, and far above.
            facts("h:2", "hash", "hashtable", 50_000, 600, None),
            facts("z:2", "zset", "skiplist", 50_000, 200, None),
            facts("h:3", "hash", "hashtable", 500_000, 5_000, None),
            // Sets of strings of any size have no compact encoding on Redis 7.0; integers
            // just above set-max-intset-entries do.
            set("s:1", 3, Some(false)),
            set("s:2", 600, Some(false)),
            set("s:3", 600, Some(true)),
            set("s:4", 2_000, Some(true)),
        ];
        assert_eq!(
            candidates(redis70, &keys),
            [
                ("hash-max-listpack-entries".to_string(), 512, 1024, 1),
                ("set-max-intset-entries".to_string(), 512, 1024, 1),
                ("zset-max-listpack-entries".to_string(), 128, 256, 1),
            ]
        );
        // Redis 7.2+: sets of strings just above set-max-listpack-entries are candidates too.
        let redis72 = Thresholds {
            set_listpack_entries: Some(128),
            ..Thresholds::default()
        };
        let sets = [
            set("s:1", 100, Some(false)),
            set("s:2", 200, Some(false)),
            set("s:3", 600, Some(true)),
            set("s:4", 600, Some(false)),
        ];
        assert_eq!(
            candidates(redis72, &sets),
            [
                ("set-max-intset-entries".to_string(), 512, 1024, 1),
                ("set-max-listpack-entries".to_string(), 128, 256, 1),
            ]
        );
    }

    #[test]
    fn lfu_counters_are_bucketed_per_pattern() {
        let mut agg = Aggregator::new(b":", 5, Thresholds::default());
        for (i, counter) in [0u8, 4, 5, 9, 10, 19, 20, 99, 100, 255]
            .into_iter()
            .enumerate()
        {
            agg.add(&KeyFacts {
                idle_s: None,
                lfu: Some(counter),
                ..facts(&format!("item:{i}"), "string", "embstr", 60, 10, None)
            });
        }
        let r = agg.finish(Mode::Full, 0, 10, 10, 1);
        assert_eq!(r.patterns[0].lfu_buckets, [2, 2, 2, 2, 2]);
        assert_eq!(r.patterns[0].idle_buckets, [0; 5]);
        // Under LRU the counters stay empty.
        let mut agg = Aggregator::new(b":", 5, Thresholds::default());
        agg.add(&facts("item:1", "string", "embstr", 60, 10, None));
        let r = agg.finish(Mode::Full, 0, 1, 1, 1);
        assert_eq!(
            (r.patterns[0].lfu_buckets, r.patterns[0].idle_buckets[0]),
            ([0; 5], 1)
        );
    }

    #[test]
    fn keys_are_counted_per_pattern_before_they_are_added() {
        let mut counted = Aggregator::new(b":", 5, Thresholds::default());
        let mut plain = Aggregator::new(b":", 5, Thresholds::default());
        for i in 0..50u64 {
            let name = if i % 5 == 0 {
                format!("visits:{i}")
            } else {
                format!("user:{i}:profile")
            };
            let expected = if i % 5 == 0 { i / 5 } else { i - i / 5 - 1 };
            assert_eq!(counted.keys_of_pattern(name.as_bytes()), expected, "{name}");
            let f = facts(&name, "string", "embstr", 50 + i, 10, None);
            counted.add(&f);
            plain.add(&f);
        }
        let mode = Mode::Full;
        assert_eq!(
            counted.finish(mode, 0, 50, 50, 1),
            plain.finish(mode, 0, 50, 50, 1)
        );
    }

    /// TYPE names a built-in type in any case, every module type as `module`, or one module
    /// type by its exact name; a key of a module type not named yet may pass a filter of one
    /// module type until it is named.
    #[test]
    fn type_filters_of_module_types() {
        let query = |t: &str| {
            let raw: Vec<&[u8]> = vec![b"TYPE", t.as_bytes()];
            match parse_command(&raw, 16) {
                Ok(KeyspaceCommand::Run(q)) => q,
                other => panic!("TYPE {t}: {other:?}"),
            }
        };
        let hash = query("HASH");
        assert_eq!(hash.type_filter.as_deref(), Some("hash"));
        assert!(hash.type_matches("hash"));
        assert!(!hash.type_matches("module") && !hash.type_matches("vectorset"));

        let any_module = query("module");
        for t in ["module", "vectorset", "ReJSON-RL"] {
            assert!(
                any_module.type_matches(t) && any_module.type_matches_named(t),
                "{t}"
            );
        }
        assert!(!any_module.type_matches("string"));

        let vectors = query("vectorset");
        assert_eq!(vectors.type_filter.as_deref(), Some("vectorset"));
        assert!(vectors.type_matches("vectorset") && vectors.type_matches_named("vectorset"));
        assert!(!vectors.type_matches("ReJSON-RL"));
        assert!(!vectors.type_matches("zset"));
        // Not named yet: kept until it is; never kept once settled unnamed.
        assert!(vectors.type_matches("module"));
        assert!(!vectors.type_matches_named("module"));
        // Module type names are case-sensitive, as TYPE replies them.
        assert_eq!(query("ReJSON-RL").type_filter.as_deref(), Some("ReJSON-RL"));
        assert!(!query("rejson-rl").type_matches("ReJSON-RL"));
        assert!(is_module_type_name(b"MBbloom--") && !is_module_type_name(b"hash"));
        for (member, integer) in [
            (&b"42"[..], true),
            (b"-9223372036854775808", true),
            (b"9223372036854775808", false),
            (b"042", false),
            (b"+1", false),
            (b" 1", false),
            (b"", false),
            (b"user:1", false),
        ] {
            assert_eq!(is_intset_member(member), integer, "{member:?}");
        }
    }

    #[test]
    fn parses_and_refuses_bad_input() {
        let p = |a: &[&str]| {
            let raw: Vec<&[u8]> = a.iter().map(|s| s.as_bytes()).collect();
            parse_command(&raw, 16)
        };
        assert_eq!(p(&["STATUS"]), Ok(KeyspaceCommand::Status));
        assert_eq!(p(&["CANCEL"]), Ok(KeyspaceCommand::Cancel(None)));
        assert_eq!(p(&["CANCEL", "3"]), Ok(KeyspaceCommand::Cancel(Some(3))));
        let Ok(KeyspaceCommand::Run(q)) = p(&[
            "FULL", "MATCH", "user:*", "TYPE", "hash", "DB", "3", "TOP", "5",
        ]) else {
            panic!()
        };
        assert_eq!((q.mode, q.db, q.top), (Mode::Full, Some(3), 5));
        assert!(p(&["SAMPLES", "0"])
            .unwrap_err()
            .contains("SAMPLES must be from 1"));
        assert!(p(&["MATCH", "user:[abc"])
            .unwrap_err()
            .contains("without its ']'"));
        assert!(p(&["MATCH", "x\\"]).unwrap_err().contains("backslash"));
        assert!(p(&["FULL", "SAMPLES", "10"])
            .unwrap_err()
            .contains("one of SAMPLES n or FULL, got FULL and SAMPLES"));
        assert!(p(&["SAMPLES", "10", "SAMPLES", "20"])
            .unwrap_err()
            .contains("got SAMPLES and SAMPLES"));
        assert!(p(&["DB", "16"])
            .unwrap_err()
            .contains("DB must be from 0 to 15"));
        assert!(p(&["TYPE", "blob"])
            .unwrap_err()
            .contains("TYPE must be one of"));
        // Ten characters, and a character no module type name has.
        assert!(p(&["TYPE", "vectorsets"]).is_err());
        assert!(p(&["TYPE", "vector:et"]).is_err());
        assert!(p(&["NOPE"]).unwrap_err().contains("unknown option 'NOPE'"));
        assert!(p(&["DELIMITERS", "ab"]).is_err());
    }

    /// A key name of megabytes is kept as its first `MAX_KEPT_NAME` bytes and `…`: in the top
    /// lists, as its pattern's largest key, and for its pattern.
    #[test]
    fn huge_names_are_kept_cut() {
        let mut a = Aggregator::new(b":", 3, Thresholds::default());
        let huge = format!("blob:{}", "x".repeat(5_000_000));
        a.add(&facts(&huge, "string", "raw", 6_000_000, 5_000_000, None));
        a.add(&facts(&huge, "string", "raw", 6_000_000, 5_000_000, None));
        let r = a.finish(Mode::Full, 0, 2, 2, 2);
        let shown = &r.top_by_bytes[0].key;
        assert_eq!(r.top_by_bytes.len(), 1, "the same name is not listed twice");
        assert_eq!(shown.len(), MAX_KEPT_NAME + "…".len());
        assert!(shown.starts_with("blob:xxx") && shown.ends_with('…'));
        assert_eq!(&r.patterns[0].largest_key, shown);
        assert!(r.patterns[0].pattern.len() <= MAX_KEPT_NAME);
    }

    /// Keys of equal size in any order give the same report: a pattern's largest key and the
    /// top lists break ties by name, so a scan that met the keys in another order (a rehash,
    /// shorter slices) reports the same thing.
    #[test]
    fn ties_are_broken_by_name_whatever_the_order() {
        let names: Vec<String> = (0..200)
            .map(|i| format!("item:{}", (i * 7919) % 1000))
            .collect();
        let report = |order: &mut dyn Iterator<Item = &String>| {
            let mut a = Aggregator::new(b":", 5, Thresholds::default());
            for name in order {
                a.add(&facts(name, "string", "raw", 100, 10, None));
            }
            a.finish(Mode::Full, 0, 200, 200, 0)
        };
        let forward = report(&mut names.iter());
        let backward = report(&mut names.iter().rev());
        assert_eq!(forward, backward);
        assert_eq!(forward.patterns[0].largest_key, "item:0");
        let top: Vec<&str> = forward
            .top_by_bytes
            .iter()
            .map(|k| k.key.as_str())
            .collect();
        assert_eq!(
            top,
            ["item:0", "item:109", "item:112", "item:115", "item:118"]
        );
    }

    /// Expiries past the next 24 hours count nowhere per second, so TTLs spread over months
    /// cannot grow the per-second counts with the keyspace.
    #[test]
    fn per_second_expiry_counts_keep_to_the_next_day() {
        let mut a = Aggregator::new(b":", 3, Thresholds::default());
        let day_ms = 86_400_000;
        for i in 0..500i64 {
            let name = format!("far:{i}");
            a.add(&facts(
                &name,
                "string",
                "embstr",
                50,
                5,
                Some(day_ms + i * 1000),
            ));
        }
        for i in 0..3 {
            let name = format!("near:{i}");
            a.add(&facts(&name, "string", "embstr", 50, 5, Some(5_000)));
        }
        assert_eq!(a.expiry_seconds.len(), 1);
        let r = a.finish(Mode::Full, 0, 503, 503, 5);
        assert_eq!(r.worst_expiry_second.unwrap().keys, 3);
        assert_eq!(r.expiring_per_hour.iter().sum::<u64>(), 3);
    }

    #[test]
    fn full_report_groups_by_pattern() {
        let mut a = Aggregator::new(b":", 3, Thresholds::default());
        for i in 0..100 {
            let name = format!("user:{i}:profile");
            a.add(&facts(&name, "hash", "listpack", 200, 5, None));
        }
        for i in 0..50 {
            let name = format!("session:{i:08x}");
            a.add(&facts(&name, "string", "embstr", 80, 20, Some(30_000 + i)));
        }
        a.add(&facts(
            "big:report",
            "string",
            "raw",
            1_000_000,
            999_000,
            Some(7_200_000),
        ));
        a.add(&facts("h:tall", "hash", "hashtable", 20_000, 600, None));
        let r = a.finish(Mode::Full, 0, 152, 152, 5);
        assert_eq!(r.total_bytes, 100 * 200 + 50 * 80 + 1_000_000 + 20_000);
        assert_eq!(r.patterns[0].pattern, "big:report");
        let user = r
            .patterns
            .iter()
            .find(|p| p.pattern == "user:*:profile")
            .unwrap();
        assert_eq!(
            (user.keys, user.bytes, user.avg_bytes, user.ttl_buckets[0]),
            (100, 20_000, 200, 100)
        );
        let sess = r
            .patterns
            .iter()
            .find(|p| p.pattern == "session:*")
            .unwrap();
        assert_eq!(sess.ttl_buckets[1], 50, "TTLs under a minute");
        assert_eq!(r.top_by_bytes[0].key, "big:report");
        assert_eq!(r.top_by_bytes.len(), 3);
        assert_eq!(r.size_percentiles.max, 1_000_000);
        assert!(
            (195..=200).contains(&r.size_percentiles.p50),
            "{:?}",
            r.size_percentiles
        );
        assert_eq!(r.expiring_per_hour[0], 50);
        assert_eq!(r.expiring_per_hour[2], 1);
        // The 50 sessions all expire within the same second: a stampede risk.
        assert_eq!(r.worst_expiry_second.unwrap().keys, 50);
        assert_eq!(r.encoding_candidates.len(), 1);
        assert_eq!(r.encoding_candidates[0].config, "hash-max-listpack-entries");
        assert_eq!(r.encoding_candidates[0].suggested, 1024);
    }

    #[test]
    fn name_draws_set_the_pattern_shares_and_samples_the_sizes() {
        // 1,000 measured keys split evenly, but 9,000 more names say `a:*` holds 80% of the
        // keys: the key counts follow the names, the average sizes the measured keys.
        let mut agg = Aggregator::new(b":", 10, Thresholds::default());
        for i in 0..1000 {
            let (name, bytes) = if i % 2 == 0 {
                (format!("a:{i}"), 100)
            } else {
                (format!("b:{i}"), 300)
            };
            agg.add(&facts(&name, "string", "embstr", bytes, 10, None));
        }
        for i in 0..9000 {
            let name = if i % 100 < 78 {
                format!("a:{i}")
            } else if i % 100 < 98 {
                format!("b:{i}")
            } else {
                format!("x{i}")
            };
            // `x...` keys fail MATCH: draws, but no pattern.
            agg.add_name(name.as_bytes(), !name.starts_with('x'));
        }
        // While it runs, the widest interval among the patterns holding at least half of the
        // memory is a:*'s (52%), and among those with 40%, b:*'s (48%, from fewer names).
        let widest_half = agg.widest_sampled_ci(1_000_000, 1000, 0.5);
        let widest_all = agg.widest_sampled_ci(1_000_000, 1000, 0.4);
        assert_eq!(agg.widest_sampled_ci(1_000_000, 1000, 0.9), 0.0);
        let r = agg.finish(Mode::Samples(1000), 0, 1_000_000, 1000, 1);
        // a: (500 + 7020) / 10000 of the keys, b: (500 + 1800) / 10000.
        let a = r.patterns.iter().find(|p| p.pattern == "a:*").unwrap();
        let b = r.patterns.iter().find(|p| p.pattern == "b:*").unwrap();
        assert_eq!((a.keys, b.keys), (752_000, 230_000));
        assert_eq!((a.bytes, b.bytes), (75_200_000, 69_000_000));
        assert_eq!(r.keys_matched, 982_000);
        assert_eq!(r.total_bytes, 144_200_000);
        assert_eq!(r.names_drawn, 9000);
        // Sizes do not vary within a pattern: only the share is uncertain, from 10,000 draws.
        let w: f64 = 0.752;
        let expected = 1.96 * 1e6 * 100.0 * (w * (1.0 - w) / 10_000.0).sqrt();
        assert!(
            (a.bytes_ci95 as f64 - expected).abs() < 2.0,
            "{}",
            a.bytes_ci95
        );
        let relative = |p: &PatternStats| p.bytes_ci95 as f64 / p.bytes as f64;
        assert!((widest_half - relative(a)).abs() < 1e-6, "{widest_half}");
        assert!((widest_all - relative(b)).abs() < 1e-6, "{widest_all}");
        assert!(relative(b) > relative(a));
    }

    #[test]
    fn samples_extrapolate_with_an_interval() {
        let mut a = Aggregator::new(b":", 10, Thresholds::default());
        for i in 0..1000 {
            let name = format!("k:{i}");
            a.add(&facts(&name, "string", "embstr", 50 + (i % 10), 10, None));
        }
        let r = a.finish(Mode::Samples(1000), 0, 100_000, 1000, 1);
        assert_eq!(r.keys_matched, 100_000);
        let p = &r.patterns[0];
        assert_eq!(p.keys, 100_000);
        assert_eq!(p.bytes, 5_450_000);
        assert!(
            p.bytes_ci95 > 0 && p.bytes_ci95 < p.bytes / 10,
            "{}",
            p.bytes_ci95
        );
    }

    #[test]
    fn patterns_are_bounded() {
        let mut a = Aggregator::new(b":", 1, Thresholds::default());
        for i in 0..MAX_PATTERNS {
            let name = format!("ns:{i}x");
            a.add(&facts(&name, "string", "int", 16, 1, None));
        }
        // Past the bound: folded into the first segment while there is room...
        a.add(&facts("ns:late1x", "string", "int", 16, 1, None));
        a.add(&facts("ns:late2x", "string", "int", 16, 1, None));
        // ...and into (other) beyond that.
        for i in 0..(MAX_OVERFLOW_PREFIXES + 5) {
            let name = format!("p{i}q:late");
            a.add(&facts(&name, "string", "int", 16, 1, None));
        }
        let r = a.finish(Mode::Full, 0, 0, 0, 0);
        assert_eq!(r.patterns.len(), MAX_PATTERNS + MAX_OVERFLOW_PREFIXES + 1);
        assert!(r
            .patterns
            .iter()
            .any(|p| p.pattern == "ns:*" && p.keys == 2));
        assert!(r
            .patterns
            .iter()
            .any(|p| p.pattern == "(other)" && p.keys == 6));
    }

    #[test]
    fn a_key_drawn_twice_is_listed_once() {
        let mut heap = TopHeap::new();
        for (rank, name) in [(5, "a"), (9, "b"), (9, "b"), (7, "c"), (9, "b"), (1, "d")] {
            push_top(&mut heap, 3, rank, name.as_bytes(), || {
                (rank, Reverse(name.as_bytes().to_vec()), "string", 0)
            });
        }
        let mut names: Vec<String> = heap
            .into_iter()
            .map(|Reverse(x)| String::from_utf8(x.1 .0).unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
