//! The OPT.* command table: each command's flags, key positions, syntax and handler, declared
//! next to each other (the style of RedisJSON's `commands.rs`).
//!
//! Handlers are thin: they parse arguments, call into `opt_core`, and return a [`Reply`]. The
//! dispatcher in `lib.rs` catches panics, strips a trailing `FORMAT JSON` and writes the reply.

use opt_core::report::{HelpEntry, StatusReport};
use redis_module::raw;
use serde_json::json;

use crate::reply::{Reply, ReplyError};
use crate::{configs, server};

/// A command invocation as a handler sees it.
pub struct Call<'a> {
    /// The command context (valid for the duration of the call).
    pub ctx: *mut raw::RedisModuleCtx,
    /// Arguments after the command name, with any `FORMAT JSON` removed.
    pub args: Vec<&'a [u8]>,
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

fn to_value<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, ReplyError> {
    serde_json::to_value(v).map_err(|e| ReplyError::err(format!("could not encode reply: {e}")))
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
        return Ok(Reply::Structured(json!(lines)));
    }
    Ok(Reply::Structured(to_value(&entries)?))
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
    Ok(Reply::Structured(to_value(&report)?))
}

/// `OPT.DEBUG-PANIC` (test builds): panics so the tests can check it is caught.
#[cfg(feature = "test-commands")]
fn debug_panic(_call: &Call) -> Result<Reply, ReplyError> {
    panic!("OPT.DEBUG-PANIC was called: deliberate panic for the tests");
}
