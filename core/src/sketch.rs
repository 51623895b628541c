//! A bounded heavy-hitter summary: Filtered Space-Saving (Metwally, Agrawal, El Abbadi, 2005;
//! the admission filter of Homem and Carvalho, 2010).
//!
//! Why Space-Saving rather than HeavyKeeper or a Count-Min sketch with a heap: it is
//! deterministic and gives, for every entry, an exact upper bound on how much its count is
//! overestimated (`error`), and for the whole summary a detection floor: any key whose true
//! count exceeds the smallest tracked count is guaranteed to be tracked. Those two numbers are
//! what `OPT.HOTKEYS` promises its users; HeavyKeeper only gives probabilistic bounds. On skewed
//! (Zipf) traffic its estimates of the top keys are near exact, and memory is fixed by the
//! capacity, whatever the keyspace size.
//!
//! The filter: a key that is not tracked first counts in a small array of counters indexed by
//! its hash, and replaces the minimum entry only once that counter reaches the minimum. On
//! traffic with a long cold tail (the usual cache) this avoids replacing an entry on nearly
//! every access, which is what makes plain Space-Saving slow there, and the guarantees stay:
//! an untracked key was counted at most its filter counter, which never exceeds the minimum.
//!
//! Layout: counters live in a vector sorted ascending, so the minimum is at index 0 and an
//! increment moves an entry to the end of its run of equal counts (found by binary search, or
//! at once when the next count is larger, the usual case for hot keys). Empty slots hold count
//! 0, so filling and replacing share one code path. A `FixedIdTable` from the 64-bit key hash to
//! the slot finds entries (a table whose bucket addresses a caller can prefetch: in the server
//! the summary's time is cache misses, not instructions); names are kept, truncated, only to
//! show them.

use crate::idtable::FixedIdTable;

/// Longest key name kept for display; longer names are cut (the hash still tells them apart).
pub const MAX_NAME_BYTES: usize = 128;

/// The access kinds counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A read of a key.
    Read = 0,
    /// A write of a key.
    Write = 1,
    /// A read of a key that did not exist (a subset of reads).
    Miss = 2,
}

/// One tracked key (its hash, the identity, is in `SpaceSaving::hashes`).
#[derive(Debug, Clone, Default)]
pub struct Slot {
    /// The key name, cut at [`MAX_NAME_BYTES`].
    pub name: Vec<u8>,
    /// Whether `name` was cut.
    pub truncated: bool,
    /// Upper bound on the overestimate of this entry's count.
    pub error: u64,
    /// Reads, writes and misses counted since the key entered the summary.
    pub split: [u64; 3],
    occupied: bool,
}

/// A tracked entry as returned by queries.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Hash of the full key.
    pub hash: u64,
    /// Name (possibly cut).
    pub name: Vec<u8>,
    /// Whether the name was cut.
    pub truncated: bool,
    /// Estimated count (an upper bound: the true count is in `count - error ..= count`).
    pub count: u64,
    /// Upper bound of the overestimate.
    pub error: u64,
    /// Reads, writes, misses counted while tracked.
    pub split: [u64; 3],
}

/// A tracked entry borrowed from its summary: an [`Entry`] without a copy of its name.
/// Reports look at every entry and keep a few, so they copy only the names they keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntryView<'a> {
    /// Hash of the full key.
    pub hash: u64,
    /// Name (possibly cut).
    pub name: &'a [u8],
    /// Whether the name was cut.
    pub truncated: bool,
    /// Estimated count (an upper bound: the true count is in `count - error ..= count`).
    pub count: u64,
    /// Upper bound of the overestimate.
    pub error: u64,
    /// Reads, writes, misses counted while tracked.
    pub split: [u64; 3],
}

impl EntryView<'_> {
    /// The entry with its own copy of the name.
    pub fn to_entry(&self) -> Entry {
        Entry {
            hash: self.hash,
            name: self.name.to_vec(),
            truncated: self.truncated,
            count: self.count,
            error: self.error,
            split: self.split,
        }
    }
}

