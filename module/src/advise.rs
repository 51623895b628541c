//! `OPT.ADVISE`: gathers a snapshot of the server and runs the rules of `opt_core::advise`.
//!
//! The snapshot comes from INFO, CONFIG GET (skipped when CONFIG is renamed or blocked),
//! SLOWLOG, ACL LIST, CLIENT LIST, `/proc` and `/sys`, the hot-key tracker and, unless
//! `SAMPLES 0`, a keyspace sample taken in slices like OPT.KEYSPACE (the client waits for it
//! without stalling the server).

use std::collections::HashMap;
use std::ffi::{c_int, CStr};
use std::ptr;

use opt_core::advise::{advise, parse_info, parse_query, AdviseQuery, Snapshot, Thresholds};
use opt_core::config::idx;
use opt_core::report::{AdviceReport, KeyspaceReport};
use redis_module::raw;

use crate::commands::Call;
use crate::reply::{Reply, ReplyError};
use crate::state::module_call;
use crate::{configs, hotkeys};

/// `OPT.ADVISE [SAMPLES n] [CATEGORY c] [MIN-SEVERITY info|warning|critical]`
pub fn command(call: &Call) -> Result<Reply, ReplyError> {
    crate::acl::require_monitor_equivalent(call.ctx, "OPT.ADVISE")?;
    let q = parse_query(call.args).map_err(ReplyError::err)?;
    // The keyspace sample runs in slices; the advice is computed when it is done. Without
    // MEMORY USAGE (renamed) it could size nothing, and the rules that need it are skipped.
    if q.samples > 0 && crate::keyspace::memory_usage_works(call.ctx) {
        return crate::keyspace::start_for_advice(call, q);
    }
    Ok(Reply::structured(run(call.ctx, &q, None)))
}

/// Gathers the snapshot with `ctx` and runs the rules.
pub fn run(
    ctx: *mut raw::RedisModuleCtx,
    q: &AdviseQuery,
    keyspace: Option<KeyspaceReport>,
) -> AdviceReport {
    let mut snap = gather(ctx);
    snap.keyspace = keyspace;
    let thresholds = Thresholds {
        hot_key_percent: configs::int(idx::ADVISE_HOT_KEY_PERCENT) as f64,
        big_string_bytes: configs::int(idx::ADVISE_BIG_KEY_BYTES) as u64,
    };
    let ignore_text = configs::string(idx::ADVISE_IGNORE);
    let ignore: Vec<&str> = ignore_text
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .collect();
    advise(&snap, &thresholds, q, &ignore)
}

