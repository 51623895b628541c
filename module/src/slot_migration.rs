//! Tags that follow hash slots moved whole by the servers themselves (atomic slot migration).
//!
//! Redis 8.4 (`CLUSTER MIGRATION IMPORT`) and Valkey 9.0 (`CLUSTER MIGRATESLOTS`) move slots
//! without MIGRATE: the source streams a snapshot of the slots and then their writes to the
//! target, hands the slots over, and drops its copies without a `del` event per key (Redis
//! trims them in the background, Valkey deletes them silently). Before this file the source's
//! index kept every moved key for good (a leak that no expiry would ever clear), and the keys
//! arrived untagged on the target, where the next OPT.INVALIDATE of their tags missed them.
//!
//! So, when the source learns that a migration completed (Redis: MIGRATE_COMPLETED, which
//! names the target; Valkey: EXPORT_COMPLETED, which does not, so every node gets the message
//! and applies it to the keys it holds), it sends the moved keys' tags and freshness over the
//! cluster bus exactly as for MIGRATE (`tag_migration`), and drops them from its own index.
//! Tags written during the migration (OPT.SET, OPT.TAG, OPT.UNTAG) reached the source's index
//! before the handover, so the tags sent are the final ones; the same commands also travel in
//! the migration's command stream. A node that loses keys of some slots without events (a
//! Redis trim, a failed import on either server) drops them from its index.
//!
//! Left: between the handover and the message's arrival (the bus's latency, about a
//! millisecond on a LAN) the moved keys sit untagged on the target, as with MIGRATE.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use opt_core::cluster::{atomic_slot_migration, AtomicSlotMigration, SlotSet};
use redis_module::raw;

use crate::state::MainThreadCell;
use crate::{guard, log, server, tag_migration, tags};

/// Valkey 9's ATOMIC_SLOT_MIGRATION server event (valkeymodule.h) and the subevents used.
const VALKEY_EVENT_ATOMIC_SLOT_MIGRATION: u64 = 19;
const VALKEY_IMPORT_ABORTED: u64 = 2;
const VALKEY_EXPORT_COMPLETED: u64 = 5;
/// Valkey's module option by which a module declares that it handles atomic slot migration;
/// without it Valkey refuses CLUSTER MIGRATESLOTS while the module is loaded.
const VALKEY_OPTIONS_HANDLE_ATOMIC_SLOT_MIGRATION: c_int = 1 << 5;

/// One slot range of Valkey's event data (`ValkeyModuleSlotRange`).
#[repr(C)]
struct ValkeySlotRange {
    start: c_int,
    end: c_int,
}

/// Valkey's event data (`ValkeyModuleAtomicSlotMigrationInfoV1`).
#[repr(C)]
struct ValkeyMigrationInfo {
    version: u64,
    job_name: [c_char; raw::REDISMODULE_NODE_ID_LEN as usize + 1],
    slot_ranges: *const ValkeySlotRange,
    num_slot_ranges: u32,
}

/// The server's atomic slot migration, in cluster mode; fixed at load.
static KIND: OnceLock<Option<AtomicSlotMigration>> = OnceLock::new();

/// Subscribes to the server's slot-migration events, in cluster mode on Redis 8.4+ and
/// Valkey 9+. A failed subscription is logged: slots moved whole would then leave tags behind.
/// `identity` is the server's name and version (`redis 8.6.3`).
pub fn init(
    ctx: *mut raw::RedisModuleCtx,
    identity: &str,
    dispatch: raw::RedisModuleEventCallback,
) {
    let kind = server::in_cluster(ctx)
        .then(|| atomic_slot_migration(identity))
        .flatten();
    let _ = KIND.set(kind);
    let ids: &[u64] = match kind {
        None => return,
        Some(AtomicSlotMigration::Redis) => &[
            raw::REDISMODULE_EVENT_CLUSTER_SLOT_MIGRATION,
            raw::REDISMODULE_EVENT_CLUSTER_SLOT_MIGRATION_TRIM,
        ],
        Some(AtomicSlotMigration::Valkey) => {
            // SAFETY: OnLoad context. The call takes the whole mask, so it repeats the tag
            // index's options.
            unsafe {
                if let Some(set_options) = raw::RedisModule_SetModuleOptions {
                    set_options(
                        ctx,
                        tags::MODULE_OPTIONS | VALKEY_OPTIONS_HANDLE_ATOMIC_SLOT_MIGRATION,
                    );
                }
            }
            &[VALKEY_EVENT_ATOMIC_SLOT_MIGRATION]
        }
    };
    for &id in ids {
        // SAFETY: OnLoad context; `dispatch` is this module's extern "C" callback.
        let ok = unsafe {
            raw::RedisModule_SubscribeToServerEvent.is_some_and(|subscribe| {
                subscribe(ctx, raw::RedisModuleEvent { id, dataver: 1 }, dispatch)
                    == raw::REDISMODULE_OK as c_int
            })
        };
        if !ok {
            log::warning(&format!(
                "could not subscribe to slot migration event {id}: slots moved whole by the \
                 server will leave their tags behind"
            ));
        }
    }
    log::notice("tag index: tags follow slots moved by the server's atomic slot migration");
}

