//! `/tree/{uri}` (RESTCONF-style node access) and `/exec/{uri}`.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dmtree_core::{DmtError, NodeView, Selection, Uri};
use serde_json::Value as Json_;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{JsonBody, NodeRequest, ReadHeaders};
use crate::json::{CopyBody, ExecJson, NodeBody, NodeJson, RenameBody, WriteJson, parse_fields, patch_leaves};
use crate::state::AppState;

/// Read a node: a leaf's value, or an interior node's children to `depth`.
#[utoipa::path(
    get, path = "/tree/{uri}", tag = "tree",
    params(
        ("uri" = String, Path, description = "Node path below the root, segments separated by `/` (a `/` inside a name is `%2F`)", pattern = "^([^/\\u0000-\\u001f\\u007f]+(/[^/\\u0000-\\u001f\\u007f]+)*)?$"),
        ("depth" = Option<String>, Query, description = "Levels of children to include: a number (default 1) or `unbounded`", pattern = "^([0-9]{1,9}|unbounded)$"),
        ("props" = Option<bool>, Query, description = "Include node properties"),
        ("fields" = Option<String>, Query, description = "Only these child paths, e.g. `a;b/c`"),
        ("session" = Option<String>, Query, description = "Run inside this session"),
    ),
    responses(
        (status = 200, description = "The node", body = NodeJson,
            headers(("ETag" = String, description = "The node's version"), ("Last-Modified" = String))),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = "4XX", description = "Error", body = ErrorBody),
    )
)]
pub async fn get_node(State(app): State<AppState>, req: NodeRequest, headers: ReadHeaders) -> ApiResult<Response> {
    req.allow(&["depth", "props", "fields"])?;
    let params = &req.params;
    let depth = match params.get("depth") {
        None => 1,
        Some("unbounded") => u32::MAX,
        Some(d) => {
            d.parse().map_err(|_| ApiError::param("depth", format!("{d:?} is not a number or \"unbounded\"")))?
        }
    };
    let selection = params.get("fields").map(parse_fields).transpose()?.map(|f| Selection::from_paths(&f));
    let view = app.tree.read_selected(&req.caller(), &req.uri, depth, selection.as_ref()).await?;
    let json = NodeJson::from_view(&view, params.flag("props")?);
    let body = serde_json::to_vec(&json).map_err(|e| ApiError::Internal(e.to_string()))?;
    let etag = etag(&view, &body);
    let mut resp = if headers.if_none_match.as_ref().is_some_and(|v| if_none_match(v, &etag)) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    set_validators(resp.headers_mut(), &view, &etag);
    Ok(resp)
}

/// A strong ETag from the node's version, or a weak one from the body when the handler keeps no versions.
fn etag(view: &NodeView, body: &[u8]) -> String {
    match view.node.as_ref().map(|n| n.props.version) {
        Some(v) if v > 0 => format!("\"{v}\""),
        _ => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            body.hash(&mut h);
            format!("W/\"{:016x}\"", h.finish())
        }
    }
}

fn if_none_match(value: &HeaderValue, etag: &str) -> bool {
    let Ok(value) = value.to_str() else { return false };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    value.trim() == "*" || value.split(',').any(|t| opaque(t) == opaque(etag))
}

fn set_validators(headers: &mut HeaderMap, view: &NodeView, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    if let Some(ts) = view.node.as_ref().and_then(|n| n.props.timestamp)
        && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::from(ts)))
    {
        headers.insert(header::LAST_MODIFIED, v);
    }
}

fn written(status: StatusCode, out: &dmtree_core::WriteOutcome) -> Response {
    let mut resp = (status, Json(WriteJson::from(out))).into_response();
    if out.version > 0
        && let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", out.version))
    {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&out.uri.to_http_path())
    {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Create or replace a node: `{"value": v, "format"?: f}` for a leaf, `{"children": {...}}` for a subtree.
/// Missing ancestors are created. `title`, `type` and `acl` set properties.
#[utoipa::path(
    put, path = "/tree/{uri}", tag = "tree",
    params(("uri" = String, Path, description = "Node path", pattern = "^([^/\\u0000-\\u001f\\u007f]+(/[^/\\u0000-\\u001f\\u007f]+)*)?$"), ("session" = Option<String>, Query, description = "Run inside this session")),
    request_body = NodeBody,
    responses(
        (status = 200, description = "Replaced", body = WriteJson),
        (status = 201, description = "Created", body = WriteJson),
        (status = 412, description = "If-Match / If-None-Match failed", body = ErrorBody),
        (status = "4XX", description = "Error", body = ErrorBody),
    )
)]
pub async fn put_node(
    State(app): State<AppState>,
    req: NodeRequest,
    JsonBody(body): JsonBody<NodeBody>,
) -> ApiResult<Response> {
    req.allow(&[])?;
    let uri = &req.uri;
    let body = body.ok_or_else(|| ApiError::InvalidJson("a body is required, e.g. {\"value\": 42}".into()))?;
    if body.name.is_some() {
        return Err(DmtError::invalid_data(uri, "\"name\" is for POST; PUT names the node in its path").into());
    }
    let mut write = body.write(uri)?;
    write.precondition = req.precondition.clone();
    let out = app.tree.put(&req.caller(), uri, write).await?;
    Ok(written(if out.created { StatusCode::CREATED } else { StatusCode::OK }, &out))
}

