//! `OPT.KEYSPACE`: the memory profile, computed in the server without stalling it.
//!
//! The calling client is blocked; a timer runs the analysis in slices of at most
//! `opt.scan-slice-us` of main-thread time (half of it while other clients send commands, see
//! `opt_core::keyspace::slice_budget_us`), and other clients are served between slices. FULL
//! walks every key with `RedisModule_Scan`; SAMPLES picks random keys. For each key the module
//! reads its type, length, TTL and idle time (or LFU counter) from the key handle, opened
//! without touching the key, and its bytes from `MEMORY USAGE` (the server's own accounting).
//! The aggregation is `opt_core::keyspace`. A running analysis reports its progress
//! (`OPT.KEYSPACE STATUS`), can be cancelled (`OPT.KEYSPACE CANCEL`), and is cancelled when
//! its client disconnects.

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use opt_core::advise::AdviseQuery;
use opt_core::config::idx;
use opt_core::keyspace::{
    parse_command, slice_budget_us, Aggregator, KeyFacts, KeyspaceCommand, KeyspaceQuery, Mode,
    Thresholds,
};
use opt_core::known_big_keys::{combine_census, KnownBigKeys, KNOWN_BIG_KEY_BYTES};
use opt_core::memsize::{raw_string_key_bytes, string_key_bytes};
use opt_core::report::{KeyspaceProgress, KeyspaceReport};
use redis_module::raw;

use crate::commands::Call;
use crate::reply::{self, string_bytes, Reply, ReplyError};
use crate::state::{module_call, MainThreadCell};
use crate::{blocked, configs, guard, log};

/// Whether computed string sizes agree with MEMORY USAGE on this server (see `memsize`).
#[derive(Default)]
struct Calibration {
    /// MEMORY USAGE minus the computed part, seen on the first keys.
    constant: Option<i64>,
    agreeing: u32,
    seen: u64,
    failed: bool,
    /// Whether some key's bytes were computed rather than asked.
    computed_used: bool,
    /// Set when a spot check disagreed after computed sizes were used: those may be short
    /// (a string that APPEND or SETRANGE grew holds spare bytes the computation cannot see),
    /// so the analysis starts over, asking MEMORY USAGE for every key (see `start_over`).
    start_over: bool,
}

impl Calibration {
    /// A computed size disagreed with MEMORY USAGE: computation stops, and the analysis
    /// starts over if computed sizes were already used.
    fn disagree(&mut self) {
        self.failed = true;
        self.start_over = self.computed_used;
    }
}

/// How one key's bytes are found (see `key_bytes`).
struct Sizing<'a> {
    key_len: usize,
    encoding: &'a str,
    length: u64,
    /// A raw string's sds allocation, when it was read (`raw_sds_request`).
    raw_sds: Option<usize>,
    /// Ask MEMORY USAGE and compare even when computed sizes are trusted: set for the first
    /// keys of each pattern, so that a namespace written another way (APPEND, SETRANGE) is
    /// caught on its first keys rather than by chance.
    check: bool,
}

/// Keys of each pattern whose computed size is checked against MEMORY USAGE (at most about
/// 9,000 calls in all, for the 1,100 patterns an analysis keeps).
const PATTERN_CHECKS: u64 = 8;

/// In SAMPLES mode, names walked per measured sample only to count each pattern's keys. A
/// walked name costs a fraction of a measured sample and pins down the pattern shares, which
/// dominate the error of a pattern's bytes (see `Aggregator::finish`). 4 keeps SAMPLES 10000
/// on 1M keys within about 80 ms on a 2-core VM.
const NAME_DRAWS_PER_SAMPLE: u64 = 4;

/// SAMPLES on a walk: once every sample is measured, the walk goes on counting names while a
/// pattern holding at least `EXTEND_MIN_SHARE` of the memory has a 95% interval wider than
/// `EXTEND_UNTIL_CI` of its bytes, for as long as the analysis has run less than
/// `EXTEND_WITHIN` and the walk has returned less than `EXTEND_MAX_FACTOR` times the names it
/// planned. With 50,000 names a pattern holding 5% of the keys has an interval of about 3.8%
/// (1.95% standard error), so about 1 run in 100 was off by more than 5%; names are cheap
/// (1 µs), and the time left below 100 ms buys more of them in most runs.
const EXTEND_MIN_SHARE: f64 = 0.04;
/// See [`EXTEND_MIN_SHARE`]: 2.6% is 5% at about 3.8 standard errors. (3.2% let about one
/// run in 550 miss 5% for a pattern of 5% of the keys; with 2.6%, and up to 3 times the planned
/// names, the walk mostly runs until `EXTEND_WITHIN`, and the error's sd fell from 1.60% to
/// 1.51%: docs/benchmarks.md.)
const EXTEND_UNTIL_CI: f64 = 0.026;
/// See [`EXTEND_MIN_SHARE`].
const EXTEND_WITHIN: Duration = Duration::from_millis(70);
/// See [`EXTEND_MIN_SHARE`].
const EXTEND_MAX_FACTOR: u64 = 3;

/// The same when the samples come from RandomKey, whose draws cost about 1.6 µs against 1 µs
/// for a walked name: with 4, SAMPLES 10000 on 1M keys took 116 ms (median), so 2.
const RANDOM_KEY_NAMES_PER_SAMPLE: u64 = 2;

/// FULL and the big-key watch: `RedisModule_Scan` calls between two reads of the clock (a
/// call visits one bucket).
pub(crate) const SCANS_PER_CLOCK_READ: u32 = 8;

/// Keys compared before computed sizes are trusted.
const CALIBRATION_KEYS: u32 = 32;
/// After calibration, one computed key in this many is checked against MEMORY USAGE.
const SPOT_CHECK_EVERY: u64 = 256;

struct Job {
    id: u64,
    /// Set when the analysis feeds OPT.ADVISE instead of answering OPT.KEYSPACE.
    advise: Option<AdviseQuery>,
    calibration: Calibration,
    client: *mut raw::RedisModuleBlockedClient,
    as_json: bool,
    query: KeyspaceQuery,
    db: u64,
    cursor: *mut raw::RedisModuleScanCursor,
    agg: Aggregator,
    scanned: u64,
    total: u64,
    /// SAMPLES: random names still to draw just to count each pattern's keys (the name phase,
    /// see `Aggregator::add_name`), before the measured samples. Only when the samples are
    /// drawn with RandomKey (see `walk`).
    names_left: u64,
    /// SAMPLES: the SCAN walk that draws the samples, or None to draw them with RandomKey.
    walk: Option<SampleWalk>,
    db_keys: u64,
    started: Instant,
    finished: bool,
    cancelled: Option<&'static str>,
    now_ms: i64,
    /// FULL: keys the current scan call read, with their names retained, measured once it
    /// returns (`measure_scanned`); empty between scan calls.
    scanned_unmeasured: Vec<(*mut raw::RedisModuleString, OpenKeyFacts)>,
    /// `Replacements::events` when the analysis started.
    events_seen: u64,
    /// SAMPLES: the known big keys measured whole (see `opt_core::known_big_keys`).
    census: Census,
}

/// The census stratum of a SAMPLES analysis: the big keys remembered for its db, each measured
/// whole, while the sample leaves them out and scales up to the other keys only.
#[derive(Default)]
struct Census {
    /// Names to measure, sorted, so that the sample finds the ones it leaves out by binary
    /// search (one copy of the names, and no hash set to build in the command).
    names: Vec<Vec<u8>>,
    /// Names measured (or found gone) so far.
    next: usize,
    /// Census keys that exist (whether they match MATCH and TYPE or not): the sample scales
    /// up to the db's keys less these.
    present: u64,
    /// Census keys measured (those that match).
    measured: u64,
    /// Their figures, exact.
    agg: Option<Aggregator>,
    /// Set while a census key is measured, so that `measure` notes a shrunk key.
    measuring: bool,
    /// Draws of a census key by RandomKey, left out of the sample.
    skipped_draws: u64,
}

impl Census {
    /// Whether the sample leaves `name` out.
    fn skips(&self, name: &[u8]) -> bool {
        !self.names.is_empty()
            && self
                .names
                .binary_search_by(|n| n.as_slice().cmp(name))
                .is_ok()
    }
}

/// The big keys analyses measured (see `opt_core::known_big_keys`), bounded by
/// `opt.keyspace-known-big-keys`.
static KNOWN_BIG: MainThreadCell<KnownBigKeys> = MainThreadCell::new(KnownBigKeys::new());

/// Notes a key measured elsewhere (the big-key watch): remembered if it is big, forgotten if
/// it is no longer.
pub fn note_known_big(db: u64, name: &[u8], bytes: u64) {
    let capacity = known_big_capacity();
    KNOWN_BIG.with(|k| k.note(db, name, bytes, capacity));
}

/// Notes that a pass over every key of `db` that began at `began` (unix seconds) ended.
pub fn note_pass_ended(db: u64, began: u64) {
    KNOWN_BIG.with(|k| k.pass_ended(db, began));
}

/// Known big keys, for INFO.
pub fn known_big_keys() -> usize {
    KNOWN_BIG.with(|k| k.len()).unwrap_or(0)
}

/// SAMPLES measured every remembered big key whole, for INFO.
static CENSUS_KEYS_MEASURED: AtomicU64 = AtomicU64::new(0);

/// Known big keys measured whole by SAMPLES, for INFO.
pub fn census_keys_measured() -> u64 {
    CENSUS_KEYS_MEASURED.load(Ordering::Relaxed)
}

fn known_big_capacity() -> usize {
    usize::try_from(configs::int(idx::KEYSPACE_KNOWN_BIG_KEYS)).unwrap_or(0)
}

struct Jobs {
    list: Vec<Job>,
    next_id: u64,
    timer_armed: bool,
    /// When a slice last found that client commands had run since the slice before it.
    clients_seen_at: Option<Instant>,
    /// Databases whose contents were replaced as a whole (see `Replacements`).
    replaced: Replacements,
}

static JOBS: MainThreadCell<Jobs> = MainThreadCell::new(Jobs {
    list: Vec::new(),
    next_id: 1,
    timer_armed: false,
    clients_seen_at: None,
    replaced: Replacements {
        events: 0,
        all: (0, ""),
        by_db: Vec::new(),
    },
});

