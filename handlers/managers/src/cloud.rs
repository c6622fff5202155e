//! A member of the manager cloud: it joins the registry, renews its lease,
//! takes part in every election round, coordinates when the registry says
//! so, and holds the resources assigned to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use dmtree_core::{ChangeSink, EventKind, Uri, Value};
use futures::StreamExt as _;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use parking_lot::{Mutex, RwLock};
use serde_json::Value as Json;
use tokio::sync::watch;

use crate::bus::{Bus, BusError, Link};
use crate::config::Settings;
use crate::holder::Holdings;
use crate::monitoring::{Counters, Dropped};
use crate::registry::{CoordinatorFence, Incarnation, Registry, RegistryError, View};

/// What this member is right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not (yet) in the registry, or its lease was lost.
    Joining,
    Member,
    Coordinator(CoordinatorFence),
}

pub struct Cloud {
    pub settings: Settings,
    pub registry: Registry,
    pub bus: Option<Bus>,
    pub counters: Counters,
    pub holdings: Holdings,
    me: RwLock<Option<Incarnation>>,
    /// When the lease was last renewed (this process's clock, used only to
    /// stop acting early: the registry decides).
    renewed: Mutex<Option<Instant>>,
    view: RwLock<View>,
    role: watch::Sender<Role>,
    sink: RwLock<Option<ChangeSink>>,
    msg_id: AtomicU64,
    pub pending: crate::rpc::Pending,
    pub(crate) statuses: tokio::sync::mpsc::UnboundedSender<crate::holder::StatusChange>,
    status_queue: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::holder::StatusChange>>>,
}

