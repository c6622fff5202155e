//! The store against both backends: every test runs on SQLite and on a fresh
//! PostgreSQL database (`DMTREE_TEST_POSTGRES`, default the machine's server).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use dmtree_core::{
    Acl, Caller, Content, DataHandler, MemoryHandler, MemoryTreeStore, OpContext, Principal, Tree, TreeConfig, Uri,
    Value, Write,
};
use serde_json::{Value as Json, json};
use sqlx::Connection;

use crate::event::ContextEvent;
use crate::handler::ContextStoreHandler;
use crate::store::{ContextStore, Settings};
use crate::{Config, retention};

/// A database per test: a SQLite file, or a new PostgreSQL database.
struct Backend {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Backend { url: format!("sqlite://{}", dir.path().join("cs.db").display()), _dir: Some(dir) };
    let admin =
        std::env::var("DMTREE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
    // Without PostgreSQL, run on SQLite alone and say so; `./scripts/test`
    // starts PostgreSQL and sets DMTREE_REQUIRE_POSTGRES, so CI never skips it.
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(conn) => conn,
        Err(e) if std::env::var_os("DMTREE_REQUIRE_POSTGRES").is_none() => {
            eprintln!("SKIPPED on PostgreSQL ({admin}: {e}); these tests ran on SQLite only");
            return vec![sqlite];
        }
        Err(e) => panic!("PostgreSQL at {admin} is required (DMTREE_REQUIRE_POSTGRES is set): {e}"),
    };
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let pg = Backend { url: format!("{}/{name}", admin.rsplit_once('/').unwrap().0), _dir: None };
    vec![sqlite, pg]
}

async fn tree() -> Arc<Tree> {
    let tree =
        Tree::open(TreeConfig::default(), Arc::new(MemoryTreeStore::default()), Acl::default_root()).await.unwrap();
    tree.mount("config", Uri::from_key("config"), Arc::new(MemoryHandler::default())).unwrap();
    tree
}

fn settings() -> Settings {
    Settings { gc_interval: Duration::from_secs(3600), ..Settings::default() }
}

fn at(minute: i64, second: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
        + chrono::Duration::minutes(minute)
        + chrono::Duration::seconds(second)
}

fn usage(user: &str, vm: &str, cpu: f64, ts: DateTime<Utc>) -> ContextEvent {
    ContextEvent {
        id: uuid::Uuid::new_v4(),
        timestamp: ts,
        sender: "test".into(),
        kind: "usage".into(),
        payload: json!({"user": user, "vm": vm, "cpu": cpu}),
    }
}

async fn read(handler: &ContextStoreHandler, path: &str) -> Option<Value> {
    let admin = Principal::named("admin");
    handler.get(OpContext { principal: &admin, tx: None }, &Uri::from_key(path.replace('/', "\0"))).await.ok()?.value
}

fn config(entries: &[(&str, &str, Json)]) -> Config {
    let mut c = Config::default();
    for (section, name, body) in entries {
        c.set(section, name, body).unwrap();
    }
    c
}

async fn query(store: &ContextStore, q: Json) -> Result<Vec<ContextEvent>, String> {
    let q = serde_json::from_value(q).map_err(|e| e.to_string())?;
    crate::query::run(store, q).await.map(|p| p.events).map_err(|e| e.to_string())
}

/// A batch mixing new events, an event already stored and one repeated
/// inside the batch stores and counts each event once.
#[tokio::test]
async fn a_mixed_batch_stores_and_counts_each_event_once() {
    for backend in backends().await {
        let agg = json!({"kind": "aggregate", "input": "usage", "keys": ["user"], "value": "cpu", "window_s": 600});
        let tree = tree().await;
        let store =
            ContextStore::start(&backend.url, &tree, settings(), config(&[("handlers", "usage", agg)])).await.unwrap();
        let old = usage("alice", "vm1", 1.0, at(0, 0));
        assert_eq!(store.ingest(vec![old.clone()]).await.unwrap().stored, 1);
        let new = usage("alice", "vm1", 2.0, at(1, 0));
        let report = store.ingest(vec![old, new.clone(), new, usage("alice", "vm2", 4.0, at(2, 0))]).await.unwrap();
        assert_eq!((report.stored, report.duplicates), (2, 2), "{}", backend.url);
        let handler = ContextStoreHandler::new(store.clone());
        let sum = read(&handler, "aggregates/usage/alice/2026-11-22T10:00:00Z/sum").await;
        assert_eq!(sum, Some(Value::Float(7.0)), "{}", backend.url);
    }
}

