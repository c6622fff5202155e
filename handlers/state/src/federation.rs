//! Mount and federation state: mounts made at run time, handlers' saved
//! configurations, grants, and event-bridge positions. Specs, configurations
//! and grants are JSON whose shape the API layer owns.

use sqlx::Row;

use crate::{SqliteState, StateError};

/// A row of `mounts`, `handler_configs` or `federation_grants`: an id and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJson {
    pub id: String,
    pub json: String,
}

impl SqliteState {
    pub async fn mounts(&self) -> Result<Vec<StoredJson>, StateError> {
        self.stored("SELECT id, spec AS json FROM mounts ORDER BY created_ms, id").await
    }

    pub async fn add_mount(&self, id: &str, spec: &str, created_ms: i64) -> Result<(), StateError> {
        let (id, spec) = (id.to_owned(), spec.to_owned());
        self.write(move |c| {
            c.execute("INSERT INTO mounts (id, spec, created_ms) VALUES (?1, ?2, ?3)", (id, spec, created_ms)).map(drop)
        })
        .await
    }

    /// Forgets the mount, its saved configuration and where its bridge stopped.
    pub async fn remove_mount(&self, id: &str) -> Result<(), StateError> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute("DELETE FROM mounts WHERE id = ?1", [&id])?;
            c.execute("DELETE FROM handler_configs WHERE mount_id = ?1", [&id])?;
            c.execute("DELETE FROM bridge_positions WHERE mount_id = ?1", [&id]).map(drop)
        })
        .await
    }

    /// The configuration a handler saved through its `config` subtree.
    pub async fn handler_config(&self, id: &str) -> Result<Option<String>, StateError> {
        let row = sqlx::query("SELECT config FROM handler_configs WHERE mount_id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get("config")))
    }

    pub async fn save_handler_config(&self, id: &str, config: &str, updated_ms: i64) -> Result<(), StateError> {
        let (id, config) = (id.to_owned(), config.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO handler_configs (mount_id, config, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (mount_id) DO UPDATE SET config = excluded.config, updated_ms = excluded.updated_ms",
                (id, config, updated_ms),
            )
            .map(drop)
        })
        .await
    }

    pub async fn grants(&self) -> Result<Vec<StoredJson>, StateError> {
        self.stored("SELECT id, grant_json AS json FROM federation_grants ORDER BY created_ms, id").await
    }

    pub async fn add_grant(&self, id: &str, grant: &str, created_ms: i64) -> Result<(), StateError> {
        let (id, grant) = (id.to_owned(), grant.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO federation_grants (id, grant_json, created_ms) VALUES (?1, ?2, ?3)",
                (id, grant, created_ms),
            )
            .map(drop)
        })
        .await
    }

    pub async fn remove_grant(&self, id: &str) -> Result<(), StateError> {
        let id = id.to_owned();
        self.write(move |c| c.execute("DELETE FROM federation_grants WHERE id = ?1", [id]).map(drop)).await
    }

    /// Where the bridge of mount `id` stopped, if it was bridging from the same `remote`.
    pub async fn bridge_position(&self, id: &str, remote: &str) -> Result<Option<u64>, StateError> {
        let row = sqlx::query("SELECT position FROM bridge_positions WHERE mount_id = ?1 AND remote = ?2")
            .bind(id)
            .bind(remote)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>("position") as u64))
    }

    /// Records bridge positions `(mount id, remote, revision)`, all in one transaction.
    pub async fn save_bridge_positions(&self, positions: &[(String, String, u64)]) -> Result<(), StateError> {
        if positions.is_empty() {
            return Ok(());
        }
        let positions = positions.to_vec();
        self.write(move |c| {
            let mut upsert = c.prepare_cached(
                "INSERT INTO bridge_positions (mount_id, remote, position) VALUES (?1, ?2, ?3)
                 ON CONFLICT (mount_id) DO UPDATE SET remote = excluded.remote, position = excluded.position",
            )?;
            for (id, remote, position) in positions {
                upsert.execute((id, remote, position as i64))?;
            }
            Ok(())
        })
        .await
    }

    async fn stored(&self, sql: &'static str) -> Result<Vec<StoredJson>, StateError> {
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| StoredJson { id: r.get("id"), json: r.get("json") }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    #[tokio::test]
    async fn mounts_grants_and_positions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(&dir.path().join("s.db"), Durability::Fsync).await.unwrap();
        state.add_mount("b", "{\"at\":\"./sites/b\"}", 1).await.unwrap();
        assert!(state.add_mount("b", "{}", 2).await.is_err(), "ids are unique");
        state.add_grant("g1", "{\"principal\":\"site-a\"}", 1).await.unwrap();
        assert_eq!(state.grants().await.unwrap()[0].id, "g1");
        state.save_bridge_positions(&[("b".into(), "http://b ./x".into(), 42)]).await.unwrap();
        state.save_bridge_positions(&[("b".into(), "http://b ./x".into(), 43)]).await.unwrap();
        assert_eq!(state.bridge_position("b", "http://b ./x").await.unwrap(), Some(43));
        assert_eq!(state.bridge_position("b", "http://c ./x").await.unwrap(), None, "another remote: start afresh");
        state.save_handler_config("b", "{\"interval_ms\":1}", 1).await.unwrap();
        state.save_handler_config("b", "{\"interval_ms\":2}", 2).await.unwrap();
        assert_eq!(state.handler_config("b").await.unwrap().as_deref(), Some("{\"interval_ms\":2}"));
        state.remove_mount("b").await.unwrap();
        assert!(state.mounts().await.unwrap().is_empty());
        assert_eq!(state.handler_config("b").await.unwrap(), None);
        assert_eq!(state.bridge_position("b", "http://b ./x").await.unwrap(), None);
        state.remove_grant("g1").await.unwrap();
        assert!(state.grants().await.unwrap().is_empty());
    }
}
