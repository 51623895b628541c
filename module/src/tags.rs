//! Tag glue: the OPT.SET / OPT.TAG / OPT.UNTAG / OPT.TAGS / OPT.INVALIDATE / OPT.TAGKEYS /
//! OPT.TAGINFO commands, the keyspace and server events that keep the index equal to the
//! keyspace, and the RDB aux field that persists it. The index is `opt_core::tags`.
//!
//! How the index follows the keyspace: a key that is deleted, expires, is evicted or is
//! replaced (SET, RESTORE, COPY onto it, the *STORE commands) leaves the index; RENAME and
//! MOVE carry its tags; FLUSHDB/FLUSHALL and SWAPDB apply to the index too. Replicas and the
//! AOF get OPT.SET / OPT.TAG / OPT.UNTAG as commands (with absolute expiry times) and
//! OPT.INVALIDATE as the DEL/UNLINK it performs, so their indexes follow the same way. In a
//! cluster, tags follow keys that MIGRATE moves to another node (`tag_migration`).
//! Invariant: no event callback runs while a command holds the index (commands release it
//! before calling into the server), so no removal is ever missed.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opt_core::args::Args;
use opt_core::cluster::SlotSet;
use opt_core::config::idx;
use opt_core::freshness::{decide, FetchRequest, Freshness, KeyState, LockOutcome, Locks};
use opt_core::freshness_index::FreshnessIndex;
use opt_core::persist;
use opt_core::tag_transfer::KeyTags;
use opt_core::tags::{name_hash, validate_tags, IndexReader, IndexWriter, TagIndex, TagLimits};
use redis_module::raw;

use crate::commands::Call;
use crate::reply::{string_bytes, Field, Reply, ReplyError};
use crate::server::commands_processed;
use crate::state::{module_call, MainThreadCell};
use crate::{configs, event_audience, guard, log};

struct TagState {
    index: TagIndex,
    /// Freshness of values written with DELTA/STALE (stampede protection).
    fresh: FreshnessIndex,
    /// Single-flight locks of OPT.FETCH ... LOCK (not persisted, not replicated).
    locks: Locks,
    /// Tags and freshness of a key between its rename_from/move_from event and the matching
    /// *_to event.
    in_flight: Option<(Vec<Vec<u8>>, Option<Freshness>)>,
    /// The key of the last event if it was a `rename_to` that carried tags, with the server's
    /// command count then: an `overwritten` event for that key right after, in the same
    /// command, belongs to the RENAME (onto an existing key) and must not drop the tags it
    /// just carried; one from the next command (a SET right after) must.
    renamed_to: Option<(usize, Vec<u8>, Option<u64>)>,
    /// Keys that expired or were evicted and have not left the index yet (see `settle`).
    dropped: DroppedKeys,
}

/// Names of keys whose expiry or eviction was seen, one buffer for all of them. An expiry
/// event brings one key at a time, and taking it out of the index is a few dependent cache
/// misses (its bucket, its slot, its tags' lists); gathered, a batch's buckets and slots are
/// prefetched together, so their misses overlap (`settle`).
struct DroppedKeys {
    names: Vec<u8>,
    /// Each key's db and the end of its name in `names`.
    ends: Vec<(usize, usize)>,
}

/// Set while this module raises or causes events for keys whose index entries it updates
/// itself (OPT.SET's own "set", OPT.INVALIDATE's deletions): the events change nothing, and
/// the event handler returns before any other work.
static OWN_EVENTS: AtomicBool = AtomicBool::new(false);

/// Marks the events raised while it lives as this module's own (see [`OWN_EVENTS`]); the mark
/// goes when it is dropped, on every path, a caught panic included.
struct OwnEvents;

impl OwnEvents {
    /// Marks events as own from now on when `own`.
    fn begin(own: bool) -> Self {
        OWN_EVENTS.store(own, Ordering::Relaxed);
        OwnEvents
    }
}

impl Drop for OwnEvents {
    fn drop(&mut self) {
        OWN_EVENTS.store(false, Ordering::Relaxed);
    }
}

/// While it lives, the index's keyspace subscription is dropped, where the server can drop one
/// (Redis 8.2+): for an invalidation whose events are all its own ([`OwnEvents`]), which the
/// handler would ignore anyway. The server builds a module context for every event it
/// delivers, about 485 instructions a deleted key on Redis 8.6, 15% of OPT.INVALIDATE; with
/// no subscriber it builds none. Pub/sub and other modules still get every `del`. The
/// subscription comes back when this is dropped, on every path, a caught panic included.
struct PausedEvents {
    ctx: *mut raw::RedisModuleCtx,
    paused: bool,
}

impl PausedEvents {
    /// Drops the subscription when `pause`, the index follows the keyspace, and the server
    /// can unsubscribe.
    fn begin(ctx: *mut raw::RedisModuleCtx, pause: bool) -> Self {
        // SAFETY: reading a function pointer filled at load.
        let unsubscribe = unsafe { raw::RedisModule_UnsubscribeFromKeyspaceEvents };
        let paused = match unsubscribe {
            Some(unsubscribe) if pause && following_keyspace() => {
                // SAFETY: ctx is the live command context on the main thread; the callback
                // is the one subscribed.
                unsafe {
                    unsubscribe(ctx, keyspace_events(), Some(on_keyspace_event))
                        == raw::REDISMODULE_OK as c_int
                }
            }
            _ => false,
        };
        PausedEvents { ctx, paused }
    }
}

impl Drop for PausedEvents {
    fn drop(&mut self) {
        if !self.paused {
            return;
        }
        // SAFETY: the same live context on the main thread; the callback is this module's
        // extern "C" function and lives as long as the module.
        let back = unsafe {
            raw::RedisModule_SubscribeToKeyspaceEvents.is_some_and(|f| {
                f(self.ctx, keyspace_events(), Some(on_keyspace_event))
                    == raw::REDISMODULE_OK as c_int
            })
        };
        if !back {
            // The next tagged write subscribes again (`follow_keyspace`).
            FOLLOWING.store(false, Ordering::Relaxed);
            log::warning("tag index: could not follow keyspace events again after an invalidation");
        }
    }
}

