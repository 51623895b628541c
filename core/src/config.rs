//! The module's `opt.*` configuration parameters, declared once.
//!
//! The module registers exactly these with the Redis module-config API, `optctl status` prints
//! them, and a test checks that `redis.conf.example` documents every one with its default. Value
//! validation lives here too, so that a bad value gets the same message from `CONFIG SET`, from
//! redis.conf and from `loadmodule` arguments.

/// What kind of value a config holds, with its default and its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    /// `yes` / `no`.
    Bool {
        /// Value when nothing sets it.
        default: bool,
    },
    /// An integer in `min..=max`.
    Int {
        /// Value when nothing sets it.
        default: i64,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A string, checked by [`validate_string`].
    Str {
        /// Value when nothing sets it.
        default: &'static str,
    },
}

/// One `opt.<name>` configuration parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSpec {
    /// The name without the `opt.` prefix.
    pub name: &'static str,
    /// Type, default and bounds.
    pub kind: ConfigKind,
    /// One line for `redis.conf.example` and `optctl status`.
    pub doc: &'static str,
}

/// Index of each config in [`CONFIGS`], so the module reads values without string lookups.
#[allow(missing_docs)]
pub mod idx {
    pub const HOTKEYS_ENABLED: usize = 0;
    pub const HOTKEYS_CAPACITY: usize = 1;
    pub const HOTKEYS_SAMPLE_RATIO: usize = 2;
    pub const HOTKEYS_WINDOW_SECONDS: usize = 3;
    pub const KEY_DELIMITERS: usize = 4;
    pub const MAX_TAGS_PER_KEY: usize = 5;
    pub const MAX_TAG_LENGTH: usize = 6;
    pub const SCAN_SLICE_US: usize = 7;
    pub const ADVISE_IGNORE: usize = 8;
    pub const ADVISE_HOT_KEY_PERCENT: usize = 9;
    pub const ADVISE_BIG_KEY_BYTES: usize = 10;
    pub const MAX_LOCKS: usize = 11;
    pub const HOTKEYS_SAMPLE_BUDGET: usize = 12;
    pub const KEYSPACE_MEMORY_SAMPLES: usize = 13;
    pub const KEYSPACE_KNOWN_BIG_KEYS: usize = 14;
    pub const KEYSPACE_BIG_KEY_WATCH: usize = 15;
}

