//! A broker mount's configuration: how to reach the management API, and
//! the desired state (exchanges, queues, bindings, policies, links) that the
//! reconciler drives the broker toward. Desired objects are kept per kind,
//! per vhost, by name, exactly as the `config` subtree shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use thiserror::Error;

/// What happens when a link (shovel) disappears or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Mark the link failed, report it, and wait for a user to restart it.
    RequireUserInput,
    /// Recreate it, with exponential backoff.
    AutoRecreate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Exchanges,
    Queues,
    Bindings,
    Policies,
    Links,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Exchanges, Kind::Queues, Kind::Bindings, Kind::Policies, Kind::Links];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exchanges => "exchanges",
            Kind::Queues => "queues",
            Kind::Bindings => "bindings",
            Kind::Policies => "policies",
            Kind::Links => "links",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Checks a declaration of this kind, filling in defaults.
    pub fn check(self, decl: &Json) -> Result<Json, SpecError> {
        let bad = |e: serde_json::Error| SpecError(format!("{}: {e}", self.as_str()));
        Ok(match self {
            Kind::Exchanges => json!(serde_json::from_value::<Exchange>(decl.clone()).map_err(bad)?),
            Kind::Queues => json!(serde_json::from_value::<Queue>(decl.clone()).map_err(bad)?),
            Kind::Bindings => json!(serde_json::from_value::<Binding>(decl.clone()).map_err(bad)?),
            Kind::Policies => json!(serde_json::from_value::<Policy>(decl.clone()).map_err(bad)?),
            Kind::Links => {
                let link: Link = serde_json::from_value(decl.clone()).map_err(bad)?;
                link.validate()?;
                json!(link)
            }
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    #[serde(rename = "type", default = "direct")]
    pub kind: String,
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub arguments: Map<String, Json>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: Map<String, Json>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationType {
    Queue,
    Exchange,
}

impl DestinationType {
    /// The letter the management API uses in binding paths.
    pub fn letter(&self) -> &'static str {
        match self {
            DestinationType::Queue => "q",
            DestinationType::Exchange => "e",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub source: String,
    pub destination: String,
    #[serde(default = "queue")]
    pub destination_type: DestinationType,
    #[serde(default)]
    pub routing_key: String,
    #[serde(default)]
    pub arguments: Map<String, Json>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub pattern: String,
    pub definition: Map<String, Json>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default = "all")]
    pub apply_to: String,
}

/// A link between brokers: a dynamic shovel from a queue or exchange to a queue or exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub src_uri: String,
    pub src_queue: Option<String>,
    pub src_exchange: Option<String>,
    pub src_exchange_key: Option<String>,
    pub dest_uri: String,
    pub dest_queue: Option<String>,
    pub dest_exchange: Option<String>,
    /// Overrides the broker's default policy for this link.
    pub failure_policy: Option<FailurePolicy>,
}

impl Link {
    fn validate(&self) -> Result<(), SpecError> {
        let amqp = |u: &str| u.starts_with("amqp://") || u.starts_with("amqps://");
        if !amqp(&self.src_uri) || !amqp(&self.dest_uri) {
            return Err(SpecError("links: src_uri and dest_uri must be amqp:// or amqps:// URIs".into()));
        }
        if self.src_queue.is_some() == self.src_exchange.is_some() {
            return Err(SpecError("links: give exactly one of src_queue and src_exchange".into()));
        }
        if self.dest_queue.is_some() && self.dest_exchange.is_some() {
            return Err(SpecError("links: give at most one of dest_queue and dest_exchange".into()));
        }
        Ok(())
    }

    /// The shovel's runtime parameter value.
    pub fn shovel(&self) -> Json {
        let mut v = json!({"src-protocol": "amqp091", "src-uri": self.src_uri, "dest-protocol": "amqp091", "dest-uri": self.dest_uri});
        let fields = [
            ("src-queue", &self.src_queue),
            ("src-exchange", &self.src_exchange),
            ("src-exchange-key", &self.src_exchange_key),
            ("dest-queue", &self.dest_queue),
            ("dest-exchange", &self.dest_exchange),
        ];
        for (k, val) in fields {
            if let Some(val) = val {
                v[k] = val.clone().into();
            }
        }
        v
    }
}

fn yes() -> bool {
    true
}
fn direct() -> String {
    "direct".into()
}
fn queue() -> DestinationType {
    DestinationType::Queue
}
fn all() -> String {
    "all".into()
}

/// Desired objects: kind → vhost → name → declaration.
pub type Desired = BTreeMap<String, BTreeMap<String, BTreeMap<String, Json>>>;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSpec {
    /// The management API, e.g. `http://127.0.0.1:15672`.
    pub url: String,
    pub user: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub password: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub failure_policy: FailurePolicy,
    pub desired: Desired,
}

impl Default for BrokerSpec {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:15672".into(),
            user: "guest".into(),
            password: "guest".into(),
            interval_ms: 5_000,
            timeout_ms: 3_000,
            failure_policy: FailurePolicy::RequireUserInput,
            desired: Desired::new(),
        }
    }
}

