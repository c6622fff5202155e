//! PostgreSQL stopped under a running ContextStore. It stops the machine's
//! PostgreSQL, so it has a binary of its own (test binaries run one at a time).

mod common;

use std::time::Duration;

use common::{Server, config_with, postgres, postgres_database};
use serde_json::json;

/// Writes keep coming while the database is down; once it is back, every event arrives.
#[tokio::test]
async fn every_event_arrives_across_a_postgresql_outage() {
    let database = postgres_database().await;
    let config = format!(
        "[contextstore]\ndatabase = \"{database}\"\ningest_timeout_ms = 1500\n\n\
         [contextstore.subscriptions.metrics]\npattern = \"./config/metrics/*\"\ntype = \"metric\"\nfields = [\"name\"]\n"
    );
    let server = Server::start(&config_with(&config));
    let admin = server.as_admin();
    let stored =
        async || admin.get("/tree/contextstore/monitoring/ingest/stored").await.body["value"].as_u64().unwrap_or(0);
    for i in 0..20 {
        admin.put(&format!("/tree/config/metrics/m{}", i % 4), json!({"value": i})).await;
    }
    wait(async || stored().await == 20).await;

    postgres("stop");
    let outcome = std::panic::AssertUnwindSafe(async {
        for i in 20..70 {
            let r = admin.put(&format!("/tree/config/metrics/m{}", i % 4), json!({"value": i})).await;
            assert!(r.status == 200 || r.status == 201, "the tree keeps working without the store's database");
        }
        let r = admin
            .send(
                admin
                    .request(reqwest::Method::POST, "/exec/contextstore/ingest")
                    .json(&json!([{"sender": "s", "type": "direct"}])),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (503, "data_store_failure"),
            "a direct batch cannot commit: the client is told to retry"
        );
        wait(async || {
            let state = admin.get("/tree/contextstore/monitoring/database/state").await.body["value"].clone();
            state.as_str().is_some_and(|s| s.starts_with("unavailable"))
        })
        .await;
    });
    let result = futures::FutureExt::catch_unwind(outcome).await;
    postgres("start");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    // The tree events waited in the subscription; the refused direct batch was already queued and commits too.
    wait(async || stored().await >= 70).await;
    assert_eq!(admin.get("/tree/contextstore/monitoring/database/state").await.body["value"], "ok");
    let r = admin
        .send(
            admin
                .request(reqwest::Method::POST, "/exec/contextstore/query")
                .json(&json!({"type": "metric", "limit": 1000})),
        )
        .await;
    let values: Vec<i64> = r.body["result"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"]["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, (0..70).collect::<Vec<_>>(), "all, in order, none twice");
}

async fn wait(mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
