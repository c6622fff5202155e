//! Delivering one subscription over a transport: publish ahead within a
//! window, advance the position as the transport confirms, and after any
//! failure reconnect with backoff and resume from the last confirmed
//! revision. Delivery is therefore at-least-once, and consumers de-duplicate
//! by the revision every message carries.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dmtree_core::{Delivery, Tree};
use serde_json::json;

use super::Subscription;

/// Resolves once the transport has accepted the message (a broker confirm, an XEP-0198 ack).
pub type Receipt = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;
    use dmtree_core::{Event, EventKind, Uri};

    #[test]
    fn messages_are_the_event_json_plus_the_subscription() {
        let e = Event {
            revision: 7,
            timestamp: chrono::Utc::now(),
            kind: EventKind::Replaced,
            uri: Uri::from_key("config\0x"),
            to: None,
            principal: Some("admin".into()),
            format: Some(dmtree_core::Format::Int),
            value: Some(json!(42)),
            session: None,
            via: Vec::new(),
            read: dmtree_core::ReadRule::only(&dmtree_core::Principal::named("admin")),
        };
        let delivery = Delivery::Event(Arc::new(e));
        let (rev, body, uri) = message("s\"1", &delivery);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((rev, uri.map(|u| u.to_string())), (7, Some("./config/x".into())));
        assert_eq!((parsed["value"].clone(), parsed["subscription"].clone()), (json!(42), json!("s\"1")));
        assert!(parsed.get("read").is_none(), "read rules never go on the wire");
        let (rev, gap, _) = message("s", &Delivery::Gap { from: 3, to: 5 });
        assert_eq!(
            (rev, serde_json::from_slice::<serde_json::Value>(&gap).unwrap()["kind"].clone()),
            (5, json!("gap"))
        );
    }
}

#[async_trait]
pub trait Sink: Send {
    /// Hands a message to the transport; the receipt says when it was accepted.
    async fn send(&mut self, revision: u64, body: Vec<u8>, routing: &str) -> Result<Receipt, String>;
}

/// Opens a fresh sink (a channel, a stream) for a subscription.
#[async_trait]
pub trait Connector: Send + Sync {
    async fn open(&self, sub: &Subscription) -> Result<Box<dyn Sink>, String>;
}

/// The JSON a consumer receives: the event, and the subscription it is for.
pub fn message<'a>(sub_id: &str, delivery: &'a Delivery) -> (u64, Vec<u8>, Option<&'a dmtree_core::Uri>) {
    match delivery {
        Delivery::Event(e) => {
            // The event's JSON object, with the subscription appended: one serialisation, no tree of Values.
            let mut body = serde_json::to_vec(&**e).unwrap_or_default();
            if body.last() == Some(&b'}') {
                body.pop();
                body.extend_from_slice(b",\"subscription\":");
                body.extend_from_slice(json!(sub_id).to_string().as_bytes());
                body.push(b'}');
            }
            (e.revision, body, Some(&e.uri))
        }
        Delivery::Gap { from, to } => {
            let body = json!({ "kind": "gap", "from": from, "to": to, "subscription": sub_id });
            (*to, body.to_string().into_bytes(), None)
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Live buffer of the subscription's feed.
    pub buffer: usize,
    /// Messages in flight, unconfirmed.
    pub window: usize,
    /// A message not confirmed within this long counts as lost: reconnect and replay.
    pub ack_timeout: Duration,
}

/// Runs until the subscription is cancelled.
pub async fn run(tree: Arc<Tree>, sub: Arc<Subscription>, connector: Arc<dyn Connector>, limits: Limits) {
    let mut cancel = sub.cancelled();
    let mut backoff = dmtree_core::Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    loop {
        if *cancel.borrow() {
            return;
        }
        sub.set_state("connecting");
        let opened = tokio::select! {
            _ = cancel.changed() => return,
            s = connector.open(&sub) => s,
        };
        let error = match opened {
            Ok(mut sink) => {
                sub.set_state("connected");
                backoff.reset();
                let mut feed = tree.subscribe(sub.spec.principal(), sub.spec.filter(), sub.position(), limits.buffer);
                tokio::select! {
                    _ = cancel.changed() => return,
                    e = pump(&mut feed, sink.as_mut(), &sub, limits) => e,
                }
            }
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        tracing::warn!(subscription = %sub.spec.id, error = %error, retry_ms = delay.as_millis() as u64, "push transport failed; will resume");
        sub.set_state(&format!("retrying: {error}"));
        tokio::select! {
            _ = cancel.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

struct InFlight {
    revision: u64,
    deadline: tokio::time::Instant,
    receipt: Receipt,
}

/// Publishes ahead of confirmations, up to `window` messages in flight; returns the failure.
async fn pump(feed: &mut dmtree_core::Feed, sink: &mut dyn Sink, sub: &Subscription, limits: Limits) -> String {
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(limits.window);
    loop {
        sub.set_pending(feed.pending() + in_flight.len());
        tokio::select! {
            biased;
            accepted = async {
                let front = in_flight.front_mut().expect("guarded");
                tokio::time::timeout_at(front.deadline, &mut front.receipt).await
            }, if !in_flight.is_empty() => {
                match accepted {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return e,
                    Err(_) => return format!("no confirmation within {} ms", limits.ack_timeout.as_millis()),
                }
                if let Some(done) = in_flight.pop_front() {
                    sub.confirm(done.revision);
                }
            }
            delivery = feed.next(), if in_flight.len() < limits.window => {
                let Some(delivery) = delivery else { return "the event log closed".into() };
                if let Delivery::Gap { from, to } = &delivery {
                    sub.lost(to - from + 1);
                }
                let (revision, body, uri) = message(&sub.spec.id, &delivery);
                let routing = uri.map(super::spec::routing_key).unwrap_or_default();
                match sink.send(revision, body, &routing).await {
                    Ok(receipt) => {
                        let deadline = tokio::time::Instant::now() + limits.ack_timeout;
                        in_flight.push_back(InFlight { revision, deadline, receipt });
                    }
                    Err(e) => return e,
                }
            }
        }
    }
}
