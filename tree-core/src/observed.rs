//! Observed state of something a handler polls (a host, an exporter, a
//! broker): the last good snapshot, when it was taken, and how polling goes.
//!
//! Each update is compared with the snapshot before it and only the leaves
//! that changed become events, so polling adds no redundant traffic. When a
//! poll fails the last snapshot stays readable, marked stale with its age.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use parking_lot::RwLock;
use serde_json::{Value as Json, json};
use std::sync::Arc;

use crate::error::{DmtError, Result};
use crate::event::{EventDraft, EventKind};
use crate::handler::ChangeSink;
use crate::node::Node;
use crate::uri::Uri;
use crate::value::Value;

#[derive(Default)]
struct State {
    snapshot: Option<Arc<Json>>,
    taken: Option<(Instant, DateTime<Utc>)>,
    /// Set while the latest poll failed.
    failing: Option<(String, DateTime<Utc>)>,
    polls: u64,
    failures: u64,
    changes: u64,
}

/// A polled snapshot, shared by the poll loop (writer) and reads.
#[derive(Default)]
pub struct Observed {
    state: RwLock<State>,
}

impl Observed {
    /// Stores a fresh snapshot and reports each changed leaf under `base` (relative to the mount).
    pub fn update(&self, fresh: Json, base: &Uri, sink: Option<&ChangeSink>) {
        let mut drafts = Vec::new();
        {
            let state = self.state.read();
            let old = state.snapshot.as_deref().unwrap_or(&Json::Null);
            diff(old, &fresh, base, &mut drafts);
        }
        let mut state = self.state.write();
        state.snapshot = Some(Arc::new(fresh));
        state.taken = Some((Instant::now(), Utc::now()));
        state.failing = None;
        state.polls += 1;
        state.changes += drafts.len() as u64;
        drop(state);
        if let Some(sink) = sink {
            drafts.into_iter().for_each(|d| sink.emit_draft(d));
        }
    }

    pub fn failed(&self, error: impl Into<String>) {
        let mut state = self.state.write();
        state.polls += 1;
        state.failures += 1;
        state.failing = Some((error.into(), Utc::now()));
    }

    pub fn has_snapshot(&self) -> bool {
        self.state.read().snapshot.is_some()
    }

    /// How long ago the last good snapshot was taken.
    pub fn age(&self) -> Option<Duration> {
        self.state.read().taken.map(|(at, _)| at.elapsed())
    }

    /// Whether the latest poll failed.
    pub fn failing(&self) -> bool {
        self.state.read().failing.is_some()
    }

    pub fn polls(&self) -> u64 {
        self.state.read().polls
    }

    /// The node at `path` inside the snapshot (the tree puts the URI right in errors). `stale_after`: a snapshot older
    /// than this, or one whose refresh failed, is marked stale. With no
    /// snapshot at all the answer is a remote error naming the last failure.
    pub fn node(&self, path: &Uri, stale_after: Duration) -> Result<Node> {
        let (snapshot, taken, stale) = self.read(path, stale_after)?;
        // Only the node itself is copied out: snapshots can be large.
        let mut node = match find(&snapshot, path) {
            Some(Json::Object(_)) => Node::interior(),
            Some(leaf) => Node::leaf(Value::from_json(leaf, None).map_err(|e| DmtError::invalid_data(path, e.0))?),
            None => return Err(DmtError::not_found(path)),
        };
        node.props.timestamp = Some(taken);
        node.props.stale_ms = stale;
        Ok(node)
    }

    pub fn children(&self, path: &Uri) -> Result<Vec<String>> {
        let (snapshot, _, _) = self.read(path, Duration::MAX)?;
        match find(&snapshot, path) {
            Some(Json::Object(map)) => Ok(map.keys().cloned().collect()),
            Some(_) => Ok(Vec::new()),
            None => Err(DmtError::not_found(path)),
        }
    }

    fn read(&self, path: &Uri, stale_after: Duration) -> Result<(Arc<Json>, DateTime<Utc>, Option<u64>)> {
        let state = self.state.read();
        let (Some(snapshot), Some((instant, taken))) = (&state.snapshot, state.taken) else {
            let why = state.failing.as_ref().map_or("nothing has been read from it yet", |(e, _)| e.as_str());
            return Err(DmtError::remote(path, format!("no data: {why}")));
        };
        let age = instant.elapsed();
        let stale = (state.failing.is_some() || age > stale_after).then_some(age.as_millis() as u64);
        Ok((snapshot.clone(), taken, stale))
    }

