//! Errors as DMT Admin reports them: a stable code, the URI concerned and a
//! message. `ErrorCode` is the one list of codes (the REST layer gives each
//! exactly one HTTP status, and the README's table is generated from it).

use std::fmt;

use thiserror::Error;

use crate::acl::{AclError, Permission, Principal};
use crate::meta::MetaViolation;
use crate::uri::{Uri, UriError};
use crate::value::ValueError;

pub type Result<T, E = DmtError> = std::result::Result<T, E>;

macro_rules! codes {
    ($($variant:ident => $text:literal,)*) => {
        /// Every error code a caller can meet.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable, machine-readable form, e.g. `node_not_found`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }
        }
    };
}

codes! {
    InvalidUri => "invalid_uri",
    InvalidJson => "invalid_json",
    InvalidData => "invalid_data",
    InvalidParameter => "invalid_parameter",
    OutsideSession => "outside_session",
    AuthenticationRequired => "authentication_required",
    InvalidToken => "invalid_token",
    PermissionDenied => "permission_denied",
    NodeNotFound => "node_not_found",
    SessionNotFound => "session_not_found",
    RouteNotFound => "route_not_found",
    CommandNotAllowed => "command_not_allowed",
    MethodNotAllowed => "method_not_allowed",
    NodeAlreadyExists => "node_already_exists",
    ConcurrentAccess => "concurrent_access",
    TransactionError => "transaction_error",
    LoopDetected => "loop_detected",
    PreconditionFailed => "precondition_failed",
    BodyTooLarge => "body_too_large",
    LimitExceeded => "limit_exceeded",
    UriTooLong => "uri_too_long",
    MetadataMismatch => "metadata_mismatch",
    FeatureNotSupported => "feature_not_supported",
    InvalidRule => "invalid_rule",
    TooManyStreams => "too_many_streams",
    InternalError => "internal_error",
    RemoteError => "remote_error",
    DataStoreFailure => "data_store_failure",
}

impl ErrorCode {
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets tests and callers compare with the wire form.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An error: what went wrong (`code`), where (`uri`, canonical; empty when
/// none), and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct DmtError {
    pub code: ErrorCode,
    pub uri: String,
    pub message: String,
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
    pub fn new(code: ErrorCode, uri: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code, uri: uri.into(), message: message.into() }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The URI the error is about, in canonical form (empty when none).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code
    }

    pub fn not_found(uri: &Uri) -> Self {
        Self::new(ErrorCode::NodeNotFound, uri.to_string(), format!("node {uri} not found"))
    }

    pub fn exists(uri: &Uri) -> Self {
        Self::new(ErrorCode::NodeAlreadyExists, uri.to_string(), format!("node {uri} already exists"))
    }

    /// Something in the way that is not simply a node (a mount point, say).
    pub fn conflict(uri: &Uri, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::NodeAlreadyExists, uri.to_string(), reason)
    }

    pub fn denied(uri: &Uri, principal: &Principal, perm: Permission) -> Self {
        let code = match principal {
            Principal::Anonymous => ErrorCode::AuthenticationRequired,
            Principal::Named(_) => ErrorCode::PermissionDenied,
        };
        Self::new(code, uri.to_string(), format!("{principal} lacks {perm} on {uri}"))
    }

    /// A federated request outside what this tree granted the caller.
    pub fn not_granted(uri: &Uri, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, uri.to_string(), reason)
    }

    pub fn not_allowed(uri: &Uri, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::CommandNotAllowed, uri.to_string(), reason)
    }

    pub fn invalid_data(uri: &Uri, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(ErrorCode::InvalidData, uri.to_string(), format!("invalid data for {uri}: {reason}"))
    }

    pub fn store(uri: &Uri, reason: impl ToString) -> Self {
        Self::new(ErrorCode::DataStoreFailure, uri.to_string(), format!("data store failure: {}", reason.to_string()))
    }

    pub fn meta(uri: &Uri, v: MetaViolation) -> Self {
        match v {
            MetaViolation::NotAllowed(op) => {
                DmtError::not_allowed(uri, format!("{op:?} is not allowed on {uri}").to_lowercase())
            }
            MetaViolation::Mismatch(reason) => Self::new(ErrorCode::MetadataMismatch, uri.to_string(), reason),
        }
    }

    /// A rule that does not compile or check: names the field and the position.
    pub fn invalid_rule(uri: &Uri, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRule, uri.to_string(), reason)
    }

    pub fn concurrent(uri: &Uri, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::ConcurrentAccess, uri.to_string(), reason)
    }

    pub fn transaction(uri: &Uri, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::TransactionError, uri.to_string(), reason)
    }

    pub fn precondition(uri: &Uri, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(ErrorCode::PreconditionFailed, uri.to_string(), format!("version of {uri} does not match: {reason}"))
    }

    pub fn unsupported(uri: &Uri, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::FeatureNotSupported, uri.to_string(), reason)
    }

    pub fn remote(uri: &Uri, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(ErrorCode::RemoteError, uri.to_string(), format!("remote error: {reason}"))
    }

    pub fn limit(uri: &Uri, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::LimitExceeded, uri.to_string(), reason)
    }

    pub fn session_not_found(id: &str) -> Self {
        let id: String = id.chars().take(64).collect();
        Self::new(ErrorCode::SessionNotFound, "", format!("session {id} not found"))
    }

    pub fn outside_session(uri: &Uri, root: &Uri) -> Self {
        Self::new(ErrorCode::OutsideSession, uri.to_string(), format!("{uri} is outside the session root {root}"))
    }

    pub fn loop_detected(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::LoopDetected, "", reason)
    }

    /// Rewrites the URI the error names, for errors raised with a handler-relative path.
    pub fn with_uri(mut self, uri: &Uri) -> Self {
        if !matches!(self.code, ErrorCode::InvalidUri | ErrorCode::UriTooLong | ErrorCode::SessionNotFound) {
            self.uri = uri.to_string();
        }
        self
    }
}

impl From<UriError> for DmtError {
    fn from(e: UriError) -> Self {
        let code = match e {
            UriError::Invalid { .. } => ErrorCode::InvalidUri,
            UriError::TooLong { .. } => ErrorCode::UriTooLong,
        };
        Self::new(code, e.uri(), e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_and_is_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            assert!(seen.insert(code.as_str()), "{code} twice");
        }
        assert_eq!(ErrorCode::parse("nonsense"), None);
    }

    #[test]
    fn errors_keep_their_uri_unless_it_is_the_problem() {
        let e = DmtError::not_found(&Uri::from_key("x")).with_uri(&Uri::from_key("m\0x"));
        assert_eq!((e.code(), e.uri()), (ErrorCode::NodeNotFound, "./m/x"));
        let bad: DmtError = UriError::invalid("./a//b", "empty segment").into();
        assert_eq!(bad.clone().with_uri(&Uri::from_key("m")).uri(), bad.uri());
    }
}
