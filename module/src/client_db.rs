//! Clients put back in their own database after MOVE and COPY ... DB, on Valkey 8.1 and 9.0.
//!
//! Those servers deliver a keyspace event to a module on the client that runs the command,
//! after selecting the event's database on that client, and never select the client's own
//! back (valkey-io/valkey#4024, fixed in 9.1). Two commands raise an event in another
//! database than their client's: MOVE (`move_to`) and COPY ... DB (`copy_to`). So once the tag
//! index follows keyspace events, such a command would leave its client in the destination
//! database, and the client's next commands (the rest of its MULTI, and everything it sends
//! after) would run there: on Valkey 8.1.1 a SET sent after `MOVE key 1` wrote into db 1. Any
//! module that follows generic keyspace events does this to those servers; this one selects
//! the client's database back at the end of its own callback:
//! - MOVE raises `move_from` first, from the client's database: `move_to` selects it back.
//! - COPY raises nothing from the client's database, so a command filter (registered on those
//!   servers once the index follows events) notes each COPY with a DB option: its client, the
//!   key it writes and the database it is sent from. `copy_to` selects that back. A COPY
//!   queued in MULTI is noted when it is queued, with the database a SELECT queued before it
//!   in the same MULTI selects.
//!
//! The filter costs every command about 90 instructions on those servers (a GET is about 4,100;
//! callgrind on Valkey 8.1.1, docs/benchmarks.md), most of it the server's own handling of a
//! registered filter; it is not registered where no command can name another database.
//!
//! Limits: a module loaded after this one and subscribed to the same events is called after
//! it, and the server selects the destination again for it. A COPY ... DB inside a Lua script
//! leaves the script's own client in the destination for the rest of the script (the filter
//! cannot look up a script's client); the caller is not affected.

use std::collections::{HashMap, VecDeque};
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use redis_module::raw;

use crate::reply::filter_arg;
use crate::state::MainThreadCell;
use crate::{guard, log, server};

/// A COPY ... DB seen by the filter and not yet run.
struct PendingCopy {
    client: u64,
    key: Vec<u8>,
    to_db: usize,
    from_db: usize,
}

#[derive(Default)]
struct State {
    /// The database of the last `move_from`, until its `move_to`.
    move_from_db: Option<usize>,
    /// Oldest first, at most [`MAX_PENDING_COPIES`].
    copies: VecDeque<PendingCopy>,
    /// Clients inside MULTI, and the database a SELECT they queued selects.
    multi_db: HashMap<u64, Option<usize>>,
}

/// COPYs noted and not yet seen run. One that runs without an event (its key exists in the
/// destination, or its source does not) is dropped by its client's next `copy_to`, or pushed
/// out by newer ones.
const MAX_PENDING_COPIES: usize = 256;

static STATE: MainThreadCell<Option<State>> = MainThreadCell::new(None);
/// `State::multi_db`'s length, read by the filter on every two-argument command: SELECT is
/// looked for only while a client is in MULTI.
static MULTI_CLIENTS: AtomicUsize = AtomicUsize::new(0);
/// Whether the COPY filter is registered.
static WATCHING: AtomicBool = AtomicBool::new(false);

/// Whether this server leaves clients in the event's database.
fn affected() -> bool {
    server::leaves_client_in_event_db()
}

/// On the servers concerned, registers the COPY filter, once, unless no command can name
/// another database (`databases 1`, or a cluster of one database per node). Called when the
/// tag index starts following keyspace events.
pub fn watch(ctx: *mut raw::RedisModuleCtx) {
    if !affected() || WATCHING.swap(true, Ordering::Relaxed) {
        return;
    }
    if crate::keyspace::analysable_databases(ctx) <= 1 {
        return;
    }
    // SAFETY: ctx is a live context of this module on the main thread; the filter is this
    // module's extern "C" function and lives as long as the module.
    if unsafe { server::register_command_filter(ctx, filter) }.is_null() {
        log::warning(
            "this Valkey leaves a client in the destination database after COPY ... DB when a \
             module follows keyspace events (valkey-io/valkey#4024), and the filter that puts \
             it back could not be registered",
        );
        return;
    }
    log::notice(
        "this Valkey leaves a client in another database after MOVE and COPY ... DB when a \
         module follows keyspace events (valkey-io/valkey#4024): the module selects the \
         client's own database back",
    );
}

