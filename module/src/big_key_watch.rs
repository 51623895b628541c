//! A slow walk over every database that finds the big keys before any analysis asks.
//!
//! `OPT.KEYSPACE SAMPLES` measures the big keys it knows whole and samples the rest
//! (`opt_core::known_big_keys`). It learns them from analyses, but a sample measures about one
//! key in a hundred, so without a FULL it would learn them slowly, and until then miss them or
//! scale them up. This walk looks at `opt.keyspace-big-key-watch` keys a second. It runs in
//! ticks that each stop at half of `opt.scan-slice-us`, every 100 ms while it keeps up with
//! its rate and every 10 ms while it is behind (a scan call costs about 2 µs a key, so a
//! tick of 500 µs looks at about 250 keys: 10,000 keys a second take 40 ticks and about 2%
//! of a core; the ticks never take more than 5%). It reads each key's type and length
//! from the handle the scan passes (no lookup: no idle time or LFU counter touched, no
//! keyspace hit counted) and asks MEMORY USAGE, after the scan call returned, only of a key
//! that may be big: a string of nearly 64 KB or more, or a collection of
//! [`COLLECTION_MIN_LENGTH`] elements or more. Nothing runs while the server loads data, and
//! nothing at all at 0.

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opt_core::config::idx;
use opt_core::known_big_keys::KNOWN_BIG_KEY_BYTES;
use redis_module::raw;

use crate::state::MainThreadCell;
use crate::{configs, guard, keyspace};

/// Ticks of the walk while it keeps up with its rate.
const TICK_MS: i64 = 100;
/// Ticks of the walk while it is behind.
const CATCH_UP_TICK_MS: i64 = 10;
/// Collections this long or longer are asked their size (64 small elements are a few KB; an
/// element would have to be 1 KB for 64 of them to reach 64 KB).
const COLLECTION_MIN_LENGTH: u64 = 64;
/// Strings this long or longer are asked their size (the key's own bytes come on top).
const STRING_MIN_LENGTH: u64 = KNOWN_BIG_KEY_BYTES - 1024;

/// Where the walk is.
struct Watch {
    /// The scan cursor in `db` (null until the first tick).
    cursor: *mut raw::RedisModuleScanCursor,
    db: u64,
    /// Databases walked in turn (0 until the first tick asks).
    databases: u64,
    /// When the walk of `db` began (unix seconds; 0: not yet).
    db_began: u64,
    /// Keys the current scan call passed.
    seen_in_call: u64,
    /// Names of keys that may be big, retained until the scan call returns.
    candidates: Vec<*mut raw::RedisModuleString>,
    /// Keys the rate allows that were not looked at yet (at most a second's worth).
    owed: f64,
    /// When the last tick ran.
    last_tick: Option<Instant>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            cursor: ptr::null_mut(),
            db: 0,
            databases: 0,
            db_began: 0,
            seen_in_call: 0,
            candidates: Vec::new(),
            owed: 0.0,
            last_tick: None,
        }
    }
}

static WATCH: MainThreadCell<Option<Watch>> = MainThreadCell::new(None);
/// Keys the walk looked at, for INFO.
static KEYS_SEEN: AtomicU64 = AtomicU64::new(0);
/// Keys whose size it asked, for INFO.
static KEYS_SIZED: AtomicU64 = AtomicU64::new(0);
/// Walks over every database completed, for INFO.
static ROUNDS: AtomicU64 = AtomicU64::new(0);
/// Main-thread time spent, in microseconds, for INFO.
static BUSY_US: AtomicU64 = AtomicU64::new(0);

/// (keys looked at, keys sized, rounds completed, microseconds spent), for INFO.
pub fn counts() -> (u64, u64, u64, u64) {
    (
        KEYS_SEEN.load(Ordering::Relaxed),
        KEYS_SIZED.load(Ordering::Relaxed),
        ROUNDS.load(Ordering::Relaxed),
        BUSY_US.load(Ordering::Relaxed),
    )
}

/// Starts the ticks (at load). They run whatever the config says, so that turning it on at
/// runtime takes effect; a tick with the walk off does nothing.
pub fn init(ctx: *mut raw::RedisModuleCtx) {
    // SAFETY: OnLoad context; `on_tick` has the timer signature and lives as long as the
    // module.
    unsafe {
        if let Some(create) = raw::RedisModule_CreateTimer {
            create(ctx, TICK_MS, Some(on_tick), ptr::null_mut());
        }
    }
}

/// # Safety
/// Called by Redis on the main thread when the timer fires.
unsafe extern "C" fn on_tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    let next_ms = guard::catch(|| {
        // The walk's state is taken out of the cell while the server is called (None: the
        // cell is in use further up the stack, which a timer never is).
        let Some(mut watch) = WATCH.with(|w| w.take().unwrap_or_default()) else {
            return TICK_MS;
        };
        // SAFETY: the timer's context, on the main thread.
        unsafe { tick(ctx, &mut watch) };
        let next = if watch.owed >= 1.0 {
            CATCH_UP_TICK_MS
        } else {
            TICK_MS
        };
        WATCH.with(|w| *w = Some(watch));
        next
    })
    .unwrap_or_else(|p| {
        crate::log::warning(&format!(
            "big-key watch failed with a panic at {}: {} (caught; it goes on)",
            p.location, p.message
        ));
        TICK_MS
    });
    // Rescheduled whatever happened above, so the walk never stops for good.
    if let Some(create) = raw::RedisModule_CreateTimer {
        create(ctx, next_ms, Some(on_tick), ptr::null_mut());
    }
}

