//! What a ContextStore is told to do. Each entry is a JSON leaf under
//! `./contextstore/config/<section>/<name>`, checked when written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::event::valid_type;

/// Registers the store with the tree: events matching `pattern` become ContextEvents of `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub pattern: String,
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(rename = "type")]
    pub kind: String,
    /// Names for the segments the pattern's `*`s match, in order: they become payload fields.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Who may read what is derived from these events (aggregates, SLA state,
    /// queries), as an ACL whose `Get` counts. Default: the tree's ACLs over
    /// every node the pattern may match, so derived data is never more open
    /// than its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }
}

/// A context handler (the IContextHandler idea): takes events of one type, keeps state, emits events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Handler {
    /// count, sum, avg, min, max of `value` per key per tumbling window.
    Aggregate {
        input: String,
        keys: Vec<String>,
        value: String,
        window_s: u64,
        #[serde(default)]
        lateness_s: u64,
    },
    /// A violation when `value op threshold` has held for `duration_s`; a recovery when it stops.
    Threshold { input: String, keys: Vec<String>, value: String, op: Op, threshold: f64, duration_s: u64 },
    /// Copies of events of the listed types, with only the listed payload fields, as type `output`.
    Filter {
        types: Vec<String>,
        #[serde(default)]
        fields: Vec<String>,
        output: String,
    },
}

impl Handler {
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            Handler::Aggregate { input, .. } | Handler::Threshold { input, .. } => vec![input],
            Handler::Filter { types, .. } => types.iter().map(String::as_str).collect(),
        }
    }
}

/// Garbage collection for one event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub max_age_s: Option<u64>,
    pub max_count: Option<u64>,
}

/// Forwarding chosen types to another ContextStore (its `ingest` exec node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Propagation {
    /// Over REST: the other dmtree, e.g. `http://10.0.0.2:7878`.
    pub url: Option<String>,
    /// Over XMPP: the other dmtree's JID (which lists ours in `xmpp_senders`).
    pub jid: Option<String>,
    /// Where its ContextStore is mounted.
    #[serde(default = "default_mount")]
    pub mount: String,
    pub token: Option<String>,
    pub types: Vec<String>,
}

fn default_mount() -> String {
    "./contextstore".into()
}

/// Everything, by section and name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub subscriptions: BTreeMap<String, Subscription>,
    pub handlers: BTreeMap<String, Handler>,
    pub retention: BTreeMap<String, Retention>,
    pub propagation: BTreeMap<String, Propagation>,
}

pub const SECTIONS: [&str; 4] = ["subscriptions", "handlers", "retention", "propagation"];

fn field_names(names: &[String], what: &str) -> Result<(), String> {
    if let Some(bad) = names.iter().find(|n| n.is_empty() || n.len() > 64) {
        return Err(format!("{what} {bad:?} must be 1-64 bytes"));
    }
    Ok(())
}

