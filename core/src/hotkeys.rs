//! The hot-key tracker behind `OPT.HOTKEYS`: Space-Saving summaries of key accesses, total and
//! over a sliding window, for keys and for inferred key patterns.
//!
//! The module calls [`HotKeyTracker::record`] for each sampled key access (its command filter
//! decides which commands are sampled) and [`HotKeyTracker::record_miss`] for keymiss events.
//! The `recent` view approximates a sliding window with two tumbling windows, the current one
//! and the previous one weighted by how much of it still falls inside the window (the method
//! of sliding-window rate limiters). Time is passed in as milliseconds so that tests drive it.

use crate::args::Args;
use crate::pattern::PatternInferrer;
use crate::report::{HotEntry, HotKeysReport};
use crate::sketch::{key_hash, EntryView, Kind, SpaceSaving, MAX_NAME_BYTES};

/// Key patterns are counted for one tracked access in this many: namespaces aggregate many
/// keys, so sampling them costs little accuracy and keeps pattern inference off most accesses.
pub const NAMESPACE_SAMPLE_EVERY: u32 = 16;

/// Which accesses rank the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindFilter {
    /// Every access.
    All,
    /// Reads (misses included).
    Read,
    /// Writes.
    Write,
    /// Reads of keys that did not exist.
    Miss,
}

/// Which window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Since start or the last RESET.
    Total,
    /// The last `opt.hotkeys-window-seconds`.
    Recent,
}

/// A parsed `OPT.HOTKEYS` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotKeysQuery {
    /// How many entries.
    pub count: usize,
    /// Ranking kind.
    pub kind: KindFilter,
    /// Window.
    pub window: Window,
    /// Patterns instead of keys.
    pub namespaces: bool,
}

/// What `OPT.HOTKEYS ...` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotKeysCommand {
    /// `OPT.HOTKEYS RESET`.
    Reset,
    /// A query.
    Query(HotKeysQuery),
}

/// Parses the arguments of `OPT.HOTKEYS` (after the name, without `FORMAT JSON`).
pub fn parse_command(raw: &[&[u8]], capacity: usize) -> Result<HotKeysCommand, String> {
    if raw.len() == 1 && raw[0].eq_ignore_ascii_case(b"RESET") {
        return Ok(HotKeysCommand::Reset);
    }
    let mut args = Args::new("OPT.HOTKEYS", raw);
    let mut q = HotKeysQuery {
        count: 10.min(capacity),
        kind: KindFilter::All,
        window: Window::Total,
        namespaces: false,
    };
    while let Some(word) = args.next_keyword() {
        match word.as_str() {
            "COUNT" => q.count = args.int_value("COUNT", 1, capacity as i64)? as usize,
            "TYPE" => {
                q.kind = [
                    KindFilter::All,
                    KindFilter::Read,
                    KindFilter::Write,
                    KindFilter::Miss,
                ][args.choice("TYPE", &["all", "read", "write", "miss"])?]
            }
            "WINDOW" => {
                q.window =
                    [Window::Total, Window::Recent][args.choice("WINDOW", &["total", "recent"])?]
            }
            "NAMESPACES" => q.namespaces = true,
            "RESET" => return Err("OPT.HOTKEYS RESET takes no other arguments".to_string()),
            _ => return Err(args.unknown(&word)),
        }
    }
    Ok(HotKeysCommand::Query(q))
}

/// The summaries of one view (keys or patterns). Only the current window's summary is
/// updated per access; when a window ends it is merged into `past`, and the total view is
/// `past` merged with the current window at query time. One update per access instead of two.
#[derive(Debug, Clone)]
struct Sketches {
    past: SpaceSaving,
    current: SpaceSaving,
    previous: SpaceSaving,
}

impl Sketches {
    fn new(capacity: usize) -> Self {
        Sketches {
            past: SpaceSaving::new(capacity),
            current: SpaceSaving::new(capacity),
            previous: SpaceSaving::new(capacity),
        }
    }

    fn add(&mut self, hash: u64, name: &[u8], kind: Kind) {
        self.current.add(hash, name, kind);
    }

    fn mark(&mut self, hash: u64, kind: Kind) {
        self.current.mark(hash, kind);
    }

    /// Ends the current window, whose counts join the past ones multiplied by `scale` (the
    /// window's own sampling, see `HotKeyTracker::window_scale`).
    fn rotate(&mut self, idle: bool, scale: f64) {
        self.past =
            SpaceSaving::merged_scaled(&self.past, &self.current, self.past.capacity(), scale);
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.clear();
        if idle {
            // Idle for more than a window: nothing of the previous one is recent.
            self.previous.clear();
        }
    }

    fn resize(&mut self, capacity: usize) {
        self.past.resize(capacity);
        self.current.resize(capacity);
        self.previous.resize(capacity);
    }

    fn memory_bytes(&self) -> usize {
        self.past.memory_bytes() + self.current.memory_bytes() + self.previous.memory_bytes()
    }
}

