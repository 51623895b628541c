//! Test harness: real redis-server processes with the freshly built module.
//!
//! Every end-to-end test starts its own server on a free loopback port in a temp dir. The
//! server is stopped with `SHUTDOWN NOSAVE` and killed on drop, so also when a test panics, and
//! it dies with the test process (PR_SET_PDEATHSIG) if that is killed. `cargo test` does not
//! build a cdylib, so the harness runs `cargo build` for the module and `optctl` once per test
//! process. `REDIS_SERVER` selects another server binary; `OPT_MODULE` another module file.

#![warn(missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use redis;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Builds the module (with its test-only commands), optctl and the test-only listener module
/// once per test process.
fn build_artifacts() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        if std::env::var_os("OPT_SKIP_BUILD").is_none() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let status = Command::new(cargo)
                .current_dir(&root)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "redis-opt-module",
                    "-p",
                    "redis-opt-ctl",
                    "-p",
                    "opt-test-listener",
                    "--features",
                    "redis-opt-module/test-commands",
                ])
                .status()
                .expect("run cargo build for the module");
            assert!(status.success(), "cargo build of the module failed");
        }
        target.join("debug")
    })
}

/// Path of the module to load: `OPT_MODULE`, or the freshly built debug cdylib.
pub fn module_path() -> PathBuf {
    match std::env::var_os("OPT_MODULE") {
        Some(p) => PathBuf::from(p),
        None => build_artifacts().join("libredis_opt.so"),
    }
}

/// Path of the test-only second module (`tests/listener`), which records the keyspace events
/// it receives (`LISTENER.EVENTS`).
pub fn listener_module_path() -> PathBuf {
    build_artifacts().join("libopt_test_listener.so")
}

/// Path of the freshly built `optctl`.
pub fn optctl_path() -> PathBuf {
    build_artifacts().join("optctl")
}

/// The redis-server binary: `REDIS_SERVER`, or `redis-server` on PATH.
pub fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// What the server binary says of itself (`Redis server v=8.6.3 sha=...`), or "" if it cannot
/// be run.
pub fn server_version() -> String {
    Command::new(server_binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The server's name and version as `opt_core::version::server_identity` spells them
/// (`redis 8.6.3`, `valkey 9.1.2`), from its `--version`; "" if it cannot be read.
pub fn server_identity() -> String {
    match server_version().split_whitespace().collect::<Vec<_>>()[..] {
        [name, "server", v, ..] => format!(
            "{} {}",
            name.to_ascii_lowercase(),
            v.trim_start_matches("v=")
        ),
        _ => String::new(),
    }
}

/// A loopback port that was free a moment ago (and whose cluster-bus port, +10000, too).
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        if port < 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Load the module.
    pub with_module: bool,
    /// Arguments after the module path on the `loadmodule` line.
    pub module_args: Vec<String>,
    /// Extra redis.conf lines (placed after `loadmodule`, so `opt.*` lines work).
    pub config: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            with_module: true,
            module_args: Vec::new(),
            config: Vec::new(),
        }
    }
}

