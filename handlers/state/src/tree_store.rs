//! The tree's event journal and ACLs.

use std::sync::Arc;

use async_trait::async_trait;
use dmtree_core::event::JournalEntry;
use dmtree_core::{Acl, DmtError, Event, InForce, PendingEvents, Result, TreeStore, TxId, Uri};
use sqlx::Row;

use crate::SqliteState;
use crate::group_commit::Unit;

fn failure(e: impl ToString) -> DmtError {
    DmtError::store(&Uri::root(), e)
}

#[async_trait]
impl TreeStore for SqliteState {
    async fn stage(
        &self,
        tx: TxId,
        acls: &[(Uri, Option<Acl>)],
        events: Option<PendingEvents>,
        in_force: InForce,
    ) -> Result<()> {
        let acls = acl_rows(acls);
        let mut prepared = self.prepared.lock();
        // Joins the handlers' unit if they prepared one: durable with their changes.
        let unit = prepared.entry(tx).or_default();
        if !acls.is_empty() {
            unit.push(move |c| write_acls(c, acls));
            // Ahead of the handlers' hooks, which show their changes.
            unit.then_first(move |committed| {
                if committed {
                    in_force();
                }
            });
        }
        if let Some(events) = events {
            journal_into(unit, events);
        }
        Ok(())
    }

    async fn commit(&self, tx: TxId) -> Result<()> {
        let unit = self.prepared.lock().remove(&tx);
        match unit {
            Some(unit) => self.group.commit(unit).await.map_err(failure),
            None => Ok(()),
        }
    }

    async fn abandon(&self, tx: TxId) {
        self.prepared.lock().remove(&tx);
    }

    async fn journal(&self, events: Vec<PendingEvents>) -> Result<()> {
        let mut unit = Unit::default();
        events.into_iter().for_each(|p| journal_into(&mut unit, p));
        self.group.commit(unit).await.map_err(failure)
    }

    async fn read_events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let rows = sqlx::query("SELECT body FROM events WHERE revision > ?1 ORDER BY revision LIMIT ?2")
            .bind(after as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(failure)?;
        rows.iter().map(|r| journal_event(r.get("body"))).collect()
    }

    async fn head_revision(&self) -> Result<u64> {
        let head: Option<i64> =
            sqlx::query_scalar("SELECT MAX(revision) FROM events").fetch_one(&self.pool).await.map_err(failure)?;
        Ok(head.unwrap_or(0) as u64)
    }

    async fn prune_events(&self, up_to: u64) -> Result<()> {
        self.write(move |c| c.execute("DELETE FROM events WHERE revision <= ?1", [up_to as i64]).map(drop))
            .await
            .map_err(failure)
    }

    async fn save_acls(&self, changes: &[(Uri, Option<Acl>)]) -> Result<()> {
        let rows = acl_rows(changes);
        self.write(move |c| write_acls(c, rows)).await.map_err(failure)
    }

    async fn load_acls(&self) -> Result<Vec<(Uri, Acl)>> {
        let rows = sqlx::query("SELECT uri, acl FROM acls").fetch_all(&self.pool).await.map_err(failure)?;
        rows.iter()
            .map(|r| {
                let key = String::from_utf8(r.get::<Vec<u8>, _>("uri")).map_err(failure)?;
                let acl: Acl = r.get::<String, _>("acl").parse().map_err(failure)?;
                Ok((Uri::from_key(key), acl))
            })
            .collect()
    }
}

fn journal_body(e: &Event) -> Result<String> {
    serde_json::to_string(&JournalEntry::from_event(e)).map_err(failure)
}

fn journal_event(body: &str) -> Result<Event> {
    serde_json::from_str::<JournalEntry>(body).map(JournalEntry::into_event).map_err(failure)
}

/// `(uri key, ACL text or None to clear)`.
type AclRow = (Vec<u8>, Option<String>);

fn acl_rows(changes: &[(Uri, Option<Acl>)]) -> Vec<AclRow> {
    changes.iter().map(|(u, a)| (u.key().as_bytes().to_vec(), a.as_ref().map(Acl::to_string))).collect()
}

fn write_acls(c: &rusqlite::Connection, rows: Vec<AclRow>) -> rusqlite::Result<()> {
    for (key, acl) in rows {
        match acl {
            Some(acl) => {
                c.prepare_cached("INSERT OR REPLACE INTO acls (uri, acl) VALUES (?1, ?2)")?.execute((key, acl))
            }
            None => c.prepare_cached("DELETE FROM acls WHERE uri = ?1")?.execute([key]),
        }?;
    }
    Ok(())
}

