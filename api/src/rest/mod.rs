//! The HTTP surface: routes, and the layers every request passes through.

pub mod events;
pub mod federation;
pub mod ops;
pub mod sessions;
pub mod tree;
pub mod ui;

use std::any::Any;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let node: MethodRouter<AppState> =
        get(tree::get_node).put(tree::put_node).post(tree::post_node).patch(tree::patch_node).delete(tree::delete_node);
    Router::new()
        .route("/tree", node.clone())
        .route("/tree/", node.clone())
        .route("/tree/{*path}", node)
        .route("/exec/{*path}", post(tree::exec_node))
        .route("/sessions", post(sessions::open).get(sessions::list))
        .route("/sessions/{id}", get(sessions::show).delete(sessions::close))
        .route("/sessions/{id}/commit", post(sessions::commit))
        .route("/sessions/{id}/rollback", post(sessions::rollback))
        .route("/events", get(events::events))
        .route("/federation/grant", get(federation::grant))
        .route("/healthz", get(ops::healthz))
        .route("/whoami", get(ops::whoami))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.yaml", get(ops::openapi))
        .route("/", get(ui::root))
        .merge(ui_routes())
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), crate::federation::via::federated))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(state.config.http.body_timeout()))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// The UI's assets, compressed (the REST API is left alone: SSE must not buffer).
fn ui_routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { axum::response::Redirect::permanent("/ui/") }))
        .route("/ui/", get(ui::index))
        .route("/ui/{*path}", get(ui::file))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// Counts and times every request, and logs it at debug level (cheaper than a span per request).
async fn observe(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = tracing::enabled!(tracing::Level::DEBUG).then(|| req.uri().path().to_owned());
    let start = Instant::now();
    let resp = next.run(req).await;
    let elapsed = start.elapsed();
    app.metrics.observe(&method, resp.status(), elapsed);
    if let Some(path) = path {
        tracing::debug!(%method, path, status = resp.status().as_u16(), micros = elapsed.as_micros() as u64, "request");
    }
    resp
}

/// A bug must not take the connection down silently: answer 500 in the usual shape.
fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()));
    tracing::error!(panic = detail.as_deref().unwrap_or("?"), "request handler panicked");
    ApiError::Internal("the request handler failed".into()).into_response()
}