/// The deletion an invalidation hands to the index's own event callback (see [`run_unheard`]):
/// a pointer to a closure on `run_unheard`'s stack, set only while its event is raised.
static UNHEARD_WORK: MainThreadCell<Option<*mut (dyn FnMut() + 'static)>> =
    MainThreadCell::new(None);

/// The event class an invalidation may raise to reach the index's own callback: one the
/// index follows and nobody else can see (no pub/sub under `notify-keyspace-events`, no other
/// module). None when every class could be seen, and on servers where a deletion made inside
/// the callback would not expire keys past their time first, as DEL does
/// (`server::expires_lazily_in_event_callbacks`: only Redis 7.0 does).
fn unheard_class() -> Option<c_int> {
    if !crate::server::expires_lazily_in_event_callbacks() {
        return None;
    }
    let followed = keyspace_events();
    [
        raw::REDISMODULE_NOTIFY_ZSET,
        raw::REDISMODULE_NOTIFY_LIST,
        raw::REDISMODULE_NOTIFY_SET,
        raw::REDISMODULE_NOTIFY_STRING,
        raw::REDISMODULE_NOTIFY_GENERIC,
    ]
    .into_iter()
    .find(|&class| followed & class != 0 && !event_audience::anyone_sees(class))
}

/// Runs `work`, a deletion whose `del` events the index ignores, from inside the index's own
/// keyspace-event callback; called while [`OwnEvents`] marks events as own, which is what the
/// callback checks first. The server does not call a subscriber for the events it causes
/// while its callback runs (`sub->active` in `moduleNotifyKeyspaceEvent`, Redis since 6.0 and
/// Valkey), so it builds no module context per deleted key for the index: about 500
/// instructions a key on Redis 7.0, a fifth of OPT.INVALIDATE. That is the saving
/// [`PausedEvents`] makes on Redis 8.2+, for Redis 7.0, which cannot drop a subscription. To
/// get there, one event of a class that nobody else can see ([`unheard_class`]) is raised for
/// `key`, and the callback runs the work it finds in [`UNHEARD_WORK`]. Other modules and
/// pub/sub subscribers still get every `del`; when one could see the raised event, or it does
/// not arrive, `work` runs here, as before. A panic inside `work` is caught and logged by the
/// callback and comes back as an error.
fn run_unheard(
    ctx: *mut raw::RedisModuleCtx,
    key: *mut raw::RedisModuleString,
    work: impl FnOnce() -> Result<i64, String>,
) -> Result<i64, String> {
    let Some(class) = unheard_class() else {
        return work();
    };
    let mut work = Some(work);
    let mut result = None;
    let mut run = || {
        if let Some(work) = work.take() {
            result = Some(work());
        }
    };
    let erased: *mut (dyn FnMut() + '_) = &mut run;
    // SAFETY: only the lifetime is erased; the pointer is taken back out of UNHEARD_WORK
    // below, before `run` goes out of scope, and the callback calls it only during `notify`.
    let erased: *mut (dyn FnMut() + 'static) = unsafe { std::mem::transmute(erased) };
    if UNHEARD_WORK.with(|w| *w = Some(erased)).is_none() {
        return work
            .take()
            .map_or_else(|| Err(ERR_LOST_DELETION.into()), |w| w());
    }
    notify(ctx, class, c"opt-invalidate", key);
    // From here the pointer is gone: `run` is not called again.
    UNHEARD_WORK.with(|w| *w = None);
    match (result, work) {
        (Some(result), _) => result,
        // The event did not reach the callback: the work is still here.
        (None, Some(work)) => work(),
        // It did, and panicked (logged by the callback).
        (None, None) => Err(ERR_LOST_DELETION.into()),
    }
}

/// The error of a deletion that panicked inside the event callback.
const ERR_LOST_DELETION: &str = "ERR the deletion failed inside the module (see the server log)";

/// Keys gathered before a batch is applied: every other use of the index applies them first,
/// so nothing ever sees them.
const DROP_BATCH: usize = 32;

static STATE: MainThreadCell<TagState> = MainThreadCell::new(TagState {
    index: TagIndex::new_const(),
    fresh: FreshnessIndex::new_const(),
    locks: Locks::new_const(),
    in_flight: None,
    renamed_to: None,
    dropped: DroppedKeys {
        names: Vec::new(),
        ends: Vec::new(),
    },
});

/// Runs `f` on the tag state, after the keys that expired or were evicted since the last use
/// have left the index. Every use goes through here (or `with`), so none sees them.
fn state<R>(f: impl FnOnce(&mut TagState) -> R) -> Option<R> {
    STATE.with(|st| {
        settle(st);
        let out = f(st);
        give_back_if_emptied(st);
        out
    })
}

/// Once the last tagged key has left (expired, deleted, invalidated), the index gives back
/// what it still held for reuse: slots, the free list, tables sized for its largest day. A
/// million keys with 3 tags each held 87 MB, and once they had all expired still 78 MB,
/// which `maxmemory` counts against the data. The freshness table likewise, once its last
/// key has left. O(1) unless it frees; a big index is freed on a thread ([`free_index`]).
fn give_back_if_emptied(st: &mut TagState) {
    let index = st.index.take_if_emptied();
    let fresh = st.fresh.take_if_emptied();
    if index.is_some() || fresh.is_some() {
        free_index(index.unwrap_or_default(), fresh.unwrap_or_default());
    }
}

/// Takes the gathered expired and evicted keys out of the index and the freshness table, in
/// passes: their key-table buckets are prefetched, then the slots those buckets name, then
/// their tags' slots, then those tags' list entries (and, for a tag about to empty, its
/// bucket), then the keys are removed: the misses of the whole batch overlap.
fn settle(st: &mut TagState) {
    if st.dropped.ends.is_empty() {
        return;
    }
    let mut names = std::mem::take(&mut st.dropped.names);
    let mut ends = std::mem::take(&mut st.dropped.ends);
    let key_at = |i: usize| {
        let start = if i == 0 { 0 } else { ends[i - 1].1 };
        (ends[i].0, &names[start..ends[i].1])
    };
    // Each name is hashed once, for all the passes.
    let hashes: Vec<u64> = (0..ends.len()).map(|i| name_hash(key_at(i).1)).collect();
    for (i, &h) in hashes.iter().enumerate() {
        prefetch(st.index.key_bucket_address_hashed(ends[i].0, h));
    }
    for (i, &h) in hashes.iter().enumerate() {
        prefetch(st.index.key_slot_address_hashed(ends[i].0, h));
    }
    for stage in 0..2 {
        for (i, &h) in hashes.iter().enumerate() {
            st.index
                .removal_addresses(ends[i].0, h, stage, crate::state::prefetch);
        }
    }
    for (i, &h) in hashes.iter().enumerate() {
        let (db, key) = key_at(i);
        st.index.remove_key_hashed(db, key, h);
        if !st.fresh.is_empty() {
            st.fresh.remove(db, key);
        }
    }
    // Keep the buffers' capacity for the next batch.
    names.clear();
    ends.clear();
    st.dropped = DroppedKeys { names, ends };
    // Before whatever runs next reads the index (INFO's memory, say).
    give_back_if_emptied(st);
}

static mut TAG_TYPE: *mut raw::RedisModuleType = ptr::null_mut();

fn with<R>(f: impl FnOnce(&mut TagState) -> R) -> Result<R, ReplyError> {
    state(f).ok_or_else(|| ReplyError::err("tag index busy (re-entrant call)"))
}

/// Runs `f` with the index as it is, without applying the gathered expired and evicted keys
/// first (`settle`): for prefetching, where a stale address costs nothing.
fn peek<R>(f: impl FnOnce(&TagState) -> R) -> Option<R> {
    STATE.with(|st| f(st))
}

/// Prefetches `addr`, when there is one (see `state::prefetch`).
fn prefetch(addr: Option<*const u8>) {
    if let Some(a) = addr {
        crate::state::prefetch(a);
    }
}

fn limits() -> TagLimits {
    TagLimits {
        max_tags_per_key: configs::int(idx::MAX_TAGS_PER_KEY) as usize,
        max_tag_length: configs::int(idx::MAX_TAG_LENGTH) as usize,
    }
}

/// The db selected by the client of `ctx`.
pub(crate) fn selected_db(ctx: *mut raw::RedisModuleCtx) -> usize {
    // SAFETY: ctx is a live context.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx).max(0) as usize) }
}

/// Whether the keyspace-event subscription that keeps the index equal to the keyspace is in
/// place. It is made when the index gets its first entry (OPT.SET, OPT.TAG, or an index
/// loaded from an RDB), not at load: every event a subscriber receives costs Redis a module
/// context (about 600 instructions on 7.0, more than the rest of a SET), so a server that never
/// tags a key pays nothing for tags. Redis 7.0 cannot unsubscribe, so it then stays; Redis
/// 8.2+ drops it again while the index is empty (`on_idle_check`).
static FOLLOWING: AtomicBool = AtomicBool::new(false);

/// The keyspace events the index follows where the server has no `overwritten` event: every
/// class whose commands can replace a key (SET, the *STORE commands), so every write of those
/// types reaches the index, which ignores most of them.
const KEYSPACE_EVENTS_ALL_WRITES: c_int = raw::REDISMODULE_NOTIFY_GENERIC
    | raw::REDISMODULE_NOTIFY_STRING
    | raw::REDISMODULE_NOTIFY_LIST
    | raw::REDISMODULE_NOTIFY_SET
    | raw::REDISMODULE_NOTIFY_ZSET
    | raw::REDISMODULE_NOTIFY_EXPIRED
    | raw::REDISMODULE_NOTIFY_EVICTED;

/// The keyspace events the index follows on Redis 8.2+: replaced values come as `overwritten`,
/// so writes that change a value in place (LPUSH, INCR, HSET...), writes of new keys and
/// OPT.SET's own `set` event cost no module context (about 700 instructions each) anymore.
const KEYSPACE_EVENTS_OVERWRITTEN: c_int = raw::REDISMODULE_NOTIFY_GENERIC
    | crate::server::NOTIFY_OVERWRITTEN
    | raw::REDISMODULE_NOTIFY_EXPIRED
    | raw::REDISMODULE_NOTIFY_EVICTED;

/// The keyspace events the index follows on this server (the same mask subscribes and
/// unsubscribes).
fn keyspace_events() -> c_int {
    static MASK: std::sync::OnceLock<c_int> = std::sync::OnceLock::new();
    *MASK.get_or_init(|| {
        if crate::server::has_overwritten_events() {
            KEYSPACE_EVENTS_OVERWRITTEN
        } else {
            KEYSPACE_EVENTS_ALL_WRITES
        }
    })
}

/// How often an empty index checks whether it can drop its keyspace subscription.
const IDLE_CHECK_MS: i64 = 1000;

/// Whether the index follows keyspace events now (`INFO opt`: `tags_following_keyspace`).
pub fn following_keyspace() -> bool {
    FOLLOWING.load(Ordering::Relaxed)
}

/// Every second, on every server: the keys that expired or were evicted since the index was
/// last used leave it, and an index that has become empty gives its memory back, even while
/// no command uses the index (before, on a server gone idle after its tagged keys expired,
/// the emptied index's memory stayed allocated until the next OPT command or `INFO opt`).
/// Where the server can drop a subscription (Redis 8.2+), an empty index (every tagged key
/// expired, say, or FLUSHALL) also drops it: from then on a SET or an expiry no longer pays
/// an event for tags, as on a server that never tagged. The next tagged key subscribes again
/// before it enters the index (`follow_keyspace`).
///
/// # Safety
/// Called by the server on the main thread when the timer fires, with a live context.
unsafe extern "C" fn on_idle_check(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch_and_log("tag index idle check", || {
        let empty = state(|st| {
            st.index.is_empty()
                && st.fresh.is_empty()
                && st.locks.is_empty()
                && st.in_flight.is_none()
        })
        .unwrap_or(false)
            && crate::tag_migration::held_keys() == 0;
        // SAFETY: reading a function pointer filled at load.
        let unsubscribe = unsafe { raw::RedisModule_UnsubscribeFromKeyspaceEvents };
        if let (true, true, Some(unsubscribe)) = (empty, following_keyspace(), unsubscribe) {
            // SAFETY: the timer's context; the callback is the one subscribed.
            let dropped = unsafe {
                unsubscribe(ctx, keyspace_events(), Some(on_keyspace_event))
                    == raw::REDISMODULE_OK as c_int
            };
            if dropped {
                FOLLOWING.store(false, Ordering::Relaxed);
                log::notice("tag index: empty, so keyspace events are no longer followed");
            }
        }
    });
    if let Some(create) = raw::RedisModule_CreateTimer {
        create(ctx, IDLE_CHECK_MS, Some(on_idle_check), ptr::null_mut());
    }
}

/// Subscribes to the events that change the keyspace, once. Called before the index gets an
/// entry, on the main thread.
pub(crate) fn follow_keyspace(ctx: *mut raw::RedisModuleCtx) -> Result<(), ReplyError> {
    if FOLLOWING.load(Ordering::Relaxed) {
        return Ok(());
    }
    // SAFETY: ctx is a live context of this module on the main thread; the callback is this
    // module's extern "C" function and lives as long as the module.
    let ok = unsafe {
        raw::RedisModule_SubscribeToKeyspaceEvents.is_some_and(|f| {
            f(ctx, keyspace_events(), Some(on_keyspace_event)) == raw::REDISMODULE_OK as c_int
        })
    };
    if !ok {
        return Err(ReplyError::err(
            "could not subscribe to keyspace events for the tag index",
        ));
    }
    FOLLOWING.store(true, Ordering::Relaxed);
    log::notice("tag index: following keyspace events from now on (first tagged key)");
    crate::tag_migration::watch_migrations(ctx);
    crate::client_db::watch(ctx);
    Ok(())
}

/// The module options (`RedisModule_SetModuleOptions` takes the whole mask): the aux data
/// loader handles read errors itself, and a replica's full sync may load into a second set
/// of databases while the old ones serve reads (`repl-diskless-load swapdb`; see
/// `AsyncLoad`). Without the second flag the server skips a diskless load with swapdb and
/// loads from a file on disk instead ("Skipping diskless-load because there are modules that
/// are not aware of async replication").
pub const MODULE_OPTIONS: c_int = (raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS
    | raw::REDISMODULE_OPTIONS_HANDLE_REPL_ASYNC_LOAD) as c_int;

/// A replica's full sync with `repl-diskless-load swapdb`: the server loads the master's RDB
/// into temporary databases while the old ones go on serving, then swaps them (COMPLETED) or
/// drops them (ABORTED, the transfer failed). The index loaded with them waits here, so that
/// until the swap the old keys keep their old tags, and a failed transfer leaves the index as
/// it was. Between the STARTED and the COMPLETED or ABORTED events: Some; its content is the
/// loaded index, if the RDB held one (an RDB without one holds no tagged key).
static ASYNC_LOAD: MainThreadCell<Option<Option<(TagIndex, FreshnessIndex)>>> =
    MainThreadCell::new(None);

/// Follows a swapdb full sync (see `ASYNC_LOAD`).
fn on_async_load(subevent: u64) {
    guard::catch_and_log("tag index async load", || match subevent {
        raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_STARTED => {
            ASYNC_LOAD.with(|a| *a = Some(None));
        }
        raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_ABORTED => {
            if let Some(Some((index, fresh))) = ASYNC_LOAD.with(Option::take).flatten() {
                free_index(index, fresh);
            }
        }
        raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_COMPLETED => {
            // None: no swapdb load was started (nothing to swap in).
            let Some(loaded) = ASYNC_LOAD.with(Option::take).flatten() else {
                return;
            };
            // An RDB without the index's field holds no tagged key.
            let (index, fresh) = loaded.unwrap_or_default();
            let swapped = state(|st| {
                st.in_flight = None;
                st.renamed_to = None;
                (
                    std::mem::replace(&mut st.index, index),
                    std::mem::replace(&mut st.fresh, fresh),
                )
            });
            // The loading's end follows: the keyspace subscription, and the entries of keys
            // that are missing are dropped.
            if let Some((old_index, old_fresh)) = swapped {
                free_index(old_index, old_fresh);
            }
        }
        _ => {}
    });
}

/// Registers the aux data type and starts the index's check every second (`on_idle_check`);
/// the keyspace events are subscribed on first use (`follow_keyspace`), and where the server
/// can drop a subscription, dropped again while the index is empty.
pub fn init(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    // SAFETY: OnLoad context; the callback is this module's extern "C" function.
    unsafe {
        if let Some(create) = raw::RedisModule_CreateTimer {
            create(ctx, IDLE_CHECK_MS, Some(on_idle_check), ptr::null_mut());
        }
    }
    // SAFETY: OnLoad context; callbacks are this module's extern "C" functions; the type
    // methods struct is copied by Redis.
    unsafe {
        if let Some(opts) = raw::RedisModule_SetModuleOptions {
            opts(ctx, MODULE_OPTIONS);
        }
        // Redis 7.0 ignores aux_save2 (its aux data is never written), so it gets aux_save;
        // 7.2+ gets aux_save2, which writes nothing when the index is empty, so such an RDB
        // loads without the module.
        let modern = crate::server::supports_aux_save2();
        let mut tm: raw::RedisModuleTypeMethods = std::mem::zeroed();
        tm.version = raw::REDISMODULE_TYPE_METHOD_VERSION as u64;
        tm.aux_load = Some(aux_load);
        if modern {
            tm.aux_save2 = Some(aux_save);
        } else {
            tm.aux_save = Some(aux_save);
        }
        tm.aux_save_triggers = raw::REDISMODULE_AUX_AFTER_RDB as c_int;
        let create = raw::RedisModule_CreateDataType.ok_or("no data type API")?;
        let t = create(ctx, c"optTagIdx".as_ptr(), 1, &mut tm);
        if t.is_null() {
            return Err("could not register the tag index persistence type".into());
        }
        TAG_TYPE = t;
    }
    Ok(())
}

/// # Safety
/// Called by Redis for subscribed keyspace events, with a valid context, event and key.
unsafe extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    // Checked first: on Redis 7.0 every OPT.SET delivers its own `set` here.
    if OWN_EVENTS.load(Ordering::Relaxed) {
        // An invalidation's deletion (always under OwnEvents), to run where its own events
        // do not come back here.
        if let Some(Some(work)) = UNHEARD_WORK.with(Option::take) {
            // SAFETY: `run_unheard` set the pointer to its closure and is waiting in `notify`
            // for this call; taking it out means it runs once.
            guard::catch_and_log("tag invalidation", || unsafe { (*work)() });
        }
        return raw::REDISMODULE_OK as c_int;
    }
    guard::catch_and_log("tag index event", || {
        // SAFETY: valid for the duration of the callback.
        let (event, key) = unsafe { (CStr::from_ptr(event).to_bytes(), string_bytes(key)) };
        let db = selected_db(ctx);
        if event == b"restore" {
            crate::tag_migration::on_restore(ctx, db, key);
        }
        let applied = STATE.with(|st| {
            apply_event(ctx, st, db, event, key);
            give_back_if_emptied(st);
        });
        if applied.is_none() {
            log::warning("tag index event arrived while the index was in use; report this");
        }
        // Last: it may select another database on the event's client (Valkey 8.1 and 9.0).
        crate::client_db::after_event(ctx, event, key, db);
    });
    raw::REDISMODULE_OK as c_int
}

/// Replacing or deleting events: the key's old value (and its tags) is gone. `overwritten`
/// (Redis 8.2+) stands for all the replacing ones, which the index then no longer follows.
const DROPS: &[&[u8]] = &[
    b"del",
    b"overwritten",
    b"expired",
    b"evicted",
    b"set",
    b"restore",
    b"copy_to",
    b"sortstore",
    b"sunionstore",
    b"sinterstore",
    b"sdiffstore",
    b"zunionstore",
    b"zinterstore",
    b"zdiffstore",
    b"zrangestore",
    b"georadiusstore",
    b"geosearchstore",
];

fn apply_event(
    ctx: *mut raw::RedisModuleCtx,
    st: &mut TagState,
    db: usize,
    event: &[u8],
    key: &[u8],
) {
    // Only the event right after a rename may be its `overwritten`.
    let renamed_to = st.renamed_to.take();
    if st.index.is_empty() && st.fresh.is_empty() && st.in_flight.is_none() {
        return;
    }
    if event != b"expired" && event != b"evicted" {
        settle(st);
    }
    match event {
        b"rename_from" | b"move_from" => {
            let tags = st.index.take_key(db, key);
            let fresh = st.fresh.remove(db, key);
            st.in_flight = (!tags.is_empty() || fresh.is_some()).then_some((tags, fresh));
        }
        // RENAME onto an existing key raises `overwritten` for the destination after
        // `rename_to` (Redis 8.2+): the value there is the renamed one, tags included.
        b"overwritten"
            if renamed_to.is_some_and(|(d, k, at)| {
                // SAFETY: ctx is the event's live context on the main thread.
                d == db && k == key && at.is_some() && at == unsafe { commands_processed(ctx) }
            }) => {}
        b"rename_to" | b"move_to" => {
            st.index.remove_key(db, key);
            st.fresh.remove(db, key);
            if let Some((tags, fresh)) = st.in_flight.take() {
                if event == b"rename_to" && crate::server::has_overwritten_events() {
                    // SAFETY: ctx is the event's live context on the main thread.
                    let now = unsafe { commands_processed(ctx) };
                    st.renamed_to = Some((db, key.to_vec(), now));
                }
                let refs: Vec<&[u8]> = tags.iter().map(Vec::as_slice).collect();
                st.index.set_tags(db, key, &refs);
                if let Some(f) = fresh {
                    st.fresh.set(db, key, f);
                }
            }
        }
        e if DROPS.contains(&e) => {
            if crate::slot_migration::any_leaving()
                && crate::slot_migration::is_leaving(opt_core::cluster::key_slot(key))
            {
                // The server deletes the keys of slots that moved away (Valkey, with events)
                // while `slot_migration` walks the index to send their tags to the new owner:
                // the walk takes the entry out, so the event changes nothing (and costs less).
                return;
            }
            if e == b"expired" || e == b"evicted" {
                st.dropped.names.extend_from_slice(key);
                st.dropped.ends.push((db, st.dropped.names.len()));
                if st.dropped.ends.len() >= DROP_BATCH {
                    settle(st);
                }
            } else if e == b"del" && crate::tag_migration::keys_awaiting_exec() {
                // Redis 7.0: a queued MIGRATE may be moving the key (see
                // `tag_migration::Awaiting`); its tags go to the target once it has.
                let tags = st.index.take_key(db, key);
                let freshness = st.fresh.remove(db, key);
                crate::tag_migration::on_key_deleted(db, key, tags, freshness);
            } else {
                st.index.remove_key(db, key);
                st.fresh.remove(db, key);
            }
        }
        _ => {}
    }
}

/// Tagged keys and freshness entries up to which a flushed part is freed on the main thread.
const FREE_INLINE_UP_TO: u64 = 10_000;

/// Bytes up to which an index part is freed on the main thread (an emptied index holds no
/// pair but may hold the slots of millions: dropping it walks them).
const FREE_INLINE_BYTES: usize = 1 << 20;

/// Frees what FLUSHDB or FLUSHALL took out of the index, or an emptied index. A big index is
/// millions of allocations (a million tagged keys took 0.25 s to free inside FLUSHDB ASYNC,
/// which the server itself answers at once), so a big one is freed on a thread of its own.
/// The memory is Redis' allocator's, which is thread-safe: the server's lazy-free thread
/// relies on it.
fn free_index(index: TagIndex, fresh: FreshnessIndex) {
    if index.stats().pairs + fresh.len() as u64 <= FREE_INLINE_UP_TO
        && index.memory_bytes() <= FREE_INLINE_BYTES
    {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("opt-free".into())
        .spawn(move || drop((index, fresh)));
    if let Err(e) = spawned {
        // The closure, and what it holds, was freed here.
        log::warning(&format!(
            "flushed tag index freed on the main thread: no thread ({e})"
        ));
    }
}

/// Follows FLUSHDB/FLUSHALL, SWAPDB, the end of loading and a replica's swapdb full sync
/// (dispatched by `events`).
///
/// # Safety
/// `data` must be the event data Redis passed for event `id`.
pub unsafe fn on_server_event(
    ctx: *mut raw::RedisModuleCtx,
    id: u64,
    subevent: u64,
    data: *mut c_void,
) {
    let eid = raw::RedisModuleEvent { id, dataver: 1 };
    if id == raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD {
        on_async_load(subevent);
        return;
    }
    guard::catch_and_log("tag index server event", || {
        if eid.id == raw::REDISMODULE_EVENT_LOADING {
            let loaded_entries =
                state(|st| !st.index.is_empty() || !st.fresh.is_empty()).unwrap_or(false);
            let finished = subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED
                || subevent == raw::REDISMODULE_SUBEVENT_LOADING_FAILED;
            if finished && loaded_entries {
                // Before pruning: a lookup there may expire a key, and its event must count.
                if let Err(e) = follow_keyspace(ctx) {
                    log::warning(&e.0);
                }
            }
            if subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
                prune_missing(ctx);
            }
            return;
        }
        if data.is_null() {
            return;
        }
        if eid.id == raw::REDISMODULE_EVENT_FLUSHDB
            && subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_START
        {
            // SAFETY: for FlushDB events data points to a RedisModuleFlushInfo.
            let info = unsafe { &*(data as *const raw::RedisModuleFlushInfo) };
            let taken = state(|st| {
                if info.dbnum < 0 {
                    (st.index.flush_all(), st.fresh.flush_all())
                } else {
                    let db = info.dbnum as usize;
                    (st.index.flush_db(db), st.fresh.flush_db(db))
                }
            });
            if let Some((index, fresh)) = taken {
                free_index(index, fresh);
            }
        } else if eid.id == raw::REDISMODULE_EVENT_SWAPDB {
            // SAFETY: for SwapDB events data points to a RedisModuleSwapDbInfo.
            let info = unsafe { &*(data as *const raw::RedisModuleSwapDbInfo) };
            state(|st| {
                let (a, b) = (
                    info.dbnum_first.max(0) as usize,
                    info.dbnum_second.max(0) as usize,
                );
                st.index.swap_db(a, b);
                st.fresh.swap_db(a, b);
            });
        }
    });
}

/// Drops index entries whose key does not exist (after an RDB, AOF or full-sync load: keys
/// that expired meanwhile, or an index saved with keys the dataset no longer has).
fn prune_missing(ctx: *mut raw::RedisModuleCtx) {
    let entries: Vec<(usize, Vec<u8>)> = state(|st| {
        let mut all: Vec<(usize, Vec<u8>)> = st
            .index
            .dbs_in_use()
            .into_iter()
            .flat_map(|db| {
                st.index
                    .db_entries(db)
                    .into_iter()
                    .map(move |(k, _)| (db, k))
            })
            .collect();
        all.extend(st.fresh.keys());
        all
    })
    .unwrap_or_default();
    // Checked without holding the index: a lookup may expire a key, whose event then updates
    // the index itself.
    let missing: Vec<(usize, Vec<u8>)> = entries
        .into_iter()
        .filter(|(db, k)| !key_exists(ctx, *db, k))
        .collect();
    if missing.is_empty() {
        return;
    }
    state(|st| {
        for (db, k) in &missing {
            st.index.remove_key(*db, k);
            st.fresh.remove(*db, k);
        }
    });
    log::notice(&format!(
        "tag index: dropped {} entries whose keys no longer exist after loading",
        missing.len()
    ));
}

struct RdbWriter(*mut raw::RedisModuleIO);

impl IndexWriter for RdbWriter {
    fn write_u64(&mut self, v: u64) {
        // SAFETY: the IO handle is valid during aux_save.
        unsafe {
            if let Some(f) = raw::RedisModule_SaveUnsigned {
                f(self.0, v)
            }
        }
    }
    fn write_bytes(&mut self, b: &[u8]) {
        // SAFETY: as above; Redis copies the buffer.
        unsafe {
            if let Some(f) = raw::RedisModule_SaveStringBuffer {
                f(self.0, b.as_ptr().cast(), b.len())
            }
        }
    }
}

struct RdbReader(*mut raw::RedisModuleIO);

impl RdbReader {
    fn check(&self) -> Result<(), String> {
        // SAFETY: the IO handle is valid during aux_load.
        let failed = unsafe { raw::RedisModule_IsIOError.is_some_and(|f| f(self.0) != 0) };
        if failed {
            Err("short or unreadable tag index in the RDB".into())
        } else {
            Ok(())
        }
    }
}

impl IndexReader for RdbReader {
    fn read_u64(&mut self) -> Result<u64, String> {
        // SAFETY: the IO handle is valid during aux_load.
        let v = unsafe { raw::RedisModule_LoadUnsigned.map_or(0, |f| f(self.0)) };
        self.check().map(|_| v)
    }
    fn read_bytes(&mut self) -> Result<Vec<u8>, String> {
        let mut len = 0usize;
        // SAFETY: the IO handle is valid; the returned buffer is ours to free.
        let p = unsafe {
            raw::RedisModule_LoadStringBuffer.map_or(ptr::null_mut(), |f| f(self.0, &mut len))
        };
        self.check()?;
        if p.is_null() {
            return Err("missing string in the tag index".into());
        }
        // SAFETY: p points to len bytes allocated by Redis, freed right after the copy.
        let out = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec() };
        // SAFETY: p came from RedisModule_LoadStringBuffer.
        unsafe {
            if let Some(free) = raw::RedisModule_Free {
                free(p.cast())
            }
        }
        Ok(out)
    }
}

/// # Safety
/// Called by Redis while saving an RDB, with a valid IO handle.
unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if when != raw::REDISMODULE_AUX_AFTER_RDB as c_int {
        return;
    }
    guard::catch_and_log("tag index save", || {
        state(|st| {
            // aux_save2 servers skip the field when nothing is written.
            if crate::server::supports_aux_save2() && st.index.is_empty() && st.fresh.is_empty() {
                return;
            }
            persist::save(&st.index, &st.fresh, &mut RdbWriter(rdb));
        });
    });
}

