//! Federation benchmark: GET of a leaf on A, served locally, through one
//! mount (A → C) and through two (A → B → C), in one run against three
//! release `dmtree serve` processes on loopback. Read caches are off, so every
//! remote GET is forwarded.
//!
//! `cargo bench -p dmtree-api --bench federation_load` (see BENCHMARKS.md).
//! Knobs: `BENCH_REQUESTS` (sequential GETs per path, default 5000),
//! `BENCH_SECS` (concurrent phase per path, default 5), `BENCH_CONNS` (default 16).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let requests = common::env_or("BENCH_REQUESTS", 5000);
    let secs = Duration::from_secs(common::env_or("BENCH_SECS", 5));
    let conns = common::env_or("BENCH_CONNS", 16) as usize;
    let t = common::Trio::start(json!({"cache_ms": 0}), false).await;

    // A mounts C directly too (C grants site-a), for the one-hop path.
    let grant = json!({"id": "a", "principal": "site-a", "subtrees": ["./config/infra"], "rights": "read-only"});
    assert_eq!(t.c.as_admin().post("/tree/federation/grants", grant).await.status, 201);
    let direct = json!({"id": "c", "at": "./direct/c", "url": t.c.base, "remote_uri": "./config/infra",
        "credentials": {"token": common::SITE_A}, "cache_ms": 0});
    assert_eq!(t.a.as_admin().post("/tree/mounts", direct).await.status, 201);
    assert_eq!(t.a.as_admin().put("/tree/config/bench/cpu", json!({"value": 10})).await.status, 201);

    let paths =
        [("local", "/tree/config/bench/cpu"), ("1 hop", "/tree/direct/c/cpu"), ("2 hops", "/tree/sites/b/c/cpu")];
    let client = reqwest::Client::new();
    for (_, path) in paths {
        let r = client.get(t.a.url(path)).send().await.expect("GET");
        assert_eq!(r.status(), 200, "{path}");
    }

    println!("# GET of a leaf on A: local, through one mount, through two (read caches off)");
    println!("\n## sequential, one connection, {requests} GETs each (µs)");
    println!("| path | p50 | p99 | added p50 per hop | ratio of local throughput |");
    println!("|---|---:|---:|---:|---:|");
    let mut p50s = Vec::new();
    for (name, path) in paths {
        let url = t.a.url(path);
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        let started = Instant::now();
        for _ in 0..requests {
            let t0 = Instant::now();
            let r = client.get(&url).send().await.expect("GET");
            assert!(r.status().is_success());
            r.bytes().await.expect("body");
            hist.record(t0.elapsed().as_micros() as u64).expect("record");
        }
        let rate = requests as f64 / started.elapsed().as_secs_f64();
        let p50 = hist.value_at_quantile(0.5);
        let added = match p50s.last() {
            Some((_, prev)) => format!("+{}", p50 as i64 - *prev as i64),
            None => "—".into(),
        };
        let ratio = p50s.first().map_or(1.0, |(local_rate, _)| rate / local_rate);
        println!("| {name} | {p50} | {} | {added} | {ratio:.2} |", hist.value_at_quantile(0.99));
        p50s.push((rate, p50));
    }

    println!("\n## concurrent, {conns} connections, {} s each (req/s)", secs.as_secs());
    println!("| path | req/s | ratio to local |");
    println!("|---|---:|---:|");
    let mut local = None;
    for (name, path) in paths {
        let rate = concurrent(&t.a.url(path), conns, secs).await;
        let base = *local.get_or_insert(rate);
        println!("| {name} | {rate:.0} | {:.2} |", rate / base);
    }
}

/// Closed loop: `conns` clients, each sending its next GET when the last one answers.
async fn concurrent(url: &str, conns: usize, secs: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (url, done) = (url.to_owned(), done.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while started.elapsed() < secs {
                    let r = client.get(&url).send().await.expect("GET");
                    assert!(r.status().is_success());
                    r.bytes().await.expect("body");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
