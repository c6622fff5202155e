//! One epoch's plan: every placed rule evaluated on every binding it holds
//! here, conflicts settled, guards checked, actions resolved. Nothing is
//! written: the engine applies a plan, explain shows one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::decide::{self, Counters, NotFired, Timing};
use crate::expr::{Binding, Env, resolve};
use crate::reader::TreeReader;
use crate::rule::{Action, Rule, Scope, SetValue};

/// Where this server stands in the manager cloud.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    pub member: String,
    /// Global rules run here.
    pub coordinator: bool,
    /// More than this server may evaluate: bindings of plain tree patterns are keyed by member.
    pub cloud: bool,
}

/// Bindings under this prefix are resources, evaluated at the member holding them.
pub const RESOURCES: &str = "./managers/resources/";

/// An action with its paths made absolute and its values computed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Planned {
    Set { uri: String, value: Json },
    Exec { uri: String, data: Option<Json> },
    Create { resource_type: String, data: Option<Json> },
    Shutdown { uri: String },
    Event { event_type: String, payload: Json },
}

impl Planned {
    fn target(&self) -> Option<&str> {
        match self {
            Planned::Set { uri, .. } | Planned::Exec { uri, .. } | Planned::Shutdown { uri } => Some(uri),
            _ => None,
        }
    }
}

/// One rule on one binding in one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub binding: String,
    /// The state key: the binding, qualified by member for plain tree patterns in a cloud.
    #[serde(skip)]
    pub key: String,
    #[serde(skip)]
    pub vars: serde_json::Map<String, Json>,
    pub values: BTreeMap<String, Json>,
    pub condition: Option<Json>,
    pub counters_before: Counters,
    pub counters: Counters,
    pub would_fire: bool,
    pub why_not: Option<NotFired>,
    pub actions: Vec<Planned>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RulePlan {
    pub rule: String,
    /// A rule-level failure (budget, pattern): the rule is suspended.
    pub error: Option<String>,
    pub outcomes: Vec<Outcome>,
    pub elapsed_us: u64,
}

/// Inputs that stay fixed for the epoch.
pub struct Epoch<'a> {
    pub number: i64,
    pub now_ms: i64,
    pub placement: &'a Placement,
    pub budget: Duration,
    /// Record values read (explain).
    pub record: bool,
}

/// What each owner reads through, with the functions bound to it.
pub struct Views {
    views: HashMap<String, (Arc<TreeReader>, Env)>,
    make: Box<dyn Fn(&str) -> Arc<TreeReader> + Send + Sync>,
}

impl Views {
    pub fn new(make: impl Fn(&str) -> Arc<TreeReader> + Send + Sync + 'static) -> Self {
        Self { views: HashMap::new(), make: Box::new(make) }
    }

    fn of(&mut self, owner: &str) -> &(Arc<TreeReader>, Env) {
        self.views.entry(owner.to_owned()).or_insert_with(|| {
            let reader = (self.make)(owner);
            let env = Env::new(reader.clone());
            (reader, env)
        })
    }
}

/// Plans an epoch for `rules` (the caller's choice of placed, enabled rules).
pub fn plan(
    e: &Epoch<'_>,
    rules: &[Arc<Rule>],
    counters: &HashMap<String, HashMap<String, Counters>>,
    views: &mut Views,
) -> Vec<RulePlan> {
    let mut plans: Vec<RulePlan> = rules.iter().map(|r| evaluate(e, r, counters.get(&r.name), views)).collect();
    let by_name: HashMap<&str, &Arc<Rule>> = rules.iter().map(|r| (r.name.as_str(), r)).collect();
    settle_groups(&mut plans, &by_name);
    resolve_actions(&mut plans, &by_name);
    settle_writes(&mut plans, &by_name);
    guard_and_compute(e, &mut plans, &by_name, views);
    plans
}

fn timing(r: &Rule) -> Timing {
    Timing {
        for_epochs: r.spec.for_epochs,
        cooldown_ms: r.cooldown.map(|d| d.as_millis() as i64),
        has_clear: r.clear_when.is_some(),
    }
}

