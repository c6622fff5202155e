//! Meta nodes: what a node allows. Handlers supply them; the tree enforces
//! them on every write, so a violation is an error, never a silent coercion.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::value::{Format, Value};

/// The operations a node supports (independent of who may call them: that is the ACL's job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Add,
    Delete,
    Get,
    Replace,
    Exec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Leaf,
    Interior,
}

/// DMT Admin scopes: permanent nodes cannot be deleted, automatic ones are
/// created and deleted by their handler only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Permanent,
    #[default]
    Dynamic,
    Automatic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Meta {
    pub operations: Vec<Operation>,
    /// Leaf or interior; `None` allows either.
    pub kind: Option<NodeKind>,
    /// Allowed formats; empty allows any.
    pub formats: Vec<Format>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Allowed values (JSON of the value); empty allows any.
    pub valid_values: Vec<Json>,
    /// Allowed node names; empty allows any.
    pub valid_names: Vec<String>,
    /// How many children the parent may hold of this kind of node.
    pub max_occurrence: Option<u32>,
    pub scope: Scope,
    pub description: Option<String>,
}

impl Default for Meta {
    fn default() -> Self {
        Self::permissive()
    }
}

/// Why a write does not fit a node's meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaViolation {
    NotAllowed(Operation),
    Mismatch(String),
}

impl Meta {
    /// A handler's node that is interior when read but is written as one
    /// value (a rule: its definition in, its state as children out).
    pub fn takes_value(&self) -> bool {
        self.kind.is_none() && !self.formats.is_empty() && self.operations.contains(&Operation::Replace)
    }

    /// Everything allowed: the config store's default.
    pub fn permissive() -> Self {
        Self {
            operations: vec![Operation::Add, Operation::Delete, Operation::Get, Operation::Replace],
            kind: None,
            formats: Vec::new(),
            min: None,
            max: None,
            valid_values: Vec::new(),
            valid_names: Vec::new(),
            max_occurrence: None,
            scope: Scope::Dynamic,
            description: None,
        }
    }

    /// Observed state: get only, and the handler creates and deletes nodes.
    pub fn read_only() -> Self {
        Self { operations: vec![Operation::Get], scope: Scope::Automatic, ..Self::permissive() }
    }

    /// A collection whose items are made by POST and removed by DELETE
    /// (`./mounts`, `./subscriptions`, grants): the collection takes Add,
    /// each item Delete, and what is below an item is read-only.
    pub fn collection(path: &crate::uri::Uri) -> Self {
        match path.depth() {
            0 => {
                Self { scope: Scope::Permanent, ..Self::read_only().with_operations(&[Operation::Get, Operation::Add]) }
            }
            1 => Self {
                scope: Scope::Dynamic,
                ..Self::read_only().with_operations(&[Operation::Get, Operation::Delete])
            },
            _ => Self::read_only(),
        }
    }

    pub fn with_operations(mut self, ops: &[Operation]) -> Self {
        self.operations = ops.to_vec();
        self
    }

    pub fn allows(&self, op: Operation) -> bool {
        self.operations.contains(&op)
    }

    pub fn check_operation(&self, op: Operation) -> Result<(), MetaViolation> {
        if !self.allows(op) {
            return Err(MetaViolation::NotAllowed(op));
        }
        if op == Operation::Delete && self.scope == Scope::Permanent {
            return Err(MetaViolation::NotAllowed(op));
        }
        Ok(())
    }

    pub fn check_kind(&self, kind: NodeKind) -> Result<(), MetaViolation> {
        match self.kind {
            Some(k) if k != kind => {
                Err(MetaViolation::Mismatch(format!("this node must be {k:?}, not {kind:?}").to_lowercase()))
            }
            _ => Ok(()),
        }
    }

    pub fn check_name(&self, name: &str) -> Result<(), MetaViolation> {
        if !self.valid_names.is_empty() && !self.valid_names.iter().any(|n| n == name) {
            return Err(MetaViolation::Mismatch(format!("name {name:?} is not one of {:?}", self.valid_names)));
        }
        Ok(())
    }

    pub fn check_value(&self, value: &Value) -> Result<(), MetaViolation> {
        self.check_kind(NodeKind::Leaf)?;
        if !self.formats.is_empty() && !self.formats.contains(&value.format()) {
            let allowed: Vec<_> = self.formats.iter().map(|f| f.as_str()).collect();
            return Err(MetaViolation::Mismatch(format!("format {} is not one of {allowed:?}", value.format())));
        }
        if let Some(n) = value.as_f64()
            && (self.min.is_some_and(|min| n < min) || self.max.is_some_and(|max| n > max))
        {
            return Err(MetaViolation::Mismatch(format!(
                "value {n} is outside [{}, {}]",
                self.min.map_or("-inf".into(), |m| m.to_string()),
                self.max.map_or("inf".into(), |m| m.to_string())
            )));
        }
        if !self.valid_values.is_empty() && !self.valid_values.contains(&value.to_json()) {
            return Err(MetaViolation::Mismatch(format!("value {value} is not one of the valid values")));
        }
        Ok(())
    }

    /// Checks that adding one more child keeps the parent within `max_occurrence`.
    pub fn check_occurrence(&self, existing_siblings: usize) -> Result<(), MetaViolation> {
        match self.max_occurrence {
            Some(max) if existing_siblings >= max as usize => {
                Err(MetaViolation::Mismatch(format!("at most {max} such nodes may exist here")))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_values() {
        let meta = Meta { formats: vec![Format::Int], min: Some(0.0), max: Some(100.0), ..Meta::permissive() };
        assert!(meta.check_value(&Value::Int(5)).is_ok());
        assert!(meta.check_value(&Value::Int(101)).is_err());
        assert!(meta.check_value(&Value::string("5")).is_err());
        let enumerated = Meta { valid_values: vec![json!("on"), json!("off")], ..Meta::permissive() };
        assert!(enumerated.check_value(&Value::string("on")).is_ok());
        assert!(enumerated.check_value(&Value::string("dim")).is_err());
    }

    #[test]
    fn validates_operations_kind_and_names() {
        assert!(Meta::read_only().check_operation(Operation::Replace).is_err());
        let permanent = Meta { scope: Scope::Permanent, ..Meta::permissive() };
        assert!(permanent.check_operation(Operation::Delete).is_err());
        let interior = Meta { kind: Some(NodeKind::Interior), ..Meta::permissive() };
        assert!(interior.check_value(&Value::Int(1)).is_err());
        let named = Meta { valid_names: vec!["a".into()], ..Meta::permissive() };
        assert!(named.check_name("b").is_err());
        let bounded = Meta { max_occurrence: Some(2), ..Meta::permissive() };
        assert!(bounded.check_occurrence(1).is_ok() && bounded.check_occurrence(2).is_err());
    }
}
