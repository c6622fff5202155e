//! A [`Resource`] for a process that has no agent of its own (`dmtree
//! agent`): properties read from files or commands, actions mapped to shell
//! commands, writable properties mapped to files, and an optional spawn
//! command the agent supervises (and runs again on `respawn`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value as Json, json};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::agent::Resource;
use crate::protocol::Health;

/// Where a property's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Shell(String),
}

impl Source {
    /// `sh:COMMAND` runs a command; anything else is a file path.
    pub fn parse(text: &str) -> Self {
        match text.strip_prefix("sh:") {
            Some(cmd) => Self::Shell(cmd.into()),
            None => Self::File(text.into()),
        }
    }
}

#[derive(Debug, Default)]
pub struct Wrapped {
    pub properties: Vec<(String, Source)>,
    pub actions: Vec<(String, String)>,
    pub writable: Vec<(String, PathBuf)>,
    pub spawn: Option<String>,
    child: Mutex<Option<Child>>,
    /// The last value set for each writable property, reapplied after a respawn.
    config: Mutex<BTreeMap<String, Json>>,
    restarts: std::sync::atomic::AtomicU64,
}

/// The supervised process dies with its agent, even a `kill -9`ed one (Linux).
fn die_with_agent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// How long a property command or an action may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A number when it reads as one, else the trimmed text.
fn reading(text: &str) -> Json {
    let text = text.trim();
    let first = text.split_whitespace().next().unwrap_or_default();
    match (text.parse::<f64>(), first.parse::<f64>()) {
        (Ok(n), _) | (_, Ok(n)) => json!(n),
        _ => json!(text),
    }
}

async fn shell(cmd: &str, data: Option<&Json>) -> Result<std::process::Output, String> {
    let mut command = Command::new("sh");
    command.arg("-c").arg(cmd).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(data) = data {
        command.env("DMTREE_EXEC_DATA", data.to_string());
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("cannot run {cmd:?}: {e}")),
        Err(_) => Err(format!("{cmd:?} did not finish within {}s", COMMAND_TIMEOUT.as_secs())),
    }
}

impl Wrapped {
    pub fn new(
        properties: Vec<(String, Source)>,
        actions: Vec<(String, String)>,
        writable: Vec<(String, PathBuf)>,
        spawn: Option<String>,
    ) -> Self {
        Self { properties, actions, writable, spawn, ..Default::default() }
    }

    /// Starts the spawn command (if any), replacing a running one.
    pub async fn start(&self) -> Result<Option<u32>, String> {
        let Some(cmd) = &self.spawn else { return Ok(None) };
        let mut slot = self.child.lock().await;
        if let Some(mut old) = slot.take() {
            let _ = old.kill().await;
        }
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("exec {cmd}")).stdin(Stdio::null()).kill_on_drop(true);
        die_with_agent(&mut command);
        let child = command.spawn().map_err(|e| format!("cannot spawn {cmd:?}: {e}"))?;
        let pid = child.id();
        *slot = Some(child);
        Ok(pid)
    }

    /// Stops the supervised process (on shutdown).
    pub async fn stop(&self) {
        if let Some(mut child) = self.child.lock().await.take() {
            let _ = child.kill().await;
        }
    }

    async fn read(source: &Source) -> Option<Json> {
        match source {
            Source::File(path) => tokio::fs::read_to_string(path).await.ok().map(|t| reading(&t)),
            Source::Shell(cmd) => {
                let out = shell(cmd, None).await.ok().filter(|o| o.status.success())?;
                Some(reading(&String::from_utf8_lossy(&out.stdout)))
            }
        }
    }
}

#[async_trait]
impl Resource for Wrapped {
    async fn properties(&self) -> BTreeMap<String, Json> {
        let mut props = BTreeMap::new();
        for (name, source) in &self.properties {
            if let Some(v) = Self::read(source).await {
                props.insert(name.clone(), v);
            }
        }
        for (name, path) in &self.writable {
            if let Some(v) = Self::read(&Source::File(path.clone())).await {
                props.insert(name.clone(), v);
            }
        }
        if self.spawn.is_some() {
            let pid = self.child.lock().await.as_ref().and_then(|c| c.id());
            props.insert("pid".into(), json!(pid.unwrap_or(0)));
            props.insert("restarts".into(), json!(self.restarts.load(std::sync::atomic::Ordering::Relaxed)));
        }
        props
    }

    fn actions(&self) -> Vec<String> {
        let mut names: Vec<String> = self.actions.iter().map(|(n, _)| n.clone()).collect();
        if self.spawn.is_some() && !names.iter().any(|n| n == "restart") {
            names.push("restart".into());
        }
        names
    }

    fn writable(&self) -> Vec<String> {
        self.writable.iter().map(|(n, _)| n.clone()).collect()
    }

    async fn health(&self) -> Health {
        if self.spawn.is_none() {
            return Health::Up;
        }
        match self.child.lock().await.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Health::Up,
            _ => Health::Down,
        }
    }

    async fn exec(&self, action: &str, data: &Json) -> Result<Json, String> {
        let Some((_, cmd)) = self.actions.iter().find(|(n, _)| n == action) else {
            return match action {
                "restart" if self.spawn.is_some() => self.respawn().await,
                _ => Err(format!("no action {action}")),
            };
        };
        let out = shell(cmd, Some(data)).await?;
        let body = json!({
            "exit": out.status.code(),
            "stdout": String::from_utf8_lossy(&out.stdout),
            "stderr": String::from_utf8_lossy(&out.stderr),
        });
        if out.status.success() { Ok(body) } else { Err(body.to_string()) }
    }

    async fn set(&self, property: &str, value: &Json) -> Result<(), String> {
        let Some((_, path)) = self.writable.iter().find(|(n, _)| n == property) else {
            return Err(format!("{property} is not writable"));
        };
        let text = match value {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        tokio::fs::write(path, text).await.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.config.lock().await.insert(property.into(), value.clone());
        Ok(())
    }

    async fn respawn(&self) -> Result<Json, String> {
        let pid = self.start().await?.ok_or("this resource has no spawn command")?;
        self.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = self.config.lock().await.clone();
        for (name, value) in &config {
            self.set(name, value).await?;
        }
        Ok(json!({ "pid": pid, "reapplied": config.len() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_numbers_when_they_can_be() {
        assert_eq!(reading("0.52 0.40 0.33 1/123 4567\n"), json!(0.52));
        assert_eq!(reading(" ready \n"), json!("ready"));
        assert_eq!(Source::parse("sh:echo 1"), Source::Shell("echo 1".into()));
        assert_eq!(Source::parse("/proc/loadavg"), Source::File("/proc/loadavg".into()));
    }

    #[tokio::test]
    async fn a_spawned_process_is_supervised_and_respawned_with_its_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let level = dir.path().join("level");
        let w = Wrapped::new(vec![], vec![], vec![("level".into(), level.clone())], Some("sleep 30".into()));
        w.start().await.unwrap();
        assert_eq!(w.health().await, Health::Up);
        w.set("level", &json!(7)).await.unwrap();
        w.stop().await;
        assert_eq!(w.health().await, Health::Down);
        std::fs::remove_file(&level).unwrap();
        w.respawn().await.unwrap();
        assert_eq!(w.health().await, Health::Up);
        assert_eq!(std::fs::read_to_string(&level).unwrap(), "7", "the last configuration is reapplied");
        assert_eq!(w.properties().await["restarts"], json!(1));
        w.stop().await;
    }
}
