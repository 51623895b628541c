//! The unit tests' source of pseudo-random streams: one xorshift step, so that a test's
//! stream is fixed by its seed and a failure repeats. Not for anything that must be
//! unpredictable (see `hash_secret`).

/// Advances `x` by one xorshift64 step and returns it (a zero seed stays zero).
pub(crate) fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}
