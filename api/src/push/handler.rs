//! `./subscriptions`: create with `POST /tree/subscriptions`, read each as
//! `<id>/config/...` (what was asked) and `<id>/monitoring/...` (delivery
//! state), cancel with `DELETE`. Each principal sees its own subscriptions
//! (`admin` sees all).

use std::sync::Weak;

use async_trait::async_trait;
use dmtree_core::{DataHandler, DmtError, Meta, Node, OpContext, Result, Uri, entry_children, entry_node};
use serde_json::Value as Json;

use super::Push;

pub struct SubscriptionsHandler {
    push: Weak<Push>,
}

impl SubscriptionsHandler {
    pub fn new(push: Weak<Push>) -> Self {
        Self { push }
    }

    fn push(&self, at: &Uri) -> Result<std::sync::Arc<Push>> {
        self.push.upgrade().ok_or_else(|| DmtError::store(at, "the push service has stopped"))
    }
}

fn at(path: &Uri) -> Uri {
    Uri::root().join_name("subscriptions").concat(path)
}

#[async_trait]
impl DataHandler for SubscriptionsHandler {
    fn kind(&self) -> &'static str {
        "subscriptions"
    }

    async fn get(&self, cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        let push = self.push(path)?;
        entry_node(path, |id| push.visible(cx.principal, id).map(|s| s.snapshot()))
    }

    async fn children(&self, cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        let push = self.push(path)?;
        entry_children(
            path,
            || push.visible_ids(cx.principal),
            |id| push.visible(cx.principal, id).map(|s| s.snapshot()),
        )
    }

    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        Ok(Meta::collection(path))
    }

    async fn create(&self, cx: OpContext<'_>, parent: &Uri, request: &Json) -> Result<Option<String>> {
        if !parent.is_root() {
            return Ok(None);
        }
        let push = self.push(parent)?;
        let spec = super::spec::parse(push.tree(), &at(parent), cx.principal, request, push.available())?;
        let id = spec.id.clone();
        push.create(spec, &at(parent)).await?;
        Ok(Some(id))
    }

    async fn delete(&self, cx: OpContext<'_>, path: &Uri) -> Result<()> {
        let Some(id) = path.name().filter(|_| path.depth() == 1) else {
            return Err(DmtError::not_allowed(&at(path), "only a whole subscription can be deleted"));
        };
        self.push(path)?.cancel(id, cx.principal, &at(path)).await
    }
}
