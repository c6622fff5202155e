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
        let mut conn = self.writer.lock().await;
        sqlx::query("INSERT INTO tokens (hash, principal, label, created_ms) VALUES (?1, ?2, ?3, ?4)")
            .bind(&token.hash)
            .bind(&token.principal)
            .bind(&token.label)
            .bind(created_ms)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
