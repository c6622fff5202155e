//! `GET /events`: the event log as Server-Sent Events, replayed from a
//! revision and then live, filtered by pattern and by the caller's Get right.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use dmtree_core::{Delivery, EventCursor, Principal, Tree, UriPattern};
use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Auth, Params};
use crate::state::AppState;

/// Counts an open stream for as long as it lives.
struct Subscribed(Gauge);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Feed {
    cursor: EventCursor,
    tree: Arc<Tree>,
    pattern: UriPattern,
    principal: Principal,
    shutdown: tokio::sync::watch::Receiver<bool>,
    _subscribed: Subscribed,
}

/// Stream events as SSE: `id` is the revision, `event` the kind, `data` the event JSON.
/// Resumes after `Last-Event-ID` (or `since`); without either, starts live. When
/// events are no longer retained, an `event: gap` names the missing revisions.
#[utoipa::path(
    get, path = "/events", tag = "events",
    params(
        ("uri" = Option<String>, Query, description = "URI pattern: `*` is one segment, a final `**` a subtree (default `./**`)"),
        ("since" = Option<u64>, Query, description = "Deliver events after this revision"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this revision (wins over `since`)"),
    ),
    responses(
        (status = 200, description = "An SSE stream", content_type = "text/event-stream", body = String),
        (status = "4XX", description = "Error", body = ErrorBody),
    )
)]
pub async fn events(
    State(app): State<AppState>,
    Auth(principal): Auth,
    params: Params,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    params.allow(&["uri", "since"])?;
    let pattern = UriPattern::parse(params.get("uri").unwrap_or("./**"), app.tree.limits())?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::param("Last-Event-ID", "not a revision number"))?,
        ),
        None => params.number("since")?,
    };
    let since = resume.unwrap_or_else(|| app.tree.events().head());
    app.metrics.sse_subscribers.inc();
    let feed = Feed {
        cursor: app.tree.events().cursor(since),
        tree: app.tree.clone(),
        pattern,
        principal,
        shutdown: app.shutdown.subscribe(),
        _subscribed: Subscribed(app.metrics.sse_subscribers.clone()),
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let next = feed.next_event().await?;
        Some((Ok(next), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

impl Feed {
    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let delivery = tokio::select! {
                d = self.cursor.next() => d?,
                _ = self.shutdown.wait_for(|stop| *stop) => return None,
            };
            match delivery {
                Delivery::Event(e) => {
                    let matches =
                        self.pattern.matches(&e.uri) || e.to.as_ref().is_some_and(|t| self.pattern.matches(t));
                    if !matches || !self.tree.may_read(&self.principal, &e) {
                        continue;
                    }
                    let data = serde_json::to_string(&*e).unwrap_or_default();
                    return Some(SseEvent::default().id(e.revision.to_string()).event(e.kind.as_str()).data(data));
                }
                Delivery::Gap { from, to } => {
                    let data = serde_json::json!({ "from": from, "to": to }).to_string();
                    return Some(SseEvent::default().id(to.to_string()).event("gap").data(data));
                }
            }
        }
    }
}
