//! Serde types of every structured reply, shared by the module and `optctl`.
//!
//! The module serialises these for `FORMAT JSON` replies and turns the same values into RESP
//! maps and arrays otherwise; `optctl` deserialises the JSON. One definition means the two can
//! never drift apart.

use serde::{Deserialize, Serialize};

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
