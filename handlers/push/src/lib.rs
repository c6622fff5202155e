//! Push: subscriptions are nodes under `./subscriptions/<id>`, delivered over
//! SSE, AMQP (lapin, RabbitMQ) or XMPP (tokio-xmpp), each only with events
//! its owner may `Get` at delivery time, and resumable by revision.
//!
//! The fan-out itself (pattern trie, bounded buffers, catch-up from the log)
//! is `dmtree_core::fanout`; this module adds transports, persistence of
//! subscriptions and their positions, and the `./subscriptions` subtree.

pub mod amqp;
pub mod handler;
pub mod spec;
pub mod worker;
pub mod xmpp;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dmtree_core::{DmtError, Permission, Principal, Tree, Uri};
use dmtree_state::{SqliteState, StoredSubscription};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::sync::watch;

use self::spec::{Available, SubscriptionSpec, Transport};
use self::worker::Connector;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Live buffer per subscription; past it a subscription catches up from the log.
    pub buffer: usize,
    /// Messages a subscription may have unconfirmed by its transport.
    pub window: usize,
    /// A message unconfirmed this long is taken as lost: the transport is
    /// reopened and delivery resumes from the last confirmed revision.
    pub ack_timeout_ms: u64,
    /// The most subscriptions one principal may hold.
    pub max_per_owner: usize,
    pub amqp: Option<amqp::AmqpConfig>,
    pub xmpp: Option<xmpp::XmppConfig>,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self { buffer: 4096, window: 1024, ack_timeout_ms: 10_000, max_per_owner: 256, amqp: None, xmpp: None }
    }
}

/// One subscription's live state; its counters feed `./subscriptions/<id>/monitoring`.
pub struct Subscription {
    pub spec: SubscriptionSpec,
    position: AtomicU64,
    saved: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    pending: AtomicU64,
    state: Mutex<String>,
    attached: AtomicBool,
    cancel: watch::Sender<bool>,
}

impl Subscription {
    fn new(spec: SubscriptionSpec, position: u64) -> Self {
        Self {
            spec,
            position: AtomicU64::new(position),
            saved: AtomicU64::new(position),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            state: Mutex::new("starting".into()),
            attached: AtomicBool::new(false),
            cancel: watch::channel(false).0,
        }
    }

