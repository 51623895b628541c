//! The message that carries keys' tags (and freshness) from one cluster node to another when
//! MIGRATE moves the keys.
//!
//! MIGRATE (what `redis-cli --cluster reshard` uses) moves a value with DUMP and RESTORE,
//! which know nothing of the module's tag index, so a moved key would arrive untagged and the
//! next OPT.INVALIDATE of its tags would miss it; a value written with OPT.SET ... STALE would
//! lose its logical expiry and be served as fresh until its key expired. The source node
//! therefore sends the tags and freshness of the keys it migrates over the cluster bus, and
//! the target applies them to those keys once it holds them. This file is the message's encoding; the bytes come from the network, so decoding
//! checks every length and count and never trusts one.
//!
//! Layout (little endian): version `u8`, db `u32`, entry count `u32`, then per entry the key
//! (`u32` length, bytes), the tag count (`u16`), each tag (`u32` length, bytes), and a byte
//! that is 1 when the freshness follows (`i64` logical expiry in Unix ms, `u64` delta ms,
//! `u64` stale ms), else 0.

use crate::freshness::Freshness;

/// The layout version written by [`encode`]; [`decode`] refuses others.
pub const VERSION: u8 = 1;

/// One key and what the index held for it on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTags {
    /// The key's name.
    pub key: Vec<u8>,
    /// Its tags.
    pub tags: Vec<Vec<u8>>,
    /// Its freshness, when it was written with DELTA or STALE.
    pub freshness: Option<Freshness>,
}

/// The keys a MIGRATE command line (`args`, the name included) moves: its key argument, or the ones after KEYS when that is empty.
/// Options are walked in order, so a password that reads "KEYS" is not taken for it.
pub fn migrated_keys<'a>(args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    if args.len() < 6 {
        return Vec::new();
    }
    if !args[3].is_empty() {
        return vec![args[3]];
    }
    match migrate_options(args) {
        (_, Some(at)) => args[at..].to_vec(),
        (_, None) => Vec::new(),
    }
}

/// The database a MIGRATE command line (`args`, the name included) restores its keys into on
/// the target, if it names a valid one.
pub fn migrate_destination_db(args: &[&[u8]]) -> Option<u32> {
    std::str::from_utf8(args.get(4)?).ok()?.parse().ok()
}

/// Whether a MIGRATE command line (`args`, the name included) has COPY: the keys stay on the
/// source.
pub fn migrate_copies(args: &[&[u8]]) -> bool {
    migrate_options(args)
        .0
        .iter()
        .any(|o| o.eq_ignore_ascii_case(b"COPY"))
}

/// MIGRATE's options (from the 7th argument to KEYS, without the values of AUTH and AUTH2),
/// and where the names after KEYS start, if it has KEYS.
fn migrate_options<'a>(args: &[&'a [u8]]) -> (Vec<&'a [u8]>, Option<usize>) {
    let mut options = Vec::new();
    let mut i = 6;
    while i < args.len() {
        let option = args[i];
        if option.eq_ignore_ascii_case(b"KEYS") {
            return (options, Some(i + 1));
        }
        options.push(option);
        i += if option.eq_ignore_ascii_case(b"AUTH") {
            2
        } else if option.eq_ignore_ascii_case(b"AUTH2") {
            3
        } else {
            1
        };
    }
    (options, None)
}

/// Encodes the tags of keys of database `db`.
pub fn encode(db: u32, entries: &[KeyTags]) -> Vec<u8> {
    let size: usize = entries
        .iter()
        .map(|e| 31 + e.key.len() + e.tags.iter().map(|t| 4 + t.len()).sum::<usize>())
        .sum();
    let mut out = Vec::with_capacity(9 + size);
    out.push(VERSION);
    out.extend_from_slice(&db.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.key);
        out.extend_from_slice(&(e.tags.len().min(u16::MAX as usize) as u16).to_le_bytes());
        for t in e.tags.iter().take(u16::MAX as usize) {
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t);
        }
        match &e.freshness {
            Some(f) => {
                out.push(1);
                out.extend_from_slice(&f.expires_at_ms.to_le_bytes());
                out.extend_from_slice(&f.delta_ms.to_le_bytes());
                out.extend_from_slice(&f.stale_ms.to_le_bytes());
            }
            None => out.push(0),
        }
    }
    out
}

/// Reads `n` bytes at `*pos`, advancing it.
fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let end = pos
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| format!("truncated at byte {pos}", pos = *pos))?;
    let s = &bytes[*pos..end];
    *pos = end;
    Ok(s)
}

