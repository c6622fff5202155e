//! The server's state store: everything a dmtree server keeps across restarts,
//! in one SQLite database in its data directory. It lives among the handlers
//! because one of its parts is a handler; the rest is the server's own state:
//!
//! - [`ConfigStore`], the built-in read-write handler (usually at `./config`),
//!   served from memory and written through to SQLite;
//! - the tree's event journal and ACLs ([`SqliteState`] implements `TreeStore`);
//! - bearer-token hashes ([`TokenRecord`]);
//! - push subscriptions and their delivery positions ([`StoredSubscription`]);
//! - federation: remote mounts, grants and event-bridge positions ([`StoredJson`]).
//!
//! All writes go through one connection, so SQLite never has two writers to
//! arbitrate; reads at start-up and journal replays use a small pool.

mod codec;
mod config_store;
mod federation;
mod subscriptions;
mod tokens;
mod tree_store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dmtree_core::TxId;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use config_store::{ConfigStore, SchemaRule};
pub use federation::StoredJson;
pub use subscriptions::StoredSubscription;
pub use tokens::TokenRecord;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("cannot migrate the state database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state database: {0}")]
    Sql(#[from] sqlx::Error),
}

/// The SQLite database behind a dmtree server.
#[derive(Clone)]
pub struct SqliteState {
    /// Readers: start-up loads and journal replays.
    pool: SqlitePool,
    /// The one writer.
    writer: Arc<Mutex<SqliteConnection>>,
    /// Transactions between prepare and commit hold the writer, inside an
    /// open SQLite transaction that the tree's ACLs and events join.
    prepared: Arc<parking_lot::Mutex<HashMap<TxId, OwnedMutexGuard<SqliteConnection>>>>,
}

impl SqliteState {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open(path: &Path) -> Result<Self, StateError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a committed transaction survives a process kill (not a power cut).
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .log_statements(tracing::log::LevelFilter::Trace);
        let open_err = |source| StateError::Open { path: path.display().to_string(), source };
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options.clone()).await.map_err(open_err)?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let writer = options.connect().await.map_err(open_err)?;
        Ok(Self { pool, writer: Arc::new(Mutex::new(writer)), prepared: Arc::default() })
    }
}
