//! Tags that follow keys moved by MIGRATE between cluster nodes.
//!
//! Resharding (`redis-cli --cluster reshard`, `rebalance`) moves keys with MIGRATE, which
//! sends each value to the target as DUMP/RESTORE: the module's tag index stays behind, and
//! the key arrived untagged, invisible to the next OPT.INVALIDATE of its tags. So, in cluster
//! mode and once the index has entries, a command filter watches for MIGRATE. Before MIGRATE
//! runs, it reads the tags and freshness (OPT.SET DELTA/STALE) of the keys being moved and,
//! from a 0 ms timer once MIGRATE has returned, sends those of the keys that left to the
//! target node over the cluster bus (`opt_core::tag_transfer`). The cluster bus is written by
//! the event loop, and MIGRATE waits for the target's replies before it returns, so the
//! message reaches the target after the keys: the target applies it to the keys it then
//! holds, and replicates that to its replicas and AOF (OPT.TAG, or OPT.SET for a value with
//! freshness). The source drops its entries through the usual `del` events once MIGRATE
//! deletes the keys (not with COPY).
//!
//! The target queues what it receives and applies it from a timer, a millisecond of work at a
//! time (`slot_migration` sends hundreds of messages at once).
//!
//! A MIGRATE queued in MULTI is seen when it is queued. Where the filter can tell its client
//! (Redis 7.2+, Valkey), it keeps the MIGRATE's arguments until that client's EXEC, and
//! reads and sends the tags then, so they reach the target after the keys as above (DISCARD,
//! RESET or a disconnect drop them). On Redis 7.0 the filter cannot tell whether a MIGRATE
//! runs now or was queued: the timer sends the keys that left, as above, and remembers the
//! keys that stayed ([`Awaiting`], at most [`AWAIT_FOR`] and [`AWAIT_MAX_BYTES`]). When an
//! EXEC then deletes one of them (MIGRATE's `del` event, seen by the index), its tags, read
//! just before the index drops them, go once the EXEC has run. So a queued MIGRATE's tags go
//! after its keys there too, and a key the target refused (BUSYKEY without REPLACE) sends
//! none, unless a MULTI of its own deletes it within [`AWAIT_FOR`] (which looks the same).
//!
//! A transfer can still name a key the target does not have (it expired or was deleted
//! there meanwhile, or an older source sent the tags before the keys): the target holds such
//! entries of slots it is importing (at most [`HOLD_FOR`], [`HELD_MAX_BYTES`]) and applies
//! one when RESTORE brings its key (its `restore` event). Keys of other slots are not held: a
//! slot migration's transfers go to every node on Valkey, and the nodes that do not hold a
//! key must not keep its tags. The message format and type stay those of earlier versions,
//! so nodes of both versions exchange tags during a rolling upgrade.
//!
//! Limits: between the end of MIGRATE and the message's application (the cluster bus's
//! latency and the next timer tick, a few milliseconds) the key sits untagged on the target;
//! an invalidation of its tags meanwhile is caught when the message comes
//! (`tags::apply_recent_invalidations`). Tags are read before the MIGRATE (or its EXEC)
//! runs, and sent once it has, for the keys that left the source (all of them with COPY,
//! which cannot tell). The keys are read from the
//! caller's database (Valkey 9's `cluster-databases`) and the tags applied in MIGRATE's
//! destination database; a MIGRATE queued in MULTI uses the database selected when EXEC
//! starts, so a SELECT queued before it in the same MULTI is not seen. The filter costs every
//! command on such a node the server's filter dispatch and a length check: about 65
//! instructions on 7.0 (callgrind, GET: 14 of them in the filter, the rest the dispatch).

use std::collections::{HashMap, VecDeque};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opt_core::cluster::key_slot;
use opt_core::expiring::ExpiringMap;
use opt_core::tag_transfer::{
    decode, encode, migrate_copies, migrate_destination_db, migrated_keys, KeyTags,
};
use redis_module::raw;

use crate::client_db::{client_state, filter_client};
use crate::reply::filter_arg;
use crate::state::MainThreadCell;
use crate::{guard, log, server, tags};

/// The cluster message type of a tag transfer (types are per module).
const MESSAGE_TYPE: u8 = 1;

/// Whether the MIGRATE filter is registered.
static WATCHING: AtomicBool = AtomicBool::new(false);
/// A context for the cluster API inside the filter, which gets none of its own.
static DETACHED: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(ptr::null_mut());
/// Keys whose tags were sent to a migration target, and keys tagged from a transfer.
pub static KEYS_SENT: AtomicU64 = AtomicU64::new(0);
/// See [`KEYS_SENT`].
pub static KEYS_RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Tag transfer messages this node received (`INFO opt`), whatever they held.
pub static MESSAGES_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// In cluster mode, registers the receiver of tag transfers. Called at load.
pub fn init(ctx: *mut raw::RedisModuleCtx) {
    if !server::in_cluster(ctx) {
        return;
    }
    // SAFETY: OnLoad context; the callback is this module's extern "C" function and lives as
    // long as the module.
    unsafe {
        match (
            raw::RedisModule_RegisterClusterMessageReceiver,
            raw::RedisModule_GetDetachedThreadSafeContext,
        ) {
            (Some(register), Some(detach)) => {
                register(ctx, MESSAGE_TYPE, Some(on_message));
                DETACHED.store(detach(ctx), Ordering::Relaxed);
            }
            _ => log::warning(
                "no cluster message API: keys moved by MIGRATE arrive without their tags",
            ),
        }
    }
}

