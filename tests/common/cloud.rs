//! A manager cloud for end-to-end tests: its own RabbitMQ vhost and
//! PostgreSQL database, managers as real `dmtree serve` processes, agents as
//! real `dmtree agent` processes (and the pika agent).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Server, config_with, rabbitmqctl, spawn_tied, unique};

/// A RabbitMQ vhost of its own, so clouds of parallel tests never meet.
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub fn new() -> Self {
        let name = unique("dmtree-cloud-");
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self { name }
    }

    pub fn url(&self) -> String {
        self.url_as("guest", "guest")
    }

    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("amqp://{user}:{password}@127.0.0.1:5672/{}", self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.name]).output();
    }
}

/// Timings short enough for tests: a 2 s lease.
pub const HEARTBEAT_MS: u64 = 500;
pub const MISSED: u64 = 4;

pub fn manager_config(id: &str, registry: &str, amqp: &str) -> String {
    let timings = format!("heartbeat_ms = {HEARTBEAT_MS}\nmissed = {MISSED}\nretry_ms = 3000\nrpc_timeout_ms = 3000\n");
    manager_config_with(id, registry, amqp, &timings)
}

/// A member's configuration with `extra` keys in its `[managers]` section.
pub fn manager_config_with(id: &str, registry: &str, amqp: &str, extra: &str) -> String {
    config_with(&format!(
        "[infrastructure]\nlocalhost = false\n\n[managers]\nid = \"{id}\"\nregistry = \"{registry}\"\namqp = \"{amqp}\"\n{extra}"
    ))
}

pub struct Agent {
    pub id: String,
    pub child: Child,
}

impl Agent {
    /// `dmtree agent` for `id`, with a load property and an `echo` action, plus `extra` arguments.
    pub fn start(amqp: &str, id: &str, extra: &[&str]) -> Agent {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmtree"));
        cmd.args(["agent", "--id", id, "--amqp", amqp, "--retry-ms", "300", "--property", "load=/proc/loadavg"])
            .args(["--action", "echo=echo \"$DMTREE_EXEC_DATA\""])
            .args(extra)
            .env("DMTREE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Agent { id: id.into(), child: spawn_tied(cmd) }
    }

    /// The Python agent written from asyncapi.yaml alone.
    pub fn start_pika(amqp: &str, id: &str) -> Agent {
        let python = std::env::var("DMTREE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/agents/pika_agent.py");
        let mut cmd = Command::new(python);
        cmd.args([script, "--amqp", amqp, "--id", id, "--heartbeat-ms", "300"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Agent { id: id.into(), child: spawn_tied(cmd) }
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The summary of every resource, as one member serves it.
pub async fn resources(server: &Server) -> BTreeMap<String, Value> {
    let reply = server.http().get("/tree/managers/resources?depth=2").await;
    let Some(children) = reply.body["children"].as_object() else { return BTreeMap::new() };
    children
        .iter()
        .map(|(id, node)| {
            let fields: serde_json::Map<String, Value> = node["children"]
                .as_object()
                .map(|c| c.iter().filter_map(|(k, v)| Some((k.clone(), v.get("value")?.clone()))).collect())
                .unwrap_or_default();
            (id.clone(), Value::Object(fields))
        })
        .collect()
}

pub async fn leaf(server: &Server, path: &str) -> Value {
    server.http().get(&format!("/tree/managers/{path}")).await.body["value"].clone()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every agent's resource is `up`, held by one of `managers`; returns the summary.
pub async fn all_up(via: &Server, ids: &[String], managers: &[&str], within: Duration) -> BTreeMap<String, Value> {
    eventually("every resource up on a live manager", within, || async {
        let all = resources(via).await;
        let ok = ids
            .iter()
            .all(|id| all.get(id).is_some_and(|r| r["status"] == "up" && managers.iter().any(|m| r["manager"] == *m)));
        ok.then_some(all)
    })
    .await
}

/// Each member's count of resources it holds, from its own monitoring.
pub async fn held(server: &Server) -> u64 {
    leaf(server, "monitoring/self/held").await.as_u64().unwrap_or(0)
}
