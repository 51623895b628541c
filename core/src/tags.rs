//! The tag index behind `OPT.SET ... TAGS`, `OPT.TAG` and `OPT.INVALIDATE`: which keys carry
//! which tags, per database.
//!
//! Tag libraries keep one Redis set per tag, written by separate commands, and those sets leak
//! members whose keys expired or were evicted. Here the index lives in the module and the
//! module feeds it every way a key leaves the keyspace, so it can only hold live keys. It is
//! laid out for memory: key and tag names are stored once, in slots addressed by 32-bit ids;
//! a tag holds a plain vector of key ids, and a key holds (tag id, position in that vector)
//! pairs, in its slot for up to three tags (as is a name of up to 22 bytes), so a (key, tag)
//! pair costs about 12 bytes plus its share of the key's slot (33 bytes a pair in all with 3
//! tags a key and short names, measured), where a Redis set member costs about 60 and the tag
//! list in the cached item more. A running digest (a sum of hashes of every (db, key, tag)
//! triple) lets two servers compare their indexes in O(1).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use crate::chunked::{Chunked, CHUNK};
use crate::idtable::IdTable;

/// Bounds on what may be tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagLimits {
    /// `opt.max-tags-per-key`.
    pub max_tags_per_key: usize,
    /// `opt.max-tag-length`, in bytes.
    pub max_tag_length: usize,
}

#[derive(Debug, Default, Clone)]
struct KeySlot {
    name: KeyName,
    /// (tag id, position of this key in that tag's `keys`).
    tags: TagList,
}

/// A key's name, in the slot up to 22 bytes (`user:42:profile`, `page:1234`). A short name
/// costs no allocation of its own: no malloc when a key is tagged, no free when it expires or
/// is deleted (the cost that runs for every expired tagged key), and no allocator rounding.
/// Longer names cost 8 bytes more than a plain boxed name would.
type KeyName = Compact<u8, 22>;

/// A key's (tag id, position) pairs, in the slot up to 3 tags. Most keys carry a few tags,
/// and keeping them in the slot saves an allocation per key (16 bytes per key with 3 tags), an
/// allocation and a free per write or removal, and a cache miss each time a key's position in
/// a tag is looked up or fixed.
type TagList = Compact<(u32, u32), 3>;

/// A short sequence kept inline up to `N` items, on the heap beyond (sized exactly).
#[derive(Debug, Clone)]
enum Compact<T, const N: usize> {
    Inline { len: u8, items: [T; N] },
    Heap(Box<[T]>),
}

impl<T: Copy + Default, const N: usize> Default for Compact<T, N> {
    fn default() -> Self {
        Compact::Inline {
            len: 0,
            items: [T::default(); N],
        }
    }
}

impl<T: Copy + Default, const N: usize> From<&[T]> for Compact<T, N> {
    fn from(v: &[T]) -> Self {
        if v.len() <= N {
            let mut items = [T::default(); N];
            items[..v.len()].copy_from_slice(v);
            Compact::Inline {
                len: v.len() as u8,
                items,
            }
        } else {
            Compact::Heap(v.into())
        }
    }
}

impl<T, const N: usize> std::ops::Deref for Compact<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Compact::Inline { len, items } => &items[..*len as usize],
            Compact::Heap(b) => b,
        }
    }
}

impl<T, const N: usize> std::ops::DerefMut for Compact<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Compact::Inline { len, items } => &mut items[..*len as usize],
            Compact::Heap(b) => b,
        }
    }
}

impl<T: Copy + Default, const N: usize> Compact<T, N> {
    /// Appends an item.
    fn push(&mut self, item: T) {
        match self {
            Compact::Inline { len, items } if (*len as usize) < N => {
                items[*len as usize] = item;
                *len += 1;
            }
            _ => {
                let mut v = self.to_vec();
                v.push(item);
                *self = Compact::Heap(v.into_boxed_slice());
            }
        }
    }

    /// Removes the item at `i`, moving the last one into its place.
    fn swap_remove(&mut self, i: usize) {
        match self {
            Compact::Inline { len, items } => {
                let last = *len as usize - 1;
                items[i] = items[last];
                *len -= 1;
            }
            Compact::Heap(_) => {
                let mut v = self.to_vec();
                v.swap_remove(i);
                *self = Compact::from(v.as_slice());
            }
        }
    }

    /// Heap bytes held beyond the slot.
    fn heap_bytes(&self) -> usize {
        match self {
            Compact::Inline { .. } => 0,
            Compact::Heap(b) => std::mem::size_of_val::<[T]>(b),
        }
    }
}

/// A tag's key ids, in the order positions name them: a vector while the tag holds up to
/// [`CHUNK`] keys, fixed chunks beyond. A vector of millions of ids grows by copying all of
/// them in one write: 16 MB, 7 to 14 ms in SLOWLOG, when one tag passed four million keys.
#[derive(Debug, Clone)]
enum KeyList {
    Small(Vec<u32>),
    Big(Box<Chunked<u32>>),
}

impl Default for KeyList {
    fn default() -> Self {
        KeyList::Small(Vec::new())
    }
}

impl KeyList {
    fn len(&self) -> usize {
        match self {
            KeyList::Small(v) => v.len(),
            KeyList::Big(c) => c.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, i: usize) -> Option<&u32> {
        match self {
            KeyList::Small(v) => v.get(i),
            KeyList::Big(c) => c.get(i),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &u32> + '_ {
        let (small, big) = match self {
            KeyList::Small(v) => (Some(v.iter()), None),
            KeyList::Big(c) => (None, Some(c.iter())),
        };
        small.into_iter().flatten().chain(big.into_iter().flatten())
    }

    /// Bytes allocated for the ids.
    fn heap_bytes(&self) -> usize {
        match self {
            KeyList::Small(v) => v.capacity() * std::mem::size_of::<u32>(),
            KeyList::Big(c) => {
                c.allocated_bytes_of_full_chunks() + std::mem::size_of::<Chunked<u32>>()
            }
        }
    }

    /// Appends key id `k` and returns its position. The vector grows by doubling: growing by
    /// half measured worse (34.1 bytes a pair against 33.4 in `tags_bench 1`), as the allocator
    /// rounds odd sizes up to its size classes, which powers of two already are.
    fn push(&mut self, k: u32) -> u32 {
        match self {
            KeyList::Small(v) if v.len() == CHUNK => {
                let mut chunks = Chunked::from_full_chunk(std::mem::take(v));
                chunks.push(k);
                *self = KeyList::Big(Box::new(chunks));
            }
            KeyList::Small(v) => v.push(k),
            KeyList::Big(c) => c.push(k),
        }
        self.len() as u32 - 1
    }

    /// Takes out the id at `pos`, moving the last one into its place, and gives room back as
    /// the list empties: a list back to one chunk becomes a vector, and a vector a quarter
    /// full is halved.
    fn swap_remove(&mut self, pos: usize) {
        match self {
            KeyList::Small(v) => {
                v.swap_remove(pos);
                if v.capacity() > 16 && v.len() < v.capacity() / 4 {
                    v.shrink_to(v.len() * 2);
                }
            }
            KeyList::Big(c) => {
                let Some(last) = c.pop() else { return };
                if pos < c.len() {
                    c[pos] = last;
                }
                if c.len() < CHUNK {
                    let first = std::mem::take(&mut **c).into_chunks().into_iter().next();
                    *self = KeyList::Small(first.unwrap_or_default());
                }
            }
        }
    }

    /// The address of the id at `pos`, for a caller to prefetch.
    fn address(&self, pos: usize) -> *const u8 {
        self.get(pos)
            .map_or(std::ptr::null(), |k| (k as *const u32).cast())
    }
}

#[derive(Debug, Default, Clone)]
struct TagSlot {
    name: Box<[u8]>,
    keys: KeyList,
    /// `name_hash(name)`, kept so that removing a key does not hash its tags' names again.
    hash: u64,
}

/// Names stored once in slots, found by name through a table of ids.
#[derive(Debug, Default, Clone)]
struct Interner<S> {
    slots: Chunked<S>,
    /// Slots freed for reuse. In chunks too: a vector of millions of freed ids (keys that
    /// expired or were deleted) would copy all of them in the one removal that doubles it.
    free: Chunked<u32>,
    by_name: IdTable,
    /// Sum of the slots' [`Named::heap_bytes`], kept as they change, so that the index's
    /// memory is known without walking every slot (INFO took 7 ms per million tagged keys).
    heap: usize,
}

/// A ranking of the tags of one db by keys held, made a part at a time
/// ([`TagIndex::rank_tags`]). It keeps copies of the `n` largest names seen so far.
#[derive(Debug, Clone)]
pub struct TagRanking {
    db: usize,
    n: usize,
    next_slot: usize,
    /// The heap's top is the worst kept: the fewest keys, then the greatest name.
    kept: BinaryHeap<(Reverse<usize>, Box<[u8]>)>,
}

impl TagRanking {
    /// A ranking of the `n` largest tags of `db`, at its start.
    pub fn new(db: usize, n: usize) -> Self {
        TagRanking {
            db,
            n,
            next_slot: 0,
            kept: BinaryHeap::with_capacity(n.min(1024) + 1),
        }
    }

    /// The db being ranked.
    pub fn db(&self) -> usize {
        self.db
    }

    /// The tag slots read so far.
    pub fn slots_read(&self) -> usize {
        self.next_slot
    }

    /// Keeps `name` if it is among the `n` largest so far; copies only names it keeps.
    fn offer(&mut self, count: usize, name: &[u8]) {
        if self.kept.len() < self.n {
            self.kept.push((Reverse(count), name.into()));
            return;
        }
        let better = self
            .kept
            .peek()
            .is_some_and(|(Reverse(worst), worst_name)| {
                count > *worst || (count == *worst && name < &**worst_name)
            });
        if better {
            self.kept.pop();
            self.kept.push((Reverse(count), name.into()));
        }
    }

    /// The tags kept, largest first (ties by name).
    pub fn into_largest(self) -> Vec<(Vec<u8>, usize)> {
        self.kept
            .into_sorted_vec()
            .into_iter()
            .map(|(Reverse(count), name)| (name.into_vec(), count))
            .collect()
    }
}

/// The hash the index files a name under (for the `*_hashed` calls, which take it computed
/// once).
pub fn name_hash(name: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name)
}

trait Named {
    fn name(&self) -> &[u8];
    fn with_name(name: &[u8]) -> Self;
    /// Bytes the slot holds on the heap, beyond its own size.
    fn heap_bytes(&self) -> usize;
}

impl Named for KeySlot {
    fn name(&self) -> &[u8] {
        &self.name
    }
    fn heap_bytes(&self) -> usize {
        self.name.heap_bytes() + self.tags.heap_bytes()
    }
    fn with_name(name: &[u8]) -> Self {
        KeySlot {
            name: name.into(),
            tags: TagList::default(),
        }
    }
}

impl Named for TagSlot {
    fn name(&self) -> &[u8] {
        &self.name
    }
    fn heap_bytes(&self) -> usize {
        self.name.len() + self.keys.heap_bytes()
    }
    fn with_name(name: &[u8]) -> Self {
        TagSlot {
            name: name.into(),
            keys: KeyList::default(),
            hash: name_hash(name),
        }
    }
}

impl<S: Named + Default> Interner<S> {
    fn find(&self, name: &[u8]) -> Option<u32> {
        self.find_hashed(name, name_hash(name))
    }

