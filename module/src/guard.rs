//! Keeps Rust panics from crossing into redis-server.
//!
//! Since Rust 1.81 a panic that unwinds into an `extern "C"` frame aborts the process, which
//! here means taking the whole Redis server down. Every entry point the server calls (commands,
//! config callbacks, INFO, timers, filters, events) runs its body through [`catch`]. The panic
//! hook installed at load writes the message and its source location to the server log, and
//! [`catch`] turns the panic into a value the caller can reply with.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::log;

/// Panics caught since load (shown in `INFO opt`).
pub static PANICS_CAUGHT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Where the last panic on this thread happened, filled by the hook, read by [`catch`].
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the panic hook that logs every panic with its location through the server log.
pub fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "unknown location".to_string());
        let message = payload_message(info.payload());
        log::warning(&format!("panic at {location}: {message}"));
        LAST_LOCATION.with(|l| *l.borrow_mut() = Some(location));
    }));
}

/// A panic caught by [`catch`]: its message and where it happened.
#[derive(Debug, Clone)]
pub struct CaughtPanic {
    /// The panic message.
    pub message: String,
    /// `file:line:column`, when the hook saw it.
    pub location: String,
}

/// Runs `body`, catching any panic so that it never unwinds into the server.
pub fn catch<T>(body: impl FnOnce() -> T) -> Result<T, CaughtPanic> {
    panic::catch_unwind(AssertUnwindSafe(body)).map_err(|payload| {
        PANICS_CAUGHT.fetch_add(1, Ordering::Relaxed);
        let location = LAST_LOCATION
            .with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| "unknown location".to_string());
        CaughtPanic {
            message: payload_message(payload.as_ref()),
            location,
        }
    })
}

/// Runs a callback whose failure can only be logged (no client to reply to).
pub fn catch_and_log(what: &str, body: impl FnOnce()) {
    if let Err(p) = catch(body) {
        log::warning(&format!(
            "{what} failed with a panic at {}: {} (caught; the server keeps running)",
            p.location, p.message
        ));
    }
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