/// Starts watching for MIGRATE, once, in cluster mode. Called when the tag index gets its
/// first entry.
pub fn watch_migrations(ctx: *mut raw::RedisModuleCtx) {
    if DETACHED.load(Ordering::Relaxed).is_null() || WATCHING.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: ctx is a live context of this module on the main thread; the filter is this
    // module's extern "C" function and lives as long as the module.
    if unsafe { server::register_command_filter(ctx, filter) }.is_null() {
        log::warning("could not watch MIGRATE: keys it moves arrive without their tags");
        return;
    }
    log::notice("tag index: tags of keys moved by MIGRATE now follow them to their new node");
}

/// # Safety
/// Called by Redis for every command, with a filter context valid during the call.
unsafe extern "C" fn filter(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    let Some(count) = raw::RedisModule_CommandFilterArgsCount else {
        return;
    };
    let argc = count(fctx).max(0) as usize;
    // MIGRATE host port key|"" destination-db timeout [options]: at least 6 arguments.
    // EXEC, DISCARD and RESET (one argument) matter only while a MULTI holds a MIGRATE.
    if argc < 6
        && !(argc == 1
            && (QUEUED_CLIENTS.load(Ordering::Relaxed) > 0
                || AWAITING_KEYS.load(Ordering::Relaxed) > 0))
    {
        return;
    }
    filter_candidate(fctx, argc);
}

/// The part of [`filter`] for commands that may be MIGRATE or end a MULTI, kept out of line
/// so that every other command pays only the length check above.
///
/// # Safety
/// `fctx` must be the live context of a filter callback, with `argc` arguments.
#[inline(never)]
unsafe fn filter_candidate(fctx: *mut raw::RedisModuleCommandFilterCtx, argc: usize) {
    let name = filter_arg(fctx, 0);
    if argc == 1 {
        let exec = name.eq_ignore_ascii_case(b"exec");
        let ends_multi =
            exec || name.eq_ignore_ascii_case(b"discard") || name.eq_ignore_ascii_case(b"reset");
        if ends_multi {
            guard::catch_and_log("MIGRATE watch", || {
                if exec {
                    exec_starts();
                }
                // SAFETY: fctx is valid for the duration of this callback.
                let Some(client) = (unsafe { filter_client(fctx) }) else {
                    return;
                };
                let migrations = take_queued(client).unwrap_or_default();
                // EXEC runs them, with the keys of the database selected then; DISCARD and
                // RESET drop them.
                if let (true, Some((_, db))) = (exec, client_state(client)) {
                    for args in &migrations {
                        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                        send_tags_after_move(&args, db, false);
                    }
                }
            });
        }
        return;
    }
    if name.len() != 7 || !name.eq_ignore_ascii_case(b"migrate") {
        return;
    }
    guard::catch_and_log("MIGRATE watch", || {
        // SAFETY: fctx is valid for the duration of this callback and argc is its count.
        let args: Vec<&[u8]> = (0..argc).map(|i| unsafe { filter_arg(fctx, i) }).collect();
        // SAFETY: as above.
        let client = unsafe { filter_client(fctx) };
        match client.and_then(|id| Some((id, client_state(id)?))) {
            Some((id, (true, db))) => {
                if !queue(id, &args) {
                    send_tags_after_move(&args, db, true);
                }
            }
            Some((_, (false, db))) => send_tags_after_move(&args, db, false),
            // Redis 7.0: the MIGRATE may be queued, and run at a later EXEC; the database
            // is 0, the only one in cluster mode there.
            None => send_tags_after_move(&args, 0, true),
        }
    });
}

/// MIGRATEs queued in a MULTI, by client id: their tags are read and sent when the client's
/// EXEC runs, so that they reach the target after the keys, as for a MIGRATE outside MULTI
/// (a `MIGRATE ... REPLACE` onto a key the target has then keeps them too). This needs the
/// filter to see its client: Redis 7.2+ and Valkey. On Redis 7.0 a MIGRATE whose keys stay
/// once it has returned waits for an EXEC instead (see [`Awaiting`]).
struct QueuedMigrations {
    /// Each queued MIGRATE's arguments, by client id.
    by_client: HashMap<u64, Vec<Vec<Vec<u8>>>>,
    /// Bytes of arguments held, against [`QUEUED_MAX_BYTES`].
    bytes: usize,
}

