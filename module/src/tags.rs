//! Tag glue: the OPT.SET / OPT.TAG / OPT.UNTAG / OPT.TAGS / OPT.INVALIDATE / OPT.TAGKEYS /
//! OPT.TAGINFO commands, the keyspace and server events that keep the index equal to the
//! keyspace, and the RDB aux field that persists it. The index is `opt_core::tags`.
//!
//! How the index follows the keyspace: a key that is deleted, expires, is evicted or is
//! replaced (SET, RESTORE, COPY onto it, the *STORE commands) leaves the index; RENAME and
//! MOVE carry its tags; FLUSHDB/FLUSHALL and SWAPDB apply to the index too. Replicas and the
//! AOF get OPT.SET / OPT.TAG / OPT.UNTAG as commands (with absolute expiry times) and
//! OPT.INVALIDATE as the DEL/UNLINK it performs, so their indexes follow the same way.
//! Invariant: no event callback runs while a command holds the index (commands release it
//! before calling into the server), so no removal is ever missed.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use opt_core::args::Args;
use opt_core::config::idx;
use opt_core::report::{TagInfoReport, TagSize};
use opt_core::tags::{validate_tags, IndexReader, IndexWriter, TagIndex, TagLimits};
use redis_module::raw;
use serde_json::json;

use crate::commands::Call;
use crate::reply::{string_bytes, Reply, ReplyError};
use crate::state::MainThreadCell;
use crate::{configs, guard, log};

struct TagState {
    index: TagIndex,
    /// Tags of a key between its rename_from/move_from event and the matching *_to event.
    in_flight: Option<(Vec<u8>, Vec<Vec<u8>>)>,
    /// Set by the "set" event for the key OPT.SET is writing, so it knows the write happened.
    set_seen: Option<Vec<u8>>,
}

static STATE: MainThreadCell<TagState> = MainThreadCell::new(TagState {
    index: TagIndex::new_const(),
    in_flight: None,
    set_seen: None,
});

static mut TAG_TYPE: *mut raw::RedisModuleType = ptr::null_mut();

fn with<R>(f: impl FnOnce(&mut TagState) -> R) -> Result<R, ReplyError> {
    STATE
        .with(f)
        .ok_or_else(|| ReplyError::err("tag index busy (re-entrant call)"))
}

fn limits() -> TagLimits {
    TagLimits {
        max_tags_per_key: configs::int(idx::MAX_TAGS_PER_KEY) as usize,
        max_tag_length: configs::int(idx::MAX_TAG_LENGTH) as usize,
    }
}

/// The db selected by the client of `ctx`.
fn selected_db(ctx: *mut raw::RedisModuleCtx) -> usize {
    // SAFETY: ctx is a live context.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx).max(0) as usize) }
}

