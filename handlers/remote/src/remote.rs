//! `RemoteHandler`: another dmtree's subtree, mounted here. Reads and writes
//! are forwarded over REST; the remote validates, authorizes (as the mount's
//! principal) and versions its nodes, and its errors come back unchanged.
//!
//! Writes join the tree's transactions through an atomic session on the
//! remote, opened at the first write and committed by its close in
//! `prepare`. So a write of several nodes (a subtree, a PATCH, a local
//! atomic session) is all or nothing on the remote too; a remote commits
//! before the transaction's later handlers do, and that is the one window
//! where a transaction across trees can end half-applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dmtree_core::{
    ChangeSink, DataHandler, DmtError, Format, Meta, NewNode, Node, NodeKind, OpContext, Operation, Props, PropsPatch,
    Result, TxId, Uri, Value,
};
use parking_lot::Mutex;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cache::ReadCache;
use crate::link::{Link, Local};
use crate::spec::RemoteSpec;

/// What the handler and its event bridge share.
pub struct Shared {
    pub link: Link,
    pub cache: ReadCache,
    /// The last remote revision the bridge delivered; 0 before the first.
    position: AtomicU64,
}

impl Shared {
    pub fn position(&self) -> Option<u64> {
        Some(self.position.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    pub fn advance(&self, revision: u64) {
        self.position.fetch_max(revision, Ordering::Relaxed);
    }
}

/// A transaction's state on the remote.
struct RemoteTx {
    started: Instant,
    /// The remote atomic session the transaction's writes go into.
    session: Option<String>,
    /// Versions seen by this transaction: its writes are conditional on them.
    versions: HashMap<Uri, u64>,
}

/// Transactions that only read are never prepared or rolled back; forget them after this.
const READ_ONLY_TX_TTL: Duration = Duration::from_secs(60);

pub struct RemoteHandler {
    shared: Arc<Shared>,
    txs: Mutex<HashMap<TxId, RemoteTx>>,
    bridge: Mutex<Option<JoinHandle<()>>>,
}

impl RemoteHandler {
    /// Checks the spec and builds the handler; `resume` is the remote revision
    /// the event bridge delivered last (saved by the owner), if any.
    pub fn new(spec: RemoteSpec, local: &Local, resume: Option<u64>) -> std::result::Result<Self, String> {
        let cache = ReadCache::new(Duration::from_millis(spec.cache_ms));
        let link = Link::new(spec, local.clone())?;
        let shared = Shared { link, cache, position: AtomicU64::new(resume.unwrap_or(0)) };
        Ok(Self { shared: Arc::new(shared), txs: Mutex::default(), bridge: Mutex::default() })
    }

    pub fn spec(&self) -> &RemoteSpec {
        &self.shared.link.spec
    }

    /// The remote revision to resume the event bridge from.
    pub fn position(&self) -> Option<u64> {
        self.shared.position()
    }

    /// May we mount the subtree at `rel` below the mounted one (the remote's
    /// grant), and would it make a loop? The remote answers after asking, in
    /// turn, the trees it mounts there. Errors are about `at`.
    pub async fn check(&self, at: &Uri, rel: &Uri) -> Result<Json> {
        let link = &self.shared.link;
        let query = format!("/federation/grant?subtree={}", crate::link::encode(&link.remote(rel).to_string()));
        match link.send(at, link.request(Method::GET, &query)).await {
            Ok((status, body)) if status.is_success() => Ok(body),
            Ok((status, body)) if status == reqwest::StatusCode::UNAUTHORIZED => Err(DmtError::invalid_data(
                at,
                format!("{} does not accept these credentials: {}", link.spec.url, body["error"]["message"]),
            )),
            Ok((status, body)) if body["error"]["code"] == "route_not_found" => Err(DmtError::invalid_data(
                at,
                format!("{} answered {status} to a grant check: not a dmtree with federation", link.spec.url),
            )),
            Ok((status, body)) => Err(crate::link::remote_error(at, status, &body)),
            Err(e) if e.is(dmtree_core::ErrorCode::RemoteError) => {
                Err(DmtError::invalid_data(at, format!("cannot reach the remote: {}", e.message)))
            }
            Err(e) => Err(e),
        }
    }

    async fn read(&self, cx: &OpContext<'_>, path: &Uri) -> Result<(Node, Vec<String>)> {
        let link = &self.shared.link;
        let mut req = link.request(Method::GET, &format!("{}?depth=1&props=true", link.remote(path).to_http_path()));
        if let Some(s) = cx.tx.and_then(|tx| self.session_of(tx)) {
            req = req.header("Dmtree-Session", s);
        }
        let body = link.call(path, req).await?;
        let node = node_of(path, &body)?;
        let listed: Vec<(String, Option<Node>)> = body["children"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, child)| (name.clone(), node_of(&path.join_name(name), child).ok()))
            .collect();
        let names = listed.iter().map(|(n, _)| n.clone()).collect();
        match cx.tx {
            Some(tx) => self.saw(tx, path, node.props.version),
            None => self.shared.cache.fill(
                path,
                node.clone(),
                listed.into_iter().filter_map(|(n, c)| Some((n, c?))).collect(),
            ),
        }
        Ok((node, names))
    }

    fn session_of(&self, tx: TxId) -> Option<String> {
        self.txs.lock().get(&tx).and_then(|t| t.session.clone())
    }

    fn saw(&self, tx: TxId, path: &Uri, version: u64) {
        let mut txs = self.txs.lock();
        txs.retain(|_, t| t.session.is_some() || t.started.elapsed() < READ_ONLY_TX_TTL);
        let t = txs.entry(tx).or_insert_with(|| RemoteTx {
            started: Instant::now(),
            session: None,
            versions: HashMap::new(),
        });
        if version > 0 {
            t.versions.insert(path.clone(), version);
        } else {
            t.versions.remove(path);
        }
    }

    fn seen_version(&self, tx: Option<TxId>, path: &Uri) -> Option<u64> {
        self.txs.lock().get(&tx?).and_then(|t| t.versions.get(path).copied())
    }

    /// The transaction's remote session, opened on first use.
    async fn session(&self, tx: TxId, path: &Uri) -> Result<String> {
        if let Some(s) = self.session_of(tx) {
            return Ok(s);
        }
        let link = &self.shared.link;
        let body = json!({
            "root": link.spec.remote_uri.to_string(),
            "lock": "atomic",
            "lock_timeout_ms": link.spec.timeout_ms / 2,
        });
        let answer = link.call(path, link.request(Method::POST, "/sessions").json(&body)).await?;
        let id = answer["id"]
            .as_str()
            .ok_or_else(|| DmtError::remote(path, "the remote opened a session without an id"))?
            .to_owned();
        let mut txs = self.txs.lock();
        let t = txs.entry(tx).or_insert_with(|| RemoteTx {
            started: Instant::now(),
            session: None,
            versions: HashMap::new(),
        });
        t.session = Some(id.clone());
        Ok(id)
    }

    /// Forwards a write in the transaction's remote session, and notes the version it produced.
    async fn write(&self, cx: &OpContext<'_>, path: &Uri, req: RequestBuilder) -> Result<Json> {
        self.shared.cache.clear();
        let link = &self.shared.link;
        let req = match cx.tx {
            Some(tx) => req.header("Dmtree-Session", self.session(tx, path).await?),
            None => req,
        };
        let answer = link.call(path, req).await?;
        if let Some(tx) = cx.tx {
            self.saw(tx, path, answer["version"].as_u64().unwrap_or(0));
        }
        Ok(answer)
    }

    fn put(&self, path: &Uri) -> RequestBuilder {
        let link = &self.shared.link;
        link.request(Method::PUT, &link.remote(path).to_http_path())
    }

    /// `If-Match` on the version this transaction read, so that a change in between is not overwritten.
    fn if_match(&self, cx: &OpContext<'_>, path: &Uri) -> String {
        self.seen_version(cx.tx, path).map_or_else(|| "*".to_owned(), |v| format!("\"{v}\""))
    }

    /// Ends the transaction's remote session: closing commits it, unless it is rolled back first.
    async fn end(&self, tx: TxId, commit: bool) -> Result<()> {
        let Some(t) = self.txs.lock().remove(&tx) else { return Ok(()) };
        let Some(session) = t.session else { return Ok(()) };
        self.shared.cache.clear();
        let link = &self.shared.link;
        let root = Uri::root();
        if !commit {
            link.call(&root, link.request(Method::POST, &format!("/sessions/{session}/rollback"))).await?;
        }
        link.call(&root, link.request(Method::DELETE, &format!("/sessions/{session}"))).await.map(drop)
    }

    fn start_bridge(&self, sink: ChangeSink) {
        let task = tokio::spawn(crate::bridge::run(self.shared.clone(), sink));
        if let Some(old) = self.bridge.lock().replace(task) {
            old.abort();
        }
    }
}

/// A node as the remote's JSON describes it.
fn node_of(path: &Uri, body: &Json) -> Result<Node> {
    let bad = || DmtError::remote(path, "the remote answered with something that is not a node");
    let kind = match body["kind"].as_str() {
        Some("leaf") => NodeKind::Leaf,
        Some("interior") => NodeKind::Interior,
        _ => return Err(bad()),
    };
    let value = match kind {
        NodeKind::Leaf => {
            let format = body["format"].as_str().and_then(|f| f.parse::<Format>().ok());
            Some(Value::from_json(body.get("value").unwrap_or(&Json::Null), format).map_err(|_| bad())?)
        }
        NodeKind::Interior => None,
    };
    let props = &body["props"];
    let text = |field: &str| props[field].as_str().map(str::to_owned);
    let timestamp = props["timestamp"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let props = Props {
        title: text("title"),
        mime: text("type"),
        version: props["version"].as_u64().unwrap_or(0),
        timestamp: timestamp.map(|t| t.with_timezone(&chrono::Utc)),
        stale_ms: body["stale"]["age_ms"].as_u64(),
    };
    Ok(Node { kind, value, props })
}

fn leaf_body(value: &Value) -> Json {
    json!({ "value": value.to_json(), "format": value.format().as_str() })
}

#[async_trait]
impl DataHandler for RemoteHandler {
    fn kind(&self) -> &'static str {
        "remote"
    }

    async fn get(&self, cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        if cx.tx.is_none()
            && let Some(node) = self.shared.cache.node(path)
        {
            return Ok(node);
        }
        Ok(self.read(&cx, path).await?.0)
    }

    async fn children(&self, cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        if cx.tx.is_none()
            && let Some(names) = self.shared.cache.children(path)
        {
            return Ok(names);
        }
        Ok(self.read(&cx, path).await?.1)
    }

    /// The remote checks its own meta data; here every operation is let through to it.
    async fn meta(&self, _cx: OpContext<'_>, _path: &Uri) -> Result<Meta> {
        Ok(Meta::permissive().with_operations(&[
            Operation::Add,
            Operation::Delete,
            Operation::Exec,
            Operation::Get,
            Operation::Replace,
        ]))
    }

    async fn add(&self, cx: OpContext<'_>, path: &Uri, node: NewNode) -> Result<()> {
        let body = match &node {
            NewNode::Leaf(v) => leaf_body(v),
            NewNode::Interior => json!({}),
        };
        self.write(&cx, path, self.put(path).header("If-None-Match", "*").json(&body)).await.map(drop)
    }

    async fn replace(&self, cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        let req = self.put(path).header("If-Match", self.if_match(&cx, path)).json(&leaf_body(&value));
        self.write(&cx, path, req).await.map(drop)
    }

    async fn set_props(&self, cx: OpContext<'_>, path: &Uri, patch: PropsPatch) -> Result<()> {
        let mut body = json!({});
        if let Some(t) = patch.title {
            body["title"] = json!(t);
        }
        if let Some(m) = patch.mime {
            body["type"] = json!(m);
        }
        let req = self.put(path).header("If-Match", self.if_match(&cx, path)).json(&body);
        self.write(&cx, path, req).await.map(drop)
    }

    async fn delete(&self, cx: OpContext<'_>, path: &Uri) -> Result<()> {
        let link = &self.shared.link;
        let req = link
            .request(Method::DELETE, &link.remote(path).to_http_path())
            .header("If-Match", self.if_match(&cx, path));
        self.write(&cx, path, req).await.map(drop)
    }

    async fn rename(&self, cx: OpContext<'_>, path: &Uri, new_name: &str) -> Result<()> {
        let link = &self.shared.link;
        let http = format!("{}?action=rename", link.remote(path).to_http_path());
        self.write(&cx, path, link.request(Method::POST, &http).json(&json!({ "name": new_name }))).await.map(drop)
    }

    async fn copy(&self, cx: OpContext<'_>, from: &Uri, to: &Uri) -> Result<()> {
        let link = &self.shared.link;
        let http = format!("{}?action=copy", link.remote(from).to_http_path());
        let body = json!({ "to": link.remote(to).to_string() });
        self.write(&cx, from, link.request(Method::POST, &http).json(&body)).await.map(drop)
    }

    /// A POST to a collection is the remote's to interpret (its handler's, or a plain child).
    async fn create(&self, cx: OpContext<'_>, parent: &Uri, request: &Json) -> Result<Option<String>> {
        let link = &self.shared.link;
        let answer = self
            .write(&cx, parent, link.request(Method::POST, &link.remote(parent).to_http_path()).json(request))
            .await?;
        let name = answer["uri"].as_str().and_then(|u| u.rsplit('/').next()).filter(|n| !n.is_empty() && *n != ".");
        match name {
            Some(n) => Ok(Some(n.to_owned())),
            None => Err(DmtError::remote(parent, "the remote created a node but did not say which")),
        }
    }

    /// Exec is not transactional anywhere, so it goes straight through (in the session, if one is open).
    async fn exec(&self, cx: OpContext<'_>, path: &Uri, data: Option<Json>) -> Result<Json> {
        let link = &self.shared.link;
        let tree_path = link.remote(path).to_http_path();
        let mut req = link.request(Method::POST, &format!("/exec{}", &tree_path["/tree".len()..]));
        if let Some(s) = cx.tx.and_then(|tx| self.session_of(tx)) {
            req = req.header("Dmtree-Session", s);
        }
        if let Some(d) = &data {
            req = req.json(d);
        }
        let answer = link.call(path, req).await?;
        Ok(answer.get("result").cloned().unwrap_or(Json::Null))
    }

    fn transactional(&self) -> bool {
        true
    }

    /// The remote commits here, so that a refusal still rolls the whole transaction back.
    async fn prepare(&self, tx: TxId) -> Result<()> {
        self.end(tx, true).await
    }

    async fn rollback(&self, tx: TxId) {
        if let Err(e) = self.end(tx, false).await {
            // The remote rolls the session back itself when it idles out.
            tracing::warn!(error = %e, url = %self.spec().url, "could not roll back the remote session");
        }
    }

    fn reports_own_changes(&self) -> bool {
        true
    }

    fn attach(&self, sink: ChangeSink) {
        self.start_bridge(sink);
    }

    fn detach(&self) {
        if let Some(task) = self.bridge.lock().take() {
            task.abort();
        }
    }

    fn status(&self) -> Option<Json> {
        Some(json!({ "remote": self.spec().describe(), "monitoring": self.shared.link.status() }))
    }
}
