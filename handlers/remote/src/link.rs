//! The HTTP link to a remote tree: one pooled client, a circuit breaker, and
//! the figures `./mounts/<id>/monitoring` shows. Transport failures and 5xx
//! answers count against the remote; its 4xx answers are ordinary results,
//! passed through as the same errors here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dmtree_core::via::VIA_HEADER;
use dmtree_core::{DmtError, ErrorCode, Result, Uri, Via, error_chain};
use parking_lot::Mutex;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value as Json, json};
use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::spec::RemoteSpec;

#[derive(Default)]
pub struct Stats {
    reachable: AtomicBool,
    rtt_us: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    pub bridged: AtomicU64,
    pub looped: AtomicU64,
    pub gaps: AtomicU64,
    last_error: Mutex<Option<(String, String)>>,
    pub bridge: Mutex<String>,
}

/// This server, as the federation knows it.
#[derive(Debug, Clone)]
pub struct Local {
    /// Unique per server; every forwarded request carries the path it came by, plus this.
    pub instance: Arc<str>,
    /// The longest path a request or a bridged event may take.
    pub max_hops: usize,
    /// Roots trusted for `https` remotes besides the built-in ones (`[tls] ca`).
    pub roots: Vec<reqwest::Certificate>,
}

pub struct Link {
    pub spec: RemoteSpec,
    base: String,
    client: reqwest::Client,
    local: Local,
    breaker: Breaker,
    pub stats: Stats,
}

