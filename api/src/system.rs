//! The tree describes itself: `./system`, `./system/tokens` (admin only) and
//! `./sessions` (and, in `federation::mounts`, `./mounts`).

use std::sync::{Arc, Weak};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use dmtree_core::{
    Acl, DataHandler, DmtError, Meta, Node, OpContext, Result, SessionInfo, SnapshotHandler, Tree, Uri, entry_children,
    entry_node,
};
use serde_json::{Map, Value as Json, json};

use crate::auth::Tokens;
use crate::metrics::Metrics;

pub async fn mount(
    tree: &Arc<Tree>,
    tokens: Arc<Tokens>,
    metrics: Arc<Metrics>,
    started: Instant,
    started_at: DateTime<Utc>,
    instance: Arc<str>,
) -> dmtree_core::Result<()> {
    let at = |name: &str| Uri::root().join_name(name);
    let weak = Arc::downgrade(tree);
    tree.mount(
        "system",
        at("system"),
        Arc::new(SnapshotHandler::new("system", {
            let weak = weak.clone();
            move || system(&weak, &metrics, started, started_at, &instance)
        })),
    )?;
    tree.mount("sessions", at("sessions"), Arc::new(SessionsHandler { tree: weak }))?;
    let tokens_at = at("system").join_name("tokens");
    tree.mount("tokens", tokens_at.clone(), Arc::new(TokensHandler { tokens }))?;
    let admin_only: Acl = "Add=admin&Delete=admin&Exec=admin&Get=admin&Replace=admin"
        .parse()
        .map_err(|e| DmtError::from_acl(&tokens_at, e))?;
    tree.ensure_acl(&tokens_at, admin_only).await
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn system(tree: &Weak<Tree>, metrics: &Metrics, started: Instant, started_at: DateTime<Utc>, instance: &str) -> Json {
    let Some(tree) = tree.upgrade() else { return json!({}) };
    let mut requests: Map<String, Json> =
        metrics.by_method().map(|(m, n)| (m.to_ascii_lowercase(), json!(n))).collect();
    requests.insert("total".into(), json!(metrics.by_method().map(|(_, n)| n).sum::<u64>()));
    for (class, n) in metrics.by_class() {
        requests.insert(format!("status_{class}"), json!(n));
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "instance": instance,
        "started": time(started_at),
        "uptime_seconds": started.elapsed().as_secs(),
        "revision": tree.events().head(),
        "requests": requests,
        "events": {
            "journal_failures": tree.events().journal_failures(),
            "sse_subscribers": metrics.sse_subscribers.get(),
        },
        "sessions": { "open": tree.session_count() },
    })
}

/// `./sessions`: each caller sees its own sessions (admin sees all); a read
/// renders one session, not the whole table.
struct SessionsHandler {
    tree: Weak<Tree>,
}

impl SessionsHandler {
    fn tree(&self, path: &Uri) -> Result<Arc<Tree>> {
        self.tree.upgrade().ok_or_else(|| DmtError::store(path, "the server is shutting down"))
    }
}

fn session_json(s: &SessionInfo) -> Json {
    json!({
        "principal": s.principal.to_string(),
        "root": s.root.to_string(),
        "lock": s.mode.as_str(),
        "opened": time(s.opened),
        "idle_timeout_ms": s.idle_timeout.as_millis() as u64,
    })
}

#[async_trait]
impl DataHandler for SessionsHandler {
    fn kind(&self) -> &'static str {
        "sessions"
    }

    async fn get(&self, cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        let tree = self.tree(path)?;
        entry_node(path, |id| tree.visible_session(cx.principal, id).as_ref().map(session_json))
    }

    async fn children(&self, cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        let tree = self.tree(path)?;
        entry_children(
            path,
            || tree.visible_session_ids(cx.principal),
            |id| tree.visible_session(cx.principal, id).as_ref().map(session_json),
        )
    }
}

/// `./system/tokens/<id>`: the tokens in force (principal, label, source),
/// never the tokens themselves. `DELETE` revokes one, at once and for good.
struct TokensHandler {
    tokens: Arc<Tokens>,
}

#[async_trait]
impl DataHandler for TokensHandler {
    fn kind(&self) -> &'static str {
        "tokens"
    }

    async fn get(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        entry_node(path, |id| self.tokens.describe(id))
    }

    async fn children(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        entry_children(path, || self.tokens.ids(), |id| self.tokens.describe(id))
    }

    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        Ok(Meta::collection(path))
    }

    async fn delete(&self, _cx: OpContext<'_>, path: &Uri) -> Result<()> {
        let at = Uri::root().join_name("system").join_name("tokens").concat(path);
        let Some(id) = path.name().filter(|_| path.depth() == 1) else {
            return Err(DmtError::not_allowed(&at, "only a whole token can be revoked"));
        };
        match self.tokens.revoke(id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(DmtError::not_found(&at)),
            Err(e) => Err(DmtError::store(&at, e.to_string())),
        }
    }
}