/// Every config the module registers, in registration order (see [`idx`]).
pub const CONFIGS: &[ConfigSpec] = &[
    ConfigSpec {
        name: "hotkeys-enabled",
        kind: ConfigKind::Bool { default: true },
        doc: "track hot keys from live traffic (OPT.HOTKEYS)",
    },
    ConfigSpec {
        name: "hotkeys-capacity",
        kind: ConfigKind::Int {
            default: 1024,
            min: 16,
            max: 4096,
        },
        doc: "hot-key candidates tracked; memory grows with it (about 250 bytes each), and so does the work at the end of each window, on the main thread (about 0.7 ms at 4096)",
    },
    ConfigSpec {
        name: "hotkeys-sample-ratio",
        kind: ConfigKind::Int {
            default: 0,
            min: 0,
            max: 1_000_000,
        },
        doc: "0 (auto): count every command while the server handles fewer than opt.hotkeys-sample-budget a second, about that many a second above; N: count about one command in N (1 = every command); sampled in 10 ms slices at random times, counts scaled back",
    },
    ConfigSpec {
        name: "hotkeys-window-seconds",
        kind: ConfigKind::Int {
            default: 60,
            min: 1,
            max: 3600,
        },
        doc: "length of the 'recent' hot-key window, in seconds",
    },
    ConfigSpec {
        name: "key-delimiters",
        kind: ConfigKind::Str { default: ":" },
        doc: "characters that split key names into segments for pattern inference",
    },
    ConfigSpec {
        name: "max-tags-per-key",
        kind: ConfigKind::Int {
            default: 64,
            min: 1,
            max: 1024,
        },
        doc: "most tags one key may carry (OPT.SET ... TAGS, OPT.TAG)",
    },
    ConfigSpec {
        name: "max-tag-length",
        kind: ConfigKind::Int {
            default: 1024,
            min: 1,
            max: 65536,
        },
        doc: "longest tag, in bytes",
    },
    ConfigSpec {
        name: "scan-slice-us",
        kind: ConfigKind::Int {
            default: 1000,
            min: 100,
            max: 100_000,
        },
        doc: "longest main-thread time of one OPT.KEYSPACE slice (half while clients are active) or of one part of OPT.TAGINFO's ranking of a big tag index, in microseconds; clients run between slices",
    },
    ConfigSpec {
        name: "advise-ignore",
        kind: ConfigKind::Str { default: "" },
        doc: "OPT.ADVISE rule ids to silence, separated by commas or spaces",
    },
    ConfigSpec {
        name: "advise-hot-key-percent",
        kind: ConfigKind::Int {
            default: 20,
            min: 1,
            max: 100,
        },
        doc: "OPT.ADVISE hot-key: share of all traffic, in percent, above which one key is hot",
    },
    ConfigSpec {
        name: "advise-big-key-bytes",
        kind: ConfigKind::Int {
            default: 102_400,
            min: 1024,
            max: 1 << 30,
        },
        doc: "OPT.ADVISE big-key: strings above this many bytes are big (collections: 1 MB)",
    },
    ConfigSpec {
        name: "max-locks",
        kind: ConfigKind::Int {
            default: 100_000,
            min: 1,
            max: 100_000_000,
        },
        doc: "most OPT.FETCH ... LOCK recomputation locks held at once; past it a caller recomputes without one (lock: unavailable-limit)",
    },
    ConfigSpec {
        name: "hotkeys-sample-budget",
        kind: ConfigKind::Int {
            default: 5000,
            min: 100,
            max: 10_000_000,
        },
        doc: "with opt.hotkeys-sample-ratio 0 (auto): about how many commands a second hot-key tracking counts at most, whatever the load",
    },
    ConfigSpec {
        name: "keyspace-memory-samples",
        kind: ConfigKind::Int {
            default: 5,
            min: 1,
            max: 10_000,
        },
        doc: "OPT.KEYSPACE: elements of a hash, set, sorted set or list that MEMORY USAGE samples to size it (its SAMPLES option; 5 is MEMORY USAGE's own default); more is closer for collections of uneven elements and slower, one call per key",
    },
    ConfigSpec {
        name: "keyspace-known-big-keys",
        kind: ConfigKind::Int {
            default: 1024,
            min: 0,
            // Each SAMPLES copies and sorts the db's names when it starts, in the command:
            // 1.22 ms at 10,000 (criterion, `known_big_keys: census start`).
            max: 10_000,
        },
        doc: "OPT.KEYSPACE: keys of 64 KB or more that an analysis measured are remembered, up to this many (the smallest dropped first), and each later SAMPLES measures them whole and samples the other keys, so that a few big keys are neither missed nor scaled up; 0 remembers none",
    },
    ConfigSpec {
        name: "keyspace-big-key-watch",
        kind: ConfigKind::Int {
            default: 0,
            min: 0,
            max: 1_000_000,
        },
        doc: "keys a second that a background walk over every db looks at (type and length from the scan, MEMORY USAGE only for strings near 64 KB or more and collections of 64+ elements) to find the big keys SAMPLES then measures whole, before any analysis; 0 (the default) turns the walk off: on Redis 8 and Valkey each MEMORY USAGE counts as a keyspace hit in INFO stats",
    },
];

/// Finds a config by name, with or without the `opt.` prefix, case-insensitively.
pub fn find(name: &str) -> Option<(usize, &'static ConfigSpec)> {
    let bare = strip_prefix(name);
    CONFIGS
        .iter()
        .enumerate()
        .find(|(_, c)| c.name.eq_ignore_ascii_case(bare))
}

fn strip_prefix(name: &str) -> &str {
    match name.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("opt.") => &name[4..],
        _ => name,
    }
}

/// Checks a string value for the config at `index`; the error names the config.
pub fn validate_string(index: usize, value: &str) -> Result<(), String> {
    let delimiters_ok =
        !value.is_empty() && value.len() <= 8 && value.bytes().all(|b| b.is_ascii_punctuation());
    if index == idx::KEY_DELIMITERS && !delimiters_ok {
        return Err(format!(
            "opt.key-delimiters must be 1 to 8 ASCII punctuation characters, got '{value}'"
        ));
    }
    if index == idx::ADVISE_IGNORE {
        for id in value.split([',', ' ']).filter(|s| !s.is_empty()) {
            if !crate::advise::RULES.iter().any(|r| r.id == id) {
                return Err(format!(
                    "opt.advise-ignore: '{id}' is not an OPT.ADVISE rule id"
                ));
            }
        }
    }
    Ok(())
}

/// Parses a value given as text (redis.conf or `loadmodule` arguments) for `spec`.
///
/// Returns the value as stored by the module: 0/1 for booleans, the number for integers, and
/// `None` in the integer slot for strings (the caller keeps the text).
pub fn parse_value(index: usize, spec: &ConfigSpec, text: &str) -> Result<Option<i64>, String> {
    match spec.kind {
        ConfigKind::Bool { .. } => match text.to_ascii_lowercase().as_str() {
            "yes" => Ok(Some(1)),
            "no" => Ok(Some(0)),
            _ => Err(format!(
                "opt.{} must be 'yes' or 'no', got '{text}'",
                spec.name
            )),
        },
        ConfigKind::Int { min, max, .. } => {
            let v: i64 = text.parse().map_err(|_| {
                format!(
                    "opt.{} must be an integer from {min} to {max}, got '{text}'",
                    spec.name
                )
            })?;
            check_int(spec, v).map(Some)
        }
        ConfigKind::Str { .. } => validate_string(index, text).map(|_| None),
    }
}

