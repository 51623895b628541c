//! Registers the `opt.*` parameters of `opt_core::config::CONFIGS` with the module-config API.
//!
//! Values live in atomics so the hot paths (the command filter) read them without a lock.
//! Defaults may be overridden by `loadmodule ... opt.<name> <value>` arguments; redis.conf lines
//! and `CONFIG SET` then go through the setters below, which validate with the same code in
//! `core` and name the config and its allowed range in every error.

use std::ffi::{c_char, c_int, c_longlong, c_void, CString};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use opt_core::config::{self, ConfigKind, CONFIGS};
use opt_core::report::ConfigValue;
use redis_module::raw;

use crate::guard;

const COUNT: usize = CONFIGS.len();

/// Integer and boolean values (booleans as 0/1), indexed like `CONFIGS`.
static INTS: [AtomicI64; COUNT] = [const { AtomicI64::new(0) }; COUNT];

/// String values, and the `RedisModuleString` handed to the server by the getter.
struct StringSlot {
    text: String,
    handle: *mut raw::RedisModuleString,
}

// SAFETY: the handle is only created, read and freed on the main thread (config callbacks run
// there); the Mutex serialises access to the text from other threads.
unsafe impl Send for StringSlot {}

static STRINGS: Mutex<Vec<StringSlot>> = Mutex::new(Vec::new());

/// Current value of an integer config.
pub fn int(index: usize) -> i64 {
    INTS[index].load(Ordering::Relaxed)
}

/// Current value of a boolean config.
pub fn flag(index: usize) -> bool {
    INTS[index].load(Ordering::Relaxed) != 0
}

/// Current value of a string config.
pub fn string(index: usize) -> String {
    let slots = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    slots.get(index).map(|s| s.text.clone()).unwrap_or_default()
}

/// Every config with its current value, as `CONFIG GET opt.*` shows them.
pub fn snapshot() -> Vec<ConfigValue> {
    CONFIGS
        .iter()
        .enumerate()
        .map(|(i, spec)| ConfigValue {
            name: format!("opt.{}", spec.name),
            value: match spec.kind {
                ConfigKind::Bool { .. } => if flag(i) { "yes" } else { "no" }.to_string(),
                ConfigKind::Int { .. } => int(i).to_string(),
                ConfigKind::Str { .. } => string(i),
            },
        })
        .collect()
}

/// Parses `loadmodule` arguments (`opt.<name> <value>` pairs) into default overrides.
pub fn parse_load_args(args: &[String]) -> Result<Vec<(usize, String)>, String> {
    if args.len() % 2 != 0 {
        return Err(format!(
            "module arguments must be 'opt.<name> <value>' pairs, got {} words",
            args.len()
        ));
    }
    args.chunks(2)
        .map(|pair| {
            let (index, spec) = config::find(&pair[0])
                .ok_or_else(|| format!("unknown module argument '{}'", pair[0]))?;
            config::parse_value(index, spec, &pair[1])?;
            Ok((index, pair[1].clone()))
        })
        .collect()
}

/// Registers every config and loads the values given in redis.conf.
pub fn register_all(
    ctx: *mut raw::RedisModuleCtx,
    overrides: &[(usize, String)],
) -> Result<(), String> {
    {
        let mut slots = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
        slots.clear();
        slots.extend(CONFIGS.iter().map(|_| StringSlot {
            text: String::new(),
            handle: std::ptr::null_mut(),
        }));
    }
    for (index, spec) in CONFIGS.iter().enumerate() {
        let override_text = overrides
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, v)| v);
        let name = CString::new(spec.name).map_err(|e| e.to_string())?;
        let privdata = index as *mut c_void;
        // SAFETY: ctx is the OnLoad context; name outlives the call (Redis copies it); the
        // callbacks are extern "C" functions of this module with the signatures the API expects;
        // privdata is an index, never dereferenced.
        let status = unsafe {
            match spec.kind {
                ConfigKind::Bool { default } => {
                    let default = match override_text {
                        Some(t) => config::parse_value(index, spec, t)?.unwrap_or(0) != 0,
                        None => default,
                    };
                    INTS[index].store(default as i64, Ordering::Relaxed);
                    raw::RedisModule_RegisterBoolConfig.ok_or("no module-config API")?(
                        ctx,
                        name.as_ptr(),
                        default as c_int,
                        0,
                        Some(get_bool),
                        Some(set_bool),
                        None,
                        privdata,
                    )
                }
                ConfigKind::Int { default, min, max } => {
                    let default = match override_text {
                        Some(t) => config::parse_value(index, spec, t)?.unwrap_or(default),
                        None => default,
                    };
                    INTS[index].store(default, Ordering::Relaxed);
                    raw::RedisModule_RegisterNumericConfig.ok_or("no module-config API")?(
                        ctx,
                        name.as_ptr(),
                        default,
                        0,
                        min,
                        max,
                        Some(get_int),
                        Some(set_int),
                        None,
                        privdata,
                    )
                }
                ConfigKind::Str { default } => {
                    let default = override_text.map(String::as_str).unwrap_or(default);
                    config::validate_string(index, default)?;
                    store_string(index, default);
                    let default = CString::new(default).map_err(|e| e.to_string())?;
                    raw::RedisModule_RegisterStringConfig.ok_or("no module-config API")?(
                        ctx,
                        name.as_ptr(),
                        default.as_ptr(),
                        0,
                        Some(get_string),
                        Some(set_string),
                        None,
                        privdata,
                    )
                }
            }
        };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(format!("could not register config opt.{}", spec.name));
        }
    }
    // SAFETY: called once from OnLoad after every config is registered, as the API requires.
    let loaded = unsafe { raw::RedisModule_LoadConfigs.ok_or("no module-config API")?(ctx) };
    if loaded != raw::REDISMODULE_OK as c_int {
        return Err("a value for an opt.* config in redis.conf was rejected".to_string());
    }
    Ok(())
}

