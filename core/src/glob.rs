//! Glob matching for `OPT.KEYSPACE MATCH`: Redis' syntax (`*`, `?`, `[abc]`, `[^a]`, `[a-z]`,
//! `\x`), read the way Redis' own matcher reads it, in time linear in the key's length.
//!
//! Why not the obvious recursive matcher: it backtracks at every `*`, so a crafted pattern
//! costs exponential time on one key (`*a*a*a*a*a*a*a*a*b` against a key of 60 `a`s stalled
//! the server for 55 s, and a single key cannot be split across scan slices), and it recurses
//! once per `*` (a pattern of a million stars overflowed the main thread's stack and took the
//! server down). Redis answered the same problem in its own matcher (CVE-2022-36021) with a
//! nesting limit. Here the pattern is compiled once per query into single-byte tests, with the
//! stars as self-loops between them, and a key is matched by advancing every position of the
//! pattern at once, as a bit set (shift-and): each byte of the key costs one pass over
//! `(tests + 1) / 64` words, whatever the pattern, without recursion. Patterns are capped at
//! [`MAX_GLOB_BYTES`], so a match costs at most 17 word operations per byte of the key.

/// The longest MATCH pattern accepted, in bytes.
pub const MAX_GLOB_BYTES: usize = 1024;

/// 64-bit words of the state set at the longest pattern (one state per test, plus the start).
const MAX_WORDS: usize = (MAX_GLOB_BYTES + 1).div_ceil(64);

/// A compiled glob pattern. State `i` means "the first `i` single-byte tests have matched".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// Single-byte tests (`?`, a class, a literal), in order.
    tests: usize,
    /// Words per state set: `(tests + 1).div_ceil(64)`.
    words: usize,
    /// For each byte value, `words` words: bit `i` set when test `i` accepts that byte (so the
    /// byte moves state `i` to state `i + 1`).
    accepts: Vec<u64>,
    /// Bit `i` set when a `*` stands before test `i` (the last bit: a trailing `*`), so that
    /// state `i` stays where it is on any byte.
    loops: Vec<u64>,
}

/// 256 bits: which byte values one test accepts.
type ByteSet = [u64; 4];

fn with(mut set: ByteSet, b: u8) -> ByteSet {
    set[usize::from(b >> 6)] |= 1 << (b & 63);
    set
}

fn contains(set: &ByteSet, b: u8) -> bool {
    set[usize::from(b >> 6)] & (1 << (b & 63)) != 0
}

