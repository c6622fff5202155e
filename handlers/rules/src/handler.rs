//! `./rules`: each rule is a node written as one JSON value (its definition)
//! and read as an interior node with its definition, owner, state,
//! monitoring and the `explain` exec.

use std::sync::Arc;

use async_trait::async_trait;
use dmtree_core::{
    ChangeSink, DataHandler, DmtError, Format, Meta, NewNode, Node, NodeKind, OpContext, Operation, Result, Uri, Value,
    json_children, json_node,
};
use serde_json::{Value as Json, json};

use crate::engine::Engine;
use crate::rule::RuleSpec;

pub struct RulesHandler {
    engine: Arc<Engine>,
}

const RULE_CHILDREN: &[&str] = &["definition", "owner", "status", "error", "monitoring", "explain"];

impl RulesHandler {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// The whole readable state of one rule, as JSON (leaves are served from it).
    fn rule_json(&self, name: &str) -> Option<Json> {
        self.engine.with_rule(name, |l| {
            let status = if l.suspended.is_some() {
                "suspended"
            } else if !l.rule.spec.enabled {
                "disabled"
            } else {
                "ok"
            };
            json!({
                "definition": serde_json::to_value(&l.rule.spec).unwrap_or(Json::Null),
                "owner": l.rule.owner,
                "status": status,
                "error": l.suspended.clone().or_else(|| l.stats.last_error.clone()).unwrap_or_default(),
                "monitoring": {
                    "evaluations": l.stats.evaluations,
                    "firings": l.stats.firings,
                    "errors": l.stats.errors,
                    "blocked": l.stats.blocked,
                    "last_evaluation": l.stats.last_evaluation,
                    "last_firing": l.stats.last_firing,
                    "last_elapsed_us": l.stats.last_elapsed_us,
                },
            })
        })
    }

    fn monitoring(&self) -> Json {
        let e = self.engine.epoch_stats();
        json!({
            "epoch_ms": self.engine.settings().epoch.as_millis() as u64,
            "epochs": e.epochs,
            "last_epoch": e.last_epoch,
            "last_duration_ms": e.last_duration_ms,
            "overruns": e.overruns,
            "skipped": e.skipped,
            "redone": e.redone,
            "member": e.placement.as_ref().map(|p| p.member.clone()),
            "coordinator": e.placement.as_ref().map(|p| p.coordinator),
            "rules": self.engine.names().len(),
        })
    }

    async fn write(&self, cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        let name = rule_name(path)?;
        let spec = spec_of(path, value)?;
        self.engine.put(&name, cx.principal, spec).await.map_err(|e| e.at(path))
    }
}

fn rule_name(path: &Uri) -> Result<String> {
    let segs: Vec<&str> = path.segments().collect();
    match segs[..] {
        [name] | [name, "definition"] if name != "monitoring" => Ok(name.to_owned()),
        _ => Err(DmtError::not_allowed(path, "write a rule as ./rules/<name> with {\"value\": {…rule…}}")),
    }
}

fn spec_of(path: &Uri, value: Value) -> Result<RuleSpec> {
    let json = match value {
        Value::Json(j) => *j,
        other => other.to_json(),
    };
    serde_json::from_value(json).map_err(|e| DmtError::invalid_rule(path, format!("the rule: {e}")))
}

fn rel(segs: &[&str]) -> Uri {
    segs.iter().fold(Uri::root(), |u, s| u.join_name(s))
}

