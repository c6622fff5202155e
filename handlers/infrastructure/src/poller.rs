//! The lazy poll loop. It polls only while the subtree is wanted: read
//! within the last `idle_ms`, or under a subscription. Otherwise it sleeps,
//! and a read wakes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dmtree_core::{ChangeSink, Observed, Uri};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, watch};

use crate::spec::InfraSpec;
use crate::supplier::{self, Supplier};

/// How often an idle loop looks for new subscribers.
const IDLE_CHECK: Duration = Duration::from_secs(1);

pub struct Poller {
    pub spec: RwLock<InfraSpec>,
    supplier: RwLock<Arc<dyn Supplier>>,
    pub observed: Observed,
    sink: Mutex<Option<ChangeSink>>,
    last_read: Mutex<Option<Instant>>,
    active: AtomicBool,
    stopped: AtomicBool,
    wake: Notify,
    /// Counts finished polls, good or bad; readers wait on it.
    done: watch::Sender<u64>,
}

impl Poller {
    pub fn new(spec: InfraSpec) -> Arc<Self> {
        Arc::new(Self {
            supplier: RwLock::new(supplier::build(&spec)),
            spec: RwLock::new(spec),
            observed: Observed::default(),
            sink: Mutex::new(None),
            last_read: Mutex::new(None),
            active: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            wake: Notify::new(),
            done: watch::Sender::new(0),
        })
    }

    /// Starts the loop (idle until wanted).
    pub fn start(self: &Arc<Self>, sink: ChangeSink) {
        *self.sink.lock() = Some(sink);
        tokio::spawn(run(Arc::downgrade(self)));
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// A new spec: a new supplier, and the loop restarts its wait.
    pub fn reconfigure(&self, spec: InfraSpec) {
        *self.supplier.write() = supplier::build(&spec);
        *self.spec.write() = spec;
        self.wake.notify_one();
    }

    fn wanted(&self) -> bool {
        let idle = Duration::from_millis(self.spec.read().idle_ms);
        let read_lately = self.last_read.lock().is_some_and(|t| t.elapsed() < idle);
        read_lately || self.sink.lock().as_ref().is_some_and(ChangeSink::watched)
    }

    /// Called on every read: keeps polling alive, and wakes an idle loop. A
    /// first read, or one after an idle spell, waits (boundedly) for a fresh
    /// poll; a read while the source is failing answers at once.
    pub async fn touch(&self) {
        *self.last_read.lock() = Some(Instant::now());
        if self.is_active() && self.observed.polls() > 0 {
            return;
        }
        let (interval, timeout) = {
            let s = self.spec.read();
            (Duration::from_millis(s.interval_ms), Duration::from_millis(s.timeout_ms))
        };
        let mut done = self.done.subscribe();
        done.mark_unchanged();
        let was_active = self.is_active();
        if !was_active {
            self.wake.notify_one();
        }
        let first = self.observed.polls() == 0;
        let outdated = self.observed.age().is_none_or(|age| age > interval * 2);
        if first || (outdated && !was_active && !self.observed.failing()) {
            // The local host needs one CPU sampling interval on its first poll.
            let _ = tokio::time::timeout(timeout + sysinfo_first_sample(), done.changed()).await;
        }
    }

    /// Values older than this are marked stale even when polling works.
    pub fn stale_after(&self) -> Duration {
        let s = self.spec.read();
        Duration::from_millis(2 * s.interval_ms + s.timeout_ms)
    }

    async fn poll_once(&self) {
        let supplier = self.supplier.read().clone();
        let timeout = Duration::from_millis(self.spec.read().timeout_ms) + sysinfo_first_sample();
        match tokio::time::timeout(timeout, supplier.poll()).await {
            Ok(Ok(tree)) => {
                let tree = include(tree, &self.spec.read().include);
                let sink = self.sink.lock().clone();
                self.observed.update(tree, &Uri::from_key("monitoring"), sink.as_ref());
            }
            Ok(Err(e)) => self.fail(e.to_string()),
            Err(_) => self.fail(format!("no answer within {} ms", timeout.as_millis())),
        }
        self.done.send_modify(|n| *n += 1);
    }

    fn fail(&self, error: String) {
        tracing::debug!(%error, "infrastructure poll failed");
        self.observed.failed(error);
    }
}

fn sysinfo_first_sample() -> Duration {
    sysinfo::MINIMUM_CPU_UPDATE_INTERVAL
}

async fn run(poller: std::sync::Weak<Poller>) {
    loop {
        let Some(p) = poller.upgrade() else { return };
        if p.stopped.load(Ordering::Relaxed) {
            p.active.store(false, Ordering::Relaxed);
            return;
        }
        if !p.wanted() {
            p.active.store(false, Ordering::Relaxed);
            let _ = tokio::time::timeout(IDLE_CHECK, p.wake.notified()).await;
            continue;
        }
        p.active.store(true, Ordering::Relaxed);
        p.poll_once().await;
        let interval = Duration::from_millis(p.spec.read().interval_ms);
        let wake = p.wake.notified();
        tokio::pin!(wake);
        // Reconfiguration (or stop) cuts the wait short.
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut wake => {}
        }
    }
}

/// Keeps only the included subtrees (`a` or `a/b`, a trailing `*` matching a
/// name prefix); everything when the list is empty.
pub fn include(tree: serde_json::Value, include: &[String]) -> serde_json::Value {
    if include.is_empty() {
        return tree;
    }
    let paths: Vec<Vec<&str>> = include.iter().map(|p| p.split('/').collect()).collect();
    keep(tree, &paths.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

fn keep(tree: serde_json::Value, paths: &[&[&str]]) -> serde_json::Value {
    let serde_json::Value::Object(map) = tree else { return tree };
    let mut out = serde_json::Map::new();
    for (name, child) in map {
        let matching: Vec<&[&str]> =
            paths.iter().filter(|p| p.first().is_some_and(|seg| matches(seg, &name))).map(|p| &p[1..]).collect();
        if matching.is_empty() {
            continue;
        }
        let child = if matching.iter().any(|rest| rest.is_empty()) { child } else { keep(child, &matching) };
        out.insert(name, child);
    }
    serde_json::Value::Object(out)
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn include_keeps_named_subtrees() {
        let t = json!({"cpu": {"usage": 1, "cores": {}}, "memory": {"total": 2}, "node_load1": 1, "node_load5": 2});
        assert_eq!(include(t.clone(), &[]), t);
        assert_eq!(
            include(t.clone(), &["cpu/usage".into(), "memory".into()]),
            json!({"cpu": {"usage": 1}, "memory": {"total": 2}})
        );
        assert_eq!(include(t, &["node_load*".into()]), json!({"node_load1": 1, "node_load5": 2}));
    }
}
