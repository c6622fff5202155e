//! `./managers` in the tree: the coordinator, the members and the resources
//! (the registry's summary), each resource's detail (held by its manager;
//! read or run from any member, forwarded there), and the counters.

use std::sync::Arc;

use async_trait::async_trait;
use dmtree_agent::protocol::{Operation as AgentOp, ToManager};
use dmtree_core::{
    DataHandler, DmtError, Meta, NewNode, Node, OpContext, Operation, Result, Uri, Value, json_children, json_node,
};
use serde_json::{Value as Json, json};

use crate::cloud::{Cloud, Role};
use crate::holder::OpError;
use crate::registry::ResourceRow;

pub struct ManagersHandler {
    cloud: Arc<Cloud>,
}

impl ManagersHandler {
    pub fn new(cloud: Arc<Cloud>) -> Self {
        Self { cloud }
    }
}

const DETAIL: [&str; 4] = ["properties", "actions", "rules", "writable"];

/// Where a path points.
enum Place {
    Root,
    Coordinator(Uri),
    Members(Uri),
    Resources,
    Resource(String),
    Summary(String, Uri),
    Detail(String, Uri),
    Monitoring(Uri),
}

fn place(path: &Uri) -> Result<Place> {
    let segs: Vec<&str> = path.segments().collect();
    Ok(match segs.as_slice() {
        [] => Place::Root,
        ["coordinator", ..] => Place::Coordinator(path.skip(1)),
        ["members", ..] => Place::Members(path.skip(1)),
        ["monitoring", ..] => Place::Monitoring(path.skip(1)),
        ["resources"] => Place::Resources,
        ["resources", id] => Place::Resource((*id).into()),
        ["resources", id, part, ..] if DETAIL.contains(part) => Place::Detail((*id).into(), path.skip(2)),
        ["resources", id, _] => Place::Summary((*id).into(), path.skip(2)),
        _ => return Err(DmtError::not_found(path)),
    })
}

fn summary(row: &ResourceRow) -> Json {
    json!({
        "type": row.kind,
        "manager": row.manager,
        "status": row.status,
        "endpoint": row.endpoint,
        "instance": row.instance,
        "policy": row.policy,
        "owner": row.owner,
        "term": row.term,
    })
}

fn op_error(path: &Uri, e: OpError) -> DmtError {
    match e {
        OpError::NotFound => DmtError::not_found(path),
        OpError::Refused(why) => DmtError::remote(path, format!("the resource refused: {why}")),
        OpError::Unavailable(why) => DmtError::remote(path, why),
    }
}

fn registry_error(path: &Uri, e: crate::registry::RegistryError) -> DmtError {
    DmtError::store(path, e)
}

impl ManagersHandler {
    fn coordinator(&self) -> Json {
        let view = self.cloud.view();
        let c = view.coordinator;
        json!({ "id": c.id, "birth": c.birth, "instance": c.instance, "term": c.term, "since": c.since,
                "successors": view.successors.join(",") })
    }

    async fn members(&self, path: &Uri) -> Result<Json> {
        let rows = self.cloud.registry.members().await.map_err(|e| registry_error(path, e))?;
        let members: serde_json::Map<String, Json> = rows
            .into_iter()
            .map(|m| {
                let load = m.held as f64 / m.capacity.max(1) as f64;
                let body = json!({ "birth": m.birth, "instance": m.instance, "endpoint": m.endpoint,
                    "lease_until": m.lease_until, "live": m.live, "capacity": m.capacity, "resources": m.held, "load": load });
                (m.id, body)
            })
            .collect();
        Ok(Json::Object(members))
    }

    fn monitoring(&self) -> Json {
        let mut counters = self.cloud.counters.to_json();
        let me = self.cloud.me();
        let role = match self.cloud.role() {
            Role::Joining => "joining",
            Role::Member => "member",
            Role::Coordinator(_) => "coordinator",
        };
        counters["self"] = json!({ "id": self.cloud.settings.id, "role": role, "birth": me.map(|m| m.birth),
            "instance": me.map(|m| m.instance), "held": self.cloud.holdings.len() });
        counters
    }

    async fn row(&self, id: &str, path: &Uri) -> Result<ResourceRow> {
        self.cloud
            .registry
            .resource(id)
            .await
            .map_err(|e| registry_error(path, e))?
            .ok_or_else(|| DmtError::not_found(path))
    }

    /// The detail, from this member's holdings or from the holder.
    async fn detail(&self, id: &str, path: &Uri) -> Result<Json> {
        if let Some(held) = self.cloud.holdings.get(id) {
            return Ok(held.detail());
        }
        self.cloud.forward(id, ToManager::Detail { resource: id.into() }).await.map_err(|e| op_error(path, e))
    }

