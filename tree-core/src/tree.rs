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
use serde_json::Value as Json;

use crate::acl::{Acl, AclTable, Permission, Principal, ReadRule};
use crate::error::{DmtError, ErrorCode, Result};
use crate::event::{Event, EventDraft, EventKind, EventLog, SharedAcls};
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

mod ops;
mod read;
mod request;
mod sessions;
mod write;

use sessions::reap_idle_sessions;

pub use request::{Caller, Content, NodeView, Precondition, Selection, TreeConfig, Versions, Write, WriteOutcome};
use request::{OpResult, Route, WriteOp};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

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
            return Err(DmtError::exists(&Uri::root().join_name("mounts").join_name(id)));
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
}

/// Awaits work that must not be cut off by its caller going away.
async fn finish<T>(task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "transaction task failed");
        Err(DmtError::transaction(&Uri::root(), "the transaction failed inside the server"))
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod security_tests;