#[tokio::test]
async fn aggregates_per_key_per_window_and_announce_closed_windows() {
    for backend in backends().await {
        let agg = json!({"kind": "aggregate", "input": "usage", "keys": ["user"], "value": "cpu", "window_s": 600, "lateness_s": 60});
        let tree = tree().await;
        let store =
            ContextStore::start(&backend.url, &tree, settings(), config(&[("handlers", "usage", agg)])).await.unwrap();
        let handler = ContextStoreHandler::new(store.clone());
        let events = vec![
            usage("alice", "vm1", 1.0, at(0, 0)),
            usage("alice", "vm2", 3.0, at(5, 0)),
            usage("bob", "vm3", 10.0, at(9, 59)),
            usage("alice", "vm1", 2.0, at(10, 0)),
        ];
        assert_eq!(store.ingest(events.clone()).await.unwrap().stored, 4);
        assert_eq!(store.ingest(events).await.unwrap().duplicates, 4, "ids de-duplicate");
        let w0 = "2026-11-22T10:00:00Z";
        assert_eq!(
            read(&handler, &format!("aggregates/usage/alice/{w0}/sum")).await,
            Some(Value::Float(4.0)),
            "{}",
            backend.url
        );
        assert_eq!(read(&handler, &format!("aggregates/usage/alice/{w0}/count")).await, Some(Value::Int(2)));
        assert_eq!(read(&handler, &format!("aggregates/usage/alice/{w0}/avg")).await, Some(Value::Float(2.0)));
        assert_eq!(read(&handler, &format!("aggregates/usage/alice/{w0}/max")).await, Some(Value::Float(3.0)));
        assert_eq!(read(&handler, &format!("aggregates/usage/bob/{w0}/min")).await, Some(Value::Float(10.0)));
        assert_eq!(read(&handler, "aggregates/usage/alice/2026-11-22T10:10:00Z/sum").await, Some(Value::Float(2.0)));
        // Within lateness the 10:00 window still takes events; past it, they are late.
        store.ingest(vec![usage("alice", "vm1", 5.0, at(10, 30)), usage("alice", "vm1", 1.0, at(9, 0))]).await.unwrap();
        assert_eq!(read(&handler, &format!("aggregates/usage/alice/{w0}/sum")).await, Some(Value::Float(5.0)));
        store
            .ingest(vec![usage("carol", "vm9", 1.0, at(11, 1)), usage("alice", "vm1", 100.0, at(9, 30))])
            .await
            .unwrap();
        assert_eq!(
            read(&handler, &format!("aggregates/usage/alice/{w0}/sum")).await,
            Some(Value::Float(5.0)),
            "late event ignored"
        );
        let windows = query(&store, json!({"type": "usage.window"})).await.unwrap();
        let alice: Vec<_> = windows.iter().filter(|e| e.payload["key"]["user"] == "alice").collect();
        assert_eq!(alice.len(), 1, "the closed 10:00 window was announced once");
        assert_eq!((alice[0].payload["sum"].clone(), alice[0].payload["count"].clone()), (json!(5.0), json!(3)));
    }
}

#[tokio::test]
async fn threshold_raises_a_violation_after_the_duration_and_a_recovery_after() {
    for backend in backends().await {
        let sla = json!({"kind": "threshold", "input": "usage", "keys": ["vm"], "value": "cpu", "op": ">", "threshold": 90.0, "duration_s": 60});
        let tree = tree().await;
        let store =
            ContextStore::start(&backend.url, &tree, settings(), config(&[("handlers", "hot", sla)])).await.unwrap();
        let handler = ContextStoreHandler::new(store.clone());
        store.ingest(vec![usage("a", "vm1", 95.0, at(0, 0)), usage("a", "vm1", 97.0, at(0, 30))]).await.unwrap();
        assert!(query(&store, json!({"type": "hot.violation"})).await.is_err(), "not yet: 30 s < 60 s");
        assert_eq!(read(&handler, "sla/hot/vm1/violating").await, Some(Value::Bool(false)));
        store.ingest(vec![usage("a", "vm1", 99.0, at(1, 0)), usage("a", "vm1", 99.0, at(1, 30))]).await.unwrap();
        let violations = query(&store, json!({"type": "hot.violation"})).await.unwrap();
        assert_eq!(violations.len(), 1, "one violation per breach");
        assert_eq!(read(&handler, "sla/hot/vm1/violating").await, Some(Value::Bool(true)));
        store.ingest(vec![usage("a", "vm1", 20.0, at(2, 0))]).await.unwrap();
        let recoveries = query(&store, json!({"type": "hot.recovery"})).await.unwrap();
        assert_eq!(recoveries.len(), 1);
        assert_eq!(recoveries[0].payload["until"], json!(at(2, 0).timestamp_millis()));
        assert_eq!(read(&handler, "sla/hot/vm1/violating").await, Some(Value::Bool(false)));
    }
}

