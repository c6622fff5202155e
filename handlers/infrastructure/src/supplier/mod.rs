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
        SupplierKind::Prometheus => Arc::new(prometheus::Exporter(Endpoint::new(spec.url.clone(), timeout))),
        SupplierKind::Cloud => Arc::new(cloud::Cloud(Endpoint::new(spec.url.clone(), timeout))),
    }
}

/// An HTTP source polled with one GET: the Prometheus and cloud suppliers.
struct Endpoint {
    url: String,
    timeout: Duration,
    http: reqwest::Client,
}

impl Endpoint {
    fn new(url: String, timeout: Duration) -> Self {
        let http = reqwest::Client::builder().pool_max_idle_per_host(2).build().unwrap_or_default();
        Self { url, timeout, http }
    }

    /// One GET with the poll's timeout; the body as text.
    async fn fetch(&self) -> Result<String, SupplyError> {
        let unreachable = |e: reqwest::Error| SupplyError::Unreachable { url: self.url.clone(), reason: describe(&e) };
        let resp = self.http.get(&self.url).timeout(self.timeout).send().await.map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.bad_answer(format!("HTTP {status}")));
        }
        resp.text().await.map_err(unreachable)
    }

    fn bad_answer(&self, reason: impl ToString) -> SupplyError {
        SupplyError::BadAnswer { url: self.url.clone(), reason: reason.to_string() }
    }
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
