//! `GET /federation/grant`: what another tree asks before it mounts one of
//! our subtrees.

use axum::Json;
use axum::extract::State;
use dmtree_core::{Caller, DmtError, Uri};
use serde::Serialize;
use serde_json::Value as Json_;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Auth, Params};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct GrantCheck {
    /// This server's instance id.
    pub instance: String,
    pub principal: String,
    pub subtree: String,
    /// The grant that allows it.
    pub grant: String,
    /// `read-only` or `read-write`.
    pub rights: &'static str,
    /// What the trees mounted within the subtree answered, one hop further.
    #[schema(value_type = Vec<Object>)]
    pub nested: Vec<Json_>,
}

/// May the caller mount `subtree`? Answers with the grant when there is one
/// (and the subtree is there, and readable); refuses with `403` when there is
/// none, and with `409 loop_detected` when the request has passed this tree
/// before, here or at any tree mounted within the subtree.
#[utoipa::path(
    get, path = "/federation/grant", tag = "federation",
    params(("subtree" = String, Query, description = "The subtree to mount, e.g. `./infrastructure`")),
    responses(
        (status = 200, description = "Granted", body = GrantCheck),
        (status = 403, description = "No grant covers the subtree", body = ErrorBody),
        (status = 409, description = "A loop", body = ErrorBody),
        (status = "4XX", description = "Error", body = ErrorBody),
    )
)]
pub async fn grant(State(app): State<AppState>, Auth(p): Auth, params: Params) -> ApiResult<Json<GrantCheck>> {
    params.allow(&["subtree"])?;
    let subtree = params.get("subtree").ok_or_else(|| ApiError::param("subtree", "required, e.g. ./infrastructure"))?;
    let subtree = Uri::parse(subtree, app.tree.limits())?;
    let who = p.name().unwrap_or("anonymous").to_owned();
    let granted = app
        .federation
        .grants
        .covering(&p, &subtree)
        .ok_or_else(|| DmtError::not_granted(&subtree, format!("{who} holds no grant on {subtree}")))?;
    app.tree.read(&Caller::new(&p), &subtree, 0).await?;
    let nested = app.federation.check_nested(&subtree).await?;
    Ok(Json(GrantCheck {
        instance: app.federation.local.instance.to_string(),
        principal: who,
        subtree: subtree.to_string(),
        grant: granted.id.clone(),
        rights: granted.rights(),
        nested,
    }))
}