impl Link {
    pub fn new(spec: RemoteSpec, local: Local) -> std::result::Result<Self, String> {
        spec.validate().map_err(|e| e.to_string())?;
        let base = spec.base_url().map_err(|e| e.to_string())?.as_str().trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(spec.timeout().min(Duration::from_secs(1)))
            .pool_idle_timeout(Duration::from_secs(30));
        for root in &local.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { spec, base, client, local, breaker: Breaker::default(), stats: Stats::default() })
    }

    pub fn instance(&self) -> &str {
        &self.local.instance
    }

    pub fn max_hops(&self) -> usize {
        self.local.max_hops
    }

    /// A request to the remote, on behalf of the request being served (its `Via` path, one hop longer).
    pub fn request(&self, method: Method, path_and_query: &str) -> RequestBuilder {
        self.request_via(method, path_and_query, &Via::current())
    }

    pub fn request_via(&self, method: Method, path_and_query: &str, via: &Via) -> RequestBuilder {
        let mut req = self
            .client
            .request(method, format!("{}{path_and_query}", self.base))
            .timeout(self.spec.timeout())
            .header(VIA_HEADER, via.then(&self.local.instance).header());
        if let Some(t) = self.spec.token() {
            req = req.bearer_auth(t);
        }
        req
    }

    /// The remote URI of a path below the mount.
    pub fn remote(&self, path: &Uri) -> Uri {
        self.spec.remote_uri.concat(path)
    }

    /// Sends through the breaker: fails fast while the circuit is open.
    pub async fn send(&self, path: &Uri, req: RequestBuilder) -> Result<(StatusCode, Json)> {
        if let Err(left) = self.breaker.check() {
            return Err(DmtError::remote(
                path,
                format!("{} is unreachable; retrying in {} ms", self.spec.url, left.as_millis()),
            ));
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let answer = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                match resp.bytes().await {
                    Ok(body) => Ok((status, serde_json::from_slice(&body).unwrap_or(Json::Null))),
                    Err(e) => Err(error_chain(&e)),
                }
            }
            Err(e) => Err(error_chain(&e)),
        };
        match answer {
            Ok((status, body)) if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED => {
                let error = remote_error(path, status, &body);
                self.failed(error.to_string());
                Err(error)
            }
            Ok(ok) => {
                self.succeeded(started.elapsed());
                Ok(ok)
            }
            Err(e) => {
                let e = format!("{}: {e}", self.spec.url);
                self.failed(e.clone());
                Err(DmtError::remote(path, e))
            }
        }
    }

    /// Sends; an error answer becomes the same error here.
    pub async fn call(&self, path: &Uri, req: RequestBuilder) -> Result<Json> {
        let (status, body) = self.send(path, req).await?;
        if status.is_success() { Ok(body) } else { Err(remote_error(path, status, &body)) }
    }

    pub fn succeeded(&self, rtt: Duration) {
        self.breaker.success();
        self.stats.reachable.store(true, Ordering::Relaxed);
        self.stats.rtt_us.store(rtt.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn failed(&self, error: String) {
        self.breaker.failure();
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.stats.reachable.store(false, Ordering::Relaxed);
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        *self.stats.last_error.lock() = Some((at, error));
    }

    /// `./mounts/<id>/monitoring`.
    pub fn status(&self) -> Json {
        let s = &self.stats;
        let last_error = s.last_error.lock().clone();
        json!({
            "reachable": s.reachable.load(Ordering::Relaxed),
            "rtt_ms": s.rtt_us.load(Ordering::Relaxed) as f64 / 1000.0,
            "circuit": self.breaker.describe(),
            "requests": s.requests.load(Ordering::Relaxed),
            "failures": s.failures.load(Ordering::Relaxed),
            "events_bridged": s.bridged.load(Ordering::Relaxed),
            "event_gaps": s.gaps.load(Ordering::Relaxed),
            "events_looped": s.looped.load(Ordering::Relaxed),
            "bridge": s.bridge.lock().clone(),
            "last_error": last_error.as_ref().map_or("", |(_, e)| e.as_str()),
            "last_error_at": last_error.as_ref().map_or("", |(t, _)| t.as_str()),
        })
    }
}

/// The remote's error answer as the same error here, about the local path.
pub fn remote_error(path: &Uri, status: StatusCode, body: &Json) -> DmtError {
    let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
    match body["error"]["code"].as_str().and_then(ErrorCode::parse) {
        // The tree tells missing nodes apart, so these keep their meaning (with local URIs).
        Some(ErrorCode::NodeNotFound) => DmtError::not_found(path),
        Some(ErrorCode::NodeAlreadyExists) => DmtError::exists(path),
        // The mount's credentials, not the caller's: the caller cannot fix it.
        Some(ErrorCode::AuthenticationRequired | ErrorCode::InvalidToken) => {
            DmtError::remote(path, format!("the remote refused this mount's credentials: {message}"))
        }
        // The remote's own trouble is a remote error here.
        Some(ErrorCode::RouteNotFound | ErrorCode::InternalError | ErrorCode::DataStoreFailure) | None => {
            DmtError::remote(path, format!("the remote answered {status}: {body}"))
        }
        Some(ErrorCode::TooManyStreams) => DmtError::remote(path, message),
        // What the caller asked for means the same there as here.
        Some(code) => DmtError::new(code, path.to_string(), message),
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_pass_through_with_local_uris() {
        let here = Uri::from_key("sites\0b\0x");
        let answer = |code: &str| json!({"error": {"code": code, "uri": "./x", "message": "m"}});
        let e = remote_error(&here, StatusCode::PRECONDITION_FAILED, &answer("precondition_failed"));
        assert_eq!((e.code().as_str(), e.uri(), e.to_string().as_str()), ("precondition_failed", "./sites/b/x", "m"));
        assert_eq!(
            remote_error(&here, StatusCode::NOT_FOUND, &answer("node_not_found")).code(),
            ErrorCode::NodeNotFound
        );
        assert_eq!(remote_error(&here, StatusCode::UNAUTHORIZED, &answer("invalid_token")).code(), "remote_error");
        assert_eq!(remote_error(&here, StatusCode::IM_A_TEAPOT, &json!("?")).code(), "remote_error");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("./a b/c&d"), "./a%20b/c%26d");
    }
}
