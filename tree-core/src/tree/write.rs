//! The write engine: permission gates, the implicit or session transaction,
//! dispatch to the operations (`ops.rs`), and two-phase commit with ACLs and
//! events staged in the same durable transaction.

use super::*;

impl Tree {
    /// The cheap first gate of a write, on ACLs alone: the caller holds a
    /// right the operation needs. The full checks still follow, per node.
    pub(super) fn may_attempt(&self, principal: &Principal, op: &WriteOp) -> Result<()> {
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
    pub(super) fn require_blind(
        &self,
        principal: &Principal,
        uri: &Uri,
        governing: &Uri,
        perm: Permission,
    ) -> Result<()> {
        let acls = self.acls.read();
        if acls.permits(uri, principal, Permission::Get) || acls.permits(governing, principal, perm) {
            Ok(())
        } else {
            Err(DmtError::denied(governing, principal, perm))
        }
    }

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

    pub(super) fn written(&self, r: OpResult) -> Result<WriteOutcome> {
        match r {
            OpResult::Written(w) => Ok(w),
            _ => Err(DmtError::transaction(&Uri::root(), "the operation produced no node")),
        }
    }

    pub(super) fn next_tx(&self) -> TxId {
        TxId(self.next_tx.fetch_add(1, Ordering::Relaxed))
    }

    /// Runs a write to completion in its own task, even if the caller goes
    /// away: a transaction cut off between prepare and commit would leave a
    /// handler holding its store.
    pub(super) async fn write(self: &Arc<Self>, caller: &Caller<'_>, op: WriteOp) -> Result<OpResult> {
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
    pub(super) async fn write_now(&self, caller: &Caller<'_>, op: WriteOp) -> Result<OpResult> {
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
            return Err(DmtError::outside_session(&scope, &session.info.root));
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
    pub(super) async fn committed(&self, principal: &Principal, result: OpResult) -> Result<OpResult> {
        match result {
            OpResult::Written(mut out) if out.version > 0 => {
                out.version = self.lookup(principal, None, &out.uri).await?.map_or(0, |n| n.props.version);
                Ok(OpResult::Written(out))
            }
            other => Ok(other),
        }
    }

    /// One operation as its own transaction: commit on success, roll back on error.
    pub(super) async fn run_in(&self, tx: &mut TxState, op: WriteOp) -> Result<OpResult> {
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

    /// Two-phase commit: the handlers prepare; the store makes the changes,
    /// their ACLs and their (then numbered) events durable at once; the
    /// handlers show the changes; the events are delivered.
    pub(super) async fn commit_tx(&self, mut tx: TxState) -> Result<()> {
        for m in &tx.touched {
            if let Err(e) = m.handler.prepare(tx.id).await {
                tracing::warn!(error = %e, mount = %m.at, "prepare failed; rolling back");
                let at = m.at.clone();
                self.abort(tx).await;
                return Err(DmtError::transaction(&at, format!("prepare failed at {at}: {e}")));
            }
        }
        let (visible, shown) = tokio::sync::oneshot::channel();
        let (events, delivered) = match self.readable_after(std::mem::take(&mut tx.events), &tx.acls) {
            drafts if drafts.is_empty() => (None, None),
            drafts => {
                let (pending, delivered) = self.log.pending(drafts, Some(shown));
                (Some(pending), Some(delivered))
            }
        };
        // New ACLs are in force once durable, before the data they guard shows.
        let in_force = self.in_force(tx.acls.clone());
        let durable = match self.store.stage(tx.id, &tx.acls, events, in_force).await {
            Ok(()) => self.store.commit(tx.id).await,
            Err(e) => Err(e),
        };
        if let Err(e) = durable {
            self.store.abandon(tx.id).await;
            self.abort(tx).await;
            return Err(e);
        }
        for m in &tx.touched {
            if let Err(e) = m.handler.commit(tx.id).await {
                tracing::error!(error = %e, mount = %m.at, "commit failed after prepare");
                return Err(DmtError::transaction(&m.at, format!("commit failed at {}: {e}", m.at)));
            }
        }
        let _ = visible.send(());
        if let Some(delivered) = delivered {
            let _ = delivered.await;
        }
        Ok(())
    }

    /// Drafts that also need the ACLs their URIs will have once `changes`
    /// apply: an event never outlives the rights to read its node.
    fn readable_after(&self, drafts: Vec<EventDraft>, changes: &[(Uri, Option<Acl>)]) -> Vec<EventDraft> {
        if changes.is_empty() {
            return drafts; // sealing stamps the ACLs in force then, which are the same
        }
        let acls = self.acls.read();
        drafts
            .into_iter()
            .map(|d| {
                let after = acls.effective_with(changes, d.uri());
                let target = d.target().map(|to| acls.effective_with(changes, to));
                let d = d.readable_under(after);
                match target {
                    Some(acl) => d.readable_under(acl),
                    None => d,
                }
            })
            .collect()
    }

    /// Puts committed ACL changes in force (the store runs it once they are durable).
    fn in_force(&self, changes: Vec<(Uri, Option<Acl>)>) -> crate::store::InForce {
        let acls = self.acls.clone();
        Box::new(move || {
            let mut acls = acls.write();
            for (uri, acl) in changes {
                if let Err(e) = acls.set(&uri, acl) {
                    tracing::error!(error = %e, %uri, "a committed ACL could not be put in force");
                }
            }
        })
    }

    /// An event draft that also carries the ACLs governing its URIs now,
    /// before the transaction's changes: a deleted or renamed node's events
    /// keep the rights of the node they were about.
    pub(super) fn draft(&self, kind: EventKind, uri: &Uri, to: Option<&Uri>) -> EventDraft {
        let acls = self.acls.read();
        let mut draft = EventDraft::new(kind, uri.clone()).readable_under(acls.effective(uri));
        if let Some(to) = to {
            draft = draft.to(to.clone()).readable_under(acls.effective(to));
        }
        draft
    }

    pub(super) async fn abort(&self, tx: TxState) {
        for m in &tx.touched {
            m.handler.rollback(tx.id).await;
        }
    }

    pub(super) async fn run_op(&self, tx: &mut TxState, op: WriteOp) -> Result<OpResult> {
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
}
