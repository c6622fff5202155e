//! Push subscriptions, so they survive a restart and resume where their
//! transport last confirmed delivery.

use sqlx::Row;

use crate::{SqliteState, StateError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    pub id: String,
    /// The subscription's JSON, as the push layer defines it.
    pub spec: String,
    /// The last revision delivered and confirmed.
    pub position: u64,
}

impl SqliteState {
    pub async fn subscriptions(&self) -> Result<Vec<StoredSubscription>, StateError> {
        let rows = sqlx::query("SELECT id, spec, position FROM subscriptions ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredSubscription {
                id: r.get("id"),
                spec: r.get("spec"),
                position: r.get::<i64, _>("position") as u64,
            })
            .collect())
    }

    pub async fn add_subscription(&self, sub: &StoredSubscription, created_ms: i64) -> Result<(), StateError> {
        let StoredSubscription { id, spec, position } = sub.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO subscriptions (id, spec, position, created_ms) VALUES (?1, ?2, ?3, ?4)",
                (id, spec, position as i64, created_ms),
            )
            .map(drop)
        })
        .await
    }

    pub async fn remove_subscription(&self, id: &str) -> Result<(), StateError> {
        let id = id.to_owned();
        self.write(move |c| c.execute("DELETE FROM subscriptions WHERE id = ?1", [id]).map(drop)).await
    }

    /// Records confirmed positions, all in one transaction.
    pub async fn save_positions(&self, positions: &[(String, u64)]) -> Result<(), StateError> {
        if positions.is_empty() {
            return Ok(());
        }
        let positions = positions.to_vec();
        self.write(move |c| {
            let mut update =
                c.prepare_cached("UPDATE subscriptions SET position = ?2 WHERE id = ?1 AND position < ?2")?;
            for (id, position) in positions {
                update.execute((id, position as i64))?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    #[tokio::test]
    async fn subscriptions_round_trip_and_positions_only_advance() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(&dir.path().join("s.db"), Durability::Fsync).await.unwrap();
        let sub = StoredSubscription { id: "s1".into(), spec: "{}".into(), position: 5 };
        state.add_subscription(&sub, 1).await.unwrap();
        state.save_positions(&[("s1".into(), 9)]).await.unwrap();
        state.save_positions(&[("s1".into(), 7)]).await.unwrap();
        assert_eq!(state.subscriptions().await.unwrap()[0].position, 9);
        state.remove_subscription("s1").await.unwrap();
        assert!(state.subscriptions().await.unwrap().is_empty());
    }
}
