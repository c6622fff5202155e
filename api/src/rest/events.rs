//! `GET /events`: events as Server-Sent Events, replayed from a revision and
//! then live, filtered by pattern and by the reader's Get right. With
//! `subscription=ID` the stream serves that `sse` subscription and advances
//! its stored position; otherwise it is an ad-hoc subscription for this
//! connection only. Both go through the tree's fan-out.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use dmtree_core::via::REVISION_HEADER;
use dmtree_core::{Delivery, Feed, Filter, UriPattern};
use prometheus_client::metrics::gauge::Gauge;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Auth, Params};
use crate::state::AppState;
use dmtree_push::Attached;

/// Counts an open stream for as long as it lives.
struct Subscribed(Gauge);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One SSE event as it goes on the wire: `id` is the revision, `event` the kind
/// (or `gap`), `data` the event JSON.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the wire format for the contract only.
pub struct SseEventJson {
    id: String,
    event: String,
    data: String,
}

struct Stream_ {
    feed: Feed,
    attached: Option<Attached>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    _subscribed: Subscribed,
    _slot: crate::listener::StreamSlot,
}

/// Stream events as SSE: `id` is the revision, `event` the kind, `data` the event JSON.
/// Resumes after `Last-Event-ID` (or `since`); without either, starts live (or, for a
/// subscription, where it last stopped). When events are no longer retained, an
/// `event: gap` names the missing revisions. The `Dmtree-Revision` header gives the
/// revision the stream starts after.
#[utoipa::path(
    get, path = "/events", tag = "events",
    params(
        ("uri" = Option<String>, Query, description = "URI pattern: `*` is one segment, a final `**` a subtree (default `./**`)"),
        ("since" = Option<u64>, Query, description = "Deliver events after this revision"),
        ("subscription" = Option<String>, Query, description = "Serve this `sse` subscription (its pattern, kinds, sampling and stored position)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this revision (wins over `since`)"),
    ),
    responses(
        (status = 200, description = "An SSE stream of events", content_type = "text/event-stream", body = SseEventJson,
            headers(("Dmtree-Revision" = u64, description = "The revision the stream starts after"))),
        (status = "4XX", description = "Error", body = ErrorBody),
    )
)]
pub async fn events(
    State(app): State<AppState>,
    Auth(principal): Auth,
    params: Params,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    params.allow(&["uri", "since", "subscription"])?;
    let limit = app.config.http.max_streams_per_principal;
    let slot = app
        .streams
        .open(&principal, limit)
        .ok_or_else(|| ApiError::TooManyStreams { principal: principal.to_string(), limit })?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::param("Last-Event-ID", "not a revision number"))?,
        ),
        None => params.number("since")?,
    };
    let buffer = app.config.push.buffer;
    let mut start = app.tree.events().head();
    let (feed, attached) = match params.get("subscription") {
        Some(id) => {
            if params.get("uri").is_some() {
                return Err(ApiError::param("uri", "a subscription brings its own pattern"));
            }
            let attached = app.push.attach(id, &principal)?;
            let sub = attached.subscription();
            let since = resume.unwrap_or_else(|| sub.position());
            start = since;
            (app.tree.subscribe(sub.spec.principal(), sub.spec.filter(), since, buffer), Some(attached))
        }
        None => {
            let pattern = UriPattern::parse(params.get("uri").unwrap_or("./**"), app.tree.limits())?;
            let since = resume.unwrap_or(start);
            start = since;
            (app.tree.subscribe(principal, Filter::new(pattern), since, buffer), None)
        }
    };
    app.metrics.sse_subscribers.inc();
    let stream = Stream_ {
        feed,
        attached,
        shutdown: app.shutdown.subscribe(),
        _subscribed: Subscribed(app.metrics.sse_subscribers.clone()),
        _slot: slot,
    };
    let stream = futures::stream::unfold(stream, |mut s| async move {
        let next = s.next_event().await?;
        Some((Ok::<_, Infallible>(next), s))
    });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    // Where the stream starts: a reader that saw nothing yet can still resume from here.
    Ok(([(REVISION_HEADER, start.to_string())], sse))
}

impl Stream_ {
    async fn next_event(&mut self) -> Option<SseEvent> {
        let delivery = tokio::select! {
            d = self.feed.next() => d?,
            _ = self.shutdown.wait_for(|stop| *stop) => return None,
        };
        let (revision, event) = match delivery {
            Delivery::Event(e) => {
                let data = serde_json::to_string(&*e).unwrap_or_default();
                (e.revision, SseEvent::default().id(e.revision.to_string()).event(e.kind.as_str()).data(data))
            }
            Delivery::Gap { from, to } => {
                let data = serde_json::json!({ "from": from, "to": to }).to_string();
                (to, SseEvent::default().id(to.to_string()).event("gap").data(data))
            }
        };
        if let Some(a) = &self.attached {
            a.subscription().confirm(revision);
        }
        Some(event)
    }
}
