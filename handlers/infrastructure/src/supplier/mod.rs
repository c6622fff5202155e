//! Suppliers: where an infrastructure mount's monitoring data comes from.
//! Each poll returns the whole observed state as a JSON tree (objects are
//! interior nodes); the poller diffs it against the previous one.

mod cloud;
mod localhost;
mod prometheus;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value as Json;
use thiserror::Error;

use crate::spec::{InfraSpec, SupplierKind};

pub use cloud::CloudReport;

#[derive(Debug, Error)]
pub enum SupplyError {
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: unexpected answer: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("the local host: {0}")]
    Local(String),
}

#[async_trait]
pub trait Supplier: Send + Sync + 'static {
    async fn poll(&self) -> Result<Json, SupplyError>;
}

/// The supplier a spec names.
pub fn build(spec: &InfraSpec) -> Arc<dyn Supplier> {
    let timeout = Duration::from_millis(spec.timeout_ms);
    match spec.supplier {
        SupplierKind::Localhost => Arc::new(localhost::Localhost::default()),
        SupplierKind::Prometheus => Arc::new(prometheus::Exporter::new(spec.url.clone(), timeout)),
        SupplierKind::Cloud => Arc::new(cloud::Cloud::new(spec.url.clone(), timeout)),
    }
}

/// One GET with the poll's timeout; the body as text.
async fn fetch(http: &reqwest::Client, url: &str, timeout: Duration) -> Result<String, SupplyError> {
    let unreachable = |e: reqwest::Error| SupplyError::Unreachable { url: url.to_owned(), reason: describe(&e) };
    let resp = http.get(url).timeout(timeout).send().await.map_err(unreachable)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(SupplyError::BadAnswer { url: url.to_owned(), reason: format!("HTTP {status}") });
    }
    resp.text().await.map_err(unreachable)
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        dmtree_core::error_chain(e)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(2).build().unwrap_or_default()
}
