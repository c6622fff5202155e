//! The manager cloud through outages of its engines: RabbitMQ and then
//! PostgreSQL restarted mid-run. Everyone reconnects, every resource ends
//! up held by exactly one live member, and none is held twice.
//! (A binary of its own: restarting the machine's brokers would disturb
//! the other cloud tests.)

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const SLOW: Duration = Duration::from_secs(60);

/// Each member holds exactly the resources the summary gives it.
async fn held_once(members: &[(&str, &Server)], ids: &[String]) {
    eventually("every resource held by exactly one live member", SLOW, || async {
        let summary = all_up(members[0].1, ids, &members.iter().map(|(id, _)| *id).collect::<Vec<_>>(), SLOW).await;
        let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
        for r in summary.values().filter(|r| r["status"] != "down") {
            *expected.entry(r["manager"].as_str().unwrap_or_default()).or_default() += 1;
        }
        for (id, server) in members {
            if held(server).await != expected.get(id).copied().unwrap_or(0) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_rides_out_broker_and_registry_restarts() {
    let (vhost, registry) = (Vhost::new(), postgres_database().await);
    let m1 = Server::start(&manager_config("m1", &registry, &vhost.url()));
    eventually("m1 joined", SLOW, || async { leaf(&m1, "monitoring/self/birth").await.is_u64().then_some(()) }).await;
    let m2 = Server::start(&manager_config("m2", &registry, &vhost.url()));
    let agents: Vec<Agent> = (1..=8).map(|i| Agent::start(&vhost.url(), &format!("r-{i}"), &[])).collect();
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    let members = [("m1", &m1), ("m2", &m2)];
    held_once(&members, &ids).await;

    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    held_once(&members, &ids).await;
    let beats = leaf(&m1, "monitoring/heartbeats").await.as_u64().unwrap()
        + leaf(&m2, "monitoring/heartbeats").await.as_u64().unwrap();

    postgres("stop");
    tokio::time::sleep(Duration::from_secs(4)).await;
    postgres("start");
    held_once(&members, &ids).await;
    eventually("heartbeats flow again", SLOW, || async {
        let now =
            leaf(&m1, "monitoring/heartbeats").await.as_u64()? + leaf(&m2, "monitoring/heartbeats").await.as_u64()?;
        (now > beats + 2 * ids.len() as u64).then_some(())
    })
    .await;
    let (id, term) = (leaf(&m2, "coordinator/id").await, leaf(&m2, "coordinator/term").await);
    assert_eq!(leaf(&m1, "coordinator/id").await, id, "the members agree on the coordinator (term {term})");
}
