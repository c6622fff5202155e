//! Garbage collection per event type, by age and by count. It deletes in
//! small chunks, each its own short transaction, so ingest is never held up
//! for long, and counts what it removed.

use std::sync::Weak;

use sqlx::Row;

use crate::store::ContextStore;

const CHUNK: i64 = 5000;

pub(crate) async fn run(store: Weak<ContextStore>) {
    loop {
        let Some(s) = store.upgrade() else { return };
        let interval = s.settings().gc_interval;
        if let Err(e) = collect(&s).await {
            tracing::warn!(error = %e, "retention pass failed; will retry");
        }
        drop(s);
        tokio::time::sleep(interval).await;
    }
}

/// One pass over every retention rule.
pub async fn collect(store: &ContextStore) -> Result<(), sqlx::Error> {
    let pool = store.db().pool();
    for (kind, rule) in store.config().retention {
        let mut cutoff = i64::MIN;
        if let Some(age) = rule.max_age_s {
            cutoff = cutoff.max(chrono::Utc::now().timestamp_millis() - (age * 1000) as i64);
        }
        if let Some(count) = rule.max_count {
            let row =
                sqlx::query("SELECT ts FROM cs_events WHERE type = $1 ORDER BY ts DESC, id DESC LIMIT 1 OFFSET $2")
                    .bind(&kind)
                    .bind(count as i64 - 1)
                    .fetch_optional(pool)
                    .await?;
            if let Some(r) = row {
                cutoff = cutoff.max(r.get::<i64, _>("ts"));
            }
        }
        if cutoff == i64::MIN {
            continue;
        }
        loop {
            let done = sqlx::query(
                "DELETE FROM cs_events WHERE id IN (SELECT id FROM cs_events WHERE type = $1 AND ts < $2 LIMIT $3)",
            )
            .bind(&kind)
            .bind(cutoff)
            .bind(CHUNK)
            .execute(pool)
            .await?
            .rows_affected();
            store.stats().gc(&kind, done);
            if (done as i64) < CHUNK {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}