/// Checks an integer against the bounds of `spec`; the error names the config and the range.
pub fn check_int(spec: &ConfigSpec, v: i64) -> Result<i64, String> {
    match spec.kind {
        ConfigKind::Int { min, max, .. } if v < min || v > max => Err(format!(
            "opt.{} must be from {min} to {max}, got {v}",
            spec.name
        )),
        _ => Ok(v),
    }
}

/// The default rendered as redis.conf text (`yes`, `1024`, `":"`).
pub fn default_text(spec: &ConfigSpec) -> String {
    match spec.kind {
        ConfigKind::Bool { default } => if default { "yes" } else { "no" }.to_string(),
        ConfigKind::Int { default, .. } => default.to_string(),
        ConfigKind::Str { default } => format!("\"{default}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_the_table() {
        assert_eq!(CONFIGS[idx::HOTKEYS_ENABLED].name, "hotkeys-enabled");
        assert_eq!(CONFIGS[idx::HOTKEYS_CAPACITY].name, "hotkeys-capacity");
        assert_eq!(
            CONFIGS[idx::HOTKEYS_SAMPLE_RATIO].name,
            "hotkeys-sample-ratio"
        );
        assert_eq!(
            CONFIGS[idx::HOTKEYS_WINDOW_SECONDS].name,
            "hotkeys-window-seconds"
        );
        assert_eq!(CONFIGS[idx::KEY_DELIMITERS].name, "key-delimiters");
        assert_eq!(CONFIGS[idx::MAX_TAGS_PER_KEY].name, "max-tags-per-key");
        assert_eq!(CONFIGS[idx::MAX_TAG_LENGTH].name, "max-tag-length");
        assert_eq!(CONFIGS[idx::SCAN_SLICE_US].name, "scan-slice-us");
        assert_eq!(CONFIGS[idx::ADVISE_IGNORE].name, "advise-ignore");
        assert_eq!(
            CONFIGS[idx::ADVISE_HOT_KEY_PERCENT].name,
            "advise-hot-key-percent"
        );
        assert_eq!(
            CONFIGS[idx::ADVISE_BIG_KEY_BYTES].name,
            "advise-big-key-bytes"
        );
        assert_eq!(CONFIGS[idx::MAX_LOCKS].name, "max-locks");
        assert_eq!(
            CONFIGS[idx::KEYSPACE_KNOWN_BIG_KEYS].name,
            "keyspace-known-big-keys"
        );
        assert_eq!(
            CONFIGS[idx::KEYSPACE_BIG_KEY_WATCH].name,
            "keyspace-big-key-watch"
        );
        assert_eq!(
            CONFIGS[idx::HOTKEYS_SAMPLE_BUDGET].name,
            "hotkeys-sample-budget"
        );
        assert!(validate_string(idx::ADVISE_IGNORE, "big-key, hot-key").is_ok());
        assert!(validate_string(idx::ADVISE_IGNORE, "nope")
            .unwrap_err()
            .contains("'nope'"));
    }

    #[test]
    fn finds_with_or_without_prefix() {
        assert_eq!(find("opt.hotkeys-capacity").map(|f| f.0), Some(1));
        assert_eq!(find("OPT.HOTKEYS-CAPACITY").map(|f| f.0), Some(1));
        assert_eq!(find("hotkeys-capacity").map(|f| f.0), Some(1));
        assert!(find("opt.nope").is_none());
    }

    #[test]
    fn rejects_out_of_range_and_names_the_config() {
        let (i, spec) = find("hotkeys-capacity").unwrap();
        let err = parse_value(i, spec, "3").unwrap_err();
        assert!(
            err.contains("opt.hotkeys-capacity") && err.contains("16 to 4096"),
            "{err}"
        );
        assert!(parse_value(i, spec, "abc").is_err());
        assert_eq!(parse_value(i, spec, "2048"), Ok(Some(2048)));
        let (i, spec) = find("hotkeys-enabled").unwrap();
        assert_eq!(parse_value(i, spec, "NO"), Ok(Some(0)));
        assert!(parse_value(i, spec, "maybe").is_err());
        let (i, spec) = find("key-delimiters").unwrap();
        assert!(parse_value(i, spec, ":/|").is_ok());
        assert!(parse_value(i, spec, "ab").is_err());
        assert!(parse_value(i, spec, "").is_err());
    }

    #[test]
    fn redis_conf_example_documents_every_config_with_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../redis.conf.example");
        let text = std::fs::read_to_string(path).expect("redis.conf.example at the repo root");
        for spec in CONFIGS {
            let line = format!("opt.{} {}", spec.name, default_text(spec));
            assert!(
                text.lines().any(|l| l.trim() == line),
                "redis.conf.example lacks the line `{line}`"
            );
        }
    }
}
