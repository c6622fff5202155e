//! Runs the real `dmtree` binary for end-to-end tests, and talks to it over HTTP.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dmtree_api::auth::hash_token;
use dmtree_remote::sse::{SseFrame, SseReader};
use serde_json::Value;

pub const ADMIN: &str = "admin-test-token";
pub const ALICE: &str = "alice-test-token";

/// Whatever a test needs (top-level keys first, as TOML requires), then tokens for `admin` and `alice`.
pub fn config_with(extra: &str) -> String {
    format!(
        "{extra}\n\n[[auth.tokens]]\nprincipal = \"admin\"\nsha256 = \"{}\"\n\n[[auth.tokens]]\nprincipal = \"alice\"\nsha256 = \"{}\"\n",
        hash_token(ADMIN),
        hash_token(ALICE)
    )
}

/// Spawns a child that the kernel kills when this test process exits, even if
/// the `Server` is never dropped (a shared server lives in a static). The
/// death signal follows the spawning *thread*, so one thread that never ends spawns all.
pub fn spawn_tied(mut cmd: Command) -> Child {
    use std::os::unix::process::CommandExt as _;
    use std::sync::{LazyLock, Mutex};
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: LazyLock<Mutex<mpsc::Sender<Job>>> = LazyLock::new(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            // Runs for the whole process: the sender lives in a static.
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply, result) = mpsc::channel();
    SPAWNER.lock().expect("spawner").send((cmd, reply)).expect("spawner thread");
    result.recv().expect("spawner reply").expect("spawn dmtree")
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data: PathBuf,
    config: Option<PathBuf>,
    listen: String,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with a fresh data directory and this configuration (TOML).
    pub fn start(config: &str) -> Server {
        Self::start_at(config, "127.0.0.1:0")
    }

    /// Like [`start`](Self::start), on a fixed address (kept across restarts).
    pub fn start_at(config: &str, listen: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let path = dir.path().join("dmtree.toml");
        std::fs::write(&path, config).expect("write config");
        let mut server = Server {
            child: None,
            base: String::new(),
            data,
            config: Some(path),
            listen: listen.into(),
            _dir: Some(dir),
        };
        server.spawn();
        server
    }

    /// Starts a server with no configuration file at all (embedded defaults).
    pub fn start_bare() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut server = Server {
            child: None,
            base: String::new(),
            data,
            config: None,
            listen: "127.0.0.1:0".into(),
            _dir: Some(dir),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmtree"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(&self.listen)
            .arg("--data")
            .arg(&self.data)
            .arg("--log-format")
            .arg("json");
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        let filter = std::env::var("DMTREE_TEST_LOG_FILTER").unwrap_or_else(|_| "info".into());
        cmd.env("DMTREE_LOG", filter).stderr(Stdio::piped()).stdout(Stdio::null());
        let mut child = spawn_tied(cmd);
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        // Keep draining stderr for the server's life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"] == "dmtree listening"
                {
                    let scheme = v["fields"]["scheme"].as_str().unwrap_or("http");
                    let _ = tx.send(format!("{scheme}://{}", v["fields"]["addr"].as_str().unwrap_or_default()));
                }
                if std::env::var_os("DMTREE_TEST_LOG").is_some() {
                    eprintln!("[dmtree] {line}");
                }
            }
        });
        self.base = rx.recv_timeout(Duration::from_secs(30)).expect("dmtree did not start listening within 30 s");
        self.child = Some(child);
    }

    /// `kill -9`, then start again on the same data directory (on a new port).
    pub fn crash_and_restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts again after [`kill9`](Self::kill9), on the same data (and address, if fixed).
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn http(&self) -> Http {
        Http { base: self.base.clone(), client: reqwest::Client::new(), token: None }
    }

    pub fn as_admin(&self) -> Http {
        self.http().token(ADMIN)
    }

    pub fn as_alice(&self) -> Http {
        self.http().token(ALICE)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A small client: every call returns the status and the JSON body (or Null).
#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
    token: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Http {
    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.to_owned());
        self
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).timeout(Duration::from_secs(30));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PATCH, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Opens `/events` and returns a reader of its frames.
    pub async fn events(&self, query: &str, last_event_id: Option<u64>) -> Events {
        let mut req = self.request(reqwest::Method::GET, &format!("/events{query}")).timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.expect("events request");
        assert_eq!(resp.status().as_u16(), 200, "events stream refused");
        Events { reader: SseReader::new(Box::pin(resp.bytes_stream())) }
    }
}

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

