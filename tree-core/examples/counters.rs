//! A new data handler in a page: named integer counters, kept in a map,
//! mounted at `./counters`. Writes are checked by the tree (ACLs, meta) before
//! the handler sees them; the handler only stores and answers.
//!
//! `cargo run -p dmtree-core --example counters`

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use dmtree_core::{
    Acl, Caller, Content, DataHandler, DmtError, Format, MemoryTreeStore, Meta, NewNode, Node, NodeKind, OpContext,
    Principal, Result, Tree, TreeConfig, Uri, UriLimits, Value, Write,
};
use parking_lot::Mutex;

/// The handler: `./counters/<name>` is an integer leaf.
#[derive(Default)]
struct Counters(Mutex<BTreeMap<String, i64>>);

/// The one name a path below the mount point names, if it is exactly one deep.
fn name(path: &Uri) -> Option<&str> {
    path.name().filter(|_| path.depth() == 1)
}

#[async_trait]
impl DataHandler for Counters {
    fn kind(&self) -> &'static str {
        "counters"
    }

    async fn get(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        if path.is_root() {
            return Ok(Node::interior());
        }
        let counters = self.0.lock();
        let value = name(path).and_then(|n| counters.get(n)).ok_or_else(|| DmtError::not_found(path))?;
        Ok(Node::leaf(Value::Int(*value)))
    }

    async fn children(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        Ok(if path.is_root() { self.0.lock().keys().cloned().collect() } else { Vec::new() })
    }

    /// The trap: `meta` defaults to read-only, so without this the tree
    /// refuses every write ("command not allowed") before `add` is ever called.
    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        Ok(if path.is_root() {
            Meta::read_only()
        } else {
            Meta { kind: Some(NodeKind::Leaf), formats: vec![Format::Int], ..Meta::permissive() }
        })
    }

    async fn add(&self, _cx: OpContext<'_>, path: &Uri, node: NewNode) -> Result<()> {
        let (Some(n), NewNode::Leaf(Value::Int(v))) = (name(path), node) else {
            return Err(DmtError::not_allowed(path, "a counter is an int leaf directly below ./counters"));
        };
        self.0.lock().insert(n.to_owned(), v);
        Ok(())
    }

    async fn replace(&self, _cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        let (Some(n), Value::Int(v)) = (name(path), value) else { return Err(DmtError::not_found(path)) };
        self.0.lock().insert(n.to_owned(), v);
        Ok(())
    }

    async fn delete(&self, _cx: OpContext<'_>, path: &Uri) -> Result<()> {
        name(path).and_then(|n| self.0.lock().remove(n)).map(drop).ok_or_else(|| DmtError::not_found(path))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let tree = Tree::open(TreeConfig::default(), Arc::new(MemoryTreeStore::default()), Acl::default_root()).await?;
    let at = Uri::parse("./counters", &UriLimits::default())?;
    tree.mount("counters", at.clone(), Arc::new(Counters::default()))?;

    let admin = Principal::named("admin");
    let hits = at.join_name("hits");
    let set = |v| Write { content: Some(Content::Leaf(Value::Int(v))), ..Write::default() };
    tree.put(&Caller::new(&admin), &hits, set(1)).await?;
    tree.put(&Caller::new(&admin), &hits, set(2)).await?;

    // The tree checks before the handler: anonymous callers may read, not write.
    let refused = tree.put(&Caller::new(&Principal::Anonymous), &hits, set(3)).await;
    println!("anonymous write: {}", refused.err().map_or("accepted", |e| e.code().as_str()));
    let view = tree.read(&Caller::new(&Principal::Anonymous), &at, 1).await?;
    for child in view.children.unwrap_or_default() {
        println!("{} = {:?}", child.uri, child.node.and_then(|n| n.value));
    }
    Ok(())
}
