//! What requests to the tree are made of: the tree's configuration, the caller,
//! preconditions, write contents and outcomes, read views and field selections,
//! and the internal shape of a write operation.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::acl::{Acl, Principal};
use crate::error::{DmtError, Result};
use crate::event::EventLogConfig;
use crate::mount::Mount;
use crate::node::{Node, PropsPatch};
use crate::uri::{Uri, UriLimits};
use crate::value::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TreeConfig {
    pub uri_limits: UriLimits,
    /// How long a write waits for an overlapping session before "concurrent access".
    #[serde(with = "millis")]
    pub lock_timeout: Duration,
    /// Sessions unused this long are rolled back and closed.
    #[serde(with = "millis")]
    pub session_idle_timeout: Duration,
    /// The most nodes one depth read may return.
    pub max_read_nodes: usize,
    /// The most nodes one transaction may write in the config store (a copy
    /// or rename counts every node it moves; an atomic session, all of its writes).
    pub max_write_nodes: usize,
    /// The most sessions one principal may hold open at once.
    pub max_sessions_per_principal: usize,
    pub events: EventLogConfig,
}

impl Default for TreeConfig {
    fn default() -> Self {
        Self {
            uri_limits: UriLimits::default(),
            lock_timeout: Duration::from_secs(5),
            session_idle_timeout: Duration::from_secs(300),
            max_read_nodes: 100_000,
            max_write_nodes: crate::nodemap::MAX_WRITE_NODES,
            max_sessions_per_principal: 16,
            events: EventLogConfig::default(),
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Who calls, and in which session.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub principal: &'a Principal,
    pub session: Option<&'a str>,
}

impl<'a> Caller<'a> {
    pub fn new(principal: &'a Principal) -> Self {
        Self { principal, session: None }
    }

    pub fn in_session(mut self, session: Option<&'a str>) -> Self {
        self.session = session;
        self
    }
}

/// Entity versions for conditional writes; `Any` is `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versions {
    Any,
    List(Vec<u64>),
}

impl Versions {
    pub(super) fn matches(&self, version: Option<u64>) -> bool {
        match (self, version) {
            (_, None) => false,
            (Versions::Any, Some(_)) => true,
            (Versions::List(list), Some(v)) => v != 0 && list.contains(&v),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Precondition {
    pub if_match: Option<Versions>,
    pub if_none_match: Option<Versions>,
}

impl Precondition {
    pub(super) fn check(&self, uri: &Uri, node: Option<&Node>) -> Result<()> {
        let version = node.map(|n| n.props.version);
        if let Some(m) = &self.if_match
            && !m.matches(version)
        {
            return Err(DmtError::precondition(uri, "If-Match does not match the current version"));
        }
        if let Some(m) = &self.if_none_match
            && m.matches(version)
        {
            return Err(DmtError::precondition(uri, "If-None-Match matches the current version"));
        }
        Ok(())
    }
}

/// What a write puts at a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Leaf(Value),
    /// An interior node with exactly these children.
    Interior(Vec<(String, Content)>),
}

#[derive(Debug, Clone, Default)]
pub struct Write {
    pub content: Option<Content>,
    pub props: PropsPatch,
    /// `Some(None)` clears the node's own ACL.
    pub acl: Option<Option<Acl>>,
    pub precondition: Precondition,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    pub uri: Uri,
    pub created: bool,
    pub version: u64,
}

/// A node as read through the tree: what the handler reports, plus the ACL.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub uri: Uri,
    /// `None` when the caller may list the node but not read it.
    pub node: Option<Node>,
    pub acl: Option<Arc<Acl>>,
    pub effective_acl: Arc<Acl>,
    /// Present for interior nodes read with depth > 0.
    pub children: Option<Vec<NodeView>>,
}

/// RESTCONF `fields`: the children a read returns, by name; a name mapped to
/// `None` keeps its whole subtree. Applied while reading, so a read costs what
/// it returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection(std::collections::BTreeMap<String, Option<Selection>>);

impl Selection {
    /// From child paths (`a`, `b/c`): `a` whole, and only `c` below `b`.
    pub fn from_paths(paths: &[Vec<String>]) -> Self {
        let mut sel = Selection::default();
        for path in paths {
            sel.add(path);
        }
        sel
    }

    fn add(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else { return };
        let entry = self.0.entry(first.clone()).or_insert_with(|| Some(Selection::default()));
        if rest.is_empty() {
            *entry = None;
        } else if let Some(inner) = entry {
            inner.add(rest);
        }
    }

    /// `None`: the child is not selected; `Some(None)`: all of it.
    pub(super) fn child(&self, name: &str) -> Option<Option<&Selection>> {
        self.0.get(name).map(Option::as_ref)
    }
}

/// A write, with absolute URIs. Owned, because it runs in its own task.
pub(super) enum WriteOp {
    Put(Uri, Write),
    Add(Uri, Content, Write),
    Patch(Uri, Vec<(Uri, Value)>, Precondition),
    Delete(Uri, Precondition),
    Rename(Uri, String),
    Copy(Uri, Uri),
    Exec(Uri, Option<Json>),
    Create(Uri, Json),
}

impl WriteOp {
    /// The subtree the operation changes: what an implicit call locks.
    pub(super) fn scope(&self) -> Uri {
        match self {
            WriteOp::Put(u, _)
            | WriteOp::Add(u, ..)
            | WriteOp::Patch(u, ..)
            | WriteOp::Delete(u, _)
            | WriteOp::Exec(u, _)
            | WriteOp::Create(u, _) => u.clone(),
            WriteOp::Rename(u, _) => u.parent().unwrap_or_default(),
            WriteOp::Copy(from, to) => common_ancestor(from, to),
        }
    }
}

pub(super) fn common_ancestor(a: &Uri, b: &Uri) -> Uri {
    let common: Vec<&str> = a.segments().zip(b.segments()).take_while(|(x, y)| x == y).map(|(x, _)| x).collect();
    Uri::from_key(common.join("\0"))
}

pub(super) enum OpResult {
    Written(WriteOutcome),
    Exec(Json),
    /// The handler has no collection at the parent: add generically.
    NotCreated,
}

/// Where a URI lives.
pub(super) enum Route {
    Mounted(Arc<Mount>, Uri),
    /// Above every mount: answered by the root itself.
    Scaffold,
}