pub struct Events {
    reader: SseReader<ByteStream>,
}

impl Events {
    /// The next frame, or `None` if none arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseFrame> {
        tokio::time::timeout(wait, self.reader.next()).await.ok().flatten()
    }

    /// The next event as JSON (panics after 10 s).
    pub async fn next_json(&mut self) -> Value {
        let frame = self.next_within(Duration::from_secs(10)).await.expect("no event within 10 s");
        serde_json::from_str(&frame.data).expect("event JSON")
    }

    /// Every event that arrives before `quiet` passes without one.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(f) = self.next_within(quiet).await {
            out.push(serde_json::from_str(&f.data).expect("event JSON"));
        }
        out
    }
}

/// Sends a request line exactly as given (HTTP clients normalise `..` away).
pub async fn raw_request(base: &str, method: &str, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The machine's RabbitMQ (`scripts/test` makes sure it runs).
pub fn amqp_url() -> String {
    std::env::var("DMTREE_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Runs `rabbitmqctl` with these arguments; panics on failure.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A name no other test run uses (exchanges and queues outlive test processes).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

pub const XMPP_DOMAIN: &str = "dmtree.test";

/// A private Prosody for one test binary: its own config, port, data and users
/// (`dmtree`, `alice`, `bob`; password = name + "pw").
pub struct Prosody {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Prosody {
    pub fn start() -> Prosody {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let root = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        std::fs::create_dir_all(dir.path().join("certs")).expect("certs dir");
        let config = format!(
            r#"-- Test-only: plain auth on loopback, running as whoever runs the tests.
run_as_root = true
daemonize = false
pidfile = "{root}/prosody.pid"
data_path = "{root}/data"
certificates = "{root}/certs"
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "smacks"; "offline"; "posix" }}
modules_disabled = {{ "s2s" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{root}/prosody.log" }} }}
VirtualHost "{XMPP_DOMAIN}"
"#
        );
        let cfg = dir.path().join("prosody.cfg.lua");
        std::fs::write(&cfg, config).expect("prosody config");
        for user in ["dmtree", "alice", "bob"] {
            let out = Command::new("prosodyctl")
                .arg("--config")
                .arg(&cfg)
                .args(["register", user, XMPP_DOMAIN, &format!("{user}pw")])
                .output()
                .expect("prosodyctl (is prosody installed? ./scripts/test installs it)");
            assert!(out.status.success(), "prosodyctl register {user}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut cmd = Command::new("prosody");
        cmd.arg("--config").arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null());
        let mut prosody = Prosody { child: Some(spawn_tied(cmd)), port, dir };
        prosody.wait_listening();
        prosody
    }

    fn wait_listening(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "prosody did not listen on {}: {}", self.port, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prosody.log")).unwrap_or_default()
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The `[push.xmpp]` section for dmtree to log in as `dmtree@dmtree.test`.
    pub fn push_config(&self) -> String {
        format!(
            "[push.xmpp]\njid = \"dmtree@{XMPP_DOMAIN}\"\npassword = \"dmtreepw\"\nserver = \"{}\"\nstarttls = false\n",
            self.server()
        )
    }

    /// Stops and starts the server (same port, same data).
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut cmd = Command::new("prosody");
        cmd.arg("--config").arg(self.dir.path().join("prosody.cfg.lua")).stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(spawn_tied(cmd));
        self.wait_listening();
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A new, empty PostgreSQL database on the machine's server (`scripts/test` starts it).
pub async fn postgres_database() -> String {
    use sqlx::Connection as _;
    let admin =
        std::env::var("DMTREE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("dmtree_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL (./scripts/test starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
    format!("{}/{name}", admin.rsplit_once('/').expect("url").0)
}

/// Stops or starts the machine's PostgreSQL cluster.
pub fn postgres(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster in /etc/postgresql");
    let out = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .output()
        .expect("pg_ctlcluster");
    assert!(out.status.success(), "pg_ctlcluster {action}: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Tokens the trees of a federation know each other by: each tree accepts all three.
pub const SITE_A: &str = "site-a-test-token";
pub const SITE_B: &str = "site-b-test-token";
pub const SITE_C: &str = "site-c-test-token";

/// A server's configuration in a federation: its instance name, the site tokens, and `extra`.
pub fn federated_config(instance: &str, extra: &str) -> String {
    let sites: String = [("site-a", SITE_A), ("site-b", SITE_B), ("site-c", SITE_C)]
        .iter()
        .map(|(p, t)| format!("\n[[auth.tokens]]\nprincipal = \"{p}\"\nsha256 = \"{}\"\n", hash_token(t)))
        .collect();
    config_with(&format!("{extra}\n\n[federation]\ninstance = \"{instance}\"\n{sites}"))
}

/// Three trees, nested: C's `./config/infra` is mounted by B at `./sites/c`
/// (from B's config file), and B's `./sites` by A at `./sites/b` (through the
/// API), each under a read-write grant to the mounting site.
pub struct Trio {
    pub a: Server,
    pub b: Server,
    pub c: Server,
}

impl Trio {
    /// `mount` adds to both mounts (e.g. `{"timeout_ms": 500, "cache_ms": 0}`); `fixed` pins B's address across restarts.
    pub async fn start(mount: Value, fixed: bool) -> Trio {
        let toml_extra: String = mount.as_object().into_iter().flatten().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let c = Server::start(&federated_config("c", ""));
        let admin_c = c.as_admin();
        let r = admin_c.put("/tree/config/infra/cpu", serde_json::json!({"value": 10})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let acl = "Get=*&Add=admin+site-b&Replace=admin+site-b&Delete=admin+site-b&Exec=admin+site-b";
        assert_eq!(admin_c.put("/tree/config/infra", serde_json::json!({"acl": acl})).await.status, 200);
        let grant = serde_json::json!({"id": "b", "principal": "site-b", "subtrees": ["./config/infra"], "rights": "read-write"});
        assert_eq!(admin_c.post("/tree/federation/grants", grant).await.status, 201);

        let b_config = federated_config(
            "b",
            &format!(
                "[[mounts]]\nid = \"c\"\nat = \"./sites/c\"\nhandler = \"remote\"\nurl = \"{}\"\nremote_uri = \"./config/infra\"\ncredentials = {{ token = \"{SITE_B}\" }}\n{toml_extra}",
                c.base
            ),
        );
        let b = if fixed { Server::start_at(&b_config, &free_address()) } else { Server::start(&b_config) };
        let admin_b = b.as_admin();
        let acl = "Get=*&Add=admin+site-a&Replace=admin+site-a&Delete=admin+site-a&Exec=admin+site-a";
        assert_eq!(admin_b.put("/tree/sites", serde_json::json!({"acl": acl})).await.status, 200);
        let grant =
            serde_json::json!({"id": "a", "principal": "site-a", "subtrees": ["./sites"], "rights": "read-write"});
        assert_eq!(admin_b.post("/tree/federation/grants", grant).await.status, 201);

        let a = Server::start(&federated_config("a", ""));
        let mut request = serde_json::json!({
            "id": "b", "at": "./sites/b", "url": b.base, "remote_uri": "./sites", "credentials": {"token": SITE_A}
        });
        if let (Some(m), Value::Object(extra)) = (request.as_object_mut(), mount) {
            m.extend(extra);
        }
        let r = a.as_admin().post("/tree/mounts", request).await;
        assert_eq!(r.status, 201, "A mounts B: {:?}", r.body);
        Trio { a, b, c }
    }
}

/// A loopback URL where nothing listens (the port was free a moment ago).
pub fn unreachable_url() -> String {
    format!("http://{}", free_address())
}

/// A benchmark knob: the variable's value, or `default` when unset or not a number.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
