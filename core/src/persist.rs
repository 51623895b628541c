//! The module's persisted state: what the RDB aux field holds.
//!
//! Layout: a format number, the tag index section (`TagIndex::save`), then (format 2) the
//! freshness section (`FreshnessIndex::save`). Every field is checked on load, so a truncated
//! or corrupt payload is an error the module reports, never a crash.

use crate::freshness_index::FreshnessIndex;
use crate::tags::{IndexReader, IndexWriter, TagIndex};

/// The format written now.
pub const FORMAT: u64 = 2;

/// Writes the whole state.
pub fn save(tags: &TagIndex, fresh: &FreshnessIndex, w: &mut impl IndexWriter) {
    w.write_u64(FORMAT);
    tags.save(w);
    fresh.save(w);
}

/// Reads a state written by [`save`] (format 1 had no freshness section). `key_exists`
/// filters out entries whose key is gone.
pub fn load(
    r: &mut impl IndexReader,
    mut key_exists: impl FnMut(usize, &[u8]) -> bool,
) -> Result<(TagIndex, FreshnessIndex), String> {
    let format = r.read_u64()?;
    if format != 1 && format != FORMAT {
        return Err(format!(
            "module state format {format} is unknown (expected 1 or {FORMAT})"
        ));
    }
    let tags = TagIndex::load(r, &mut key_exists)?;
    let fresh = if format >= 2 {
        FreshnessIndex::load(r, &mut key_exists)?
    } else {
        FreshnessIndex::default()
    };
    Ok((tags, fresh))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::Freshness;
    use crate::tags::persist_tests::Buf;

    #[test]
    fn round_trip_and_every_truncation() {
        let mut tags = TagIndex::default();
        tags.set_tags(0, b"a", &[b"x"]);
        let mut fresh = FreshnessIndex::default();
        let f = Freshness {
            expires_at_ms: 123,
            delta_ms: 4,
            stale_ms: 5,
        };
        fresh.set(0, b"a", f);
        fresh.set(2, b"b", f);
        let mut buf = Buf::default();
        save(&tags, &fresh, &mut buf);
        let (t, fr) = load(&mut buf, |_, _| true).unwrap();
        assert_eq!(t.stats(), tags.stats());
        assert_eq!(fr.get(2, b"b"), Some(f));
        for cut in 0..buf.items.len() {
            let mut b = Buf {
                items: buf.items[..cut].to_vec(),
                pos: 0,
            };
            assert!(load(&mut b, |_, _| true).is_err(), "cut at {cut}");
        }
        let mut b = Buf {
            items: buf.items.clone(),
            pos: 0,
        };
        b.items[0] = Ok(7);
        assert!(load(&mut b, |_, _| true).unwrap_err().contains("format 7"));
    }
}
