//! `./mounts`: every mount point, its handler, and for remote trees the
//! remote and its monitoring (reachability, round trip, circuit, events
//! bridged, last error). `POST /tree/mounts` mounts a remote tree;
//! `DELETE /tree/mounts/<id>` unmounts one.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use chrono::SecondsFormat;
use dmtree_core::{DataHandler, DmtError, Meta, Node, OpContext, Result, Tree, Uri, entry_children, entry_node};
use serde_json::{Value as Json, json};

use super::Federation;

pub struct MountsHandler {
    tree: Weak<Tree>,
    federation: Weak<Federation>,
}

impl MountsHandler {
    pub fn new(tree: Weak<Tree>, federation: Weak<Federation>) -> Self {
        Self { tree, federation }
    }

    fn federation(&self, path: &Uri) -> Result<Arc<Federation>> {
        self.federation.upgrade().ok_or_else(|| DmtError::store(&at(path), "the server is shutting down"))
    }

    /// One mount's entry: rendered alone, so reading a mount costs one mount.
    fn entry(&self, id: &str) -> Option<Json> {
        let (tree, fed) = (self.tree.upgrade()?, self.federation.upgrade()?);
        let m = tree.mount_by_id(id)?;
        let mut entry = json!({
            "uri": m.at.to_string(),
            "handler": m.handler.kind(),
            "since": m.since.to_rfc3339_opts(SecondsFormat::Millis, true),
            "origin": fed.origin(&m.id).map_or("built-in", |o| o.as_str()),
        });
        if let (Some(Json::Object(status)), Json::Object(e)) = (m.handler.status(), &mut entry) {
            e.extend(status);
        }
        Some(entry)
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> =
            self.tree.upgrade().map(|t| t.mounts().iter().map(|m| m.id.clone()).collect()).unwrap_or_default();
        ids.sort();
        ids
    }
}

fn at(path: &Uri) -> Uri {
    Uri::root().join_name("mounts").concat(path)
}

#[async_trait]
impl DataHandler for MountsHandler {
    fn kind(&self) -> &'static str {
        "mounts"
    }

    async fn get(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        entry_node(path, |id| self.entry(id))
    }

    async fn children(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        entry_children(path, || self.ids(), |id| self.entry(id))
    }

    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        Ok(Meta::collection(path))
    }

    async fn create(&self, _cx: OpContext<'_>, parent: &Uri, request: &Json) -> Result<Option<String>> {
        if !parent.is_root() {
            return Ok(None);
        }
        self.federation(parent)?.mount(&at(parent), request).await.map(Some)
    }

    async fn delete(&self, _cx: OpContext<'_>, path: &Uri) -> Result<()> {
        let Some(id) = path.name().filter(|_| path.depth() == 1) else {
            return Err(DmtError::not_allowed(&at(path), "unmount a whole mount: DELETE /tree/mounts/<id>"));
        };
        self.federation(path)?.unmount(&at(path), id).await
    }
}
