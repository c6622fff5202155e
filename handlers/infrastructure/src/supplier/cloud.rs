//! A cloud's REST API in the shape below (the one the EASI-CLOUDS monitoring
//! architecture used): one GET answers with every user's VMs and their
//! resources, and the hosts.
//!
//! ```json
//! {"users": [{"name": "alice", "vms": [{"name": "vm1", "host": "h1", "state": "running",
//!              "resources": {"cpu": {"vcpus": 2, "usage": 12.5, "seconds": 3600},
//!                            "memory": {"total": 4096, "used": 1024},
//!                            "disk": {"total": 40, "used": 3}, "network": {"rx_bytes": 1, "tx_bytes": 2}}}]}],
//!  "hosts": [{"name": "h1", "resources": {"cpu": {"cores": 16, "usage": 40.0}, "memory": {"total": 65536, "used": 1}}}]}
//! ```
//!
//! becomes `users/alice/vm1/{host,state,cpu/…,memory/…,disk/…,network/…}`
//! and `hosts/h1/{cpu/…,memory/…}`: VMs are children of their users and a
//! VM's resources children of the VM.

use std::collections::BTreeMap;

use async_trait::async_trait;
use dmtree_core::UriLimits;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use super::{Endpoint, Supplier, SupplyError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudReport {
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub hosts: Vec<Host>,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub vms: Vec<Vm>,
}

#[derive(Debug, Deserialize)]
pub struct Vm {
    pub name: String,
    pub host: Option<String>,
    pub state: Option<String>,
    #[serde(default)]
    pub resources: BTreeMap<String, Json>,
}

#[derive(Debug, Deserialize)]
pub struct Host {
    pub name: String,
    #[serde(default)]
    pub resources: BTreeMap<String, Json>,
}

/// A cloud's REST API answering a [`CloudReport`].
pub struct Cloud(pub(super) Endpoint);

#[async_trait]
impl Supplier for Cloud {
    async fn poll(&self) -> Result<Json, SupplyError> {
        let text = self.0.fetch().await?;
        let report: CloudReport = serde_json::from_str(&text).map_err(|e| self.0.bad_answer(e))?;
        report.into_tree().map_err(|e| self.0.bad_answer(e))
    }
}

impl CloudReport {
    pub fn into_tree(self) -> Result<Json, String> {
        let mut users = Map::new();
        for user in self.users {
            let mut vms = Map::new();
            for vm in user.vms {
                let mut node = resources(vm.resources, &vm.name)?;
                vm.host.map(|h| node.insert("host".into(), h.into()));
                vm.state.map(|s| node.insert("state".into(), s.into()));
                vms.insert(name(vm.name)?, node.into());
            }
            users.insert(name(user.name)?, vms.into());
        }
        let mut hosts = Map::new();
        for host in self.hosts {
            hosts.insert(name(host.name.clone())?, resources(host.resources, &host.name)?.into());
        }
        Ok(json!({"users": users, "hosts": hosts}))
    }
}

/// Names become node names: they must be valid ones.
fn name(n: String) -> Result<String, String> {
    dmtree_core::uri::validate_name(&n, &UriLimits::default()).map_err(|e| format!("name {n:?}: {e}"))?;
    Ok(n)
}

fn resources(r: BTreeMap<String, Json>, owner: &str) -> Result<Map<String, Json>, String> {
    r.into_iter()
        .map(|(k, v)| match v {
            Json::Object(_) | Json::Number(_) | Json::String(_) | Json::Bool(_) => Ok((name(k)?, v)),
            _ => Err(format!("{owner}: resource {k} must be an object or a value")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vms_sit_under_their_users_and_resources_under_their_vms() {
        let report: CloudReport = serde_json::from_value(json!({
            "users": [{"name": "alice", "vms": [{"name": "vm1", "host": "h1",
                "resources": {"cpu": {"usage": 12.5}, "memory": {"used": 1}}}]}],
            "hosts": [{"name": "h1", "resources": {"cpu": {"cores": 16}}}]
        }))
        .unwrap();
        let tree = report.into_tree().unwrap();
        assert_eq!(tree["users"]["alice"]["vm1"]["cpu"]["usage"], 12.5);
        assert_eq!(tree["users"]["alice"]["vm1"]["host"], "h1");
        assert_eq!(tree["hosts"]["h1"]["cpu"]["cores"], 16);
    }

    #[test]
    fn bad_names_and_shapes_are_refused() {
        let bad =
            |j: Json| serde_json::from_value::<CloudReport>(j).map_err(|e| e.to_string()).and_then(|r| r.into_tree());
        assert!(bad(json!({"users": [{"name": "..", "vms": []}]})).is_err());
        assert!(bad(json!({"users": [{"name": "a", "vms": [{"name": "v", "resources": {"cpu": [1]}}]}]})).is_err());
        assert!(bad(json!({"vms": []})).is_err());
    }
}
