//! `[managers]`: the manager role's configuration, checked once at start.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagersConfig {
    /// Serve `./managers` (a one-member cloud on SQLite when nothing else is set).
    pub enabled: bool,
    /// This member's id: a tree segment, unique in the cloud.
    pub id: String,
    /// `postgres://…` for a cloud; default: `sqlite://<data_dir>/managers.db`.
    pub registry: Option<String>,
    /// RabbitMQ for agents and members; without it only the local host is managed.
    pub amqp: Option<String>,
    /// The REST address other members and operators know this member by.
    pub endpoint: Option<String>,
    /// Member lease renewal and agent heartbeat interval.
    pub heartbeat_ms: u64,
    /// Heartbeats missed before a member's lease or a resource is given up.
    pub missed: u32,
    /// At most this many resources per member.
    pub capacity: u64,
    /// How often an unreachable resource is reassigned, to retry it.
    pub retry_ms: u64,
    /// How long a forwarded read or a command may take.
    pub rpc_timeout_ms: u64,
    /// How many successors to publish.
    pub successors: usize,
    /// Register this server's host as a resource of its own.
    pub local_host: bool,
    /// AMQP users whose member-to-member requests are accepted (default: the user of `amqp`).
    pub manager_users: Vec<String>,
    /// Declare Manage Me and the inboxes as quorum queues (for a RabbitMQ cluster).
    pub quorum_queues: bool,
}

impl Default for ManagersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            id: "local".into(),
            registry: None,
            amqp: None,
            endpoint: None,
            heartbeat_ms: 1000,
            missed: 3,
            capacity: 100_000,
            retry_ms: 10_000,
            rpc_timeout_ms: 5_000,
            successors: 3,
            local_host: true,
            manager_users: Vec::new(),
            quorum_queues: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid [managers] section: {0}")]
pub struct ConfigError(pub String);

/// The validated settings the cloud runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub id: String,
    pub registry: String,
    pub amqp: Option<String>,
    pub endpoint: String,
    pub heartbeat: Duration,
    pub missed: u32,
    pub capacity: u64,
    pub retry: Duration,
    pub rpc_timeout: Duration,
    pub successors: usize,
    pub local_host: bool,
    pub manager_users: Vec<String>,
    pub quorum_queues: bool,
}

impl Settings {
    /// A member's lease: `missed` heartbeats.
    pub fn lease(&self) -> Duration {
        self.heartbeat * self.missed
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl ManagersConfig {
    pub fn settings(&self, default_registry: String, default_endpoint: String) -> Result<Settings, ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.into()));
        if !valid_id(&self.id) {
            return bad("id must be 1-64 characters of letters, digits, '-', '_' or '.'");
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms > 60_000 {
            return bad("heartbeat_ms must be between 1 and 60000");
        }
        if !(2..=100).contains(&self.missed) {
            return bad("missed must be between 2 and 100");
        }
        if self.capacity == 0 || self.rpc_timeout_ms == 0 || self.retry_ms == 0 {
            return bad("capacity, retry_ms and rpc_timeout_ms must be positive");
        }
        let registry = self.registry.clone().unwrap_or(default_registry);
        if !["postgres://", "postgresql://", "sqlite:"].iter().any(|p| registry.starts_with(p)) {
            return bad("registry must be a postgres:// or sqlite: URL");
        }
        if registry.starts_with("postgres") && self.amqp.is_none() {
            return bad("a cloud on PostgreSQL needs `amqp`, the broker its members and agents share");
        }
        let mut manager_users = self.manager_users.clone();
        if let Some(url) = &self.amqp {
            let uri: lapin::uri::AMQPUri = url.parse().map_err(|e| ConfigError(format!("amqp: {e}")))?;
            if manager_users.is_empty() {
                manager_users.push(uri.authority.userinfo.username);
            }
        }
        Ok(Settings {
            id: self.id.clone(),
            registry,
            amqp: self.amqp.clone(),
            endpoint: self.endpoint.clone().unwrap_or(default_endpoint),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            missed: self.missed,
            capacity: self.capacity,
            retry: Duration::from_millis(self.retry_ms),
            rpc_timeout: Duration::from_millis(self.rpc_timeout_ms),
            successors: self.successors.clamp(1, 16),
            local_host: self.local_host,
            manager_users,
            quorum_queues: self.quorum_queues,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: ManagersConfig) -> Result<Settings, ConfigError> {
        c.settings("sqlite://x.db".into(), "http://127.0.0.1:7878".into())
    }

    #[test]
    fn defaults_are_a_one_member_cloud() {
        let s = check(ManagersConfig::default()).unwrap();
        assert_eq!((s.id.as_str(), s.registry.as_str()), ("local", "sqlite://x.db"));
        assert_eq!(s.lease(), Duration::from_secs(3));
    }

    #[test]
    fn bad_sections_are_refused_with_a_reason() {
        let cases = [
            ManagersConfig { id: "a/b".into(), ..Default::default() },
            ManagersConfig { heartbeat_ms: 0, ..Default::default() },
            ManagersConfig { missed: 1, ..Default::default() },
            ManagersConfig { registry: Some("mysql://x".into()), ..Default::default() },
            ManagersConfig { registry: Some("postgres://x".into()), ..Default::default() },
            ManagersConfig { amqp: Some("http://x".into()), ..Default::default() },
        ];
        for c in cases {
            let e = check(c).unwrap_err();
            assert!(e.to_string().starts_with("invalid [managers] section"), "{e}");
        }
    }
}
