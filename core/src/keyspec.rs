//! Where a command's keys are, without asking the server on every command.
//!
//! The command filter sits on the server's hottest path. Asking the server for the keys of
//! each command (`RedisModule_GetCommandKeysWithFlags`) allocates and costs a command lookup,
//! so at load the module reads `COMMAND` once and keeps, for each command whose keys sit at
//! fixed positions (no `movablekeys`, no subcommands), its first/last/step positions, which
//! Redis derives from the key specs. Other commands (EVAL's numkeys, XREAD's STREAMS, module
//! commands loaded later) take the slow, exact path. Commands that run other commands
//! (EVAL, FCALL, EXEC...) are skipped: the commands they run pass through the filter themselves.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One row of the `COMMAND` reply, as the module reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    /// Lower-case command name.
    pub name: String,
    /// Command flags (`write`, `readonly`, `movablekeys`, ...).
    pub flags: Vec<String>,
    /// First key position (0: none).
    pub first: i64,
    /// Last key position (negative: from the end).
    pub last: i64,
    /// Step between keys.
    pub step: i64,
    /// Whether the command has subcommands (container commands such as XINFO).
    pub has_subcommands: bool,
    /// The command's key specs (Redis 7.0+; empty when the server gave none).
    pub key_specs: Vec<KeySpecRow>,
}

/// What the module keeps of one key spec of `COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySpecRow {
    /// `Some(true)` when the spec writes its keys (`RW`, `OW` or `RM`), `Some(false)` when it
    /// only reads them (`RO`), `None` when its flags say neither.
    pub write: Option<bool>,
    /// Where the search begins, when it begins at a fixed index (`begin_search` of type
    /// `index`).
    pub index: Option<i64>,
    /// `keyword` and `startfrom`, when the search begins after a keyword (`begin_search` of
    /// type `keyword`: XREAD's STREAMS, GEORADIUS's STORE, MIGRATE's KEYS).
    pub keyword: Option<(String, i64)>,
    /// The spec's `incomplete` flag: it may find arguments that are not keys or miss keys
    /// (MIGRATE's KEYS, whose key argument is then ""), so only the server can tell.
    pub incomplete: bool,
    /// `lastkey`, `keystep` and `limit`, when the keys are a range (`find_keys` of type
    /// `range`).
    pub range: Option<(i64, i64, i64)>,
    /// `keynumidx`, `firstkey` and `keystep`, when an argument gives the number of keys
    /// (`find_keys` of type `keynum`: ZUNIONSTORE's sources, LMPOP, MSETEX...).
    pub keynum: Option<(i64, i64, i64)>,
}

impl CommandRow {
    /// Whether some of the command's keys are only read and others written (the sources and
    /// the destination of SUNIONSTORE): its first/last/step triple cannot tell them apart.
    pub fn mixes_reads_and_writes(&self) -> bool {
        let w = || self.key_specs.iter().filter_map(|s| s.write);
        w().any(|x| x) && w().any(|x| !x)
    }

    /// [`KeyAccess::Specs`], when the command has one to [`MAX_SPECS`] key specs and the
    /// filter can follow each (see [`SpecAccess::of`]).
    fn spec_access(&self) -> Option<KeyAccess> {
        let count = self.key_specs.len();
        if count == 0 || count > MAX_SPECS {
            return None;
        }
        let first = SpecAccess::of(&self.key_specs[0])?;
        let mut specs = [first; MAX_SPECS];
        for (slot, row) in specs.iter_mut().zip(&self.key_specs).skip(1) {
            *slot = SpecAccess::of(row)?;
        }
        Some(KeyAccess::Specs {
            specs,
            count: count as u8,
        })
    }

    /// The command's key ranges with their access, when every key spec is a fixed index and
    /// a plain range and there are two of them (all such commands in Redis 7.0 to 8.x have
    /// exactly two: a destination and its sources).
    fn split_ranges(&self) -> Option<[KeyRange; 2]> {
        let [a, b] = self.key_specs.as_slice() else {
            return None;
        };
        let range = |s: &KeySpecRow| -> Option<KeyRange> {
            let (index, (lastkey, step, limit)) = (s.index?, s.range?);
            if index <= 0 || step <= 0 || limit != 0 {
                return None;
            }
            let last = if lastkey >= 0 {
                index.checked_add(lastkey)?
            } else {
                lastkey
            };
            Some(KeyRange {
                first: u32::try_from(index).ok()?,
                last: i32::try_from(last).ok()?,
                step: u32::try_from(step).ok()?,
                write: s.write?,
            })
        };
        Some([range(a)?, range(b)?])
    }
}

