//! What a subscription asks for, parsed and checked before anything is created.

use std::time::Duration;

use dmtree_core::{DmtError, EventKind, Filter, Principal, Tree, Uri, UriPattern};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A transport and its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "lowercase")]
pub enum Transport {
    /// Read with `GET /events?subscription=ID`; the server keeps the position.
    Sse,
    /// A durable queue, bound to the topic exchange for this subscription only.
    Amqp { queue: String },
    /// Message stanzas to a JID.
    Xmpp { jid: String },
}

impl Transport {
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Amqp { .. } => "amqp",
            Transport::Xmpp { .. } => "xmpp",
        }
    }

    pub fn target(&self) -> &str {
        match self {
            Transport::Sse => "",
            Transport::Amqp { queue } => queue,
            Transport::Xmpp { jid } => jid,
        }
    }
}

/// A subscription as stored: everything needed to resume it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionSpec {
    pub id: String,
    pub owner: String,
    pub pattern: UriPattern,
    pub kinds: Vec<EventKind>,
    pub sample_ms: Option<u64>,
    /// The revision it was asked to start after.
    pub since: u64,
    #[serde(flatten)]
    pub transport: Transport,
    pub created: String,
}

impl SubscriptionSpec {
    pub fn filter(&self) -> Filter {
        Filter {
            pattern: self.pattern.clone(),
            kinds: self.kinds.clone(),
            sample: self.sample_ms.map(Duration::from_millis),
        }
    }

    pub fn principal(&self) -> Principal {
        Principal::named(&self.owner)
    }
}

/// The body of `POST /tree/subscriptions` (the CLI sends this very type).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    pub transport: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jid: Option<String>,
}

/// Which transports this server has configured.
#[derive(Debug, Clone, Copy)]
pub struct Available {
    pub amqp: bool,
    pub xmpp: bool,
}

/// Parses and checks a request; every refusal is a 4xx and nothing is created.
pub fn parse(
    tree: &Tree,
    at: &Uri,
    owner: &Principal,
    request: &Json,
    available: Available,
) -> Result<SubscriptionSpec, DmtError> {
    let bad = |reason: String| DmtError::invalid_data(at, reason);
    let Some(owner_name) = owner.name() else {
        return Err(DmtError::denied(at, owner, dmtree_core::Permission::Add));
    };
    let req: Request =
        serde_json::from_value(request.clone()).map_err(|e| bad(format!("invalid subscription: {e}")))?;
    let pattern = UriPattern::parse(&req.pattern, tree.limits())?;
    if !tree.may_read_anywhere_below(owner, &pattern.base()) {
        return Err(DmtError::denied(&pattern.base(), owner, dmtree_core::Permission::Get));
    }
    let kinds = req
        .kinds
        .iter()
        .map(|k| {
            EventKind::ALL.into_iter().find(|e| e.as_str() == k).ok_or_else(|| bad(format!("unknown event kind {k:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if req.sample_ms == Some(0) {
        return Err(bad("sample_ms must be positive".into()));
    }
    let id = match req.id {
        Some(id) if valid_id(&id) => id,
        Some(id) => return Err(bad(format!("subscription id {id:?} must be 1-64 of [A-Za-z0-9_-]"))),
        None => uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
    };
    let transport = match req.transport.as_str() {
        "sse" => Transport::Sse,
        "amqp" if !available.amqp => {
            return Err(DmtError::unsupported(at, "AMQP is not configured on this server ([push.amqp])"));
        }
        "amqp" => {
            let prefix = queue_prefix(owner_name);
            let queue = req.queue.clone().unwrap_or_else(|| format!("{prefix}{id}"));
            if !valid_queue(&queue) {
                return Err(bad(format!(
                    "queue name {queue:?} must be 1-200 of [A-Za-z0-9._:-] and not start with \"amq.\""
                )));
            }
            // A principal names queues only in its own namespace.
            if !queue.starts_with(&prefix) || queue.len() == prefix.len() {
                return Err(bad(format!("queue name {queue:?} must start with {prefix:?}, the owner's prefix")));
            }
            Transport::Amqp { queue }
        }
        "xmpp" if !available.xmpp => {
            return Err(DmtError::unsupported(at, "XMPP is not configured on this server ([push.xmpp])"));
        }
        "xmpp" => {
            let jid = req.jid.clone().ok_or_else(|| bad("an xmpp subscription needs a \"jid\"".into()))?;
            let parsed: jid::Jid = jid.parse().map_err(|e| bad(format!("invalid JID {jid:?}: {e}")))?;
            if parsed.node().is_none() {
                return Err(bad(format!("JID {jid:?} names no user")));
            }
            Transport::Xmpp { jid: parsed.to_string() }
        }
        other => return Err(bad(format!("unknown transport {other:?}; expected sse, amqp or xmpp"))),
    };
    let misplaced = match &transport {
        Transport::Amqp { .. } => req.jid.is_some().then_some("jid"),
        Transport::Xmpp { .. } => req.queue.is_some().then_some("queue"),
        Transport::Sse => req.queue.as_ref().map(|_| "queue").or(req.jid.as_ref().map(|_| "jid")),
    };
    if let Some(field) = misplaced {
        return Err(bad(format!("\"{field}\" does not apply to the {} transport", transport.name())));
    }
    Ok(SubscriptionSpec {
        id,
        owner: owner_name.to_owned(),
        pattern,
        kinds,
        sample_ms: req.sample_ms,
        since: req.since.unwrap_or_else(|| tree.events().head()),
        transport,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where the queues of `owner`'s subscriptions live.
pub fn queue_prefix(owner: &str) -> String {
    format!("dmtree.sub.{owner}.")
}

fn valid_queue(q: &str) -> bool {
    !q.is_empty()
        && q.len() <= 200
        && !q.starts_with("amq.")
        && q.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// AMQP routing key for an event URI: segments joined by `.`; `%` and `.`
/// inside a name are percent-escaped so the words stay unambiguous.
pub fn routing_key(uri: &Uri) -> String {
    let words: Vec<String> = uri.segments().map(|s| s.replace('%', "%25").replace('.', "%2E")).collect();
    words.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_escape_dots() {
        assert_eq!(routing_key(&Uri::from_key("config\0a.b\0c%d")), "config.a%2Eb.c%25d");
        assert_eq!(routing_key(&Uri::root()), "");
    }

    #[test]
    fn names() {
        assert!(
            valid_queue("dmtree.sub.alice.x1") && !valid_queue("amq.gen-x") && !valid_queue("a b") && !valid_queue("")
        );
        assert!(valid_id("s-1_a") && !valid_id("a.b") && !valid_id(""));
    }
}
