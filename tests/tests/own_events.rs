//! OPT.SET raises the keyspace events SET raises (`set`, and `expire` with a TTL), but only when
//! someone could see them: pub/sub under the current `notify-keyspace-events`, or another
//! module. These tests check that everyone who can see events gets exactly SET's: pub/sub
//! with the setting changed at runtime, and a second module (`tests/listener`) loaded before,
//! after, or at runtime.

use std::time::Duration;

use opt_harness::redis::{self, Connection};
use opt_harness::{info_int, listener_module_path, module_path, ok, Server, ServerOptions};

/// The pub/sub messages (`channel payload`) that `command` causes, read until a marker
/// published after it arrives.
fn published_by(server: &Server, c: &mut Connection, command: &[&str]) -> Vec<String> {
    let mut sub_conn = server.conn();
    let mut sub = sub_conn.as_pubsub();
    sub.psubscribe("__key*__:*").unwrap();
    sub.subscribe("marker").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    ok(c, command);
    ok(c, &["PUBLISH", "marker", "end"]);
    let mut seen = Vec::new();
    loop {
        let msg = sub.get_message().expect("a message before the marker");
        let channel = msg.get_channel_name().to_string();
        if channel == "marker" {
            return seen;
        }
        let payload: String = msg.get_payload().unwrap();
        seen.push(format!("{channel} {payload}"));
    }
}

#[test]
fn pubsub_gets_set_s_events_from_opt_set_under_every_setting() {
    let server = Server::start();
    let mut c = server.conn();
    // Alone on the server (its built-in modules, Redis 8's vectorset and Valkey 9's lua,
    // subscribe to no event), the module counts no other module that could receive events.
    assert_eq!(listeners(&mut c), 0);
    // A tagged key first, so the index follows the keyspace.
    ok(&mut c, &["OPT.SET", "k", "v0", "TAGS", "t"]);
    for flags in ["KEA", "Kg", "E$", "Ex", "K$g", "g$", ""] {
        ok(&mut c, &["CONFIG", "SET", "notify-keyspace-events", flags]);
        let by_set = published_by(&server, &mut c, &["SET", "k", "v1", "EX", "100"]);
        let by_opt_set = published_by(
            &server,
            &mut c,
            &["OPT.SET", "k", "v2", "EX", "100", "TAGS", "t"],
        );
        assert_eq!(by_opt_set, by_set, "notify-keyspace-events {flags:?}");
        if flags == "KEA" {
            assert_eq!(
                by_set,
                [
                    "__keyspace@0__:k set",
                    "__keyevent@0__:set k",
                    "__keyspace@0__:k expire",
                    "__keyevent@0__:expire k"
                ]
            );
        }
        if flags.is_empty() || !(flags.contains('K') || flags.contains('E')) {
            assert!(by_set.is_empty(), "{flags:?}: {by_set:?}");
        }
    }
}

/// `INFO opt`: the other modules that may receive this module's keyspace events.
fn listeners(c: &mut Connection) -> i64 {
    info_int(c, "opt", "opt_event_listener_modules")
}

/// The events the listener module received since it was last asked.
fn listener_events(c: &mut Connection) -> Vec<String> {
    redis::cmd("LISTENER.EVENTS").query(c).unwrap()
}

/// SET and OPT.SET on one key, each with a TTL: the listener must see the same from both.
fn assert_listener_sees_set_s_events(c: &mut Connection, context: &str) {
    listener_events(c);
    ok(c, &["SET", "k", "v1", "EX", "100"]);
    let by_set = listener_events(c);
    assert_eq!(by_set, ["set k", "expire k"], "{context}: SET");
    ok(c, &["OPT.SET", "k", "v2", "EX", "100", "TAGS", "t"]);
    assert_eq!(listener_events(c), by_set, "{context}: OPT.SET");
    ok(c, &["OPT.SET", "k", "v3", "TAGS", "t"]);
    assert_eq!(listener_events(c), ["set k"], "{context}: OPT.SET, no TTL");
}

#[test]
fn another_module_gets_opt_set_s_events_whenever_it_was_loaded() {
    let listener = listener_module_path().display().to_string();
    let module = module_path().display().to_string();

    // Loaded after this module (the server's module-change event).
    let after = Server::with_config(&[&format!("loadmodule {listener}")]);
    let mut c = after.conn();
    ok(&mut c, &["OPT.SET", "k", "v0", "TAGS", "t"]);
    assert_eq!(listeners(&mut c), 1);
    assert_listener_sees_set_s_events(&mut c, "loaded after");

    // Loaded before it (INFO modules when it loads).
    let before = Server::start_with(ServerOptions {
        with_module: false,
        config: vec![
            format!("loadmodule {listener}"),
            format!("loadmodule {module}"),
        ],
        ..ServerOptions::default()
    });
    let mut c = before.conn();
    ok(&mut c, &["OPT.SET", "k", "v0", "TAGS", "t"]);
    assert_eq!(listeners(&mut c), 1);
    assert_listener_sees_set_s_events(&mut c, "loaded before");

    // Loaded at runtime, after OPT.SET already skipped events nobody could see; then
    // unloaded, and OPT.SET goes on working.
    let runtime = Server::with_config(&["enable-module-command yes"]);
    let mut c = runtime.conn();
    ok(&mut c, &["OPT.SET", "k", "v0", "TAGS", "t"]);
    assert_eq!(listeners(&mut c), 0);
    ok(&mut c, &["MODULE", "LOAD", &listener]);
    assert_eq!(listeners(&mut c), 1);
    assert_listener_sees_set_s_events(&mut c, "loaded at runtime");
    ok(&mut c, &["MODULE", "UNLOAD", "listener"]);
    assert_eq!(listeners(&mut c), 0);
    ok(&mut c, &["OPT.SET", "k", "v4", "EX", "100", "TAGS", "t"]);
    let tags: Vec<String> = redis::cmd("OPT.TAGS").arg("k").query(&mut c).unwrap();
    assert_eq!(tags, ["t"]);
}
