//! Module state that only the server's main thread touches.
//!
//! Redis runs command handlers, command filters, keyspace and server events, timers and INFO
//! callbacks on the main thread, or on a module thread that holds the global lock: never two
//! at once. State used only from those callbacks therefore needs no mutex, just a guard
//! against re-entry (a callback that triggers another callback while it holds the state),
//! which the `RefCell` borrow flag gives: a re-entrant access is skipped, not a panic.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// A value reachable only from callbacks that Redis serialises (see the module docs).
pub struct MainThreadCell<T>(RefCell<T>);

// SAFETY: every access happens inside a Redis callback, which Redis runs on the main thread or
// under the global lock, so accesses never overlap; the RefCell catches re-entry.
unsafe impl<T> Sync for MainThreadCell<T> {}

impl<T> MainThreadCell<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        MainThreadCell(RefCell::new(value))
    }

    /// Runs `f` with the value; returns `None` if it is already in use further up the stack.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.0.try_borrow_mut().ok().map(|mut v| f(&mut v))
    }
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Commands this module ran through `RedisModule_Call`. The server counts them in
/// `total_commands_processed`, but the hot-key filter (registered NOSELF) never sees them,
/// so the sampler takes them out of the server's count.
static OWN_CALLS: AtomicU64 = AtomicU64::new(0);

/// `RedisModule_Call` with these arguments, counted in [`own_calls`]; None when the server has
/// no call API. Every call this module makes goes through it. Use inside `unsafe`.
macro_rules! module_call {
    ($($arg:expr),+ $(,)?) => {
        match redis_module::raw::RedisModule_Call {
            Some(call) => {
                $crate::state::count_own_call();
                Some(call($($arg),+))
            }
            None => None,
        }
    };
}
pub(crate) use module_call;

/// Notes one `RedisModule_Call` by this module (see `module_call!`).
pub fn count_own_call() {
    OWN_CALLS.fetch_add(1, Ordering::Relaxed);
}

/// `RedisModule_Call`s by this module since it loaded.
pub fn own_calls() -> u64 {
    OWN_CALLS.load(Ordering::Relaxed)
}

/// Milliseconds on a monotonic clock since the module loaded.
pub fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Microseconds since the module's epoch (monotonic).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Random bits (SplitMix64 over a per-process seed): XFetch draws, lock tokens, hot-key slice
/// gaps, sampling-walk cursors.
pub fn random_u64() -> u64 {
    static SEED: AtomicU64 = AtomicU64::new(0);
    if SEED.load(Ordering::Relaxed) == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        SEED.store(
            t ^ (u64::from(std::process::id()) << 32) | 1,
            Ordering::Relaxed,
        );
    }
    let mut z = SEED
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Asks the CPU to start loading the cache line at `addr`, so that a read a few microseconds
/// later finds it in the cache. Only a hint: nothing happens off x86_64.
pub fn prefetch(addr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults, even for an address
    // that is not mapped; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
