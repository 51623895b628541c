//! redis-cache-optimizer's Redis module (`libredis_opt.so`, listed as `opt`).
//!
//! This crate is the FFI glue only: `RedisModule_OnLoad`, the command dispatcher, config and
//! INFO callbacks. Every entry point Redis calls runs inside `guard::catch`, so a bug becomes
//! an error reply and a log line, never a crashed server. The logic lives in `opt_core`.

mod acl;
mod advise;
// The server's allocator is unavailable to unit tests, which run without a server.
#[cfg(not(test))]
mod allocator;
mod big_key_watch;
mod blocked;
mod client_db;
mod commands;
mod configs;
mod event_audience;
mod events;
mod guard;
mod hotkeys;
mod info;
mod keyspace;
mod log;
mod reply;
mod resp;
mod server;
mod slot_migration;
mod state;
mod tag_info;
mod tag_migration;
mod tags;

use std::ffi::{c_int, CStr, CString};

use opt_core::version::{server_identity, MIN_SUPPORTED};
use redis_module::raw;

use crate::commands::{Call, CommandSpec, COMMANDS};
use crate::reply::ReplyError;

/// The module's name in `MODULE LIST`, `INFO` and log lines.
pub const MODULE_NAME: &str = "opt";

/// The crate version, which is the module version.
pub const MODULE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `major * 10000 + minor * 100 + patch`, the integer `MODULE LIST` shows.
const MODULE_VERSION_INT: c_int = {
    const fn parse(s: &str) -> c_int {
        let b = s.as_bytes();
        let mut i = 0;
        let mut v = 0;
        while i < b.len() {
            v = v * 10 + (b[i] - b'0') as c_int;
            i += 1;
        }
        v
    }
    parse(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
        + parse(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + parse(env!("CARGO_PKG_VERSION_PATCH"))
};

// Memory goes through Redis' allocator so that INFO memory and maxmemory see it. Unit tests of
// this crate run without a server, where that allocator is unavailable.
#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: allocator::ServerAlloc = allocator::ServerAlloc;

/// Called by subsystems' config setters before a numeric or boolean value changes; an error
/// refuses the change with that message.
pub(crate) fn before_config_change(index: usize, value: i64) -> Result<(), String> {
    hotkeys::apply_config(index, value);
    Ok(())
}

/// Called before a string config changes; an error refuses the change with that message.
pub(crate) fn before_string_config_change(index: usize, value: &str) -> Result<(), String> {
    if index == opt_core::config::idx::KEY_DELIMITERS {
        hotkeys::apply_delimiters(value);
    }
    Ok(())
}

/// Entry point: `loadmodule /path/libredis_opt.so [opt.<name> <value> ...]`.
///
/// # Safety
/// Called by Redis once, on the main thread, with a valid context and `argc` arguments.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // Nothing may allocate before RedisModule_Init fills the allocator pointers, hence the
    // static name.
    if raw::Export_RedisModule_Init(
        ctx,
        c"opt".as_ptr(),
        MODULE_VERSION_INT,
        raw::REDISMODULE_APIVER_1 as c_int,
    ) == raw::REDISMODULE_ERR as c_int
    {
        return raw::REDISMODULE_ERR as c_int;
    }
    guard::install_panic_hook();
    let args: Vec<String> = (0..argc.max(0) as usize)
        .map(|i| String::from_utf8_lossy(reply::string_bytes(*argv.add(i))).into_owned())
        .collect();
    match guard::catch(|| load(ctx, &args)) {
        Ok(Ok(())) => raw::REDISMODULE_OK as c_int,
        Ok(Err(why)) => {
            log::warning(&format!("not loaded: {why}"));
            raw::REDISMODULE_ERR as c_int
        }
        Err(p) => {
            log::warning(&format!(
                "not loaded: panic at {}: {}",
                p.location, p.message
            ));
            raw::REDISMODULE_ERR as c_int
        }
    }
}

fn load(ctx: *mut raw::RedisModuleCtx, args: &[String]) -> Result<(), String> {
    let version = server::version().ok_or(
        "this server has no RedisModule_GetServerVersion, so it is older than Redis 6.0.9; \
         redis-cache-optimizer needs Redis 7.0 or later (or Valkey 7.2 or later)",
    )?;
    if !version.is_supported() {
        return Err(format!(
            "server version {version} is older than {MIN_SUPPORTED}, the oldest that \
             redis-cache-optimizer supports (it needs the module-config and key-spec APIs of 7.0)"
        ));
    }
    let features = server::detect_features();
    let display_version = info_section(ctx, c"server")
        .as_deref()
        .and_then(server_identity)
        .unwrap_or_else(|| format!("redis {version}"));
    let overrides = configs::parse_load_args(args)?;
    for (index, spec) in COMMANDS.iter().enumerate() {
        create_command(ctx, index, spec)?;
    }
    configs::register_all(ctx, &overrides)?;
    hotkeys::init(ctx)?;
    tags::init(ctx)?;
    tag_migration::init(ctx);
    keyspace::init(ctx);
    big_key_watch::init(ctx);
    reply::init_ok_reply(ctx);
    event_audience::init(ctx, &display_version);
    events::subscribe(ctx, &display_version)?;
    info::register(ctx)?;
    let found: Vec<String> = features
        .iter()
        .map(|f| format!("{}={}", f.name, if f.available { "yes" } else { "no" }))
        .collect();
    for f in features.iter().filter(|f| !f.available) {
        log::notice(&format!("optional API '{}' not found: {}", f.name, f.note));
    }
    log::notice(&format!(
        "redis-cache-optimizer {MODULE_VERSION} loaded on {display_version}; features: {}",
        found.join(" ")
    ));
    server::record(server::ServerInfo::new(display_version, features));
    Ok(())
}

/// The text of one `INFO` section (`c"server"`, `c"modules"`), through `RedisModule_Call`.
pub(crate) fn info_section(ctx: *mut raw::RedisModuleCtx, section: &CStr) -> Option<String> {
    // SAFETY: ctx is a live context of this module on the main thread; "c" takes one C
    // string; the reply is freed below and its buffer copied before that.
    unsafe {
        let reply =
            crate::state::module_call!(ctx, c"INFO".as_ptr(), c"c".as_ptr(), section.as_ptr())?;
        if reply.is_null() {
            return None;
        }
        let text = reply::call_reply_bytes(reply).map(|b| String::from_utf8_lossy(b).into_owned());
        raw::RedisModule_FreeCallReply?(reply);
        text
    }
}

fn create_command(
    ctx: *mut raw::RedisModuleCtx,
    index: usize,
    spec: &CommandSpec,
) -> Result<(), String> {
    let name = CString::new(spec.name).map_err(|e| e.to_string())?;
    let flags = CString::new(spec.flags).map_err(|e| e.to_string())?;
    let func = *TRAMPOLINES
        .get(index)
        .ok_or_else(|| format!("more commands than trampolines ({})", TRAMPOLINES.len()))?;
    let (first, last, step) = spec.keys;
    // SAFETY: OnLoad context; Redis copies the name and flags; func is an extern "C" function
    // with the command signature.
    let status = unsafe {
        raw::RedisModule_CreateCommand.ok_or("no CreateCommand API")?(
            ctx,
            name.as_ptr(),
            Some(func),
            flags.as_ptr(),
            first,
            last,
            step,
        )
    };
    if status != raw::REDISMODULE_OK as c_int {
        return Err(format!("could not create command {}", spec.name));
    }
    if spec.acl_categories.is_empty() {
        return Ok(());
    }
    // SAFETY: as above; the command was just created, so GetCommand finds it.
    unsafe {
        if let (Some(get), Some(set_acl)) = (
            raw::RedisModule_GetCommand,
            raw::RedisModule_SetCommandACLCategories,
        ) {
            let cmd = get(ctx, name.as_ptr());
            let cats = CString::new(spec.acl_categories).map_err(|e| e.to_string())?;
            if !cmd.is_null() && set_acl(cmd, cats.as_ptr()) != raw::REDISMODULE_OK as c_int {
                log::warning(&format!("could not set ACL categories of {}", spec.name));
            }
        }
    }
    Ok(())
}

type CommandFunc = unsafe extern "C" fn(
    *mut raw::RedisModuleCtx,
    *mut *mut raw::RedisModuleString,
    c_int,
) -> c_int;

/// One `extern "C"` entry point per table index, so dispatch needs no name lookup.
///
/// # Safety
/// Called by Redis on the main thread with a valid context and `argc` valid arguments.
unsafe extern "C" fn trampoline<const I: usize>(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    dispatch(&COMMANDS[I], ctx, argv, argc);
    raw::REDISMODULE_OK as c_int
}

macro_rules! trampolines {
    ($($i:literal)*) => { const TRAMPOLINES: &[CommandFunc] = &[$(trampoline::<$i>),*]; };
}
trampolines!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);

