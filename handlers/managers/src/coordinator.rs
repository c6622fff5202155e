//! The coordinator's duties: place Manage Me requests, and move the
//! resources of members whose lease expired. Every registry write is
//! conditional on the coordinator's term; an assignment is sent only after
//! its write committed, so a deposed coordinator sends none.

use dmtree_agent::protocol::{Assignment, ManageMe, manager_queue};
use dmtree_core::{EventKind, Value};
use lapin::BasicProperties;
use lapin::message::Delivery;

use crate::cloud::{Cloud, Role, Settle};
use crate::monitoring::{Counters, Dropped};
use crate::registry::{CoordinatorFence, RegistryError, Request, ResourceRow};

/// Ids become tree segments: keep them plain.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

/// How many orphans one round moves (the rest wait for the next round).
const REASSIGN_BATCH: usize = 1000;

impl Cloud {
    pub async fn manage_me(&self, d: Delivery) {
        let how = self.place(&d).await;
        if matches!(how, Settle::Requeue) {
            // Give the broker (and the registry) a moment before the retry.
            tokio::time::sleep(self.settings.heartbeat / 4).await;
        }
        self.settle(&d, how).await;
    }

    async fn place(&self, d: &Delivery) -> Settle {
        let Role::Coordinator(fence) = self.role() else { return Settle::Requeue };
        let Some(owner) = Self::sender(d) else { return Settle::Reject(Dropped::Unauthorised) };
        let req: ManageMe = match Self::parse(&d.data) {
            Ok(req) => req,
            Err(why) => return Settle::Reject(why),
        };
        if !valid_name(&req.resource) || !valid_name(&req.resource_type) || req.reply_to.is_empty() {
            return Settle::Reject(Dropped::Schema);
        }
        let request = Request {
            resource: req.resource,
            kind: req.resource_type,
            owner,
            nonce: req.nonce,
            endpoint: req.endpoint,
            reply_to: req.reply_to,
            policy: req.policy.as_str().into(),
            previous: req.instance,
        };
        match self.registry.place(&fence, &request).await {
            Ok(row) => {
                Counters::add(&self.counters.assigned);
                self.send_assignment(&fence, &row).await;
                Settle::Ack
            }
            Err(RegistryError::NotOwner { .. }) => Settle::Reject(Dropped::Unauthorised),
            Err(RegistryError::Superseded { current, .. }) => {
                self.supersede(&fence, &request, current).await;
                Settle::Reject(Dropped::Stale)
            }
            Err(e) => {
                // Back to the queue, for the rightful coordinator or a later try.
                self.refused(e);
                Settle::Requeue
            }
        }
    }

    /// Counts a registry refusal.
    fn refused(&self, e: RegistryError) {
        match &e {
            RegistryError::Fenced { .. } => Counters::add(&self.counters.fenced_writes),
            RegistryError::NoRoom => {}
            _ => Counters::add(&self.counters.registry_errors),
        }
        tracing::warn!(error = %e, "registry write refused");
    }

    /// Tells an older instance asking to be managed again that a newer one exists.
    async fn supersede(&self, fence: &CoordinatorFence, req: &Request, current: u64) {
        let Some(instance) = req.previous else { return };
        let fence = dmtree_agent::protocol::Fence {
            resource: req.resource.clone(),
            instance,
            term: fence.term,
            manager: fence.id.clone(),
            manager_instance: fence.instance,
            msg_id: self.next_msg_id(),
        };
        let reason = format!("instance {current} of {} is the current one", req.resource);
        let msg = dmtree_agent::protocol::ToAgent::Shutdown { fence, reason };
        let _ = self.send(&req.reply_to, &msg, BasicProperties::default()).await;
    }

    pub async fn send_assignment(&self, fence: &CoordinatorFence, row: &ResourceRow) {
        let (Some(manager), Some(manager_instance)) = (row.manager.clone(), row.manager_instance) else { return };
        if row.reply_to.is_empty() {
            return;
        }
        let assignment = dmtree_agent::protocol::ToAgent::Assignment(Assignment {
            resource: row.id.clone(),
            instance: row.instance,
            manager_queue: manager_queue(&manager),
            manager,
            manager_instance,
            term: row.term,
            coordinator: fence.id.clone(),
            coordinator_instance: fence.instance,
            msg_id: self.next_msg_id(),
            heartbeat_ms: self.settings.heartbeat.as_millis() as u64,
        });
        if let Err(e) = self.send(&row.reply_to, &assignment, BasicProperties::default()).await {
            tracing::debug!(error = %e, resource = %row.id, "assignment not sent; the agent will ask again");
        }
    }

    /// Moves the resources of dead members, and retries unreachable ones.
    pub async fn reassign_orphans(&self, fence: &CoordinatorFence) {
        let orphans = match self.registry.orphans(self.settings.retry.as_millis() as u64, REASSIGN_BATCH).await {
            Ok(rows) => rows,
            Err(e) => return self.refused(e),
        };
        for orphan in orphans {
            match self.registry.reassign(fence, &orphan).await {
                Ok(Some(row)) => {
                    Counters::add(&self.counters.reassigned);
                    let path = format!("resources/{}/manager", row.id);
                    self.emit(EventKind::Replaced, &path, row.manager.clone().map(|s| Value::String(s.into())));
                    if !row.pinned {
                        self.send_assignment(fence, &row).await;
                    }
                }
                Ok(None) => {}
                Err(e) => return self.refused(e),
            }
        }
    }
}
