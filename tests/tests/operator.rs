//! optctl as the operator's tool: Prometheus metrics (printed, and served over HTTP and
//! parsed), shell completions, help with examples.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use opt_harness::redis;
use opt_harness::{ok, optctl, optctl_path, Server, ServerOptions};

/// Parses Prometheus text exposition into (series with labels) -> value, checking every line.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            let name = w.next().expect("metric name");
            let kind = w.next().expect("metric type");
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        assert!(typed.contains(name), "{name} has no TYPE line");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line:?}");
            }
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(series.to_string(), v);
    }
    out
}

fn traffic(server: &Server) {
    let mut c = server.conn();
    for _ in 0..200 {
        let _: Option<String> = redis::cmd("GET").arg("hot:one").query(&mut c).unwrap();
    }
    ok(
        &mut c,
        &["OPT.SET", "page:1", "v", "TAGS", "user:1", "site"],
    );
}

#[test]
fn metrics_use_redis_exporter_names_and_bounded_module_series() {
    let server = Server::start_with(ServerOptions {
        config: vec!["opt.hotkeys-sample-ratio 1".into()],
        ..ServerOptions::default()
    });
    traffic(&server);
    // Two error replies of one code, for redis_errors_total.
    let mut c = server.conn();
    for _ in 0..2 {
        assert!(opt_harness::err(&mut c, &["LPUSH", "page:1", "x"]).contains("WRONGTYPE"));
    }
    let (code, out, err) = optctl(&["--url", &server.url(), "metrics"], &[]);
    assert_eq!(code, 0, "{err}");
    let m = parse_prometheus(&out);
    assert_eq!(m["redis_up"], 1.0);
    assert_eq!(m["redis_errors_total{err=\"WRONGTYPE\"}"], 2.0);
    assert_eq!(m["redis_rdb_last_bgsave_status"], 1.0);
    assert!(
        !m.keys().any(|k| k.starts_with("redis_master_link_up")),
        "a primary"
    );
    assert!(m["redis_keyspace_misses_total"] >= 200.0);
    assert!(
        m.contains_key("redis_memory_used_bytes")
            && m.contains_key("redis_commands_processed_total")
    );
    assert_eq!(m["redis_db_keys{db=\"db0\"}"], 1.0);
    // Per command (INFO commandstats), CPU, network and persistence, by the same names.
    assert!(m["redis_commands_total{cmd=\"get\"}"] >= 200.0);
    assert!(m.contains_key("redis_commands_duration_seconds_total{cmd=\"get\"}"));
    assert_eq!(m["redis_commands_failed_calls_total{cmd=\"lpush\"}"], 2.0);
    assert_eq!(m["redis_loading_dump_file"], 0.0);
    assert!(m["redis_rdb_changes_since_last_save"] >= 1.0);
    // A server that started a moment ago may have used no CPU second's hundredth yet.
    assert!(m.contains_key("redis_cpu_user_seconds_total"));
    assert!(m.contains_key("redis_cpu_sys_seconds_total"));
    assert!(m["redis_net_input_bytes_total"] > 0.0);
    assert_eq!(m["opt_tag_index_pairs"], 2.0);
    assert_eq!(m["opt_tags_total"], 2.0, "user:1 and site");
    assert_eq!(m["opt_tag_migrated_keys_sent_total"], 0.0);
    assert_eq!(m["opt_stampede_locks"], 0.0);
    // The keyspace sample behind the advice looked keys up; what it added to the server's
    // counts is exported apart (each server counts its own kinds of lookup, see keyspace.rs).
    assert!(m["opt_keyspace_lookup_hits_total"] <= m["redis_keyspace_hits_total"]);
    assert!(m["opt_keyspace_lookup_misses_total"] <= m["redis_keyspace_misses_total"]);
    assert_eq!(
        m["opt_tag_index_following_keyspace"], 1.0,
        "the index has keys"
    );
    assert!(
        m["opt_hotkey_ops_per_second{key=\"hot:one\"}"] > 0.0,
        "{out}"
    );
    assert!(m
        .keys()
        .any(|k| k.starts_with("opt_advice_finding{rule=\"maxmemory-unset\"")));
    assert!(m.contains_key("opt_health_score"));
    assert!(
        m.keys()
            .filter(|k| k.starts_with("opt_hotkey_ops_per_second"))
            .count()
            <= 10
    );
}

