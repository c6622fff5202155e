//! The meta-object a manager holds for each resource, kept small: a
//! manager is meant to hold 100 000 of them in well under 256 MB. Strings
//! that repeat across resources (owners, types, reply queues, property
//! names) are interned; statuses are static; properties are a sorted vector.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use dmtree_agent::protocol::FailurePolicy;
use parking_lot::Mutex;
use serde_json::{Value as Json, json};

use crate::registry::ResourceRow;

/// Statuses a resource goes through, as shown under `resources/<id>/status`.
pub const ASSIGNED: &str = "assigned";
pub const UP: &str = "up";
pub const DOWN: &str = "down";
pub const UNREACHABLE: &str = "unreachable";

pub fn status(text: &str) -> &'static str {
    match text {
        UP => UP,
        DOWN => DOWN,
        UNREACHABLE => UNREACHABLE,
        _ => ASSIGNED,
    }
}

/// Shares one allocation among equal strings. Entries are never freed: the
/// set is bounded by the distinct owners, types, queues and property names.
#[derive(Default)]
pub struct Interner(Mutex<HashSet<Arc<str>>>);

impl Interner {
    pub fn get(&self, text: &str) -> Arc<str> {
        let mut set = self.0.lock();
        match set.get(text) {
            Some(s) => s.clone(),
            None => {
                let s: Arc<str> = Arc::from(text);
                set.insert(s.clone());
                s
            }
        }
    }
}

/// Properties sorted by name.
#[derive(Debug, Clone, Default)]
pub struct Properties(Vec<(Arc<str>, Json)>);

impl Properties {
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(name)).ok().map(|i| &self.0[i].1)
    }

    /// Sets `name`; the old value if there was one.
    pub fn set(&mut self, name: Arc<str>, value: Json) -> Option<Json> {
        match self.0.binary_search_by(|(k, _)| (**k).cmp(&name)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.0.retain(|(k, _)| keep(k));
    }

    pub fn to_json(&self) -> Json {
        Json::Object(self.0.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    pub fn shrink(&mut self) {
        self.0.shrink_to_fit();
    }
}

#[derive(Debug, Clone)]
pub struct Held {
    pub instance: u64,
    /// The term of the assignment this manager holds it under.
    pub term: u64,
    pub last_msg: u64,
    pub last_heartbeat: Instant,
    pub owner: Arc<str>,
    pub kind: Arc<str>,
    pub reply_to: Arc<str>,
    pub status: &'static str,
    pub policy: FailurePolicy,
    /// A resource inside this manager (its host): no agent, no heartbeats.
    pub local: bool,
    pub properties: Properties,
    pub actions: Vec<String>,
    pub writable: Vec<String>,
    pub rules: Json,
}

impl Held {
    pub fn from_row(row: &ResourceRow, strings: &Interner) -> Self {
        Self {
            instance: row.instance,
            term: row.term,
            last_msg: 0,
            // A grace period: the agent learns of the assignment just now.
            last_heartbeat: Instant::now(),
            owner: strings.get(&row.owner),
            kind: strings.get(&row.kind),
            reply_to: strings.get(&row.reply_to),
            status: status(&row.status),
            policy: FailurePolicy::parse(&row.policy).unwrap_or_default(),
            local: row.pinned,
            properties: Properties::default(),
            actions: Vec::new(),
            writable: Vec::new(),
            rules: Json::Null,
        }
    }

    /// Replaces the properties wholesale (`full`) or in part; returns the
    /// changed ones, each with whether it is new.
    pub fn update_properties(
        &mut self,
        full: bool,
        props: BTreeMap<String, Json>,
        strings: &Interner,
    ) -> Vec<(Arc<str>, Json, bool)> {
        if full {
            self.properties.retain(|k| props.contains_key(k));
        }
        let mut changed = Vec::new();
        for (k, v) in props {
            if self.properties.get(&k) == Some(&v) {
                continue;
            }
            let name = strings.get(&k);
            let added = self.properties.set(name.clone(), v.clone()).is_none();
            changed.push((name, v, added));
        }
        if !changed.is_empty() {
            self.properties.shrink();
        }
        changed
    }

    /// The detail served under `resources/<id>`: properties, actions, rules.
    pub fn detail(&self) -> Json {
        let names = |list: &[String], v: &str| -> serde_json::Map<String, Json> {
            list.iter().map(|a| (a.clone(), json!(v))).collect()
        };
        json!({
            "properties": self.properties.to_json(),
            "actions": names(&self.actions, "exec"),
            "writable": names(&self.writable, "replace"),
            "rules": { "published": self.rules },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_stay_sorted_and_report_changes() {
        let strings = Interner::default();
        let row = ResourceRow {
            id: "r".into(),
            kind: "service".into(),
            owner: "guest".into(),
            manager: None,
            manager_instance: None,
            status: "up".into(),
            endpoint: String::new(),
            instance: 1,
            nonce: String::new(),
            reply_to: "q".into(),
            term: 1,
            policy: "auto-instantiate".into(),
            pinned: false,
            updated: 0,
        };
        let mut h = Held::from_row(&row, &strings);
        assert_eq!((h.status, h.policy), (UP, FailurePolicy::AutoInstantiate));
        let props = |pairs: &[(&str, i64)]| pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        assert_eq!(h.update_properties(true, props(&[("b", 1), ("a", 2)]), &strings).len(), 2);
        let changed = h.update_properties(false, props(&[("a", 2), ("c", 3)]), &strings);
        assert_eq!(changed.len(), 1, "only c is new");
        assert_eq!(h.properties.to_json(), json!({"a": 2, "b": 1, "c": 3}));
        h.update_properties(true, props(&[("c", 4)]), &strings);
        assert_eq!(h.properties.to_json(), json!({"c": 4}), "a full heartbeat drops what it omits");
        assert!(Arc::ptr_eq(&strings.get("guest"), &h.owner), "interned");
    }
}
