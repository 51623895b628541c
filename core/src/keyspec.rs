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
}

/// How the filter finds a command's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAccess {
    /// No keys, or keys counted elsewhere (scripts): skip.
    Skip,
    /// Keys at fixed positions; all read or all written.
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
    /// Ask the server (key specs with per-key flags). Some servers (7.0) report no flags for
    /// commands whose keys a procedure finds; then `write`, the command's flag, decides.
    Dynamic {
        /// Whether the command has the `write` flag.
        write: bool,
    },
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
        }
    }

    #[test]
    fn classifies_commands() {
        let mut xinfo = row("xinfo", &[], 0, 0, 0);
        xinfo.has_subcommands = true;
        let t = KeySpecTable::from_rows(&[
            row("get", &["readonly", "fast"], 1, 1, 1),
            row("set", &["write", "denyoom"], 1, 1, 1),
            row("mset", &["write"], 1, -1, 2),
            row("eval", &["noscript", "movablekeys"], 0, 0, 0),
            row("zunionstore", &["write", "movablekeys"], 1, 1, 1),
            row("ping", &["fast"], 0, 0, 0),
            xinfo,
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
