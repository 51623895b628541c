//! Turning command results into replies.
//!
//! Structured results are serde values from `opt_core::report`. They are written as RESP3 maps
//! for RESP3 clients (Redis flattens maps into arrays for RESP2 clients by itself), straight
//! from the value (`resp`), or, when the command ends with `FORMAT JSON`, as one bulk string
//! holding the JSON document that `optctl` parses back into the same types.

use std::ffi::{c_int, c_long, CStr, CString};
use std::sync::atomic::{AtomicPtr, Ordering};

use redis_module::raw;
use serde::Serialize;

use crate::resp::{self, Sink};

/// A report a command replies with: RESP, or JSON text with `FORMAT JSON`.
pub trait Report {
    /// Writes the report as the reply of `ctx`.
    fn send_resp(&self, ctx: *mut raw::RedisModuleCtx);
    /// The report as JSON text.
    fn to_json(&self) -> Result<String, String>;
}

impl<T: Serialize> Report for T {
    fn send_resp(&self, ctx: *mut raw::RedisModuleCtx) {
        if !resp::write(&mut CtxSink(ctx), self) {
            crate::log::warning("a reply could not be encoded whole; its rest was sent as nulls");
        }
    }
    fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| e.to_string())
    }
}

/// What a command handler returns on success.
pub enum Reply {
    /// A report: a RESP map/array, or a JSON bulk string with `FORMAT JSON`.
    Structured(Box<dyn Report>),
    /// A status reply such as `+OK`.
    Status(&'static CStr),
    /// An integer reply.
    Int(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// An array of bulk strings (binary safe: key and tag names as they are).
    Bulks(Vec<Vec<u8>>),
    /// A page of a cursor walk: `[cursor, [bulk strings]]`, as SCAN replies.
    Page(u64, Vec<Vec<u8>>),
    /// A null reply.
    Null,
    /// A map with fixed field names and binary-safe values (a flat array for RESP2).
    Fields(Vec<(&'static str, Field)>),
    /// No reply now: the client was blocked and gets its reply later.
    Deferred,
}

impl Reply {
    /// A [`Reply::Structured`] of `report`.
    pub fn structured(report: impl Serialize + 'static) -> Reply {
        Reply::Structured(Box::new(report))
    }
}

/// One value of a [`Reply::Fields`] map.
pub enum Field {
    /// A bulk string (binary safe).
    Bulk(Vec<u8>),
    /// A short word.
    Text(&'static str),
    /// An integer.
    Int(i64),
    /// Nil.
    Null,
}

/// An error reply; the text starts with an error code such as `ERR`.
#[derive(Debug)]
pub struct ReplyError(pub String);

impl ReplyError {
    /// An `ERR` reply with `message`.
    pub fn err(message: impl Into<String>) -> Self {
        ReplyError(format!("ERR {}", message.into()))
    }
}

/// The bytes of argument `pos` of the command a filter is looking at.
///
/// # Safety
/// `fctx` must be the live filter context and `pos` below its argument count.
pub unsafe fn filter_arg<'a>(fctx: *mut raw::RedisModuleCommandFilterCtx, pos: usize) -> &'a [u8] {
    match raw::RedisModule_CommandFilterArgGet {
        Some(get) => string_bytes(get(fctx, pos as std::ffi::c_int)),
        None => &[],
    }
}

/// The bytes of a `RedisModuleString` argument.
///
/// # Safety
/// `s` must be a valid string handle for the duration of the returned borrow.
pub unsafe fn string_bytes<'a>(s: *mut raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0usize;
    match raw::RedisModule_StringPtrLen {
        Some(ptr_len) if !s.is_null() => {
            let ptr = ptr_len(s, &mut len);
            if ptr.is_null() {
                &[]
            } else {
                std::slice::from_raw_parts(ptr.cast::<u8>(), len)
            }
        }
        _ => &[],
    }
}

/// The bytes of a call reply that holds a string (bulk, simple, verbatim or an error), or None.
///
/// # Safety
/// `r` must be null or a live call reply, which must outlive the returned borrow.
pub unsafe fn call_reply_bytes<'a>(r: *mut raw::RedisModuleCallReply) -> Option<&'a [u8]> {
    if r.is_null() {
        return None;
    }
    let mut len = 0usize;
    let p = raw::RedisModule_CallReplyStringPtr?(r, &mut len);
    (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), len))
}

/// Writes `result` to the client of `ctx`, as JSON text when `as_json` is set.
pub fn send(ctx: *mut raw::RedisModuleCtx, result: Result<Reply, ReplyError>, as_json: bool) {
    match result {
        Ok(Reply::Structured(r)) if as_json => match r.to_json() {
            Ok(text) => send_bulk(ctx, text.as_bytes()),
            Err(e) => send_error(ctx, &format!("ERR could not encode the reply: {e}")),
        },
        Ok(Reply::Structured(r)) => r.send_resp(ctx),
        Ok(Reply::Status(s)) => send_status(ctx, s),
        Ok(Reply::Bulk(b)) => send_bulk(ctx, &b),
        Ok(Reply::Bulks(items)) => send_bulks(ctx, &items),
        Ok(Reply::Page(cursor, items)) => {
            send_array_len(ctx, 2);
            send_bulk(ctx, cursor.to_string().as_bytes());
            send_bulks(ctx, &items);
        }
        Ok(Reply::Null) => CtxSink(ctx).null(),
        Ok(Reply::Deferred) => {}
        Ok(Reply::Fields(fields)) => {
            let mut sink = CtxSink(ctx);
            // The map length equals the pairs sent.
            sink.map(fields.len());
            for (name, value) in fields {
                sink.bulk(name.as_bytes());
                match value {
                    Field::Bulk(b) => sink.bulk(&b),
                    Field::Text(t) => sink.bulk(t.as_bytes()),
                    Field::Int(i) => sink.int(i),
                    Field::Null => sink.null(),
                }
            }
        }
        Ok(Reply::Int(i)) => CtxSink(ctx).int(i),
        Err(ReplyError(message)) => send_error(ctx, &message),
    }
}

/// Starts an array reply of `len` elements.
fn send_array_len(ctx: *mut raw::RedisModuleCtx, len: usize) {
    // SAFETY: ctx is the live command context; the caller sends `len` replies next.
    unsafe {
        if let Some(f) = raw::RedisModule_ReplyWithArray {
            f(ctx, len as c_long);
        }
    }
}

/// Sends an array of bulk strings.
fn send_bulks(ctx: *mut raw::RedisModuleCtx, items: &[Vec<u8>]) {
    send_array_len(ctx, items.len());
    for item in items {
        send_bulk(ctx, item);
    }
}

/// Sends an error reply (the text must start with an error code such as `ERR`).
pub fn send_error(ctx: *mut raw::RedisModuleCtx, message: &str) {
    let text = CString::new(message.replace(['\r', '\n', '\0'], " "))
        .unwrap_or_else(|_| c"ERR internal error".to_owned());
    // SAFETY: ctx is the live command context; Redis copies the C string.
    unsafe {
        if let Some(f) = raw::RedisModule_ReplyWithError {
            f(ctx, text.as_ptr());
        }
    }
}

fn send_status(ctx: *mut raw::RedisModuleCtx, status: &CStr) {
    // SAFETY: ctx is the live command context; Redis copies the text; the cached reply lives
    // as long as the module and is only read.
    unsafe {
        let cached = OK_REPLY.load(Ordering::Relaxed);
        if status == c"OK" && !cached.is_null() {
            if let Some(f) = raw::RedisModule_ReplyWithCallReply {
                f(ctx, cached);
                return;
            }
        }
        if let Some(f) = raw::RedisModule_ReplyWithSimpleString {
            f(ctx, status.as_ptr());
        }
    }
}

/// A `+OK` reply kept from one `RedisModule_Call` at load. `RedisModule_ReplyWithSimpleString`
/// appends the prefix, the text and the line end to the client's buffer in three steps;
/// replaying a kept reply appends `+OK\r\n` in one, which saves about 450 of OPT.SET's
/// 11,800 instructions (callgrind). Null if the call failed: then the plain API is used.
static OK_REPLY: AtomicPtr<raw::RedisModuleCallReply> = AtomicPtr::new(std::ptr::null_mut());

/// Keeps a `+OK` reply for [`send_status`] (called once at load). `SELECT 0` answers `+OK`
/// and only changes the database of the call's own temporary client.
pub fn init_ok_reply(ctx: *mut raw::RedisModuleCtx) {
    // SAFETY: the OnLoad context; "c" takes one C string; a reply that is not `+OK` is freed.
    unsafe {
        let Some(reply) =
            crate::state::module_call!(ctx, c"SELECT".as_ptr(), c"c".as_ptr(), c"0".as_ptr())
        else {
            return;
        };
        if reply.is_null() {
            return;
        }
        let mut len = 0usize;
        let is_ok = raw::RedisModule_CallReplyType
            .is_some_and(|f| f(reply) == raw::REDISMODULE_REPLY_STRING as c_int)
            && raw::RedisModule_CallReplyProto.is_some_and(|f| {
                let p = f(reply, &mut len);
                !p.is_null() && std::slice::from_raw_parts(p.cast::<u8>(), len) == b"+OK\r\n"
            });
        if is_ok {
            OK_REPLY.store(reply, Ordering::Relaxed);
        } else if let Some(free) = raw::RedisModule_FreeCallReply {
            free(reply);
        }
    }
}

fn send_bulk(ctx: *mut raw::RedisModuleCtx, bytes: &[u8]) {
    // SAFETY: ctx is the live command context; Redis copies the buffer.
    unsafe {
        if let Some(f) = raw::RedisModule_ReplyWithStringBuffer {
            f(ctx, bytes.as_ptr().cast(), bytes.len());
        }
    }
}

/// The reply of a command context, as a [`Sink`].
struct CtxSink(*mut raw::RedisModuleCtx);

// SAFETY (every call below): the context is the live command context; the reply writers
// announce lengths that equal the replies that follow (`resp`); Redis copies buffers before
// the call returns.
impl Sink for CtxSink {
    fn map(&mut self, len: usize) {
        unsafe {
            if let Some(f) = raw::RedisModule_ReplyWithMap {
                f(self.0, len as c_long);
            }
        }
    }
    fn array(&mut self, len: usize) {
        send_array_len(self.0, len);
    }
    fn bulk(&mut self, bytes: &[u8]) {
        send_bulk(self.0, bytes);
    }
    fn int(&mut self, value: i64) {
        unsafe {
            if let Some(f) = raw::RedisModule_ReplyWithLongLong {
                f(self.0, value);
            }
        }
    }
    fn double(&mut self, value: f64) {
        unsafe {
            if let Some(f) = raw::RedisModule_ReplyWithDouble {
                f(self.0, value);
            }
        }
    }
    fn boolean(&mut self, value: bool) {
        unsafe {
            if let Some(f) = raw::RedisModule_ReplyWithBool {
                f(self.0, value as c_int);
            }
        }
    }
    fn null(&mut self) {
        unsafe {
            if let Some(f) = raw::RedisModule_ReplyWithNull {
                f(self.0);
            }
        }
    }
}