/// # Safety
/// Called by Redis while loading an RDB, with a valid IO handle.
unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, _encver: c_int, when: c_int) -> c_int {
    if when != raw::REDISMODULE_AUX_AFTER_RDB as c_int {
        return raw::REDISMODULE_OK as c_int;
    }
    // Keys are checked for existence when loading ends (`prune_missing`): the IO context has
    // no client to look keys up with.
    let result = guard::catch(|| persist::load(&mut RdbReader(rdb), |_, _| true));
    match result {
        Ok(Ok((index, fresh))) => {
            // A swapdb full sync keeps it for the swap; any other load replaces the index.
            let mut loaded = Some((index, fresh));
            ASYNC_LOAD.with(|a| {
                if let Some(pending) = a {
                    *pending = loaded.take();
                }
            });
            if let Some((index, fresh)) = loaded {
                state(|st| {
                    st.index = index;
                    st.fresh = fresh;
                });
            }
            raw::REDISMODULE_OK as c_int
        }
        Ok(Err(why)) => {
            log::warning(&format!("tag index in the RDB is corrupt: {why}"));
            raw::REDISMODULE_ERR as c_int
        }
        Err(p) => {
            log::warning(&format!("tag index load failed: {}", p.message));
            raw::REDISMODULE_ERR as c_int
        }
    }
}

