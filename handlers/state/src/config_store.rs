//! The config store: a read-write subtree served from memory and written
//! through to SQLite. Writes inside a transaction live in the node map's
//! overlay; `prepare` puts a job in the transaction's unit that stamps their
//! versions and writes their rows when the writer reaches it, and a hook that
//! shows them once the batch is durable; the tree's store commits that unit
//! with the ACLs and events (all or nothing, also across a crash).

use crate::codec::{NodeRow, decode, encode};
use crate::group_commit::Unit;
use crate::{SqliteState, StateError};
use std::sync::Arc;

use async_trait::async_trait;
use dmtree_core::nodemap::{Mutation, NodeMap, Op, subtree_end};
use dmtree_core::{
    DataHandler, DmtError, Meta, NewNode, Node, OpContext, PropsPatch, Result, Scope, TxId, Uri, UriPattern, Value,
};
use futures_util::TryStreamExt;

/// Meta for the nodes a pattern matches (patterns are relative to the store's mount point).
#[derive(Debug, Clone)]
pub struct SchemaRule {
    pub pattern: UriPattern,
    pub meta: Meta,
}

pub struct ConfigStore {
    /// Shared with the writer thread, which stamps versions as it commits.
    nodes: Arc<NodeMap>,
    state: SqliteState,
    schema: Vec<SchemaRule>,
}

fn failure(e: impl ToString) -> DmtError {
    DmtError::store(&Uri::root(), e)
}

impl ConfigStore {
    /// Loads every stored node into memory. A transaction may write at most
    /// `write_limit` nodes.
    pub async fn open(state: SqliteState, schema: Vec<SchemaRule>, write_limit: usize) -> Result<Self, StateError> {
        let nodes = Arc::new(NodeMap::with_write_limit(write_limit));
        let mut rows =
            sqlx::query("SELECT path, format, value, title, mime, version, modified_ms FROM nodes").fetch(&state.pool);
        let mut batch = Vec::with_capacity(4096);
        while let Some(row) = rows.try_next().await? {
            match decode(&row) {
                Ok(entry) => batch.push(entry),
                Err(e) => return Err(StateError::Sql(sqlx::Error::Decode(e.into()))),
            }
            if batch.len() == batch.capacity() {
                nodes.load(batch.drain(..));
            }
        }
        nodes.load(batch);
        drop(rows);
        tracing::info!(nodes = nodes.len(), "config store loaded");
        Ok(Self { nodes, state, schema })
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    async fn write(&self, cx: OpContext<'_>, op: Op<'_>) -> Result<()> {
        match cx.tx {
            // The tree's locks keep concurrent transactions on disjoint subtrees.
            Some(tx) => {
                let muts = self.nodes.plan(Some(tx), op)?;
                self.nodes.stage(tx, &muts);
            }
            None => {
                let muts = Arc::new(self.nodes.finish(&self.nodes.plan(None, op)?));
                let mut unit = Unit::default();
                let rows = muts.clone();
                unit.push(move |c| persist(c, &rows));
                self.state.group.commit(unit).await.map_err(failure)?;
                self.nodes.apply(&muts);
            }
        }
        Ok(())
    }
}

/// Writes the rows that make `muts` durable. A row never goes back to an
/// older version (a safety net: transactions are stamped in writer order).
fn persist(c: &rusqlite::Connection, muts: &[Mutation]) -> rusqlite::Result<()> {
    for m in muts {
        match m {
            Mutation::Put(key, entry) => {
                let r: NodeRow = encode(entry);
                c.prepare_cached(
                    "INSERT INTO nodes (path, format, value, title, mime, version, modified_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT(path) DO UPDATE SET format = excluded.format, value = excluded.value, \
                     title = excluded.title, mime = excluded.mime, version = excluded.version, \
                     modified_ms = excluded.modified_ms WHERE excluded.version > nodes.version",
                )?
                .execute((
                    key.as_bytes(),
                    r.format,
                    r.value,
                    r.title,
                    r.mime,
                    r.version,
                    r.modified_ms,
                ))?
            }
            Mutation::DeleteSubtree(key) => c
                .prepare_cached("DELETE FROM nodes WHERE path >= ?1 AND path < ?2")?
                .execute((key.as_bytes(), subtree_end(key).into_bytes()))?,
        };
    }
    Ok(())
}

#[async_trait]
impl DataHandler for ConfigStore {
    fn kind(&self) -> &'static str {
        "config-store"
    }

