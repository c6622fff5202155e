//! DMT Admin sessions: shared (read-only), exclusive (locks its subtree) and
//! atomic (locks its subtree, all-or-nothing across handlers).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::acl::{Acl, Principal};
use crate::event::EventDraft;
use crate::handler::TxId;
use crate::lock::LockGuard;
use crate::mount::Mount;
use crate::uri::Uri;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Shared,
    Exclusive,
    Atomic,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
            LockMode::Atomic => "atomic",
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LockMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shared" => Ok(LockMode::Shared),
            "exclusive" => Ok(LockMode::Exclusive),
            "atomic" => Ok(LockMode::Atomic),
            other => Err(format!("unknown lock mode {other:?}; expected shared, exclusive or atomic")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub principal: Principal,
    pub root: Uri,
    pub mode: LockMode,
    pub opened: DateTime<Utc>,
    pub idle_timeout: Duration,
}

/// The work of one transaction: which handlers it touched, and what it will
/// publish and persist on commit.
pub(crate) struct TxState {
    pub id: TxId,
    pub principal: Principal,
    pub session: Option<String>,
    /// Part of an atomic session: only transactional handlers may be written.
    pub atomic: bool,
    pub touched: Vec<Arc<Mount>>,
    pub events: Vec<EventDraft>,
    pub acls: Vec<(Uri, Option<Acl>)>,
}

impl TxState {
    pub fn new(id: TxId, principal: Principal, session: Option<String>) -> Self {
        Self { id, principal, session, atomic: false, touched: Vec::new(), events: Vec::new(), acls: Vec::new() }
    }

    pub fn atomic(id: TxId, principal: Principal, session: String) -> Self {
        Self { atomic: true, ..Self::new(id, principal, Some(session)) }
    }

    /// Called before each write to a handler, so that one failing half-way is rolled back too.
    pub fn touch(&mut self, mount: &Arc<Mount>) {
        if !self.touched.iter().any(|m| Arc::ptr_eq(m, mount)) {
            self.touched.push(mount.clone());
        }
    }

    /// Records the event of a change made through `mount`, unless its handler
    /// reports its changes itself (a remote's arrive over its event bridge).
    pub fn record(&mut self, mount: &Mount, draft: EventDraft) {
        if mount.handler.reports_own_changes() {
            return;
        }
        let draft = draft.principal(self.principal.name()).session(self.session.clone());
        self.events.push(draft);
    }
}

pub(crate) enum SessionState {
    /// Shared and exclusive sessions: each write is its own transaction.
    PerOperation,
    /// Atomic sessions: one transaction until commit or rollback.
    Atomic(TxState),
    /// An atomic session whose transaction failed and was rolled back.
    Invalid(String),
}

pub(crate) struct Session {
    pub info: SessionInfo,
    pub state: tokio::sync::Mutex<SessionState>,
    last_used: Mutex<Instant>,
    /// `None` for shared sessions, which never block writers.
    _lock: Option<LockGuard>,
}

impl Session {
    pub fn new(info: SessionInfo, state: SessionState, lock: Option<LockGuard>) -> Self {
        Self { info, state: tokio::sync::Mutex::new(state), last_used: Mutex::new(Instant::now()), _lock: lock }
    }

    pub fn touch(&self) {
        *self.last_used.lock() = Instant::now();
    }

    pub fn idle_expired(&self, now: Instant) -> bool {
        now.duration_since(*self.last_used.lock()) > self.info.idle_timeout
    }
}
