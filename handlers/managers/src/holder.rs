//! What a manager holds: the meta-object of each resource assigned to it,
//! fed by heartbeats. A heartbeat is obeyed only from the resource's owner
//! and current instance; an older instance is told to shut down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmtree_agent::protocol::{
    CommandResult, FailurePolicy, Fence, Health, Heartbeat, Operation, Reply, ToAgent, ToManager, manager_queue,
};
use dmtree_core::{EventKind, Value};
use lapin::BasicProperties;
use lapin::message::Delivery;
use parking_lot::Mutex;
use serde_json::{Value as Json, json};

use crate::cloud::{Cloud, Settle};
use crate::held::{ASSIGNED, DOWN, Held, Interner, UNREACHABLE, UP};
use crate::monitoring::{Counters, Dropped};
use crate::registry::{Incarnation, ResourceRow};

/// A status change waiting for the status writer.
pub(crate) struct StatusChange {
    id: String,
    instance: u64,
    status: &'static str,
    holder: Incarnation,
}

/// The few fields of a holding that decisions need, copied out cheaply.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub instance: u64,
    pub term: u64,
    pub owner: Arc<str>,
    pub local: bool,
    pub status: &'static str,
    pub policy: FailurePolicy,
    pub reply_to: Arc<str>,
    pub actions: Vec<String>,
    pub writable: Vec<String>,
}

#[derive(Default)]
pub struct Holdings {
    map: Mutex<HashMap<String, Held>>,
    sync: Mutex<SyncState>,
    pub strings: Interner,
}

#[derive(Default)]
struct SyncState {
    /// Registry time of the last look at the registry.
    last: Option<i64>,
    rounds: u64,
}

/// Every this many rounds a member reads all its rows, not only the changed ones.
const FULL_SYNC_ROUNDS: u64 = 30;

impl Holdings {
    pub fn clear(&self) {
        self.map.lock().clear();
        self.resync();
    }

    pub fn get(&self, id: &str) -> Option<Held> {
        self.map.lock().get(id).cloned()
    }

