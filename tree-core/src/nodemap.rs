//! A compact, ordered, transactional node store: the in-memory half of the
//! memory handler and of the config store.
//!
//! Nodes are keyed by their NUL-joined path, so a subtree is one contiguous
//! key range (`key` up to `key + "\x01"`), and listing children skips over
//! each child's descendants with one range seek. Writes are *planned* against
//! a consistent view into [`Mutation`]s, which a persistent owner can make
//! durable before they are *applied*. A transaction keeps its mutations in an
//! overlay that only its own reads see.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;

use crate::error::{DmtError, Result};
use crate::handler::TxId;
use crate::meta::NodeKind;
use crate::node::{NewNode, Node, Props, PropsPatch};
use crate::uri::Uri;
use crate::value::Value;

/// One stored node. Kept small: a million of these live in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `None` for interior nodes.
    pub value: Option<Value>,
    pub version: u64,
    pub modified_ms: i64,
    pub extra: Option<Box<Extra>>,
}

/// Rarely set properties, boxed so that nodes without them pay one pointer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Extra {
    pub title: Option<Box<str>>,
    pub mime: Option<Box<str>>,
}

impl Entry {
    pub fn kind(&self) -> NodeKind {
        if self.value.is_some() { NodeKind::Leaf } else { NodeKind::Interior }
    }

    fn to_node(&self) -> Node {
        let extra = self.extra.as_deref();
        Node {
            kind: self.kind(),
            value: self.value.clone(),
            props: Props {
                title: extra.and_then(|e| e.title.as_deref()).map(str::to_owned),
                mime: extra.and_then(|e| e.mime.as_deref()).map(str::to_owned),
                version: self.version,
                timestamp: DateTime::<Utc>::from_timestamp_millis(self.modified_ms),
                stale_ms: None,
            },
        }
    }
}

/// A planned change, in terms a persistence layer can write.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    Put(Box<str>, Entry),
    /// Removes the node at the key and all its descendants.
    DeleteSubtree(Box<str>),
}

/// The exclusive upper bound of the subtree rooted at `key`.
pub fn subtree_end(key: &str) -> String {
    format!("{key}\u{1}")
}

fn child_key(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}\0{name}") }
}

#[derive(Default)]
struct Overlay {
    view: BTreeMap<Box<str>, Option<Entry>>,
    log: Vec<Mutation>,
    /// The log as it will be applied, once prepared.
    finished: Option<Vec<Mutation>>,
}

struct Inner {
    nodes: BTreeMap<Box<str>, Entry>,
    seq: u64,
    txs: HashMap<TxId, Overlay>,
}

pub struct NodeMap {
    inner: RwLock<Inner>,
    /// The most nodes one transaction may write: a write costs the one
    /// writer (and every reader of the map) in proportion to its size.
    write_limit: usize,
}

/// The default [`NodeMap::with_write_limit`].
pub const MAX_WRITE_NODES: usize = 50_000;

impl Default for NodeMap {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMap {
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(Box::from(""), Entry { value: None, version: 1, modified_ms: now_ms(), extra: None });
        Self { inner: RwLock::new(Inner { nodes, seq: 1, txs: HashMap::new() }), write_limit: MAX_WRITE_NODES }
    }

    /// A map whose transactions may write at most `limit` nodes each (a
    /// copy or rename counts every node it moves); more is `limit_exceeded`.
    pub fn with_write_limit(limit: usize) -> Self {
        Self { write_limit: limit, ..Self::new() }
    }

