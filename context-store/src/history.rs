//! A leaf's recorded history: the values the tree subscriptions stored for
//! one URI, oldest first. Readable by whoever may read the leaf itself.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sqlx::Row;

use dmtree_core::{Uri, UriLimits, UriPattern};

use crate::config::Config;
use crate::store::ContextStore;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub uri: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
}

pub const MAX_POINTS: u32 = 10_000;

/// The event types the tree subscriptions record `uri` under.
pub fn types_recording(config: &Config, uri: &Uri) -> Vec<String> {
    let mut types: Vec<String> = config
        .subscriptions
        .values()
        .filter(|s| UriPattern::parse(&s.pattern, &UriLimits::default()).is_ok_and(|p| p.matches(uri)))
        .map(|s| s.kind.clone())
        .collect();
    types.sort();
    types.dedup();
    types
}

/// `[[timestamp_ms, value], …]` for the leaf `uri`, at most `limit` (newest
/// kept), from the tree's own events of the `types` that record it.
pub async fn points(store: &ContextStore, r: &Request, types: &[String]) -> Result<Vec<Json>, sqlx::Error> {
    let from = r.from.map_or(i64::MIN, |t| t.timestamp_millis());
    let to = r.to.map_or(i64::MAX, |t| t.timestamp_millis());
    let limit = r.limit.unwrap_or(1000).clamp(1, MAX_POINTS) as i64;
    // The LIKE narrows the scan (its wildcards escaped); the exact URI is checked on the payload.
    let exact = json!({ "uri": r.uri }).to_string();
    let escaped = exact.trim_matches(|c| c == '{' || c == '}').replace('!', "!!").replace('%', "!%").replace('_', "!_");
    let mut out = Vec::new();
    for kind in types {
        let rows = sqlx::query(
            "SELECT ts, payload FROM cs_events WHERE type = $1 AND ts >= $2 AND ts <= $3
             AND (sender = 'tree' OR sender LIKE 'tree:%') AND payload LIKE $4 ESCAPE '!' ORDER BY ts DESC, id DESC LIMIT $5",
        )
        .bind(kind)
        .bind(from)
        .bind(to)
        .bind(format!("%{escaped}%"))
        .bind(limit)
        .fetch_all(store.db().pool())
        .await?;
        out.extend(decode(&rows, &r.uri));
    }
    out.sort_by_key(|p| p.get(0).and_then(Json::as_i64).unwrap_or_default());
    let skip = out.len().saturating_sub(limit as usize);
    Ok(out.split_off(skip))
}

fn decode(rows: &[sqlx::any::AnyRow], uri: &str) -> Vec<Json> {
    rows.iter()
        .filter_map(|row| {
            let ts: i64 = row.try_get("ts").ok()?;
            let payload: Json = serde_json::from_str(&row.try_get::<String, _>("payload").ok()?).ok()?;
            (payload.get("uri")?.as_str()? == uri)
                .then(|| json!([ts, payload.get("value").cloned().unwrap_or(Json::Null)]))
        })
        .collect()
}
