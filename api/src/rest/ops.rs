//! Operational endpoints: health, who the caller is, metrics, and the OpenAPI contract.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::extract::Auth;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub revision: u64,
}

/// Liveness: the server answers and its event log is open.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Healthy", body = Health)))]
pub async fn healthz(State(app): State<AppState>) -> Json<Health> {
    Json(Health { status: "ok", revision: app.tree.events().head() })
}

#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    /// The principal the bearer token names; null when the caller sent none.
    pub principal: Option<String>,
    /// Whether it is the operator principal, which may see every session and subscription.
    pub admin: bool,
}

/// The caller's principal, as the server resolved its token (RabbitMQ's `/api/whoami`, `kubectl auth whoami`).
#[utoipa::path(
    get, path = "/whoami", tag = "ops",
    responses((status = 200, description = "The caller", body = WhoAmI), (status = 401, description = "Invalid token", body = crate::error::ErrorBody))
)]
pub async fn whoami(Auth(p): Auth) -> Json<WhoAmI> {
    Json(WhoAmI { principal: p.name().map(str::to_owned), admin: p.is_admin() })
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let m = &app.metrics;
    m.revision.set(app.tree.events().head() as i64);
    m.sessions_open.set(app.tree.session_count() as i64);
    m.journal_failures.set(app.tree.events().journal_failures() as i64);
    let batches = app.state.batch_stats();
    m.commit_batches.set(batches.batches as i64);
    m.committed_writes.set(batches.units as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render())
}

/// This API's OpenAPI 3.1 description (equal to the repository's `openapi.yaml`).
#[utoipa::path(get, path = "/openapi.yaml", tag = "ops", responses((status = 200, description = "The contract", content_type = "application/yaml", body = Object)))]
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], crate::openapi::yaml())
}
