//! `./contextstore` in the tree:
//!
//! - `config/{subscriptions,handlers,retention,propagation}/<name>`: JSON
//!   leaves, checked when written;
//! - `monitoring/...`: counters and states;
//! - `aggregates/<handler>/<key parts…>/<window start>/{count,sum,avg,min,max,window_end}`;
//! - `sla/<handler>/<key parts…>/{breach_since,violating,last_value}`;
//! - `ingest` (exec a batch of events) and `query` (exec a query).

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use dmtree_core::{
    DataHandler, DmtError, Format, Meta, NewNode, Node, NodeKind, OpContext, Operation, Permission, Principal, Result,
    Uri, Value, json_children, json_node,
};
use serde_json::{Value as Json, json};
use sqlx::Row;

use crate::access;
use crate::config::{Handler, SECTIONS};
use crate::event::parse_batch;
use crate::processor::KEY_SEP;
use crate::query::{self, QueryError};
use crate::store::{ContextStore, StoreError};

pub struct ContextStoreHandler {
    store: Arc<ContextStore>,
}

impl ContextStoreHandler {
    pub fn new(store: Arc<ContextStore>) -> Self {
        Self { store }
    }
}

fn store_err(path: &Uri, e: StoreError) -> DmtError {
    match e {
        StoreError::Invalid(reason) => DmtError::invalid_data(path, reason),
        other => DmtError::store(path, other),
    }
}

fn sql_err(path: &Uri) -> impl Fn(sqlx::Error) -> DmtError + '_ {
    move |e| DmtError::store(path, e)
}

pub(crate) fn window_name(start_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(start_ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Where a path lands.
enum Place<'a> {
    Root,
    Config(&'a [&'a str]),
    Monitoring(&'a [&'a str]),
    Exec(&'static str),
    Aggregates(&'a [&'a str]),
    Sla(&'a [&'a str]),
}

