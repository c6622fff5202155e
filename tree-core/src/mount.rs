//! The mount table: which handler answers which subtree.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::handler::DataHandler;
use crate::uri::{SEP, Uri};

pub struct Mount {
    /// A short name, unique in the table, used as the node name under `./mounts`.
    pub id: String,
    pub at: Uri,
    pub handler: Arc<dyn DataHandler>,
    pub since: DateTime<Utc>,
}

/// Immutable; the tree swaps in a new table on mount and unmount, so routing
/// never takes a lock.
#[derive(Default, Clone)]
pub struct MountTable {
    by_key: HashMap<Box<str>, Arc<Mount>>,
}

impl MountTable {
    /// The mount with the longest mount point at or above `uri`, and the path below it.
    pub fn resolve(&self, uri: &Uri) -> Option<(&Arc<Mount>, Uri)> {
        let key = uri.key();
        let mut end = key.len();
        loop {
            if let Some(m) = self.by_key.get(&key[..end]) {
                let rel = key[end..].strip_prefix(SEP).unwrap_or(&key[end..]);
                return Some((m, Uri::from_key(rel)));
            }
            if end == 0 {
                return None;
            }
            end = key[..end].rfind(SEP).unwrap_or(0);
        }
    }

    /// Names of the scaffold children of `uri`: the next segment of every mount point below it.
    pub fn scaffold_children(&self, uri: &Uri) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_key
            .values()
            .filter(|m| m.at != *uri && uri.is_prefix_of(&m.at))
            .filter_map(|m| m.at.strip_prefix(uri)?.segments().next().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn get(&self, at: &Uri) -> Option<&Arc<Mount>> {
        self.by_key.get(at.key())
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<Mount>> {
        self.by_key.values().find(|m| m.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Mount>> {
        self.by_key.values()
    }

    pub(crate) fn insert(&mut self, mount: Arc<Mount>) {
        self.by_key.insert(mount.at.key().into(), mount);
    }

    pub(crate) fn remove(&mut self, at: &Uri) -> Option<Arc<Mount>> {
        self.by_key.remove(at.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryHandler;
    use crate::uri::UriLimits;

    fn u(s: &str) -> Uri {
        Uri::parse(s, &UriLimits::default()).unwrap()
    }

    fn table(points: &[&str]) -> MountTable {
        let mut t = MountTable::default();
        for p in points {
            t.insert(Arc::new(Mount {
                id: p.to_string(),
                at: u(p),
                handler: Arc::new(MemoryHandler::default()),
                since: Utc::now(),
            }));
        }
        t
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&["./a", "./a/b/c"]);
        let (m, rel) = t.resolve(&u("./a/b/c/d")).unwrap();
        assert_eq!((m.at.to_string(), rel.to_string()), ("./a/b/c".into(), "./d".into()));
        let (m, rel) = t.resolve(&u("./a/b")).unwrap();
        assert_eq!((m.at.to_string(), rel.key()), ("./a".into(), "b"));
        assert!(t.resolve(&u("./ab")).is_none());
        assert!(t.resolve(&Uri::root()).is_none());
    }

    #[test]
    fn scaffold_children_are_next_segments() {
        let t = table(&["./infra/cloud_1", "./infra/cloud_2", "./config"]);
        assert_eq!(t.scaffold_children(&Uri::root()), ["config", "infra"]);
        assert_eq!(t.scaffold_children(&u("./infra")), ["cloud_1", "cloud_2"]);
        assert!(t.scaffold_children(&u("./config")).is_empty());
    }
}
