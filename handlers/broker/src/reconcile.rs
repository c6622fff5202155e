//! The reconciler: after each observation it drives the broker toward the
//! desired state, reports drift, and applies each link's failure policy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value as Json, json};

use crate::apply::{apply, restart_link};
use crate::mgmt::Management;
use crate::observe::{Key, Present};
use crate::spec::{BrokerSpec, FailurePolicy, Kind};

/// Where a desired link stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// Declared, not yet seen running.
    Pending,
    Ok,
    /// Lost, waiting for a user (`require-user-input`).
    Failed,
    /// Lost, being recreated (`auto-recreate`).
    Recreating,
}

impl LinkStatus {
    fn as_str(&self) -> &'static str {
        match self {
            LinkStatus::Pending => "pending",
            LinkStatus::Ok => "ok",
            LinkStatus::Failed => "failed",
            LinkStatus::Recreating => "recreating",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LinkState {
    pub status: LinkStatus,
    pub attempts: u32,
    next_attempt: Option<Instant>,
    backoff: dmtree_core::Backoff,
    pub last_error: String,
    pub since: DateTime<Utc>,
}

impl Default for LinkState {
    fn default() -> Self {
        Self {
            status: LinkStatus::Pending,
            attempts: 0,
            next_attempt: None,
            backoff: dmtree_core::Backoff::new(Duration::from_secs(1), MAX_BACKOFF / 2),
            last_error: String::new(),
            since: Utc::now(),
        }
    }
}

/// The reconciler's memory between observations.
#[derive(Debug, Default)]
pub struct Reconciler {
    pub links: BTreeMap<Key, LinkState>,
    /// (kind, vhost, name) → what differed at the last observation.
    pub drift: BTreeMap<(&'static str, String, String), String>,
    pub repairs: u64,
    pub last_error: String,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Reconciler {
    /// One pass over the desired state against what the broker has.
    pub async fn run(&mut self, api: &Management, spec: &BrokerSpec, present: &Present) {
        self.drift.clear();
        for kind in [Kind::Exchanges, Kind::Queues, Kind::Policies, Kind::Bindings] {
            for (vhost, name, decl) in desired(spec, kind) {
                let there = match kind {
                    Kind::Exchanges => present.exchanges.contains(&key(vhost, name)),
                    Kind::Queues => present.queues.contains(&key(vhost, name)),
                    Kind::Policies => present.policies.contains(&key(vhost, name)),
                    _ => present.has_binding(vhost, decl),
                };
                if !there {
                    self.repair(api, kind, vhost, name, decl).await;
                }
            }
        }
        self.links
            .retain(|k, _| spec.desired.get("links").and_then(|v| v.get(&k.0)).is_some_and(|n| n.contains_key(&k.1)));
        for (vhost, name, decl) in desired(spec, Kind::Links) {
            self.link(api, spec.policy_for(decl), vhost, name, decl, present).await;
        }
    }

    async fn repair(&mut self, api: &Management, kind: Kind, vhost: &str, name: &str, decl: &Json) {
        let what = format!("{}/{vhost}/{name}", kind.as_str());
        let at = (kind.as_str(), vhost.to_owned(), name.to_owned());
        let outcome = match apply(api, kind, vhost, name, decl).await {
            Ok(()) => {
                self.repairs += 1;
                "missing on the broker; recreated".to_owned()
            }
            Err(e) => {
                self.last_error = format!("{what}: {e}");
                format!("missing on the broker; recreating failed: {e}")
            }
        };
        tracing::info!(%what, %outcome, "broker drift");
        self.drift.insert(at, outcome);
    }

    async fn link(
        &mut self,
        api: &Management,
        policy: FailurePolicy,
        vhost: &str,
        name: &str,
        decl: &Json,
        present: &Present,
    ) {
        let k = key(vhost, name);
        let defined = present.shovels.contains(&k);
        let state = present.shovel_state.get(&k).map(String::as_str);
        let healthy = defined && state != Some("terminated");
        let entry = self.links.entry(k).or_default();
        if healthy {
            if state == Some("running") && entry.status != LinkStatus::Ok {
                *entry = LinkState { status: LinkStatus::Ok, ..LinkState::default() };
            }
            return;
        }
        let reason = if defined { "the shovel terminated" } else { "the shovel is gone from the broker" };
        let first = entry.status == LinkStatus::Pending && entry.attempts == 0;
        match (first, policy) {
            (false, FailurePolicy::RequireUserInput) => {
                if entry.status != LinkStatus::Failed {
                    tracing::warn!(vhost, name, reason, "link failed; waiting for a user to restart it");
                    *entry =
                        LinkState { status: LinkStatus::Failed, last_error: reason.into(), ..LinkState::default() };
                }
                self.drift.insert(("links", vhost.into(), name.into()), format!("{reason}; waiting for a user"));
            }
            (true, _) | (false, FailurePolicy::AutoRecreate) => {
                if entry.next_attempt.is_some_and(|t| Instant::now() < t) {
                    return;
                }
                if !first && entry.status != LinkStatus::Recreating {
                    *entry =
                        LinkState { status: LinkStatus::Recreating, last_error: reason.into(), ..LinkState::default() };
                }
                entry.attempts += 1;
                entry.next_attempt = Some(Instant::now() + entry.backoff.next_delay());
                if let Err(e) = restart_link(api, vhost, name, Some(decl), defined).await {
                    entry.last_error = e.to_string();
                }
                self.repairs += 1;
                let note = format!("{reason}; recreating (attempt {})", entry.attempts);
                self.drift.insert(("links", vhost.into(), name.into()), note);
            }
        }
    }

    /// A user restarted the link: it is pending again.
    pub fn restarted(&mut self, vhost: &str, name: &str) {
        self.links.insert(key(vhost, name), LinkState::default());
    }

    /// What `monitoring/reconciler` shows.
    pub fn status(&self) -> Json {
        let mut drift = json!({});
        for ((kind, vhost, name), why) in &self.drift {
            drift[*kind][vhost][name] = json!(why);
        }
        json!({"drift": drift, "drift_count": self.drift.len(), "repairs": self.repairs, "last_error": self.last_error})
    }

    /// Adds each desired link's policy and status to the observed links.
    pub fn annotate_links(&self, spec: &BrokerSpec, links: &mut Json) {
        for (vhost, name, decl) in desired(spec, Kind::Links) {
            let state = self.links.get(&key(vhost, name)).cloned().unwrap_or_default();
            let node = &mut links[vhost][name];
            if node.is_null() {
                *node = json!({"type": "shovel", "state": "missing"});
            }
            node["policy"] = json!(spec.policy_for(decl));
            node["status"] = json!(state.status.as_str());
            node["attempts"] = json!(state.attempts);
            node["last_error"] = json!(state.last_error);
            node["status_since"] = json!(state.since.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
    }
}

fn key(vhost: &str, name: &str) -> Key {
    (vhost.to_owned(), name.to_owned())
}

fn desired(spec: &BrokerSpec, kind: Kind) -> impl Iterator<Item = (&str, &str, &Json)> {
    spec.desired
        .get(kind.as_str())
        .into_iter()
        .flatten()
        .flat_map(|(vhost, objects)| objects.iter().map(move |(name, decl)| (vhost.as_str(), name.as_str(), decl)))
}
