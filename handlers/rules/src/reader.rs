//! The tree as a rule's expressions see it: read with the owner's rights,
//! once per epoch (a cache, so 100 rules over one binding read it once and
//! all see the same value), within a budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dmtree_core::{Caller, NodeKind, Principal, Tree, Uri};
use parking_lot::Mutex;
use serde_json::{Map, Value as Json, json};
use tokio::runtime::Handle;

use crate::expr::{Binding, Reader, Window};

/// Reads for one principal during one epoch. Used from a blocking thread.
pub struct TreeReader {
    tree: Arc<Tree>,
    principal: Principal,
    handle: Handle,
    now_ms: i64,
    values: Mutex<HashMap<String, (Json, Option<i64>)>>,
    windows: Mutex<HashMap<(String, Window, Duration), Json>>,
    bindings: Mutex<HashMap<String, Arc<Vec<Binding>>>>,
    /// Nanoseconds after `epoch_start` past which evaluations fail; 0: none.
    deadline_ns: AtomicU64,
    epoch_start: Instant,
    /// While explaining: every value read, in order.
    log: Mutex<Option<Vec<(String, Json)>>>,
    recording: AtomicBool,
}

/// Most nodes one pattern may bind, so that a rule cannot walk the whole tree.
pub const MAX_BINDINGS: usize = 100_000;

impl TreeReader {
    pub fn new(tree: Arc<Tree>, principal: Principal, handle: Handle, now_ms: i64) -> Self {
        Self {
            tree,
            principal,
            handle,
            now_ms,
            values: Mutex::default(),
            windows: Mutex::default(),
            bindings: Mutex::default(),
            deadline_ns: AtomicU64::new(0),
            epoch_start: Instant::now(),
            log: Mutex::default(),
            recording: AtomicBool::new(false),
        }
    }

    pub fn set_deadline(&self, at: Option<Instant>) {
        let ns = at.map_or(0, |at| at.saturating_duration_since(self.epoch_start).as_nanos().max(1) as u64);
        self.deadline_ns.store(ns, Ordering::Relaxed);
    }

    /// Starts recording reads (for explain); returns what was recorded so far.
    pub fn record(&self, on: bool) -> Vec<(String, Json)> {
        self.recording.store(on, Ordering::Relaxed);
        std::mem::replace(&mut *self.log.lock(), on.then(Vec::new)).unwrap_or_default()
    }

    fn note(&self, what: impl FnOnce() -> String, v: &Json) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        if let Some(log) = self.log.lock().as_mut() {
            log.push((what(), v.clone()));
        }
    }

    fn uri(&self, text: &str) -> Result<Uri, String> {
        Uri::parse(text, self.tree.limits()).map_err(|e| e.to_string())
    }

    /// A node's value and change time; `null` when absent or unreadable to the owner.
    fn read(&self, uri: &str) -> Result<(Json, Option<i64>), String> {
        if let Some(hit) = self.values.lock().get(uri) {
            return Ok(hit.clone());
        }
        let parsed = self.uri(uri)?;
        let caller = Caller::new(&self.principal);
        let read = self.handle.block_on(self.tree.read(&caller, &parsed, 0));
        let got = match read.ok().and_then(|v| v.node) {
            Some(node) => {
                let at = node.props.timestamp.map(|t| t.timestamp_millis());
                (node.value.map_or(Json::Null, |v| v.to_json()), at)
            }
            None => (Json::Null, None),
        };
        self.values.lock().insert(uri.to_owned(), got.clone());
        Ok(got)
    }

    /// The leaf children of `uri` as variables, and the names of all children.
    fn node_vars(&self, uri: &Uri) -> Option<(Map<String, Json>, Vec<String>)> {
        let caller = Caller::new(&self.principal);
        let view = self.handle.block_on(self.tree.read(&caller, uri, 1)).ok()?;
        let mut vars = Map::new();
        let mut names = Vec::new();
        for child in view.children.unwrap_or_default() {
            let Some(name) = child.uri.name().map(str::to_owned) else { continue };
            if let Some(node) = &child.node
                && node.kind == NodeKind::Leaf
            {
                let value = node.value.as_ref().map_or(Json::Null, |v| v.to_json());
                self.values
                    .lock()
                    .insert(child.uri.to_string(), (value.clone(), node.props.timestamp.map(|t| t.timestamp_millis())));
                vars.insert(name.clone(), value);
            }
            names.push(name);
        }
        Some((vars, names))
    }

    /// The nodes matching an absolute pattern of literals and `*`, in tree order.
    pub fn expand(&self, pattern: &str) -> Result<Arc<Vec<Binding>>, String> {
        if let Some(hit) = self.bindings.lock().get(pattern) {
            return Ok(hit.clone());
        }
        crate::rule::check_pattern(pattern)?;
        let mut frontier = vec![Uri::root()];
        let segments: Vec<&str> = pattern.split('/').skip(1).collect();
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let mut next = Vec::new();
            for base in &frontier {
                if *seg == "*" {
                    let Some((_, names)) = self.node_vars(base) else { continue };
                    next.extend(names.iter().map(|n| base.join_name(n)));
                } else {
                    next.push(base.join_name(seg));
                }
                if next.len() > MAX_BINDINGS {
                    return Err(format!("{pattern} binds more than {MAX_BINDINGS} nodes"));
                }
            }
            frontier = next;
            if last {
                break;
            }
        }
        let out: Vec<Binding> = frontier
            .iter()
            .filter_map(|u| self.node_vars(u).map(|(vars, _)| Binding::new(&u.to_string(), vars)))
            .collect();
        let out = Arc::new(out);
        self.bindings.lock().insert(pattern.to_owned(), out.clone());
        Ok(out)
    }

    /// The recorded values of a leaf over the last `over`, oldest first.
    fn history(&self, uri: &str, over: Duration) -> Result<Vec<f64>, String> {
        let from = chrono::DateTime::from_timestamp_millis(self.now_ms - over.as_millis() as i64)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let caller = Caller::new(&self.principal);
        let at = self.uri("./contextstore/history")?;
        let res = self.handle.block_on(self.tree.exec(&caller, &at, Some(json!({"uri": uri, "from": from}))));
        let res = res.map_err(|e| format!("the ContextStore's history of {uri}: {}", e.message))?;
        let points = res.get("points").and_then(Json::as_array).cloned().unwrap_or_default();
        Ok(points.iter().filter_map(|p| p.get(1).and_then(Json::as_f64)).collect())
    }
}

