//! Where the tree keeps its own state: the event journal and the ACLs.
//! The embedded default is SQLite (in `dmtree-state`); the in-memory
//! store here serves tests and embedders that need no persistence.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::acl::Acl;
use crate::error::Result;
use crate::event::Event;
use crate::handler::TxId;
use crate::uri::Uri;

#[async_trait]
pub trait TreeStore: Send + Sync + 'static {
    /// Journals events and, in the same transaction, forgets the pending
    /// events staged by the `settled` transactions.
    async fn append_events(&self, events: &[Arc<Event>], settled: &[TxId]) -> Result<()>;
    /// Called between a transaction's prepare and commit: makes its ACL
    /// changes and its events (not yet numbered) durable together with the
    /// handlers' own writes, inside their open transaction where the store
    /// shares it (SQLite). A crash after commit then loses no event: the log
    /// journals what is still pending when it opens.
    async fn stage(&self, tx: TxId, acls: &[(Uri, Option<Acl>)], pending: &[Event]) -> Result<()>;
    /// Events staged by transactions that committed but were not journaled.
    async fn pending_events(&self) -> Result<Vec<(TxId, Event)>>;
    /// Up to `limit` events with revision greater than `after`, in order.
    async fn read_events(&self, after: u64, limit: usize) -> Result<Vec<Event>>;
    /// The highest stored revision (0 when empty).
    async fn head_revision(&self) -> Result<u64>;
    /// Forgets events with revision up to and including `up_to`.
    async fn prune_events(&self, up_to: u64) -> Result<()>;
    /// Sets (`Some`) or clears (`None`) ACLs, all or nothing.
    async fn save_acls(&self, changes: &[(Uri, Option<Acl>)]) -> Result<()>;
    async fn load_acls(&self) -> Result<Vec<(Uri, Acl)>>;
}

#[derive(Default)]
pub struct MemoryTreeStore {
    events: Mutex<BTreeMap<u64, Event>>,
    acls: Mutex<HashMap<Uri, Acl>>,
}

#[async_trait]
impl TreeStore for MemoryTreeStore {
    async fn append_events(&self, events: &[Arc<Event>], _settled: &[TxId]) -> Result<()> {
        let mut map = self.events.lock();
        map.extend(events.iter().map(|e| (e.revision, (**e).clone())));
        Ok(())
    }

    /// Nothing here outlives the process, so only the ACLs need keeping.
    async fn stage(&self, _tx: TxId, acls: &[(Uri, Option<Acl>)], _pending: &[Event]) -> Result<()> {
        self.save_acls(acls).await
    }

    async fn pending_events(&self) -> Result<Vec<(TxId, Event)>> {
        Ok(Vec::new())
    }

    async fn read_events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let map = self.events.lock();
        Ok(map.range(after + 1..).take(limit).map(|(_, e)| e.clone()).collect())
    }

    async fn head_revision(&self) -> Result<u64> {
        Ok(self.events.lock().keys().next_back().copied().unwrap_or(0))
    }

    async fn prune_events(&self, up_to: u64) -> Result<()> {
        let mut map = self.events.lock();
        *map = map.split_off(&(up_to + 1));
        Ok(())
    }

    async fn save_acls(&self, changes: &[(Uri, Option<Acl>)]) -> Result<()> {
        let mut acls = self.acls.lock();
        for (uri, acl) in changes {
            match acl {
                Some(a) => acls.insert(uri.clone(), a.clone()),
                None => acls.remove(uri),
            };
        }
        Ok(())
    }

    async fn load_acls(&self) -> Result<Vec<(Uri, Acl)>> {
        Ok(self.acls.lock().iter().map(|(u, a)| (u.clone(), a.clone())).collect())
    }
}
