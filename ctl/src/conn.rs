//! Connecting to a server and calling OPT commands, with messages that say what to do.

use redis::{Connection, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError};
use serde::de::DeserializeOwned;

use crate::{Cli, CtlError};

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Connection settings from the URL, `--user` and `--password`.
pub fn connection_info(cli: &Cli) -> Result<ConnectionInfo, CtlError> {
    let info = cli
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| CtlError::unusable(format!("bad --url '{}': {e}", redacted(&cli.url))))?;
    let mut settings = info.redis_settings().clone();
    if let Some(u) = &cli.user {
        settings = settings.set_username(u);
    }
    if let Some(p) = &cli.password {
        settings = settings.set_password(p);
    }
    Ok(info.set_redis_settings(settings))
}

/// Opens a connection, mapping failures to exit code 2 with advice.
pub fn connect(cli: &Cli) -> Result<Connection, CtlError> {
    let info = connection_info(cli)?;
    let where_ = redacted(&cli.url);
    let client = redis::Client::open(info)
        .map_err(|e| CtlError::unusable(format!("bad --url '{where_}': {e}")))?;
    client
        .get_connection_with_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| connect_error(&where_, &e))
}

fn connect_error(where_: &str, e: &RedisError) -> CtlError {
    let text = e.to_string();
    if e.kind() == ErrorKind::AuthenticationFailed
        || text.contains("NOAUTH")
        || text.contains("WRONGPASS")
    {
        return CtlError::unusable(format!(
            "{where_} refused the credentials ({text}); pass --user and set REDISCLI_AUTH"
        ));
    }
    CtlError::unusable(format!(
        "cannot reach {where_}: {text}; is redis-server running there? (set --url or REDIS_URL)"
    ))
}

/// Runs `OPT.<command> args... FORMAT JSON` and parses the reply.
pub fn call_json<T: DeserializeOwned>(
    con: &mut Connection,
    cli: &Cli,
    command: &str,
    args: &[String],
) -> Result<T, CtlError> {
    let mut cmd = redis::cmd(command);
    for a in args {
        cmd.arg(a);
    }
    cmd.arg("FORMAT").arg("JSON");
    let text: String = cmd
        .query(con)
        .map_err(|e| command_error(cli, command, &e))?;
    serde_json::from_str(&text).map_err(|e| {
        CtlError::failed(format!(
            "{command} replied JSON that this optctl cannot read ({e}); are optctl and the \
             module the same version?"
        ))
    })
}

/// Maps a command's error to a message and exit code (2 when the server cannot be used).
pub fn command_error(cli: &Cli, command: &str, e: &RedisError) -> CtlError {
    let text = e.to_string();
    let where_ = redacted(&cli.url);
    if text.contains("unknown command") {
        return CtlError::unusable(format!(
            "the opt module is not loaded on {where_}: add `loadmodule /path/to/libredis_opt.so` \
             to redis.conf and restart, or run `MODULE LOAD /path/to/libredis_opt.so`"
        ));
    }
    let upper = text.to_ascii_uppercase();
    if upper.contains("NOPERM") || upper.contains("NOAUTH") {
        return CtlError::unusable(format!(
            "{where_} does not allow {command} for this user ({text}); see the ACL section of \
             the README"
        ));
    }
    if e.is_io_error() || e.is_connection_dropped() {
        return CtlError::unusable(format!("lost the connection to {where_}: {text}"));
    }
    CtlError::failed(format!("{command} failed on {where_}: {text}"))
}
