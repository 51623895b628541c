//! Tags that follow keys moved by MIGRATE between cluster nodes.
//!
//! Resharding (`redis-cli --cluster reshard`, `rebalance`) moves keys with MIGRATE, which
//! sends each value to the target as DUMP/RESTORE: the module's tag index stays behind, and
//! the key arrived untagged, invisible to the next OPT.INVALIDATE of its tags. So, in cluster
//! mode and once the index has entries, a command filter watches for MIGRATE. Before MIGRATE
//! runs, it reads the tags and freshness (OPT.SET DELTA/STALE) of the keys being moved and
//! sends them to the target node over the cluster bus (`opt_core::tag_transfer`). The cluster
//! bus is written by the event loop, and MIGRATE waits for the target's replies before it
//! returns, so the message reaches the target after the keys: the target applies it to the
//! keys it then holds, and replicates that to its replicas and AOF (OPT.TAG, or OPT.SET for a
//! value with freshness). The source drops its entries through the usual `del` events once
//! MIGRATE deletes the keys (not with COPY).
//!
//! The target queues what it receives and applies it from a timer, a millisecond of work at a
//! time (`slot_migration` sends hundreds of messages at once).
//!
//! Limits: a MIGRATE queued in MULTI sends the tags when it is queued, before the keys move,
//! so the target finds no key and they are lost (as before this existed); between the end of
//! MIGRATE and the message's application (the cluster bus's latency and the next timer tick,
//! a few milliseconds) the key sits untagged on the target. The filter has no client context,
//! so it takes the keys from db 0: with Valkey 9's `cluster-databases` above 1, keys that
//! MIGRATE moves from another database arrive untagged. The filter costs every command on such a node
//! the server's filter dispatch and a length check: about 70 instructions on 7.0 (callgrind,
//! GET: 20 of them in the filter).

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opt_core::tag_transfer::{decode, encode, migrated_keys, KeyTags};
use redis_module::raw;

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
    let filter = unsafe {
        raw::RedisModule_RegisterCommandFilter.map(|f| {
            f(
                ctx,
                Some(filter),
                raw::REDISMODULE_CMDFILTER_NOSELF as c_int,
            )
        })
    };
    if filter.is_none_or(|f| f.is_null()) {
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
    if argc < 6 {
        return;
    }
    let name = filter_arg(fctx, 0);
    if name.len() != 7 || !name.eq_ignore_ascii_case(b"migrate") {
        return;
    }
    guard::catch_and_log("MIGRATE watch", || {
        // SAFETY: fctx is valid for the duration of this callback and argc is its count.
        let args: Vec<&[u8]> = (0..argc).map(|i| unsafe { filter_arg(fctx, i) }).collect();
        send_tags(&args);
    });
}

/// Sends the tags of the keys MIGRATE `args` moves to the node at its host and port (every
/// node when none matches, for instance when MIGRATE names the target by another address).
fn send_tags(args: &[&[u8]]) {
    // In cluster mode every key lives in db 0.
    let entries = tags::tags_for_transfer(0, &migrated_keys(args));
    if entries.is_empty() {
        return;
    }
    let target = find_node(DETACHED.load(Ordering::Relaxed), args[1], args[2]);
    if !send_transfer(0, &entries, target.as_deref()) {
        log::warning("could not send the tags of migrated keys to their new node");
    }
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
            let id = *ids.add(i);
            let mut ip = [0 as c_char; 64];
            let mut node_port: c_int = 0;
            let ok = info(
                ctx,
                id,
                ip.as_mut_ptr(),
                ptr::null_mut(),
                &mut node_port,
                ptr::null_mut(),
            ) == raw::REDISMODULE_OK as c_int;
            let ip = CStr::from_ptr(ip.as_ptr()).to_bytes();
            if ok && node_port == port && ip == host {
                let mut id = std::slice::from_raw_parts(id.cast::<u8>(), id_len).to_vec();
                id.push(0);
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
    timer_armed: bool,
}

static INBOX: MainThreadCell<Inbox> = MainThreadCell::new(Inbox {
    messages: VecDeque::new(),
    bytes: 0,
    timer_armed: false,
});

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
                    let tagged = tags::apply_transfer(ctx, db as usize, &entries);
                    KEYS_RECEIVED.fetch_add(tagged as u64, Ordering::Relaxed);
                }
                Err(e) => log::warning(&format!("a tag transfer was refused: {e}")),
            }
        }
        let more = INBOX
            .with(|inbox| {
                inbox.timer_armed = !inbox.messages.is_empty();
                inbox.timer_armed
            })
            .unwrap_or(false);
        if more {
            arm_timer(ctx);
        }
    });
}
