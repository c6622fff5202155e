//! The member's own host, registered as a resource it holds: load and
//! memory (sysinfo), read each round. It has no agent, so it cannot move:
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
        self.holdings.adopt(&row);
        self.refresh_host();
        Ok(())
    }

    pub(crate) fn refresh_host(&self) {
        let id = self.host_id();
        let now = host_properties();
        let strings = &self.holdings.strings;
        let changed = self.holdings.update(&id, |h| h.update_properties(true, now, strings));
        // Observed figures, like the infrastructure handler's: reported only
        // while someone subscribes, so an idle server does not fill its journal.
        if !self.watched() {
            return;
        }
        for (name, value, _) in changed.unwrap_or_default() {
            let value = Value::from_json(&value, None).ok();
            self.emit(EventKind::Monitoring, &format!("resources/{id}/properties/{name}"), value);
        }
    }
}

fn host_properties() -> BTreeMap<String, Json> {
    let mut props = BTreeMap::new();
    if let Ok(load) = sysinfo::System::load_average() {
        props.insert("load".into(), json!(load.one));
    }
    if let Ok(mut system) = sysinfo::System::new() {
        system.refresh_memory();
        props.insert("memory_total_bytes".into(), json!(system.total_memory()));
        props.insert("memory_available_bytes".into(), json!(system.available_memory()));
    }
    props
}
