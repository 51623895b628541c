//! Hot-key tracking glue: the command filter, keymiss events, the window timer and the
//! `OPT.HOTKEYS` command. The tracker itself is `opt_core::hotkeys`.
//!
//! The filter runs for every command the server executes: from clients, inside MULTI, from
//! Lua scripts and from other modules. It must stay cheap: a disabled tracker or an unsampled
//! command costs one config read and one random number; a sampled command with fixed key
//! positions (GET, SET, HGETALL...) costs a table lookup and a summary update. Commands whose
//! keys move (ZUNIONSTORE, XREAD, module commands) ask the server's key specs.
//!
//! What is counted: on a primary every key access; on a replica only reads, because writes
//! there come from the master's replication stream, not from clients. Nothing is counted while
//! the server loads an RDB or AOF file or a full resync.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

use opt_core::config::idx;
use opt_core::hotkeys::{parse_command, HotKeyTracker, HotKeysCommand};
use opt_core::keyspec::{fixed_positions, CommandRow, KeyAccess, KeySpecTable};
use opt_core::sketch::Kind;
use redis_module::raw;

use crate::commands::Call;
use crate::reply::{string_bytes, Reply, ReplyError};
use crate::state::{now_ms, MainThreadCell};
use crate::{configs, guard, log};

struct HotKeysState {
    tracker: HotKeyTracker,
    /// The last command name looked up and its key access: pipelines repeat commands.
    last_command: ([u8; 16], usize, KeyAccess),
    rng: u64,
}

/// Commands to let pass before the next sampled one. Kept outside the state so that an
/// unsampled command costs one decrement, before any borrow or panic guard.
static SKIP: AtomicU64 = AtomicU64::new(0);

