//! Push benchmark, against the real `dmtree serve` and the machine's RabbitMQ:
//!
//! 1. change → subscriber latency at 1k and 10k events/s, over SSE and AMQP at
//!    once (events come from paced single-leaf PUTs, one commit each; latency
//!    runs from the event's commit timestamp to its arrival at the subscriber);
//! 2. AMQP throughput: dmtree replaying events into a subscription queue,
//!    against raw lapin publishing messages of the same size, with confirms,
//!    to the same broker;
//! 3. fan-out: SSE latency with 10, then 10 000 subscriptions on other subtrees.
//!
//! `cargo bench -p dmtree-api --bench push_load` (see BENCHMARKS.md). Knobs:
//! `BENCH_SECS` (per latency phase, default 10), `BENCH_MESSAGES` (default 50000).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use parking_lot::Mutex;
use serde_json::{Value, json};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let secs = Duration::from_secs(common::env_or("BENCH_SECS", 10));
    let messages = common::env_or("BENCH_MESSAGES", 50_000);
    let exchange = common::unique("dmtree.bench.");
    let config = format!(
        "[push]\nbuffer = 65536\nmax_per_owner = 20000\n\n[push.amqp]\nurl = \"{}\"\nexchange = \"{exchange}\"\n",
        common::amqp_url()
    );
    let server = common::Server::start(&common::config_with(&config));
    let admin = server.as_admin();
    admin.put("/tree/config/bench/seed", json!({"value": 0})).await;
    println!("# push_load: {} s per latency phase, loopback, RabbitMQ at {}", secs.as_secs(), common::amqp_url());

    println!("\n## change → subscriber latency (ms), SSE and AMQP subscribers at once, one PUT per event");
    println!("| events/s | transport | received | p50 | p99 | p99.9 | max |\n|---:|---|---:|---:|---:|---:|---:|");
    let id = subscribe(&admin, json!({"pattern": "./config/bench/**", "transport": "amqp", "id": "bench-lat"})).await;
    let queue = format!("dmtree.sub.admin.{id}");
    let mut splits = Vec::new();
    let mut sustained = None;
    // 1k and 10k; then, while AMQP falls behind, lower rates until it keeps up.
    for rate in [1_000u64, 10_000, 8_000, 6_000, 5_000, 4_000, 3_000, 2_000] {
        if rate < 10_000 && sustained.is_some() {
            break;
        }
        let (sse, amqp, cpu) = latency_phase(&server, &queue, rate, secs).await;
        println!("{}", sse.row(rate, "SSE"));
        println!("{}", amqp.row(rate, "AMQP"));
        splits.push(format!("{rate} events/s: {cpu}"));
        let keeps_up = amqp.count >= sse.count && amqp.ms(0.99) <= 50.0;
        if rate > 1_000 && keeps_up && sustained.is_none() {
            sustained = Some(rate);
        }
    }
    admin.delete(&format!("/tree/subscriptions/{id}")).await;
    match sustained {
        Some(rate) => {
            println!("highest rate tried that AMQP sustains (p99 ≤ 50 ms, nothing left behind): {rate} events/s")
        }
        None => println!("AMQP sustained none of the rates above 1000 events/s"),
    }
    println!("CPU split (share of both cores) during each phase:");
    for split in splits {
        println!("- {split}");
    }

    println!("\n## AMQP publish throughput, persistent messages with confirms, {messages} messages");
    let raw = raw_lapin(messages).await;
    let ours = dmtree_replay(&admin, messages).await;
    println!("| publisher | msg/s |\n|---|---:|");
    println!("| raw lapin via a topic exchange, window 1024 (baseline) | {raw:.0} |");
    println!("| dmtree subscription replaying the log | {ours:.0} |");
    println!("ratio dmtree/raw: {:.2}", ours / raw);

    println!("\n## fan-out: SSE latency at 2000 events/s with non-matching subscriptions on other subtrees (ms)");
    println!("| other subscriptions | received | p50 | p99 | p99.9 | max |\n|---:|---:|---:|---:|---:|---:|");
    let mut others = 0;
    for target in [10u64, 10_000] {
        while others < target {
            subscribe(&admin, json!({"pattern": format!("./config/other{others}/**"), "transport": "sse"})).await;
            others += 1;
        }
        let lat = sse_only_phase(&server, 2_000, secs).await;
        println!(
            "| {target} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            lat.count,
            lat.ms(0.5),
            lat.ms(0.99),
            lat.ms(0.999),
            lat.ms(1.0)
        );
    }
}

async fn subscribe(http: &common::Http, body: Value) -> String {
    let r = http.post("/tree/subscriptions", body.clone()).await;
    assert_eq!(r.status, 201, "subscribe {body}: {}", r.body);
    r.headers["location"].to_str().unwrap().trim_start_matches("/tree/subscriptions/").to_owned()
}

struct Latency {
    hist: Histogram<u64>,
    count: u64,
}

impl Latency {
    fn new() -> Self {
        Latency { hist: Histogram::new(3).expect("histogram"), count: 0 }
    }

