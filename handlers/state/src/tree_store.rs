//! The tree's event journal and ACLs.

use std::sync::Arc;

use async_trait::async_trait;
use dmtree_core::event::JournalEntry;
use dmtree_core::{Acl, DmtError, Event, Result, TreeStore, TxId, Uri};
use sqlx::Row;

use crate::SqliteState;

fn failure(e: impl ToString) -> DmtError {
    DmtError::store(&Uri::root(), e)
}

#[async_trait]
impl TreeStore for SqliteState {
    async fn append_events(&self, events: &[Arc<Event>], settled: &[TxId]) -> Result<()> {
        let bodies =
            events.iter().map(|e| journal_body(e).map(|b| (e.revision as i64, b))).collect::<Result<Vec<_>>>()?;
        let settled: Vec<i64> = settled.iter().map(|t| t.0 as i64).collect();
        self.write(move |c| {
            let mut insert = c.prepare_cached("INSERT OR REPLACE INTO events (revision, body) VALUES (?1, ?2)")?;
            for row in bodies {
                insert.execute(row)?;
            }
            let mut settle = c.prepare_cached("DELETE FROM pending_events WHERE tx = ?1")?;
            for tx in settled {
                settle.execute([tx])?;
            }
            Ok(())
        })
        .await
        .map_err(failure)
    }

    async fn stage(&self, tx: TxId, acls: &[(Uri, Option<Acl>)], pending: &[Event]) -> Result<()> {
        let staged = Staged::new(tx, acls, pending)?;
        // Joins the handlers' unit, if there is one: durable with their changes.
        let joined = match self.prepared.lock().get_mut(&tx) {
            Some(unit) => {
                unit.push(move |c| staged.write(c));
                true
            }
            None => false,
        };
        // No SQLite change to pair with: only the ACLs need keeping.
        if joined || acls.is_empty() {
            return Ok(());
        }
        let acls = Staged::new(tx, acls, &[])?;
        self.write(move |c| acls.write(c)).await.map_err(failure)
    }

    async fn pending_events(&self) -> Result<Vec<(TxId, Event)>> {
        let rows = sqlx::query("SELECT tx, body FROM pending_events ORDER BY tx, seq")
            .fetch_all(&self.pool)
            .await
            .map_err(failure)?;
        rows.iter().map(|r| Ok((TxId(r.get::<i64, _>("tx") as u64), journal_event(r.get("body"))?))).collect()
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
        let staged = Staged::new(TxId(0), changes, &[])?;
        self.write(move |c| staged.write(c)).await.map_err(failure)
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

/// A transaction's ACL changes and pending events, as rows.
struct Staged {
    tx: i64,
    /// `(uri key, ACL text or None to clear)`.
    acls: Vec<(Vec<u8>, Option<String>)>,
    pending: Vec<String>,
}

impl Staged {
    fn new(tx: TxId, acls: &[(Uri, Option<Acl>)], pending: &[Event]) -> Result<Self> {
        Ok(Self {
            tx: tx.0 as i64,
            acls: acls.iter().map(|(u, a)| (u.key().as_bytes().to_vec(), a.as_ref().map(Acl::to_string))).collect(),
            pending: pending.iter().map(journal_body).collect::<Result<_>>()?,
        })
    }

    fn write(self, c: &rusqlite::Connection) -> rusqlite::Result<()> {
        for (key, acl) in self.acls {
            match acl {
                Some(acl) => {
                    c.prepare_cached("INSERT OR REPLACE INTO acls (uri, acl) VALUES (?1, ?2)")?.execute((key, acl))
                }
                None => c.prepare_cached("DELETE FROM acls WHERE uri = ?1")?.execute([key]),
            }?;
        }
        let mut insert =
            c.prepare_cached("INSERT OR REPLACE INTO pending_events (tx, seq, body) VALUES (?1, ?2, ?3)")?;
        for (seq, body) in self.pending.into_iter().enumerate() {
            insert.execute((self.tx, seq as i64, body))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dmtree_core::acl::AclTable;
    use dmtree_core::{
        Acl, DataHandler, Event, EventKind, EventLog, EventLogConfig, NewNode, OpContext, Principal, ReadRule,
        TreeStore, TxId, Uri, UriLimits, Value,
    };
    use parking_lot::RwLock;

    use crate::{ConfigStore, Durability, SqliteState};

    /// A crash after the SQLite commit but before the journal append: the
    /// change, its ACL and its (still unnumbered) event committed together,
    /// and the log journals the event when it opens.
    #[tokio::test]
    async fn events_staged_with_a_commit_are_journaled_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let admin = Principal::named("admin");
        let uri = Uri::parse("./s", &UriLimits::default()).unwrap();
        let secret: Acl = "Get=admin".parse().unwrap();
        {
            let state = SqliteState::open(&path, Durability::Fsync).await.unwrap();
            let store = ConfigStore::open(state.clone(), Vec::new()).await.unwrap();
            let cx = OpContext { principal: &admin, tx: Some(TxId(9)) };
            store.add(cx, &uri, NewNode::Leaf(Value::string("SECRET"))).await.unwrap();
            store.prepare(TxId(9)).await.unwrap();
            let event = Event {
                revision: 0,
                timestamp: chrono::Utc::now(),
                kind: EventKind::Added,
                uri: uri.clone(),
                to: None,
                principal: Some("admin".into()),
                format: Some(dmtree_core::Format::String),
                value: Some(serde_json::json!("SECRET")),
                session: None,
                via: Vec::new(),
                read: ReadRule::only(&admin),
            };
            state.stage(TxId(9), &[(uri.clone(), Some(secret.clone()))], &[event]).await.unwrap();
            store.commit(TxId(9)).await.unwrap();
            // ...and the process dies here, before the journal append.
        }
        let state = Arc::new(SqliteState::open(&path, Durability::Fsync).await.unwrap());
        assert_eq!(state.load_acls().await.unwrap(), vec![(uri.clone(), secret)], "the ACL committed with the node");
        let acls = Arc::new(RwLock::new(AclTable::new(Acl::default_root())));
        let log = EventLog::open(state.clone(), EventLogConfig::default(), acls.clone()).await.unwrap();
        assert_eq!(log.head(), 1);
        let journaled = state.read_events(0, 10).await.unwrap();
        assert_eq!((journaled[0].uri.clone(), journaled[0].value.clone()), (uri, Some(serde_json::json!("SECRET"))));
        assert!(!journaled[0].read.permits(&Principal::Anonymous), "the read rule survives the journal");
        assert!(state.pending_events().await.unwrap().is_empty(), "settled");
        drop(log);
        let again = EventLog::open(state.clone(), EventLogConfig::default(), acls).await.unwrap();
        assert_eq!(again.head(), 1, "journaled once");
    }
}