static QUEUED: MainThreadCell<Option<QueuedMigrations>> = MainThreadCell::new(None);
/// Clients with a MIGRATE queued (read by the filter on every command, so kept apart).
static QUEUED_CLIENTS: AtomicUsize = AtomicUsize::new(0);
/// Most bytes of queued MIGRATE arguments; past it a queued MIGRATE waits for any EXEC, as
/// on Redis 7.0 (see [`Awaiting`]).
pub const QUEUED_MAX_BYTES: usize = 16 << 20;

/// Clients with a MIGRATE queued in MULTI, whose tags go at EXEC (`INFO opt`).
pub fn clients_with_queued_migrate() -> u64 {
    QUEUED_CLIENTS.load(Ordering::Relaxed) as u64
}

/// Queues MIGRATE `args` of client `id` until its EXEC; false when they do not fit.
fn queue(id: u64, args: &[&[u8]]) -> bool {
    let size = args_bytes(args);
    QUEUED
        .with(|q| {
            let q = q.get_or_insert_with(|| QueuedMigrations {
                by_client: HashMap::new(),
                bytes: 0,
            });
            if q.bytes + size > QUEUED_MAX_BYTES {
                return false;
            }
            q.bytes += size;
            q.by_client
                .entry(id)
                .or_default()
                .push(args.iter().map(|a| a.to_vec()).collect());
            QUEUED_CLIENTS.store(q.by_client.len(), Ordering::Relaxed);
            true
        })
        .unwrap_or(false)
}

/// The bytes a queued MIGRATE weighs against [`QUEUED_MAX_BYTES`].
fn args_bytes<A: AsRef<[u8]>>(args: &[A]) -> usize {
    args.iter().map(|a| a.as_ref().len() + 24).sum::<usize>() + 64
}

/// Takes the MIGRATEs client `id` queued (its MULTI ends: EXEC, DISCARD, RESET, or it left).
fn take_queued(id: u64) -> Option<Vec<Vec<Vec<u8>>>> {
    if QUEUED_CLIENTS.load(Ordering::Relaxed) == 0 {
        return None;
    }
    QUEUED
        .with(|q| {
            let q = q.as_mut()?;
            let taken = q.by_client.remove(&id)?;
            q.bytes -= taken.iter().map(|args| args_bytes(args)).sum::<usize>();
            QUEUED_CLIENTS.store(q.by_client.len(), Ordering::Relaxed);
            Some(taken)
        })
        .flatten()
}

/// Server events: a client that leaves inside MULTI drops the MIGRATEs it queued.
///
/// # Safety
/// `data` must be what the server passed with the event.
pub unsafe fn on_server_event(id: u64, subevent: u64, data: *mut c_void) {
    if id != raw::REDISMODULE_EVENT_CLIENT_CHANGE
        || subevent != raw::REDISMODULE_SUBEVENT_CLIENT_CHANGE_DISCONNECTED
        || data.is_null()
        || QUEUED_CLIENTS.load(Ordering::Relaxed) == 0
    {
        return;
    }
    // SAFETY: a client-change event carries a RedisModuleClientInfo (the caller checked
    // for null).
    let client = unsafe { (*data.cast::<raw::RedisModuleClientInfo>()).id };
    take_queued(client);
}

/// The tags of the keys MIGRATE `args` moves from `db`, the database it restores them into,
/// and the node at its host and port (None, every node, when none matches, for instance when
/// MIGRATE names the target by another address); None when there is nothing to send.
fn read_transfer(args: &[&[u8]], db: usize) -> Option<Transfer> {
    let to_db = migrate_destination_db(args)?;
    let entries = tags::tags_for_transfer(db, &migrated_keys(args));
    if entries.is_empty() {
        return None;
    }
    let target = find_node(DETACHED.load(Ordering::Relaxed), args[1], args[2]);
    Some(Transfer {
        db,
        to_db,
        entries,
        target,
        may_be_queued: false,
    })
}

/// What a MIGRATE carries to its target besides the values.
struct Transfer {
    /// The database the keys leave.
    db: usize,
    /// The database the target restores them into.
    to_db: u32,
    entries: Vec<KeyTags>,
    /// The target's NUL-terminated node id; None sends to every node.
    target: Option<Vec<u8>>,
    /// Whether the MIGRATE may have been queued in MULTI rather than run (Redis 7.0): the
    /// keys that stay then wait for an EXEC ([`Awaiting`]).
    may_be_queued: bool,
}

impl Transfer {
    fn send(&self) {
        if !send_transfer(self.to_db, &self.entries, self.target.as_deref()) {
            log::warning("could not send the tags of migrated keys to their new node");
        }
    }
}

/// Sends, now, the tags of the keys MIGRATE `args` moves from `db`.
fn send_tags(args: &[&[u8]], db: usize) {
    if let Some(transfer) = read_transfer(args, db) {
        transfer.send();
    }
}