/// The events that replace a database's contents as a whole: FLUSHDB and FLUSHALL, SWAPDB,
/// and a load (DEBUG RELOAD, a replica's full sync). An analysis that such an event overtakes
/// would report part of one dataset as if it were all of another: slices even run while an
/// RDB loads (the server serves its event loop between chunks), and a FULL analysis once
/// reported 34% of the keys, as exact, across a DEBUG RELOAD. So it ends with an error that
/// names the event instead. Each entry is (event number, reason); an analysis remembers the
/// event count when it starts (`Job::events_seen`).
struct Replacements {
    /// Events noted so far.
    events: u64,
    /// The latest event that replaced every database.
    all: (u64, &'static str),
    /// The latest event that replaced each database, by db number (grown on demand; at most
    /// the server's `databases`).
    by_db: Vec<(u64, &'static str)>,
}

impl Replacements {
    /// Notes an event that replaced `db`'s contents (every db when None).
    fn note(&mut self, db: Option<usize>, why: &'static str) {
        self.events += 1;
        match db {
            None => self.all = (self.events, why),
            Some(db) => {
                if self.by_db.len() <= db {
                    self.by_db.resize(db + 1, (0, ""));
                }
                self.by_db[db] = (self.events, why);
            }
        }
    }

    /// Why `db` no longer holds what it held when `events_seen` events had been noted, if it
    /// does not.
    fn since(&self, events_seen: u64, db: u64) -> Option<&'static str> {
        let of_db = usize::try_from(db)
            .ok()
            .and_then(|db| self.by_db.get(db))
            .copied()
            .unwrap_or((0, ""));
        [self.all, of_db]
            .into_iter()
            .filter(|&(n, _)| n > events_seen)
            .max_by_key(|&(n, _)| n)
            .map(|(_, why)| why)
    }
}

const FLUSHED: &str = "its database was emptied (FLUSHDB, FLUSHALL, DEBUG RELOAD or a full sync \
     from the master) while it ran; run it again";
const SWAPPED: &str = "its database was swapped with another by SWAPDB while it ran; run it again";
const RELOADED: &str = "the dataset was reloaded (DEBUG RELOAD or a full sync from the master) \
     while it ran; run it again";

/// Notes the server events that replace a database's contents (dispatched by `events`), so
/// that the analyses they overtake end with an error (see `Replacements`).
///
/// # Safety
/// `data` is what the server passed with the event.
pub unsafe fn on_server_event(id: u64, subevent: u64, data: *mut c_void) {
    let (db, why) = match id {
        raw::REDISMODULE_EVENT_LOADING
            if !matches!(
                subevent,
                raw::REDISMODULE_SUBEVENT_LOADING_ENDED | raw::REDISMODULE_SUBEVENT_LOADING_FAILED
            ) =>
        {
            (vec![None], RELOADED)
        }
        // A replica's swapdb full sync swapped the loaded databases in: every db was replaced
        // (its LOADING start event came before the load, while the old dbs still served).
        raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD
            if subevent == raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_COMPLETED =>
        {
            (vec![None], RELOADED)
        }
        raw::REDISMODULE_EVENT_FLUSHDB
            if subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_START && !data.is_null() =>
        {
            // SAFETY: for FlushDB events data points to a RedisModuleFlushInfo.
            let info = unsafe { &*(data as *const raw::RedisModuleFlushInfo) };
            (vec![usize::try_from(info.dbnum).ok()], FLUSHED)
        }
        raw::REDISMODULE_EVENT_SWAPDB if !data.is_null() => {
            // SAFETY: for SwapDB events data points to a RedisModuleSwapDbInfo.
            let info = unsafe { &*(data as *const raw::RedisModuleSwapDbInfo) };
            let dbs = [info.dbnum_first, info.dbnum_second].map(|d| usize::try_from(d).ok());
            if dbs.contains(&None) {
                return;
            }
            (dbs.to_vec(), SWAPPED)
        }
        _ => return,
    };
    KNOWN_BIG.with(|k| {
        for d in &db {
            k.forget_db(d.map(|d| d as u64));
        }
    });
    let noted = JOBS.with(|j| {
        for db in db {
            j.replaced.note(db, why);
        }
    });
    if noted.is_none() {
        log::warning("OPT.KEYSPACE: a database was replaced while its jobs were in use");
    }
}

/// A command filter registered while analyses run, so that slices know whether clients are
/// being served (see `opt_core::keyspace::slice_budget_us`). It ignores this module's own
/// calls; it costs about 80 instructions per command, and nothing when no analysis runs.
static CLIENT_FILTER: AtomicPtr<raw::RedisModuleCommandFilter> = AtomicPtr::new(ptr::null_mut());
/// Set by that filter, read and cleared by each slice.
static CLIENT_COMMANDS: AtomicBool = AtomicBool::new(false);

/// # Safety
/// Called by Redis for each command while the filter is registered; touches no argument.
unsafe extern "C" fn note_client_command(_fctx: *mut raw::RedisModuleCommandFilterCtx) {
    CLIENT_COMMANDS.store(true, Ordering::Relaxed);
}

/// Registers the client filter if it is not (without the API, slices keep their full length).
///
/// # Safety
/// `ctx` must be a live context of this module, on the main thread.
unsafe fn watch_clients(ctx: *mut raw::RedisModuleCtx) {
    if !CLIENT_FILTER.load(Ordering::Relaxed).is_null() {
        return;
    }
    let f = crate::server::register_command_filter(ctx, note_client_command);
    CLIENT_FILTER.store(f, Ordering::Relaxed);
}

/// Unregisters the client filter when no analysis is left.
///
/// # Safety
/// `ctx` must be a live context of this module, on the main thread.
unsafe fn unwatch_clients(ctx: *mut raw::RedisModuleCtx) {
    let f = CLIENT_FILTER.load(Ordering::Relaxed);
    if f.is_null() {
        return;
    }
    if let Some(unregister) = raw::RedisModule_UnregisterCommandFilter {
        if unregister(ctx, f) == raw::REDISMODULE_OK as c_int {
            CLIENT_FILTER.store(ptr::null_mut(), Ordering::Relaxed);
        }
    }
}

/// What the blocked client receives when its analysis ends.
struct Outcome {
    result: Result<KeyspaceReport, String>,
    as_json: bool,
    /// Answer with OPT.ADVISE's report, computed from this analysis, instead.
    advise: Option<AdviseQuery>,
}

/// A config value through CONFIG GET, if CONFIG is available (it may be renamed or blocked).
fn config_get(ctx: *mut raw::RedisModuleCtx, name: &CStr) -> Option<i64> {
    // SAFETY: ctx is live; the reply is read then freed.
    unsafe {
        let reply = module_call!(
            ctx,
            c"CONFIG".as_ptr(),
            c"cc".as_ptr(),
            c"GET".as_ptr(),
            name.as_ptr(),
        )?;
        if reply.is_null() {
            return None;
        }
        let mut out = None;
        if raw::RedisModule_CallReplyLength?(reply) >= 2 {
            let v = raw::RedisModule_CallReplyArrayElement?(reply, 1);
            out = reply::call_reply_bytes(v)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok());
        }
        raw::RedisModule_FreeCallReply?(reply);
        out
    }
}

/// How many databases `DB` may name: `databases`, or in cluster mode db 0 alone (Redis) or
/// `cluster-databases` (Valkey 9). Where CONFIG is renamed or refused: 16, or 1 in a cluster.
pub(crate) fn analysable_databases(ctx: *mut raw::RedisModuleCtx) -> u64 {
    let count = if crate::server::in_cluster(ctx) {
        config_get(ctx, c"cluster-databases").unwrap_or(1)
    } else {
        config_get(ctx, c"databases").unwrap_or(16)
    };
    count.max(1) as u64
}

/// `OPT.KEYSPACE [SAMPLES n | FULL] [MATCH glob] [TYPE t] [DB n] [TOP n] [DELIMITERS chars]`,
/// `OPT.KEYSPACE STATUS`, `OPT.KEYSPACE CANCEL [id]`.
pub fn command(call: &Call) -> Result<Reply, ReplyError> {
    crate::acl::require_monitor_equivalent(call.ctx, "OPT.KEYSPACE")?;
    let ctx = call.ctx;
    match parse_command(call.args, analysable_databases(ctx)).map_err(ReplyError::err)? {
        KeyspaceCommand::Status => {
            let progress: Vec<KeyspaceProgress> = JOBS
                .with(|j| {
                    j.list
                        .iter()
                        .map(|job| KeyspaceProgress {
                            id: job.id,
                            mode: match job.query.mode {
                                Mode::Full => "full",
                                Mode::Samples(_) => "samples",
                            }
                            .into(),
                            scanned: job.scanned,
                            total: job.total,
                            elapsed_ms: job.started.elapsed().as_millis() as u64,
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Reply::structured(progress))
        }
        KeyspaceCommand::Cancel(id) => {
            let n = JOBS
                .with(|j| {
                    let mut n = 0;
                    for job in j
                        .list
                        .iter_mut()
                        .filter(|job| id.is_none_or(|i| i == job.id))
                    {
                        job.cancelled = Some("cancelled by OPT.KEYSPACE CANCEL");
                        n += 1;
                    }
                    n
                })
                .unwrap_or(0);
            if n == 0 && id.is_some() {
                return Err(ReplyError::err(
                    "OPT.KEYSPACE CANCEL: no running analysis has that id",
                ));
            }
            Ok(Reply::Int(n))
        }
        KeyspaceCommand::Run(_) if !memory_usage_works(ctx) => Err(ReplyError::err(
            "OPT.KEYSPACE sizes keys with MEMORY USAGE, which this server has renamed or \
             disabled (rename-command MEMORY)",
        )),
        KeyspaceCommand::Run(query) => start(call, query, None),
    }
}

/// Starts a keyspace sample whose result feeds OPT.ADVISE (`SAMPLES n` of the advice).
pub fn start_for_advice(call: &Call, advise: AdviseQuery) -> Result<Reply, ReplyError> {
    let query = KeyspaceQuery {
        mode: Mode::Samples(advise.samples),
        glob: None,
        type_filter: None,
        db: None,
        top: 20,
        delimiters: None,
    };
    start(call, query, Some(advise))
}

/// Analyses that may run at once (OPT.KEYSPACE and OPT.ADVISE's samples): each holds up to
/// a few MB of pattern tables and top lists, and they share one slice, so more would only
/// wait and hold memory.
const MAX_RUNNING: usize = 16;

fn start(
    call: &Call,
    query: KeyspaceQuery,
    advise: Option<AdviseQuery>,
) -> Result<Reply, ReplyError> {
    let ctx = call.ctx;
    if JOBS.with(|j| j.list.len()).unwrap_or(0) >= MAX_RUNNING {
        return Err(ReplyError::err(format!(
            "OPT.KEYSPACE: {MAX_RUNNING} analyses are running already; wait for one to end or \
             stop them with OPT.KEYSPACE CANCEL"
        )));
    }
    // SAFETY: ctx is the live command context.
    let current_db = unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx)) } as u64;
    let db = query.db.unwrap_or(current_db);
    let thresholds = Thresholds {
        hash_entries: config_get(ctx, c"hash-max-listpack-entries").unwrap_or(512) as u64,
        zset_entries: config_get(ctx, c"zset-max-listpack-entries").unwrap_or(128) as u64,
        set_intset_entries: config_get(ctx, c"set-max-intset-entries").unwrap_or(512) as u64,
        set_listpack_entries: config_get(ctx, c"set-max-listpack-entries").map(|n| n as u64),
    };
    // SAFETY: ctx is live; the db is restored right after reading its size.
    let db_keys = unsafe {
        let select = raw::RedisModule_SelectDb.ok_or_else(|| ReplyError::err("no SelectDb API"))?;
        select(ctx, db as c_int);
        let n = raw::RedisModule_DbSize.map_or(0, |f| f(ctx));
        select(ctx, current_db as c_int);
        n
    };
    let delimiters = query
        .delimiters
        .clone()
        .unwrap_or_else(|| configs::string(idx::KEY_DELIMITERS).into_bytes());
    // A sample of n keys misses a given key with probability 1 - n/keys (the SCAN walk) or
    // e^(-n/keys) (RandomKey), and one big key missed or hit moves a pattern's estimate by
    // its whole size. A sample costs about two to three times what a key of FULL costs (with
    // the names walked to count patterns; 39,000 keys: FULL 31 to 41 ms, SAMPLES 10000 18 to
    // 26 ms), so up to three keys per sample asked, look at every key instead: exact, for at
    // most about 1.5 times the time.
    let mut query = query;
    if matches!(query.mode, Mode::Samples(n) if n.saturating_mul(3) >= db_keys) {
        query.mode = Mode::Full;
    }
    // OPT.ADVISE without SAMPLES looks at every key of a db that is not too big (see
    // `opt_core::advise::ADVISE_WHOLE_DB_UP_TO`).
    if advise.as_ref().is_some_and(|a| db_keys <= a.whole_db_up_to) {
        query.mode = Mode::Full;
    }
    let total = match query.mode {
        Mode::Full => db_keys,
        Mode::Samples(n) => n,
    };
    let command = if advise.is_some() {
        "OPT.ADVISE"
    } else {
        "OPT.KEYSPACE"
    };
    // SAFETY: ctx is the live command context; the blocked client is unblocked exactly
    // once, with an Outcome, when the job ends (`finish`).
    let client = unsafe { blocked::block::<Outcome>(ctx, command, reply_callback, on_disconnect)? };
    let cursor = match query.mode {
        // SAFETY: creates a cursor destroyed when the job ends.
        Mode::Full => unsafe { raw::RedisModule_ScanCursorCreate.map_or(ptr::null_mut(), |f| f()) },
        Mode::Samples(_) => ptr::null_mut(),
    };
    let top = query.top;
    let query_mode = query.mode;
    let walk = match query.mode {
        Mode::Samples(n) if !per_slot_key_tables(ctx) => Some(SampleWalk::new(n, db_keys, &query)),
        _ => None,
    };
    let census = match query.mode {
        Mode::Samples(_) if known_big_capacity() > 0 => {
            let mut names = KNOWN_BIG.with(|k| k.names_in(db)).unwrap_or_default();
            names.sort_unstable();
            Census {
                names,
                agg: Some(Aggregator::new(&delimiters, top, thresholds)),
                ..Census::default()
            }
        }
        _ => Census::default(),
    };
    let queued = JOBS.with(|j| {
        let id = j.next_id;
        j.next_id += 1;
        j.list.push(Job {
            id,
            advise,
            calibration: Calibration::default(),
            client,
            as_json: call.as_json,
            query,
            db,
            cursor,
            agg: Aggregator::new(&delimiters, top, thresholds),
            scanned: 0,
            total,
            names_left: match (query_mode, &walk) {
                (Mode::Samples(n), None) => n.saturating_mul(RANDOM_KEY_NAMES_PER_SAMPLE),
                _ => 0,
            },
            walk,
            db_keys,
            started: Instant::now(),
            finished: false,
            cancelled: None,
            now_ms: now_ms(),
            scanned_unmeasured: Vec::new(),
            events_seen: j.replaced.events,
            census,
        });
        arm_timer(ctx, j);
    });
    match queued {
        // SAFETY: ctx is the command's context, on the main thread.
        Some(()) => unsafe { watch_clients(ctx) },
        None => {
            // The job (and with it the cursor) was never queued: free the cursor, and answer
            // the client now rather than leave it blocked.
            log::warning("OPT.KEYSPACE: job list busy");
            // SAFETY: the cursor and the client were made above and are used nowhere else.
            unsafe {
                if let (false, Some(destroy)) =
                    (cursor.is_null(), raw::RedisModule_ScanCursorDestroy)
                {
                    destroy(cursor);
                }
                let outcome = Outcome {
                    result: Err("ERR OPT.KEYSPACE: the job list was busy; try again".into()),
                    as_json: call.as_json,
                    advise: None,
                };
                blocked::unblock(client, Some(Box::new(outcome)));
            }
        }
    }
    Ok(Reply::Deferred)
}

