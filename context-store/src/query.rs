//! Queries: events of one type in a time range, optionally from one sender,
//! in (timestamp, id) order, a page at a time with an opaque cursor.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value as Json;
use sqlx::Row;

use crate::event::ContextEvent;
use crate::store::ContextStore;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    #[serde(rename = "type")]
    pub kind: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub sender: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error("no event of type {0:?} was ever stored")]
    UnknownType(String),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
}

pub const MAX_LIMIT: u32 = 10_000;

pub struct Page {
    pub events: Vec<ContextEvent>,
    /// Pass it back to continue; `None` when there is nothing more.
    pub cursor: Option<String>,
}

pub async fn run(store: &ContextStore, q: Query) -> Result<Page, QueryError> {
    let (from, to) =
        (q.from.map_or(i64::MIN, |t| t.timestamp_millis()), q.to.map_or(i64::MAX, |t| t.timestamp_millis()));
    if from > to {
        return Err(QueryError::Invalid("the time range is reversed (from is after to)".into()));
    }
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(QueryError::Invalid(format!("limit must be 1-{MAX_LIMIT}")));
    }
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let pool = store.db().pool();
    let known = sqlx::query("SELECT type FROM cs_types WHERE type = $1").bind(&q.kind).fetch_optional(pool).await?;
    if known.is_none() {
        return Err(QueryError::UnknownType(q.kind));
    }
    let mut sql =
        String::from("SELECT id, ts, sender, type, payload FROM cs_events WHERE type = $1 AND ts >= $2 AND ts <= $3");
    let mut n = 3;
    if q.sender.is_some() {
        n += 1;
        sql.push_str(&format!(" AND sender = ${n}"));
    }
    if after.is_some() {
        sql.push_str(&format!(" AND (ts > ${} OR (ts = ${} AND id > ${}))", n + 1, n + 1, n + 2));
        n += 2;
    }
    sql.push_str(&format!(" ORDER BY ts, id LIMIT ${}", n + 1));
    let mut query = sqlx::query(&sql).bind(&q.kind).bind(from).bind(to);
    if let Some(s) = &q.sender {
        query = query.bind(s);
    }
    if let Some((ts, id)) = &after {
        query = query.bind(*ts).bind(id);
    }
    let rows = query.bind(limit as i64 + 1).fetch_all(pool).await?;
    let more = rows.len() > limit as usize;
    let events: Vec<ContextEvent> = rows.iter().take(limit as usize).filter_map(|r| decode(r).ok()).collect();
    let cursor = more.then(|| events.last().map(|e| format!("{}:{}", e.timestamp.timestamp_millis(), e.id))).flatten();
    Ok(Page { events, cursor })
}

fn parse_cursor(c: &str) -> Result<(i64, String), QueryError> {
    let bad = || QueryError::Invalid(format!("invalid cursor {c:?}"));
    let (ts, id) = c.split_once(':').ok_or_else(bad)?;
    let id: uuid::Uuid = id.parse().map_err(|_| bad())?;
    Ok((ts.parse().map_err(|_| bad())?, id.to_string()))
}

fn decode(r: &sqlx::any::AnyRow) -> Result<ContextEvent, String> {
    Ok(ContextEvent {
        id: r.get::<String, _>("id").parse().map_err(|e: uuid::Error| e.to_string())?,
        timestamp: DateTime::from_timestamp_millis(r.get("ts")).ok_or("bad timestamp")?,
        sender: r.get("sender"),
        kind: r.get("type"),
        payload: serde_json::from_str::<Json>(&r.get::<String, _>("payload")).map_err(|e| e.to_string())?,
    })
}