/// Reads the tags of the keys MIGRATE `args` moves from `db`, which is about to run, and
/// sends those of the keys it moved once it has returned: a key still on the source then
/// (the target refused it, BUSYKEY without REPLACE, or the connection failed) keeps its tags
/// here and sends none, so a key of that name the target already has keeps its own. With
/// COPY every key stays, and the tags are sent at once, as [`send_tags`] does.
///
/// `may_be_queued`: the MIGRATE may have been queued in MULTI rather than run (Redis 7.0,
/// whose filter cannot tell), so the keys that stay wait for an EXEC ([`Awaiting`]).
fn send_tags_after_move(args: &[&[u8]], db: usize, may_be_queued: bool) {
    if migrate_copies(args) {
        send_tags(args, db);
        return;
    }
    let Some(mut transfer) = read_transfer(args, db) else {
        return;
    };
    transfer.may_be_queued = may_be_queued;
    send_once_run(transfer);
}

/// Sends `transfer`, whose MIGRATE is about to run, from a 0 ms timer: once it has run.
fn send_once_run(transfer: Transfer) {
    let arm = AFTER_MOVE
        .with(|pending| {
            pending.push(transfer);
            pending.len() == 1
        })
        .unwrap_or(false);
    if arm {
        arm_send_moved();
    }
}

/// Sets the 0 ms timer that sends [`AFTER_MOVE`].
fn arm_send_moved() {
    let ctx = DETACHED.load(Ordering::Relaxed);
    if !ctx.is_null() {
        // SAFETY: ctx is this module's detached context, on the main thread (filters run
        // there); the callback is this module's extern "C" function. A 0 ms timer fires
        // once the command that is running (and the rest of this event-loop pass) is done.
        unsafe {
            if let Some(create) = raw::RedisModule_CreateTimer {
                create(ctx, 0, Some(send_moved), ptr::null_mut());
            }
        }
    }
}

/// Transfers read before their MIGRATE ran, to send once it has.
static AFTER_MOVE: MainThreadCell<Vec<Transfer>> = MainThreadCell::new(Vec::new());

/// Keys of MIGRATEs that were still on this node once the MIGRATE had returned, where the
/// filter cannot tell whether it ran (and the target refused them, or the connection failed)
/// or was queued in MULTI, to run at its client's EXEC: Redis 7.0, or past
/// [`QUEUED_MAX_BYTES`]. When an EXEC deletes one (MIGRATE's `del` event, which the index
/// sees: [`on_key_deleted`]), its tags go to the MIGRATE's target once the EXEC has run. A
/// key waits at most [`AWAIT_FOR`] after its MIGRATE was seen.
type Awaiting = ExpiringMap<AwaitedKey>;

/// Where an awaited key's tags go.
struct AwaitedKey {
    to_db: u32,
    target: Option<Vec<u8>>,
}

/// How long a key of a MIGRATE that may be queued waits for the EXEC that moves it.
pub const AWAIT_FOR: Duration = Duration::from_secs(30);
/// Most bytes of awaited keys (names and targets); past it a key is not remembered, with a
/// warning. A `del` event costs one lookup while any key waits, whatever their number.
const AWAIT_MAX_BYTES: usize = 16 << 20;

static AWAITING: MainThreadCell<Option<Awaiting>> = MainThreadCell::new(None);
/// How many keys wait (read by the filter and on every `del` event, so kept apart).
static AWAITING_KEYS: AtomicUsize = AtomicUsize::new(0);
/// Whether an EXEC may be running: set when the filter sees one while keys wait, cleared by
/// the timer that fires once it has run. A `del` outside it (a client's DEL of a refused
/// key) sends nothing.
static IN_EXEC: AtomicBool = AtomicBool::new(false);

/// The bytes an awaited key weighs against [`AWAIT_MAX_BYTES`].
fn awaited_bytes(key: &[u8], target: Option<&[u8]>) -> usize {
    2 * key.len() + target.map_or(0, <[u8]>::len) + 96
}

/// Drops the awaited keys past [`AWAIT_FOR`].
fn forget_old_awaited(a: &mut Awaiting, now: Instant) {
    a.expire(now, AWAIT_FOR);
    AWAITING_KEYS.store(a.len(), Ordering::Relaxed);
}