impl Cloud {
    pub async fn open(settings: Settings) -> Result<Arc<Self>, RegistryError> {
        let registry = Registry::open(&settings.registry, settings.lease()).await?;
        let bus = settings.amqp.clone().map(|url| Bus::new(url, &settings.id, settings.quorum_queues));
        let (statuses, status_queue) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            settings,
            registry,
            bus,
            counters: Counters::default(),
            holdings: Holdings::default(),
            me: RwLock::new(None),
            renewed: Mutex::new(None),
            view: RwLock::new(View::default()),
            role: watch::channel(Role::Joining).0,
            sink: RwLock::new(None),
            msg_id: AtomicU64::new(0),
            pending: Default::default(),
            statuses,
            status_queue: Mutex::new(Some(status_queue)),
        }))
    }

    /// Starts the member's loops; they stop when the cloud is dropped.
    pub fn start(self: &Arc<Self>, sink: ChangeSink) {
        *self.sink.write() = Some(sink);
        tokio::spawn(member_loop(Arc::downgrade(self)));
        if let Some(queue) = self.status_queue.lock().take() {
            tokio::spawn(status_writer(Arc::downgrade(self), queue));
        }
        if self.bus.is_some() {
            tokio::spawn(bus_loop(Arc::downgrade(self)));
        }
    }

    pub fn me(&self) -> Option<Incarnation> {
        *self.me.read()
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    pub fn view(&self) -> View {
        self.view.read().clone()
    }

    pub fn next_msg_id(&self) -> u64 {
        self.msg_id.fetch_add(1, Relaxed) + 1
    }

    /// Whether this member may still act on its lease: false once a lease's
    /// worth of time has passed since the last renewal (a paused process).
    pub fn in_lease(&self) -> bool {
        self.renewed.lock().is_some_and(|t| t.elapsed() < self.settings.lease())
    }

    /// Whether a subscription reaches into `./managers`.
    pub fn watched(&self) -> bool {
        self.sink.read().as_ref().is_some_and(|sink| sink.watched())
    }

    pub fn emit(&self, kind: EventKind, path: &str, value: Option<Value>) {
        if let Some(sink) = self.sink.read().as_ref() {
            sink.emit(kind, &Uri::from_key(path.replace('/', "\0")), value.as_ref());
        }
    }

    pub async fn send(&self, queue: &str, msg: &impl serde::Serialize, props: BasicProperties) -> Result<(), BusError> {
        let bus = self.bus.as_ref().ok_or(BusError::Unavailable)?;
        let body = serde_json::to_vec(msg).unwrap_or_default();
        bus.publish(queue, &body, props).await
    }

    /// One round: renew (or join), elect, act on the role, look after holdings.
    async fn round(self: &Arc<Self>) -> Result<(), RegistryError> {
        if !self.in_lease() && self.me().is_some() {
            self.step_down("the lease ran out before it could be renewed");
        }
        let me = match self.me() {
            Some(me) if self.registry.renew(&self.settings.id, me, self.lease_ms()).await? => me,
            Some(_) => {
                self.step_down("the registry no longer holds this incarnation's lease");
                return Ok(());
            }
            None => self.join().await?,
        };
        *self.renewed.lock() = Some(Instant::now());
        let view = self.registry.elect(self.settings.successors).await?;
        self.observe(&view);
        let fence = view.coordinator.term;
        let is_me = view.coordinator.id.as_deref() == Some(self.settings.id.as_str())
            && view.coordinator.instance == Some(me.instance);
        let role = match is_me {
            true => {
                Role::Coordinator(CoordinatorFence { id: self.settings.id.clone(), instance: me.instance, term: fence })
            }
            false => Role::Member,
        };
        self.role.send_if_modified(|r| std::mem::replace(r, role.clone()) != role);
        if let Role::Coordinator(fence) = role {
            self.reassign_orphans(&fence).await;
        }
        self.look_after_holdings(me, view.now).await;
        Ok(())
    }

    fn lease_ms(&self) -> u64 {
        self.settings.lease().as_millis() as u64
    }

    async fn join(self: &Arc<Self>) -> Result<Incarnation, RegistryError> {
        let s = &self.settings;
        let me = self.registry.join(&s.id, &s.endpoint, self.lease_ms(), s.capacity).await?;
        tracing::info!(member = %s.id, birth = me.birth, instance = me.instance, "joined the manager cloud");
        *self.me.write() = Some(me);
        *self.renewed.lock() = Some(Instant::now());
        self.holdings.clear();
        if s.local_host {
            self.pin_host(me).await?;
        }
        self.role.send_replace(Role::Member);
        Ok(me)
    }

    /// Stops acting for the current incarnation: no coordination, no holdings.
    fn step_down(&self, why: &str) {
        tracing::warn!(member = %self.settings.id, why, "stepping down; will rejoin with a new birth");
        Counters::add(&self.counters.rejoins);
        *self.me.write() = None;
        *self.renewed.lock() = None;
        self.holdings.clear();
        self.role.send_replace(Role::Joining);
    }

    fn observe(&self, view: &View) {
        let old = std::mem::replace(&mut *self.view.write(), view.clone());
        if old.coordinator.term != view.coordinator.term {
            tracing::info!(coordinator = ?view.coordinator.id, term = view.coordinator.term, "coordinator changed");
            let id = view.coordinator.id.clone().map(|s| Value::String(s.into()));
            self.emit(EventKind::Replaced, "coordinator/id", id);
            self.emit(EventKind::Replaced, "coordinator/term", Some(Value::Int(view.coordinator.term as i64)));
        }
        if old.successors != view.successors {
            self.emit(
                EventKind::Replaced,
                "coordinator/successors",
                Some(Value::String(view.successors.join(",").into())),
            );
        }
    }
}

async fn member_loop(cloud: std::sync::Weak<Cloud>) {
    let every = match cloud.upgrade() {
        Some(c) => c.settings.heartbeat,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cloud) = cloud.upgrade() else { return };
        if let Err(e) = cloud.round().await {
            Counters::add(&cloud.counters.registry_errors);
            tracing::warn!(error = %e, "manager round failed");
        }
    }
}

/// The most status changes one registry transaction writes.
const STATUS_BATCH: usize = 512;