fn read_u32(bytes: &[u8], pos: &mut usize) -> Result<u32, String> {
    let b = take(bytes, pos, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(bytes: &[u8], pos: &mut usize) -> Result<u64, String> {
    let b = take(bytes, pos, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// Decodes a message made by [`encode`]: the db and the entries. Any inconsistency (another
/// version, a length past the end, bytes left over) is an error naming it.
pub fn decode(bytes: &[u8]) -> Result<(u32, Vec<KeyTags>), String> {
    let mut pos = 0;
    let version = take(bytes, &mut pos, 1)?[0];
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let db = read_u32(bytes, &mut pos)?;
    let count = read_u32(bytes, &mut pos)? as usize;
    // Each entry takes at least 7 bytes: a count past that cannot be honest.
    if count > bytes.len() / 7 {
        return Err(format!(
            "{count} entries cannot fit in {} bytes",
            bytes.len()
        ));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let key_len = read_u32(bytes, &mut pos)? as usize;
        let key = take(bytes, &mut pos, key_len)?.to_vec();
        let n = take(bytes, &mut pos, 2)?;
        let n = u16::from_le_bytes([n[0], n[1]]) as usize;
        let mut tags = Vec::with_capacity(n.min(bytes.len() / 4));
        for _ in 0..n {
            let len = read_u32(bytes, &mut pos)? as usize;
            tags.push(take(bytes, &mut pos, len)?.to_vec());
        }
        let freshness = match take(bytes, &mut pos, 1)?[0] {
            0 => None,
            1 => Some(Freshness {
                expires_at_ms: read_u64(bytes, &mut pos)? as i64,
                delta_ms: read_u64(bytes, &mut pos)?,
                stale_ms: read_u64(bytes, &mut pos)?,
            }),
            other => return Err(format!("freshness marker {other}")),
        };
        entries.push(KeyTags {
            key,
            tags,
            freshness,
        });
    }
    if pos != bytes.len() {
        return Err(format!("{} bytes left over", bytes.len() - pos));
    }
    Ok((db, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, tags: &[&str]) -> KeyTags {
        KeyTags {
            key: key.as_bytes().to_vec(),
            tags: tags.iter().map(|t| t.as_bytes().to_vec()).collect(),
            freshness: None,
        }
    }

    #[test]
    fn round_trip() {
        let entries = vec![
            entry("page:1", &["user:42", "site"]),
            entry("", &[""]),
            KeyTags {
                key: vec![0, 255, b'\n'],
                tags: vec![vec![7; 1000]],
                freshness: None,
            },
            KeyTags {
                key: b"fresh".to_vec(),
                tags: Vec::new(),
                freshness: Some(Freshness {
                    expires_at_ms: 1_800_000_000_000,
                    delta_ms: 250,
                    stale_ms: 60_000,
                }),
            },
        ];
        let bytes = encode(3, &entries);
        assert_eq!(decode(&bytes), Ok((3, entries)));
        assert_eq!(decode(&encode(0, &[])), Ok((0, Vec::new())));
    }

    #[test]
    fn every_damaged_message_is_an_error() {
        let mut fresh = entry("k2", &["c"]);
        fresh.freshness = Some(Freshness {
            expires_at_ms: -1,
            delta_ms: u64::MAX,
            stale_ms: 0,
        });
        let bytes = encode(0, &[entry("k", &["a", "bb"]), fresh]);
        // Every truncation, and every single-byte change of a length or count field.
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().contains("left over"));
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(decode(&other).unwrap_err().contains("version"));
        for i in 1..bytes.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                // Changed content decodes or fails; it never panics or allocates wildly.
                let _ = decode(&b);
            }
        }
        let mut huge = bytes.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).unwrap_err().contains("cannot fit"));
    }

    #[test]
    fn finds_the_keys_of_both_forms() {
        let m = |line: &str| -> Vec<String> {
            let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            migrated_keys(&words)
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        assert_eq!(m("MIGRATE h 1 k 0 5000"), ["k"]);
        assert_eq!(m("MIGRATE h 1 k 0 5000 COPY REPLACE"), ["k"]);
        let none: [&str; 0] = [];
        assert_eq!(m("MIGRATE h 1  0 5000 COPY"), none);
        assert_eq!(m("MIGRATE h 1  0 5000 REPLACE KEYS a b"), ["a", "b"]);
        assert_eq!(m("MIGRATE h 1  0 5000 AUTH KEYS KEYS a"), ["a"]);
        assert_eq!(
            m("MIGRATE h 1  0 5000 AUTH2 KEYS keys COPY KEYS a b c"),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn tells_a_copy_from_a_move() {
        let copies = |line: &str| {
            let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            migrate_copies(&words)
        };
        assert!(!copies("MIGRATE h 1 k 0 5000"));
        assert!(copies("MIGRATE h 1 k 0 5000 copy"));
        assert!(copies("MIGRATE h 1 k 0 5000 REPLACE COPY"));
        assert!(copies("MIGRATE h 1  0 5000 COPY KEYS a b"));
        // A password, a user or a key that reads COPY is not the option.
        assert!(!copies("MIGRATE h 1 k 0 5000 AUTH COPY"));
        assert!(!copies("MIGRATE h 1 k 0 5000 AUTH2 COPY COPY REPLACE"));
        assert!(!copies("MIGRATE h 1  0 5000 KEYS COPY"));
        assert!(copies("MIGRATE h 1 k 0 5000 AUTH2 u p COPY"));
    }

    #[test]
    fn reads_the_destination_database() {
        let db = |line: &str| {
            let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            migrate_destination_db(&words)
        };
        assert_eq!(db("MIGRATE h 1 k 0 5000"), Some(0));
        assert_eq!(db("MIGRATE h 1  3 5000 KEYS a"), Some(3));
        assert_eq!(db("MIGRATE h 1 k -1 5000"), None);
        assert_eq!(db("MIGRATE h 1 k x 5000"), None);
        assert_eq!(db("MIGRATE h 1 k"), None);
    }
}
