//! Manager-cloud benchmark, with real `dmtree serve` members on the
//! machine's PostgreSQL and RabbitMQ (a database and a vhost of its own):
//!
//! 1. failover, over `BENCH_KILLS` kill -9s each, at the default timings
//!    (heartbeat 1 s, 3 missed: a 3 s lease): coordinator kill → another
//!    member reports a new coordinator; manager kill → every resource it
//!    held is `up` again, which happens on its first heartbeat at its new manager;
//! 2. Manage Me placements per second (`BENCH_PLACEMENTS` distinct resources);
//! 3. heartbeats processed per second by one manager, against raw lapin
//!    consuming (and acknowledging) the same messages from a queue;
//! 4. memory of one manager holding 10 000 and then 100 000 simulated
//!    resources (rows seeded in the registry, one full heartbeat each with
//!    five properties, sent in batches of 100 over one connection).
//!
//! `cargo bench -p dmtree-api --bench cloud_load` (see BENCHMARKS.md).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Agent, Server, Vhost, leaf, manager_config_with, resources};
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run());
}

const DEFAULTS: &str = "heartbeat_ms = 1000\nmissed = 3\n";

async fn run() {
    let kills = common::env_or("BENCH_KILLS", 20) as usize;
    println!("# cloud_load: loopback, PostgreSQL and RabbitMQ on this machine, release build");
    // `BENCH_ONLY=failover|throughput|memory` runs one part.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only == name;
    if part("failover") {
        failover(kills).await;
    }
    if part("throughput") {
        throughput().await;
    }
    if part("memory") {
        memory().await;
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(v) = check().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn coordinator(via: &Server) -> (String, u64) {
    let c = via.http().get("/tree/managers/coordinator?depth=1").await.body;
    (
        c["children"]["id"]["value"].as_str().unwrap_or_default().into(),
        c["children"]["term"]["value"].as_u64().unwrap_or(0),
    )
}

async fn joined(server: &Server) {
    wait_for(Duration::from_secs(30), || async { leaf(server, "monitoring/self/birth").await.is_u64().then_some(()) })
        .await
        .expect("member joined");
}

/// Waits until a member has declared the cloud's queues on `vhost`: a
/// message published to a queue that does not exist yet is dropped by the broker.
async fn topology(vhost: &Vhost) {
    let conn = Connection::connect(&vhost.url(), ConnectionProperties::default()).await.expect("amqp");
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    wait_for(Duration::from_secs(30), || async {
        // A failed passive declare closes its channel: a new one each time.
        let channel = conn.create_channel().await.ok()?;
        channel.queue_declare("dmtree.manage_me".into(), passive, FieldTable::default()).await.ok().map(|_| ())
    })
    .await
    .expect("the cloud's queues");
}

async fn failover(kills: usize) {
    let (vhost, registry) = (Vhost::new(), common::postgres_database().await);
    let ids = ["m1", "m2", "m3"];
    let mut members = Vec::new();
    for id in ids {
        let m = Server::start(&manager_config_with(id, &registry, &vhost.url(), DEFAULTS));
        joined(&m).await;
        members.push(m);
    }
    let agents: Vec<Agent> = (0..12).map(|i| Agent::start(&vhost.url(), &format!("f-{i}"), &[])).collect();
    let names: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    wait_for(Duration::from_secs(60), || all_up(&members[0], &names)).await.expect("agents up");

    let (mut to_coordinator, mut to_reheartbeat) = (Vec::new(), Vec::new());
    for round in 0..kills {
        // Coordinator kill: read the answer from a member that stays.
        let (current, term) = coordinator(&members[0]).await;
        let victim = ids.iter().position(|id| *id == current).expect("a coordinator");
        let witness = (victim + 1) % 3;
        let start = Instant::now();
        members[victim].kill9();
        let took = wait_for(Duration::from_secs(30), || async {
            let (id, t) = coordinator(&members[witness]).await;
            (t > term && id != current && !id.is_empty()).then_some(start.elapsed())
        })
        .await
        .expect("a new coordinator");
        to_coordinator.push(took.as_secs_f64());
        members[victim].restart();
        joined(&members[victim]).await;
        wait_for(Duration::from_secs(60), || all_up(&members[witness], &names)).await.expect("agents up again");

        // Manager kill: a member that is not the coordinator and holds resources.
        let (coord, _) = coordinator(&members[witness]).await;
        let all = resources(&members[witness]).await;
        let held = |m: &str| names.iter().filter(|n| all[*n]["manager"] == m).count();
        let Some(victim) = ids.iter().position(|id| *id != coord && held(id) > 0) else {
            eprintln!("round {round}: no plain member holds resources; skipped");
            continue;
        };
        let moved: Vec<&String> = names.iter().filter(|n| all[*n]["manager"] == ids[victim]).collect();
        let witness = ids.iter().position(|id| *id == coord).expect("coordinator member");
        let start = Instant::now();
        members[victim].kill9();
        let took = wait_for(Duration::from_secs(30), || async {
            let all = resources(&members[witness]).await;
            let done = moved.iter().all(|n| all[*n]["status"] == "up" && all[*n]["manager"] != ids[victim]);
            done.then_some(start.elapsed())
        })
        .await
        .expect("resources moved");
        to_reheartbeat.push(took.as_secs_f64());
        members[victim].restart();
        joined(&members[victim]).await;
        wait_for(Duration::from_secs(60), || all_up(&members[witness], &names)).await.expect("agents up again");
    }
    println!("\n## failover (s), heartbeat 1 s, 3 missed (lease 3 s), {kills} kill -9s each");
    println!("| kill | samples | p50 | p99 | max | goal (lease + 3 heartbeats) |\n|---|---:|---:|---:|---:|---:|");
    for (what, mut s) in [
        ("coordinator → new coordinator", to_coordinator),
        ("manager → all its resources up elsewhere", to_reheartbeat),
    ] {
        if s.is_empty() {
            continue;
        }
        let (p50, p99, max) = (percentile(&mut s, 0.5), percentile(&mut s, 0.99), percentile(&mut s, 1.0));
        println!("| {what} | {} | {p50:.2} | {p99:.2} | {max:.2} | 6.00 |", s.len());
    }
    drop(agents);
}

async fn all_up(via: &Server, names: &[String]) -> Option<()> {
    let all = resources(via).await;
    names.iter().all(|n| all.get(n).is_some_and(|r| r["status"] == "up")).then_some(())
}

/// A channel on the vhost, and a reply queue that drops what nobody reads.
async fn generator(vhost: &Vhost) -> (Connection, Channel, String) {
    let conn = Connection::connect(&vhost.url(), ConnectionProperties::default()).await.expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    let mut bounded = FieldTable::default();
    bounded.insert("x-max-length".into(), AMQPValue::LongLongInt(1000));
    let private = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let queue = channel.queue_declare("".into(), private, bounded).await.expect("reply queue").name().to_string();
    (conn, channel, queue)
}

async fn publish(channel: &Channel, queue: &str, body: &[u8]) {
    let props = BasicProperties::default().with_user_id("guest".into()).with_content_type("application/json".into());
    channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, props).await.expect("publish");
}

fn heartbeat(id: &str, msg_id: u64, reply_to: &str, full: bool) -> Value {
    json!({"resource": id, "instance": 1, "msg_id": msg_id, "reply_to": reply_to, "full": full,
           "properties": {"load": 0.5, "connections": msg_id % 100, "queue": "q-1", "version": "1.2.3", "healthy": true}})
}

/// Rows as if the coordinator had placed `ids` on `manager` (instance 1).
async fn seed(registry: &str, manager: &str, ids: std::ops::Range<usize>) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(registry).await.expect("registry");
    for chunk in ids.collect::<Vec<_>>().chunks(5000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("('sim-{i:06}', 'sim', 'guest', '{manager}', 1, 'assigned', '', 1, 'n', '', 1, 'require-user-input', 0, (extract(epoch from clock_timestamp()) * 1000)::bigint)"))
            .collect();
        let sql = format!(
            "INSERT INTO dmtree_resources (id, kind, owner, manager, manager_instance, status, endpoint, instance, nonce, reply_to, term, policy, pinned, updated) VALUES {}",
            values.join(",")
        );
        sqlx::query(&sql).execute(&mut conn).await.expect("seed");
    }
}