/// Keys at fixed positions with one kind of access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    /// First key position.
    pub first: u32,
    /// Last key position; negative counts from the end (-1 is the last argument).
    pub last: i32,
    /// Step.
    pub step: u32,
    /// Whether these keys are written.
    pub write: bool,
}

/// Key specs a command may have for the filter to follow it by itself (GEORADIUS has three:
/// its source, STORE and STOREDIST).
pub const MAX_SPECS: usize = 3;

/// Where one key spec's search begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecBegin {
    /// At this argument.
    Index(u32),
    /// After the first argument equal to the keyword (any case), searched from `startfrom`
    /// onwards, or backwards from `argc + startfrom` when it is negative, as the server does.
    Keyword {
        /// The keyword's bytes, upper case; only the first `len` are used.
        word: [u8; 15],
        /// Its length.
        len: u8,
        /// Where the search starts.
        startfrom: i32,
    },
}

/// How one key spec finds its keys once its search has begun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecKeys {
    /// Keys from the begin position to `lastkey` after it (negative: counted from the end,
    /// -1 the last argument), every `step`; with `limit` (only with `lastkey` -1), the first
    /// 1/`limit` of the arguments left (XREAD's keys before their IDs).
    Range {
        /// The last key, relative to the begin position, or from the end when negative.
        lastkey: i32,
        /// Step.
        step: u32,
        /// 0 or 1: no limit; n: the first 1/n of the arguments from the begin position.
        limit: u32,
    },
    /// The argument at the begin position plus `numkeys_at` holds the number of keys; they
    /// begin at the begin position plus `first`, every `step`.
    Keynum {
        /// Offset of the key count from the begin position.
        numkeys_at: u32,
        /// Offset of the first key from the begin position.
        first: u32,
        /// Step.
        step: u32,
    },
}

/// One key spec that the filter follows by itself: where its search begins, how it finds its
/// keys, and whether it writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecAccess {
    /// Where the search begins.
    pub begin: SpecBegin,
    /// How the keys are found from there.
    pub keys: SpecKeys,
    /// Whether these keys are written.
    pub write: bool,
}

impl SpecAccess {
    /// The spec of `row`, when its search begins at a fixed index or after a keyword of at
    /// most 15 bytes, and its keys are a range or a counted run, with a known access, and the
    /// spec is not marked incomplete.
    fn of(row: &KeySpecRow) -> Option<SpecAccess> {
        if row.incomplete {
            return None;
        }
        let begin = match (&row.index, &row.keyword) {
            (Some(index), None) => SpecBegin::Index(u32::try_from(*index).ok().filter(|&b| b > 0)?),
            (None, Some((keyword, startfrom))) => {
                let bytes = keyword.as_bytes();
                if bytes.is_empty() || bytes.len() > 15 || *startfrom == 0 {
                    return None;
                }
                let mut word = [0u8; 15];
                word[..bytes.len()].copy_from_slice(bytes);
                word.make_ascii_uppercase();
                SpecBegin::Keyword {
                    word,
                    len: bytes.len() as u8,
                    startfrom: i32::try_from(*startfrom).ok()?,
                }
            }
            _ => return None,
        };
        let keys = match (row.range, row.keynum) {
            (Some((lastkey, step, limit)), None)
                if step > 0 && limit >= 0 && (limit <= 1 || lastkey == -1) =>
            {
                SpecKeys::Range {
                    lastkey: i32::try_from(lastkey).ok()?,
                    step: u32::try_from(step).ok()?,
                    limit: u32::try_from(limit).ok()?,
                }
            }
            (None, Some((numkeys_at, first, step))) if first > numkeys_at && step > 0 => {
                SpecKeys::Keynum {
                    numkeys_at: u32::try_from(numkeys_at).ok()?,
                    first: u32::try_from(first).ok()?,
                    step: u32::try_from(step).ok()?,
                }
            }
            _ => return None,
        };
        Some(SpecAccess {
            begin,
            keys,
            write: row.write?,
        })
    }