/// Remembers the keys of `transfer` (which stayed once its MIGRATE returned) until an EXEC
/// deletes them or [`AWAIT_FOR`] has passed.
fn await_exec(transfer: &Transfer, stayed: Vec<KeyTags>) {
    let now = Instant::now();
    let dropped = AWAITING
        .with(|a| {
            let a = a.get_or_insert_with(Awaiting::new);
            forget_old_awaited(a, now);
            let mut dropped = 0usize;
            for e in stayed {
                let size = awaited_bytes(&e.key, transfer.target.as_deref());
                if a.bytes() + size > AWAIT_MAX_BYTES {
                    dropped += 1;
                    continue;
                }
                let key = AwaitedKey {
                    to_db: transfer.to_db,
                    target: transfer.target.clone(),
                };
                a.insert(transfer.db, &e.key, key, now, size);
            }
            AWAITING_KEYS.store(a.len(), Ordering::Relaxed);
            dropped
        })
        .unwrap_or(0);
    if dropped > 0 {
        log::warning(&format!(
            "{dropped} keys of a MIGRATE that may run at a later EXEC are not watched (over \
             {AWAIT_MAX_BYTES} bytes of such keys): if it runs, they arrive untagged"
        ));
    }
}

/// The filter sees an EXEC: while keys wait for one, `del` events count until it has run.
fn exec_starts() {
    if AWAITING_KEYS.load(Ordering::Relaxed) == 0 {
        return;
    }
    // Set means the timer that clears it is already armed.
    if !IN_EXEC.swap(true, Ordering::Relaxed) {
        arm_send_moved();
    }
}

/// Whether keys wait for an EXEC, so that the index reports their deletion (cheap: read on
/// every `del` event).
pub fn keys_awaiting_exec() -> bool {
    AWAITING_KEYS.load(Ordering::Relaxed) > 0
}

/// Called by the index for a `del` event of `key` in `db`, with the tags and freshness it
/// had, while keys wait for an EXEC: when an EXEC is running and the key is one of them, its
/// MIGRATE ran, and the tags go to its target once the EXEC is done.
pub fn on_key_deleted(
    db: usize,
    key: &[u8],
    tags: Vec<Vec<u8>>,
    freshness: Option<opt_core::freshness::Freshness>,
) {
    if !IN_EXEC.load(Ordering::Relaxed) || (tags.is_empty() && freshness.is_none()) {
        return;
    }
    let now = Instant::now();
    let Some(Some(awaited)) = AWAITING.with(|a| {
        let a = a.as_mut()?;
        let (k, since) = a.remove(db, key)?;
        AWAITING_KEYS.store(a.len(), Ordering::Relaxed);
        (now.saturating_duration_since(since) < AWAIT_FOR).then_some(k)
    }) else {
        return;
    };
    let entry = KeyTags {
        key: key.to_vec(),
        tags,
        freshness,
    };
    let _ = AFTER_MOVE.with(|pending| {
        // One message for the keys an EXEC moves to one node.
        let same = pending.iter_mut().find(|t| {
            !t.may_be_queued && t.db == db && t.to_db == awaited.to_db && t.target == awaited.target
        });
        match same {
            Some(t) => t.entries.push(entry),
            None => pending.push(Transfer {
                db,
                to_db: awaited.to_db,
                entries: vec![entry],
                target: awaited.target,
                may_be_queued: false,
            }),
        }
    });
}

/// Keys that wait for an EXEC (see [`Awaiting`]; `INFO opt`). Those past [`AWAIT_FOR`] are
/// dropped here too, so that the count falls without an EXEC.
pub fn keys_awaiting_exec_count() -> u64 {
    if AWAITING_KEYS.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    AWAITING
        .with(|a| {
            let a = a.as_mut()?;
            forget_old_awaited(a, Instant::now());
            Some(a.len() as u64)
        })
        .flatten()
        .unwrap_or(0)
}

/// # Safety
/// Called by the server on the main thread when the timer fires, with a live context.
unsafe extern "C" fn send_moved(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch_and_log("MIGRATE watch", || {
        // An EXEC that started before this tick has run.
        IN_EXEC.store(false, Ordering::Relaxed);
        let pending = AFTER_MOVE.with(std::mem::take).unwrap_or_default();
        for mut transfer in pending {
            let db = transfer.db;
            let (stayed, moved): (Vec<KeyTags>, Vec<KeyTags>) =
                std::mem::take(&mut transfer.entries)
                    .into_iter()
                    .partition(|e| tags::key_exists(ctx, db, &e.key));
            transfer.entries = moved;
            if !transfer.entries.is_empty() {
                transfer.send();
            }
            if transfer.may_be_queued && !stayed.is_empty() {
                await_exec(&transfer, stayed);
            }
        }
    });
}

/// Most bytes of entries in one cluster message: a bigger transfer goes in several, so that
/// no node reads one huge message at once.
const MESSAGE_BYTES: usize = 1 << 20;
/// Most keys in one cluster message: the target applies a message in one go (a few
/// microseconds a key, OPT.TAG replicated for each), so a message stays under a millisecond.
pub const KEYS_PER_MESSAGE: usize = 256;

