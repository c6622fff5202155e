//! Bytes of heap per node in the node map (the in-memory half of the config
//! store), counted by a global allocator: `cargo bench -p dmtree-core --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use dmtree_core::nodemap::{NodeMap, Op};
use dmtree_core::{NewNode, TxId, Uri, Value};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Adds `n` int leaves under 1000-wide interior nodes, as the HTTP benchmark does.
fn fill(map: &NodeMap, n: u64) {
    let batch = 20_000;
    for (tx, start) in (1..).zip((0..n).step_by(batch)) {
        let id = TxId(tx);
        for i in start..(start + batch as u64).min(n) {
            let parent = Uri::from_key(format!("big\0b{}", i / 1000));
            if i % 1000 == 0 {
                let muts = map.plan(Some(id), Op::Add(&parent, &NewNode::Interior)).expect("plan");
                map.stage(id, &muts);
            }
            let leaf = parent.join_name(&format!("n{i}"));
            let muts = map.plan(Some(id), Op::Add(&leaf, &NewNode::Leaf(Value::Int(i as i64)))).expect("plan");
            map.stage(id, &muts);
        }
        map.commit(id);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("| nodes | heap bytes | bytes per node |\n|---:|---:|---:|");
    for n in [1_000u64, 100_000, 1_000_000] {
        let before = LIVE.load(Ordering::Relaxed);
        let map = NodeMap::new();
        let muts = map.plan(None, Op::Add(&Uri::from_key("big"), &NewNode::Interior)).expect("plan");
        map.apply(&map.finish(&muts));
        fill(&map, n);
        let nodes = map.len() as isize;
        let bytes = LIVE.load(Ordering::Relaxed) - before;
        println!("| {nodes} | {bytes} | {:.0} |", bytes as f64 / nodes as f64);
        drop(map);
    }
}
