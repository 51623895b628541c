//! The module loads into a real server, exposes its configs, INFO section and help, survives
//! a panicking command, and optctl reports or explains failures with the right exit codes.

use std::time::Duration;

use opt_harness::redis::{self, Value};
use opt_harness::{err, info_int, ok, optctl, Server, ServerOptions};

fn opt_status(server: &Server) -> serde_json::Value {
    opt_harness::json(&mut server.conn(), &["OPT.STATUS"])
}

/// The harness talks to the server it started: a test whose port another test's server took
/// first would otherwise get PONG from that one, and lose its connection when that test ends
/// (seen once as a "Broken pipe" while four suites ran at once).
#[test]
fn each_test_server_is_the_process_the_harness_started() {
    let (a, b) = (Server::start(), Server::start());
    assert!(a.pid().is_some() && a.pid() != b.pid());
    assert_eq!(a.answering_pid(), a.pid());
    assert_eq!(b.answering_pid(), b.pid());
}

#[test]
fn module_is_listed_with_its_version() {
    let server = Server::start();
    let modules: Vec<Vec<Value>> = redis::cmd("MODULE")
        .arg("LIST")
        .query(&mut server.conn())
        .unwrap();
    let field = |m: &Vec<Value>, name: &str| -> Option<Value> {
        m.chunks(2)
            .find(|kv| kv[0] == Value::BulkString(name.as_bytes().to_vec()))
            .map(|kv| kv[1].clone())
    };
    let opt = modules
        .iter()
        .find(|m| field(m, "name") == Some(Value::BulkString(b"opt".to_vec())))
        .expect("module 'opt' in MODULE LIST");
    // MODULE LIST reports the version as major*10000 + minor*100 + patch.
    let v: Vec<i64> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        field(opt, "ver"),
        Some(Value::Int(v[0] * 10000 + v[1] * 100 + v[2]))
    );
    let log = server.log();
    assert!(
        log.contains("redis-cache-optimizer") && log.contains("features:"),
        "{log}"
    );
}

#[test]
fn configs_get_set_and_reject_bad_values() {
    let server = Server::start_with(ServerOptions {
        module_args: vec!["opt.hotkeys-capacity".into(), "2048".into()],
        config: vec!["opt.hotkeys-window-seconds 30".into()],
        ..ServerOptions::default()
    });
    let mut con = server.conn();
    let get = |con: &mut redis::Connection, name: &str| -> String {
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(con)
            .unwrap();
        assert_eq!(v.len(), 2, "CONFIG GET {name}: {v:?}");
        v[1].clone()
    };
    assert_eq!(
        get(&mut con, "opt.hotkeys-capacity"),
        "2048",
        "loadmodule argument"
    );
    assert_eq!(
        get(&mut con, "opt.hotkeys-window-seconds"),
        "30",
        "redis.conf line"
    );
    assert_eq!(get(&mut con, "opt.hotkeys-enabled"), "yes", "default");
    assert_eq!(get(&mut con, "opt.key-delimiters"), ":");

    ok(&mut con, &["CONFIG", "SET", "opt.hotkeys-capacity", "4096"]);
    assert_eq!(get(&mut con, "opt.hotkeys-capacity"), "4096");
    ok(&mut con, &["CONFIG", "SET", "opt.hotkeys-enabled", "no"]);
    assert_eq!(get(&mut con, "opt.hotkeys-enabled"), "no");

    for (name, bad, expect) in [
        ("opt.hotkeys-capacity", "3", "between 16 and 4096"),
        ("opt.hotkeys-capacity", "4097", "between 16 and 4096"),
        ("opt.hotkeys-capacity", "many", "opt.hotkeys-capacity"),
        ("opt.hotkeys-enabled", "maybe", "opt.hotkeys-enabled"),
        ("opt.key-delimiters", "ab", "1 to 8 ASCII punctuation"),
    ] {
        let text = err(&mut con, &["CONFIG", "SET", name, bad]);
        assert!(
            text.contains(name) && text.contains(expect),
            "{name}={bad}: {text}"
        );
    }
    assert_eq!(
        get(&mut con, "opt.hotkeys-capacity"),
        "4096",
        "rejected value changed nothing"
    );
    assert_eq!(get(&mut con, "opt.key-delimiters"), ":");

    // The same values show in OPT.STATUS.
    let status = opt_status(&server);
    let configs = status["configs"].as_array().unwrap();
    assert!(configs
        .iter()
        .any(|c| c["name"] == "opt.hotkeys-capacity" && c["value"] == "4096"));
}

