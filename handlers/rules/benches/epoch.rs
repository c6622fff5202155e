//! One epoch of 100 local rules over 10 000 bindings (1 M condition
//! evaluations), against the same conditions as native Rust closures over
//! the same reads: `cargo bench -p dmtree-rules --bench epoch`.

use std::collections::HashMap;
use std::sync::Arc;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use dmtree_core::{
    Acl, Caller, Content, MemoryHandler, MemoryTreeStore, Principal, Tree, TreeConfig, Uri, Value, Write,
};
use dmtree_rules::epoch::{self, Epoch, Placement, Views};
use dmtree_rules::expr::Reader as _;
use dmtree_rules::reader::TreeReader;
use dmtree_rules::rule::{Rule, RuleSpec};
use serde_json::json;

const BINDINGS: usize = 10_000;
const RULES: usize = 100;

fn tree(rt: &tokio::runtime::Runtime) -> Arc<Tree> {
    rt.block_on(async {
        let tree =
            Tree::open(TreeConfig::default(), Arc::new(MemoryTreeStore::default()), Acl::default_root()).await.unwrap();
        tree.mount("bench", Uri::from_key("bench"), Arc::new(MemoryHandler::default())).unwrap();
        let admin = Principal::named("admin");
        for i in 0..BINDINGS {
            let uri = Uri::from_key(format!("bench\0n{i}\0load"));
            let write =
                Write { content: Some(Content::Leaf(Value::Float((i % 1000) as f64 / 1000.0))), ..Write::default() };
            tree.put(&Caller::new(&admin), &uri, write).await.unwrap();
        }
        tree
    })
}

/// About 1% of the bindings are over each rule's threshold: an epoch with some firings.
fn threshold(rule: usize) -> f64 {
    0.99 + rule as f64 / 10_000.0
}

fn rules() -> Vec<Arc<Rule>> {
    (0..RULES)
        .map(|j| {
            let spec: RuleSpec = serde_json::from_value(json!({
                "for_each": "./bench/*", "when": format!("value('load') > {}", threshold(j)),
                "actions": [{"set": "alarm", "value": true}]}))
            .unwrap();
            Arc::new(Rule::compile(&format!("r{j}"), "admin", spec).unwrap())
        })
        .collect()
}

fn epoch_of_rules(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let tree = tree(&rt);
    let rules = rules();
    let placement = Placement { member: "local".into(), coordinator: true, cloud: false };
    let reader =
        |tree: &Arc<Tree>| Arc::new(TreeReader::new(tree.clone(), Principal::named("admin"), rt.handle().clone(), 0));
    let mut g = c.benchmark_group("epoch: 100 rules x 10k bindings");
    g.sample_size(10);
    g.bench_function("baseline: native closures over the same reads", |b| {
        let conditions: Vec<Box<dyn Fn(f64) -> bool>> =
            (0..RULES).map(|j| Box::new(move |load: f64| load > threshold(j)) as Box<dyn Fn(f64) -> bool>).collect();
        b.iter(|| {
            let r = reader(&tree);
            let bindings = r.expand("./bench/*").unwrap();
            let mut fired = 0usize;
            for cond in &conditions {
                for b in bindings.iter() {
                    let load = r.value(&format!("{}/load", b.uri)).unwrap().as_f64().unwrap_or(0.0);
                    fired += cond(load) as usize;
                }
            }
            black_box(fired)
        })
    });
    g.bench_function("CEL: plan the epoch", |b| {
        b.iter(|| {
            let tree = tree.clone();
            let handle = rt.handle().clone();
            let mut views = Views::new(move |owner| {
                Arc::new(TreeReader::new(tree.clone(), Principal::named(owner), handle.clone(), 0))
            });
            let e = Epoch {
                number: 1,
                now_ms: 0,
                placement: &placement,
                budget: std::time::Duration::from_secs(60),
                record: false,
            };
            let plans = epoch::plan(&e, &rules, &HashMap::new(), &mut views);
            black_box(plans.iter().map(|p| p.outcomes.iter().filter(|o| o.would_fire).count()).sum::<usize>())
        })
    });
    g.finish();
}

/// From an epoch's start to its action's effect in the tree: the epoch
/// (plan, claim in SQLite, the `set`) and a read of the node, against a
/// plain write of the same node.
fn action_latency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let tree = rt.block_on(async {
        let tree =
            Tree::open(TreeConfig::default(), Arc::new(MemoryTreeStore::default()), Acl::default_root()).await.unwrap();
        tree.mount("bench", Uri::from_key("bench"), Arc::new(MemoryHandler::default())).unwrap();
        tree
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = dmtree_rules::Settings {
        database: format!("sqlite://{}?mode=rwc", dir.path().join("rules.db").display()),
        epoch: std::time::Duration::from_secs(3600),
        budget: std::time::Duration::from_secs(1),
        member: "local".into(),
        shared: false,
    };
    let admin = Principal::named("admin");
    let engine = rt.block_on(async {
        let engine = dmtree_rules::Engine::open(tree.clone(), settings).await.unwrap();
        let spec: RuleSpec = serde_json::from_value(json!({"scope": "global", "when": "value('./bench/go') == true",
            "actions": [{"set": "./bench/out", "expr": "value('./bench/n')"}]}))
        .unwrap();
        engine.put("latency", &admin, spec).await.unwrap();
        engine
    });
    let put = |path: &str, v: Value| {
        let write = Write { content: Some(Content::Leaf(v)), ..Write::default() };
        rt.block_on(tree.put(&Caller::new(&admin), &Uri::from_key(path.replace('/', "\0")), write)).unwrap();
    };
    let out = Uri::from_key("bench\0out");
    let mut g = c.benchmark_group("action latency");
    g.bench_function("baseline: write and read the node", |b| {
        let mut n = 0i64;
        b.iter(|| {
            n += 1;
            put("bench/out", Value::Int(n));
            rt.block_on(tree.read(&Caller::new(&admin), &out, 0)).unwrap()
        })
    });
    // Criterion may run the closure more than once: epochs only go forward.
    let mut epoch = 0i64;
    g.bench_function("epoch start to the effect visible", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                // Re-arm (condition false), then one epoch in which it fires.
                put("bench/go", Value::Bool(false));
                epoch += 1;
                rt.block_on(engine.epoch(epoch)).unwrap();
                epoch += 1;
                put("bench/n", Value::Int(epoch));
                put("bench/go", Value::Bool(true));
                let start = std::time::Instant::now();
                rt.block_on(engine.epoch(epoch)).unwrap();
                let seen = rt.block_on(tree.read(&Caller::new(&admin), &out, 0)).unwrap();
                total += start.elapsed();
                assert_eq!(seen.node.and_then(|n| n.value), Some(Value::Int(epoch)));
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, epoch_of_rules, action_latency);
criterion_main!(benches);
