//! An infrastructure mount's configuration: which supplier, where, how
//! often, and what to include. It is the handler's `config` subtree.

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SupplierKind {
    /// This machine, through sysinfo.
    Localhost,
    /// A Prometheus text-exposition endpoint (`/metrics`).
    Prometheus,
    /// A cloud's REST API reporting users → VMs → resources, and hosts.
    Cloud,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfraSpec {
    pub supplier: SupplierKind,
    /// The endpoint, for `prometheus` and `cloud`.
    pub url: String,
    pub interval_ms: u64,
    /// Polling stops this long after the last read while nobody subscribes.
    pub idle_ms: u64,
    /// Per poll; a read waiting for a first poll waits no longer than this.
    pub timeout_ms: u64,
    /// Top-level names (or `a/b` paths) under `monitoring` to keep; empty keeps everything.
    pub include: Vec<String>,
}

impl Default for InfraSpec {
    fn default() -> Self {
        Self {
            supplier: SupplierKind::Localhost,
            url: String::new(),
            interval_ms: 2_000,
            idle_ms: 60_000,
            timeout_ms: 2_000,
            include: Vec::new(),
        }
    }
}

#[derive(Debug, Error, PartialEq)]
#[error("{0}")]
pub struct SpecError(pub String);

impl InfraSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |m: &str| Err(SpecError(m.to_owned()));
        match self.supplier {
            SupplierKind::Localhost if !self.url.is_empty() => return bad("the localhost supplier takes no url"),
            SupplierKind::Prometheus | SupplierKind::Cloud => {
                let ok = reqwest::Url::parse(&self.url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                if !ok {
                    return Err(SpecError(format!("url {:?} is not an http(s) URL", self.url)));
                }
            }
            SupplierKind::Localhost => {}
        }
        if !(100..=86_400_000).contains(&self.interval_ms) {
            return bad("interval_ms must be between 100 and 86400000");
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return bad("timeout_ms must be between 100 and 60000");
        }
        if self.idle_ms < self.interval_ms {
            return bad("idle_ms must be at least interval_ms");
        }
        if self.include.iter().any(|p| p.is_empty() || p.split('/').any(str::is_empty)) {
            return bad("include entries are names or a/b paths under monitoring");
        }
        Ok(())
    }

    /// A spec from JSON, checked.
    pub fn from_json(json: &serde_json::Value) -> Result<Self, SpecError> {
        let spec: Self = serde_json::from_value(json.clone()).map_err(|e| SpecError(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn specs_are_checked() {
        assert!(InfraSpec::from_json(&json!({})).is_ok());
        assert!(InfraSpec::from_json(&json!({"supplier": "prometheus"})).is_err());
        assert!(InfraSpec::from_json(&json!({"supplier": "cloud", "url": "ftp://x"})).is_err());
        assert!(InfraSpec::from_json(&json!({"supplier": "cloud", "url": "http://127.0.0.1:1/api"})).is_ok());
        assert!(InfraSpec::from_json(&json!({"interval_ms": 0})).is_err());
        assert!(InfraSpec::from_json(&json!({"interval_ms": 5000, "idle_ms": 1000})).is_err());
        assert!(InfraSpec::from_json(&json!({"include": ["cpu", "a//b"]})).is_err());
        assert!(InfraSpec::from_json(&json!({"colour": "red"})).is_err());
    }
}
