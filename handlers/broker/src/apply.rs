//! Applying one desired object to the broker, or removing it.

use serde_json::{Value as Json, json};

use crate::mgmt::{BrokerError, Management, seg};
use crate::spec::{Binding, Kind, Link};

pub async fn apply(api: &Management, kind: Kind, vhost: &str, name: &str, decl: &Json) -> Result<(), BrokerError> {
    let (v, n) = (seg(vhost), seg(name));
    match kind {
        Kind::Exchanges => api.put(&format!("exchanges/{v}/{n}"), decl).await,
        Kind::Queues => api.put(&format!("queues/{v}/{n}"), decl).await,
        Kind::Policies => {
            let mut body = decl.clone();
            if let Some(apply_to) = body.as_object_mut().and_then(|o| o.remove("apply_to")) {
                body["apply-to"] = apply_to;
            }
            api.put(&format!("policies/{v}/{n}"), &body).await
        }
        Kind::Bindings => {
            let b = binding(decl)?;
            let path =
                format!("bindings/{v}/e/{}/{}/{}", seg(&b.source), b.destination_type.letter(), seg(&b.destination));
            api.post(&path, &json!({"routing_key": b.routing_key, "arguments": b.arguments})).await
        }
        Kind::Links => {
            let link: Link = serde_json::from_value(decl.clone()).map_err(refused)?;
            api.put(&format!("parameters/shovel/{v}/{n}"), &json!({"value": link.shovel()})).await
        }
    }
}

pub async fn remove(api: &Management, kind: Kind, vhost: &str, name: &str, decl: &Json) -> Result<(), BrokerError> {
    let (v, n) = (seg(vhost), seg(name));
    match kind {
        Kind::Exchanges => api.delete_if_present(&format!("exchanges/{v}/{n}")).await,
        Kind::Queues => api.delete_if_present(&format!("queues/{v}/{n}")).await,
        Kind::Policies => api.delete_if_present(&format!("policies/{v}/{n}")).await,
        Kind::Links => api.delete_if_present(&format!("parameters/shovel/{v}/{n}")).await,
        Kind::Bindings => {
            let b = binding(decl)?;
            let path =
                format!("bindings/{v}/e/{}/{}/{}", seg(&b.source), b.destination_type.letter(), seg(&b.destination));
            let existing = match api.get(&path).await {
                Err(BrokerError::Refused { status: 404, .. }) => return Ok(()),
                other => other?,
            };
            for found in existing.as_array().into_iter().flatten() {
                if found["routing_key"] == b.routing_key.as_str() && found["arguments"] == json!(b.arguments) {
                    let key = found["properties_key"].as_str().unwrap_or("~");
                    api.delete_if_present(&format!("{path}/{}", seg(key))).await?;
                }
            }
            Ok(())
        }
    }
}

/// Restarts a shovel the broker has, or recreates one it lost.
pub async fn restart_link(
    api: &Management,
    vhost: &str,
    name: &str,
    decl: Option<&Json>,
    present: bool,
) -> Result<(), BrokerError> {
    match (present, decl) {
        (true, _) => api.delete(&format!("shovels/vhost/{}/{}/restart", seg(vhost), seg(name))).await,
        (false, Some(decl)) => apply(api, Kind::Links, vhost, name, decl).await,
        (false, None) => Err(BrokerError::Refused { status: 404, reason: format!("no link {name} in vhost {vhost}") }),
    }
}

fn binding(decl: &Json) -> Result<Binding, BrokerError> {
    serde_json::from_value(decl.clone()).map_err(refused)
}

fn refused(e: serde_json::Error) -> BrokerError {
    BrokerError::Refused { status: 400, reason: e.to_string() }
}
