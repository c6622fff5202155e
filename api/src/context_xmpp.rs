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

use dmtree_push::xmpp::XmppLink;

/// The ContextStore's XMPP propagation rides on the push transport's session.
pub struct Relay(pub Arc<XmppLink>);

#[async_trait::async_trait]
impl dmtree_context_store::propagate::Relay for Relay {
    async fn send(&self, to: &str, body: String) -> Result<(), String> {
        let to: jid::Jid = to.parse().map_err(|e| format!("invalid jid {to:?}: {e}"))?;
        self.0.deliver(to, body).await
    }
}

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
    let mut backoff = dmtree_core::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match store.ingest(events.clone()).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(%from, error = %e, "cannot store propagated events yet; retrying");
                backoff.wait().await;
            }
        }
    }
}