/// Handles a slot-migration server event (dispatched by `events`).
///
/// # Safety
/// `data` must be the data the server passed with event `id`.
pub unsafe fn on_server_event(
    ctx: *mut raw::RedisModuleCtx,
    id: u64,
    subevent: u64,
    data: *mut c_void,
) {
    let Some(Some(kind)) = KIND.get() else {
        return;
    };
    if data.is_null() {
        return;
    }
    match (kind, id) {
        (AtomicSlotMigration::Redis, raw::REDISMODULE_EVENT_CLUSTER_SLOT_MIGRATION) => {
            // SAFETY: for this event the server passes a RedisModuleClusterSlotMigrationInfo.
            let info = unsafe { &*data.cast::<raw::RedisModuleClusterSlotMigrationInfo>() };
            // SAFETY: `slots` is the server's range array for this event.
            let slots = unsafe { redis_ranges(info.slots) };
            match subevent {
                raw::REDISMODULE_SUBEVENT_CLUSTER_SLOT_MIGRATION_MIGRATE_COMPLETED => {
                    let target: Vec<u8> =
                        info.destination_node_id.iter().map(|&c| c as u8).collect();
                    hand_over(ctx, slots, Some(&target));
                }
                raw::REDISMODULE_SUBEVENT_CLUSTER_SLOT_MIGRATION_IMPORT_FAILED => {
                    forget(ctx, "a failed import", slots)
                }
                _ => {}
            }
        }
        (AtomicSlotMigration::Redis, raw::REDISMODULE_EVENT_CLUSTER_SLOT_MIGRATION_TRIM)
            if subevent == raw::REDISMODULE_SUBEVENT_CLUSTER_SLOT_MIGRATION_TRIM_STARTED
                || subevent == raw::REDISMODULE_SUBEVENT_CLUSTER_SLOT_MIGRATION_TRIM_BACKGROUND =>
        {
            // SAFETY: for this event the server passes a RedisModuleClusterSlotMigrationTrimInfo.
            let info = unsafe { &*data.cast::<raw::RedisModuleClusterSlotMigrationTrimInfo>() };
            // SAFETY: `slots` is the server's range array for this event.
            forget(ctx, "a trim", unsafe { redis_ranges(info.slots) });
        }
        (AtomicSlotMigration::Valkey, VALKEY_EVENT_ATOMIC_SLOT_MIGRATION) => {
            // SAFETY: for this event Valkey passes a ValkeyModuleAtomicSlotMigrationInfoV1.
            let info = unsafe { &*data.cast::<ValkeyMigrationInfo>() };
            // SAFETY: the ranges are the server's array of `num_slot_ranges` entries.
            let slots = unsafe { valkey_ranges(info) };
            match subevent {
                VALKEY_EXPORT_COMPLETED => hand_over(ctx, slots, None),
                VALKEY_IMPORT_ABORTED => forget(ctx, "a failed import", slots),
                _ => {}
            }
        }
        _ => {}
    }
}