impl Config {
    /// Parses and checks one entry; on success, sets it.
    pub fn set(&mut self, section: &str, name: &str, body: &Json) -> Result<(), String> {
        if !valid_type(name) {
            return Err(format!("name {name:?} must be 1-128 of [A-Za-z0-9._-]"));
        }
        let parse_err = |e: serde_json::Error| format!("invalid {section} entry: {e}");
        match section {
            "subscriptions" => {
                let s: Subscription = serde_json::from_value(body.clone()).map_err(parse_err)?;
                if !valid_type(&s.kind) {
                    return Err(format!("type {:?} must be 1-128 of [A-Za-z0-9._-]", s.kind));
                }
                field_names(&s.fields, "field")?;
                if let Some(acl) = &s.acl {
                    acl.parse::<dmtree_core::Acl>().map_err(|e| e.to_string())?;
                }
                crate::feed::check(&s, &dmtree_core::UriLimits::default())?;
                self.subscriptions.insert(name.into(), s);
            }
            "handlers" => {
                let h: Handler = serde_json::from_value(body.clone()).map_err(parse_err)?;
                check_handler(&h)?;
                self.handlers.insert(name.into(), h);
            }
            "retention" => {
                let r: Retention = serde_json::from_value(body.clone()).map_err(parse_err)?;
                if r.max_age_s == Some(0) || r.max_count == Some(0) || (r.max_age_s.is_none() && r.max_count.is_none())
                {
                    return Err("retention needs max_age_s and/or max_count, both positive".into());
                }
                self.retention.insert(name.into(), r);
            }
            "propagation" => {
                let p: Propagation = serde_json::from_value(body.clone()).map_err(parse_err)?;
                match (&p.url, &p.jid) {
                    (Some(url), None) => {
                        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid url {url:?}: {e}"))?;
                        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                            return Err(format!("url {url:?} must be http(s)://host[:port]"));
                        }
                    }
                    (None, Some(jid)) => {
                        let (local, domain) = jid.split_once('@').unwrap_or_default();
                        if local.is_empty() || domain.is_empty() || jid.chars().any(char::is_whitespace) {
                            return Err(format!("jid {jid:?} must be user@domain"));
                        }
                    }
                    _ => return Err("give either url (REST) or jid (XMPP)".into()),
                }
                if p.types.is_empty() || p.types.iter().any(|t| !valid_type(t)) {
                    return Err("types must list valid event types".into());
                }
                self.propagation.insert(name.into(), p);
            }
            other => return Err(format!("unknown section {other:?}")),
        }
        Ok(())
    }

    pub fn remove(&mut self, section: &str, name: &str) -> bool {
        match section {
            "subscriptions" => self.subscriptions.remove(name).is_some(),
            "handlers" => self.handlers.remove(name).is_some(),
            "retention" => self.retention.remove(name).is_some(),
            "propagation" => self.propagation.remove(name).is_some(),
            _ => false,
        }
    }

    /// The configuration as JSON, by section then name.
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or_default()
    }
}

fn check_handler(h: &Handler) -> Result<(), String> {
    match h {
        Handler::Aggregate { input, keys, value, window_s, .. } => {
            if *window_s == 0 {
                return Err("window_s must be positive".into());
            }
            if !valid_type(input) || value.is_empty() {
                return Err("input must be a type and value a payload field".into());
            }
            field_names(keys, "key")
        }
        Handler::Threshold { input, keys, value, duration_s, threshold, .. } => {
            if !valid_type(input) || value.is_empty() || !threshold.is_finite() {
                return Err("input must be a type, value a payload field, threshold a number".into());
            }
            if *duration_s > 365 * 86_400 {
                return Err("duration_s is too long".into());
            }
            field_names(keys, "key")
        }
        Handler::Filter { types, fields, output } => {
            if types.is_empty() || types.iter().any(|t| !valid_type(t)) || !valid_type(output) {
                return Err("types and output must be event types".into());
            }
            if types.contains(output) {
                return Err("output must differ from the types it filters (no loops)".into());
            }
            field_names(fields, "field")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_entries() {
        let mut c = Config::default();
        let agg = json!({"kind": "aggregate", "input": "usage", "keys": ["user"], "value": "cpu", "window_s": 3600});
        c.set("handlers", "usage", &agg).unwrap();
        let zero = json!({"kind": "aggregate", "input": "usage", "keys": ["user"], "value": "cpu", "window_s": 0});
        assert!(c.set("handlers", "bad", &zero).unwrap_err().contains("window_s"));
        assert!(c.set("handlers", "bad", &json!({"kind": "magic"})).is_err());
        assert!(c.set("retention", "usage", &json!({})).is_err());
        assert!(c.set("propagation", "p", &json!({"url": "not a url", "types": ["usage"]})).is_err());
        c.set("propagation", "p", &json!({"url": "http://127.0.0.1:1", "types": ["usage"]})).unwrap();
        c.set("propagation", "x", &json!({"jid": "store-b@example.org", "types": ["usage"]})).unwrap();
        assert!(c.set("propagation", "x", &json!({"jid": "no-domain", "types": ["usage"]})).is_err());
        let both = json!({"url": "http://127.0.0.1:1", "jid": "b@example.org", "types": ["usage"]});
        assert!(c.set("propagation", "x", &both).is_err(), "one transport per target");
        assert!(c.set("propagation", "x", &json!({"types": ["usage"]})).is_err());
        assert!(c.set("subscriptions", "bad name", &json!({"pattern": "./a", "type": "t"})).is_err());
        assert!(c.set("filters", "x", &json!({})).is_err());
        assert!(Op::Ge.holds(1.0, 1.0) && !Op::Gt.holds(1.0, 1.0));
        assert_eq!(c.to_json()["handlers"]["usage"]["window_s"], 3600);
    }
}