#[test]
fn the_exporter_serves_metrics_over_http() {
    let server = Server::start();
    traffic(&server);
    let port = opt_harness::free_port();
    let mut child = std::process::Command::new(optctl_path())
        .args([
            "--url",
            &server.url(),
            "exporter",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--max-scrapes",
            "2",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |path: &str| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    };
    // Up to 30 s for the exporter to listen: a loaded CI machine starts a debug binary slowly.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let response = loop {
        if let Some(r) = get("/metrics") {
            break r;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the exporter exited before answering: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the exporter did not answer on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/plain; version=0.0.4"),
        "{head}"
    );
    let m = parse_prometheus(body);
    assert_eq!(m["redis_up"], 1.0);
    let other = get("/nope").unwrap();
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let _ = get("/metrics");
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn completions_and_help_with_examples() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = optctl(&["completions", shell], &[]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("optctl") && out.contains("hotkeys"), "{shell}");
    }
    for sub in [
        "status",
        "hotkeys",
        "keyspace",
        "advise",
        "invalidate",
        "tags",
        "metrics",
        "exporter",
    ] {
        let (code, out, _) = optctl(&[sub, "--help"], &[]);
        assert_eq!(code, 0);
        assert!(
            out.contains("Example"),
            "{sub} --help has no example:\n{out}"
        );
    }
    let (code, _, err) = optctl(&["no-such-command"], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no-such-command"),
        "errors go to stderr: {err}"
    );
}

#[test]
fn report_as_text_json_and_html_rendered_by_chromium() {
    let server = Server::start_with(ServerOptions {
        config: vec!["opt.hotkeys-sample-ratio 1".into()],
        ..ServerOptions::default()
    });
    traffic(&server);
    let mut c = server.conn();
    ok(&mut c, &["SET", "report:big", &"x".repeat(150_000)]);
    ok(&mut c, &["SET", "soon:1", "v", "EX", "600"]);
    let (code, out, err) = optctl(&["--url", &server.url(), "report"], &[]);
    assert_eq!(code, 0, "{err}");
    for section in [
        "== status",
        "== advice",
        "== hot keys",
        "== memory by key pattern",
        "== tag index",
    ] {
        assert!(out.contains(section), "{section} missing:\n{out}");
    }
    // The hot keys' rates are those of the recent window, not averages since the start.
    assert!(
        out.contains("ops/s now") && !out.contains("ops/s avg"),
        "{out}"
    );
    let (code, out, _) = optctl(&["--url", &server.url(), "--json", "report"], &[]);
    assert_eq!(code, 0);
    let r: opt_core::report::FullReport = serde_json::from_str(&out).unwrap();
    assert!(r.advice.is_some() && r.keyspace.is_some() && r.hotkeys.is_some());
    let recent = r.hotkeys_recent.expect("the recent window");
    assert_eq!(recent.window, "recent");
    let hottest = &r.hotkeys.unwrap().entries[0];
    assert!(
        recent
            .entries
            .iter()
            .any(|e| e.name == hottest.name && e.ops_per_sec > 0.0),
        "the hottest key has a rate now: {recent:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let (code, _, err) = optctl(
        &[
            "--url",
            &server.url(),
            "report",
            "--html",
            html.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("report:big") && page.contains("Health"));
    assert!(
        page.contains("Keys expiring over the next 24 hours")
            && page.contains("0-1 h from now")
            && page.contains("Most keys expiring in one second"),
        "the report does not say when keys expire"
    );
    assert!(
        page.contains("&lt; 256 KiB") && !page.contains("&gt;= 1 MiB"),
        "the report's size chart does not show the 150 kB key in its range"
    );
    let footer = &page[page.find("<footer>").unwrap()..];
    assert!(
        footer.starts_with("<footer>generated by optctl at 20") && footer.contains(" UTC</footer>"),
        "{footer}"
    );
    // Self-contained: no script and nothing fetched from elsewhere.
    for forbidden in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(
            !page.contains(forbidden),
            "the report references {forbidden}"
        );
    }
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is installed by `make test` (apt-get install chromium)");
    let artifacts = opt_harness::workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = dir.path().join("chromium-profile");
    let output = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1100,2400",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--screenshot={}", shot.display()),
            &format!("file://{}", html.display()),
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console errors: {console:?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );
}

#[test]
fn top_scrolls_when_piped_and_counts_the_traffic_between_refreshes() {
    let server = Server::start_with(ServerOptions {
        config: vec!["opt.hotkeys-sample-ratio 1".into()],
        ..ServerOptions::default()
    });
    let url = server.url();
    let load = {
        let server_url = url.clone();
        std::thread::spawn(move || {
            let client = redis::Client::open(server_url).unwrap();
            let mut c = client.get_connection().unwrap();
            let until = std::time::Instant::now() + Duration::from_millis(2500);
            while std::time::Instant::now() < until {
                let _: Option<String> = redis::cmd("GET").arg("top:hot").query(&mut c).unwrap();
            }
        })
    };
    let (code, out, err) = optctl(&["--url", &url, "top", "--times", "2"], &[]);
    load.join().unwrap();
    assert_eq!(code, 0, "{err}");
    // Two blocks, each with its header; no cursor movement when stdout is not a terminal.
    assert_eq!(out.matches("optctl top").count(), 2, "{out}");
    assert!(!out.contains("\x1b["), "escape codes in piped output");
    assert!(out.contains("top:hot"), "the hot key is not shown:\n{out}");
    assert!(out.contains("hottest patterns now") && out.contains("hit ratio"));
    // Every GET of a missing key is a miss: the ratio over the last second is 0%.
    assert!(out.contains("hit ratio   0.0%"), "{out}");
}