fn evaluate(e: &Epoch<'_>, rule: &Rule, stored: Option<&HashMap<String, Counters>>, views: &mut Views) -> RulePlan {
    let started = Instant::now();
    let mut plan = RulePlan { rule: rule.name.clone(), ..RulePlan::default() };
    let (reader, env) = views.of(&rule.owner);
    reader.set_deadline(Some(started + e.budget));
    let bindings = match (rule.scope(), rule.for_each()) {
        (Scope::Global, _) => Ok(vec![Binding::global()]),
        (Scope::Local, Some(p)) => reader.expand(p).map(|b| placed(e.placement, &b)),
        (Scope::Local, None) => Err("a local rule needs for_each".into()),
    };
    let bindings = match bindings {
        Ok(b) => b,
        Err(m) => {
            plan.error = Some(m);
            return plan;
        }
    };
    for b in bindings {
        let key = state_key(e.placement, rule, &b);
        let before = stored.and_then(|s| s.get(&key)).copied().unwrap_or_default();
        reader.record(e.record);
        let mut outcome = Outcome {
            binding: b.uri.clone(),
            key,
            vars: b.vars.clone(),
            values: BTreeMap::new(),
            condition: None,
            counters_before: before,
            counters: before,
            would_fire: false,
            why_not: None,
            actions: Vec::new(),
        };
        let verdict = judge(e, rule, env, &b, before, &mut outcome);
        outcome.values = reader.record(false).into_iter().collect();
        if let Err(NotFired::Error { message }) = &verdict
            && message.contains("budget")
        {
            plan.error = Some(format!("over its budget of {} ms per epoch: {message}", e.budget.as_millis()));
            plan.outcomes.push(outcome);
            break;
        }
        outcome.would_fire = verdict.is_ok();
        outcome.why_not = verdict.err();
        plan.outcomes.push(outcome);
    }
    reader.set_deadline(None);
    plan.elapsed_us = started.elapsed().as_micros() as u64;
    plan
}

/// `where`, `when`, `clear_when` and the timing: a candidate, or why not.
fn judge(
    e: &Epoch<'_>,
    rule: &Rule,
    env: &Env,
    b: &Binding,
    before: Counters,
    out: &mut Outcome,
) -> Result<(), NotFired> {
    let err = |message: String| NotFired::Error { message };
    if let Some(filter) = &rule.filter
        && !filter.eval_bool(env, b).map_err(|m| err(format!("where: {m}")))?
    {
        return Err(NotFired::Filtered);
    }
    let cond = rule.when.eval_bool(env, b).map_err(|m| err(format!("when: {m}")))?;
    out.condition = Some(Json::Bool(cond));
    let t = timing(rule);
    let clear = match (&rule.clear_when, decide::needs_clear(before, t)) {
        (Some(c), true) => Some(c.eval_bool(env, b).map_err(|m| err(format!("clear_when: {m}")))?),
        _ => None,
    };
    let (after, verdict) = decide::step(before, t, e.number, e.now_ms, cond, clear);
    out.counters = after;
    verdict
}

/// The bindings this member evaluates: resources only where they are held.
fn placed(p: &Placement, all: &[Binding]) -> Vec<Binding> {
    all.iter()
        .filter(|b| !b.uri.starts_with(RESOURCES) || b.vars.get("manager").and_then(Json::as_str) == Some(&p.member))
        .cloned()
        .collect()
}

fn state_key(p: &Placement, rule: &Rule, b: &Binding) -> String {
    match rule.scope() {
        Scope::Global => String::new(),
        Scope::Local if p.cloud && !b.uri.starts_with(RESOURCES) => format!("{}:{}", p.member, b.uri),
        Scope::Local => b.uri.clone(),
    }
}

/// Ranks rules: higher priority first, then by name.
fn outranks(a: &Rule, b: &Rule) -> bool {
    (a.spec.priority, std::cmp::Reverse(&a.name)) > (b.spec.priority, std::cmp::Reverse(&b.name))
}

/// Within a group, only the highest-priority candidate acts on a binding.
fn settle_groups(plans: &mut [RulePlan], rules: &HashMap<&str, &Arc<Rule>>) {
    let mut best: HashMap<(String, String), String> = HashMap::new();
    for p in plans.iter() {
        let Some(group) = rules.get(p.rule.as_str()).and_then(|r| r.spec.group.clone()) else { continue };
        for o in p.outcomes.iter().filter(|o| o.would_fire) {
            let slot = best.entry((group.clone(), o.binding.clone())).or_insert_with(|| p.rule.clone());
            if outranks(rules[p.rule.as_str()], rules[slot.as_str()]) {
                *slot = p.rule.clone();
            }
        }
    }
    for p in plans.iter_mut() {
        let Some(group) = rules.get(p.rule.as_str()).and_then(|r| r.spec.group.clone()) else { continue };
        for o in p.outcomes.iter_mut().filter(|o| o.would_fire) {
            if let Some(winner) = best.get(&(group.clone(), o.binding.clone())).filter(|w| **w != p.rule) {
                block(o, NotFired::LowerPriority { winner: winner.clone() });
            }
        }
    }
}

fn block(o: &mut Outcome, why: NotFired) {
    o.would_fire = false;
    o.why_not = Some(why);
    o.actions.clear();
}

/// Makes each candidate's action paths absolute (set values come later, after `verify`).
fn resolve_actions(plans: &mut [RulePlan], rules: &HashMap<&str, &Arc<Rule>>) {
    for p in plans.iter_mut() {
        let rule = rules[p.rule.as_str()];
        for o in p.outcomes.iter_mut().filter(|o| o.would_fire) {
            let resolved: Result<Vec<Planned>, String> =
                rule.actions.iter().map(|a| place_action(a, &o.binding)).collect();
            match resolved {
                Ok(actions) => o.actions = actions,
                Err(message) => block(o, NotFired::Error { message }),
            }
        }
    }
}