/// Sends `entries` (keys of `db`) to the node whose NUL-terminated id is `target`, or to
/// every node when there is none, at most [`KEYS_PER_MESSAGE`] keys a message; each node
/// applies them to the keys it holds. Returns whether every message was sent (the caller
/// logs a failure, once).
pub fn send_transfer(db: u32, entries: &[KeyTags], target: Option<&[u8]>) -> bool {
    let ctx = DETACHED.load(Ordering::Relaxed);
    if ctx.is_null() {
        return false;
    }
    let mut all_sent = true;
    let mut start = 0;
    while start < entries.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < entries.len()
            && (end == start || (bytes < MESSAGE_BYTES && end - start < KEYS_PER_MESSAGE))
        {
            let e = &entries[end];
            bytes += e.key.len() + e.tags.iter().map(|t| t.len() + 4).sum::<usize>() + 32;
            end += 1;
        }
        let message = encode(db, &entries[start..end]);
        // SAFETY: ctx is this module's detached context; the id is NUL-terminated and the
        // message is copied by the call.
        let sent = u32::try_from(message.len()).is_ok_and(|len| unsafe {
            raw::RedisModule_SendClusterMessage.is_some_and(|send| {
                let id = target.map_or(ptr::null(), |t| t.as_ptr().cast());
                send(ctx, id, MESSAGE_TYPE, message.as_ptr().cast(), len)
                    == raw::REDISMODULE_OK as c_int
            })
        });
        if sent {
            KEYS_SENT.fetch_add((end - start) as u64, Ordering::Relaxed);
            LAST_SENT_MS.store(crate::state::now_ms().max(1), Ordering::Relaxed);
        } else {
            all_sent = false;
        }
        start = end;
    }
    all_sent
}

/// The id (NUL-terminated) of the node listening on `host`:`port`, if exactly one does.
fn find_node(ctx: *mut raw::RedisModuleCtx, host: &[u8], port: &[u8]) -> Option<Vec<u8>> {
    let port: c_int = std::str::from_utf8(port).ok()?.parse().ok()?;
    let id_len = raw::REDISMODULE_NODE_ID_LEN as usize;
    // SAFETY: the list and each id come from the API, are read within their bounds (ids are
    // REDISMODULE_NODE_ID_LEN bytes) and the list is freed once; ip is the buffer of
    // NET_IP_STR_LEN (46) bytes the API writes into, NUL-terminated.
    unsafe {
        let (Some(list), Some(info), Some(free)) = (
            raw::RedisModule_GetClusterNodesList,
            raw::RedisModule_GetClusterNodeInfo,
            raw::RedisModule_FreeClusterNodesList,
        ) else {
            return None;
        };
        let mut n = 0usize;
        let ids = list(ctx, &mut n);
        if ids.is_null() {
            return None;
        }
        let mut found = Vec::new();
        for i in 0..n {
            // The list's ids are not NUL-terminated, and GetClusterNodeInfo measures its id
            // with strlen on Redis 7.x and Valkey (redis#14443 fixed it later; 8.6.3 has the
            // fix; valkey#2933 is open): it found no node, and every transfer went to every
            // node.
            let mut id = std::slice::from_raw_parts((*ids.add(i)).cast::<u8>(), id_len).to_vec();
            id.push(0);
            let mut ip = [0 as c_char; 64];
            let mut node_port: c_int = 0;
            let ok = info(
                ctx,
                id.as_ptr().cast(),
                ip.as_mut_ptr(),
                ptr::null_mut(),
                &mut node_port,
                ptr::null_mut(),
            ) == raw::REDISMODULE_OK as c_int;
            let ip = CStr::from_ptr(ip.as_ptr()).to_bytes();
            if ok && node_port == port && ip == host {
                found.push(id);
            }
        }
        free(ids);
        (found.len() == 1).then(|| found.remove(0))
    }
}

/// Tag transfers received and not applied yet, and whether a timer for the next slice is set.
struct Inbox {
    messages: VecDeque<Vec<u8>>,
    /// Bytes queued in `messages`.
    bytes: usize,
    /// Held entries whose key RESTORE just brought, with their db.
    arrived: Vec<(usize, KeyTags)>,
    timer_armed: bool,
}

static INBOX: MainThreadCell<Inbox> = MainThreadCell::new(Inbox {
    messages: VecDeque::new(),
    bytes: 0,
    arrived: Vec::new(),
    timer_armed: false,
});

/// How long the target keeps a MIGRATE's tags for a key it does not have: long enough for
/// the EXEC of a MULTI that queued the MIGRATE (an older source sent the tags when it was
/// queued), short enough that a MIGRATE which never ran (DISCARD, an error) does not tag a
/// key of that name restored much later.
pub const HOLD_FOR: Duration = Duration::from_secs(30);
/// Most bytes of held entries (names and tags); a transfer past it is not held, with a
/// warning.
pub const HELD_MAX_BYTES: usize = 64 << 20;

/// Entries of MIGRATE transfers whose key was not here yet, by db and key, each held for
/// [`HOLD_FOR`].
struct Held {
    entries: ExpiringMap<KeyTags>,
    expiry_armed: bool,
}