    /// The positions of this spec's keys in a command of `argc` arguments, `arg(i)` giving
    /// argument `i` (read for a keyword and for a key count). None of them when the keyword is
    /// absent or the count is not a number (the command will fail); a count larger than the
    /// arguments stops at the last.
    pub fn positions<'a>(
        &self,
        argc: usize,
        arg: impl Fn(usize) -> &'a [u8],
    ) -> std::iter::StepBy<std::ops::Range<usize>> {
        let none = (0..0).step_by(1);
        let begin = match self.begin {
            SpecBegin::Index(i) => i as usize,
            SpecBegin::Keyword {
                word,
                len,
                startfrom,
            } => {
                let word = &word[..usize::from(len)];
                let argc_i = argc as i64;
                let (start, end) = if startfrom > 0 {
                    (i64::from(startfrom), argc_i - 1)
                } else {
                    (argc_i + i64::from(startfrom), 0)
                };
                // As the server's getKeysUsingKeySpecs: from `start` towards `end`, `end`
                // itself not searched, and only within 1..argc.
                let mut found = None;
                let mut i = start;
                while i != end && (1..argc_i).contains(&i) {
                    if arg(i as usize).eq_ignore_ascii_case(word) {
                        found = Some(i as usize + 1);
                        break;
                    }
                    i += if start <= end { 1 } else { -1 };
                }
                match found {
                    Some(b) => b,
                    None => return none,
                }
            }
        };
        let (first, end, step) = match self.keys {
            SpecKeys::Range {
                lastkey,
                step,
                limit,
            } => {
                let (b, n) = (begin as i64, argc as i64);
                let last = if lastkey >= 0 {
                    b + i64::from(lastkey)
                } else if limit <= 1 {
                    n + i64::from(lastkey)
                } else {
                    b + (n - b).max(0) / i64::from(limit) - 1
                };
                let end = (last.max(-1) + 1).min(n).max(0) as usize;
                (begin, end, step as usize)
            }
            SpecKeys::Keynum {
                numkeys_at,
                first,
                step,
            } => {
                let at = begin + numkeys_at as usize;
                if at >= argc {
                    return none;
                }
                let count = std::str::from_utf8(arg(at))
                    .ok()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                let first = begin + first as usize;
                let end = (first as u64)
                    .saturating_add(count.saturating_mul(u64::from(step)))
                    .min(argc as u64) as usize;
                (first, end, step as usize)
            }
        };
        (first..end.max(first)).step_by(step.max(1))
    }
}

/// How the filter finds a command's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAccess {
    /// No keys, or keys counted elsewhere (scripts): skip.
    Skip,
    /// Keys at fixed positions, all read or all written.
    Fixed {
        /// First key position.
        first: u32,
        /// Last key position; negative counts from the end (-1 is the last argument).
        last: i32,
        /// Step.
        step: u32,
        /// Whether the command writes its keys.
        write: bool,
    },
    /// Two ranges of keys at fixed positions, one written and one read: the destination and
    /// the sources of SUNIONSTORE, COPY, BITOP, PFMERGE... The first/last/step triple of
    /// `COMMAND` spans both, and on 7.0 the server's key lookup gives no per-key flags for
    /// them, so each range comes from its own key spec.
    Split {
        /// The two ranges, in key-spec order.
        ranges: [KeyRange; 2],
    },
    /// Commands with movable keys whose key specs (up to [`MAX_SPECS`]) begin at a fixed
    /// index or after a keyword and find their keys as a range or by a count argument
    /// (ZUNIONSTORE, LMPOP, SINTERCARD, MSETEX, XREAD, GEORADIUS ... STORE, MIGRATE ...
    /// KEYS): followed from the specs, each with its own access. The server's key lookup
    /// reports no per-key access for them (every key would take the command's `write`), and
    /// no keys at all for MSETEX on Redis 8.6.
    Specs {
        /// The specs; only the first `count` are used.
        specs: [SpecAccess; MAX_SPECS],
        /// How many specs the command has (1 to [`MAX_SPECS`]).
        count: u8,
    },
    /// Ask the server (key specs with per-key flags). Some servers (7.0) report no flags for
    /// commands whose keys a procedure finds; then `write`, the command's flag, decides.
    Dynamic {
        /// Whether the command has the `write` flag.
        write: bool,
    },
}

