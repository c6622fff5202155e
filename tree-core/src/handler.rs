//! The `DataHandler` trait: the narrow waist every subtree is served through.
//!
//! Paths are relative to the handler's mount point, so a handler does not
//! know (or care) where it is mounted. Write operations default to
//! "command not allowed", so a read-only handler is a page of code.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value as Json;

use crate::acl::Principal;
use crate::error::{DmtError, Result};
use crate::event::{EventKind, EventLog};
use crate::fanout::FanOut;
use crate::meta::Meta;
use crate::node::{NewNode, Node, PropsPatch};
use crate::uri::Uri;
use crate::value::Value;

/// Identifies an atomic transaction across the handlers it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

/// Who is asking, and inside which transaction (if any).
#[derive(Debug, Clone, Copy)]
pub struct OpContext<'a> {
    pub principal: &'a Principal,
    pub tx: Option<TxId>,
}

#[async_trait]
pub trait DataHandler: Send + Sync + 'static {
    /// The handler's kind, shown under `./mounts`.
    fn kind(&self) -> &'static str;

    async fn get(&self, cx: OpContext<'_>, path: &Uri) -> Result<Node>;

    /// Names of the children of an interior node, in order.
    async fn children(&self, cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>>;

    /// What the node at `path` (existing or about to be created) allows.
    ///
    /// The default is read-only: the tree checks meta *before* it calls
    /// `add`, `replace` or `delete`, so a handler that implements writes must
    /// also answer here with the operations it takes (see
    /// `examples/counters.rs`), or every write is refused as "command not allowed".
    async fn meta(&self, _cx: OpContext<'_>, _path: &Uri) -> Result<Meta> {
        Ok(Meta::read_only())
    }

    async fn add(&self, _cx: OpContext<'_>, path: &Uri, _node: NewNode) -> Result<()> {
        Err(not_allowed(path, "add"))
    }

    async fn replace(&self, _cx: OpContext<'_>, path: &Uri, _value: Value) -> Result<()> {
        Err(not_allowed(path, "replace"))
    }

    async fn set_props(&self, _cx: OpContext<'_>, path: &Uri, _patch: PropsPatch) -> Result<()> {
        Err(not_allowed(path, "replace"))
    }

    /// Deletes the node and its whole subtree.
    async fn delete(&self, _cx: OpContext<'_>, path: &Uri) -> Result<()> {
        Err(not_allowed(path, "delete"))
    }

    async fn rename(&self, _cx: OpContext<'_>, path: &Uri, _new_name: &str) -> Result<()> {
        Err(not_allowed(path, "rename"))
    }

    /// Copies the subtree at `from` to `to`, both inside this handler.
    async fn copy(&self, _cx: OpContext<'_>, from: &Uri, _to: &Uri) -> Result<()> {
        Err(not_allowed(from, "copy"))
    }

    async fn exec(&self, _cx: OpContext<'_>, path: &Uri, _data: Option<Json>) -> Result<Json> {
        Err(not_allowed(path, "exec"))
    }

    /// Creates a child of `parent` from a representation (RESTCONF POST to a
    /// collection), returning its name; `None` when the handler has no such
    /// collection there and the caller should add the node generically.
    async fn create(&self, _cx: OpContext<'_>, _parent: &Uri, _request: &Json) -> Result<Option<String>> {
        Ok(None)
    }

    /// Whether writes may join atomic sessions (the hooks below are then honoured).
    fn transactional(&self) -> bool {
        false
    }

    /// Phase one of commit: make the transaction's writes ready, or refuse.
    async fn prepare(&self, _tx: TxId) -> Result<()> {
        Ok(())
    }

    async fn commit(&self, _tx: TxId) -> Result<()> {
        Ok(())
    }

    async fn rollback(&self, _tx: TxId) {}

    /// Whether the handler reports every change under it through its
    /// [`ChangeSink`], writes made through the tree included; the tree then
    /// records no events of its own for them (a remote tree's changes arrive,
    /// in the remote's order, over its event bridge).
    fn reports_own_changes(&self) -> bool {
        false
    }

    /// Called once when mounted, with the sink for changes the handler observes itself.
    fn attach(&self, _sink: ChangeSink) {}

    /// Called when unmounted: stop background work.
    fn detach(&self) {}

    /// The handler's own state, shown under `./mounts/<id>/monitoring` (a remote's reachability, say).
    fn status(&self) -> Option<Json> {
        None
    }
}

/// Where a handler saves the configuration written through its `config`
/// subtree, so a restart keeps it. The server provides one per mount.
#[async_trait]
pub trait ConfigSaver: Send + Sync + 'static {
    async fn save(&self, config: &Json) -> Result<()>;
}

fn not_allowed(path: &Uri, op: &str) -> DmtError {
    DmtError::not_allowed(path, format!("this handler does not support {op}"))
}

/// How a handler reports changes it observes (polled values, remote events).
/// Paths are relative to the mount; the sink makes them absolute.
#[derive(Clone)]
pub struct ChangeSink {
    mount: Uri,
    log: Arc<EventLog>,
    fanout: Arc<FanOut>,
}

impl ChangeSink {
    pub(crate) fn new(mount: Uri, log: Arc<EventLog>, fanout: Arc<FanOut>) -> Self {
        Self { mount, log, fanout }
    }

    /// Whether someone subscribes to (part of) the mounted subtree: lazy
    /// handlers keep polling while this holds.
    pub fn watched(&self) -> bool {
        self.fanout.watches(&self.mount)
    }

    /// Records a change; returns once it has a revision (not waiting for durability).
    pub fn emit(&self, kind: EventKind, path: &Uri, value: Option<&Value>) {
        let uri = self.mount.concat(path);
        self.log.publish(vec![crate::event::EventDraft::new(kind, uri).value(value.cloned())]);
    }

    /// Records a change described in full; its URIs are relative to the mount.
    pub fn emit_draft(&self, draft: crate::event::EventDraft) {
        self.log.publish(vec![draft.under(&self.mount)]);
    }
}