/// Runs one command: decodes arguments, handles `FORMAT JSON`, catches panics, replies.
///
/// # Safety
/// `argv` must hold `argc` valid strings that outlive the call.
unsafe fn dispatch(
    spec: &CommandSpec,
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) {
    let outcome = guard::catch(|| {
        // The arguments' bytes, on the stack for the usual short command lines: a heap vector
        // cost an allocation and a free through the server's allocator on every command.
        const INLINE: usize = 24;
        let n = (argc.max(1) - 1) as usize;
        // SAFETY: argv holds argc strings, valid during the call.
        let arg = |i: usize| unsafe { reply::string_bytes(*argv.add(i + 1)) };
        let mut inline: [&[u8]; INLINE] = [&[]; INLINE];
        let mut heap: Vec<&[u8]> = Vec::new();
        let args: &[&[u8]] = if n <= INLINE {
            for (i, slot) in inline[..n].iter_mut().enumerate() {
                *slot = arg(i);
            }
            &inline[..n]
        } else {
            heap.extend((0..n).map(arg));
            &heap
        };
        let (args, as_json) = match take_format(spec, args) {
            Ok(split) => split,
            Err(e) => return (Err(e), false),
        };
        // SAFETY: argv holds argc strings, valid during the call.
        let all = unsafe { std::slice::from_raw_parts(argv, argc.max(0) as usize) };
        let argv = all.get(1..1 + args.len()).unwrap_or(&[]);
        let call = Call {
            ctx,
            args,
            argv,
            as_json,
        };
        ((spec.handler)(&call), as_json)
    });
    match outcome {
        Ok((result, as_json)) => reply::send(ctx, result, as_json),
        Err(p) => reply::send_error(
            ctx,
            &format!(
                "ERR internal error in {}: {} at {} (logged; the server keeps running)",
                spec.name, p.message, p.location
            ),
        ),
    }
}

/// Splits off a trailing `FORMAT JSON` (or rejects another format) for commands that allow
/// it: the arguments without it, and whether it was there.
fn take_format<'a, 'b>(
    spec: &CommandSpec,
    args: &'a [&'b [u8]],
) -> Result<(&'a [&'b [u8]], bool), ReplyError> {
    let n = args.len();
    if !spec.json || n < 2 || !args[n - 2].eq_ignore_ascii_case(b"FORMAT") {
        return Ok((args, false));
    }
    if !args[n - 1].eq_ignore_ascii_case(b"JSON") {
        return Err(ReplyError::err(format!(
            "unknown FORMAT '{}' for {}: the only format is JSON",
            String::from_utf8_lossy(args[n - 1]),
            spec.name
        )));
    }
    Ok((&args[..n - 2], true))
}