/// The server's clock, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    // SAFETY: a plain clock read.
    unsafe { raw::RedisModule_Milliseconds.map_or(0, |f| f()) }
}

/// A context for the slices that run from the event loop (which gives them none).
static SLICE_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(ptr::null_mut());
/// Redis 7.0: slices run from the event loop's after-sleep event, not from a one-shot
/// callback. A slice's lookups delete keys they find expired, and the server queues those
/// deletions for the AOF and the replicas; 7.0 sends the queue on only when a module context
/// of its own is freed, which a one-shot callback with the detached context never does, and
/// the next `beforeSleep` then stopped the server (`blocked.c:624 'server.also_propagate.numops
/// == 0' is not true`, found with `appendonly yes`: test
/// `keys_changing_during_the_scan_are_handled`). The event-loop events come with such a
/// context. After sleep, not before: before sleep the server has not yet written the replies
/// of the commands it just ran, and a slice there delayed them (another client's PING p99
/// during FULL went from 0.29 to 0.86 ms); and one turn later, as the one-shot callback ran
/// (0.82 ms when the slice ran at once). Redis 7.2+ and Valkey send the deletions on by
/// themselves.
static SLICES_AFTER_SLEEP: AtomicBool = AtomicBool::new(false);
/// A slice is due at the next after-sleep event (with `SLICES_AFTER_SLEEP`).
static SLICE_DUE: AtomicBool = AtomicBool::new(false);
/// The due slice let one turn of the event loop go by (see `on_event_loop`).
static SLICE_WAITED: AtomicBool = AtomicBool::new(false);
/// The event-loop subscription is in place. The server builds a context for every event
/// loop iteration while it is, so it is dropped (from a timer: not from inside the event,
/// which the server still reads after the callback) once no slice is due.
static EVENT_LOOP_SUBSCRIBED: AtomicBool = AtomicBool::new(false);
/// The write end of the wake-up pipe (-1: none, slices use a timer).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// Its read end (with `SLICES_AFTER_SLEEP`, drained at the after-sleep event: drained in the
/// event loop's file events, the byte a slice wrote would be gone before the loop's next
/// sleep, which then waited for the next client or timer).
static WAKE_READ_FD: AtomicI32 = AtomicI32::new(-1);

/// Sets up the slice scheduling (called once at load): a pipe whose read end is in the
/// server's event loop. Writing a byte makes the next event-loop iteration queue a slice that
/// runs after that iteration's clients were served. Module timers would add idle time (they
/// fire at most once per millisecond), and one-shot callbacks queued from a one-shot callback
/// run back to back without serving clients, hence the pipe in between.
pub fn init(ctx: *mut raw::RedisModuleCtx) {
    // SAFETY: OnLoad context; the pipe and the detached context live as long as the module;
    // `on_wake` has the event-loop callback signature.
    unsafe {
        let (Some(detach), Some(add)) = (
            raw::RedisModule_GetDetachedThreadSafeContext,
            raw::RedisModule_EventLoopAdd,
        ) else {
            log::notice("OPT.KEYSPACE: no event-loop API, slices run from a 1 ms timer");
            return;
        };
        let mut fds = [0 as c_int; 2];
        if libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) != 0 {
            log::warning("OPT.KEYSPACE: no pipe, slices run from a 1 ms timer");
            return;
        }
        if add(
            fds[0],
            raw::REDISMODULE_EVENTLOOP_READABLE as c_int,
            Some(on_wake),
            ptr::null_mut(),
        ) != raw::REDISMODULE_OK as c_int
        {
            libc::close(fds[0]);
            libc::close(fds[1]);
            return;
        }
        SLICE_CTX.store(detach(ctx), Ordering::Relaxed);
        WAKE_FD.store(fds[1], Ordering::Relaxed);
        WAKE_READ_FD.store(fds[0], Ordering::Relaxed);
        if !crate::server::supports_aux_save2()
            && crate::server::present(raw::RedisModule_SubscribeToServerEvent)
        {
            SLICES_AFTER_SLEEP.store(true, Ordering::Relaxed);
        }
    }
}

/// Subscribes to the event loop's events (`on` true) or drops the subscription (see
/// `SLICES_AFTER_SLEEP`).
///
/// # Safety
/// `ctx` must be a live context of this module, on the main thread.
unsafe fn subscribe_event_loop(ctx: *mut raw::RedisModuleCtx, on: bool) {
    if EVENT_LOOP_SUBSCRIBED.load(Ordering::Relaxed) == on {
        return;
    }
    let Some(subscribe) = raw::RedisModule_SubscribeToServerEvent else {
        return;
    };
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_EVENTLOOP,
        dataver: 1,
    };
    let callback: raw::RedisModuleEventCallback = if on { Some(on_event_loop) } else { None };
    if subscribe(ctx, event, callback) == raw::REDISMODULE_OK as c_int {
        EVENT_LOOP_SUBSCRIBED.store(on, Ordering::Relaxed);
    }
}

/// Empties the wake-up pipe (non-blocking).
///
/// # Safety
/// `fd` must be the wake-up pipe's read end, or -1.
unsafe fn drain(fd: c_int) {
    let mut buf = [0u8; 64];
    while fd >= 0 && libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
}

/// # Safety
/// Called by the server before and after each event-loop sleep, with a context of its own.
unsafe extern "C" fn on_event_loop(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent != raw::REDISMODULE_SUBEVENT_EVENTLOOP_AFTER_SLEEP {
        return;
    }
    drain(WAKE_READ_FD.load(Ordering::Relaxed));
    if SLICE_DUE.load(Ordering::Relaxed) {
        // The clients that woke the loop with this slice's byte are served first, as they
        // were when a one-shot callback ran the slice: the slice waits one more turn, with
        // the byte written again so that the loop does not sleep in between.
        if !SLICE_WAITED.swap(true, Ordering::Relaxed) {
            let fd = WAKE_FD.load(Ordering::Relaxed);
            if fd >= 0 && libc::write(fd, [1u8].as_ptr().cast(), 1) == 1 {
                return;
            }
        }
        SLICE_WAITED.store(false, Ordering::Relaxed);
        SLICE_DUE.store(false, Ordering::Relaxed);
        run_slice(ctx, ptr::null_mut());
    }
    if !SLICE_DUE.load(Ordering::Relaxed) && !DROP_PENDING.swap(true, Ordering::Relaxed) {
        if let Some(create) = raw::RedisModule_CreateTimer {
            create(ctx, 0, Some(drop_event_loop), ptr::null_mut());
        }
    }
}

/// A timer that drops the event-loop subscription is set (one at a time).
static DROP_PENDING: AtomicBool = AtomicBool::new(false);

/// # Safety
/// Called by Redis on the main thread when the timer fires.
unsafe extern "C" fn drop_event_loop(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    DROP_PENDING.store(false, Ordering::Relaxed);
    if !SLICE_DUE.load(Ordering::Relaxed) {
        subscribe_event_loop(ctx, false);
    }
}

/// Schedules the next slice.
fn arm_timer(ctx: *mut raw::RedisModuleCtx, jobs: &mut Jobs) {
    if jobs.timer_armed {
        return;
    }
    let fd = WAKE_FD.load(Ordering::Relaxed);
    // SAFETY: fd is the pipe's write end; ctx is valid; `run_slice` has the timer signature.
    unsafe {
        if fd >= 0 && SLICES_AFTER_SLEEP.load(Ordering::Relaxed) {
            // The byte only wakes the event loop; the slice runs at its after-sleep event.
            subscribe_event_loop(ctx, true);
            if EVENT_LOOP_SUBSCRIBED.load(Ordering::Relaxed) {
                SLICE_DUE.store(true, Ordering::Relaxed);
                let _ = libc::write(fd, [1u8].as_ptr().cast(), 1);
                jobs.timer_armed = true;
                return;
            }
        } else if fd >= 0 && libc::write(fd, [1u8].as_ptr().cast(), 1) == 1 {
            jobs.timer_armed = true;
            return;
        }
        if let Some(create) = raw::RedisModule_CreateTimer {
            create(ctx, 0, Some(run_slice), ptr::null_mut());
            jobs.timer_armed = true;
        }
    }
}

/// # Safety
/// Called by the server's event loop when the wake-up pipe is readable. The slice itself runs
/// after this iteration's clients were served: from the one-shot queue the server runs before
/// it sleeps again.
unsafe extern "C" fn on_wake(fd: c_int, _data: *mut c_void, _mask: c_int) {
    if SLICES_AFTER_SLEEP.load(Ordering::Relaxed) {
        // Left for the after-sleep event to drain (see `WAKE_READ_FD`).
        return;
    }
    drain(fd);
    let queued = raw::RedisModule_EventLoopAddOneShot.is_some_and(|add| {
        add(Some(slice_after_clients), ptr::null_mut()) == raw::REDISMODULE_OK as c_int
    });
    if !queued {
        slice_after_clients(ptr::null_mut());
    }
}

/// # Safety
/// Called on the main thread, from the server's one-shot queue or from `on_wake`.
unsafe extern "C" fn slice_after_clients(_data: *mut c_void) {
    let ctx = SLICE_CTX.load(Ordering::Relaxed);
    if !ctx.is_null() {
        run_slice(ctx, ptr::null_mut());
    }
}