/// Registers events and the aux data type.
pub fn init(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    // SAFETY: OnLoad context; callbacks are this module's extern "C" functions; the type
    // methods struct is copied by Redis.
    unsafe {
        let subscribe =
            raw::RedisModule_SubscribeToKeyspaceEvents.ok_or("no keyspace events API")?;
        let mask = raw::REDISMODULE_NOTIFY_GENERIC
            | raw::REDISMODULE_NOTIFY_STRING
            | raw::REDISMODULE_NOTIFY_LIST
            | raw::REDISMODULE_NOTIFY_SET
            | raw::REDISMODULE_NOTIFY_ZSET
            | raw::REDISMODULE_NOTIFY_EXPIRED
            | raw::REDISMODULE_NOTIFY_EVICTED;
        if subscribe(ctx, mask, Some(on_keyspace_event)) != raw::REDISMODULE_OK as c_int {
            return Err("could not subscribe to keyspace events for the tag index".into());
        }
        if let Some(opts) = raw::RedisModule_SetModuleOptions {
            opts(ctx, raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS as c_int);
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
    guard::catch_and_log("tag index event", || {
        // SAFETY: valid for the duration of the callback.
        let (event, key) = unsafe { (CStr::from_ptr(event).to_bytes(), string_bytes(key)) };
        let db = selected_db(ctx);
        let applied = STATE.with(|st| apply_event(st, db, event, key));
        if applied.is_none() {
            log::warning("tag index event arrived while the index was in use; report this");
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// Replacing or deleting events: the key's old value (and its tags) is gone.
const DROPS: &[&[u8]] = &[
    b"del",
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

fn apply_event(st: &mut TagState, db: usize, event: &[u8], key: &[u8]) {
    if event == b"set" && st.set_seen.as_deref() == Some(key) {
        st.set_seen = None;
    }
    if st.index.is_empty() && st.in_flight.is_none() {
        return;
    }
    match event {
        b"rename_from" | b"move_from" => {
            let tags = st.index.take_key(db, key);
            st.in_flight = (!tags.is_empty()).then(|| (key.to_vec(), tags));
        }
        b"rename_to" | b"move_to" => {
            st.index.remove_key(db, key);
            if let Some((_, tags)) = st.in_flight.take() {
                let refs: Vec<&[u8]> = tags.iter().map(Vec::as_slice).collect();
                st.index.set_tags(db, key, &refs);
            }
        }
        e if DROPS.contains(&e) => {
            st.index.remove_key(db, key);
        }
        _ => {}
    }
}

/// Follows FLUSHDB/FLUSHALL, SWAPDB and the end of loading (dispatched by `events`).
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
    guard::catch_and_log("tag index server event", || {
        if eid.id == raw::REDISMODULE_EVENT_LOADING {
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
            STATE.with(|st| {
                if info.dbnum < 0 {
                    st.index.flush_all();
                } else {
                    st.index.flush_db(info.dbnum as usize);
                }
            });
        } else if eid.id == raw::REDISMODULE_EVENT_SWAPDB {
            // SAFETY: for SwapDB events data points to a RedisModuleSwapDbInfo.
            let info = unsafe { &*(data as *const raw::RedisModuleSwapDbInfo) };
            STATE.with(|st| {
                st.index.swap_db(
                    info.dbnum_first.max(0) as usize,
                    info.dbnum_second.max(0) as usize,
                )
            });
        }
    });
}

/// Drops index entries whose key does not exist (after an RDB, AOF or full-sync load: keys
/// that expired meanwhile, or an index saved with keys the dataset no longer has).
fn prune_missing(ctx: *mut raw::RedisModuleCtx) {
    let entries: Vec<(usize, Vec<u8>)> = STATE
        .with(|st| {
            st.index
                .dbs_in_use()
                .into_iter()
                .flat_map(|db| {
                    st.index
                        .db_entries(db)
                        .into_iter()
                        .map(move |(k, _)| (db, k))
                })
                .collect()
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
    STATE.with(|st| {
        for (db, k) in &missing {
            st.index.remove_key(*db, k);
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
        STATE.with(|st| {
            // aux_save2 servers skip the field when nothing is written.
            if crate::server::supports_aux_save2() && st.index.stats().keys == 0 {
                return;
            }
            st.index.save(&mut RdbWriter(rdb));
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
    let result = guard::catch(|| TagIndex::load(&mut RdbReader(rdb), |_, _| true));
    match result {
        Ok(Ok(index)) => {
            STATE.with(|st| st.index = index);
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

/// Whether `key` exists in `db` (used on load to drop entries of keys that are gone).
fn key_exists(ctx: *mut raw::RedisModuleCtx, db: usize, key: &[u8]) -> bool {
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
// Commands.

/// Calls a command through `RedisModule_Call` with byte-string arguments.
fn call_command(
    ctx: *mut raw::RedisModuleCtx,
    name: &CStr,
    flags: &CStr,
    args: &[&[u8]],
) -> Result<*mut raw::RedisModuleCallReply, ReplyError> {
    // SAFETY: ctx is the live command context; the strings are freed after the call (the
    // reply does not reference them); "v" takes an array of RedisModuleString pointers.
    unsafe {
        let (Some(call), Some(create), Some(free)) = (
            raw::RedisModule_Call,
            raw::RedisModule_CreateString,
            raw::RedisModule_FreeString,
        ) else {
            return Err(ReplyError::err("module call API missing"));
        };
        let mut argv: Vec<*mut raw::RedisModuleString> = args
            .iter()
            .map(|a| create(ctx, a.as_ptr().cast(), a.len()))
            .collect();
        let fmt = format!("{}v\0", flags.to_str().unwrap_or(""));
        let reply = call(
            ctx,
            name.as_ptr(),
            fmt.as_ptr().cast(),
            argv.as_mut_ptr(),
            argv.len(),
        );
        for s in argv {
            free(ctx, s);
        }
        if reply.is_null() {
            return Err(ReplyError::err(format!(
                "{} failed (errno {})",
                name.to_string_lossy(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(reply)
    }
}

/// Replicates `OPT.<name> args...` to replicas and the AOF.
fn replicate(ctx: *mut raw::RedisModuleCtx, name: &CStr, args: &[&[u8]]) {
    // SAFETY: ctx is the live command context; strings are freed after the call.
    unsafe {
        let (Some(rep), Some(create), Some(free)) = (
            raw::RedisModule_Replicate,
            raw::RedisModule_CreateString,
            raw::RedisModule_FreeString,
        ) else {
            return;
        };
        let mut argv: Vec<*mut raw::RedisModuleString> = args
            .iter()
            .map(|a| create(ctx, a.as_ptr().cast(), a.len()))
            .collect();
        rep(
            ctx,
            name.as_ptr(),
            c"v".as_ptr(),
            argv.as_mut_ptr(),
            argv.len(),
        );
        for s in argv {
            free(ctx, s);
        }
    }
}

fn key_exists_here(ctx: *mut raw::RedisModuleCtx, key: &[u8]) -> bool {
    let db = selected_db(ctx);
    key_exists(ctx, db, key)
}

/// Arguments as byte strings.
type ArgList<'a> = &'a [&'a [u8]];

/// Splits `args` at the TAGS keyword: (before, tags).
fn split_tags<'a>(
    args: ArgList<'a>,
    command: &str,
) -> Result<(ArgList<'a>, ArgList<'a>), ReplyError> {
    let pos = args
        .iter()
        .position(|a| a.eq_ignore_ascii_case(b"TAGS"))
        .ok_or_else(|| ReplyError::err(format!("{command} needs TAGS tag [tag ...]")))?;
    Ok((&args[..pos], &args[pos + 1..]))
}

/// `OPT.SET key value [EX s|PX ms|EXAT ts|PXAT ts|KEEPTTL] [NX|XX] [GET] TAGS tag [tag ...]`
pub fn set(call: &Call) -> Result<Reply, ReplyError> {
    let (head, tags) = split_tags(&call.args, "OPT.SET")?;
    if head.len() < 2 {
        return Err(ReplyError::err(
            "OPT.SET needs a key and a value before TAGS",
        ));
    }
    validate_tags(tags, &limits()).map_err(|e| ReplyError::err(format!("OPT.SET: {e}")))?;
    let (key, value) = (head[0], head[1]);
    // Check the SET options here so that a bad one is our ERR and nothing is written.
    let mut opts = Args::new("OPT.SET", &head[2..]);
    let mut expiry: Option<(String, i64)> = None;
    let mut keep_ttl = false;
    let mut cond: Option<String> = None;
    let mut get = false;
    while let Some(word) = opts.next_keyword() {
        match word.as_str() {
            "EX" | "PX" | "EXAT" | "PXAT" if expiry.is_none() && !keep_ttl => {
                let v = opts
                    .int_value(&word, 1, i64::MAX / 1000)
                    .map_err(ReplyError::err)?;
                expiry = Some((word, v));
            }
            "KEEPTTL" if expiry.is_none() => keep_ttl = true,
            "NX" | "XX" if cond.is_none() => cond = Some(word),
            "GET" => get = true,
            "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" | "NX" | "XX" => {
                return Err(ReplyError::err(format!(
                    "OPT.SET: {word} conflicts with another option"
                )))
            }
            _ => return Err(ReplyError::err(opts.unknown(&word))),
        }
    }
    let mut set_args: Vec<Vec<u8>> = vec![key.to_vec(), value.to_vec()];
    if let Some((unit, v)) = &expiry {
        set_args.push(unit.as_bytes().to_vec());
        set_args.push(v.to_string().into_bytes());
    }
    if keep_ttl {
        set_args.push(b"KEEPTTL".to_vec());
    }
    if let Some(c) = &cond {
        set_args.push(c.as_bytes().to_vec());
    }
    if get {
        set_args.push(b"GET".to_vec());
    }
    with(|st| st.set_seen = Some(key.to_vec()))?;
    let refs: Vec<&[u8]> = set_args.iter().map(Vec::as_slice).collect();
    let reply = call_command(call.ctx, c"SET", c"", &refs)?;
    // The "set" event cleared set_seen if the value was written.
    let written = with(|st| st.set_seen.take().is_none())?;
    if written {
        let db = selected_db(call.ctx);
        with(|st| st.index.set_tags(db, key, tags))?;
        // Replicate with an absolute expiry so replicas and the AOF expire it at the same time.
        let mut rep: Vec<Vec<u8>> = vec![key.to_vec(), value.to_vec()];
        match (&expiry, keep_ttl) {
            (Some(_), _) => {
                if let Some(at) = absolute_expiry_ms(call.ctx, key) {
                    rep.push(b"PXAT".to_vec());
                    rep.push(at.to_string().into_bytes());
                }
            }
            (None, true) => rep.push(b"KEEPTTL".to_vec()),
            _ => {}
        }
        rep.push(b"TAGS".to_vec());
        rep.extend(tags.iter().map(|t| t.to_vec()));
        let rep_refs: Vec<&[u8]> = rep.iter().map(Vec::as_slice).collect();
        replicate(call.ctx, c"OPT.SET", &rep_refs);
    }
    // SAFETY: reply is a live call reply; forwarded to the client, then freed.
    unsafe {
        if let Some(f) = raw::RedisModule_ReplyWithCallReply {
            f(call.ctx, reply);
        }
        if let Some(free) = raw::RedisModule_FreeCallReply {
            free(reply);
        }
    }
    Ok(Reply::AlreadySent)
}

/// The key's expiry as Unix milliseconds, if it has one.
fn absolute_expiry_ms(ctx: *mut raw::RedisModuleCtx, key: &[u8]) -> Option<i64> {
    // SAFETY: ctx is the live command context; the key handle and string are closed/freed.
    unsafe {
        let s = raw::RedisModule_CreateString?(ctx, key.as_ptr().cast(), key.len());
        let k = raw::RedisModule_OpenKey?(ctx, s, raw::REDISMODULE_READ as c_int);
        let ttl = if k.is_null() {
            -1
        } else {
            raw::RedisModule_GetExpire?(k)
        };
        if !k.is_null() {
            raw::RedisModule_CloseKey?(k);
        }
        raw::RedisModule_FreeString?(ctx, s);
        let now = raw::RedisModule_Milliseconds?();
        (ttl >= 0).then_some(now + ttl)
    }
}

/// `OPT.TAG key tag [tag ...]`
pub fn tag(call: &Call) -> Result<Reply, ReplyError> {
    let [key, tags @ ..] = call.args.as_slice() else {
        return Err(ReplyError::err("OPT.TAG needs a key and at least one tag"));
    };
    validate_tags(tags, &limits()).map_err(|e| ReplyError::err(format!("OPT.TAG: {e}")))?;
    if !key_exists_here(call.ctx, key) {
        return Err(ReplyError::err("OPT.TAG: no such key"));
    }
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
    let [key, tags @ ..] = call.args.as_slice() else {
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
    let [key] = call.args.as_slice() else {
        return Err(ReplyError::err("OPT.TAGS takes exactly one key"));
    };
    let db = selected_db(call.ctx);
    let tags = with(|st| st.index.tags_of(db, key))?;
    let names: Vec<String> = tags
        .iter()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    Ok(Reply::Structured(json!(names)))
}

/// `OPT.INVALIDATE tag [tag ...] [ASYNC]`
pub fn invalidate(call: &Call) -> Result<Reply, ReplyError> {
    let mut tags: Vec<&[u8]> = call.args.clone();
    let lazy = tags.len() > 1
        && tags
            .last()
            .is_some_and(|a| a.eq_ignore_ascii_case(b"ASYNC"));
    if lazy {
        tags.pop();
    }
    if tags.is_empty() {
        return Err(ReplyError::err("OPT.INVALIDATE needs at least one tag"));
    }
    if tags.iter().any(|t| t.is_empty()) {
        return Err(ReplyError::err("OPT.INVALIDATE: a tag may not be empty"));
    }
    let db = selected_db(call.ctx);
    let keys = with(|st| st.index.keys_with_any(db, &tags))?;
    if keys.is_empty() {
        return Ok(Reply::Int(0));
    }
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let cmd: &CStr = if lazy { c"UNLINK" } else { c"DEL" };
    // "!" replicates the deletion, "C" runs it as the calling user: if the ACL forbids any of
    // the keys, nothing is deleted. "E" returns errors as error replies.
    let reply = call_command(call.ctx, cmd, c"!CE", &refs)?;
    // SAFETY: reply is a live call reply, read then freed.
    unsafe {
        let kind = raw::RedisModule_CallReplyType.map_or(-1, |f| f(reply));
        let result = if kind == raw::REDISMODULE_REPLY_INTEGER as c_int {
            Ok(Reply::Int(
                raw::RedisModule_CallReplyInteger.map_or(0, |f| f(reply)),
            ))
        } else {
            let mut len = 0usize;
            let p = raw::RedisModule_CallReplyStringPtr.map_or(ptr::null(), |f| f(reply, &mut len));
            let text = if p.is_null() {
                "deletion refused".to_string()
            } else {
                String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), len))
                    .into_owned()
            };
            let text = text.trim();
            // ACL refusals read NOPERM, as for any other command; other errors keep their code.
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
            let coded = format!("{code} {message}");
            Err(ReplyError(format!(
                "{coded} (OPT.INVALIDATE deleted nothing: every key must be allowed)"
            )))
        };
        if let Some(free) = raw::RedisModule_FreeCallReply {
            free(reply);
        }
        result
    }
}

/// `OPT.TAGKEYS tag [CURSOR c] [COUNT n]`: replies `[next cursor, [keys...]]`.
pub fn tag_keys(call: &Call) -> Result<Reply, ReplyError> {
    let [tag, rest @ ..] = call.args.as_slice() else {
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
                    .int_value("COUNT", 1, 100_000)
                    .map_err(ReplyError::err)? as usize
            }
            _ => return Err(ReplyError::err(args.unknown(&word))),
        }
    }
    let db = selected_db(call.ctx);
    let (next, keys) = with(|st| st.index.tag_keys_page(db, tag, cursor, count))?;
    let keys: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    Ok(Reply::Structured(json!([next.to_string(), keys])))
}

/// `OPT.TAGINFO [tag]`
pub fn tag_info(call: &Call) -> Result<Reply, ReplyError> {
    if call.args.len() > 1 {
        return Err(ReplyError::err("OPT.TAGINFO takes at most one tag"));
    }
    let db = selected_db(call.ctx);
    let report = with(|st| {
        let stats = st.index.stats();
        let tag = call.args.first();
        TagInfoReport {
            keys: match tag {
                Some(t) => st.index.tag_cardinality(db, t) as u64,
                None => stats.keys,
            },
            tags: stats.tags,
            pairs: stats.pairs,
            memory_bytes: st.index.memory_bytes() as u64,
            digest: format!("{:016x}", stats.digest),
            tag: tag.map(|t| String::from_utf8_lossy(t).into_owned()),
            largest: st
                .index
                .largest_tags(db, 10)
                .into_iter()
                .map(|(t, n)| TagSize {
                    tag: String::from_utf8_lossy(&t).into_owned(),
                    keys: n as u64,
                })
                .collect(),
        }
    })?;
    serde_json::to_value(&report)
        .map(Reply::Structured)
        .map_err(|e| ReplyError::err(format!("could not encode reply: {e}")))
}

/// `INFO opt` fields: (tagged keys, tags, pairs, index bytes).
pub fn info_fields() -> Option<(u64, u64, u64, u64)> {
    STATE.with(|st| {
        let s = st.index.stats();
        (s.keys, s.tags, s.pairs, st.index.memory_bytes() as u64)
    })
}
