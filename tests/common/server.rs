//! The real `dmtree` binary as a child process: configuration, start, kill -9, restart.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use dmtree_api::auth::hash_token;
use serde_json::Value;

use super::http::Http;

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