/// Server events, subscribed on these servers (`events::subscribe`): a client that leaves
/// takes its MULTI and its COPY notes with it, so that two-argument commands stop being looked
/// at for SELECT once no client is in MULTI.
///
/// # Safety
/// `data` must be what the server passed with the event.
pub unsafe fn on_server_event(id: u64, subevent: u64, data: *mut std::ffi::c_void) {
    if id != raw::REDISMODULE_EVENT_CLIENT_CHANGE
        || subevent != raw::REDISMODULE_SUBEVENT_CLIENT_CHANGE_DISCONNECTED
        || data.is_null()
        || !WATCHING.load(Ordering::Relaxed)
    {
        return;
    }
    // SAFETY: a client-change event carries a RedisModuleClientInfo (checked for null above).
    let client = unsafe { (*data.cast::<raw::RedisModuleClientInfo>()).id };
    with_state(|st| {
        st.multi_db.remove(&client);
        MULTI_CLIENTS.store(st.multi_db.len(), Ordering::Relaxed);
        st.copies.retain(|c| c.client != client);
    });
}

/// Called at the end of the tag index's keyspace event callback, with the event's context,
/// name, key and database: selects the client's own database back after `move_to` and
/// `copy_to` on the servers concerned.
pub fn after_event(ctx: *mut raw::RedisModuleCtx, event: &[u8], key: &[u8], db: usize) {
    if !affected() {
        return;
    }
    let back = match event {
        b"move_from" => {
            with_state(|st| st.move_from_db = Some(db));
            None
        }
        b"move_to" => with_state(|st| st.move_from_db.take()).flatten(),
        b"copy_to" => {
            // SAFETY: ctx is the event's live context on the main thread.
            let client = unsafe { raw::RedisModule_GetClientId.map_or(0, |f| f(ctx)) };
            with_state(|st| take_copy(st, client, key, db)).flatten()
        }
        _ => None,
    };
    if let Some(own) = back.filter(|&own| own != db) {
        // SAFETY: as above; the database exists (the client had it selected).
        unsafe {
            if let Some(select) = raw::RedisModule_SelectDb {
                select(ctx, own as c_int);
            }
        }
    }
}

/// The database `client` sent the COPY of `key` into `to_db` from, taking its note and the
/// notes of that client's earlier COPYs, which ran without an event.
fn take_copy(st: &mut State, client: u64, key: &[u8], to_db: usize) -> Option<usize> {
    let at = st
        .copies
        .iter()
        .position(|c| c.client == client && c.to_db == to_db && c.key == key)?;
    let from_db = st.copies[at].from_db;
    let mut i = 0;
    st.copies.retain(|c| {
        let keep = i > at || c.client != client;
        i += 1;
        keep
    });
    Some(from_db)
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    STATE.with(|s| f(s.get_or_insert_with(State::default)))
}

/// # Safety
/// Called by the server for every command, with a filter context valid during the call.
unsafe extern "C" fn filter(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    let Some(count) = raw::RedisModule_CommandFilterArgsCount else {
        return;
    };
    let argc = count(fctx).max(0) as usize;
    // COPY source destination DB n [REPLACE]: 5 or 6 arguments. MULTI, EXEC, DISCARD and
    // RESET: 1. SELECT n: 2, and only while a client is in MULTI (GET and most reads have 2).
    if argc == 1
        || argc == 5
        || argc == 6
        || (argc == 2 && MULTI_CLIENTS.load(Ordering::Relaxed) > 0)
    {
        filter_candidate(fctx, argc);
    }
}

/// The part of [`filter`] for commands that may be COPY, SELECT, or the start or end of a
/// MULTI, kept out of line so that every other command pays only the length check above.
///
/// # Safety
/// `fctx` must be the live context of a filter callback, with `argc` arguments.
#[inline(never)]
unsafe fn filter_candidate(fctx: *mut raw::RedisModuleCommandFilterCtx, argc: usize) {
    let name = filter_arg(fctx, 0);
    let kind = match (argc, name.len()) {
        (1, 5) if name.eq_ignore_ascii_case(b"multi") => Kind::Multi,
        (1, 4) if name.eq_ignore_ascii_case(b"exec") => Kind::EndMulti,
        (1, 5) if name.eq_ignore_ascii_case(b"reset") => Kind::EndMulti,
        (1, 7) if name.eq_ignore_ascii_case(b"discard") => Kind::EndMulti,
        (2, 6) if name.eq_ignore_ascii_case(b"select") => Kind::Select,
        (5 | 6, 4) if name.eq_ignore_ascii_case(b"copy") => Kind::Copy,
        _ => return,
    };
    guard::catch_and_log("COPY database watch", || {
        // SAFETY: fctx is valid for the duration of this callback and argc is its count.
        let args: Vec<&[u8]> = (0..argc).map(|i| unsafe { filter_arg(fctx, i) }).collect();
        // SAFETY: as above.
        let Some(client) = (unsafe { filter_client(fctx) }) else {
            return;
        };
        match kind {
            Kind::Multi => {
                with_state(|st| {
                    st.multi_db.insert(client, None);
                    MULTI_CLIENTS.store(st.multi_db.len(), Ordering::Relaxed);
                });
            }
            Kind::EndMulti => {
                with_state(|st| {
                    st.multi_db.remove(&client);
                    MULTI_CLIENTS.store(st.multi_db.len(), Ordering::Relaxed);
                });
            }
            Kind::Select => {
                let Some(db) = parse_db(args[1]) else { return };
                with_state(|st| {
                    // Queued only inside MULTI; outside it runs at once, and a COPY after it
                    // finds its database selected.
                    if let Some(queued) = st.multi_db.get_mut(&client) {
                        *queued = Some(db);
                    }
                });
            }
            Kind::Copy => {
                let Some(to_db) = copy_destination_db(&args) else {
                    return;
                };
                let Some((in_multi, selected)) = client_state(client) else {
                    return;
                };
                with_state(|st| {
                    let from_db = match in_multi {
                        true => st
                            .multi_db
                            .get(&client)
                            .copied()
                            .flatten()
                            .unwrap_or(selected),
                        false => selected,
                    };
                    if from_db == to_db {
                        return;
                    }
                    if st.copies.len() >= MAX_PENDING_COPIES {
                        st.copies.pop_front();
                    }
                    st.copies.push_back(PendingCopy {
                        client,
                        key: args[2].to_vec(),
                        to_db,
                        from_db,
                    });
                });
            }
        }
    });
}

