//! A private Prosody (XMPP server) per test binary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, spawn_tied};

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