/// Add a child (`{"name"?: n, "value"|"children": ...}`), or with `action=rename` (`{"name"}`)
/// or `action=copy` (`{"to"}`) rename or copy this node.
#[utoipa::path(
    post, path = "/tree/{uri}", tag = "tree",
    params(
        ("uri" = String, Path, description = "Parent node path (or the node to rename or copy)", pattern = "^([^/\\u0000-\\u001f\\u007f]+(/[^/\\u0000-\\u001f\\u007f]+)*)?$"),
        ("action" = Option<String>, Query, description = "`rename` or `copy`; absent adds a child"),
        ("session" = Option<String>, Query, description = "Run inside this session"),
    ),
    request_body = NodeBody,
    responses(
        (status = 201, description = "Created; Location names the new node", body = WriteJson),
        (status = "4XX", description = "Error", body = ErrorBody),
    )
)]
pub async fn post_node(
    State(app): State<AppState>,
    req: NodeRequest,
    JsonBody(body): JsonBody<Json_>,
) -> ApiResult<Response> {
    req.allow(&["action"])?;
    let (uri, caller, params) = (&req.uri, req.caller(), &req.params);
    let body = body.unwrap_or(Json_::Object(Default::default()));
    let decode = |e: serde_json::Error| ApiError::InvalidJson(e.to_string());
    let out = match params.get("action") {
        None => {
            // A handler with a collection here (e.g. ./subscriptions) takes the representation as is.
            if let Some(out) = app.tree.create(&caller, uri, body.clone()).await? {
                return Ok(written(StatusCode::CREATED, &out));
            }
            let body: NodeBody = serde_json::from_value(body).map_err(decode)?;
            let name = match &body.name {
                Some(n) => n.clone(),
                None => uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
            };
            let write = body.write(&uri.join_name(&name))?;
            let content = write.content.clone().unwrap_or(dmtree_core::Content::Interior(Vec::new()));
            app.tree.add_child(&caller, uri, &name, content, write).await?
        }
        Some("rename") => {
            let body: RenameBody = serde_json::from_value(body).map_err(decode)?;
            app.tree.rename(&caller, uri, &body.name).await?
        }
        Some("copy") => {
            let body: CopyBody = serde_json::from_value(body).map_err(decode)?;
            let to = Uri::parse(&body.to, app.tree.limits())?;
            app.tree.copy(&caller, uri, &to).await?
        }
        Some(other) => return Err(ApiError::param("action", format!("{other:?} is not rename or copy"))),
    };
    Ok(written(StatusCode::CREATED, &out))
}

/// Set several leaves below this node, all or nothing: `{"a": 1, "b/c": {"value": "x", "format": "string"}}`.
#[utoipa::path(
    patch, path = "/tree/{uri}", tag = "tree",
    params(("uri" = String, Path, description = "Base node path", pattern = "^([^/\\u0000-\\u001f\\u007f]+(/[^/\\u0000-\\u001f\\u007f]+)*)?$"), ("session" = Option<String>, Query, description = "Run inside this session")),
    request_body(content = Object, description = "Relative path → value, or → {value, format}"),
    responses((status = 200, description = "Merged", body = WriteJson), (status = "4XX", description = "Error", body = ErrorBody))
)]
pub async fn patch_node(
    State(app): State<AppState>,
    req: NodeRequest,
    JsonBody(body): JsonBody<BTreeMap<String, Json_>>,
) -> ApiResult<Response> {
    req.allow(&[])?;
    let body = body.ok_or_else(|| ApiError::InvalidJson("a body is required, e.g. {\"a\": 1}".into()))?;
    let leaves = patch_leaves(&req.uri, body, app.tree.limits())?;
    let out = app.tree.patch(&req.caller(), &req.uri, leaves, req.precondition.clone()).await?;
    Ok(written(StatusCode::OK, &out))
}

/// Delete a node and its subtree.
#[utoipa::path(
    delete, path = "/tree/{uri}", tag = "tree",
    params(("uri" = String, Path, description = "Node path", pattern = "^([^/\\u0000-\\u001f\\u007f]+(/[^/\\u0000-\\u001f\\u007f]+)*)?$"), ("session" = Option<String>, Query, description = "Run inside this session")),
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Error", body = ErrorBody))
)]
pub async fn delete_node(State(app): State<AppState>, req: NodeRequest) -> ApiResult<StatusCode> {
    req.allow(&[])?;
    app.tree.delete(&req.caller(), &req.uri, req.precondition.clone()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Execute a node with optional JSON data; returns the handler's result.
#[utoipa::path(
    post, path = "/exec/{uri}", tag = "tree",
    params(("uri" = String, Path, description = "Node path", pattern = "^([^/\\u0000-\\u001f\\u007f]+(/[^/\\u0000-\\u001f\\u007f]+)*)?$"), ("session" = Option<String>, Query, description = "Run inside this session")),
    request_body(content = Object, description = "Any JSON, passed to the handler"),
    responses((status = 200, description = "Result", body = ExecJson), (status = "4XX", description = "Error", body = ErrorBody))
)]
pub async fn exec_node(
    State(app): State<AppState>,
    req: NodeRequest,
    JsonBody(data): JsonBody<Json_>,
) -> ApiResult<Json<ExecJson>> {
    req.allow(&[])?;
    let result = app.tree.exec(&req.caller(), &req.uri, data).await?;
    Ok(Json(ExecJson { uri: req.uri.to_string(), result }))
}
