//! The OPT.* command table: each command's flags, key positions, syntax and handler, declared
//! next to each other (the style of RedisJSON's `commands.rs`).
//!
//! Handlers are thin: they parse arguments, call into `opt_core`, and return a [`Reply`]. The
//! dispatcher in `lib.rs` catches panics, strips a trailing `FORMAT JSON` and writes the reply.

use opt_core::report::{HelpEntry, StatusReport};
use redis_module::raw;

use crate::reply::{Reply, ReplyError};
use crate::{configs, server};

/// A command invocation as a handler sees it.
pub struct Call<'a> {
    /// The command context (valid for the duration of the call).
    pub ctx: *mut raw::RedisModuleCtx,
    /// Arguments after the command name, with any `FORMAT JSON` removed.
    pub args: &'a [&'a [u8]],
    /// The same arguments as server strings (for the key API and replication).
    pub argv: &'a [*mut raw::RedisModuleString],
    /// Whether the client asked for `FORMAT JSON`.
    pub as_json: bool,
}

/// A command handler.
pub type Handler = fn(&Call) -> Result<Reply, ReplyError>;

/// Everything Redis and `OPT.HELP` need to know about one command.
pub struct CommandSpec {
    /// Name as clients type it.
    pub name: &'static str,
    /// Command flags for `RedisModule_CreateCommand` (they decide the ACL categories on 7.0).
    pub flags: &'static str,
    /// First key argument (0: no keys), last key (-1: through the end), step.
    pub keys: (i32, i32, i32),
    /// ACL categories declared on servers that support it (Redis 7.2+), besides the flags.
    pub acl_categories: &'static str,
    /// Whether a trailing `FORMAT JSON` selects a JSON reply.
    pub json: bool,
    /// Syntax on one line, for `OPT.HELP`.
    pub syntax: &'static str,
    /// What the command does.
    pub summary: &'static str,
    /// The handler.
    pub handler: Handler,
}

/// Every command this module registers.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "OPT.HELP",
        flags: "readonly fast",
        keys: (0, 0, 0),
        acl_categories: "",
        json: true,
        syntax: "OPT.HELP [FORMAT JSON]",
        summary: "lists every OPT command with its syntax",
        handler: help,
    },
    CommandSpec {
        name: "OPT.STATUS",
        flags: "readonly",
        keys: (0, 0, 0),
        acl_categories: "",
        json: true,
        syntax: "OPT.STATUS [FORMAT JSON]",
        summary: "module and server versions, optional features found, every opt.* config",
        handler: status,
    },
    CommandSpec {
        name: "OPT.HOTKEYS",
        // admin: key names are sensitive, so only admins (or users granted +opt.hotkeys) may
        // read them. Not readonly, which would put it in @read.
        flags: "admin allow-loading allow-stale",
        keys: (0, 0, 0),
        acl_categories: "admin dangerous",
        json: true,
        syntax: "OPT.HOTKEYS [COUNT n] [TYPE all|read|write|miss] [WINDOW total|recent] [NAMESPACES] [FORMAT JSON] | OPT.HOTKEYS RESET",
        summary: "the hottest keys (or key patterns) from live traffic, with error bounds",
        handler: crate::hotkeys::command,
    },
    CommandSpec {
        name: "OPT.KEYSPACE",
        // admin: it reveals key names, like OPT.HOTKEYS. Not readonly (no @read), but allowed
        // on replicas since it does not write.
        flags: "admin allow-stale",
        keys: (0, 0, 0),
        acl_categories: "admin dangerous",
        json: true,
        syntax: "OPT.KEYSPACE [SAMPLES n | FULL] [MATCH glob] [TYPE t] [DB n] [TOP n] [DELIMITERS chars] [FORMAT JSON] | OPT.KEYSPACE STATUS | OPT.KEYSPACE CANCEL [id]",
        summary: "where the memory goes, by key pattern; runs in slices without stalling the server",
        handler: crate::keyspace::command,
    },
    CommandSpec {
        name: "OPT.ADVISE",
        // admin: findings name hot and big keys.
        flags: "admin allow-stale",
        keys: (0, 0, 0),
        acl_categories: "admin dangerous",
        json: true,
        syntax: "OPT.ADVISE [SAMPLES n] [CATEGORY c] [MIN-SEVERITY info|warning|critical] [FORMAT JSON]",
        summary: "prioritized findings with their evidence and the exact fix, and a health score",
        handler: crate::advise::command,
    },
    CommandSpec {
        name: "OPT.SET",
        flags: "write deny-oom",
        keys: (1, 1, 1),
        acl_categories: "write string",
        json: false,
        syntax: "OPT.SET key value [EX s|PX ms|EXAT ts|PXAT ts|KEEPTTL] [NX|XX] [GET] [DELTA ms] [STALE s] [TOKEN t] TAGS tag [tag ...]",
        summary: "SET that writes the value, its tags and its freshness in one atomic command",
        handler: crate::tags::set,
    },
    CommandSpec {
        name: "OPT.TAG",
        flags: "write deny-oom",
        keys: (1, 1, 1),
        acl_categories: "write",
        json: false,
        syntax: "OPT.TAG key tag [tag ...]",
        summary: "adds tags to an existing key of any type; replies how many were new",
        handler: crate::tags::tag,
    },
    CommandSpec {
        name: "OPT.UNTAG",
        flags: "write",
        keys: (1, 1, 1),
        acl_categories: "write",
        json: false,
        syntax: "OPT.UNTAG key tag [tag ...]",
        summary: "removes tags from a key; replies how many it carried",
        handler: crate::tags::untag,
    },
    CommandSpec {
        name: "OPT.TAGS",
        flags: "readonly fast",
        keys: (1, 1, 1),
        acl_categories: "read",
        json: false,
        syntax: "OPT.TAGS key",
        summary: "the tags of a key",
        handler: crate::tags::tags_of,
    },
    CommandSpec {
        name: "OPT.INVALIDATE",
        flags: "write",
        keys: (0, 0, 0),
        acl_categories: "write",
        json: false,
        syntax: "OPT.INVALIDATE tag [tag ...] [ASYNC | SOFT]",
        summary: "deletes (or with SOFT marks stale) every key carrying any of the tags, atomically",
        handler: crate::tags::invalidate,
    },
    CommandSpec {
        name: "OPT.FETCH",
        // readonly: replicas answer it too (without taking locks, and they say so).
        flags: "readonly fast",
        keys: (1, 1, 1),
        acl_categories: "read string",
        json: false,
        syntax: "OPT.FETCH key [BETA b] [LOCK ms]",
        summary: "value, TTL and an action (hit, recompute, stale, wait): stampede protection",
        handler: crate::tags::fetch,
    },
    CommandSpec {
        name: "OPT.TAGKEYS",
        flags: "readonly",
        keys: (0, 0, 0),
        acl_categories: "read",
        json: false,
        syntax: "OPT.TAGKEYS tag [CURSOR c] [COUNT n]",
        summary: "pages through the keys of a tag: replies [next cursor, keys] (cursor 0: done)",
        handler: crate::tags::tag_keys,
    },
    CommandSpec {
        name: "OPT.TAGINFO",
        flags: "readonly",
        keys: (0, 0, 0),
        acl_categories: "read",
        json: true,
        syntax: "OPT.TAGINFO [tag] [FORMAT JSON]",
        summary: "tag index size, memory and digest (or one tag's key count)",
        handler: crate::tag_info::command,
    },
    #[cfg(feature = "test-commands")]
    CommandSpec {
        name: "OPT.DEBUG-PANIC",
        flags: "readonly",
        keys: (0, 0, 0),
        acl_categories: "",
        json: false,
        syntax: "OPT.DEBUG-PANIC",
        summary: "test builds only: panics on purpose to prove panics are caught",
        handler: debug_panic,
    },
];

