//! ACL checks that command flags cannot express on every server.
//!
//! Key names are sensitive, so OPT.HOTKEYS belongs to administrators. Redis 7.2+ (and Valkey)
//! let the module put the command in the `@admin` and `@dangerous` categories, and ACL rules do
//! the rest. Redis 7.0 gives module commands no categories at all, so `+@all -@admin` would
//! still allow it; there the command requires what reveals the same information, the right to
//! run MONITOR, and checks it itself. Deletions the module makes through the key API (keys of
//! a slot being imported) get their key permissions checked here too.

use std::ffi::c_int;
use std::ptr;

use redis_module::raw;

use crate::reply::ReplyError;

/// Whether this server can declare ACL categories on module commands.
pub fn categories_supported() -> bool {
    // SAFETY: reading whether the function pointer was filled by RedisModule_Init.
    unsafe { raw::RedisModule_SetCommandACLCategories }.is_some()
}

/// Who is calling, for a check the module makes itself.
enum Caller<R> {
    /// No client behind this call (an internal or module context): nothing to check.
    Internal,
    /// The server has no ACL API for modules.
    NoApi,
    /// The calling user was deleted meanwhile.
    Gone,
    /// What the check gave.
    Checked(R),
}

/// Runs `f` with the name of the user calling through `ctx`, freed afterwards.
fn with_caller_name<R>(
    ctx: *mut raw::RedisModuleCtx,
    f: impl FnOnce(*mut raw::RedisModuleString) -> Caller<R>,
) -> Caller<R> {
    // SAFETY: ctx is a live context; the name made here is only used by `f`, then freed.
    unsafe {
        let (Some(user_name), Some(free)) = (
            raw::RedisModule_GetCurrentUserName,
            raw::RedisModule_FreeString,
        ) else {
            return Caller::NoApi;
        };
        let name = user_name(ctx);
        if name.is_null() {
            return Caller::Internal;
        }
        let result = f(name);
        free(ctx, name);
        result
    }
}

/// Runs `check` with the calling user of `ctx`, freed afterwards.
fn with_caller<R>(
    ctx: *mut raw::RedisModuleCtx,
    check: impl FnOnce(*mut raw::RedisModuleUser) -> R,
) -> Caller<R> {
    // SAFETY: the name is live for the closure.
    with_caller_name(ctx, |name| unsafe { with_named_user(name, check) })
}

/// Runs `check` with the user called `name`, freed afterwards.
///
/// # Safety
/// `name` must be a live module string.
unsafe fn with_named_user<R>(
    name: *mut raw::RedisModuleString,
    check: impl FnOnce(*mut raw::RedisModuleUser) -> R,
) -> Caller<R> {
    let (Some(get_user), Some(free_user)) = (
        raw::RedisModule_GetModuleUserFromUserName,
        raw::RedisModule_FreeModuleUser,
    ) else {
        return Caller::NoApi;
    };
    let user = get_user(name);
    if user.is_null() {
        return Caller::Gone;
    }
    // The user is only used by `check`, before it is freed.
    let result = check(user);
    free_user(user);
    Caller::Checked(result)
}

/// Whether `user` may delete `key`; None when the server has no such check.
///
/// # Safety
/// `user` must be a live module user and `key` a live module string.
unsafe fn may_delete(
    user: *mut raw::RedisModuleUser,
    key: *mut raw::RedisModuleString,
) -> Option<bool> {
    let check = raw::RedisModule_ACLCheckKeyPermissions?;
    // The check takes the logical flags only (ACCESS, INSERT, DELETE, UPDATE).
    Some(check(user, key, raw::REDISMODULE_CMD_KEY_DELETE as c_int) == raw::REDISMODULE_OK as c_int)
}

/// The name of the user calling through `ctx`; None when no client is behind it or the
/// server cannot tell.
pub fn caller_name(ctx: *mut raw::RedisModuleCtx) -> Option<Vec<u8>> {
    // SAFETY: the name is live for the closure, and copied.
    match with_caller_name(ctx, |name| unsafe {
        Caller::Checked(crate::reply::string_bytes(name).to_vec())
    }) {
        Caller::Checked(bytes) => Some(bytes),
        _ => None,
    }
}

/// Whether user `name` may delete `key` (false when the user no longer exists or the server
/// cannot check).
pub fn user_may_delete(name: &[u8], key: *mut raw::RedisModuleString) -> bool {
    // SAFETY: the name string is made and freed here; key is a live string; the user lives
    // for the closure.
    unsafe {
        let (Some(create), Some(free)) =
            (raw::RedisModule_CreateString, raw::RedisModule_FreeString)
        else {
            return false;
        };
        let user_name = create(ptr::null_mut(), name.as_ptr().cast(), name.len());
        let allowed = with_named_user(user_name, |user| may_delete(user, key));
        free(ptr::null_mut(), user_name);
        matches!(allowed, Caller::Checked(Some(true)))
    }
}

/// On servers without ACL categories: refuses callers that may not run MONITOR.
pub fn require_monitor_equivalent(
    ctx: *mut raw::RedisModuleCtx,
    command: &str,
) -> Result<(), ReplyError> {
    if categories_supported() {
        return Ok(());
    }
    let allowed = match with_caller(ctx, |user| {
        // SAFETY: user is live during this closure and ctx is the live command context; the
        // string is freed after the check, which only reads it.
        unsafe {
            let (Some(check), Some(create), Some(free)) = (
                raw::RedisModule_ACLCheckCommandPermissions,
                raw::RedisModule_CreateString,
                raw::RedisModule_FreeString,
            ) else {
                return true;
            };
            let monitor = create(ctx, c"MONITOR".as_ptr(), 7);
            let mut argv = [monitor];
            let ok = check(user, argv.as_mut_ptr(), 1 as c_int) == raw::REDISMODULE_OK as c_int;
            free(ctx, monitor);
            ok
        }
    }) {
        Caller::Internal | Caller::NoApi => true,
        Caller::Gone => false,
        Caller::Checked(ok) => ok,
    };
    if allowed {
        Ok(())
    } else {
        Err(ReplyError(format!(
            "NOPERM {command} shows key names, so it needs the right to run MONITOR on this \
             server (Redis 7.0 has no ACL categories for module commands): \
             ACL SETUSER <user> +{} +monitor",
            command.to_ascii_lowercase()
        )))
    }
}

/// Refuses, naming the first such key, when the caller's ACL does not allow deleting every
/// one of `keys` (for deletions made through the key API, which checks no ACL itself).
pub fn require_delete_permission(
    ctx: *mut raw::RedisModuleCtx,
    keys: &[*mut raw::RedisModuleString],
) -> Result<(), ReplyError> {
    let refused = with_caller(ctx, |user| {
        // SAFETY: user is live during this closure and the keys are live strings of ctx.
        unsafe {
            for &k in keys {
                if !may_delete(user, k)? {
                    let name = String::from_utf8_lossy(crate::reply::string_bytes(k));
                    return Some(Some(name.into_owned()));
                }
            }
            Some(None)
        }
    });
    match refused {
        Caller::Internal | Caller::Checked(Some(None)) => Ok(()),
        Caller::NoApi | Caller::Checked(None) => Err(ReplyError::err(
            "this server has no ACL API for modules, so the deletion cannot be checked",
        )),
        Caller::Gone => Err(ReplyError(
            "NOPERM the calling user no longer exists".into(),
        )),
        Caller::Checked(Some(Some(key))) => Err(ReplyError(format!(
            "NOPERM this user has no permissions to access the '{key}' key (OPT.INVALIDATE \
             deleted nothing: every key must be allowed)"
        ))),
    }
}
