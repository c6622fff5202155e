//! Handler provisioning: builds the polled handlers a mount names
//! (infrastructure, broker) from their configuration, and gives each a
//! saver, so what is written to its `config` subtree survives a restart
//! (the saved configuration wins over the one the mount was made with).

use std::sync::Arc;

use async_trait::async_trait;
use dmtree_broker::{BrokerHandler, BrokerSpec};
use dmtree_core::{ConfigSaver, DataHandler, DmtError, Uri};
use dmtree_infrastructure::{InfraHandler, InfraSpec};
use dmtree_state::SqliteState;
use serde_json::Value as Json;

use crate::config::HandlerKind;

struct Saver {
    state: SqliteState,
    id: String,
}

#[async_trait]
impl ConfigSaver for Saver {
    async fn save(&self, config: &Json) -> dmtree_core::Result<()> {
        let at = Uri::root().join_name("mounts").join_name(&self.id);
        let text = serde_json::to_string(config).map_err(|e| DmtError::store(&at, e))?;
        let now = chrono::Utc::now().timestamp_millis();
        self.state.save_handler_config(&self.id, &text, now).await.map_err(|e| DmtError::store(&at, e))
    }
}

/// Checks a configuration for `kind` without building anything.
pub fn check(kind: HandlerKind, config: &Json) -> Result<(), String> {
    match kind {
        HandlerKind::Infrastructure => InfraSpec::from_json(config).map(drop).map_err(|e| e.0),
        HandlerKind::Broker => BrokerSpec::from_json(config).map(drop).map_err(|e| e.0),
        HandlerKind::Memory | HandlerKind::Remote => Err(format!("{kind:?} handlers take no config")),
    }
}

/// The handler for mount `id`, from its saved configuration or else `config`.
pub async fn build(
    state: &SqliteState,
    id: &str,
    kind: HandlerKind,
    config: &Json,
) -> anyhow::Result<Arc<dyn DataHandler>> {
    let saved = match state.handler_config(id).await? {
        Some(text) => Some(serde_json::from_str::<Json>(&text)?),
        None => None,
    };
    let config = saved.as_ref().unwrap_or(config);
    let saver = Some(Arc::new(Saver { state: state.clone(), id: id.to_owned() }) as Arc<dyn ConfigSaver>);
    let bad = |e: String| anyhow::anyhow!("mounts.{id}: {e}");
    Ok(match kind {
        HandlerKind::Infrastructure => {
            Arc::new(InfraHandler::new(InfraSpec::from_json(config).map_err(|e| bad(e.0))?, saver))
        }
        HandlerKind::Broker => {
            Arc::new(BrokerHandler::new(BrokerSpec::from_json(config).map_err(|e| bad(e.0))?, saver))
        }
        HandlerKind::Memory | HandlerKind::Remote => return Err(bad(format!("{kind:?} is not provisioned here"))),
    })
}

/// Who may read a handler's `config` subtree by default: admin only, since
/// configurations hold credentials (broker link URIs, cloud and propagation
/// tokens), and their events carry the values written. An ACL set on the
/// subtree already (by an operator) is kept.
pub async fn protect_config(tree: &dmtree_core::Tree, config: &dmtree_core::Uri) -> dmtree_core::Result<()> {
    let admin_only = "Add=admin&Delete=admin&Exec=admin&Get=admin&Replace=admin"
        .parse()
        .map_err(|e| dmtree_core::DmtError::from_acl(config, e))?;
    tree.ensure_acl(config, admin_only).await
}