fn place<'a>(segs: &'a [&'a str]) -> Option<Place<'a>> {
    Some(match segs {
        [] => Place::Root,
        ["config", rest @ ..] => Place::Config(rest),
        ["monitoring", rest @ ..] => Place::Monitoring(rest),
        ["ingest"] => Place::Exec("ingest"),
        ["query"] => Place::Exec("query"),
        ["history"] => Place::Exec("history"),
        ["aggregates", rest @ ..] => Place::Aggregates(rest),
        ["sla", rest @ ..] => Place::Sla(rest),
        _ => return None,
    })
}

/// A read answer: a node, and its children if interior.
struct Answer {
    node: Node,
    children: Vec<String>,
}

impl Answer {
    fn interior(children: Vec<String>) -> Self {
        Answer { node: Node::interior(), children }
    }
    fn leaf(value: Value) -> Self {
        Answer { node: Node::leaf(value), children: Vec::new() }
    }
}

impl ContextStoreHandler {
    async fn answer(&self, principal: &Principal, path: &Uri) -> Result<Answer> {
        let segs: Vec<&str> = path.segments().collect();
        let not_found = || DmtError::not_found(path);
        match place(&segs).ok_or_else(not_found)? {
            Place::Root => Ok(Answer::interior(
                ["aggregates", "config", "history", "ingest", "monitoring", "query", "sla"].map(String::from).to_vec(),
            )),
            Place::Config([section, name]) => {
                let body = self.store.config_json()[*section][*name].clone();
                if body.is_null() {
                    return Err(not_found());
                }
                Ok(Answer::leaf(Value::Json(Box::new(body))))
            }
            Place::Config(rest) if rest.len() < 2 => {
                let config = self.store.config_json();
                let rel = Uri::from_key(rest.join("\0"));
                Ok(Answer { node: json_node(config.clone(), &rel)?, children: json_children(config, &rel)? })
            }
            Place::Config(_) => Err(not_found()),
            Place::Monitoring(rest) => {
                let m = self.store.monitoring();
                let rel = Uri::from_key(rest.join("\0"));
                Ok(Answer { node: json_node(m.clone(), &rel)?, children: json_children(m, &rel)? })
            }
            Place::Exec(which) => Ok(Answer::leaf(Value::string(match which {
                "ingest" => "exec with a batch of events: [{sender, type, payload, id?, timestamp?}]",
                "history" => "exec with {uri, from?, to?, limit?}: the leaf's recorded values",
                _ => "exec with {type, from?, to?, sender?, limit?, cursor?}",
            }))),
            Place::Aggregates(rest) => self.aggregates(principal, path, rest).await,
            Place::Sla(rest) => self.sla(principal, path, rest).await,
        }
    }

    /// The aggregate (or threshold) handlers whose outputs `principal` may
    /// read, with their keys; the others are as absent (see `access`).
    fn handlers_of(&self, principal: &Principal, aggregate: bool) -> Vec<(String, Vec<String>)> {
        let Some(tree) = self.store.tree() else { return Vec::new() };
        let config = self.store.config();
        let readable = |h: &Handler| access::handler_rule(&config, &tree, h).permits(principal);
        config
            .handlers
            .iter()
            .filter(|(_, h)| readable(h))
            .filter_map(|(name, h)| match h {
                Handler::Aggregate { keys, .. } if aggregate => Some((name.clone(), keys.clone())),
                Handler::Threshold { keys, .. } if !aggregate => Some((name.clone(), keys.clone())),
                _ => None,
            })
            .collect()
    }

    /// Key parts below `prefix` (the distinct next parts), or `None` if no key has that prefix.
    async fn next_parts(&self, path: &Uri, table: &str, handler: &str, prefix: &[&str]) -> Result<Option<Vec<String>>> {
        let rows = sqlx::query(&format!("SELECT DISTINCT key FROM {table} WHERE handler = $1"))
            .bind(handler)
            .fetch_all(self.store.db().pool())
            .await
            .map_err(sql_err(path))?;
        let mut next = BTreeSet::new();
        for r in rows {
            let key: String = r.get("key");
            let parts: Vec<&str> = key.split(KEY_SEP).collect();
            if parts.len() > prefix.len() && parts[..prefix.len()] == *prefix {
                next.insert(parts[prefix.len()].to_owned());
            }
        }
        Ok((!next.is_empty()).then(|| next.into_iter().collect()))
    }

    async fn aggregates(&self, principal: &Principal, path: &Uri, rest: &[&str]) -> Result<Answer> {
        let handlers = self.handlers_of(principal, true);
        let Some((name, tail)) = rest.split_first() else {
            return Ok(Answer::interior(handlers.into_iter().map(|(n, _)| n).collect()));
        };
        let keys =
            handlers.iter().find(|(n, _)| n == name).map(|(_, k)| k.len()).ok_or_else(|| DmtError::not_found(path))?;
        let pool = self.store.db().pool();
        if tail.len() < keys {
            let parts =
                self.next_parts(path, "cs_aggregates", name, tail).await?.ok_or_else(|| DmtError::not_found(path))?;
            return Ok(Answer::interior(parts));
        }
        let key = tail[..keys].join(&KEY_SEP.to_string());
        if tail.len() == keys {
            let rows = sqlx::query(
                "SELECT window_start FROM cs_aggregates WHERE handler = $1 AND key = $2 ORDER BY window_start",
            )
            .bind(name)
            .bind(&key)
            .fetch_all(pool)
            .await
            .map_err(sql_err(path))?;
            if rows.is_empty() {
                return Err(DmtError::not_found(path));
            }
            return Ok(Answer::interior(rows.iter().map(|r| window_name(r.get("window_start"))).collect()));
        }
        let start = DateTime::parse_from_rfc3339(tail[keys]).map_err(|_| DmtError::not_found(path))?.timestamp_millis();
        let row = sqlx::query(
            "SELECT count, sum, min, max FROM cs_aggregates WHERE handler = $1 AND key = $2 AND window_start = $3",
        )
        .bind(name)
        .bind(&key)
        .bind(start)
        .fetch_optional(pool)
        .await
        .map_err(sql_err(path))?
        .ok_or_else(|| DmtError::not_found(path))?;
        let window_ms = match self.store.config().handlers.get(*name) {
            Some(Handler::Aggregate { window_s, .. }) => (*window_s * 1000) as i64,
            _ => 0,
        };
        let (count, sum): (i64, f64) = (row.get("count"), row.get("sum"));
        let end = DateTime::<Utc>::from_timestamp_millis(start + window_ms).unwrap_or_default();
        let fields = [
            ("avg", Value::Float(sum / count as f64)),
            ("count", Value::Int(count)),
            ("max", Value::Float(row.get("max"))),
            ("min", Value::Float(row.get("min"))),
            ("sum", Value::Float(sum)),
            ("window_end", Value::Datetime(end)),
        ];
        match &tail[keys + 1..] {
            [] => Ok(Answer::interior(fields.iter().map(|(n, _)| n.to_string()).collect())),
            [field] => fields
                .into_iter()
                .find(|(n, _)| n == field)
                .map(|(_, v)| Answer::leaf(v))
                .ok_or_else(|| DmtError::not_found(path)),
            _ => Err(DmtError::not_found(path)),
        }
    }

    async fn sla(&self, principal: &Principal, path: &Uri, rest: &[&str]) -> Result<Answer> {
        let handlers = self.handlers_of(principal, false);
        let Some((name, tail)) = rest.split_first() else {
            return Ok(Answer::interior(handlers.into_iter().map(|(n, _)| n).collect()));
        };
        let keys =
            handlers.iter().find(|(n, _)| n == name).map(|(_, k)| k.len()).ok_or_else(|| DmtError::not_found(path))?;
        if tail.len() < keys {
            let parts = self.next_parts(path, "cs_sla", name, tail).await?.ok_or_else(|| DmtError::not_found(path))?;
            return Ok(Answer::interior(parts));
        }
        let row = sqlx::query("SELECT breach_since, violating, last_value FROM cs_sla WHERE handler = $1 AND key = $2")
            .bind(name)
            .bind(tail[..keys].join(&KEY_SEP.to_string()))
            .fetch_optional(self.store.db().pool())
            .await
            .map_err(sql_err(path))?
            .ok_or_else(|| DmtError::not_found(path))?;
        let since: Option<i64> = row.get("breach_since");
        let last: Option<f64> = row.get("last_value");
        let fields = [
            ("breach_since", since.and_then(DateTime::from_timestamp_millis).map_or(Value::Null, Value::Datetime)),
            ("last_value", last.map_or(Value::Null, Value::Float)),
            ("violating", Value::Bool(row.get::<i64, _>("violating") != 0)),
        ];
        match &tail[keys..] {
            [] => Ok(Answer::interior(fields.iter().map(|(n, _)| n.to_string()).collect())),
            [field] => fields
                .into_iter()
                .find(|(n, _)| n == field)
                .map(|(_, v)| Answer::leaf(v))
                .ok_or_else(|| DmtError::not_found(path)),
            _ => Err(DmtError::not_found(path)),
        }
    }

    /// `config/<section>/<name>`, or `None` for any other path.
    fn entry(path: &Uri) -> Option<(&str, &str)> {
        let segs: Vec<&str> = path.segments().collect();
        match segs.as_slice() {
            ["config", section, name] if SECTIONS.contains(section) => Some((section, name)),
            _ => None,
        }
    }

    async fn write_entry(&self, path: &Uri, value: &Value) -> Result<()> {
        let (section, name) = Self::entry(path)
            .ok_or_else(|| DmtError::not_allowed(path, "only config/<section>/<name> entries are written"))?;
        let Value::Json(body) = value else {
            return Err(DmtError::invalid_data(path, "a configuration entry is a JSON object (format json)"));
        };
        self.store.set_config(section, name, body).await.map_err(|e| store_err(path, e))
    }
}

#[async_trait]
impl DataHandler for ContextStoreHandler {
    fn kind(&self) -> &'static str {
        "context-store"
    }

    async fn get(&self, cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        Ok(self.answer(cx.principal, path).await?.node)
    }

    async fn children(&self, cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        Ok(self.answer(cx.principal, path).await?.children)
    }

    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        let segs: Vec<&str> = path.segments().collect();
        Ok(match segs.as_slice() {
            ["config", section, _] if SECTIONS.contains(section) => Meta {
                kind: Some(NodeKind::Leaf),
                formats: vec![Format::Json],
                ..Meta::permissive().with_operations(&[
                    Operation::Get,
                    Operation::Add,
                    Operation::Replace,
                    Operation::Delete,
                ])
            },
            ["ingest"] | ["query"] | ["history"] => {
                Meta::read_only().with_operations(&[Operation::Get, Operation::Exec])
            }
            _ => Meta::read_only(),
        })
    }

    async fn add(&self, _cx: OpContext<'_>, path: &Uri, node: NewNode) -> Result<()> {
        if self.get(_cx, path).await.is_ok() {
            return Err(DmtError::exists(path));
        }
        match node {
            NewNode::Leaf(value) => self.write_entry(path, &value).await,
            NewNode::Interior => Err(DmtError::not_allowed(path, "configuration entries are JSON leaves")),
        }
    }

    async fn replace(&self, _cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        self.write_entry(path, &value).await
    }

    async fn delete(&self, _cx: OpContext<'_>, path: &Uri) -> Result<()> {
        let (section, name) =
            Self::entry(path).ok_or_else(|| DmtError::not_allowed(path, "only configuration entries are deleted"))?;
        match self.store.remove_config(section, name).await.map_err(|e| store_err(path, e))? {
            true => Ok(()),
            false => Err(DmtError::not_found(path)),
        }
    }

    async fn exec(&self, cx: OpContext<'_>, path: &Uri, data: Option<Json>) -> Result<Json> {
        let data = data.ok_or_else(|| DmtError::invalid_data(path, "exec needs JSON data"))?;
        match path.key() {
            "ingest" => {
                let events = parse_batch(&data).map_err(|e| DmtError::invalid_data(path, e))?;
                // What the server itself records (tree changes, rule audits) cannot be forged.
                if !cx.principal.is_admin()
                    && let Some(e) = events.iter().find(|e| crate::access::reserved(&e.sender, &e.kind))
                {
                    return Err(DmtError::not_granted(
                        path,
                        format!("sender {:?} with type {:?} is reserved to the server", e.sender, e.kind),
                    ));
                }
                let report = self.store.ingest(events).await.map_err(|e| store_err(path, e))?;
                Ok(json!({ "stored": report.stored, "duplicates": report.duplicates }))
            }
            "query" => {
                let q: query::Query = serde_json::from_value(data)
                    .map_err(|e| DmtError::invalid_data(path, format!("invalid query: {e}")))?;
                let tree = self.store.tree().ok_or_else(|| DmtError::store(path, "the tree has shut down"))?;
                if !access::type_rule(&self.store.config(), &tree, &q.kind).permits(cx.principal) {
                    return Err(DmtError::denied(path, cx.principal, Permission::Get));
                }
                let page = query::run(&self.store, q).await.map_err(|e| match e {
                    QueryError::Sql(e) => DmtError::store(path, e),
                    other => DmtError::invalid_data(path, other.to_string()),
                })?;
                Ok(json!({ "events": page.events, "cursor": page.cursor }))
            }
            "history" => {
                let r: crate::history::Request = serde_json::from_value(data)
                    .map_err(|e| DmtError::invalid_data(path, format!("invalid history request: {e}")))?;
                let tree = self.store.tree().ok_or_else(|| DmtError::store(path, "the tree has shut down"))?;
                let uri = Uri::parse(&r.uri, tree.limits()).map_err(|e| DmtError::invalid_data(path, e.to_string()))?;
                // A leaf's past is as private as the leaf, and goes with it: once
                // deleted, its history is no longer anyone's to read here.
                if !tree.effective_acl(&uri).permits(cx.principal, Permission::Get) {
                    return Err(DmtError::denied(&uri, cx.principal, Permission::Get));
                }
                let caller = dmtree_core::Caller::new(cx.principal);
                if tree.read(&caller, &uri, 0).await.is_err() {
                    return Err(DmtError::not_found(&uri));
                }
                let types = crate::history::types_recording(&self.store.config(), &uri);
                let points =
                    crate::history::points(&self.store, &r, &types).await.map_err(|e| DmtError::store(path, e))?;
                Ok(json!({ "uri": r.uri, "points": points }))
            }
            _ => Err(DmtError::not_allowed(path, "only ingest, query and history execute")),
        }
    }
}
