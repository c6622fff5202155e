//! Reads: a node and its children to a depth, as the caller may see them,
//! inside the caller's atomic session when it has one.

use super::*;

impl Tree {
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
    pub(super) async fn read_context(&self, caller: &Caller<'_>, uri: &Uri) -> Result<Option<TxId>> {
        let Some(id) = caller.session else { return Ok(None) };
        let session = self.session(caller.principal, id)?;
        if !session.info.root.is_prefix_of(uri) {
            return Err(DmtError::outside_session(uri, &session.info.root));
        }
        Ok(match &*session.state.lock().await {
            SessionState::Atomic(tx) => Some(tx.id),
            _ => None,
        })
    }

    pub(super) fn read_view<'a>(
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
            // A large read finishes its work in turns, not in one: handlers
            // answer from memory without awaiting, so without this a read of
            // 100k nodes would hold a runtime worker (and the writes queued
            // on it) for its whole duration.
            tokio::task::consume_budget().await;
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
                        Err(e) if e.is(ErrorCode::NodeNotFound) => {}
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

    pub(super) fn cx<'a>(principal: &'a Principal, tx: Option<TxId>, mount: &Mount) -> OpContext<'a> {
        OpContext { principal, tx: tx.filter(|_| mount.handler.transactional()) }
    }

    /// The node at `uri`, or `None`. Scaffold nodes above mounts are interior.
    pub(super) async fn lookup(&self, principal: &Principal, tx: Option<TxId>, uri: &Uri) -> Result<Option<Node>> {
        match self.route(uri) {
            Route::Mounted(m, rel) => match m.handler.get(Self::cx(principal, tx, &m), &rel).await {
                Ok(node) => Ok(Some(node)),
                Err(e) if e.is(ErrorCode::NodeNotFound) && self.has_mounts_below(uri) => Ok(Some(Node::interior())),
                Err(e) if e.is(ErrorCode::NodeNotFound) => Ok(None),
                Err(e) => Err(e.with_uri(uri)),
            },
            Route::Scaffold if uri.is_root() || self.has_mounts_below(uri) => Ok(Some(Node::interior())),
            Route::Scaffold => Ok(None),
        }
    }

    pub(super) async fn child_names(&self, principal: &Principal, tx: Option<TxId>, uri: &Uri) -> Result<Vec<String>> {
        let mut names = match self.route(uri) {
            Route::Mounted(m, rel) => match m.handler.children(Self::cx(principal, tx, &m), &rel).await {
                Ok(names) => names,
                Err(e) if e.is(ErrorCode::NodeNotFound) => Vec::new(),
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

    pub(super) async fn meta(
        &self,
        principal: &Principal,
        tx: Option<TxId>,
        uri: &Uri,
    ) -> Result<(Arc<Mount>, Uri, Meta)> {
        match self.route(uri) {
            Route::Mounted(m, rel) => {
                let meta = m.handler.meta(Self::cx(principal, tx, &m), &rel).await.map_err(|e| e.with_uri(uri))?;
                Ok((m, rel, meta))
            }
            Route::Scaffold => Err(DmtError::not_allowed(uri, format!("no handler is mounted at or above {uri}"))),
        }
    }
}
