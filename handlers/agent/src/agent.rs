//! The agent's run loop: connect, ask to be managed, heartbeat, obey
//! commands, and start over when the connection or the manager is lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt as _;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value as Json, json};
use tokio::sync::Mutex;

use crate::fence::{Drop, Fencing};
use crate::protocol::{
    CommandResult, FailurePolicy, Fence, Health, Heartbeat, MANAGE_ME_QUEUE, ManageMe, Operation, ToAgent, ToManager,
};

/// What the agent manages: the embedding process implements this.
#[async_trait]
pub trait Resource: Send + Sync + 'static {
    /// The current properties (the resource's meta-object).
    async fn properties(&self) -> BTreeMap<String, Json>;
    fn actions(&self) -> Vec<String> {
        Vec::new()
    }
    /// Properties a manager may set.
    fn writable(&self) -> Vec<String> {
        Vec::new()
    }
    /// Local rules the resource publishes.
    fn rules(&self) -> Json {
        Json::Null
    }
    async fn health(&self) -> Health {
        Health::Up
    }
    async fn exec(&self, action: &str, data: &Json) -> Result<Json, String>;
    async fn set(&self, property: &str, _value: &Json) -> Result<(), String> {
        Err(format!("{property} is not writable"))
    }
    async fn respawn(&self) -> Result<Json, String> {
        Err("this resource has no spawn command".into())
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub resource: String,
    pub resource_type: String,
    /// e.g. `amqp://web-1:secret@127.0.0.1:5672/%2f`; its user must own the resource.
    pub amqp: String,
    pub endpoint: String,
    pub policy: FailurePolicy,
    /// How often to ask to be managed while unassigned.
    pub retry: Duration,
    /// Heartbeats missed (unanswered) before the agent asks to be managed again.
    pub missed: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid AMQP URL: {0}")]
    Url(String),
}

/// How the agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// A newer instance of the same resource exists.
    Shutdown(String),
}

/// Counters, for tests and for the embedding process's own monitoring.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub assignments: AtomicU64,
    pub heartbeats: AtomicU64,
    pub manage_me: AtomicU64,
    pub commands: AtomicU64,
    pub dropped_stale: AtomicU64,
    pub dropped_duplicate: AtomicU64,
    pub dropped_malformed: AtomicU64,
}

pub struct Agent {
    config: AgentConfig,
    user: String,
    resource: Arc<dyn Resource>,
    once: crate::once::Once,
    nonce: String,
    pub stats: Arc<AgentStats>,
    state: Mutex<Session>,
}

/// What survives a reconnection.
#[derive(Default)]
struct Session {
    fencing: Fencing,
    msg_id: u64,
    last_ack: Option<Instant>,
    sent: BTreeMap<String, Json>,
    full: bool,
    /// Manage Me requests sent since the last assignment.
    unanswered: u32,
}

impl Session {
    fn next_id(&mut self) -> u64 {
        self.msg_id += 1;
        self.msg_id
    }
}

/// One connection's worth of agent: its channel and private queue.
#[derive(Clone)]
struct Link {
    channel: Channel,
    queue: String,
    _connection: Arc<Connection>,
}

impl Agent {
    pub fn new(config: AgentConfig, resource: Arc<dyn Resource>) -> Result<Self, AgentError> {
        let uri: lapin::uri::AMQPUri = config.amqp.parse().map_err(AgentError::Url)?;
        let user = uri.authority.userinfo.username.clone();
        let nonce = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        Ok(Self {
            config,
            user,
            resource,
            once: Default::default(),
            nonce,
            stats: Arc::default(),
            state: Mutex::new(Session::default()),
        })
    }