/// The tracker: keys and patterns, total and recent.
#[derive(Debug, Clone)]
pub struct HotKeyTracker {
    keys: Sketches,
    patterns: Sketches,
    inferrer: PatternInferrer,
    pattern_buf: Vec<u8>,
    /// Whether the last recorded access was also counted for its pattern, so that its miss
    /// (which follows it) is counted for the pattern exactly when its read was.
    last_pattern_counted: bool,
    /// Accesses left before the next one whose pattern is counted: a random gap of mean
    /// `NAMESPACE_SAMPLE_EVERY`, drawn only when it runs out, so that most accesses pay a
    /// decrement rather than a random draw (and no periodic traffic stays in or out).
    pattern_countdown: u32,
    rng: u64,
    started_ms: u64,
    window_ms: u64,
    current_started_ms: u64,
    previous_len_ms: u64,
    /// Commands the recorder saw and commands the server ran, per window (past windows, the
    /// current one, the previous one). The module samples by time: it records every command
    /// during short slices, and a window's counts are scaled by all its commands over the
    /// ones seen. (Not by time: commands run slower while they are recorded, so a slice holds
    /// fewer of them than its share of the time.)
    observed: [Observed; 3],
    /// An access whose keys-summary update waits for the next record or flush (see
    /// [`HotKeyTracker::record_deferred`]): its hash, kind, the length of its name in
    /// `deferred_name`, and whether the name was cut.
    deferred: Option<(u64, Kind, usize, bool)>,
    /// That access's name, cut at `MAX_NAME_BYTES` (inline: no heap header to read per access).
    deferred_name: [u8; MAX_NAME_BYTES],
}

fn pattern_capacity(capacity: usize) -> usize {
    (capacity / 4).max(16)
}

impl HotKeyTracker {
    /// A tracker of `capacity` candidates per summary, a window of `window_ms`, splitting key
    /// names on `delimiters`, started at `now_ms`.
    pub fn new(capacity: usize, window_ms: u64, delimiters: &[u8], now_ms: u64) -> Self {
        HotKeyTracker {
            keys: Sketches::new(capacity),
            patterns: Sketches::new(pattern_capacity(capacity)),
            inferrer: PatternInferrer::new(delimiters),
            pattern_buf: Vec::with_capacity(64),
            last_pattern_counted: false,
            pattern_countdown: 1,
            rng: 0x2545_f491_4f6c_dd1d,
            started_ms: now_ms,
            window_ms: window_ms.max(1),
            current_started_ms: now_ms,
            previous_len_ms: 0,
            observed: [Observed::default(); 3],
            deferred: None,
            deferred_name: [0; MAX_NAME_BYTES],
        }
    }

    /// What a window's sampled counts are multiplied by: its commands over the ones the
    /// recorder saw; 1 when every command was recorded; the configured ratio (or 1 in auto
    /// mode) when nothing was observed. Each window is scaled by its own: the sampler's ratio
    /// follows the load, and one ratio for a long history (quiet nights recorded whole, busy
    /// days one command in 100) would multiply the quiet hours' keys by the busy ones' ratio.
    fn window_scale(o: &Observed, sample_ratio: u64) -> f64 {
        if sample_ratio == 1 {
            1.0
        } else if o.seen > 0.0 {
            (o.all / o.seen).max(1.0)
        } else {
            sample_ratio.max(1) as f64
        }
    }

    /// Adds to the current window `seen` commands the recorder saw, out of `all` the server
    /// ran (see [`Self::query`]).
    pub fn observe(&mut self, seen: u64, all: u64) {
        let o = &mut self.observed[CURRENT];
        o.seen += seen as f64;
        o.all += all.max(seen) as f64;
    }

    /// Candidates tracked per summary.
    pub fn capacity(&self) -> usize {
        self.keys.current.capacity()
    }

    /// Keys tracked in the current window's summary.
    pub fn tracked(&mut self) -> usize {
        self.flush();
        self.keys.current.len()
    }

    /// Accesses counted since start or reset.
    pub fn sampled(&mut self) -> u64 {
        self.flush();
        self.keys.past.total() + self.keys.current.total()
    }