    /// Loads persisted entries (at start-up, before any request).
    pub fn load(&self, entries: impl IntoIterator<Item = (Box<str>, Entry)>) {
        let mut inner = self.inner.write();
        for (key, entry) in entries {
            inner.seq = inner.seq.max(entry.version);
            inner.nodes.insert(key, entry);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.read().nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    pub fn get(&self, tx: Option<TxId>, path: &Uri) -> Result<Node> {
        let inner = self.inner.read();
        View::new(&inner, tx).get(path.key()).map(Entry::to_node).ok_or_else(|| DmtError::not_found(path))
    }

    pub fn children(&self, tx: Option<TxId>, path: &Uri) -> Result<Vec<String>> {
        let inner = self.inner.read();
        let view = View::new(&inner, tx);
        match view.get(path.key()) {
            None => Err(DmtError::not_found(path)),
            Some(e) if e.value.is_some() => Ok(Vec::new()),
            Some(_) => Ok(view.child_names(path.key())),
        }
    }

    /// Plans a write against the current view (the caller serialises writers).
    pub fn plan(&self, tx: Option<TxId>, op: Op<'_>) -> Result<Vec<Mutation>> {
        let inner = self.inner.read();
        let view = View::new(&inner, tx);
        let staged = view.overlay.map_or(0, |o| o.log.len());
        let room = self.write_limit.saturating_sub(staged);
        let too_many =
            |uri: &Uri| DmtError::limit(uri, format!("a transaction may write at most {} nodes", self.write_limit));
        // Refused before a large subtree is copied into the plan.
        if let Op::Copy(from, _) | Op::Rename(from, _) = op
            && view.base_subtree_exceeds(from.key(), room)
        {
            return Err(too_many(from));
        }
        let mut seq = inner.seq;
        let mut next_version = || {
            seq += 1;
            seq
        };
        let muts = view.plan(op, &mut next_version)?;
        if muts.len() > room {
            return Err(too_many(op.uri()));
        }
        Ok(muts)
    }

    /// Stages planned mutations in a transaction's overlay, where only its own reads see them.
    pub fn stage(&self, tx: TxId, muts: &[Mutation]) {
        apply_overlay(&mut self.inner.write(), tx, muts);
    }

    /// Finalises planned mutations outside any transaction (as [`prepare`](Self::prepare)
    /// does for one); the caller makes them durable, then [`apply`](Self::apply)s them.
    pub fn finish(&self, muts: &[Mutation]) -> Vec<Mutation> {
        let mut inner = self.inner.write();
        let deleted = |k: &str| muts.iter().any(|m| matches!(m, Mutation::DeleteSubtree(d) if in_subtree(d, k)));
        finalize(&mut inner, compact(muts), |inner, k| inner.nodes.contains_key(k) && !deleted(k))
    }

    /// Applies finished mutations to the base.
    pub fn apply(&self, muts: &[Mutation]) {
        apply_base(&mut self.inner.write().nodes, muts);
    }

    /// Finalises a transaction: one fresh version for every node it wrote and
    /// for their ancestors (a container's version covers its descendants).
    /// Versions increase in prepare order; the caller shows transactions in
    /// that order (the config store's writer prepares and shows each in turn).
    /// Returns what [`commit`](Self::commit) will apply, for the owner to persist.
    pub fn prepare(&self, tx: TxId) -> Vec<Mutation> {
        let mut inner = self.inner.write();
        let Some(overlay) = inner.txs.remove(&tx) else { return Vec::new() };
        let exists = |inner: &Inner, k: &str| match overlay.view.get(k) {
            Some(shadow) => shadow.is_some(),
            None => inner.nodes.contains_key(k),
        };
        let finished = finalize(&mut inner, compact(&overlay.log), exists);
        inner.txs.insert(tx, Overlay { finished: Some(finished.clone()), ..overlay });
        finished
    }

    /// Whether the transaction staged anything.
    pub fn has_changes(&self, tx: TxId) -> bool {
        self.inner.read().txs.get(&tx).is_some_and(|o| !o.log.is_empty())
    }

    /// Makes a transaction's writes visible to everyone (preparing it first if needed).
    pub fn commit(&self, tx: TxId) {
        let prepared = self.inner.read().txs.get(&tx).map(|o| o.finished.is_some());
        match prepared {
            // Shown already (or never written): no write lock needed.
            None => {}
            Some(true) => self.show(tx),
            Some(false) => {
                self.prepare(tx);
                self.show(tx);
            }
        }
    }

    fn show(&self, tx: TxId) {
        let mut inner = self.inner.write();
        if let Some(finished) = inner.txs.remove(&tx).and_then(|o| o.finished) {
            apply_base(&mut inner.nodes, &finished);
        }
    }

    pub fn rollback(&self, tx: TxId) {
        self.inner.write().txs.remove(&tx);
    }
}

fn in_subtree(root: &str, key: &str) -> bool {
    root.is_empty() || key == root || key.strip_prefix(root).is_some_and(|rest| rest.starts_with('\0'))
}

/// Keeps only the last `Put` of each key; deletes stay in place. The final state is unchanged.
fn compact(log: &[Mutation]) -> Vec<Mutation> {
    let mut seen = HashSet::new();
    let mut out: Vec<Mutation> = log
        .iter()
        .rev()
        .filter(|m| match m {
            Mutation::Put(k, _) => seen.insert(k.clone()),
            Mutation::DeleteSubtree(_) => true,
        })
        .cloned()
        .collect();
    out.reverse();
    out
}

/// Stamps one fresh version on every `Put`, and adds a `Put` for each ancestor that still exists.
fn finalize(inner: &mut Inner, mut muts: Vec<Mutation>, exists: impl Fn(&Inner, &str) -> bool) -> Vec<Mutation> {
    if muts.is_empty() {
        return muts;
    }
    inner.seq += 1;
    let (version, now) = (inner.seq, now_ms());
    let mut written = HashSet::new();
    let mut ancestors = BTreeSet::new();
    for m in &mut muts {
        let key = match m {
            Mutation::Put(k, e) => {
                e.version = version;
                e.modified_ms = now;
                written.insert(k.clone());
                k.clone()
            }
            Mutation::DeleteSubtree(k) => k.clone(),
        };
        let mut cur: &str = &key;
        while !cur.is_empty() {
            cur = cur.rfind('\0').map_or("", |i| &cur[..i]);
            ancestors.insert(Box::<str>::from(cur));
        }
    }
    for key in ancestors {
        if written.contains(&key) || !exists(inner, &key) {
            continue;
        }
        if let Some(base) = inner.nodes.get(&key) {
            muts.push(Mutation::Put(key, Entry { version, modified_ms: now, ..base.clone() }));
        }
    }
    muts
}

/// A write, in handler-relative paths.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    Add(&'a Uri, &'a NewNode),
    Replace(&'a Uri, &'a Value),
    SetProps(&'a Uri, &'a PropsPatch),
    Delete(&'a Uri),
    Rename(&'a Uri, &'a str),
    Copy(&'a Uri, &'a Uri),
}

impl Op<'_> {
    /// The node the operation writes (a copy's destination).
    fn uri(&self) -> &Uri {
        match self {
            Op::Add(u, _) | Op::Replace(u, _) | Op::SetProps(u, _) | Op::Delete(u) | Op::Rename(u, _) => u,
            Op::Copy(_, to) => to,
        }
    }
}

/// Versions never go back: transactions committed in one batch may be shown
/// in any order, and an older one's refresh of a shared ancestor must not
/// undo a newer one's (locks keep them from writing the same node otherwise).
fn apply_base(nodes: &mut BTreeMap<Box<str>, Entry>, muts: &[Mutation]) {
    for m in muts {
        match m {
            Mutation::Put(k, e) => match nodes.get_mut(k) {
                Some(old) if old.version > e.version => {}
                Some(old) => *old = e.clone(),
                None => {
                    nodes.insert(k.clone(), e.clone());
                }
            },
            Mutation::DeleteSubtree(k) => {
                for k in subtree_keys(nodes, k) {
                    nodes.remove(&k);
                }
            }
        }
    }
}

fn apply_overlay(inner: &mut Inner, tx: TxId, muts: &[Mutation]) {
    // Tombstones need the base keys, so gather them (one list per delete) before borrowing the overlay.
    let mut base_keys: Vec<Vec<Box<str>>> = muts
        .iter()
        .filter_map(|m| match m {
            Mutation::DeleteSubtree(k) => Some(subtree_keys(&inner.nodes, k)),
            Mutation::Put(..) => None,
        })
        .collect::<Vec<_>>();
    base_keys.reverse();
    let overlay = inner.txs.entry(tx).or_default();
    for m in muts {
        match m {
            Mutation::Put(k, e) => {
                overlay.view.insert(k.clone(), Some(e.clone()));
            }
            Mutation::DeleteSubtree(k) => {
                let shadowed = subtree_keys(&overlay.view, k);
                for key in shadowed.into_iter().chain(base_keys.pop().unwrap_or_default()) {
                    overlay.view.insert(key, None);
                }
            }
        }
        overlay.log.push(m.clone());
    }
}

fn subtree_keys<V>(map: &BTreeMap<Box<str>, V>, key: &str) -> Vec<Box<str>> {
    let end = subtree_end(key);
    map.range::<str, _>((Bound::Included(key), Bound::Excluded(end.as_str()))).map(|(k, _)| k.clone()).collect()
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The base map seen through a transaction's overlay.
struct View<'a> {
    base: &'a BTreeMap<Box<str>, Entry>,
    overlay: Option<&'a Overlay>,
}

impl<'a> View<'a> {
    fn new(inner: &'a Inner, tx: Option<TxId>) -> Self {
        Self { base: &inner.nodes, overlay: tx.and_then(|t| inner.txs.get(&t)) }
    }