fn no_args(call: &Call, name: &str) -> Result<(), ReplyError> {
    match call.args.first() {
        None => Ok(()),
        Some(a) => Err(ReplyError::err(format!(
            "{name} takes no arguments besides FORMAT JSON, got '{}'",
            String::from_utf8_lossy(a)
        ))),
    }
}

/// `OPT.HELP`: one line per command; with FORMAT JSON, a list of [`HelpEntry`].
fn help(call: &Call) -> Result<Reply, ReplyError> {
    no_args(call, "OPT.HELP")?;
    let entries: Vec<HelpEntry> = COMMANDS
        .iter()
        .map(|c| HelpEntry {
            command: c.name.to_string(),
            syntax: c.syntax.to_string(),
            summary: c.summary.to_string(),
        })
        .collect();
    // RESP replies get one readable line per command; JSON keeps the fields apart.
    if !call.as_json {
        let lines: Vec<String> = entries
            .iter()
            .map(|e| format!("{} -- {}", e.syntax, e.summary))
            .collect();
        return Ok(Reply::structured(lines));
    }
    Ok(Reply::structured(entries))
}

/// `OPT.STATUS`: the [`StatusReport`].
fn status(call: &Call) -> Result<Reply, ReplyError> {
    no_args(call, "OPT.STATUS")?;
    let server = server::info().ok_or_else(|| ReplyError::err("module not initialised"))?;
    let report = StatusReport {
        module: crate::MODULE_NAME.to_string(),
        module_version: crate::MODULE_VERSION.to_string(),
        server_version: server.display_version.clone(),
        features: server.features.clone(),
        configs: configs::snapshot(),
    };
    Ok(Reply::structured(report))
}

/// `OPT.DEBUG-PANIC` (test builds): panics so the tests can check it is caught.
#[cfg(feature = "test-commands")]
fn debug_panic(_call: &Call) -> Result<Reply, ReplyError> {
    panic!("OPT.DEBUG-PANIC was called: deliberate panic for the tests");
}
