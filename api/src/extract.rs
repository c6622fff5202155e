//! Request extractors whose rejections are JSON errors like every other.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use dmtree_core::{Caller, Precondition, Principal, Uri, Versions};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// The calling principal: from `Authorization: Bearer`, or anonymous.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Auth(Principal::Anonymous));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(ApiError::InvalidToken)?;
        state.tokens.principal(token).map(Auth).ok_or(ApiError::InvalidToken)
    }
}

/// What every `/tree/…` and `/exec/…` handler starts from: who calls, which
/// node, in which session, with which query parameters and preconditions.
pub struct NodeRequest {
    pub principal: Principal,
    pub uri: Uri,
    pub session: Option<String>,
    pub params: Params,
    pub precondition: Precondition,
}

impl NodeRequest {
    /// Refuses query parameters other than `session` and these.
    pub fn allow(&self, extra: &[&'static str]) -> Result<(), ApiError> {
        let mut known = vec!["session"];
        known.extend_from_slice(extra);
        self.params.allow(&known).map(drop)
    }

    pub fn caller(&self) -> Caller<'_> {
        Caller::new(&self.principal).in_session(self.session.as_deref())
    }
}

impl FromRequestParts<AppState> for NodeRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        let params = Params::from_request_parts(parts, state).await?;
        let path = parts.uri.path();
        let prefix = if path.starts_with("/exec") { "/exec" } else { "/tree" };
        let uri = tree_uri(path, prefix, state)?;
        let session = session_id(&params, &parts.headers).map(str::to_owned);
        Ok(NodeRequest { principal, uri, session, precondition: precondition(&parts.headers), params })
    }
}

/// A JSON body; an empty body is `None`.
pub struct JsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge { limit }
            } else {
                ApiError::InvalidJson(e.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(None));
        }
        if let Some(n) = dmtree_core::value::inexact_integer(&bytes) {
            return Err(ApiError::InvalidJson(format!(
                "integer {n} does not fit in 64 bits; send it as a string, or as a float with a fraction"
            )));
        }
        serde_json::from_slice(&bytes).map(|v| JsonBody(Some(v))).map_err(|e| ApiError::InvalidJson(e.to_string()))
    }
}

/// Query parameters, checked against what the endpoint accepts.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::param("query", e.body_text()))?;
        Ok(Params(map))
    }
}

impl Params {
    /// Refuses parameters the endpoint does not know, so typos do not pass silently.
    pub fn allow(&self, known: &[&'static str]) -> Result<&Self, ApiError> {
        if let Some(unknown) = self.0.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::param("query", format!("unknown parameter {unknown:?}; expected one of {known:?}")));
        }
        Ok(self)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn flag(&self, name: &'static str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some(other) => Err(ApiError::param(name, format!("{other:?} is not a boolean"))),
        }
    }

    pub fn number(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| ApiError::param(name, format!("{v:?} is not a non-negative integer")))
            })
            .transpose()
    }
}

/// The request headers a read looks at, without cloning the whole header map.
pub struct ReadHeaders {
    pub if_none_match: Option<http::HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for ReadHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ReadHeaders { if_none_match: parts.headers.get(header::IF_NONE_MATCH).cloned() })
    }
}

/// The session a call runs in: `?session=` or the `Dmtree-Session` header.
pub fn session_id<'a>(params: &'a Params, headers: &'a HeaderMap) -> Option<&'a str> {
    params.get("session").or_else(|| headers.get("dmtree-session").and_then(|v| v.to_str().ok()))
}

/// The tree URI of a request path under `prefix` (`/tree` or `/exec`), segments percent-decoded.
pub fn tree_uri(path: &str, prefix: &str, state: &AppState) -> Result<Uri, ApiError> {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    Ok(Uri::from_http_path(rest, state.tree.limits())?)
}

/// `If-Match` / `If-None-Match` as version sets. Weak or foreign tags never match a write.
pub fn precondition(headers: &HeaderMap) -> Precondition {
    let parse = |name: header::HeaderName| {
        let value = headers.get(name)?.to_str().ok()?.trim().to_owned();
        if value == "*" {
            return Some(Versions::Any);
        }
        let versions = value
            .split(',')
            .map(str::trim)
            .filter(|t| !t.starts_with("W/"))
            .filter_map(|t| t.trim_matches('"').parse::<u64>().ok())
            .collect();
        Some(Versions::List(versions))
    };
    Precondition { if_match: parse(header::IF_MATCH), if_none_match: parse(header::IF_NONE_MATCH) }
}
