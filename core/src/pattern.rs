//! Key-pattern inference: `user:1234:profile` -> `user:*:profile`.
//!
//! Hot namespaces and the memory-by-pattern profile both group keys by the pattern inferred
//! here, so one definition serves both. A key is split on the configured delimiters (`:` by
//! default); each segment that looks like a value rather than a name (a number, UUID, hex id or
//! hash, date, IP address, e-mail address, long token) becomes `*`, and a name with a numeric
//! suffix (`page12`) keeps its stem (`page*`). Cluster hash-tag braces are kept around the
//! segment they wrap (`{user:42}` -> `{user:*}`). The rules favour stable, few patterns: two
//! keys of the same kind must map to the same pattern even when their ids differ in shape.

/// Splits keys into segments and replaces the variable ones.
#[derive(Debug, Clone)]
pub struct PatternInferrer {
    is_delimiter: [bool; 256],
}

impl Default for PatternInferrer {
    fn default() -> Self {
        PatternInferrer::new(b":")
    }
}

impl PatternInferrer {
    /// An inferrer splitting on each byte of `delimiters`.
    pub fn new(delimiters: &[u8]) -> Self {
        let mut is_delimiter = [false; 256];
        for &d in delimiters {
            is_delimiter[d as usize] = true;
        }
        PatternInferrer { is_delimiter }
    }

    /// Whether `b` is one of the delimiters.
    pub fn is_delimiter(&self, b: u8) -> bool {
        self.is_delimiter[b as usize]
    }

    /// Writes the pattern of `key` into `out` (cleared first).
    pub fn infer_into(&self, key: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let mut start = 0;
        for (i, &b) in key.iter().enumerate() {
            if self.is_delimiter[b as usize] {
                push_segment(&key[start..i], out);
                out.push(b);
                start = i + 1;
            }
        }
        push_segment(&key[start..], out);
    }

    /// The pattern of `key` as text (bytes that are not UTF-8 as `\xNN`).
    pub fn infer(&self, key: &[u8]) -> String {
        let mut out = Vec::with_capacity(key.len());
        self.infer_into(key, &mut out);
        crate::report::display_name(&out)
    }
}

/// Appends the pattern form of one segment.
fn push_segment(seg: &[u8], out: &mut Vec<u8>) {
    // Keep hash-tag braces outside the classification.
    let open = seg.first() == Some(&b'{');
    let close = seg.len() > usize::from(open) && seg.last() == Some(&b'}');
    let inner = &seg[usize::from(open)..seg.len() - usize::from(close)];
    if open {
        out.push(b'{');
    }
    if is_variable(inner) {
        out.push(b'*');
    } else if let Some(stem) = numeric_suffix_stem(inner) {
        out.extend_from_slice(stem);
        out.push(b'*');
    } else {
        out.extend_from_slice(inner);
    }
    if close {
        out.push(b'}');
    }
}

/// Whether a whole segment is a value (id, number, date, token...) rather than a name.
fn is_variable(s: &[u8]) -> bool {
    if s.is_empty() {
        return false;
    }
    if s.len() > 40 {
        return true;
    }
    let mut digits = 0usize;
    let mut hex_letters = 0usize;
    let mut other_letters = 0usize;
    let mut at = None;
    let mut other = 0usize;
    for (i, &b) in s.iter().enumerate() {
        match b {
            b'0'..=b'9' => digits += 1,
            b'a'..=b'f' | b'A'..=b'F' => hex_letters += 1,
            b'g'..=b'z' | b'G'..=b'Z' => other_letters += 1,
            b'-' | b'.' | b'_' | b'/' | b'+' => {}
            b'@' => at = Some(i),
            _ => other += 1,
        }
    }
    let letters = hex_letters + other_letters;
    // Numbers, signed or decimal: 42, -7, 3.14, and digit runs with separators such as dates
    // (2026-11-26), times, IP addresses (10.0.0.1) and phone numbers.
    if digits > 0 && letters == 0 && other == 0 && at.is_none() {
        return true;
    }
    // ISO timestamps: 2026-11-26T10 or 20261126T101500Z.
    if digits >= 6
        && other_letters <= 2
        && other == 0
        && s.iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_' | b'+' | b'T' | b'Z'))
    {
        return true;
    }
    // E-mail addresses.
    if let Some(i) = at {
        if i > 0 && s[i + 1..].contains(&b'.') {
            return true;
        }
    }
    // UUIDs and hex ids or hashes (at least 8 hex digits, with a digit so that words like
    // "cafebabe" or "feed" stay names).
    let hexish = other_letters == 0 && other == 0 && at.is_none();
    if hexish && digits > 0 && digits + hex_letters >= 8 {
        return true;
    }
    // Long tokens mixing letters and digits: session ids, base64 or base62 ids, ULIDs.
    if s.len() >= 16 && digits >= 2 && letters >= 2 && other == 0 {
        return true;
    }
    false
}

