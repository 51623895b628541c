//! `OPT.TAGINFO [tag]`: the tag index's size, memory and digest, and the largest tags of the
//! selected db.
//!
//! The counts, the memory and the digest are kept as the index changes, so reading them costs
//! nothing. Ranking the largest tags reads every tag (about 2.5 ms per million tags on the
//! reference machine), which the server must not spend in one go. Up to `INLINE_SLOTS` tags
//! the command answers at once (about a quarter of a millisecond). Past that the client is
//! blocked, and the tags are ranked a part at a time from a timer, each part at most
//! `opt.scan-slice-us`, while the server serves its other clients; the client gets its reply
//! when the last part is done. Inside MULTI or a script a client cannot be blocked, so there
//! the ranking runs in one go, as it did before.

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opt_core::config::idx;
use opt_core::report::{TagInfoReport, TagSize};
use opt_core::tags::{TagIndex, TagRanking};
use redis_module::raw;

use crate::commands::Call;
use crate::reply::{self, Reply, ReplyError};
use crate::state::MainThreadCell;
use crate::{blocked, configs, guard, tags};

/// How many of the largest tags the overview lists.
const LARGEST: usize = 10;

/// Tag slots ranked at once when the command runs: about 0.25 ms.
const INLINE_SLOTS: usize = 100_000;

/// Tag slots ranked between two reads of the clock (about 10 µs).
const SLOTS_PER_CLOCK_READ: usize = 4_096;

/// Rankings that may wait at once; each holds ten names.
const MAX_RUNNING: usize = 16;

/// A blocked client's ranking.
struct Pending {
    client: *mut raw::RedisModuleBlockedClient,
    ranking: TagRanking,
    as_json: bool,
    /// Set when the client disconnected: the ranking is dropped at the next part.
    disconnected: bool,
    /// Set when every tag slot was ranked.
    done: bool,
}

struct Rankings {
    list: Vec<Pending>,
    timer_armed: bool,
}

static RANKINGS: MainThreadCell<Rankings> = MainThreadCell::new(Rankings {
    list: Vec::new(),
    timer_armed: false,
});

/// Parts of rankings run from the timer (`INFO opt`: `tags_rank_parts`).
static PARTS: AtomicU64 = AtomicU64::new(0);

/// The longest part so far, in microseconds (`INFO opt`: `tags_rank_part_max_us`).
static PART_MAX_US: AtomicU64 = AtomicU64::new(0);

/// Parts of rankings run so far, and the longest one in microseconds.
pub fn parts() -> (u64, u64) {
    (
        PARTS.load(Ordering::Relaxed),
        PART_MAX_US.load(Ordering::Relaxed),
    )
}

/// What the blocked client is sent.
struct Outcome {
    report: Result<TagInfoReport, ReplyError>,
    as_json: bool,
}

/// `OPT.TAGINFO [tag]`
pub fn command(call: &Call) -> Result<Reply, ReplyError> {
    if call.args.len() > 1 {
        return Err(ReplyError::err("OPT.TAGINFO takes at most one tag"));
    }
    let db = tags::selected_db(call.ctx);
    if let Some(&tag) = call.args.first() {
        return tags::with_index(|ix| report(ix, db, Some(tag), Vec::new())).map(Reply::structured);
    }
    let slots = tags::with_index(|ix| ix.tag_slots(db))?;
    let waiting = RANKINGS.with(|r| r.list.len()).unwrap_or(0);
    if slots <= INLINE_SLOTS || !blocked::can_block(call.ctx) {
        let largest = |ix: &TagIndex| ix.largest_tags(db, LARGEST);
        return tags::with_index(|ix| report(ix, db, None, largest(ix))).map(Reply::structured);
    }
    if waiting >= MAX_RUNNING {
        return Err(ReplyError::err(format!(
            "OPT.TAGINFO: {MAX_RUNNING} rankings of the tags are running already; try again \
             when one has answered"
        )));
    }
    // SAFETY: ctx is the live command context; the client is unblocked exactly once, by
    // `run_part`, with an Outcome or nothing.
    let client = unsafe {
        blocked::block::<Outcome>(call.ctx, "OPT.TAGINFO", reply_callback, on_disconnect)?
    };
    let queued = RANKINGS.with(|r| {
        r.list.push(Pending {
            client,
            ranking: TagRanking::new(db, LARGEST),
            as_json: call.as_json,
            disconnected: false,
            done: false,
        });
        arm_timer(call.ctx, r);
    });
    if queued.is_none() {
        let outcome = Outcome {
            report: Err(ReplyError::err(
                "OPT.TAGINFO: the ranking list was busy; try again",
            )),
            as_json: call.as_json,
        };
        // SAFETY: the client was blocked above and was never queued: this is its only
        // unblocking.
        unsafe { blocked::unblock(client, Some(Box::new(outcome))) };
    }
    Ok(Reply::Deferred)
}