async fn counter_self(server: &Server, name: &str) -> u64 {
    leaf(server, &format!("monitoring/self/{name}")).await.as_u64().unwrap_or(0)
}

async fn counter(server: &Server, name: &str) -> u64 {
    leaf(server, &format!("monitoring/{name}")).await.as_u64().unwrap_or(0)
}

async fn throughput() {
    let (vhost, registry) = (Vhost::new(), common::postgres_database().await);
    let timings = "heartbeat_ms = 60000\nmissed = 100\ncapacity = 1000000\nlocal_host = false\n";
    let m = Server::start(&manager_config_with("bench", &registry, &vhost.url(), timings));
    joined(&m).await;
    topology(&vhost).await;
    let (_conn, channel, reply) = generator(&vhost).await;

    // Manage Me: distinct resources, placed one by one through the registry.
    let n = common::env_or("BENCH_PLACEMENTS", 2000);
    let start = Instant::now();
    for i in 0..n {
        let req = json!({"resource": format!("mm-{i}"), "resource_type": "sim", "nonce": "n", "reply_to": reply, "msg_id": i + 1});
        publish(&channel, "dmtree.manage_me", req.to_string().as_bytes()).await;
    }
    wait_for(Duration::from_secs(600), || async { (counter(&m, "assigned").await >= n).then_some(()) })
        .await
        .expect("placed");
    let placements = n as f64 / start.elapsed().as_secs_f64();

    // Heartbeats: seeded resources, one message each, against raw lapin.
    let beats = common::env_or("BENCH_HEARTBEATS", 50_000) as usize;
    seed(&registry, "bench", 0..1000).await;
    let bodies: Vec<Vec<u8>> = (0..beats)
        .map(|i| {
            let mut hb = heartbeat(&format!("sim-{:06}", i % 1000), (i + 1) as u64, &reply, i < 1000);
            hb["type"] = json!("heartbeat");
            hb.to_string().into_bytes()
        })
        .collect();
    // Adopted from the registry on first sight, before the clock starts.
    for body in &bodies[..1000] {
        publish(&channel, "dmtree.manager.bench", body).await;
    }
    wait_for(Duration::from_secs(120), || async { (counter(&m, "heartbeats").await >= 1000).then_some(()) })
        .await
        .expect("warm");
    let before = counter(&m, "heartbeats").await;
    let start = Instant::now();
    for body in &bodies[1000..] {
        publish(&channel, "dmtree.manager.bench", body).await;
    }
    let target = before + (beats - 1000) as u64;
    wait_for(Duration::from_secs(600), || async { (counter(&m, "heartbeats").await >= target).then_some(()) })
        .await
        .expect("processed");
    let manager_rate = (beats - 1000) as f64 / start.elapsed().as_secs_f64();
    let raw_rate = raw_lapin(&vhost, &bodies[1000..]).await;

    println!("\n## throughput of one manager (PostgreSQL registry)");
    println!("| what | rate (/s) | baseline | ratio |\n|---|---:|---:|---:|");
    println!("| Manage Me placements ({n}) | {placements:.0} | | |");
    println!(
        "| heartbeats processed ({}, one per message) | {manager_rate:.0} | raw lapin consume + ack: {raw_rate:.0} | {:.2} |",
        beats - 1000,
        manager_rate / raw_rate
    );
}