static HELD: MainThreadCell<Option<Held>> = MainThreadCell::new(None);
/// How many entries are held (read on every `restore` event, so kept apart).
static HELD_KEYS: AtomicUsize = AtomicUsize::new(0);

/// Tag transfers this node has not finished with: messages received and not applied yet,
/// held entries whose key just arrived, MIGRATEs whose tags go at the next tick, slot
/// handovers still running, and one more while a message sent in the last
/// [`SENT_RECENTLY_MS`] may still be on its way (`INFO opt`: `opt_tags_transfers_pending`).
/// While it is above 0, some keys here (or on the node they are going to) may not carry their
/// tags yet, so an invalidation may miss them: `optctl invalidate` waits for 0 and
/// invalidates again.
pub fn transfers_pending() -> u64 {
    let inbox = INBOX
        .with(|inbox| inbox.messages.len() + inbox.arrived.len())
        .unwrap_or(0);
    let after_move = AFTER_MOVE.with(|pending| pending.len()).unwrap_or(0);
    let last = LAST_SENT_MS.load(Ordering::Relaxed);
    let in_flight = last != 0 && crate::state::now_ms().saturating_sub(last) < SENT_RECENTLY_MS;
    (inbox + after_move) as u64 + crate::slot_migration::jobs_running() + u64::from(in_flight)
}

/// How long after sending a transfer this node counts it as possibly still on its way: far
/// more than the cluster bus takes, far less than `optctl invalidate` waits at most.
pub const SENT_RECENTLY_MS: u64 = 100;
/// When this node last sent a transfer (`state::now_ms`; 0 before the first).
static LAST_SENT_MS: AtomicU64 = AtomicU64::new(0);

/// Keys whose tags the target holds until RESTORE brings them (`INFO opt`).
pub fn held_keys() -> u64 {
    HELD_KEYS.load(Ordering::Relaxed) as u64
}

/// The bytes an entry weighs against [`HELD_MAX_BYTES`].
fn held_bytes(e: &KeyTags) -> usize {
    2 * e.key.len() + e.tags.iter().map(|t| t.len() + 24).sum::<usize>() + 96
}

/// Holds `entries` of `db` (their key is not here) until their key arrives or [`HOLD_FOR`]
/// has passed.
fn hold(ctx: *mut raw::RedisModuleCtx, db: usize, entries: Vec<KeyTags>) {
    if entries.is_empty() {
        return;
    }
    // The `restore` event that brings a key comes through the index's subscription.
    if let Err(err) = tags::follow_keyspace(ctx) {
        log::warning(&err.0);
        return;
    }
    let now = Instant::now();
    let arm = HELD
        .with(|held| {
            let held = held.get_or_insert_with(|| Held {
                entries: ExpiringMap::new(),
                expiry_armed: false,
            });
            let mut dropped = 0usize;
            for e in entries {
                let size = held_bytes(&e);
                if held.entries.bytes() + size > HELD_MAX_BYTES {
                    dropped += 1;
                    continue;
                }
                let key = e.key.clone();
                held.entries.insert(db, &key, e, now, size);
            }
            if dropped > 0 {
                log::warning(&format!(
                    "{dropped} keys' tags from a MIGRATE not held: over {HELD_MAX_BYTES} bytes held"
                ));
            }
            HELD_KEYS.store(held.entries.len(), Ordering::Relaxed);
            !std::mem::replace(&mut held.expiry_armed, true)
        })
        .unwrap_or(false);
    if arm {
        arm_expiry(ctx, HOLD_FOR);
    }
}

/// Called for every `restore` event the index receives: when the key's tags are held, they
/// are applied at the next timer tick (not inside the event, which runs within RESTORE).
pub fn on_restore(ctx: *mut raw::RedisModuleCtx, db: usize, key: &[u8]) {
    if HELD_KEYS.load(Ordering::Relaxed) == 0 {
        return;
    }
    let Some(Some(entry)) = HELD.with(|held| {
        let held = held.as_mut()?;
        let (e, _) = held.entries.remove(db, key)?;
        HELD_KEYS.store(held.entries.len(), Ordering::Relaxed);
        Some(e)
    }) else {
        return;
    };
    let arm = INBOX
        .with(|inbox| {
            inbox.arrived.push((db, entry));
            !std::mem::replace(&mut inbox.timer_armed, true)
        })
        .unwrap_or(false);
    if arm {
        arm_timer(ctx);
    }
}

/// Sets the timer that drops held entries once [`HOLD_FOR`] has passed.
fn arm_expiry(ctx: *mut raw::RedisModuleCtx, after: Duration) {
    let ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX).max(1);
    // SAFETY: ctx is a live context of this module on the main thread; the callback is this
    // module's extern "C" function.
    unsafe {
        if let Some(create) = raw::RedisModule_CreateTimer {
            create(ctx, ms, Some(expire_held), ptr::null_mut());
        }
    }
}

