//! Data-handler benchmark, against a release `dmtree serve` on loopback:
//!
//! 1. GET latency of a polled value (a cloud supplier's VM CPU usage, served
//!    from the handler's snapshot) against a config-store leaf, same run;
//! 2. the CPU cost of polling a cloud of 1000 VMs every 10 s (four figures
//!    of every VM change on every poll, so each poll also diffs and publishes
//!    4000 events): dmtree's CPU time over a window with the mount polling, minus
//!    the same window with it unmounted.
//!
//! `cargo bench -p dmtree-api --bench handlers_load` (see BENCHMARKS.md).
//! Knobs: `BENCH_REQUESTS` (GETs per path and round, default 5000),
//! `BENCH_WINDOW_SECS` (CPU window, default 30).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(run());
}

/// 100 users × 10 VMs; each request moves every VM's CPU usage.
fn cloud(round: u64) -> String {
    let users: Vec<Value> = (0..100)
        .map(|u| {
            let vms: Vec<Value> = (0..10)
                .map(|v| json!({"name": format!("vm{v}"), "host": format!("h{}", v % 4), "state": "running",
                    "resources": {"cpu": {"vcpus": 2, "usage": ((round * 7 + u * 10 + v) % 1000) as f64 / 10.0},
                                  "memory": {"total": 4096, "used": 1024 + round % 512},
                                  "disk": {"total": 40, "used": 3}, "network": {"rx_bytes": round * 100, "tx_bytes": round * 50}}}))
                .collect();
            json!({"name": format!("user{u}"), "vms": vms})
        })
        .collect();
    json!({"users": users, "hosts": []}).to_string()
}

async fn start_cloud() -> (String, Arc<AtomicU64>) {
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move { cloud(n) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, served)
}

/// The process's user + system CPU time, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

async fn run() {
    let requests = common::env_or("BENCH_REQUESTS", 5000);
    let window = Duration::from_secs(common::env_or("BENCH_WINDOW_SECS", 30));
    let server = common::Server::start(&common::config_with(""));
    let admin = server.as_admin();
    let (url, served) = start_cloud().await;
    let mount = json!({"id": "cloud", "at": "./infra/cloud", "handler": "infrastructure",
        "config": {"supplier": "cloud", "url": url, "interval_ms": 10000, "idle_ms": 3600000, "timeout_ms": 5000}});
    assert_eq!(admin.post("/tree/mounts", mount).await.status, 201);
    assert_eq!(admin.put("/tree/config/bench/cpu", json!({"value": 10.5})).await.status, 201);

    let paths = [
        ("config-store leaf", "/tree/config/bench/cpu"),
        ("polled value", "/tree/infra/cloud/monitoring/users/user42/vm7/cpu/usage"),
    ];
    let client = reqwest::Client::new();
    for (_, path) in paths {
        let r = client.get(server.url(path)).send().await.expect("GET");
        assert_eq!(r.status(), 200, "{path}");
    }

    println!("# handlers: GET of a polled value vs a config-store leaf; CPU cost of polling 1000 VMs");
    println!("\n## sequential GETs, one connection, 2 alternating rounds of {requests} each (µs)");
    println!("| path | p50 | p99 | req/s | ratio to the config-store leaf |");
    println!("|---|---:|---:|---:|---:|");
    let mut hists = [Histogram::<u64>::new(3).expect("h"), Histogram::<u64>::new(3).expect("h")];
    let mut elapsed = [Duration::ZERO; 2];
    for _round in 0..2 {
        for (i, (_, path)) in paths.iter().enumerate() {
            let url = server.url(path);
            let started = Instant::now();
            for _ in 0..requests {
                let t0 = Instant::now();
                let r = client.get(&url).send().await.expect("GET");
                assert!(r.status().is_success());
                r.bytes().await.expect("body");
                hists[i].record(t0.elapsed().as_micros() as u64).expect("record");
            }
            elapsed[i] += started.elapsed();
        }
    }
    let rate = |i: usize| (2 * requests) as f64 / elapsed[i].as_secs_f64();
    for (i, (name, _)) in paths.iter().enumerate() {
        let (p50, p99) = (hists[i].value_at_quantile(0.5), hists[i].value_at_quantile(0.99));
        println!("| {name} | {p50} | {p99} | {:.0} | {:.2} |", rate(i), rate(i) / rate(0));
    }

    // CPU: a window with the 1000-VM mount polling every 10 s, then one with it unmounted.
    let pid = server.pid();
    let polls = async || {
        let r = admin.get("/tree/infra/cloud/monitoring/poller/polls").await;
        r.body["value"].as_u64().unwrap_or(0)
    };
    let (p0, c0, s0) = (polls().await, cpu_time(pid), served.load(Ordering::Relaxed));
    tokio::time::sleep(window).await;
    let (p1, c1, s1) = (polls().await, cpu_time(pid), served.load(Ordering::Relaxed));
    assert_eq!(admin.delete("/tree/mounts/cloud").await.status, 204);
    let c2 = cpu_time(pid);
    tokio::time::sleep(window).await;
    let c3 = cpu_time(pid);
    let (busy, idle) = (c1 - c0, c3 - c2);
    let polls = (p1 - p0).max(1);
    let per_poll = busy.saturating_sub(idle).as_secs_f64() * 1000.0 / polls as f64;
    println!(
        "\n## CPU cost of polling 1000 VMs every 10 s ({}-s windows, 4000 changed values per poll)",
        window.as_secs()
    );
    println!("| window | polls | supplier requests | dmtree CPU (ms) |");
    println!("|---|---:|---:|---:|");
    println!("| polling | {polls} | {} | {} |", s1 - s0, busy.as_millis());
    println!("| unmounted (baseline) | 0 | 0 | {} |", idle.as_millis());
    println!(
        "\nper poll: {per_poll:.1} ms of CPU; at one poll per 10 s that is {:.3} % of one core",
        per_poll / 10_000.0 * 100.0
    );
}
