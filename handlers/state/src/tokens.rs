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
        self.write(async |conn| {
            sqlx::query("INSERT INTO tokens (hash, principal, label, created_ms) VALUES (?1, ?2, ?3, ?4)")
                .bind(&token.hash)
                .bind(&token.principal)
                .bind(&token.label)
                .bind(created_ms)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    }

    /// Revokes a token for good: forgets a stored one, and records the hash
    /// so that a configured one stays refused after restarts too.
    pub async fn revoke_token(&self, hash: &str, revoked_ms: i64) -> Result<(), StateError> {
        self.write(async |conn| {
            sqlx::query("DELETE FROM tokens WHERE hash = ?1").bind(hash).execute(&mut *conn).await?;
            sqlx::query("INSERT OR REPLACE INTO revoked_tokens (hash, revoked_ms) VALUES (?1, ?2)")
                .bind(hash)
                .bind(revoked_ms)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    }

    pub async fn revoked_tokens(&self) -> Result<Vec<String>, StateError> {
        let rows = sqlx::query("SELECT hash FROM revoked_tokens").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.get("hash")).collect())
    }

    /// Forgets the stored tokens with this label (the first-start `bootstrap` one).
    pub async fn remove_tokens_labelled(&self, label: &str) -> Result<u64, StateError> {
        self.write(async |conn| {
            let done = sqlx::query("DELETE FROM tokens WHERE label = ?1").bind(label).execute(&mut *conn).await?;
            Ok(done.rows_affected())
        })
        .await
    }
}
