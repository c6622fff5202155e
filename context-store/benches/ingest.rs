//! ContextStore benchmark: `cargo bench -p dmtree-context-store --bench ingest`.
//!
//! 1. Ingest throughput into SQLite and into PostgreSQL, against a raw batched
//!    sqlx insert (the native driver, multi-row INSERTs, 5000 rows per
//!    transaction) of the same rows into the same database, in the same run;
//!    the median of `BENCH_REPS` (default 7) interleaved runs of each.
//! 2. The time to read one aggregate as the store grows to `BENCH_EVENTS`
//!    events (default 10 000 000 on SQLite; PostgreSQL to `BENCH_PG_EVENTS`,
//!    default 1 000 000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use dmtree_context_store::{Config, ContextEvent, ContextStore, ContextStoreHandler, Settings};
use dmtree_core::{Acl, DataHandler, MemoryTreeStore, OpContext, Principal, Tree, TreeConfig, Uri};
use serde_json::json;
use sqlx::Connection;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(run());
}

fn event(i: u64) -> ContextEvent {
    ContextEvent {
        id: uuid::Uuid::new_v4(),
        timestamp: Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap()
            + chrono::Duration::milliseconds((i * 10) as i64),
        sender: "bench".into(),
        kind: "usage".into(),
        payload: json!({"user": format!("u{}", i % 100), "vm": format!("vm{}", i % 1000), "cpu": (i % 7) as f64}),
    }
}

