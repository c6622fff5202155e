//! Context handlers: processors that take the events of an ingest batch,
//! update their state and emit derived events, all inside the batch's
//! transaction. Their state therefore commits with the events it counts: a
//! crash can neither lose a counted event nor count one twice.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use sqlx::{AnyConnection, Row};

use crate::config::{Handler, Op};
use crate::db::Backend;
use crate::event::{ContextEvent, derived_id};

/// What processing a batch produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub derived: Vec<ContextEvent>,
    /// Events that arrived after their window had closed.
    pub late: u64,
    /// Events lacking the fields a handler needs.
    pub skipped: u64,
}

/// Placeholders for `rows` rows of `cols` values: `$1, $2, …` for PostgreSQL,
/// `?` for SQLite, where numbered names make binding quadratic (sqlx looks up
/// every parameter's name, and SQLite finds names by a linear scan).
pub(crate) fn values(backend: Backend, rows: usize, cols: usize) -> String {
    use std::fmt::Write as _;
    // One buffer: this runs for every chunk of every batch.
    let mut sql = String::with_capacity(rows * cols * 7);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 1..=cols {
            if c > 1 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Postgres => {
                    let _ = write!(sql, "${}", r * cols + c);
                }
                Backend::Sqlite => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// Key parts are joined by the unit separator, which keys may not contain.
pub const KEY_SEP: char = '\u{1f}';

fn key_of(e: &ContextEvent, keys: &[String]) -> Option<String> {
    let parts: Option<Vec<String>> = keys
        .iter()
        .map(|k| match e.payload.get(k)? {
            Json::String(s) if !s.is_empty() && !s.chars().any(char::is_control) && s.len() <= 128 => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            Json::Bool(b) => Some(b.to_string()),
            _ => None,
        })
        .collect();
    Some(parts?.join(&KEY_SEP.to_string()))
}

fn key_json(keys: &[String], key: &str) -> Json {
    Json::Object(keys.iter().cloned().zip(key.split(KEY_SEP).map(|p| json!(p))).collect())
}

/// Runs every configured handler over the fresh events of a batch.
pub async fn run(
    conn: &mut AnyConnection,
    handlers: &BTreeMap<String, Handler>,
    fresh: &[&ContextEvent],
) -> sqlx::Result<Outcome> {
    let mut outcome = Outcome::default();
    for (name, handler) in handlers {
        let inputs = handler.inputs();
        let mine: Vec<&ContextEvent> = fresh.iter().copied().filter(|e| inputs.contains(&e.kind.as_str())).collect();
        if mine.is_empty() {
            continue;
        }
        match handler {
            Handler::Aggregate { keys, value, window_s, lateness_s, .. } => {
                let window = (*window_s * 1000) as i64;
                let rule = Windows { name, keys, value, window, lateness: (*lateness_s * 1000) as i64 };
                rule.run(conn, &mine, &mut outcome).await?
            }
            Handler::Threshold { keys, value, op, threshold, duration_s, .. } => {
                let duration = (*duration_s * 1000) as i64;
                let rule = Breaches { name, keys, value, op: *op, threshold: *threshold, duration };
                rule.run(conn, &mine, &mut outcome).await?
            }
            Handler::Filter { fields, output, .. } => filter(name, fields, output, &mine, &mut outcome),
        }
    }
    Ok(outcome)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AggregateState {
    /// The latest event time seen.
    watermark_ms: i64,
    /// Windows starting before this have been closed (and announced).
    closed_before: i64,
}

async fn load_state<T: Default + for<'de> Deserialize<'de>>(conn: &mut AnyConnection, name: &str) -> sqlx::Result<T> {
    let row = sqlx::query("SELECT state FROM cs_handler_state WHERE handler = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.and_then(|r| serde_json::from_str(&r.get::<String, _>("state")).ok()).unwrap_or_default())
}

async fn save_state<T: Serialize>(conn: &mut AnyConnection, name: &str, state: &T) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO cs_handler_state (handler, state) VALUES ($1, $2) ON CONFLICT (handler) DO UPDATE SET state = excluded.state",
    )
    .bind(name)
    .bind(serde_json::to_string(state).unwrap_or_default())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Clone, Copy)]
struct Acc {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Acc {
    fn new(v: f64) -> Self {
        Acc { count: 1, sum: v, min: v, max: v }
    }
    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// An aggregate handler: count, sum, min and max per key per tumbling window.
struct Windows<'a> {
    name: &'a str,
    keys: &'a [String],
    value: &'a str,
    /// Window length and allowed lateness, in ms.
    window: i64,
    lateness: i64,
}

impl Windows<'_> {
    async fn run(&self, conn: &mut AnyConnection, events: &[&ContextEvent], outcome: &mut Outcome) -> sqlx::Result<()> {
        let mut state: AggregateState = load_state(conn, self.name).await?;
        let groups = self.group(&mut state, events, outcome);
        for ((key, start), acc) in &groups {
            self.upsert(conn, key, *start, acc).await?;
        }
        // A window closes once the watermark reaches its end plus the allowed
        // lateness: `close_before` is the first window start still open.
        let close_before =
            (state.watermark_ms - self.lateness - self.window).div_euclid(self.window) * self.window + self.window;
        if close_before > state.closed_before {
            self.announce_closed(conn, state.closed_before, close_before, outcome).await?;
            state.closed_before = close_before;
        }
        save_state(conn, self.name, &state).await
    }

    /// Pre-aggregates the batch: one upsert per (key, window), not per event.
    fn group(
        &self,
        state: &mut AggregateState,
        events: &[&ContextEvent],
        outcome: &mut Outcome,
    ) -> BTreeMap<(String, i64), Acc> {
        let mut groups: BTreeMap<(String, i64), Acc> = BTreeMap::new();
        for e in events {
            let (Some(v), Some(key)) = (e.payload.get(self.value).and_then(Json::as_f64), key_of(e, self.keys)) else {
                outcome.skipped += 1;
                continue;
            };
            let ts = e.timestamp.timestamp_millis();
            let start = ts.div_euclid(self.window) * self.window;
            // Late: its window (plus lateness) ended before the latest event seen so far, in arrival order.
            if start < state.closed_before || start + self.window + self.lateness <= state.watermark_ms {
                outcome.late += 1;
                continue;
            }
            groups.entry((key, start)).and_modify(|a| a.add(v)).or_insert_with(|| Acc::new(v));
            state.watermark_ms = state.watermark_ms.max(ts);
        }
        groups
    }

    async fn upsert(&self, conn: &mut AnyConnection, key: &str, start: i64, acc: &Acc) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO cs_aggregates (handler, key, window_start, count, sum, min, max) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (handler, key, window_start) DO UPDATE SET \
             count = cs_aggregates.count + excluded.count, sum = cs_aggregates.sum + excluded.sum, \
             min = CASE WHEN excluded.min < cs_aggregates.min THEN excluded.min ELSE cs_aggregates.min END, \
             max = CASE WHEN excluded.max > cs_aggregates.max THEN excluded.max ELSE cs_aggregates.max END",
        )
        .bind(self.name)
        .bind(key)
        .bind(start)
        .bind(acc.count)
        .bind(acc.sum)
        .bind(acc.min)
        .bind(acc.max)
        .execute(&mut *conn)
        .await
        .map(drop)
    }

    /// A `<name>.window` event with the totals of each window that closed.
    async fn announce_closed(
        &self,
        conn: &mut AnyConnection,
        from: i64,
        to: i64,
        outcome: &mut Outcome,
    ) -> sqlx::Result<()> {
        let rows = sqlx::query(
            "SELECT key, window_start, count, sum, min, max FROM cs_aggregates \
             WHERE handler = $1 AND window_start >= $2 AND window_start < $3 ORDER BY window_start, key",
        )
        .bind(self.name)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let (key, start, count) =
                (r.get::<String, _>("key"), r.get::<i64, _>("window_start"), r.get::<i64, _>("count"));
            let sum: f64 = r.get("sum");
            let mut payload = Map::new();
            payload.insert("key".into(), key_json(self.keys, &key));
            for (k, v) in [
                ("window_start", json!(start)),
                ("window_end", json!(start + self.window)),
                ("count", json!(count)),
                ("sum", json!(sum)),
                ("avg", json!(sum / count as f64)),
                ("min", json!(r.get::<f64, _>("min"))),
                ("max", json!(r.get::<f64, _>("max"))),
            ] {
                payload.insert(k.into(), v);
            }
            outcome.derived.push(ContextEvent {
                id: derived_id(self.name, &format!("{key}@{start}")),
                timestamp: chrono::DateTime::from_timestamp_millis(start + self.window).unwrap_or_default(),
                sender: format!("contextstore:{}", self.name),
                kind: format!("{}.window", self.name),
                payload: Json::Object(payload),
            });
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Sla {
    breach_since: Option<i64>,
    violating: bool,
    last_value: Option<f64>,
}

/// A threshold handler: a violation once `value op threshold` has held for
/// `duration` ms, a recovery when it stops; state per key.
struct Breaches<'a> {
    name: &'a str,
    keys: &'a [String],
    value: &'a str,
    op: Op,
    threshold: f64,
    duration: i64,
}

