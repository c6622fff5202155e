//! Carrying out a firing through the tree, with the rights of the rule's
//! owner: an action the owner may not do is refused by the tree's ACLs, and
//! never escalated.

use std::sync::Arc;

use dmtree_core::{Caller, Content, Principal, Tree, Uri, Value, Write};
use serde_json::{Value as Json, json};

use crate::epoch::{Planned, RESOURCES};

/// Runs one action; the error is what the rule shows.
/// `index` is the action's place in the rule: each event of a firing gets its own id.
pub async fn run(
    tree: &Arc<Tree>,
    owner: &Principal,
    action: &Planned,
    action_id: &str,
    index: usize,
) -> Result<Json, String> {
    let caller = Caller::new(owner);
    let uri = |u: &str| Uri::parse(u, tree.limits()).map_err(|e| e.to_string());
    let fail = |e: dmtree_core::DmtError| format!("{}: {}", e.code().as_str(), e.message);
    match action {
        Planned::Set { uri: at, value } => {
            let value = Value::from_json(value, None).map_err(|e| e.to_string())?;
            let write = Write { content: Some(Content::Leaf(value)), ..Write::default() };
            tree.put(&caller, &uri(at)?, write).await.map_err(fail)?;
            Ok(json!({"set": at}))
        }
        Planned::Exec { uri: at, data } => {
            // A resource's agent runs an action id once, so a redone firing does not act twice.
            let data = if at.starts_with(RESOURCES) { with_id(data.clone(), action_id) } else { data.clone() };
            tree.exec(&caller, &uri(at)?, data).await.map_err(fail)
        }
        Planned::Shutdown { uri: at } => {
            let id = at.strip_prefix(RESOURCES).filter(|id| !id.contains('/'));
            let id = id.ok_or_else(|| format!("{at} is not a resource (./managers/resources/<id>)"))?;
            // The resource's own `shutdown` action, sent by the manager holding it.
            let at = format!("{RESOURCES}{id}/actions/shutdown");
            tree.exec(&caller, &uri(&at)?, Some(json!({"action_id": action_id}))).await.map_err(fail)
        }
        Planned::Create { resource_type, data } => create(tree, owner, resource_type, data.clone(), action_id).await,
        Planned::Event { event_type, payload } => {
            let id = event_id(&format!("{action_id}|{index}"));
            let sender = format!("rule:{}", action_id.split('|').next().unwrap_or_default());
            let event = json!([{"id": id, "sender": sender, "type": event_type, "payload": payload}]);
            tree.exec(&caller, &uri("./contextstore/ingest")?, Some(event)).await.map_err(fail)
        }
    }
}

/// `create`: like seed 000's `system.createService(type)`, through a
/// factory: an `up` resource of type `factory` whose `create` action starts
/// one. Factories are tried in order until one accepts.
async fn create(
    tree: &Arc<Tree>,
    owner: &Principal,
    kind: &str,
    data: Option<Json>,
    action_id: &str,
) -> Result<Json, String> {
    let caller = Caller::new(owner);
    let list = Uri::parse("./managers/resources", tree.limits()).map_err(|e| e.to_string())?;
    let view = tree.read(&caller, &list, 2).await.map_err(|e| format!("no resources to ask: {}", e.message))?;
    let mut tried = Vec::new();
    for r in view.children.unwrap_or_default() {
        let field = |name: &str| {
            r.children
                .iter()
                .flatten()
                .find(|c| c.uri.name() == Some(name))
                .and_then(|c| c.node.as_ref()?.value.as_ref().map(Value::to_json))
        };
        if field("type") != Some(json!("factory")) || field("status") != Some(json!("up")) {
            continue;
        }
        let at = r.uri.join_name("actions").join_name("create");
        let mut body = data.clone().unwrap_or_else(|| json!({}));
        if let Some(o) = body.as_object_mut() {
            o.insert("type".into(), json!(kind));
        }
        match tree.exec(&caller, &at, with_id(Some(body), action_id)).await {
            Ok(out) => return Ok(json!({"factory": r.uri.to_string(), "result": out})),
            Err(e) => tried.push(format!("{}: {}", r.uri, e.message)),
        }
    }
    if tried.is_empty() {
        Err(format!("no up resource of type factory can create a {kind}"))
    } else {
        Err(format!("every factory refused: {}", tried.join("; ")))
    }
}

/// Puts the action id into object data, so a target can de-duplicate a redone action.
fn with_id(data: Option<Json>, action_id: &str) -> Option<Json> {
    match data {
        Some(Json::Object(mut o)) => {
            o.entry("action_id").or_insert_with(|| json!(action_id));
            Some(Json::Object(o))
        }
        None => Some(json!({"action_id": action_id})),
        other => other,
    }
}

/// A ContextEvent id derived from the action id: a redone firing stores its event once.
pub fn event_id(action_id: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, action_id.as_bytes()).to_string()
}