impl Glob {
    /// Compiles `pattern`. Errors name the problem: too long, a `[` without its `]`, or a
    /// trailing backslash (which Redis' matcher would silently read as something else).
    pub fn compile(pattern: &[u8]) -> Result<Glob, String> {
        if pattern.len() > MAX_GLOB_BYTES {
            return Err(format!(
                "MATCH pattern may be at most {MAX_GLOB_BYTES} bytes, got {}",
                pattern.len()
            ));
        }
        let mut tests: Vec<ByteSet> = Vec::new();
        // star_before[i]: a `*` stands before test i (i == tests.len(): at the end).
        let mut star_before: Vec<bool> = vec![false];
        let p = pattern;
        let mut i = 0;
        while i < p.len() {
            let test = match p[i] {
                b'*' => {
                    star_before[tests.len()] = true;
                    i += 1;
                    continue;
                }
                b'?' => [u64::MAX; 4],
                b'[' => {
                    i += 1;
                    let negate = p.get(i) == Some(&b'^');
                    if negate {
                        i += 1;
                    }
                    let mut set: ByteSet = [0; 4];
                    // Read as Redis reads a class: an escape first, then the closing bracket
                    // (so `[]` is empty), then a range `x-y` (ends in either order, and `y` may
                    // be `]`), then a single byte.
                    loop {
                        match p.get(i) {
                            None => return Err("MATCH pattern has a '[' without its ']'".into()),
                            Some(b'\\') if i + 1 < p.len() => {
                                i += 1;
                                set = with(set, p[i]);
                            }
                            Some(b']') => break,
                            Some(&lo) if i + 2 < p.len() && p[i + 1] == b'-' => {
                                let hi = p[i + 2];
                                for b in lo.min(hi)..=lo.max(hi) {
                                    set = with(set, b);
                                }
                                i += 2;
                            }
                            Some(&b) => set = with(set, b),
                        }
                        i += 1;
                    }
                    if negate {
                        set = set.map(|w| !w);
                    }
                    set
                }
                b'\\' => {
                    i += 1;
                    match p.get(i) {
                        Some(&b) => with([0; 4], b),
                        None => return Err("MATCH pattern ends with a lone backslash".into()),
                    }
                }
                b => with([0; 4], b),
            };
            tests.push(test);
            star_before.push(false);
            i += 1;
        }
        let words = (tests.len() + 1).div_ceil(64);
        let mut accepts = vec![0u64; 256 * words];
        for (t, set) in tests.iter().enumerate() {
            for b in 0..=255u8 {
                if contains(set, b) {
                    accepts[usize::from(b) * words + t / 64] |= 1 << (t % 64);
                }
            }
        }
        let mut loops = vec![0u64; words];
        for (s, _) in star_before.iter().enumerate().filter(|(_, star)| **star) {
            loops[s / 64] |= 1 << (s % 64);
        }
        Ok(Glob {
            tests: tests.len(),
            words,
            accepts,
            loops,
        })
    }

