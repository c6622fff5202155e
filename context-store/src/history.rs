//! A leaf's recorded history: the values the tree subscriptions stored for
//! one URI, oldest first. Readable by whoever may read the leaf itself.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sqlx::Row;

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

/// `[[timestamp_ms, value], …]` for the leaf `uri`, at most `limit` (newest kept).
pub async fn points(store: &ContextStore, r: &Request) -> Result<Vec<Json>, sqlx::Error> {
    let from = r.from.map_or(i64::MIN, |t| t.timestamp_millis());
    let to = r.to.map_or(i64::MAX, |t| t.timestamp_millis());
    let limit = r.limit.unwrap_or(1000).clamp(1, MAX_POINTS) as i64;
    // The LIKE narrows the scan; the exact URI is checked on the decoded payload.
    let needle = format!("%{}%", json!({ "uri": r.uri }).to_string().trim_matches(|c| c == '{' || c == '}'));
    let rows = sqlx::query(
        "SELECT ts, payload FROM cs_events WHERE ts >= $1 AND ts <= $2 AND (sender = 'tree' OR sender LIKE 'tree:%')
         AND payload LIKE $3 ORDER BY ts DESC, id DESC LIMIT $4",
    )
    .bind(from)
    .bind(to)
    .bind(needle)
    .bind(limit)
    .fetch_all(store.db().pool())
    .await?;
    let mut out: Vec<Json> = rows
        .iter()
        .filter_map(|row| {
            let ts: i64 = row.try_get("ts").ok()?;
            let payload: Json = serde_json::from_str(&row.try_get::<String, _>("payload").ok()?).ok()?;
            (payload.get("uri")?.as_str()? == r.uri)
                .then(|| json!([ts, payload.get("value").cloned().unwrap_or(Json::Null)]))
        })
        .collect();
    out.reverse();
    Ok(out)
}
