//! A read-only handler over a JSON snapshot taken per request: objects are
//! interior nodes, everything else a leaf. Self-describing subtrees
//! (`./mounts`, `./sessions`, `./system`) are a closure each.

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

    fn lookup(&self, path: &Uri) -> Result<Json> {
        let mut cur = (self.snapshot)();
        for seg in path.segments() {
            cur = match cur {
                Json::Object(mut map) => map.remove(seg).ok_or_else(|| DmtError::not_found(path))?,
                _ => return Err(DmtError::not_found(path)),
            };
        }
        Ok(cur)
    }
}

#[async_trait]
impl<F: Fn() -> Json + Send + Sync + 'static> DataHandler for SnapshotHandler<F> {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn get(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        Ok(match self.lookup(path)? {
            Json::Object(_) => Node::interior(),
            leaf => Node::leaf(Value::from_json(&leaf, None).map_err(|e| DmtError::invalid_data(path, e.0))?),
        })
    }

    async fn children(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        Ok(match self.lookup(path)? {
            Json::Object(map) => map.keys().cloned().collect(),
            _ => Vec::new(),
        })
    }
}