    /// Whether this access's pattern is counted: one access in `NAMESPACE_SAMPLE_EVERY` on
    /// average, at gaps drawn uniformly from 1 to twice that minus one.
    fn namespace_turn(&mut self) -> bool {
        self.pattern_countdown -= 1;
        if self.pattern_countdown > 0 {
            return false;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.pattern_countdown = 1 + (self.rng % u64::from(2 * NAMESPACE_SAMPLE_EVERY - 1)) as u32;
        true
    }

    /// Counts one sampled access of `key`.
    pub fn record(&mut self, key: &[u8], kind: Kind) {
        self.flush();
        self.keys.add(key_hash(key), key, kind);
        self.count_pattern(key, kind);
    }

    /// The cache lines an access of `hash` will read in the keys summary, for a caller that
    /// prefetches them before [`Self::record_deferred`].
    pub fn prefetch_addresses(&self, hash: u64) -> [*const u8; 3] {
        self.keys.current.prefetch_addresses(hash)
    }

    /// [`Self::record`] of `key` (whose `key_hash` is `hash`), with the keys-summary update
    /// left for the next record or [`Self::flush`]. A caller that prefetched
    /// [`Self::prefetch_addresses`] then finds them in the cache: the module records an access in
    /// its command filter and applies it during the next command's, after the server has run
    /// the command in between. Every method that reads or changes the summaries applies it
    /// first.
    pub fn record_deferred(&mut self, key: &[u8], hash: u64, kind: Kind) {
        self.flush();
        let cut = key.len().min(MAX_NAME_BYTES);
        self.deferred_name[..cut].copy_from_slice(&key[..cut]);
        self.deferred = Some((hash, kind, cut, cut < key.len()));
        self.count_pattern(key, kind);
    }

    /// Applies the deferred access, if any.
    pub fn flush(&mut self) {
        if let Some((hash, kind, len, cut)) = self.deferred.take() {
            self.keys
                .current
                .add_cut(hash, &self.deferred_name[..len], cut, kind);
        }
    }

    /// Counts `key` under its pattern, one access in `NAMESPACE_SAMPLE_EVERY`.
    fn count_pattern(&mut self, key: &[u8], kind: Kind) {
        self.last_pattern_counted = self.namespace_turn();
        if self.last_pattern_counted {
            self.inferrer.infer_into(key, &mut self.pattern_buf);
            let h = key_hash(&self.pattern_buf);
            self.patterns.add(h, &self.pattern_buf, kind);
        }
    }

    /// Counts a miss of `key` (its read was already counted by [`Self::record`]).
    pub fn record_miss(&mut self, key: &[u8]) {
        self.flush();
        self.keys.mark(key_hash(key), Kind::Miss);
        if self.last_pattern_counted {
            self.inferrer.infer_into(key, &mut self.pattern_buf);
            let h = key_hash(&self.pattern_buf);
            self.patterns.mark(h, Kind::Miss);
        }
    }

    /// Starts a new window when the current one is over (call about once a second). The
    /// window that ends joins the past ones scaled by its own sampling, for the configured
    /// `sample_ratio` (1: every command recorded, N: one in N, 0: auto; see `window_scale`).
    pub fn tick(&mut self, now_ms: u64, sample_ratio: u64) {
        self.flush();
        let elapsed = now_ms.saturating_sub(self.current_started_ms);
        if elapsed < self.window_ms {
            return;
        }
        let scale = Self::window_scale(&self.observed[CURRENT], sample_ratio);
        for s in [&mut self.keys, &mut self.patterns] {
            s.rotate(elapsed >= 2 * self.window_ms, scale);
        }
        self.previous_len_ms = elapsed.min(self.window_ms);
        self.current_started_ms = now_ms;
        let current = self.observed[CURRENT];
        self.observed[PAST].seen += current.seen;
        self.observed[PAST].all += current.all;
        self.observed[PREVIOUS] = if elapsed >= 2 * self.window_ms {
            Observed::default()
        } else {
            current
        };
        self.observed[CURRENT] = Observed::default();
    }

    /// Changes the window length (takes effect at once for the current window).
    pub fn set_window_ms(&mut self, window_ms: u64) {
        self.window_ms = window_ms.max(1);
    }

    /// Changes the capacity, keeping the hottest candidates.
    pub fn resize(&mut self, capacity: usize) {
        self.flush();
        self.keys.resize(capacity);
        self.patterns.resize(pattern_capacity(capacity));
    }

    /// Changes the key delimiters used for patterns; the pattern summaries start over.
    pub fn set_delimiters(&mut self, delimiters: &[u8]) {
        self.inferrer = PatternInferrer::new(delimiters);
        self.patterns = Sketches::new(pattern_capacity(self.capacity()));
    }

    /// Forgets everything counted.
    pub fn reset(&mut self, now_ms: u64) {
        self.deferred = None;
        let cap = self.capacity();
        self.keys = Sketches::new(cap);
        self.patterns = Sketches::new(pattern_capacity(cap));
        self.started_ms = now_ms;
        self.current_started_ms = now_ms;
        self.previous_len_ms = 0;
        self.observed = [Observed::default(); 3];
    }

    /// Bytes held by every summary.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.keys.memory_bytes()
            + self.patterns.memory_bytes()
            + self.pattern_buf.capacity()
    }

