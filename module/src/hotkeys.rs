//! Hot-key tracking glue: the command filter, keymiss events, the window timer and the
//! `OPT.HOTKEYS` command. The tracker itself is `opt_core::hotkeys`.
//!
//! The filter sees every command the server executes while it is registered: from clients,
//! inside MULTI, from Lua scripts and from other modules. A command with fixed key positions
//! (GET, SET, HGETALL...) costs a table lookup and a summary update; commands whose keys move
//! (ZUNIONSTORE, XREAD, module commands) ask the server's key specs. The update is applied one
//! recorded command late: the filter prefetches the summary's cache lines for the key and
//! applies the previous access, so the server runs a command while the lines arrive (see
//! `record_access`).
//!
//! Sampling is by time, not by command: with `opt.hotkeys-sample-ratio` N > 1 the filter is
//! registered for slices of `SLICE_MS` and unregistered between them, for random gaps that
//! average N - 1 slices. Redis dispatches every command to every registered filter (about 70
//! instructions on 7.0 before the filter's own work), so a filter that only skipped unsampled
//! commands would still cost that on all of them; an unregistered one costs nothing. The gaps
//! are exponential, so slices fall at random times and no periodic traffic stays in or out of
//! them. Each window's counts are scaled by the commands the server ran over the ones the
//! filter saw in that window (not by time: commands run slower while they are recorded; see
//! `HotKeyTracker::observe` and `HotKeyTracker::tick`). With N = 1 the filter stays registered
//! and counts are exact.
//!
//! With N = 0 (auto, the default) the sampler picks N itself from the load, so that about
//! `opt.hotkeys-sample-budget` commands a second are counted at most: each period the filter
//! was registered tells how many commands a second came; below the budget the filter stays
//! registered (every command counted, for periods of `POLL_MS`), above it the sampler runs
//! slices with gaps for N = rate / budget; a long gap looks at the command rate every 250 ms
//! and is drawn again when the rate has moved (`wait_out_gap`). The cost of tracking then no
//! longer grows with the load: a fixed ratio of 10 cost a server saturated by redis-benchmark
//! GETs 2.2% of its CPU on Redis 7.0, of which 1.6% was recording (docs/benchmarks.md).
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
use opt_core::keyspec::{
    fixed_positions, spec_writes, CommandRow, KeyAccess, KeySpecRow, KeySpecTable,
};
use opt_core::sketch::Kind;
use redis_module::raw;

use crate::commands::Call;
use crate::reply::{filter_arg, string_bytes, Reply, ReplyError};
use crate::server::present;
use crate::state::{now_ms, MainThreadCell};
use crate::{configs, guard, log};

struct HotKeysState {
    tracker: HotKeyTracker,
    /// The last command name looked up and its key access: pipelines repeat commands.
    last_command: CachedCommand,
}

/// A command name (16 bytes at most, as the client spelled it) and how the filter finds its
/// keys, with the one-key case (GET, SET, HGET...) worked out once, not per command.
struct CachedCommand {
    name: [u8; 16],
    len: usize,
    access: KeyAccess,
    /// The position and kind of the command's only key, when it has exactly one.
    single: Option<(usize, Kind)>,
    /// Whether the command writes (a replica skips it: see `record_command`).
    writes: bool,
}

impl CachedCommand {
    const NONE: CachedCommand = CachedCommand {
        name: [0; 16],
        len: usize::MAX,
        access: KeyAccess::Skip,
        single: None,
        writes: false,
    };

    /// The entry for `name` (at most 16 bytes) and its key access.
    fn new(name: &[u8], access: KeyAccess) -> Self {
        let mut buf = [0u8; 16];
        buf[..name.len()].copy_from_slice(name);
        let single = match access {
            KeyAccess::Fixed {
                first, last, write, ..
            } if first as i32 == last => {
                Some((first as usize, if write { Kind::Write } else { Kind::Read }))
            }
            _ => None,
        };
        CachedCommand {
            name: buf,
            len: name.len(),
            access,
            single,
            writes: access.writes(),
        }
    }