    fn get(&self, key: &str) -> Option<&'a Entry> {
        match self.overlay.and_then(|o| o.view.get(key)) {
            Some(shadow) => shadow.as_ref(),
            None => self.base.get(key),
        }
    }

    fn child_names(&self, key: &str) -> Vec<String> {
        let mut names = names_in(self.base, key, |_| true);
        if let Some(o) = self.overlay {
            names.extend(names_in(&o.view, key, Option::is_some));
            names.sort();
            names.dedup();
            names.retain(|n| self.get(&child_key(key, n)).is_some());
        }
        names
    }

    /// Every node of the subtree at `key` (itself first), in key order.
    /// Whether the stored subtree at `key` holds more than `n` nodes (counting stops there).
    fn base_subtree_exceeds(&self, key: &str, n: usize) -> bool {
        let end = subtree_end(key);
        self.base
            .range::<str, _>((Bound::Included(key), Bound::Excluded(end.as_str())))
            .take(n.saturating_add(1))
            .count()
            > n
    }

    fn subtree(&self, key: &str) -> Vec<(String, Entry)> {
        let end = subtree_end(key);
        let range = || (Bound::Included(key), Bound::Excluded(end.as_str()));
        let mut merged: BTreeMap<&str, Option<&Entry>> =
            self.base.range::<str, _>(range()).map(|(k, e)| (&**k, Some(e))).collect();
        if let Some(o) = self.overlay {
            merged.extend(o.view.range::<str, _>(range()).map(|(k, e)| (&**k, e.as_ref())));
        }
        merged.into_iter().filter_map(|(k, e)| e.map(|e| (k.to_owned(), e.clone()))).collect()
    }

