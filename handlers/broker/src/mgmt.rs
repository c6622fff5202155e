//! The RabbitMQ management HTTP API: a small typed client over reqwest.

use std::time::Duration;

use dmtree_core::{DmtError, Uri};
use serde_json::Value as Json;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    #[error("the broker refused: {reason} (HTTP {status})")]
    Refused { status: u16, reason: String },
    #[error("the broker refused our credentials (HTTP {0})")]
    Unauthorized(u16),
}

impl BrokerError {
    /// As the tree reports it: the caller's mistakes are 4xx, the broker's trouble a remote error.
    pub fn at(self, uri: &Uri) -> DmtError {
        match self {
            BrokerError::Refused { status, .. } if (400..500).contains(&status) => {
                DmtError::invalid_data(uri, self.to_string())
            }
            other => DmtError::remote(uri, other.to_string()),
        }
    }
}

pub struct Management {
    base: String,
    user: String,
    password: String,
    http: reqwest::Client,
}

/// One path segment (vhost `/` is `%2F`).
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Management {
    pub fn new(url: &str, user: &str, password: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(4).build().unwrap_or_default();
        Self { base: url.trim_end_matches('/').to_owned(), user: user.into(), password: password.into(), http }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, BrokerError> {
        let resp = req.basic_auth(&self.user, Some(&self.password)).send().await.map_err(|e| {
            BrokerError::Unreachable(if e.is_timeout() { "timed out".into() } else { dmtree_core::error_chain(&e) })
        })?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(resp),
            401 | 403 => Err(BrokerError::Unauthorized(status)),
            _ => {
                let body: Json = resp.json().await.unwrap_or_default();
                let reason = body["reason"].as_str().or(body["error"].as_str()).unwrap_or("no reason given").to_owned();
                Err(BrokerError::Refused { status, reason })
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Result<Json, BrokerError> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        resp.json().await.map_err(|e| BrokerError::Unreachable(e.to_string()))
    }

    /// Like `get`, but a 404 (a plugin that is not enabled) is an empty list.
    pub async fn get_optional(&self, path: &str) -> Result<Json, BrokerError> {
        match self.get(path).await {
            Err(BrokerError::Refused { status: 404, .. }) => Ok(Json::Array(Vec::new())),
            other => other,
        }
    }

    pub async fn put(&self, path: &str, body: &Json) -> Result<(), BrokerError> {
        self.send(self.http.put(self.url(path)).json(body)).await.map(drop)
    }

    pub async fn post(&self, path: &str, body: &Json) -> Result<(), BrokerError> {
        self.send(self.http.post(self.url(path)).json(body)).await.map(drop)
    }

    pub async fn delete(&self, path: &str) -> Result<(), BrokerError> {
        self.send(self.http.delete(self.url(path)).header("X-Reason", "dmtree")).await.map(drop)
    }

    /// A DELETE where "already gone" is success.
    pub async fn delete_if_present(&self, path: &str) -> Result<(), BrokerError> {
        match self.delete(path).await {
            Err(BrokerError::Refused { status: 404, .. }) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(seg("/"), "%2F");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(seg("amq.topic"), "amq.topic");
    }
}