/// # Safety
/// Called by Redis on the main thread when the timer fires (or from `on_wake`).
unsafe extern "C" fn run_slice(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::catch_and_log("OPT.KEYSPACE slice", || {
        let slice_start = Instant::now();
        // Take the jobs out, so the per-key work (which calls into the server) holds no borrow.
        let (mut jobs, since_clients_ms) = JOBS
            .with(|j| {
                j.timer_armed = false;
                if CLIENT_COMMANDS.swap(false, Ordering::Relaxed) {
                    j.clients_seen_at = Some(slice_start);
                }
                let since = j
                    .clients_seen_at
                    .map(|t| slice_start.duration_since(t).as_millis() as u64);
                (std::mem::take(&mut j.list), since)
            })
            .unwrap_or_default();
        let max_us = configs::int(idx::SCAN_SLICE_US).max(0) as u64;
        let full_budget = Duration::from_micros(slice_budget_us(max_us, None));
        let budget = Duration::from_micros(slice_budget_us(max_us, since_clients_ms));
        let deadline = slice_start + budget;
        for job in jobs.iter_mut() {
            if Instant::now() >= deadline {
                break;
            }
            if job.cancelled.is_none() && !job.finished {
                // SAFETY: ctx is the timer's context, valid for this callback.
                unsafe { step(ctx, job, deadline) };
            }
        }
        let (done, running): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| j.finished || j.cancelled.is_some());
        for job in done {
            finish(job);
        }
        let took = slice_start.elapsed().as_micros() as u64;
        SLICE_MAX_US.fetch_max(took, Ordering::Relaxed);
        SLICES.fetch_add(1, Ordering::Relaxed);
        if budget < full_budget {
            SLICES_SHORTENED.fetch_add(1, Ordering::Relaxed);
        }
        let idle = JOBS
            .with(|j| {
                j.list.extend(running);
                if j.list.is_empty() {
                    j.clients_seen_at = None;
                } else {
                    arm_timer(ctx, j);
                }
                j.list.is_empty()
            })
            .unwrap_or(false);
        if idle {
            // SAFETY: ctx is this slice's context, on the main thread.
            unsafe { unwatch_clients(ctx) };
        }
    });
}

/// Works on `job` until `deadline` or until it is done.
///
/// # Safety
/// `ctx` must be the timer's context.
unsafe fn step(ctx: *mut raw::RedisModuleCtx, job: &mut Job, deadline: Instant) {
    if let Some(why) = JOBS
        .with(|j| j.replaced.since(job.events_seen, job.db))
        .flatten()
    {
        job.cancelled = Some(why);
        return;
    }
    let Some(select) = raw::RedisModule_SelectDb else {
        job.cancelled = Some("no SelectDb API");
        return;
    };
    if select(ctx, job.db as c_int) != raw::REDISMODULE_OK as c_int {
        job.cancelled = Some("cannot select the database");
        return;
    }
    match job.query.mode {
        Mode::Full => {
            let Some(scan) = raw::RedisModule_Scan else {
                job.cancelled = Some("no Scan API");
                return;
            };
            // A scan call visits one hash bucket (about one key, 2 us): reading the clock
            // before each cost about 1% of FULL's time, so it is read every
            // SCANS_PER_CLOCK_READ.
            'slice: while Instant::now() < deadline {
                for _ in 0..SCANS_PER_CLOCK_READ {
                    let more = scan(
                        ctx,
                        job.cursor,
                        Some(scan_callback),
                        (job as *mut Job).cast(),
                    );
                    measure_scanned(ctx, job);
                    if job.calibration.start_over {
                        start_over(job);
                    } else if more == 0 {
                        job.finished = true;
                        break 'slice;
                    }
                }
            }
        }
        Mode::Samples(_) => {
            if job.census.next < job.census.names.len() {
                take_census(ctx, job, deadline);
                if job.census.next < job.census.names.len() || job.calibration.start_over {
                    if job.calibration.start_over {
                        start_over(job);
                    }
                    return;
                }
            }
            if job.walk.is_some() {
                walk(ctx, job, deadline);
                if job.walk.is_some() {
                    return;
                }
            }
            let (Some(random), Some(open), Some(close), Some(free)) = (
                raw::RedisModule_RandomKey,
                raw::RedisModule_OpenKey,
                raw::RedisModule_CloseKey,
                raw::RedisModule_FreeString,
            ) else {
                job.cancelled = Some("no RandomKey API");
                return;
            };
            while job.names_left > 0 && Instant::now() < deadline {
                // Checking the clock costs more than a name draw: draw a batch between checks.
                for _ in 0..job.names_left.min(64) {
                    let name = random(ctx);
                    if name.is_null() {
                        job.names_left = 0;
                        break;
                    }
                    if skip_census_draw(ctx, job, name) {
                        continue;
                    }
                    job.names_left -= 1;
                    draw_name(ctx, job, name);
                    free(ctx, name);
                }
            }
            while Instant::now() < deadline && job.scanned < job.total {
                let name = random(ctx);
                if name.is_null() {
                    // The db is empty (flushed since the start): nothing more to sample.
                    job.finished = true;
                    break;
                }
                if skip_census_draw(ctx, job, name) {
                    if job.finished {
                        break;
                    }
                    continue;
                }
                let key = open_counted(ctx, open, name);
                let facts = read_open_key(job, name, key);
                if !key.is_null() {
                    close(key);
                }
                if let Some(facts) = facts {
                    measure(ctx, job, name, facts);
                }
                free(ctx, name);
                if job.calibration.start_over {
                    // The next slice begins again with the name draws.
                    start_over(job);
                    return;
                }
            }
            if job.scanned >= job.total {
                job.finished = true;
            }
        }
    }
}

/// Starts the analysis over, with every key's size asked of MEMORY USAGE (see
/// `Calibration::start_over`): what was aggregated is dropped and the keys are seen again. The
/// computation stays off, so this happens at most once per analysis, and costs at most the
/// time spent so far.
fn start_over(job: &mut Job) {
    job.calibration.start_over = false;
    job.calibration.computed_used = false;
    job.agg = job.agg.restarted();
    job.scanned = 0;
    job.census.next = 0;
    job.census.present = 0;
    job.census.measured = 0;
    job.census.skipped_draws = 0;
    job.census.agg = job.census.agg.as_ref().map(Aggregator::restarted);
    STARTED_OVER.fetch_add(1, Ordering::Relaxed);
    match job.query.mode {
        Mode::Full => {
            // SAFETY: the cursor was created for this job and is still alive.
            unsafe {
                if let Some(restart) = raw::RedisModule_ScanCursorRestart {
                    restart(job.cursor);
                }
            }
        }
        Mode::Samples(n) => {
            if job.walk.is_some() {
                job.walk = Some(SampleWalk::new(n, job.db_keys, &job.query));
            } else {
                job.names_left = n.saturating_mul(RANDOM_KEY_NAMES_PER_SAMPLE);
            }
        }
    }
}

/// How SAMPLES draws its keys on a server that is not in a cluster: a SCAN walk. Redis places
/// keys in hash-table buckets by a hash of the name, so the keys of any set of buckets are a
/// random sample of the keys, and walking them costs far less per key than RandomKey (which
/// samples 15 entries to return one). Every key walked counts under its pattern; one matching
/// key in `stride` is measured. The walk stops when enough keys are measured, when it has
/// returned as many keys as the db held, or when it has gone all the way round.
///
/// Where the walk covers a small part of the db (no filter, at least 5 keys per sample), each
/// SCAN call starts at a new random cursor. SCAN's cursor runs in reverse-bit order, so one
/// long run of it covers the buckets whose lowest bits take a few fixed values: a server has
/// only a few dozen such runs, and every SAMPLES would draw one of them, so two SAMPLES of the
/// same server would share most of their keys. (Measured: over 200 SAMPLES of one server, the
/// spread of a pattern's error went from 1.6% to 2.6% with the server, against 1.95% in
/// theory.) Runs of one call each (about 200 keys) are drawn from thousands of such sets,
/// nearly independently. With MATCH or TYPE, or a small db, the walk is one run, without
/// replacement, to cover as much of the db as it needs.
///
/// In cluster mode on Redis 7.4+ and Valkey 8+ the key tables are split per slot and a cursor
/// names the slot, so a walk would cover a run of slots, and keys sharing a hash tag share a
/// slot: such a sample would come in clumps. There, and wherever SCAN fails, the samples come
/// from RandomKey, preceded by `RANDOM_KEY_NAMES_PER_SAMPLE` name draws per sample.
struct SampleWalk {
    /// The next SCAN cursor.
    cursor: u64,
    /// Keys the walk returned.
    walked: u64,
    /// Walked keys that passed MATCH and TYPE.
    matched: u64,
    /// One matching key in this many is measured.
    stride: u64,
    /// Times SCAN answered cursor 0.
    wraps: u32,
    /// Each SCAN call starts at a new random cursor (see above).
    restart_each_call: bool,
    /// SCAN calls that returned no key. Restarting walks never see cursor 0 end a round, so
    /// these end them when the keys are gone (a FLUSHDB during the walk).
    empty_calls: u32,
    /// Whether the current SCAN call goes on past the samples, for names alone
    /// (`extend_walk`).
    extending: bool,
}

/// Empty SCAN replies after which a restarting walk ends (each reply covers up to 2,000
/// buckets, so a db with keys left practically never gives this many).
const WALK_MAX_EMPTY_CALLS: u32 = 64;

/// Buckets per SCAN call of a walk.
const WALK_SCAN_COUNT: &CStr = c"200";

impl SampleWalk {
    fn new(samples: u64, db_keys: u64, query: &KeyspaceQuery) -> Self {
        // With MATCH or TYPE every matching key walked is measured (matching keys may be
        // rare); otherwise the walk covers up to NAME_DRAWS_PER_SAMPLE + 1 keys per sample.
        let filtered = query.glob.is_some() || query.type_filter.is_some();
        let stride = if filtered {
            1
        } else {
            (db_keys / samples.max(1)).clamp(1, NAME_DRAWS_PER_SAMPLE + 1)
        };
        SampleWalk {
            // SCAN reads the cursor as an unsigned long; any value is a valid start (its bucket
            // is the value masked by the table size).
            cursor: crate::state::random_u64() >> 1,
            walked: 0,
            matched: 0,
            stride,
            wraps: 0,
            restart_each_call: !filtered && stride == NAME_DRAWS_PER_SAMPLE + 1,
            empty_calls: 0,
            extending: false,
        }
    }
}

/// Whether the keys may sit in one table per cluster slot: cluster mode on anything newer
/// than Redis 7.0 (7.2 has one table, but Valkey 8, which has one per slot, reports 7.2.4).
fn per_slot_key_tables(ctx: *mut raw::RedisModuleCtx) -> bool {
    crate::server::in_cluster(ctx) && crate::server::supports_aux_save2()
}

