//! Shared helpers for the benches: deterministic random numbers and Zipf-distributed streams.

/// A small deterministic generator (SplitMix64), so every run sees the same stream.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws ranks 0..n with probability proportional to 1 / (rank + 1)^exponent.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A Zipf distribution over `n` items.
    pub fn new(n: usize, exponent: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for r in 0..n {
            sum += 1.0 / ((r + 1) as f64).powf(exponent);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// The key name of rank `rank`, shuffled so that hot keys are not the first ids.
pub fn key_name(rank: usize) -> String {
    let id = (rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    format!("user:{id}:profile")
}

/// Points the harness at the release build of the module (`OPT_MODULE`), unless set already.
pub fn use_release_module() {
    if std::env::var_os("OPT_MODULE").is_none() {
        let so = opt_harness::workspace_root().join("target/release/libredis_opt.so");
        assert!(
            so.exists(),
            "build it first: cargo build --release -p redis-opt-module"
        );
        std::env::set_var("OPT_MODULE", so);
    }
}
