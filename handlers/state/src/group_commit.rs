//! Group commit: every write to the state database is a [`Unit`] inside one
//! SQLite transaction that stays open across writers, and one `COMMIT` (one
//! fsync, in `fsync` durability) makes a whole batch durable. Each unit is a
//! savepoint, so a unit that fails is undone alone and its neighbours commit.
//!
//! A writer holds the connection only while it runs its statements (µs), and
//! waits for durability without it. The flusher commits when woken; writers
//! already queued on the connection's (FIFO) lock run first, so a busy server
//! commits as many units per fsync as there were writers waiting.

use std::sync::Arc;

use sqlx::SqliteConnection;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, oneshot};

use crate::StateError;

type Ack = oneshot::Sender<Result<(), Arc<str>>>;

/// The one writer connection and the batch open on it.
pub(crate) struct Writer {
    conn: SqliteConnection,
    /// Whether a transaction is open on `conn`.
    open: bool,
    /// A unit dropped half-way left its savepoint open; undone before the next one.
    abandoned: bool,
    /// Units that joined the open batch, to be told when it is durable.
    waiting: Vec<Ack>,
    /// Units committed per fsync, for the metrics.
    stats: BatchStats,
}

/// How well writes are grouped: batches committed and units in them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub batches: u64,
    pub units: u64,
}

#[derive(Clone)]
pub(crate) struct GroupCommit {
    writer: Arc<Mutex<Writer>>,
    wake: mpsc::UnboundedSender<()>,
}

impl GroupCommit {
    /// Starts the flusher; it stops when the last handle is dropped.
    pub(crate) fn start(conn: SqliteConnection) -> Self {
        let writer = Arc::new(Mutex::new(Writer {
            conn,
            open: false,
            abandoned: false,
            waiting: Vec::new(),
            stats: BatchStats::default(),
        }));
        let (wake, rx) = mpsc::unbounded_channel();
        tokio::spawn(flush_loop(writer.clone(), rx));
        Self { writer, wake }
    }

    /// Starts a unit in the open batch (opening one if needed).
    pub(crate) async fn unit(&self) -> Result<Unit, StateError> {
        let mut w = self.writer.clone().lock_owned().await;
        w.settle_abandoned().await?;
        if !w.open {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut w.conn).await?;
            w.open = true;
        }
        sqlx::query("SAVEPOINT unit").execute(&mut w.conn).await?;
        Ok(Unit { writer: Some(w), wake: self.wake.clone() })
    }

    pub(crate) async fn stats(&self) -> BatchStats {
        self.writer.lock().await.stats
    }
}

impl Writer {
    /// Undoes a unit left half-way. If even that fails, the whole batch is
    /// abandoned (and its units told so) rather than committed with it.
    async fn settle_abandoned(&mut self) -> Result<(), sqlx::Error> {
        if !std::mem::take(&mut self.abandoned) {
            return Ok(());
        }
        let undone = match sqlx::query("ROLLBACK TO unit").execute(&mut self.conn).await {
            Ok(_) => sqlx::query("RELEASE unit").execute(&mut self.conn).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = &undone {
            self.end_batch(Err(e.to_string().into())).await;
        }
        undone
    }

    /// Commits the open batch and tells every unit in it how it went.
    async fn flush(&mut self) {
        if let Err(e) = self.settle_abandoned().await {
            tracing::error!(error = %e, "state database batch abandoned");
            return;
        }
        if !self.open {
            return;
        }
        let outcome = sqlx::query("COMMIT").execute(&mut self.conn).await.map(drop).map_err(|e| e.to_string().into());
        self.end_batch(outcome).await;
    }

    async fn end_batch(&mut self, outcome: Result<(), Arc<str>>) {
        let waiting = std::mem::take(&mut self.waiting);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, units = waiting.len(), "state database commit failed");
            // SQLite may have rolled back already; the next batch must start clean.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
        self.open = false;
        self.stats.batches += 1;
        self.stats.units += waiting.len() as u64;
        for ack in waiting {
            let _ = ack.send(outcome.clone());
        }
    }
}

async fn flush_loop(writer: Arc<Mutex<Writer>>, mut wake: mpsc::UnboundedReceiver<()>) {
    let mut signals = Vec::new();
    while wake.recv_many(&mut signals, 4096).await > 0 {
        signals.clear();
        writer.lock().await.flush().await;
    }
}

/// One all-or-nothing write: a savepoint in the open batch, holding the
/// writer until [`commit`](Self::commit) or [`rollback`](Self::rollback).
pub(crate) struct Unit {
    writer: Option<OwnedMutexGuard<Writer>>,
    wake: mpsc::UnboundedSender<()>,
}

