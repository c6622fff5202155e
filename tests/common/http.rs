//! Talking to a server: JSON requests and replies, SSE streams, raw request lines.

use std::time::Duration;

use dmtree_remote::sse::{SseFrame, SseReader};
use serde_json::Value;

/// A small client: every call returns the status and the JSON body (or Null).
#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
    pub(crate) token: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Http {
    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.to_owned());
        self
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).timeout(Duration::from_secs(30));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PATCH, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Opens `/events` and returns a reader of its frames.
    pub async fn events(&self, query: &str, last_event_id: Option<u64>) -> Events {
        let mut req = self.request(reqwest::Method::GET, &format!("/events{query}")).timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.expect("events request");
        assert_eq!(resp.status().as_u16(), 200, "events stream refused");
        Events { reader: SseReader::new(Box::pin(resp.bytes_stream())) }
    }
}

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

pub struct Events {
    reader: SseReader<ByteStream>,
}

impl Events {
    /// The next frame, or `None` if none arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseFrame> {
        tokio::time::timeout(wait, self.reader.next()).await.ok().flatten()
    }

    /// The next event as JSON (panics after 10 s).
    pub async fn next_json(&mut self) -> Value {
        let frame = self.next_within(Duration::from_secs(10)).await.expect("no event within 10 s");
        serde_json::from_str(&frame.data).expect("event JSON")
    }

    /// Every event that arrives before `quiet` passes without one.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(f) = self.next_within(quiet).await {
            out.push(serde_json::from_str(&f.data).expect("event JSON"));
        }
        out
    }
}

/// Sends a request line exactly as given (HTTP clients normalise `..` away).
pub async fn raw_request(base: &str, method: &str, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