/// Two summaries merged (see [`SpaceSaving::merged_views`]), without building a summary.
#[derive(Debug, Clone)]
pub struct MergedViews<'a> {
    /// The entries kept, in no particular order.
    pub entries: Vec<EntryView<'a>>,
    /// The merged floor: no key left out was counted more often.
    pub floor: u64,
    /// Accesses counted by both.
    pub total: u64,
}

/// The Space-Saving summary.
///
/// Slots never move once filled; what is kept sorted is a permutation of slot ids (`order`)
/// with the counts beside it, so an increment touches two small dense arrays and never the
/// slot data or the hash index.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    /// Counts in ascending order, by position.
    counts: Vec<u64>,
    /// Slot id at each position.
    order: Vec<u32>,
    /// Position of each slot id.
    rank: Vec<u32>,
    /// Slot data, by slot id.
    slots: Vec<Slot>,
    /// Key hash to slot id. A `FixedIdTable` rather than a hash map so that the caller can prefetch
    /// the bucket a key will probe (see [`SpaceSaving::prefetch_addresses`]).
    index: FixedIdTable,
    /// The key hash of each slot id (the key's identity), dense, so that the index compares
    /// hashes without reading slots.
    hashes: Vec<u64>,
    total: u64,
    /// Admission filter: counts of untracked keys by hash bucket (never above the minimum),
    /// saturating at `u32::MAX` (see [`filter_value`]).
    filter: Vec<u32>,
}

/// Filter buckets per tracked entry.
const FILTER_PER_SLOT: usize = 16;

fn filter_len(capacity: usize) -> usize {
    (capacity * FILTER_PER_SLOT).next_power_of_two()
}

/// A count as a filter counter. Counters saturate, and a saturated one lets its keys in at
/// once, as plain Space-Saving would (an admitted key's error is the minimum, which bounds any
/// untracked key's count), so the guarantees hold with half the memory of u64 counters.
fn filter_value(count: u64) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

