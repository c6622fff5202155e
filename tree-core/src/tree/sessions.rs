//! Sessions: shared (no lock), exclusive and atomic (a subtree lock), owned
//! by the named principal that opened them, closed or expired when idle.

use super::*;

impl Tree {
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

    pub(super) fn session_event(&self, kind: EventKind, info: &SessionInfo) -> EventDraft {
        // Only the owner (and admin) learns of a session.
        EventDraft::new(kind, info.root.clone())
            .read_rule(ReadRule::only(&info.principal))
            .principal(info.principal.name())
            .session(Some(info.id.clone()))
            .value(Some(Value::string(info.mode.as_str())))
    }

    /// A session the caller owns; anything else is "not found", so ids do not leak.
    pub(super) fn session(&self, principal: &Principal, id: &str) -> Result<Arc<Session>> {
        let session = self.sessions.lock().get(id).cloned();
        match session {
            Some(s) if &s.info.principal == principal => {
                s.touch();
                Ok(s)
            }
            _ => Err(DmtError::session_not_found(id)),
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

    pub(super) async fn commit_now(&self, principal: &Principal, id: &str) -> Result<()> {
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

    pub(super) async fn rollback_now(&self, principal: &Principal, id: &str) -> Result<()> {
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

    pub(super) async fn close_now(&self, principal: &Principal, id: &str) -> Result<()> {
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

    pub(super) async fn expire_idle_sessions(&self) {
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

pub(super) async fn reap_idle_sessions(tree: std::sync::Weak<Tree>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(tree) = tree.upgrade() else { return };
        tree.expire_idle_sessions().await;
    }
}
