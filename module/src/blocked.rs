//! Plumbing shared by the commands that answer later (OPT.KEYSPACE, OPT.ADVISE's samples,
//! OPT.TAGINFO of a big index): the client is blocked while the work runs in slices, and its
//! outcome travels to the reply callback as boxed private data.

use std::ffi::c_void;
use std::ptr;

use redis_module::raw;

use crate::reply::ReplyError;

/// The callbacks of a blocked client: the reply (also called on CLIENT UNBLOCK, with no
/// private data), and a notice that the client disconnected.
pub type ReplyCallback = unsafe extern "C" fn(
    *mut raw::RedisModuleCtx,
    *mut *mut raw::RedisModuleString,
    std::ffi::c_int,
) -> std::ffi::c_int;
/// See [`ReplyCallback`].
pub type DisconnectCallback =
    unsafe extern "C" fn(*mut raw::RedisModuleCtx, *mut raw::RedisModuleBlockedClient);

/// Blocks the client of `ctx` with no timeout, its outcome a `Box<T>` freed by Redis.
/// `command` names the command in the error when the client cannot be blocked.
///
/// Inside MULTI, a script or another module's call, Redis replies its own error to
/// `RedisModule_BlockClient` but still hands back a handle, so work started for it would run
/// to the end for nobody. Such a client is refused here, before anything starts.
///
/// # Safety
/// `ctx` must be the live command context. The caller must unblock the client exactly once,
/// with null or a `Box<T>` turned into a raw pointer as private data.
pub unsafe fn block<T>(
    ctx: *mut raw::RedisModuleCtx,
    command: &str,
    reply: ReplyCallback,
    disconnect: DisconnectCallback,
) -> Result<*mut raw::RedisModuleBlockedClient, ReplyError> {
    if !can_block(ctx) {
        return Err(ReplyError::err(format!(
            "{command} cannot run inside MULTI, a script or another module's call: it answers \
             after work done in slices between other clients' commands; send it on its own"
        )));
    }
    let block = raw::RedisModule_BlockClient
        .ok_or_else(|| ReplyError::err(format!("{command}: no BlockClient API")))?;
    let bc = block(ctx, Some(reply), Some(reply), Some(free_boxed::<T>), 0);
    if bc.is_null() {
        return Err(ReplyError::err(format!(
            "{command} cannot block this client (inside MULTI or a script?)"
        )));
    }
    if let Some(set_disconnect) = raw::RedisModule_SetDisconnectCallback {
        set_disconnect(bc, Some(disconnect));
    }
    Ok(bc)
}

/// Whether the client of `ctx` may be blocked (not inside MULTI, a script, or a module's call).
pub fn can_block(ctx: *mut raw::RedisModuleCtx) -> bool {
    // SAFETY: ctx is the live command context.
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx)) };
    let refused = raw::REDISMODULE_CTX_FLAGS_MULTI
        | raw::REDISMODULE_CTX_FLAGS_LUA
        | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING;
    flags & refused as std::ffi::c_int == 0
}

/// Unblocks `client` with `outcome` (None: nothing to reply, the client is gone).
///
/// # Safety
/// `client` must come from [`block`] with the same `T`, and not be unblocked yet.
pub unsafe fn unblock<T>(client: *mut raw::RedisModuleBlockedClient, outcome: Option<Box<T>>) {
    let data = outcome.map_or(ptr::null_mut(), |b| Box::into_raw(b).cast::<c_void>());
    if let Some(f) = raw::RedisModule_UnblockClient {
        f(client, data);
    }
}

/// The outcome a reply callback was given, if any, for the callback to take what it sends
/// (Redis frees the rest afterwards).
///
/// # Safety
/// `ctx` must be the reply callback's context of a client blocked by [`block`] with the same
/// `T`; the reference must not outlive the callback.
pub unsafe fn outcome<'a, T>(ctx: *mut raw::RedisModuleCtx) -> Option<&'a mut T> {
    raw::RedisModule_GetBlockedClientPrivateData
        .map_or(ptr::null_mut(), |f| f(ctx))
        .cast::<T>()
        .as_mut()
}

/// # Safety
/// Called by Redis with the private data passed to UnblockClient: null or a `Box<T>`.
unsafe extern "C" fn free_boxed<T>(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        drop(Box::from_raw(data.cast::<T>()));
    }
}