/// Advances the SCAN walk of a SAMPLES job until `deadline` or the end of the walk. If SCAN
/// fails before the walk returned anything (renamed, refused), the job falls back to RandomKey
/// (`job.walk` becomes None); a failure later cancels it.
///
/// # Safety
/// `ctx` must be the slice's context, with the job's db selected.
unsafe fn walk(ctx: *mut raw::RedisModuleCtx, job: &mut Job, deadline: Instant) {
    let (Some(length), Some(element), Some(free_reply)) = (
        raw::RedisModule_CallReplyLength,
        raw::RedisModule_CallReplyArrayElement,
        raw::RedisModule_FreeCallReply,
    ) else {
        job.walk = None;
        return;
    };
    while Instant::now() < deadline {
        let extending = job.scanned >= job.total && extend_walk(job);
        let Some(w) = job.walk.as_mut() else { return };
        w.extending = extending;
        if (job.scanned >= job.total && !extending)
            || w.walked >= job.db_keys
            || w.wraps >= 2
            || w.empty_calls >= WALK_MAX_EMPTY_CALLS
        {
            job.finished = true;
            return;
        }
        let Ok(cursor) = std::ffi::CString::new(w.cursor.to_string()) else {
            return;
        };
        let reply = module_call!(
            ctx,
            c"SCAN".as_ptr(),
            c"ccc".as_ptr(),
            cursor.as_ptr(),
            c"COUNT".as_ptr(),
            WALK_SCAN_COUNT.as_ptr(),
        )
        .unwrap_or(ptr::null_mut());
        let parsed = if reply.is_null() || length(reply) != 2 {
            None
        } else {
            // Every slice read from a reply is dropped before the reply is freed.
            reply::call_reply_bytes(element(reply, 0))
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<u64>().ok())
                .map(|next| (next, element(reply, 1)))
        };
        let Some((next, keys)) = parsed else {
            if !reply.is_null() {
                free_reply(reply);
            }
            if w.walked == 0 {
                log::warning("OPT.KEYSPACE: SCAN failed, sampling with RandomKey instead");
                job.walk = None;
                job.names_left = job.total.saturating_mul(RANDOM_KEY_NAMES_PER_SAMPLE);
            } else {
                job.cancelled = Some("SCAN failed during the sampling walk");
            }
            return;
        };
        let returned = length(keys);
        for i in 0..returned {
            let Some(name) = reply::call_reply_bytes(element(keys, i)) else {
                continue;
            };
            walk_key(ctx, job, name);
        }
        free_reply(reply);
        if job.calibration.start_over {
            start_over(job);
            continue;
        }
        if let Some(w) = job.walk.as_mut() {
            if returned == 0 {
                w.empty_calls += 1;
            }
            if w.restart_each_call {
                w.cursor = crate::state::random_u64() >> 1;
            } else {
                w.cursor = next;
                if next == 0 {
                    w.wraps += 1;
                }
            }
        }
    }
}

/// Whether a walk whose samples are all measured goes on counting names (see
/// [`EXTEND_MIN_SHARE`]). Only an unfiltered walk over a small part of the db does.
fn extend_walk(job: &Job) -> bool {
    let Some(w) = job.walk.as_ref() else {
        return false;
    };
    w.restart_each_call
        && job.started.elapsed() < EXTEND_WITHIN
        && w.walked
            < job
                .total
                .saturating_mul(w.stride)
                .saturating_mul(EXTEND_MAX_FACTOR)
        && job
            .agg
            .widest_sampled_ci(job.db_keys, job.scanned, EXTEND_MIN_SHARE)
            > EXTEND_UNTIL_CI
}

/// One key returned by the walk: measured when it is the stride's turn, else counted under its
/// pattern.
///
/// # Safety
/// `ctx` must be the slice's context, with the job's db selected.
unsafe fn walk_key(ctx: *mut raw::RedisModuleCtx, job: &mut Job, name: &[u8]) {
    let Some(w) = job.walk.as_mut() else { return };
    if job.census.skips(name) {
        // Measured whole by the census: the walk only counts it toward the db's keys.
        w.walked += 1;
        return;
    }
    if job.scanned >= job.total {
        // Past the samples, a walk that goes on for the names alone (`extend_walk`, never
        // with a filter) counts them; otherwise the rest of the last SCAN reply is left.
        if w.extending {
            w.walked += 1;
            job.agg.add_name(name, true);
        }
        return;
    }
    w.walked += 1;
    let (Some(create), Some(free), Some(open), Some(close)) = (
        raw::RedisModule_CreateString,
        raw::RedisModule_FreeString,
        raw::RedisModule_OpenKey,
        raw::RedisModule_CloseKey,
    ) else {
        return;
    };
    let glob_ok = job.query.name_matches(name);
    let needs_handle =
        glob_ok && (job.query.type_filter.is_some() || (w.matched + 1) % w.stride == 0);
    if !needs_handle {
        if glob_ok {
            w.matched += 1;
        }
        job.agg.add_name(name, glob_ok);
        return;
    }
    let string = create(ctx, name.as_ptr().cast(), name.len());
    let key = open_counted(ctx, open, string);
    // A key that vanished since SCAN returned it counts as a draw that did not match.
    let type_ok = !key.is_null() && job.query.type_matches(key_type_name(key));
    let mut facts = None;
    if type_ok {
        w.matched += 1;
        if w.matched % w.stride == 0 {
            facts = read_open_key(job, string, key);
        } else {
            job.agg.add_name(name, true);
        }
    } else {
        job.agg.add_name(name, false);
    }
    if !key.is_null() {
        close(key);
    }
    if let Some(facts) = facts {
        measure(ctx, job, string, facts);
    }
    free(ctx, string);
}

/// Whether a key RandomKey drew is one the census measures whole, which the sample leaves out
/// (the name is then freed). A db of little else ends the sample.
///
/// # Safety
/// `ctx` must be the slice's context and `name` a string RandomKey returned with it, not
/// used again when this returns true.
unsafe fn skip_census_draw(
    ctx: *mut raw::RedisModuleCtx,
    job: &mut Job,
    name: *mut raw::RedisModuleString,
) -> bool {
    if !job.census.skips(string_bytes(name)) {
        return false;
    }
    if let Some(free) = raw::RedisModule_FreeString {
        free(ctx, name);
    }
    job.census.skipped_draws += 1;
    if job.census.skipped_draws > 16 * (job.total + job.census.present) {
        job.names_left = 0;
        job.finished = true;
    }
    true
}

/// Measures the known big keys of a SAMPLES job whole until `deadline` (see
/// [`Census`]). A key gone is forgotten; one that shrank is forgotten by `measure`.
///
/// # Safety
/// `ctx` must be the slice's context, with the job's db selected.
unsafe fn take_census(ctx: *mut raw::RedisModuleCtx, job: &mut Job, deadline: Instant) {
    let (Some(create), Some(free), Some(open), Some(close)) = (
        raw::RedisModule_CreateString,
        raw::RedisModule_FreeString,
        raw::RedisModule_OpenKey,
        raw::RedisModule_CloseKey,
    ) else {
        job.census.next = job.census.names.len();
        return;
    };
    while job.census.next < job.census.names.len() && Instant::now() < deadline {
        let i = job.census.next;
        job.census.next += 1;
        let string = create(
            ctx,
            job.census.names[i].as_ptr().cast(),
            job.census.names[i].len(),
        );
        let key = open_counted(ctx, open, string);
        if key.is_null() {
            let db = job.db;
            KNOWN_BIG.with(|k| k.forget(db, string_bytes(string)));
            free(ctx, string);
            continue;
        }
        job.census.present += 1;
        // The census keys go to their own aggregator, and do not count as samples.
        let Some(mut census_agg) = job.census.agg.take() else {
            close(key);
            free(ctx, string);
            return;
        };
        std::mem::swap(&mut job.agg, &mut census_agg);
        let samples_scanned = job.scanned;
        let facts = read_open_key(job, string, key);
        job.scanned = samples_scanned;
        close(key);
        if let Some(facts) = facts {
            job.census.measured += 1;
            CENSUS_KEYS_MEASURED.fetch_add(1, Ordering::Relaxed);
            job.census.measuring = true;
            measure(ctx, job, string, facts);
            job.census.measuring = false;
        }
        std::mem::swap(&mut job.agg, &mut census_agg);
        job.census.agg = Some(census_agg);
        free(ctx, string);
        if job.calibration.start_over {
            return;
        }
    }
}

/// Counts one name of the name phase under its pattern, if it passes MATCH and TYPE.
///
/// # Safety
/// `ctx` and `name` must be valid.
unsafe fn draw_name(
    ctx: *mut raw::RedisModuleCtx,
    job: &mut Job,
    name: *mut raw::RedisModuleString,
) {
    let bytes = string_bytes(name);
    let mut matched = job.query.name_matches(bytes);
    if matched && job.query.type_filter.is_some() {
        // Only a TYPE filter makes the name phase open the key.
        matched = match (raw::RedisModule_OpenKey, raw::RedisModule_CloseKey) {
            (Some(open), Some(close)) => {
                let key = open_counted(ctx, open, name);
                let ok = !key.is_null() && job.query.type_matches(key_type_name(key));
                if !key.is_null() {
                    close(key);
                }
                ok
            }
            _ => false,
        };
    }
    job.agg.add_name(bytes, matched);
}

/// Reads a key of FULL's scan through the handle the scan passes; the lookups by name wait
/// until the scan call has returned (`measure_scanned`).
///
/// # Safety
/// Called by `RedisModule_Scan` with the job as privdata and a key opened for reading.
unsafe extern "C" fn scan_callback(
    _ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    privdata: *mut c_void,
) {
    let job = privdata.cast::<Job>();
    let result = guard::catch(|| {
        // SAFETY: privdata is the job `step` passed, borrowed nowhere else during the scan;
        // the other arguments are valid for the duration of the callback.
        let job = unsafe { &mut *job };
        // SAFETY: as above.
        let Some(facts) = (unsafe { read_open_key(job, keyname, key) }) else {
            return;
        };
        // Measured once the scan call has returned and closed the key (`measure_scanned`):
        // the name is kept until then.
        if let Some(retain) = raw::RedisModule_RetainString {
            // SAFETY: keyname is valid; with no context the reference is ours to free.
            unsafe { retain(ptr::null_mut(), keyname) };
            job.scanned_unmeasured.push((keyname, facts));
        }
    });
    if result.is_err() {
        (*job).cancelled = Some("internal error while scanning (logged)");
    }
}

/// Measures the keys the last scan call read (see [`read_open_key`] for why only now), and
/// frees their names.
///
/// # Safety
/// `ctx` must be the slice's context, with the job's db selected.
unsafe fn measure_scanned(ctx: *mut raw::RedisModuleCtx, job: &mut Job) {
    let mut keys = std::mem::take(&mut job.scanned_unmeasured);
    for (name, facts) in keys.drain(..) {
        // SAFETY: name was retained by the scan callback and is freed just below.
        if guard::catch(|| unsafe { measure(ctx, job, name, facts) }).is_err() {
            job.cancelled = Some("internal error while scanning (logged)");
        }
        if let Some(free) = raw::RedisModule_FreeString {
            free(ptr::null_mut(), name);
        }
    }
    // The vector's room is kept for the next call.
    job.scanned_unmeasured = keys;
}

const TYPE_NAMES: [&str; 8] = [
    "none", "string", "list", "hash", "set", "zset", "module", "stream",
];

/// The type of the key open as `key` (`none` when it holds nothing). A key of a module data
/// type is named by its type (`vectorset`, `ReJSON-RL`...) once [`name_module_type`] has
/// learnt that type's name, and is `module` until then.
///
/// # Safety
/// `key` must be a live key handle.
unsafe fn key_type_name(key: *mut raw::RedisModuleKey) -> &'static str {
    let name = TYPE_NAMES[raw::RedisModule_KeyType.map_or(0, |f| f(key)).clamp(0, 7) as usize];
    if name != "module" {
        return name;
    }
    known_module_type(module_type_of(key)).unwrap_or(name)
}

/// The name learnt for `module_type` (see [`MODULE_TYPE_NAMES`]), if any.
fn known_module_type(module_type: usize) -> Option<&'static str> {
    MODULE_TYPE_NAMES
        .with(|names| {
            names
                .iter()
                .find(|(t, _)| *t == module_type)
                .map(|(_, name)| *name)
        })
        .flatten()
}

/// Members a set's scan reads at most to tell whether they are integers.
const MEMBERS_READ: usize = 16;

/// Whether the members of the set open as `key` are integers, judged by the first
/// [`MEMBERS_READ`] a scan of it meets (one scan step reads one bucket of its table): only a
/// set of integers can be an intset. None when the scan meets none within a few steps. Reads
/// the value through the handle: no lookup, nothing touched.
///
/// # Safety
/// `key` must be a live key handle of a set.
unsafe fn set_members_are_integers(key: *mut raw::RedisModuleKey) -> Option<bool> {
    let (create, scan, destroy) = (
        raw::RedisModule_ScanCursorCreate?,
        raw::RedisModule_ScanKey?,
        raw::RedisModule_ScanCursorDestroy?,
    );
    let cursor = create();
    if cursor.is_null() {
        return None;
    }
    let mut kinds = MemberKinds::default();
    for _ in 0..64 {
        let more = scan(
            key,
            cursor,
            Some(note_member_kind),
            (&mut kinds as *mut MemberKinds).cast(),
        );
        if kinds.read >= MEMBERS_READ || more == 0 {
            break;
        }
    }
    destroy(cursor);
    (kinds.read > 0).then_some(kinds.read == kinds.integers)
}

