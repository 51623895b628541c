//! Whether a keyspace event this module raises for its own write would reach anyone.
//!
//! OPT.SET raises `set` (and `expire`) as SET does, so that pub/sub subscribers and other
//! modules see the same events. Raising one is not free even when nobody listens: the server
//! builds a module context for every module subscribed to the event's class, and on Redis 7.0
//! the tag index itself is subscribed to string events, so each OPT.SET paid for a context
//! delivering its own `set` back to the index, which ignores it (about 5% of a short
//! OPT.SET). The event can only be observed by pub/sub, when `notify-keyspace-events`
//! publishes its class, and by another module. So the module counts the other modules loaded
//! (`INFO modules` at load, then the server's module-change events) and raises its own events
//! only when one of the two could see them: what every observer gets is unchanged.

use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use redis_module::raw;

use crate::MODULE_NAME;

/// How many loaded modules other than this one may receive its events: every other module
/// but the built-in ones in [`BUILT_IN_MODULES_WITHOUT_EVENTS`].
static OTHER_MODULES: AtomicUsize = AtomicUsize::new(0);
/// Set once [`OTHER_MODULES`] was counted at load; until then (or if `INFO modules` failed)
/// every event is raised.
static COUNTED: AtomicBool = AtomicBool::new(false);

/// Modules that ship inside a server and subscribe to no keyspace event, as `(server, module)`
/// with the server as `server_identity` names it: Redis 8's vector sets (`vectorset`, checked
/// in Redis' `modules/vector-sets/vset.c`) and Valkey 9's Lua engine (`lua`,
/// `src/modules/lua/engine_lua.c`). Counting them would make every OPT.SET on those servers
/// raise events that nobody receives.
const BUILT_IN_MODULES_WITHOUT_EVENTS: [(&str, &str); 2] =
    [("redis", "vectorset"), ("valkey", "lua")];

/// The server's name as `server_identity` gives it (`redis`, `valkey`), set at load.
static SERVER_NAME: OnceLock<String> = OnceLock::new();

/// Whether a module named `name` may receive this module's events: any module but this one
/// and the server's built-in modules that subscribe to none.
fn may_listen(name: &str) -> bool {
    let server = SERVER_NAME.get().map(String::as_str).unwrap_or_default();
    name != MODULE_NAME && !BUILT_IN_MODULES_WITHOUT_EVENTS.contains(&(server, name))
}

/// Counts the modules loaded before this one that may receive its events, from `INFO
/// modules`; called from OnLoad, when this module is not listed yet (it is filtered out by
/// name anyway). `identity` is the server's name and version (`redis 8.6.3`). Built-in
/// modules may also load after this one (Valkey 9 loads `lua` after the configured modules),
/// which [`on_server_event`] sees.
pub fn init(ctx: *mut raw::RedisModuleCtx, identity: &str) {
    let _ = SERVER_NAME.set(identity.split(' ').next().unwrap_or_default().to_string());
    let Some(text) = crate::info_section(ctx, c"modules") else {
        crate::log::warning(
            "could not read INFO modules: this module's own keyspace events are always raised",
        );
        return;
    };
    let others: Vec<&str> = opt_core::version::other_modules(&text, MODULE_NAME)
        .into_iter()
        .filter(|m| may_listen(m))
        .collect();
    OTHER_MODULES.store(others.len(), Ordering::Relaxed);
    COUNTED.store(true, Ordering::Relaxed);
    if !others.is_empty() {
        crate::log::notice(&format!(
            "other modules loaded ({}): this module's own keyspace events are always raised",
            others.join(", ")
        ));
    }
}

/// Follows modules loaded and unloaded after this one (`REDISMODULE_EVENT_MODULE_CHANGE`).
///
/// # Safety
/// `data` is what the server passed with the event: a `RedisModuleModuleChange` for a
/// module-change event.
pub unsafe fn on_server_event(eid: u64, subevent: u64, data: *mut c_void) {
    if eid != raw::REDISMODULE_EVENT_MODULE_CHANGE || data.is_null() {
        return;
    }
    // SAFETY: for this event the server passes a live RedisModuleModuleChange.
    let change = unsafe { &*(data as *const raw::RedisModuleModuleChange) };
    if change.module_name.is_null() {
        return;
    }
    // SAFETY: the server's module name, a NUL-terminated string live during the event.
    let name = unsafe { CStr::from_ptr(change.module_name) }.to_string_lossy();
    if !may_listen(&name) {
        return;
    }
    if subevent == raw::REDISMODULE_SUBEVENT_MODULE_LOADED {
        OTHER_MODULES.fetch_add(1, Ordering::Relaxed);
    } else if subevent == raw::REDISMODULE_SUBEVENT_MODULE_UNLOADED {
        let _ = OTHER_MODULES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        });
    }
}

/// How many loaded modules other than this one may receive its keyspace events (`INFO opt`:
/// `opt_event_listener_modules`).
pub fn listener_modules() -> u64 {
    OTHER_MODULES.load(Ordering::Relaxed) as u64
}

/// Whether an event of class `kind` (`REDISMODULE_NOTIFY_STRING`, ...) that this module
/// raises for a write it already applied to its own index could be seen: by pub/sub under
/// the current `notify-keyspace-events`, or by another module.
pub fn anyone_sees(kind: i32) -> bool {
    if !COUNTED.load(Ordering::Relaxed) || OTHER_MODULES.load(Ordering::Relaxed) > 0 {
        return true;
    }
    // SAFETY: reads the server's current flags; no arguments.
    let Some(flags) = (unsafe { raw::RedisModule_GetNotifyKeyspaceEvents.map(|f| f()) }) else {
        return true;
    };
    let published = raw::REDISMODULE_NOTIFY_KEYSPACE | raw::REDISMODULE_NOTIFY_KEYEVENT;
    flags & kind != 0 && flags & published != 0
}
