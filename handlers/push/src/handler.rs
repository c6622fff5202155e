//! `./subscriptions`: create with `POST /tree/subscriptions`, read each as
//! `<id>/config/...` (what was asked) and `<id>/monitoring/...` (delivery
//! state), cancel with `DELETE`. Each principal sees its own subscriptions
//! (`admin` sees all).

use std::sync::{OnceLock, Weak};

use async_trait::async_trait;
use dmtree_core::{
    ChangeSink, DataHandler, DmtError, EventDraft, EventKind, Meta, Node, OpContext, Principal, ReadRule, Result, Uri,
    entry_children, entry_node,
};
use serde_json::Value as Json;

use super::Push;

pub struct SubscriptionsHandler {
    push: Weak<Push>,
    sink: OnceLock<ChangeSink>,
}

impl SubscriptionsHandler {
    pub fn new(push: Weak<Push>) -> Self {
        Self { push, sink: OnceLock::new() }
    }

    /// A subscription's creation or cancellation, for its owner's (and admin's) eyes only:
    /// ids and owners are nobody else's business.
    fn announce(&self, kind: EventKind, id: &str, owner: &Principal, by: &Principal) {
        if let Some(sink) = self.sink.get() {
            let draft =
                EventDraft::new(kind, Uri::root().join_name(id)).principal(by.name()).read_rule(ReadRule::only(owner));
            sink.emit_draft(draft);
        }
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

    fn reports_own_changes(&self) -> bool {
        true
    }

    fn attach(&self, sink: ChangeSink) {
        let _ = self.sink.set(sink);
    }

    async fn create(&self, cx: OpContext<'_>, parent: &Uri, request: &Json) -> Result<Option<String>> {
        if !parent.is_root() {
            return Ok(None);
        }
        let push = self.push(parent)?;
        let spec = super::spec::parse(push.tree(), &at(parent), cx.principal, request, push.available())?;
        let (id, owner) = (spec.id.clone(), Principal::named(&spec.owner));
        push.create(spec, &at(parent)).await?;
        self.announce(EventKind::Added, &id, &owner, cx.principal);
        Ok(Some(id))
    }

    async fn delete(&self, cx: OpContext<'_>, path: &Uri) -> Result<()> {
        let Some(id) = path.name().filter(|_| path.depth() == 1) else {
            return Err(DmtError::not_allowed(&at(path), "only a whole subscription can be deleted"));
        };
        let push = self.push(path)?;
        let owner = push.visible(cx.principal, id).map(|s| Principal::named(&s.spec.owner));
        push.cancel(id, cx.principal, &at(path)).await?;
        if let Some(owner) = owner {
            self.announce(EventKind::Deleted, id, &owner, cx.principal);
        }
        Ok(())
    }
}
