//! The broker data handler:
//!
//! - `monitoring/…`: the observed broker (overview, nodes, vhosts,
//!   exchanges, queues, connections, channels, links), the reconciler's
//!   drift and repairs, and the poller's state;
//! - `config/broker/…`: how to reach it; `config/<kind>/<vhost>/<name>`:
//!   desired exchanges, queues, bindings, policies and links, one JSON leaf
//!   each. A write is applied to the broker first, saved only if the broker
//!   took it, and followed by a fresh observation.
//! - exec: a queue in `monitoring/queues` is purged, a connection closed, a
//!   link (in `monitoring/links` or `config/links`) restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dmtree_core::{
    ChangeSink, ConfigSaver, DataHandler, DmtError, Meta, NewNode, Node, Observed, OpContext, Operation, Result, Uri,
    Value, json_children, json_node,
};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value as Json, json};
use tokio::sync::{Notify, watch};

use crate::apply::{apply, remove, restart_link};
use crate::mgmt::{Management, seg};
use crate::observe::{Present, observe};
use crate::reconcile::Reconciler;
use crate::spec::{BrokerSpec, Kind};

pub struct BrokerHandler {
    inner: Arc<Inner>,
}

struct Inner {
    spec: RwLock<BrokerSpec>,
    api: RwLock<Arc<Management>>,
    observed: Observed,
    present: Mutex<Present>,
    /// Held by the reconciler and by config writes, so they never interleave.
    busy: tokio::sync::Mutex<Reconciler>,
    sink: Mutex<Option<ChangeSink>>,
    saver: Option<Arc<dyn ConfigSaver>>,
    wake: Notify,
    stopped: AtomicBool,
    done: watch::Sender<u64>,
}

fn management(spec: &BrokerSpec) -> Arc<Management> {
    Arc::new(Management::new(&spec.url, &spec.user, &spec.password, Duration::from_millis(spec.timeout_ms)))
}

impl BrokerHandler {
    pub fn new(spec: BrokerSpec, saver: Option<Arc<dyn ConfigSaver>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                api: RwLock::new(management(&spec)),
                spec: RwLock::new(spec),
                observed: Observed::default(),
                present: Mutex::default(),
                busy: tokio::sync::Mutex::default(),
                sink: Mutex::new(None),
                saver,
                wake: Notify::new(),
                stopped: AtomicBool::new(false),
                done: watch::Sender::new(0),
            }),
        }
    }

    pub fn spec(&self) -> BrokerSpec {
        self.inner.spec.read().clone()
    }

    fn config(&self) -> Json {
        let spec = self.inner.spec.read();
        let mut config = json!({ "broker": spec.settings() });
        for kind in Kind::ALL {
            config[kind.as_str()] = json!(spec.desired.get(kind.as_str()).cloned().unwrap_or_default());
        }
        config
    }

    fn api(&self) -> Arc<Management> {
        self.inner.api.read().clone()
    }

    /// Saves a changed spec (the broker already took the change), then uses it.
    async fn commit(&self, path: &Uri, change: impl FnOnce(&mut BrokerSpec)) -> Result<()> {
        let mut spec = self.spec();
        change(&mut spec);
        if let Some(saver) = &self.inner.saver {
            saver.save(&spec.to_json()).await.map_err(|e| e.with_uri(path))?;
        }
        *self.inner.api.write() = management(&spec);
        *self.inner.spec.write() = spec;
        Ok(())
    }

    /// Asks for a fresh observation and waits for it, boundedly.
    async fn reread(&self) {
        let mut done = self.inner.done.subscribe();
        done.mark_unchanged();
        self.inner.wake.notify_one();
        let bound = Duration::from_millis(self.inner.spec.read().timeout_ms * 2);
        let _ = tokio::time::timeout(bound, done.changed()).await;
    }

    /// A read before the first observation finished waits for it (boundedly),
    /// so it answers with data or with the reason there is none.
    async fn first_observation(&self) {
        if self.inner.observed.polls() > 0 {
            return;
        }
        let mut done = self.inner.done.subscribe();
        let bound = Duration::from_millis(self.inner.spec.read().timeout_ms * 2);
        let _ = tokio::time::timeout(bound, done.wait_for(|n| *n > 0)).await;
    }

    fn stale_after(&self) -> Duration {
        let s = self.inner.spec.read();
        Duration::from_millis(2 * s.interval_ms + s.timeout_ms)
    }
}

/// `config/<kind>/<vhost>[/<name>]`, split.
fn desired_path(path: &Uri) -> Option<(Kind, &str, Option<&str>)> {
    let segs: Vec<&str> = path.segments().collect();
    match segs.as_slice() {
        ["config", kind, vhost] => Some((Kind::parse(kind)?, vhost, None)),
        ["config", kind, vhost, name] => Some((Kind::parse(kind)?, vhost, Some(name))),
        _ => None,
    }
}