impl KeyAccess {
    /// Whether the command writes any of its keys (a replica sees such commands only in its
    /// master's stream).
    pub fn writes(&self) -> bool {
        match self {
            KeyAccess::Skip => false,
            KeyAccess::Fixed { write, .. } | KeyAccess::Dynamic { write } => *write,
            KeyAccess::Split { ranges } => ranges.iter().any(|r| r.write),
            KeyAccess::Specs { specs, count } => {
                specs[..usize::from(*count)].iter().any(|s| s.write)
            }
        }
    }
}

/// Whether a key spec with `flags` (as `COMMAND` lists them) writes its keys: `Some(true)` for
/// `RW`, `OW` or `RM`, `Some(false)` for `RO`, `None` when it says neither.
pub fn spec_writes<S: AsRef<str>>(flags: &[S]) -> Option<bool> {
    let has = |x: &str| flags.iter().any(|f| f.as_ref() == x);
    if has("RW") || has("OW") || has("RM") {
        Some(true)
    } else if has("RO") {
        Some(false)
    } else {
        None
    }
}

/// Commands whose inner commands pass through the filter on their own.
const RUNS_OTHER_COMMANDS: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
    "exec",
    "multi",
];

/// Command name (lower case) to key access.
#[derive(Debug, Clone, Default)]
pub struct KeySpecTable {
    /// Keyed by the lower-case name packed into a u128 (names up to 16 bytes; the longest
    /// core command name is 16), so a lookup costs no string hashing.
    by_name: HashMap<u128, KeyAccess, BuildHasherDefault<PackedNameHasher>>,
}

/// Packs a command name, lower-cased, into a u128: byte i at bits 8*i. `None` when longer
/// than 16 bytes.
fn pack(name: &[u8]) -> Option<u128> {
    if name.is_empty() || name.len() > 16 {
        return None;
    }
    let mut buf = [0u8; 16];
    buf[..name.len()].copy_from_slice(name);
    buf.make_ascii_lowercase();
    Some(u128::from_le_bytes(buf))
}

/// Folds the packed name into 64 bits with a multiply (names differ in their first bytes).
#[derive(Default)]
pub struct PackedNameHasher(u64);

