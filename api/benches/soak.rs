//! Soak: the real `dmtree serve` under a steady mixed load (90 % GET, 10 %
//! PUT over 1000 leaves) at half of its measured peak, for a long time, with
//! SSE and AMQP subscribers draining every change. Reports per minute the
//! server's RSS, the latency percentiles and what the subscribers received;
//! then the memory growth and the p99 drift between the first and the last
//! five minutes. Not part of CI: it runs for `SOAK_MINUTES` (default 30).
//!
//! `cargo bench -p dmtree-api --bench soak` (see BENCHMARKS.md). Knobs:
//! `SOAK_MINUTES` (30), `SOAK_CONNS` (16), `SOAK_SSE` (8 streams),
//! `SOAK_AMQP` (4 subscriptions; 0 without RabbitMQ), `SOAK_RATE` (req/s;
//! default half of the peak measured first).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::load::{connect, send};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::Request;
use hyper::header;
use parking_lot::Mutex;

const LEAVES: u64 = 1000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let minutes = common::env_or("SOAK_MINUTES", 30);
    let conns = common::env_or("SOAK_CONNS", 16) as usize;
    let sse = common::env_or("SOAK_SSE", 8);
    let amqp = common::env_or("SOAK_AMQP", 4);
    let exchange = common::unique("dmtree.soak.");
    let push = format!("[push.amqp]\nurl = \"{}\"\nexchange = \"{exchange}\"\n", common::amqp_url());
    let server = common::Server::start(&common::config_with(if amqp > 0 { &push } else { "" }));
    let admin = server.as_admin();
    for i in 0..LEAVES {
        admin.put(&format!("/tree/config/soak/n{i}"), serde_json::json!({"value": i})).await;
    }
    let addr = server.base.trim_start_matches("http://").to_owned();

    let received = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::new();
    for _ in 0..sse {
        let mut events = admin.events("?uri=./config/soak/*", None).await;
        let received = received.clone();
        streams.push(tokio::spawn(async move {
            while events.next_within(Duration::from_secs(3600)).await.is_some() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let consumed = Arc::new(AtomicU64::new(0));
    for i in 0..amqp {
        let id = common::unique(&format!("soak{i}-"));
        let r = admin
            .post(
                "/tree/subscriptions",
                serde_json::json!({"id": id, "pattern": "./config/soak/*", "transport": "amqp"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        streams.push(tokio::spawn(consume(format!("dmtree.sub.admin.{id}"), consumed.clone())));
    }

    let peak = closed_loop(&addr, conns, Duration::from_secs(10)).await;
    let rate = common::env_or("SOAK_RATE", (peak / 2.0) as u64) as f64;
    println!("# soak: {minutes} min at {rate:.0} req/s (closed-loop peak {peak:.0} req/s), {conns} connections,");
    println!("# 90 % GET / 10 % PUT over {LEAVES} leaves, {sse} SSE streams, {amqp} AMQP subscriptions\n");
    println!("| minute | req/s | p50 ms | p99 ms | errors | RSS MiB | SSE events | AMQP messages |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for minute in 1..=minutes {
        let report = open_loop(&addr, conns, rate, Duration::from_secs(60), minute).await;
        let rss = common::load::rss_kib(server.pid()) as f64 / 1024.0;
        let ms = |q: f64| report.latency.value_at_quantile(q) as f64 / 1000.0;
        let (sse_n, amqp_n) = (received.load(Ordering::Relaxed), consumed.load(Ordering::Relaxed));
        println!(
            "| {minute} | {:.0} | {:.3} | {:.3} | {} | {rss:.1} | {sse_n} | {amqp_n} |",
            report.requests as f64 / 60.0,
            ms(0.5),
            ms(0.99),
            report.errors
        );
        rows.push((rss, ms(0.99)));
    }
    let window = rows.len().min(5);
    let avg = |xs: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| xs.iter().map(f).sum::<f64>() / xs.len() as f64;
    let (first, last) = (&rows[..window], &rows[rows.len() - window..]);
    // Memory after the first minute (warm caches and buffers) against the end.
    let base = rows.get(1).map_or(rows[0].0, |r| r.0);
    let end = rows[rows.len() - 1].0;
    println!("\nmemory growth (minute 2 to the end): {:+.1} %", (end - base) / base * 100.0);
    println!(
        "p99 drift (mean of the last {window} minutes against the first {window}): {:.3} ms -> {:.3} ms ({:+.1} %)",
        avg(first, |r| r.1),
        avg(last, |r| r.1),
        (avg(last, |r| r.1) / avg(first, |r| r.1) - 1.0) * 100.0
    );
    for s in streams {
        s.abort();
    }
}

async fn consume(queue: String, consumed: Arc<AtomicU64>) {
    let conn =
        lapin::Connection::connect(&common::amqp_url(), lapin::ConnectionProperties::default()).await.expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "soak".into(),
            lapin::options::BasicConsumeOptions { no_ack: true, ..Default::default() },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("consume");
    while let Some(Ok(_)) = consumer.next().await {
        consumed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The n-th request of a mix: every tenth a PUT, the rest GETs, spread over the leaves.
fn request(addr: &str, n: u64) -> Request<Full<Bytes>> {
    let leaf = format!("/tree/config/soak/n{}", n.wrapping_mul(7919) % LEAVES);
    let builder = Request::builder()
        .header(header::HOST, addr)
        .header(header::AUTHORIZATION, format!("Bearer {}", common::ADMIN))
        .uri(leaf);
    if n % 10 == 9 {
        let body = format!("{{\"value\": {n}}}");
        builder.method("PUT").header(header::CONTENT_TYPE, "application/json").body(Full::new(Bytes::from(body)))
    } else {
        builder.body(Full::new(Bytes::new()))
    }
    .expect("request")
}

/// The mix as fast as it goes: the peak rate.
async fn closed_loop(addr: &str, conns: usize, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let (addr, done) = (addr.to_owned(), done.clone());
            tokio::spawn(async move {
                let mut conn = connect(&addr).await;
                let mut n = c as u64;
                while start.elapsed() < duration {
                    if send(&mut conn, request(&addr, n)).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        conn = connect(&addr).await;
                    }
                    n += conns as u64;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

struct Report {
    requests: u64,
    errors: u64,
    latency: Histogram<u64>,
}

/// One minute of the mix at a fixed total rate; latency from each request's due time.
async fn open_loop(addr: &str, conns: usize, rate: f64, duration: Duration, minute: u64) -> Report {
    let per_conn = Duration::from_secs_f64(conns as f64 / rate);
    let start = tokio::time::Instant::now();
    let merged = Arc::new(Mutex::new(Report { requests: 0, errors: 0, latency: Histogram::new(3).expect("hist") }));
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let (addr, merged) = (addr.to_owned(), merged.clone());
            tokio::spawn(async move {
                let mut conn = connect(&addr).await;
                let mut hist = Histogram::<u64>::new(3).expect("histogram");
                let (mut n, mut errors) = (0u64, 0u64);
                let offset = per_conn.mul_f64(c as f64 / conns as f64);
                loop {
                    let due = start + offset + per_conn.mul_f64(n as f64);
                    if due.duration_since(start) >= duration {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                    let seq = minute * 1_000_000_000 + n * conns as u64 + c as u64;
                    if send(&mut conn, request(&addr, seq)).await {
                        let _ = hist.record(due.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                        conn = connect(&addr).await;
                    }
                    n += 1;
                }
                let mut m = merged.lock();
                m.requests += n - errors;
                m.errors += errors;
                let _ = m.latency.add(&hist);
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let mut m = merged.lock();
    Report {
        requests: m.requests,
        errors: m.errors,
        latency: std::mem::replace(&mut m.latency, Histogram::new(3).expect("hist")),
    }
}