/// The slots of a Redis range array, or an error for one this module cannot read.
///
/// # Safety
/// `array` must be null or the server's `RedisModuleSlotRangeArray`.
unsafe fn redis_ranges(array: *const raw::RedisModuleSlotRangeArray) -> Result<SlotSet, String> {
    if array.is_null() {
        return Err("no slot ranges".into());
    }
    // SAFETY: a valid array holds `num_ranges` ranges right after the count.
    let ranges = unsafe {
        let n = usize::try_from((*array).num_ranges).map_err(|_| "negative range count")?;
        if n > 16384 {
            return Err(format!("{n} slot ranges"));
        }
        std::slice::from_raw_parts((*array).ranges.as_ptr(), n)
    };
    let pairs: Vec<(u32, u32)> = ranges
        .iter()
        .map(|r| (u32::from(r.start), u32::from(r.end)))
        .collect();
    SlotSet::from_ranges(&pairs)
}

/// The slots of Valkey's event data, or an error for data this module cannot read.
///
/// # Safety
/// `info.slot_ranges` must be null or point to `info.num_slot_ranges` ranges.
unsafe fn valkey_ranges(info: &ValkeyMigrationInfo) -> Result<SlotSet, String> {
    let n = info.num_slot_ranges as usize;
    if info.version != 1 || info.slot_ranges.is_null() || n > 16384 {
        return Err(format!(
            "slot migration data of version {} with {n} ranges",
            info.version
        ));
    }
    // SAFETY: checked non-null above; the server passes `n` ranges.
    let ranges = unsafe { std::slice::from_raw_parts(info.slot_ranges, n) };
    let pairs: Result<Vec<(u32, u32)>, String> = ranges
        .iter()
        .map(|r| match (u32::try_from(r.start), u32::try_from(r.end)) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            _ => Err(format!("slot range {}-{}", r.start, r.end)),
        })
        .collect();
    SlotSet::from_ranges(&pairs?)
}

/// Most index positions looked at between two checks of a slice's clock.
const SCAN_STEP: usize = 2048;
/// The time a slice may take on the main thread.
const SLICE: Duration = Duration::from_millis(1);

/// What a job does with the keys it takes out of the index.
enum Action {
    /// Sends their tags to the node whose NUL-terminated id this is (every node: `None`).
    Send(Option<Vec<u8>>),
    /// Only drops them (the server removed the keys); says why in the log.
    Drop(&'static str),
}

/// The keys of some slots, leaving this node's index a slice at a time.
struct Job {
    slots: SlotSet,
    action: Action,
    /// The databases left to walk, the current one first (cluster mode has db 0 only, except
    /// on Valkey 9 with `cluster-databases`).
    dbs: Vec<usize>,
    /// Where the walk of the current database goes on from: the tag index, then the keys
    /// that have freshness and no tag.
    next: Walk,
    /// Whether every database was walked (keys with freshness and no tag included).
    walked: bool,
    keys: usize,
    all_sent: bool,
    started: Instant,
}

/// Where a job's walk of one database stands.
#[derive(Clone, Copy)]
enum Walk {
    /// Tag index positions from this one up.
    Tags(usize),
    /// Positions of the freshness table below this one (it is walked downwards).
    Fresh(usize),
}

/// The running jobs, and whether a timer for the next slice is set.
struct Jobs {
    list: Vec<Job>,
    timer_armed: bool,
}

static JOBS: MainThreadCell<Jobs> = MainThreadCell::new(Jobs {
    list: Vec::new(),
    timer_armed: false,
});

/// Whether the keys of `slot` are leaving this node's index (a job is running for it): they
/// are no longer this node's, so OPT.INVALIDATE leaves them out.
pub fn is_leaving(slot: u16) -> bool {
    JOBS.with(|j| j.list.iter().any(|job| job.slots.contains(slot)))
        .unwrap_or(false)
}

/// How many handovers (or drops) of slots' tags are running.
pub fn jobs_running() -> u64 {
    JOBS.with(|j| j.list.len() as u64).unwrap_or(0)
}

/// Whether any job is running.
pub fn any_leaving() -> bool {
    JOBS.with(|j| !j.list.is_empty()).unwrap_or(false)
}

/// Sends the tags of the keys in `slots` to `target` (a NUL-terminated node id; every node
/// when none) and drops them here: the slots now belong to the target. The first slice runs
/// now, so a small migration is handed over before any other client is served; a large one
/// goes on in 1 ms slices (about 256 keys a message).
fn hand_over(ctx: *mut raw::RedisModuleCtx, slots: Result<SlotSet, String>, target: Option<&[u8]>) {
    match slots {
        Ok(slots) => start(ctx, slots, Action::Send(target.map(<[u8]>::to_vec))),
        Err(e) => log::warning(&format!(
            "slot migration event not understood ({e}): tags left"
        )),
    }
}

/// Drops from the index the keys of `slots`, which the server removed without events.
fn forget(ctx: *mut raw::RedisModuleCtx, why: &'static str, slots: Result<SlotSet, String>) {
    match slots {
        Ok(slots) => start(ctx, slots, Action::Drop(why)),
        Err(e) => log::warning(&format!("slot migration event not understood ({e})")),
    }
}

fn start(ctx: *mut raw::RedisModuleCtx, slots: SlotSet, action: Action) {
    let job = Job {
        slots,
        action,
        dbs: tags::dbs_in_use(),
        next: Walk::Tags(0),
        walked: false,
        keys: 0,
        all_sent: true,
        started: Instant::now(),
    };
    if JOBS.with(|j| j.list.push(job)).is_none() {
        log::warning("slot migration: job list in use; report this");
        return;
    }
    run_slice(ctx);
}

/// Arms the timer of the next slice, once.
fn arm_timer(ctx: *mut raw::RedisModuleCtx) {
    let arm = JOBS
        .with(|j| !std::mem::replace(&mut j.timer_armed, true))
        .unwrap_or(false);
    if arm {
        // SAFETY: ctx is a live context of this module on the main thread; the callback is
        // this module's extern "C" function.
        unsafe {
            if let Some(create) = raw::RedisModule_CreateTimer {
                create(ctx, 1, Some(on_timer), ptr::null_mut());
            }
        }
    }
}

/// # Safety
/// Called by the server on the main thread when the timer fires, with a live context.
unsafe extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch_and_log("slot migration slice", || {
        let _ = JOBS.with(|j| j.timer_armed = false);
        run_slice(ctx);
    });
}

