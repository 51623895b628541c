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
    let tls = cli.url.starts_with("rediss://");
    if !tls && (cli.cacert.is_some() || cli.cert.is_some() || cli.insecure) {
        return Err(CtlError::unusable(format!(
            "--cacert, --cert, --key and --insecure need a rediss:// URL, not '{}'",
            redacted(&cli.url)
        )));
    }
    let url = if tls && cli.insecure && !cli.url.contains('#') {
        format!("{}#insecure", cli.url)
    } else {
        cli.url.clone()
    };
    let info = url
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
    connect_to(cli, None)
}

/// Opens a connection to `host:port` (another node of the cluster) with the scheme, TLS
/// settings and credentials of `--url`; `None` is `--url` itself.
pub fn connect_to(cli: &Cli, node: Option<(&str, u16)>) -> Result<Connection, CtlError> {
    let mut info = connection_info(cli)?;
    let mut where_ = redacted(&cli.url);
    if let Some((host, port)) = node {
        let addr = match info.addr().clone() {
            redis::ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => redis::ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure,
                tls_params,
            },
            _ => redis::ConnectionAddr::Tcp(host.to_string(), port),
        };
        info = info.set_addr(addr);
        where_ = format!("node {host}:{port}");
    }
    let client = if cli.cacert.is_some() || cli.cert.is_some() {
        redis::Client::build_with_tls(info, tls_certificates(cli)?)
    } else {
        redis::Client::open(info)
    }
    .map_err(|e| CtlError::unusable(format!("bad --url '{where_}' or TLS files: {e}")))?;
    client
        .get_connection_with_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| connect_error(&where_, &e))
}

/// The CA and client certificate files named by --cacert, --cert and --key.
fn tls_certificates(cli: &Cli) -> Result<redis::TlsCertificates, CtlError> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| CtlError::unusable(format!("cannot read {flag} {}: {e}", path.display())))
    };
    let root_cert = match &cli.cacert {
        Some(p) => Some(read("--cacert", p)?),
        None => None,
    };
    let client_tls = match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("--cert", cert)?,
            client_key: read("--key", key)?,
        }),
        _ => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
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
    if text.contains("certificate") || text.contains("Certificate") {
        return CtlError::unusable(format!(
            "cannot reach {where_}: {text}; pass --cacert with the CA that signed the server's \
             certificate (or --insecure to skip the check)"
        ));
    }
    let tls_hint = if where_.starts_with("rediss://") {
        ""
    } else {
        "; if it listens with TLS, use rediss://"
    };
    CtlError::unusable(format!(
        "cannot reach {where_}: {text}; is redis-server running there? (set --url or \
         REDIS_URL){tls_hint}"
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
