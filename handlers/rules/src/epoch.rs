//! One epoch's plan: every placed rule evaluated on every binding it holds
//! here, conflicts settled, guards checked, actions resolved. Nothing is
//! written: the engine applies a plan, explain shows one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::decide::{self, Counters, NotFired, Timing};
use crate::expr::{Binding, Env, Scope as BindingScope, resolve};
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
    /// The node the action writes or executes, if any.
    pub fn target(&self) -> Option<&str> {
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
    /// The outcomes that matter: candidates, blocks, errors, changed
    /// counters (all of them while explaining).
    pub outcomes: Vec<Outcome>,
    /// Bindings evaluated, kept or not.
    pub evaluated: u64,
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

/// Makes the reader of one owner.
type MakeReader = Box<dyn Fn(&str) -> Arc<TreeReader> + Send + Sync>;

/// What each owner reads through, with the functions bound to it.
pub struct Views {
    views: HashMap<String, (Arc<TreeReader>, Env)>,
    make: MakeReader,
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
    let mut plans: Vec<RulePlan> =
        rules.iter().map(|r| RulePlan { rule: r.name.clone(), ..RulePlan::default() }).collect();
    // Rules of one owner over one pattern share each binding's reads and variables.
    let mut groups: BTreeMap<(&str, Option<&str>), Vec<usize>> = BTreeMap::new();
    for (i, r) in rules.iter().enumerate() {
        let pattern = if r.scope() == Scope::Global { None } else { r.for_each() };
        groups.entry((r.owner.as_str(), pattern)).or_default().push(i);
    }
    for ((owner, pattern), members) in groups {
        // A bug in one group's evaluation suspends those rules, not the epoch.
        let run =
            std::panic::AssertUnwindSafe(|| evaluate(e, owner, pattern, rules, &members, counters, views, &mut plans));
        if std::panic::catch_unwind(run).is_err() {
            for &i in &members {
                plans[i].error = Some("the evaluation failed inside dmtree (a bug); the rule is suspended".into());
                plans[i].outcomes.clear();
            }
        }
    }
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

/// Evaluates the rules `members` (indices into `rules`), which share an owner
/// and a pattern, binding by binding; each rule keeps to its own budget.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    e: &Epoch<'_>,
    owner: &str,
    pattern: Option<&str>,
    rules: &[Arc<Rule>],
    members: &[usize],
    counters: &HashMap<String, HashMap<String, Counters>>,
    views: &mut Views,
    plans: &mut [RulePlan],
) {
    let (reader, env) = views.of(owner);
    let bindings = match pattern {
        None => Ok(vec![Binding::global()]),
        Some(p) => reader.expand(p).map(|b| placed(e.placement, &b)),
    };
    let bindings = match bindings {
        Ok(b) => b,
        Err(m) => {
            members.iter().for_each(|&i| plans[i].error = Some(m.clone()));
            return;
        }
    };
    let mut spent = vec![Duration::ZERO; members.len()];
    for b in &bindings {
        let scope = env.scope(b);
        for (k, &i) in members.iter().enumerate() {
            if plans[i].error.is_some() {
                continue;
            }
            let rule = &rules[i];
            let started = Instant::now();
            reader.set_deadline(Some(started + e.budget.saturating_sub(spent[k])));
            if e.record {
                reader.record(true);
            }
            let key = state_key(e.placement, rule, b);
            let before = counters.get(&rule.name).and_then(|s| s.get(key.as_ref())).copied().unwrap_or_default();
            let mut judged = Judged { condition: None, counters: before };
            let verdict = judge(e, rule, &scope, before, &mut judged);
            spent[k] += started.elapsed();
            let plan = &mut plans[i];
            plan.evaluated += 1;
            if let Err(NotFired::Error { message }) = &verdict
                && message.contains("budget")
            {
                plan.error = Some(format!("over its budget of {} ms per epoch: {message}", e.budget.as_millis()));
            } else if spent[k] > e.budget {
                plan.error = Some(format!("over its budget of {} ms per epoch", e.budget.as_millis()));
            }
            // Most bindings are "false, as before": counted, not kept.
            let moved = Counters { last_epoch: before.last_epoch, ..judged.counters } != before;
            let notable = verdict.as_ref().err().is_none_or(NotFired::is_block);
            if !(e.record || moved || notable) {
                continue;
            }
            plan.outcomes.push(Outcome {
                binding: b.uri.clone(),
                key: key.into_owned(),
                // Only candidates are evaluated again (verify, computed values).
                vars: if verdict.is_ok() { b.vars.clone() } else { serde_json::Map::new() },
                values: if e.record { reader.record(false).into_iter().collect() } else { BTreeMap::new() },
                condition: judged.condition,
                counters_before: before,
                counters: judged.counters,
                would_fire: verdict.is_ok(),
                why_not: verdict.err(),
                actions: Vec::new(),
            });
        }
    }
    reader.set_deadline(None);
    for (k, &i) in members.iter().enumerate() {
        plans[i].elapsed_us = spent[k].as_micros() as u64;
    }
}

/// What evaluating one rule on one binding found.
struct Judged {
    condition: Option<Json>,
    counters: Counters,
}

/// `where`, `when`, `clear_when` and the timing: a candidate, or why not.
fn judge(
    e: &Epoch<'_>,
    rule: &Rule,
    scope: &BindingScope<'_>,
    before: Counters,
    out: &mut Judged,
) -> Result<(), NotFired> {
    let err = |message: String| NotFired::Error { message };
    if let Some(filter) = &rule.filter
        && !filter.eval_bool(scope).map_err(|m| err(format!("where: {m}")))?
    {
        return Err(NotFired::Filtered);
    }
    let cond = rule.when.eval_bool(scope).map_err(|m| err(format!("when: {m}")))?;
    out.condition = Some(Json::Bool(cond));
    let t = timing(rule);
    let clear = match (&rule.clear_when, decide::needs_clear(before, t)) {
        (Some(c), true) => Some(c.eval_bool(scope).map_err(|m| err(format!("clear_when: {m}")))?),
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

fn state_key<'a>(p: &Placement, rule: &Rule, b: &'a Binding) -> Cow<'a, str> {
    match rule.scope() {
        Scope::Global => Cow::Borrowed(""),
        Scope::Local if p.cloud && !b.uri.starts_with(RESOURCES) => Cow::Owned(format!("{}:{}", p.member, b.uri)),
        Scope::Local => Cow::Borrowed(&b.uri),
    }
}

/// Ranks rules: higher priority first, then by name.
fn outranks(a: &Rule, b: &Rule) -> bool {
    (a.spec.priority, std::cmp::Reverse(&a.name)) > (b.spec.priority, std::cmp::Reverse(&b.name))
}

/// Within a group, only the highest-priority candidate acts on a binding.
/// Groups belong to an owner: another principal's rules can neither block
/// these nor learn, by being blocked, whether they would fire.
fn settle_groups(plans: &mut [RulePlan], rules: &HashMap<&str, &Arc<Rule>>) {
    let mut best: HashMap<(String, String, String), String> = HashMap::new();
    for p in plans.iter() {
        let rule = rules[p.rule.as_str()];
        let Some(group) = rule.spec.group.clone() else { continue };
        for o in p.outcomes.iter().filter(|o| o.would_fire) {
            let slot =
                best.entry((rule.owner.clone(), group.clone(), o.binding.clone())).or_insert_with(|| p.rule.clone());
            if outranks(rule, rules[slot.as_str()]) {
                *slot = p.rule.clone();
            }
        }
    }
    for p in plans.iter_mut() {
        let rule = rules[p.rule.as_str()];
        let Some(group) = rule.spec.group.clone() else { continue };
        for o in p.outcomes.iter_mut().filter(|o| o.would_fire) {
            let key = (rule.owner.clone(), group.clone(), o.binding.clone());
            if let Some(winner) = best.get(&key).filter(|w| **w != p.rule) {
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

/// Two candidates of one owner that write one node: the higher priority
/// acts, the other is blocked. Across owners the tree's ACLs decide.
fn settle_writes(plans: &mut [RulePlan], rules: &HashMap<&str, &Arc<Rule>>) {
    let mut owner: HashMap<(String, String), String> = HashMap::new();
    for p in plans.iter() {
        let rule = rules[p.rule.as_str()];
        for o in p.outcomes.iter().filter(|o| o.would_fire) {
            for t in o.actions.iter().filter_map(Planned::target) {
                let slot = owner.entry((rule.owner.clone(), t.to_owned())).or_insert_with(|| p.rule.clone());
                if outranks(rule, rules[slot.as_str()]) {
                    *slot = p.rule.clone();
                }
            }
        }
    }
    for p in plans.iter_mut() {
        let who = rules[p.rule.as_str()].owner.clone();
        for o in p.outcomes.iter_mut().filter(|o| o.would_fire) {
            let lost = o.actions.iter().filter_map(Planned::target).find_map(|t| {
                owner.get(&(who.clone(), t.to_owned())).filter(|w| **w != p.rule).map(|w| (w.clone(), t.to_owned()))
            });
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
            let scope = env.scope(&b);
            let verdict = check_and_fill(rule, &scope, &b, &mut o.actions, e.number);
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

fn check_and_fill(
    rule: &Rule,
    scope: &BindingScope<'_>,
    b: &Binding,
    actions: &mut [Planned],
    epoch: i64,
) -> Result<(), NotFired> {
    let err = |message: String| NotFired::Error { message };
    if let Some(v) = &rule.verify
        && !v.eval_bool(scope).map_err(|m| err(format!("verify: {m}")))?
    {
        return Err(NotFired::VerifyFalse);
    }
    let vars = template_vars(rule, b, epoch);
    for (planned, spec) in actions.iter_mut().zip(&rule.actions) {
        match (planned, spec) {
            (Planned::Set { value, .. }, Action::Set { value: SetValue::Constant(c), .. }) => *value = fill(c, &vars),
            (Planned::Set { value, .. }, Action::Set { value: SetValue::Computed(x), .. }) => {
                *value = x.eval(scope).map_err(|m| err(format!("set: {m}")))?;
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

#[cfg(test)]
mod tests {
    use dmtree_core::{Acl, Caller, Content, MemoryHandler, MemoryTreeStore, Tree, TreeConfig, Uri, Value, Write};
    use serde_json::json;

    use super::*;
    use crate::rule::RuleSpec;

    /// A tree with `./t/n0 … n{count-1}`, each with a `load` leaf.
    fn tree(rt: &tokio::runtime::Runtime, count: usize) -> Arc<Tree> {
        rt.block_on(async {
            let tree = Tree::open(TreeConfig::default(), Arc::new(MemoryTreeStore::default()), Acl::default_root())
                .await
                .unwrap();
            tree.mount("t", Uri::from_key("t"), Arc::new(MemoryHandler::default())).unwrap();
            let admin = dmtree_core::Principal::named("admin");
            for i in 0..count {
                let write = Write { content: Some(Content::Leaf(Value::Int(i as i64))), ..Write::default() };
                tree.put(&Caller::new(&admin), &Uri::from_key(format!("t\0n{i}\0load")), write).await.unwrap();
            }
            tree
        })
    }

    fn rule(name: &str, spec: serde_json::Value) -> Arc<Rule> {
        Arc::new(Rule::compile(name, "admin", serde_json::from_value::<RuleSpec>(spec).unwrap()).unwrap())
    }

    fn run(rt: &tokio::runtime::Runtime, tree: &Arc<Tree>, rules: &[Arc<Rule>], budget: Duration) -> Vec<RulePlan> {
        let (tree, handle) = (tree.clone(), rt.handle().clone());
        let mut views = Views::new(move |owner| {
            Arc::new(TreeReader::new(tree.clone(), dmtree_core::Principal::named(owner), handle.clone(), 0))
        });
        let placement = Placement { member: "local".into(), coordinator: true, cloud: false };
        let e = Epoch { number: 1, now_ms: 0, placement: &placement, budget, record: false };
        plan(&e, rules, &HashMap::new(), &mut views)
    }

    #[test]
    fn a_rule_over_its_budget_is_stopped_and_named_the_others_go_on() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let tree = tree(&rt, 200);
        // Each evaluation walks every binding again: quadratic, far over a millisecond.
        let heavy = rule("heavy", json!({"for_each": "./t/*", "when": "all('./t/*', value('load') >= 0)"}));
        let light = rule("light", json!({"scope": "global", "when": "value('./t/n1/load') == 1"}));
        let plans = run(&rt, &tree, &[heavy, light], Duration::from_millis(1));
        let heavy = plans.iter().find(|p| p.rule == "heavy").unwrap();
        assert!(heavy.error.as_deref().is_some_and(|e| e.contains("over its budget of 1 ms")), "{:?}", heavy.error);
        assert!(heavy.evaluated < 200, "stopped early: {}", heavy.evaluated);
        let light = plans.iter().find(|p| p.rule == "light").unwrap();
        assert_eq!(light.error, None);
        assert!(light.outcomes[0].would_fire);
    }

    #[test]
    fn quiet_bindings_are_counted_not_kept() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let tree = tree(&rt, 50);
        let r = rule("r", json!({"for_each": "./t/*", "when": "value('load') >= 45"}));
        let plans = run(&rt, &tree, &[r], Duration::from_secs(10));
        assert_eq!(plans[0].evaluated, 50);
        let firing: Vec<&str> = plans[0].outcomes.iter().filter(|o| o.would_fire).map(|o| o.binding.as_str()).collect();
        assert_eq!(firing, ["./t/n45", "./t/n46", "./t/n47", "./t/n48", "./t/n49"]);
        assert_eq!(plans[0].outcomes.len(), 5);
    }
}
