//! A short-lived cache of remote reads, so that reading a subtree costs one
//! round trip per interior node rather than two per node. Anything written
//! through the mount, and any event bridged from the remote, clears it.

use std::collections::HashMap;
use std::time::Duration;

use dmtree_core::{Node, Uri};
use parking_lot::Mutex;
use tokio::time::Instant;

struct Entry {
    at: Instant,
    node: Node,
    /// Known when the node itself was read; not when it came in its parent's listing.
    children: Option<Vec<String>>,
}

pub struct ReadCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uri, Entry>>,
}

impl ReadCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::default() }
    }

    pub fn node(&self, path: &Uri) -> Option<Node> {
        self.entries.lock().get(path).filter(|e| e.at.elapsed() < self.ttl).map(|e| e.node.clone())
    }

    pub fn children(&self, path: &Uri) -> Option<Vec<String>> {
        self.entries.lock().get(path).filter(|e| e.at.elapsed() < self.ttl).and_then(|e| e.children.clone())
    }

    /// Stores a node read with its children's names, and the children themselves.
    pub fn fill(&self, path: &Uri, node: Node, children: Vec<(String, Node)>) {
        if self.ttl.is_zero() {
            return;
        }
        let at = Instant::now();
        let mut entries = self.entries.lock();
        entries.retain(|_, e| e.at.elapsed() < self.ttl);
        let names = children.iter().map(|(n, _)| n.clone()).collect();
        for (name, child) in children {
            entries.entry(path.join_name(&name)).or_insert(Entry { at, node: child, children: None });
        }
        entries.insert(path.clone(), Entry { at, node, children: Some(names) });
    }

    pub fn clear(&self) {
        self.entries.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmtree_core::Value;

    #[tokio::test(start_paused = true)]
    async fn expires_and_knows_listings_apart() {
        let cache = ReadCache::new(Duration::from_millis(100));
        let a = Uri::from_key("a");
        cache.fill(&a, Node::interior(), vec![("b".into(), Node::leaf(Value::Int(1)))]);
        assert_eq!(cache.children(&a), Some(vec!["b".to_owned()]));
        assert!(cache.node(&a.join_name("b")).is_some());
        assert_eq!(cache.children(&a.join_name("b")), None, "a listed child's own children are unknown");
        tokio::time::advance(Duration::from_millis(101)).await;
        assert!(cache.node(&a).is_none());
    }

    #[test]
    fn zero_ttl_keeps_nothing() {
        let cache = ReadCache::new(Duration::ZERO);
        cache.fill(&Uri::root(), Node::interior(), Vec::new());
        assert!(cache.node(&Uri::root()).is_none());
    }
}