    /// The last revision the transport accepted.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    pub fn confirm(&self, revision: u64) {
        self.position.fetch_max(revision, Ordering::AcqRel);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Revisions that were no longer retained when this subscription needed them.
    pub fn lost(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_pending(&self, n: usize) {
        self.pending.store(n as u64, Ordering::Relaxed);
    }

    pub fn set_state(&self, state: &str) {
        *self.state.lock() = state.to_owned();
    }

    pub fn cancelled(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    pub fn snapshot(&self) -> Json {
        let s = &self.spec;
        json!({
            "config": {
                "pattern": s.pattern.to_string(),
                "kinds": s.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                "sample_ms": s.sample_ms,
                "since": s.since,
                "transport": s.transport.name(),
                "target": s.transport.target(),
                "owner": s.owner,
                "created": s.created,
            },
            "monitoring": {
                "state": *self.state.lock(),
                "delivered": self.delivered.load(Ordering::Relaxed),
                "dropped": self.dropped.load(Ordering::Relaxed),
                "pending": self.pending.load(Ordering::Relaxed),
                "last_revision": self.position(),
            },
        })
    }
}

/// Detaches an SSE stream from its subscription when the stream ends.
pub struct Attached(Arc<Subscription>);

impl Attached {
    pub fn subscription(&self) -> &Arc<Subscription> {
        &self.0
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.attached.store(false, Ordering::Release);
        self.0.set_state("idle");
    }
}

pub struct Push {
    tree: Arc<Tree>,
    state: SqliteState,
    config: PushConfig,
    subs: RwLock<BTreeMap<String, Arc<Subscription>>>,
    amqp: Option<Arc<amqp::AmqpConnector>>,
    xmpp: Option<Arc<xmpp::XmppLink>>,
}

impl Push {
    /// Restores stored subscriptions and starts their delivery.
    pub async fn start(tree: Arc<Tree>, state: SqliteState, config: PushConfig) -> anyhow::Result<Arc<Self>> {
        let amqp = config.amqp.clone().map(|c| Arc::new(amqp::AmqpConnector::new(c)));
        let ack_timeout = Duration::from_millis(config.ack_timeout_ms);
        let xmpp = config.xmpp.clone().map(|c| Arc::new(xmpp::XmppLink::start(c, ack_timeout)));
        let push = Arc::new(Self { tree, state, config, subs: RwLock::default(), amqp, xmpp });
        for stored in push.state.subscriptions().await? {
            match serde_json::from_str::<SubscriptionSpec>(&stored.spec) {
                Ok(spec) => push.launch(Arc::new(Subscription::new(spec, stored.position))),
                Err(e) => tracing::error!(id = %stored.id, error = %e, "cannot read a stored subscription; skipped"),
            }
        }
        tokio::spawn(save_positions(Arc::downgrade(&push)));
        Ok(push)
    }

    pub fn available(&self) -> Available {
        Available { amqp: self.amqp.is_some(), xmpp: self.xmpp.is_some() }
    }

    /// The XMPP session, where one is configured.
    pub fn xmpp(&self) -> Option<Arc<xmpp::XmppLink>> {
        self.xmpp.clone()
    }

    pub fn tree(&self) -> &Arc<Tree> {
        &self.tree
    }

    /// Persists and starts a checked subscription. The id must be new.
    pub async fn create(&self, spec: SubscriptionSpec, at: &Uri) -> Result<(), DmtError> {
        self.admit(&spec, at)?;
        // dmtree delivers only into queues it creates, and deletes only those.
        if let (Transport::Amqp { queue }, Some(amqp)) = (&spec.transport, &self.amqp) {
            match amqp.queue_exists(queue).await {
                Ok(true) => {
                    return Err(DmtError::concurrent(
                        at,
                        format!("queue {queue} already exists on the broker; name a new one"),
                    ));
                }
                // The queue exists when the caller hears back, so it can start consuming at once.
                Ok(false) => {
                    if let Err(e) = amqp.declare(&spec).await {
                        tracing::warn!(subscription = %spec.id, error = %e, "declaring the queue failed; retried by the worker");
                    }
                }
                Err(e) => {
                    tracing::warn!(subscription = %spec.id, error = %e, "broker unreachable; the queue will be declared when it is back")
                }
            }
        }
        let body = serde_json::to_string(&spec).map_err(|e| DmtError::store(at, e))?;
        let stored = StoredSubscription { id: spec.id.clone(), spec: body, position: spec.since };
        self.state
            .add_subscription(&stored, chrono::Utc::now().timestamp_millis())
            .await
            .map_err(|e| DmtError::store(at, e))?;
        self.launch(Arc::new(Subscription::new(spec, stored.position)));
        Ok(())
    }

    /// A new subscription's id and queue are its own, and its owner is under the cap.
    fn admit(&self, spec: &SubscriptionSpec, at: &Uri) -> Result<(), DmtError> {
        let subs = self.subs.read();
        if subs.contains_key(&spec.id) {
            return Err(DmtError::exists(&at.join_name(&spec.id)));
        }
        if let Transport::Amqp { queue } = &spec.transport
            && subs.values().any(|s| matches!(&s.spec.transport, Transport::Amqp { queue: q } if q == queue))
        {
            return Err(DmtError::concurrent(at, format!("queue {queue} belongs to another subscription")));
        }
        let owned = subs.values().filter(|s| s.spec.owner == spec.owner).count();
        if owned >= self.config.max_per_owner {
            return Err(DmtError::limit(
                at,
                format!("{} already has {owned} subscriptions, the most one principal may hold", spec.owner),
            ));
        }
        Ok(())
    }

    fn launch(&self, sub: Arc<Subscription>) {
        self.subs.write().insert(sub.spec.id.clone(), sub.clone());
        let connector: Arc<dyn Connector> = match &sub.spec.transport {
            Transport::Sse => {
                sub.set_state("idle");
                return;
            }
            Transport::Amqp { .. } => match &self.amqp {
                Some(c) => c.clone(),
                None => return sub.set_state("error: AMQP is not configured"),
            },
            Transport::Xmpp { .. } => match &self.xmpp {
                Some(x) => x.clone(),
                None => return sub.set_state("error: XMPP is not configured"),
            },
        };
        let limits = worker::Limits {
            buffer: self.config.buffer,
            window: self.config.window,
            ack_timeout: Duration::from_millis(self.config.ack_timeout_ms),
        };
        tokio::spawn(worker::run(self.tree.clone(), sub, connector, limits));
    }

    /// Cancels a subscription: only its owner (or `admin`) may.
    pub async fn cancel(&self, id: &str, principal: &Principal, at: &Uri) -> Result<(), DmtError> {
        let sub = self.visible(principal, id).ok_or_else(|| DmtError::not_found(at))?;
        if principal.name() != Some(sub.spec.owner.as_str()) && !principal.is_admin() {
            return Err(DmtError::denied(at, principal, Permission::Delete));
        }
        self.state.remove_subscription(id).await.map_err(|e| DmtError::store(at, e))?;
        self.subs.write().remove(id);
        sub.cancel.send_replace(true);
        if let (Transport::Amqp { queue }, Some(amqp)) = (&sub.spec.transport, &self.amqp)
            && let Err(e) = amqp.delete_queue(queue).await
        {
            tracing::warn!(queue, error = %e, "could not delete the queue of a cancelled subscription");
        }
        Ok(())
    }

    /// A subscription the principal may see: its own, or any for `admin`.
    pub fn visible(&self, principal: &Principal, id: &str) -> Option<Arc<Subscription>> {
        let sub = self.subs.read().get(id).cloned()?;
        let name = principal.name()?;
        (name == sub.spec.owner || principal.is_admin()).then_some(sub)
    }

    /// The ids of the subscriptions the principal may see, sorted.
    pub fn visible_ids(&self, principal: &Principal) -> Vec<String> {
        let Some(name) = principal.name() else { return Vec::new() };
        let subs = self.subs.read();
        let mut ids: Vec<String> =
            subs.values().filter(|s| principal.is_admin() || s.spec.owner == name).map(|s| s.spec.id.clone()).collect();
        ids.sort();
        ids
    }

    /// Attaches an SSE stream to an `sse` subscription (one stream at a time).
    pub fn attach(&self, id: &str, principal: &Principal) -> Result<Attached, DmtError> {
        let at = Uri::root().join_name("subscriptions").join_name(id);
        let sub = self.visible(principal, id).ok_or_else(|| DmtError::not_found(&at))?;
        if sub.spec.transport != Transport::Sse {
            return Err(DmtError::not_allowed(
                &at,
                format!("subscription {id} delivers over {}", sub.spec.transport.name()),
            ));
        }
        if sub.attached.swap(true, Ordering::AcqRel) {
            return Err(DmtError::concurrent(&at, format!("subscription {id} already has a stream attached")));
        }
        sub.set_state("connected");
        Ok(Attached(sub))
    }

    /// Writes positions that moved since the last save.
    async fn save_dirty_positions(&self) {
        let moved: Vec<(String, u64, Arc<Subscription>)> = self
            .subs
            .read()
            .values()
            .filter(|s| s.position() > s.saved.load(Ordering::Relaxed))
            .map(|s| (s.spec.id.clone(), s.position(), s.clone()))
            .collect();
        if moved.is_empty() {
            return;
        }
        let positions: Vec<(String, u64)> = moved.iter().map(|(id, p, _)| (id.clone(), *p)).collect();
        match self.state.save_positions(&positions).await {
            Ok(()) => moved.iter().for_each(|(_, p, s)| s.saved.store(*p, Ordering::Relaxed)),
            Err(e) => tracing::warn!(error = %e, "could not save subscription positions; will retry"),
        }
    }
}

/// Saves positions a few times a second; a restart re-delivers at most what
/// was confirmed after the last save (at-least-once).
async fn save_positions(push: std::sync::Weak<Push>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(push) = push.upgrade() else { return };
        push.save_dirty_positions().await;
    }
}