/// What an operator does after tuning at runtime: `CONFIG REWRITE`, then a restart. The
/// values set at runtime must come back, including one that overrides a `loadmodule`
/// argument and a string with spaces, and the server must start with the rewritten file.
#[test]
fn config_rewrite_keeps_runtime_values_across_a_restart() {
    let mut server = Server::start_with(ServerOptions {
        module_args: vec!["opt.hotkeys-capacity".into(), "2048".into()],
        config: vec!["opt.hotkeys-window-seconds 30".into()],
        ..ServerOptions::default()
    });
    let set = [
        ("opt.hotkeys-capacity", "1024"),
        ("opt.hotkeys-enabled", "no"),
        ("opt.key-delimiters", ":/"),
        ("opt.advise-ignore", "keys-without-ttl big-key"),
        ("opt.keyspace-known-big-keys", "77"),
    ];
    let mut con = server.conn();
    for (name, value) in set {
        ok(&mut con, &["CONFIG", "SET", name, value]);
    }
    ok(&mut con, &["CONFIG", "REWRITE"]);
    drop(con);
    server.restart();
    let mut con = server.conn();
    for (name, value) in set.iter().chain(&[("opt.hotkeys-window-seconds", "30")]) {
        let got: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(&mut con)
            .unwrap();
        assert_eq!(
            got,
            vec![name.to_string(), value.to_string()],
            "after restart"
        );
    }
    // The values are in force, not just stored: the capacity shows in OPT.STATUS and the
    // tracker does not count while disabled.
    let status = opt_status(&server);
    assert!(status["configs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "opt.hotkeys-capacity" && c["value"] == "1024"));
    ok(&mut con, &["GET", "k"]);
    assert_eq!(info_int(&mut con, "opt", "opt_hotkeys_sampled_accesses"), 0);
}

#[test]
fn bad_loadmodule_arguments_refuse_the_load_with_a_reason() {
    let opts = ServerOptions {
        module_args: vec!["opt.hotkeys-capacity".into(), "1".into()],
        ..ServerOptions::default()
    };
    let log = match Server::try_start(&opts) {
        Ok(_) => panic!("server started with an out-of-range module argument"),
        Err(log) => log,
    };
    assert!(
        log.contains("opt.hotkeys-capacity must be from 16 to 4096"),
        "{log}"
    );

    let opts = ServerOptions {
        module_args: vec!["opt.nonsense".into(), "1".into()],
        ..ServerOptions::default()
    };
    let log = Server::try_start(&opts)
        .err()
        .expect("unknown argument refused");
    assert!(
        log.contains("unknown module argument 'opt.nonsense'"),
        "{log}"
    );
}

#[test]
fn info_section_and_help() {
    let server = Server::start();
    let mut con = server.conn();
    let info: String = redis::cmd("INFO").arg("opt").query(&mut con).unwrap();
    assert!(info.contains("# opt"), "{info}");
    assert!(
        info.contains(&format!("opt_version:{}", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    assert!(
        info.contains("opt_features:") && info.contains("command-filter"),
        "{info}"
    );
    assert!(info.contains("opt_panics_caught:0"), "{info}");

    let lines: Vec<String> = redis::cmd("OPT.HELP").query(&mut con).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("OPT.STATUS [FORMAT JSON]")),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .all(|l| l.starts_with("OPT.") && !l.contains('\n')));
    let entries: Vec<opt_core::report::HelpEntry> = opt_harness::json(&mut con, &["OPT.HELP"]);
    assert_eq!(entries.len(), lines.len());

    let err = redis::cmd("OPT.HELP")
        .arg("FORMAT")
        .arg("XML")
        .query::<Value>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("unknown FORMAT 'XML'"), "{err}");
    let err = redis::cmd("OPT.STATUS")
        .arg("extra")
        .query::<Value>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("takes no arguments"), "{err}");
}

#[test]
fn status_is_a_map_in_resp3_and_a_flat_array_in_resp2() {
    let server = Server::start();
    let v: Value = redis::cmd("OPT.STATUS")
        .query(&mut server.conn_resp3())
        .unwrap();
    let Value::Map(pairs) = v else {
        panic!("RESP3 reply is not a map: {v:?}")
    };
    assert!(pairs
        .iter()
        .any(|(k, _)| matches!(k, Value::BulkString(b) if b == b"module_version")));
    let v: Value = redis::cmd("OPT.STATUS").query(&mut server.conn()).unwrap();
    let Value::Array(items) = v else {
        panic!("RESP2 reply is not an array: {v:?}")
    };
    assert_eq!(items.len() % 2, 0);
    assert_eq!(items[0], Value::BulkString(b"module".to_vec()));
}

#[test]
fn a_panic_is_caught_logged_and_the_server_keeps_serving() {
    let mut server = Server::start();
    let mut con = server.conn();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let err = redis::cmd("OPT.DEBUG-PANIC")
        .query::<Value>(&mut con)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("internal error in OPT.DEBUG-PANIC") && text.contains("commands.rs"),
        "{text}"
    );
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let v: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, "v");
    let info: String = redis::cmd("INFO").arg("opt").query(&mut con).unwrap();
    assert!(info.contains("opt_panics_caught:1"), "{info}");
    assert!(
        server.log().contains("panic at module/src/commands.rs"),
        "{}",
        server.log()
    );
    assert!(server.is_running());
}