/// Runs `optctl top` in a real terminal (tmux), reads the screen, then presses q.
#[test]
fn top_draws_a_full_screen_and_quits_on_q() {
    let tmux_ok = std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        tmux_ok,
        "tmux is installed by `make test` (apt-get install tmux)"
    );
    let server = Server::start();
    let mut c = server.conn();
    ok(&mut c, &["SET", "k", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tmux.sock");
    let socket = socket.to_str().unwrap();
    let done = dir.path().join("exit-code");
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(["-S", socket])
            .args(args)
            .output()
            .unwrap()
    };
    /// Kills the tmux server even when an assertion fails.
    struct Session<'a>(&'a str);
    impl Drop for Session<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("tmux")
                .args(["-S", self.0, "kill-server"])
                .output();
        }
    }
    let script = format!(
        "{} --url {} top; echo $? > {}; sleep 30",
        optctl_path().display(),
        server.url(),
        done.display()
    );
    let out = tmux(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _session = Session(socket);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let screen = loop {
        let shot = tmux(&["capture-pane", "-p"]);
        let text = String::from_utf8_lossy(&shot.stdout).to_string();
        if text.contains("hottest keys now") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "top never drew its screen:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(screen.contains("optctl top") && screen.contains("(q to quit)"));
    let artifacts = opt_harness::workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("top.txt"), &screen).unwrap();
    assert!(screen.contains("memory") && screen.contains("ops/s"));
    tmux(&["send-keys", "q"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !done.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "top did not quit on q"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "0");
    // Back on the normal screen: the alternate screen with the table is gone.
    let after = String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).to_string();
    assert!(!after.contains("hottest keys now"), "{after}");
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate with openssl.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed by `make test`");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=opt-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\n").unwrap();
    for who in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN=opt-test-{who}"),
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
            "-out",
            &format!("{who}.crt"),
        ]);
    }
}

#[test]
fn optctl_speaks_tls_with_a_ca_client_certificates_and_acl_users() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let tls_port = opt_harness::free_port();
    let server = Server::start_with(ServerOptions {
        config: vec![
            format!("tls-port {tls_port}"),
            format!("tls-cert-file {}", file("server.crt")),
            format!("tls-key-file {}", file("server.key")),
            format!("tls-ca-cert-file {}", file("ca.crt")),
            "tls-auth-clients optional".into(),
        ],
        ..ServerOptions::default()
    });
    let mut c = server.conn();
    ok(
        &mut c,
        &["ACL", "SETUSER", "ops", "on", ">s3cret", "+@all", "~*"],
    );
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let (ca, cert, key) = (file("ca.crt"), file("client.crt"), file("client.key"));

    // Verified with the CA.
    let (code, out, err) = optctl(&["--url", &url, "--cacert", &ca, "status"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("module"), "{out}");
    // With a client certificate and an ACL user whose password comes from REDISCLI_AUTH.
    let (code, out, err) = optctl(
        &[
            "--url", &url, "--cacert", &ca, "--cert", &cert, "--key", &key, "--user", "ops",
            "--json", "hotkeys",
        ],
        &[("REDISCLI_AUTH", "s3cret")],
    );
    assert_eq!(code, 0, "{err}");
    let _: opt_core::report::HotKeysReport = serde_json::from_str(&out).unwrap();
    // The CA from the environment, as the other connection settings.
    let (code, _, err) = optctl(&["--url", &url, "status"], &[("REDIS_CACERT", &ca)]);
    assert_eq!(code, 0, "{err}");
    // An unknown issuer is refused, with exit code 2 and no stack trace.
    let (code, _, err) = optctl(&["--url", &url, "status"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot reach") && err.contains("--cacert") && err.lines().count() == 1,
        "{err}"
    );
    // Unless the operator says so.
    let (code, _, err) = optctl(&["--url", &url, "--insecure", "status"], &[]);
    assert_eq!(code, 0, "{err}");
    // TLS flags on a plain URL, and a missing file, are usage errors.
    let (code, _, err) = optctl(&["--url", &server.url(), "--cacert", &ca, "status"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("rediss://"), "{err}");
    let (code, _, err) = optctl(
        &["--url", &url, "--cacert", "/nonexistent/ca.crt", "status"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot read --cacert"), "{err}");
    // Plain redis:// against the TLS port fails cleanly.
    let (code, _, err) = optctl(
        &["--url", &format!("redis://127.0.0.1:{tls_port}"), "status"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("use rediss://"), "{err}");
}