    /// `find` with `name_hash(name)` already computed.
    fn find_hashed(&self, name: &[u8], hash: u64) -> Option<u32> {
        let slots = &self.slots;
        self.by_name
            .find(hash, |id| slots[id as usize].name() == name)
    }

    fn find_or_insert(&mut self, name: &[u8]) -> u32 {
        self.find_or_insert_hashed(name, name_hash(name))
    }

    /// `find_or_insert` with `name_hash(name)` already computed.
    fn find_or_insert_hashed(&mut self, name: &[u8], hash: u64) -> u32 {
        if let Some(id) = self.find_hashed(name, hash) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = S::with_name(name);
                id
            }
            None => {
                self.slots.push(S::with_name(name));
                (self.slots.len() - 1) as u32
            }
        };
        self.heap += self.slots[id as usize].heap_bytes();
        self.by_name.insert_unique(hash, id);
        id
    }

    fn remove(&mut self, id: u32) {
        self.remove_hashed(id, name_hash(self.slots[id as usize].name()));
    }

    /// `remove` with the hash of the slot's name already computed.
    fn remove_hashed(&mut self, id: u32, hash: u64) {
        self.by_name.remove(hash, |i| i == id);
        self.release(id);
    }

    /// Finds `name` and drops it from the name table in one probe; the slot stays until
    /// [`Interner::release`].
    fn unlink_hashed(&mut self, name: &[u8], hash: u64) -> Option<u32> {
        let slots = &self.slots;
        self.by_name
            .remove(hash, |id| slots[id as usize].name() == name)
    }

    /// Frees slot `id` (already out of the name table) for reuse.
    fn release(&mut self, id: u32) {
        // Saturating: a bookkeeping slip may misreport memory, never panic.
        self.heap = self
            .heap
            .saturating_sub(self.slots[id as usize].heap_bytes());
        self.slots[id as usize] = S::default();
        self.free.push(id);
    }

    /// Changes slot `id` through `f`, keeping [`Interner::heap`] right.
    fn edit<R>(&mut self, id: u32, f: impl FnOnce(&mut S) -> R) -> R {
        let slot = &mut self.slots[id as usize];
        let before = slot.heap_bytes();
        let out = f(slot);
        self.heap = (self.heap + slot.heap_bytes()).saturating_sub(before);
        out
    }

    fn live(&self) -> usize {
        self.by_name.len()
    }

    /// Frees every slot of `gone` (distinct live ids, each with its name's hash; some slots
    /// stay live). When the names left fit in a name table of half the size or less, the table
    /// is rebuilt at that size from them in one pass in memory order, and gives its room back;
    /// else each name leaves the table by its hash. (Time alone does not decide it: with half
    /// of 200k keys leaving, the two ways took 11.6 and 11.1 ms, `cargo bench --bench core --
    /// "half the index"`.) The rebuild walks every bucket, so it is taken only when they are at
    /// most [`WALK_BOUND`] times what leaves.
    fn remove_many(&mut self, gone: &[(u32, u64)]) {
        let left = self.live() - gone.len();
        if IdTable::buckets_for(left) * 2 <= self.by_name.capacity()
            && self.by_name.capacity() <= gone.len().saturating_mul(WALK_BOUND)
        {
            let mut leaving = vec![0u64; self.slots.len().div_ceil(64)];
            for &(id, _) in gone {
                leaving[id as usize / 64] |= 1 << (id % 64);
            }
            self.by_name
                .retain(|id| leaving[id as usize / 64] & (1 << (id % 64)) == 0);
        } else {
            for &(id, hash) in gone {
                self.by_name.remove(hash, |i| i == id);
            }
        }
        for &(id, _) in gone {
            self.release(id);
        }
    }
}

/// How many times what an invalidation removes the whole-table ways of a bulk removal may
/// walk (slots, buckets): they walk in proportion to what the index once held, and an index
/// that once held millions of keys and now holds a few must not make a small invalidation walk
/// the millions.
const WALK_BOUND: usize = 4;

/// The tags of one database.
#[derive(Debug, Default, Clone)]
struct DbTags {
    keys: Interner<KeySlot>,
    tags: Interner<TagSlot>,
    /// (key, tag) pairs in this database.
    pairs: u64,
    /// Sum of [`pair_hash_of`] over this database's pairs. It does not depend on the db's
    /// number, so SWAPDB swaps two databases' parts as they are; [`TagIndex::stats`] mixes the
    /// number in.
    digest: u64,
}

/// Counts and memory of the whole index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStats {
    /// Tagged keys.
    pub keys: u64,
    /// Distinct tags.
    pub tags: u64,
    /// (key, tag) pairs.
    pub pairs: u64,
    /// Order-independent digest of every (db, key, tag).
    pub digest: u64,
}

/// A key's name and its tags.
pub type KeyWithTags = (Vec<u8>, Vec<Vec<u8>>);

/// The index, one part per database.
#[derive(Debug, Default, Clone)]
pub struct TagIndex {
    dbs: Vec<DbTags>,
    /// (key, tag) pairs in every database.
    pairs: u64,
}

/// A database's part of the digest, with its number mixed in (so that the same keys and tags
/// in another database give another digest).
fn db_digest(db: usize, digest: u64) -> u64 {
    pair_hash_of(digest, (db as u64).wrapping_add(0x9e37_79b9_7f4a_7c15))
}

/// Hash of one (db, key, tag) triple for the digest, from the key's and the tag's hashes.
fn pair_hash(key_hash: u64, tag: &[u8]) -> u64 {
    pair_hash_of(key_hash, name_hash(tag))
}

