//! What server we were loaded into: its version, and which optional module APIs it offers.
//!
//! The module supports Redis 7.0 and later (and Valkey, which reports itself as Redis 7.2 to
//! modules). Some APIs appeared later; each is looked up once at load, logged, and the features
//! that need it degrade instead of crashing when it is missing.

use std::ffi::{c_int, CStr};
use std::sync::OnceLock;

use opt_core::report::Feature;
use opt_core::version::ServerVersion;
use redis_module::raw;

/// Facts about the hosting server, fixed at load.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `redis` or `valkey` and its own version, read from `INFO server` when available.
    pub display_version: String,
    /// Optional APIs and whether they were found.
    pub features: Vec<Feature>,
    /// `opt_core::version::longest_embedded_value` of this server.
    longest_embedded_value: usize,
    /// `opt_core::version::embeds_values_with_keys` of this server.
    embeds_values_with_keys: bool,
    /// `opt_core::version::leaves_client_in_event_db` of this server.
    leaves_client_in_event_db: bool,
}

impl ServerInfo {
    /// The facts of the server named by `display_version` (`valkey 8.1.1`), with what follows
    /// from its version worked out once here: OPT.SET asks some of it on every write.
    pub fn new(display_version: String, features: Vec<Feature>) -> Self {
        use opt_core::version as v;
        ServerInfo {
            longest_embedded_value: v::longest_embedded_value(&display_version),
            embeds_values_with_keys: v::embeds_values_with_keys(&display_version),
            leaves_client_in_event_db: v::leaves_client_in_event_db(&display_version),
            display_version,
            features,
        }
    }
}

static SERVER: OnceLock<ServerInfo> = OnceLock::new();

/// The server facts recorded at load.
pub fn info() -> Option<&'static ServerInfo> {
    SERVER.get()
}

/// Records the server facts (called once from `RedisModule_OnLoad`).
pub fn record(info: ServerInfo) {
    let _ = SERVER.set(info);
}

/// The longest string value the server may keep inside its object (`embstr`), which
/// `RedisModule_StringDMA` would rewrite as a separate (`raw`) one: 44 bytes on Redis and on
/// Valkey up to 8.1, 116 on Valkey 9.1 (`opt_core::version::longest_embedded_value`); 255,
/// the most any server embeds, before the facts are recorded at load.
pub fn longest_embedded_string() -> usize {
    info().map_or(255, |s| s.longest_embedded_value)
}

/// Whether OPT.SET may write a short (embedded) value in place, leaving a raw string where SET
/// leaves an embedded one: where that costs no memory (Redis, Valkey 8.0: `used_memory` moved
/// by 0 or -5 bytes a key, docs/benchmarks.md); not on Valkey 8.1+, whose embedded objects also
/// hold the key and its expiry (see `tags::overwrite_in_place`).
pub fn short_values_in_place() -> bool {
    info().is_some_and(|s| !s.embeds_values_with_keys)
}

/// Whether the server may leave a client in another database after a module's keyspace event
/// (Valkey 8.1 and 9.0, see `opt_core::version::leaves_client_in_event_db` and `client_db`).
pub fn leaves_client_in_event_db() -> bool {
    info().is_some_and(|s| s.leaves_client_in_event_db)
}

/// Reads the server version through `RedisModule_GetServerVersion`, if the server has it.
pub fn version() -> Option<ServerVersion> {
    // SAFETY: the pointer was filled (or left null) by RedisModule_Init; the function takes no
    // arguments and only reads a constant.
    unsafe { raw::RedisModule_GetServerVersion.map(|f| ServerVersion::from_packed(f())) }
}

/// Whether a module API function pointer was filled (takes the pointer by value, so no
/// reference to the mutable static is created).
pub fn present<F>(api: Option<F>) -> bool {
    api.is_some()
}

