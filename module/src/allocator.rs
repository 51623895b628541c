//! The module's global allocator: every Rust allocation goes through the server's allocator, so
//! that INFO memory and maxmemory see the module's structures.
//!
//! Why not `redis_module::alloc::RedisAlloc` alone: it has `alloc` and `dealloc` only, so Rust
//! zeroed every zeroed allocation by hand and grew every vector by allocating anew, copying and
//! freeing. Growing the tag index's name table to 16 million buckets then wrote 128 MB of zeros
//! in the one OPT.SET that crossed the load (44 to 47 ms in SLOWLOG at six million tagged keys),
//! where the server's `calloc` hands out fresh pages that are zero already. Here zeroed
//! allocations go to `RedisModule_Calloc` and growth to `RedisModule_Realloc`, which can extend
//! a block in place.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use redis_module::alloc::RedisAlloc;
use redis_module::raw;

/// The alignment every block of the server's allocators has (jemalloc's and glibc's on 64-bit
/// targets). Larger alignments take the generic paths of [`RedisAlloc`], which round the size
/// up to a multiple of the alignment (jemalloc then aligns the block to it).
const SERVER_ALIGN: usize = 16;

/// [`RedisAlloc`] with the server's `calloc` and `realloc`.
pub struct ServerAlloc;

/// The size to ask the server for: rounded up to `align`, as [`RedisAlloc`] does.
fn rounded(size: usize, align: usize) -> usize {
    (size + align - 1) & !(align - 1)
}

// SAFETY: every path returns a block of at least the layout's size from the server's allocator,
// aligned to at least the layout's alignment (SERVER_ALIGN or RedisAlloc's rounding), or null
// when the server's allocator fails; blocks are freed by the same allocator.
unsafe impl GlobalAlloc for ServerAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { RedisAlloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which always allocates through RedisAlloc's
        // server functions.
        unsafe { RedisAlloc.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match raw::RedisModule_Calloc {
            Some(calloc) if layout.align() <= SERVER_ALIGN => {
                // SAFETY: the server's calloc, for one block of the rounded size.
                unsafe { calloc(1, rounded(layout.size(), layout.align())).cast() }
            }
            // SAFETY: the caller's contract for `alloc_zeroed` is passed on as it is.
            _ => unsafe {
                let p = RedisAlloc.alloc(layout);
                if !p.is_null() {
                    std::ptr::write_bytes(p, 0, layout.size());
                }
                p
            },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match raw::RedisModule_Realloc {
            Some(realloc) if layout.align() <= SERVER_ALIGN => {
                // SAFETY: `ptr` is a live block of the server's allocator (from this one); the
                // server's realloc keeps its contents up to the smaller size.
                unsafe { realloc(ptr.cast::<c_void>(), rounded(new_size, layout.align())).cast() }
            }
            _ => {
                // SAFETY: the generic path: a new block, the contents copied, the old freed, as
                // GlobalAlloc's default does; `new_size` is valid for this alignment by the
                // caller's contract.
                unsafe {
                    let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                    let p = RedisAlloc.alloc(new_layout);
                    if !p.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        RedisAlloc.dealloc(ptr, layout);
                    }
                    p
                }
            }
        }
    }
}