    async fn operate(&self, id: &str, op: AgentOp, path: &Uri) -> Result<Json> {
        let outcome = match self.cloud.holdings.get(id) {
            Some(_) => self.cloud.command(id, op).await,
            None => self.cloud.forward(id, ToManager::Forward { resource: id.into(), operation: op }).await,
        };
        outcome.map_err(|e| op_error(path, e))
    }

    /// The document the node at `path` lies in, and the path inside it.
    async fn document(&self, path: &Uri) -> Result<(Json, Uri)> {
        Ok(match place(path)? {
            Place::Root => (json!({"coordinator": {}, "members": {}, "resources": {}, "monitoring": {}}), Uri::root()),
            Place::Coordinator(rest) => (self.coordinator(), rest),
            Place::Members(rest) => (self.members(path).await?, rest),
            Place::Monitoring(rest) => (self.monitoring(), rest),
            Place::Resources => {
                let rows = self.cloud.registry.resources().await.map_err(|e| registry_error(path, e))?;
                (Json::Object(rows.into_iter().map(|r| (r.id, json!({}))).collect()), Uri::root())
            }
            Place::Resource(id) => {
                let mut body = summary(&self.row(&id, path).await?);
                for part in DETAIL {
                    body[part] = json!({});
                }
                (body, Uri::root())
            }
            Place::Summary(id, rest) => (summary(&self.row(&id, path).await?), rest),
            Place::Detail(id, rest) if rest.depth() == 1 => {
                // The detail's sections exist whenever the resource does.
                self.row(&id, path).await?;
                (json!({ rest.name().unwrap_or_default(): {} }), rest)
            }
            Place::Detail(id, rest) => (self.detail(&id, path).await?, rest),
        })
    }
}

#[async_trait]
impl DataHandler for ManagersHandler {
    fn kind(&self) -> &'static str {
        "managers"
    }

    async fn get(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        let (doc, rest) = self.document(path).await?;
        json_node(doc, &rest).map_err(|e| e.with_uri(path))
    }

    async fn children(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        if let Place::Detail(id, rest) = place(path)? {
            // A section of a resource whose holder cannot answer lists as
            // empty, so one dead member does not fail a whole listing.
            return match self.detail(&id, path).await {
                Ok(doc) => json_children(doc, &rest).map_err(|e| e.with_uri(path)),
                Err(e) if e.is(dmtree_core::ErrorCode::RemoteError) => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let (doc, rest) = self.document(path).await?;
        json_children(doc, &rest).map_err(|e| e.with_uri(path))
    }

    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        let segs: Vec<&str> = path.segments().collect();
        Ok(match segs.as_slice() {
            ["resources", _, "actions", _] => Meta::read_only().with_operations(&[Operation::Get, Operation::Exec]),
            ["resources", _, "properties", _] => {
                Meta::read_only().with_operations(&[Operation::Get, Operation::Add, Operation::Replace])
            }
            _ => Meta::read_only(),
        })
    }

    async fn replace(&self, _cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        let segs: Vec<&str> = path.segments().collect();
        let ["resources", id, "properties", property] = segs.as_slice() else {
            return Err(DmtError::not_allowed(path, "only a resource's writable properties can be set"));
        };
        let op = AgentOp::Set { property: (*property).into(), value: value.to_json() };
        self.operate(id, op, path).await.map(|_| ())
    }

    /// Setting a writable property that has no value yet.
    async fn add(&self, cx: OpContext<'_>, path: &Uri, node: NewNode) -> Result<()> {
        match node {
            NewNode::Leaf(value) => self.replace(cx, path, value).await,
            NewNode::Interior => Err(DmtError::not_allowed(path, "a resource's properties are leaves")),
        }
    }

    async fn exec(&self, _cx: OpContext<'_>, path: &Uri, data: Option<Json>) -> Result<Json> {
        let segs: Vec<&str> = path.segments().collect();
        let ["resources", id, "actions", action] = segs.as_slice() else {
            return Err(DmtError::not_allowed(path, "only a resource's actions can be executed"));
        };
        let op = AgentOp::Exec { action: (*action).into(), data: data.unwrap_or(Json::Null) };
        self.operate(id, op, path).await
    }

    fn attach(&self, sink: dmtree_core::ChangeSink) {
        self.cloud.start(sink);
    }

    fn status(&self) -> Option<Json> {
        Some(self.monitoring())
    }
}
