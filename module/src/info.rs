//! The `INFO opt` section: module version, features found, and each subsystem's counters.

use std::ffi::{c_int, CString};
use std::sync::atomic::Ordering;

use redis_module::raw;

use crate::{guard, server};

/// Registers the INFO callback.
pub fn register(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    // SAFETY: OnLoad context; `info` has the callback signature Redis expects.
    let status =
        unsafe { raw::RedisModule_RegisterInfoFunc.ok_or("no INFO API")?(ctx, Some(info)) };
    if status != raw::REDISMODULE_OK as c_int {
        return Err("could not register the INFO section".to_string());
    }
    Ok(())
}

/// A field value for `INFO opt`.
enum Field {
    Text(String),
    Count(u64),
}

fn fields() -> Vec<(&'static str, Field)> {
    let mut out = vec![("version", Field::Text(crate::MODULE_VERSION.to_string()))];
    if let Some(s) = server::info() {
        out.push(("server", Field::Text(s.display_version.clone())));
        let found: Vec<&str> = s
            .features
            .iter()
            .filter(|f| f.available)
            .map(|f| f.name.as_str())
            .collect();
        out.push(("features", Field::Text(found.join(","))));
    }
    if let Some((tracked, sampled, bytes)) = crate::hotkeys::info_fields() {
        out.push(("hotkeys_candidates", Field::Count(tracked)));
        out.push(("hotkeys_sampled_accesses", Field::Count(sampled)));
        out.push(("hotkeys_memory_bytes", Field::Count(bytes)));
    }
    if let Some((keys, tags, pairs, bytes)) = crate::tags::info_fields() {
        out.push(("tags_keys", Field::Count(keys)));
        out.push(("tags_tags", Field::Count(tags)));
        out.push(("tags_pairs", Field::Count(pairs)));
        out.push(("tags_memory_bytes", Field::Count(bytes)));
        let (parts, part_max_us) = crate::tag_info::parts();
        out.push(("tags_rank_parts", Field::Count(parts)));
        out.push(("tags_rank_part_max_us", Field::Count(part_max_us)));
    }
    out.push((
        "tags_following_keyspace",
        Field::Count(u64::from(crate::tags::following_keyspace())),
    ));
    out.push((
        "tags_migrated_keys_sent",
        Field::Count(crate::tag_migration::KEYS_SENT.load(Ordering::Relaxed)),
    ));
    out.push((
        "tags_migrated_keys_received",
        Field::Count(crate::tag_migration::KEYS_RECEIVED.load(Ordering::Relaxed)),
    ));
    out.push((
        "tags_migrated_keys_held",
        Field::Count(crate::tag_migration::held_keys()),
    ));
    out.push((
        "tags_transfer_messages_received",
        Field::Count(crate::tag_migration::MESSAGES_RECEIVED.load(Ordering::Relaxed)),
    ));
    out.push((
        "tags_deleted_on_arrival",
        Field::Count(crate::tags::DELETED_ON_ARRIVAL.load(Ordering::Relaxed)),
    ));
    out.push((
        "tags_marked_stale_on_arrival",
        Field::Count(crate::tags::MARKED_STALE_ON_ARRIVAL.load(Ordering::Relaxed)),
    ));
    out.push((
        "tags_transfers_pending",
        Field::Count(crate::tag_migration::transfers_pending()),
    ));
    out.push((
        "tags_migrate_queued_clients",
        Field::Count(crate::tag_migration::clients_with_queued_migrate()),
    ));
    out.push((
        "tags_migrate_keys_awaiting_exec",
        Field::Count(crate::tag_migration::keys_awaiting_exec_count()),
    ));
    out.push(("stampede_locks", Field::Count(crate::tags::locks_held())));
    out.push((
        "keyspace_analyses_running",
        Field::Count(crate::keyspace::running()),
    ));
    out.push((
        "keyspace_slice_max_us",
        Field::Count(crate::keyspace::slice_max_us()),
    ));
    let (slices, shortened) = crate::keyspace::slice_counts();
    out.push(("keyspace_slices", Field::Count(slices)));
    out.push(("keyspace_slices_shortened", Field::Count(shortened)));
    out.push((
        "keyspace_started_over",
        Field::Count(crate::keyspace::started_over()),
    ));
    out.push((
        "keyspace_known_big_keys",
        Field::Count(crate::keyspace::known_big_keys() as u64),
    ));
    out.push((
        "keyspace_known_big_keys_measured",
        Field::Count(crate::keyspace::census_keys_measured()),
    ));
    let (seen, sized, rounds, busy_us) = crate::big_key_watch::counts();
    out.push(("keyspace_big_key_watch_keys", Field::Count(seen)));
    out.push(("keyspace_big_key_watch_sized", Field::Count(sized)));
    out.push(("keyspace_big_key_watch_rounds", Field::Count(rounds)));
    out.push(("keyspace_big_key_watch_us", Field::Count(busy_us)));
    let (hits, misses) = crate::keyspace::lookup_counts();
    out.push(("keyspace_lookup_hits", Field::Count(hits)));
    out.push(("keyspace_lookup_misses", Field::Count(misses)));
    out.push((
        "event_listener_modules",
        Field::Count(crate::event_audience::listener_modules()),
    ));
    out.push((
        "panics_caught",
        Field::Count(guard::PANICS_CAUGHT.load(Ordering::Relaxed)),
    ));
    out
}

/// # Safety
/// Called by Redis on the main thread with a valid INFO context.
unsafe extern "C" fn info(ictx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    guard::catch_and_log("INFO opt", || {
        // SAFETY: ictx is valid for this callback; names and values are copied by Redis.
        unsafe {
            let (Some(section), Some(text), Some(count)) = (
                raw::RedisModule_InfoAddSection,
                raw::RedisModule_InfoAddFieldCString,
                raw::RedisModule_InfoAddFieldULongLong,
            ) else {
                return;
            };
            // An empty section name gives the section the module's name: `INFO opt`.
            if section(ictx, c"".as_ptr()) != raw::REDISMODULE_OK as c_int {
                return;
            }
            for (name, value) in fields() {
                let Ok(name) = CString::new(name) else {
                    continue;
                };
                match value {
                    Field::Text(t) => {
                        let t = CString::new(t.replace('\0', "")).unwrap_or_default();
                        text(ictx, name.as_ptr(), t.as_ptr());
                    }
                    Field::Count(n) => {
                        count(ictx, name.as_ptr(), n);
                    }
                }
            }
        }
    });
}