/// One tick of the walk.
///
/// # Safety
/// `ctx` must be the timer's context.
unsafe fn tick(ctx: *mut raw::RedisModuleCtx, w: &mut Watch) {
    let rate = u64::try_from(configs::int(idx::KEYSPACE_BIG_KEY_WATCH)).unwrap_or(0);
    let now = Instant::now();
    let since = w
        .last_tick
        .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
    w.last_tick = Some(now);
    if rate == 0 || configs::int(idx::KEYSPACE_KNOWN_BIG_KEYS) <= 0 {
        w.owed = 0.0;
        return;
    }
    w.owed = (w.owed + rate as f64 * since).min(rate as f64);
    if let Some(flags) = raw::RedisModule_GetContextFlags {
        if flags(ctx) as u32 & raw::REDISMODULE_CTX_FLAGS_LOADING != 0 {
            return;
        }
    }
    let (Some(scan), Some(select), Some(create_cursor), Some(restart)) = (
        raw::RedisModule_Scan,
        raw::RedisModule_SelectDb,
        raw::RedisModule_ScanCursorCreate,
        raw::RedisModule_ScanCursorRestart,
    ) else {
        return;
    };
    let start = Instant::now();
    let budget = w.owed as u64;
    if budget == 0 {
        return;
    }
    let slice_us = u64::try_from(configs::int(idx::SCAN_SLICE_US)).unwrap_or(1000) / 2;
    let deadline = start + Duration::from_micros(slice_us.max(50));
    if w.databases == 0 {
        w.databases = keyspace::analysable_databases(ctx);
    }
    if w.cursor.is_null() {
        w.cursor = create_cursor();
        if w.cursor.is_null() {
            return;
        }
    }
    if select(ctx, w.db as c_int) != raw::REDISMODULE_OK as c_int {
        w.db = 0;
        return;
    }
    if w.db_began == 0 {
        w.db_began = unix_seconds();
    }
    let mut seen = 0;
    'walk: while seen < budget && Instant::now() < deadline {
        for _ in 0..keyspace::SCANS_PER_CLOCK_READ {
            w.seen_in_call = 0;
            let more = scan(ctx, w.cursor, Some(on_key), (w as *mut Watch).cast());
            seen += w.seen_in_call;
            size_candidates(ctx, w);
            if more == 0 {
                // This db is done: its big keys are known as of when its walk began. The next
                // db, from its start.
                keyspace::note_pass_ended(w.db, w.db_began);
                w.db_began = unix_seconds();
                restart(w.cursor);
                w.db = (w.db + 1) % w.databases.max(1);
                if w.db == 0 {
                    ROUNDS.fetch_add(1, Ordering::Relaxed);
                }
                if select(ctx, w.db as c_int) != raw::REDISMODULE_OK as c_int {
                    w.db = 0;
                    break 'walk;
                }
            }
            if seen >= budget {
                break 'walk;
            }
        }
    }
    w.owed = (w.owed - seen as f64).max(0.0);
    KEYS_SEEN.fetch_add(seen, Ordering::Relaxed);
    BUSY_US.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
}

/// The server's clock, in unix seconds.
fn unix_seconds() -> u64 {
    (keyspace::now_ms() / 1000).max(0) as u64
}

/// # Safety
/// Called by `RedisModule_Scan` on the main thread, with the `Watch` `tick` passed.
unsafe extern "C" fn on_key(
    _ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    privdata: *mut c_void,
) {
    let _ = guard::catch(|| {
        // SAFETY: privdata is the Watch `tick` passed, used nowhere else during the call; the
        // other arguments are valid for the duration of the callback.
        let w = unsafe { &mut *privdata.cast::<Watch>() };
        w.seen_in_call += 1;
        if key.is_null() {
            return;
        }
        // SAFETY: key is a live handle for this callback.
        let (kind, length) = unsafe {
            (
                raw::RedisModule_KeyType.map_or(0, |f| f(key)),
                raw::RedisModule_ValueLength.map_or(0, |f| f(key)) as u64,
            )
        };
        let may_be_big = match kind as isize {
            raw::REDISMODULE_KEYTYPE_STRING => length >= STRING_MIN_LENGTH,
            raw::REDISMODULE_KEYTYPE_EMPTY => false,
            // Module types report no length the server can trust here: asked whatever it is.
            raw::REDISMODULE_KEYTYPE_MODULE => true,
            _ => length >= COLLECTION_MIN_LENGTH,
        };
        if may_be_big {
            if let Some(retain) = raw::RedisModule_RetainString {
                // SAFETY: keyname is valid; with no context the reference is ours to free.
                unsafe { retain(ptr::null_mut(), keyname) };
                w.candidates.push(keyname);
            }
        }
    });
}

/// Asks the size of the keys the last scan call found may be big, notes the big ones, and
/// frees their names.
///
/// # Safety
/// `ctx` must be the timer's context, with the walk's db selected.
unsafe fn size_candidates(ctx: *mut raw::RedisModuleCtx, w: &mut Watch) {
    for name in w.candidates.drain(..) {
        KEYS_SIZED.fetch_add(1, Ordering::Relaxed);
        if let Some(bytes) = keyspace::memory_usage(ctx, name) {
            keyspace::note_known_big(w.db, crate::reply::string_bytes(name), bytes);
        }
        if let Some(free) = raw::RedisModule_FreeString {
            free(ptr::null_mut(), name);
        }
    }
}
