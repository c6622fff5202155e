//! One observation of a broker: everything the monitoring subtree shows,
//! and what exists, for the reconciler.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value as Json, json};

use crate::mgmt::{BrokerError, Management};

pub type Key = (String, String);

/// What exists on the broker, by (vhost, name).
#[derive(Debug, Default)]
pub struct Present {
    pub exchanges: HashSet<Key>,
    pub queues: HashSet<Key>,
    pub policies: HashSet<Key>,
    pub bindings: Vec<Json>,
    pub shovels: HashSet<Key>,
    /// A shovel's state (`running`, `starting`, `terminated`) where it has one.
    pub shovel_state: HashMap<Key, String>,
}

impl Present {
    pub fn has_binding(&self, vhost: &str, decl: &Json) -> bool {
        self.bindings.iter().any(|b| {
            b["vhost"] == vhost
                && b["source"] == decl["source"]
                && b["destination"] == decl["destination"]
                && b["destination_type"] == decl["destination_type"]
                && b["routing_key"] == decl["routing_key"]
        })
    }
}

pub struct Observation {
    pub tree: Json,
    pub present: Present,
}

pub async fn observe(api: &Management) -> Result<Observation, BrokerError> {
    let (overview, nodes, vhosts, exchanges, queues, bindings) = tokio::join!(
        api.get("overview"),
        api.get("nodes"),
        api.get("vhosts"),
        api.get("exchanges"),
        api.get("queues"),
        api.get("bindings"),
    );
    let (connections, channels, policies, shovels, shovel_params, federation) = tokio::join!(
        api.get("connections"),
        api.get("channels"),
        api.get("policies"),
        api.get_optional("shovels"),
        api.get_optional("parameters/shovel"),
        api.get_optional("federation-links"),
    );
    let (exchanges, queues, policies, bindings) = (exchanges?, queues?, policies?, bindings?);
    let (shovels, shovel_params) = (shovels?, shovel_params?);
    let present = Present {
        exchanges: keys(&exchanges),
        queues: keys(&queues),
        policies: keys(&policies),
        bindings: list(&bindings).to_vec(),
        shovels: keys(&shovel_params),
        shovel_state: list(&shovels)
            .iter()
            .map(|s| (key(s), s["state"].as_str().unwrap_or("unknown").to_owned()))
            .collect(),
    };
    let tree = json!({
        "overview": overview_node(&overview?),
        "nodes": by_name(&nodes?, node_node),
        "vhosts": by_name(&vhosts?, |v| json!({
            "messages": num(&v["messages"]), "messages_ready": num(&v["messages_ready"]),
            "messages_unacked": num(&v["messages_unacknowledged"]),
        })),
        "exchanges": by_vhost(&exchanges, |e| json!({
            "type": e["type"], "durable": e["durable"], "auto_delete": e["auto_delete"], "internal": e["internal"],
            "publish_in_rate": rate(&e["message_stats"]["publish_in_details"]),
            "publish_out_rate": rate(&e["message_stats"]["publish_out_details"]),
        })),
        "queues": by_vhost(&queues, queue_node),
        "connections": by_name(&connections?, |c| json!({
            "user": c["user"], "vhost": c["vhost"], "state": c["state"], "channels": num(&c["channels"]),
            "client_name": c["client_properties"]["connection_name"].as_str().unwrap_or(""),
            "peer": format!("{}:{}", c["peer_host"].as_str().unwrap_or(""), c["peer_port"]),
        })),
        "channels": by_name(&channels?, |c| json!({
            "connection": c["connection_details"]["name"], "vhost": c["vhost"], "user": c["user"],
            "number": num(&c["number"]), "consumers": num(&c["consumer_count"]),
            "unacked": num(&c["messages_unacknowledged"]), "state": c["state"],
        })),
        "links": links_node(&shovels, &shovel_params, &federation?),
    });
    Ok(Observation { tree, present })
}

fn list(j: &Json) -> &[Json] {
    j.as_array().map_or(&[], Vec::as_slice)
}

fn key(j: &Json) -> Key {
    (j["vhost"].as_str().unwrap_or("").to_owned(), j["name"].as_str().unwrap_or("").to_owned())
}

fn keys(j: &Json) -> HashSet<Key> {
    list(j).iter().map(key).collect()
}

