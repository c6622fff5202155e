//! Where the tree keeps its own state: the event journal and the ACLs.
//! The embedded default is SQLite (in `dmtree-state`); the in-memory
//! store here serves tests and embedders that need no persistence.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::acl::Acl;
use crate::error::Result;
use crate::event::{Event, PendingEvents};
use crate::handler::TxId;
use crate::uri::Uri;

#[async_trait]
pub trait TreeStore: Send + Sync + 'static {
    /// Adds a transaction's ACL changes and events to what its
    /// [`commit`](Self::commit) makes durable, together with the handlers'
    /// own writes where the store shares their transaction (SQLite).
    /// `in_force` runs once they are durable, before anything the handlers
    /// show on that commit: it puts the new ACLs in force.
    async fn stage(
        &self,
        tx: TxId,
        acls: &[(Uri, Option<Acl>)],
        events: Option<PendingEvents>,
        in_force: InForce,
    ) -> Result<()>;
    /// The durable point of a transaction (after its handlers prepared):
    /// everything staged commits at once; the events are sealed as they are
    /// written and released once durable.
    async fn commit(&self, tx: TxId) -> Result<()>;
    /// Forgets what a transaction staged.
    async fn abandon(&self, tx: TxId);
    /// Seals, journals and releases events that belong to no transaction, in order.
    async fn journal(&self, events: Vec<PendingEvents>) -> Result<()>;
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

/// What a commit runs once durable, before its changes show.
pub type InForce = Box<dyn FnOnce() + Send>;

type Staged = (Vec<(Uri, Option<Acl>)>, Option<PendingEvents>, InForce);

#[derive(Default)]
pub struct MemoryTreeStore {
    events: Mutex<BTreeMap<u64, Event>>,
    acls: Mutex<HashMap<Uri, Acl>>,
    staged: Mutex<HashMap<TxId, Staged>>,
    /// Held from seal to release, so that releases follow seals.
    order: Mutex<()>,
}

impl MemoryTreeStore {
    fn write_events(&self, mut pending: PendingEvents) {
        let _order = self.order.lock();
        let sealed = pending.seal();
        self.events.lock().extend(sealed.iter().map(|e| (e.revision, (**e).clone())));
        pending.release();
    }
}

#[async_trait]
impl TreeStore for MemoryTreeStore {
    async fn stage(
        &self,
        tx: TxId,
        acls: &[(Uri, Option<Acl>)],
        events: Option<PendingEvents>,
        in_force: InForce,
    ) -> Result<()> {
        self.staged.lock().insert(tx, (acls.to_vec(), events, in_force));
        Ok(())
    }

    async fn commit(&self, tx: TxId) -> Result<()> {
        let Some((acls, events, in_force)) = self.staged.lock().remove(&tx) else { return Ok(()) };
        self.save_acls(&acls).await?;
        in_force();
        if let Some(events) = events {
            self.write_events(events);
        }
        Ok(())
    }

    async fn abandon(&self, tx: TxId) {
        self.staged.lock().remove(&tx);
    }

    async fn journal(&self, events: Vec<PendingEvents>) -> Result<()> {
        events.into_iter().for_each(|p| self.write_events(p));
        Ok(())
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
