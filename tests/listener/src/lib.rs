//! A second module, loaded only by the end-to-end tests: it records every generic and string
//! keyspace event the server delivers to it, so a test can check what another module sees of
//! redis-cache-optimizer's writes. The optimizer raises its own events (OPT.SET's `set` and
//! `expire`) only when pub/sub or another module could see them; this module is that other
//! module. It uses the raw API only, as the crate's `redis_module!` macro needs Redis 7.2.

use std::ffi::{c_char, c_int, CStr};
use std::sync::Mutex;

use redis_module::raw;

/// `event key` for every event received since the last `LISTENER.EVENTS`.
static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The bytes of a server string.
///
/// # Safety
/// `s` is a live server string.
unsafe fn bytes<'a>(s: *mut raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0usize;
    match raw::RedisModule_StringPtrLen {
        Some(f) if !s.is_null() => {
            let p = f(s, &mut len);
            if p.is_null() {
                &[]
            } else {
                std::slice::from_raw_parts(p.cast::<u8>(), len)
            }
        }
        _ => &[],
    }
}

/// # Safety
/// Called by the server for a subscribed event, with a live event name and key.
unsafe extern "C" fn on_event(
    _ctx: *mut raw::RedisModuleCtx,
    _kind: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let event = CStr::from_ptr(event).to_string_lossy();
    let entry = format!("{event} {}", String::from_utf8_lossy(bytes(key)));
    if let Ok(mut events) = EVENTS.lock() {
        events.push(entry);
    }
    raw::REDISMODULE_OK as c_int
}

/// `LISTENER.EVENTS`: the events received since the last call, oldest first; forgets them.
///
/// # Safety
/// Called by the server with a live command context.
unsafe extern "C" fn events_command(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let taken = EVENTS
        .lock()
        .map(|mut e| std::mem::take(&mut *e))
        .unwrap_or_default();
    if let (Some(array), Some(buffer)) = (
        raw::RedisModule_ReplyWithArray,
        raw::RedisModule_ReplyWithStringBuffer,
    ) {
        array(ctx, taken.len() as _);
        for e in &taken {
            buffer(ctx, e.as_ptr().cast(), e.len());
        }
    }
    raw::REDISMODULE_OK as c_int
}

/// # Safety
/// Called by the server once, with a live context.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let err = raw::REDISMODULE_ERR as c_int;
    if raw::Export_RedisModule_Init(
        ctx,
        c"listener".as_ptr(),
        1,
        raw::REDISMODULE_APIVER_1 as c_int,
    ) == err
    {
        return err;
    }
    let (Some(create), Some(subscribe)) = (
        raw::RedisModule_CreateCommand,
        raw::RedisModule_SubscribeToKeyspaceEvents,
    ) else {
        return err;
    };
    if create(
        ctx,
        c"listener.events".as_ptr(),
        Some(events_command),
        c"readonly".as_ptr(),
        0,
        0,
        0,
    ) == err
    {
        return err;
    }
    subscribe(
        ctx,
        raw::REDISMODULE_NOTIFY_GENERIC | raw::REDISMODULE_NOTIFY_STRING,
        Some(on_event),
    )
}
