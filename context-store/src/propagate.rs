//! Propagation: forward chosen event types to another ContextStore, over
//! REST (its `ingest` exec node) or over XMPP (a message to its JID, through
//! the server's [`Relay`]). Events wait in a persistent outbox, written in the
//! same transaction that stored them, and leave it only when the receiver
//! answered 2xx (REST) or the XMPP server acknowledged the message (it keeps
//! it offline while the receiver is away). The receiver de-duplicates by
//! event id, so delivery is at-least-once and survives either side being down.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use serde_json::{Value as Json, json};
use sqlx::Row;
use tokio::sync::Notify;

use crate::config::Propagation;
use crate::store::ContextStore;

/// Events per REST batch; XMPP messages stay small (servers cap stanza sizes).
const BATCH: i64 = 500;
const XMPP_BATCH: i64 = 50;

/// Sends one chat message and resolves once the XMPP server accepted it.
#[async_trait]
pub trait Relay: Send + Sync + 'static {
    async fn send(&self, to: &str, body: String) -> Result<(), String>;
}

/// The body of a propagation message over XMPP.
pub const XMPP_KEY: &str = "dmtree_context_events";

/// Where one propagation target's batches go.
enum Route {
    Rest { client: reqwest::Client, url: String, token: Option<String> },
    Xmpp { jid: String },
}

impl Route {
    fn new(target: &Propagation) -> Result<Route, String> {
        if let Some(jid) = &target.jid {
            return Ok(Route::Xmpp { jid: jid.clone() });
        }
        let base = target.url.as_deref().ok_or("no url or jid")?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
        let mount = target.mount.trim_start_matches("./").trim_start_matches('.');
        let url = format!("{}/exec/{mount}/ingest", base.trim_end_matches('/'));
        Ok(Route::Rest { client, url, token: target.token.clone() })
    }

    fn batch(&self) -> i64 {
        match self {
            Route::Rest { .. } => BATCH,
            Route::Xmpp { .. } => XMPP_BATCH,
        }
    }

    async fn deliver(&self, store: &ContextStore, events: Vec<Json>) -> Result<(), String> {
        match self {
            Route::Rest { client, url, token } => {
                let mut req = client.post(url).json(&json!({ "events": events }));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let resp = req.send().await.map_err(|e| dmtree_core::error_chain(&e))?;
                if !resp.status().is_success() {
                    return Err(format!("{url} answered {}", resp.status()));
                }
                Ok(())
            }
            Route::Xmpp { jid } => {
                let relay = store.relay().ok_or("XMPP is not configured on this server ([push.xmpp])")?;
                relay.send(jid, json!({ XMPP_KEY: events }).to_string()).await
            }
        }
    }
}

pub(crate) async fn run(store: Arc<ContextStore>, name: String, target: Propagation, wake: Arc<Notify>) {
    let route = match Route::new(&target) {
        Ok(r) => r,
        Err(e) => return store.stats().forwarder(&name, &format!("error: {e}")),
    };
    let mut backoff = dmtree_core::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let notified = wake.notified();
        match forward_once(&store, &name, &route).await {
            Ok(0) => {
                store.stats().forwarder(&name, "idle");
                backoff.reset();
                let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
            }
            Ok(n) => {
                store.stats().add(&store.stats().forwarded, n);
                store.stats().forwarder(&name, "connected");
                backoff.reset();
            }
            Err(e) => {
                store.stats().forwarder(&name, &format!("retrying: {e}"));
                backoff.wait().await;
            }
        }
    }
}

/// Sends the oldest waiting batch; returns how many events left the outbox.
async fn forward_once(store: &ContextStore, name: &str, route: &Route) -> Result<usize, String> {
    let pool = store.db().pool();
    let rows = sqlx::query(
        "SELECT o.event_id, e.ts, e.sender, e.type, e.payload FROM cs_outbox o LEFT JOIN cs_events e ON e.id = o.event_id \
         WHERE o.target = $1 ORDER BY o.ts, o.event_id LIMIT $2",
    )
    .bind(name)
    .bind(route.batch())
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
    let sent = events.len();
    if !events.is_empty() {
        route.deliver(store, events).await?;
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
    Ok(sent)
}