    pub fn stamp(&self, id: &str) -> Option<Stamp> {
        self.map.lock().get(id).map(|h| Stamp {
            instance: h.instance,
            term: h.term,
            owner: h.owner.clone(),
            local: h.local,
            status: h.status,
            policy: h.policy,
            reply_to: h.reply_to.clone(),
            actions: h.actions.clone(),
            writable: h.writable.clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn update<T>(&self, id: &str, f: impl FnOnce(&mut Held) -> T) -> Option<T> {
        self.map.lock().get_mut(id).map(f)
    }

    pub(crate) fn adopt(&self, row: &ResourceRow) {
        let mut map = self.map.lock();
        match map.get_mut(&row.id) {
            Some(h) if h.instance == row.instance => h.term = h.term.max(row.term),
            _ => {
                map.insert(row.id.clone(), Held::from_row(row, &self.strings));
            }
        }
    }

    /// When to read changes from (registry ms), or `None` for a full read,
    /// which every `full_every`-th round is; records `now` as the last look.
    fn since(&self, now: i64, full_every: u64) -> Option<i64> {
        let mut sync = self.sync.lock();
        sync.rounds += 1;
        let since = sync.last.filter(|_| !sync.rounds.is_multiple_of(full_every));
        sync.last = Some(now);
        since
    }

    /// The next round reads everything (the last one failed).
    fn resync(&self) {
        self.sync.lock().last = None;
    }

    /// Applies changed rows: adopt what is now this member's, drop what moved away.
    fn reconcile(&self, rows: &[ResourceRow], mine: impl Fn(&ResourceRow) -> bool) {
        for row in rows {
            if mine(row) {
                self.adopt(row);
            } else {
                self.map.lock().remove(&row.id);
            }
        }
    }

    /// Makes the holdings what the registry says this incarnation holds.
    fn sync(&self, rows: &[ResourceRow]) {
        let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        self.map.lock().retain(|id, _| ids.contains(id.as_str()));
        for row in rows {
            self.adopt(row);
        }
    }

    /// Resources that stopped heartbeating, and are not yet marked so.
    fn silent(&self, after: Duration) -> Vec<(String, Held)> {
        let map = self.map.lock();
        map.iter()
            .filter(|(_, h)| !h.local && h.last_heartbeat.elapsed() > after && matches!(h.status, UP | ASSIGNED))
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect()
    }
}

fn props_value(v: &Json) -> Option<Value> {
    Value::from_json(v, None).ok()
}

impl Cloud {
    /// Everything that reaches this member's inbox.
    pub async fn inbox(self: &std::sync::Arc<Self>, d: Delivery) {
        let how = self.inbox_message(&d).await;
        self.settle(&d, how).await;
    }

    async fn inbox_message(self: &std::sync::Arc<Self>, d: &Delivery) -> Settle {
        let Some(user) = Self::sender(d) else { return Settle::Reject(Dropped::Unauthorised) };
        let msg: ToManager = match Self::parse(&d.data) {
            Ok(msg) => msg,
            Err(why) => return Settle::Reject(why),
        };
        match msg {
            ToManager::Heartbeat(hb) => self.heartbeat(&user, hb).await,
            ToManager::Heartbeats { items } => {
                // Each item is counted on its own; the message is dead-lettered
                // only when none was taken.
                let mut any = false;
                for hb in items {
                    match self.heartbeat(&user, hb).await {
                        Settle::Reject(why) => self.counters.drop(why),
                        _ => any = true,
                    }
                }
                if any { Settle::Ack } else { Settle::Discard }
            }
            ToManager::Result(result) => self.result(&user, result),
            request @ (ToManager::Detail { .. } | ToManager::Forward { .. }) => {
                if !self.settings.manager_users.contains(&user) {
                    return Settle::Reject(Dropped::Unauthorised);
                }
                let (reply_to, id) = (d.properties.reply_to().clone(), d.properties.correlation_id().clone());
                let (Some(reply_to), Some(id)) = (reply_to, id) else { return Settle::Reject(Dropped::Schema) };
                let cloud = self.clone();
                tokio::spawn(async move { cloud.answer(request, reply_to.as_str(), id.as_str()).await });
                Settle::Ack
            }
        }
    }

    fn result(&self, user: &str, result: CommandResult) -> Settle {
        match self.holdings.get(&result.resource) {
            Some(h) if &*h.owner == user && h.instance == result.instance => {}
            Some(_) => return Settle::Reject(Dropped::Unauthorised),
            None => return Settle::Reject(Dropped::UnknownResource),
        }
        let reply = Reply { ok: result.ok, body: result.output, code: String::new() };
        match self.pending.complete(&result.command_id, reply) {
            true => Settle::Ack,
            false => Settle::Reject(Dropped::Stale),
        }
    }

    /// The fencing fields of a message this manager sends about `id`.
    fn fence(&self, id: &str, held: &Stamp, me: Incarnation) -> Fence {
        Fence {
            resource: id.into(),
            instance: held.instance,
            term: held.term,
            manager: self.settings.id.clone(),
            manager_instance: me.instance,
            msg_id: self.next_msg_id(),
        }
    }

    /// The registry's word on whether this incarnation holds `id` now.
    async fn lookup(&self, id: &str, me: Incarnation) -> Option<ResourceRow> {
        let row = self.registry.resource(id).await.ok().flatten()?;
        let mine =
            row.manager.as_deref() == Some(self.settings.id.as_str()) && row.manager_instance == Some(me.instance);
        mine.then_some(row)
    }

    async fn heartbeat(self: &std::sync::Arc<Self>, user: &str, mut hb: Heartbeat) -> Settle {
        let Some(me) = self.me() else { return Settle::Reject(Dropped::UnknownResource) };
        let mut known = self.holdings.stamp(&hb.resource);
        if known.as_ref().is_none_or(|k| hb.instance > k.instance) {
            // Assigned just now (or a newer instance): the registry decides.
            if let Some(row) = self.lookup(&hb.resource, me).await {
                self.holdings.adopt(&row);
                known = self.holdings.stamp(&hb.resource);
            }
        }
        let Some(k) = known else { return self.unknown(&hb).await };
        if &*k.owner != user || k.local {
            return Settle::Reject(Dropped::Unauthorised);
        }
        if hb.instance < k.instance {
            return self.shut_down_older(&hb, &k, me).await;
        }
        if hb.instance > k.instance {
            return self.unknown(&hb).await;
        }
        if !self.apply(&mut hb) {
            return Settle::Reject(Dropped::Duplicate);
        }
        Counters::add(&self.counters.heartbeats);
        let ack = ToAgent::Ack { fence: self.fence(&hb.resource, &k, me), successors: self.view().successors };
        let _ = self.send(&hb.reply_to, &ack, BasicProperties::default()).await;
        self.health(&hb.resource, hb.health, &k, me).await;
        Settle::Ack
    }

    /// Records what a heartbeat says and reports each changed property;
    /// false for a message id already seen.
    fn apply(&self, hb: &mut Heartbeat) -> bool {
        let properties = std::mem::take(&mut hb.properties);
        let strings = &self.holdings.strings;
        let changed = self.holdings.update(&hb.resource, |h| {
            if hb.msg_id <= h.last_msg {
                return None;
            }
            h.last_msg = hb.msg_id;
            h.last_heartbeat = Instant::now();
            if *h.reply_to != hb.reply_to {
                h.reply_to = strings.get(&hb.reply_to);
            }
            if h.actions != hb.actions {
                h.actions = std::mem::take(&mut hb.actions);
            }
            if h.writable != hb.writable {
                h.writable = std::mem::take(&mut hb.writable);
            }
            if h.rules != hb.rules {
                h.rules = std::mem::take(&mut hb.rules);
            }
            Some(h.update_properties(hb.full, properties, strings))
        });
        let Some(changed) = changed.flatten() else { return false };
        for (name, value, added) in changed {
            let kind = if added { EventKind::Added } else { EventKind::Replaced };
            self.emit(kind, &format!("resources/{}/properties/{name}", hb.resource), props_value(&value));
        }
        true
    }

    /// A newer instance of the resource holds it: the older one must go.
    async fn shut_down_older(&self, hb: &Heartbeat, current: &Stamp, me: Incarnation) -> Settle {
        let mut fence = self.fence(&hb.resource, current, me);
        fence.instance = hb.instance;
        let reason = format!("instance {} of {} is the current one", current.instance, hb.resource);
        let _ = self.send(&hb.reply_to, &ToAgent::Shutdown { fence, reason }, BasicProperties::default()).await;
        Settle::Reject(Dropped::Stale)
    }

    async fn unknown(&self, hb: &Heartbeat) -> Settle {
        let msg = ToAgent::Unknown {
            resource: hb.resource.clone(),
            manager: self.settings.id.clone(),
            msg_id: self.next_msg_id(),
        };
        let _ = self.send(&hb.reply_to, &msg, BasicProperties::default()).await;
        Settle::Reject(Dropped::UnknownResource)
    }

    /// Moves a resource between up, down and unreachable, applying its
    /// failure policy when its process is down.
    async fn health(self: &std::sync::Arc<Self>, id: &str, health: Health, h: &Stamp, me: Incarnation) {
        let target = match (health, h.policy) {
            (Health::Up, _) => UP,
            (Health::Down, FailurePolicy::AutoInstantiate) => DOWN,
            (Health::Down, FailurePolicy::RequireUserInput) => UNREACHABLE,
        };
        if h.status == target {
            return;
        }
        self.set_status(id, h.instance, target, me);
        if target == DOWN && h.policy == FailurePolicy::AutoInstantiate {
            Counters::add(&self.counters.respawns);
            // Not inline: the agent's result arrives through the inbox this runs on.
            let (cloud, id) = (self.clone(), id.to_owned());
            tokio::spawn(async move {
                match cloud.command(&id, Operation::Respawn).await {
                    Ok(out) => tracing::info!(resource = %id, output = %out, "respawned"),
                    Err(e) => tracing::warn!(resource = %id, error = %e, "respawn failed"),
                }
            });
        }
    }

    /// Records a status in memory now, and in the registry through the
    /// status writer (which batches many into one commit).
    fn set_status(&self, id: &str, instance: u64, status: &'static str, me: Incarnation) {
        self.holdings.update(id, |h| h.status = status);
        let _ = self.statuses.send(StatusChange { id: id.into(), instance, status, holder: me });
    }

    /// Writes queued status changes, many per transaction, in order; each
    /// applied one is an event.
    pub(crate) async fn write_statuses(&self, batch: Vec<StatusChange>) {
        let Some(holder) = batch.first().map(|c| c.holder) else { return };
        let (mine, stale): (Vec<_>, Vec<_>) = batch.into_iter().partition(|c| c.holder == holder);
        let changes: Vec<(String, u64, &str)> = mine.iter().map(|c| (c.id.clone(), c.instance, c.status)).collect();
        match self.registry.set_statuses((&self.settings.id, holder.instance), &changes).await {
            Ok(applied) => {
                for (c, ok) in mine.iter().zip(applied) {
                    if !ok {
                        Counters::add(&self.counters.fenced_writes);
                        continue;
                    }
                    if c.status == DOWN || c.status == UNREACHABLE {
                        Counters::add(&self.counters.down);
                    }
                    let value = Some(Value::String(c.status.into()));
                    self.emit(EventKind::Replaced, &format!("resources/{}/status", c.id), value);
                }
            }
            Err(e) => {
                Counters::add(&self.counters.registry_errors);
                tracing::warn!(error = %e, changes = changes.len(), "statuses not recorded");
            }
        }
        if !stale.is_empty() {
            // Queued under an earlier incarnation: written in the next batch, under its own.
            Box::pin(self.write_statuses(stale)).await;
        }
    }

    /// Each round: hold exactly what the registry assigns to this
    /// incarnation, and mark resources that stopped heartbeating.
    ///
    /// Most rounds read only the rows changed since the last one (with two
    /// heartbeats of overlap); every [`FULL_SYNC_ROUNDS`] rounds, all of them.
    pub async fn look_after_holdings(&self, me: Incarnation, now: i64) {
        let since = self.holdings.since(now, FULL_SYNC_ROUNDS);
        let mine = |r: &ResourceRow| {
            r.manager.as_deref() == Some(self.settings.id.as_str()) && r.manager_instance == Some(me.instance)
        };
        let synced = match since {
            None => self.registry.held_by(&self.settings.id, me.instance).await.map(|rows| self.holdings.sync(&rows)),
            Some(since) => {
                // A little overlap: a row committed late carries an earlier stamp.
                let since = since - (2 * self.settings.heartbeat.as_millis() as i64).max(2000);
                self.registry.changed_since(since).await.map(|rows| self.holdings.reconcile(&rows, mine))
            }
        };
        if let Err(e) = synced {
            Counters::add(&self.counters.registry_errors);
            self.holdings.resync();
            return tracing::warn!(error = %e, "holdings not refreshed");
        }
        if self.settings.local_host {
            self.refresh_host();
        }
        for (id, h) in self.holdings.silent(self.settings.lease()) {
            let status = match h.policy {
                FailurePolicy::RequireUserInput => UNREACHABLE,
                FailurePolicy::AutoInstantiate => DOWN,
            };
            tracing::warn!(resource = %id, status, "resource stopped heartbeating");
            self.set_status(&id, h.instance, status, me);
        }
    }

    /// Runs an operation on a resource this member holds, through its agent.
    pub async fn command(&self, id: &str, op: Operation) -> Result<Json, OpError> {
        let me = self.me().ok_or(OpError::Unavailable("this member is rejoining the cloud".into()))?;
        let h = self.holdings.stamp(id).ok_or(OpError::NotFound)?;
        if h.local {
            return Err(OpError::Refused("this resource has no agent".into()));
        }
        match &op {
            Operation::Exec { action, .. } if !h.actions.contains(action) => return Err(OpError::NotFound),
            Operation::Set { property, .. } if !h.writable.contains(property) => {
                return Err(OpError::Refused(format!("{property} is not writable")));
            }
            _ => {}
        }
        Counters::add(&self.counters.commands);
        let (command_id, answer) = self.pending.register();
        let msg = ToAgent::Command { fence: self.fence(id, &h, me), command_id: command_id.clone(), operation: op };
        if let Err(e) = self.send(&h.reply_to, &msg, BasicProperties::default()).await {
            self.pending.forget(&command_id);
            return Err(OpError::Unavailable(e.to_string()));
        }
        let reply = tokio::time::timeout(self.settings.rpc_timeout, answer).await;
        self.pending.forget(&command_id);
        match reply {
            Ok(Ok(reply)) if reply.ok => Ok(reply.body),
            Ok(Ok(reply)) => Err(OpError::Refused(reply.body.to_string())),
            _ => Err(OpError::Unavailable(format!("{id} did not answer in time"))),
        }
    }

    /// Answers another member's request about a resource held here.
    async fn answer(&self, request: ToManager, reply_to: &str, correlation_id: &str) {
        Counters::add(&self.counters.forwarded);
        let outcome = match request {
            ToManager::Detail { resource } => self.holdings.get(&resource).map(|h| h.detail()).ok_or(OpError::NotFound),
            ToManager::Forward { resource, operation } => self.command(&resource, operation).await,
            _ => Err(OpError::NotFound),
        };
        let reply = match outcome {
            Ok(body) => Reply { ok: true, body, code: String::new() },
            Err(e) => Reply { ok: false, body: json!(e.to_string()), code: e.code().into() },
        };
        let props = BasicProperties::default().with_correlation_id(correlation_id.into());
        let _ = self.send(reply_to, &reply, props).await;
    }

    /// Asks the member holding `id` (per the registry) for its detail or to run an operation.
    pub async fn forward(&self, id: &str, request: ToManager) -> Result<Json, OpError> {
        let unavailable = |e: crate::registry::RegistryError| OpError::Unavailable(e.to_string());
        let row = self.registry.resource(id).await.map_err(unavailable)?.ok_or(OpError::NotFound)?;
        let manager = row.manager.ok_or(OpError::NotFound)?;
        // Asking a dead member would only wait for the timeout.
        let members = self.registry.members().await.map_err(unavailable)?;
        if !members.iter().any(|m| m.id == manager && Some(m.instance) == row.manager_instance && m.live) {
            return Err(OpError::Unavailable(format!("{id} is held by {manager}, which is not live")));
        }
        let bus = self.bus.as_ref().ok_or(OpError::Unavailable("no broker is configured".into()))?;
        let reply_queue = bus.reply_queue().ok_or(OpError::Unavailable("the broker is unreachable".into()))?;
        let (id, answer) = self.pending.register();
        let props = BasicProperties::default()
            .with_correlation_id(id.as_str().into())
            .with_reply_to(reply_queue.into())
            .with_user_id(bus.user.as_str().into());
        if let Err(e) = self.send(&manager_queue(&manager), &request, props).await {
            self.pending.forget(&id);
            return Err(OpError::Unavailable(e.to_string()));
        }
        let reply = tokio::time::timeout(self.settings.rpc_timeout, answer).await;
        self.pending.forget(&id);
        match reply {
            Ok(Ok(r)) if r.ok => Ok(r.body),
            Ok(Ok(r)) if r.code == "not_found" => Err(OpError::NotFound),
            Ok(Ok(r)) if r.code == "refused" => Err(OpError::Refused(r.body.as_str().unwrap_or_default().into())),
            Ok(Ok(r)) => Err(OpError::Unavailable(r.body.to_string())),
            _ => Err(OpError::Unavailable(format!("manager {manager} did not answer in time"))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("no such resource, action or property")]
    NotFound,
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unavailable(String),
}

impl OpError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Refused(_) => "refused",
            Self::Unavailable(_) => "unavailable",
        }
    }
}
