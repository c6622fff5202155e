//! The member's own host, registered as a resource it holds: load and
//! memory, read from `/proc` each round. It has no agent, so it cannot move:
//! when its member dies the coordinator marks it `down`.

use std::collections::BTreeMap;

use dmtree_core::{EventKind, Value};
use serde_json::{Value as Json, json};

use crate::cloud::Cloud;
use crate::registry::{Incarnation, RegistryError};

impl Cloud {
    pub fn host_id(&self) -> String {
        format!("{}.host", self.settings.id)
    }

    pub(crate) async fn pin_host(&self, me: Incarnation) -> Result<(), RegistryError> {
        let id = self.host_id();
        let row = self.registry.pin((&self.settings.id, me.instance), &id, "host", &self.settings.endpoint).await?;
        self.holdings.adopt_row(&row);
        self.refresh_host();
        Ok(())
    }

    pub(crate) fn refresh_host(&self) {
        let id = self.host_id();
        let now = host_properties();
        let changed = self.holdings.update(&id, |h| {
            let changed: Vec<(String, Json)> = now
                .iter()
                .filter(|(k, v)| h.properties.get(*k) != Some(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            h.properties = now.clone();
            changed
        });
        for (name, value) in changed.unwrap_or_default() {
            let value = Value::from_json(&value, None).ok();
            self.emit(EventKind::Replaced, &format!("resources/{id}/properties/{name}"), value);
        }
    }
}

fn host_properties() -> BTreeMap<String, Json> {
    let mut props = BTreeMap::new();
    if let Some(load) =
        std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
    {
        props.insert("load".into(), json!(load));
    }
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        let field =
            |name: &str| meminfo.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse::<u64>().ok();
        if let (Some(total), Some(available)) = (field("MemTotal:"), field("MemAvailable:")) {
            props.insert("memory_total_kb".into(), json!(total));
            props.insert("memory_available_kb".into(), json!(available));
        }
    }
    props
}
