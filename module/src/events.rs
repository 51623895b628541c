//! Server events (loading, a replica's swapdb full sync, replication role, FLUSHDB, SWAPDB,
//! modules loaded and unloaded, and client changes in cluster mode and on Valkey 8.1 and 9.0),
//! subscribed once.
//!
//! Redis keeps one callback per module and event: a second subscription replaces the first.
//! So the module subscribes here, once, and hands each event to every subsystem that needs it.

use std::ffi::c_void;

use redis_module::raw;

use crate::{
    client_db, event_audience, guard, hotkeys, keyspace, slot_migration, tag_migration, tags,
};

/// Subscribes to the server events the subsystems follow; `identity` is the server's name and
/// version (`redis 8.6.3`), which tells which slot-migration events it has.
pub fn subscribe(ctx: *mut raw::RedisModuleCtx, identity: &str) -> Result<(), String> {
    // SAFETY: OnLoad context; `dispatch` has the callback signature the API expects.
    unsafe {
        let subscribe = raw::RedisModule_SubscribeToServerEvent.ok_or("no server events API")?;
        for id in [
            raw::REDISMODULE_EVENT_LOADING,
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
            raw::REDISMODULE_EVENT_FLUSHDB,
            raw::REDISMODULE_EVENT_SWAPDB,
            raw::REDISMODULE_EVENT_MODULE_CHANGE,
            raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD,
        ] {
            if subscribe(
                ctx,
                raw::RedisModuleEvent { id, dataver: 1 },
                Some(dispatch),
            ) != raw::REDISMODULE_OK as i32
            {
                return Err(format!("could not subscribe to server event {id}"));
            }
        }
        // Clients are followed by tag_migration in cluster mode, and by client_db on the
        // servers whose keyspace events can leave a client in another database.
        if (crate::server::in_cluster(ctx)
            || opt_core::version::leaves_client_in_event_db(identity))
            && subscribe(
                ctx,
                raw::RedisModuleEvent {
                    id: raw::REDISMODULE_EVENT_CLIENT_CHANGE,
                    dataver: 1,
                },
                Some(dispatch),
            ) != raw::REDISMODULE_OK as i32
        {
            return Err("could not subscribe to client changes".into());
        }
    }
    slot_migration::init(ctx, identity, Some(dispatch));
    Ok(())
}

/// # Safety
/// Called by Redis with the event's context, ids and data.
unsafe extern "C" fn dispatch(
    ctx: *mut raw::RedisModuleCtx,
    eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    guard::catch_and_log("server event", || {
        hotkeys::on_server_event(eid.id, subevent);
        // SAFETY: data is what Redis passed for this event.
        unsafe { tags::on_server_event(ctx, eid.id, subevent, data) };
        // SAFETY: as above.
        unsafe { slot_migration::on_server_event(ctx, eid.id, subevent, data) };
        // SAFETY: as above.
        unsafe { tag_migration::on_server_event(eid.id, subevent, data) };
        // SAFETY: as above.
        unsafe { client_db::on_server_event(eid.id, subevent, data) };
        // SAFETY: as above.
        unsafe { event_audience::on_server_event(eid.id, subevent, data) };
        // SAFETY: as above.
        unsafe { keyspace::on_server_event(eid.id, subevent, data) };
    });
}