/// `pair_hash` with the tag's `name_hash` already computed.
fn pair_hash_of(key_hash: u64, tag_hash: u64) -> u64 {
    let mut z = key_hash ^ tag_hash.rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Checks a tag list against the limits: at least one tag, none empty or too long, and no
/// more than the limit per key (duplicates count once).
pub fn validate_tags(tags: &[&[u8]], limits: &TagLimits) -> Result<(), String> {
    if tags.is_empty() {
        return Err("TAGS needs at least one tag".into());
    }
    for t in tags {
        if t.is_empty() {
            return Err("a tag may not be empty".into());
        }
        if t.len() > limits.max_tag_length {
            return Err(format!(
                "tag of {} bytes is longer than opt.max-tag-length ({})",
                t.len(),
                limits.max_tag_length
            ));
        }
    }
    // Duplicates count once, but only a list longer than the limit needs counting.
    if tags.len() <= limits.max_tags_per_key {
        return Ok(());
    }
    let mut distinct: Vec<&[u8]> = tags.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() > limits.max_tags_per_key {
        return Err(format!(
            "{} tags is more than opt.max-tags-per-key ({})",
            distinct.len(),
            limits.max_tags_per_key
        ));
    }
    Ok(())
}

impl TagIndex {
    /// An empty index (usable in a `static`).
    pub const fn new_const() -> Self {
        TagIndex {
            dbs: Vec::new(),
            pairs: 0,
        }
    }

    fn db(&self, db: usize) -> Option<&DbTags> {
        self.dbs.get(db)
    }

    fn db_mut(&mut self, db: usize) -> &mut DbTags {
        if self.dbs.len() <= db {
            self.dbs.resize_with(db + 1, DbTags::default);
        }
        &mut self.dbs[db]
    }

    /// The tags of `key`, in the order they were added.
    pub fn tags_of(&self, db: usize, key: &[u8]) -> Vec<Vec<u8>> {
        let Some(d) = self.db(db) else {
            return Vec::new();
        };
        match d.keys.find(key) {
            Some(k) => d.keys.slots[k as usize]
                .tags
                .iter()
                .map(|&(t, _)| d.tags.slots[t as usize].name.to_vec())
                .collect(),
            None => Vec::new(),
        }
    }

    /// Whether `key` carries any tag.
    pub fn is_tagged(&self, db: usize, key: &[u8]) -> bool {
        self.db(db).is_some_and(|d| d.keys.find(key).is_some())
    }

    /// Adds `tags` to `key`; the total may not exceed `max_tags`. Returns how many were new.
    pub fn add_tags(
        &mut self,
        db: usize,
        key: &[u8],
        tags: &[&[u8]],
        max_tags: usize,
    ) -> Result<usize, String> {
        let current = self.tags_of(db, key);
        let mut all: Vec<&[u8]> = current.iter().map(Vec::as_slice).collect();
        for t in tags {
            if !all.contains(t) {
                all.push(t);
            }
        }
        if all.len() > max_tags {
            return Err(format!(
                "the key would carry {} tags, more than opt.max-tags-per-key ({max_tags})",
                all.len()
            ));
        }
        let added = all.len() - current.len();
        for t in &all[current.len()..] {
            self.link(db, key, t);
        }
        Ok(added)
    }

    /// Where a lookup of `key` starts reading (a bucket of the key table), for a caller to
    /// prefetch before the server's own work on the key, so that the cache miss overlaps with
    /// it. None when `db` has no tagged key.
    pub fn key_bucket_address(&self, db: usize, key: &[u8]) -> Option<*const u8> {
        self.key_bucket_address_hashed(db, name_hash(key))
    }

    /// [`Self::key_bucket_address`] for a key whose [`name_hash`] is `hash`.
    pub fn key_bucket_address_hashed(&self, db: usize, hash: u64) -> Option<*const u8> {
        self.db(db)?.keys.by_name.bucket_address(hash)
    }

    /// Addresses that removing the key whose [`name_hash`] is `hash` will read further on, for
    /// a caller to prefetch a batch
    /// of removals stage by stage (each stage reads what the one before prefetched): stage 0
    /// its tags' slots, stage 1 each tag's key-list entry for this key and the tag's bucket in
    /// the tag table (read if the tag empties). Call stage 0 once
    /// [`Self::key_slot_address`] was prefetched.
    pub fn removal_addresses(&self, db: usize, hash: u64, stage: u8, mut f: impl FnMut(*const u8)) {
        let Some(d) = self.db(db) else {
            return;
        };
        let Some(k) = d.keys.by_name.first_candidate(hash) else {
            return;
        };
        let Some(slot) = d.keys.slots.get(k as usize) else {
            return;
        };
        for &(t, pos) in slot.tags.iter() {
            let Some(tag) = d.tags.slots.get(t as usize) else {
                continue;
            };
            if stage == 0 {
                f((tag as *const TagSlot).cast());
            } else {
                f(tag.keys.address(pos as usize));
                if tag.keys.len() == 1 {
                    if let Some(b) = d.tags.by_name.bucket_address(tag.hash) {
                        f(b);
                    }
                }
            }
        }
    }

    /// The slot a lookup of `key` will compare first, for a caller to prefetch. Reads the key
    /// table's buckets: call it once [`Self::key_bucket_address`] was prefetched.
    pub fn key_slot_address(&self, db: usize, key: &[u8]) -> Option<*const u8> {
        self.key_slot_address_hashed(db, name_hash(key))
    }

    /// [`Self::key_slot_address`] for a key whose [`name_hash`] is `hash`.
    pub fn key_slot_address_hashed(&self, db: usize, hash: u64) -> Option<*const u8> {
        let d = self.db(db)?;
        let id = d.keys.by_name.first_candidate(hash)?;
        d.keys
            .slots
            .get(id as usize)
            .map(|slot| (slot as *const KeySlot).cast())
    }

    /// Whether `key` carries exactly the distinct tags in `tags`.
    fn has_exactly(&self, db: usize, key: &[u8], hash: u64, tags: &[&[u8]]) -> bool {
        let Some(d) = self.db(db) else { return false };
        let Some(k) = d.keys.find_hashed(key, hash) else {
            return false;
        };
        let entries = &d.keys.slots[k as usize].tags;
        // The common case: the same tags in the same order as the last write. The stored tags
        // are distinct, so matching them one to one is enough.
        if entries.len() == tags.len()
            && entries
                .iter()
                .zip(tags)
                .all(|(&(t, _), tag)| *d.tags.slots[t as usize].name == **tag)
        {
            return true;
        }
        let distinct = tags
            .iter()
            .enumerate()
            .filter(|(i, t)| !tags[..*i].contains(t))
            .count();
        distinct == entries.len()
            && entries
                .iter()
                .all(|&(t, _)| tags.contains(&&*d.tags.slots[t as usize].name))
    }

    /// Gives `key` exactly `tags` (the tags of a value just written). Rewriting a cached value
    /// with the tags it already has, the common case, changes nothing and costs one lookup.
    pub fn set_tags(&mut self, db: usize, key: &[u8], tags: &[&[u8]]) {
        self.set_tags_hashed(db, key, name_hash(key), tags);
    }

    /// [`Self::set_tags`] for a key whose [`name_hash`] is `hk` (OPT.SET hashes the name once
    /// for its prefetches and this).
    pub fn set_tags_hashed(&mut self, db: usize, key: &[u8], hk: u64, tags: &[&[u8]]) {
        if self.has_exactly(db, key, hk, tags) {
            return;
        }
        self.remove_key_hashed(db, key, hk);
        if tags.is_empty() {
            return;
        }
        let d = self.db_mut(db);
        let k = d.keys.find_or_insert_hashed(key, hk);
        let mut entries: Vec<(u32, u32)> = Vec::with_capacity(tags.len());
        let mut added = 0u64;
        let mut digest = 0u64;
        for (i, t) in tags.iter().enumerate() {
            if tags[..i].contains(t) {
                continue;
            }
            let tid = d.tags.find_or_insert(t);
            let pos = d.tags.edit(tid, |slot| slot.keys.push(k));
            entries.push((tid, pos));
            added += 1;
            digest = digest.wrapping_add(pair_hash(hk, t));
        }
        d.keys
            .edit(k, |slot| slot.tags = TagList::from(entries.as_slice()));
        d.pairs += added;
        d.digest = d.digest.wrapping_add(digest);
        self.pairs += added;
    }

    fn link(&mut self, db: usize, key: &[u8], tag: &[u8]) {
        let hk = name_hash(key);
        let d = self.db_mut(db);
        let k = d.keys.find_or_insert_hashed(key, hk);
        let t = d.tags.find_or_insert(tag);
        if d.keys.slots[k as usize].tags.iter().any(|&(x, _)| x == t) {
            return;
        }
        let pos = d.tags.edit(t, |slot| slot.keys.push(k));
        d.keys.edit(k, |slot| slot.tags.push((t, pos)));
        d.pairs += 1;
        d.digest = d.digest.wrapping_add(pair_hash(hk, tag));
        self.pairs += 1;
    }

    /// Removes `tags` from `key`; returns how many it carried.
    pub fn remove_tags(&mut self, db: usize, key: &[u8], tags: &[&[u8]]) -> usize {
        let mut removed = 0;
        for t in tags {
            if self.unlink(db, key, t) {
                removed += 1;
            }
        }
        removed
    }

    /// Takes key id `k` out of tag `t`'s vector at `pos`; the key moved into the hole learns
    /// its new position, and an empty tag is dropped. Returns the tag's name hash input.
    fn detach(d: &mut DbTags, k: u32, t: u32, pos: usize) {
        debug_assert_eq!(d.tags.slots[t as usize].keys.get(pos), Some(&k));
        d.tags.edit(t, |slot| slot.keys.swap_remove(pos));
        if let Some(&moved) = d.tags.slots[t as usize].keys.get(pos) {
            if let Some(e) = d.keys.slots[moved as usize]
                .tags
                .iter_mut()
                .find(|e| e.0 == t)
            {
                e.1 = pos as u32;
            }
        }
        if d.tags.slots[t as usize].keys.is_empty() {
            d.tags.remove(t);
        }
    }

    fn unlink(&mut self, db: usize, key: &[u8], tag: &[u8]) -> bool {
        let hk = name_hash(key);
        let Some(d) = self.dbs.get_mut(db) else {
            return false;
        };
        let (Some(k), Some(t)) = (d.keys.find_hashed(key, hk), d.tags.find(tag)) else {
            return false;
        };
        let slot = &d.keys.slots[k as usize];
        let Some(i) = slot.tags.iter().position(|&(x, _)| x == t) else {
            return false;
        };
        let pos = slot.tags[i].1 as usize;
        let now_empty = d.keys.edit(k, |slot| {
            slot.tags.swap_remove(i);
            slot.tags.is_empty()
        });
        Self::detach(d, k, t, pos);
        if now_empty {
            d.keys.remove(k);
        }
        d.pairs -= 1;
        d.digest = d.digest.wrapping_sub(pair_hash(hk, tag));
        self.pairs -= 1;
        true
    }

    /// Drops `key` from the index (deleted, expired, evicted, overwritten); returns how many
    /// tags it carried.
    pub fn remove_key(&mut self, db: usize, key: &[u8]) -> usize {
        self.remove_key_hashed(db, key, name_hash(key))
    }

    /// [`Self::remove_key`] for a key whose [`name_hash`] is `hash`.
    pub fn remove_key_hashed(&mut self, db: usize, key: &[u8], hash: u64) -> usize {
        let Some(d) = self.dbs.get_mut(db) else {
            return 0;
        };
        // One probe finds the key and drops its name (this runs for every expired tagged key).
        let Some(k) = d.keys.unlink_hashed(key, hash) else {
            return 0;
        };
        let removed = self.detach_all(db, k, hash);
        self.dbs[db].keys.release(k);
        removed
    }

    /// Takes key id `k` out of every tag's key list (its slot and name stay) and returns how
    /// many tags it had. `hk` is its name's [`name_hash`], for the digest.
    fn detach_all(&mut self, db: usize, k: u32, hk: u64) -> usize {
        let d = &mut self.dbs[db];
        let entries = d.keys.edit(k, |slot| std::mem::take(&mut slot.tags));
        let mut digest = 0u64;
        for &(t, pos) in entries.iter() {
            digest = digest.wrapping_add(pair_hash_of(hk, d.tags.slots[t as usize].hash));
            Self::detach(d, k, t, pos as usize);
        }
        d.pairs -= entries.len() as u64;
        d.digest = d.digest.wrapping_sub(digest);
        self.pairs -= entries.len() as u64;
        entries.len()
    }

    /// Removes every key carrying any of `tags` (what an invalidation deletes) and returns how
    /// many. Works by id, with no name lookups and no copies of names. Each tag is found once
    /// and its key vector taken whole, its keys leave their other tags one by one, then the
    /// key table all together: the database's part is dropped whole when they are all it
    /// holds, else [`Interner::remove_many`] (which rebuilds the table smaller when most of it
    /// leaves). Before, each key was also taken out of the invalidated tag's vector, the tag
    /// was looked up again for every key, and every key left the table on its own: 43.6 ns a
    /// key against 25.9 now for a 100k-key tag (`cargo bench --bench core -- "bulk removal"`).
    pub fn remove_keys_with_any(&mut self, db: usize, tags: &[&[u8]]) -> usize {
        let Some(d) = self.dbs.get_mut(db) else {
            return 0;
        };
        let (mut pairs, mut digest) = (0u64, 0u64);
        // (id, name hash) of each key removed.
        let mut gone: Vec<(u32, u64)> = Vec::new();
        for t in tags {
            // A tag listed twice, or emptied by an earlier one, is no longer there.
            let Some(tid) = d.tags.find(t) else { continue };
            let keys = d.tags.edit(tid, |slot| std::mem::take(&mut slot.keys));
            gone.reserve(keys.len());
            for &k in keys.iter() {
                let name_h = name_hash(&d.keys.slots[k as usize].name);
                let entries = d.keys.edit(k, |slot| std::mem::take(&mut slot.tags));
                for &(other, pos) in entries.iter() {
                    digest = digest
                        .wrapping_add(pair_hash_of(name_h, d.tags.slots[other as usize].hash));
                    if other != tid {
                        Self::detach(d, k, other, pos as usize);
                    }
                }
                pairs += entries.len() as u64;
                gone.push((k, name_h));
            }
            let tag_h = d.tags.slots[tid as usize].hash;
            d.tags.remove_hashed(tid, tag_h);
        }
        self.pairs -= pairs;
        let held = d.keys.slots.len() + d.tags.slots.len();
        if gone.len() == d.keys.live() && held <= gone.len().saturating_mul(WALK_BOUND) {
            // Every key of the database leaves (and so every tag): all its slots and tables go
            // back to the allocator at once, none of them walked key by key.
            *d = DbTags::default();
            return gone.len();
        }
        d.keys.remove_many(&gone);
        d.pairs -= pairs;
        d.digest = d.digest.wrapping_sub(digest);
        gone.len()
    }

    /// Drops `key` from the index and returns its tags (to carry them to a new name).
    pub fn take_key(&mut self, db: usize, key: &[u8]) -> Vec<Vec<u8>> {
        let tags = self.tags_of(db, key);
        if !tags.is_empty() {
            self.remove_key(db, key);
        }
        tags
    }

    /// Every key carrying any of `tags`, each once.
    pub fn keys_with_any(&self, db: usize, tags: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.for_each_key_with_any(db, tags, |name| out.push(name.to_vec()));
        out
    }

    /// Calls `f` with the name of every key carrying any of `tags`, each once, without copying
    /// the names (an invalidation turns them straight into the deletion's arguments).
    pub fn for_each_key_with_any(&self, db: usize, tags: &[&[u8]], mut f: impl FnMut(&[u8])) {
        let Some(d) = self.db(db) else {
            return;
        };
        if let [one] = tags {
            // One tag: its keys are distinct already.
            if let Some(t) = d.tags.find(one) {
                for &k in d.tags.slots[t as usize].keys.iter() {
                    f(&d.keys.slots[k as usize].name);
                }
            }
            return;
        }
        let mut seen: HashSet<u32> = HashSet::new();
        for t in tags {
            if let Some(t) = d.tags.find(t) {
                for &k in d.tags.slots[t as usize].keys.iter() {
                    if seen.insert(k) {
                        f(&d.keys.slots[k as usize].name);
                    }
                }
            }
        }
    }

    /// Number of keys carrying `tag`.
    pub fn tag_cardinality(&self, db: usize, tag: &[u8]) -> usize {
        self.db(db)
            .and_then(|d| {
                d.tags
                    .find(tag)
                    .map(|t| d.tags.slots[t as usize].keys.len())
            })
            .unwrap_or(0)
    }

    /// One page of the keys of `tag`: starts at `cursor` (0 for the first page) and returns
    /// the next cursor (0 when done). Pages walk the set from its end, so a key removed while
    /// a client pages through may make another key show twice, but never makes one go missing.
    pub fn tag_keys_page(
        &self,
        db: usize,
        tag: &[u8],
        cursor: u64,
        count: usize,
    ) -> (u64, Vec<Vec<u8>>) {
        let Some(d) = self.db(db) else {
            return (0, Vec::new());
        };
        let Some(t) = d.tags.find(tag) else {
            return (0, Vec::new());
        };
        let set = &d.tags.slots[t as usize].keys;
        // The cursor counts positions from the end: 0 means "start at the end".
        let end = if cursor == 0 {
            set.len()
        } else {
            (cursor as usize).min(set.len())
        };
        let start = end.saturating_sub(count.max(1));
        let keys = (start..end)
            .rev()
            .filter_map(|i| set.get(i))
            .map(|&k| d.keys.slots[k as usize].name.to_vec())
            .collect();
        (start as u64, keys)
    }

    /// The `n` tags with the most keys in `db`, largest first (ties by name), in one go.
    ///
    /// One pass over the tags with a heap of `n` names: the first version copied and sorted
    /// every tag, and OPT.TAGINFO held the server for 0.5 s with a million tags. The pass
    /// still reads every tag (about 2.5 ms per million), so the module ranks big indexes a
    /// part at a time with [`Self::rank_tags`].
    pub fn largest_tags(&self, db: usize, n: usize) -> Vec<(Vec<u8>, usize)> {
        let mut ranking = TagRanking::new(db, n);
        self.rank_tags(&mut ranking, usize::MAX);
        ranking.into_largest()
    }

    /// Tag slots of `db` (tags, plus slots freed for reuse): what a ranking walks.
    pub fn tag_slots(&self, db: usize) -> usize {
        self.db(db).map_or(0, |d| d.tags.slots.len())
    }

    /// Ranks up to `max_slots` more tag slots of the ranking's db; true once it has seen
    /// them all. The index may change between calls: each tag counts with the keys it held
    /// when its slot was read, tags created in slots already read are not seen, and a tag
    /// dropped after it was read still shows. A FLUSHDB in between empties what is left.
    pub fn rank_tags(&self, ranking: &mut TagRanking, max_slots: usize) -> bool {
        let Some(slots) = self.db(ranking.db).map(|d| &d.tags.slots) else {
            ranking.next_slot = 0;
            return true;
        };
        if ranking.n == 0 || ranking.next_slot >= slots.len() {
            ranking.next_slot = slots.len();
            return true;
        }
        let end = ranking.next_slot.saturating_add(max_slots).min(slots.len());
        for s in slots
            .iter_from(ranking.next_slot)
            .take(end - ranking.next_slot)
        {
            let count = s.keys.len();
            if count > 0 {
                ranking.offer(count, &s.name);
            }
        }
        ranking.next_slot = end;
        end == slots.len()
    }
    /// Forgets database `db` (FLUSHDB) and returns what it held, for the caller to free (on
    /// another thread when it is big: FLUSHDB ASYNC must not wait for a million frees).
    pub fn flush_db(&mut self, db: usize) -> TagIndex {
        let Some(d) = self.dbs.get_mut(db) else {
            return TagIndex::default();
        };
        let old = std::mem::take(d);
        self.pairs -= old.pairs;
        TagIndex {
            pairs: old.pairs,
            dbs: vec![old],
        }
    }

    /// Forgets everything (FLUSHALL) and returns it, for the caller to free.
    pub fn flush_all(&mut self) -> TagIndex {
        std::mem::take(self)
    }

    /// Swaps two databases (SWAPDB): their parts change places, in constant time.
    pub fn swap_db(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.db_mut(a.max(b));
        self.dbs.swap(a, b);
    }

    /// Every (key, tags) of `db`.
    pub fn db_entries(&self, db: usize) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        let Some(d) = self.db(db) else {
            return Vec::new();
        };
        d.keys
            .slots
            .iter()
            .filter(|s| !s.tags.is_empty())
            .map(|s| {
                let tags = s
                    .tags
                    .iter()
                    .map(|&(t, _)| d.tags.slots[t as usize].name.to_vec())
                    .collect();
                (s.name.to_vec(), tags)
            })
            .collect()
    }

    /// The tagged keys of `db` for which `pred` holds (the tests' check of
    /// [`Self::take_keys_where`]).
    #[cfg(test)]
    pub fn keys_where(&self, db: usize, mut pred: impl FnMut(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let Some(d) = self.db(db) else {
            return Vec::new();
        };
        d.keys
            .slots
            .iter()
            .filter(|s| !s.tags.is_empty() && pred(&s.name[..]))
            .map(|s| s.name.to_vec())
            .collect()
    }

    /// Removes from `db`, and returns with their tags, the tagged keys for which `pred` holds
    /// among index positions `from..from + scan`, and the position to go on from (`None` once
    /// the walk reached the end). Positions stay put while keys come and go, so the index can
    /// be walked in slices: the keys of slots that left a cluster node, say.
    pub fn take_keys_where(
        &mut self,
        db: usize,
        from: usize,
        scan: usize,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> (Vec<KeyWithTags>, Option<usize>) {
        let Some(d) = self.db(db) else {
            return (Vec::new(), None);
        };
        let end = from.saturating_add(scan).min(d.keys.slots.len());
        let start = from.min(end);
        let names: Vec<Vec<u8>> = d
            .keys
            .slots
            .iter_from(start)
            .take(end - start)
            .filter(|s| !s.tags.is_empty() && pred(&s.name[..]))
            .map(|s| s.name.to_vec())
            .collect();
        let next = (end < d.keys.slots.len()).then_some(end);
        let taken = names
            .into_iter()
            .map(|name| {
                let tags = self.take_key(db, &name);
                (name, tags)
            })
            .collect();
        (taken, next)
    }

    /// Databases that hold any tag.
    pub fn dbs_in_use(&self) -> Vec<usize> {
        (0..self.dbs.len())
            .filter(|&i| self.dbs[i].keys.live() > 0)
            .collect()
    }

    /// Whether no key is tagged.
    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// Counts and digest.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            keys: self.dbs.iter().map(|d| d.keys.live() as u64).sum(),
            tags: self.dbs.iter().map(|d| d.tags.live() as u64).sum(),
            pairs: self.pairs,
            digest: self
                .dbs
                .iter()
                .enumerate()
                .filter(|(_, d)| d.pairs > 0)
                .fold(0u64, |sum, (i, d)| sum.wrapping_add(db_digest(i, d.digest))),
        }
    }

    /// Once no key is tagged any more, takes out everything the index still holds (slots kept
    /// for reuse, the free list, tables sized for its largest day), leaving an index that holds
    /// nothing, for the caller to free (on another thread when big). None while a key is tagged
    /// or when nothing is held. O(1).
    pub fn take_if_emptied(&mut self) -> Option<TagIndex> {
        (self.pairs == 0 && !self.dbs.is_empty()).then(|| std::mem::take(self))
    }

    /// Bytes held by the index (slots, names, sets and tables), without walking it.
    pub fn memory_bytes(&self) -> usize {
        let mut total = std::mem::size_of::<Self>();
        for d in &self.dbs {
            total += std::mem::size_of::<DbTags>();
            total += d.keys.slots.allocated_bytes()
                + d.keys.by_name.capacity() * 8
                + d.keys.free.allocated_bytes()
                + d.keys.heap;
            total += d.tags.slots.allocated_bytes()
                + d.tags.by_name.capacity() * 8
                + d.tags.free.allocated_bytes()
                + d.tags.heap;
        }
        total
    }

    /// [`Self::memory_bytes`] by walking every slot: the tests' check of the running sums.
    #[cfg(test)]
    fn memory_bytes_walked(&self) -> usize {
        let mut total = std::mem::size_of::<Self>();
        for d in &self.dbs {
            total += std::mem::size_of::<DbTags>();
            total += d.keys.slots.allocated_bytes()
                + d.keys.by_name.capacity() * 8
                + d.keys.free.allocated_bytes();
            for k in d.keys.slots.iter() {
                total += k.name.heap_bytes() + k.tags.heap_bytes();
            }
            total += d.tags.slots.allocated_bytes()
                + d.tags.by_name.capacity() * 8
                + d.tags.free.allocated_bytes();
            for t in d.tags.slots.iter() {
                total += t.name.len() + t.keys.heap_bytes();
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_gives_room_back_as_its_keys_leave() {
        let mut ix = TagIndex::default();
        // Room for ids, in ids.
        let capacity = |ix: &TagIndex, tag: &[u8]| {
            let d = &ix.dbs[0];
            d.tags.slots[d.tags.find(tag).unwrap() as usize]
                .keys
                .heap_bytes()
                / 4
        };
        for i in 0..10_000 {
            ix.set_tags(0, format!("k{i}").as_bytes(), &[b"big", b"small"]);
        }
        assert!(capacity(&ix, b"big") >= 10_000);
        for i in 10..10_000 {
            ix.remove_key(0, format!("k{i}").as_bytes());
        }
        assert!(capacity(&ix, b"big") <= 40, "{}", capacity(&ix, b"big"));
        assert_eq!(ix.memory_bytes(), ix.memory_bytes_walked());
        // The keys left still know their positions: each can leave, and the tag goes last.
        for i in 0..10 {
            assert_eq!(ix.tags_of(0, format!("k{i}").as_bytes()).len(), 2);
            assert_eq!(ix.remove_key(0, format!("k{i}").as_bytes()), 2);
        }
        assert_eq!(ix.stats().pairs, 0);
        assert_eq!(ix.memory_bytes(), ix.memory_bytes_walked());
    }

    const LIMITS: TagLimits = TagLimits {
        max_tags_per_key: 4,
        max_tag_length: 8,
    };

    fn t(s: &[&'static str]) -> Vec<&'static [u8]> {
        s.iter().map(|x| x.as_bytes()).collect()
    }

    fn names(v: Vec<Vec<u8>>) -> Vec<String> {
        let mut v: Vec<String> = v
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn validates_tag_lists() {
        assert!(validate_tags(&t(&["a", "b"]), &LIMITS).is_ok());
        assert!(validate_tags(&[], &LIMITS)
            .unwrap_err()
            .contains("at least one"));
        assert!(validate_tags(&t(&["a", ""]), &LIMITS)
            .unwrap_err()
            .contains("empty"));
        assert!(validate_tags(&t(&["123456789"]), &LIMITS)
            .unwrap_err()
            .contains("opt.max-tag-length"));
        assert!(validate_tags(&t(&["a", "b", "c", "d", "e"]), &LIMITS)
            .unwrap_err()
            .contains("opt.max-tags-per-key"));
        assert!(validate_tags(&t(&["a", "a", "a", "a", "a"]), &LIMITS).is_ok());
    }

    /// The heap gives what sorting every tag gives: the most keys first, ties by name, with
    /// emptied tags left out.
    #[test]
    fn largest_tags_match_a_full_sort() {
        let mut ix = TagIndex::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for k in 0..3_000u32 {
            crate::test_rng::xorshift(&mut x);
            let tag = format!("t{}", (x % 97) * (x % 5));
            let key = format!("k{k}");
            ix.set_tags(0, key.as_bytes(), &[tag.as_bytes()]);
            if k % 3 == 0 {
                ix.remove_key(0, key.as_bytes());
            }
        }
        let mut all: Vec<(Vec<u8>, usize)> = ix.dbs[0]
            .tags
            .slots
            .iter()
            .filter(|s| !s.keys.is_empty())
            .map(|s| (s.name.to_vec(), s.keys.len()))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for n in [0, 1, 5, 37, 1000] {
            let want: Vec<_> = all.iter().take(n).cloned().collect();
            assert_eq!(ix.largest_tags(0, n), want, "n = {n}");
        }
        assert!(ix.largest_tags(3, 5).is_empty());
        // Ranked a part at a time, the index unchanged: the same answer.
        for part in [1, 7, 64, 1000] {
            let mut r = TagRanking::new(0, 10);
            let mut calls = 0;
            while !ix.rank_tags(&mut r, part) {
                calls += 1;
            }
            assert_eq!(r.slots_read(), ix.tag_slots(0));
            // Every call but the last reads `part` slots.
            assert_eq!(calls, ix.tag_slots(0).div_ceil(part) - 1, "part {part}");
            assert_eq!(r.into_largest(), ix.largest_tags(0, 10), "part {part}");
        }
    }

    #[test]
    fn a_ranking_made_in_parts_counts_each_tag_as_it_was_when_read() {
        let mut ix = TagIndex::default();
        for k in 0..30u32 {
            let key = format!("k{k}");
            // "big" holds 30 keys, "mid" 15, "small" 10 (and they fill slots in that order).
            let mut tags: Vec<&[u8]> = vec![b"big"];
            if k % 2 == 0 {
                tags.push(b"mid");
            }
            if k % 3 == 0 {
                tags.push(b"small");
            }
            ix.set_tags(0, key.as_bytes(), &tags);
        }
        let mut r = TagRanking::new(0, 2);
        assert!(!ix.rank_tags(&mut r, 1), "one slot read of three");
        // After "big" was read: it loses keys, "small" gains some, a new tag appears after.
        for k in 0..25u32 {
            ix.remove_tags(0, format!("k{k}").as_bytes(), &[b"big"]);
        }
        for k in 100..120u32 {
            ix.set_tags(0, format!("k{k}").as_bytes(), &[b"small", b"late"]);
        }
        while !ix.rank_tags(&mut r, 1) {}
        let ranked = r.into_largest();
        assert_eq!(
            ranked,
            vec![(b"big".to_vec(), 30), (b"small".to_vec(), 30)],
            "big as read before its keys left, small as read after it grew"
        );
        // A flush between parts: nothing more to read.
        let mut r = TagRanking::new(0, 5);
        ix.rank_tags(&mut r, 1);
        let _ = ix.flush_db(0);
        assert!(ix.rank_tags(&mut r, 1));
        assert_eq!(r.into_largest().len(), 1);
    }

    #[test]
    fn tags_and_keys_both_ways() {
        let mut ix = TagIndex::default();
        ix.set_tags(0, b"page:1", &t(&["user:42", "post:7"]));
        ix.set_tags(0, b"page:2", &t(&["user:42"]));
        ix.set_tags(1, b"page:1", &t(&["other"]));
        assert_eq!(names(ix.tags_of(0, b"page:1")), vec!["post:7", "user:42"]);
        assert_eq!(
            names(ix.keys_with_any(0, &t(&["user:42"]))),
            vec!["page:1", "page:2"]
        );
        assert_eq!(
            names(ix.keys_with_any(0, &t(&["user:42", "post:7"]))),
            vec!["page:1", "page:2"]
        );
        assert_eq!(ix.stats().pairs, 4);
        assert_eq!(ix.stats().keys, 3);
        // Replacing the tags of a value.
        ix.set_tags(0, b"page:1", &t(&["post:7"]));
        assert_eq!(names(ix.keys_with_any(0, &t(&["user:42"]))), vec!["page:2"]);
        // Removing a key removes every pair, and empty tags disappear.
        assert_eq!(names(ix.take_key(0, b"page:2")), vec!["user:42"]);
        assert_eq!(ix.tag_cardinality(0, b"user:42"), 0);
        assert_eq!(ix.stats().tags, 2);
        assert!(ix.add_tags(0, b"page:1", &t(&["a", "b", "c"]), 4).is_ok());
        assert!(ix
            .add_tags(0, b"page:1", &t(&["d"]), 4)
            .unwrap_err()
            .contains("5 tags"));
        assert_eq!(ix.remove_tags(0, b"page:1", &t(&["a", "zzz"])), 1);
    }

    #[test]
    fn keys_where_selects_tagged_keys_of_one_db() {
        let mut ix = TagIndex::default();
        ix.set_tags(0, b"{a}1", &t(&["x"]));
        ix.set_tags(0, b"{a}2", &t(&["x", "y"]));
        ix.set_tags(0, b"{b}1", &t(&["y"]));
        ix.set_tags(1, b"{a}3", &t(&["x"]));
        ix.set_tags(0, b"{a}gone", &t(&["x"]));
        ix.remove_key(0, b"{a}gone");
        let of_a = ix.keys_where(0, |k| k.starts_with(b"{a}"));
        assert_eq!(names(of_a), vec!["{a}1", "{a}2"]);
        assert!(ix.keys_where(2, |_| true).is_empty());
        assert_eq!(ix.keys_where(0, |_| true).len(), 3);
    }

    #[test]
    fn take_keys_where_walks_the_index_in_slices() {
        let mut ix = TagIndex::default();
        for i in 0..100 {
            let key = if i % 3 == 0 {
                format!("{{a}}{i}")
            } else {
                format!("b{i}")
            };
            ix.set_tags(0, key.as_bytes(), &t(&["x", "y"]));
        }
        ix.remove_key(0, b"{a}30");
        let (mut taken, mut from, mut step) = (Vec::new(), Some(0), 0);
        while let Some(f) = from {
            let (got, next) = ix.take_keys_where(0, f, 7, |k| k.starts_with(b"{a}"));
            taken.extend(got);
            from = next;
            // Keys written meanwhile (other slots) take freed positions or new ones.
            step += 1;
            ix.set_tags(0, format!("c{step}").as_bytes(), &t(&["x"]));
        }
        assert_eq!(taken.len(), 33);
        assert!(taken
            .iter()
            .all(|(k, tags)| { k.starts_with(b"{a}") && names(tags.clone()) == ["x", "y"] }));
        let mut keys: Vec<_> = taken.into_iter().map(|(k, _)| k).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 33);
        assert!(ix.keys_where(0, |k| k.starts_with(b"{a}")).is_empty());
        assert_eq!(ix.keys_where(0, |k| k.starts_with(b"b")).len(), 66);
        assert_eq!(ix.stats().keys, 66 + step as u64);
        assert_eq!(ix.take_keys_where(3, 0, 10, |_| true).1, None);
    }

    #[test]
    fn removal_addresses_name_what_a_removal_reads() {
        let mut ix = TagIndex::default();
        ix.set_tags(0, b"k1", &t(&["shared", "own"]));
        ix.set_tags(0, b"k2", &t(&["shared"]));
        let count = |key: &[u8], stage| {
            let mut n = 0;
            ix.removal_addresses(0, name_hash(key), stage, |a| {
                assert!(!a.is_null());
                n += 1;
            });
            n
        };
        // Stage 0: one slot per tag. Stage 1: each tag's list entry, plus the bucket of a tag
        // the removal would empty (`own`).
        assert_eq!((count(b"k1", 0), count(b"k1", 1)), (2, 3));
        assert_eq!((count(b"k2", 0), count(b"k2", 1)), (1, 1));
        assert_eq!(count(b"missing", 0), 0);
        assert_eq!(ix.take_keys_where(5, 0, 1, |_| true).0.len(), 0);
    }

    #[test]
    fn bulk_removal_and_unchanged_rewrites() {
        let mut ix = TagIndex::default();
        for i in 0..10 {
            ix.set_tags(
                0,
                format!("k{i}").as_bytes(),
                &t(&["a", if i % 2 == 0 { "even" } else { "odd" }]),
            );
        }
        let digest = ix.stats().digest;
        ix.set_tags(0, b"k3", &t(&["odd", "a", "a"]));
        assert_eq!(ix.stats().digest, digest, "same tags: nothing changes");
        assert_eq!(ix.remove_keys_with_any(0, &t(&["even", "nope"])), 5);
        assert!(ix.keys_with_any(0, &t(&["even"])).is_empty());
        assert!(
            (0..10).all(|i| ix.tags_of(0, format!("k{i}").as_bytes()).is_empty() == (i % 2 == 0))
        );
        assert_eq!(ix.tag_cardinality(0, b"a"), 5);
        assert_eq!(ix.stats().pairs, 10);
        let mut rebuilt = TagIndex::default();
        for i in (1..10).step_by(2) {
            rebuilt.set_tags(0, format!("k{i}").as_bytes(), &t(&["a", "odd"]));
        }
        assert_eq!(rebuilt.stats().digest, ix.stats().digest);
    }

    #[test]
    fn digest_depends_only_on_content() {
        let mut a = TagIndex::default();
        let mut b = TagIndex::default();
        a.set_tags(0, b"k1", &t(&["x", "y"]));
        a.set_tags(0, b"k2", &t(&["y"]));
        b.set_tags(0, b"k2", &t(&["y"]));
        b.set_tags(0, b"k1", &t(&["y", "x"]));
        assert_eq!(a.stats().digest, b.stats().digest);
        b.set_tags(0, b"k3", &t(&["x"]));
        assert_ne!(a.stats().digest, b.stats().digest);
        b.remove_key(0, b"k3");
        assert_eq!(a.stats().digest, b.stats().digest);
        a.flush_db(0);
        assert_eq!(a.stats(), IndexStats::default());
    }

    /// A tag whose keys pass the chunk size keeps them in chunks, and goes back to a vector as
    /// they leave: through both ways, every key keeps its tag, positions stay right (removals
    /// rely on them), paging sees every key, and the running memory sum matches a full walk.
    #[test]
    fn a_tag_of_many_keys_moves_to_chunks_and_back() {
        let mut ix = TagIndex::default();
        let n = CHUNK * 3 + 100;
        for i in 0..n {
            ix.set_tags(0, format!("k{i}").as_bytes(), &t(&["big", "other"]));
        }
        let big = |ix: &TagIndex| {
            let d = &ix.dbs[0];
            let id = d.tags.find(b"big").unwrap();
            matches!(d.tags.slots[id as usize].keys, KeyList::Big(_))
        };
        assert!(big(&ix));
        assert_eq!(ix.memory_bytes(), ix.memory_bytes_walked());
        let page_all = |ix: &TagIndex| {
            let mut seen = std::collections::HashSet::new();
            let mut cursor = 0;
            loop {
                let (next, page) = ix.tag_keys_page(0, b"big", cursor, 1000);
                seen.extend(page);
                if next == 0 {
                    return seen;
                }
                cursor = next;
            }
        };
        assert_eq!(page_all(&ix).len(), n);
        // Remove keys in a scattered order until fewer than a chunk are left.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut live: Vec<usize> = (0..n).collect();
        while live.len() >= CHUNK - 10 {
            crate::test_rng::xorshift(&mut x);
            let k = live.swap_remove((x % live.len() as u64) as usize);
            assert_eq!(ix.remove_key(0, format!("k{k}").as_bytes()), 2);
            if live.len() % 1500 == 0 {
                assert_eq!(ix.memory_bytes(), ix.memory_bytes_walked());
            }
        }
        assert!(!big(&ix), "back to a vector below the chunk size");
        assert_eq!(ix.memory_bytes(), ix.memory_bytes_walked());
        let seen = page_all(&ix);
        assert_eq!(seen.len(), live.len());
        for &k in &live {
            let name = format!("k{k}");
            assert!(seen.contains(name.as_bytes()), "{name}");
            assert_eq!(
                ix.tags_of(0, name.as_bytes()),
                vec![b"big".to_vec(), b"other".to_vec()]
            );
        }
        // Grown past the chunk size again, then invalidated whole.
        for i in n..n + CHUNK {
            ix.set_tags(0, format!("k{i}").as_bytes(), &t(&["big"]));
        }
        assert!(big(&ix));
        assert_eq!(ix.remove_keys_with_any(0, &t(&["big"])), live.len() + CHUNK);
        assert_eq!(ix.stats(), IndexStats::default());
    }

    #[test]
    fn paging_never_skips_a_key_even_with_removals() {
        let mut ix = TagIndex::default();
        for i in 0..100 {
            ix.set_tags(0, format!("k{i}").as_bytes(), &t(&["big"]));
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut first = true;
        while first || cursor != 0 {
            first = false;
            let (next, page) = ix.tag_keys_page(0, b"big", cursor, 7);
            seen.extend(page);
            // Remove a key that was already returned, the worst case for a cursor.
            if let Some(k) = seen.iter().next().cloned() {
                ix.remove_key(0, &k);
            }
            cursor = next;
        }
        for i in 0..100 {
            let k = format!("k{i}").into_bytes();
            assert!(seen.contains(&k), "k{i} was skipped");
        }
    }

    #[test]
    fn tags_and_names_move_between_the_slot_and_the_heap() {
        // Keys gain and lose tags across the inline bound; after every step the index must
        // equal one built from scratch from a plain model, positions included (checked through
        // removals, which rely on them). Half the key names are too long to sit in the slot.
        let names: Vec<String> = (0..6).map(|i| format!("tag{i}")).collect();
        let mut ix = TagIndex::default();
        let mut model: Vec<Vec<usize>> = vec![Vec::new(); 8];
        let key_name = |k: usize| {
            if k % 2 == 0 {
                format!("k{k}")
            } else {
                format!("a-key-name-too-long-for-the-slot:{k}")
            }
        };
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for step in 0..2000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let k = (rng % 8) as usize;
            let tag = ((rng >> 8) % 6) as usize;
            let key = key_name(k);
            match (rng >> 16) % 6 {
                5 => {
                    // An invalidation of two tags (the same one twice at times): every key
                    // carrying either leaves, with all its tags.
                    let other = ((rng >> 24) % 6) as usize;
                    let gone = model
                        .iter()
                        .filter(|l| l.contains(&tag) || l.contains(&other))
                        .count();
                    let removed = ix
                        .remove_keys_with_any(0, &[names[tag].as_bytes(), names[other].as_bytes()]);
                    assert_eq!(removed, gone, "step {step}");
                    for l in model.iter_mut() {
                        if l.contains(&tag) || l.contains(&other) {
                            l.clear();
                        }
                    }
                }
                3 => {
                    // A whole new list, up to 5 tags (past the 3 a slot holds inline).
                    let list: Vec<usize> = (0..((rng >> 24) % 6) as usize)
                        .map(|i| (tag + i) % 6)
                        .collect();
                    let refs: Vec<&[u8]> = list.iter().map(|&t| names[t].as_bytes()).collect();
                    ix.set_tags(0, key.as_bytes(), &refs);
                    model[k] = list;
                }
                0 | 1 => {
                    ix.add_tags(0, key.as_bytes(), &[names[tag].as_bytes()], 64)
                        .unwrap();
                    if !model[k].contains(&tag) {
                        model[k].push(tag);
                    }
                }
                2 => {
                    ix.remove_tags(0, key.as_bytes(), &[names[tag].as_bytes()]);
                    model[k].retain(|&x| x != tag);
                }
                _ => {
                    ix.remove_key(0, key.as_bytes());
                    model[k].clear();
                }
            }
            let mut rebuilt = TagIndex::default();
            for (k, tags) in model.iter().enumerate() {
                let refs: Vec<&[u8]> = tags.iter().map(|&t| names[t].as_bytes()).collect();
                rebuilt.set_tags(0, key_name(k).as_bytes(), &refs);
            }
            assert_eq!(ix.stats(), rebuilt.stats(), "step {step}");
            assert_eq!(ix.memory_bytes(), ix.memory_bytes_walked(), "step {step}");
            assert_eq!(rebuilt.memory_bytes(), rebuilt.memory_bytes_walked());
            for (k, tags) in model.iter().enumerate() {
                let got = self::names(ix.tags_of(0, key_name(k).as_bytes()));
                let mut want: Vec<String> = tags.iter().map(|&t| names[t].clone()).collect();
                want.sort();
                assert_eq!(got, want, "step {step}, k{k}");
            }
        }
        // Every position is right: removing each tag's keys one by one empties the index.
        for n in &names {
            ix.remove_keys_with_any(0, &[n.as_bytes()]);
        }
        assert_eq!(ix.stats().pairs, 0);
        assert_eq!(ix.stats().keys, 0);
    }

    #[test]
    fn an_invalidation_of_most_keys_rebuilds_the_key_table_smaller() {
        // 1,000 keys, 900 of them tagged `most`: the 100 left are rebuilt into a smaller name
        // table; then the rest leave too and the index holds nothing.
        let mut ix = TagIndex::default();
        let name = |i: usize| format!("key:{i}");
        for i in 0..1000 {
            let first = if i < 900 { "most" } else { "few" };
            let second = format!("group:{}", i % 7);
            ix.set_tags(
                0,
                name(i).as_bytes(),
                &[first.as_bytes(), second.as_bytes()],
            );
        }
        let before = ix.memory_bytes();
        assert_eq!(ix.remove_keys_with_any(0, &t(&["most"])), 900);
        let mut rebuilt = TagIndex::default();
        for i in 900..1000 {
            let second = format!("group:{}", i % 7);
            rebuilt.set_tags(0, name(i).as_bytes(), &[b"few", second.as_bytes()]);
        }
        assert_eq!(ix.stats(), rebuilt.stats());
        assert_eq!(ix.memory_bytes(), ix.memory_bytes_walked());
        assert!(ix.dbs[0].keys.by_name.capacity() <= 256);
        assert!(ix.memory_bytes() < before);
        for i in 0..1000 {
            assert_eq!(ix.is_tagged(0, name(i).as_bytes()), i >= 900, "key:{i}");
        }
        // The index still works after the rebuild.
        ix.set_tags(0, b"late", &t(&["few"]));
        assert_eq!(ix.tag_cardinality(0, b"few"), 101);
        assert_eq!(ix.remove_keys_with_any(0, &t(&["few"])), 101);
        assert_eq!(ix.stats(), TagIndex::default().stats());
        assert_eq!(ix.dbs[0].keys.by_name.capacity(), 0);
        assert_eq!(ix.memory_bytes(), ix.memory_bytes_walked());
    }

    #[test]
    fn a_small_invalidation_does_not_walk_what_the_index_once_held() {
        // 10,000 keys tagged, 9,990 expire one by one, then the last 10 are invalidated: the
        // index must not walk (or drop) its 10,000 slots and 16,384 buckets for them.
        let mut ix = TagIndex::default();
        for i in 0..10_000 {
            let tag: &[u8] = if i < 9_990 { b"old" } else { b"last" };
            ix.set_tags(0, format!("k{i}").as_bytes(), &[tag]);
        }
        for i in 0..9_990 {
            ix.remove_key(0, format!("k{i}").as_bytes());
        }
        let buckets = ix.dbs[0].keys.by_name.capacity();
        assert_eq!(ix.remove_keys_with_any(0, &t(&["last"])), 10);
        assert_eq!(ix.stats(), TagIndex::default().stats());
        assert_eq!(ix.dbs[0].keys.slots.len(), 10_000, "slots kept for reuse");
        assert_eq!(
            ix.dbs[0].keys.by_name.capacity(),
            buckets,
            "table not rebuilt"
        );
        assert_eq!(ix.memory_bytes(), ix.memory_bytes_walked());
        // Reused afterwards like any freed slot.
        ix.set_tags(0, b"new", &t(&["t"]));
        assert_eq!(names(ix.tags_of(0, b"new")), vec!["t"]);
        assert_eq!(ix.dbs[0].keys.slots.len(), 10_000);
    }

    #[test]
    fn an_emptied_index_is_taken_out_whole() {
        let mut ix = TagIndex::default();
        assert!(ix.take_if_emptied().is_none(), "nothing held");
        for i in 0..5000 {
            ix.set_tags(i % 3, format!("k{i}").as_bytes(), &t(&["a", "b"]));
        }
        for i in 0..4999 {
            ix.remove_key(i % 3, format!("k{i}").as_bytes());
        }
        assert!(ix.take_if_emptied().is_none(), "a key is still tagged");
        ix.remove_key(4999 % 3, b"k4999");
        let held = ix.memory_bytes();
        let taken = ix.take_if_emptied().expect("emptied");
        assert_eq!(taken.memory_bytes(), held);
        assert!(held > 100_000, "the slots and tables of 5,000 keys: {held}");
        assert_eq!(ix.memory_bytes(), std::mem::size_of::<TagIndex>());
        assert!(ix.take_if_emptied().is_none());
        ix.set_tags(1, b"again", &t(&["a"]));
        assert_eq!(names(ix.tags_of(1, b"again")), vec!["a"]);
    }

    #[test]
    fn swap_and_flush() {
        let mut ix = TagIndex::default();
        ix.set_tags(0, b"a", &t(&["x"]));
        ix.set_tags(2, b"b", &t(&["y"]));
        let digest = ix.stats().digest;
        ix.swap_db(0, 2);
        assert_eq!(names(ix.tags_of(2, b"a")), vec!["x"]);
        assert_eq!(names(ix.tags_of(0, b"b")), vec!["y"]);
        assert_ne!(ix.stats().digest, digest, "the db is part of the digest");
        assert_eq!(ix.dbs_in_use(), vec![0, 2]);
        // The swapped index is the one built that way from scratch, digest included.
        let mut rebuilt = TagIndex::default();
        rebuilt.set_tags(2, b"a", &t(&["x"]));
        rebuilt.set_tags(0, b"b", &t(&["y"]));
        assert_eq!(rebuilt.stats(), ix.stats());
        ix.swap_db(2, 0);
        assert_eq!(ix.stats().digest, digest);
        // A swap with a database never used, and back.
        ix.swap_db(2, 9);
        assert_eq!(names(ix.tags_of(9, b"b")), vec!["y"]);
        ix.swap_db(9, 2);
        assert_eq!(ix.stats().digest, digest);
        // FLUSHDB hands back what the database held; the rest stays.
        let taken = ix.flush_db(2);
        assert_eq!((taken.stats().pairs, taken.stats().keys), (1, 1));
        assert_eq!(names(taken.tags_of(0, b"b")), vec!["y"]);
        let mut only_a = TagIndex::default();
        only_a.set_tags(0, b"a", &t(&["x"]));
        assert_eq!(ix.stats(), only_a.stats());
        assert_eq!(ix.flush_all().stats().pairs, 1);
        assert_eq!(ix.stats().pairs, 0);
    }

    #[test]
    fn ids_are_reused_and_memory_is_small_per_pair() {
        let mut ix = TagIndex::default();
        for round in 0..3 {
            for i in 0..10_000 {
                let key = format!("cache:page:{i}");
                ix.set_tags(0, key.as_bytes(), &t(&["user:1", "post:2", "site"]));
            }
            if round < 2 {
                for i in 0..10_000 {
                    ix.remove_key(0, format!("cache:page:{i}").as_bytes());
                }
                assert_eq!(ix.stats().pairs, 0);
            }
        }
        let per_pair = ix.memory_bytes() as f64 / ix.stats().pairs as f64;
        // A Redis set member alone costs about 60 bytes; docs/benchmarks.md compares used_memory.
        assert!(per_pair < 48.0, "{per_pair} bytes per pair");
    }
}

/// Hard bounds checked on load, whatever the configs say: a payload outside them is corrupt.
const MAX_DBS: u64 = 1 << 16;
const MAX_KEYS_PER_DB: u64 = 1 << 32;
const MAX_TAGS_ON_LOAD: u64 = 1 << 16;
const MAX_NAME_ON_LOAD: usize = 512 << 20;

/// Where the index is written (the RDB aux field, or a buffer in tests).
pub trait IndexWriter {
    /// Writes an unsigned integer.
    fn write_u64(&mut self, v: u64);
    /// Writes a byte string.
    fn write_bytes(&mut self, b: &[u8]);
}

/// Where the index is read from; every read may fail (short or corrupt payload).
pub trait IndexReader {
    /// Reads an unsigned integer.
    fn read_u64(&mut self) -> Result<u64, String>;
    /// Reads a byte string.
    fn read_bytes(&mut self) -> Result<Vec<u8>, String>;
}

impl TagIndex {
    /// Writes every database's (key, tags): the tag section of the persisted state (see
    /// `crate::persist` for the header).
    pub fn save(&self, w: &mut impl IndexWriter) {
        let dbs = self.dbs_in_use();
        w.write_u64(dbs.len() as u64);
        for db in dbs {
            let entries = self.db_entries(db);
            w.write_u64(db as u64);
            w.write_u64(entries.len() as u64);
            for (key, tags) in entries {
                w.write_bytes(&key);
                w.write_u64(tags.len() as u64);
                for t in tags {
                    w.write_bytes(&t);
                }
            }
        }
    }

    /// Reads an index written by [`TagIndex::save`], checking every field. `key_exists` drops
    /// entries whose key is gone (db, key).
    pub fn load(
        r: &mut impl IndexReader,
        key_exists: &mut impl FnMut(usize, &[u8]) -> bool,
    ) -> Result<TagIndex, String> {
        let ndbs = r.read_u64()?;
        if ndbs > MAX_DBS {
            return Err(format!("tag index claims {ndbs} databases"));
        }
        let mut ix = TagIndex::default();
        for _ in 0..ndbs {
            let db = r.read_u64()?;
            if db >= MAX_DBS {
                return Err(format!("tag index names database {db}"));
            }
            let nkeys = r.read_u64()?;
            if nkeys > MAX_KEYS_PER_DB {
                return Err(format!("tag index claims {nkeys} keys in db {db}"));
            }
            for _ in 0..nkeys {
                let key = r.read_bytes()?;
                let ntags = r.read_u64()?;
                if ntags == 0 || ntags > MAX_TAGS_ON_LOAD {
                    return Err(format!("tag index gives a key {ntags} tags"));
                }
                let mut tags = Vec::with_capacity(ntags as usize);
                for _ in 0..ntags {
                    let t = r.read_bytes()?;
                    if t.is_empty() || t.len() > MAX_NAME_ON_LOAD {
                        return Err(format!("tag index holds a tag of {} bytes", t.len()));
                    }
                    tags.push(t);
                }
                if key.len() > MAX_NAME_ON_LOAD {
                    return Err(format!("tag index holds a key of {} bytes", key.len()));
                }
                if key_exists(db as usize, &key) {
                    let refs: Vec<&[u8]> = tags.iter().map(Vec::as_slice).collect();
                    ix.set_tags(db as usize, &key, &refs);
                }
            }
        }
        Ok(ix)
    }
}

#[cfg(test)]
pub(crate) mod persist_tests {
    use super::*;

    /// An in-memory reader/writer for persistence tests.
    #[derive(Default)]
    pub(crate) struct Buf {
        pub(crate) items: Vec<Result<u64, Vec<u8>>>,
        pub(crate) pos: usize,
    }

    impl IndexWriter for Buf {
        fn write_u64(&mut self, v: u64) {
            self.items.push(Ok(v));
        }
        fn write_bytes(&mut self, b: &[u8]) {
            self.items.push(Err(b.to_vec()));
        }
    }

    impl IndexReader for Buf {
        fn read_u64(&mut self) -> Result<u64, String> {
            let item = self.items.get(self.pos).cloned().ok_or("short read")?;
            self.pos += 1;
            item.map_err(|_| "expected an integer".to_string())
        }
        fn read_bytes(&mut self) -> Result<Vec<u8>, String> {
            let item = self.items.get(self.pos).cloned().ok_or("short read")?;
            self.pos += 1;
            match item {
                Err(b) => Ok(b),
                Ok(_) => Err("expected a string".into()),
            }
        }
    }

    fn sample() -> TagIndex {
        let mut ix = TagIndex::default();
        ix.set_tags(0, b"a", &[b"x", b"y"]);
        ix.set_tags(0, b"b", &[b"y"]);
        ix.set_tags(3, b"c", &[b"z"]);
        ix
    }

    #[test]
    fn round_trip_keeps_the_digest_and_drops_missing_keys() {
        let ix = sample();
        let mut buf = Buf::default();
        ix.save(&mut buf);
        let loaded = TagIndex::load(&mut buf, &mut |_, _| true).unwrap();
        assert_eq!(loaded.stats(), ix.stats());
        buf.pos = 0;
        let pruned = TagIndex::load(&mut buf, &mut |_, k| k != b"b").unwrap();
        assert_eq!(pruned.stats().keys, 2);
        assert!(pruned.tags_of(0, b"b").is_empty());
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error() {
        let mut full = Buf::default();
        sample().save(&mut full);
        for cut in 0..full.items.len() {
            let mut b = Buf {
                items: full.items[..cut].to_vec(),
                pos: 0,
            };
            assert!(
                TagIndex::load(&mut b, &mut |_, _| true).is_err(),
                "cut at {cut}"
            );
        }
        // Fields: [0] databases, [1] db number, [2] keys in it, [3] key, [4] its tag count.
        for (i, bad) in [(0usize, Ok(u64::MAX)), (1, Ok(1 << 20)), (2, Ok(u64::MAX))] {
            let mut b = Buf {
                items: full.items.clone(),
                pos: 0,
            };
            b.items[i] = bad;
            assert!(
                TagIndex::load(&mut b, &mut |_, _| true).is_err(),
                "corrupt field {i}"
            );
        }
        // A tag count of zero, and a type mismatch.
        let mut b = Buf {
            items: full.items.clone(),
            pos: 0,
        };
        b.items[4] = Ok(0);
        assert!(TagIndex::load(&mut b, &mut |_, _| true).is_err());
        let mut b = Buf {
            items: full.items.clone(),
            pos: 0,
        };
        b.items[3] = Ok(1);
        assert!(TagIndex::load(&mut b, &mut |_, _| true).is_err());
    }
}