/// What [`set_members_are_integers`] has read so far.
#[derive(Default)]
struct MemberKinds {
    read: usize,
    integers: usize,
}

/// `RedisModule_ScanKey`'s callback for [`set_members_are_integers`].
///
/// # Safety
/// The server calls it with a member (`field`) valid for the call, and `privdata` the
/// `MemberKinds` of the running scan.
unsafe extern "C" fn note_member_kind(
    _key: *mut raw::RedisModuleKey,
    field: *mut raw::RedisModuleString,
    _value: *mut raw::RedisModuleString,
    privdata: *mut c_void,
) {
    if field.is_null() || privdata.is_null() {
        return;
    }
    // SAFETY: privdata is the MemberKinds of the scan that passed it.
    let kinds = unsafe { &mut *privdata.cast::<MemberKinds>() };
    if kinds.read < MEMBERS_READ {
        kinds.read += 1;
        // SAFETY: field is a live string for the length of the call.
        if opt_core::keyspace::is_intset_member(unsafe { string_bytes(field) }) {
            kinds.integers += 1;
        }
    }
}

/// The module data type of the key open as `key`, as an address (0 when unknown). Reading it
/// looks nothing up: it is the value the handle already holds.
///
/// # Safety
/// `key` must be a live key handle of a module type.
unsafe fn module_type_of(key: *mut raw::RedisModuleKey) -> usize {
    raw::RedisModule_ModuleTypeGetType.map_or(0, |f| f(key) as usize)
}

/// Module data types met by analyses, by address, with the name TYPE gave each. Types are
/// registered at module load and never freed (a module with a data type cannot be unloaded),
/// so an address names one type for the life of the process. A server has a handful of
/// types; past [`MAX_MODULE_TYPES`] the others stay `module`.
static MODULE_TYPE_NAMES: MainThreadCell<Vec<(usize, &'static str)>> =
    MainThreadCell::new(Vec::new());
const MAX_MODULE_TYPES: usize = 64;

/// Learns the name of `module_type` (read from the key of that type open as `keyname` a
/// moment ago, now closed) by asking TYPE once, and returns it; `module` when the server
/// will not tell or too many types are known. Where TYPE cannot be called (renamed or
/// refused), the type is remembered as `module`, so that it is not asked again for every key;
/// a key gone since its handle was read (TYPE says `none`) only leaves the question for the
/// next key of that type.
///
/// # Safety
/// `ctx` must be the slice's context, with the job's db selected, and `keyname` valid.
unsafe fn name_module_type(
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    module_type: usize,
) -> &'static str {
    if let Some(name) = known_module_type(module_type) {
        return name;
    }
    let reply = counted(
        ctx,
        Lookup::Type,
        || module_call!(ctx, c"TYPE".as_ptr(), c"s".as_ptr(), keyname).unwrap_or(ptr::null_mut()),
        |r| !r.is_null(),
    );
    // None: TYPE cannot be called, and the type is remembered unnamed.
    let name = if reply.is_null() {
        None
    } else {
        let name = reply::call_reply_bytes(reply)
            .filter(|b| opt_core::keyspace::is_module_type_name(b))
            .map(|b| String::from_utf8_lossy(b).into_owned());
        if let Some(free) = raw::RedisModule_FreeCallReply {
            free(reply);
        }
        // Not a type's name (`none`: the key went since its handle was read): asked again
        // at the next key of this type.
        let Some(name) = name else {
            return "module";
        };
        Some(name)
    };
    MODULE_TYPE_NAMES
        .with(|names| {
            if names.len() >= MAX_MODULE_TYPES {
                return "module";
            }
            // At most MAX_MODULE_TYPES names of 9 bytes, kept for the life of the process
            // (the analyses' tallies hold them as `&'static str`).
            let name: &'static str = name.map_or("module", |n| Box::leak(n.into_boxed_str()));
            names.push((module_type, name));
            name
        })
        .unwrap_or("module")
}

/// What is read of a key through its open handle, before the handle is closed and anything
/// is asked of the server by name (see [`read_open_key`]).
struct OpenKeyFacts {
    type_name: &'static str,
    /// The module data type of a key of a module type not named yet (`type_name` is
    /// `module`), as an address; 0 otherwise.
    unnamed_module_type: usize,
    /// See [`KeyFacts::integer_members`].
    integer_members: Option<bool>,
    length: u64,
    /// Milliseconds left, or -1 without a TTL.
    ttl: i64,
    idle: Option<u64>,
    lfu: Option<u8>,
    /// A raw string's sds allocation (`raw_sds_request`), for strings over 44 bytes while
    /// sizes are computed.
    raw_sds: Option<usize>,
}

/// Counts one key as scanned and reads what its open handle gives, or None when the key is
/// not to be measured: it vanished, does not match the query, or has expired (a lookup of an
/// expired key deletes it, and SCAN leaves expired keys out too).
///
/// The lookups that follow ([`measure`]: OBJECT ENCODING, MEMORY USAGE) must run after the
/// handle is closed. A lookup that finds the key expired deletes it, and the server's handle
/// (the one `RedisModule_Scan` passes, or an opened one) still points at the freed value,
/// which closing it reads: valgrind caught this on Valkey 8.1 (`make memcheck SERVER=valkey`).
///
/// # Safety
/// `keyname` must be valid and `key` a live handle of it, or null (the key vanished).
unsafe fn read_open_key(
    job: &mut Job,
    keyname: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
) -> Option<OpenKeyFacts> {
    job.scanned += 1;
    if key.is_null() {
        return None;
    }
    if !job.query.name_matches(string_bytes(keyname)) {
        return None;
    }
    let type_name = key_type_name(key);
    if type_name == "none" || !job.query.type_matches(type_name) {
        return None;
    }
    // 0 is "expired" (or expiring within the millisecond): what is left is negative.
    let ttl = raw::RedisModule_GetExpire.map_or(-1, |f| f(key));
    if ttl == 0 {
        return None;
    }
    let length = raw::RedisModule_ValueLength.map_or(0, |f| f(key)) as u64;
    let mut idle_ms: raw::mstime_t = 0;
    let idle = match raw::RedisModule_GetLRU {
        Some(f) if f(key, &mut idle_ms) == raw::REDISMODULE_OK as c_int && idle_ms >= 0 => {
            Some(idle_ms as u64 / 1000)
        }
        _ => None,
    };
    // Under an LFU policy the server keeps an access counter instead of an idle time.
    let lfu = if idle.is_none() {
        let mut counter: std::ffi::c_longlong = -1;
        match raw::RedisModule_GetLFU {
            Some(f) if f(key, &mut counter) == raw::REDISMODULE_OK as c_int => {
                u8::try_from(counter).ok()
            }
            _ => None,
        }
    } else {
        None
    };
    let raw_sds = if type_name == "string" && length > 44 && computing_sizes(job) {
        raw_sds_request(key, length)
    } else {
        None
    };
    let integer_members = if type_name == "set" && job.agg.wants_member_kind(length) {
        set_members_are_integers(key)
    } else {
        None
    };
    let unnamed_module_type = if type_name == "module" {
        module_type_of(key)
    } else {
        0
    };
    Some(OpenKeyFacts {
        type_name,
        unnamed_module_type,
        integer_members,
        length,
        ttl,
        idle,
        lfu,
        raw_sds,
    })
}

/// Measures a key whose handle [`read_open_key`] read and which is now closed: its encoding
/// and bytes, asked of the server by name where they cannot be computed, and adds it to the
/// job.
///
/// # Safety
/// `ctx` must be the slice's context, with the job's db selected, and `keyname` valid.
unsafe fn measure(
    ctx: *mut raw::RedisModuleCtx,
    job: &mut Job,
    keyname: *mut raw::RedisModuleString,
    facts: OpenKeyFacts,
) {
    let OpenKeyFacts {
        mut type_name,
        unnamed_module_type,
        integer_members,
        length,
        ttl,
        idle,
        lfu,
        raw_sds,
    } = facts;
    if unnamed_module_type != 0 {
        type_name = name_module_type(ctx, keyname, unnamed_module_type);
    }
    if !job.query.type_matches_named(type_name) {
        return;
    }
    let name = string_bytes(keyname);
    let check = job.agg.keys_of_pattern(name) < PATTERN_CHECKS;
    let sizing = |encoding, raw_sds| Sizing {
        key_len: name.len(),
        encoding,
        length,
        raw_sds,
        check,
    };
    let asked_encoding;
    // Bytes are None when the key expired since its handle was read (see `key_bytes`).
    let (encoding, bytes): (&str, Option<u64>) =
        if type_name == "list" && !crate::server::has_listpack_lists() {
            // Before 7.2 every list is a quicklist: no need to ask.
            let bytes = key_bytes(ctx, job, keyname, &sizing("quicklist", None));
            ("quicklist", bytes)
        } else if type_name != "string" {
            asked_encoding = object_encoding(ctx, keyname);
            let bytes = key_bytes(ctx, job, keyname, &sizing(&asked_encoding, None));
            (&asked_encoding, bytes)
        } else if length > 20 {
            // Too long for an integer: embstr up to 44 bytes when SET wrote it, raw beyond (and
            // the spot checks catch a value APPEND or SETRANGE made raw).
            let encoding = if length <= 44 { "embstr" } else { "raw" };
            // key_bytes uses the capacity only while sizes are computed.
            (
                encoding,
                key_bytes(ctx, job, keyname, &sizing(encoding, raw_sds)),
            )
        } else {
            match short_string(ctx, job, keyname, name.len(), length) {
                ShortString::Matched(encoding, bytes) => (encoding, Some(bytes)),
                ShortString::Unmatched(bytes) => {
                    asked_encoding = object_encoding(ctx, keyname);
                    (&asked_encoding, Some(bytes))
                }
                ShortString::NotCalibrated => {
                    asked_encoding = object_encoding(ctx, keyname);
                    let bytes = key_bytes(ctx, job, keyname, &sizing(&asked_encoding, None));
                    (&asked_encoding, bytes)
                }
            }
        };
    let Some(bytes) = bytes else {
        return;
    };
    if bytes >= KNOWN_BIG_KEY_BYTES || job.census.measuring {
        let capacity = known_big_capacity();
        KNOWN_BIG.with(|k| k.note(job.db, name, bytes, capacity));
    }
    job.agg.add(&KeyFacts {
        name,
        type_name,
        encoding,
        bytes,
        length,
        ttl_ms: (ttl >= 0).then_some(ttl),
        idle_s: idle,
        lfu,
        now_ms: job.now_ms,
        integer_members,
    });
}

/// The allocator's size class for each request size up to 4096 bytes, read from the server's
/// allocator once (None where the API is missing).
fn size_classes() -> Option<&'static [u32]> {
    static CLASSES: OnceLock<Option<Vec<u32>>> = OnceLock::new();
    CLASSES
        .get_or_init(|| {
            // SAFETY: each probe is allocated and freed through the server's allocator.
            unsafe {
                let (alloc, size, free) = (
                    raw::RedisModule_Alloc?,
                    raw::RedisModule_MallocSize?,
                    raw::RedisModule_Free?,
                );
                let mut table = Vec::with_capacity(4097);
                table.push(0);
                for n in 1..=4096usize {
                    let p = alloc(n);
                    if p.is_null() {
                        return None;
                    }
                    table.push(size(p) as u32);
                    free(p);
                }
                Some(table)
            }
        })
        .as_deref()
}

