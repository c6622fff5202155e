//! Bearer tokens are stored as SHA-256 hashes only; the token itself is shown once.

use sqlx::Row;

use crate::{SqliteState, StateError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub principal: String,
    pub label: Option<String>,
}

impl SqliteState {
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StateError> {
        let rows = sqlx::query("SELECT hash, principal, label FROM tokens").fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| TokenRecord { hash: r.get("hash"), principal: r.get("principal"), label: r.get("label") })
            .collect())
    }

    pub async fn add_token(&self, token: &TokenRecord, created_ms: i64) -> Result<(), StateError> {
        let TokenRecord { hash, principal, label } = token.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO tokens (hash, principal, label, created_ms) VALUES (?1, ?2, ?3, ?4)",
                (hash, principal, label, created_ms),
            )
            .map(drop)
        })
        .await
    }

    /// Revokes a token for good: forgets a stored one, and records the hash
    /// so that a configured one stays refused after restarts too.
    pub async fn revoke_token(&self, hash: &str, revoked_ms: i64) -> Result<(), StateError> {
        let hash = hash.to_owned();
        self.write(move |c| {
            c.execute("DELETE FROM tokens WHERE hash = ?1", [&hash])?;
            c.execute("INSERT OR REPLACE INTO revoked_tokens (hash, revoked_ms) VALUES (?1, ?2)", (&hash, revoked_ms))
                .map(drop)
        })
        .await
    }

    pub async fn revoked_tokens(&self) -> Result<Vec<String>, StateError> {
        let rows = sqlx::query("SELECT hash FROM revoked_tokens").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.get("hash")).collect())
    }

    /// Forgets the stored tokens with this label (the first-start `bootstrap` one).
    pub async fn remove_tokens_labelled(&self, label: &str) -> Result<u64, StateError> {
        let label = label.to_owned();
        self.write(move |c| c.execute("DELETE FROM tokens WHERE label = ?1", [label]).map(|n| n as u64)).await
    }
}