enum Kind {
    Copy,
    Select,
    Multi,
    EndMulti,
}

/// A database number as SELECT and COPY take it.
fn parse_db(arg: &[u8]) -> Option<usize> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// COPY source destination [DB n] [REPLACE]: n, if given.
fn copy_destination_db(args: &[&[u8]]) -> Option<usize> {
    let options = args.get(3..)?;
    let at = options.iter().position(|a| a.eq_ignore_ascii_case(b"db"))?;
    parse_db(options.get(at + 1)?)
}

/// The id of the client whose command the filter sees, where the server tells it (7.2+).
///
/// # Safety
/// `fctx` must be the live context of a filter callback.
pub unsafe fn filter_client(fctx: *mut raw::RedisModuleCommandFilterCtx) -> Option<u64> {
    let get = raw::RedisModule_CommandFilterGetClientId?;
    let id = get(fctx);
    (id != 0).then_some(id)
}

/// Whether client `id` is inside MULTI (its commands are queued, not run), and the database
/// it has selected; None when the server does not know the client (a script's, for one).
pub fn client_state(id: u64) -> Option<(bool, usize)> {
    // SAFETY: the struct is zeroed and versioned as the API asks; the call only writes it.
    unsafe {
        let info = raw::RedisModule_GetClientInfoById?;
        let mut ci: raw::RedisModuleClientInfo = std::mem::zeroed();
        ci.version = 1;
        if info((&mut ci as *mut raw::RedisModuleClientInfo).cast(), id)
            != raw::REDISMODULE_OK as c_int
        {
            return None;
        }
        let in_multi = ci.flags & u64::from(raw::REDISMODULE_CLIENTINFO_FLAG_MULTI) != 0;
        Some((in_multi, usize::from(ci.db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_options_give_the_destination_db() {
        let args = |a: &[&'static str]| a.iter().map(|s| s.as_bytes()).collect::<Vec<_>>();
        assert_eq!(
            copy_destination_db(&args(&["COPY", "a", "b", "DB", "3"])),
            Some(3)
        );
        assert_eq!(
            copy_destination_db(&args(&["copy", "a", "b", "REPLACE", "db", "1"])),
            Some(1)
        );
        assert_eq!(copy_destination_db(&args(&["COPY", "a", "b"])), None);
        assert_eq!(copy_destination_db(&args(&["COPY", "a", "b", "DB"])), None);
        assert_eq!(
            copy_destination_db(&args(&["COPY", "a", "b", "DB", "x"])),
            None
        );
    }

    #[test]
    fn a_copy_takes_its_own_note_and_its_clients_older_ones() {
        let note = |client, key: &str, to_db, from_db| PendingCopy {
            client,
            key: key.as_bytes().to_vec(),
            to_db,
            from_db,
        };
        let mut st = State::default();
        st.copies.push_back(note(1, "failed", 2, 0));
        st.copies.push_back(note(7, "other", 2, 5));
        st.copies.push_back(note(1, "k", 2, 3));
        st.copies.push_back(note(1, "later", 4, 3));
        assert_eq!(take_copy(&mut st, 1, b"k", 2), Some(3));
        let left: Vec<(u64, &[u8])> = st.copies.iter().map(|c| (c.client, &c.key[..])).collect();
        assert_eq!(left, vec![(7, &b"other"[..]), (1, &b"later"[..])]);
        assert_eq!(take_copy(&mut st, 1, b"k", 2), None, "taken once");
        assert_eq!(take_copy(&mut st, 9, b"other", 2), None, "another client's");
    }
}
