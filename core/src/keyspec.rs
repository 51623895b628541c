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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeySpecRow {
    /// `Some(true)` when the spec writes its keys (`RW`, `OW` or `RM`), `Some(false)` when it
    /// only reads them (`RO`), `None` when its flags say neither.
    pub write: Option<bool>,
    /// Where the search begins, when it begins at a fixed index (`begin_search` of type
    /// `index`).
    pub index: Option<i64>,
    /// `lastkey`, `keystep` and `limit`, when the keys are a range (`find_keys` of type
    /// `range`).
    pub range: Option<(i64, i64, i64)>,
}

impl CommandRow {
    /// Whether some of the command's keys are only read and others written (the sources and
    /// the destination of SUNIONSTORE): its first/last/step triple cannot tell them apart.
    pub fn mixes_reads_and_writes(&self) -> bool {
        let w = || self.key_specs.iter().filter_map(|s| s.write);
        w().any(|x| x) && w().any(|x| !x)
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
            } else if flag("movablekeys") || r.has_subcommands {
                KeyAccess::Dynamic {
                    write: flag("write"),
                }
            } else if r.mixes_reads_and_writes() {
                match r.split_ranges() {
                    Some(ranges) => KeyAccess::Split { ranges },
                    None => KeyAccess::Dynamic {
                        write: flag("write"),
                    },
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