/// Whether this analysis computes string sizes (Redis 7.x, and no disagreement yet).
fn computing_sizes(job: &Job) -> bool {
    !job.calibration.failed && crate::server::string_sizes_computable()
}

/// The allocation request (header, capacity, terminator) of a raw string's sds, read from
/// its header, or None if it does not look as expected. Only for Redis 7.x's layout
/// (`sds.h`: the byte before the buffer holds the type in its low 3 bits, and the packed
/// header before it holds the length and the capacity as u8, u16, u32 or u64), and only for
/// strings longer than 44 bytes, which are always raw: reading a raw string through the key
/// API changes nothing, where an int or embstr one would be converted.
///
/// # Safety
/// `key` must be an open key holding a string of `length` bytes, longer than 44.
unsafe fn raw_sds_request(key: *mut raw::RedisModuleKey, length: u64) -> Option<usize> {
    // Checked before the read: reading an embstr (44 bytes or less) would convert it.
    if length <= 44 {
        return None;
    }
    let dma = raw::RedisModule_StringDMA?;
    let mut len = 0usize;
    let buf = dma(key, &mut len, raw::REDISMODULE_READ as c_int).cast::<u8>();
    if buf.is_null() || len as u64 != length {
        return None;
    }
    // SAFETY: a raw string's buffer is preceded by its sds header, whose size the type byte
    // gives; every read stays inside that header.
    let read = |back: usize, width: usize| -> usize {
        let mut bytes = [0u8; 8];
        std::ptr::copy_nonoverlapping(buf.sub(back), bytes.as_mut_ptr(), width);
        u64::from_ne_bytes(bytes) as usize
    };
    let (header, stored_len, alloc) = match *buf.sub(1) & 7 {
        1 => (3, read(3, 1), read(2, 1)),
        2 => (5, read(5, 2), read(3, 2)),
        3 => (9, read(9, 4), read(5, 4)),
        4 => (17, read(17, 8), read(9, 8)),
        _ => return None,
    };
    (stored_len == len && alloc >= len).then_some(header + alloc + 1)
}

/// The key's bytes as MEMORY USAGE reports them: computed for strings once the computation
/// has agreed with MEMORY USAGE on the first keys (a raw string from its capacity, when
/// `sizing` carries it), asked otherwise, and asked to check when `sizing.check` is set.
/// None when MEMORY USAGE finds no such key: it expired since its handle was read (the
/// lookup deleted it), and is left out rather than taken as a disagreement.
///
/// # Safety
/// `ctx` and `keyname` must be valid.
unsafe fn key_bytes(
    ctx: *mut raw::RedisModuleCtx,
    job: &mut Job,
    keyname: *mut raw::RedisModuleString,
    sizing: &Sizing,
) -> Option<u64> {
    let computed = if !computing_sizes(job) {
        None
    } else {
        size_classes().and_then(|t| {
            let class = |n: usize| t.get(n).map(|&c| c as usize);
            match sizing.raw_sds {
                Some(request) => raw_string_key_bytes(sizing.key_len, request, class),
                None => string_key_bytes(
                    sizing.key_len,
                    sizing.encoding,
                    sizing.length as usize,
                    class,
                ),
            }
        })
    };
    let cal = &mut job.calibration;
    if let (Some(part), Some(c)) = (computed, cal.constant) {
        // Trusted once calibrated; one key in SPOT_CHECK_EVERY is still asked, and any
        // disagreement turns the computation off for the rest of the analysis.
        cal.seen += 1;
        if cal.agreeing >= CALIBRATION_KEYS && cal.seen % SPOT_CHECK_EVERY != 0 && !sizing.check {
            cal.computed_used = true;
            return Some((part as i64 + c).max(0) as u64);
        }
    }
    let asked = match memory_usage_reply(ctx, keyname) {
        MemoryUsage::Bytes(n) => n,
        MemoryUsage::NoKey => return None,
        MemoryUsage::Unavailable => 0,
    };
    if let Some(part) = computed {
        let c = asked as i64 - part as i64;
        match cal.constant {
            None => {
                cal.constant = Some(c);
                cal.agreeing = 1;
            }
            Some(k) if k == c => cal.agreeing += 1,
            Some(_) => cal.disagree(),
        }
    }
    Some(asked)
}

/// MEMORY USAGE key: what the server itself accounts for the key.
///
/// # Safety
/// `ctx` and `keyname` must be valid.
pub(crate) unsafe fn memory_usage(
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
) -> Option<u64> {
    match memory_usage_reply(ctx, keyname) {
        MemoryUsage::Bytes(n) => Some(n),
        MemoryUsage::NoKey | MemoryUsage::Unavailable => None,
    }
}

/// [`memory_usage`], telling a missing key from a failed call.
///
/// # Safety
/// `ctx` and `keyname` must be valid.
unsafe fn memory_usage_reply(
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
) -> MemoryUsage {
    counted(
        ctx,
        Lookup::MemoryUsage,
        || memory_usage_call(ctx, keyname),
        |r| matches!(r, MemoryUsage::Bytes(_)),
    )
}

/// What a MEMORY USAGE call gave.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MemoryUsage {
    /// The key's bytes.
    Bytes(u64),
    /// No such key.
    NoKey,
    /// The call failed: MEMORY is renamed away (or the API is missing).
    Unavailable,
}

/// Whether MEMORY USAGE answers on this server. An analysis takes every key's size from it on
/// Redis 8 and Valkey, and checks its computed sizes with it on 7.x; renamed away, it would
/// report 0 bytes. Asked of `COMMAND INFO MEMORY`, which names no key: a probe with a key
/// would be refused in a cluster for any slot another node serves. If COMMAND itself is
/// renamed, MEMORY is assumed to be there. Asked once: `rename-command` is read at startup
/// only.
pub fn memory_usage_works(ctx: *mut raw::RedisModuleCtx) -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| memory_usage_listed(ctx))
}

/// [`memory_usage_works`], asked of the server.
fn memory_usage_listed(ctx: *mut raw::RedisModuleCtx) -> bool {
    // SAFETY: ctx is a live context on the main thread; the reply is freed here.
    unsafe {
        let Some(reply) = module_call!(
            ctx,
            c"COMMAND".as_ptr(),
            c"cc".as_ptr(),
            c"INFO".as_ptr(),
            c"MEMORY".as_ptr(),
        ) else {
            return true;
        };
        if reply.is_null() {
            return true;
        }
        let (Some(kind), Some(element), Some(free)) = (
            raw::RedisModule_CallReplyType,
            raw::RedisModule_CallReplyArrayElement,
            raw::RedisModule_FreeCallReply,
        ) else {
            return true;
        };
        let entry = if kind(reply) == raw::REDISMODULE_REPLY_ARRAY as c_int {
            element(reply, 0)
        } else {
            ptr::null_mut()
        };
        // An unknown command's entry is a null.
        let known = !entry.is_null() && kind(entry) == raw::REDISMODULE_REPLY_ARRAY as c_int;
        free(reply);
        known
    }
}

/// [`memory_usage`] without counting the lookup.
///
/// # Safety
/// `ctx` and `keyname` must be valid.
unsafe fn memory_usage_call(
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
) -> MemoryUsage {
    let Some(usage) = subcommand(Subcommand::Usage) else {
        return MemoryUsage::Unavailable;
    };
    // Collections are sized from `opt.keyspace-memory-samples` elements; the default is
    // MEMORY USAGE's own, so the argument is left out then.
    let samples = configs::int(idx::KEYSPACE_MEMORY_SAMPLES);
    let reply = if samples == MEMORY_USAGE_DEFAULT_SAMPLES {
        module_call!(ctx, c"MEMORY".as_ptr(), c"ss".as_ptr(), usage, keyname)
    } else {
        module_call!(
            ctx,
            c"MEMORY".as_ptr(),
            c"sscl".as_ptr(),
            usage,
            keyname,
            c"SAMPLES".as_ptr(),
            samples as std::ffi::c_longlong,
        )
    }
    .unwrap_or(ptr::null_mut());
    if reply.is_null() {
        return MemoryUsage::Unavailable;
    }
    let kind = raw::RedisModule_CallReplyType.map_or(-1, |f| f(reply));
    let out = if kind == raw::REDISMODULE_REPLY_INTEGER as c_int {
        MemoryUsage::Bytes(
            raw::RedisModule_CallReplyInteger
                .map_or(0, |f| f(reply))
                .max(0) as u64,
        )
    } else if kind == raw::REDISMODULE_REPLY_ERROR as c_int {
        MemoryUsage::Unavailable
    } else {
        MemoryUsage::NoKey
    };
    if let Some(free) = raw::RedisModule_FreeCallReply {
        free(reply);
    }
    out
}

/// The elements MEMORY USAGE samples when it is not told (`OBJ_COMPUTE_SIZE_DEF_SAMPLES`).
const MEMORY_USAGE_DEFAULT_SAMPLES: i64 = 5;

/// The subcommands the analysis calls once or twice per key.
#[derive(Clone, Copy)]
enum Subcommand {
    Usage,
    Encoding,
}

/// The subcommand's name as a server string, created once and kept (not tied to any
/// context): passed as an "s" argument, the server only raises its reference count instead of
/// building it from a C string on every call.
fn subcommand(which: Subcommand) -> Option<*mut raw::RedisModuleString> {
    static WORDS: OnceLock<[usize; 2]> = OnceLock::new();
    let words = WORDS.get_or_init(|| {
        // SAFETY: a NULL context creates strings outside automatic memory management; they
        // are never freed, and only read (their reference count is raised per call).
        unsafe {
            let Some(create) = raw::RedisModule_CreateString else {
                return [0, 0];
            };
            [b"USAGE".as_slice(), b"ENCODING"]
                .map(|w| create(ptr::null_mut(), w.as_ptr().cast(), w.len()) as usize)
        }
    });
    let p = words[which as usize] as *mut raw::RedisModuleString;
    (!p.is_null()).then_some(p)
}

/// OBJECT ENCODING key, for collections.
///
/// # Safety
/// `ctx` and `keyname` must be valid.
unsafe fn object_encoding(
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
) -> String {
    counted(
        ctx,
        Lookup::ObjectEncoding,
        || object_encoding_call(ctx, keyname),
        |e| !e.is_empty(),
    )
}

/// [`object_encoding`] without counting the lookup.
///
/// # Safety
/// `ctx` and `keyname` must be valid.
unsafe fn object_encoding_call(
    ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
) -> String {
    let Some(word) = subcommand(Subcommand::Encoding) else {
        return String::new();
    };
    let reply = module_call!(ctx, c"OBJECT".as_ptr(), c"ss".as_ptr(), word, keyname)
        .unwrap_or(ptr::null_mut());
    if reply.is_null() {
        return String::new();
    }
    let out = reply::call_reply_bytes(reply)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    if let Some(free) = raw::RedisModule_FreeCallReply {
        free(reply);
    }
    out
}

/// A string of at most 20 bytes may be an integer (`int`, no allocation) or text (`embstr`),
/// and reading its value to tell would change it: `RedisModule_StringDMA` turns every int or
/// embstr string it reads into a raw one, which costs memory and changes what OBJECT ENCODING
/// says. So the module asks MEMORY USAGE and picks the encoding whose computed size matches,
/// once the calibration constant is known. When no encoding matches, the computed sizes are
/// wrong for this server: they are turned off for the rest of the analysis.
///
/// # Safety
/// `ctx` and `keyname` must be valid.
unsafe fn short_string(
    ctx: *mut raw::RedisModuleCtx,
    job: &mut Job,
    keyname: *mut raw::RedisModuleString,
    key_len: usize,
    length: u64,
) -> ShortString {
    let cal = &job.calibration;
    if cal.failed || cal.agreeing < CALIBRATION_KEYS {
        return ShortString::NotCalibrated;
    }
    let (Some(constant), Some(classes)) = (cal.constant, size_classes()) else {
        return ShortString::NotCalibrated;
    };
    let Some(asked) = memory_usage(ctx, keyname) else {
        return ShortString::NotCalibrated;
    };
    let found = ["int", "embstr", "raw"].into_iter().find(|encoding| {
        string_key_bytes(key_len, encoding, length as usize, |n| {
            classes.get(n).map(|&c| c as usize)
        })
        .is_some_and(|part| part as i64 + constant == asked as i64)
    });
    match found {
        Some(encoding) => ShortString::Matched(encoding, asked),
        None => {
            // The computed sizes disagree with the server for this key (a short string that
            // APPEND grew, for one): stop trusting them, as key_bytes does on a spot check
            // (starting over if some were used), and keep the size the server gave.
            job.calibration.disagree();
            ShortString::Unmatched(asked)
        }
    }
}