    /// Counters and the last error, for a handler's monitoring subtree.
    pub fn status(&self) -> Json {
        let state = self.state.read();
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        json!({
            "polls": state.polls,
            "failures": state.failures,
            "changes": state.changes,
            "reachable": state.failing.is_none() && state.snapshot.is_some(),
            "last_success": state.taken.map_or(String::new(), |(_, t)| time(t)),
            "age_ms": state.taken.map_or(-1, |(at, _)| at.elapsed().as_millis() as i64),
            "last_error": state.failing.as_ref().map_or(String::new(), |(e, _)| e.clone()),
            "last_error_at": state.failing.as_ref().map_or(String::new(), |(_, t)| time(*t)),
        })
    }
}

fn find<'a>(root: &'a Json, path: &Uri) -> Option<&'a Json> {
    path.segments().try_fold(root, |cur, seg| cur.as_object()?.get(seg))
}

/// Events turning `old` into `new`: a `monitoring` event per changed or new
/// leaf, `deleted` for whatever disappeared, `added` for new interior nodes.
pub fn diff(old: &Json, new: &Json, path: &Uri, out: &mut Vec<EventDraft>) {
    match (old, new) {
        (Json::Object(a), Json::Object(b)) => {
            for name in a.keys() {
                if !b.contains_key(name) {
                    out.push(EventDraft::new(EventKind::Deleted, path.join_name(name)));
                }
            }
            for (name, after) in b {
                diff(a.get(name).unwrap_or(&Json::Null), after, &path.join_name(name), out);
            }
        }
        (_, Json::Object(b)) => {
            if !old.is_null() {
                out.push(EventDraft::new(EventKind::Deleted, path.clone()));
            }
            if !path.is_root() {
                out.push(EventDraft::new(EventKind::Added, path.clone()));
            }
            for (name, after) in b {
                diff(&Json::Null, after, &path.join_name(name), out);
            }
        }
        (a, b) if a == b => {}
        (_, b) => out.push(
            EventDraft::new(EventKind::Monitoring, path.clone())
                .value(Some(Value::from_json(b, None).unwrap_or(Value::Null))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(old: Json, new: Json) -> Vec<(EventKind, String)> {
        let mut out = Vec::new();
        diff(&old, &new, &Uri::root(), &mut out);
        out.iter().map(|d| (d.kind(), d.uri().to_string())).collect()
    }

    #[test]
    fn only_changes_become_events() {
        let a = json!({"cpu": {"usage": 10.5, "cores": 2}, "disk": {"root": {"free": 5}}});
        assert!(kinds(a.clone(), a.clone()).is_empty());
        let b = json!({"cpu": {"usage": 11.0, "cores": 2}, "net": {"eth0": {"rx": 1}}});
        assert_eq!(
            kinds(a, b),
            vec![
                (EventKind::Deleted, "./disk".to_owned()),
                (EventKind::Monitoring, "./cpu/usage".to_owned()),
                (EventKind::Added, "./net".to_owned()),
                (EventKind::Added, "./net/eth0".to_owned()),
                (EventKind::Monitoring, "./net/eth0/rx".to_owned()),
            ]
        );
    }

    #[test]
    fn a_failed_poll_keeps_the_last_snapshot_marked_stale() {
        let seen = Observed::default();
        assert_eq!(seen.node(&Uri::root(), Duration::MAX).unwrap_err().code(), "remote_error");
        seen.failed("connection refused");
        let err = seen.node(&Uri::root(), Duration::MAX).unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
        seen.update(json!({"cpu": 1}), &Uri::root(), None);
        let cpu = Uri::from_key("cpu");
        assert_eq!(seen.node(&cpu, Duration::MAX).unwrap().props.stale_ms, None);
        seen.failed("timed out");
        let node = seen.node(&cpu, Duration::MAX).unwrap();
        assert_eq!(node.value, Some(Value::Int(1)));
        assert!(node.props.stale_ms.is_some());
        assert_eq!(seen.status()["failures"], 2);
    }
}
