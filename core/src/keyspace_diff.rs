//! What changed between two keyspace reports: which key patterns grew or shrank, by how much,
//! and whether the change is larger than the sampling error of the two reports.
//!
//! Operators save `optctl keyspace --json` from cron or before a deploy; the question the
//! next day is "what grew", not "what is big". Comparing two sampled reports by eye reads
//! sampling noise as growth, so each change carries its 95% margin, from the two reports'
//! own intervals (independent samples: the margins add in quadrature), and is called
//! significant only when it is larger than that margin. Two FULL reports have no margin: every
//! change is real. Patterns are matched by name, so both reports must use the same delimiters.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::report::{KeyspaceReport, PatternStats};

/// One side of a comparison: what the report covered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffSide {
    /// `full` or `samples`.
    pub mode: String,
    /// The database analysed.
    pub db: u64,
    /// Keys in the database.
    pub db_keys: u64,
    /// Keys that matched the report's MATCH/TYPE.
    pub keys_matched: u64,
    /// Bytes of the matched keys.
    pub total_bytes: u64,
}

impl DiffSide {
    fn of(r: &KeyspaceReport) -> DiffSide {
        DiffSide {
            mode: r.mode.clone(),
            db: r.db,
            db_keys: r.db_keys,
            keys_matched: r.keys_matched,
            total_bytes: r.total_bytes,
        }
    }
}

/// How one pattern changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternChange {
    /// The pattern.
    pub pattern: String,
    /// `new` (only in the later report), `gone` (only in the earlier one) or `changed`.
    pub status: String,
    /// Keys in the earlier report (0 when new).
    pub keys_before: u64,
    /// Keys in the later report (0 when gone).
    pub keys_after: u64,
    /// Bytes in the earlier report.
    pub bytes_before: u64,
    /// Bytes in the later report.
    pub bytes_after: u64,
    /// `bytes_after - bytes_before`.
    pub bytes_change: i64,
    /// Half-width of the 95% interval of `bytes_change` (0 when both reports are FULL).
    pub change_ci95: u64,
    /// Whether the change is larger than `change_ci95`: not sampling noise.
    pub significant: bool,
    /// Average key size in the earlier report.
    pub avg_bytes_before: u64,
    /// Average key size in the later report.
    pub avg_bytes_after: u64,
}

/// The comparison of two keyspace reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyspaceDiff {
    /// The earlier report.
    pub before: DiffSide,
    /// The later report.
    pub after: DiffSide,
    /// `after.total_bytes - before.total_bytes`.
    pub total_bytes_change: i64,
    /// `after.keys_matched - before.keys_matched`.
    pub keys_change: i64,
    /// What the reader should know before trusting the rows: the reports cover different
    /// databases, or one was filtered and the other not.
    pub warnings: Vec<String>,
    /// Every pattern of either report, the largest change in bytes (either way) first.
    pub patterns: Vec<PatternChange>,
}

