//! Hot paths of the tree: `cargo bench -p dmtree-core --bench core`.
//! Each group pairs the operation with a baseline measured in the same run.

use std::collections::HashMap;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use dmtree_core::acl::AclTable;
use dmtree_core::nodemap::{NodeMap, Op};
use dmtree_core::{
    Acl, Caller, MemoryHandler, MemoryTreeStore, NewNode, Principal, Tree, TreeConfig, TxId, Uri, UriLimits, Value,
};

fn uri_parsing(c: &mut Criterion) {
    let limits = UriLimits::default();
    let text = "./infrastructure/cloud_1/users/alice/vms/vm-17/cpu/usage";
    let mut g = c.benchmark_group("uri");
    g.bench_function("baseline: split on /", |b| b.iter(|| black_box(text).split('/').count()));
    g.bench_function("Uri::parse", |b| b.iter(|| Uri::parse(black_box(text), &limits)));
    g.bench_function("Uri::from_http_path", |b| b.iter(|| Uri::from_http_path(black_box(&text[1..]), &limits)));
    g.finish();
}

fn acl_checks(c: &mut Criterion) {
    let mut table = AclTable::new(Acl::default_root());
    for i in 0..1_000 {
        let uri = Uri::from_key(format!("config\0team{i}"));
        table.set(&uri, Some(format!("Get=user{i}&Replace=user{i}").parse().unwrap())).unwrap();
    }
    let deep = Uri::from_key("config\0team500\0a\0b\0c");
    let alice = Principal::named("user500");
    let mut g = c.benchmark_group("acl");
    let flat: HashMap<Uri, ()> = HashMap::from([(deep.clone(), ())]);
    g.bench_function("baseline: one HashMap lookup", |b| b.iter(|| flat.contains_key(black_box(&deep))));
    g.bench_function("effective ACL, depth 5, 1000 ACLs", |b| {
        b.iter(|| table.permits(black_box(&deep), &alice, dmtree_core::Permission::Get))
    });
    g.finish();
}

fn filled(n: u64) -> NodeMap {
    let map = NodeMap::new();
    let tx = TxId(1);
    for i in 0..n {
        let parent = Uri::from_key(format!("b{}", i / 1000));
        if i % 1000 == 0 {
            map.stage(tx, &map.plan(Some(tx), Op::Add(&parent, &NewNode::Interior)).unwrap());
        }
        let leaf = parent.join_name(&format!("n{i}"));
        map.stage(tx, &map.plan(Some(tx), Op::Add(&leaf, &NewNode::Leaf(Value::Int(i as i64)))).unwrap());
    }
    map.commit(tx);
    map
}

fn node_map(c: &mut Criterion) {
    let mut g = c.benchmark_group("nodemap get");
    for n in [1_000u64, 1_000_000] {
        let map = filled(n);
        let key = Uri::from_key(format!("b{}\0n{}", (n / 2) / 1000, n / 2));
        let baseline: HashMap<Uri, Value> = HashMap::from([(key.clone(), Value::Int(1))]);
        g.bench_with_input(BenchmarkId::new("baseline: HashMap get", n), &n, |b, _| {
            b.iter(|| baseline.get(black_box(&key)).cloned())
        });
        g.bench_with_input(BenchmarkId::new("NodeMap::get", n), &n, |b, _| b.iter(|| map.get(None, black_box(&key))));
    }
    g.finish();
}

fn tree_read(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tree = rt.block_on(async {
        let tree =
            Tree::open(TreeConfig::default(), Arc::new(MemoryTreeStore::default()), Acl::default_root()).await.unwrap();
        tree.mount("config", Uri::from_key("config"), Arc::new(MemoryHandler::default())).unwrap();
        let admin = Principal::named("admin");
        let write =
            dmtree_core::Write { content: Some(dmtree_core::Content::Leaf(Value::Int(42))), ..Default::default() };
        tree.put(&Caller::new(&admin), &Uri::from_key("config\0app\0limit"), write).await.unwrap();
        tree
    });
    let uri = Uri::from_key("config\0app\0limit");
    let anon = Principal::Anonymous;
    let mut g = c.benchmark_group("tree read of a leaf");
    g.bench_function("Tree::read (route, ACL, handler)", |b| {
        b.iter(|| rt.block_on(tree.read(&Caller::new(&anon), black_box(&uri), 0)).unwrap())
    });
    g.finish();
}

/// Fan-out cost of one event with 10 versus 10 000 subscriptions elsewhere in
/// the tree: a write, and its delivery to the one matching feed.
fn fanout(c: &mut Criterion) {
    use dmtree_core::{Delivery, Filter, UriPattern};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut g = c.benchmark_group("fan-out: write + delivery to the one matching feed");
    for others in [10usize, 10_000] {
        let (tree, mut feed, _others) = rt.block_on(async {
            let tree = Tree::open(TreeConfig::default(), Arc::new(MemoryTreeStore::default()), Acl::default_root())
                .await
                .unwrap();
            tree.mount("config", Uri::from_key("config"), Arc::new(MemoryHandler::default())).unwrap();
            let limits = UriLimits::default();
            let admin = Principal::named("admin");
            let feeds: Vec<_> = (0..others)
                .map(|i| {
                    let pattern = UriPattern::parse(&format!("./config/other{i}/**"), &limits).unwrap();
                    tree.subscribe(admin.clone(), Filter::new(pattern), tree.events().head(), 16)
                })
                .collect();
            let pattern = UriPattern::parse("./config/hot/**", &limits).unwrap();
            let feed = tree.subscribe(admin, Filter::new(pattern), tree.events().head(), 1024);
            (tree, feed, feeds)
        });
        let admin = Principal::named("admin");
        let uri = Uri::from_key("config\0hot\0x");
        let mut n = 0i64;
        g.bench_with_input(BenchmarkId::from_parameter(others), &others, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    n += 1;
                    let write = dmtree_core::Write {
                        content: Some(dmtree_core::Content::Leaf(Value::Int(n))),
                        ..Default::default()
                    };
                    tree.put(&Caller::new(&admin), &uri, write).await.unwrap();
                    loop {
                        if let Some(Delivery::Event(e)) = feed.next().await
                            && e.value == Some(serde_json::json!(n))
                        {
                            break;
                        }
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, uri_parsing, acl_checks, node_map, tree_read, fanout);
criterion_main!(benches);
