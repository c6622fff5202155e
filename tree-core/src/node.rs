//! Nodes as handlers report them: kind, value and properties.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::meta::NodeKind;
use crate::value::{Format, Value};

/// Properties a handler keeps per node. The ACL is not here: the tree owns ACLs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Props {
    pub title: Option<String>,
    /// The DMT `type`: a MIME type or DDF URI.
    #[serde(rename = "type")]
    pub mime: Option<String>,
    /// Increases on every change to the node; `0` when the handler keeps no versions.
    pub version: u64,
    pub timestamp: Option<DateTime<Utc>>,
    /// Set when the value is the last one known, not a current one (a polled
    /// supplier is unreachable): how old it is, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    /// Set for leaves, `None` for interior nodes.
    pub value: Option<Value>,
    pub props: Props,
}

impl Node {
    pub fn leaf(value: Value) -> Self {
        Self { kind: NodeKind::Leaf, value: Some(value), props: Props::default() }
    }

    pub fn interior() -> Self {
        Self { kind: NodeKind::Interior, value: None, props: Props::default() }
    }

    pub fn with_props(mut self, props: Props) -> Self {
        self.props = props;
        self
    }

    pub fn format(&self) -> Option<Format> {
        self.value.as_ref().map(Value::format)
    }

    pub fn size(&self) -> Option<u64> {
        self.value.as_ref().map(Value::size)
    }
}

/// What a write creates.
#[derive(Debug, Clone, PartialEq)]
pub enum NewNode {
    Interior,
    Leaf(Value),
}

impl NewNode {
    pub fn kind(&self) -> NodeKind {
        match self {
            NewNode::Interior => NodeKind::Interior,
            NewNode::Leaf(_) => NodeKind::Leaf,
        }
    }
}

/// A change to the `title` and `type` properties; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PropsPatch {
    pub title: Option<Option<String>>,
    pub mime: Option<Option<String>>,
}

impl PropsPatch {
    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.mime.is_none()
    }
}