    /// Whether `name` matches, as Redis' `KEYS` and `SCAN ... MATCH` would say.
    pub fn matches(&self, name: &[u8]) -> bool {
        let last = (self.tests / 64, 1u64 << (self.tests % 64));
        if self.words == 1 {
            let (loops, mut state) = (self.loops[0], 1u64);
            for &b in name {
                state = ((state & self.accepts[usize::from(b)]) << 1) | (state & loops);
                if state == 0 {
                    return false;
                }
            }
            return state & last.1 != 0;
        }
        let words = self.words;
        let mut state = [0u64; MAX_WORDS];
        state[0] = 1;
        for &b in name {
            let accepts = &self.accepts[usize::from(b) * words..][..words];
            let mut carry = 0u64;
            let mut any = 0u64;
            for w in 0..words {
                let moved = state[w] & accepts[w];
                let next = (moved << 1) | carry | (state[w] & self.loops[w]);
                carry = moved >> 63;
                state[w] = next;
                any |= next;
            }
            if any == 0 {
                return false;
            }
        }
        state[last.0] & last.1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The reference: a direct backtracking reading of the same syntax (fine on short inputs).
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(b'*'), _) => (0..=s.len()).any(|i| reference(&p[1..], &s[i..])),
            (Some(_), None) => false,
            (Some(b'?'), Some(_)) => reference(&p[1..], &s[1..]),
            (Some(b'['), Some(&c)) => {
                let mut i = 1;
                let negate = p.get(i) == Some(&b'^');
                if negate {
                    i += 1;
                }
                let mut hit = false;
                loop {
                    if p[i] == b'\\' && i + 1 < p.len() {
                        i += 1;
                        hit |= p[i] == c;
                    } else if p[i] == b']' {
                        break;
                    } else if i + 2 < p.len() && p[i + 1] == b'-' {
                        let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
                        hit |= lo <= c && c <= hi;
                        i += 2;
                    } else {
                        hit |= p[i] == c;
                    }
                    i += 1;
                }
                hit != negate && reference(&p[i + 1..], &s[1..])
            }
            (Some(b'\\'), Some(&c)) => p[1] == c && reference(&p[2..], &s[1..]),
            (Some(&a), Some(&c)) => a == c && reference(&p[1..], &s[1..]),
        }
    }

    fn glob(p: &str) -> Glob {
        Glob::compile(p.as_bytes()).unwrap()
    }

    #[test]
    fn matches_like_redis() {
        for (p, s, want) in [
            ("user:*", "user:1", true),
            ("user:*", "users", false),
            ("*:profile", "user:1:profile", true),
            ("h?llo", "hello", true),
            ("h[ae]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("h[c-a]llo", "hbllo", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("**a**", "xxaxx", true),
            ("a*", "", false),
            // Redis' reading of classes: `[]` is empty, an escaped `]` is a member, and in
            // `[a-]]` the range runs from `]` to `a` (the next `]` closes the class).
            ("[]a", "a", false),
            ("[\\]]", "]", true),
            ("[a-]]", "^", true),
            ("[a-]]", "b", false),
            ("[^]x", "x", false),
        ] {
            assert_eq!(glob(p).matches(s.as_bytes()), want, "{p} ~ {s}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        let err = |p: &[u8]| Glob::compile(p).unwrap_err();
        assert!(err(b"a[bc").contains("'[' without its ']'"));
        assert!(err(b"a[\\]").contains("'[' without its ']'"));
        // The range takes the `]` as its end, as Redis reads it: the class is left open.
        assert!(err(b"[a-]").contains("'[' without its ']'"));
        assert!(err(b"ab\\").contains("lone backslash"));
        assert!(err(&[b'*'; MAX_GLOB_BYTES + 1]).contains("at most 1024 bytes, got 1025"));
        assert!(Glob::compile(&[b'?'; MAX_GLOB_BYTES]).is_ok());
    }

    /// Random patterns over a small alphabet (so that classes, ranges and stars interact),
    /// against the backtracking reference, on both the one-word and the many-word path.
    #[test]
    fn agrees_with_the_backtracking_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let pieces: &[&str] = &[
            "a", "b", "-", "]", "^", "?", "*", "[ab]", "[^a]", "[a-b]", "[]", "[\\]]", "[a-]]",
            "\\*", "\\a",
        ];
        for round in 0..20_000 {
            let long = round % 10 == 0;
            let parts = if long { 70 } else { rng.random_range(0..8) };
            let mut p = String::new();
            for _ in 0..parts {
                // The long patterns mostly `?` and letters, so that they can match at all.
                let piece = if long && rng.random_bool(0.8) {
                    ["?", "a", "b"][rng.random_range(0..3)]
                } else {
                    pieces[rng.random_range(0..pieces.len())]
                };
                p.push_str(piece);
            }
            let Ok(g) = Glob::compile(p.as_bytes()) else {
                continue;
            };
            // The reference backtracks at every star: keep it to patterns it can finish.
            if p.matches('*').count() > 6 {
                continue;
            }
            for _ in 0..5 {
                let len = rng.random_range(0..if long { 90 } else { 10 });
                let s: Vec<u8> = (0..len)
                    .map(|_| b"ab-]^*"[rng.random_range(0..6)])
                    .collect();
                assert_eq!(
                    g.matches(&s),
                    reference(p.as_bytes(), &s),
                    "{p} ~ {}",
                    String::from_utf8_lossy(&s)
                );
            }
        }
    }

    /// The patterns that stalled (exponential backtracking) or crashed (a stack frame per
    /// star) the recursive matcher: here they are one pass over the key.
    #[test]
    fn abusive_patterns_cost_one_pass() {
        let key = vec![b'a'; 100_000];
        let mut stars = "*a".repeat(200);
        stars.push('b');
        assert!(!glob(&stars).matches(&key));
        let all_stars = "*".repeat(MAX_GLOB_BYTES - 1) + "a";
        assert!(glob(&all_stars).matches(&key));
        let many_words = "?".repeat(MAX_GLOB_BYTES);
        assert!(glob(&many_words).matches(&key[..MAX_GLOB_BYTES]));
        assert!(!glob(&many_words).matches(&key[..MAX_GLOB_BYTES - 1]));
        assert!(!glob(&many_words).matches(&key));
    }
}