    /// Runs until a newer instance of the resource makes this one shut down.
    pub async fn run(self: Arc<Self>) -> Exit {
        let mut failures = 0u64;
        loop {
            match self.connect().await {
                Ok(link) => {
                    failures = 0;
                    match self.serve(&link).await {
                        Ok(exit) => return exit,
                        Err(e) => tracing::warn!(error = %e, "agent connection lost; reconnecting"),
                    }
                }
                // Said once per outage (and now and then), not every retry.
                Err(e) if failures.is_multiple_of(120) => {
                    failures += 1;
                    tracing::warn!(error = %e, "cannot reach the broker; retrying every 0.5 s");
                }
                Err(_) => failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn connect(&self) -> lapin::Result<Link> {
        let props =
            ConnectionProperties::default().with_connection_name(format!("agent {}", self.config.resource).into());
        let connection = Connection::connect(&self.config.amqp, props).await?;
        let channel = connection.create_channel().await?;
        let private = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("".into(), private, FieldTable::default()).await?;
        Ok(Link { queue: queue.name().to_string(), channel, _connection: Arc::new(connection) })
    }

    async fn serve(self: &Arc<Self>, link: &Link) -> lapin::Result<Exit> {
        let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let mut inbox =
            link.channel.basic_consume(link.queue.as_str().into(), "".into(), no_ack, FieldTable::default()).await?;
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    self.beat(link).await?;
                    next = tokio::time::Instant::now() + self.pause().await;
                }
                delivery = inbox.next() => {
                    let Some(delivery) = delivery else { return Err(lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "consumer ended").into()) };
                    if let Some(exit) = self.receive(link, &delivery?.data).await? {
                        return Ok(exit);
                    }
                }
            }
        }
    }

    /// Until the next tick: the manager's heartbeat interval while assigned;
    /// while waiting for one, the retry interval, doubling up to ten times it
    /// (requests wait in the broker while there is no coordinator).
    async fn pause(&self) -> Duration {
        let s = self.state.lock().await;
        match &s.fencing.assignment {
            Some(a) => Duration::from_millis(a.heartbeat_ms.max(1)),
            None => self.config.retry * 2u32.saturating_pow(s.unanswered.min(4)).min(10),
        }
    }

    /// One tick: a heartbeat to the manager, or Manage Me while unassigned
    /// (or when the manager stopped answering).
    async fn beat(&self, link: &Link) -> lapin::Result<()> {
        let mut s = self.state.lock().await;
        let interval = s.fencing.assignment.as_ref().map(|a| Duration::from_millis(a.heartbeat_ms.max(1)));
        let silent = match (interval, s.last_ack) {
            (Some(every), Some(ack)) => ack.elapsed() > every * self.config.missed,
            _ => false,
        };
        if silent {
            tracing::info!(resource = %self.config.resource, "manager stopped answering; asking to be managed again");
            s.fencing.unassign();
        }
        if s.fencing.assignment.is_none() {
            return self.manage_me(link, &mut s).await;
        }
        self.heartbeat(link, &mut s).await
    }

    async fn manage_me(&self, link: &Link, s: &mut Session) -> lapin::Result<()> {
        let msg = ManageMe {
            resource: self.config.resource.clone(),
            resource_type: self.config.resource_type.clone(),
            nonce: self.nonce.clone(),
            endpoint: self.config.endpoint.clone(),
            policy: self.config.policy,
            reply_to: link.queue.clone(),
            msg_id: s.next_id(),
            instance: s.fencing.instance,
        };
        self.stats.manage_me.fetch_add(1, Relaxed);
        s.unanswered = s.unanswered.saturating_add(1);
        let props = self.props(link).with_delivery_mode(2);
        self.publish(link, MANAGE_ME_QUEUE, &msg, props).await
    }

    async fn heartbeat(&self, link: &Link, s: &mut Session) -> lapin::Result<()> {
        let Some(a) = s.fencing.assignment.clone() else { return Ok(()) };
        let now = self.resource.properties().await;
        let properties: BTreeMap<String, Json> = match s.full {
            true => now.clone(),
            false => {
                now.iter().filter(|(k, v)| s.sent.get(*k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect()
            }
        };
        let hb = Heartbeat {
            resource: self.config.resource.clone(),
            instance: a.instance,
            msg_id: s.next_id(),
            reply_to: link.queue.clone(),
            health: self.resource.health().await,
            properties,
            full: s.full,
            actions: self.resource.actions(),
            writable: self.resource.writable(),
            rules: self.resource.rules(),
        };
        s.sent = now;
        s.full = false;
        self.stats.heartbeats.fetch_add(1, Relaxed);
        self.publish(link, &a.manager_queue, &ToManager::Heartbeat(hb), self.props(link)).await
    }

    async fn receive(self: &Arc<Self>, link: &Link, body: &[u8]) -> lapin::Result<Option<Exit>> {
        let Ok(msg) = serde_json::from_slice::<ToAgent>(body) else {
            self.stats.dropped_malformed.fetch_add(1, Relaxed);
            return Ok(None);
        };
        let mut s = self.state.lock().await;
        let verdict = match msg {
            ToAgent::Assignment(a) if a.resource == self.config.resource => {
                let accepted = s.fencing.assignment(&a);
                if accepted.is_ok() {
                    tracing::info!(resource = %a.resource, manager = %a.manager, term = a.term, instance = a.instance, "assigned");
                    self.stats.assignments.fetch_add(1, Relaxed);
                    s.full = true;
                    s.unanswered = 0;
                    s.last_ack = Some(Instant::now());
                    self.heartbeat(link, &mut s).await?;
                }
                accepted
            }
            ToAgent::Ack { fence, .. } => s.fencing.from_manager(&fence).map(|()| s.last_ack = Some(Instant::now())),
            ToAgent::Command { fence, command_id, operation } => {
                let accepted = s.fencing.from_manager(&fence);
                if accepted.is_ok() {
                    self.stats.commands.fetch_add(1, Relaxed);
                    let id = s.next_id();
                    drop(s);
                    // On its own task: a long action must not stop heartbeats.
                    let (agent, link) = (self.clone(), link.clone());
                    tokio::spawn(async move {
                        if let Err(e) = agent.command(&link, fence, command_id, operation, id).await {
                            tracing::warn!(error = %e, "command result not sent");
                        }
                    });
                    return Ok(None);
                }
                accepted
            }
            ToAgent::Shutdown { fence, reason } if s.fencing.shutdown(&fence) => {
                tracing::warn!(resource = %self.config.resource, %reason, "shutting down: a newer instance exists");
                return Ok(Some(Exit::Shutdown(reason)));
            }
            ToAgent::Unknown { manager, .. } => {
                if s.fencing.assignment.as_ref().is_some_and(|a| a.manager == manager) {
                    s.fencing.unassign();
                    self.manage_me(link, &mut s).await?;
                }
                Ok(())
            }
            _ => Err(Drop::Stale),
        };
        match verdict {
            Err(Drop::Stale) => self.stats.dropped_stale.fetch_add(1, Relaxed),
            Err(Drop::Duplicate) => self.stats.dropped_duplicate.fetch_add(1, Relaxed),
            Ok(()) => 0,
        };
        Ok(None)
    }

    /// Runs one command and reports its result to the manager that sent it.
    async fn command(
        &self,
        link: &Link,
        fence: Fence,
        command_id: String,
        op: Operation,
        msg_id: u64,
    ) -> lapin::Result<()> {
        let outcome = match &op {
            Operation::Exec { action, data } => {
                self.once.run(crate::once::action_id(data), self.resource.exec(action, data)).await
            }
            Operation::Set { property, value } => self.resource.set(property, value).await.map(|()| json!({})),
            Operation::Respawn => self.resource.respawn().await,
        };
        let (ok, output) = match outcome {
            Ok(out) => (true, out),
            Err(e) => (false, json!({ "error": e })),
        };
        let result =
            CommandResult { resource: fence.resource, instance: fence.instance, msg_id, command_id, ok, output };
        let queue = crate::protocol::manager_queue(&fence.manager);
        self.publish(link, &queue, &ToManager::Result(result), self.props(link)).await
    }

    fn props(&self, link: &Link) -> BasicProperties {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_user_id(self.user.as_str().into())
            .with_reply_to(link.queue.as_str().into())
    }

    async fn publish(
        &self,
        link: &Link,
        queue: &str,
        msg: &impl serde::Serialize,
        props: BasicProperties,
    ) -> lapin::Result<()> {
        let body = serde_json::to_vec(msg).unwrap_or_default();
        link.channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, props).await?;
        Ok(())
    }
}