#[async_trait]
impl DataHandler for RulesHandler {
    fn kind(&self) -> &'static str {
        "rules"
    }

    async fn get(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        let segs: Vec<&str> = path.segments().collect();
        match segs[..] {
            [] => Ok(Node::interior()),
            ["monitoring", ref rest @ ..] => json_node(self.monitoring(), &rel(rest)).map_err(|e| e.with_uri(path)),
            [name] if self.engine.with_rule(name, |_| ()).is_some() => Ok(Node::interior()),
            [name, "explain"] if self.engine.with_rule(name, |_| ()).is_some() => {
                Ok(Node::leaf(Value::string("exec: a dry run of the next epoch, binding by binding")))
            }
            [name, "definition"] => {
                let spec =
                    self.engine.with_rule(name, |l| l.rule.spec.clone()).ok_or_else(|| DmtError::not_found(path))?;
                Ok(Node::leaf(Value::Json(Box::new(serde_json::to_value(spec).unwrap_or(Json::Null)))))
            }
            [name, ref rest @ ..] => {
                let json = self.rule_json(name).ok_or_else(|| DmtError::not_found(path))?;
                json_node(json, &rel(rest)).map_err(|e| e.with_uri(path))
            }
        }
    }

    async fn children(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        let segs: Vec<&str> = path.segments().collect();
        match segs[..] {
            [] => Ok(self.engine.names().into_iter().chain(std::iter::once("monitoring".to_owned())).collect()),
            ["monitoring", ref rest @ ..] => json_children(self.monitoring(), &rel(rest)).map_err(|e| e.with_uri(path)),
            [name] if self.engine.with_rule(name, |_| ()).is_some() => {
                Ok(RULE_CHILDREN.iter().map(|s| s.to_string()).collect())
            }
            [_, "definition" | "explain"] => Ok(Vec::new()),
            [name, ref rest @ ..] => {
                let json = self.rule_json(name).ok_or_else(|| DmtError::not_found(path))?;
                json_children(json, &rel(rest)).map_err(|e| e.with_uri(path))
            }
        }
    }

    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        let segs: Vec<&str> = path.segments().collect();
        let ops = |o: &[Operation]| Meta { operations: o.to_vec(), ..Meta::read_only() };
        Ok(match segs[..] {
            [] => Meta { kind: Some(NodeKind::Interior), ..ops(&[Operation::Get, Operation::Add]) },
            ["monitoring", ..] => Meta::read_only(),
            [_] => Meta {
                kind: None,
                formats: vec![Format::Json],
                ..ops(&[Operation::Get, Operation::Add, Operation::Replace, Operation::Delete])
            },
            [_, "definition"] => Meta { formats: vec![Format::Json], ..ops(&[Operation::Get, Operation::Replace]) },
            [_, "explain"] => ops(&[Operation::Get, Operation::Exec]),
            _ => Meta::read_only(),
        })
    }

    async fn add(&self, cx: OpContext<'_>, path: &Uri, node: NewNode) -> Result<()> {
        match node {
            NewNode::Leaf(value) => self.write(cx, path, value).await,
            NewNode::Interior => {
                Err(DmtError::invalid_rule(path, "a rule is written with its definition: {\"value\": {\"when\": …}}"))
            }
        }
    }

    async fn replace(&self, cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        self.write(cx, path, value).await
    }

    async fn delete(&self, _cx: OpContext<'_>, path: &Uri) -> Result<()> {
        let segs: Vec<&str> = path.segments().collect();
        let [name] = segs[..] else {
            return Err(DmtError::not_allowed(path, "only a whole rule can be deleted"));
        };
        match self.engine.delete(name).await.map_err(|e| e.at(path))? {
            true => Ok(()),
            false => Err(DmtError::not_found(path)),
        }
    }

    async fn exec(&self, cx: OpContext<'_>, path: &Uri, _data: Option<Json>) -> Result<Json> {
        let segs: Vec<&str> = path.segments().collect();
        match segs[..] {
            [name, "explain"] => self.engine.explain(name, cx.principal).await.map_err(|e| e.at(path)),
            _ => Err(DmtError::not_allowed(path, "only ./rules/<name>/explain executes")),
        }
    }

    fn attach(&self, sink: ChangeSink) {
        self.engine.attach(sink);
    }

    fn status(&self) -> Option<Json> {
        Some(self.monitoring())
    }
}