#[async_trait]
impl DataHandler for BrokerHandler {
    fn kind(&self) -> &'static str {
        "broker"
    }

    async fn get(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        match path.segments().next() {
            None => Ok(Node::interior()),
            Some("config") => {
                if let Some((kind, vhost, Some(name))) = desired_path(path) {
                    let decl = self
                        .inner
                        .spec
                        .read()
                        .desired
                        .get(kind.as_str())
                        .and_then(|v| v.get(vhost))
                        .and_then(|n| n.get(name))
                        .cloned();
                    return decl.map(|d| Node::leaf(Value::Json(Box::new(d)))).ok_or_else(|| DmtError::not_found(path));
                }
                json_node(json!({ "config": self.config() }), path)
            }
            Some("monitoring") if path.depth() == 1 => Ok(Node::interior()),
            Some("monitoring") if path.segments().nth(1) == Some("poller") => {
                json_node(json!({"monitoring": {"poller": self.inner.observed.status()}}), path)
            }
            Some("monitoring") => {
                self.first_observation().await;
                self.inner.observed.node(&path.skip(1), self.stale_after())
            }
            Some(_) => Err(DmtError::not_found(path)),
        }
    }

    async fn children(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        match path.segments().next() {
            None => Ok(vec!["config".into(), "monitoring".into()]),
            Some("config") => json_children(json!({ "config": self.config() }), path),
            Some("monitoring") if path.depth() == 1 => {
                self.first_observation().await;
                let mut names = match self.inner.observed.children(&Uri::root()) {
                    Err(e) if e.is(dmtree_core::ErrorCode::RemoteError) => Vec::new(),
                    other => other?,
                };
                names.push("poller".into());
                Ok(names)
            }
            Some("monitoring") if path.segments().nth(1) == Some("poller") => {
                json_children(json!({"monitoring": {"poller": self.inner.observed.status()}}), path)
            }
            Some("monitoring") => self.inner.observed.children(&path.skip(1)),
            Some(_) => Err(DmtError::not_found(path)),
        }
    }

    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        let segs: Vec<&str> = path.segments().collect();
        let ops: &[Operation] = match segs.as_slice() {
            ["config", "broker", _] => &[Operation::Get, Operation::Replace],
            ["config", kind, _] if Kind::parse(kind).is_some() => &[Operation::Get, Operation::Add, Operation::Delete],
            ["config", "links", _, _] => {
                &[Operation::Get, Operation::Add, Operation::Replace, Operation::Delete, Operation::Exec]
            }
            ["config", kind, _, _] if Kind::parse(kind).is_some() => {
                &[Operation::Get, Operation::Add, Operation::Replace, Operation::Delete]
            }
            ["monitoring", "queues" | "links", _, _] | ["monitoring", "connections", _] => {
                &[Operation::Get, Operation::Exec]
            }
            _ => &[Operation::Get],
        };
        Ok(Meta::read_only().with_operations(ops))
    }

    async fn add(&self, _cx: OpContext<'_>, path: &Uri, node: NewNode) -> Result<()> {
        let Some((kind, vhost, name)) = desired_path(path) else {
            return Err(DmtError::not_allowed(path, "desired objects live at config/<kind>/<vhost>/<name>"));
        };
        match (name, node) {
            (None, NewNode::Interior) => {
                self.commit(path, |s| {
                    s.desired.entry(kind.as_str().into()).or_default().entry(vhost.into()).or_default();
                })
                .await
            }
            (Some(name), NewNode::Leaf(value)) => self.declare(path, kind, vhost, name, value).await,
            _ => Err(DmtError::invalid_data(path, "a vhost is an interior node; an object is a JSON leaf")),
        }
    }

    async fn replace(&self, _cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        if let Some((kind, vhost, Some(name))) = desired_path(path) {
            return self.declare(path, kind, vhost, name, value).await;
        }
        let Some(field) = path.name().filter(|_| path.depth() == 3 && path.segments().nth(1) == Some("broker")) else {
            return Err(DmtError::not_allowed(path, "only config leaves can be replaced"));
        };
        let mut json = self.spec().to_json();
        json[field] = value.to_json();
        let spec = BrokerSpec::from_json(&json).map_err(|e| DmtError::invalid_data(path, e.0))?;
        let _busy = self.inner.busy.lock().await;
        self.commit(path, |s| *s = spec).await?;
        drop(_busy);
        self.reread().await;
        Ok(())
    }

    async fn delete(&self, _cx: OpContext<'_>, path: &Uri) -> Result<()> {
        let Some((kind, vhost, name)) = desired_path(path) else {
            return Err(DmtError::not_allowed(path, "only desired objects can be deleted"));
        };
        let objects: Vec<(String, Json)> = {
            let spec = self.inner.spec.read();
            let in_vhost =
                spec.desired.get(kind.as_str()).and_then(|v| v.get(vhost)).ok_or_else(|| DmtError::not_found(path))?;
            match name {
                Some(n) => vec![(n.to_owned(), in_vhost.get(n).cloned().ok_or_else(|| DmtError::not_found(path))?)],
                None => in_vhost.iter().map(|(n, d)| (n.clone(), d.clone())).collect(),
            }
        };
        let _busy = self.inner.busy.lock().await;
        let api = self.api();
        for (n, decl) in &objects {
            remove(&api, kind, vhost, n, decl).await.map_err(|e| e.at(path))?;
        }
        self.commit(path, |s| {
            if let Some(in_vhost) = s.desired.get_mut(kind.as_str()).and_then(|v| v.get_mut(vhost)) {
                match name {
                    Some(n) => drop(in_vhost.remove(n)),
                    None => drop(s.desired.get_mut(kind.as_str()).map(|v| v.remove(vhost))),
                }
            }
        })
        .await?;
        drop(_busy);
        self.reread().await;
        Ok(())
    }

    async fn exec(&self, _cx: OpContext<'_>, path: &Uri, _data: Option<Json>) -> Result<Json> {
        let segs: Vec<&str> = path.segments().collect();
        let api = self.api();
        let done = match segs.as_slice() {
            ["monitoring", "queues", vhost, queue] => {
                api.delete(&format!("queues/{}/{}/contents", seg(vhost), seg(queue))).await.map_err(|e| e.at(path))?;
                json!({"purged": queue})
            }
            ["monitoring", "connections", name] => {
                api.delete(&format!("connections/{}", seg(name))).await.map_err(|e| e.at(path))?;
                json!({"closed": name})
            }
            ["monitoring" | "config", "links", vhost, name] => {
                let decl = self
                    .inner
                    .spec
                    .read()
                    .desired
                    .get("links")
                    .and_then(|v| v.get(*vhost))
                    .and_then(|n| n.get(*name))
                    .cloned();
                let mut reconciler = self.inner.busy.lock().await;
                let present = self.inner.present.lock().shovels.contains(&(vhost.to_string(), name.to_string()));
                restart_link(&api, vhost, name, decl.as_ref(), present).await.map_err(|e| e.at(path))?;
                reconciler.restarted(vhost, name);
                json!({"restarted": name})
            }
            _ => return Err(DmtError::not_allowed(path, "exec: a queue purges, a connection closes, a link restarts")),
        };
        self.reread().await;
        Ok(done)
    }

    fn attach(&self, sink: ChangeSink) {
        *self.inner.sink.lock() = Some(sink);
        tokio::spawn(run(Arc::downgrade(&self.inner)));
    }

    fn detach(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        self.inner.wake.notify_one();
    }

    fn status(&self) -> Option<Json> {
        let spec = self.inner.spec.read();
        Some(json!({"url": spec.url, "monitoring": self.inner.observed.status()}))
    }
}