/// # Safety
/// Called by the server on the main thread when the timer fires, with a live context.
unsafe extern "C" fn expire_held(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch_and_log("held tag transfers", || {
        let now = Instant::now();
        let next = HELD
            .with(|held| {
                let held = held.as_mut()?;
                let expired = held.entries.expire(now, HOLD_FOR);
                if expired > 0 {
                    log::notice(&format!(
                        "dropped the tags of {expired} keys a MIGRATE was to bring, which never came"
                    ));
                }
                HELD_KEYS.store(held.entries.len(), Ordering::Relaxed);
                let next = held
                    .entries
                    .next_expiry(HOLD_FOR)
                    .map(|at| at.saturating_duration_since(now));
                held.expiry_armed = next.is_some();
                next
            })
            .flatten();
        if let Some(after) = next {
            arm_expiry(ctx, after);
        }
    });
}

/// Most bytes of received transfers waiting to be applied. The sender paces itself (256 keys
/// a millisecond) and the receiver applies a millisecond's worth per timer tick, so the queue
/// stays short; a message that would go past this is dropped, with a warning, rather than
/// let the queue grow without bound.
const INBOX_MAX_BYTES: usize = 256 << 20;

/// The time a slice of applying received transfers may take on the main thread.
const SLICE: Duration = Duration::from_millis(1);

/// # Safety
/// Called by Redis for cluster messages of this module's type, with a live context and
/// `len` readable bytes at `payload`.
///
/// The message is queued and applied from a timer, a millisecond of work at a time: the
/// server reads every message that arrived in one go, and a slot migration sends hundreds
/// (applied on the spot, 200,000 keys stalled the target for 350 ms).
unsafe extern "C" fn on_message(
    ctx: *mut raw::RedisModuleCtx,
    _sender: *const c_char,
    _type: u8,
    payload: *const u8,
    len: u32,
) {
    guard::catch_and_log("tag transfer", || {
        MESSAGES_RECEIVED.fetch_add(1, Ordering::Relaxed);
        let bytes = if payload.is_null() {
            Vec::new()
        } else {
            // SAFETY: Redis passes len readable bytes.
            unsafe { std::slice::from_raw_parts(payload, len as usize) }.to_vec()
        };
        let arm = INBOX
            .with(|inbox| {
                if inbox.bytes + bytes.len() > INBOX_MAX_BYTES {
                    log::warning("tag transfers arrive faster than they apply: one dropped");
                    return false;
                }
                inbox.bytes += bytes.len();
                inbox.messages.push_back(bytes);
                !std::mem::replace(&mut inbox.timer_armed, true)
            })
            .unwrap_or(false);
        if arm {
            arm_timer(ctx);
        }
    });
}

/// Sets the timer of the next slice.
fn arm_timer(ctx: *mut raw::RedisModuleCtx) {
    // SAFETY: ctx is a live context of this module on the main thread; the callback is this
    // module's extern "C" function.
    unsafe {
        if let Some(create) = raw::RedisModule_CreateTimer {
            create(ctx, 1, Some(apply_slice), ptr::null_mut());
        }
    }
}

/// # Safety
/// Called by the server on the main thread when the timer fires, with a live context.
unsafe extern "C" fn apply_slice(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch_and_log("tag transfer", || {
        let start = Instant::now();
        let mut importing = None;
        let arrived = INBOX
            .with(|inbox| std::mem::take(&mut inbox.arrived))
            .unwrap_or_default();
        for (db, entry) in arrived {
            let (tagged, _) = tags::apply_transfer(ctx, db, vec![entry]);
            KEYS_RECEIVED.fetch_add(tagged as u64, Ordering::Relaxed);
        }
        while start.elapsed() < SLICE {
            let Some(Some(message)) = INBOX.with(|inbox| {
                let m = inbox.messages.pop_front();
                inbox.bytes -= m.as_ref().map_or(0, Vec::len);
                m
            }) else {
                break;
            };
            match decode(&message) {
                Ok((db, entries)) => {
                    let (tagged, mut missing) = tags::apply_transfer(ctx, db as usize, entries);
                    KEYS_RECEIVED.fetch_add(tagged as u64, Ordering::Relaxed);
                    if !missing.is_empty() {
                        // Read once a slice, and only when a key is missing.
                        let importing = importing.get_or_insert_with(|| tags::importing_slots(ctx));
                        missing.retain(|e| importing.contains(&key_slot(&e.key)));
                        hold(ctx, db as usize, missing);
                    }
                }
                Err(e) => log::warning(&format!("a tag transfer was refused: {e}")),
            }
        }
        let more = INBOX
            .with(|inbox| {
                inbox.timer_armed = !inbox.messages.is_empty() || !inbox.arrived.is_empty();
                inbox.timer_armed
            })
            .unwrap_or(false);
        if more {
            arm_timer(ctx);
        }
    });
}
