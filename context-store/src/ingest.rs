//! Batched ingest. Submitters put jobs on a bounded queue (a full queue makes
//! them wait: back-pressure); one writer takes everything queued and commits
//! it in a single transaction: the events (de-duplicated by id), the context
//! handlers' state and derived events, the propagation outbox, and the tree
//! positions the events came from. A submitter is answered only after that
//! commit. While the database is down the writer retries the same batch with
//! backoff, and the queue fills.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::Backend;
use crate::event::ContextEvent;
use crate::processor::{self, values};
use crate::store::ContextStore;

/// What became of a submitted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    pub stored: usize,
    pub duplicates: usize,
}

pub(crate) struct Job {
    pub events: Vec<ContextEvent>,
    /// The tree subscription and revision these events bring the store up to.
    pub position: Option<(String, u64)>,
    pub ack: oneshot::Sender<Report>,
}

/// Rows per INSERT statement (5 values each keeps under every parameter limit).
const CHUNK: usize = 500;

pub(crate) async fn writer(store: Arc<ContextStore>, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, 256).await > 0 {
        let mut backoff = dmtree_core::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let reports = loop {
            match write(&store, &jobs).await {
                Ok(reports) => break reports,
                Err(e) => {
                    store.stats().set_db_state(&format!("unavailable: {e}"));
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64, "context store write failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        store.stats().set_db_state("ok");
        for (job, report) in jobs.drain(..).zip(reports) {
            let _ = job.ack.send(report);
        }
    }
}

async fn write(store: &ContextStore, jobs: &[Job]) -> Result<Vec<Report>, sqlx::Error> {
    let config = store.config();
    let mut tx = store.db().pool().begin().await?;
    let mut seen = HashSet::new();
    let unique: Vec<&ContextEvent> = jobs.iter().flat_map(|j| &j.events).filter(|e| seen.insert(e.id)).collect();
    let backend = store.db().backend();
    let fresh_ids = insert_events(&mut tx, backend, &unique).await?;
    let fresh = fresh_ids.keep(&unique);
    let outcome = processor::run(&mut tx, &config.handlers, &fresh).await?;
    let derived: Vec<&ContextEvent> = outcome.derived.iter().collect();
    let new_derived = insert_events(&mut tx, backend, &derived).await?.keep(&derived);

    for (target, p) in &config.propagation {
        let outgoing: Vec<&&ContextEvent> =
            fresh.iter().chain(&new_derived).filter(|e| p.types.contains(&e.kind)).collect();
        for chunk in outgoing.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO cs_outbox (target, event_id, ts) VALUES {} ON CONFLICT DO NOTHING",
                values(backend, chunk.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q.bind(target.as_str()).bind(e.id.to_string()).bind(e.timestamp.timestamp_millis());
            }
            q.execute(&mut *tx).await?;
        }
    }
    let positions: HashMap<&str, u64> =
        jobs.iter().filter_map(|j| j.position.as_ref()).fold(HashMap::new(), |mut m, (n, r)| {
            let p = m.entry(n.as_str()).or_insert(0);
            *p = (*p).max(*r);
            m
        });
    for (name, revision) in positions {
        sqlx::query(
            "INSERT INTO cs_positions (name, revision) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET revision = excluded.revision",
        )
        .bind(name)
        .bind(revision as i64)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;

    let stats = store.stats();
    stats.add(&stats.ingested, fresh.len());
    stats.add(
        &stats.duplicates,
        unique.len() - fresh.len() + (jobs.iter().map(|j| j.events.len()).sum::<usize>() - unique.len()),
    );
    stats.add(&stats.derived, new_derived.len());
    stats.add(&stats.late, outcome.late as usize);
    stats.add(&stats.skipped, outcome.skipped as usize);
    if !config.propagation.is_empty() {
        store.wake_forwarders();
    }
    // Each job learns how many of its own events were new.
    let submitted: usize = jobs.iter().map(|j| j.events.len()).sum();
    if matches!(fresh_ids, Fresh::All) && unique.len() == submitted {
        return Ok(jobs.iter().map(|j| Report { stored: j.events.len(), duplicates: 0 }).collect());
    }
    let mut credited = HashSet::new();
    Ok(jobs
        .iter()
        .map(|j| {
            let stored = j.events.iter().filter(|e| fresh_ids.contains(&e.id) && credited.insert(e.id)).count();
            Report { stored, duplicates: j.events.len() - stored }
        })
        .collect())
}

/// Which of the events offered to [`insert_events`] were new.
enum Fresh {
    /// All of them: the common case, answered without hashing every id again.
    All,
    Only(HashSet<Uuid>),
}

impl Fresh {
    fn contains(&self, id: &Uuid) -> bool {
        match self {
            Fresh::All => true,
            Fresh::Only(ids) => ids.contains(id),
        }
    }

    fn keep<'a>(&self, events: &[&'a ContextEvent]) -> Vec<&'a ContextEvent> {
        events.iter().copied().filter(|e| self.contains(&e.id)).collect()
    }
}