/// Whether `key` exists in `db` (on load, to drop entries of keys that are gone; after a
/// MIGRATE, to tell the keys it moved). True when the server cannot tell.
pub fn key_exists(ctx: *mut raw::RedisModuleCtx, db: usize, key: &[u8]) -> bool {
    if ctx.is_null() {
        return true;
    }
    // SAFETY: ctx is valid during the load; the string is freed before returning; the
    // previously selected db is restored.
    unsafe {
        let (Some(get_db), Some(select), Some(exists), Some(create), Some(free)) = (
            raw::RedisModule_GetSelectedDb,
            raw::RedisModule_SelectDb,
            raw::RedisModule_KeyExists,
            raw::RedisModule_CreateString,
            raw::RedisModule_FreeString,
        ) else {
            return true;
        };
        let before = get_db(ctx);
        if select(ctx, db as c_int) != raw::REDISMODULE_OK as c_int {
            return false;
        }
        let s = create(ctx, key.as_ptr().cast(), key.len());
        let found = exists(ctx, s) != 0;
        free(ctx, s);
        select(ctx, before);
        found
    }
}

// ---------------------------------------------------------------------------------------
// Slots that leave this node whole (see `slot_migration`).

/// Takes out of the index and the freshness table the tagged keys of `db` in `slots` among
/// index positions `from..from + scan`, and returns them with their tags and freshness, and
/// the position to go on from (`None` once the index was walked). Nothing is replicated: the
/// server sends its own deletions to the replicas.
pub fn take_slot_keys(
    db: usize,
    slots: &SlotSet,
    from: usize,
    scan: usize,
) -> (Vec<KeyTags>, Option<usize>) {
    state(|st| {
        let (taken, next) = st
            .index
            .take_keys_where(db, from, scan, |k| slots.holds_key(k));
        let entries = taken
            .into_iter()
            .map(|(key, tags)| {
                let freshness = st.fresh.remove(db, &key);
                KeyTags {
                    key,
                    tags,
                    freshness,
                }
            })
            .collect();
        (entries, next)
    })
    .unwrap_or((Vec::new(), None))
}

/// The databases that hold tags or freshness (cluster mode has only db 0, but Valkey 9 can
/// have more: `cluster-databases`).
pub fn dbs_in_use() -> Vec<usize> {
    state(|st| {
        let mut dbs = st.index.dbs_in_use();
        dbs.extend(st.fresh.dbs_in_use());
        dbs.sort_unstable();
        dbs.dedup();
        dbs
    })
    .unwrap_or_default()
}

/// Takes out of the freshness table the keys of `db` in `slots` that have freshness and no
/// tag, with their freshness, among the `scan` positions below `from` (`usize::MAX` to
/// start), and returns the position to go on from (`None` once the table was walked).
pub fn take_fresh_slot_keys(
    db: usize,
    slots: &SlotSet,
    from: usize,
    scan: usize,
) -> (Vec<KeyTags>, Option<usize>) {
    state(|st| {
        let (taken, next) = st
            .fresh
            .take_where_from(db, from, scan, |k| slots.holds_key(k));
        let entries = taken
            .into_iter()
            .map(|(key, freshness)| KeyTags {
                key,
                tags: Vec::new(),
                freshness: Some(freshness),
            })
            .collect();
        (entries, next)
    })
    .unwrap_or((Vec::new(), None))
}

// ---------------------------------------------------------------------------------------
// Tags that follow MIGRATE (see `tag_migration`).

