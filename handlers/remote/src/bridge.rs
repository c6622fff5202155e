//! The event bridge: the remote's changes under the mounted subtree, read
//! from its SSE stream and re-published here with local URIs. It resumes
//! after the last remote revision it delivered, across disconnects and (with
//! the position the owner saved) across restarts of this server. It also
//! probes the remote: connecting closes the circuit, failing counts against it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dmtree_core::via::{INSTANCE_HEADER, REVISION_HEADER};
use dmtree_core::{ChangeSink, EventDraft, EventKind, Format, Uri, UriLimits, Value, Via, error_chain};
use futures::StreamExt as _;
use reqwest::Method;
use serde_json::Value as Json;
use tokio::time::Instant;

use crate::link::{Link, encode};

use crate::remote::Shared;
use crate::sse::{SseFrame, SseReader};

/// The remote sends a keep-alive every 15 s; silence for longer means the connection is dead.
const IDLE: Duration = Duration::from_secs(45);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);

pub async fn run(shared: Arc<Shared>, sink: ChangeSink) {
    let link = &shared.link;
    let pattern =
        if link.spec.remote_uri.is_root() { "./**".to_owned() } else { format!("{}/**", link.spec.remote_uri) };
    let path = format!("/events?uri={}", encode(&pattern));
    let mut retry = dmtree_core::Backoff::new(FIRST_RETRY, MAX_RETRY);
    loop {
        // Not on behalf of any request: the path is just us.
        let mut req =
            link.request_via(Method::GET, &path, &Via::default()).timeout(Duration::from_secs(365 * 24 * 3600));
        if let Some(rev) = shared.position() {
            req = req.header("Last-Event-ID", rev.to_string());
        }
        let started = Instant::now();
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                link.succeeded(started.elapsed());
                *link.stats.bridge.lock() = "connected".into();
                retry.reset();
                let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let remote = header(INSTANCE_HEADER);
                // From the first connection on, the position is known, so nothing is missed later.
                if let Some(start) = header(REVISION_HEADER).and_then(|r| r.parse().ok()) {
                    shared.advance(start);
                }
                let mut frames = SseReader::new(Box::pin(idle_guarded(resp.bytes_stream())));
                while let Some(frame) = frames.next().await {
                    deliver(&shared, &sink, remote.as_deref(), frame);
                }
                *link.stats.bridge.lock() = "reconnecting".into();
            }
            Ok(resp) => {
                let status = resp.status();
                let body: Json = resp.json().await.unwrap_or(Json::Null);
                let message = body["error"]["message"].as_str().unwrap_or_default().to_owned();
                *link.stats.bridge.lock() = format!("refused: {status} {message}");
                link.failed(format!("event stream refused: {status} {message}"));
            }
            Err(e) => {
                *link.stats.bridge.lock() = "reconnecting".into();
                link.failed(format!("event stream: {}", error_chain(&e)));
            }
        }
        retry.wait().await;
    }
}

/// Ends the stream when the remote goes silent past the keep-alive interval.
fn idle_guarded<S, E>(bytes: S) -> impl futures::Stream<Item = Result<bytes::Bytes, String>>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::error::Error,
{
    futures::stream::unfold(bytes, |mut bytes| async move {
        match tokio::time::timeout(IDLE, bytes.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(|e| error_chain(&e)), bytes)),
            Ok(None) | Err(_) => None,
        }
    })
}

fn deliver(shared: &Shared, sink: &ChangeSink, remote: Option<&str>, frame: SseFrame) {
    let revision = frame.id.as_deref().and_then(|i| i.parse::<u64>().ok());
    if frame.event.as_deref() == Some("gap") {
        // The remote no longer retains those events: count what was lost, then carry on.
        let gap: Json = serde_json::from_str(&frame.data).unwrap_or(Json::Null);
        let lost = gap["to"].as_u64().unwrap_or(0).saturating_sub(gap["from"].as_u64().unwrap_or(0)) + 1;
        shared.link.stats.gaps.fetch_add(lost, Ordering::Relaxed);
        shared.link.failed(format!("the remote no longer retains {lost} events the bridge missed"));
    } else if let Ok(event) = serde_json::from_str::<Json>(&frame.data) {
        shared.cache.clear();
        match republish(&shared.link, sink, remote, &event) {
            Republished::Yes => shared.link.stats.bridged.fetch_add(1, Ordering::Relaxed),
            Republished::Looped => shared.link.stats.looped.fetch_add(1, Ordering::Relaxed),
            Republished::NotOurs => 0,
        };
    }
    if let Some(rev) = revision {
        shared.advance(rev);
    }
}

enum Republished {
    Yes,
    /// It came from here in the first place (mounts in a cycle): dropped.
    Looped,
    NotOurs,
}

/// Re-publishes one remote event with local URIs, the remote appended to its path.
fn republish(link: &Link, sink: &ChangeSink, remote: Option<&str>, event: &Json) -> Republished {
    let uri = |field: &str| event[field].as_str().and_then(|u| Uri::parse(u, &UriLimits::default()).ok());
    let Some(rel) = uri("uri").and_then(|u| u.strip_prefix(&link.spec.remote_uri)) else { return Republished::NotOurs };
    let Some(kind) = EventKind::ALL.into_iter().find(|k| Some(k.as_str()) == event["kind"].as_str()) else {
        return Republished::NotOurs;
    };
    if matches!(kind, EventKind::SessionOpened | EventKind::SessionClosed) {
        // A session's own bookkeeping is the remote's business.
        return Republished::NotOurs;
    }
    let mut via: Vec<String> =
        event["via"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    via.extend(remote.map(str::to_owned));
    if via.iter().any(|i| i == link.instance()) || via.len() > link.max_hops() {
        return Republished::Looped;
    }
    let mut draft = EventDraft::new(kind, rel).via(via);
    if let Some(to) = uri("to") {
        let Some(to) = to.strip_prefix(&link.spec.remote_uri) else { return Republished::NotOurs };
        draft = draft.to(to);
    }
    let format = event["format"].as_str().and_then(|f| f.parse::<Format>().ok());
    draft = draft.value(event.get("value").and_then(|v| Value::from_json(v, format).ok()));
    sink.emit_draft(draft);
    Republished::Yes
}
