//! Group commit: every write to the state database is a [`Unit`] of
//! statements, run by one writer thread. The thread takes every unit queued
//! while it was busy, runs each in its own savepoint inside one transaction,
//! and commits them with one `COMMIT` (one fsync, in `fsync` durability). A
//! unit that fails is undone alone; its neighbours commit. Each submitter is
//! answered once its batch is durable.
//!
//! The writer is a plain thread with a synchronous connection (rusqlite):
//! a statement costs microseconds there, where an async driver would pay a
//! thread hand-off for each one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::StateError;

type Job = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;
/// Told whether the unit committed, as soon as that is known.
type Hook = Box<dyn FnOnce(bool) + Send>;
type Outcome = Result<(), Arc<str>>;

/// Statements that commit all together or not at all.
#[derive(Default)]
pub(crate) struct Unit {
    jobs: Vec<Job>,
    hooks: Vec<Hook>,
}

impl Unit {
    pub(crate) fn push(&mut self, job: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static) {
        self.jobs.push(Box::new(job));
    }

    /// Runs `hook` on the writer once the unit's fate is known: right after
    /// its batch commits (hooks in commit order), or as soon as it fails,
    /// before any later unit runs.
    pub(crate) fn then(&mut self, hook: impl FnOnce(bool) + Send + 'static) {
        self.hooks.push(Box::new(hook));
    }

    /// Like [`then`](Self::then), ahead of every hook added so far.
    pub(crate) fn then_first(&mut self, hook: impl FnOnce(bool) + Send + 'static) {
        self.hooks.insert(0, Box::new(hook));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.hooks.is_empty()
    }

    /// Tells the hooks: in order after a commit (releases follow seals), in
    /// reverse after a failure (each gives back what it took after the one before).
    fn settle(&mut self, committed: bool) {
        let hooks = std::mem::take(&mut self.hooks);
        if committed {
            hooks.into_iter().for_each(|hook| hook(true));
        } else {
            hooks.into_iter().rev().for_each(|hook| hook(false));
        }
    }
}

struct Submission {
    unit: Unit,
    ack: oneshot::Sender<Outcome>,
}

/// How well writes are grouped: commits (batches) and the writes in them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub batches: u64,
    pub units: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    units: AtomicU64,
}

/// The handle to the writer thread; it stops when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Submission>,
    stats: Arc<Counters>,
}

/// Most units one commit carries; more wait for the next.
const MAX_BATCH: usize = 4096;

impl GroupCommit {
    pub(crate) fn start(conn: Connection) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel();
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        std::thread::Builder::new().name("dmtree-writer".into()).spawn(move || write_loop(&conn, &rx, &counters))?;
        Ok(Self { queue, stats })
    }

    /// Runs `unit` in the next batch and waits until that batch is durable.
    pub(crate) async fn commit(&self, unit: Unit) -> Result<(), StateError> {
        if unit.is_empty() {
            return Ok(());
        }
        let (ack, durable) = oneshot::channel();
        self.queue.send(Submission { unit, ack }).map_err(|_| StateError::Commit("the writer stopped".into()))?;
        match durable.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StateError::Commit(e.to_string())),
            Err(_) => Err(StateError::Commit("the writer stopped".into())),
        }
    }

    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            units: self.stats.units.load(Ordering::Relaxed),
        }
    }
}

fn write_loop(conn: &Connection, queue: &mpsc::Receiver<Submission>, stats: &Counters) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let outcomes = run_batch(conn, &mut batch);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.units.fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (submission, outcome) in batch.into_iter().zip(outcomes) {
            let _ = submission.ack.send(outcome);
        }
    }
}

