//! ContextEvents: `{id, timestamp, sender, type, payload}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextEvent {
    pub id: Uuid,
    pub timestamp: DateTime<Utc>,
    pub sender: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: Json,
}

/// An event as a client sends it: `id` and `timestamp` may be left to the store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incoming {
    pub id: Option<Uuid>,
    pub timestamp: Option<DateTime<Utc>>,
    pub sender: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub payload: Json,
}

/// The largest payload accepted, serialised.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// A type name: 1–128 of `[A-Za-z0-9._-]`.
pub fn valid_type(t: &str) -> bool {
    !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Incoming {
    pub fn into_event(self) -> Result<ContextEvent, String> {
        if !valid_type(&self.kind) {
            return Err(format!("type {:?} must be 1-128 of [A-Za-z0-9._-]", self.kind));
        }
        if self.sender.is_empty() || self.sender.len() > 256 {
            return Err("sender must be 1-256 bytes".into());
        }
        if self.payload.to_string().len() > MAX_PAYLOAD {
            return Err(format!("payload larger than {MAX_PAYLOAD} bytes"));
        }
        Ok(ContextEvent {
            id: self.id.unwrap_or_else(Uuid::new_v4),
            timestamp: self.timestamp.unwrap_or_else(Utc::now),
            sender: self.sender,
            kind: self.kind,
            payload: self.payload,
        })
    }
}

/// Parses a batch: a JSON array of events, or `{"events": [...]}`. The whole
/// batch is refused if any event is malformed.
pub fn parse_batch(data: &Json) -> Result<Vec<ContextEvent>, String> {
    let list = match data {
        Json::Array(items) => items,
        Json::Object(o) => {
            o.get("events").and_then(Json::as_array).ok_or("expected an array of events or {\"events\": [...]}")?
        }
        _ => return Err("expected an array of events or {\"events\": [...]}".into()),
    };
    if list.len() > 10_000 {
        return Err("at most 10000 events per batch".into());
    }
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let incoming: Incoming = serde_json::from_value(item.clone()).map_err(|e| format!("event {i}: {e}"))?;
            incoming.into_event().map_err(|e| format!("event {i}: {e}"))
        })
        .collect()
}

/// A stable id for an event derived from something else, so re-deriving it de-duplicates.
pub fn derived_id(scope: &str, source: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("dmtree:{scope}:{source}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_batches_and_refuses_malformed_events() {
        let ok = parse_batch(&json!([{"sender": "s", "type": "usage", "payload": {"cpu": 1}}])).unwrap();
        assert_eq!(ok[0].kind, "usage");
        assert_eq!(parse_batch(&json!({"events": []})).unwrap().len(), 0);
        for bad in [
            json!([{"sender": "s", "type": "has space"}]),
            json!([{"sender": "", "type": "t"}]),
            json!([{"sender": "s", "type": "t", "extra": 1}]),
            json!([{"type": "t"}]),
            json!([{"sender": "s", "type": "t", "timestamp": "yesterday"}]),
            json!({"nope": 1}),
            json!(42),
        ] {
            assert!(parse_batch(&bad).is_err(), "{bad}");
        }
        assert_eq!(derived_id("a", "b"), derived_id("a", "b"));
        assert_ne!(derived_id("a", "b"), derived_id("a", "c"));
    }
}