#[derive(Debug, Error, PartialEq)]
#[error("{0}")]
pub struct SpecError(pub String);

impl BrokerSpec {
    pub fn from_json(json: &Json) -> Result<Self, SpecError> {
        let mut spec: Self = serde_json::from_value(json.clone()).map_err(|e| SpecError(e.to_string()))?;
        spec.validate()?;
        for (kind, vhosts) in spec.desired.iter_mut() {
            let k = Kind::parse(kind).ok_or_else(|| SpecError(format!("desired: unknown kind {kind:?}")))?;
            for decl in vhosts.values_mut().flat_map(BTreeMap::values_mut) {
                *decl = k.check(decl)?;
            }
        }
        Ok(spec)
    }

    fn validate(&self) -> Result<(), SpecError> {
        let ok = reqwest::Url::parse(&self.url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(SpecError(format!("url {:?} is not an http(s) URL", self.url)));
        }
        if !(100..=3_600_000).contains(&self.interval_ms) {
            return Err(SpecError("interval_ms must be between 100 and 3600000".into()));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(SpecError("timeout_ms must be between 100 and 60000".into()));
        }
        Ok(())
    }

    /// The connection settings as the `config/broker` subtree shows them (no password).
    pub fn settings(&self) -> Json {
        json!({
            "url": self.url, "user": self.user, "interval_ms": self.interval_ms,
            "timeout_ms": self.timeout_ms, "failure_policy": self.failure_policy,
        })
    }

    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or_default()
    }

    pub fn policy_for(&self, link: &Json) -> FailurePolicy {
        serde_json::from_value::<Link>(link.clone()).ok().and_then(|l| l.failure_policy).unwrap_or(self.failure_policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_checked_and_completed() {
        assert_eq!(Kind::Queues.check(&json!({})).unwrap()["durable"], true);
        assert_eq!(Kind::Exchanges.check(&json!({"type": "topic"})).unwrap()["type"], "topic");
        assert!(Kind::Queues.check(&json!({"durable": "yes"})).is_err());
        assert!(Kind::Bindings.check(&json!({"source": "x"})).is_err());
        let link = json!({"src_uri": "amqp://a", "src_queue": "q", "dest_uri": "amqp://b", "dest_queue": "r"});
        assert_eq!(Kind::Links.check(&link).unwrap()["src_queue"], "q");
        assert!(Kind::Links.check(&json!({"src_uri": "http://a", "src_queue": "q", "dest_uri": "amqp://b"})).is_err());
        assert!(Kind::Links.check(&json!({"src_uri": "amqp://a", "dest_uri": "amqp://b"})).is_err());
    }

    #[test]
    fn specs_are_checked() {
        assert!(BrokerSpec::from_json(&json!({})).is_ok());
        assert!(BrokerSpec::from_json(&json!({"url": "nope"})).is_err());
        assert!(BrokerSpec::from_json(&json!({"desired": {"widgets": {}}})).is_err());
        assert!(BrokerSpec::from_json(&json!({"failure_policy": "auto-recreate"})).is_ok());
        assert!(BrokerSpec::from_json(&json!({"failure_policy": "pray"})).is_err());
    }
}