/// Registers `callback` as a command filter that skips the commands this module runs itself
/// (`REDISMODULE_CMDFILTER_NOSELF`); null when the server has no filter API or refuses it.
///
/// # Safety
/// `ctx` must be a live context of this module on the main thread, and `callback` must live as
/// long as the module (one of its `extern "C"` functions).
pub unsafe fn register_command_filter(
    ctx: *mut raw::RedisModuleCtx,
    callback: unsafe extern "C" fn(*mut raw::RedisModuleCommandFilterCtx),
) -> *mut raw::RedisModuleCommandFilter {
    match raw::RedisModule_RegisterCommandFilter {
        Some(register) => register(
            ctx,
            Some(callback),
            raw::REDISMODULE_CMDFILTER_NOSELF as c_int,
        ),
        None => std::ptr::null_mut(),
    }
}

/// Looks up the optional APIs this module can use.
pub fn detect_features() -> Vec<Feature> {
    // SAFETY: reading whether function pointers filled by RedisModule_Init are null.
    let present = unsafe {
        [
            present(raw::RedisModule_RegisterCommandFilter)
                && present(raw::RedisModule_CommandFilterArgGet),
            present(raw::RedisModule_GetCommandKeysWithFlags),
            present(raw::RedisModule_AddPostNotificationJob),
            present(raw::RedisModule_SetCommandACLCategories),
            present(raw::RedisModule_RegisterNumericConfig)
                && present(raw::RedisModule_LoadConfigs),
            present(raw::RedisModule_UnsubscribeFromKeyspaceEvents),
            has_overwritten_events(),
        ]
    };
    let notes = [
        (
            "command-filter",
            "counts keys of every command for hot keys",
        ),
        (
            "key-specs",
            "finds the keys of any command, including other modules' commands",
        ),
        (
            "post-notification-jobs",
            "index writes after keyspace events (Redis 7.2+; older servers defer to a timer)",
        ),
        (
            "acl-categories",
            "declares ACL categories on OPT commands (Redis 7.2+; older servers use command flags)",
        ),
        (
            "module-configs",
            "opt.* parameters in CONFIG GET/SET and redis.conf",
        ),
        (
            "keyspace-unsubscribe",
            "drops keymiss events between hot-key slices and an empty tag index's events (Redis 8.2+)",
        ),
        (
            "overwritten-events",
            "the tag index learns of replaced values from `overwritten` events, not from every write of every type (Redis 8.2+)",
        ),
    ];
    notes
        .iter()
        .zip(present)
        .map(|((name, note), available)| Feature {
            name: name.to_string(),
            available,
            note: note.to_string(),
        })
        .collect()
}

/// `overwritten` keyspace events (Redis 8.2+; not in `redismodule.h` of older servers).
pub const NOTIFY_OVERWRITTEN: i32 = 1 << 15;

/// Whether the server raises `overwritten` events when a command replaces a key's value (SET,
/// MSET, COPY and RESTORE with REPLACE, RENAME onto a key, BITOP, and every *STORE): Redis
/// 8.2 and later. Valkey reports itself as 7.2 to modules, so it never qualifies, whatever
/// its own flags mean.
pub fn has_overwritten_events() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(overwritten_events_found)
}

fn overwritten_events_found() -> bool {
    let recent = version().is_some_and(|v| {
        v >= ServerVersion {
            major: 8,
            minor: 2,
            patch: 0,
        }
    });
    // SAFETY: the pointer was filled (or left null) by RedisModule_Init; the call only reads
    // a constant.
    let flags = unsafe { raw::RedisModule_GetKeyspaceNotificationFlagsAll.map_or(0, |f| f()) };
    recent && flags & NOTIFY_OVERWRITTEN != 0
}

/// The server's count of commands run (`total_commands_processed`): it differs between any
/// two commands, scripts' and transactions' inner commands included.
///
/// # Safety
/// `ctx` must be a live context on the main thread.
pub unsafe fn commands_processed(ctx: *mut raw::RedisModuleCtx) -> Option<u64> {
    stats_fields(ctx, [c"total_commands_processed"]).map(|[n]| n)
}

