//! Every error a client can cause becomes a 4xx with one JSON shape:
//! `{"error": {"code", "uri", "message"}}`. Each code has exactly one status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dmtree_core::{DmtError, UriError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Tree(#[from] DmtError),
    #[error("the bearer token is not valid")]
    InvalidToken,
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
    #[error("no such endpoint")]
    RouteNotFound,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("{principal} already has {limit} event streams open; close one first")]
    TooManyStreams { principal: String, limit: usize },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<UriError> for ApiError {
    fn from(e: UriError) -> Self {
        ApiError::Tree(DmtError::InvalidUri(e))
    }
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `node_not_found`.
    pub code: &'static str,
    /// The URI the error is about, in canonical form; empty when none.
    pub uri: String,
    pub message: String,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Tree(e) => e.code(),
            ApiError::InvalidToken => "invalid_token",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::RouteNotFound => "route_not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::TooManyStreams { .. } => "too_many_streams",
            ApiError::Internal(_) => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code())
    }

    pub fn param(name: &'static str, reason: impl Into<String>) -> Self {
        ApiError::InvalidParameter { name, reason: reason.into() }
    }
}

/// The one status for each code.
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "node_not_found" | "session_not_found" | "route_not_found" => StatusCode::NOT_FOUND,
        "node_already_exists" | "concurrent_access" | "transaction_error" | "loop_detected" => StatusCode::CONFLICT,
        "permission_denied" => StatusCode::FORBIDDEN,
        "authentication_required" | "invalid_token" => StatusCode::UNAUTHORIZED,
        // Asking a handler for what it cannot do is the caller's mistake, not a server fault.
        "metadata_mismatch" | "feature_not_supported" => StatusCode::UNPROCESSABLE_ENTITY,
        "command_not_allowed" | "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "invalid_uri" | "invalid_data" | "invalid_json" | "invalid_parameter" | "outside_session" => {
            StatusCode::BAD_REQUEST
        }
        "uri_too_long" => StatusCode::URI_TOO_LONG,
        "too_many_streams" => StatusCode::TOO_MANY_REQUESTS,
        "precondition_failed" => StatusCode::PRECONDITION_FAILED,
        "limit_exceeded" | "body_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "remote_error" => StatusCode::BAD_GATEWAY,
        "data_store_failure" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        }
        let uri = match &self {
            ApiError::Tree(e) => e.uri().to_owned(),
            _ => String::new(),
        };
        let body = ErrorBody { error: ErrorDetail { code: self.code(), uri, message: self.to_string() } };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"dmtree\""));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