/// `page12` -> `page`, `ORD-2026-000123` -> `ORD-`: a name followed by a run of digits and
/// separators holding two or more digits keeps its stem (and the separator after it).
fn numeric_suffix_stem(s: &[u8]) -> Option<&[u8]> {
    let is_sep = |b: &u8| matches!(b, b'-' | b'_' | b'.');
    let run = s
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit() || is_sep(b))
        .count();
    let digits = s[s.len() - run..]
        .iter()
        .filter(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || run == s.len() {
        return None;
    }
    let mut stem_len = s.len() - run;
    let last = s[stem_len - 1];
    // After a path separator any number is an id (`/users/7`); after a letter it takes two
    // digits, so that names such as `v2` or `s3` stay names.
    let ok = last == b'/' || (last.is_ascii_alphabetic() && digits >= 2);
    if !ok {
        return None;
    }
    if is_sep(&s[stem_len]) {
        stem_len += 1;
    }
    Some(&s[..stem_len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str) -> String {
        PatternInferrer::default().infer(key.as_bytes())
    }

    #[test]
    fn real_world_key_shapes() {
        let cases = [
            ("user:1234:profile", "user:*:profile"),
            ("user:1234", "user:*"),
            ("session:6f9619ff-8b86-d011-b42d-00cf4fc964ff", "session:*"),
            ("session:4a7d1ed414474e4033ac29ccb8653d9b", "session:*"),
            ("cache:product:987", "cache:product:*"),
            ("cache:product:missing-42", "cache:product:missing-*"),
            ("report:2026-11-01:daily", "report:*:daily"),
            ("stats:20261101", "stats:*"),
            ("events:2026-11-26T10", "events:*"),
            ("rate:10.0.0.1", "rate:*"),
            ("login:alice@example.com:attempts", "login:*:attempts"),
            ("token:eyJhbGciOiJIUzI1NiJ9abc", "token:*"),
            ("job:01HZX3K9Q7W8E5R2T6Y4U1I0OP", "job:*"),
            ("sha:da39a3ee5e6b4b0d3255bfef95601890afd80709", "sha:*"),
            ("leaderboard:global", "leaderboard:global"),
            ("queue:jobs", "queue:jobs"),
            ("feed:42", "feed:*"),
            ("page12", "page*"),
            ("api:v2:users", "api:v2:users"),
            ("price:-3.5", "price:*"),
            ("{user:42}:cart", "{user:*}:cart"),
            ("{42}:cart", "{*}:cart"),
            ("config", "config"),
            ("12345", "*"),
            ("a::b", "a::b"),
            ("", ""),
            ("feed:cafebabe", "feed:cafebabe"),
            ("bull:emails:1234:logs", "bull:emails:*:logs"),
            ("sidekiq:queue:default", "sidekiq:queue:default"),
            ("laravel_cache:tag:posts:key", "laravel_cache:tag:posts:key"),
            ("order:ORD-2026-000123", "order:ORD-*"),
            ("shard3:item:7", "shard3:item:*"),
            ("counter:pageviews:17", "counter:pageviews:*"),
            ("page:/users/1067", "page:/users/*"),
            ("page:/users/7", "page:/users/*"),
            ("api:v2:users", "api:v2:users"),
        ];
        for (key, want) in cases {
            assert_eq!(p(key), want, "pattern of {key:?}");
        }
    }

    #[test]
    fn same_kind_keys_share_a_pattern() {
        let a = p("session:6f9619ff-8b86-d011-b42d-00cf4fc964ff");
        let b = p("session:00000000-0000-0000-0000-000000000001");
        assert_eq!(a, b);
        assert_eq!(p("user:1:profile"), p("user:99999999:profile"));
    }

    #[test]
    fn several_delimiters() {
        let inf = PatternInferrer::new(b":/|");
        assert_eq!(inf.infer(b"img/2026/11/cat.png"), "img/*/*/cat.png");
        assert_eq!(inf.infer(b"a|17|b:99"), "a|*|b:*");
        let dots = PatternInferrer::new(b".");
        assert_eq!(dots.infer(b"app.user.42.name"), "app.user.*.name");
    }

    #[test]
    fn non_utf8_keys_do_not_panic() {
        let inf = PatternInferrer::default();
        let out = inf.infer(&[0xff, 0xfe, b':', b'1', b'2']);
        assert!(out.ends_with(":*"));
    }
}