/// A running redis-server, stopped on drop.
pub struct Server {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its working directory (RDB, AOF, log).
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

fn spawn_server(conf_path: &Path, dir: &Path) -> Child {
    let mut cmd = Command::new(server_binary());
    cmd.arg(conf_path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; it makes the kernel kill the server if the test
    // process dies without running destructors.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", server_binary()))
}

impl Server {
    /// A server with the module and default settings.
    pub fn start() -> Server {
        Server::start_with(ServerOptions::default())
    }

    /// A server with the module and extra redis.conf lines.
    pub fn with_config(lines: &[&str]) -> Server {
        Server::start_with(ServerOptions {
            config: lines.iter().map(|s| s.to_string()).collect(),
            ..ServerOptions::default()
        })
    }

    /// A server as `opts` says; panics with the server log if it does not come up.
    pub fn start_with(opts: ServerOptions) -> Server {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Server::try_start(&opts) {
                Ok(s) => return s,
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("redis-server did not start:\n{log}"),
            }
        }
        panic!("redis-server did not start (ports kept colliding):\n{last_log}");
    }

    /// Starts a server; on failure returns its log.
    pub fn try_start(opts: &ServerOptions) -> Result<Server, String> {
        let dir = tempfile::Builder::new()
            .prefix("opt-test-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let mut conf = vec![
            format!("port {port}"),
            "bind 127.0.0.1".to_string(),
            format!("dir {}", dir.path().display()),
            "logfile server.log".to_string(),
            "save \"\"".to_string(),
            "appendonly no".to_string(),
            "enable-debug-command yes".to_string(),
        ];
        if opts.with_module {
            let mut line = format!("loadmodule {}", module_path().display());
            for a in &opts.module_args {
                line.push(' ');
                line.push_str(a);
            }
            conf.push(line);
        }
        conf.extend(opts.config.iter().cloned());
        // Lines every test server gets, separated by `;`: for running a suite under a
        // server setting it does not choose itself (`io-threads 4`, say).
        if let Ok(extra) = std::env::var("OPT_TEST_EXTRA_CONFIG") {
            conf.extend(
                extra
                    .split(';')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        }
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, conf.join("\n") + "\n").expect("write redis.conf");
        let child = spawn_server(&conf_path, dir.path());
        let mut server = Server {
            port,
            dir,
            child: Some(child),
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Stops the server (after `SHUTDOWN NOSAVE`) and starts it again on the same port, in
    /// the same directory, with the same configuration: what is on disk is loaded again.
    pub fn restart(&mut self) {
        self.stop();
        let conf_path = self.dir.path().join("redis.conf");
        self.child = Some(spawn_server(&conf_path, self.dir.path()));
        if let Err(log) = self.wait_ready() {
            panic!("redis-server did not restart:\n{log}");
        }
    }

    /// Waits up to 10 s (`OPT_TEST_START_SECONDS`) for the server's own PONG.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start_seconds = env_number("OPT_TEST_START_SECONDS", 10);
        let deadline = Instant::now() + Duration::from_secs(start_seconds);
        loop {
            // A PONG may come from another test's server that took the port between
            // free_port() and our bind: ours then fails with "Address already in use" and the
            // caller retries on another port. So the PONG counts only from our own process.
            if self.ping()
                && self
                    .answering_pid()
                    .is_none_or(|pid| Some(pid) == self.pid())
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return Err(self.log());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no PONG within {start_seconds} s\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        raw_command(self.port, "PING").is_some_and(|r| r.starts_with("+PONG"))
    }

    /// The process id of our server process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The `process_id` that whatever answers on our port reports in `INFO server`.
    pub fn answering_pid(&self) -> Option<u32> {
        let mut con = redis::Client::open(self.url())
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        con.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        u32::try_from(info_int(&mut con, "server", "process_id")).ok()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A new RESP2 connection.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the test server")
    }

    /// A new RESP3 connection.
    pub fn conn_resp3(&self) -> redis::Connection {
        redis::Client::open(format!("{}?protocol=resp3", self.url()))
            .and_then(|c| c.get_connection())
            .expect("connect to the test server with RESP3")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts a replica of this server (same module and options) and waits for its sync.
    pub fn start_replica(&self, opts: ServerOptions) -> Server {
        let mut opts = opts;
        opts.config
            .push(format!("replicaof 127.0.0.1 {}", self.port));
        let replica = Server::start_with(opts);
        replica.wait_for(
            "replica to finish its initial sync",
            Duration::from_secs(20),
            |c| {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(c)
                    .unwrap_or_default();
                info.contains("master_link_status:up")
            },
        );
        replica
    }

    /// Polls `check` on a fresh connection until it holds; panics after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&mut redis::Connection) -> bool,
    ) {
        let mut con = self.conn();
        let deadline = Instant::now() + timeout;
        while !check(&mut con) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the server: `SHUTDOWN NOSAVE`, then SIGKILL if it lingers past 3 s
    /// (`OPT_TEST_STOP_SECONDS`: under valgrind the leak check at exit needs longer).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = raw_command(self.port, "SHUTDOWN NOSAVE");
        let deadline = Instant::now() + Duration::from_secs(env_number("OPT_TEST_STOP_SECONDS", 3));
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the process, to simulate a stalled node.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = self.child.as_ref() {
            let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: signalling our own child process by its pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one inline command over a fresh socket and returns the first reply chunk.
fn raw_command(port: u16, line: &str) -> Option<String> {
    let addr = ("127.0.0.1", port);
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Runs the freshly built optctl with `args` and environment `env`; returns (exit code,
/// stdout, stderr).
pub fn optctl(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(optctl_path());
    cmd.args(args)
        .env_remove("REDIS_URL")
        .env_remove("REDISCLI_AUTH")
        .env_remove("REDIS_CACERT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run optctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A new RESP2 connection to the server on `port` (for threads, which cannot borrow the
/// [`Server`]).
pub fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection())
        .expect("connect to the test server")
}

/// Runs `args` (command and arguments) on `con`.
pub fn command(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

/// Runs `args` and returns the reply; panics (naming the command) on an error reply.
pub fn ok(con: &mut redis::Connection, args: &[&str]) -> redis::Value {
    command(con, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Writes each of `keys` (value `v`) with `tags` through OPT.SET, in one pipeline.
pub fn opt_set_many(
    con: &mut redis::Connection,
    keys: impl IntoIterator<Item = String>,
    tags: &[&str],
) {
    opt_set_many_with(con, keys, &[&["TAGS"], tags].concat());
}

/// Writes each of `keys` (value `v`) through `OPT.SET key v options...`, in one pipeline.
pub fn opt_set_many_with(
    con: &mut redis::Connection,
    keys: impl IntoIterator<Item = String>,
    options: &[&str],
) {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("OPT.SET").arg(key).arg("v").arg(options).ignore();
    }
    pipe.query::<()>(con)
        .unwrap_or_else(|e| panic!("OPT.SET of many keys: {e}"));
}

/// Sends `command key` (DEL, EXISTS, ...) for each of `keys`, in one pipeline, replies ignored.
pub fn each_key(
    con: &mut redis::Connection,
    command: &str,
    keys: impl IntoIterator<Item = String>,
) {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd(command).arg(key).ignore();
    }
    pipe.query::<()>(con)
        .unwrap_or_else(|e| panic!("{command} of many keys: {e}"));
}

/// Runs `args`, which must fail, and returns the error text.
pub fn err(con: &mut redis::Connection, args: &[&str]) -> String {
    match command(con, args) {
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// Waits (up to 10 s) until db `db`'s key table is not rehashing, as `DEBUG HTSTATS` tells.
/// A rehash changes the order a scan meets the keys in, and a rehash in progress is the likely
/// cause of two FULL runs on Redis 8.6 once differing by 16 bytes (not caught in the act);
/// tests that compare two analyses wait for a table that keeps still.
pub fn wait_for_rehash_end(con: &mut redis::Connection, db: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats: String = redis::cmd("DEBUG")
            .arg("HTSTATS")
            .arg(db)
            .query(con)
            .unwrap_or_default();
        let keys_part = stats.split("[Expires HT]").next().unwrap_or_default();
        let rehashing = keys_part.contains("Hash table 1")
            || keys_part
                .lines()
                .filter_map(|l| l.trim().strip_prefix("rehashing index:"))
                .any(|v| v.trim() != "-1");
        if !rehashing {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "db {db} still rehashing:\n{stats}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the server has the command `name` (`COMMAND INFO` knows it): for tests of commands
/// that only newer servers have (VADD, MSETEX, HGETDEL...).
pub fn has_command(con: &mut redis::Connection, name: &str) -> bool {
    let info: Vec<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg(name)
        .query(con)
        .expect("COMMAND INFO");
    info.first().is_some_and(|v| *v != redis::Value::Nil)
}

/// An integer field of `INFO section` (`master_repl_offset`, `sync_partial_ok`...); -1 if absent.
pub fn info_int(con: &mut redis::Connection, section: &str, field: &str) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(con)
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

/// Runs `args` (an OPT command and its arguments) with `FORMAT JSON` and reads the reply
/// into `T`; panics, naming the command, on an error reply or JSON that does not fit.
pub fn json<T: serde::de::DeserializeOwned>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let text: String = cmd
        .arg("FORMAT")
        .arg("JSON")
        .query(con)
        .unwrap_or_else(|e| panic!("{args:?} FORMAT JSON: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?} JSON: {e}\n{text}"))
}

/// Each key's OBJECT ENCODING and MEMORY USAGE, to show that something left values as they were.
pub fn encodings_and_sizes(con: &mut redis::Connection, keys: &[&str]) -> Vec<(String, u64)> {
    keys.iter()
        .map(|k| {
            let encoding: String = redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(k)
                .query(con)
                .expect("OBJECT ENCODING");
            let bytes: u64 = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(k)
                .query(con)
                .expect("MEMORY USAGE");
            (encoding, bytes)
        })
        .collect()
}

/// `OPT.TAGINFO FORMAT JSON` of the server behind `con`: the tag index size and digest.
pub fn tag_info(con: &mut redis::Connection) -> opt_core::report::TagInfoReport {
    json(con, &["OPT.TAGINFO"])
}

/// A real Redis Cluster on loopback ports, made with `redis-cli --cluster create`; every node
/// loads the module. Stopped (every node) on drop.
pub struct Cluster {
    /// Every node, primaries first as created (roles change after a failover: see `role`).
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// `primaries` primaries, each with `replicas` replicas, every node with `config` lines.
    pub fn start(primaries: usize, replicas: usize, config: &[&str]) -> Cluster {
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            let mut lines = vec![
                "cluster-enabled yes".to_string(),
                "cluster-config-file nodes.conf".to_string(),
                "cluster-node-timeout 2000".to_string(),
            ];
            lines.extend(config.iter().map(|s| s.to_string()));
            nodes.push(Server::start_with(ServerOptions {
                config: lines,
                ..ServerOptions::default()
            }));
        }
        let mut args = vec!["--cluster".to_string(), "create".to_string()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas".into(), replicas.to_string()]);
        args.push("--cluster-yes".into());
        redis_cli(&args);
        let cluster = Cluster { nodes };
        cluster.wait_healthy();
        cluster
    }

    /// Waits until every node says `cluster_state:ok` and knows every other node, and every
    /// replica's link to its primary is up.
    pub fn wait_healthy(&self) {
        let total = self.nodes.len();
        for n in &self.nodes {
            n.wait_for("the cluster to be healthy", Duration::from_secs(30), |c| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(c)
                    .unwrap_or_default();
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(c)
                    .unwrap_or_default();
                let repl: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(c)
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && nodes.lines().filter(|l| !l.contains("handshake")).count() == total
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            });
        }
    }

    /// `master` or `slave`, as the node says now.
    pub fn role(node: &Server) -> String {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut node.conn())
            .expect("INFO replication");
        info.lines()
            .find_map(|l| l.strip_prefix("role:"))
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// The nodes that are primaries now.
    pub fn primaries(&self) -> Vec<&Server> {
        self.nodes
            .iter()
            .filter(|n| Cluster::role(n) == "master")
            .collect()
    }

    /// A primary other than `node` (the first one found).
    pub fn other_primary(&self, node: &Server) -> &Server {
        self.primaries()
            .into_iter()
            .find(|n| n.port != node.port)
            .expect("a cluster has more than one primary")
    }

    /// The slot of `key` (CLUSTER KEYSLOT).
    pub fn slot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].conn())
            .expect("CLUSTER KEYSLOT")
    }

    /// The primary that owns `key` now.
    pub fn owner(&self, key: &str) -> &Server {
        let slot = self.slot(key);
        self.primaries()
            .into_iter()
            .find(|n| {
                let ranges: Vec<(u16, u16)> = own_slot_ranges(n);
                ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .expect("a primary owns every slot")
    }

    /// Stops the node listening on `port` (SHUTDOWN NOSAVE, as [`Server::stop`]); it stays
    /// in `nodes`, stopped.
    ///
    /// # Panics
    /// If no node listens on `port`.
    pub fn stop_node(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
            .stop();
    }

    /// The replicas of `primary` now.
    pub fn replicas_of(&self, primary: &Server) -> Vec<&Server> {
        self.nodes
            .iter()
            .filter(|n| {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut n.conn())
                    .unwrap_or_default();
                info.contains(&format!("master_port:{}\r", primary.port))
            })
            .collect()
    }
}

/// The slot ranges `node` serves, from its own line of CLUSTER NODES (`myself`).
pub fn own_slot_ranges(node: &Server) -> Vec<(u16, u16)> {
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut node.conn())
        .expect("CLUSTER NODES");
    let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
        return Vec::new();
    };
    me.split_whitespace()
        .skip(8)
        .filter(|f| !f.starts_with('['))
        .filter_map(|f| match f.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => f.parse().ok().map(|s| (s, s)),
        })
        .collect()
}

/// Runs `redis-cli` (`REDIS_CLI` selects another) with `args` and no input; panics with its
/// output when it fails. Returns its standard output.
pub fn redis_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new(std::env::var("REDIS_CLI").unwrap_or("redis-cli".into()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "redis-cli {:?} failed:\n{text}{}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A small reproducible random generator (xorshift64*) for randomized tests: a fixed seed
/// makes a failure repeat, with no dependency.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is made odd).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One of `from` (not empty).
    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// The number in environment variable `name`, or `default` (seeds and step counts of
/// randomized tests).
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