    /// Answers a query. With `sample_ratio` 1 every access was recorded and counts are exact.
    /// Otherwise each window's counts are scaled by that window's commands over the ones the
    /// recorder saw (see [`Self::observe`]; past windows were scaled as they ended), or, when
    /// nothing was reported yet, by `sample_ratio`, or not at all for 0 (auto: the recorder
    /// chose its share from the load). The report's `sample_ratio` is the configured one, or
    /// in auto mode all the view's commands over the ones seen, rounded.
    pub fn query(&mut self, q: &HotKeysQuery, now_ms: u64, sample_ratio: u64) -> HotKeysReport {
        self.flush();
        let sketches = if q.namespaces {
            &self.patterns
        } else {
            &self.keys
        };
        // Patterns are sampled once more on top of the command sampling.
        let pattern_factor = if q.namespaces {
            f64::from(NAMESPACE_SAMPLE_EVERY)
        } else {
            1.0
        };
        // Past windows were scaled as each ended; the current (and previous) one by its own
        // sampling here.
        let window = match q.window {
            Window::Total => {
                let m = SpaceSaving::merged_views_scaled(
                    &sketches.past,
                    &sketches.current,
                    sketches.past.capacity(),
                    Self::window_scale(&self.observed[CURRENT], sample_ratio),
                );
                WindowView {
                    rows: m.entries.iter().map(|e| Merged::from(e, 1.0)).collect(),
                    sampled: m.total as f64,
                    floor: m.floor as f64,
                    seconds: (now_ms.saturating_sub(self.started_ms)).max(1) as f64 / 1000.0,
                    observed: Observed {
                        seen: self.observed[PAST].seen + self.observed[CURRENT].seen,
                        all: self.observed[PAST].all + self.observed[CURRENT].all,
                    },
                }
            }
            Window::Recent => self.recent(sketches, now_ms, sample_ratio),
        };
        // One command in how many the recorder saw over the window (what the report gives as
        // its sample ratio in auto mode).
        let sampling = Self::window_scale(&window.observed, sample_ratio);
        let scale = pattern_factor;
        let by = |m: &Merged| match q.kind {
            KindFilter::All => m.count,
            KindFilter::Read => m.split[0],
            KindFilter::Write => m.split[1],
            KindFilter::Miss => m.split[2],
        };
        // Highest first; by name, then hash, among equals, so that the order is total and
        // selecting the first `count` keeps the same entries as sorting all of them.
        let order = |a: &Merged, b: &Merged| {
            by(b)
                .total_cmp(&by(a))
                .then_with(|| a.name.cmp(b.name))
                .then_with(|| a.hash.cmp(&b.hash))
        };
        let mut rows: Vec<Merged> = window.rows.into_iter().filter(|m| by(m) > 0.0).collect();
        if q.count == 0 {
            rows.clear();
        } else if rows.len() > q.count {
            rows.select_nth_unstable_by(q.count - 1, order);
            rows.truncate(q.count);
        }
        rows.sort_by(order);
        let estimated = window.sampled * scale;
        let entries = rows
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let count = by(m) * scale;
                HotEntry {
                    rank: i as u64 + 1,
                    name: crate::report::display_name(m.name),
                    truncated: m.truncated,
                    count: count.round() as u64,
                    error: (m.error * scale).round() as u64,
                    share: if estimated > 0.0 {
                        count / estimated
                    } else {
                        0.0
                    },
                    ops_per_sec: count / window.seconds,
                    reads: (m.split[0] * scale).round() as u64,
                    writes: (m.split[1] * scale).round() as u64,
                    misses: (m.split[2] * scale).round() as u64,
                    node: None,
                    slot: None,
                }
            })
            .collect();
        HotKeysReport {
            window: match q.window {
                Window::Total => "total",
                Window::Recent => "recent",
            }
            .to_string(),
            kind: match q.kind {
                KindFilter::All => "all",
                KindFilter::Read => "read",
                KindFilter::Write => "write",
                KindFilter::Miss => "miss",
            }
            .to_string(),
            view: if q.namespaces { "namespaces" } else { "keys" }.to_string(),
            seconds: window.seconds,
            sample_ratio: if sample_ratio == 0 {
                (sampling.round() as u64).max(1)
            } else {
                sample_ratio
            },
            // The summaries hold estimates by now; the accesses recorded, about.
            sampled_accesses: (window.sampled / sampling).round() as u64,
            estimated_accesses: estimated.round() as u64,
            detection_floor: (window.floor * scale).round() as u64,
            capacity: sketches.current.capacity() as u64,
            tracked: sketches.current.len() as u64,
            entries,
        }
    }

    /// Merges the current window with the part of the previous one that is still recent: the
    /// previous window counts with the weight of its share that lies within the last
    /// `window_ms`. A key missing from one summary may have up to that summary's floor there,
    /// which goes into its error.
    fn recent<'a>(&self, s: &'a Sketches, now_ms: u64, sample_ratio: u64) -> WindowView<'a> {
        let elapsed = now_ms.saturating_sub(self.current_started_ms);
        let w = if self.previous_len_ms == 0 {
            0.0
        } else {
            (self.window_ms.saturating_sub(elapsed) as f64 / self.previous_len_ms as f64)
                .clamp(0.0, 1.0)
        };
        let covered_ms = elapsed as f64 + w * self.previous_len_ms as f64;
        // Each window scaled by its own sampling; the previous one also by its share.
        let cur_w = Self::window_scale(&self.observed[CURRENT], sample_ratio);
        let prev_w = w * Self::window_scale(&self.observed[PREVIOUS], sample_ratio);
        let prev_floor = s.previous.floor() as f64 * prev_w;
        let cur_floor = s.current.floor() as f64 * cur_w;
        let mut rows: Vec<Merged> = s
            .current
            .views()
            .map(|e| {
                let mut m = Merged::from(&e, cur_w);
                match s.previous.get_view(e.hash) {
                    Some(p) => m.add(&Merged::from(&p, prev_w)),
                    None => m.error += prev_floor,
                }
                m
            })
            .collect();
        if w > 0.0 {
            for p in s.previous.views() {
                if s.current.get_view(p.hash).is_none() {
                    let mut m = Merged::from(&p, prev_w);
                    m.error += cur_floor;
                    rows.push(m);
                }
            }
        }
        WindowView {
            rows,
            sampled: s.current.total() as f64 * cur_w + s.previous.total() as f64 * prev_w,
            floor: cur_floor + prev_floor,
            seconds: (covered_ms / 1000.0).max(0.001),
            observed: Observed {
                seen: self.observed[CURRENT].seen + self.observed[PREVIOUS].seen * w,
                all: self.observed[CURRENT].all + self.observed[PREVIOUS].all * w,
            },
        }
    }
}