impl Breaches<'_> {
    async fn run(&self, conn: &mut AnyConnection, events: &[&ContextEvent], outcome: &mut Outcome) -> sqlx::Result<()> {
        let mut states = self.load(conn).await?;
        let mut ordered: Vec<&&ContextEvent> = events.iter().collect();
        ordered.sort_by_key(|e| e.timestamp);
        let mut changed = Vec::new();
        for e in ordered {
            let (Some(v), Some(key)) = (e.payload.get(self.value).and_then(Json::as_f64), key_of(e, self.keys)) else {
                outcome.skipped += 1;
                continue;
            };
            let sla =
                states.entry(key.clone()).or_insert(Sla { breach_since: None, violating: false, last_value: None });
            self.step(sla, &key, e, v, outcome);
            changed.push(key);
        }
        changed.sort();
        changed.dedup();
        for key in changed {
            self.save(conn, &key, states[&key]).await?;
        }
        Ok(())
    }

    /// One value for one key: starts, confirms or ends a breach.
    fn step(&self, sla: &mut Sla, key: &str, e: &ContextEvent, v: f64, outcome: &mut Outcome) {
        let ts = e.timestamp.timestamp_millis();
        // One violation and one recovery per breach, named by the breach's start.
        let emit = |kind: &str, since: i64, payload: Json| ContextEvent {
            id: derived_id(self.name, &format!("{key}@{since}:{kind}")),
            timestamp: e.timestamp,
            sender: format!("contextstore:{}", self.name),
            kind: format!("{}.{kind}", self.name),
            payload,
        };
        if self.op.holds(v, self.threshold) {
            let since = *sla.breach_since.get_or_insert(ts);
            if !sla.violating && ts - since >= self.duration {
                let key = key_json(self.keys, key);
                let payload = json!({ "key": key, "since": since, "at": ts, "value": v, "threshold": self.threshold });
                outcome.derived.push(emit("violation", since, payload));
                sla.violating = true;
            }
        } else {
            if let (true, Some(since)) = (sla.violating, sla.breach_since) {
                let payload = json!({ "key": key_json(self.keys, key), "since": since, "until": ts, "value": v });
                outcome.derived.push(emit("recovery", since, payload));
            }
            sla.breach_since = None;
            sla.violating = false;
        }
        sla.last_value = Some(v);
    }

    async fn load(&self, conn: &mut AnyConnection) -> sqlx::Result<HashMap<String, Sla>> {
        let rows = sqlx::query("SELECT key, breach_since, violating, last_value FROM cs_sla WHERE handler = $1")
            .bind(self.name)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let sla = Sla {
                    breach_since: r.get("breach_since"),
                    violating: r.get::<i64, _>("violating") != 0,
                    last_value: r.get("last_value"),
                };
                (r.get::<String, _>("key"), sla)
            })
            .collect())
    }

    async fn save(&self, conn: &mut AnyConnection, key: &str, sla: Sla) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO cs_sla (handler, key, breach_since, violating, last_value) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (handler, key) DO UPDATE SET breach_since = excluded.breach_since, \
             violating = excluded.violating, last_value = excluded.last_value",
        )
        .bind(self.name)
        .bind(key)
        .bind(sla.breach_since)
        .bind(sla.violating as i64)
        .bind(sla.last_value)
        .execute(&mut *conn)
        .await
        .map(drop)
    }
}

fn filter(name: &str, fields: &[String], output: &str, events: &[&ContextEvent], outcome: &mut Outcome) {
    for e in events {
        let payload = if fields.is_empty() {
            e.payload.clone()
        } else {
            Json::Object(fields.iter().filter_map(|f| Some((f.clone(), e.payload.get(f)?.clone()))).collect())
        };
        outcome.derived.push(ContextEvent {
            id: derived_id(name, &e.id.to_string()),
            timestamp: e.timestamp,
            sender: e.sender.clone(),
            kind: output.to_owned(),
            payload,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_keys() {
        assert_eq!(values(Backend::Postgres, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(values(Backend::Sqlite, 1, 3), "(?, ?, ?)");
        let e = ContextEvent {
            id: uuid::Uuid::nil(),
            timestamp: chrono::Utc::now(),
            sender: "s".into(),
            kind: "t".into(),
            payload: json!({"user": "alice", "vm": 7, "bad": "a\u{1f}b"}),
        };
        assert_eq!(key_of(&e, &["user".into(), "vm".into()]), Some(format!("alice{KEY_SEP}7")));
        assert_eq!(key_of(&e, &["bad".into()]), None);
        assert_eq!(key_of(&e, &["missing".into()]), None);
    }
}