impl HotKeysState {
    fn next_rand(&mut self) -> u64 {
        // xorshift64*: fast, and good enough for sampling.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Draws how many commands to skip before the next sampled one, for a sampling
    /// probability of 1/ratio: the gap is geometric, which samples exactly as often as a
    /// draw per command would, so unsampled commands cost one decrement (see `filter`).
    fn draw_skip(&mut self, ratio: u64) -> u64 {
        if ratio <= 1 {
            return 0;
        }
        let u = ((self.next_rand() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (u.ln() / (1.0 - 1.0 / ratio as f64).ln()) as u64
    }
}

static STATE: MainThreadCell<Option<HotKeysState>> = MainThreadCell::new(None);
static KEYSPECS: OnceLock<KeySpecTable> = OnceLock::new();
/// A context for `GetCommandKeysWithFlags` inside the filter, which gets none of its own.
static DETACHED: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(ptr::null_mut());
static LOADING: AtomicBool = AtomicBool::new(false);
static IS_REPLICA: AtomicBool = AtomicBool::new(false);
/// Whether the command being executed was sampled, so its keymiss events count the same way.
static LAST_SAMPLED: AtomicBool = AtomicBool::new(false);

const TICK_MS: i64 = 1000;

/// Sets up the tracker, the filter, the event subscriptions and the window timer.
pub fn init(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    let delimiters = configs::string(idx::KEY_DELIMITERS);
    STATE.with(|s| {
        *s = Some(HotKeysState {
            tracker: HotKeyTracker::new(
                configs::int(idx::HOTKEYS_CAPACITY) as usize,
                configs::int(idx::HOTKEYS_WINDOW_SECONDS) as u64 * 1000,
                delimiters.as_bytes(),
                now_ms(),
            ),
            last_command: ([0; 16], 0, KeyAccess::Skip),
            rng: 0x9e37_79b9_7f4a_7c15 ^ (std::process::id() as u64),
        })
    });
    let rows = command_rows(ctx);
    let table = KeySpecTable::from_rows(&rows);
    log::notice(&format!(
        "hot keys: key positions of {} commands cached",
        table.len()
    ));
    let _ = KEYSPECS.set(table);
    // SAFETY: OnLoad context; all callbacks are extern "C" functions of this module with the
    // signatures these APIs expect, and they live as long as the module.
    unsafe {
        if let Some(detach) = raw::RedisModule_GetDetachedThreadSafeContext {
            DETACHED.store(detach(ctx), Ordering::Relaxed);
        }
        if let Some(flags) = raw::RedisModule_GetContextFlags {
            let f = flags(ctx) as u32;
            IS_REPLICA.store(f & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0, Ordering::Relaxed);
            LOADING.store(
                f & raw::REDISMODULE_CTX_FLAGS_LOADING != 0,
                Ordering::Relaxed,
            );
        }
        match (
            raw::RedisModule_RegisterCommandFilter,
            raw::RedisModule_CommandFilterArgsCount,
            raw::RedisModule_CommandFilterArgGet,
        ) {
            (Some(register), Some(_), Some(_)) => {
                let f = register(
                    ctx,
                    Some(filter),
                    raw::REDISMODULE_CMDFILTER_NOSELF as c_int,
                );
                if f.is_null() {
                    return Err("could not register the hot-key command filter".into());
                }
            }
            _ => log::warning("no command-filter API: hot keys are not tracked on this server"),
        }
        let subscribe =
            raw::RedisModule_SubscribeToKeyspaceEvents.ok_or("no keyspace events API")?;
        if subscribe(ctx, raw::REDISMODULE_NOTIFY_KEY_MISS, Some(on_keymiss))
            != raw::REDISMODULE_OK as c_int
        {
            log::warning("could not subscribe to keymiss events: misses are not counted");
        }
        raw::RedisModule_CreateTimer.ok_or("no timer API")?(
            ctx,
            TICK_MS,
            Some(on_tick),
            ptr::null_mut(),
        );
    }
    Ok(())
}

/// Reads `COMMAND` into rows (name, flags, first/last/step, subcommands).
fn command_rows(ctx: *mut raw::RedisModuleCtx) -> Vec<CommandRow> {
    let mut rows = Vec::new();
    // SAFETY: ctx is the OnLoad context; the reply tree is only read before it is freed, and
    // every element pointer comes from the API for an index below the reported length.
    unsafe {
        let (Some(call), Some(len), Some(elem), Some(int), Some(kind), Some(free)) = (
            raw::RedisModule_Call,
            raw::RedisModule_CallReplyLength,
            raw::RedisModule_CallReplyArrayElement,
            raw::RedisModule_CallReplyInteger,
            raw::RedisModule_CallReplyType,
            raw::RedisModule_FreeCallReply,
        ) else {
            return rows;
        };
        let reply = call(ctx, c"COMMAND".as_ptr(), c"".as_ptr());
        if reply.is_null() {
            return rows;
        }
        let text = |r: *mut raw::RedisModuleCallReply| -> String {
            let mut n = 0usize;
            match raw::RedisModule_CallReplyStringPtr {
                Some(f) if !r.is_null() => {
                    let p = f(r, &mut n);
                    if p.is_null() {
                        String::new()
                    } else {
                        String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), n))
                            .into_owned()
                    }
                }
                _ => String::new(),
            }
        };
        let is_array = |r: *mut raw::RedisModuleCallReply| {
            !r.is_null() && kind(r) == raw::REDISMODULE_REPLY_ARRAY as c_int
        };
        if is_array(reply) {
            for i in 0..len(reply) {
                let e = elem(reply, i);
                if !is_array(e) || len(e) < 6 {
                    continue;
                }
                let flags_reply = elem(e, 2);
                let flags = if is_array(flags_reply) {
                    (0..len(flags_reply))
                        .map(|j| text(elem(flags_reply, j)))
                        .collect()
                } else {
                    Vec::new()
                };
                let subs = if len(e) > 9 {
                    elem(e, 9)
                } else {
                    ptr::null_mut()
                };
                rows.push(CommandRow {
                    name: text(elem(e, 0)).to_ascii_lowercase(),
                    flags,
                    first: int(elem(e, 3)),
                    last: int(elem(e, 4)),
                    step: int(elem(e, 5)),
                    has_subcommands: is_array(subs) && len(subs) > 0,
                });
            }
        }
        free(reply);
    }
    rows
}

/// # Safety
/// Called by Redis for every command, with a filter context valid during the call.
unsafe extern "C" fn filter(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    if !configs::flag(idx::HOTKEYS_ENABLED) || LOADING.load(Ordering::Relaxed) {
        return;
    }
    // Filters run on the main thread (or under the global lock), one at a time: a plain
    // load and store are enough.
    let skip = SKIP.load(Ordering::Relaxed);
    if skip > 0 {
        SKIP.store(skip - 1, Ordering::Relaxed);
        LAST_SAMPLED.store(false, Ordering::Relaxed);
        return;
    }
    LAST_SAMPLED.store(true, Ordering::Relaxed);
    guard::catch_and_log("hot-key filter", || {
        STATE.with(|state| {
            if let Some(st) = state.as_mut() {
                // SAFETY: fctx is valid for the duration of this callback.
                unsafe { record_command(st, fctx) }
            }
        });
    });
}

/// The bytes of filter argument `pos`.
///
/// # Safety
/// `fctx` must be the live filter context and `pos` below its argument count.
unsafe fn filter_arg<'a>(fctx: *mut raw::RedisModuleCommandFilterCtx, pos: usize) -> &'a [u8] {
    match raw::RedisModule_CommandFilterArgGet {
        Some(get) => string_bytes(get(fctx, pos as c_int)),
        None => &[],
    }
}