/// A call reply as text (bulk, simple or verbatim string).
///
/// # Safety
/// `r` must be a live call reply.
unsafe fn reply_text(r: *mut raw::RedisModuleCallReply) -> Option<String> {
    crate::reply::call_reply_bytes(r).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Calls a command with C-string arguments; None if it fails or is not allowed.
///
/// # Safety
/// `ctx` must be valid; the returned reply must be freed.
unsafe fn call(
    ctx: *mut raw::RedisModuleCtx,
    name: &CStr,
    args: &[&CStr],
) -> Option<*mut raw::RedisModuleCallReply> {
    let r = match args {
        [] => module_call!(ctx, name.as_ptr(), c"".as_ptr()),
        [a] => module_call!(ctx, name.as_ptr(), c"c".as_ptr(), a.as_ptr()),
        [a, b] => module_call!(ctx, name.as_ptr(), c"cc".as_ptr(), a.as_ptr(), b.as_ptr()),
        [a, b, c] => module_call!(
            ctx,
            name.as_ptr(),
            c"ccc".as_ptr(),
            a.as_ptr(),
            b.as_ptr(),
            c.as_ptr()
        ),
        _ => return None,
    }?;
    if r.is_null() {
        return None;
    }
    if raw::RedisModule_CallReplyType.map_or(-1, |t| t(r)) == raw::REDISMODULE_REPLY_ERROR as c_int
    {
        if let Some(free) = raw::RedisModule_FreeCallReply {
            free(r);
        }
        return None;
    }
    Some(r)
}

fn gather(ctx: *mut raw::RedisModuleCtx) -> Snapshot {
    let mut snap = Snapshot::default();
    // SAFETY: ctx is a live context; every reply is read, then freed.
    unsafe {
        let free = |r: *mut raw::RedisModuleCallReply| {
            if let Some(f) = raw::RedisModule_FreeCallReply {
                f(r);
            }
        };
        let len = |r| raw::RedisModule_CallReplyLength.map_or(0, |f| f(r));
        let elem =
            |r, i| raw::RedisModule_CallReplyArrayElement.map_or(ptr::null_mut(), |f| f(r, i));
        if let Some(r) = call(ctx, c"INFO", &[c"everything"]) {
            snap.info = parse_info(&reply_text(r).unwrap_or_default());
            free(r);
        }
        if let Some(r) = call(ctx, c"CONFIG", &[c"GET", c"*"]) {
            let mut map = HashMap::new();
            let n = len(r);
            for i in (0..n.saturating_sub(1)).step_by(2) {
                if let (Some(k), Some(v)) = (reply_text(elem(r, i)), reply_text(elem(r, i + 1))) {
                    map.insert(k, v);
                }
            }
            if !map.is_empty() {
                snap.config = Some(map);
            }
            free(r);
        }
        // SLOWLOG and Valkey 8.1+'s COMMANDLOG share their entries' layout: id, time, the
        // measure (µs, or bytes), the arguments, ...
        let log_entries = |r: *mut raw::RedisModuleCallReply| {
            let mut entries = Vec::new();
            for i in 0..len(r) {
                let e = elem(r, i);
                if e.is_null() || len(e) < 4 {
                    continue;
                }
                let measure = raw::RedisModule_CallReplyInteger
                    .map_or(0, |f| f(elem(e, 2)))
                    .max(0) as u64;
                let args = elem(e, 3);
                let name = if args.is_null() || len(args) == 0 {
                    String::new()
                } else {
                    reply_text(elem(args, 0))
                        .unwrap_or_default()
                        .to_ascii_lowercase()
                };
                entries.push((name, measure));
            }
            entries
        };
        if let Some(r) = call(ctx, c"SLOWLOG", &[c"GET", c"32"]) {
            snap.slowlog = Some(log_entries(r));
            free(r);
        }
        if let Some(r) = call(ctx, c"COMMANDLOG", &[c"GET", c"32", c"large-reply"]) {
            snap.large_replies = Some(log_entries(r));
            free(r);
        }
        if let Some(r) = call(ctx, c"ACL", &[c"LIST"]) {
            snap.default_user = (0..len(r))
                .filter_map(|i| reply_text(elem(r, i)))
                .find(|l| l.starts_with("user default "));
            free(r);
        }
        if let Some(r) = call(ctx, c"CLIENT", &[c"LIST"]) {
            let text = reply_text(r).unwrap_or_default();
            let field = |line: &str, name: &str| -> u64 {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(name))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            snap.idle_clients =
                Some(text.lines().filter(|l| field(l, "idle=") > 300).count() as u64);
            snap.pubsub_max_omem = Some(
                text.lines()
                    .filter(|l| field(l, "sub=") + field(l, "psub=") > 0)
                    .map(|l| field(l, "omem="))
                    .max()
                    .unwrap_or(0),
            );
            free(r);
        }
    }
    snap.system_memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    snap.thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .map(|s| s.trim().to_string());
    snap.overcommit_memory = std::fs::read_to_string("/proc/sys/vm/overcommit_memory")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    // This is the server's own process: its status says how much of it is in swap.
    snap.swapped_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| opt_core::advise::vm_swap_bytes(&st));
    if configs::flag(idx::HOTKEYS_ENABLED) {
        if let Some(r) = hotkeys::reports_for_advice() {
            snap.hotkeys = Some(r.all_total);
            snap.hot_misses = Some(r.misses_total);
            snap.hotkeys_recent = Some(r.all_recent);
            snap.hot_misses_recent = Some(r.misses_recent);
        }
    }
    let lfu = snap
        .info
        .get("maxmemory_policy")
        .is_some_and(|p| p.contains("lfu"));
    if let (true, Some(hot)) = (lfu, &snap.hotkeys) {
        let mut saturated = 0;
        for e in hot.entries.iter().filter(|e| !e.truncated) {
            let Ok(key) = std::ffi::CString::new(e.name.clone()) else {
                continue;
            };
            // SAFETY: ctx is live; the reply is read, then freed.
            unsafe {
                if let Some(r) = call(ctx, c"OBJECT", &[c"FREQ", &key]) {
                    if raw::RedisModule_CallReplyInteger.map_or(0, |f| f(r)) >= 255 {
                        saturated += 1;
                    }
                    if let Some(f) = raw::RedisModule_FreeCallReply {
                        f(r);
                    }
                }
            }
        }
        snap.lfu_saturated = Some(saturated);
    }
    snap
}
