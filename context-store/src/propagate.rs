//! Propagation: forward chosen event types to another ContextStore over REST
//! (its `ingest` exec node). Events wait in a persistent outbox, written in the
//! same transaction that stored them, and leave it only when the receiver has
//! answered 2xx. The receiver de-duplicates by event id, so delivery is
//! at-least-once and survives either side being down.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value as Json, json};
use sqlx::Row;
use tokio::sync::Notify;

use crate::config::Propagation;
use crate::store::ContextStore;

const BATCH: i64 = 500;

pub(crate) async fn run(store: Arc<ContextStore>, name: String, target: Propagation, wake: Arc<Notify>) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => return store.stats().forwarder(&name, &format!("error: {e}")),
    };
    let mount = target.mount.trim_start_matches("./").trim_start_matches('.');
    let url = format!("{}/exec/{mount}/ingest", target.url.trim_end_matches('/'));
    let mut backoff = Duration::from_millis(200);
    loop {
        let notified = wake.notified();
        match forward_once(&store, &name, &client, &url, target.token.as_deref()).await {
            Ok(0) => {
                store.stats().forwarder(&name, "idle");
                backoff = Duration::from_millis(200);
                let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
            }
            Ok(n) => {
                store.stats().add(&store.stats().forwarded, n);
                store.stats().forwarder(&name, "connected");
                backoff = Duration::from_millis(200);
            }
            Err(e) => {
                store.stats().forwarder(&name, &format!("retrying: {e}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// An error with its causes ("error sending request: connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends the oldest waiting batch; returns how many events left the outbox.
async fn forward_once(
    store: &ContextStore,
    name: &str,
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<usize, String> {
    let pool = store.db().pool();
    let rows = sqlx::query(
        "SELECT o.event_id, e.ts, e.sender, e.type, e.payload FROM cs_outbox o LEFT JOIN cs_events e ON e.id = o.event_id \
         WHERE o.target = $1 ORDER BY o.ts, o.event_id LIMIT $2",
    )
    .bind(name)
    .bind(BATCH)
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = rows.iter().map(|r| r.get("event_id")).collect();
    // Events retention already removed are dropped from the outbox too.
    let events: Vec<Json> = rows
        .iter()
        .filter_map(|r| {
            let ts: Option<i64> = r.get("ts");
            let payload: Option<String> = r.get("payload");
            Some(json!({
                "id": r.get::<String, _>("event_id"),
                "timestamp": chrono::DateTime::from_timestamp_millis(ts?)?.to_rfc3339(),
                "sender": r.get::<Option<String>, _>("sender")?,
                "type": r.get::<Option<String>, _>("type")?,
                "payload": serde_json::from_str::<Json>(&payload?).ok()?,
            }))
        })
        .collect();
    if !events.is_empty() {
        let mut req = client.post(url).json(&json!({ "events": events }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| chain(&e))?;
        if !resp.status().is_success() {
            return Err(format!("{url} answered {}", resp.status()));
        }
    }
    let sql = format!(
        "DELETE FROM cs_outbox WHERE target = $1 AND event_id IN ({})",
        (2..ids.len() + 2).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
    );
    let mut q = sqlx::query(&sql).bind(name);
    for id in &ids {
        q = q.bind(id);
    }
    q.execute(pool).await.map_err(|e| e.to_string())?;
    Ok(events.len())
}
