//! `/sessions`: DMT Admin sessions over REST.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dmtree_core::{LockMode, Uri};
use std::time::Duration;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Auth, JsonBody};
use crate::json::{OpenSession, SessionJson};
use crate::state::AppState;

/// Open a session on a subtree. `exclusive` and `atomic` lock it; overlapping
/// sessions wait up to `lock_timeout_ms`, then fail with `concurrent_access`.
#[utoipa::path(
    post, path = "/sessions", tag = "sessions",
    request_body = OpenSession,
    responses(
        (status = 201, description = "Opened; use its id as `?session=`", body = SessionJson),
        (status = 409, description = "The subtree is locked", body = ErrorBody),
        (status = "4XX", description = "Error", body = ErrorBody),
    )
)]
pub async fn open(
    State(app): State<AppState>,
    Auth(p): Auth,
    JsonBody(body): JsonBody<OpenSession>,
) -> ApiResult<Response> {
    let body = body.ok_or_else(|| {
        ApiError::InvalidJson("a body is required, e.g. {\"root\": \"./config\", \"lock\": \"atomic\"}".into())
    })?;
    let root = Uri::parse(&body.root, app.tree.limits())?;
    let mode: LockMode = body.lock.parse().map_err(|e: String| ApiError::param("lock", e))?;
    let info = app.tree.open_session(&p, &root, mode, body.lock_timeout_ms.map(Duration::from_millis)).await?;
    let mut resp = (StatusCode::CREATED, Json(SessionJson::from(&info))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/sessions/{}", info.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// The caller's open sessions.
#[utoipa::path(get, path = "/sessions", tag = "sessions", responses((status = 200, description = "Sessions", body = [SessionJson])))]
pub async fn list(State(app): State<AppState>, Auth(p): Auth) -> Json<Vec<SessionJson>> {
    let mine = app.tree.visible_session_ids(&p).into_iter().filter_map(|id| app.tree.visible_session(&p, &id));
    Json(mine.filter(|s| s.principal == p).map(|s| SessionJson::from(&s)).collect())
}

#[utoipa::path(
    get, path = "/sessions/{id}", tag = "sessions",
    params(("id" = String, Path)),
    responses((status = 200, description = "The session", body = SessionJson), (status = 404, description = "Unknown session", body = ErrorBody))
)]
pub async fn show(State(app): State<AppState>, Auth(p): Auth, Path(id): Path<String>) -> ApiResult<Json<SessionJson>> {
    Ok(Json(SessionJson::from(&app.tree.session_info(&p, &id)?)))
}

/// Commit an atomic session; it stays open with a new transaction.
#[utoipa::path(
    post, path = "/sessions/{id}/commit", tag = "sessions",
    params(("id" = String, Path)),
    responses((status = 204, description = "Committed"), (status = "4XX", description = "Error", body = ErrorBody))
)]
pub async fn commit(State(app): State<AppState>, Auth(p): Auth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    app.tree.commit(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Roll back an atomic session; it stays open.
#[utoipa::path(
    post, path = "/sessions/{id}/rollback", tag = "sessions",
    params(("id" = String, Path)),
    responses((status = 204, description = "Rolled back"), (status = "4XX", description = "Error", body = ErrorBody))
)]
pub async fn rollback(State(app): State<AppState>, Auth(p): Auth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    app.tree.rollback(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Close a session. As in DMT Admin, closing an atomic session commits it.
#[utoipa::path(
    delete, path = "/sessions/{id}", tag = "sessions",
    params(("id" = String, Path)),
    responses((status = 204, description = "Closed"), (status = "4XX", description = "Error", body = ErrorBody))
)]
pub async fn close(State(app): State<AppState>, Auth(p): Auth, Path(id): Path<String>) -> ApiResult<StatusCode> {
    app.tree.close(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