fn signed_change(after: u64, before: u64) -> i64 {
    let change = i128::from(after) - i128::from(before);
    change.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn change_of(before: Option<&PatternStats>, after: Option<&PatternStats>) -> PatternChange {
    let pick = |p: Option<&PatternStats>, f: fn(&PatternStats) -> u64| p.map_or(0, f);
    let (bytes_before, bytes_after) = (pick(before, |p| p.bytes), pick(after, |p| p.bytes));
    let ci = |p: Option<&PatternStats>| pick(p, |p| p.bytes_ci95) as f64;
    let change_ci95 = (ci(before).powi(2) + ci(after).powi(2)).sqrt().round() as u64;
    let bytes_change = signed_change(bytes_after, bytes_before);
    PatternChange {
        pattern: before
            .or(after)
            .map_or_else(String::new, |p| p.pattern.clone()),
        status: match (before, after) {
            (None, _) => "new",
            (_, None) => "gone",
            _ => "changed",
        }
        .to_string(),
        keys_before: pick(before, |p| p.keys),
        keys_after: pick(after, |p| p.keys),
        bytes_before,
        bytes_after,
        bytes_change,
        change_ci95,
        significant: bytes_change.unsigned_abs() > change_ci95,
        avg_bytes_before: pick(before, |p| p.avg_bytes),
        avg_bytes_after: pick(after, |p| p.avg_bytes),
    }
}

fn by_name(r: &KeyspaceReport) -> HashMap<&str, &PatternStats> {
    r.patterns.iter().map(|p| (p.pattern.as_str(), p)).collect()
}

/// Compares `before` with `after`, pattern by pattern.
pub fn diff_keyspace(before: &KeyspaceReport, after: &KeyspaceReport) -> KeyspaceDiff {
    let mut warnings = Vec::new();
    if before.db != after.db {
        warnings.push(format!(
            "the reports are of different databases (db {} and db {})",
            before.db, after.db
        ));
    }
    // A report does not say whether it was filtered; one that matched under 99% of its db's
    // keys was (keys come and go during a FULL, and a sample's count is an estimate).
    let filtered = |r: &KeyspaceReport| (r.keys_matched as f64) < 0.99 * r.db_keys as f64;
    if filtered(before) != filtered(after) {
        warnings.push(
            "one report covers only the keys of a MATCH or TYPE filter and the other does not"
                .to_string(),
        );
    }
    let (was, is) = (by_name(before), by_name(after));
    let mut patterns: Vec<PatternChange> = before
        .patterns
        .iter()
        .map(|b| change_of(Some(b), is.get(b.pattern.as_str()).copied()))
        .collect();
    patterns.extend(
        after
            .patterns
            .iter()
            .filter(|a| !was.contains_key(a.pattern.as_str()))
            .map(|a| change_of(None, Some(a))),
    );
    patterns.sort_by(|x, y| {
        y.bytes_change
            .unsigned_abs()
            .cmp(&x.bytes_change.unsigned_abs())
            .then_with(|| x.pattern.cmp(&y.pattern))
    });
    KeyspaceDiff {
        before: DiffSide::of(before),
        after: DiffSide::of(after),
        total_bytes_change: signed_change(after.total_bytes, before.total_bytes),
        keys_change: signed_change(after.keys_matched, before.keys_matched),
        warnings,
        patterns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::SizePercentiles;

    fn pattern(name: &str, keys: u64, bytes: u64, ci: u64) -> PatternStats {
        PatternStats {
            pattern: name.into(),
            keys,
            bytes,
            bytes_ci95: ci,
            share: 0.0,
            avg_bytes: bytes / keys.max(1),
            largest_key: String::new(),
            largest_bytes: 0,
            types: Vec::new(),
            encodings: Vec::new(),
            ttl_buckets: [0; 6],
            idle_buckets: [0; 5],
            lfu_buckets: [0; 5],
        }
    }

    fn report(mode: &str, db: u64, patterns: Vec<PatternStats>) -> KeyspaceReport {
        let keys = patterns.iter().map(|p| p.keys).sum();
        KeyspaceReport {
            mode: mode.into(),
            db,
            db_keys: keys,
            keys_scanned: keys,
            names_drawn: 0,
            big_keys_measured_whole: 0,
            big_keys_pass_at: None,
            keys_matched: keys,
            total_bytes: patterns.iter().map(|p| p.bytes).sum(),
            elapsed_ms: 1,
            patterns,
            bytes_by_type: Vec::new(),
            size_percentiles: SizePercentiles::default(),
            size_histogram: Vec::new(),
            top_by_bytes: Vec::new(),
            top_by_length: Vec::new(),
            expiring_per_hour: Vec::new(),
            worst_expiry_second: None,
            encoding_candidates: Vec::new(),
        }
    }

    #[test]
    fn changes_are_ranked_by_size_either_way_with_new_and_gone_patterns() {
        let before = report(
            "full",
            0,
            vec![
                pattern("user:*", 100, 10_000, 0),
                pattern("session:*", 50, 5_000, 0),
                pattern("old:*", 10, 800, 0),
                pattern("same:*", 5, 500, 0),
            ],
        );
        let after = report(
            "full",
            0,
            vec![
                pattern("user:*", 300, 31_000, 0),
                pattern("session:*", 20, 2_000, 0),
                pattern("new:*", 7, 1_400, 0),
                pattern("same:*", 5, 500, 0),
            ],
        );
        let d = diff_keyspace(&before, &after);
        let rows: Vec<(&str, &str, i64, bool)> = d
            .patterns
            .iter()
            .map(|p| {
                (
                    p.pattern.as_str(),
                    p.status.as_str(),
                    p.bytes_change,
                    p.significant,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("user:*", "changed", 21_000, true),
                ("session:*", "changed", -3_000, true),
                ("new:*", "new", 1_400, true),
                ("old:*", "gone", -800, true),
                ("same:*", "changed", 0, false),
            ]
        );
        assert_eq!(d.total_bytes_change, 34_900 - 16_300);
        assert_eq!(d.keys_change, 332 - 165);
        let user = &d.patterns[0];
        assert_eq!((user.keys_before, user.keys_after), (100, 300));
        assert_eq!((user.avg_bytes_before, user.avg_bytes_after), (100, 103));
        let old = &d.patterns[3];
        assert_eq!(
            (old.keys_after, old.bytes_after, old.avg_bytes_after),
            (0, 0, 0)
        );
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn a_sampled_change_inside_the_two_margins_is_not_significant() {
        // Margins of 3,000 and 4,000 bytes give 5,000 for the change.
        let before = report("samples", 0, vec![pattern("a:*", 100, 100_000, 3_000)]);
        let small = report("samples", 0, vec![pattern("a:*", 100, 104_999, 4_000)]);
        let d = diff_keyspace(&before, &small);
        assert_eq!(d.patterns[0].change_ci95, 5_000);
        assert!(!d.patterns[0].significant);
        let large = report("samples", 0, vec![pattern("a:*", 100, 94_999, 4_000)]);
        let d = diff_keyspace(&before, &large);
        assert_eq!(d.patterns[0].bytes_change, -5_001);
        assert!(d.patterns[0].significant);
        // A FULL report against a sampled one: the sampled side's margin alone.
        let full = report("full", 0, vec![pattern("a:*", 100, 102_000, 0)]);
        let d = diff_keyspace(&before, &full);
        assert_eq!(d.patterns[0].change_ci95, 3_000);
        assert!(!d.patterns[0].significant);
    }

    #[test]
    fn different_databases_and_filters_are_warned_about() {
        let a = report("full", 0, vec![pattern("a:*", 10, 100, 0)]);
        let b = report("full", 3, vec![pattern("a:*", 10, 100, 0)]);
        let d = diff_keyspace(&a, &b);
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("db 0 and db 3"), "{:?}", d.warnings);
        let mut filtered = a.clone();
        filtered.db_keys = 1_000;
        let d = diff_keyspace(&filtered, &a);
        assert!(d.warnings[0].contains("MATCH or TYPE"), "{:?}", d.warnings);
    }

    #[test]
    fn extreme_sizes_do_not_overflow() {
        let a = report("full", 0, vec![pattern("a:*", 1, 0, 0)]);
        let b = report("full", 0, vec![pattern("a:*", 1, u64::MAX, 0)]);
        assert_eq!(diff_keyspace(&a, &b).patterns[0].bytes_change, i64::MAX);
        assert_eq!(diff_keyspace(&b, &a).patterns[0].bytes_change, i64::MIN);
    }
}