fn place_action(a: &Action, binding: &str) -> Result<Planned, String> {
    let at = |p: &str| resolve(binding, p);
    Ok(match a {
        Action::Set { path, .. } => Planned::Set { uri: at(path)?, value: Json::Null },
        Action::Exec { path, data } => Planned::Exec { uri: at(path)?, data: data.clone() },
        Action::Shutdown { path } => Planned::Shutdown { uri: at(path)? },
        Action::Create { resource_type, data } => {
            Planned::Create { resource_type: resource_type.clone(), data: data.clone() }
        }
        Action::Event { kind, payload } => Planned::Event { event_type: kind.clone(), payload: payload.clone() },
    })
}

/// Two candidates that write one node: the higher priority acts, the other is blocked.
fn settle_writes(plans: &mut [RulePlan], rules: &HashMap<&str, &Arc<Rule>>) {
    let mut owner: HashMap<String, String> = HashMap::new();
    for p in plans.iter() {
        for o in p.outcomes.iter().filter(|o| o.would_fire) {
            for t in o.actions.iter().filter_map(Planned::target) {
                let slot = owner.entry(t.to_owned()).or_insert_with(|| p.rule.clone());
                if outranks(rules[p.rule.as_str()], rules[slot.as_str()]) {
                    *slot = p.rule.clone();
                }
            }
        }
    }
    for p in plans.iter_mut() {
        for o in p.outcomes.iter_mut().filter(|o| o.would_fire) {
            let lost = o
                .actions
                .iter()
                .filter_map(Planned::target)
                .find_map(|t| owner.get(t).filter(|w| **w != p.rule).map(|w| (w.clone(), t.to_owned())));
            if let Some((winner, node)) = lost {
                block(o, NotFired::WriteConflict { winner, node });
            }
        }
    }
}

/// `verify`, just before acting; then the values of computed `set`s.
fn guard_and_compute(e: &Epoch<'_>, plans: &mut [RulePlan], rules: &HashMap<&str, &Arc<Rule>>, views: &mut Views) {
    for p in plans.iter_mut() {
        let rule = rules[p.rule.as_str()];
        let (reader, env) = views.of(&rule.owner);
        for o in p.outcomes.iter_mut().filter(|o| o.would_fire) {
            reader.record(e.record);
            let b = binding_of(o);
            let verdict = check_and_fill(rule, env, &b, &mut o.actions, e.number);
            o.values.extend(reader.record(false));
            if let Err(why) = verdict {
                block(o, why);
            }
        }
    }
}

fn binding_of(o: &Outcome) -> Binding {
    if o.binding.is_empty() { Binding::global() } else { Binding::new(&o.binding, o.vars.clone()) }
}

fn check_and_fill(rule: &Rule, env: &Env, b: &Binding, actions: &mut [Planned], epoch: i64) -> Result<(), NotFired> {
    let err = |message: String| NotFired::Error { message };
    if let Some(v) = &rule.verify
        && !v.eval_bool(env, b).map_err(|m| err(format!("verify: {m}")))?
    {
        return Err(NotFired::VerifyFalse);
    }
    let vars = template_vars(rule, b, epoch);
    for (planned, spec) in actions.iter_mut().zip(&rule.actions) {
        match (planned, spec) {
            (Planned::Set { value, .. }, Action::Set { value: SetValue::Constant(c), .. }) => *value = fill(c, &vars),
            (Planned::Set { value, .. }, Action::Set { value: SetValue::Computed(x), .. }) => {
                *value = x.eval(env, b).map_err(|m| err(format!("set: {m}")))?;
            }
            (Planned::Exec { data, .. } | Planned::Create { data, .. }, _) => {
                *data = data.as_ref().map(|d| fill(d, &vars));
            }
            (Planned::Event { payload, .. }, _) => *payload = fill(payload, &vars),
            _ => {}
        }
    }
    Ok(())
}

/// The action id: what makes a firing unique, and what targets may de-duplicate by.
pub fn action_id(rule: &str, binding_key: &str, epoch: i64) -> String {
    format!("{rule}|{binding_key}|{epoch}")
}

fn template_vars(rule: &Rule, b: &Binding, epoch: i64) -> HashMap<&'static str, Json> {
    let id = b.uri.rsplit('/').next().unwrap_or_default();
    HashMap::from([
        ("$id", json!(id)),
        ("$uri", json!(b.uri)),
        ("$rule", json!(rule.name)),
        ("$epoch", json!(epoch)),
        ("$action_id", json!(action_id(&rule.name, &b.uri, epoch))),
    ])
}

/// Replaces strings that are exactly `$id`, `$uri`, `$rule`, `$epoch` or `$action_id`.
fn fill(v: &Json, vars: &HashMap<&'static str, Json>) -> Json {
    match v {
        Json::String(s) => vars.get(s.as_str()).cloned().unwrap_or_else(|| v.clone()),
        Json::Array(a) => Json::Array(a.iter().map(|x| fill(x, vars)).collect()),
        Json::Object(o) => Json::Object(o.iter().map(|(k, x)| (k.clone(), fill(x, vars))).collect()),
        other => other.clone(),
    }
}
