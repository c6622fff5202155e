//! The store registered with the tree: a tree subscription whose events become
//! ContextEvents. The subscription's position commits with the events, so after
//! a crash it resumes exactly where the last committed batch ended.

use std::sync::Arc;
use std::time::Duration;

use dmtree_core::{Delivery, Event, EventKind, Filter, Principal, UriLimits, UriPattern};
use futures::FutureExt as _;
use serde_json::{Map, Value as Json, json};

use crate::config::Subscription;
use crate::event::{ContextEvent, derived_id};
use crate::store::ContextStore;

const BATCH: usize = 1000;

/// Follows the tree from the subscription's committed position, or from
/// `from` (the log's head when it was configured) the first time.
pub(crate) async fn run(store: Arc<ContextStore>, name: String, sub: Subscription, from: u64) {
    let Some(tree) = store.tree() else { return };
    let Ok(pattern) = UriPattern::parse(&sub.pattern, tree.limits()) else {
        tracing::error!(subscription = name, pattern = sub.pattern, "invalid pattern; not subscribing");
        return;
    };
    let kinds: Vec<EventKind> =
        sub.kinds.iter().filter_map(|k| EventKind::ALL.into_iter().find(|e| e.as_str() == k)).collect();
    let start = loop {
        match store.position(&name).await {
            Ok(p) => break p.unwrap_or(from),
            Err(e) => {
                tracing::warn!(subscription = name, error = %e, "cannot read the subscription's position; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let principal = Principal::named(&store.settings().principal);
    let filter = Filter { pattern: pattern.clone(), kinds, sample: None };
    let mut feed = tree.subscribe(principal, filter, start, 16 * BATCH);
    drop(tree);
    loop {
        let Some(first) = feed.next().await else { return };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match feed.next().now_or_never() {
                Some(Some(d)) => batch.push(d),
                _ => break,
            }
        }
        let mut last = 0;
        let mut events = Vec::with_capacity(batch.len());
        for d in batch {
            match d {
                Delivery::Event(e) => {
                    last = e.revision;
                    events.push(to_context_event(&name, &sub, &pattern, &e));
                }
                Delivery::Gap { from, to } => {
                    last = to;
                    tracing::warn!(subscription = name, from, to, "tree events were no longer retained; skipped");
                }
            }
        }
        // Waits for the commit: a store that cannot write holds its subscription back.
        match store.enqueue(events, Some((name.clone(), last))).await {
            Ok(ack) => {
                if ack.await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

fn to_context_event(name: &str, sub: &Subscription, pattern: &UriPattern, e: &Event) -> ContextEvent {
    let mut payload = Map::new();
    payload.insert("uri".into(), json!(e.uri.to_string()));
    payload.insert("kind".into(), json!(e.kind.as_str()));
    payload.insert("revision".into(), json!(e.revision));
    for (k, v) in [
        ("principal", e.principal.clone().map(Json::from)),
        ("format", e.format.map(|f| json!(f))),
        ("value", e.value.clone()),
    ] {
        if let Some(v) = v {
            payload.insert(k.into(), v);
        }
    }
    // The segments the pattern's `*`s matched become the named fields.
    let wildcards = pattern
        .segments()
        .iter()
        .zip(e.uri.segments())
        .filter(|(p, _)| matches!(p, dmtree_core::pattern::PatternSegment::Any));
    for (field, (_, segment)) in sub.fields.iter().zip(wildcards) {
        payload.insert(field.clone(), json!(segment));
    }
    ContextEvent {
        id: derived_id(&format!("tree:{name}"), &e.revision.to_string()),
        timestamp: e.timestamp,
        sender: e.principal.as_deref().map_or_else(|| "tree".to_owned(), |p| format!("tree:{p}")),
        kind: sub.kind.clone(),
        payload: Json::Object(payload),
    }
}

/// Checks a subscription entry against the tree's rules (called when it is written).
pub fn check(sub: &Subscription, limits: &UriLimits) -> Result<(), String> {
    let pattern = UriPattern::parse(&sub.pattern, limits).map_err(|e| e.to_string())?;
    if let Some(k) = sub.kinds.iter().find(|k| !EventKind::ALL.iter().any(|e| e.as_str() == k.as_str())) {
        return Err(format!("unknown event kind {k:?}"));
    }
    let wildcards =
        pattern.segments().iter().filter(|s| matches!(s, dmtree_core::pattern::PatternSegment::Any)).count();
    if sub.fields.len() > wildcards {
        return Err(format!("{} field names but the pattern has {wildcards} \"*\"", sub.fields.len()));
    }
    Ok(())
}