fn store_string(index: usize, text: &str) {
    let mut slots = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(slot) = slots.get_mut(index) {
        slot.text = text.to_string();
        if !slot.handle.is_null() {
            // SAFETY: the handle was created by us with a null context and is no longer handed
            // out: the getter creates a fresh one on its next call.
            unsafe {
                if let Some(free) = raw::RedisModule_FreeString {
                    free(std::ptr::null_mut(), slot.handle);
                }
            }
            slot.handle = std::ptr::null_mut();
        }
    }
}

/// Writes `message` into the error out-parameter of a config setter.
///
/// # Safety
/// `err` must be the out-parameter Redis passed to the setter.
unsafe fn set_error(err: *mut *mut raw::RedisModuleString, message: &str) -> c_int {
    if let (false, Some(create)) = (err.is_null(), raw::RedisModule_CreateString) {
        // Redis owns and frees the string it receives through `err`.
        *err = create(std::ptr::null_mut(), message.as_ptr().cast(), message.len());
    }
    raw::REDISMODULE_ERR as c_int
}

/// Lets the subsystems veto or react to a change; see `crate::on_config_change`.
fn apply(index: usize, value: i64) -> Result<(), String> {
    let spec = &CONFIGS[index];
    config::check_int(spec, value)?;
    crate::before_config_change(index, value)?;
    INTS[index].store(value, Ordering::Relaxed);
    Ok(())
}

/// # Safety
/// Called by Redis with the privdata given at registration (an index into `CONFIGS`).
unsafe extern "C" fn get_int(_name: *const c_char, privdata: *mut c_void) -> c_longlong {
    int(privdata as usize)
}

/// # Safety
/// Called by Redis with the privdata given at registration and a valid `err` out-parameter.
unsafe extern "C" fn set_int(
    _name: *const c_char,
    value: c_longlong,
    privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    match guard::catch(|| apply(privdata as usize, value)) {
        Ok(Ok(())) => raw::REDISMODULE_OK as c_int,
        Ok(Err(message)) => set_error(err, &message),
        Err(p) => set_error(err, &format!("internal error: {}", p.message)),
    }
}

/// # Safety
/// Called by Redis with the privdata given at registration.
unsafe extern "C" fn get_bool(_name: *const c_char, privdata: *mut c_void) -> c_int {
    flag(privdata as usize) as c_int
}

/// # Safety
/// Called by Redis with the privdata given at registration and a valid `err` out-parameter.
unsafe extern "C" fn set_bool(
    _name: *const c_char,
    value: c_int,
    privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    match guard::catch(|| apply(privdata as usize, (value != 0) as i64)) {
        Ok(Ok(())) => raw::REDISMODULE_OK as c_int,
        Ok(Err(message)) => set_error(err, &message),
        Err(p) => set_error(err, &format!("internal error: {}", p.message)),
    }
}

/// # Safety
/// Called by Redis on the main thread with the privdata given at registration. The returned
/// string stays owned by this module until the value changes.
unsafe extern "C" fn get_string(
    _name: *const c_char,
    privdata: *mut c_void,
) -> *mut raw::RedisModuleString {
    let index = privdata as usize;
    let mut slots = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(slot) = slots.get_mut(index) else {
        return std::ptr::null_mut();
    };
    if let (true, Some(create)) = (slot.handle.is_null(), raw::RedisModule_CreateString) {
        slot.handle = create(
            std::ptr::null_mut(),
            slot.text.as_ptr().cast(),
            slot.text.len(),
        );
    }
    slot.handle
}

/// # Safety
/// Called by Redis with the privdata given at registration, a valid string and a valid `err`.
unsafe extern "C" fn set_string(
    _name: *const c_char,
    value: *mut raw::RedisModuleString,
    privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    let index = privdata as usize;
    let bytes = crate::reply::string_bytes(value);
    let Ok(text) = std::str::from_utf8(bytes) else {
        return set_error(
            err,
            &format!("opt.{} must be UTF-8 text", CONFIGS[index].name),
        );
    };
    match guard::catch(|| {
        config::validate_string(index, text)?;
        crate::before_string_config_change(index, text)?;
        store_string(index, text);
        Ok::<(), String>(())
    }) {
        Ok(Ok(())) => raw::REDISMODULE_OK as c_int,
        Ok(Err(message)) => set_error(err, &message),
        Err(p) => set_error(err, &format!("internal error: {}", p.message)),
    }
}