    /// Whether this entry is for `name`, in any case. Clients spell a command the same way
    /// every time, so an exact byte loop (names are a few bytes: cheaper than a call to
    /// `memcmp`, and than folding the case of every byte) settles the common case.
    fn is(&self, name: &[u8]) -> bool {
        if name.len() != self.len {
            return false;
        }
        let cached = &self.name[..self.len];
        let mut i = 0;
        while i < name.len() {
            if name[i] != cached[i] {
                return name.eq_ignore_ascii_case(cached);
            }
            i += 1;
        }
        true
    }
}

/// Draws the gap before the next slice, in milliseconds: exponential with a mean of
/// `ratio - 1` times the slice that just ended, so the filter is registered for 1/ratio of
/// the time on average. The slice is measured, not taken as `SLICE_MS`: a timer fires only
/// once the event-loop iteration in progress is done, so under load a 2 ms slice lasted about
/// 3, and with fixed gaps the filter saw 11 to 14% of the commands instead of 10%.
fn draw_gap_ms(ratio: f64, slice_ms: f64) -> i64 {
    let u = ((crate::state::random_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let slice_ms = slice_ms.clamp(SLICE_MS as f64, 10.0 * SLICE_MS as f64);
    let mean = (ratio - 1.0).max(0.0) * slice_ms;
    ((-u.ln() * mean).min(longest_gap_ms()).round() as i64).max(1)
}

/// The longest gap between two slices: half of `opt.hotkeys-window-seconds`. Each window's
/// counts are scaled by the commands the server ran in it over the ones the filter saw, so
/// a window that fell inside a gap had commands and no counts, and they were missing from
/// every view: with 1 s windows and a busy spell sampled one command in 100, the total came
/// out at a sixth to a third of the spell's commands (end-to-end test
/// `a_quiet_window_keeps_its_counts_beside_a_sampled_busy_one`, under the load of the whole
/// suite with I/O threads). At the default 60 s window a gap reaches 30 s only at a ratio of
/// about 3,000, so only short windows sample more than their budget because of it.
fn longest_gap_ms() -> f64 {
    (configs::int(idx::HOTKEYS_WINDOW_SECONDS).max(1) as f64) * 500.0
}

/// Auto mode, during a gap longer than `GAP_CHECK_MS`: the gap being waited out (see
/// `opt_core::hotkeys::rechecked_gap_ms`). Only the sampler's timer touches it.
struct Gap {
    /// When it ends, in microseconds since the module's epoch.
    end_us: u64,
    /// The sample ratio it was drawn for, and the slice length its mean was taken from.
    ratio: f64,
    slice_ms: f64,
    /// When the rate was last read, and the server's command count then.
    checked_us: u64,
    checked_commands: u64,
}

static GAP: MainThreadCell<Option<Gap>> = MainThreadCell::new(None);

/// Inside a long gap, woken every `GAP_CHECK_MS`: reads the command rate since the last check
/// and, when it calls for a sample ratio more than twice off the gap's, draws the rest of the
/// gap again. Returns the milliseconds to wait before the next check or the slice, or None
/// when the gap is over (or there is none) and a slice should start.
///
/// # Safety
/// `ctx` must be the sampler timer's live context, on the main thread.
unsafe fn wait_out_gap(ctx: *mut raw::RedisModuleCtx, now_us: u64) -> Option<i64> {
    let commands = commands_run(ctx);
    GAP.with(|gap| {
        let g = gap.as_mut()?;
        if let Some(commands) = commands {
            let elapsed_ms = now_us.saturating_sub(g.checked_us) as f64 / 1000.0;
            if elapsed_ms > 0.0 {
                let budget = configs::int(idx::HOTKEYS_SAMPLE_BUDGET).max(1) as u64;
                let ran = commands.saturating_sub(g.checked_commands);
                let now_ratio = opt_core::hotkeys::period_sample_ratio(0, budget, ran, elapsed_ms);
                let u = ((crate::state::random_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                if let Some(left_ms) =
                    opt_core::hotkeys::rechecked_gap_ms(g.ratio, now_ratio, g.slice_ms, u)
                {
                    g.end_us = now_us + (left_ms.min(longest_gap_ms()) * 1000.0) as u64;
                    g.ratio = now_ratio;
                }
            }
            g.checked_us = now_us;
            g.checked_commands = commands;
        }
        let left_ms = g.end_us.saturating_sub(now_us).div_ceil(1000) as i64;
        if left_ms == 0 {
            *gap = None;
            return None;
        }
        Some(if commands.is_some() {
            left_ms.min(opt_core::hotkeys::GAP_CHECK_MS)
        } else {
            left_ms
        })
    })
    .flatten()
}

/// Whether the current period with the filter registered is a sampling slice (not a period
/// in which every command is recorded).
static IN_SLICE: AtomicBool = AtomicBool::new(false);

/// When the current period with the filter registered began, in microseconds since the
/// module's epoch, and `SEEN` then.
static PERIOD_STARTED_US: AtomicU64 = AtomicU64::new(0);
static PERIOD_STARTED_SEEN: AtomicU64 = AtomicU64::new(0);

/// `opt.hotkeys-sample-ratio`: N, or 0 for auto (see the module docs).
fn configured_sample_ratio() -> u64 {
    configs::int(idx::HOTKEYS_SAMPLE_RATIO).max(0) as u64
}

/// How long the filter stays registered in each slice, in milliseconds.
/// Each slice starts with the tracker's tables out of the cache: at 2 ms, sparse slices (one
/// command in 100) cost about 40% of a command per command recorded, against 9% at ratio 1;
/// at 10 ms the defaults cost 0.8% instead of 1.2% (docs/benchmarks.md).
const SLICE_MS: i64 = 10;
/// How often the sampler looks at the configuration while the filter stays registered
/// (sample ratio 1) or stays off (tracking disabled).
const POLL_MS: i64 = 100;

/// The registered filter, or null between slices.
static FILTER: AtomicPtr<raw::RedisModuleCommandFilter> = AtomicPtr::new(ptr::null_mut());
/// Commands the filter has seen since the module loaded.
static SEEN: AtomicU64 = AtomicU64::new(0);
/// `SEEN` and the server's command count (less this module's own calls) when they were last
/// handed to the tracker.
static SEEN_BASE: AtomicU64 = AtomicU64::new(0);
static ALL_BASE: AtomicU64 = AtomicU64::new(0);

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
            last_command: CachedCommand::NONE,
        })
    });
    let rows = command_rows(ctx);
    let table = KeySpecTable::from_rows(&rows);
    let split = rows.iter().filter(|r| r.mixes_reads_and_writes()).count();
    log::notice(&format!(
        "hot keys: key positions of {} commands cached ({split} of them read some keys and \
         write others)",
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
        if !present(raw::RedisModule_RegisterCommandFilter)
            || !present(raw::RedisModule_CommandFilterArgsCount)
            || !present(raw::RedisModule_CommandFilterArgGet)
        {
            log::warning("no command-filter API: hot keys are not tracked on this server");
        } else {
            if !present(raw::RedisModule_UnregisterCommandFilter) {
                log::warning(
                    "no API to unregister a command filter: every command is counted, whatever \
                     opt.hotkeys-sample-ratio says",
                );
            }
            restart_accounting(ctx);
            on_slice(ctx, ptr::null_mut());
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

/// Reads `COMMAND` into rows (name, flags, first/last/step, subcommands, key specs).
fn command_rows(ctx: *mut raw::RedisModuleCtx) -> Vec<CommandRow> {
    let mut rows = Vec::new();
    // SAFETY: ctx is the OnLoad context; the reply tree is only read before it is freed, and
    // every element pointer comes from the API for an index below the reported length.
    unsafe {
        let (Some(len), Some(elem), Some(int), Some(kind), Some(free)) = (
            raw::RedisModule_CallReplyLength,
            raw::RedisModule_CallReplyArrayElement,
            raw::RedisModule_CallReplyInteger,
            raw::RedisModule_CallReplyType,
            raw::RedisModule_FreeCallReply,
        ) else {
            return rows;
        };
        let Some(reply) = crate::state::module_call!(ctx, c"COMMAND".as_ptr(), c"".as_ptr()) else {
            return rows;
        };
        if reply.is_null() {
            return rows;
        }
        let text = |r: *mut raw::RedisModuleCallReply| -> String {
            crate::reply::call_reply_bytes(r)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
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
                // The value of `name` in a map (a flat array of name, value pairs in RESP2).
                let field = |map: *mut raw::RedisModuleCallReply, name: &str| {
                    if !is_array(map) {
                        return None;
                    }
                    (0..len(map).saturating_sub(1))
                        .step_by(2)
                        .find(|&j| text(elem(map, j)) == name)
                        .map(|j| elem(map, j + 1))
                };
                let number = |map, name| {
                    field(map, name)
                        .filter(|&r| kind(r) == raw::REDISMODULE_REPLY_INTEGER as c_int)
                        .map(|r| int(r))
                };
                let mut key_specs = Vec::new();
                let specs = if len(e) > 8 {
                    elem(e, 8)
                } else {
                    ptr::null_mut()
                };
                if is_array(specs) {
                    for s in 0..len(specs) {
                        let spec = elem(specs, s);
                        let spec_flags: Vec<String> = field(spec, "flags")
                            .filter(|&f| is_array(f))
                            .map(|f| (0..len(f)).map(|j| text(elem(f, j))).collect())
                            .unwrap_or_default();
                        let typed = |name: &str, wanted: &str| {
                            field(spec, name)
                                .filter(|&m| field(m, "type").is_some_and(|t| text(t) == wanted))
                        };
                        let index = typed("begin_search", "index")
                            .and_then(|m| field(m, "spec"))
                            .and_then(|m| number(m, "index"));
                        let keyword = typed("begin_search", "keyword")
                            .and_then(|m| field(m, "spec"))
                            .and_then(|m| {
                                Some((text(field(m, "keyword")?), number(m, "startfrom")?))
                            });
                        let range = typed("find_keys", "range")
                            .and_then(|m| field(m, "spec"))
                            .and_then(|m| {
                                Some((
                                    number(m, "lastkey")?,
                                    number(m, "keystep")?,
                                    number(m, "limit")?,
                                ))
                            });
                        let keynum = typed("find_keys", "keynum")
                            .and_then(|m| field(m, "spec"))
                            .and_then(|m| {
                                Some((
                                    number(m, "keynumidx")?,
                                    number(m, "firstkey")?,
                                    number(m, "keystep")?,
                                ))
                            });
                        key_specs.push(KeySpecRow {
                            incomplete: spec_flags.iter().any(|f| f == "incomplete"),
                            write: spec_writes(&spec_flags),
                            index,
                            keyword,
                            range,
                            keynum,
                        });
                    }
                }
                rows.push(CommandRow {
                    name: text(elem(e, 0)).to_ascii_lowercase(),
                    flags,
                    first: int(elem(e, 3)),
                    last: int(elem(e, 4)),
                    step: int(elem(e, 5)),
                    has_subcommands: is_array(subs) && len(subs) > 0,
                    key_specs,
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
        LAST_SAMPLED.store(false, Ordering::Relaxed);
        return;
    }
    LAST_SAMPLED.store(true, Ordering::Relaxed);
    SEEN.store(SEEN.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    guard::catch_and_log("hot-key filter", || {
        STATE.with(|state| {
            if let Some(st) = state.as_mut() {
                // SAFETY: fctx is valid for the duration of this callback.
                unsafe { record_command(st, fctx) }
            }
        });
    });
}

/// # Safety
/// `fctx` must be the live filter context.
unsafe fn record_command(st: &mut HotKeysState, fctx: *mut raw::RedisModuleCommandFilterCtx) {
    let argc = match raw::RedisModule_CommandFilterArgsCount {
        Some(count) => count(fctx).max(0) as usize,
        None => return,
    };
    if argc < 2 {
        return;
    }
    let replica = IS_REPLICA.load(Ordering::Relaxed);
    let name = filter_arg(fctx, 0);
    // On a replica a command that writes comes from the master's stream: none of its keys,
    // not even the ones it only reads (the sources of SUNIONSTORE), is client traffic.
    if !st.last_command.is(name) {
        let access = KEYSPECS
            .get()
            .map(|t| t.lookup(name))
            .unwrap_or(KeyAccess::Skip);
        if name.len() > 16 {
            // Too long to keep (module commands): looked up every time.
            if !(replica && access.writes()) {
                record_keys(st, fctx, argc, replica, access);
            }
            return;
        }
        st.last_command = CachedCommand::new(name, access);
    }
    let command = &st.last_command;
    if replica && command.writes {
        return;
    }
    if let Some((pos, kind)) = command.single {
        if pos < argc {
            record_access(&mut st.tracker, filter_arg(fctx, pos), kind);
        }
        return;
    }
    let access = command.access;
    record_keys(st, fctx, argc, replica, access);
}

/// Records the keys of a command whose access is `access` (not a write on a replica: the
/// caller checked), the general case of `record_command`.
///
/// # Safety
/// `fctx` must be the live filter context with `argc` arguments.
unsafe fn record_keys(
    st: &mut HotKeysState,
    fctx: *mut raw::RedisModuleCommandFilterCtx,
    argc: usize,
    replica: bool,
    access: KeyAccess,
) {
    match access {
        KeyAccess::Skip => {}
        KeyAccess::Fixed {
            first,
            last,
            step,
            write,
        } => {
            let kind = if write { Kind::Write } else { Kind::Read };
            for pos in fixed_positions(first, last, step, argc) {
                record_access(&mut st.tracker, filter_arg(fctx, pos), kind);
            }
        }
        KeyAccess::Split { ranges } => {
            for r in ranges {
                let kind = if r.write { Kind::Write } else { Kind::Read };
                for pos in fixed_positions(r.first, r.last, r.step, argc) {
                    record_access(&mut st.tracker, filter_arg(fctx, pos), kind);
                }
            }
        }
        KeyAccess::Specs { specs, count } => {
            for spec in &specs[..usize::from(count)] {
                let kind = if spec.write { Kind::Write } else { Kind::Read };
                for pos in spec.positions(argc, |i| filter_arg(fctx, i)) {
                    record_access(&mut st.tracker, filter_arg(fctx, pos), kind);
                }
            }
        }
        KeyAccess::Dynamic { write } => record_dynamic(st, fctx, argc, replica, write),
    }
}

/// Records one access. The summary update runs during the next recorded command (or the next
/// query), after the server has run this one: by then the summary's first cache line for this
/// key, prefetched here, has arrived (see `HotKeyTracker::record_deferred`).
fn record_access(tracker: &mut HotKeyTracker, key: &[u8], kind: Kind) {
    let hash = opt_core::sketch::key_hash(key);
    for addr in tracker.prefetch_addresses(hash) {
        crate::state::prefetch(addr);
    }
    tracker.record_deferred(key, hash, kind);
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
        record_access(&mut st.tracker, string_bytes(argv[pos as usize]), kind);
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

/// The server's count of commands run, less the ones this module ran itself (which the
/// filter never sees).
///
/// # Safety
/// `ctx` must be a live context on the main thread.
unsafe fn commands_run(ctx: *mut raw::RedisModuleCtx) -> Option<u64> {
    crate::server::commands_processed(ctx).map(|n| n.saturating_sub(crate::state::own_calls()))
}

/// Hands the tracker the commands the filter saw and the commands the server ran since the
/// last call, so that sampled counts scale back by the share of commands seen. Called every
/// tick, before a window ends, and before a query.
///
/// # Safety
/// `ctx` must be a live context on the main thread.
unsafe fn account_commands(ctx: *mut raw::RedisModuleCtx, st: &mut HotKeysState) {
    let Some(all) = commands_run(ctx) else {
        return;
    };
    let seen = SEEN.load(Ordering::Relaxed);
    let seen_delta = seen.saturating_sub(SEEN_BASE.swap(seen, Ordering::Relaxed));
    // CONFIG RESETSTAT may have set the server's count back: start over from there.
    let all_delta = all.saturating_sub(ALL_BASE.swap(all, Ordering::Relaxed));
    st.tracker.observe(seen_delta, all_delta);
}

/// Starts counting from now (at load and on RESET).
///
/// # Safety
/// `ctx` must be a live context on the main thread.
unsafe fn restart_accounting(ctx: *mut raw::RedisModuleCtx) {
    SEEN_BASE.store(SEEN.load(Ordering::Relaxed), Ordering::Relaxed);
    if let Some(all) = commands_run(ctx) {
        ALL_BASE.store(all, Ordering::Relaxed);
    }
}

/// Registers the filter if it is not.
///
/// # Safety
/// `ctx` must be a live context of this module, on the main thread.
unsafe fn register_filter(ctx: *mut raw::RedisModuleCtx) {
    if !FILTER.load(Ordering::Relaxed).is_null() {
        return;
    }
    let f = crate::server::register_command_filter(ctx, filter);
    if f.is_null() {
        log::warning("could not register the hot-key command filter");
        return;
    }
    FILTER.store(f, Ordering::Relaxed);
}

/// Unregisters the filter if it is registered and the server can.
///
/// # Safety
/// `ctx` must be a live context of this module, on the main thread.
unsafe fn unregister_filter(ctx: *mut raw::RedisModuleCtx) {
    let f = FILTER.load(Ordering::Relaxed);
    let Some(unregister) = raw::RedisModule_UnregisterCommandFilter else {
        return;
    };
    if f.is_null() {
        return;
    }
    if unregister(ctx, f) == raw::REDISMODULE_OK as c_int {
        FILTER.store(ptr::null_mut(), Ordering::Relaxed);
        LAST_SAMPLED.store(false, Ordering::Relaxed);
    }
}

/// Whether the keymiss subscription is in place.
static FOLLOWING_MISSES: AtomicBool = AtomicBool::new(false);

/// Subscribes to keymiss events when tracking is on (at load, or later by `CONFIG SET
/// opt.hotkeys-enabled yes`). Redis builds a module context for every event it delivers, so a
/// server loaded with tracking off pays nothing for misses until tracking is turned on; and
/// where the server can unsubscribe (Redis 8.2+), the subscription is dropped again between
/// sampling slices and while tracking is off (`unfollow_misses`), when no miss is counted.
///
/// # Safety
/// `ctx` must be a live context of this module on the main thread.
unsafe fn follow_misses(ctx: *mut raw::RedisModuleCtx) {
    if FOLLOWING_MISSES.swap(true, Ordering::Relaxed) {
        return;
    }
    let subscribed = raw::RedisModule_SubscribeToKeyspaceEvents.is_some_and(|subscribe| {
        subscribe(ctx, raw::REDISMODULE_NOTIFY_KEY_MISS, Some(on_keymiss))
            == raw::REDISMODULE_OK as c_int
    });
    if !subscribed {
        log::warning("could not subscribe to keymiss events: misses are not counted");
    }
}

/// Drops the keymiss subscription where the server can (Redis 8.2+), during the sampler's gaps
/// and while tracking is off: a miss between slices is not counted anyway, and every event
/// delivered costs the server a module context.
///
/// # Safety
/// `ctx` must be a live context of this module on the main thread.
unsafe fn unfollow_misses(ctx: *mut raw::RedisModuleCtx) {
    let Some(unsubscribe) = raw::RedisModule_UnsubscribeFromKeyspaceEvents else {
        return;
    };
    if FOLLOWING_MISSES.load(Ordering::Relaxed)
        && unsubscribe(ctx, raw::REDISMODULE_NOTIFY_KEY_MISS, Some(on_keymiss))
            == raw::REDISMODULE_OK as c_int
    {
        FOLLOWING_MISSES.store(false, Ordering::Relaxed);
    }
}

/// The sampler: registers the filter for a slice, unregisters it for a random gap, and
/// reschedules itself. With ratio 1 the filter stays registered; with tracking disabled it
/// stays off; in auto mode (ratio 0) it stays registered while fewer than the budget's
/// commands a second come. Configuration changes take effect within `POLL_MS`.
///
/// # Safety
/// Called by Redis on the main thread when the timer fires (and once from OnLoad).
unsafe extern "C" fn on_slice(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    let next_ms = guard::catch(|| {
        // SAFETY: ctx is this module's live context on the main thread.
        unsafe {
            if !configs::flag(idx::HOTKEYS_ENABLED) {
                GAP.with(|g| *g = None);
                unregister_filter(ctx);
                unfollow_misses(ctx);
                return POLL_MS;
            }
            let configured = configured_sample_ratio();
            if configured == 1 || !present(raw::RedisModule_UnregisterCommandFilter) {
                GAP.with(|g| *g = None);
                IN_SLICE.store(false, Ordering::Relaxed);
                follow_misses(ctx);
                register_filter(ctx);
                return POLL_MS;
            }
            let now_us = crate::state::now_us();
            if configured != 0 {
                GAP.with(|g| *g = None);
            } else if FILTER.load(Ordering::Relaxed).is_null() {
                if let Some(wait_ms) = wait_out_gap(ctx, now_us) {
                    return wait_ms;
                }
            }
            follow_misses(ctx);
            let start_period = || {
                PERIOD_STARTED_US.store(now_us, Ordering::Relaxed);
                PERIOD_STARTED_SEEN.store(SEEN.load(Ordering::Relaxed), Ordering::Relaxed);
            };
            if FILTER.load(Ordering::Relaxed).is_null() {
                register_filter(ctx);
                start_period();
                IN_SLICE.store(true, Ordering::Relaxed);
                return SLICE_MS;
            }
            // A period with the filter registered ended.
            let elapsed_ms =
                now_us.saturating_sub(PERIOD_STARTED_US.load(Ordering::Relaxed)) as f64 / 1000.0;
            let seen = SEEN
                .load(Ordering::Relaxed)
                .saturating_sub(PERIOD_STARTED_SEEN.load(Ordering::Relaxed));
            let budget = configs::int(idx::HOTKEYS_SAMPLE_BUDGET).max(1) as u64;
            let ratio =
                opt_core::hotkeys::period_sample_ratio(configured, budget, seen, elapsed_ms);
            if ratio <= 1.0 {
                // Auto, under the budget: every command counts for the next period.
                start_period();
                IN_SLICE.store(false, Ordering::Relaxed);
                return POLL_MS;
            }
            if configured == 0 && !IN_SLICE.load(Ordering::Relaxed) {
                // Auto, over the budget after a period of every command: a slice first, so
                // that the gaps are drawn from a slice's length. (Told by a flag, not by the
                // period's length: a slice lasts as long as the event-loop iteration in
                // progress, so under big pipelines every slice looked like such a period and
                // sampling never began.)
                start_period();
                IN_SLICE.store(true, Ordering::Relaxed);
                return SLICE_MS;
            }
            unregister_filter(ctx);
            unfollow_misses(ctx);
            let gap_ms = draw_gap_ms(ratio, elapsed_ms);
            if configured != 0 || gap_ms <= opt_core::hotkeys::GAP_CHECK_MS {
                return gap_ms;
            }
            // Auto: a long gap is waited out in checks of the command rate.
            let Some(commands) = commands_run(ctx) else {
                return gap_ms;
            };
            GAP.with(|g| {
                *g = Some(Gap {
                    end_us: now_us + gap_ms as u64 * 1000,
                    ratio,
                    slice_ms: elapsed_ms.clamp(SLICE_MS as f64, 10.0 * SLICE_MS as f64),
                    checked_us: now_us,
                    checked_commands: commands,
                })
            });
            opt_core::hotkeys::GAP_CHECK_MS
        }
    })
    .unwrap_or_else(|p| {
        log::warning(&format!(
            "hot-key sampler failed with a panic at {}: {} (caught; it tries again)",
            p.location, p.message
        ));
        POLL_MS
    });
    // Rescheduled whatever happened above, so sampling never stops for good.
    if let Some(create) = raw::RedisModule_CreateTimer {
        create(ctx, next_ms, Some(on_slice), ptr::null_mut());
    }
}

/// # Safety
/// Called by Redis on the main thread when the timer fires.
unsafe extern "C" fn on_tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch_and_log("hot-key window timer", || {
        STATE.with(|s| {
            if let Some(st) = s.as_mut() {
                // SAFETY: the timer's context, on the main thread.
                unsafe { account_commands(ctx, st) };
                // A window that ends is scaled by its own sampling (exact at ratio 1).
                st.tracker.tick(now_ms(), configured_sample_ratio());
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
    let parsed = parse_command(call.args, capacity).map_err(ReplyError::err)?;
    let ratio = configured_sample_ratio();
    let now = now_ms();
    STATE
        .with(|s| {
            let st = s
                .as_mut()
                .ok_or_else(|| ReplyError::err("hot-key tracker not initialised"))?;
            match parsed {
                HotKeysCommand::Reset => {
                    // SAFETY: the command's context, on the main thread.
                    unsafe { restart_accounting(call.ctx) };
                    st.tracker.reset(now);
                    Ok(Reply::Status(c"OK"))
                }
                HotKeysCommand::Query(q) => {
                    // SAFETY: the command's context, on the main thread.
                    unsafe { account_commands(call.ctx, st) };
                    Ok(Reply::structured(st.tracker.query(&q, now, ratio)))
                }
            }
        })
        .unwrap_or_else(|| Err(ReplyError::err("hot-key tracker busy")))
}

/// `INFO opt` fields: (candidates tracked, accesses sampled, tracker bytes).
pub fn info_fields() -> Option<(u64, u64, u64)> {
    STATE
        .with(|s| {
            s.as_mut().map(|st| {
                (
                    st.tracker.tracked() as u64,
                    st.tracker.sampled(),
                    st.tracker.memory_bytes() as u64,
                )
            })
        })
        .flatten()
}

/// The hot-key reports OPT.ADVISE reads, top 10 each.
pub struct AdviceReports {
    /// All accesses, since the start or the last RESET.
    pub all_total: opt_core::report::HotKeysReport,
    /// Misses, since the start or the last RESET.
    pub misses_total: opt_core::report::HotKeysReport,
    /// All accesses, over the recent window.
    pub all_recent: opt_core::report::HotKeysReport,
    /// Misses, over the recent window.
    pub misses_recent: opt_core::report::HotKeysReport,
}

/// The hot-key reports for OPT.ADVISE, both windows: a key hot now on a server with a long
/// history shows only in the recent one.
pub fn reports_for_advice() -> Option<AdviceReports> {
    use opt_core::hotkeys::{HotKeysQuery, KindFilter, Window};
    let ratio = configured_sample_ratio();
    let now = now_ms();
    STATE
        .with(|s| {
            s.as_mut().map(|st| {
                let mut q = |kind, window| {
                    let query = HotKeysQuery {
                        count: 10,
                        kind,
                        window,
                        namespaces: false,
                    };
                    st.tracker.query(&query, now, ratio)
                };
                AdviceReports {
                    all_total: q(KindFilter::All, Window::Total),
                    misses_total: q(KindFilter::Miss, Window::Total),
                    all_recent: q(KindFilter::All, Window::Recent),
                    misses_recent: q(KindFilter::Miss, Window::Recent),
                }
            })
        })
        .flatten()
}