fn num(j: &Json) -> Json {
    if j.is_number() { j.clone() } else { json!(0) }
}

fn rate(details: &Json) -> Json {
    json!(details["rate"].as_f64().unwrap_or(0.0))
}

/// Node names must be non-empty: the default exchange (`""`) is left out.
fn by_name(j: &Json, f: impl Fn(&Json) -> Json) -> Map<String, Json> {
    list(j).iter().filter_map(|o| o["name"].as_str().filter(|n| !n.is_empty()).map(|n| (n.to_owned(), f(o)))).collect()
}

fn by_vhost(j: &Json, f: impl Fn(&Json) -> Json) -> BTreeMap<String, Map<String, Json>> {
    let mut out: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    for o in list(j) {
        let (vhost, name) = key(o);
        if !name.is_empty() {
            out.entry(vhost).or_default().insert(name, f(o));
        }
    }
    out
}

fn overview_node(o: &Json) -> Json {
    let totals = &o["object_totals"];
    let queued = &o["queue_totals"];
    json!({
        "version": o["rabbitmq_version"], "node": o["node"], "cluster": o["cluster_name"],
        "messages": num(&queued["messages"]), "messages_ready": num(&queued["messages_ready"]),
        "messages_unacked": num(&queued["messages_unacknowledged"]),
        "publish_rate": rate(&o["message_stats"]["publish_details"]),
        "deliver_rate": rate(&o["message_stats"]["deliver_get_details"]),
        "connections": num(&totals["connections"]), "channels": num(&totals["channels"]),
        "exchanges": num(&totals["exchanges"]), "queues": num(&totals["queues"]), "consumers": num(&totals["consumers"]),
    })
}

fn node_node(n: &Json) -> Json {
    json!({
        "running": n["running"], "mem_used": num(&n["mem_used"]), "mem_limit": num(&n["mem_limit"]),
        "fd_used": num(&n["fd_used"]), "sockets_used": num(&n["sockets_used"]), "proc_used": num(&n["proc_used"]),
        "disk_free": num(&n["disk_free"]), "uptime_ms": num(&n["uptime"]),
    })
}

fn queue_node(q: &Json) -> Json {
    json!({
        "messages": num(&q["messages"]), "ready": num(&q["messages_ready"]),
        "unacked": num(&q["messages_unacknowledged"]), "consumers": num(&q["consumers"]),
        "state": q["state"].as_str().unwrap_or("unknown"), "durable": q["durable"],
        "publish_rate": rate(&q["message_stats"]["publish_details"]),
        "deliver_rate": rate(&q["message_stats"]["deliver_get_details"]),
    })
}

/// Shovels (defined, with their state) and federation links, per vhost.
fn links_node(shovels: &Json, params: &Json, federation: &Json) -> BTreeMap<String, Map<String, Json>> {
    let state: HashMap<Key, &Json> = list(shovels).iter().map(|s| (key(s), s)).collect();
    let mut out = by_vhost(params, |p| {
        let v = &p["value"];
        json!({
            "type": "shovel",
            "src_uri": redact(&v["src-uri"]), "dest_uri": redact(&v["dest-uri"]),
            "state": state.get(&key(p)).and_then(|s| s["state"].as_str()).unwrap_or("starting"),
        })
    });
    for f in list(federation) {
        let vhost = f["vhost"].as_str().unwrap_or("").to_owned();
        let name = format!(
            "federation:{}:{}",
            f["upstream"].as_str().unwrap_or(""),
            f["exchange"].as_str().or(f["queue"].as_str()).unwrap_or("")
        );
        out.entry(vhost)
            .or_default()
            .insert(name, json!({"type": "federation", "state": f["status"], "upstream": f["upstream"]}));
    }
    out
}

/// Shows a broker URI without its password.
fn redact(uri: &Json) -> Json {
    let text = uri.as_str().or_else(|| uri.as_array().and_then(|a| a.first()).and_then(Json::as_str)).unwrap_or("");
    match (text.find("://"), text.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => json!(format!("{}://…@{}", &text[..scheme], &text[at + 1..])),
        _ => json!(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact(&json!("amqp://guest:guest@127.0.0.1:5672/%2F")), json!("amqp://…@127.0.0.1:5672/%2F"));
        assert_eq!(redact(&json!(["amqp://"])), json!("amqp://"));
    }
}
