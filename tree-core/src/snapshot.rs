//! Read-only subtrees computed from JSON: objects are interior nodes,
//! everything else a leaf. Self-describing subtrees (`./mounts`,
//! `./sessions`, `./system`) are a closure each; handlers with their own
//! state can answer reads with [`json_node`] and [`json_children`].

use async_trait::async_trait;
use serde_json::Value as Json;

use crate::error::{DmtError, Result};
use crate::handler::{DataHandler, OpContext};
use crate::node::Node;
use crate::uri::Uri;
use crate::value::Value;

pub struct SnapshotHandler<F> {
    kind: &'static str,
    snapshot: F,
}

impl<F: Fn() -> Json + Send + Sync + 'static> SnapshotHandler<F> {
    pub fn new(kind: &'static str, snapshot: F) -> Self {
        Self { kind, snapshot }
    }
}

fn lookup(root: Json, path: &Uri) -> Result<Json> {
    let mut cur = root;
    for seg in path.segments() {
        cur = match cur {
            Json::Object(mut map) => map.remove(seg).ok_or_else(|| DmtError::not_found(path))?,
            _ => return Err(DmtError::not_found(path)),
        };
    }
    Ok(cur)
}

/// The node at `path` inside a JSON document.
pub fn json_node(root: Json, path: &Uri) -> Result<Node> {
    Ok(match lookup(root, path)? {
        Json::Object(_) => Node::interior(),
        leaf => Node::leaf(Value::from_json(&leaf, None).map_err(|e| DmtError::invalid_data(path, e.0))?),
    })
}

/// The child names of the node at `path` inside a JSON document.
pub fn json_children(root: Json, path: &Uri) -> Result<Vec<String>> {
    Ok(match lookup(root, path)? {
        Json::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    })
}

#[async_trait]
impl<F: Fn() -> Json + Send + Sync + 'static> DataHandler for SnapshotHandler<F> {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn get(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        json_node((self.snapshot)(), path)
    }

    async fn children(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        json_children((self.snapshot)(), path)
    }
}

/// Splits `<id>/rest` into the entry's id and the path inside it.
fn entry_path(path: &Uri) -> Option<(&str, Uri)> {
    let id = path.segments().next()?;
    let rest = path.strip_prefix(&Uri::root().join_name(id)).unwrap_or_default();
    Some((id, rest))
}

/// A node of a collection whose entries are rendered one at a time (sessions,
/// subscriptions, mounts): reading `<id>/…` renders only that entry, so a read
/// costs what it returns, not the size of the collection.
pub fn entry_node(path: &Uri, entry: impl FnOnce(&str) -> Option<Json>) -> Result<Node> {
    match entry_path(path) {
        None => Ok(Node::interior()),
        Some((id, rest)) => json_node(entry(id).ok_or_else(|| DmtError::not_found(path))?, &rest),
    }
}

/// The children of a node of such a collection; `ids` lists the entries.
pub fn entry_children(
    path: &Uri,
    ids: impl FnOnce() -> Vec<String>,
    entry: impl FnOnce(&str) -> Option<Json>,
) -> Result<Vec<String>> {
    match entry_path(path) {
        None => Ok(ids()),
        Some((id, rest)) => json_children(entry(id).ok_or_else(|| DmtError::not_found(path))?, &rest),
    }
}