impl SpaceSaving {
    /// A summary tracking at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self::with_floor(capacity, 0)
    }

    /// An empty summary whose empty slots and filter start at `floor` (see [`Self::resize`]).
    fn with_floor(capacity: usize, floor: u64) -> Self {
        let capacity = capacity.max(1);
        // At most a quarter full: most accesses are to untracked keys, and a miss then probes
        // about 1.8 buckets on average (3 at half full).
        let index = FixedIdTable::with_buckets(capacity * 4);
        SpaceSaving {
            counts: vec![floor; capacity],
            order: (0..capacity as u32).collect(),
            rank: (0..capacity as u32).collect(),
            slots: vec![Slot::default(); capacity],
            index,
            hashes: vec![0; capacity],
            total: 0,
            filter: vec![filter_value(floor); filter_len(capacity)],
        }
    }

    /// How many keys it can track.
    pub fn capacity(&self) -> usize {
        self.counts.len()
    }

    /// How many keys it tracks now.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing was counted yet.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Accesses counted (the stream length N).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The smallest tracked count: every key counted more often than this is tracked, and any
    /// untracked key was counted at most this often. 0 while there is room left.
    pub fn floor(&self) -> u64 {
        self.counts[0]
    }

    /// Counts one access of the key with hash `hash` and name `name`.
    pub fn add(&mut self, hash: u64, name: &[u8], kind: Kind) {
        self.add_cut(hash, name, false, kind);
    }

    /// The address of the filter counter an access of `hash` reads first (the only cache miss
    /// of an access to an untracked key besides the index), for a caller that prefetches it.
    pub fn filter_address(&self, hash: u64) -> *const u8 {
        self.filter
            .as_ptr()
            .wrapping_add(self.filter_bucket(hash))
            .cast()
    }

    /// The slot id tracking `hash`, if any.
    #[inline]
    fn find(&self, hash: u64) -> Option<u32> {
        let hashes = &self.hashes;
        self.index.find(hash, |id| hashes[id as usize] == hash)
    }

    /// The cache lines an access of `hash` may read that are likely not in the cache: its
    /// filter counter, its index bucket, and the slot an admission would take over. A caller
    /// that prefetches them before [`Self::add`] overlaps those misses with other work.
    pub fn prefetch_addresses(&self, hash: u64) -> [*const u8; 3] {
        let filter = self.filter_address(hash);
        let bucket = self.index.bucket_address(hash);
        let min_slot = (&self.slots[self.order[0] as usize] as *const Slot).cast();
        [filter, bucket, min_slot]
    }

    /// [`Self::add`] for a name already cut by the caller (`cut`: whether it was).
    ///
    /// Inline, the common case only: most accesses are to keys that are neither tracked nor
    /// yet as frequent as the least tracked one, and cost a lookup and a filter increment. The
    /// rest (a tracked key, an admission) is in [`Self::add_tracked`].
    #[inline(always)]
    pub fn add_cut(&mut self, hash: u64, name: &[u8], cut: bool, kind: Kind) {
        self.total += 1;
        // Read the filter counter before probing the index: both are likely cache misses, and
        // issued together they overlap.
        let bucket = self.filter_bucket(hash);
        let counted = self.filter[bucket];
        let found = self.find(hash);
        // A saturated counter stands for a count past u32::MAX: never below the minimum.
        if found.is_none() && counted != u32::MAX && u64::from(counted) < self.counts[0] {
            // Not yet as frequent as the least tracked key: count it in the filter.
            self.filter[bucket] = counted + 1;
            return;
        }
        self.add_tracked(found, hash, name, cut, kind);
    }

    /// The rest of [`Self::add_cut`]: counts an access of the tracked slot `found`, or, when
    /// the key is not tracked (`None`), gives it the minimum entry's slot first.
    #[inline(never)]
    fn add_tracked(&mut self, found: Option<u32>, hash: u64, name: &[u8], cut: bool, kind: Kind) {
        let slot = match found {
            Some(s) => s as usize,
            None => self.take_min_slot(hash, name, cut),
        };
        self.increment(self.rank[slot] as usize);
        self.slots[slot].split[kind as usize] += 1;
    }

    fn filter_bucket(&self, hash: u64) -> usize {
        // The index uses the low bits; the filter takes the high ones.
        (hash >> 32) as usize & (self.filter.len() - 1)
    }

    /// Adds to the split counter of an already tracked key without counting an access (used
    /// for misses, which were already counted as reads). Returns whether the key was tracked.
    pub fn mark(&mut self, hash: u64, kind: Kind) -> bool {
        match self.find(hash) {
            Some(s) => {
                self.slots[s as usize].split[kind as usize] += 1;
                true
            }
            None => false,
        }
    }

    /// Gives the slot of the minimum entry to a new key; returns the slot id.
    fn take_min_slot(&mut self, hash: u64, name: &[u8], already_cut: bool) -> usize {
        let min = self.counts[0];
        let id = self.order[0] as usize;
        if self.slots[id].occupied {
            let old = self.hashes[id];
            let hashes = &self.hashes;
            self.index.remove(old, |id| hashes[id as usize] == old);
            // The evicted key's count stays in the filter, so it is never forgotten.
            let bucket = self.filter_bucket(old);
            self.filter[bucket] = self.filter[bucket].max(filter_value(min));
        }
        let slot = &mut self.slots[id];
        let cut = name.len().min(MAX_NAME_BYTES);
        slot.name.clear();
        slot.name.extend_from_slice(&name[..cut]);
        slot.truncated = already_cut || cut < name.len();
        slot.error = min;
        slot.split = [0; 3];
        slot.occupied = true;
        self.index.insert_unique(hash, id as u32);
        self.hashes[id] = hash;
        id
    }

    /// Adds one to the count at position `pos`, moving it to the end of its run of equal
    /// counts first so that the order stays sorted.
    fn increment(&mut self, pos: usize) {
        let c = self.counts[pos];
        let n = self.counts.len();
        let last = if pos + 1 == n || self.counts[pos + 1] > c {
            pos
        } else {
            pos + self.counts[pos..].partition_point(|&x| x <= c) - 1
        };
        if last != pos {
            self.order.swap(pos, last);
            self.rank[self.order[pos] as usize] = pos as u32;
            self.rank[self.order[last] as usize] = last as u32;
        }
        self.counts[last] = c + 1;
    }

    /// The tracked entry for `hash`, if any.
    pub fn get(&self, hash: u64) -> Option<Entry> {
        self.get_view(hash).map(|v| v.to_entry())
    }

    /// The tracked entry for `hash`, if any, borrowed.
    pub fn get_view(&self, hash: u64) -> Option<EntryView<'_>> {
        self.find(hash)
            .map(|s| self.view_at(self.rank[s as usize] as usize))
    }

    fn view_at(&self, pos: usize) -> EntryView<'_> {
        let id = self.order[pos] as usize;
        let s = &self.slots[id];
        EntryView {
            hash: self.hashes[id],
            name: &s.name,
            truncated: s.truncated,
            count: self.counts[pos],
            error: s.error,
            split: s.split,
        }
    }

    fn occupied_positions(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.counts.len())
            .rev()
            .filter(|&p| self.slots[self.order[p] as usize].occupied)
    }

    /// Every tracked entry, highest count first, borrowed.
    pub fn views(&self) -> impl Iterator<Item = EntryView<'_>> + '_ {
        self.occupied_positions().map(|p| self.view_at(p))
    }

    /// Every tracked entry, highest count first.
    pub fn entries(&self) -> Vec<Entry> {
        self.views().map(|v| v.to_entry()).collect()
    }

    /// The `n` entries with the highest counts, highest first.
    pub fn top(&self, n: usize) -> Vec<Entry> {
        self.views().take(n).map(|v| v.to_entry()).collect()
    }

    /// Changes the capacity, keeping the entries with the highest counts. The guarantees
    /// hold: a dropped entry's count is at most the new floor, and new empty slots (and the
    /// filter) start at the old floor, since an untracked key may have been counted that often.
    pub fn resize(&mut self, capacity: usize) {
        let capacity = capacity.max(1);
        if capacity == self.capacity() {
            return;
        }
        let keep = self.top(capacity);
        let floor = if keep.len() == capacity {
            keep.last().map_or(0, |e| e.count)
        } else {
            self.counts[0]
        };
        *self = Self::from_entries(capacity, keep, floor, self.total);
    }

    /// A summary holding `entries` (highest count first, at most `capacity`), whose empty
    /// slots and filter start at `floor`, having counted `total` accesses.
    fn from_entries(capacity: usize, entries: Vec<Entry>, floor: u64, total: u64) -> Self {
        let mut s = Self::with_floor(capacity, floor);
        s.total = total;
        let kept = entries.len().min(capacity);
        let first = capacity - kept;
        // Entry i (0 = hottest) takes slot id i at position capacity - 1 - i; empty slot ids
        // kept..capacity take the low positions.
        for (i, e) in entries.into_iter().take(kept).enumerate() {
            let pos = capacity - 1 - i;
            s.index.insert_unique(e.hash, i as u32);
            s.hashes[i] = e.hash;
            s.slots[i] = Slot {
                name: e.name,
                truncated: e.truncated,
                error: e.error,
                split: e.split,
                occupied: true,
            };
            s.counts[pos] = e.count;
            s.order[pos] = i as u32;
            s.rank[i] = pos as u32;
        }
        for (pos, id) in (0..first).zip(kept as u32..) {
            s.order[pos] = id;
            s.rank[id as usize] = pos as u32;
        }
        s
    }

    /// Merges two summaries into one of `capacity` entries (the mergeable-summaries method of
    /// Agarwal et al., 2012): a key missing from one summary may have had up to that summary's
    /// floor there, which is added to its count and its error, so the bounds stay valid.
    pub fn merged(a: &SpaceSaving, b: &SpaceSaving, capacity: usize) -> SpaceSaving {
        Self::merged_scaled(a, b, capacity, 1.0)
    }

    /// [`Self::merged`] with every count of `b` (its entries' counts, errors and splits, its
    /// floor and total) multiplied by `b_scale` first: a sampled window's counts brought to
    /// what they estimate before joining counts that are already estimates.
    pub fn merged_scaled(
        a: &SpaceSaving,
        b: &SpaceSaving,
        capacity: usize,
        b_scale: f64,
    ) -> SpaceSaving {
        let mut m = Self::merged_views_scaled(a, b, capacity, b_scale);
        m.entries.sort_by(merge_order);
        let entries = m.entries.iter().map(|v| v.to_entry()).collect();
        Self::from_entries(capacity.max(1), entries, m.floor, m.total)
    }

    /// What [`Self::merged`] would hold, borrowed from `a` and `b`, in no particular order:
    /// for a report, which keeps a few of the entries and needs no summary built (building
    /// one allocates its filter and index, and copying every name cost more than the rest).
    pub fn merged_views<'a>(
        a: &'a SpaceSaving,
        b: &'a SpaceSaving,
        capacity: usize,
    ) -> MergedViews<'a> {
        Self::merged_views_scaled(a, b, capacity, 1.0)
    }

    /// [`Self::merged_views`] with `b`'s counts multiplied by `b_scale` (see
    /// [`Self::merged_scaled`]).
    pub fn merged_views_scaled<'a>(
        a: &'a SpaceSaving,
        b: &'a SpaceSaving,
        capacity: usize,
        b_scale: f64,
    ) -> MergedViews<'a> {
        let capacity = capacity.max(1);
        let sc = |v: u64| {
            if b_scale == 1.0 {
                v
            } else {
                (v as f64 * b_scale).round() as u64
            }
        };
        let scaled = |mut e: EntryView<'a>| {
            e.count = sc(e.count);
            e.error = sc(e.error);
            e.split = e.split.map(sc);
            e
        };
        let (fa, fb) = (a.floor(), sc(b.floor()));
        let mut all: Vec<EntryView<'a>> = Vec::with_capacity(a.len() + b.len());
        all.extend(a.views().map(|mut e| {
            match b.get_view(e.hash).map(scaled) {
                Some(o) => {
                    e.count += o.count;
                    e.error += o.error;
                    for i in 0..3 {
                        e.split[i] += o.split[i];
                    }
                }
                None => {
                    e.count += fb;
                    e.error += fb;
                }
            }
            e
        }));
        all.extend(
            b.views()
                .filter(|e| a.find(e.hash).is_none())
                .map(scaled)
                .map(|mut e| {
                    e.count += fa;
                    e.error += fa;
                    e
                }),
        );
        // The entries the sorted order would keep: the order is total (count, then hash), so
        // selecting the first `capacity` keeps the same ones as sorting all of them.
        let floor = if all.len() >= capacity {
            let (_, last_kept, _) = all.select_nth_unstable_by(capacity - 1, merge_order);
            last_kept.count.max(fa + fb)
        } else {
            fa + fb
        };
        all.truncate(capacity);
        MergedViews {
            entries: all,
            floor,
            total: a.total + sc(b.total),
        }
    }

    /// Forgets everything, keeping the capacity.
    pub fn clear(&mut self) {
        *self = SpaceSaving::new(self.capacity());
    }

    /// Bytes of heap and inline memory this summary holds (names included).
    pub fn memory_bytes(&self) -> usize {
        let slots = self.slots.capacity() * std::mem::size_of::<Slot>();
        let names: usize = self.slots.iter().map(|s| s.name.capacity()).sum();
        let counts = self.counts.capacity() * 8 + self.filter.capacity() * 4;
        let order = (self.order.capacity() + self.rank.capacity()) * 4;
        let index = self.index.capacity() * 8 + self.hashes.capacity() * 8;
        std::mem::size_of::<Self>() + slots + names + counts + order + index
    }
}