/// The entries of one window, with what the report needs about the window itself.
struct WindowView<'a> {
    rows: Vec<Merged<'a>>,
    sampled: f64,
    floor: f64,
    seconds: f64,
    /// Commands seen by the recorder and run by the server in the window.
    observed: Observed,
}

/// Commands the recorder saw and commands the server ran.
#[derive(Debug, Clone, Copy, Default)]
struct Observed {
    seen: f64,
    all: f64,
}

const PAST: usize = 0;
const CURRENT: usize = 1;
const PREVIOUS: usize = 2;

/// An entry whose counts may combine two summaries with weights, its name borrowed.
struct Merged<'a> {
    hash: u64,
    name: &'a [u8],
    truncated: bool,
    count: f64,
    error: f64,
    split: [f64; 3],
}

impl<'a> Merged<'a> {
    fn from(e: &EntryView<'a>, w: f64) -> Self {
        Merged {
            hash: e.hash,
            name: e.name,
            truncated: e.truncated,
            count: e.count as f64 * w,
            error: e.error as f64 * w,
            split: e.split.map(|x| x as f64 * w),
        }
    }

    fn add(&mut self, other: &Merged<'_>) {
        self.count += other.count;
        self.error += other.error;
        for i in 0..3 {
            self.split[i] += other.split[i];
        }
    }
}

/// The sample ratio for a period of `elapsed_ms` in which the recorder saw `seen` commands:
/// the configured one, or in auto mode (`configured` 0) the one that counts `budget` commands
/// a second at that rate, at least 1 (every command).
pub fn period_sample_ratio(configured: u64, budget: u64, seen: u64, elapsed_ms: f64) -> f64 {
    if configured > 0 {
        return configured as f64;
    }
    let per_second = seen as f64 * 1000.0 / elapsed_ms.max(0.001);
    (per_second / budget.max(1) as f64).max(1.0)
}

/// Auto mode: how often a long gap between sampling slices looks at the server's command rate
/// (see [`rechecked_gap_ms`]), in milliseconds.
pub const GAP_CHECK_MS: i64 = 250;