/// The tags and freshness of those of `keys` in `db` that have any, for a node the keys
/// migrate to.
pub fn tags_for_transfer(db: usize, keys: &[&[u8]]) -> Vec<KeyTags> {
    state(|st| {
        keys.iter()
            .filter_map(|k| {
                let tags = st.index.tags_of(db, k);
                let freshness = st.fresh.get(db, k);
                (!tags.is_empty() || freshness.is_some()).then(|| KeyTags {
                    key: k.to_vec(),
                    tags,
                    freshness,
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Gives the keys of a transfer from another node the tags and freshness they had there, for
/// those that exist here. Replicas and the AOF get `OPT.TAG`, or for a key with freshness the
/// `OPT.SET ... PXAT ... DELTA ... STALE ... TAGS ...` an OPT.SET of it would have replicated.
/// Tags over this node's limits are left out (and logged), as OPT.TAG would refuse them.
/// Returns how many keys were updated, and the entries whose key is not here (the caller
/// may hold them until it arrives: `tag_migration`).
pub fn apply_transfer(
    ctx: *mut raw::RedisModuleCtx,
    db: usize,
    entries: Vec<KeyTags>,
) -> (usize, Vec<KeyTags>) {
    let limits = limits();
    let mut updated = 0;
    let mut missing = Vec::new();
    for mut e in entries {
        if !e.tags.is_empty() {
            let tags: Vec<&[u8]> = e.tags.iter().map(Vec::as_slice).collect();
            if let Err(why) = validate_tags(&tags, &limits) {
                log::warning(&format!(
                    "tags of a migrated key left out: {why} (key of {} bytes)",
                    e.key.len()
                ));
                e.tags.clear();
            }
        }
        if e.tags.is_empty() && e.freshness.is_none() {
            continue;
        }
        if !key_exists(ctx, db, &e.key) {
            missing.push(e);
            continue;
        }
        if apply_recent_invalidations(ctx, db, &mut e) {
            continue;
        }
        if let Err(err) = follow_keyspace(ctx) {
            log::warning(&err.0);
            return (updated, missing);
        }
        let tags: Vec<&[u8]> = e.tags.iter().map(Vec::as_slice).collect();
        let applied = with(|st| {
            if !tags.is_empty() {
                st.index.set_tags(db, &e.key, &tags);
            }
            if let Some(f) = e.freshness {
                st.fresh.set(db, &e.key, f);
            }
        });
        if applied.is_err() {
            continue;
        }
        updated += 1;
        replicate_transfer(ctx, db, &e.key, &tags, e.freshness);
    }
    (updated, missing)
}

/// How long a node remembers the tags it invalidated, for keys that arrive after (see
/// [`apply_recent_invalidations`]): far longer than a moved key's tags take to follow it, short
/// enough that a key written with the tag again later and moved meanwhile is rarely taken.
pub const LATE_ARRIVAL_WINDOW: Duration = Duration::from_secs(2);
/// Most tags remembered at once; past it, an invalidation's tags are not remembered (logged).
const LATE_ARRIVAL_MAX_TAGS: usize = 4096;

/// A tag invalidated on this cluster node a moment ago: the last invalidation that deleted
/// its keys, and the last that marked them stale (SOFT), each kept for
/// [`LATE_ARRIVAL_WINDOW`].
#[derive(Default)]
struct RecentInvalidation {
    deleted: Option<RecentDeletion>,
    /// When, and the time the keys were marked stale at (`now_ms`: their new logical expiry).
    marked_stale: Option<(Instant, i64)>,
}

/// An invalidation that deleted: when, whether lazily (ASYNC), and by which user (None: no
/// client, nothing to check).
struct RecentDeletion {
    at: Instant,
    lazy: bool,
    user: Option<Vec<u8>>,
}

/// What an invalidation did to its tags' keys (see [`remember_invalidation`]).
#[derive(Clone, Copy)]
enum InvalidationKind {
    /// Deleted them: DEL, or UNLINK when `lazy`.
    Delete { lazy: bool },
    /// Marked them stale as of `at_ms` (SOFT).
    MarkStale { at_ms: i64 },
}

/// Tags invalidated in the last [`LATE_ARRIVAL_WINDOW`], by db, then tag (looked up by
/// `&[u8]`, with no copy of the tag).
type RecentInvalidations = HashMap<usize, HashMap<Vec<u8>, RecentInvalidation>>;

/// See [`RecentInvalidations`].
static RECENT_INVALIDATIONS: MainThreadCell<Option<RecentInvalidations>> =
    MainThreadCell::new(None);
/// When an invalidation was last remembered (`now_ms`; 0 before the first).
static LAST_REMEMBERED_MS: AtomicU64 = AtomicU64::new(0);
/// Keys deleted on arrival by [`apply_recent_invalidations`] (`INFO opt`).
pub static DELETED_ON_ARRIVAL: AtomicU64 = AtomicU64::new(0);
/// Keys marked stale on arrival by [`apply_recent_invalidations`] (`INFO opt`).
pub static MARKED_STALE_ON_ARRIVAL: AtomicU64 = AtomicU64::new(0);

/// Remembers that `tags` of `db` were invalidated now by the caller of `ctx`, in cluster
/// mode (elsewhere no key arrives late).
fn remember_invalidation(
    ctx: *mut raw::RedisModuleCtx,
    db: usize,
    tags: &[&[u8]],
    kind: InvalidationKind,
) {
    if !crate::server::in_cluster(ctx) {
        return;
    }
    let user = match kind {
        InvalidationKind::Delete { .. } => crate::acl::caller_name(ctx),
        InvalidationKind::MarkStale { .. } => None,
    };
    let now = Instant::now();
    let current = |at: Instant| now.duration_since(at) < LATE_ARRIVAL_WINDOW;
    LAST_REMEMBERED_MS.store(crate::state::now_ms().max(1), Ordering::Relaxed);
    let full = RECENT_INVALIDATIONS
        .with(|recent| {
            let recent = recent.get_or_insert_with(HashMap::new);
            for by_tag in recent.values_mut() {
                by_tag.retain(|_, r| {
                    r.deleted = r.deleted.take().filter(|d| current(d.at));
                    r.marked_stale = r.marked_stale.filter(|(at, _)| current(*at));
                    r.deleted.is_some() || r.marked_stale.is_some()
                });
            }
            recent.retain(|_, by_tag| !by_tag.is_empty());
            let mut remembered: usize = recent.values().map(HashMap::len).sum();
            let by_tag = recent.entry(db).or_default();
            let mut full = false;
            for t in tags {
                let known = by_tag.contains_key(*t);
                if remembered >= LATE_ARRIVAL_MAX_TAGS && !known {
                    full = true;
                    continue;
                }
                remembered += usize::from(!known);
                let r = by_tag.entry(t.to_vec()).or_default();
                match kind {
                    InvalidationKind::Delete { lazy } => {
                        r.deleted = Some(RecentDeletion {
                            at: now,
                            lazy,
                            user: user.clone(),
                        })
                    }
                    InvalidationKind::MarkStale { at_ms } => r.marked_stale = Some((now, at_ms)),
                }
            }
            full
        })
        .unwrap_or(false);
    if full {
        log::warning(&format!(
            "over {LATE_ARRIVAL_MAX_TAGS} tags invalidated within {LATE_ARRIVAL_WINDOW:?}: keys \
             that MIGRATE brings with the others' tags are tagged, not deleted or marked stale"
        ));
    }
}

/// A key that a MIGRATE or a slot migration brought here, with tags that this node
/// invalidated in the last [`LATE_ARRIVAL_WINDOW`]: its tags follow it by a cluster message,
/// a moment after the key, so the invalidation may have run in between and missed it (on
/// this node, and on the node it left). Does what that invalidation would have done:
/// - deletes it (DEL or UNLINK, replicated, with its `del` event) when the user who ran a
///   deleting invalidation may delete the key, and returns true;
/// - else, after a SOFT one, marks it stale as of that invalidation (`e.freshness`, which the
///   caller then applies and replicates), and returns false.
///
/// A key written with the tag again after the invalidation and moved within the window is
/// taken too: a cache miss (or a recomputation), where a missed invalidation would serve stale
/// data.
fn apply_recent_invalidations(ctx: *mut raw::RedisModuleCtx, db: usize, e: &mut KeyTags) -> bool {
    // Most transfers come long after any invalidation: skip the lookups then. A replica
    // (one that was a primary a moment ago) changes nothing itself: its primary's changes
    // reach it.
    let last = LAST_REMEMBERED_MS.load(Ordering::Relaxed);
    if last == 0
        || crate::state::now_ms().saturating_sub(last) >= LATE_ARRIVAL_WINDOW.as_millis() as u64
        || is_replica(ctx)
    {
        return false;
    }
    let now = Instant::now();
    let current = |at: Instant| now.duration_since(at) < LATE_ARRIVAL_WINDOW;
    let Some(Some((deletion, stale_at))) = RECENT_INVALIDATIONS.with(|recent| {
        let by_tag = recent.as_ref()?.get(&db)?;
        let (mut deletion, mut stale_at) = (None, None::<i64>);
        for r in e.tags.iter().filter_map(|t| by_tag.get(t.as_slice())) {
            if let Some(d) = r.deleted.as_ref().filter(|d| current(d.at)) {
                deletion.get_or_insert_with(|| (d.lazy, d.user.clone()));
            }
            if let Some((_, at_ms)) = r.marked_stale.filter(|(at, _)| current(*at)) {
                stale_at = Some(stale_at.map_or(at_ms, |s| s.min(at_ms)));
            }
        }
        Some((deletion, stale_at))
    }) else {
        return false;
    };
    if let Some((lazy, user)) = deletion {
        if delete_arrived(ctx, db, &e.key, lazy, user.as_deref()) {
            DELETED_ON_ARRIVAL.fetch_add(1, Ordering::Relaxed);
            return true;
        }
    }
    if let Some(at_ms) = stale_at {
        // As `soft_invalidate` marks a key. Keys the source had marked already (the same
        // invalidation sent there) come stale and are not counted.
        let f = e.freshness.unwrap_or(Freshness {
            expires_at_ms: i64::MAX,
            delta_ms: 0,
            stale_ms: 0,
        });
        if f.expires_at_ms > at_ms {
            e.freshness = Some(Freshness {
                expires_at_ms: at_ms,
                ..f
            });
            MARKED_STALE_ON_ARRIVAL.fetch_add(1, Ordering::Relaxed);
        }
    }
    false
}

/// Deletes `key` of `db`, which just arrived, as an invalidation by `user` (None: no client)
/// would have; returns whether it did (not when that user may not delete it).
fn delete_arrived(
    ctx: *mut raw::RedisModuleCtx,
    db: usize,
    key: &[u8],
    lazy: bool,
    user: Option<&[u8]>,
) -> bool {
    // SAFETY: ctx is the live timer context applying the transfer; the string is made in
    // it and freed before returning.
    unsafe {
        let (Some(select), Some(create), Some(free)) = (
            raw::RedisModule_SelectDb,
            raw::RedisModule_CreateString,
            raw::RedisModule_FreeString,
        ) else {
            return false;
        };
        if select(ctx, db as c_int) != raw::REDISMODULE_OK as c_int {
            return false;
        }
        let name = create(ctx, key.as_ptr().cast(), key.len());
        let allowed = user.is_none_or(|u| crate::acl::user_may_delete(u, name));
        let deleted = allowed && delete_local(ctx, lazy, &[name]) == 1;
        free(ctx, name);
        deleted
    }
}

/// Replicates what [`apply_transfer`] did to one key.
fn replicate_transfer(
    ctx: *mut raw::RedisModuleCtx,
    db: usize,
    key: &[u8],
    tags: &[&[u8]],
    freshness: Option<Freshness>,
) {
    // SAFETY: ctx is the live context of the callback applying the transfer (the timer of
    // `tag_migration`); the strings and the key handle are made in it and released before
    // returning; the call copies the strings.
    unsafe {
        let (Some(select), Some(rep), Some(create)) = (
            raw::RedisModule_SelectDb,
            raw::RedisModule_Replicate,
            raw::RedisModule_CreateString,
        ) else {
            return;
        };
        if select(ctx, db as c_int) != raw::REDISMODULE_OK as c_int {
            return;
        }
        let key_name = create(ctx, key.as_ptr().cast(), key.len());
        let mut owned = OwnedStrings(ctx, vec![key_name]);
        let (name, mut words): (&CStr, Vec<Vec<u8>>) = match freshness {
            Some(f) => {
                let Some(value) = string_value(ctx, key_name) else {
                    return;
                };
                // The key came with its TTL (MIGRATE's RESTORE, replicated before this): it
                // keeps it, and the freshness is given apart, as it was on the other node.
                let expiry = ReplicatedExpiry::FreshUntil {
                    keep_ttl: true,
                    at: f.expires_at_ms,
                };
                let options = set_options_words(expiry, f.delta_ms, f.stale_ms, !tags.is_empty());
                let words =
                    std::iter::once(value).chain(options.into_iter().map(String::into_bytes));
                (c"OPT.SET", words.collect())
            }
            None => (c"OPT.TAG", Vec::new()),
        };
        words.extend(tags.iter().map(|t| t.to_vec()));
        owned.1.extend(
            words
                .iter()
                .map(|b| create(ctx, b.as_ptr().cast(), b.len())),
        );
        rep(
            ctx,
            name.as_ptr(),
            c"v".as_ptr(),
            owned.1.as_mut_ptr(),
            owned.1.len(),
        );
    }
}

/// The value of string key `key_name` in the selected db, if it holds a string.
///
/// # Safety
/// `ctx` must be a live context and `key_name` a string made in it.
unsafe fn string_value(
    ctx: *mut raw::RedisModuleCtx,
    key_name: *mut raw::RedisModuleString,
) -> Option<Vec<u8>> {
    let (Some(open), Some(key_type), Some(close)) = (
        raw::RedisModule_OpenKey,
        raw::RedisModule_KeyType,
        raw::RedisModule_CloseKey,
    ) else {
        return None;
    };
    let k = open(ctx, key_name, raw::REDISMODULE_READ as c_int);
    if k.is_null() {
        return None;
    }
    let value = (key_type(k) == raw::REDISMODULE_KEYTYPE_STRING as c_int)
        .then(|| read_string(ctx, k, key_name));
    close(k);
    value
}

// ---------------------------------------------------------------------------------------
// Commands.

/// Module strings made in a command's context, freed when dropped (also on an early return).
struct OwnedStrings(*mut raw::RedisModuleCtx, Vec<*mut raw::RedisModuleString>);

impl Drop for OwnedStrings {
    fn drop(&mut self) {
        // SAFETY: the strings were made in this context, which outlives this value (it lives
        // within the command), and are not used after this.
        unsafe {
            if let Some(free) = raw::RedisModule_FreeString {
                for s in self.1.drain(..) {
                    free(self.0, s);
                }
            }
        }
    }
}

/// `RedisModule_Call` of `name` with `argv` (the "v" format: an array of strings).
fn call_with_strings(
    ctx: *mut raw::RedisModuleCtx,
    name: &CStr,
    flags: &CStr,
    argv: &mut [*mut raw::RedisModuleString],
) -> Result<*mut raw::RedisModuleCallReply, ReplyError> {
    let fmt = format!("{}v\0", flags.to_str().unwrap_or(""));
    // SAFETY: ctx is the live command context and argv holds live strings, which the call
    // only borrows.
    let reply = unsafe {
        module_call!(
            ctx,
            name.as_ptr(),
            fmt.as_ptr().cast(),
            argv.as_mut_ptr(),
            argv.len(),
        )
    }
    .unwrap_or(ptr::null_mut());
    if reply.is_null() {
        return Err(ReplyError::err(format!(
            "{} failed (errno {})",
            name.to_string_lossy(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(reply)
}

fn key_exists_here(ctx: *mut raw::RedisModuleCtx, key: &[u8]) -> bool {
    let db = selected_db(ctx);
    key_exists(ctx, db, key)
}

/// Arguments as byte strings.
type ArgList<'a> = &'a [&'a [u8]];

/// How OPT.SET sets the expiry.
enum Expiry {
    /// No option: the key loses any TTL (SET semantics).
    None,
    /// KEEPTTL.
    Keep,
    /// Milliseconds from now (EX, PX).
    In(i64),
    /// A Unix time in milliseconds (EXAT, PXAT).
    At(i64),
}

/// The parsed options of OPT.SET.
struct SetOptions<'a> {
    expiry: Expiry,
    nx: bool,
    xx: bool,
    get: bool,
    delta_ms: u64,
    stale_ms: u64,
    token: Option<u64>,
    /// FRESHUNTIL: the logical expiry, a Unix time in ms, set apart from the key's TTL.
    fresh_until: Option<i64>,
    tags: ArgList<'a>,
    /// Arguments before TAGS (key, value, options).
    head_len: usize,
}

/// Parses `key value [options] [TAGS tag ...]`. TAGS may be left out only when DELTA, STALE
/// or TOKEN show the write is about freshness rather than tags.
fn parse_set(args: ArgList<'_>) -> Result<SetOptions<'_>, ReplyError> {
    let pos = args.iter().position(|a| a.eq_ignore_ascii_case(b"TAGS"));
    let (head, tags) = match pos {
        Some(p) => (&args[..p], &args[p + 1..]),
        None => (args, &args[args.len()..]),
    };
    if head.len() < 2 {
        return Err(ReplyError::err(
            "OPT.SET needs a key and a value before its options",
        ));
    }
    let mut o = SetOptions {
        expiry: Expiry::None,
        nx: false,
        xx: false,
        get: false,
        delta_ms: 0,
        stale_ms: 0,
        token: None,
        fresh_until: None,
        tags,
        head_len: head.len(),
    };
    let mut opts = Args::new("OPT.SET", &head[2..]);
    let mut freshness_options = false;
    while let Some(word) = opts.next_keyword() {
        let timed = !matches!(o.expiry, Expiry::None);
        match word.as_str() {
            "EX" | "PX" | "EXAT" | "PXAT" if !timed => {
                let v = opts
                    .int_value(&word, 1, i64::MAX / 1000)
                    .map_err(ReplyError::err)?;
                o.expiry = match word.as_str() {
                    "EX" => Expiry::In(v * 1000),
                    "PX" => Expiry::In(v),
                    "EXAT" => Expiry::At(v * 1000),
                    _ => Expiry::At(v),
                };
            }
            "KEEPTTL" if !timed => o.expiry = Expiry::Keep,
            "NX" if !o.xx => o.nx = true,
            "XX" if !o.nx => o.xx = true,
            "GET" => o.get = true,
            "DELTA" => {
                o.delta_ms = opts
                    .int_value("DELTA", 0, 86_400_000)
                    .map_err(ReplyError::err)? as u64;
                freshness_options = true;
            }
            "STALE" => {
                o.stale_ms = opts
                    .int_value("STALE", 0, 31_536_000)
                    .map_err(ReplyError::err)? as u64
                    * 1000;
                freshness_options = true;
            }
            "FRESHUNTIL" if o.fresh_until.is_none() => {
                o.fresh_until = Some(
                    opts.int_value("FRESHUNTIL", 1, i64::MAX / 1000)
                        .map_err(ReplyError::err)?,
                );
                freshness_options = true;
            }
            "TOKEN" => {
                let raw = opts.value("TOKEN").map_err(ReplyError::err)?;
                let t = std::str::from_utf8(raw)
                    .ok()
                    .and_then(|t| u64::from_str_radix(t, 16).ok())
                    .ok_or_else(|| {
                        ReplyError::err("OPT.SET TOKEN must be a token returned by OPT.FETCH")
                    })?;
                o.token = Some(t);
                freshness_options = true;
            }
            "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" | "NX" | "XX" | "FRESHUNTIL" => {
                return Err(ReplyError::err(format!(
                    "OPT.SET: {word} conflicts with another option"
                )))
            }
            _ => return Err(ReplyError::err(opts.unknown(&word))),
        }
    }
    if pos.is_none() && !freshness_options {
        return Err(ReplyError::err("OPT.SET needs TAGS tag [tag ...]"));
    }
    if pos.is_some() {
        validate_tags(tags, &limits()).map_err(|e| ReplyError::err(format!("OPT.SET: {e}")))?;
    }
    if o.fresh_until.is_some() && matches!(o.expiry, Expiry::In(_) | Expiry::At(_)) {
        return Err(ReplyError::err(
            "OPT.SET FRESHUNTIL goes with KEEPTTL or no expiry, not with EX, PX, EXAT or PXAT",
        ));
    }
    if o.stale_ms > 0
        && o.fresh_until.is_none()
        && !matches!(o.expiry, Expiry::In(_) | Expiry::At(_))
    {
        return Err(ReplyError::err(
            "OPT.SET STALE needs an expiry (EX, PX, EXAT or PXAT) or FRESHUNTIL: stale copies \
             are served after it",
        ));
    }
    Ok(o)
}

/// Unix time in milliseconds, from the server.
fn now_ms() -> i64 {
    // SAFETY: a plain clock read.
    unsafe { raw::RedisModule_Milliseconds.map_or(0, |f| f()) }
}

/// `OPT.SET key value [EX s|PX ms|EXAT ts|PXAT ts|KEEPTTL] [NX|XX] [GET] [DELTA ms] [STALE s]
/// [TOKEN t] TAGS tag [tag ...]`
///
/// Written with the key API, not by calling SET: one key lookup, no argument copies. The
/// value, its TTL, its tags and its freshness change together inside this one command, and
/// replicas and the AOF receive it as `OPT.SET key value [PXAT t] [DELTA d] [STALE s] TAGS ...`
/// with an absolute expiry. With STALE the key lives that much longer than its expiry, so a
/// stale copy can be served while one caller recomputes.
pub fn set(call: &Call) -> Result<Reply, ReplyError> {
    let o = parse_set(call.args)?;
    if call.argv.len() < o.head_len {
        return Err(ReplyError::err("OPT.SET: arguments missing"));
    }
    let key = call.args[0];
    let (ctx, key_name, value) = (call.ctx, call.argv[0], call.argv[1]);
    follow_keyspace(ctx)?;
    let db = selected_db(ctx);
    // The clock is read once, and only when something needs it (a token, an expiry to state).
    let mut clock = None;
    let mut now = || *clock.get_or_insert_with(now_ms);
    if let Some(t) = o.token {
        let now = now();
        with(|st| st.locks.check(db, key, t, now))?
            .map_err(|e| ReplyError::err(format!("OPT.SET: {e}")))?;
    }
    // The index lookup after the write misses the cache two or three times; start those loads
    // now, so that they overlap with the server's own lookup of the key.
    let key_hash = name_hash(key);
    let _ = peek(|st| prefetch(st.index.key_bucket_address_hashed(db, key_hash)));
    // SAFETY: ctx is the live command context and the argv strings live for the call; the key
    // handle is closed on every path before returning.
    let (old, written, expires, fresh_until) = unsafe {
        let api = (
            raw::RedisModule_OpenKey,
            raw::RedisModule_KeyType,
            raw::RedisModule_StringSet,
            raw::RedisModule_SetExpire,
            raw::RedisModule_GetExpire,
            raw::RedisModule_CloseKey,
        );
        let (
            Some(open),
            Some(key_type),
            Some(string_set),
            Some(set_expire),
            Some(get_expire),
            Some(close),
        ) = api
        else {
            return Err(ReplyError::err("module key API missing"));
        };
        let k = open(
            ctx,
            key_name,
            (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int,
        );
        if k.is_null() {
            return Err(ReplyError::err("OPT.SET: could not open the key"));
        }
        let kind = key_type(k);
        // The bucket has arrived meanwhile: start on the slot it names.
        let _ = peek(|st| prefetch(st.index.key_slot_address_hashed(db, key_hash)));
        let exists = kind != raw::REDISMODULE_KEYTYPE_EMPTY as c_int;
        if o.get && exists && kind != raw::REDISMODULE_KEYTYPE_STRING as c_int {
            close(k);
            return Err(ReplyError(
                "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
            ));
        }
        let old = if o.get && exists {
            Some(read_string(ctx, k, key_name))
        } else {
            None
        };
        if (o.nx && exists) || (o.xx && !exists) {
            close(k);
            (old, false, false, None)
        } else {
            // Only an existing key has a TTL to keep: Redis 8.6's RM_GetExpire reads the
            // value of an empty key handle without checking it, and crashes.
            let kept = if matches!(o.expiry, Expiry::Keep) && exists {
                get_expire(k)
            } else {
                -1
            };
            let overwritten_in_place = kind == raw::REDISMODULE_KEYTYPE_STRING as c_int
                && overwrite_in_place(k, call.args[1]);
            if !overwritten_in_place {
                string_set(k, value);
            }
            // The logical expiry; the key itself lives STALE longer.
            let ttl = match o.expiry {
                Expiry::In(ms) => Some(ms),
                // A time in the past expires the key at once, as SET does.
                Expiry::At(at) => Some((at - now()).max(1)),
                Expiry::Keep if kept >= 0 => Some(kept.max(1)),
                _ => None,
            };
            // FRESHUNTIL gives the logical expiry apart: the key keeps its TTL (KEEPTTL) or
            // gets none.
            let (key_ttl, fresh_until) = match o.fresh_until {
                Some(at) => (ttl, Some(at)),
                None => (
                    ttl.map(|ms| ms.saturating_add(o.stale_ms as i64)),
                    ttl.map(|ms| now() + ms),
                ),
            };
            // PXAT (replicas and the AOF get every expiry as PXAT) sets the key's time itself,
            // plus STALE, as SET does: also when it has passed, so that an AOF replay or a
            // replica stores such a key expired, where "1 ms from now" left it alive through
            // the end of the loading (and the index kept its entry until the server deleted
            // the key). FRESHUNTIL never comes with PXAT.
            let key_at = match o.expiry {
                Expiry::At(at) if o.fresh_until.is_none() => {
                    Some(at.saturating_add(o.stale_ms as i64))
                }
                _ => None,
            };
            let set_abs = raw::RedisModule_SetAbsExpire;
            match (key_ttl, key_at, set_abs) {
                (Some(_), Some(t), Some(set_abs)) => {
                    set_abs(k, t);
                }
                (Some(ms), _, _) => {
                    set_expire(k, ms);
                }
                // SET drops the TTL (unless KEEPTTL, which gave `key_ttl`); StringSet did
                // that by replacing the key, a write in place has to.
                (None, _, _) if overwritten_in_place && get_expire(k) >= 0 => {
                    set_expire(k, raw::REDISMODULE_NO_EXPIRE as i64);
                }
                (None, _, _) => {}
            }
            close(k);
            (old, true, key_ttl.is_some(), fresh_until)
        }
    };
    if written {
        // The new value replaces the old one's tags and freshness here, so our own "set"
        // event is ignored; writing the value ends any recomputation lock.
        with(|st| {
            st.index.set_tags_hashed(db, key, key_hash, o.tags);
            match fresh_until {
                Some(at) if o.delta_ms > 0 || o.stale_ms > 0 || o.fresh_until.is_some() => {
                    st.fresh.set(
                        db,
                        key,
                        Freshness {
                            expires_at_ms: at,
                            delta_ms: o.delta_ms,
                            stale_ms: o.stale_ms,
                        },
                    )
                }
                _ => {
                    st.fresh.remove(db, key);
                }
            }
            st.locks.release(db, key);
        })?;
        // Raised only when someone but this module's index could see them (see
        // event_audience): nobody else would, and the server's delivery to the index costs a
        // module context on Redis 7.0.
        let own = OwnEvents::begin(true);
        if event_audience::anyone_sees(raw::REDISMODULE_NOTIFY_STRING) {
            notify(ctx, raw::REDISMODULE_NOTIFY_STRING, c"set", key_name);
        }
        if expires && event_audience::anyone_sees(raw::REDISMODULE_NOTIFY_GENERIC) {
            notify(ctx, raw::REDISMODULE_NOTIFY_GENERIC, c"expire", key_name);
        }
        drop(own);
        replicate_set(call, &o, fresh_until);
    }
    // SET's replies: GET gives the old value (or nil); otherwise OK, or nil when NX/XX
    // prevented the write.
    Ok(match (o.get, old, written) {
        (true, Some(v), _) => Reply::Bulk(v),
        (true, None, _) | (false, _, false) => Reply::Null,
        (false, _, true) => Reply::Status(c"OK"),
    })
}

/// Writes `value` over the string value of the key open as `key`, in place, when the old and
/// new values have the same length. Returns whether it wrote.
///
/// Why: `RedisModule_StringSet` deletes the key and adds it again (two dictionary operations,
/// an object and a string freed and allocated) where SET overwrites in place; measured side by
/// side, that write alone put a module command at 0.75x plain SET on Redis 7.0 and 0.65x on
/// 8.6 (docs/benchmarks.md). Refreshing a cached value with one of the same size is the
/// common cache write.
///
/// What SET would leave, and where this differs:
/// - A value longer than the server embeds in the object (`server::longest_embedded_string`)
///   stays a raw string of that length, as SET makes it: the same object and memory.
/// - A shorter one, which SET embeds (`embstr`), becomes a raw string: OBJECT ENCODING says
///   `raw`. On Redis (7.x and 8.x) and Valkey 8.0 that costs no memory (`used_memory` moved
///   by 0 or -5 bytes a key for 3- to 40-byte values, against SET's), so it is done there.
///   Valkey 8.1+ embeds the key and its expiry with the value and a raw one costs 10 to 16
///   bytes more (measured on 9.1), so there short values go through StringSet
///   (`server::short_values_in_place`).
/// - A value SET would store as an integer (`int` encoding, or a shared integer object) always
///   goes through StringSet.
///
/// # Safety
/// `key` must be a handle open for writing on a string key of the live command context.
unsafe fn overwrite_in_place(key: *mut raw::RedisModuleKey, value: &[u8]) -> bool {
    let (Some(value_length), Some(dma)) =
        (raw::RedisModule_ValueLength, raw::RedisModule_StringDMA)
    else {
        return false;
    };
    let embedded = value.len() <= crate::server::longest_embedded_string();
    if value_length(key) != value.len()
        || (embedded && (!crate::server::short_values_in_place() || set_stores_as_integer(value)))
    {
        return false;
    }
    let mut len = 0usize;
    let p = dma(key, &mut len, raw::REDISMODULE_WRITE as c_int);
    if p.is_null() || len != value.len() {
        return false;
    }
    // SAFETY: the server gave `len` writable bytes at `p` for this key's value, and `value`
    // (a command argument) does not overlap them.
    ptr::copy_nonoverlapping(value.as_ptr(), p.cast::<u8>(), len);
    true
}

/// Whether SET would store `value` as an integer: canonical decimal digits in `i64` range
/// (no sign but `-`, no leading zero, at most 20 bytes), as the server's `string2ll` reads.
/// Checked byte by byte, without an allocation: it runs on OPT.SET's write path.
fn set_stores_as_integer(value: &[u8]) -> bool {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    let canonical = match digits {
        [b'0'] => digits.len() == value.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    canonical
        && value.len() <= 20
        && std::str::from_utf8(value).is_ok_and(|s| s.parse::<i64>().is_ok())
}

/// Raises a keyspace event, as the server's own commands do.
fn notify(
    ctx: *mut raw::RedisModuleCtx,
    kind: c_int,
    event: &CStr,
    key: *mut raw::RedisModuleString,
) {
    // SAFETY: ctx and key are live for the command; Redis copies what it keeps.
    unsafe {
        if let Some(f) = raw::RedisModule_NotifyKeyspaceEvent {
            f(ctx, kind, event.as_ptr(), key);
        }
    }
}

/// How a replicated OPT.SET states the expiry.
#[derive(Clone, Copy)]
enum ReplicatedExpiry {
    /// No expiry.
    None,
    /// `PXAT t`: the value is fresh until `t` and the key lives STALE longer.
    At(i64),
    /// `[KEEPTTL] FRESHUNTIL t`: the value is fresh until `t`; the key keeps its TTL
    /// (`keep_ttl`) or gets none. For freshness that no longer matches the key's TTL: a value
    /// marked stale by `OPT.INVALIDATE ... SOFT`, or one whose TTL came with the key from
    /// another node.
    FreshUntil { keep_ttl: bool, at: i64 },
}

/// The options of a replicated OPT.SET after the key and the value: `[PXAT t | [KEEPTTL]
/// FRESHUNTIL t] [DELTA d] [STALE s] [TAGS]` (the tags follow).
fn set_options_words(
    expiry: ReplicatedExpiry,
    delta_ms: u64,
    stale_ms: u64,
    tagged: bool,
) -> Vec<String> {
    let mut words = Vec::new();
    match expiry {
        ReplicatedExpiry::None => {}
        ReplicatedExpiry::At(at) => words.extend(["PXAT".to_string(), at.to_string()]),
        ReplicatedExpiry::FreshUntil { keep_ttl, at } => {
            if keep_ttl {
                words.push("KEEPTTL".to_string());
            }
            words.extend(["FRESHUNTIL".to_string(), at.to_string()]);
        }
    }
    if delta_ms > 0 {
        words.extend(["DELTA".to_string(), delta_ms.to_string()]);
    }
    if stale_ms > 0 {
        words.extend(["STALE".to_string(), (stale_ms / 1000).to_string()]);
    }
    if tagged {
        words.push("TAGS".into());
    }
    words
}

/// Replicates an OPT.SET that wrote: `OPT.SET key value [PXAT t] [DELTA d] [STALE s]
/// [TAGS tag...]`, with the logical expiry made absolute. A plain `key value TAGS ...` goes as
/// it came.
fn replicate_set(call: &Call, o: &SetOptions, fresh_until_ms: Option<i64>) {
    // SAFETY: ctx and argv are live for the command; created strings are freed after use.
    unsafe {
        if o.head_len == 2 {
            if let Some(f) = raw::RedisModule_ReplicateVerbatim {
                f(call.ctx);
            }
            return;
        }
        let (Some(rep), Some(create), Some(free)) = (
            raw::RedisModule_Replicate,
            raw::RedisModule_CreateString,
            raw::RedisModule_FreeString,
        ) else {
            return;
        };
        let expiry = match (o.fresh_until, fresh_until_ms) {
            (Some(at), _) => ReplicatedExpiry::FreshUntil {
                keep_ttl: matches!(o.expiry, Expiry::Keep),
                at,
            },
            (None, Some(at)) => ReplicatedExpiry::At(at),
            (None, None) => ReplicatedExpiry::None,
        };
        let words = set_options_words(expiry, o.delta_ms, o.stale_ms, !o.tags.is_empty());
        let owned: Vec<*mut raw::RedisModuleString> = words
            .iter()
            .map(|w| create(call.ctx, w.as_ptr().cast(), w.len()))
            .collect();
        let mut argv: Vec<*mut raw::RedisModuleString> = vec![call.argv[0], call.argv[1]];
        argv.extend_from_slice(&owned);
        if !o.tags.is_empty() {
            argv.extend_from_slice(&call.argv[o.head_len + 1..]);
        }
        rep(
            call.ctx,
            c"OPT.SET".as_ptr(),
            c"v".as_ptr(),
            argv.as_mut_ptr(),
            argv.len(),
        );
        for s in owned {
            free(call.ctx, s);
        }
    }
}

/// The value of the string key open as `key` (named `key_name`), read without changing it.
///
/// `RedisModule_StringDMA` turns an int or embstr string it reads into a raw one (more memory,
/// another OBJECT ENCODING, and on a replica a dataset that no longer matches its master's),
/// so only values too long to be embedded (`server::longest_embedded_string`: 44 bytes on
/// Redis and Valkey up to 8.1, 116 on Valkey 9), which are raw already, are read through it;
/// shorter ones through GET.
///
/// # Safety
/// `ctx` must be the live command context, `key` a handle open on a string key of `ctx`, and
/// `key_name` that key's name.
unsafe fn read_string(
    ctx: *mut raw::RedisModuleCtx,
    key: *mut raw::RedisModuleKey,
    key_name: *mut raw::RedisModuleString,
) -> Vec<u8> {
    let length = raw::RedisModule_ValueLength.map_or(0, |f| f(key));
    if length > crate::server::longest_embedded_string() {
        let mut len = 0usize;
        let p = raw::RedisModule_StringDMA.map_or(ptr::null_mut(), |f| {
            f(key, &mut len, raw::REDISMODULE_READ as c_int)
        });
        return if p.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec()
        };
    }
    let Some(free) = raw::RedisModule_FreeCallReply else {
        return Vec::new();
    };
    let reply =
        module_call!(ctx, c"GET".as_ptr(), c"s".as_ptr(), key_name).unwrap_or(ptr::null_mut());
    if reply.is_null() {
        return Vec::new();
    }
    let out = crate::reply::call_reply_bytes(reply).map_or_else(Vec::new, <[u8]>::to_vec);
    free(reply);
    out
}

/// `OPT.TAG key tag [tag ...]`
pub fn tag(call: &Call) -> Result<Reply, ReplyError> {
    let [key, tags @ ..] = call.args else {
        return Err(ReplyError::err("OPT.TAG needs a key and at least one tag"));
    };
    validate_tags(tags, &limits()).map_err(|e| ReplyError::err(format!("OPT.TAG: {e}")))?;
    if !key_exists_here(call.ctx, key) {
        return Err(ReplyError::err("OPT.TAG: no such key"));
    }
    follow_keyspace(call.ctx)?;
    let db = selected_db(call.ctx);
    let max = limits().max_tags_per_key;
    let added = with(|st| st.index.add_tags(db, key, tags, max))?
        .map_err(|e| ReplyError::err(format!("OPT.TAG: {e}")))?;
    // SAFETY: ctx is the live command context.
    unsafe {
        if let Some(f) = raw::RedisModule_ReplicateVerbatim {
            f(call.ctx);
        }
    }
    Ok(Reply::Int(added as i64))
}

/// `OPT.UNTAG key tag [tag ...]`
pub fn untag(call: &Call) -> Result<Reply, ReplyError> {
    let [key, tags @ ..] = call.args else {
        return Err(ReplyError::err(
            "OPT.UNTAG needs a key and at least one tag",
        ));
    };
    if tags.is_empty() {
        return Err(ReplyError::err(
            "OPT.UNTAG needs a key and at least one tag",
        ));
    }
    if !key_exists_here(call.ctx, key) {
        return Err(ReplyError::err("OPT.UNTAG: no such key"));
    }
    let db = selected_db(call.ctx);
    let removed = with(|st| st.index.remove_tags(db, key, tags))?;
    // SAFETY: ctx is the live command context.
    unsafe {
        if let Some(f) = raw::RedisModule_ReplicateVerbatim {
            f(call.ctx);
        }
    }
    Ok(Reply::Int(removed as i64))
}

/// `OPT.TAGS key`
pub fn tags_of(call: &Call) -> Result<Reply, ReplyError> {
    let [key] = call.args else {
        return Err(ReplyError::err("OPT.TAGS takes exactly one key"));
    };
    let db = selected_db(call.ctx);
    Ok(Reply::Bulks(with(|st| st.index.tags_of(db, key))?))
}

/// `OPT.INVALIDATE tag [tag ...] [ASYNC]`
pub fn invalidate(call: &Call) -> Result<Reply, ReplyError> {
    let mut tags: Vec<&[u8]> = call.args.to_vec();
    let (mut lazy, mut soft) = (false, false);
    while tags.len() > 1 {
        match tags.last() {
            Some(a) if a.eq_ignore_ascii_case(b"ASYNC") && !lazy => lazy = true,
            Some(a) if a.eq_ignore_ascii_case(b"SOFT") && !soft => soft = true,
            _ => break,
        }
        tags.pop();
    }
    if lazy && soft {
        return Err(ReplyError::err(
            "OPT.INVALIDATE: SOFT deletes nothing, so ASYNC does not apply",
        ));
    }
    if tags.is_empty() {
        return Err(ReplyError::err("OPT.INVALIDATE needs at least one tag"));
    }
    if tags.iter().any(|t| t.is_empty()) {
        return Err(ReplyError::err("OPT.INVALIDATE: a tag may not be empty"));
    }
    let db = selected_db(call.ctx);
    if soft {
        return soft_invalidate(call, db, &tags);
    }
    let cmd: &CStr = if lazy { c"UNLINK" } else { c"DEL" };
    let cluster = crate::server::in_cluster(call.ctx);
    // In a cluster one DEL may not span slots (RedisModule_Call refuses it as a non-local
    // access), so keys go in one call per slot. All calls run inside this command, so the
    // invalidation stays atomic on this shard. The arguments are made straight from the
    // index's names: copying 100k names first cost an allocation and a free per key.
    let mut by_slot: std::collections::BTreeMap<u16, OwnedStrings> = Default::default();
    // SAFETY: reading a function pointer filled at load.
    let create = unsafe { raw::RedisModule_CreateString }
        .ok_or_else(|| ReplyError::err("module string API missing"))?;
    // Keys of slots whose migration just completed are leaving the index a slice at a time
    // (`slot_migration`): they are no longer this node's to delete.
    let leaving = cluster && crate::slot_migration::any_leaving();
    // Outside a cluster every key goes in one batch, with no map lookup per key.
    let mut one_batch = OwnedStrings(call.ctx, Vec::new());
    with(|st| {
        if !cluster {
            one_batch.1.reserve(st.index.tag_cardinality(db, tags[0]));
        }
        st.index.for_each_key_with_any(db, &tags, |name| {
            // SAFETY: ctx is the live command context and `name` is valid for the call; the
            // string is freed when its batch drops.
            let make = || unsafe { create(call.ctx, name.as_ptr().cast(), name.len()) };
            if !cluster {
                one_batch.1.push(make());
                return;
            }
            let slot = opt_core::cluster::key_slot(name);
            if leaving && crate::slot_migration::is_leaving(slot) {
                return;
            }
            by_slot
                .entry(slot)
                .or_insert_with(|| OwnedStrings(call.ctx, Vec::new()))
                .1
                .push(make());
        })
    })?;
    if !one_batch.1.is_empty() {
        by_slot.insert(0, one_batch);
    }
    if by_slot.is_empty() {
        remember_invalidation(call.ctx, db, &tags, InvalidationKind::Delete { lazy });
        return Ok(Reply::Int(0));
    }
    // Keys of a slot this node is importing arrived by MIGRATE, and the server refuses a
    // module's DEL of them (the slot is not ours yet, and the caller sent no ASKING): they are
    // deleted through the key API instead, after an ACL check of every key of the
    // invalidation below, so that a refusal still deletes nothing.
    let importing = if cluster {
        importing_slots(call.ctx)
    } else {
        Vec::new()
    };
    let mut batches: Vec<(bool, OwnedStrings)> = by_slot
        .into_iter()
        .map(|(slot, keys)| (importing.contains(&slot), keys))
        .collect();
    // With several slots the ACL is checked up front too: a DEL refused in a later slot would
    // otherwise come after earlier slots' keys were deleted.
    if batches.len() > 1 || batches.iter().any(|(local, _)| *local) {
        let all: Vec<*mut raw::RedisModuleString> = batches
            .iter()
            .flat_map(|(_, b)| b.1.iter().copied())
            .collect();
        crate::acl::require_delete_permission(call.ctx, &all)?;
    }
    // With one call, its del events are ours: the index drops the keys in bulk afterwards,
    // by id. With several, a later call can fail after earlier ones deleted, so the del
    // events update the index key by key, as for any DEL.
    // (Not while keys leave the index: the bulk removal would take them too, unsent.)
    let single = batches.len() == 1 && !leaving;
    let own = OwnEvents::begin(single);
    let paused = PausedEvents::begin(call.ctx, single);
    // Where the subscription stays, the deletion runs where its events skip the index.
    let unheard = single && !paused.paused && following_keyspace();
    let mut deleted = 0i64;
    let mut failure = None;
    for (i, (local, batch)) in batches.iter_mut().enumerate() {
        let first = batch.1.first().copied();
        let mut delete = || {
            if *local {
                Ok(delete_local(call.ctx, lazy, &batch.1))
            } else {
                delete_batch(call, cmd, &mut batch.1)
            }
        };
        let result = if let (true, Some(first)) = (unheard, first) {
            run_unheard(call.ctx, first, delete)
        } else {
            delete()
        };
        match result {
            Ok(n) => deleted += n,
            Err(coded) => {
                failure = Some((i, coded));
                break;
            }
        }
    }
    drop(batches);
    drop(paused);
    drop(own);
    with(|st| {
        if single && failure.is_none() {
            // Every listed key existed, so a successful call deleted them all; an ACL or
            // other error deletes none and leaves the index as it was.
            st.index.remove_keys_with_any(db, &tags);
        }
    })?;
    match failure {
        None => {
            // Keys of these tags still on their way here are deleted as they come. Not after
            // a refusal, which deleted nothing.
            remember_invalidation(call.ctx, db, &tags, InvalidationKind::Delete { lazy });
            Ok(Reply::Int(deleted))
        }
        // A panic inside the deletion (logged): what it deleted before is not known.
        Some((_, coded)) if coded == ERR_LOST_DELETION => Err(ReplyError(coded)),
        Some((0, coded)) => Err(ReplyError(format!(
            "{coded} (OPT.INVALIDATE deleted nothing: every key must be allowed)"
        ))),
        Some((_, coded)) => Err(ReplyError(format!(
            "{coded} (OPT.INVALIDATE stopped after deleting {deleted} keys of other slots: \
             every key must be allowed)"
        ))),
    }
}

/// The slots this cluster node is importing (from `CLUSTER NODES`).
pub(crate) fn importing_slots(ctx: *mut raw::RedisModuleCtx) -> Vec<u16> {
    // SAFETY: ctx is a live context on the main thread (a command's, or the timer's of
    // `tag_migration`); the reply is read, then freed.
    unsafe {
        let Some(reply) = module_call!(ctx, c"CLUSTER".as_ptr(), c"c".as_ptr(), c"NODES".as_ptr())
        else {
            return Vec::new();
        };
        if reply.is_null() {
            return Vec::new();
        }
        let text = crate::reply::call_reply_bytes(reply)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        if let Some(free) = raw::RedisModule_FreeCallReply {
            free(reply);
        }
        opt_core::cluster::importing_slots(&text)
    }
}

/// Deletes `keys` through the key API (for a slot being imported, see `invalidate`), with
/// what DEL or UNLINK would do besides: the `del` event, the invalidation of tracking clients
/// (closing a key opened for writing signals it), and replication of the command. The caller
/// checked the ACL. Returns the number deleted.
fn delete_local(
    ctx: *mut raw::RedisModuleCtx,
    lazy: bool,
    keys: &[*mut raw::RedisModuleString],
) -> i64 {
    // SAFETY: ctx is a live context (the command's, or the timer's applying a transfer, with
    // the keys' db selected) and the keys are live strings of it; every key handle is closed
    // before the next is opened.
    unsafe {
        let api = (
            raw::RedisModule_OpenKey,
            raw::RedisModule_KeyType,
            raw::RedisModule_DeleteKey,
            raw::RedisModule_UnlinkKey,
            raw::RedisModule_CloseKey,
            raw::RedisModule_Replicate,
        );
        let (Some(open), Some(key_type), Some(delete), Some(unlink), Some(close), Some(rep)) = api
        else {
            return 0;
        };
        let mut deleted: Vec<*mut raw::RedisModuleString> = Vec::with_capacity(keys.len());
        for &name in keys {
            let k = open(ctx, name, raw::REDISMODULE_WRITE as c_int);
            if k.is_null() {
                continue;
            }
            if key_type(k) != raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
                let done = if lazy { unlink(k) } else { delete(k) };
                if done == raw::REDISMODULE_OK as c_int {
                    deleted.push(name);
                }
            }
            close(k);
        }
        for &name in &deleted {
            notify(ctx, raw::REDISMODULE_NOTIFY_GENERIC, c"del", name);
        }
        if !deleted.is_empty() {
            let cmd: &CStr = if lazy { c"UNLINK" } else { c"DEL" };
            rep(
                ctx,
                cmd.as_ptr(),
                c"v".as_ptr(),
                deleted.as_mut_ptr(),
                deleted.len(),
            );
        }
        deleted.len() as i64
    }
}

/// Deletes `keys` with one DEL or UNLINK: "!" replicates it, "C" runs it as the calling user
/// (if the ACL forbids any key, it deletes none), "E" returns errors as replies. Returns the
/// number deleted, or the error with its code (ACL refusals read NOPERM).
fn delete_batch(
    call: &Call,
    cmd: &CStr,
    keys: &mut [*mut raw::RedisModuleString],
) -> Result<i64, String> {
    let reply = call_with_strings(call.ctx, cmd, c"!CE", keys).map_err(|e| e.0)?;
    // SAFETY: reply is a live call reply, read then freed.
    unsafe {
        let kind = raw::RedisModule_CallReplyType.map_or(-1, |f| f(reply));
        let result = if kind == raw::REDISMODULE_REPLY_INTEGER as c_int {
            Ok(raw::RedisModule_CallReplyInteger.map_or(0, |f| f(reply)))
        } else {
            let text = crate::reply::call_reply_bytes(reply).map_or_else(
                || "deletion refused".to_string(),
                |b| String::from_utf8_lossy(b).into_owned(),
            );
            let text = text.trim();
            let (code, message) = match text.split_once(' ') {
                Some((c, m)) if !c.is_empty() && c.chars().all(|x| x.is_ascii_uppercase()) => {
                    (c, m)
                }
                _ => ("ERR", text),
            };
            let lower = message.to_ascii_lowercase();
            let code = if lower.contains("acl") || lower.contains("permission") {
                "NOPERM"
            } else {
                code
            };
            Err(format!("{code} {message}"))
        };
        if let Some(free) = raw::RedisModule_FreeCallReply {
            free(reply);
        }
        result
    }
}

/// `OPT.INVALIDATE tag ... SOFT`: marks the tagged keys stale instead of deleting them, so
/// OPT.FETCH tells one caller to recompute and serves the others the stale copy until then.
/// Replicated as it came, so replicas mark the same keys.
fn soft_invalidate(call: &Call, db: usize, tags: &[&[u8]]) -> Result<Reply, ReplyError> {
    let now = now_ms();
    let marked = with(|st| {
        let keys = st.index.keys_with_any(db, tags);
        for k in &keys {
            let f = st.fresh.get(db, k).unwrap_or(Freshness {
                expires_at_ms: now,
                delta_ms: 0,
                stale_ms: 0,
            });
            st.fresh.set(
                db,
                k,
                Freshness {
                    expires_at_ms: f.expires_at_ms.min(now),
                    ..f
                },
            );
        }
        keys.len()
    })?;
    // Keys of these tags still on their way here are marked as they come.
    remember_invalidation(
        call.ctx,
        db,
        tags,
        InvalidationKind::MarkStale { at_ms: now },
    );
    // SAFETY: ctx is the live command context.
    unsafe {
        if let Some(f) = raw::RedisModule_ReplicateVerbatim {
            f(call.ctx);
        }
    }
    Ok(Reply::Int(marked as i64))
}

/// Whether this server is a replica now.
fn is_replica(ctx: *mut raw::RedisModuleCtx) -> bool {
    // SAFETY: ctx is a live context.
    unsafe {
        raw::RedisModule_GetContextFlags
            .is_some_and(|f| f(ctx) as u32 & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0)
    }
}

/// `OPT.FETCH key [BETA b] [LOCK ms]`: the value, its remaining time to live, and what this
/// caller should do (`hit`, `recompute`, `stale`, `wait`), with a lock token when it holds
/// the recomputation lock. Replies a map: value, ttl_ms (negative once stale), action, token,
/// lock.
pub fn fetch(call: &Call) -> Result<Reply, ReplyError> {
    let [key, rest @ ..] = call.args else {
        return Err(ReplyError::err("OPT.FETCH needs a key"));
    };
    let Some(&key_name) = call.argv.first() else {
        return Err(ReplyError::err("OPT.FETCH needs a key"));
    };
    let mut args = Args::new("OPT.FETCH", rest);
    let (mut beta, mut lock_ms) = (1.0f64, None);
    while let Some(word) = args.next_keyword() {
        match word.as_str() {
            "BETA" => {
                let raw = args.value("BETA").map_err(ReplyError::err)?;
                beta = std::str::from_utf8(raw)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .filter(|b| b.is_finite() && *b > 0.0 && *b <= 100.0)
                    .ok_or_else(|| {
                        ReplyError::err(format!(
                            "OPT.FETCH BETA must be a number above 0 and at most 100, got '{}'",
                            String::from_utf8_lossy(raw)
                        ))
                    })?;
            }
            "LOCK" => {
                lock_ms = Some(
                    args.int_value("LOCK", 1, 3_600_000)
                        .map_err(ReplyError::err)? as u64,
                )
            }
            _ => return Err(ReplyError::err(args.unknown(&word))),
        }
    }
    let ctx = call.ctx;
    let db = selected_db(ctx);
    let now = now_ms();
    // SAFETY: ctx and key_name are live for the command; the key is closed before returning
    // and its value copied out first.
    let (value, physical_ttl) = unsafe {
        let (Some(open), Some(key_type), Some(get_expire), Some(close)) = (
            raw::RedisModule_OpenKey,
            raw::RedisModule_KeyType,
            raw::RedisModule_GetExpire,
            raw::RedisModule_CloseKey,
        ) else {
            return Err(ReplyError::err("module key API missing"));
        };
        let k = open(ctx, key_name, raw::REDISMODULE_READ as c_int);
        if k.is_null() {
            (None, -1)
        } else {
            let kind = key_type(k);
            let out = if kind == raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
                (None, -1)
            } else if kind != raw::REDISMODULE_KEYTYPE_STRING as c_int {
                close(k);
                return Err(ReplyError(
                    "WRONGTYPE OPT.FETCH reads string values; this key holds another type".into(),
                ));
            } else {
                (Some(read_string(ctx, k, key_name)), get_expire(k))
            };
            close(k);
            out
        }
    };
    let u = ((crate::state::random_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let token = crate::state::random_u64() | 1;
    let request = FetchRequest {
        beta,
        lock_ms,
        can_lock: !is_replica(ctx),
        u: u.min(1.0),
        token,
        max_locks: configs::int(idx::MAX_LOCKS).max(1) as usize,
    };
    let (action, outcome, fresh) = with(|st| {
        let fresh = value.as_ref().and_then(|_| st.fresh.get(db, key));
        let state = if value.is_some() {
            KeyState::Present(fresh)
        } else {
            KeyState::Missing
        };
        let (a, o) = decide(state, now, &request, &mut st.locks, db, key);
        (a, o, fresh)
    })?;
    let ttl = match (&value, fresh) {
        (None, _) => Field::Null,
        (Some(_), Some(f)) => Field::Int(f.expires_at_ms - now),
        (Some(_), None) if physical_ttl >= 0 => Field::Int(physical_ttl),
        (Some(_), None) => Field::Null,
    };
    Ok(Reply::Fields(vec![
        ("value", value.map_or(Field::Null, Field::Bulk)),
        ("ttl_ms", ttl),
        ("action", Field::Text(action.as_str())),
        (
            "token",
            if outcome == LockOutcome::Taken {
                Field::Bulk(format!("{token:x}").into_bytes())
            } else {
                Field::Null
            },
        ),
        ("lock", Field::Text(outcome.as_str())),
    ]))
}

/// Most keys in one OPT.TAGKEYS page: 10,000 names take about 0.7 ms to reply (100,000 took
/// 8 ms in one go, when this was the bound); a bigger tag takes more pages.
const TAG_KEYS_MAX_COUNT: i64 = 10_000;

/// `OPT.TAGKEYS tag [CURSOR c] [COUNT n]`: replies `[next cursor, [keys...]]`.
pub fn tag_keys(call: &Call) -> Result<Reply, ReplyError> {
    let [tag, rest @ ..] = call.args else {
        return Err(ReplyError::err("OPT.TAGKEYS needs a tag"));
    };
    let mut args = Args::new("OPT.TAGKEYS", rest);
    let (mut cursor, mut count) = (0u64, 100usize);
    while let Some(word) = args.next_keyword() {
        match word.as_str() {
            "CURSOR" => {
                cursor = args
                    .int_value("CURSOR", 0, i64::MAX)
                    .map_err(ReplyError::err)? as u64
            }
            "COUNT" => {
                count = args
                    .int_value("COUNT", 1, TAG_KEYS_MAX_COUNT)
                    .map_err(ReplyError::err)? as usize
            }
            _ => return Err(ReplyError::err(args.unknown(&word))),
        }
    }
    let db = selected_db(call.ctx);
    let (next, keys) = with(|st| st.index.tag_keys_page(db, tag, cursor, count))?;
    Ok(Reply::Page(next, keys))
}

/// Runs `f` on the tag index (after expired and evicted keys have left it), for OPT.TAGINFO.
pub(crate) fn with_index<R>(f: impl FnOnce(&TagIndex) -> R) -> Result<R, ReplyError> {
    with(|st| f(&st.index))
}

/// Recomputation locks held now (`INFO opt`: `stampede_locks`; timed-out ones count until the
/// next purge).
pub fn locks_held() -> u64 {
    with(|st| st.locks.len() as u64).unwrap_or(0)
}

/// `INFO opt` fields: (tagged keys, tags, pairs, index bytes).
pub fn info_fields() -> Option<(u64, u64, u64, u64)> {
    state(|st| {
        let s = st.index.stats();
        (s.keys, s.tags, s.pairs, st.index.memory_bytes() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_set_would_store_as_integers() {
        for v in [
            "0",
            "7",
            "-7",
            "123",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert!(set_stores_as_integer(v.as_bytes()), "{v}");
        }
        for v in [
            "",
            "-",
            "-0",
            "007",
            "+5",
            " 5",
            "5 ",
            "1.5",
            "abc",
            "9223372036854775808",
            "0x10",
            "1e3",
        ] {
            assert!(!set_stores_as_integer(v.as_bytes()), "{v}");
        }
    }
}
