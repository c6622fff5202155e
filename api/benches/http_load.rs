//! HTTP read benchmark: the real `dmtree serve` against a bare axum server
//! that serves the same JSON from a HashMap, side by side in one run (writes
//! are measured against etcd by `write_load`).
//! Throughput comes from wrk (closed loop); latency at a fixed rate from a
//! paced client here, since wrk cannot pace.
//!
//! `cargo bench -p dmtree-api --bench http_load` (see BENCHMARKS.md). Knobs:
//! `BENCH_SECS` (per phase, default 10), `BENCH_CONNS` (default 32),
//! `BENCH_BIG` (nodes for the tree-size phase, default 1000000; 0 skips it).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::load::{MakeRequest, Report, Wrk, open_loop, rss_kib, wrk, wrk_available};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use parking_lot::RwLock;
use serde_json::json;

const LEAF: &str = "/tree/config/bench/leaf";

fn main() {
    if std::env::args().any(|a| a == "--bare-server") {
        bare_server();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    // The paced client gets one thread; the servers under test get the machine's threads.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let secs = Duration::from_secs(common::env_or("BENCH_SECS", 10));
    let conns = common::env_or("BENCH_CONNS", 32) as usize;
    let big = common::env_or("BENCH_BIG", 1_000_000);
    if !wrk_available() {
        eprintln!("http_load needs wrk (apt-get install wrk)");
        std::process::exit(2);
    }

    let server = common::Server::start(&common::config_with("max_body_bytes = 16777216\n"));
    let admin = server.as_admin();
    admin.put(LEAF, json!({"value": 42})).await;
    let body = admin.get(LEAF).await.body;
    let bare = BareProcess::start(&serde_json::to_vec(&body).expect("json"));
    println!("# http_load: {} s per phase, {conns} connections, loopback", secs.as_secs());
    println!("dmtree GET {LEAF}: {body}");
    let (dm, bare_addr) = (server.base.clone(), bare.base.clone());

    // Warm up, then alternate so drift hits both alike.
    let get = |base: &str, d| wrk(&format!("{base}{LEAF}"), conns, d, None, common::ADMIN);
    get(&dm, Duration::from_secs(2));
    get(&bare_addr, Duration::from_secs(2));
    let rounds = 5;
    let mut pairs = Vec::new();
    for _ in 0..rounds {
        let bare_run = get(&bare_addr, secs / 2);
        let dm_run = get(&dm, secs / 2);
        pairs.push((bare_run, dm_run));
    }
    let mut ratios: Vec<f64> = pairs.iter().map(|(b, d)| d.rps / b.rps).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[rounds / 2];
    let (bare_get, dm_get) = pairs
        .into_iter()
        .min_by(|a, b| (a.1.rps / a.0.rps - median).abs().total_cmp(&(b.1.rps / b.0.rps - median).abs()))
        .expect("pairs");
    println!("\n## GET of a leaf, closed loop (wrk -t1 -c{conns}; {rounds} alternating pairs, the median pair shown)");
    println!("{}", Wrk::header());
    println!("{}", bare_get.row("bare axum + HashMap (baseline)"));
    println!("{}", dm_get.row("dmtree: routing, auth, ACL, config store"));
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!("ratio dmtree/bare throughput: median {median:.2} (all pairs: {})", shown.join(", "));

    let half = dm_get.rps / 2.0;
    let target = |base: &str| base.trim_start_matches("http://").to_owned();
    let bare_open = open_loop(&target(&bare_addr), conns, half, secs, leaf_get()).await;
    let open = open_loop(&target(&dm), conns, half, secs, leaf_get()).await;
    println!("\n## GET at half of dmtree's peak ({half:.0} req/s), paced");
    println!("{}", Report::header());
    println!("{}", bare_open.row("bare axum + HashMap (baseline)"));
    println!("{}", open.row("dmtree"));

    if big > 0 {
        tree_size(&server, &target(&dm), conns, secs, big).await;
    }
}

/// GET latency at a fixed rate with 1k nodes, then with `big`; and memory per node.
async fn tree_size(server: &common::Server, dm: &str, conns: usize, secs: Duration, big: u64) {
    let admin = server.as_admin();
    let rate = 5_000.0;
    bulk_load(&admin, 0, 1_000).await;
    let nodes = |n: u64| n + n.div_ceil(1000) + 4;
    let small = open_loop(dm, conns, rate, secs, leaf_get()).await;
    let rss_before = rss_kib(server.pid());
    let started = Instant::now();
    bulk_load(&admin, 1_000, big).await;
    let load_secs = started.elapsed().as_secs_f64();
    let rss_after = rss_kib(server.pid());
    let large = open_loop(dm, conns, rate, secs, leaf_get()).await;
    println!("\n## GET latency as the config store grows (paced at {rate:.0} req/s)");
    println!("{}", Report::header());
    println!("{}", small.row(&format!("{} nodes", nodes(1_000))));
    println!("{}", large.row(&format!("{} nodes", nodes(big))));
    println!(
        "bulk load of {} leaves by PATCH (20k per call): {load_secs:.1} s ({:.0} nodes/s)",
        big - 1_000,
        (big - 1_000) as f64 / load_secs
    );
    let added = nodes(big) - nodes(1_000);
    let per_node = rss_after.saturating_sub(rss_before) as f64 * 1024.0 / added as f64;
    println!(
        "server RSS {} MiB -> {} MiB: {per_node:.0} bytes per added config-store node",
        rss_before / 1024,
        rss_after / 1024
    );
}

/// Leaves `./config/big/b<i/1000>/n<i>` for `i` in `from..to`.
async fn bulk_load(admin: &common::Http, from: u64, to: u64) {
    let batch = 20_000u64;
    for start in (from..to).step_by(batch as usize) {
        let leaves: serde_json::Map<String, serde_json::Value> =
            (start..(start + batch).min(to)).map(|i| (format!("b{}/n{i}", i / 1000), json!(i))).collect();
        let r = admin.patch("/tree/config/big", serde_json::Value::Object(leaves)).await;
        assert!(r.status == 200, "bulk load failed: {} {}", r.status, r.body);
    }
}

/// GETs of the bench leaf, as the admin.
fn leaf_get() -> MakeRequest {
    Arc::new(|addr, _| {
        Request::builder()
            .header(header::HOST, addr)
            .header(header::AUTHORIZATION, format!("Bearer {}", common::ADMIN))
            .uri(LEAF)
            .body(Full::new(Bytes::new()))
            .expect("request")
    })
}

/// The baseline, in its own process like dmtree: the same JSON from a HashMap.
struct BareProcess {
    child: std::process::Child,
    base: String,
}

impl BareProcess {
    fn start(body: &[u8]) -> Self {
        use std::io::{BufRead, Write};
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .arg("--bare-server")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn bare server");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(body).expect("send body");
        drop(stdin);
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("addr");
        BareProcess { child, base: format!("http://{}", line.trim()) }
    }
}

impl Drop for BareProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Store = Arc<RwLock<HashMap<String, Bytes>>>;

fn bare_server() {
    use std::io::Read;
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).expect("body");
    let store: Store = Arc::new(RwLock::new(HashMap::from([(LEAF.to_owned(), Bytes::from(body))])));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let app = Router::new().route("/tree/{*path}", axum::routing::get(bare_get)).with_state(store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("{}", listener.local_addr().expect("addr"));
        axum::serve(listener, app).await.expect("serve");
    });
}

async fn bare_get(State(store): State<Store>, uri: axum::http::Uri) -> impl IntoResponse {
    match store.read().get(uri.path()) {
        Some(b) => ([(header::CONTENT_TYPE, "application/json")], b.clone()).into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}