/// Inserts events that are not stored yet; says which were new.
///
/// Duplicates are rare, so the rows first go in as plain INSERTs (an upsert,
/// `ON CONFLICT DO NOTHING`, costs PostgreSQL a speculative insertion per row,
/// and `RETURNING` a fifth of the throughput). Only if a row already exists
/// does the batch go again, from a savepoint, skipping and reporting duplicates.
async fn insert_events(
    conn: &mut AnyConnection,
    backend: Backend,
    events: &[&ContextEvent],
) -> Result<Fresh, sqlx::Error> {
    if events.is_empty() {
        return Ok(Fresh::All);
    }
    let mut types: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    for chunk in types.chunks(CHUNK) {
        let sql =
            format!("INSERT INTO cs_types (type) VALUES {} ON CONFLICT DO NOTHING", values(backend, chunk.len(), 1));
        let mut q = sqlx::query(&sql);
        for t in chunk {
            q = q.bind(*t);
        }
        q.execute(&mut *conn).await?;
    }
    sqlx::query("SAVEPOINT cs_insert").execute(&mut *conn).await?;
    let mut clean = true;
    for chunk in events.chunks(CHUNK) {
        match insert_chunk(conn, backend, chunk, false).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                clean = false;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if clean {
        sqlx::query("RELEASE SAVEPOINT cs_insert").execute(&mut *conn).await?;
        return Ok(Fresh::All);
    }
    sqlx::query("ROLLBACK TO SAVEPOINT cs_insert").execute(&mut *conn).await?;
    let mut fresh = HashSet::new();
    for chunk in events.chunks(CHUNK) {
        fresh.extend(insert_chunk(conn, backend, chunk, true).await?);
    }
    sqlx::query("RELEASE SAVEPOINT cs_insert").execute(&mut *conn).await?;
    Ok(Fresh::Only(fresh))
}

/// One multi-row INSERT: plain, or skipping existing ids and returning the new ones.
async fn insert_chunk(
    conn: &mut AnyConnection,
    backend: Backend,
    chunk: &[&ContextEvent],
    skip_existing: bool,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO cs_events (id, ts, sender, type, payload) VALUES {}{}",
        values(backend, chunk.len(), 5),
        if skip_existing { " ON CONFLICT (id) DO NOTHING RETURNING id" } else { "" }
    );
    let mut q = sqlx::query(&sql);
    for e in chunk {
        q = q
            .bind(e.id.to_string())
            .bind(e.timestamp.timestamp_millis())
            .bind(e.sender.as_str())
            .bind(e.kind.as_str())
            .bind(e.payload.to_string());
    }
    if skip_existing {
        let rows = q.fetch_all(&mut *conn).await?;
        Ok(rows.iter().filter_map(|r| r.get::<&str, _>("id").parse().ok()).collect())
    } else {
        q.execute(&mut *conn).await?;
        Ok(Vec::new())
    }
}