/// Runs the jobs for about a millisecond, then arms the timer if work is left.
fn run_slice(ctx: *mut raw::RedisModuleCtx) {
    let slice_start = Instant::now();
    while slice_start.elapsed() < SLICE {
        // The job is taken out while it works, so no borrow is held across server calls.
        let Some(mut job) = JOBS
            .with(|j| (!j.list.is_empty()).then(|| j.list.remove(0)))
            .flatten()
        else {
            return;
        };
        let Some(&db) = job.dbs.first() else {
            finish(&job);
            continue;
        };
        let mut batch = Vec::new();
        while batch.len() < tag_migration::KEYS_PER_MESSAGE && slice_start.elapsed() < SLICE {
            match job.next {
                Walk::Tags(from) => {
                    let (taken, next) = tags::take_slot_keys(db, &job.slots, from, SCAN_STEP);
                    batch.extend(taken);
                    job.next = next.map_or(Walk::Fresh(usize::MAX), Walk::Tags);
                }
                Walk::Fresh(from) => {
                    let (taken, next) = tags::take_fresh_slot_keys(db, &job.slots, from, SCAN_STEP);
                    batch.extend(taken);
                    if let Some(next) = next {
                        job.next = Walk::Fresh(next);
                    } else {
                        job.dbs.remove(0);
                        job.next = Walk::Tags(0);
                        job.walked = job.dbs.is_empty();
                        break;
                    }
                }
            }
        }
        job.keys += batch.len();
        if let Action::Send(target) = &job.action {
            if !batch.is_empty()
                && !tag_migration::send_transfer(db as u32, &batch, target.as_deref())
            {
                job.all_sent = false;
            }
        }
        if job.walked {
            finish(&job);
        } else {
            let _ = JOBS.with(|j| j.list.insert(0, job));
        }
    }
    if any_leaving() {
        arm_timer(ctx);
    }
}

/// Logs what a finished job did.
fn finish(job: &Job) {
    let took = job.started.elapsed().as_millis();
    match job.action {
        Action::Send(_) if job.keys > 0 => log::notice(&format!(
            "slot migration: {} the tags of {} keys of {} slots to their new node in {took} ms",
            if job.all_sent {
                "sent"
            } else {
                "could not send all of"
            },
            job.keys,
            job.slots.len()
        )),
        Action::Drop(why) if job.keys > 0 => log::notice(&format!(
            "slot migration: dropped {} keys of {} slots removed by {why}, in {took} ms",
            job.keys,
            job.slots.len()
        )),
        _ => {}
    }
}
