//! The tree's event journal and ACLs.

use std::sync::Arc;

use async_trait::async_trait;
use dmtree_core::{Acl, DmtError, Event, Result, TreeStore, Uri};
use sqlx::Row;

use crate::SqliteState;

fn failure(e: impl ToString) -> DmtError {
    DmtError::store(&Uri::root(), e)
}

#[async_trait]
impl TreeStore for SqliteState {
    async fn append_events(&self, events: &[Arc<Event>]) -> Result<()> {
        let bodies = events
            .iter()
            .map(|e| serde_json::to_string(&**e).map(|b| (e.revision as i64, b)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failure)?;
        let mut conn = self.writer.lock().await;
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(failure)?;
        for (revision, body) in bodies {
            sqlx::query("INSERT OR REPLACE INTO events (revision, body) VALUES (?1, ?2)")
                .bind(revision)
                .bind(body)
                .execute(&mut *tx)
                .await
                .map_err(failure)?;
        }
        tx.commit().await.map_err(failure)
    }

    async fn read_events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let rows = sqlx::query("SELECT body FROM events WHERE revision > ?1 ORDER BY revision LIMIT ?2")
            .bind(after as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(failure)?;
        rows.iter().map(|r| serde_json::from_str::<Event>(r.get("body")).map_err(failure)).collect()
    }

    async fn head_revision(&self) -> Result<u64> {
        let head: Option<i64> =
            sqlx::query_scalar("SELECT MAX(revision) FROM events").fetch_one(&self.pool).await.map_err(failure)?;
        Ok(head.unwrap_or(0) as u64)
    }

    async fn prune_events(&self, up_to: u64) -> Result<()> {
        let mut conn = self.writer.lock().await;
        sqlx::query("DELETE FROM events WHERE revision <= ?1")
            .bind(up_to as i64)
            .execute(&mut *conn)
            .await
            .map_err(failure)?;
        Ok(())
    }

    async fn save_acls(&self, changes: &[(Uri, Option<Acl>)]) -> Result<()> {
        let mut conn = self.writer.lock().await;
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(failure)?;
        for (uri, acl) in changes {
            let key = uri.key().as_bytes();
            let query = match acl {
                Some(acl) => sqlx::query("INSERT OR REPLACE INTO acls (uri, acl) VALUES (?1, ?2)")
                    .bind(key)
                    .bind(acl.to_string()),
                None => sqlx::query("DELETE FROM acls WHERE uri = ?1").bind(key),
            };
            query.execute(&mut *tx).await.map_err(failure)?;
        }
        tx.commit().await.map_err(failure)
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