/// Publishes `bodies` to a scratch queue while a lapin consumer acks them; messages per second.
async fn raw_lapin(vhost: &Vhost, bodies: &[Vec<u8>]) -> f64 {
    let (_conn, channel, _) = generator(vhost).await;
    let scratch = QueueDeclareOptions { auto_delete: true, ..Default::default() };
    let queue = channel
        .queue_declare(common::unique("bench.raw.").as_str().into(), scratch, FieldTable::default())
        .await
        .expect("scratch")
        .name()
        .to_string();
    let consumer_conn = Connection::connect(&vhost.url(), ConnectionProperties::default()).await.expect("amqp");
    let consumer_channel = consumer_conn.create_channel().await.expect("channel");
    consumer_channel.basic_qos(256, Default::default()).await.expect("qos");
    let mut consumer = consumer_channel
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let total = bodies.len();
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            let Some(Ok(d)) = consumer.next().await else { break };
            let _: Value = serde_json::from_slice(&d.data).unwrap_or_default();
            d.acker.ack(BasicAckOptions::default()).await.expect("ack");
            n += 1;
        }
    });
    for body in bodies {
        publish(&channel, &queue, body).await;
    }
    reader.await.expect("reader");
    total as f64 / start.elapsed().as_secs_f64()
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

async fn memory() {
    let (vhost, registry) = (Vhost::new(), common::postgres_database().await);
    // The schema exists once a member ran; rows are seeded for the holder's
    // next incarnation, which adopts them from the registry as changed rows.
    // A small event ring: the default ring (65 536 events, bounded) would
    // otherwise fill with these property events and hide the per-resource cost.
    let timings =
        "heartbeat_ms = 2000\nmissed = 100\ncapacity = 1000000\nlocal_host = false\n\n[tree.events]\nring = 1024\n";
    let mut m = Server::start(&manager_config_with("holder", &registry, &vhost.url(), timings));
    joined(&m).await;
    m.kill9();
    let (_conn, channel, reply) = generator(&vhost).await;
    println!(
        "\n## one manager holding simulated resources (5 properties each, one full heartbeat each, batches of 100)"
    );
    println!(
        "| resources | RSS (MB) | bytes per resource over the empty manager | registry bytes per resource |\n|---:|---:|---:|---:|"
    );
    let mut seeded = 0;
    let mut base = None;
    let largest = common::env_or("BENCH_SCALE", 100_000) as usize;
    for total in [largest / 10, largest] {
        // Rows for instance 2 of `holder`: the incarnation that starts next.
        seed_instance(&registry, seeded..total, 2).await;
        seeded = total;
        if base.is_none() {
            m.restart();
            joined(&m).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            base = Some(rss_kb(m.pid()));
        }
        wait_for(Duration::from_secs(120), || async { (counter_self(&m, "held").await >= total as u64).then_some(()) })
            .await
            .expect("rows adopted");
        let before = counter(&m, "heartbeats").await;
        let mut msg = before + 1;
        // `BENCH_PACE` heartbeats per second (default: as fast as the window allows).
        let pace = common::env_or("BENCH_PACE", 0);
        let started = Instant::now();
        for (n, chunk) in (0..total).collect::<Vec<_>>().chunks(100).enumerate() {
            if pace > 0 {
                let due = started + Duration::from_secs_f64((n * 100) as f64 / pace as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let items: Vec<Value> = chunk
                .iter()
                .map(|i| {
                    msg += 1;
                    heartbeat(&format!("sim-{i:06}"), msg, &reply, true)
                })
                .collect();
            publish(
                &channel,
                "dmtree.manager.holder",
                json!({"type": "heartbeats", "items": items}).to_string().as_bytes(),
            )
            .await;
            // Stay within a few thousand in flight: the inbox drops heartbeats older than 10 s.
            if n % 50 == 49 {
                let sent = before + (n as u64 + 1) * 100;
                wait_for(Duration::from_secs(60), || async {
                    (counter(&m, "heartbeats").await + 5000 >= sent).then_some(())
                })
                .await;
            }
        }
        wait_for(Duration::from_secs(600), || async {
            (counter(&m, "heartbeats").await >= before + total as u64).then_some(())
        })
        .await
        .expect("heartbeats processed");
        let rss = rss_kb(m.pid());
        let per = (rss.saturating_sub(base.unwrap_or(0))) as f64 * 1024.0 / total as f64;
        let registry_bytes = registry_bytes_per_row(&registry).await;
        println!("| {total} | {:.1} | {per:.0} | {registry_bytes:.0} |", rss as f64 / 1024.0);
    }
}

async fn seed_instance(registry: &str, ids: std::ops::Range<usize>, instance: u64) {
    seed(registry, "holder", ids.clone()).await;
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(registry).await.expect("registry");
    sqlx::query("UPDATE dmtree_resources SET manager_instance = $1 WHERE manager = 'holder'")
        .bind(instance as i64)
        .execute(&mut conn)
        .await
        .expect("instance");
}

async fn registry_bytes_per_row(registry: &str) -> f64 {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(registry).await.expect("registry");
    let (size, rows): (i64, i64) =
        sqlx::query_as("SELECT pg_total_relation_size('dmtree_resources'), (SELECT count(*) FROM dmtree_resources)")
            .fetch_one(&mut conn)
            .await
            .expect("size");
    size as f64 / rows.max(1) as f64
}
