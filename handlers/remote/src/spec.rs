//! What a remote mount is: where the other tree is, which of its subtrees,
//! and how we authenticate there. Checked before anything touches the network.

use std::time::Duration;

use dmtree_core::Uri;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// The other dmtree, e.g. `http://10.0.0.2:7878`.
    pub url: String,
    /// The subtree mounted, on the remote, e.g. `./infrastructure`.
    pub remote_uri: Uri,
    /// How we authenticate there; its grant names the principal this token stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Per-request timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How long a read answers from cache (0: never). Writes through the
    /// mount and bridged events invalidate it sooner.
    #[serde(default = "default_cache_ms")]
    pub cache_ms: u64,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub token: String,
}

/// Never print the token.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { token: <redacted> }")
    }
}

fn default_timeout_ms() -> u64 {
    3000
}

fn default_cache_ms() -> u64 {
    100
}

const MAX_TIMEOUT_MS: u64 = 600_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("invalid url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}")]
    Timeout,
    #[error("cache_ms must be at most {MAX_TIMEOUT_MS}")]
    Cache,
}

impl RemoteSpec {
    /// A spec with the default timeout and cache, no credentials.
    pub fn new(url: String, remote_uri: Uri) -> Self {
        Self { url, remote_uri, credentials: None, timeout_ms: default_timeout_ms(), cache_ms: default_cache_ms() }
    }

    /// The base URL, if it is `http(s)://host[:port]` and nothing more.
    pub fn base_url(&self) -> Result<reqwest::Url, SpecError> {
        let bad = |reason: &str| SpecError::Url { url: self.url.clone(), reason: reason.into() };
        let base = reqwest::Url::parse(&self.url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if base.host().is_none() || base.path() != "/" || base.query().is_some() || base.fragment().is_some() {
            return Err(bad("expected http(s)://host[:port], without a path"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad("put credentials in `credentials`, not in the URL"));
        }
        Ok(base)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        self.base_url()?;
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(SpecError::Timeout);
        }
        if self.cache_ms > MAX_TIMEOUT_MS {
            return Err(SpecError::Cache);
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn token(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.token.as_str())
    }

    /// What `./mounts/<id>` shows: everything but the secret.
    pub fn describe(&self) -> Json {
        json!({
            "url": self.url,
            "remote_uri": self.remote_uri.to_string(),
            "credentials": if self.credentials.is_some() { "bearer token" } else { "none" },
            "timeout_ms": self.timeout_ms,
            "cache_ms": self.cache_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> RemoteSpec {
        RemoteSpec::new(url.into(), Uri::root())
    }

    #[test]
    fn urls_are_checked() {
        assert!(spec("http://127.0.0.1:7878").validate().is_ok());
        assert!(spec("https://b.example").validate().is_ok());
        for bad in ["127.0.0.1:7878", "ftp://x", "http://x/tree", "http://u:p@x", "http://x/?a=1", "not a url", ""] {
            assert!(matches!(spec(bad).validate(), Err(SpecError::Url { .. })), "{bad}");
        }
        assert_eq!(RemoteSpec { timeout_ms: 0, ..spec("http://x") }.validate(), Err(SpecError::Timeout));
    }

    #[test]
    fn parsed_strictly_and_described_without_the_token() {
        let s: RemoteSpec = serde_json::from_value(json!({
            "url": "http://x:1", "remote_uri": "./infra", "credentials": {"token": "s3cret"}
        }))
        .unwrap();
        assert_eq!((s.timeout_ms, s.cache_ms, s.token()), (3000, 100, Some("s3cret")));
        assert!(!s.describe().to_string().contains("s3cret"));
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(
            serde_json::from_value::<RemoteSpec>(json!({"url": "http://x", "remote_uri": "./a", "tokn": 1})).is_err()
        );
    }
}