/// The report of the index as it is now, with `largest` ranked.
fn report(
    ix: &TagIndex,
    db: usize,
    tag: Option<&[u8]>,
    largest: Vec<(Vec<u8>, usize)>,
) -> TagInfoReport {
    let stats = ix.stats();
    TagInfoReport {
        keys: match tag {
            Some(t) => ix.tag_cardinality(db, t) as u64,
            None => stats.keys,
        },
        tags: stats.tags,
        pairs: stats.pairs,
        memory_bytes: ix.memory_bytes() as u64,
        digest: format!("{:016x}", stats.digest),
        tag: tag.map(opt_core::report::display_name),
        largest: largest
            .into_iter()
            .map(|(t, n)| TagSize {
                tag: opt_core::report::display_name(&t),
                keys: n as u64,
            })
            .collect(),
    }
}

/// Schedules the next part, unless one is scheduled.
fn arm_timer(ctx: *mut raw::RedisModuleCtx, r: &mut Rankings) {
    if r.timer_armed {
        return;
    }
    // SAFETY: ctx is valid on the main thread; `run_part` has the timer signature.
    unsafe {
        if let Some(create) = raw::RedisModule_CreateTimer {
            create(ctx, 0, Some(run_part), ptr::null_mut());
            r.timer_armed = true;
        }
    }
}

/// # Safety
/// Called by Redis on the main thread when the timer fires.
unsafe extern "C" fn run_part(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch_and_log("OPT.TAGINFO ranking", || {
        let mut list = RANKINGS
            .with(|r| {
                r.timer_armed = false;
                std::mem::take(&mut r.list)
            })
            .unwrap_or_default();
        let budget = configs::int(idx::SCAN_SLICE_US).max(1) as u64;
        let started = Instant::now();
        let deadline = started + Duration::from_micros(budget);
        let ranked = tags::with_index(|ix| {
            for p in list.iter_mut() {
                while !p.disconnected && !p.done && Instant::now() < deadline {
                    p.done = ix.rank_tags(&mut p.ranking, SLOTS_PER_CLOCK_READ);
                }
            }
        });
        PARTS.fetch_add(1, Ordering::Relaxed);
        PART_MAX_US.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let mut waiting = Vec::with_capacity(list.len());
        for p in list {
            if p.disconnected {
                // SAFETY: the client was blocked by this ranking and is unblocked once; the
                // client being gone, nothing is replied.
                unsafe { blocked::unblock::<Outcome>(p.client, None) };
            } else if p.done {
                let outcome = Box::new(Outcome {
                    report: tags::with_index(|ix| {
                        report(ix, p.ranking.db(), None, p.ranking.into_largest())
                    }),
                    as_json: p.as_json,
                });
                // SAFETY: as above; Redis hands the outcome to reply_callback, then frees it.
                unsafe { blocked::unblock(p.client, Some(outcome)) };
            } else {
                waiting.push(p);
            }
        }
        if ranked.is_err() {
            crate::log::warning("OPT.TAGINFO: the tag index was busy; ranking goes on later");
        }
        RANKINGS.with(|r| {
            r.list.extend(waiting);
            if !r.list.is_empty() {
                arm_timer(ctx, r);
            }
        });
    });
}

/// # Safety
/// Called by Redis to reply to the unblocked client, with the outcome as private data.
unsafe extern "C" fn reply_callback(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guard::catch_and_log("OPT.TAGINFO reply", || {
        // SAFETY: the client was blocked with an Outcome; this is its reply callback.
        let outcome = unsafe { blocked::outcome::<Outcome>(ctx) };
        match outcome {
            Some(o) => {
                let taken = std::mem::replace(&mut o.report, Err(ReplyError(String::new())));
                reply::send(ctx, taken.map(Reply::structured), o.as_json);
            }
            // Called as the timeout callback: CLIENT UNBLOCK, before the ranking ended.
            None => reply::send_error(
                ctx,
                "ERR OPT.TAGINFO was unblocked before its ranking of the tags ended",
            ),
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// # Safety
/// Called by Redis when a blocked client disconnects.
unsafe extern "C" fn on_disconnect(
    _ctx: *mut raw::RedisModuleCtx,
    bc: *mut raw::RedisModuleBlockedClient,
) {
    guard::catch_and_log("OPT.TAGINFO disconnect", || {
        RANKINGS.with(|r| {
            for p in r.list.iter_mut().filter(|p| p.client == bc) {
                p.disconnected = true;
            }
        });
    });
}