impl Reader for TreeReader {
    fn value(&self, uri: &str) -> Result<Json, String> {
        let (v, _) = self.read(uri)?;
        self.note(|| uri.to_owned(), &v);
        Ok(v)
    }

    fn window(&self, uri: &str, f: Window, over: Duration) -> Result<Json, String> {
        let key = (uri.to_owned(), f, over);
        if let Some(v) = self.windows.lock().get(&key) {
            self.note(|| format!("{}({uri}, {}s)", f.name(), over.as_secs()), v);
            return Ok(v.clone());
        }
        let points = self.history(uri, over)?;
        let v = aggregate(f, &points);
        self.note(|| format!("{}({uri}, {}s)", f.name(), over.as_secs()), &v);
        self.windows.lock().insert(key, v.clone());
        Ok(v)
    }

    fn age(&self, uri: &str) -> Result<Json, String> {
        let (_, at) = self.read(uri)?;
        let v = at.map_or(Json::Null, |t| json!((self.now_ms - t).max(0) as f64 / 1000.0));
        self.note(|| format!("age({uri})"), &v);
        Ok(v)
    }

    fn bindings(&self, pattern: &str) -> Result<Vec<Binding>, String> {
        Ok(self.expand(pattern)?.as_ref().clone())
    }

    fn charge(&self) -> Result<(), String> {
        let deadline = self.deadline_ns.load(Ordering::Relaxed);
        if deadline != 0 && self.epoch_start.elapsed().as_nanos() as u64 > deadline {
            return Err("over its evaluation budget".into());
        }
        Ok(())
    }
}

/// A window's figure; `null` when there were no points (so `avg(...) > x` is an error, not a silent false).
pub fn aggregate(f: Window, points: &[f64]) -> Json {
    if points.is_empty() {
        return match f {
            Window::Count | Window::Changes | Window::Sum => json!(0),
            _ => Json::Null,
        };
    }
    let n = points.len() as f64;
    match f {
        Window::Avg => json!(points.iter().sum::<f64>() / n),
        Window::Min => json!(points.iter().copied().fold(f64::INFINITY, f64::min)),
        Window::Max => json!(points.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        Window::Sum => json!(points.iter().sum::<f64>()),
        Window::Count => json!(points.len()),
        Window::Changes => json!(points.windows(2).filter(|w| w[0] != w[1]).count()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates() {
        let p = [1.0, 3.0, 3.0, 2.0];
        assert_eq!(aggregate(Window::Avg, &p), json!(2.25));
        assert_eq!(aggregate(Window::Min, &p), json!(1.0));
        assert_eq!(aggregate(Window::Max, &p), json!(3.0));
        assert_eq!(aggregate(Window::Sum, &p), json!(9.0));
        assert_eq!(aggregate(Window::Count, &p), json!(4));
        assert_eq!(aggregate(Window::Changes, &p), json!(2));
        assert_eq!(aggregate(Window::Avg, &[]), Json::Null);
        assert_eq!(aggregate(Window::Count, &[]), json!(0));
    }
}