#[tokio::test]
async fn filters_project_fields_and_queries_page() {
    for backend in backends().await {
        let filter = json!({"kind": "filter", "types": ["usage"], "fields": ["user"], "output": "who"});
        let tree = tree().await;
        let store =
            ContextStore::start(&backend.url, &tree, settings(), config(&[("handlers", "who", filter)])).await.unwrap();
        let events: Vec<_> = (0..25).map(|i| usage(&format!("u{i}"), "vm", 1.0, at(0, i))).collect();
        store.ingest(events).await.unwrap();
        let who = query(&store, json!({"type": "who", "limit": 100})).await.unwrap();
        assert_eq!(who.len(), 25);
        assert_eq!(who[0].payload, json!({"user": "u0"}));
        let mut cursor: Option<String> = None;
        let mut seen = 0;
        loop {
            let q = serde_json::from_value(json!({"type": "usage", "limit": 10, "cursor": cursor})).unwrap();
            let page = crate::query::run(&store, q).await.unwrap();
            seen += page.events.len();
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, 25);
        let window = json!({"type": "usage", "from": at(0, 10), "to": at(0, 14), "sender": "test"});
        assert_eq!(query(&store, window).await.unwrap().len(), 5);
        assert!(query(&store, json!({"type": "nothing-like-this"})).await.unwrap_err().contains("no event of type"));
        assert!(
            query(&store, json!({"type": "usage", "from": at(1, 0), "to": at(0, 0)}))
                .await
                .unwrap_err()
                .contains("reversed")
        );
        assert!(query(&store, json!({"type": "usage", "limit": 0})).await.is_err());
        assert!(query(&store, json!({"type": "usage", "cursor": "nonsense"})).await.is_err());
    }
}

#[tokio::test]
async fn retention_removes_by_count_and_by_age() {
    for backend in backends().await {
        let rules =
            [("retention", "usage", json!({"max_count": 10})), ("retention", "old", json!({"max_age_s": 3600}))];
        let tree = tree().await;
        let store = ContextStore::start(&backend.url, &tree, settings(), config(&rules)).await.unwrap();
        store.ingest((0..30).map(|i| usage("u", "v", i as f64, at(0, i))).collect()).await.unwrap();
        let old = |ts| ContextEvent { kind: "old".into(), ..usage("u", "v", 0.0, ts) };
        store.ingest(vec![old(Utc::now() - chrono::Duration::hours(2)), old(Utc::now())]).await.unwrap();
        retention::collect(&store).await.unwrap();
        let kept = query(&store, json!({"type": "usage"})).await.unwrap();
        assert_eq!(kept.len(), 10);
        assert_eq!(kept[0].payload["cpu"], json!(20.0), "the newest are kept");
        assert_eq!(query(&store, json!({"type": "old"})).await.unwrap().len(), 1);
        assert_eq!(store.monitoring()["retention"]["deleted"]["usage"], json!(20));
    }
}

#[tokio::test]
async fn state_survives_a_reopen_without_double_counting() {
    for backend in backends().await {
        let agg = json!({"kind": "aggregate", "input": "usage", "keys": ["user"], "value": "cpu", "window_s": 3600});
        let events: Vec<_> = (0..50).map(|i| usage("alice", "vm", 1.0, at(0, i))).collect();
        {
            let tree = tree().await;
            let store =
                ContextStore::start(&backend.url, &tree, settings(), config(&[("handlers", "usage", agg.clone())]))
                    .await
                    .unwrap();
            store.ingest(events[..30].to_vec()).await.unwrap();
        }
        let tree = tree().await;
        let store = ContextStore::start(&backend.url, &tree, settings(), Config::default()).await.unwrap();
        assert!(store.config().handlers.contains_key("usage"), "configuration persisted");
        store.ingest(events.clone()).await.unwrap();
        let handler = ContextStoreHandler::new(store);
        assert_eq!(read(&handler, "aggregates/usage/alice/2026-11-22T10:00:00Z/count").await, Some(Value::Int(50)));
    }
}

#[tokio::test]
async fn tree_events_become_context_events_with_captured_fields() {
    for backend in backends().await {
        let tree = tree().await;
        let sub = json!({"pattern": "./config/usage/*/*/cpu", "type": "usage", "fields": ["user", "vm"]});
        let agg = json!({"kind": "aggregate", "input": "usage", "keys": ["user"], "value": "value", "window_s": 86400});
        let store = ContextStore::start(
            &backend.url,
            &tree,
            settings(),
            config(&[("subscriptions", "usage", sub), ("handlers", "usage", agg)]),
        )
        .await
        .unwrap();
        // No pause: writes made as soon as the store has started are its too.
        let admin = Principal::named("admin");
        for (user, vm, v) in [("alice", "vm1", 2), ("alice", "vm2", 3), ("bob", "vm3", 4)] {
            let write = Write { content: Some(Content::Leaf(Value::Int(v))), ..Write::default() };
            tree.put(&Caller::new(&admin), &Uri::from_key(format!("config\0usage\0{user}\0{vm}\0cpu")), write)
                .await
                .unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let events = loop {
            let got = query(&store, json!({"type": "usage"})).await.unwrap_or_default();
            if got.len() == 3 || tokio::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(events.len(), 3, "{}", backend.url);
        // Two writes can share a millisecond, so find the event rather than assume its place.
        let vm1 = events.iter().find(|e| e.payload["vm"] == "vm1").expect("the vm1 event");
        assert_eq!((vm1.payload["user"].clone(), vm1.payload["value"].clone()), (json!("alice"), json!(2)));
        let windows = ContextStoreHandler::new(store.clone());
        let window =
            crate::handler::window_name(events[0].timestamp.timestamp_millis().div_euclid(86_400_000) * 86_400_000);
        assert_eq!(read(&windows, &format!("aggregates/usage/alice/{window}/sum")).await, Some(Value::Float(5.0)));
    }
}
