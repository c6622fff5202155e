//! Every error a client can cause becomes a 4xx with one JSON shape:
//! `{"error": {"code", "uri", "message"}}`. Each code has exactly one status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dmtree_core::{DmtError, ErrorCode, UriError};
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
        ApiError::Tree(DmtError::from(e))
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
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Tree(e) => e.code(),
            ApiError::InvalidToken => ErrorCode::InvalidToken,
            ApiError::InvalidJson(_) => ErrorCode::InvalidJson,
            ApiError::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            ApiError::InvalidParameter { .. } => ErrorCode::InvalidParameter,
            ApiError::RouteNotFound => ErrorCode::RouteNotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::TooManyStreams { .. } => ErrorCode::TooManyStreams,
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code())
    }

    pub fn param(name: &'static str, reason: impl Into<String>) -> Self {
        ApiError::InvalidParameter { name, reason: reason.into() }
    }
}

/// The one status for each code (exhaustive: a new code needs a status here).
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    match code {
        C::InvalidUri | C::InvalidData | C::InvalidJson | C::InvalidParameter | C::OutsideSession => {
            StatusCode::BAD_REQUEST
        }
        C::AuthenticationRequired | C::InvalidToken => StatusCode::UNAUTHORIZED,
        C::PermissionDenied => StatusCode::FORBIDDEN,
        C::NodeNotFound | C::SessionNotFound | C::RouteNotFound => StatusCode::NOT_FOUND,
        C::CommandNotAllowed | C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        C::NodeAlreadyExists | C::ConcurrentAccess | C::TransactionError | C::LoopDetected => StatusCode::CONFLICT,
        C::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        C::LimitExceeded | C::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        C::UriTooLong => StatusCode::URI_TOO_LONG,
        // Asking a handler for what it cannot do is the caller's mistake, not a server fault.
        C::MetadataMismatch | C::FeatureNotSupported | C::InvalidRule => StatusCode::UNPROCESSABLE_ENTITY,
        C::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
        C::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        C::RemoteError => StatusCode::BAD_GATEWAY,
        C::DataStoreFailure => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The README's list of codes, grouped by status in ascending order: generated
/// here, so the documentation cannot miss a code (a test compares them).
pub fn code_table() -> String {
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = std::collections::BTreeMap::new();
    for code in ErrorCode::ALL {
        by_status.entry(status_of(*code).as_u16()).or_default().push(code.as_str());
    }
    let groups: Vec<String> = by_status
        .iter()
        .map(|(status, codes)| {
            let names: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
            format!("{} ({status})", names.join(", "))
        })
        .collect();
    groups.join(";\n") + "."
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = %self.code(), error = %self, "request failed");
        }
        let uri = match &self {
            ApiError::Tree(e) => e.uri().to_owned(),
            _ => String::new(),
        };
        let body = ErrorBody { error: ErrorDetail { code: self.code().as_str(), uri, message: self.to_string() } };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"dmtree\""));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The README lists every code with its status, as generated here.
    #[test]
    fn the_readme_lists_every_code() {
        let readme = include_str!("../../README.md").replace('\n', " ");
        let table = code_table().replace('\n', " ");
        assert!(readme.contains(&table), "README.md's error list should read:\n{}", code_table());
    }
}
