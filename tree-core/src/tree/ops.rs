//! The operations, node by node: each checks the ACL and the handler's meta
//! for its node, calls the handler inside the transaction, and records the
//! event and any ACL change for commit.

use super::*;

impl Tree {
    pub(super) async fn op_create(&self, tx: &mut TxState, parent: &Uri, request: &Json) -> Result<OpResult> {
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

    pub(super) async fn outcome(&self, tx: &TxState, uri: &Uri, created: bool) -> Result<WriteOutcome> {
        let version = self.lookup(&tx.principal, Some(tx.id), uri).await?.map_or(0, |n| n.props.version);
        Ok(WriteOutcome { uri: uri.clone(), created, version })
    }

    pub(super) fn op_put<'a>(
        &'a self,
        tx: &'a mut TxState,
        uri: &'a Uri,
        write: Write,
    ) -> BoxFuture<'a, Result<WriteOutcome>> {
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
            // Refused before anything is written: a handler outside the
            // transaction (rules) would otherwise keep a write whose ACL part failed.
            if write.acl.is_some() {
                self.require(&tx.principal, &uri.parent().unwrap_or_default(), Permission::Replace)?;
            }
            let created = existing.is_none();
            match (write.content, existing.as_ref().map(|n| n.kind)) {
                (Some(Content::Leaf(v)), Some(NodeKind::Leaf)) => self.replace_value(tx, uri, v).await?,
                (Some(Content::Leaf(v)), Some(NodeKind::Interior))
                    if self.meta(&tx.principal, Some(tx.id), uri).await?.2.takes_value() =>
                {
                    self.replace_value(tx, uri, v).await?
                }
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

    pub(super) async fn add_children(
        &self,
        tx: &mut TxState,
        parent: &Uri,
        children: Vec<(String, Content)>,
    ) -> Result<()> {
        for (name, content) in children {
            let child = parent.child(&name, self.limits())?;
            self.op_put(tx, &child, Write { content: Some(content), ..Write::default() }).await?;
        }
        Ok(())
    }

    /// Creates the missing interior ancestors of `uri`, top-down.
    pub(super) async fn ensure_ancestors(&self, tx: &mut TxState, uri: &Uri) -> Result<()> {
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
            match self.add_node(tx, &p, NewNode::Interior).await {
                // A write under a sibling added it since the lookup: the locks
                // let two writers share a missing ancestor, and either may add it.
                Err(e) if e.is(ErrorCode::NodeAlreadyExists) => {}
                r => r?,
            }
        }
        Ok(())
    }

    pub(super) async fn add_node(&self, tx: &mut TxState, uri: &Uri, node: NewNode) -> Result<()> {
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

    pub(super) async fn replace_value(&self, tx: &mut TxState, uri: &Uri, value: Value) -> Result<()> {
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

    pub(super) async fn set_props(&self, tx: &mut TxState, uri: &Uri, patch: PropsPatch) -> Result<()> {
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
    pub(super) fn set_acl(&self, tx: &mut TxState, uri: &Uri, acl: Option<Acl>) -> Result<()> {
        let governing = uri.parent().unwrap_or_default();
        self.require(&tx.principal, &governing, Permission::Replace)?;
        if uri.is_root() && acl.is_none() {
            return Err(DmtError::not_allowed(uri, "the root must keep an ACL"));
        }
        tx.acls.push((uri.clone(), acl));
        Ok(())
    }

    pub(super) async fn delete_node(&self, tx: &mut TxState, uri: &Uri) -> Result<()> {
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

    pub(super) async fn op_rename(&self, tx: &mut TxState, uri: &Uri, new_name: &str) -> Result<WriteOutcome> {
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

    pub(super) async fn op_copy(&self, tx: &mut TxState, from: &Uri, to: &Uri) -> Result<WriteOutcome> {
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
    pub(super) fn copied_acls(&self, from: &Uri, to: &Uri, to_parent: &Uri) -> Vec<(Uri, Option<Acl>)> {
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

    pub(super) async fn op_exec(&self, tx: &mut TxState, uri: &Uri, data: Option<Json>) -> Result<Json> {
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
    pub(super) fn require_writable(&self, tx: &TxState, mount: &Mount, uri: &Uri) -> Result<()> {
        if tx.atomic && !mount.handler.transactional() {
            return Err(DmtError::unsupported(
                uri,
                format!("the {} handler cannot join atomic sessions", mount.handler.kind()),
            ));
        }
        Ok(())
    }

    pub(super) fn refuse_mounts_within(&self, uri: &Uri) -> Result<()> {
        let table = self.mounts.load();
        if table.iter().any(|m| uri.is_prefix_of(&m.at)) {
            return Err(DmtError::not_allowed(uri, format!("{uri} is or contains a mount point; unmount it instead")));
        }
        Ok(())
    }
}
