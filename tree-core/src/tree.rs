//! The root data handler: routes every operation to the handler with the
//! longest mount point, checks ACLs and meta, runs each write in a
//! transaction (an implicit one per call, or the caller's session), and
//! records the resulting events, which are published only after commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::acl::{Acl, AclTable, Permission, Principal, ReadRule};
use crate::error::{DmtError, Result};
use crate::event::{Event, EventDraft, EventKind, EventLog, EventLogConfig, SharedAcls};
use crate::fanout::FanOut;
use crate::handler::{ChangeSink, DataHandler, OpContext, TxId};
use crate::lock::LockTable;
use crate::meta::{Meta, NodeKind, Operation};
use crate::mount::{Mount, MountTable};
use crate::node::{NewNode, Node, PropsPatch};
use crate::session::{LockMode, Session, SessionInfo, SessionState, TxState};
use crate::store::TreeStore;
use crate::uri::{Uri, UriLimits, validate_name};
use crate::value::Value;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

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
    fn matches(&self, version: Option<u64>) -> bool {
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
    fn check(&self, uri: &Uri, node: Option<&Node>) -> Result<()> {
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
    fn child(&self, name: &str) -> Option<Option<&Selection>> {
        self.0.get(name).map(Option::as_ref)
    }
}

/// A write, with absolute URIs. Owned, because it runs in its own task.
enum WriteOp {
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
    fn scope(&self) -> Uri {
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

fn common_ancestor(a: &Uri, b: &Uri) -> Uri {
    let common: Vec<&str> = a.segments().zip(b.segments()).take_while(|(x, y)| x == y).map(|(x, _)| x).collect();
    Uri::from_key(common.join("\0"))
}

enum OpResult {
    Written(WriteOutcome),
    Exec(Json),
    /// The handler has no collection at the parent: add generically.
    NotCreated,
}

/// Where a URI lives.
enum Route {
    Mounted(Arc<Mount>, Uri),
    /// Above every mount: answered by the root itself.
    Scaffold,
}

pub struct Tree {
    config: TreeConfig,
    mounts: ArcSwap<MountTable>,
    mount_lock: Mutex<()>,
    acls: SharedAcls,
    locks: Arc<LockTable>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    log: Arc<EventLog>,
    store: Arc<dyn TreeStore>,
    next_tx: AtomicU64,
    fanout: Arc<FanOut>,
}

impl Tree {
    /// Opens the tree on its state store: restores ACLs (or sets `root_acl` on
    /// first start) and resumes the event log. Needs a tokio runtime.
    pub async fn open(config: TreeConfig, store: Arc<dyn TreeStore>, root_acl: Acl) -> Result<Arc<Self>> {
        let saved = store.load_acls().await?;
        let mut acls = AclTable::new(root_acl.clone());
        if saved.iter().any(|(u, _)| u.is_root()) {
            for (uri, acl) in saved {
                acls.set(&uri, Some(acl)).map_err(|e| DmtError::store(&uri, e))?;
            }
        } else {
            store.save_acls(&[(Uri::root(), Some(root_acl))]).await?;
        }
        let acls = Arc::new(RwLock::new(acls));
        let log = EventLog::open(store.clone(), config.events, acls.clone()).await?;
        let tree = Arc::new(Self {
            config,
            mounts: ArcSwap::default(),
            mount_lock: Mutex::new(()),
            acls,
            locks: Arc::default(),
            sessions: Mutex::default(),
            log,
            store,
            // Ids stay distinct across restarts: staged events are keyed by them.
            next_tx: AtomicU64::new(Utc::now().timestamp_micros().max(1) as u64),
            fanout: Arc::default(),
        });
        tokio::spawn(reap_idle_sessions(Arc::downgrade(&tree)));
        let cursor = tree.log.cursor(tree.log.head());
        tokio::spawn(crate::fanout::dispatch_loop(Arc::downgrade(&tree), cursor));
        Ok(tree)
    }

    pub fn config(&self) -> &TreeConfig {
        &self.config
    }

    pub fn limits(&self) -> &UriLimits {
        &self.config.uri_limits
    }

    pub fn events(&self) -> &Arc<EventLog> {
        &self.log
    }

    pub(crate) fn fanout(&self) -> &FanOut {
        &self.fanout
    }

    // ---- mounts ----

    pub fn mount(&self, id: &str, at: Uri, handler: Arc<dyn DataHandler>) -> Result<()> {
        validate_name(id, self.limits())?;
        if at.is_root() {
            return Err(DmtError::not_allowed(&at, "the root belongs to the tree itself"));
        }
        let _guard = self.mount_lock.lock();
        let table = self.mounts.load();
        if table.get(&at).is_some() {
            return Err(DmtError::exists(&at));
        }
        if table.by_id(id).is_some() {
            return Err(DmtError::NodeAlreadyExists { uri: format!("./mounts/{id}") });
        }
        handler.attach(ChangeSink::new(at.clone(), self.log.clone(), self.fanout.clone()));
        let mut next = MountTable::clone(&table);
        next.insert(Arc::new(Mount { id: id.to_owned(), at: at.clone(), handler, since: Utc::now() }));
        self.mounts.store(Arc::new(next));
        self.log.publish(vec![EventDraft::new(EventKind::Added, at)]);
        Ok(())
    }

    pub fn unmount(&self, at: &Uri) -> Result<Arc<Mount>> {
        let _guard = self.mount_lock.lock();
        let mut next = MountTable::clone(&self.mounts.load());
        let mount = next.remove(at).ok_or_else(|| DmtError::not_allowed(at, format!("nothing is mounted at {at}")))?;
        self.mounts.store(Arc::new(next));
        mount.handler.detach();
        self.log.publish(vec![EventDraft::new(EventKind::Deleted, at.clone())]);
        Ok(mount)
    }

    pub fn mounts(&self) -> Vec<Arc<Mount>> {
        let mut all: Vec<_> = self.mounts.load().iter().cloned().collect();
        all.sort_by(|a, b| a.at.cmp(&b.at));
        all
    }

    pub fn mount_by_id(&self, id: &str) -> Option<Arc<Mount>> {
        self.mounts.load().by_id(id).cloned()
    }

    fn route(&self, uri: &Uri) -> Route {
        match self.mounts.load().resolve(uri) {
            Some((m, rel)) => Route::Mounted(m.clone(), rel),
            None => Route::Scaffold,
        }
    }

    fn has_mounts_below(&self, uri: &Uri) -> bool {
        !self.mounts.load().scaffold_children(uri).is_empty()
    }

    // ---- ACLs ----

    fn require(&self, principal: &Principal, uri: &Uri, perm: Permission) -> Result<()> {
        if self.acls.read().permits(uri, principal, perm) {
            Ok(())
        } else {
            Err(DmtError::denied(uri, principal, perm))
        }
    }

    /// The cheap first gate of a write, on ACLs alone: the caller holds a
    /// right the operation needs. The full checks still follow, per node.
    fn may_attempt(&self, principal: &Principal, op: &WriteOp) -> Result<()> {
        let acls = self.acls.read();
        let parent = |u: &Uri| u.parent().unwrap_or_default();
        let (uri, perm, allowed) = match op {
            WriteOp::Put(u, w) => {
                let acl_only = w.content.is_none() && w.props.is_empty() && w.acl.is_some();
                let ok = acls.permits(u, principal, Permission::Replace)
                    || acls.permits(&parent(u), principal, Permission::Add)
                    || (acl_only && acls.permits(&parent(u), principal, Permission::Replace));
                (u, Permission::Replace, ok)
            }
            WriteOp::Patch(u, ..) => {
                let ok = acls.permits(u, principal, Permission::Replace) || acls.permits(u, principal, Permission::Add);
                (u, Permission::Replace, ok)
            }
            WriteOp::Add(u, ..) => (u, Permission::Add, acls.permits(&parent(u), principal, Permission::Add)),
            WriteOp::Create(u, _) => (u, Permission::Add, acls.permits(u, principal, Permission::Add)),
            WriteOp::Delete(u, _) => (u, Permission::Delete, acls.permits(u, principal, Permission::Delete)),
            WriteOp::Rename(u, _) => (u, Permission::Replace, acls.permits(u, principal, Permission::Replace)),
            WriteOp::Exec(u, _) => (u, Permission::Exec, acls.permits(u, principal, Permission::Exec)),
            WriteOp::Copy(from, to) => {
                let ok = acls.permits(from, principal, Permission::Get)
                    && acls.permits(&parent(to), principal, Permission::Add);
                (to, Permission::Add, ok)
            }
        };
        if allowed { Ok(()) } else { Err(DmtError::denied(uri, principal, perm)) }
    }

    /// Before looking a node up for a caller that may not read it: refuses
    /// unless `perm` is granted, so whether the node exists (and its version)
    /// never shows in the answer.
    fn require_blind(&self, principal: &Principal, uri: &Uri, governing: &Uri, perm: Permission) -> Result<()> {
        let acls = self.acls.read();
        if acls.permits(uri, principal, Permission::Get) || acls.permits(governing, principal, perm) {
            Ok(())
        } else {
            Err(DmtError::denied(governing, principal, perm))
        }
    }

    /// Whether a subscriber may see an event: under the ACLs recorded at its
    /// commit, and under the ACLs in force now (at delivery).
    pub fn may_read(&self, principal: &Principal, event: &Event) -> bool {
        if !event.read.permits(principal) {
            return false;
        }
        let acls = self.acls.read();
        acls.permits(&event.uri, principal, Permission::Get)
            && event.to.as_ref().is_none_or(|to| acls.permits(to, principal, Permission::Get))
    }

    /// The rights to read every node `pattern` may match, now: the ACL at its
    /// base, and every ACL set below the base on a path the pattern reaches
    /// (a `*` may match a subtree whose ACL is stricter than the base's).
    pub fn pattern_read_rule(&self, pattern: &crate::pattern::UriPattern) -> ReadRule {
        let acls = self.acls.read();
        let base = pattern.base();
        let mut rule = ReadRule::default();
        rule.and(acls.effective(&base));
        for (uri, acl) in acls.entries() {
            if base.is_prefix_of(&uri) && pattern.reaches(&uri) {
                rule.and(acl);
            }
        }
        rule
    }

    /// The ACL that governs `uri` now: its own, or its nearest ancestor's.
    pub fn effective_acl(&self, uri: &Uri) -> Arc<Acl> {
        self.acls.read().effective(uri)
    }

    /// Whether `principal` may read the node at `base` or anything below it
    /// (some ACL below may grant what `base`'s does not).
    pub fn may_read_anywhere_below(&self, principal: &Principal, base: &Uri) -> bool {
        let acls = self.acls.read();
        acls.permits(base, principal, Permission::Get)
            || acls.entries().iter().any(|(u, acl)| base.is_prefix_of(u) && acl.permits(principal, Permission::Get))
    }

    /// Sets a built-in subtree's ACL unless one was set already (start-up only; no caller checks).
    pub async fn ensure_acl(&self, uri: &Uri, acl: Acl) -> Result<()> {
        if self.acls.read().own(uri).is_some() {
            return Ok(());
        }
        self.store.save_acls(&[(uri.clone(), Some(acl.clone()))]).await?;
        self.acls.write().set(uri, Some(acl)).map_err(|e| DmtError::from_acl(uri, e))
    }

    // ---- reads ----

    /// Reads a node and, for interior nodes, its children to `depth` levels.
    pub async fn read(&self, caller: &Caller<'_>, uri: &Uri, depth: u32) -> Result<NodeView> {
        self.read_selected(caller, uri, depth, None).await
    }

    /// Like [`read`](Self::read), keeping only the selected children.
    pub async fn read_selected(
        &self,
        caller: &Caller<'_>,
        uri: &Uri,
        depth: u32,
        selection: Option<&Selection>,
    ) -> Result<NodeView> {
        let tx = self.read_context(caller, uri).await?;
        let mut budget = self.config.max_read_nodes;
        let view = self.read_view(caller.principal, tx, uri.clone(), depth, selection, &mut budget).await?;
        if view.node.is_none() {
            return Err(DmtError::denied(uri, caller.principal, Permission::Get));
        }
        Ok(view)
    }

    /// The transaction a read sees: the caller's atomic session's, if any.
    async fn read_context(&self, caller: &Caller<'_>, uri: &Uri) -> Result<Option<TxId>> {
        let Some(id) = caller.session else { return Ok(None) };
        let session = self.session(caller.principal, id)?;
        if !session.info.root.is_prefix_of(uri) {
            return Err(DmtError::OutsideSession { uri: uri.to_string(), root: session.info.root.to_string() });
        }
        Ok(match &*session.state.lock().await {
            SessionState::Atomic(tx) => Some(tx.id),
            _ => None,
        })
    }

    fn read_view<'a>(
        &'a self,
        principal: &'a Principal,
        tx: Option<TxId>,
        uri: Uri,
        depth: u32,
        selection: Option<&'a Selection>,
        budget: &'a mut usize,
    ) -> BoxFuture<'a, Result<NodeView>> {
        Box::pin(async move {
            if *budget == 0 {
                return Err(DmtError::limit(
                    &uri,
                    format!("a read returns at most {} nodes; lower depth", self.config.max_read_nodes),
                ));
            }
            *budget -= 1;
            let (acl, effective_acl) = self.acls.read().own_and_effective(&uri);
            if !effective_acl.permits(principal, Permission::Get) {
                return Ok(NodeView { uri, node: None, acl, effective_acl, children: None });
            }
            let node = self.lookup(principal, tx, &uri).await?.ok_or_else(|| DmtError::not_found(&uri))?;
            let children = if node.kind == NodeKind::Interior && depth > 0 {
                let mut views = Vec::new();
                for name in self.child_names(principal, tx, &uri).await? {
                    let below = match selection.map(|s| s.child(&name)) {
                        None => None,
                        Some(None) => continue,
                        Some(Some(below)) => below,
                    };
                    let child = uri.join_name(&name);
                    match self.read_view(principal, tx, child, depth - 1, below, budget).await {
                        Ok(v) => views.push(v),
                        // Vanished between listing and reading: skip it.
                        Err(DmtError::NodeNotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Some(views)
            } else {
                None
            };
            Ok(NodeView { uri, node: Some(node), acl, effective_acl, children })
        })
    }

    fn cx<'a>(principal: &'a Principal, tx: Option<TxId>, mount: &Mount) -> OpContext<'a> {
        OpContext { principal, tx: tx.filter(|_| mount.handler.transactional()) }
    }

    /// The node at `uri`, or `None`. Scaffold nodes above mounts are interior.
    async fn lookup(&self, principal: &Principal, tx: Option<TxId>, uri: &Uri) -> Result<Option<Node>> {
        match self.route(uri) {
            Route::Mounted(m, rel) => match m.handler.get(Self::cx(principal, tx, &m), &rel).await {
                Ok(node) => Ok(Some(node)),
                Err(DmtError::NodeNotFound { .. }) if self.has_mounts_below(uri) => Ok(Some(Node::interior())),
                Err(DmtError::NodeNotFound { .. }) => Ok(None),
                Err(e) => Err(e.with_uri(uri)),
            },
            Route::Scaffold if uri.is_root() || self.has_mounts_below(uri) => Ok(Some(Node::interior())),
            Route::Scaffold => Ok(None),
        }
    }

    async fn child_names(&self, principal: &Principal, tx: Option<TxId>, uri: &Uri) -> Result<Vec<String>> {
        let mut names = match self.route(uri) {
            Route::Mounted(m, rel) => match m.handler.children(Self::cx(principal, tx, &m), &rel).await {
                Ok(names) => names,
                Err(DmtError::NodeNotFound { .. }) => Vec::new(),
                Err(e) => return Err(e.with_uri(uri)),
            },
            Route::Scaffold => Vec::new(),
        };
        let scaffold = self.mounts.load().scaffold_children(uri);
        if !scaffold.is_empty() {
            names.extend(scaffold);
            names.sort();
            names.dedup();
        }
        Ok(names)
    }

    async fn meta(&self, principal: &Principal, tx: Option<TxId>, uri: &Uri) -> Result<(Arc<Mount>, Uri, Meta)> {
        match self.route(uri) {
            Route::Mounted(m, rel) => {
                let meta = m.handler.meta(Self::cx(principal, tx, &m), &rel).await.map_err(|e| e.with_uri(uri))?;
                Ok((m, rel, meta))
            }
            Route::Scaffold => Err(DmtError::not_allowed(uri, format!("no handler is mounted at or above {uri}"))),
        }
    }

    // ---- writes ----

    /// Creates or replaces a node (RESTCONF PUT). Missing ancestors are created.
    pub async fn put(self: &Arc<Self>, caller: &Caller<'_>, uri: &Uri, write: Write) -> Result<WriteOutcome> {
        self.written(self.write(caller, WriteOp::Put(uri.clone(), write)).await?)
    }

    /// Adds a child under an existing `parent` (RESTCONF POST).
    pub async fn add_child(
        self: &Arc<Self>,
        caller: &Caller<'_>,
        parent: &Uri,
        name: &str,
        content: Content,
        write: Write,
    ) -> Result<WriteOutcome> {
        let uri = parent.child(name, self.limits())?;
        self.written(self.write(caller, WriteOp::Add(uri, content, write)).await?)
    }

    /// Sets several leaves under `base`, all or nothing.
    pub async fn patch(
        self: &Arc<Self>,
        caller: &Caller<'_>,
        base: &Uri,
        leaves: Vec<(Uri, Value)>,
        pre: Precondition,
    ) -> Result<WriteOutcome> {
        self.written(self.write(caller, WriteOp::Patch(base.clone(), leaves, pre)).await?)
    }

    pub async fn delete(self: &Arc<Self>, caller: &Caller<'_>, uri: &Uri, pre: Precondition) -> Result<()> {
        self.write(caller, WriteOp::Delete(uri.clone(), pre)).await.map(drop)
    }

    pub async fn rename(self: &Arc<Self>, caller: &Caller<'_>, uri: &Uri, new_name: &str) -> Result<WriteOutcome> {
        self.written(self.write(caller, WriteOp::Rename(uri.clone(), new_name.to_owned())).await?)
    }

    pub async fn copy(self: &Arc<Self>, caller: &Caller<'_>, from: &Uri, to: &Uri) -> Result<WriteOutcome> {
        self.written(self.write(caller, WriteOp::Copy(from.clone(), to.clone())).await?)
    }

    pub async fn exec(self: &Arc<Self>, caller: &Caller<'_>, uri: &Uri, data: Option<Json>) -> Result<Json> {
        match self.write(caller, WriteOp::Exec(uri.clone(), data)).await? {
            OpResult::Exec(out) => Ok(out),
            _ => Err(DmtError::transaction(uri, "exec produced no result")),
        }
    }

    /// Creates a child of `parent` from a representation, if its handler keeps
    /// such a collection there; `None` means "add it as an ordinary node".
    pub async fn create(
        self: &Arc<Self>,
        caller: &Caller<'_>,
        parent: &Uri,
        request: Json,
    ) -> Result<Option<WriteOutcome>> {
        match self.write(caller, WriteOp::Create(parent.clone(), request)).await? {
            OpResult::Written(w) => Ok(Some(w)),
            _ => Ok(None),
        }
    }

    fn written(&self, r: OpResult) -> Result<WriteOutcome> {
        match r {
            OpResult::Written(w) => Ok(w),
            _ => Err(DmtError::transaction(&Uri::root(), "the operation produced no node")),
        }
    }

    fn next_tx(&self) -> TxId {
        TxId(self.next_tx.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs a write to completion in its own task, even if the caller goes
    /// away: a transaction cut off between prepare and commit would leave a
    /// handler holding its store.
    async fn write(self: &Arc<Self>, caller: &Caller<'_>, op: WriteOp) -> Result<OpResult> {
        let tree = self.clone();
        let principal = caller.principal.clone();
        let session = caller.session.map(str::to_owned);
        // The federation path goes with the write into its task.
        let via = crate::via::Via::current();
        finish(tokio::spawn(
            via.scope(async move { tree.write_now(&Caller::new(&principal).in_session(session.as_deref()), op).await }),
        ))
        .await
    }

    /// Runs a write in the caller's session, or in its own locked transaction.
    async fn write_now(&self, caller: &Caller<'_>, op: WriteOp) -> Result<OpResult> {
        // Refused before any lock is taken: a caller without rights must not
        // wait on (and so learn of) someone else's session, nor hold a lock.
        self.may_attempt(caller.principal, &op)?;
        // Mount points are fixed: no need to wait for a lock to refuse.
        if let WriteOp::Delete(uri, _) | WriteOp::Rename(uri, _) = &op {
            self.refuse_mounts_within(uri)?;
        }
        let scope = op.scope();
        let Some(id) = caller.session else {
            let _lock = self.locks.acquire(&scope, true, self.config.lock_timeout).await?;
            let mut tx = TxState::new(self.next_tx(), caller.principal.clone(), None);
            let result = self.run_in(&mut tx, op).await?;
            return self.committed(caller.principal, result).await;
        };
        let session = self.session(caller.principal, id)?;
        if !session.info.root.is_prefix_of(&scope) {
            return Err(DmtError::OutsideSession { uri: scope.to_string(), root: session.info.root.to_string() });
        }
        let mut state = session.state.lock().await;
        match &mut *state {
            SessionState::PerOperation if session.info.mode == LockMode::Shared => {
                Err(DmtError::not_allowed(&scope, "a shared session is read-only"))
            }
            SessionState::PerOperation => {
                let mut tx = TxState::new(self.next_tx(), caller.principal.clone(), Some(id.to_owned()));
                let result = self.run_in(&mut tx, op).await?;
                self.committed(caller.principal, result).await
            }
            SessionState::Invalid(why) => {
                Err(DmtError::transaction(&scope, format!("the session was rolled back: {why}")))
            }
            SessionState::Atomic(tx) => match self.run_op(tx, op).await {
                Ok(r) => Ok(r),
                Err(e) => {
                    // DMT Admin: a failed atomic session leaves no trace and becomes invalid.
                    let SessionState::Atomic(tx) = std::mem::replace(&mut *state, SessionState::Invalid(e.to_string()))
                    else {
                        unreachable!("matched Atomic above")
                    };
                    self.abort(tx).await;
                    Err(e)
                }
            },
        }
    }

    /// Handlers assign versions at commit; report the committed one.
    async fn committed(&self, principal: &Principal, result: OpResult) -> Result<OpResult> {
        match result {
            OpResult::Written(mut out) if out.version > 0 => {
                out.version = self.lookup(principal, None, &out.uri).await?.map_or(0, |n| n.props.version);
                Ok(OpResult::Written(out))
            }
            other => Ok(other),
        }
    }

    /// One operation as its own transaction: commit on success, roll back on error.
    async fn run_in(&self, tx: &mut TxState, op: WriteOp) -> Result<OpResult> {
        match self.run_op(tx, op).await {
            Ok(r) => {
                let tx = std::mem::replace(tx, TxState::new(TxId(0), Principal::Anonymous, None));
                self.commit_tx(tx).await?;
                Ok(r)
            }
            Err(e) => {
                let tx = std::mem::replace(tx, TxState::new(TxId(0), Principal::Anonymous, None));
                self.abort(tx).await;
                Err(e)
            }
        }
    }

    /// Two-phase commit across the touched handlers, then ACLs, then events.
    async fn commit_tx(&self, tx: TxState) -> Result<()> {
        for m in &tx.touched {
            if let Err(e) = m.handler.prepare(tx.id).await {
                tracing::warn!(error = %e, mount = %m.at, "prepare failed; rolling back");
                let at = m.at.clone();
                self.abort(tx).await;
                return Err(DmtError::transaction(&at, format!("prepare failed at {at}: {e}")));
            }
        }
        // The changes, their ACLs and their events become durable together.
        if !tx.acls.is_empty() || !tx.events.is_empty() {
            let pending: Vec<Event> = tx.events.iter().map(EventDraft::pending).collect();
            if let Err(e) = self.store.stage(tx.id, &tx.acls, &pending).await {
                self.abort(tx).await;
                return Err(e);
            }
        }
        // New ACLs are in force before the data they guard becomes visible.
        let undo = self.apply_acls(&tx.acls)?;
        for m in &tx.touched {
            if let Err(e) = m.handler.commit(tx.id).await {
                tracing::error!(error = %e, mount = %m.at, "commit failed after prepare");
                self.apply_acls(&undo)?;
                return Err(DmtError::transaction(&m.at, format!("commit failed at {}: {e}", m.at)));
            }
        }
        if !tx.events.is_empty() {
            self.log.append_settling(tx.events, vec![tx.id]).await;
        }
        Ok(())
    }

    /// Applies ACL changes in memory; returns the changes that undo them.
    fn apply_acls(&self, changes: &[(Uri, Option<Acl>)]) -> Result<Vec<(Uri, Option<Acl>)>> {
        let mut acls = self.acls.write();
        let mut undo = Vec::with_capacity(changes.len());
        for (uri, acl) in changes {
            undo.push((uri.clone(), acls.own(uri).map(|a| (*a).clone())));
            acls.set(uri, acl.clone()).map_err(|e| DmtError::from_acl(uri, e))?;
        }
        undo.reverse();
        Ok(undo)
    }

    /// An event draft that also carries the ACLs governing its URIs now,
    /// before the transaction's changes: a deleted or renamed node's events
    /// keep the rights of the node they were about.
    fn draft(&self, kind: EventKind, uri: &Uri, to: Option<&Uri>) -> EventDraft {
        let acls = self.acls.read();
        let mut draft = EventDraft::new(kind, uri.clone()).readable_under(acls.effective(uri));
        if let Some(to) = to {
            draft = draft.to(to.clone()).readable_under(acls.effective(to));
        }
        draft
    }

    async fn abort(&self, tx: TxState) {
        for m in &tx.touched {
            m.handler.rollback(tx.id).await;
        }
    }

    async fn run_op(&self, tx: &mut TxState, op: WriteOp) -> Result<OpResult> {
        match op {
            WriteOp::Put(uri, write) => self.op_put(tx, &uri, write).await.map(OpResult::Written),
            WriteOp::Add(uri, content, write) => {
                let parent = uri.parent().ok_or_else(|| DmtError::exists(&uri))?;
                self.require(&tx.principal, &parent, Permission::Add)?;
                if self.lookup(&tx.principal, Some(tx.id), &parent).await?.is_none() {
                    return Err(DmtError::not_found(&parent));
                }
                if self.lookup(&tx.principal, Some(tx.id), &uri).await?.is_some() {
                    return Err(DmtError::exists(&uri));
                }
                let write = Write { content: Some(content), ..write };
                self.op_put(tx, &uri, write).await.map(OpResult::Written)
            }
            WriteOp::Patch(base, leaves, pre) => {
                self.require_blind(&tx.principal, &base, &base, Permission::Replace)?;
                let node = self.lookup(&tx.principal, Some(tx.id), &base).await?;
                pre.check(&base, node.as_ref())?;
                for (rel, value) in leaves {
                    let uri = base.join_uri(&rel, self.limits())?;
                    self.op_put(tx, &uri, Write { content: Some(Content::Leaf(value)), ..Write::default() }).await?;
                }
                self.outcome(tx, &base, node.is_none()).await.map(OpResult::Written)
            }
            WriteOp::Delete(uri, pre) => {
                // Permission first: a missing node and a forbidden one answer alike.
                self.require(&tx.principal, &uri, Permission::Delete)?;
                let node = self.lookup(&tx.principal, Some(tx.id), &uri).await?;
                pre.check(&uri, node.as_ref())?;
                if node.is_none() {
                    return Err(DmtError::not_found(&uri));
                }
                self.delete_node(tx, &uri).await?;
                Ok(OpResult::Written(WriteOutcome { uri, created: false, version: 0 }))
            }
            WriteOp::Rename(uri, name) => self.op_rename(tx, &uri, &name).await.map(OpResult::Written),
            WriteOp::Copy(from, to) => self.op_copy(tx, &from, &to).await.map(OpResult::Written),
            WriteOp::Exec(uri, data) => self.op_exec(tx, &uri, data).await.map(OpResult::Exec),
            WriteOp::Create(parent, request) => self.op_create(tx, &parent, &request).await,
        }
    }

    async fn op_create(&self, tx: &mut TxState, parent: &Uri, request: &Json) -> Result<OpResult> {
        self.require(&tx.principal, parent, Permission::Add)?;
        let Route::Mounted(mount, rel) = self.route(parent) else { return Ok(OpResult::NotCreated) };
        // Touched before the call: a handler that fails half-way is rolled back too.
        tx.touch(&mount);
        let cx = Self::cx(&tx.principal, Some(tx.id), &mount);
        let Some(name) = mount.handler.create(cx, &rel, request).await.map_err(|e| e.with_uri(parent))? else {
            return Ok(OpResult::NotCreated);
        };
        let uri = parent.join_name(&name);
        tx.record(&mount, self.draft(EventKind::Added, &uri, None));
        Ok(OpResult::Written(WriteOutcome { uri, created: true, version: 0 }))
    }

    async fn outcome(&self, tx: &TxState, uri: &Uri, created: bool) -> Result<WriteOutcome> {
        let version = self.lookup(&tx.principal, Some(tx.id), uri).await?.map_or(0, |n| n.props.version);
        Ok(WriteOutcome { uri: uri.clone(), created, version })
    }

    fn op_put<'a>(&'a self, tx: &'a mut TxState, uri: &'a Uri, write: Write) -> BoxFuture<'a, Result<WriteOutcome>> {
        Box::pin(async move {
            // DMT Admin: an ACL is changed with Replace on the parent (the root's on itself).
            let acl_only = write.content.is_none() && write.props.is_empty() && write.acl.is_some();
            let governing = if acl_only { uri.parent().unwrap_or_default() } else { uri.clone() };
            self.require_blind(&tx.principal, uri, &governing, Permission::Replace)?;
            let existing = self.lookup(&tx.principal, Some(tx.id), uri).await?;
            // Permission before preconditions, so versions cannot be probed.
            match (&existing, uri.parent()) {
                (Some(_), _) => self.require(&tx.principal, &governing, Permission::Replace)?,
                (None, Some(parent)) => self.require(&tx.principal, &parent, Permission::Add)?,
                (None, None) => {}
            }
            write.precondition.check(uri, existing.as_ref())?;
            let created = existing.is_none();
            match (write.content, existing.as_ref().map(|n| n.kind)) {
                (Some(Content::Leaf(v)), Some(NodeKind::Leaf)) => self.replace_value(tx, uri, v).await?,
                (Some(Content::Leaf(_)), Some(NodeKind::Interior)) => {
                    return Err(DmtError::not_allowed(
                        uri,
                        format!("{uri} is an interior node; delete it before giving it a value"),
                    ));
                }
                (Some(Content::Interior(_)), Some(NodeKind::Leaf)) => {
                    return Err(DmtError::not_allowed(
                        uri,
                        format!("{uri} is a leaf; delete it before giving it children"),
                    ));
                }
                (Some(Content::Interior(children)), Some(NodeKind::Interior)) => {
                    for name in self.child_names(&tx.principal, Some(tx.id), uri).await? {
                        self.delete_node(tx, &uri.join_name(&name)).await?;
                    }
                    self.add_children(tx, uri, children).await?;
                }
                (content, None) => {
                    self.ensure_ancestors(tx, uri).await?;
                    match content {
                        Some(Content::Leaf(v)) => self.add_node(tx, uri, NewNode::Leaf(v)).await?,
                        Some(Content::Interior(children)) => {
                            self.add_node(tx, uri, NewNode::Interior).await?;
                            self.add_children(tx, uri, children).await?;
                        }
                        None => self.add_node(tx, uri, NewNode::Interior).await?,
                    }
                }
                (None, Some(_)) => {}
            }
            if !write.props.is_empty() {
                self.set_props(tx, uri, write.props).await?;
            }
            if let Some(acl) = write.acl {
                self.set_acl(tx, uri, acl)?;
            }
            self.outcome(tx, uri, created).await
        })
    }

    async fn add_children(&self, tx: &mut TxState, parent: &Uri, children: Vec<(String, Content)>) -> Result<()> {
        for (name, content) in children {
            let child = parent.child(&name, self.limits())?;
            self.op_put(tx, &child, Write { content: Some(content), ..Write::default() }).await?;
        }
        Ok(())
    }

    /// Creates the missing interior ancestors of `uri`, top-down.
    async fn ensure_ancestors(&self, tx: &mut TxState, uri: &Uri) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = uri.parent();
        while let Some(p) = cur {
            if self.lookup(&tx.principal, Some(tx.id), &p).await?.is_some() {
                break;
            }
            cur = p.parent();
            missing.push(p);
        }
        for p in missing.into_iter().rev() {
            self.add_node(tx, &p, NewNode::Interior).await?;
        }
        Ok(())
    }

    async fn add_node(&self, tx: &mut TxState, uri: &Uri, node: NewNode) -> Result<()> {
        let parent = uri.parent().ok_or_else(|| DmtError::exists(uri))?;
        self.require(&tx.principal, &parent, Permission::Add)?;
        let (mount, rel, meta) = self.meta(&tx.principal, Some(tx.id), uri).await?;
        if rel.is_root() {
            return Err(DmtError::exists(uri));
        }
        let v = |r: std::result::Result<(), crate::meta::MetaViolation>| r.map_err(|e| DmtError::meta(uri, e));
        v(meta.check_operation(Operation::Add))?;
        v(meta.check_kind(node.kind()))?;
        v(meta.check_name(uri.name().unwrap_or_default()))?;
        if let NewNode::Leaf(value) = &node {
            v(meta.check_value(value))?;
        }
        if meta.max_occurrence.is_some() {
            let siblings = self.child_names(&tx.principal, Some(tx.id), &parent).await?.len();
            v(meta.check_occurrence(siblings))?;
        }
        self.require_writable(tx, &mount, uri)?;
        let value = match &node {
            NewNode::Leaf(v) => Some(v.clone()),
            NewNode::Interior => None,
        };
        tx.touch(&mount);
        mount
            .handler
            .add(Self::cx(&tx.principal, Some(tx.id), &mount), &rel, node)
            .await
            .map_err(|e| e.with_uri(uri))?;
        tx.record(&mount, self.draft(EventKind::Added, uri, None).value(value));
        Ok(())
    }

    async fn replace_value(&self, tx: &mut TxState, uri: &Uri, value: Value) -> Result<()> {
        self.require(&tx.principal, uri, Permission::Replace)?;
        let (mount, rel, meta) = self.meta(&tx.principal, Some(tx.id), uri).await?;
        meta.check_operation(Operation::Replace).map_err(|e| DmtError::meta(uri, e))?;
        meta.check_value(&value).map_err(|e| DmtError::meta(uri, e))?;
        self.require_writable(tx, &mount, uri)?;
        tx.touch(&mount);
        let cx = Self::cx(&tx.principal, Some(tx.id), &mount);
        mount.handler.replace(cx, &rel, value.clone()).await.map_err(|e| e.with_uri(uri))?;
        tx.record(&mount, self.draft(EventKind::Replaced, uri, None).value(Some(value)));
        Ok(())
    }

    async fn set_props(&self, tx: &mut TxState, uri: &Uri, patch: PropsPatch) -> Result<()> {
        self.require(&tx.principal, uri, Permission::Replace)?;
        let (mount, rel, meta) = self.meta(&tx.principal, Some(tx.id), uri).await?;
        meta.check_operation(Operation::Replace).map_err(|e| DmtError::meta(uri, e))?;
        self.require_writable(tx, &mount, uri)?;
        tx.touch(&mount);
        let cx = Self::cx(&tx.principal, Some(tx.id), &mount);
        mount.handler.set_props(cx, &rel, patch).await.map_err(|e| e.with_uri(uri))?;
        tx.record(&mount, self.draft(EventKind::Replaced, uri, None));
        Ok(())
    }

    /// DMT Admin: changing a node's ACL needs Replace on its parent (the root's, on itself).
    fn set_acl(&self, tx: &mut TxState, uri: &Uri, acl: Option<Acl>) -> Result<()> {
        let governing = uri.parent().unwrap_or_default();
        self.require(&tx.principal, &governing, Permission::Replace)?;
        if uri.is_root() && acl.is_none() {
            return Err(DmtError::not_allowed(uri, "the root must keep an ACL"));
        }
        tx.acls.push((uri.clone(), acl));
        Ok(())
    }

    async fn delete_node(&self, tx: &mut TxState, uri: &Uri) -> Result<()> {
        self.require(&tx.principal, uri, Permission::Delete)?;
        self.refuse_mounts_within(uri)?;
        let (mount, rel, meta) = self.meta(&tx.principal, Some(tx.id), uri).await?;
        meta.check_operation(Operation::Delete).map_err(|e| DmtError::meta(uri, e))?;
        self.require_writable(tx, &mount, uri)?;
        tx.touch(&mount);
        mount.handler.delete(Self::cx(&tx.principal, Some(tx.id), &mount), &rel).await.map_err(|e| e.with_uri(uri))?;
        let doomed =
            self.acls.read().entries().into_iter().filter(|(u, _)| uri.is_prefix_of(u)).map(|(u, _)| (u, None));
        tx.acls.extend(doomed);
        tx.record(&mount, self.draft(EventKind::Deleted, uri, None));
        Ok(())
    }

    async fn op_rename(&self, tx: &mut TxState, uri: &Uri, new_name: &str) -> Result<WriteOutcome> {
        validate_name(new_name, self.limits())?;
        let parent = uri.parent().ok_or_else(|| DmtError::not_allowed(uri, "the root cannot be renamed"))?;
        let to = parent.child(new_name, self.limits())?;
        self.require(&tx.principal, uri, Permission::Replace)?;
        self.refuse_mounts_within(uri)?;
        let (mount, rel, meta) = self.meta(&tx.principal, Some(tx.id), uri).await?;
        meta.check_operation(Operation::Replace).map_err(|e| DmtError::meta(uri, e))?;
        meta.check_name(new_name).map_err(|e| DmtError::meta(uri, e))?;
        self.require_writable(tx, &mount, uri)?;
        if rel.is_root() {
            return Err(DmtError::not_allowed(uri, "a mount point cannot be renamed"));
        }
        tx.touch(&mount);
        mount
            .handler
            .rename(Self::cx(&tx.principal, Some(tx.id), &mount), &rel, new_name)
            .await
            .map_err(|e| e.with_uri(uri))?;
        let moved: Vec<_> = self.acls.read().entries().into_iter().filter(|(u, _)| uri.is_prefix_of(u)).collect();
        for (old, acl) in moved {
            let new = old.rebase(uri, &to).unwrap_or_else(|| to.clone());
            tx.acls.push((old, None));
            tx.acls.push((new, Some((*acl).clone())));
        }
        tx.record(&mount, self.draft(EventKind::Renamed, uri, Some(&to)));
        self.outcome(tx, &to, true).await
    }

    async fn op_copy(&self, tx: &mut TxState, from: &Uri, to: &Uri) -> Result<WriteOutcome> {
        self.require(&tx.principal, from, Permission::Get)?;
        let parent = to.parent().ok_or_else(|| DmtError::exists(to))?;
        self.require(&tx.principal, &parent, Permission::Add)?;
        let (mount, from_rel, _) = self.meta(&tx.principal, Some(tx.id), from).await?;
        let (to_mount, to_rel, meta) = self.meta(&tx.principal, Some(tx.id), to).await?;
        if !Arc::ptr_eq(&mount, &to_mount) {
            return Err(DmtError::unsupported(to, "copy works within one handler"));
        }
        meta.check_operation(Operation::Add).map_err(|e| DmtError::meta(to, e))?;
        self.require_writable(tx, &mount, to)?;
        tx.touch(&mount);
        let cx = Self::cx(&tx.principal, Some(tx.id), &mount);
        mount.handler.copy(cx, &from_rel, &to_rel).await.map_err(|e| e.with_uri(to))?;
        tx.acls.extend(self.copied_acls(from, to, &parent));
        tx.record(&mount, self.draft(EventKind::Copied, from, Some(to)));
        self.outcome(tx, to, true).await
    }

    /// A copy carries the source's ACLs, narrowed to what the destination
    /// grants: it is never open to anyone who could not use both the source
    /// and the destination (a secret leaf copied under a public parent stays secret).
    fn copied_acls(&self, from: &Uri, to: &Uri, to_parent: &Uri) -> Vec<(Uri, Option<Acl>)> {
        let acls = self.acls.read();
        let destination = acls.effective(to_parent);
        let mut carried = vec![(to.clone(), Some(acls.effective(from).intersect(&destination)))];
        for (uri, acl) in acls.entries() {
            if from.is_prefix_of(&uri)
                && uri != *from
                && let Some(rebased) = uri.rebase(from, to)
            {
                carried.push((rebased, Some(acl.intersect(&destination))));
            }
        }
        carried
    }

    async fn op_exec(&self, tx: &mut TxState, uri: &Uri, data: Option<Json>) -> Result<Json> {
        self.require(&tx.principal, uri, Permission::Exec)?;
        let (mount, rel, meta) = self.meta(&tx.principal, Some(tx.id), uri).await?;
        meta.check_operation(Operation::Exec).map_err(|e| DmtError::meta(uri, e))?;
        let out = mount
            .handler
            .exec(Self::cx(&tx.principal, Some(tx.id), &mount), &rel, data)
            .await
            .map_err(|e| e.with_uri(uri))?;
        tx.record(&mount, self.draft(EventKind::Exec, uri, None));
        Ok(out)
    }

    /// Atomic sessions may only write to handlers that can roll back.
    fn require_writable(&self, tx: &TxState, mount: &Mount, uri: &Uri) -> Result<()> {
        if tx.atomic && !mount.handler.transactional() {
            return Err(DmtError::unsupported(
                uri,
                format!("the {} handler cannot join atomic sessions", mount.handler.kind()),
            ));
        }
        Ok(())
    }

    fn refuse_mounts_within(&self, uri: &Uri) -> Result<()> {
        let table = self.mounts.load();
        if table.iter().any(|m| uri.is_prefix_of(&m.at)) {
            return Err(DmtError::not_allowed(uri, format!("{uri} is or contains a mount point; unmount it instead")));
        }
        Ok(())
    }

    // ---- sessions ----

    pub async fn open_session(
        &self,
        principal: &Principal,
        root: &Uri,
        mode: LockMode,
        lock_timeout: Option<Duration>,
    ) -> Result<SessionInfo> {
        // Sessions hold server resources (and locks): only named principals get them.
        if matches!(principal, Principal::Anonymous) {
            return Err(DmtError::denied(root, principal, Permission::Replace));
        }
        self.require(principal, root, Permission::Get)?;
        // A lock blocks every writer of the subtree, so it needs the right to
        // change the subtree itself (Replace), not merely to add to it: `Add=*`
        // on ./subscriptions must not let anyone lock it.
        if mode != LockMode::Shared {
            self.require(principal, root, Permission::Replace)?;
        }
        let held = self.sessions.lock().values().filter(|s| &s.info.principal == principal).count();
        if held >= self.config.max_sessions_per_principal {
            return Err(DmtError::limit(
                root,
                format!("{principal} already holds {held} open sessions; close one first"),
            ));
        }
        if self.lookup(principal, None, root).await?.is_none() {
            return Err(DmtError::not_found(root));
        }
        let timeout = lock_timeout.unwrap_or(self.config.lock_timeout);
        // Shared sessions only read: they never block writers, so they take no lock.
        let lock = match mode {
            LockMode::Shared => None,
            _ => Some(self.locks.acquire(root, true, timeout).await?),
        };
        let info = SessionInfo {
            id: uuid::Uuid::new_v4().simple().to_string(),
            principal: principal.clone(),
            root: root.clone(),
            mode,
            opened: Utc::now(),
            idle_timeout: self.config.session_idle_timeout,
        };
        let state = match mode {
            LockMode::Atomic => {
                SessionState::Atomic(TxState::atomic(self.next_tx(), principal.clone(), info.id.clone()))
            }
            _ => SessionState::PerOperation,
        };
        self.sessions.lock().insert(info.id.clone(), Arc::new(Session::new(info.clone(), state, lock)));
        self.log.publish(vec![self.session_event(EventKind::SessionOpened, &info)]);
        Ok(info)
    }

    fn session_event(&self, kind: EventKind, info: &SessionInfo) -> EventDraft {
        // Only the owner (and admin) learns of a session.
        EventDraft::new(kind, info.root.clone())
            .read_rule(ReadRule::only(&info.principal))
            .principal(info.principal.name())
            .session(Some(info.id.clone()))
            .value(Some(Value::string(info.mode.as_str())))
    }

    /// A session the caller owns; anything else is "not found", so ids do not leak.
    fn session(&self, principal: &Principal, id: &str) -> Result<Arc<Session>> {
        let session = self.sessions.lock().get(id).cloned();
        match session {
            Some(s) if &s.info.principal == principal => {
                s.touch();
                Ok(s)
            }
            _ => Err(DmtError::SessionNotFound { id: id.chars().take(64).collect() }),
        }
    }

    pub fn session_info(&self, principal: &Principal, id: &str) -> Result<SessionInfo> {
        self.session(principal, id).map(|s| s.info.clone())
    }

    /// A session `viewer` may see: its own, or any for admin.
    pub fn visible_session(&self, viewer: &Principal, id: &str) -> Option<SessionInfo> {
        let sessions = self.sessions.lock();
        sessions.get(id).filter(|s| viewer.is_admin() || &s.info.principal == viewer).map(|s| s.info.clone())
    }

    /// The ids of the sessions `viewer` may see, sorted.
    pub fn visible_session_ids(&self, viewer: &Principal) -> Vec<String> {
        let sessions = self.sessions.lock();
        let mut ids: Vec<String> = sessions
            .values()
            .filter(|s| viewer.is_admin() || &s.info.principal == viewer)
            .map(|s| s.info.id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Commits an atomic session's transaction; the session stays open with a fresh one.
    pub async fn commit(self: &Arc<Self>, principal: &Principal, id: &str) -> Result<()> {
        let (tree, principal, id) = (self.clone(), principal.clone(), id.to_owned());
        finish(tokio::spawn(async move { tree.commit_now(&principal, &id).await })).await
    }

    async fn commit_now(&self, principal: &Principal, id: &str) -> Result<()> {
        let session = self.session(principal, id)?;
        let mut state = session.state.lock().await;
        let fresh = SessionState::Atomic(TxState::atomic(self.next_tx(), principal.clone(), id.to_owned()));
        match std::mem::replace(&mut *state, fresh) {
            SessionState::Atomic(tx) => {
                let result = self.commit_tx(tx).await;
                if let Err(e) = &result {
                    *state = SessionState::Invalid(e.to_string());
                }
                result
            }
            SessionState::Invalid(why) => {
                *state = SessionState::Invalid(why.clone());
                Err(DmtError::transaction(&session.info.root, format!("the session was rolled back: {why}")))
            }
            SessionState::PerOperation => {
                *state = SessionState::PerOperation;
                Err(DmtError::not_allowed(&session.info.root, "only atomic sessions commit"))
            }
        }
    }

    /// Rolls back an atomic session's transaction; the session stays open and valid.
    pub async fn rollback(self: &Arc<Self>, principal: &Principal, id: &str) -> Result<()> {
        let (tree, principal, id) = (self.clone(), principal.clone(), id.to_owned());
        finish(tokio::spawn(async move { tree.rollback_now(&principal, &id).await })).await
    }

    async fn rollback_now(&self, principal: &Principal, id: &str) -> Result<()> {
        let session = self.session(principal, id)?;
        let mut state = session.state.lock().await;
        let fresh = SessionState::Atomic(TxState::atomic(self.next_tx(), principal.clone(), id.to_owned()));
        match std::mem::replace(&mut *state, fresh) {
            SessionState::Atomic(tx) => {
                self.abort(tx).await;
                Ok(())
            }
            SessionState::Invalid(_) => Ok(()),
            SessionState::PerOperation => {
                *state = SessionState::PerOperation;
                Err(DmtError::not_allowed(&session.info.root, "only atomic sessions roll back"))
            }
        }
    }

    /// Closes a session. As in DMT Admin, closing an atomic session commits it.
    pub async fn close(self: &Arc<Self>, principal: &Principal, id: &str) -> Result<()> {
        let (tree, principal, id) = (self.clone(), principal.clone(), id.to_owned());
        finish(tokio::spawn(async move { tree.close_now(&principal, &id).await })).await
    }

    async fn close_now(&self, principal: &Principal, id: &str) -> Result<()> {
        // The owner closes its session; admin may end anyone's.
        let found = self.sessions.lock().get(id).cloned();
        let session = match found {
            Some(s) if principal.is_admin() => s,
            _ => self.session(principal, id)?,
        };
        let result = match std::mem::replace(&mut *session.state.lock().await, SessionState::PerOperation) {
            SessionState::Atomic(tx) => self.commit_tx(tx).await,
            SessionState::Invalid(why) => {
                Err(DmtError::transaction(&session.info.root, format!("nothing was committed: {why}")))
            }
            SessionState::PerOperation => Ok(()),
        };
        self.sessions.lock().remove(id);
        self.log.publish(vec![self.session_event(EventKind::SessionClosed, &session.info)]);
        result
    }

    async fn expire_idle_sessions(&self) {
        let now = tokio::time::Instant::now();
        let expired: Vec<Arc<Session>> = {
            let mut sessions = self.sessions.lock();
            let ids: Vec<String> =
                sessions.values().filter(|s| s.idle_expired(now)).map(|s| s.info.id.clone()).collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for session in expired {
            if let SessionState::Atomic(tx) =
                std::mem::replace(&mut *session.state.lock().await, SessionState::PerOperation)
            {
                self.abort(tx).await;
            }
            tracing::info!(session = %session.info.id, "idle session expired and rolled back");
            self.log.publish(vec![self.session_event(EventKind::SessionClosed, &session.info)]);
        }
    }
}

/// Awaits work that must not be cut off by its caller going away.
async fn finish<T>(task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "transaction task failed");
        Err(DmtError::transaction(&Uri::root(), "the transaction failed inside the server"))
    })
}

async fn reap_idle_sessions(tree: std::sync::Weak<Tree>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(tree) = tree.upgrade() else { return };
        tree.expire_idle_sessions().await;
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "security_tests.rs"]
mod security_tests;