/// Auto mode: a gap between slices was drawn for `gap_ratio` (its mean is `gap_ratio - 1`
/// slices of `slice_ms`); the server's command rate now calls for `now_ratio`. When the two
/// differ by more than a factor of 2, the rest of the gap is drawn again for `now_ratio`
/// (exponential, from the uniform `u` in (0, 1); gaps being memoryless, the time left is then
/// as if the gap had been drawn now) and returned, in milliseconds; otherwise None, and the
/// gap goes on. Without this, a slice that fell on a burst (a pipeline of thousands of
/// commands at a million a second) drew a gap of seconds, and the sampler slept through the
/// steadier traffic after it.
pub fn rechecked_gap_ms(gap_ratio: f64, now_ratio: f64, slice_ms: f64, u: f64) -> Option<f64> {
    if now_ratio * 2.0 >= gap_ratio && now_ratio <= gap_ratio * 2.0 {
        return None;
    }
    let mean = (now_ratio - 1.0).max(0.0) * slice_ms;
    Some(-u.clamp(f64::MIN_POSITIVE, 1.0).ln() * mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(window: Window, kind: KindFilter, namespaces: bool) -> HotKeysQuery {
        HotKeysQuery {
            count: 10,
            kind,
            window,
            namespaces,
        }
    }

    #[test]
    fn deferred_recording_counts_what_direct_recording_counts() {
        let mut direct = HotKeyTracker::new(16, 60_000, b":", 0);
        let mut deferred = direct.clone();
        let long = format!("blob:{}", "x".repeat(300));
        let mut x: u64 = 99;
        for i in 0..5_000u64 {
            crate::test_rng::xorshift(&mut x);
            // One long name with a fifth of the traffic, 40 short ones for the rest: more
            // names than the 16 candidates, so entries are evicted and re-admitted.
            let key = match x % 50 {
                0..=9 => long.clone(),
                k => format!("user:{k}:profile"),
            };
            let kind = if i % 4 == 0 { Kind::Write } else { Kind::Read };
            direct.record(key.as_bytes(), kind);
            deferred.record_deferred(key.as_bytes(), key_hash(key.as_bytes()), kind);
            if i % 7 == 0 {
                // A miss follows its read, as keymiss events do.
                direct.record_miss(key.as_bytes());
                deferred.record_miss(key.as_bytes());
            }
        }
        deferred.flush();
        for namespaces in [false, true] {
            let query = HotKeysQuery {
                count: 16,
                kind: KindFilter::All,
                window: Window::Total,
                namespaces,
            };
            assert_eq!(direct.query(&query, 1, 1), deferred.query(&query, 1, 1));
        }
        let top = direct.query(&q(Window::Total, KindFilter::All, false), 1, 1);
        assert!(
            top.entries.iter().any(|e| e.truncated),
            "the long name is among the top and shows as cut"
        );
    }

    #[test]
    fn parses_queries_and_names_bad_input() {
        let p = |a: &[&str]| {
            let raw: Vec<&[u8]> = a.iter().map(|s| s.as_bytes()).collect();
            parse_command(&raw, 100)
        };
        assert_eq!(p(&["reset"]), Ok(HotKeysCommand::Reset));
        assert_eq!(
            p(&[
                "COUNT",
                "5",
                "TYPE",
                "miss",
                "WINDOW",
                "recent",
                "NAMESPACES"
            ]),
            Ok(HotKeysCommand::Query(HotKeysQuery {
                count: 5,
                kind: KindFilter::Miss,
                window: Window::Recent,
                namespaces: true
            }))
        );
        assert!(p(&["COUNT", "101"]).unwrap_err().contains("from 1 to 100"));
        assert!(p(&["COUNT", "0"]).is_err());
        assert!(p(&["TYPE", "hot"])
            .unwrap_err()
            .contains("all|read|write|miss"));
        assert!(p(&["WINDOW", "week"]).unwrap_err().contains("total|recent"));
        assert!(p(&["BOGUS"])
            .unwrap_err()
            .contains("unknown option 'BOGUS'"));
        assert!(p(&["COUNT"]).unwrap_err().contains("needs a value"));
        assert!(p(&["COUNT", "3", "RESET"]).is_err());
    }

    #[test]
    fn total_view_counts_and_splits() {
        let mut t = HotKeyTracker::new(64, 60_000, b":", 0);
        for _ in 0..30 {
            t.record(b"user:1:profile", Kind::Read);
        }
        for _ in 0..10 {
            t.record(b"user:2:profile", Kind::Write);
        }
        for _ in 0..20 {
            t.record(b"cache:missing", Kind::Read);
            t.record_miss(b"cache:missing");
        }
        let r = t.query(&q(Window::Total, KindFilter::All, false), 10_000, 1);
        assert_eq!(r.sampled_accesses, 60);
        assert_eq!(r.entries[0].name, "user:1:profile");
        assert_eq!(r.entries[0].count, 30);
        assert_eq!(r.entries[0].error, 0);
        assert!((r.entries[0].share - 0.5).abs() < 1e-9);
        assert!((r.entries[0].ops_per_sec - 3.0).abs() < 1e-9);
        let m = t.query(&q(Window::Total, KindFilter::Miss, false), 10_000, 1);
        assert_eq!(m.entries.len(), 1);
        assert_eq!(
            (m.entries[0].name.as_str(), m.entries[0].misses),
            ("cache:missing", 20)
        );
        let w = t.query(&q(Window::Total, KindFilter::Write, false), 10_000, 1);
        assert_eq!(w.entries[0].name, "user:2:profile");
        // Sampling scales counts back.
        let s = t.query(&q(Window::Total, KindFilter::All, false), 10_000, 10);
        assert_eq!(s.entries[0].count, 300);
        assert_eq!(s.estimated_accesses, 600);
    }

    #[test]
    fn the_first_n_of_a_report_are_the_first_n_of_the_whole_ranking() {
        // Reports select their first COUNT entries instead of sorting every candidate; ties
        // (many keys seen equally often) must not change which ones, nor their order.
        let mut t = HotKeyTracker::new(64, 1_000, b":", 0);
        let mut rng = 7u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..3 {
            if round > 0 {
                t.tick(round * 1_500, 0);
            }
            for _ in 0..5_000 {
                let key = format!("k:{}", next() % 150);
                let kind = if next().is_multiple_of(4) {
                    Kind::Write
                } else {
                    Kind::Read
                };
                t.record(key.as_bytes(), kind);
                if kind == Kind::Read && next().is_multiple_of(3) {
                    t.record_miss(key.as_bytes());
                }
            }
        }
        let now = 4_000;
        for window in [Window::Total, Window::Recent] {
            for kind in [
                KindFilter::All,
                KindFilter::Read,
                KindFilter::Write,
                KindFilter::Miss,
            ] {
                let mut all = q(window, kind, false);
                all.count = 64;
                let whole = t.query(&all, now, 1).entries;
                assert!(whole.len() > 20, "{window:?} {kind:?}: {}", whole.len());
                for count in [1, 5, 10, 20] {
                    let mut few = all.clone();
                    few.count = count;
                    let first = t.query(&few, now, 1).entries;
                    assert_eq!(first, whole[..count], "{window:?} {kind:?} COUNT {count}");
                }
            }
        }
    }

    #[test]
    fn counts_scale_by_the_share_of_commands_recorded() {
        let mut t = HotKeyTracker::new(64, 10_000, b":", 0);
        // 200 of 2,000 commands seen: counts are scaled by 10.
        for _ in 0..200 {
            t.record(b"k", Kind::Read);
        }
        t.observe(200, 2000);
        let r = t.query(&q(Window::Total, KindFilter::All, false), 5_000, 10);
        assert_eq!(r.entries[0].count, 2000);
        let r = t.query(&q(Window::Recent, KindFilter::All, false), 5_000, 10);
        assert_eq!(r.entries[0].count, 2000);
        // A new window: the total keeps both, the recent view weighs the previous one.
        t.tick(10_000, 10);
        for _ in 0..100 {
            t.record(b"k", Kind::Read);
        }
        t.observe(100, 2000);
        let total = t.query(&q(Window::Total, KindFilter::All, false), 15_000, 10);
        // 300 recorded, 300 of 4,000 commands seen.
        assert_eq!(total.entries[0].count, 4000);
        let recent = t.query(&q(Window::Recent, KindFilter::All, false), 15_000, 10);
        // Current: 100 of 2,000; half of the previous window: 100 of 1,000.
        assert_eq!(recent.entries[0].count, 3000);
        // Auto (0): scaled the same way, and the report says by how much (4,000 / 300).
        let auto = t.query(&q(Window::Total, KindFilter::All, false), 15_000, 0);
        assert_eq!(auto.entries[0].count, 4000);
        assert_eq!(auto.sample_ratio, 13);
        t.reset(20_000);
        t.record(b"k", Kind::Read);
        // Nothing reported since the reset: the configured ratio scales.
        let r = t.query(&q(Window::Total, KindFilter::All, false), 21_000, 10);
        assert_eq!(r.entries[0].count, 10);
        assert_eq!(r.sample_ratio, 10);
        // In auto mode nothing does.
        let r = t.query(&q(Window::Total, KindFilter::All, false), 21_000, 0);
        assert_eq!((r.entries[0].count, r.sample_ratio), (1, 1));

        // Ratio 1 means every access was recorded, whatever commands were reported, in the
        // windows that ended too.
        let mut t = HotKeyTracker::new(64, 10_000, b":", 0);
        for _ in 0..200 {
            t.record(b"k", Kind::Read);
        }
        t.observe(200, 2000);
        t.tick(10_000, 1);
        t.record(b"k", Kind::Read);
        t.observe(1, 7);
        let exact = t.query(&q(Window::Total, KindFilter::All, false), 15_000, 1);
        assert_eq!((exact.entries[0].count, exact.sample_ratio), (201, 1));
    }

    #[test]
    fn each_window_is_scaled_by_its_own_sampling() {
        // A quiet window recorded whole (10,000 accesses of "night"), then a busy one recorded
        // one command in 100 (10,000 of 1,000,000, all of "day"). One ratio for both (the
        // 1,010,000 commands over the 20,000 seen) would count each key 505,000 times.
        let mut t = HotKeyTracker::new(64, 10_000, b":", 0);
        for _ in 0..10_000 {
            t.record(b"night", Kind::Read);
        }
        t.observe(10_000, 10_000);
        t.tick(10_000, 0);
        for _ in 0..10_000 {
            t.record(b"day", Kind::Read);
        }
        t.observe(10_000, 1_000_000);
        let count = |r: &HotKeysReport, name: &str| {
            r.entries.iter().find(|e| e.name == name).map(|e| e.count)
        };
        let total = t.query(&q(Window::Total, KindFilter::All, false), 15_000, 0);
        assert_eq!(count(&total, "day"), Some(1_000_000));
        assert_eq!(count(&total, "night"), Some(10_000));
        assert_eq!(total.estimated_accesses, 1_010_000);
        assert_eq!(
            total.sample_ratio, 51,
            "one command in 51 seen over the view"
        );
        assert_eq!(total.sampled_accesses, 20_000, "the accesses recorded");
        // The same once the busy window has ended too, and in the recent view (half of the
        // busy window is still recent at 25 s).
        t.tick(20_000, 0);
        let total = t.query(&q(Window::Total, KindFilter::All, false), 25_000, 0);
        assert_eq!(count(&total, "day"), Some(1_000_000));
        assert_eq!(count(&total, "night"), Some(10_000));
        let recent = t.query(&q(Window::Recent, KindFilter::All, false), 25_000, 0);
        assert_eq!(count(&recent, "day"), Some(500_000));
    }

    #[test]
    fn auto_sampling_counts_about_the_budget_a_second() {
        // A fixed ratio stays what it is.
        assert_eq!(period_sample_ratio(10, 5000, 1_000_000, 2.0), 10.0);
        // 1,100 commands in a 2 ms slice: 550,000 a second, 110 times a budget of 5,000.
        assert!((period_sample_ratio(0, 5000, 1100, 2.0) - 110.0).abs() < 1e-9);
        // Under the budget, every command: 300 commands in 100 ms is 3,000 a second.
        assert_eq!(period_sample_ratio(0, 5000, 300, 100.0), 1.0);
        assert_eq!(period_sample_ratio(0, 5000, 0, 2.0), 1.0);
        // A period of no measurable length does not divide by zero.
        assert!(period_sample_ratio(0, 5000, 10, 0.0).is_finite());
    }

    #[test]
    fn a_gap_is_drawn_again_when_the_rate_moved_by_more_than_twice() {
        // Drawn after a burst (ratio 200); the traffic now calls for 5: redrawn, with a mean
        // of 4 slices of 10 ms.
        let u = (-1.0f64).exp(); // -ln(u) = 1: the mean itself
        let g = rechecked_gap_ms(200.0, 5.0, 10.0, u).unwrap();
        assert!((g - 40.0).abs() < 1e-9, "{g}");
        // Every command now (ratio 1): no gap left.
        assert_eq!(rechecked_gap_ms(200.0, 1.0, 10.0, 0.5), Some(0.0));
        // Up by more than twice: redrawn longer.
        assert!(rechecked_gap_ms(5.0, 40.0, 10.0, u).unwrap() > 300.0);
        // Within a factor of 2 either way: the gap goes on.
        assert_eq!(rechecked_gap_ms(200.0, 100.0, 10.0, 0.5), None);
        assert_eq!(rechecked_gap_ms(200.0, 400.0, 10.0, 0.5), None);
        // A uniform of exactly 0 still gives a finite gap.
        assert!(rechecked_gap_ms(200.0, 5.0, 10.0, 0.0).unwrap().is_finite());
    }

    #[test]
    fn namespaces_roll_up_patterns() {
        let mut t = HotKeyTracker::new(256, 60_000, b":", 0);
        for i in 0..4000 {
            t.record(format!("user:{i}:profile").as_bytes(), Kind::Read);
        }
        for i in 0..1000 {
            t.record(format!("session:{i:08x}").as_bytes(), Kind::Read);
        }
        let r = t.query(&q(Window::Total, KindFilter::All, true), 1000, 1);
        assert_eq!(r.entries[0].name, "user:*:profile");
        assert_eq!(r.entries[1].name, "session:*");
        // Pattern counts are sampled 1 in NAMESPACE_SAMPLE_EVERY: within 15% of the truth.
        let c = r.entries[0].count as f64;
        assert!((c - 4000.0).abs() < 600.0, "{c}");
        assert!((r.entries[0].share - 0.8).abs() < 0.05);
    }

    #[test]
    fn recent_window_follows_what_is_hot_now() {
        let mut t = HotKeyTracker::new(64, 10_000, b":", 0);
        for _ in 0..1000 {
            t.record(b"old", Kind::Read);
        }
        t.tick(10_000, 0); // window 1 ends
        for _ in 0..200 {
            t.record(b"new", Kind::Read);
        }
        // 5 s into window 2: half of window 1 is still recent.
        let r = t.query(&q(Window::Recent, KindFilter::All, false), 15_000, 1);
        let get = |n: &str| r.entries.iter().find(|e| e.name == n).map(|e| e.count);
        assert_eq!(get("old"), Some(500));
        assert_eq!(get("new"), Some(200));
        assert!((r.seconds - 10.0).abs() < 1e-9);
        t.tick(20_000, 0); // window 2 ends; "old" was only in window 1
        t.tick(30_000, 0); // window 3 ends, empty
        let r = t.query(&q(Window::Recent, KindFilter::All, false), 30_500, 1);
        assert!(r.entries.is_empty(), "{:?}", r.entries);
        // The total view still has both.
        let r = t.query(&q(Window::Total, KindFilter::All, false), 30_500, 1);
        assert_eq!(r.entries[0].name, "old");
        assert_eq!(r.entries.len(), 2);
    }

    #[test]
    fn reset_and_resize() {
        let mut t = HotKeyTracker::new(64, 60_000, b":", 0);
        for i in 0..100 {
            t.record(format!("k{i}").as_bytes(), Kind::Read);
        }
        assert_eq!(t.tracked(), 64);
        t.resize(16);
        assert_eq!((t.capacity(), t.tracked()), (16, 16));
        t.reset(5);
        assert_eq!((t.tracked(), t.sampled()), (0, 0));
        assert!(t.memory_bytes() > 0);
    }

    #[test]
    fn memory_is_bounded_at_the_default_capacity() {
        let mut t = HotKeyTracker::new(1024, 60_000, b":", 0);
        for i in 0..200_000u64 {
            let key = format!("some:fairly:long:namespace:for:keys:{i}:{}", "x".repeat(60));
            t.record(
                key.as_bytes(),
                if i % 5 == 0 { Kind::Write } else { Kind::Read },
            );
        }
        let bytes = t.memory_bytes();
        assert!(bytes < 2 * 1024 * 1024, "tracker holds {bytes} bytes");
    }
}