/// One transaction: a savepoint per unit, then one commit.
fn run_batch(conn: &Connection, batch: &mut [Submission]) -> Vec<Outcome> {
    let failed = |e: rusqlite::Error| -> Arc<str> { e.to_string().into() };
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        batch.iter_mut().for_each(|s| s.unit.settle(false));
        let e = failed(e);
        return batch.iter().map(|_| Err(e.clone())).collect();
    }
    let mut outcomes: Vec<Outcome> = batch.iter_mut().map(|s| run_unit(conn, &mut s.unit).map_err(failed)).collect();
    match conn.execute_batch("COMMIT") {
        Ok(()) => batch.iter_mut().for_each(|s| s.unit.settle(true)),
        Err(e) => {
            tracing::error!(error = %e, units = batch.len(), "state database commit failed");
            // SQLite may have rolled back already; the next batch must start clean.
            let _ = conn.execute_batch("ROLLBACK");
            // In reverse: each unit gives back what it took after the one before.
            batch.iter_mut().rev().for_each(|s| s.unit.settle(false));
            let e = failed(e);
            outcomes.iter_mut().for_each(|o| *o = Err(e.clone()));
        }
    }
    outcomes
}

/// Runs a unit in its own savepoint; a failed one is undone (and told so) at once.
fn run_unit(conn: &Connection, unit: &mut Unit) -> rusqlite::Result<()> {
    let run = |sql: &str| conn.prepare_cached(sql)?.execute([]).map(drop);
    let mut statements = || {
        run("SAVEPOINT unit")?;
        for job in unit.jobs.drain(..) {
            if let Err(e) = job(conn) {
                run("ROLLBACK TO unit")?;
                run("RELEASE unit")?;
                return Err(e);
            }
        }
        run("RELEASE unit")
    };
    let ran = statements();
    if ran.is_err() {
        unit.settle(false);
    }
    ran
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::Unit;
    use crate::{Durability, SqliteState};

    fn insert(label: &str, hash: &str) -> Unit {
        let (label, hash) = (label.to_owned(), hash.to_owned());
        let mut unit = Unit::default();
        unit.push(move |c| {
            c.execute("INSERT INTO tokens (hash, principal, label, created_ms) VALUES (?1, 'p', ?2, 0)", (hash, label))
                .map(drop)
        });
        unit
    }

    async fn labels(state: &SqliteState) -> Vec<String> {
        let rows = sqlx::query("SELECT label FROM tokens ORDER BY label").fetch_all(&state.pool).await.unwrap();
        rows.iter().map(|r| r.get("label")).collect()
    }

    /// Units queued together share one commit, and one that fails (here a
    /// duplicate key, after a first statement that succeeded) is undone
    /// alone: its neighbours still commit.
    #[tokio::test]
    async fn a_failing_unit_leaves_its_batch_neighbours_committed() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(&dir.path().join("s.db"), Durability::Fsync).await.unwrap();
        state.group.commit(insert("first", "h0")).await.unwrap();
        let mut dup = insert("half", "h9");
        dup.jobs.extend(insert("dup", "h0").jobs);
        let before = state.batch_stats();
        let (a, dup, c) = tokio::join!(
            state.group.commit(insert("a", "h1")),
            state.group.commit(dup),
            state.group.commit(insert("c", "h2"))
        );
        assert!(a.is_ok() && c.is_ok(), "{a:?} {c:?}");
        assert!(dup.is_err(), "the duplicate key fails its own unit");
        let after = state.batch_stats();
        assert_eq!(after.units - before.units, 3);
        assert_eq!(labels(&state).await, ["a", "c", "first"], "the failing unit's first insert is undone too");
    }

    #[tokio::test]
    async fn concurrent_writers_are_grouped() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(&dir.path().join("s.db"), Durability::Fsync).await.unwrap();
        let writes = (0..64).map(|i| {
            let state = state.clone();
            tokio::spawn(async move { state.group.commit(insert(&format!("w{i:02}"), &format!("h{i}"))).await })
        });
        for w in futures_util::future::join_all(writes).await {
            w.unwrap().unwrap();
        }
        let stats = state.batch_stats();
        assert_eq!(stats.units, 64);
        assert!(stats.batches < 64, "some writes shared a commit: {stats:?}");
        assert_eq!(labels(&state).await.len(), 64);
    }
}