/// The order of merged entries: highest count first, then by hash, so that it is total.
fn merge_order(x: &EntryView<'_>, y: &EntryView<'_>) -> std::cmp::Ordering {
    y.count.cmp(&x.count).then_with(|| x.hash.cmp(&y.hash))
}

/// 64-bit hash of a key name: xxh3, fast on short keys and well spread for the index, seeded
/// with the process's secret so that clients cannot aim keys at one filter cell or bucket.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, crate::hash_secret::process_secret())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn saturated_filter_counters_admit_keys() {
        // A summary whose floor is past what a filter counter holds (after a resize or a merge
        // of long-running windows): keys must still get in, with the floor as their error.
        let floor = u64::from(u32::MAX) + 10;
        let mut s = SpaceSaving::with_floor(4, floor);
        assert!(s.filter.iter().all(|&a| a == u32::MAX));
        for _ in 0..3 {
            s.add(key_hash(b"k1"), b"k1", Kind::Read);
        }
        let e = s.get(key_hash(b"k1")).expect("k1 is tracked");
        assert_eq!(e.error, floor);
        assert_eq!(e.count, floor + 3);
        assert_eq!(filter_value(floor), u32::MAX);
        assert_eq!(filter_value(7), 7);
    }

    fn add(s: &mut SpaceSaving, key: &str, kind: Kind) {
        s.add(key_hash(key.as_bytes()), key.as_bytes(), kind);
    }

    #[test]
    fn exact_while_there_is_room() {
        let mut s = SpaceSaving::new(8);
        for (k, n) in [("a", 5), ("b", 3), ("c", 1)] {
            for _ in 0..n {
                add(&mut s, k, Kind::Read);
            }
        }
        let top = s.top(10);
        let got: Vec<(String, u64, u64)> = top
            .iter()
            .map(|e| (String::from_utf8(e.name.clone()).unwrap(), e.count, e.error))
            .collect();
        assert_eq!(
            got,
            vec![("a".into(), 5, 0), ("b".into(), 3, 0), ("c".into(), 1, 0)]
        );
        assert_eq!(s.floor(), 0);
        assert_eq!(s.total(), 9);
    }

    #[test]
    fn guarantees_hold_on_random_streams() {
        // Deterministic pseudo-random skewed stream.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut truth: HashMap<u64, u64> = HashMap::new();
        let mut s = SpaceSaving::new(64);
        for _ in 0..50_000 {
            crate::test_rng::xorshift(&mut x);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let k = (1000.0 * u.powi(3)) as u64;
            let name = format!("k{k}");
            *truth.entry(k).or_default() += 1;
            add(
                &mut s,
                &name,
                if k % 3 == 0 { Kind::Write } else { Kind::Read },
            );
        }
        let floor = s.floor();
        let entries = s.entries();
        let sum: u64 =
            s.counts.iter().sum::<u64>() + s.filter.iter().map(|&a| u64::from(a)).sum::<u64>();
        assert!(s
            .order
            .iter()
            .enumerate()
            .all(|(p, &id)| s.rank[id as usize] as usize == p));
        assert!(
            sum >= s.total(),
            "entries and filter account for every access"
        );
        assert!(
            s.filter.iter().all(|&a| u64::from(a) <= floor),
            "filter never exceeds the floor"
        );
        for (k, &t) in &truth {
            let h = key_hash(format!("k{k}").as_bytes());
            match entries.iter().find(|e| e.hash == h) {
                Some(e) => {
                    assert!(e.count >= t && e.count - e.error <= t, "bounds of k{k}");
                    assert_eq!(e.split[0] + e.split[1], e.count - e.error);
                }
                None => assert!(t <= floor, "k{k} counted {t} > floor {floor} but untracked"),
            }
        }
        // Sorted order is kept.
        assert!(s.counts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn merging_keeps_the_bounds() {
        let mut a = SpaceSaving::new(8);
        let mut b = SpaceSaving::new(8);
        let mut truth: HashMap<String, u64> = HashMap::new();
        for i in 0..400u64 {
            let k = format!("k{}", (i * i) % 23);
            *truth.entry(k.clone()).or_default() += 1;
            add(if i % 2 == 0 { &mut a } else { &mut b }, &k, Kind::Read);
        }
        let m = SpaceSaving::merged(&a, &b, 8);
        assert_eq!(m.total(), 400);
        assert!(m.len() <= 8);
        for (k, &t) in &truth {
            match m.get(key_hash(k.as_bytes())) {
                Some(e) => assert!(e.count >= t && e.count - e.error <= t, "{k}: {e:?} vs {t}"),
                None => assert!(
                    t <= m.floor(),
                    "{k} counted {t} above the floor {}",
                    m.floor()
                ),
            }
        }
        // Merging with an empty summary changes nothing.
        let sorted = |mut v: Vec<Entry>| {
            v.sort_by_key(|e| e.hash);
            v
        };
        let same = SpaceSaving::merged(&a, &SpaceSaving::new(8), 8);
        assert_eq!(sorted(same.entries()), sorted(a.entries()));
    }

    #[test]
    fn merged_views_keep_what_merged_keeps() {
        // Heavy overlap and many equal counts, so that the selection meets ties.
        let mut a = SpaceSaving::new(16);
        let mut b = SpaceSaving::new(16);
        for i in 0..3_000u64 {
            let k = format!("k{}", (i * 7919) % 41);
            add(if i % 3 == 0 { &mut a } else { &mut b }, &k, Kind::Read);
        }
        for capacity in [1, 5, 16, 32] {
            let built = SpaceSaving::merged(&a, &b, capacity);
            let views = SpaceSaving::merged_views(&a, &b, capacity);
            let mut kept: Vec<Entry> = views.entries.iter().map(|v| v.to_entry()).collect();
            kept.sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.hash.cmp(&y.hash)));
            assert_eq!(kept, built.entries(), "capacity {capacity}");
            assert_eq!((views.floor, views.total), (built.floor(), built.total()));
        }
    }

    #[test]
    fn mark_only_touches_tracked_keys() {
        let mut s = SpaceSaving::new(4);
        add(&mut s, "x", Kind::Read);
        assert!(s.mark(key_hash(b"x"), Kind::Miss));
        assert!(!s.mark(key_hash(b"y"), Kind::Miss));
        assert_eq!(s.get(key_hash(b"x")).unwrap().split, [1, 0, 1]);
        assert_eq!(s.total(), 1);
    }

    #[test]
    fn long_names_are_cut_but_kept_apart() {
        let mut s = SpaceSaving::new(4);
        let a = "a".repeat(300);
        let b = format!("{}b", "a".repeat(299));
        add(&mut s, &a, Kind::Read);
        add(&mut s, &b, Kind::Read);
        assert_eq!(s.len(), 2);
        let e = s.top(1).remove(0);
        assert!(e.truncated && e.name.len() == MAX_NAME_BYTES);
    }

    #[test]
    fn resize_keeps_the_top_and_the_invariants() {
        let mut s = SpaceSaving::new(16);
        for i in 0..16u64 {
            for _ in 0..=i {
                add(&mut s, &format!("k{i}"), Kind::Read);
            }
        }
        s.resize(4);
        let names: Vec<String> = s
            .top(10)
            .iter()
            .map(|e| String::from_utf8(e.name.clone()).unwrap())
            .collect();
        assert_eq!(names, vec!["k15", "k14", "k13", "k12"]);
        assert_eq!(s.floor(), 13);
        add(&mut s, "new", Kind::Read);
        assert_eq!(s.get(key_hash(b"new")).unwrap().error, 13);
        s.resize(32);
        assert_eq!(s.capacity(), 32);
        // New slots start at the floor: an untracked key may have had that many accesses.
        assert_eq!(s.floor(), 14);
        assert_eq!(s.top(1)[0].name, b"k15");
        add(&mut s, "another", Kind::Write);
        assert_eq!(s.get(key_hash(b"another")).unwrap().error, 14);
        assert!(s.counts.windows(2).all(|w| w[0] <= w[1]));
    }
}