/// Adds events to a unit: numbered when the writer reaches them, so
/// revisions follow the journal; released (or their numbers given back)
/// once the unit's fate is known.
fn journal_into(unit: &mut Unit, events: PendingEvents) {
    let events = Arc::new(parking_lot::Mutex::new(Some(events)));
    let hook = events.clone();
    unit.push(move |c| {
        let mut guard = events.lock();
        let Some(pending) = guard.as_mut() else { return Ok(()) };
        let mut insert = c.prepare_cached("INSERT INTO events (revision, body) VALUES (?1, ?2)")?;
        for e in pending.seal() {
            let body = journal_body(e).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
            insert.execute((e.revision as i64, body))?;
        }
        Ok(())
    });
    unit.then(move |committed| {
        if let Some(pending) = hook.lock().take() {
            if committed { pending.release() } else { pending.unseal() }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dmtree_core::acl::AclTable;
    use dmtree_core::{
        Acl, DataHandler, EventDraft, EventKind, EventLog, EventLogConfig, NewNode, OpContext, Principal, ReadRule,
        TreeStore, TxId, Uri, UriLimits, Value,
    };
    use parking_lot::RwLock;

    use crate::{ConfigStore, Durability, SqliteState};

    fn acls() -> Arc<RwLock<AclTable>> {
        Arc::new(RwLock::new(AclTable::new(Acl::default_root())))
    }

    /// A change, its ACL and its event commit in one unit: once the commit
    /// returns, all three are on disk (the process may die at once), and the
    /// event got its revision there.
    #[tokio::test]
    async fn a_change_its_acl_and_its_event_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let admin = Principal::named("admin");
        let uri = Uri::parse("./s", &UriLimits::default()).unwrap();
        let secret: Acl = "Get=admin".parse().unwrap();
        {
            let state = Arc::new(SqliteState::open(&path, Durability::Fsync).await.unwrap());
            let log = EventLog::open(state.clone(), EventLogConfig::default(), acls()).await.unwrap();
            let store =
                ConfigStore::open((*state).clone(), Vec::new(), dmtree_core::nodemap::MAX_WRITE_NODES).await.unwrap();
            let cx = OpContext { principal: &admin, tx: Some(TxId(9)) };
            store.add(cx, &uri, NewNode::Leaf(Value::string("SECRET"))).await.unwrap();
            store.prepare(TxId(9)).await.unwrap();
            let draft = EventDraft::new(EventKind::Added, uri.clone())
                .value(Some(Value::string("SECRET")))
                .read_rule(ReadRule::only(&admin));
            let (events, _delivered) = log.pending(vec![draft], None);
            state.stage(TxId(9), &[(uri.clone(), Some(secret.clone()))], Some(events), Box::new(|| {})).await.unwrap();
            state.commit(TxId(9)).await.unwrap();
            // ...and the process dies here, before the handler shows the change.
        }
        let state = Arc::new(SqliteState::open(&path, Durability::Fsync).await.unwrap());
        let store =
            ConfigStore::open((*state).clone(), Vec::new(), dmtree_core::nodemap::MAX_WRITE_NODES).await.unwrap();
        let cx = OpContext { principal: &admin, tx: None };
        assert_eq!(store.get(cx, &uri).await.unwrap().value, Some(Value::string("SECRET")));
        assert_eq!(state.load_acls().await.unwrap(), vec![(uri.clone(), secret)], "the ACL committed with the node");
        let log = EventLog::open(state.clone(), EventLogConfig::default(), acls()).await.unwrap();
        assert_eq!(log.head(), 1);
        let journaled = state.read_events(0, 10).await.unwrap();
        assert_eq!((journaled[0].revision, journaled[0].uri.clone()), (1, uri));
        assert!(!journaled[0].read.permits(&Principal::Anonymous), "the read rule survives the journal");
    }

    /// A unit that fails gives its revisions back: the next events take
    /// them, so the journal has no hole.
    #[tokio::test]
    async fn a_failed_write_gives_its_revisions_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(SqliteState::open(&dir.path().join("s.db"), Durability::Os).await.unwrap());
        let log = EventLog::open(state.clone(), EventLogConfig::default(), acls()).await.unwrap();
        let draft = || EventDraft::new(EventKind::Replaced, Uri::from_key("x".to_owned()));
        assert_eq!(log.append(vec![draft()]).await, 1);
        let (events, delivered) = log.pending(vec![draft(), draft()], None);
        state.stage(TxId(1), &[], Some(events), Box::new(|| {})).await.unwrap();
        // A second batch in the same unit: both give their revisions back.
        let (more, _) = log.pending(vec![draft()], None);
        state.stage(TxId(1), &[], Some(more), Box::new(|| {})).await.unwrap();
        // A statement after the events that fails: the whole unit is undone.
        state
            .prepared
            .lock()
            .get_mut(&TxId(1))
            .unwrap()
            .push(|c| c.execute("INSERT INTO nowhere VALUES (1)", []).map(drop));
        assert!(state.commit(TxId(1)).await.is_err());
        assert!(delivered.await.is_err(), "never delivered");
        assert_eq!(log.append(vec![draft()]).await, 2, "revision 2 was given back");
        let revisions: Vec<u64> = state.read_events(0, 10).await.unwrap().iter().map(|e| e.revision).collect();
        assert_eq!(revisions, [1, 2]);
    }
}