impl Unit {
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        // `writer` is only taken by `commit`/`rollback`, which consume the unit.
        &mut self.writer.as_mut().expect("a live unit holds the writer").conn
    }

    /// Keeps the unit's statements, lets the next writer in, and waits until
    /// the batch they joined is durable.
    pub(crate) async fn commit(mut self) -> Result<(), StateError> {
        let Some(mut w) = self.writer.take() else { return Ok(()) };
        if let Err(e) = sqlx::query("RELEASE unit").execute(&mut w.conn).await {
            w.abandoned = true;
            return Err(e.into());
        }
        let (ack, durable) = oneshot::channel();
        w.waiting.push(ack);
        drop(w);
        let _ = self.wake.send(());
        match durable.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StateError::Commit(e.to_string())),
            Err(_) => Err(StateError::Commit("the state database writer stopped".into())),
        }
    }

    /// Undoes the unit's statements; the rest of the batch is untouched.
    pub(crate) async fn rollback(mut self) {
        let Some(mut w) = self.writer.take() else { return };
        w.abandoned = true;
        if let Err(e) = w.settle_abandoned().await {
            tracing::error!(error = %e, "rolling back a state database unit failed");
        }
    }

    /// Runs `statements` in a fresh unit and commits it.
    pub(crate) async fn run<T>(
        group: &GroupCommit,
        statements: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, StateError> {
        let mut unit = group.unit().await?;
        match statements(unit.conn()).await {
            Ok(out) => unit.commit().await.map(|()| out),
            Err(e) => {
                unit.rollback().await;
                Err(e.into())
            }
        }
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            w.abandoned = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use crate::{Durability, SqliteState};

    async fn insert(state: &SqliteState, label: &str, hash: &str) -> Result<(), crate::StateError> {
        let mut unit = state.group.unit().await?;
        let inserted = sqlx::query("INSERT INTO tokens (hash, principal, label, created_ms) VALUES (?1, 'p', ?2, 0)")
            .bind(hash)
            .bind(label)
            .execute(unit.conn())
            .await;
        match inserted {
            Ok(_) => unit.commit().await,
            Err(e) => {
                unit.rollback().await;
                Err(e.into())
            }
        }
    }

    async fn labels(state: &SqliteState) -> Vec<String> {
        let rows = sqlx::query("SELECT label FROM tokens ORDER BY label").fetch_all(&state.pool).await.unwrap();
        rows.iter().map(|r| r.get("label")).collect()
    }

    /// Writers queued on the connection share one commit, and one that fails
    /// (here a duplicate key) is undone alone: its neighbours still commit.
    #[tokio::test(flavor = "current_thread")]
    async fn a_failing_unit_leaves_its_batch_neighbours_committed() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(&dir.path().join("s.db"), Durability::Fsync).await.unwrap();
        insert(&state, "first", "h0").await.unwrap();
        let before = state.batch_stats().await;
        let (a, dup, c) =
            tokio::join!(insert(&state, "a", "h1"), insert(&state, "dup", "h0"), insert(&state, "c", "h2"));
        assert!(a.is_ok() && c.is_ok(), "{a:?} {c:?}");
        assert!(dup.is_err(), "the duplicate key fails its own unit");
        let after = state.batch_stats().await;
        assert_eq!((after.batches - before.batches, after.units - before.units), (1, 2), "one fsync for both");
        assert_eq!(labels(&state).await, ["a", "c", "first"]);
    }

    /// A unit dropped without commit (its task cancelled) is undone before the
    /// next writer's statements, and never committed with them.
    #[tokio::test]
    async fn an_abandoned_unit_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(&dir.path().join("s.db"), Durability::Os).await.unwrap();
        {
            let mut unit = state.group.unit().await.unwrap();
            sqlx::query("INSERT INTO tokens (hash, principal, label, created_ms) VALUES ('x', 'p', 'lost', 0)")
                .execute(unit.conn())
                .await
                .unwrap();
        }
        insert(&state, "kept", "y").await.unwrap();
        assert_eq!(labels(&state).await, ["kept"]);
    }

    #[tokio::test]
    async fn concurrent_writers_are_grouped() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(&dir.path().join("s.db"), Durability::Fsync).await.unwrap();
        let writes = (0..64).map(|i| {
            let state = state.clone();
            tokio::spawn(async move { insert(&state, &format!("w{i:02}"), &format!("h{i}")).await })
        });
        for w in futures_util::future::join_all(writes).await {
            w.unwrap().unwrap();
        }
        let stats = state.batch_stats().await;
        assert_eq!(stats.units, 64);
        assert!(stats.batches < 64, "some writes shared a commit: {stats:?}");
        assert_eq!(labels(&state).await.len(), 64);
    }
}