    async fn get(&self, cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        self.nodes.get(cx.tx, path)
    }

    async fn children(&self, cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        self.nodes.children(cx.tx, path)
    }

    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        if path.is_root() {
            return Ok(Meta { scope: Scope::Permanent, ..Meta::permissive() });
        }
        Ok(self.schema.iter().find(|r| r.pattern.matches(path)).map_or_else(Meta::permissive, |r| r.meta.clone()))
    }

    async fn add(&self, cx: OpContext<'_>, path: &Uri, node: NewNode) -> Result<()> {
        self.write(cx, Op::Add(path, &node)).await
    }

    async fn replace(&self, cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        self.write(cx, Op::Replace(path, &value)).await
    }

    async fn set_props(&self, cx: OpContext<'_>, path: &Uri, patch: PropsPatch) -> Result<()> {
        self.write(cx, Op::SetProps(path, &patch)).await
    }

    async fn delete(&self, cx: OpContext<'_>, path: &Uri) -> Result<()> {
        self.write(cx, Op::Delete(path)).await
    }

    async fn rename(&self, cx: OpContext<'_>, path: &Uri, new_name: &str) -> Result<()> {
        self.write(cx, Op::Rename(path, new_name)).await
    }

    async fn copy(&self, cx: OpContext<'_>, from: &Uri, to: &Uri) -> Result<()> {
        self.write(cx, Op::Copy(from, to)).await
    }

    fn transactional(&self) -> bool {
        true
    }

    /// Readies the transaction's rows in its unit, which the tree's ACLs and
    /// events join. The writer stamps the versions when it reaches the unit
    /// and shows the changes right after its batch commits, so versions
    /// increase, and changes show, in commit order.
    async fn prepare(&self, tx: TxId) -> Result<()> {
        if self.nodes.has_changes(tx) {
            let mut prepared = self.state.prepared.lock();
            let unit = prepared.entry(tx).or_default();
            let nodes = self.nodes.clone();
            unit.push(move |c| persist(c, &nodes.prepare(tx)));
            let nodes = self.nodes.clone();
            unit.then(move |committed| {
                if committed {
                    nodes.commit(tx);
                }
            });
        }
        Ok(())
    }

    /// Shown already by the writer once durable; this shows a transaction
    /// that wrote nothing durable (nothing to show).
    async fn commit(&self, tx: TxId) -> Result<()> {
        self.nodes.commit(tx);
        Ok(())
    }

    async fn rollback(&self, tx: TxId) {
        self.state.prepared.lock().remove(&tx);
        self.nodes.rollback(tx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;
    use dmtree_core::nodemap::MAX_WRITE_NODES;
    use dmtree_core::{Principal, UriLimits};

    fn u(s: &str) -> Uri {
        Uri::parse(&format!("./{s}"), &UriLimits::default()).unwrap()
    }

    #[tokio::test]
    async fn writes_survive_reopen_and_uncommitted_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let admin = Principal::named("admin");
        {
            let state = SqliteState::open(&path, Durability::Fsync).await.unwrap();
            let store = ConfigStore::open(state.clone(), Vec::new(), MAX_WRITE_NODES).await.unwrap();
            let cx = OpContext { principal: &admin, tx: None };
            store.add(cx, &u("a"), NewNode::Interior).await.unwrap();
            store.add(cx, &u("a/b"), NewNode::Leaf(Value::Int(1))).await.unwrap();
            store.set_props(cx, &u("a/b"), PropsPatch { title: Some(Some("B".into())), mime: None }).await.unwrap();

            let committed = OpContext { principal: &admin, tx: Some(TxId(1)) };
            store.add(committed, &u("c"), NewNode::Leaf(Value::string("yes"))).await.unwrap();
            store.prepare(TxId(1)).await.unwrap();
            dmtree_core::TreeStore::commit(&state, TxId(1)).await.unwrap();
            store.commit(TxId(1)).await.unwrap();

            let abandoned = OpContext { principal: &admin, tx: Some(TxId(2)) };
            store.add(abandoned, &u("d"), NewNode::Leaf(Value::Int(9))).await.unwrap();
            store.prepare(TxId(2)).await.unwrap();
            store.rollback(TxId(2)).await;

            let never = OpContext { principal: &admin, tx: Some(TxId(3)) };
            store.add(never, &u("e"), NewNode::Leaf(Value::Int(9))).await.unwrap();
        }
        let store =
            ConfigStore::open(SqliteState::open(&path, Durability::Fsync).await.unwrap(), Vec::new(), MAX_WRITE_NODES)
                .await
                .unwrap();
        let cx = OpContext { principal: &admin, tx: None };
        let b = store.get(cx, &u("a/b")).await.unwrap();
        assert_eq!((b.value, b.props.title.as_deref()), (Some(Value::Int(1)), Some("B")));
        assert_eq!(store.get(cx, &u("c")).await.unwrap().value, Some(Value::string("yes")));
        assert_eq!(store.children(cx, &Uri::root()).await.unwrap(), ["a", "c"]);
        store.delete(cx, &u("a")).await.unwrap();
        drop(store);
        let store =
            ConfigStore::open(SqliteState::open(&path, Durability::Fsync).await.unwrap(), Vec::new(), MAX_WRITE_NODES)
                .await
                .unwrap();
        assert_eq!(store.children(cx, &Uri::root()).await.unwrap(), ["c"]);
    }

    /// Versions are stamped by the writer, in commit order, whatever order
    /// the transactions prepared in: a parent's version is its newest
    /// child's, in memory and on disk alike.
    #[tokio::test]
    async fn versions_follow_commit_order_in_memory_and_on_disk() {
        use dmtree_core::TreeStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let admin = Principal::named("admin");
        let state = SqliteState::open(&path, Durability::Os).await.unwrap();
        let store = ConfigStore::open(state.clone(), Vec::new(), MAX_WRITE_NODES).await.unwrap();
        let none = OpContext { principal: &admin, tx: None };
        store.add(none, &u("p"), NewNode::Interior).await.unwrap();
        for (tx, name) in [(TxId(1), "p/a"), (TxId(2), "p/b")] {
            store
                .add(OpContext { principal: &admin, tx: Some(tx) }, &u(name), NewNode::Leaf(Value::Int(1)))
                .await
                .unwrap();
            store.prepare(tx).await.unwrap();
        }
        // Prepared 1 then 2; committed 2 then 1.
        for tx in [TxId(2), TxId(1)] {
            state.commit(tx).await.unwrap();
            store.commit(tx).await.unwrap();
        }
        let version = |store: &ConfigStore, name: &str| {
            let store = store.nodes.clone();
            let uri = u(name);
            move || store.get(None, &uri).unwrap().props.version
        };
        let (p, a, b) = (version(&store, "p")(), version(&store, "p/a")(), version(&store, "p/b")());
        assert!(b < a && a == p, "a committed last, so p carries a's version: p {p}, a {a}, b {b}");
        drop(store);
        let reopened = ConfigStore::open(state, Vec::new(), MAX_WRITE_NODES).await.unwrap();
        assert_eq!(version(&reopened, "p")(), p, "the same version on disk");
    }
}