async fn status_writer(
    cloud: std::sync::Weak<Cloud>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<crate::holder::StatusChange>,
) {
    let mut batch = Vec::with_capacity(STATUS_BATCH);
    while queue.recv_many(&mut batch, STATUS_BATCH).await > 0 {
        let Some(cloud) = cloud.upgrade() else { return };
        cloud.write_statuses(std::mem::take(&mut batch)).await;
    }
}

async fn bus_loop(cloud: std::sync::Weak<Cloud>) {
    let mut failures = 0u64;
    loop {
        let Some(c) = cloud.upgrade() else { return };
        let Some(bus) = c.bus.as_ref() else { return };
        match bus.connect().await {
            Ok(link) => {
                failures = 0;
                tracing::info!(member = %c.settings.id, "connected to the broker");
                let role = c.role.subscribe();
                drop(c);
                serve_link(&cloud, link, role).await;
            }
            // Said once per outage (and now and then), not every retry.
            Err(e) if failures.is_multiple_of(120) => {
                failures += 1;
                tracing::warn!(error = %e, "the broker is unreachable; retrying every 0.5 s");
            }
            Err(_) => failures += 1,
        }
        if let Some(c) = cloud.upgrade()
            && let Some(bus) = &c.bus
        {
            bus.disconnected();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Serves one connection until it fails: the inbox, replies, and Manage Me
/// while this member coordinates.
async fn serve_link(cloud: &std::sync::Weak<Cloud>, mut link: Link, mut role: watch::Receiver<Role>) {
    let mut manage_me: Option<(lapin::Channel, lapin::Consumer)> = None;
    loop {
        let Some(c) = cloud.upgrade() else { return };
        let coordinating = matches!(*role.borrow_and_update(), Role::Coordinator(_));
        match (coordinating, manage_me.is_some()) {
            (true, false) => match c.bus.as_ref().map(|b| b.consume_manage_me(&link)) {
                Some(f) => match f.await {
                    Ok(pair) => manage_me = Some(pair),
                    Err(e) => return tracing::warn!(error = %e, "cannot consume Manage Me"),
                },
                None => return,
            },
            (false, true) => {
                if let Some((channel, _)) = manage_me.take() {
                    let _ = channel.close(200, "no longer the coordinator".into()).await;
                }
            }
            _ => {}
        }
        let next_request = async {
            match manage_me.as_mut() {
                Some((_, consumer)) => consumer.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            d = link.inbox.next() => match d {
                Some(Ok(d)) => c.inbox(d).await,
                _ => return,
            },
            d = link.replies.next() => match d {
                Some(Ok(d)) => c.pending.reply(&d),
                _ => return,
            },
            d = next_request => match d {
                Some(Ok(d)) => c.manage_me(d).await,
                _ => return,
            },
            changed = role.changed() => if changed.is_err() { return },
        }
    }
}

/// How a consumed message ends: processed, dead-lettered, or handed back.
pub enum Settle {
    Ack,
    Reject(Dropped),
    /// Rejected, already counted (a batch whose every item was dropped).
    Discard,
    Requeue,
}

impl Cloud {
    pub async fn settle(&self, d: &Delivery, how: Settle) {
        let done = match how {
            Settle::Ack => d.acker.ack(BasicAckOptions::default()).await,
            Settle::Reject(why) => {
                self.counters.drop(why);
                d.acker.reject(BasicRejectOptions { requeue: false }).await
            }
            Settle::Discard => d.acker.reject(BasicRejectOptions { requeue: false }).await,
            Settle::Requeue => d.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await,
        };
        if let Err(e) = done {
            tracing::debug!(error = %e, "cannot settle a delivery");
        }
    }

    /// The validated AMQP user a message was published by.
    pub fn sender(d: &Delivery) -> Option<String> {
        d.properties.user_id().as_ref().map(|u| u.as_str().to_owned()).filter(|u| !u.is_empty())
    }

    /// Parses a message body, telling "not JSON" from "not our schema".
    pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Dropped> {
        let json: Json = serde_json::from_slice(body).map_err(|_| Dropped::Malformed)?;
        serde_json::from_value(json).map_err(|_| Dropped::Schema)
    }
}