/// What `short_string` learned about a string of at most 20 bytes.
enum ShortString {
    /// Its encoding and its bytes (MEMORY USAGE, which the computed size matched).
    Matched(&'static str, u64),
    /// Its bytes (MEMORY USAGE), which no computed size matched: the encoding must be asked.
    Unmatched(u64),
    /// Computed sizes are not trusted yet (or no more): ask the server for everything.
    NotCalibrated,
}

/// Ends a job: destroys its cursor and unblocks its client with the report or the reason.
fn finish(job: Job) {
    if !job.cursor.is_null() {
        // SAFETY: the cursor was created for this job and is not used again.
        unsafe {
            if let Some(destroy) = raw::RedisModule_ScanCursorDestroy {
                destroy(job.cursor);
            }
        }
    }
    let elapsed = job.started.elapsed().as_millis() as u64;
    let whole_db = job.query.glob.is_none() && job.query.type_filter.is_none();
    if job.cancelled.is_none() && matches!(job.query.mode, Mode::Full) && whole_db {
        note_pass_ended(job.db, (job.now_ms / 1000).max(0) as u64);
    }
    let pass_at = KNOWN_BIG.with(|k| k.last_pass(job.db)).flatten();
    let result = match job.cancelled {
        Some(why) => Err(format!(
            "ERR OPT.KEYSPACE analysis {} stopped: {why}",
            job.id
        )),
        None => {
            let census = job.census.present;
            let sample = job.agg.finish(
                job.query.mode,
                job.db,
                job.db_keys.saturating_sub(census),
                job.scanned,
                elapsed,
            );
            let mut report = match job.census.agg {
                Some(agg) if census > 0 => {
                    let measured = job.census.measured;
                    let whole = agg.finish(Mode::Full, job.db, census, measured, elapsed);
                    combine_census(whole, sample, job.query.top)
                }
                _ => sample,
            };
            if matches!(job.query.mode, Mode::Samples(_)) {
                report.big_keys_pass_at = pass_at;
            }
            Ok(report)
        }
    };
    let outcome = Box::new(Outcome {
        result,
        as_json: job.as_json,
        advise: job.advise,
    });
    // SAFETY: the client was blocked by this job with an Outcome and is unblocked exactly
    // once; Redis hands the outcome to reply_callback, then frees it.
    unsafe { blocked::unblock(job.client, Some(outcome)) };
}

/// # Safety
/// Called by Redis to reply to the unblocked client, with the outcome as private data.
unsafe extern "C" fn reply_callback(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    guard::catch_and_log("OPT.KEYSPACE reply", || {
        // SAFETY: the client was blocked with an Outcome; this is its reply callback.
        let outcome = unsafe { blocked::outcome::<Outcome>(ctx) };
        match outcome {
            // The report is taken, not copied: Redis frees the outcome after this callback.
            Some(o) => match (
                std::mem::replace(&mut o.result, Err(String::new())),
                &o.advise,
            ) {
                (Ok(report), Some(q)) => {
                    let advice = crate::advise::run(ctx, q, Some(report));
                    reply::send(ctx, Ok(Reply::structured(advice)), o.as_json);
                }
                (Ok(report), None) => {
                    reply::send(ctx, Ok(Reply::structured(report)), o.as_json);
                }
                (Err(e), _) => reply::send_error(ctx, &e),
            },
            None => reply::send_error(ctx, "ERR OPT.KEYSPACE ended without a result"),
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
    guard::catch_and_log("OPT.KEYSPACE disconnect", || {
        JOBS.with(|j| {
            for job in j.list.iter_mut().filter(|job| job.client == bc) {
                job.cancelled = Some("the client disconnected");
            }
        });
    });
}

/// How the analysis opens keys: for reading, without touching their LRU or LFU clock, so that
/// an analysis neither makes the keys it reads look recently used to eviction nor reads its
/// own touch back as their idle time (SAMPLES did both before: every sampled key came out
/// idle for 0 seconds). Where the server has the flags (Redis 7.2+, Valkey), also without
/// counting a keyspace hit or raising a keymiss event.
fn open_mode() -> c_int {
    static MODE: OnceLock<c_int> = OnceLock::new();
    *MODE.get_or_init(|| {
        let quiet = raw::REDISMODULE_OPEN_KEY_NONOTIFY | raw::REDISMODULE_OPEN_KEY_NOSTATS;
        // SAFETY: a query of the open modes the server knows, with no arguments; absent on
        // servers older than 7.2, which know NOTOUCH only.
        let known = unsafe { raw::RedisModule_GetOpenKeyModesAll.map_or(0, |f| f()) };
        (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH) as c_int
            | (quiet as c_int & known)
    })
}

/// Keyspace hits and misses that analyses added to the server's own `keyspace_hits` and
/// `keyspace_misses` (`INFO opt`: `keyspace_lookup_hits`, `keyspace_lookup_misses`). A hit
/// ratio taken from INFO should leave these out: OPT.ADVISE and `optctl top` do.
static LOOKUP_HITS: AtomicU64 = AtomicU64::new(0);
static LOOKUP_MISSES: AtomicU64 = AtomicU64::new(0);

/// The lookups an analysis makes. Whether each counts in the server's statistics depends on
/// the version: MEMORY USAGE does on Redis 8 and Valkey and not on 7.0, OBJECT ENCODING does
/// on 7.0, opening a key does before 7.2 (no `REDISMODULE_OPEN_KEY_NOSTATS`).
#[derive(Clone, Copy)]
enum Lookup {
    Open = 0,
    MemoryUsage = 1,
    ObjectEncoding = 2,
    /// TYPE, once per module data type (see [`name_module_type`]).
    Type = 3,
}

/// Whether each kind of [`Lookup`] counts in the server's statistics: not known yet, yes, no.
/// The first lookup of a kind tells, by reading the statistics before and after it (nothing
/// else runs meanwhile); later ones add to the counts by their result. (Read around every
/// slice instead, the statistics cost 6% of a FULL analysis' time.)
static LOOKUP_COUNTS_STATS: [AtomicU8; 4] = [const { AtomicU8::new(UNKNOWN) }; 4];
const UNKNOWN: u8 = 0;
const COUNTS: u8 = 1;
const SILENT: u8 = 2;

/// Runs `lookup`, one lookup of kind `kind`, and counts what it added to the server's keyspace
/// hits or misses; `found` tells from its result whether it found the key.
///
/// # Safety
/// `ctx` must be a live context on the main thread.
unsafe fn counted<T>(
    ctx: *mut raw::RedisModuleCtx,
    kind: Lookup,
    lookup: impl FnOnce() -> T,
    found: impl Fn(&T) -> bool,
) -> T {
    let state = &LOOKUP_COUNTS_STATS[kind as usize];
    match state.load(Ordering::Relaxed) {
        UNKNOWN => {
            let before = crate::server::keyspace_lookups(ctx);
            let out = lookup();
            // Settled by the first lookup, whatever it found: a server counts a kind of lookup
            // as a hit or a miss alike, and a call that fails (a renamed command) fails every
            // time and counts nothing. Left unsettled, every lookup would read the
            // statistics twice. Without statistics there is nothing to count.
            let mut counts = false;
            if let (Some((h0, m0)), Some((h1, m1))) = (before, crate::server::keyspace_lookups(ctx))
            {
                let (hits, misses) = (h1.saturating_sub(h0), m1.saturating_sub(m0));
                LOOKUP_HITS.fetch_add(hits, Ordering::Relaxed);
                LOOKUP_MISSES.fetch_add(misses, Ordering::Relaxed);
                counts = hits + misses > 0;
            }
            state.store(if counts { COUNTS } else { SILENT }, Ordering::Relaxed);
            out
        }
        COUNTS => {
            let out = lookup();
            if found(&out) {
                &LOOKUP_HITS
            } else {
                &LOOKUP_MISSES
            }
            .fetch_add(1, Ordering::Relaxed);
            out
        }
        _ => lookup(),
    }
}

/// Opens `name` for the analysis (see [`open_mode`]), counting the lookup.
///
/// # Safety
/// `ctx` and `name` must be valid, and `open` the server's `RedisModule_OpenKey`.
unsafe fn open_counted(
    ctx: *mut raw::RedisModuleCtx,
    open: unsafe extern "C" fn(
        *mut raw::RedisModuleCtx,
        *mut raw::RedisModuleString,
        c_int,
    ) -> *mut raw::RedisModuleKey,
    name: *mut raw::RedisModuleString,
) -> *mut raw::RedisModuleKey {
    counted(
        ctx,
        Lookup::Open,
        || open(ctx, name, open_mode()),
        |k| !k.is_null(),
    )
}

/// The keyspace hits and misses analyses added to the server's statistics, so far.
pub fn lookup_counts() -> (u64, u64) {
    (
        LOOKUP_HITS.load(Ordering::Relaxed),
        LOOKUP_MISSES.load(Ordering::Relaxed),
    )
}

/// Analyses that started over with every size asked (`INFO opt`: `keyspace_started_over`).
static STARTED_OVER: AtomicU64 = AtomicU64::new(0);

/// Analyses that started over with every size asked, so far.
pub fn started_over() -> u64 {
    STARTED_OVER.load(Ordering::Relaxed)
}

/// The longest slice so far, in microseconds (INFO: how long a client may have waited).
static SLICE_MAX_US: AtomicU64 = AtomicU64::new(0);

/// The longest slice so far, in microseconds.
pub fn slice_max_us() -> u64 {
    SLICE_MAX_US.load(Ordering::Relaxed)
}

/// Slices run since the module loaded, and how many of them were shortened because clients
/// were being served.
static SLICES: AtomicU64 = AtomicU64::new(0);
static SLICES_SHORTENED: AtomicU64 = AtomicU64::new(0);

/// Slices run, and slices shortened (for INFO).
pub fn slice_counts() -> (u64, u64) {
    (
        SLICES.load(Ordering::Relaxed),
        SLICES_SHORTENED.load(Ordering::Relaxed),
    )
}

/// Running analyses (for INFO).
pub fn running() -> u64 {
    JOBS.with(|j| j.list.len() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_name_the_latest_event_after_the_start_for_the_db_or_all() {
        let mut r = Replacements {
            events: 0,
            all: (0, ""),
            by_db: Vec::new(),
        };
        r.note(Some(3), SWAPPED);
        let seen = r.events;
        assert_eq!(
            r.since(0, 3),
            Some(SWAPPED),
            "an event after the start counts"
        );
        assert_eq!(r.since(seen, 3), None, "one before it does not");
        r.note(Some(5), FLUSHED);
        assert_eq!(r.since(seen, 3), None, "another db's event does not");
        assert_eq!(r.since(seen, 5), Some(FLUSHED));
        assert_eq!(r.since(seen, 40), None, "a db never named");
        r.note(None, FLUSHED);
        r.note(None, RELOADED);
        assert_eq!(
            r.since(seen, 3),
            Some(RELOADED),
            "every db, the latest reason"
        );
        r.note(Some(3), SWAPPED);
        assert_eq!(r.since(seen, 3), Some(SWAPPED));
        assert_eq!(r.since(r.events, 3), None);
    }
}
