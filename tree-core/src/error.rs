//! The DmtException-style error enum. Every variant has a stable code; the
//! REST layer maps each code to exactly one HTTP status.

use thiserror::Error;

use crate::acl::{AclError, Permission, Principal};
use crate::meta::MetaViolation;
use crate::uri::{Uri, UriError};
use crate::value::ValueError;

pub type Result<T, E = DmtError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Error)]
pub enum DmtError {
    #[error("node {uri} not found")]
    NodeNotFound { uri: String },
    #[error("node {uri} already exists")]
    NodeAlreadyExists { uri: String },
    /// Something in the way that is not simply a node (a mount point, say).
    #[error("{reason}")]
    Conflict { uri: String, reason: String },
    #[error("{principal} lacks {perm} on {uri}")]
    PermissionDenied { uri: String, principal: String, perm: Permission, anonymous: bool },
    #[error("{reason}")]
    MetadataMismatch { uri: String, reason: String },
    #[error("{reason}")]
    CommandNotAllowed { uri: String, reason: String },
    #[error("{0}")]
    InvalidUri(UriError),
    #[error("invalid data for {uri}: {reason}")]
    InvalidData { uri: String, reason: String },
    #[error("{reason}")]
    ConcurrentAccess { uri: String, reason: String },
    #[error("{reason}")]
    TransactionError { uri: String, reason: String },
    #[error("version of {uri} does not match: {reason}")]
    PreconditionFailed { uri: String, reason: String },
    #[error("data store failure: {reason}")]
    DataStoreFailure { uri: String, reason: String },
    #[error("remote error: {reason}")]
    RemoteError { uri: String, reason: String },
    #[error("{reason}")]
    FeatureNotSupported { uri: String, reason: String },
    #[error("{reason}")]
    LimitExceeded { uri: String, reason: String },
    #[error("session {id} not found")]
    SessionNotFound { id: String },
    #[error("{uri} is outside the session root {root}")]
    OutsideSession { uri: String, root: String },
    #[error("{reason}")]
    LoopDetected { uri: String, reason: String },
    /// A federated request outside what this tree granted the caller.
    #[error("{reason}")]
    NotGranted { uri: String, reason: String },
    /// An error a remote tree answered, passed through with its code and
    /// message; only the URI is made local.
    #[error("{message}")]
    Forwarded { code: &'static str, uri: String, message: String },
}

/// An error with its causes, as one line ("error sending request: connection
/// refused"): HTTP clients keep the useful part in `source()`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl DmtError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DmtError::NodeNotFound { .. } => "node_not_found",
            DmtError::NodeAlreadyExists { .. } => "node_already_exists",
            DmtError::PermissionDenied { anonymous: true, .. } => "authentication_required",
            DmtError::PermissionDenied { .. } => "permission_denied",
            DmtError::MetadataMismatch { .. } => "metadata_mismatch",
            DmtError::CommandNotAllowed { .. } => "command_not_allowed",
            DmtError::InvalidUri(UriError::Invalid { .. }) => "invalid_uri",
            DmtError::InvalidUri(UriError::TooLong { .. }) => "uri_too_long",
            DmtError::InvalidData { .. } => "invalid_data",
            DmtError::ConcurrentAccess { .. } => "concurrent_access",
            DmtError::TransactionError { .. } => "transaction_error",
            DmtError::PreconditionFailed { .. } => "precondition_failed",
            DmtError::DataStoreFailure { .. } => "data_store_failure",
            DmtError::RemoteError { .. } => "remote_error",
            DmtError::FeatureNotSupported { .. } => "feature_not_supported",
            DmtError::LimitExceeded { .. } => "limit_exceeded",
            DmtError::SessionNotFound { .. } => "session_not_found",
            DmtError::OutsideSession { .. } => "outside_session",
            DmtError::LoopDetected { .. } => "loop_detected",
            DmtError::NotGranted { .. } => "permission_denied",
            DmtError::Conflict { .. } => "node_already_exists",
            DmtError::Forwarded { code, .. } => code,
        }
    }

    /// The URI the error is about, in canonical form (empty when none).
    pub fn uri(&self) -> &str {
        match self {
            DmtError::InvalidUri(e) => e.uri(),
            DmtError::SessionNotFound { .. } => "",
            DmtError::NodeNotFound { uri }
            | DmtError::NodeAlreadyExists { uri }
            | DmtError::PermissionDenied { uri, .. }
            | DmtError::MetadataMismatch { uri, .. }
            | DmtError::CommandNotAllowed { uri, .. }
            | DmtError::InvalidData { uri, .. }
            | DmtError::ConcurrentAccess { uri, .. }
            | DmtError::TransactionError { uri, .. }
            | DmtError::PreconditionFailed { uri, .. }
            | DmtError::DataStoreFailure { uri, .. }
            | DmtError::RemoteError { uri, .. }
            | DmtError::FeatureNotSupported { uri, .. }
            | DmtError::LimitExceeded { uri, .. }
            | DmtError::OutsideSession { uri, .. }
            | DmtError::LoopDetected { uri, .. }
            | DmtError::NotGranted { uri, .. }
            | DmtError::Conflict { uri, .. }
            | DmtError::Forwarded { uri, .. } => uri,
        }
    }

    pub fn not_found(uri: &Uri) -> Self {
        DmtError::NodeNotFound { uri: uri.to_string() }
    }

    pub fn exists(uri: &Uri) -> Self {
        DmtError::NodeAlreadyExists { uri: uri.to_string() }
    }

    pub fn denied(uri: &Uri, principal: &Principal, perm: Permission) -> Self {
        DmtError::PermissionDenied {
            uri: uri.to_string(),
            principal: principal.to_string(),
            perm,
            anonymous: matches!(principal, Principal::Anonymous),
        }
    }

    pub fn not_allowed(uri: &Uri, reason: impl Into<String>) -> Self {
        DmtError::CommandNotAllowed { uri: uri.to_string(), reason: reason.into() }
    }

    pub fn invalid_data(uri: &Uri, reason: impl Into<String>) -> Self {
        DmtError::InvalidData { uri: uri.to_string(), reason: reason.into() }
    }

    pub fn store(uri: &Uri, reason: impl ToString) -> Self {
        DmtError::DataStoreFailure { uri: uri.to_string(), reason: reason.to_string() }
    }

    pub fn meta(uri: &Uri, v: MetaViolation) -> Self {
        match v {
            MetaViolation::NotAllowed(op) => {
                DmtError::not_allowed(uri, format!("{op:?} is not allowed on {uri}").to_lowercase())
            }
            MetaViolation::Mismatch(reason) => DmtError::MetadataMismatch { uri: uri.to_string(), reason },
        }
    }

    pub fn concurrent(uri: &Uri, reason: impl Into<String>) -> Self {
        DmtError::ConcurrentAccess { uri: uri.to_string(), reason: reason.into() }
    }

    pub fn transaction(uri: &Uri, reason: impl Into<String>) -> Self {
        DmtError::TransactionError { uri: uri.to_string(), reason: reason.into() }
    }

    pub fn precondition(uri: &Uri, reason: impl Into<String>) -> Self {
        DmtError::PreconditionFailed { uri: uri.to_string(), reason: reason.into() }
    }

    pub fn unsupported(uri: &Uri, reason: impl Into<String>) -> Self {
        DmtError::FeatureNotSupported { uri: uri.to_string(), reason: reason.into() }
    }

    pub fn remote(uri: &Uri, reason: impl Into<String>) -> Self {
        DmtError::RemoteError { uri: uri.to_string(), reason: reason.into() }
    }

    pub fn limit(uri: &Uri, reason: impl Into<String>) -> Self {
        DmtError::LimitExceeded { uri: uri.to_string(), reason: reason.into() }
    }

    /// Rewrites the URI the error names, for errors raised with a handler-relative path.
    pub fn with_uri(mut self, uri: &Uri) -> Self {
        let text = uri.to_string();
        match &mut self {
            DmtError::InvalidUri(_) | DmtError::SessionNotFound { .. } => {}
            DmtError::NodeNotFound { uri }
            | DmtError::NodeAlreadyExists { uri }
            | DmtError::PermissionDenied { uri, .. }
            | DmtError::MetadataMismatch { uri, .. }
            | DmtError::CommandNotAllowed { uri, .. }
            | DmtError::InvalidData { uri, .. }
            | DmtError::ConcurrentAccess { uri, .. }
            | DmtError::TransactionError { uri, .. }
            | DmtError::PreconditionFailed { uri, .. }
            | DmtError::DataStoreFailure { uri, .. }
            | DmtError::RemoteError { uri, .. }
            | DmtError::FeatureNotSupported { uri, .. }
            | DmtError::LimitExceeded { uri, .. }
            | DmtError::OutsideSession { uri, .. }
            | DmtError::LoopDetected { uri, .. }
            | DmtError::NotGranted { uri, .. }
            | DmtError::Conflict { uri, .. }
            | DmtError::Forwarded { uri, .. } => *uri = text,
        }
        self
    }
}

impl From<UriError> for DmtError {
    fn from(e: UriError) -> Self {
        DmtError::InvalidUri(e)
    }
}

impl DmtError {
    pub fn from_value(uri: &Uri, e: ValueError) -> Self {
        DmtError::invalid_data(uri, e.0)
    }

    pub fn from_acl(uri: &Uri, e: AclError) -> Self {
        DmtError::invalid_data(uri, e.to_string())
    }
}
