//! ContextStore propagation arriving over XMPP: messages from the JIDs in
//! `[contextstore] xmpp_senders` whose body carries propagated events are
//! ingested like a REST batch (de-duplicated by event id).

use std::sync::Arc;
use std::time::Duration;

use dmtree_context_store::ContextStore;
use dmtree_context_store::event::parse_batch;
use dmtree_context_store::propagate::XMPP_KEY;
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::push::xmpp::XmppLink;

pub fn receive(link: &XmppLink, store: Arc<ContextStore>, senders: Vec<String>) {
    let (tx, mut rx) = mpsc::channel(256);
    link.on_messages(tx);
    tokio::spawn(async move {
        while let Some((from, body)) = rx.recv().await {
            if !senders.contains(&from) {
                tracing::debug!(%from, "xmpp message from a sender not in xmpp_senders; ignored");
                continue;
            }
            let Ok(json) = serde_json::from_str::<Json>(&body) else { continue };
            let Some(events) = json.get(XMPP_KEY) else { continue };
            match parse_batch(events) {
                Ok(events) => ingest(&store, &from, events).await,
                Err(e) => tracing::warn!(%from, error = %e, "propagated events refused"),
            }
        }
    });
}

/// Retries while the database is down: the message is already acknowledged.
async fn ingest(store: &ContextStore, from: &str, events: Vec<dmtree_context_store::ContextEvent>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match store.ingest(events.clone()).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%from, error = %e, "cannot store propagated events yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
