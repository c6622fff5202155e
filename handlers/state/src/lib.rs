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
//! arbitrate, and are group-committed ([`group_commit`]): concurrent writes
//! share one transaction and one fsync. Reads at start-up and journal replays
//! use a small pool.

mod codec;
mod config_store;
mod federation;
mod group_commit;
mod subscriptions;
mod tokens;
mod tree_store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dmtree_core::TxId;

use serde::Deserialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};

use group_commit::{GroupCommit, Unit};

pub use config_store::{ConfigStore, SchemaRule};
pub use federation::StoredJson;
pub use group_commit::BatchStats;
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
    #[error("state database commit failed: {0}")]
    Commit(String),
    #[error("cannot start the state database writer: {0}")]
    Writer(String),
}

/// What an acknowledged write survives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Each batch is fsynced before its writes are acknowledged (SQLite
    /// `synchronous=FULL`): a write survives a power loss or an OS crash.
    #[default]
    Fsync,
    /// Batches reach the OS, not the disk (`synchronous=NORMAL`): a write
    /// survives a crash of the process, not of the machine.
    Os,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Self::Fsync => "FULL",
            Self::Os => "NORMAL",
        }
    }
}

/// The SQLite database behind a dmtree server.
#[derive(Clone)]
pub struct SqliteState {
    /// Readers: start-up loads and journal replays.
    pool: SqlitePool,
    /// The one writer, group-committing.
    group: GroupCommit,
    /// Transactions between prepare and commit hold the writer in their own
    /// unit, which the tree's ACLs and events join.
    prepared: Arc<parking_lot::Mutex<HashMap<TxId, Unit>>>,
}

impl SqliteState {
    /// Opens (creating if needed) and migrates the database at `path`.
    /// Needs a tokio runtime (the group committer runs on it).
    pub async fn open(path: &Path, durability: Durability) -> Result<Self, StateError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .log_statements(tracing::log::LevelFilter::Trace);
        let open_err = |source| StateError::Open { path: path.display().to_string(), source };
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(open_err)?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let writer = writer_connection(path, durability).map_err(|e| StateError::Writer(e.to_string()))?;
        let group = GroupCommit::start(writer).map_err(|e| StateError::Writer(e.to_string()))?;
        Ok(Self { pool, group, prepared: Arc::default() })
    }

    /// How many batches the writer committed, holding how many writes.
    pub fn batch_stats(&self) -> BatchStats {
        self.group.stats()
    }

    /// Runs `statements` as one all-or-nothing write and waits until it is durable.
    async fn write<T: Send + 'static>(
        &self,
        statements: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let out = Arc::new(parking_lot::Mutex::new(None));
        let slot = out.clone();
        let mut unit = Unit::default();
        unit.push(move |conn| statements(conn).map(|t| *slot.lock() = Some(t)));
        self.group.commit(unit).await?;
        let value = out.lock().take();
        value.ok_or_else(|| StateError::Commit("the write produced no result".into()))
    }
}

/// The writer's own connection. Only it writes (the read pool runs the
/// migrations at open, before it starts); `durability` sets whether each
/// commit waits for the disk.
fn writer_connection(path: &Path, durability: Durability) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", durability.pragma())?;
    // Savepoints journal the pages they touch; in memory, not in a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}
