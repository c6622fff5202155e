//! The OpenAPI contract, generated from the handlers' annotations.
//! `dmtree openapi > openapi.yaml` regenerates the committed copy.

use std::sync::OnceLock;

use utoipa::OpenApi;

use crate::rest::{events, federation, ops, sessions, tree};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dmtree",
        description = "A management tree in the style of OMA-DM and OSGi DMT Admin. `/tree/{uri}` maps onto the node `./{uri}`. \
Send `Authorization: Bearer <token>`; without it you act as the anonymous principal, which gets what ACLs grant to `*`. \
Errors are `{\"error\": {\"code\", \"uri\", \"message\"}}`."
    ),
    paths(
        tree::get_node, tree::put_node, tree::post_node, tree::patch_node, tree::delete_node, tree::exec_node,
        sessions::open, sessions::list, sessions::show, sessions::commit, sessions::rollback, sessions::close,
        events::events, federation::grant, ops::healthz, ops::whoami, ops::metrics, ops::openapi,
    ),
    tags(
        (name = "tree", description = "Read and write nodes"),
        (name = "sessions", description = "Shared, exclusive and atomic sessions"),
        (name = "events", description = "Change notifications"),
        (name = "federation", description = "Mounting other trees, and being mounted"),
        (name = "ops", description = "Health, the caller, metrics and this contract"),
    )
)]
struct ApiDoc;

pub fn yaml() -> &'static str {
    static YAML: OnceLock<String> = OnceLock::new();
    YAML.get_or_init(|| {
        ApiDoc::openapi().to_yaml().unwrap_or_else(|e| format!("# cannot render the OpenAPI document: {e}\n"))
    })
}
