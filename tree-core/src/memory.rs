//! A volatile, transactional read-write handler: scratch space that needs no
//! persistence (and the second handler that cross-handler tests mount).

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::error::Result;
use crate::handler::{DataHandler, OpContext, TxId};
use crate::meta::Meta;
use crate::node::{NewNode, Node, PropsPatch};
use crate::nodemap::{NodeMap, Op};
use crate::uri::Uri;
use crate::value::Value;

#[derive(Default)]
pub struct MemoryHandler {
    nodes: NodeMap,
    /// Plan and apply must not interleave between writers.
    writer: Mutex<()>,
}

impl MemoryHandler {
    fn write(&self, cx: OpContext<'_>, op: Op<'_>) -> Result<()> {
        let _guard = self.writer.lock();
        let muts = self.nodes.plan(cx.tx, op)?;
        match cx.tx {
            Some(tx) => self.nodes.stage(tx, &muts),
            None => self.nodes.apply(&self.nodes.finish(&muts)),
        }
        Ok(())
    }
}

#[async_trait]
impl DataHandler for MemoryHandler {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        self.nodes.get(cx.tx, path)
    }

    async fn children(&self, cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        self.nodes.children(cx.tx, path)
    }

    async fn meta(&self, _cx: OpContext<'_>, _path: &Uri) -> Result<Meta> {
        Ok(Meta::permissive())
    }

    async fn add(&self, cx: OpContext<'_>, path: &Uri, node: NewNode) -> Result<()> {
        self.write(cx, Op::Add(path, &node))
    }

    async fn replace(&self, cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        self.write(cx, Op::Replace(path, &value))
    }

    async fn set_props(&self, cx: OpContext<'_>, path: &Uri, patch: PropsPatch) -> Result<()> {
        self.write(cx, Op::SetProps(path, &patch))
    }

    async fn delete(&self, cx: OpContext<'_>, path: &Uri) -> Result<()> {
        self.write(cx, Op::Delete(path))
    }

    async fn rename(&self, cx: OpContext<'_>, path: &Uri, new_name: &str) -> Result<()> {
        self.write(cx, Op::Rename(path, new_name))
    }

    async fn copy(&self, cx: OpContext<'_>, from: &Uri, to: &Uri) -> Result<()> {
        self.write(cx, Op::Copy(from, to))
    }

    fn transactional(&self) -> bool {
        true
    }

    async fn commit(&self, tx: TxId) -> Result<()> {
        // Serialised with other commits, so versions follow commit order.
        let _guard = self.writer.lock();
        self.nodes.commit(tx);
        Ok(())
    }

    async fn rollback(&self, tx: TxId) {
        self.nodes.rollback(tx);
    }
}