impl BrokerHandler {
    /// Declares (or redeclares) a desired object: on the broker first.
    async fn declare(&self, path: &Uri, kind: Kind, vhost: &str, name: &str, value: Value) -> Result<()> {
        let decl = kind.check(&value.to_json()).map_err(|e| DmtError::invalid_data(path, e.0))?;
        let mut reconciler = self.inner.busy.lock().await;
        apply(&self.api(), kind, vhost, name, &decl).await.map_err(|e| e.at(path))?;
        if kind == Kind::Links {
            reconciler.restarted(vhost, name);
        }
        self.commit(path, |s| {
            s.desired
                .entry(kind.as_str().into())
                .or_default()
                .entry(vhost.into())
                .or_default()
                .insert(name.into(), decl);
        })
        .await?;
        drop(reconciler);
        self.reread().await;
        Ok(())
    }
}

/// Observe, reconcile, publish; every `interval_ms` or when woken.
async fn run(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(me) = inner.upgrade() else { return };
        if me.stopped.load(Ordering::Relaxed) {
            return;
        }
        me.cycle().await;
        let interval = Duration::from_millis(me.spec.read().interval_ms);
        let wake = me.wake.notified();
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake => {}
        }
    }
}

impl Inner {
    async fn cycle(&self) {
        let api = self.api.read().clone();
        match observe(&api).await {
            Ok(mut obs) => {
                let mut reconciler = self.busy.lock().await;
                let spec = self.spec.read().clone();
                reconciler.run(&api, &spec, &obs.present).await;
                reconciler.annotate_links(&spec, &mut obs.tree["links"]);
                obs.tree["reconciler"] = reconciler.status();
                drop(reconciler);
                *self.present.lock() = obs.present;
                let sink = self.sink.lock().clone();
                self.observed.update(obs.tree, &Uri::from_key("monitoring"), sink.as_ref());
            }
            Err(e) => {
                tracing::debug!(error = %e, "broker observation failed");
                self.observed.failed(e.to_string());
            }
        }
        self.done.send_modify(|n| *n += 1);
    }
}