    fn record(&mut self, event: &Value) {
        let Some(ts) = event["timestamp"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else { return };
        let micros = (Utc::now() - ts.with_timezone(&Utc)).num_microseconds().unwrap_or(0).max(0) as u64;
        let _ = self.hist.record(micros);
        self.count += 1;
    }

    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    fn row(&self, rate: u64, transport: &str) -> String {
        format!(
            "| {rate} | {transport} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            self.count,
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.ms(1.0)
        )
    }
}

/// Paced PUTs over 32 connections making `rate` events per second for
/// `secs`: one durable commit, and one event, per write.
async fn load(server: &common::Server, rate: u64, secs: Duration) {
    let addr = server.base.trim_start_matches("http://");
    common::load::open_loop(addr, 32, rate as f64, secs, common::load::leaf_puts("/tree/config/bench/load", 1024))
        .await;
}

/// RabbitMQ's Erlang VM, for the CPU split.
fn broker_pid() -> Option<u32> {
    let out = std::process::Command::new("pgrep").args(["-o", "beam.smp"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

async fn latency_phase(server: &common::Server, queue: &str, rate: u64, secs: Duration) -> (Latency, Latency, String) {
    let admin = server.as_admin();
    let sse = Arc::new(Mutex::new(Latency::new()));
    let amqp = Arc::new(Mutex::new(Latency::new()));
    let mut events = admin.events("?uri=./config/bench/load/**", None).await;
    let sse_task = {
        let sse = sse.clone();
        tokio::spawn(async move {
            while let Some(frame) = events.next_within(Duration::from_secs(3)).await {
                if let Ok(e) = serde_json::from_str::<Value>(&frame.data) {
                    sse.lock().record(&e);
                }
            }
        })
    };
    let conn = Connection::connect(&common::amqp_url(), ConnectionProperties::default()).await.expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let amqp_task = {
        let amqp = amqp.clone();
        tokio::spawn(async move {
            while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(3), consumer.next()).await {
                if let Ok(e) = serde_json::from_slice::<Value>(&d.data) {
                    amqp.lock().record(&e);
                }
            }
        })
    };
    let mut processes = vec![("dmtree", server.pid()), ("bench (load + subscribers)", std::process::id())];
    processes.extend(broker_pid().map(|pid| ("RabbitMQ", pid)));
    let cpu = common::load::CpuSplit::start(&processes);
    load(server, rate, secs).await;
    let cpu = cpu.finish();
    let _ = sse_task.await;
    let _ = amqp_task.await;
    let take = |l: &Arc<Mutex<Latency>>| std::mem::replace(&mut *l.lock(), Latency::new());
    (take(&sse), take(&amqp), cpu)
}

async fn sse_only_phase(server: &common::Server, rate: u64, secs: Duration) -> Latency {
    let admin = server.as_admin();
    let mut events = admin.events("?uri=./config/bench/load/**", None).await;
    let reader = tokio::spawn(async move {
        let mut lat = Latency::new();
        while let Some(frame) = events.next_within(Duration::from_secs(3)).await {
            if let Ok(e) = serde_json::from_str::<Value>(&frame.data) {
                lat.record(&e);
            }
        }
        lat
    });
    load(server, rate, secs).await;
    reader.await.expect("reader")
}

/// A message like dmtree's (an event's JSON).
fn sample_body() -> Vec<u8> {
    json!({"format": "int", "kind": "added", "principal": "admin", "revision": 123456, "subscription": "bench-thr",
           "timestamp": "2026-11-22T22:58:01.506499216Z", "uri": "./config/thr/b12/n12345", "value": 12345})
    .to_string()
    .into_bytes()
}

/// Raw lapin, doing what dmtree does minus dmtree: persistent messages through
/// a durable topic exchange to a bound durable queue, confirms on, 1024 in flight.
async fn raw_lapin(n: u64) -> f64 {
    let conn = Connection::connect(&common::amqp_url(), ConnectionProperties::default()).await.expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let exchange = common::unique("bench.raw.x.");
    let queue = common::unique("bench.raw.q.");
    let durable_x = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, durable_x, FieldTable::default())
        .await
        .expect("exchange");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await.expect("queue");
    let (q, x) = (queue.as_str().into(), exchange.as_str().into());
    channel.queue_bind(q, x, "raw.#".into(), QueueBindOptions::default(), FieldTable::default()).await.expect("bind");
    let body = sample_body();
    let started = Instant::now();
    let mut window = std::collections::VecDeque::new();
    for i in 0..n {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(i.to_string().into());
        let key = format!("raw.config.thr.b{}.n{i}", i / 1000);
        let confirm = channel
            .basic_publish(exchange.as_str().into(), key.into(), BasicPublishOptions::default(), &body, props)
            .await
            .expect("publish");
        window.push_back(confirm);
        if window.len() >= 1024 {
            assert!(window.pop_front().expect("front").await.expect("confirm").is_ack());
        }
    }
    for c in window {
        assert!(c.await.expect("confirm").is_ack());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
    channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await.expect("delete");
    rate
}

/// Writes `n` events, then subscribes from before them and times the broker confirming them all.
async fn dmtree_replay(admin: &common::Http, n: u64) -> f64 {
    let since = admin.get("/healthz").await.body["revision"].as_u64().expect("revision");
    let batch = 1000;
    for start in (0..n).step_by(batch as usize) {
        let leaves: serde_json::Map<String, Value> =
            (start..(start + batch).min(n)).map(|i| (format!("b{}/n{i}", i / 1000), json!(i))).collect();
        assert_eq!(admin.patch("/tree/config/thr", Value::Object(leaves)).await.status, 200);
    }
    let events = n + n.div_ceil(batch) + 1; // the leaves, their parents, and ./config/thr
    let started = Instant::now();
    let id =
        subscribe(admin, json!({"pattern": "./config/thr/**", "transport": "amqp", "id": "bench-thr", "since": since}))
            .await;
    loop {
        let delivered =
            admin.get(&format!("/tree/subscriptions/{id}/monitoring/delivered")).await.body["value"].as_u64();
        if delivered >= Some(events) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    admin.delete(&format!("/tree/subscriptions/{id}")).await;
    rate
}