impl Hasher for PackedNameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u128(&mut self, v: u128) {
        let folded = (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
        self.0 = (folded ^ (folded >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl KeySpecTable {
    /// Builds the table from the rows of `COMMAND`.
    pub fn from_rows(rows: &[CommandRow]) -> Self {
        let mut by_name = HashMap::with_capacity_and_hasher(rows.len(), Default::default());
        for r in rows {
            let flag = |f: &str| r.flags.iter().any(|x| x.eq_ignore_ascii_case(f));
            let access = if RUNS_OTHER_COMMANDS.contains(&r.name.as_str()) {
                KeyAccess::Skip
            } else if r.has_subcommands {
                KeyAccess::Dynamic {
                    write: flag("write"),
                }
            } else if flag("movablekeys") {
                r.spec_access().unwrap_or(KeyAccess::Dynamic {
                    write: flag("write"),
                })
            } else if r.mixes_reads_and_writes() {
                match r.split_ranges() {
                    Some(ranges) => KeyAccess::Split { ranges },
                    None => r.spec_access().unwrap_or(KeyAccess::Dynamic {
                        write: flag("write"),
                    }),
                }
            } else if r.first <= 0 || r.step <= 0 {
                KeyAccess::Skip
            } else {
                KeyAccess::Fixed {
                    first: r.first as u32,
                    last: r.last as i32,
                    step: r.step as u32,
                    write: flag("write"),
                }
            };
            if let Some(key) = pack(r.name.as_bytes()) {
                by_name.insert(key, access);
            }
        }
        KeySpecTable { by_name }
    }

    /// Number of commands known.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no command is known.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// How to find the keys of the command named `name` (any case). Unknown commands are
    /// [`KeyAccess::Dynamic`] reads unless their key specs say otherwise.
    pub fn lookup(&self, name: &[u8]) -> KeyAccess {
        const UNKNOWN: KeyAccess = KeyAccess::Dynamic { write: false };
        pack(name)
            .and_then(|k| self.by_name.get(&k).copied())
            .unwrap_or(UNKNOWN)
    }
}

/// The key positions of a [`KeyAccess::Fixed`] command with `argc` arguments (name included).
pub fn fixed_positions(
    first: u32,
    last: i32,
    step: u32,
    argc: usize,
) -> impl Iterator<Item = usize> {
    let first = first as usize;
    let last = if last < 0 {
        argc as i64 + i64::from(last)
    } else {
        i64::from(last)
    };
    let end = (last.max(-1) + 1).min(argc as i64).max(0) as usize;
    (first..end.max(first)).step_by(step.max(1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, flags: &[&str], first: i64, last: i64, step: i64) -> CommandRow {
        CommandRow {
            name: name.into(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            first,
            last,
            step,
            has_subcommands: false,
            key_specs: Vec::new(),
        }
    }

    /// A key spec at a fixed index with a plain range.
    fn spec(write: bool, index: i64, lastkey: i64) -> KeySpecRow {
        KeySpecRow {
            write: Some(write),
            index: Some(index),
            range: Some((lastkey, 1, 0)),
            ..KeySpecRow::default()
        }
    }

    #[test]
    fn classifies_commands() {
        let mut xinfo = row("xinfo", &[], 0, 0, 0);
        xinfo.has_subcommands = true;
        // SUNIONSTORE dest src...: the destination is written, the sources only read.
        let mut sunionstore = row("sunionstore", &["write", "denyoom"], 1, -1, 1);
        sunionstore.key_specs = vec![spec(true, 1, 0), spec(false, 2, -1)];
        // BITOP op dest src...
        let mut bitop = row("bitop", &["write", "denyoom"], 2, -1, 1);
        bitop.key_specs = vec![spec(true, 2, 0), spec(false, 3, -1)];
        // LMOVE src dst: both written, so the triple is enough.
        let mut lmove = row("lmove", &["write"], 1, 2, 1);
        lmove.key_specs = vec![spec(true, 1, 0), spec(true, 2, 0)];
        // Mixed, but one spec is found by keyword: the server is asked.
        let mut odd = row("odd", &["write"], 1, -1, 1);
        odd.key_specs = vec![
            spec(true, 1, 0),
            KeySpecRow {
                index: None,
                ..spec(false, 0, -1)
            },
        ];
        let t = KeySpecTable::from_rows(&[
            row("get", &["readonly", "fast"], 1, 1, 1),
            row("set", &["write", "denyoom"], 1, 1, 1),
            row("mset", &["write"], 1, -1, 2),
            row("eval", &["noscript", "movablekeys"], 0, 0, 0),
            row("zunionstore", &["write", "movablekeys"], 1, 1, 1),
            row("ping", &["fast"], 0, 0, 0),
            xinfo,
            sunionstore,
            bitop,
            lmove,
            odd,
        ]);
        assert_eq!(
            t.lookup(b"GeT"),
            KeyAccess::Fixed {
                first: 1,
                last: 1,
                step: 1,
                write: false
            }
        );
        assert!(matches!(
            t.lookup(b"SET"),
            KeyAccess::Fixed { write: true, .. }
        ));
        assert_eq!(t.lookup(b"eval"), KeyAccess::Skip);
        assert_eq!(t.lookup(b"zunionstore"), KeyAccess::Dynamic { write: true });
        assert_eq!(t.lookup(b"ping"), KeyAccess::Skip);
        let range = |first, last, write| KeyRange {
            first,
            last,
            step: 1,
            write,
        };
        assert_eq!(
            t.lookup(b"sunionstore"),
            KeyAccess::Split {
                ranges: [range(1, 1, true), range(2, -1, false)]
            }
        );
        assert_eq!(
            t.lookup(b"bitop"),
            KeyAccess::Split {
                ranges: [range(2, 2, true), range(3, -1, false)]
            }
        );
        assert!(matches!(
            t.lookup(b"lmove"),
            KeyAccess::Fixed { write: true, .. }
        ));
        assert_eq!(t.lookup(b"odd"), KeyAccess::Dynamic { write: true });
        assert!(t.lookup(b"sunionstore").writes() && !t.lookup(b"get").writes());
        assert!(!KeyAccess::Skip.writes());
        assert_eq!(spec_writes(&["OW", "update"]), Some(true));
        assert_eq!(spec_writes(&["RM", "delete"]), Some(true));
        assert_eq!(spec_writes(&["RO", "access"]), Some(false));
        assert_eq!(spec_writes(&["not_key"]), None);
        let unknown = KeyAccess::Dynamic { write: false };
        assert_eq!(t.lookup(b"xinfo"), unknown);
        assert_eq!(t.lookup(b"my.modulecmd"), unknown);
        assert_eq!(t.lookup(&[b'x'; 40]), unknown);
    }

    /// A key spec whose keys an argument counts.
    fn counted(write: bool, index: i64, numkeys_at: i64, first: i64, step: i64) -> KeySpecRow {
        KeySpecRow {
            write: Some(write),
            index: Some(index),
            keynum: Some((numkeys_at, first, step)),
            ..KeySpecRow::default()
        }
    }

    /// Commands with movable keys whose specs begin at fixed indexes are followed from their
    /// specs, each spec with its own access; others still ask the server.
    #[test]
    fn movable_keys_followed_from_their_specs() {
        // ZUNIONSTORE dest numkeys src...: the destination written, the sources read.
        let mut zunionstore = row("zunionstore", &["write", "movablekeys"], 1, 1, 1);
        zunionstore.key_specs = vec![spec(true, 1, 0), counted(false, 2, 0, 1, 1)];
        // LMPOP numkeys key... LEFT|RIGHT; MSETEX numkeys key value ... [EX s].
        let mut lmpop = row("lmpop", &["write", "movablekeys"], 0, 0, 0);
        lmpop.key_specs = vec![counted(true, 1, 0, 1, 1)];
        let mut msetex = row("msetex", &["write", "movablekeys"], 0, 0, 0);
        msetex.key_specs = vec![counted(true, 1, 0, 1, 2)];
        // Specs that begin after a keyword: GEORADIUS key ... [STORE key] [STOREDIST key],
        // XREAD ... STREAMS key... id... (the first half of what follows), MIGRATE host port
        // key|"" db timeout ... [KEYS key...] (searched from the end).
        let after =
            |keyword: &str, startfrom: i64, lastkey: i64, limit: i64, write: bool| KeySpecRow {
                write: Some(write),
                keyword: Some((keyword.to_string(), startfrom)),
                range: Some((lastkey, 1, limit)),
                ..KeySpecRow::default()
            };
        let mut georadius = row("georadius", &["write", "movablekeys"], 1, 1, 1);
        georadius.key_specs = vec![
            spec(false, 1, 0),
            after("STORE", 6, 0, 0, true),
            after("STOREDIST", 6, 0, 0, true),
        ];
        let mut xread = row("xread", &["readonly", "movablekeys"], 0, 0, 0);
        xread.key_specs = vec![after("STREAMS", 1, -1, 2, false)];
        // MIGRATE's KEYS spec is marked incomplete (its key argument is "" when KEYS
        // follows): the server is asked. A MIGRATE-like command without that flag is
        // followed, KEYS searched from the end.
        let mut migrate = row("migrate", &["write", "movablekeys"], 3, 3, 1);
        migrate.key_specs = vec![
            spec(true, 3, 0),
            KeySpecRow {
                incomplete: true,
                ..after("KEYS", -2, -1, 0, true)
            },
        ];
        let mut move_keys = row("movekeys", &["write", "movablekeys"], 3, 3, 1);
        move_keys.key_specs = vec![spec(true, 3, 0), after("KEYS", -2, -1, 0, true)];
        // A spec the filter cannot follow (SORT's BY and GET patterns): the server is asked.
        let mut sort = row("sort", &["write", "movablekeys"], 1, 1, 1);
        sort.key_specs = vec![
            spec(false, 1, 0),
            KeySpecRow {
                write: Some(true),
                ..KeySpecRow::default()
            },
        ];
        let t = KeySpecTable::from_rows(&[
            zunionstore,
            lmpop,
            msetex,
            georadius,
            xread,
            migrate,
            move_keys,
            sort,
        ]);
        let keys = |name: &[u8], line: &str| -> Vec<(String, bool)> {
            let argv: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            let KeyAccess::Specs { specs, count } = t.lookup(name) else {
                panic!("{line}: {:?}", t.lookup(name));
            };
            specs[..usize::from(count)]
                .iter()
                .flat_map(|s| {
                    s.positions(argv.len(), |i| argv[i])
                        .map(|p| (String::from_utf8_lossy(argv[p]).into_owned(), s.write))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let owned = |v: &[(&str, bool)]| {
            v.iter()
                .map(|(k, w)| (k.to_string(), *w))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(b"zunionstore", "ZUNIONSTORE d 2 a b WEIGHTS 1 2"),
            owned(&[("d", true), ("a", false), ("b", false)])
        );
        assert_eq!(
            keys(b"lmpop", "LMPOP 2 l1 l2 LEFT COUNT 3"),
            owned(&[("l1", true), ("l2", true)])
        );
        assert_eq!(
            keys(b"msetex", "MSETEX 2 k1 v1 k2 v2 EX 100"),
            owned(&[("k1", true), ("k2", true)])
        );
        // A count that is not a number gives no key; one past the arguments stops at the end.
        assert_eq!(keys(b"lmpop", "LMPOP x l1 LEFT"), owned(&[]));
        assert_eq!(
            keys(b"lmpop", "LMPOP 99 l1 l2"),
            owned(&[("l1", true), ("l2", true)])
        );
        assert_eq!(keys(b"lmpop", "LMPOP -1 l1 LEFT"), owned(&[]));
        assert_eq!(keys(b"lmpop", "LMPOP"), owned(&[]));
        assert!(t.lookup(b"zunionstore").writes());
        assert_eq!(
            keys(
                b"georadius",
                "GEORADIUS src 1 2 3 km store dst STOREDIST dist"
            ),
            owned(&[("src", false), ("dst", true), ("dist", true)])
        );
        assert_eq!(
            keys(b"georadius", "GEORADIUS src 1 2 3 km WITHDIST"),
            owned(&[("src", false)])
        );
        // Searched from startfrom on: a key named like the keyword before it is a key.
        assert_eq!(
            keys(b"georadius", "GEORADIUS store 1 2 3 km STORE out"),
            owned(&[("store", false), ("out", true)])
        );
        assert_eq!(
            keys(b"xread", "XREAD COUNT 2 STREAMS s1 s2 0 0"),
            owned(&[("s1", false), ("s2", false)])
        );
        assert_eq!(
            keys(b"xread", "XREAD STREAMS s1 $"),
            owned(&[("s1", false)])
        );
        assert_eq!(keys(b"xread", "XREAD COUNT 2"), owned(&[]));
        assert_eq!(t.lookup(b"migrate"), KeyAccess::Dynamic { write: true });
        assert_eq!(
            keys(b"movekeys", "MOVEKEYS h 6379 x 0 5000 KEYS a b"),
            owned(&[("x", true), ("a", true), ("b", true)])
        );
        // Searched backwards from the second to last argument: KEYS as the last argument is
        // not the keyword (nothing follows it), so only the fixed key.
        assert_eq!(
            keys(b"movekeys", "MOVEKEYS h 6379 k 0 5000 KEYS"),
            owned(&[("k", true)])
        );
        assert_eq!(t.lookup(b"sort"), KeyAccess::Dynamic { write: true });
    }

    #[test]
    fn positions() {
        let p = |f, l, s, argc| fixed_positions(f, l, s, argc).collect::<Vec<_>>();
        assert_eq!(p(1, 1, 1, 2), vec![1]); // GET k
        assert_eq!(p(1, 1, 1, 1), Vec::<usize>::new()); // GET (arity error)
        assert_eq!(p(1, -1, 2, 7), vec![1, 3, 5]); // MSET k v k v k v
        assert_eq!(p(1, -1, 1, 4), vec![1, 2, 3]); // DEL a b c
        assert_eq!(p(1, -2, 1, 5), vec![1, 2, 3]); // BLPOP a b c timeout
        assert_eq!(p(1, 2, 1, 3), vec![1, 2]); // RENAME a b
    }
}
