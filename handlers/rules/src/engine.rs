//! The epoch loop: which rules run here, planning on a blocking thread,
//! then applying the plan: counters saved, firings claimed (exactly one
//! evaluator wins each action id), actions run as the owner, audit events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmtree_core::{ADMIN, Caller, ChangeSink, EventKind, Principal, Tree, Uri, Value};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::decide::Counters;
use crate::epoch::{self, Epoch, Placement, RulePlan, Views};
use crate::reader::TreeReader;
use crate::rule::{Rule, RuleSpec, Scope};
use crate::store::{Firing, Store};
use crate::{Error, Settings};

/// What `./rules/<name>/monitoring` shows (this member's view).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleStats {
    pub evaluations: u64,
    pub firings: u64,
    pub errors: u64,
    pub blocked: BTreeMap<&'static str, u64>,
    pub last_evaluation: Option<String>,
    pub last_firing: Option<String>,
    pub last_error: Option<String>,
    pub last_elapsed_us: u64,
}

/// A rule as this member holds it.
pub struct Loaded {
    pub rule: Arc<Rule>,
    pub updated_ms: i64,
    /// Over budget, or failing as a whole: not evaluated until rewritten.
    pub suspended: Option<String>,
    pub stats: RuleStats,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EpochStats {
    pub epochs: u64,
    pub last_epoch: Option<i64>,
    pub last_duration_ms: u64,
    /// Epochs whose work took longer than the period.
    pub overruns: u64,
    /// Epoch boundaries passed while an overrun was still working.
    pub skipped: u64,
    pub placement: Option<Placement>,
    pub redone: u64,
}

pub struct Engine {
    tree: Arc<Tree>,
    store: Store,
    settings: Settings,
    /// This process's claims are told apart from a dead predecessor's.
    incarnation: String,
    rules: Mutex<BTreeMap<String, Loaded>>,
    epochs: Mutex<EpochStats>,
    sink: Mutex<Option<ChangeSink>>,
}

/// How long finished firings are kept (they key exactly-once only while a redo is possible).
const FIRINGS_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// Rules one principal may own: each costs every epoch.
pub const MAX_RULES_PER_OWNER: usize = 1000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn stamp(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl Engine {
    pub async fn open(tree: Arc<Tree>, settings: Settings) -> Result<Arc<Self>, Error> {
        let store = Store::open(&settings.database).await?;
        let incarnation = format!("{}#{}", settings.member, uuid::Uuid::new_v4().simple());
        let engine = Arc::new(Self {
            tree,
            store,
            settings,
            incarnation,
            rules: Mutex::default(),
            epochs: Mutex::default(),
            sink: Mutex::default(),
        });
        engine.reload().await?;
        Ok(engine)
    }

    pub fn attach(&self, sink: ChangeSink) {
        *self.sink.lock() = Some(sink);
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Brings the rules in line with the store (other members write there too).
    pub async fn reload(&self) -> Result<(), Error> {
        let stored = self.store.rules().await?;
        let mut rules = self.rules.lock();
        rules.retain(|name, _| stored.iter().any(|s| &s.name == name));
        for s in stored {
            if rules.get(&s.name).is_some_and(|l| l.updated_ms == s.updated_ms) {
                continue;
            }
            let compiled = serde_json::from_str::<RuleSpec>(&s.spec)
                .map_err(|e| e.to_string())
                .and_then(|spec| Rule::compile(&s.name, &s.owner, spec).map_err(|e| e.to_string()));
            let stats = rules.remove(&s.name).map(|l| l.stats).unwrap_or_default();
            let (rule, suspended) = match compiled {
                Ok(r) => (r, None),
                Err(e) => {
                    tracing::warn!(rule = s.name, error = e, "stored rule does not compile; suspended");
                    let spec = RuleSpec {
                        scope: Scope::Global,
                        for_each: None,
                        filter: None,
                        when: "false".into(),
                        for_epochs: 1,
                        clear_when: None,
                        cooldown: None,
                        priority: 0,
                        group: None,
                        verify: None,
                        actions: vec![],
                        enabled: false,
                    };
                    (Rule::compile(&s.name, &s.owner, spec).map_err(|e| Error::Invalid(e.to_string()))?, Some(e))
                }
            };
            rules.insert(s.name.clone(), Loaded { rule: Arc::new(rule), updated_ms: s.updated_ms, suspended, stats });
        }
        Ok(())
    }

    /// Stores a checked rule under its writer's name.
    pub async fn put(&self, name: &str, owner: &Principal, spec: RuleSpec) -> Result<(), Error> {
        let owner = owner.name().ok_or_else(|| Error::Invalid("an anonymous caller cannot own a rule".into()))?;
        Rule::compile(name, owner, spec.clone()).map_err(|e| Error::Invalid(e.to_string()))?;
        let owned = self.rules.lock().values().filter(|l| l.rule.owner == owner && l.rule.name != name).count();
        if owned >= MAX_RULES_PER_OWNER {
            return Err(Error::Invalid(format!(
                "{owner} already owns {MAX_RULES_PER_OWNER} rules, the most one principal may"
            )));
        }
        let text = serde_json::to_string(&spec).map_err(|e| Error::Invalid(e.to_string()))?;
        self.store.put_rule(name, owner, &text, now_ms()).await?;
        self.reload().await
    }

    pub async fn delete(&self, name: &str) -> Result<bool, Error> {
        let gone = self.store.delete_rule(name).await?;
        self.reload().await?;
        Ok(gone)
    }

    pub fn with_rule<T>(&self, name: &str, f: impl FnOnce(&Loaded) -> T) -> Option<T> {
        self.rules.lock().get(name).map(f)
    }

    pub fn names(&self) -> Vec<String> {
        self.rules.lock().keys().cloned().collect()
    }

    pub fn epoch_stats(&self) -> EpochStats {
        self.epochs.lock().clone()
    }

    /// Runs epochs until the tree goes away, at multiples of the period.
    pub async fn run(self: Arc<Self>) {
        let period = self.settings.epoch.as_millis().max(1) as i64;
        loop {
            let now = now_ms();
            let next = (now / period + 1) * period;
            tokio::time::sleep(Duration::from_millis((next - now) as u64)).await;
            let number = next / period;
            let started = Instant::now();
            if let Err(e) = self.epoch(number).await {
                tracing::warn!(error = %e, epoch = number, "rule epoch failed");
            }
            let took = started.elapsed();
            let mut s = self.epochs.lock();
            s.epochs += 1;
            s.last_epoch = Some(number);
            s.last_duration_ms = took.as_millis() as u64;
            if took.as_millis() as i64 > period {
                s.overruns += 1;
                s.skipped += (took.as_millis() as i64 / period) as u64;
                tracing::warn!(
                    epoch = number,
                    took_ms = took.as_millis() as u64,
                    period_ms = period,
                    "rule epoch overran its period"
                );
            }
        }
    }

    /// One epoch: plan what is placed here, then apply it.
    pub async fn epoch(&self, number: i64) -> Result<(), Error> {
        self.reload().await?;
        let placement = self.placement().await;
        self.epochs.lock().placement = Some(placement.clone());
        if placement.coordinator {
            self.redo_pending(number).await?;
        }
        let rules: Vec<Arc<Rule>> = self
            .rules
            .lock()
            .values()
            .filter(|l| l.suspended.is_none() && l.rule.spec.enabled)
            .filter(|l| l.rule.scope() == Scope::Local || placement.coordinator)
            .map(|l| l.rule.clone())
            .collect();
        if rules.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        if placement.coordinator && number % 100 == 0 {
            self.store.prune(now - FIRINGS_KEPT_MS).await?;
        }
        let plans = self.plan(number, now, &placement, rules.clone(), false).await?;
        self.apply(number, now, &rules, plans).await
    }

    /// Plans on a blocking thread: CEL is synchronous, and reads wait for the tree there.
    pub async fn plan(
        &self,
        number: i64,
        now_ms: i64,
        placement: &Placement,
        rules: Vec<Arc<Rule>>,
        record: bool,
    ) -> Result<Vec<RulePlan>, Error> {
        let mut counters = HashMap::new();
        for r in &rules {
            counters.insert(r.name.clone(), self.store.counters(&r.name).await?);
        }
        let (tree, handle, budget, placement) =
            (self.tree.clone(), tokio::runtime::Handle::current(), self.settings.budget, placement.clone());
        let job = move || {
            let mut views = Views::new(move |owner| {
                Arc::new(TreeReader::new(tree.clone(), Principal::named(owner), handle.clone(), now_ms))
            });
            let e = Epoch { number, now_ms, placement: &placement, budget, record };
            epoch::plan(&e, &rules, &counters, &mut views)
        };
        // Its own thread with a large stack: CEL evaluation recurses.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("dmtree-rules-epoch".into())
            .stack_size(crate::expr::LARGE_STACK)
            .spawn(move || {
                let _ = tx.send(job());
            })
            .map_err(|e| Error::Invalid(format!("rule evaluation could not start: {e}")))?;
        rx.await.map_err(|_| Error::Invalid("rule evaluation failed".into()))
    }

    async fn apply(&self, number: i64, now: i64, rules: &[Arc<Rule>], plans: Vec<RulePlan>) -> Result<(), Error> {
        for plan in plans {
            let Some(rule) = rules.iter().find(|r| r.name == plan.rule) else { continue };
            let changed: Vec<(String, Counters)> = plan
                .outcomes
                .iter()
                // Back to the defaults is a change too: a count that fell to 0 must not stay 2.
                .filter(|o| {
                    !o.would_fire
                        && Counters { last_epoch: o.counters_before.last_epoch, ..o.counters } != o.counters_before
                })
                .map(|o| (o.key.clone(), o.counters))
                .collect();
            self.store.save_counters(&rule.name, &changed).await?;
            self.record_plan(&plan, now);
            for o in plan.outcomes.iter().filter(|o| o.would_fire) {
                let fired = crate::decide::fired(o.counters, now);
                let actions = serde_json::to_string(&o.actions).unwrap_or_else(|_| "[]".into());
                let firing = Firing { rule: &rule.name, binding: &o.key, epoch: number, actions: &actions };
                if !self.store.claim(&firing, &self.incarnation, fired, now).await? {
                    continue;
                }
                self.fire(rule, &o.key, &o.binding, number, &o.actions).await?;
            }
        }
        Ok(())
    }

    /// Runs a claimed firing's actions, records how it ended, and audits it.
    async fn fire(
        &self,
        rule: &Rule,
        key: &str,
        binding: &str,
        number: i64,
        actions: &[epoch::Planned],
    ) -> Result<(), Error> {
        let id = epoch::action_id(&rule.name, key, number);
        let owner = Principal::named(&rule.owner);
        let mut results = Vec::new();
        let mut failure = None;
        for (i, a) in actions.iter().enumerate() {
            match crate::act::run(&self.tree, &owner, a, &id, i).await {
                Ok(out) => results.push(out),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let detail = failure.clone().unwrap_or_else(|| Json::Array(results).to_string());
        self.store.finish(&rule.name, key, number, failure.is_none(), &detail).await?;
        self.audit(rule, binding, &id, failure.as_deref()).await;
        let now = now_ms();
        {
            let mut rules = self.rules.lock();
            if let Some(l) = rules.get_mut(&rule.name) {
                l.stats.firings += 1;
                l.stats.last_firing = stamp(now);
                if let Some(e) = &failure {
                    l.stats.errors += 1;
                    let at = if binding.is_empty() { String::new() } else { format!("{binding}: ") };
                    l.stats.last_error = Some(format!("{at}{e}"));
                }
            }
        }
        self.emit(&rule.name, "monitoring/last_firing", stamp(now).map(|s| json!(s)));
        Ok(())
    }

    /// Every firing is a `rule.fired` ContextEvent (when the ContextStore is mounted).
    async fn audit(&self, rule: &Rule, binding: &str, id: &str, error: Option<&str>) {
        let Ok(at) = Uri::parse("./contextstore/ingest", self.tree.limits()) else { return };
        let payload = json!({"rule": rule.name, "binding": binding, "action_id": id, "owner": rule.owner,
            "ok": error.is_none(), "error": error, "uri": Uri::root().join_name("rules").join_name(&rule.name).to_string()});
        let event = json!([{"id": crate::act::event_id(&format!("audit|{id}")), "sender": "dmtree.rules", "type": "rule.fired", "payload": payload}]);
        let admin = Principal::named(ADMIN);
        if let Err(e) = self.tree.exec(&Caller::new(&admin), &at, Some(event)).await
            && !e.is(dmtree_core::ErrorCode::NodeNotFound)
        {
            tracing::debug!(error = %e, "rule.fired event not stored");
        }
    }

    fn record_plan(&self, plan: &RulePlan, now: i64) {
        let mut rules = self.rules.lock();
        let Some(l) = rules.get_mut(&plan.rule) else { return };
        let s = &mut l.stats;
        s.evaluations += plan.evaluated;
        s.last_evaluation = stamp(now);
        s.last_elapsed_us = plan.elapsed_us;
        // `error` shows this epoch's: an error gone is an error cleared.
        s.last_error = None;
        for o in &plan.outcomes {
            let Some(why) = &o.why_not else { continue };
            if why.is_block() {
                *s.blocked.entry(why.label()).or_default() += 1;
            }
            if let crate::decide::NotFired::Error { message } = why {
                s.errors += 1;
                let at = if o.binding.is_empty() { String::new() } else { format!("{}: ", o.binding) };
                s.last_error = Some(format!("{at}{message}"));
            }
        }
        if let Some(e) = &plan.error {
            s.errors += 1;
            s.last_error = Some(e.clone());
            l.suspended = Some(e.clone());
            tracing::warn!(rule = plan.rule, error = e, "rule suspended");
            drop(rules);
            self.emit(&plan.rule, "status", Some(json!("suspended")));
        }
    }

    fn emit(&self, rule: &str, path: &str, value: Option<Json>) {
        let Some(sink) = self.sink.lock().clone() else { return };
        let rel = std::iter::once(rule).chain(path.split('/')).fold(Uri::root(), |u, s| u.join_name(s));
        let value = value.and_then(|v| Value::from_json(&v, None).ok());
        sink.emit(EventKind::Replaced, &rel, value.as_ref());
    }

    /// A firing claimed by an evaluator that died before finishing is redone
    /// once, by the coordinator, with exactly the actions it claimed: sets
    /// are idempotent, agents run an action id once, events are keyed by it.
    async fn redo_pending(&self, number: i64) -> Result<(), Error> {
        for p in self.store.pending().await? {
            // Ours are in flight; a claim of the last epoch may still be finishing elsewhere.
            if p.member == self.incarnation || p.epoch >= number - 1 {
                continue;
            }
            let Some(rule) = self.with_rule(&p.rule, |l| l.rule.clone()) else { continue };
            if !self.store.adopt(&p, &self.incarnation).await? {
                continue;
            }
            let actions: Vec<epoch::Planned> = serde_json::from_str(&p.actions).unwrap_or_default();
            let binding = p.binding.rsplit_once(':').map_or(p.binding.as_str(), |(_, b)| b);
            tracing::warn!(rule = p.rule, binding, epoch = p.epoch, "redoing a firing its evaluator did not finish");
            self.epochs.lock().redone += 1;
            self.fire(&rule, &p.binding, binding, p.epoch, &actions).await?;
        }
        Ok(())
    }

    /// Reads this member's place in the manager cloud; alone when there is none.
    pub async fn placement(&self) -> Placement {
        let admin = Principal::named(ADMIN);
        let read = |p: &'static str| {
            let tree = self.tree.clone();
            let caller = Caller::new(&admin);
            async move {
                let uri = Uri::parse(p, tree.limits()).ok()?;
                tree.read(&caller, &uri, 0).await.ok()?.node?.value.map(|v| v.to_json())
            }
        };
        let member = read("./managers/monitoring/self/id").await;
        let role = read("./managers/monitoring/self/role").await;
        match member.as_ref().and_then(Json::as_str) {
            Some(id) => Placement {
                member: id.to_owned(),
                coordinator: role.as_ref().and_then(Json::as_str) == Some("coordinator"),
                cloud: self.settings.shared,
            },
            None => Placement { member: self.settings.member.clone(), coordinator: true, cloud: false },
        }
    }

    /// A dry run of the current epoch for one rule: nothing is written.
    /// What `viewer` may not read is hidden from it: the values read (as the
    /// owner) and the names of bindings.
    pub async fn explain(&self, name: &str, viewer: &Principal) -> Result<Json, Error> {
        self.reload().await?;
        let Some(target) = self.with_rule(name, |l| l.rule.clone()) else {
            return Err(Error::NotFound);
        };
        // Conflicts are settled among one owner's rules only, so those are
        // all it takes; other suspended rules stay out (the budget stopped them).
        let rules: Vec<Arc<Rule>> = self
            .rules
            .lock()
            .values()
            .filter(|l| l.rule.owner == target.owner && l.rule.spec.enabled)
            .filter(|l| l.suspended.is_none() || l.rule.name == name)
            .map(|l| l.rule.clone())
            .collect();
        let placement = self.placement().await;
        let period = self.settings.epoch.as_millis().max(1) as i64;
        let now = now_ms();
        let number = now / period + 1;
        let placed = target.scope() == Scope::Local || placement.coordinator;
        let peers = rules.into_iter().filter(|r| r.scope() == Scope::Local || placement.coordinator).collect();
        let plans = self.plan(number, now, &placement, peers, true).await?;
        let mut plan = plans.into_iter().find(|p| p.rule == name).unwrap_or_default();
        // The owner's rule read with the owner's rights: nothing to hide from the owner.
        if viewer.name() != Some(target.owner.as_str()) {
            self.redact(&mut plan, viewer);
        }
        let suspended = self.with_rule(name, |l| l.suspended.clone()).flatten();
        Ok(json!({
            "rule": name,
            "epoch": number,
            "placement": placement,
            "evaluated_here": placed,
            "suspended": suspended,
            "error": plan.error,
            "elapsed_us": plan.elapsed_us,
            "bindings": plan.outcomes,
        }))
    }

    /// An outcome that read, binds or targets a node the viewer may not read
    /// keeps only that it exists: its condition, counters, computed values
    /// and reasons would all tell something about that node.
    fn redact(&self, plan: &mut RulePlan, viewer: &Principal) {
        let readable = |uri: &str| {
            Uri::parse(uri, self.tree.limits())
                .is_ok_and(|u| self.tree.effective_acl(&u).permits(viewer, dmtree_core::Permission::Get))
        };
        for o in &mut plan.outcomes {
            let mut hidden = false;
            if !o.binding.is_empty() && !readable(&o.binding) {
                o.binding = "(a node you may not read)".into();
                hidden = true;
            }
            for (key, value) in o.values.iter_mut() {
                if !readable(read_uri(key)) {
                    *value = json!("(hidden: you may not read this node)");
                    hidden = true;
                }
            }
            let targets = o.actions.iter().filter_map(epoch::Planned::target).chain(match &o.why_not {
                Some(crate::decide::NotFired::WriteConflict { node, .. }) => Some(node.as_str()),
                _ => None,
            });
            hidden |= targets.into_iter().any(|t| !readable(t));
            if hidden {
                o.condition = None;
                o.counters_before = Counters::default();
                o.counters = Counters::default();
                o.would_fire = false;
                o.why_not = Some(crate::decide::NotFired::Hidden);
                o.actions.clear();
            }
        }
    }

    pub async fn firings(&self, name: &str) -> Result<i64, Error> {
        Ok(self.store.firings(name).await?)
    }
}

/// The node a recorded read was of: `./a/b`, `avg(./a/b, 300s)` or `age(./a/b)`.
fn read_uri(key: &str) -> &str {
    match key.split_once('(') {
        Some((_, rest)) => rest.split([',', ')']).next().unwrap_or(rest),
        None => key,
    }
}
