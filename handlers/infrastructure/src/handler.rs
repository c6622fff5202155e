//! The infrastructure data handler:
//!
//! - `monitoring/…`: what the supplier reports (read-only, observed), plus
//!   `monitoring/poller/…` (polls, failures, last error, age, active);
//! - `config/…`: the [`InfraSpec`], one leaf per field; `supplier` is fixed,
//!   the others can be replaced and take effect at once.

use std::sync::Arc;

use async_trait::async_trait;
use dmtree_core::{
    ChangeSink, ConfigSaver, DataHandler, DmtError, Meta, Node, OpContext, Operation, Result, Uri, Value,
    json_children, json_node,
};
use serde_json::{Value as Json, json};

use crate::poller::Poller;
use crate::spec::InfraSpec;

pub struct InfraHandler {
    poller: Arc<Poller>,
    saver: Option<Arc<dyn ConfigSaver>>,
}

const MONITORING: &str = "monitoring";
const CONFIG: &str = "config";
const POLLER: &str = "poller";

impl InfraHandler {
    pub fn new(spec: InfraSpec, saver: Option<Arc<dyn ConfigSaver>>) -> Self {
        Self { poller: Poller::new(spec), saver }
    }

    pub fn spec(&self) -> InfraSpec {
        self.poller.spec.read().clone()
    }

    fn poller_status(&self) -> Json {
        let mut status = self.poller.observed.status();
        status["active"] = self.poller.is_active().into();
        status
    }

    fn config(&self) -> Json {
        self.spec().to_json()
    }
}

/// Where a path points.
enum Place<'a> {
    Root,
    Monitoring,
    Poller(Uri),
    Observed(Uri),
    Config(&'a Uri),
}

fn place(path: &Uri) -> Result<Place<'_>> {
    let mut segs = path.segments();
    Ok(match (segs.next(), segs.next()) {
        (None, _) => Place::Root,
        (Some(MONITORING), None) => Place::Monitoring,
        (Some(MONITORING), Some(POLLER)) => Place::Poller(path.skip(2)),
        (Some(MONITORING), Some(_)) => Place::Observed(path.skip(1)),
        (Some(CONFIG), _) => Place::Config(path),
        _ => return Err(DmtError::not_found(path)),
    })
}

#[async_trait]
impl DataHandler for InfraHandler {
    fn kind(&self) -> &'static str {
        "infrastructure"
    }

    async fn get(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        match place(path)? {
            Place::Root | Place::Monitoring => Ok(Node::interior()),
            Place::Poller(rest) => json_node(self.poller_status(), &rest),
            Place::Observed(rest) => {
                self.poller.touch().await;
                self.poller.observed.node(&rest, self.poller.stale_after())
            }
            Place::Config(_) => json_node(json!({ CONFIG: self.config() }), path),
        }
    }

    async fn children(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        match place(path)? {
            Place::Root => Ok(vec![CONFIG.into(), MONITORING.into()]),
            Place::Monitoring => {
                self.poller.touch().await;
                let mut names = match self.poller.observed.children(&Uri::root()) {
                    Ok(names) => names,
                    Err(e) if e.is(dmtree_core::ErrorCode::RemoteError) => Vec::new(),
                    Err(e) => return Err(e),
                };
                names.push(POLLER.into());
                Ok(names)
            }
            Place::Poller(rest) => json_children(self.poller_status(), &rest),
            Place::Observed(rest) => {
                self.poller.touch().await;
                self.poller.observed.children(&rest)
            }
            Place::Config(_) => json_children(json!({ CONFIG: self.config() }), path),
        }
    }

    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        let writable = matches!(place(path)?, Place::Config(p) if p.depth() == 2 && p.name() != Some("supplier"));
        Ok(match writable {
            true => Meta::read_only().with_operations(&[Operation::Get, Operation::Replace]),
            false => Meta::read_only(),
        })
    }

    async fn replace(&self, _cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        let field = match place(path)? {
            Place::Config(p) if p.depth() == 2 => p.name().unwrap_or_default().to_owned(),
            _ => return Err(DmtError::not_allowed(path, "only config leaves can be replaced")),
        };
        let mut config = self.config();
        config[&field] = value.to_json();
        let spec = InfraSpec::from_json(&config).map_err(|e| DmtError::invalid_data(path, e.0))?;
        if spec.supplier != self.spec().supplier {
            return Err(DmtError::not_allowed(path, "the supplier is fixed; mount another handler instead"));
        }
        if let Some(saver) = &self.saver {
            saver.save(&spec.to_json()).await?;
        }
        self.poller.reconfigure(spec);
        Ok(())
    }

    fn attach(&self, sink: ChangeSink) {
        self.poller.start(sink);
    }

    fn detach(&self) {
        self.poller.stop();
    }

    fn status(&self) -> Option<Json> {
        let spec = self.spec();
        Some(json!({
            "supplier": spec.supplier,
            "url": spec.url,
            "monitoring": self.poller_status(),
        }))
    }
}
