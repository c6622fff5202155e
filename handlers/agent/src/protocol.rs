//! The wire protocol between agents, managers and the coordinator: JSON
//! bodies on RabbitMQ, documented message by message in `asyncapi.yaml`.
//!
//! Every message travels through the default exchange, addressed by queue
//! name. Fencing fields: an assignment carries the coordinator's `term`;
//! everything a manager sends carries the term of the assignment it acts
//! under and its `manager_instance`; every sender numbers its messages with
//! `msg_id`, so a receiver drops duplicates and anything older.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The durable queue only the coordinator consumes.
pub const MANAGE_ME_QUEUE: &str = "dmtree.manage_me";
/// Where rejected messages end up (a fanout exchange and its queue).
pub const DEAD_LETTER_EXCHANGE: &str = "dmtree.dead";
pub const DEAD_LETTER_QUEUE: &str = "dmtree.dead";

/// A manager's inbox: agents' heartbeats and results, members' requests.
pub fn manager_queue(manager: &str) -> String {
    format!("dmtree.manager.{manager}")
}

/// What a manager does when a resource stops answering (seed 004 §5.8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Mark it `unreachable`, retry by reassigning it now and then, wait for an operator.
    #[default]
    RequireUserInput,
    /// Have its agent run the spawn command again and reapply the last configuration.
    AutoInstantiate,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequireUserInput => "require-user-input",
            Self::AutoInstantiate => "auto-instantiate",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "require-user-input" => Some(Self::RequireUserInput),
            "auto-instantiate" => Some(Self::AutoInstantiate),
            _ => None,
        }
    }
}

/// Whether the resource itself (its process) is running, as its agent sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Up,
    Down,
}

/// Agent → coordinator, on [`MANAGE_ME_QUEUE`]; repeated until assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManageMe {
    pub resource: String,
    pub resource_type: String,
    /// Random per agent process: a new nonce is a new instance.
    pub nonce: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub policy: FailurePolicy,
    /// The agent's own queue, where its assignment goes.
    pub reply_to: String,
    pub msg_id: u64,
    /// The instance this process held before (its manager died or forgot
    /// it): if a newer instance exists meanwhile, this one is told to shut down.
    #[serde(default)]
    pub instance: Option<u64>,
}

/// Coordinator → agent: which manager holds it now, under which term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub resource: String,
    /// The resource instance this assignment is for (from the registry's sequence).
    pub instance: u64,
    pub manager: String,
    pub manager_instance: u64,
    pub manager_queue: String,
    pub term: u64,
    pub coordinator: String,
    pub coordinator_instance: u64,
    pub msg_id: u64,
    pub heartbeat_ms: u64,
}

/// Agent → its manager, every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub resource: String,
    pub instance: u64,
    pub msg_id: u64,
    pub reply_to: String,
    #[serde(default)]
    pub health: Health,
    /// Changed properties (all of them when `full`).
    #[serde(default)]
    pub properties: BTreeMap<String, Json>,
    #[serde(default)]
    pub full: bool,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub writable: Vec<String>,
    /// The local rules the resource publishes (opaque here; the rule layer reads them).
    #[serde(default)]
    pub rules: Json,
}

/// What a manager asks an agent to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    Exec {
        action: String,
        #[serde(default)]
        data: Json,
    },
    Set {
        property: String,
        value: Json,
    },
    /// Run the spawn command again and reapply the last configuration.
    Respawn,
}

/// The fields every manager → agent message carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fence {
    pub resource: String,
    pub instance: u64,
    pub term: u64,
    pub manager: String,
    pub manager_instance: u64,
    pub msg_id: u64,
}

/// Everything that reaches an agent's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    Assignment(Assignment),
    Ack {
        #[serde(flatten)]
        fence: Fence,
        /// The next coordinators, in order.
        successors: Vec<String>,
    },
    Command {
        #[serde(flatten)]
        fence: Fence,
        command_id: String,
        #[serde(flatten)]
        operation: Operation,
    },
    /// A newer instance of this resource exists: the receiver must exit.
    Shutdown {
        #[serde(flatten)]
        fence: Fence,
        reason: String,
    },
    /// The manager does not hold this resource: ask to be managed again.
    Unknown {
        resource: String,
        manager: String,
        msg_id: u64,
    },
}

/// Agent → its manager, answering a [`ToAgent::Command`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    pub resource: String,
    pub instance: u64,
    pub msg_id: u64,
    pub command_id: String,
    pub ok: bool,
    #[serde(default)]
    pub output: Json,
}

/// Everything that reaches a manager's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToManager {
    Heartbeat(Heartbeat),
    /// Many heartbeats in one message (a gateway speaking for many resources).
    Heartbeats {
        items: Vec<Heartbeat>,
    },
    Result(CommandResult),
    /// From another member: the detail of a resource this manager holds.
    Detail {
        resource: String,
    },
    /// From another member: run an operation on a resource this manager holds.
    Forward {
        resource: String,
        operation: Operation,
    },
}

/// A manager's answer to [`ToManager::Detail`] or [`ToManager::Forward`],
/// sent to the request's `reply_to` with its `correlation_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub ok: bool,
    #[serde(default)]
    pub body: Json,
    /// `not_found`, `unavailable` or `refused` when not ok.
    #[serde(default)]
    pub code: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands_are_flat_json() {
        let fence = Fence {
            resource: "web-1".into(),
            instance: 7,
            term: 3,
            manager: "m2".into(),
            manager_instance: 1,
            msg_id: 9,
        };
        let cmd = ToAgent::Command {
            fence,
            command_id: "c1".into(),
            operation: Operation::Exec { action: "restart".into(), data: json!({"now": true}) },
        };
        let text = serde_json::to_value(&cmd).unwrap();
        assert_eq!(text["type"], "command");
        assert_eq!(text["op"], "exec");
        assert_eq!(text["term"], 3);
        assert_eq!(serde_json::from_value::<ToAgent>(text).unwrap(), cmd);
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        assert!(serde_json::from_value::<ToManager>(json!({"type": "nope"})).is_err());
        let hb = json!({"type": "heartbeat", "resource": "r", "instance": 1, "msg_id": 1, "reply_to": "q", "x": 1});
        assert!(serde_json::from_value::<ToManager>(hb).is_err());
        assert_eq!(FailurePolicy::parse("auto-instantiate"), Some(FailurePolicy::AutoInstantiate));
    }
}