    fn existing(&self, path: &Uri) -> Result<&'a Entry> {
        self.get(path.key()).ok_or_else(|| DmtError::not_found(path))
    }

    fn require_parent(&self, path: &Uri) -> Result<()> {
        let parent = path.parent().ok_or_else(|| DmtError::exists(path))?;
        match self.get(parent.key()) {
            None => Err(DmtError::not_found(&parent)),
            Some(p) if p.value.is_some() => Err(DmtError::not_allowed(path, "the parent is a leaf")),
            Some(_) => Ok(()),
        }
    }

    fn require_absent(&self, path: &Uri) -> Result<()> {
        match self.get(path.key()) {
            Some(_) => Err(DmtError::exists(path)),
            None => Ok(()),
        }
    }

    fn plan(&self, op: Op<'_>, next_version: &mut dyn FnMut() -> u64) -> Result<Vec<Mutation>> {
        let now = now_ms();
        let fresh = |value: Option<Value>, version: u64| Entry { value, version, modified_ms: now, extra: None };
        match op {
            Op::Add(path, node) => {
                self.require_absent(path)?;
                self.require_parent(path)?;
                let value = match node {
                    NewNode::Interior => None,
                    NewNode::Leaf(v) => Some(v.clone()),
                };
                Ok(vec![Mutation::Put(path.key().into(), fresh(value, next_version()))])
            }
            Op::Replace(path, value) => {
                let old = self.existing(path)?;
                if old.value.is_none() {
                    return Err(DmtError::not_allowed(path, "an interior node has no value to replace"));
                }
                let entry = Entry {
                    value: Some(value.clone()),
                    version: next_version(),
                    modified_ms: now,
                    extra: old.extra.clone(),
                };
                Ok(vec![Mutation::Put(path.key().into(), entry)])
            }
            Op::SetProps(path, patch) => {
                let old = self.existing(path)?;
                let mut extra = old.extra.as_deref().cloned().unwrap_or_default();
                if let Some(t) = &patch.title {
                    extra.title = t.as_deref().map(Box::from);
                }
                if let Some(m) = &patch.mime {
                    extra.mime = m.as_deref().map(Box::from);
                }
                let extra = (extra != Extra::default()).then(|| Box::new(extra));
                let entry = Entry { value: old.value.clone(), version: next_version(), modified_ms: now, extra };
                Ok(vec![Mutation::Put(path.key().into(), entry)])
            }
            Op::Delete(path) => {
                if path.is_root() {
                    return Err(DmtError::not_allowed(path, "the root of a handler cannot be deleted"));
                }
                self.existing(path)?;
                Ok(vec![Mutation::DeleteSubtree(path.key().into())])
            }
            Op::Rename(path, new_name) => {
                let parent = path.parent().ok_or_else(|| DmtError::not_allowed(path, "the root cannot be renamed"))?;
                let to = Uri::from_key(child_key(parent.key(), new_name));
                self.require_absent(&to)?;
                let moved = self.subtree(path.key());
                if moved.is_empty() {
                    return Err(DmtError::not_found(path));
                }
                let mut muts = vec![Mutation::DeleteSubtree(path.key().into())];
                for (i, (key, mut entry)) in moved.into_iter().enumerate() {
                    if i == 0 {
                        entry.version = next_version();
                        entry.modified_ms = now;
                    }
                    let new_key = format!("{}{}", to.key(), &key[path.key().len()..]);
                    muts.push(Mutation::Put(new_key.into(), entry));
                }
                Ok(muts)
            }
            Op::Copy(from, to) => {
                self.require_absent(to)?;
                self.require_parent(to)?;
                if from.is_prefix_of(to) {
                    return Err(DmtError::not_allowed(to, "cannot copy a node into its own subtree"));
                }
                let copied = self.subtree(from.key());
                if copied.is_empty() {
                    return Err(DmtError::not_found(from));
                }
                Ok(copied
                    .into_iter()
                    .map(|(key, entry)| {
                        let new_key = format!("{}{}", to.key(), &key[from.key().len()..]);
                        Mutation::Put(new_key.into(), Entry { version: next_version(), modified_ms: now, ..entry })
                    })
                    .collect())
            }
        }
    }
}

/// Direct child names under `key`, seeking past each child's subtree.
fn names_in<V>(map: &BTreeMap<Box<str>, V>, key: &str, keep: impl Fn(&V) -> bool) -> Vec<String> {
    let prefix = if key.is_empty() { String::new() } else { format!("{key}\0") };
    let mut names = Vec::new();
    let mut from = Bound::Excluded(key.to_owned());
    while let Some((k, v)) = map.range::<str, _>((from.as_ref().map(String::as_str), Bound::Unbounded)).next() {
        let Some(rest) = k.strip_prefix(prefix.as_str()) else { break };
        let name = rest.split('\0').next().unwrap_or(rest);
        if rest.len() == name.len() && keep(v) {
            names.push(name.to_owned());
        }
        from = Bound::Included(subtree_end(&child_key(key, name)));
    }
    names
}

#[cfg(test)]
mod tests;