async fn pg_database() -> String {
    let admin =
        std::env::var("DMTREE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("cs_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

async fn tree() -> Arc<Tree> {
    Tree::open(TreeConfig::default(), Arc::new(MemoryTreeStore::default()), Acl::default_root()).await.unwrap()
}

async fn run() {
    let n = env_or("BENCH_INGEST", 200_000);
    let dir = tempfile::tempdir().unwrap();
    let reps = env_or("BENCH_REPS", 7);
    println!(
        "# ingest: {n} events per run, batches of 1000, 16 concurrent submitters; medians of {reps} interleaved runs, ratios per run (range)"
    );
    println!("\n## ingest throughput (events/s)");
    println!(
        "| database | raw batched sqlx insert (baseline) | ContextStore ingest | ratio | with an aggregate handler | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let only = std::env::var("BENCH_DB").unwrap_or_default().to_lowercase();
    for name in ["SQLite", "PostgreSQL"].into_iter().filter(|n| only.is_empty() || n.to_lowercase() == only) {
        let mut agg = Config::default();
        agg.set(
            "handlers",
            "usage",
            &json!({"kind": "aggregate", "input": "usage", "keys": ["user"], "value": "cpu", "window_s": 3600}),
        )
        .unwrap();
        // Interleaved repetitions: this machine's throughput drifts by tens of
        // percent between minutes, so single runs compare unlike moments.
        let (mut raw, mut plain, mut with_agg) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            // Every run starts from an empty database.
            let fresh = async |what: &str| match name {
                "SQLite" => format!("sqlite://{}", dir.path().join(format!("{what}-{rep}.db")).display()),
                _ => pg_database().await,
            };
            let (url_a, url_b, url_c) = (fresh("raw").await, fresh("store").await, fresh("agg").await);
            let events: Vec<ContextEvent> = (0..n).map(event).collect();
            raw.push(raw_insert(&url_a, &events).await);
            plain.push(store_ingest(&url_b, &events, Config::default()).await);
            with_agg.push(store_ingest(&url_c, &events, agg.clone()).await);
        }
        let ratios = |store: &[f64]| {
            let each: Vec<f64> = store.iter().zip(&raw).map(|(s, r)| s / r).collect();
            let (lo, hi) = each.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
            format!("{:.2} ({lo:.2}–{hi:.2})", median(each))
        };
        let (r_plain, r_agg) = (ratios(&plain), ratios(&with_agg));
        let (raw, plain, with_agg) = (median(raw), median(plain), median(with_agg));
        println!("| {name} | {raw:.0} | {plain:.0} | {r_plain} | {with_agg:.0} | {r_agg} |");
    }

    println!("\n## reading one aggregate (GET …/aggregates/usage/u7/<window>/sum) as events accumulate");
    println!("| database | events stored | p50 µs | p99 µs |\n|---|---:|---:|---:|");
    if only.is_empty() || only == "sqlite" {
        let sqlite = format!("sqlite://{}", dir.path().join("big.db").display());
        aggregate_reads("SQLite", &sqlite, env_or("BENCH_EVENTS", 10_000_000)).await;
    }
    if only.is_empty() || only == "postgresql" {
        aggregate_reads("PostgreSQL", &pg_database().await, env_or("BENCH_PG_EVENTS", 1_000_000)).await;
    }
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// The baseline: the same rows, multi-row INSERTs of 500, 5000 rows per transaction.
async fn raw_insert(url: &str, events: &[ContextEvent]) -> f64 {
    // The store creates the schema; the baseline writes into that very table.
    let _schema = dmtree_context_store::db::Db::connect(url).await.expect("schema");
    let started = Instant::now();
    if url.starts_with("sqlite://") {
        let opts: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let opts = opts
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        for tx_rows in events.chunks(5000) {
            let mut tx = conn.begin().await.unwrap();
            for chunk in tx_rows.chunks(500) {
                let mut qb =
                    sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO cs_events (id, ts, sender, type, payload) ");
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(e.id.to_string())
                        .push_bind(e.timestamp.timestamp_millis())
                        .push_bind(&e.sender)
                        .push_bind(&e.kind)
                        .push_bind(e.payload.to_string());
                });
                qb.build().execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        for tx_rows in events.chunks(5000) {
            let mut tx = conn.begin().await.unwrap();
            for chunk in tx_rows.chunks(500) {
                let mut qb =
                    sqlx::QueryBuilder::<sqlx::Postgres>::new("INSERT INTO cs_events (id, ts, sender, type, payload) ");
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(e.id.to_string())
                        .push_bind(e.timestamp.timestamp_millis())
                        .push_bind(&e.sender)
                        .push_bind(&e.kind)
                        .push_bind(e.payload.to_string());
                });
                qb.build().execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
    }
    events.len() as f64 / started.elapsed().as_secs_f64()
}

/// The store: batches of 1000 from 16 concurrent submitters, until all are committed.
async fn store_ingest(url: &str, events: &[ContextEvent], config: Config) -> f64 {
    let store = ContextStore::start(
        url,
        &tree().await,
        Settings { gc_interval: Duration::from_secs(3600), ..Settings::default() },
        config,
    )
    .await
    .expect("store");
    // Batches are built before the clock starts, as the baseline's rows are.
    let parts: Vec<Vec<Vec<ContextEvent>>> =
        events.chunks(events.len().div_ceil(16)).map(|part| part.chunks(1000).map(<[_]>::to_vec).collect()).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for part in parts {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for batch in part {
                store.ingest(batch).await.expect("ingest");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    events.len() as f64 / started.elapsed().as_secs_f64()
}

async fn aggregate_reads(name: &str, url: &str, total: u64) {
    let mut config = Config::default();
    config
        .set(
            "handlers",
            "usage",
            &json!({"kind": "aggregate", "input": "usage", "keys": ["user"], "value": "cpu", "window_s": 3600}),
        )
        .unwrap();
    let store = ContextStore::start(
        url,
        &tree().await,
        Settings { gc_interval: Duration::from_secs(3600), ..Settings::default() },
        config,
    )
    .await
    .expect("store");
    let handler = ContextStoreHandler::new(store.clone());
    let admin = Principal::named("admin");
    let path = Uri::from_key(["aggregates", "usage", "u7", "2026-11-22T00:00:00Z", "sum"].join("\0"));
    let mut stored = 0u64;
    let mut checkpoint = 10_000u64;
    while checkpoint <= total {
        while stored < checkpoint {
            let batch: Vec<ContextEvent> = (stored..(stored + 5000).min(checkpoint)).map(event).collect();
            stored += batch.len() as u64;
            store.ingest(batch).await.expect("ingest");
        }
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for _ in 0..2000 {
            let t = Instant::now();
            let node = handler.get(OpContext { principal: &admin, tx: None }, &path).await.expect("aggregate");
            assert!(node.value.is_some());
            hist.record(t.elapsed().as_micros() as u64).unwrap();
        }
        println!("| {name} | {stored} | {} | {} |", hist.value_at_quantile(0.5), hist.value_at_quantile(0.99));
        checkpoint *= 10;
    }
}