/// # Safety
/// `fctx` must be the live filter context.
unsafe fn record_command(st: &mut HotKeysState, fctx: *mut raw::RedisModuleCommandFilterCtx) {
    let gap = st.draw_skip(configs::int(idx::HOTKEYS_SAMPLE_RATIO).max(1) as u64);
    SKIP.store(gap, Ordering::Relaxed);
    let argc = match raw::RedisModule_CommandFilterArgsCount {
        Some(count) => count(fctx).max(0) as usize,
        None => return,
    };
    if argc < 2 {
        return;
    }
    let replica = IS_REPLICA.load(Ordering::Relaxed);
    let name = filter_arg(fctx, 0);
    let (cached, len, cached_access) = &st.last_command;
    let access = if *len == name.len() && cached[..*len].eq_ignore_ascii_case(name) {
        *cached_access
    } else {
        let access = KEYSPECS
            .get()
            .map(|t| t.lookup(name))
            .unwrap_or(KeyAccess::Skip);
        if name.len() <= 16 {
            let mut buf = [0u8; 16];
            buf[..name.len()].copy_from_slice(name);
            st.last_command = (buf, name.len(), access);
        }
        access
    };
    match access {
        KeyAccess::Skip => {}
        KeyAccess::Fixed {
            first,
            last,
            step,
            write,
        } => {
            if write && replica {
                return;
            }
            let kind = if write { Kind::Write } else { Kind::Read };
            if first as i32 == last {
                // One key (GET, SET, HGET...): the common case, without the iterator.
                if (first as usize) < argc {
                    st.tracker.record(filter_arg(fctx, first as usize), kind);
                }
                return;
            }
            for pos in fixed_positions(first, last, step, argc) {
                st.tracker.record(filter_arg(fctx, pos), kind);
            }
        }
        KeyAccess::Dynamic { write } => record_dynamic(st, fctx, argc, replica, write),
    }
}

/// Finds the keys through the server's key specs (commands with movable keys); when the
/// server gives no per-key flags, `command_writes` (the command's own flag) decides.
///
/// # Safety
/// `fctx` must be the live filter context with `argc` arguments.
unsafe fn record_dynamic(
    st: &mut HotKeysState,
    fctx: *mut raw::RedisModuleCommandFilterCtx,
    argc: usize,
    replica: bool,
    command_writes: bool,
) {
    let ctx = DETACHED.load(Ordering::Relaxed);
    let (Some(get), Some(keys_with_flags), Some(free)) = (
        raw::RedisModule_CommandFilterArgGet,
        raw::RedisModule_GetCommandKeysWithFlags,
        raw::RedisModule_Free,
    ) else {
        return;
    };
    if ctx.is_null() {
        return;
    }
    let mut argv: Vec<*mut raw::RedisModuleString> =
        (0..argc).map(|i| get(fctx, i as c_int)).collect();
    let mut num: c_int = 0;
    let mut flags: *mut c_int = ptr::null_mut();
    let positions = keys_with_flags(ctx, argv.as_mut_ptr(), argc as c_int, &mut num, &mut flags);
    if positions.is_null() {
        return;
    }
    let write_mask =
        raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_OW | raw::REDISMODULE_CMD_KEY_RM;
    for i in 0..num.max(0) as usize {
        let pos = *positions.add(i);
        let f = if flags.is_null() {
            0
        } else {
            *flags.add(i) as u32
        };
        if pos <= 0 || pos as usize >= argc || f & raw::REDISMODULE_CMD_KEY_NOT_KEY != 0 {
            continue;
        }
        // No access flags at all: the server did not say (7.0 for keys found by a procedure).
        let write = if f & (write_mask | raw::REDISMODULE_CMD_KEY_RO) == 0 {
            command_writes
        } else {
            f & write_mask != 0
        };
        if write && replica {
            continue;
        }
        let kind = if write { Kind::Write } else { Kind::Read };
        st.tracker.record(string_bytes(argv[pos as usize]), kind);
    }
    free(positions.cast::<c_void>());
    if !flags.is_null() {
        free(flags.cast::<c_void>());
    }
}

/// # Safety
/// Called by Redis for keymiss events with a valid key string.
unsafe extern "C" fn on_keymiss(
    _ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    _event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    if configs::flag(idx::HOTKEYS_ENABLED)
        && !LOADING.load(Ordering::Relaxed)
        && LAST_SAMPLED.load(Ordering::Relaxed)
    {
        guard::catch_and_log("keymiss event", || {
            // SAFETY: key is valid for the duration of the callback.
            let key = unsafe { string_bytes(key) };
            STATE.with(|s| {
                if let Some(st) = s.as_mut() {
                    st.tracker.record_miss(key);
                }
            });
        });
    }
    raw::REDISMODULE_OK as c_int
}

