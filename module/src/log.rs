//! Writing to the server log (`RedisModule_Log`) at the levels redis.conf's `loglevel` knows.
//!
//! Safe to call from any thread once the module API is initialised: a null context makes Redis
//! log without a client, which is what callbacks that have no context (filters, hooks) need.

use std::ffi::CString;

use redis_module::raw;

fn write(level: &std::ffi::CStr, message: &str) {
    // Interior NULs would truncate the C string; replace them rather than lose the line.
    let Ok(text) = CString::new(format!("<opt> {}", message.replace('\0', "\\0"))) else {
        return;
    };
    // SAFETY: RedisModule_Log is filled by RedisModule_Init before any caller runs; a null
    // context is explicitly allowed, and "%s" with a valid C string is a well-formed call.
    unsafe {
        if let Some(log) = raw::RedisModule_Log {
            log(
                std::ptr::null_mut(),
                level.as_ptr(),
                c"%s".as_ptr(),
                text.as_ptr(),
            );
        }
    }
}

/// Logs at `notice` level (shown with the default `loglevel notice`).
pub fn notice(message: &str) {
    write(c"notice", message);
}

/// Logs at `warning` level.
pub fn warning(message: &str) {
    write(c"warning", message);
}
