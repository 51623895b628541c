//! A growable array kept in chunks of a fixed size, for the module's tables that grow with the
//! data: the tag index's slots and long key lists, the name maps' slots, and their free lists.
//!
//! A `Vec` grows by doubling, so after a growth up to half of its memory is unused, and the
//! growth itself copies every element on the server's main thread. The tag index holds a
//! 56-byte slot per tagged key: at 100,000 keys a `Vec` of slots had room for 131,072, a
//! quarter of the index's memory unused, and at ten million keys each doubling copies
//! 560 MB while the server waits. Here the first chunk grows like a `Vec` up to
//! [`CHUNK`] elements (so a small index stays small); after that each chunk is allocated at
//! its full size once and never moves: at most one chunk's room is unused (up to two after
//! pops, which keep an emptied chunk as a spare), and a growth copies nothing but the small
//! table of chunk pointers.

use std::ops::{Index, IndexMut};

/// Elements a chunk holds: 229 KB of 56-byte slots.
pub(crate) const CHUNK: usize = 4096;

/// A growable array of `T` in chunks of [`CHUNK`] elements; ids stay valid as it grows.
#[derive(Debug, Clone)]
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Chunked<T> {
    /// An empty array; allocates nothing.
    pub const fn new() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// Elements held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends `value`, at index `len()`.
    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                if last.len() == last.capacity() {
                    // Only the first chunk is ever short of capacity: it doubles, up to CHUNK.
                    let want = (last.capacity() * 2).clamp(4, CHUNK);
                    last.reserve_exact(want - last.len());
                }
                last.push(value);
            }
            _ => {
                let mut chunk = Vec::with_capacity(if self.chunks.is_empty() { 4 } else { CHUNK });
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// Takes out the last element. A chunk it leaves empty stays as a spare until a pop
    /// reaches into the chunk before it, so that pushes and pops alternating at a chunk's edge
    /// (a free list, a tag's keys) do not allocate and free a whole chunk each time; the first
    /// chunk is never freed.
    pub fn pop(&mut self) -> Option<T> {
        if self.chunks.len() > 1 && self.chunks.last().is_some_and(Vec::is_empty) {
            self.chunks.pop();
        }
        let value = self.chunks.last_mut()?.pop()?;
        self.len -= 1;
        Some(value)
    }

    /// An array whose first chunk is `first`, of exactly [`CHUNK`] elements, as a `Vec` that
    /// reached the chunk size becomes one (room beyond them is given back).
    pub fn from_full_chunk(mut first: Vec<T>) -> Self {
        debug_assert_eq!(first.len(), CHUNK);
        first.shrink_to_fit();
        Chunked {
            len: first.len(),
            chunks: vec![first],
        }
    }

    /// The chunks, in index order.
    pub fn into_chunks(self) -> Vec<Vec<T>> {
        self.chunks
    }

    /// The element at `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    /// Every element, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// The elements from index `from` on, in index order.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = &T> {
        let (first, offset) = (from / CHUNK, from % CHUNK);
        self.chunks
            .iter()
            .skip(first)
            .enumerate()
            .flat_map(move |(n, c)| c[if n == 0 { offset.min(c.len()) } else { 0 }..].iter())
    }

    /// [`Self::allocated_bytes`] in constant time, for an array whose first chunk too has room
    /// for exactly [`CHUNK`] elements (one made by [`Self::from_full_chunk`]).
    pub fn allocated_bytes_of_full_chunks(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<T>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
    }

    /// Bytes allocated: every chunk's capacity, and the table of chunks.
    pub fn allocated_bytes(&self) -> usize {
        let elements: usize = self.chunks.iter().map(Vec::capacity).sum();
        elements * std::mem::size_of::<T>() + self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::{Chunked, CHUNK};

    #[test]
    fn indexes_iterates_and_bounds_its_unused_room_across_chunks() {
        let mut c = Chunked::new();
        assert_eq!(c.len(), 0);
        assert_eq!(c.allocated_bytes(), 0);
        let n = CHUNK * 3 + 17;
        for i in 0..n {
            c.push(i as u64);
        }
        assert_eq!(c.len(), n);
        assert_eq!(c[0], 0);
        assert_eq!(c[CHUNK - 1], (CHUNK - 1) as u64);
        assert_eq!(c[CHUNK], CHUNK as u64);
        assert_eq!(c[n - 1], (n - 1) as u64);
        assert_eq!(c.get(n), None);
        c[CHUNK + 5] = 7;
        c[2] = 9;
        assert_eq!((c[CHUNK + 5], c[2]), (7, 9));
        assert_eq!(c.iter().count(), n);
        assert_eq!(c.iter().nth(CHUNK + 5), Some(&7));
        for from in [0, 1, CHUNK - 1, CHUNK, CHUNK * 2 + 3, n - 1, n, n + 10] {
            let rest: Vec<u64> = c.iter_from(from).copied().collect();
            let expected: Vec<u64> = c.iter().skip(from).copied().collect();
            assert_eq!(rest, expected, "from {from}");
        }
        // Unused room: at most one chunk, plus the table of chunk pointers.
        let used = n * std::mem::size_of::<u64>();
        let slack = c.allocated_bytes() - used;
        assert!(slack <= CHUNK * 8 + 64 * 24, "{slack}");
    }

    #[test]
    fn pop_keeps_one_emptied_chunk_as_a_spare_and_never_frees_the_first() {
        let mut c = Chunked::new();
        for i in 0..CHUNK * 2 + 1 {
            c.push(i as u32);
        }
        assert_eq!(c.chunks.len(), 3);
        assert_eq!(c.pop(), Some((CHUNK * 2) as u32));
        assert_eq!(
            c.chunks.len(),
            3,
            "the emptied third chunk stays as a spare"
        );
        // Pushes and pops at the edge reuse the spare: no chunk is allocated or freed.
        let spare = c.chunks[2].as_ptr();
        for i in 0..10 {
            c.push(i);
            assert_eq!(c.chunks[2].as_ptr(), spare);
            assert_eq!(c.pop(), Some(i));
            assert_eq!(c.chunks.len(), 3);
        }
        assert_eq!(c.pop(), Some((CHUNK * 2 - 1) as u32));
        assert_eq!(
            c.chunks.len(),
            2,
            "a pop into the second chunk frees the spare"
        );
        for i in (0..CHUNK * 2 - 1).rev() {
            assert_eq!(c.pop(), Some(i as u32));
            assert_eq!(c.len(), i);
            assert!(c.chunks.len() <= 2);
            assert_eq!(c.get(i), None);
            if i > 0 {
                assert_eq!(c[i - 1], (i - 1) as u32);
            }
        }
        assert_eq!(c.chunks.len(), 1);
        assert_eq!(c.pop(), None);
        c.push(5);
        assert_eq!((c.len(), c[0]), (1, 5));
        let full: Vec<u32> = (0..CHUNK as u32).collect();
        let mut c = Chunked::from_full_chunk(full);
        c.push(CHUNK as u32);
        assert_eq!(
            c.iter().copied().collect::<Vec<_>>(),
            (0..=CHUNK as u32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_small_array_stays_small() {
        let mut c = Chunked::new();
        for i in 0..10u64 {
            c.push(i);
        }
        // Room for 16 elements and a table of 4 chunk pointers.
        assert!(
            c.allocated_bytes() <= 16 * 8 + 4 * 24,
            "{}",
            c.allocated_bytes()
        );
        assert_eq!(
            c.iter().copied().collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
    }
}
