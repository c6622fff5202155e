//! The rules for federated requests: those that carry a `Dmtree-Via` path
//! because another tree forwarded them. A request that has been here before
//! is a loop and is refused, as is one past `max_hops`; one outside what this
//! tree granted its principal is refused too. The request then runs with its
//! path as the current `Via`, so whatever it forwards goes one hop further.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dmtree_core::via::{INSTANCE_HEADER, VIA_HEADER};
use dmtree_core::{DmtError, Principal, Uri, UriLimits, UriPattern, Via};

use super::Federation;
use crate::error::ApiError;
use crate::extract::Auth;
use crate::state::AppState;

pub async fn federated(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let via = match req.headers().get(VIA_HEADER).map(HeaderValue::to_str) {
        None => return next.run(req).await,
        Some(Ok(v)) => Via::parse(v),
        Some(Err(_)) => return ApiError::param("Dmtree-Via", "not ASCII").into_response(),
    };
    if via.hops() == 0 {
        return next.run(req).await;
    }
    let fed = &app.federation;
    let (mut parts, body) = req.into_parts();
    let checked = async {
        refuse_loops(fed, &via)?;
        let Auth(principal) = Auth::from_request_parts(&mut parts, &app).await?;
        authorize(fed, &principal, &parts.method, &parts.uri, app.tree.limits())
    };
    if let Err(e) = checked.await {
        return e.into_response();
    }
    let mut resp = via.scope(next.run(Request::from_parts(parts, body))).await;
    if let Ok(v) = HeaderValue::from_str(&fed.local.instance) {
        resp.headers_mut().insert(INSTANCE_HEADER, v);
    }
    resp
}

fn refuse_loops(fed: &Federation, via: &Via) -> Result<(), ApiError> {
    let here = &*fed.local.instance;
    let reason = if via.contains(here) {
        format!("the request came back to {here} (path {}): the mounts form a loop", via.header())
    } else if via.hops() > fed.local.max_hops {
        format!("the request has passed {} trees, more than max_hops ({})", via.hops(), fed.local.max_hops)
    } else {
        return Ok(());
    };
    Err(DmtError::loop_detected(reason).into())
}

/// What a federated request reaches.
enum Target {
    Node {
        uri: Uri,
        write: bool,
    },
    /// Sessions lock before they write: any read-write grant may open one.
    Sessions,
    Open,
}

fn target(method: &Method, uri: &axum::http::Uri, limits: &UriLimits) -> Result<Target, ApiError> {
    let path = uri.path();
    let write = !matches!(*method, Method::GET | Method::HEAD);
    if let Some(rest) = path.strip_prefix("/tree") {
        return Ok(Target::Node { uri: Uri::from_http_path(rest, limits)?, write });
    }
    if let Some(rest) = path.strip_prefix("/exec") {
        return Ok(Target::Node { uri: Uri::from_http_path(rest, limits)?, write: true });
    }
    match path {
        "/events" => {
            let Query(q) = Query::<HashMap<String, String>>::try_from_uri(uri)
                .map_err(|e| ApiError::param("query", e.body_text()))?;
            if q.contains_key("subscription") {
                return Err(refused("a federated event stream is ad hoc: subscriptions are local".into()).into());
            }
            let pattern = UriPattern::parse(q.get("uri").map_or("./**", String::as_str), limits)?;
            Ok(Target::Node { uri: pattern.base(), write: false })
        }
        "/federation/grant" | "/healthz" => Ok(Target::Open),
        p if p == "/sessions" || p.starts_with("/sessions/") => Ok(Target::Sessions),
        other => Err(refused(format!("{other} is not open to federated requests")).into()),
    }
}

/// A federated request refused as a whole (no node to name).
fn refused(reason: String) -> DmtError {
    DmtError::new(dmtree_core::ErrorCode::PermissionDenied, "", reason)
}

fn authorize(
    fed: &Federation,
    principal: &Principal,
    method: &Method,
    uri: &axum::http::Uri,
    limits: &UriLimits,
) -> Result<(), ApiError> {
    let who = principal.name().unwrap_or("anonymous");
    match target(method, uri, limits)? {
        Target::Open => Ok(()),
        Target::Sessions if fed.grants.any_read_write(principal) => Ok(()),
        Target::Sessions => {
            Err(refused(format!("{who} holds no read-write grant here, so it may not write (nor open a session to)"))
                .into())
        }
        Target::Node { uri, write } => match fed.grants.covering(principal, &uri) {
            None => Err(DmtError::not_granted(&uri, format!("{who} holds no grant on {uri}")).into()),
            Some(g) if write && g.rights == super::grants::Rights::ReadOnly => {
                Err(DmtError::not_granted(&uri, format!("the grant {} lets {who} read {uri}, not change it", g.id))
                    .into())
            }
            Some(_) => Ok(()),
        },
    }
}