#[test]
fn optctl_status_prints_versions_features_and_configs() {
    let server = Server::start();
    let (code, out, err) = optctl(&["--url", &server.url(), "status"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(redis ") || out.contains("(valkey "), "{out}");
    assert!(
        out.contains(&format!("opt {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(
        out.contains("opt.hotkeys-capacity") && out.contains("command-filter"),
        "{out}"
    );

    let (code, out, _) = optctl(&["status", "--json"], &[("REDIS_URL", &server.url())]);
    assert_eq!(code, 0);
    let report: opt_core::report::StatusReport = serde_json::from_str(&out).unwrap();
    assert_eq!(report.module, "opt");
}

#[test]
fn optctl_explains_an_unreachable_server_and_a_missing_module() {
    let port = opt_harness::free_port();
    let (code, out, err) = optctl(
        &["--url", &format!("redis://127.0.0.1:{port}"), "status"],
        &[],
    );
    assert_eq!(code, 2, "stdout {out} stderr {err}");
    assert!(
        err.contains("cannot reach") && err.contains("is redis-server running"),
        "{err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line, no backtrace: {err}"
    );

    let plain = Server::start_with(ServerOptions {
        with_module: false,
        ..ServerOptions::default()
    });
    let (code, _, err) = optctl(&["--url", &plain.url(), "status"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not loaded") && err.contains("loadmodule"),
        "{err}"
    );
}

#[test]
fn optctl_uses_acl_credentials_and_never_prints_the_password() {
    let server = Server::with_config(&["user ops on >s3cret-pw ~* &* +@all"]);
    let (code, out, err) = optctl(
        &["--url", &server.url(), "--user", "ops", "status"],
        &[("REDISCLI_AUTH", "s3cret-pw")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("s3cret-pw") && !err.contains("s3cret-pw"));

    let url = format!("redis://ops:wrong-pw@127.0.0.1:{}", server.port);
    let (code, out, err) = optctl(&["--url", &url, "status"], &[]);
    assert_eq!(code, 2, "{out} {err}");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(
        !err.contains("wrong-pw") && !out.contains("wrong-pw"),
        "{err}"
    );
}

#[test]
fn harness_starts_a_replica_that_syncs() {
    let master = Server::start();
    let _: () = redis::cmd("SET")
        .arg("from-master")
        .arg("1")
        .query(&mut master.conn())
        .unwrap();
    let replica = master.start_replica(ServerOptions::default());
    replica.wait_for("key to replicate", Duration::from_secs(10), |c| {
        redis::cmd("EXISTS")
            .arg("from-master")
            .query::<i64>(c)
            .unwrap_or(0)
            == 1
    });
}