/// Follows loading and replication-role changes (dispatched by `events`).
pub fn on_server_event(id: u64, subevent: u64) {
    match id {
        raw::REDISMODULE_EVENT_LOADING => LOADING.store(
            !matches!(
                subevent,
                raw::REDISMODULE_SUBEVENT_LOADING_ENDED | raw::REDISMODULE_SUBEVENT_LOADING_FAILED
            ),
            Ordering::Relaxed,
        ),
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED => IS_REPLICA.store(
            subevent == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_REPLICA,
            Ordering::Relaxed,
        ),
        _ => {}
    }
}

/// # Safety
/// Called by Redis on the main thread when the timer fires.
unsafe extern "C" fn on_tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch_and_log("hot-key window timer", || {
        STATE.with(|s| {
            if let Some(st) = s.as_mut() {
                st.tracker.tick(now_ms());
            }
        });
    });
    if let Some(create) = raw::RedisModule_CreateTimer {
        create(ctx, TICK_MS, Some(on_tick), ptr::null_mut());
    }
}

/// Applies a config change to the tracker (capacity, window, delimiters).
pub fn apply_config(index: usize, value: i64) {
    STATE.with(|s| {
        if let Some(st) = s.as_mut() {
            match index {
                idx::HOTKEYS_CAPACITY => st.tracker.resize(value as usize),
                idx::HOTKEYS_WINDOW_SECONDS => st.tracker.set_window_ms(value as u64 * 1000),
                idx::HOTKEYS_SAMPLE_RATIO => SKIP.store(0, Ordering::Relaxed),
                _ => {}
            }
        }
    });
}

/// Applies a new set of key delimiters.
pub fn apply_delimiters(delimiters: &str) {
    STATE.with(|s| {
        if let Some(st) = s.as_mut() {
            st.tracker.set_delimiters(delimiters.as_bytes());
        }
    });
}

/// `OPT.HOTKEYS [COUNT n] [TYPE all|read|write|miss] [WINDOW total|recent] [NAMESPACES]` and
/// `OPT.HOTKEYS RESET`.
pub fn command(call: &Call) -> Result<Reply, ReplyError> {
    crate::acl::require_monitor_equivalent(call.ctx, "OPT.HOTKEYS")?;
    let capacity = configs::int(idx::HOTKEYS_CAPACITY) as usize;
    let parsed = parse_command(&call.args, capacity).map_err(ReplyError::err)?;
    let ratio = configs::int(idx::HOTKEYS_SAMPLE_RATIO).max(1) as u64;
    let now = now_ms();
    STATE
        .with(|s| {
            let st = s
                .as_mut()
                .ok_or_else(|| ReplyError::err("hot-key tracker not initialised"))?;
            match parsed {
                HotKeysCommand::Reset => {
                    st.tracker.reset(now);
                    Ok(Reply::Status("OK"))
                }
                HotKeysCommand::Query(q) => {
                    let report = st.tracker.query(&q, now, ratio);
                    serde_json::to_value(&report)
                        .map(Reply::Structured)
                        .map_err(|e| ReplyError::err(format!("could not encode reply: {e}")))
                }
            }
        })
        .unwrap_or_else(|| Err(ReplyError::err("hot-key tracker busy")))
}

/// `INFO opt` fields: (candidates tracked, accesses sampled, tracker bytes).
pub fn info_fields() -> Option<(u64, u64, u64)> {
    STATE
        .with(|s| {
            s.as_ref().map(|st| {
                (
                    st.tracker.tracked() as u64,
                    st.tracker.sampled(),
                    st.tracker.memory_bytes() as u64,
                )
            })
        })
        .flatten()
}

/// The total-window hot-key reports for OPT.ADVISE: (all accesses, misses), top 10 each.
pub fn reports_for_advice() -> Option<(
    opt_core::report::HotKeysReport,
    opt_core::report::HotKeysReport,
)> {
    let ratio = configs::int(idx::HOTKEYS_SAMPLE_RATIO).max(1) as u64;
    let now = now_ms();
    STATE
        .with(|s| {
            s.as_ref().map(|st| {
                let q = |kind| opt_core::hotkeys::HotKeysQuery {
                    count: 10,
                    kind,
                    window: opt_core::hotkeys::Window::Total,
                    namespaces: false,
                };
                (
                    st.tracker
                        .query(&q(opt_core::hotkeys::KindFilter::All), now, ratio),
                    st.tracker
                        .query(&q(opt_core::hotkeys::KindFilter::Miss), now, ratio),
                )
            })
        })
        .flatten()
}