/// The server's keyspace hits and misses (`keyspace_hits`, `keyspace_misses`).
///
/// # Safety
/// `ctx` must be a live context on the main thread.
pub unsafe fn keyspace_lookups(ctx: *mut raw::RedisModuleCtx) -> Option<(u64, u64)> {
    stats_fields(ctx, [c"keyspace_hits", c"keyspace_misses"]).map(|[h, m]| (h, m))
}

/// Unsigned fields of the server's INFO stats section, or None if any is missing.
///
/// # Safety
/// `ctx` must be a live context on the main thread.
unsafe fn stats_fields<const N: usize>(
    ctx: *mut raw::RedisModuleCtx,
    names: [&CStr; N],
) -> Option<[u64; N]> {
    let info = raw::RedisModule_GetServerInfo?(ctx, c"stats".as_ptr());
    if info.is_null() {
        return None;
    }
    let mut out = [0u64; N];
    let mut ok = true;
    if let Some(get) = raw::RedisModule_ServerInfoGetFieldUnsigned {
        for (value, name) in out.iter_mut().zip(names) {
            let mut err: std::ffi::c_int = 0;
            *value = get(info, name.as_ptr(), &mut err);
            ok &= err == 0;
        }
    } else {
        ok = false;
    }
    if let Some(free) = raw::RedisModule_FreeServerInfo {
        free(ctx, info);
    }
    ok.then_some(out)
}

/// Whether this server runs in cluster mode.
pub fn in_cluster(ctx: *mut raw::RedisModuleCtx) -> bool {
    // SAFETY: ctx is a live context; the flags are only read.
    unsafe {
        raw::RedisModule_GetContextFlags
            .is_some_and(|f| f(ctx) as u32 & raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0)
    }
}

/// Whether the server honours `aux_save2` (Redis 7.2 and later; Valkey reports 7.2.4).
pub fn supports_aux_save2() -> bool {
    version().is_some_and(|v| v >= REDIS_7_2)
}

/// Redis 7.2, where several of the facts here change (Valkey reports it too).
const REDIS_7_2: ServerVersion = ServerVersion {
    major: 7,
    minor: 2,
    patch: 0,
};

/// Whether a key past its expiry still expires when it is read or deleted from inside a
/// module's keyspace-event callback: on Redis 7.0. Redis 7.2 and later, and Valkey, switch lazy
/// expiry off while such a callback runs, so a DEL made there deletes a key whose time has
/// passed as if it were live, counts it, and raises `del` where DEL would raise `expired`
/// (seen on Redis 8.0.2 and Valkey 8.0.1, 8.1.1 and 9.1.2; test
/// `an_invalidation_counts_and_reports_keys_past_their_expiry_as_del_does`).
pub fn expires_lazily_in_event_callbacks() -> bool {
    version().is_some_and(|v| v < REDIS_7_2)
}

/// Whether a string key's MEMORY USAGE follows the layout `opt_core::memsize` computes: Redis
/// 7.x, where the key name and the value object are separate allocations. Redis 8 embeds the
/// name (and the TTL) in the value object, and Valkey 8 sizes short keys differently, so the
/// figure there depends on name and value lengths together in ways the computation does not
/// model. On those servers every key is asked: a calibration on the first keys agreed on
/// Redis 8.6 and then undercounted hundreds of keys by 16 bytes, whose names crossed a size
/// class the first ones did not.
pub fn string_sizes_computable() -> bool {
    // Asked for every string key of an analysis: decided once.
    static COMPUTABLE: OnceLock<bool> = OnceLock::new();
    *COMPUTABLE.get_or_init(|| {
        let redis = info().is_none_or(|s| s.display_version.starts_with("redis"));
        redis && version().is_some_and(|v| v.major == 7)
    })
}

/// Whether lists can be listpack-encoded (Redis 7.2 and later, and Valkey); before that every
/// list is a quicklist.
pub fn has_listpack_lists() -> bool {
    supports_aux_save2()
}
