//! What `MEMORY USAGE` reports for a small string key, computed without asking the server.
//!
//! `OPT.KEYSPACE FULL` must be much faster than `redis-cli --memkeys`, and calling MEMORY
//! USAGE for every key costs most of the time. For `int` and `embstr` strings, the usual bulk
//! of a cache, the figure follows from the key and value lengths and the allocator's size
//! classes: `class(key sds) + value + dictEntry (+ per-entry metadata)`. The module reads the
//! size classes from the server's allocator at run time and calibrates the constant part on
//! the first keys against MEMORY USAGE itself, falling back to MEMORY USAGE whenever they
//! disagree. This is Redis 7.x's layout (the key name and the value object allocated apart);
//! the module asks MEMORY USAGE for every key on servers that embed the name in the object.

/// Bytes of the sds header for a string of `len` bytes, as `sdsnewlen` picks its type.
pub fn sds_header(len: usize) -> usize {
    if len < 32 {
        1
    } else if len < 256 {
        3
    } else if len < 65_536 {
        5
    } else if (len as u64) < (1u64 << 32) {
        9
    } else {
        17
    }
}

/// The allocation of a key name of `key_len` bytes (an sds sized exactly).
fn key_name_bytes(key_len: usize, class: &impl Fn(usize) -> Option<usize>) -> Option<usize> {
    class(sds_header(key_len) + key_len + 1)
}

/// The part of MEMORY USAGE that depends on the key and the value, for strings (None when
/// a size is beyond the class table). `class` maps a
/// request size to the allocator's size class. The constant per-entry part (the dictEntry and
/// any metadata) is added by the caller, once calibrated.
pub fn string_key_bytes(
    key_len: usize,
    encoding: &str,
    value_len: usize,
    class: impl Fn(usize) -> Option<usize>,
) -> Option<u64> {
    let key = key_name_bytes(key_len, &class)?;
    let value = match encoding {
        // A bare robj: the integer lives in its pointer.
        "int" => 16,
        // robj, sdshdr8 and the bytes in one allocation.
        "embstr" => class(16 + 3 + value_len + 1)?,
        // robj plus an sds sized exactly (true unless APPEND or SETRANGE grew it: see
        // `raw_string_key_bytes`).
        "raw" => 16 + class(sds_header(value_len) + value_len + 1)?,
        _ => return None,
    };
    Some((key + value) as u64)
}

/// [`string_key_bytes`] of a `raw` string whose sds allocation is known: `sds_request` is
/// its header, its capacity and the terminator, as read from the string itself. A string that
/// APPEND or SETRANGE grew has spare capacity that its length does not show (Redis 7.x grows
/// an sds to twice what it needs, up to 1 MB more).
pub fn raw_string_key_bytes(
    key_len: usize,
    sds_request: usize,
    class: impl Fn(usize) -> Option<usize>,
) -> Option<u64> {
    let key = key_name_bytes(key_len, &class)?;
    Some((key + 16 + class(sds_request)?) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// jemalloc's small size classes with an 8-byte quantum (Redis' bundled build).
    fn classes(n: usize) -> Option<usize> {
        let table = [
            8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256,
        ];
        table.iter().copied().find(|&c| c >= n)
    }

    #[test]
    fn small_strings() {
        // "key:1" (5 bytes, sdshdr5) -> class(7) = 8; embstr "hello" -> class(25) = 32.
        assert_eq!(string_key_bytes(5, "embstr", 5, classes), Some(40));
        assert_eq!(string_key_bytes(5, "int", 3, classes), Some(24));
        assert_eq!(string_key_bytes(40, "embstr", 44, classes), Some(48 + 64));
        assert_eq!(string_key_bytes(5, "raw", 100, classes), Some(8 + 16 + 112));
        assert_eq!(string_key_bytes(5, "hash", 3, classes), None);
        assert_eq!(
            string_key_bytes(500, "embstr", 5, classes),
            None,
            "beyond the table"
        );
        // A raw string of 100 bytes grown to a capacity of 200: an sdshdr8 of 3 + 200 + 1.
        assert_eq!(raw_string_key_bytes(5, 204, classes), Some(8 + 16 + 224));
        assert_eq!(raw_string_key_bytes(5, 104, classes), Some(8 + 16 + 112));
        assert_eq!(
            raw_string_key_bytes(5, 5000, classes),
            None,
            "beyond the table"
        );
        assert_eq!(sds_header(31), 1);
        assert_eq!(sds_header(32), 3);
        assert_eq!(sds_header(70_000), 9);
    }
}
