//! Rules in a manager cloud (RabbitMQ and PostgreSQL on loopback, real
//! `dmtree serve` members and `dmtree agent` resources): the seeds' two rules,
//! and kill -9 of the coordinator while a global rule fires.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Agent, Server, Vhost, eventually, manager_config_with, postgres_database, resources};
use serde_json::{Value, json};

/// Short leases and one-second epochs.
fn member(id: &str, registry: &str, amqp: &str) -> String {
    let extra = "heartbeat_ms = 500\nmissed = 4\nretry_ms = 3000\nrpc_timeout_ms = 3000\n\n[rules]\nepoch = \"1s\"\n";
    manager_config_with(id, registry, amqp, extra)
}

/// One cloud at a time: each starts several processes on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn put_rule(server: &Server, name: &str, rule: Value) {
    let r = server.as_admin().put(&format!("/tree/rules/{name}"), json!({ "value": rule })).await;
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

async fn status(server: &Server, id: &str) -> Option<String> {
    resources(server).await.get(id).and_then(|r| r["status"].as_str().map(str::to_owned))
}

async fn up(server: &Server, id: &str) {
    eventually(&format!("{id} up"), Duration::from_secs(20), || async {
        (status(server, id).await.as_deref() == Some("up")).then_some(())
    })
    .await;
}

/// Seed 000's `ShutDownIdle` (local) and `CreateAlternativeForRegistry` (global), as dmtree rules.
#[tokio::test]
async fn the_seeds_rules_shut_down_idle_services_and_replace_a_lost_registry() {
    let _serial = SERIAL.lock().await;
    let vhost = Vhost::new();
    let server = Server::start(&member("m1", &postgres_database().await, &vhost.url()));
    let dir = tempfile::tempdir().expect("tempdir");
    let idle = |name: &str, secs: u64| {
        let path = dir.path().join(format!("{name}.idle"));
        std::fs::write(&path, secs.to_string()).expect("idle file");
        path.display().to_string()
    };
    // Two services, one idle for two hours; `shutdown` ends the agent (and what it supervises).
    let stop = "shutdown=(sleep 0.2; kill $PPID) & echo stopping";
    let busy_idle = format!("idle={}", idle("busy", 10));
    let lazy_idle = format!("idle={}", idle("lazy", 7200));
    let _busy =
        Agent::start(&vhost.url(), "svc-busy", &["--type", "service", "--property", &busy_idle, "--action", stop]);
    let mut lazy =
        Agent::start(&vhost.url(), "svc-lazy", &["--type", "service", "--property", &lazy_idle, "--action", stop]);
    // A factory, as seed 000's fork daemon: `create` starts a registry's agent (for a minute at most).
    let created = dir.path().join("created");
    let bin = env!("CARGO_BIN_EXE_dmtree");
    let spawn = format!(
        "create=echo \"$DMTREE_EXEC_DATA\" >> {created}; (timeout 60 {bin} agent --id registry-$(wc -l < {created}) --type Registry \
         --amqp '{amqp}' --retry-ms 300 >/dev/null 2>&1 &)",
        created = created.display(),
        amqp = vhost.url()
    );
    let _factory = Agent::start(&vhost.url(), "factory-1", &["--type", "factory", "--action", &spawn]);
    for id in ["svc-busy", "svc-lazy", "factory-1"] {
        up(&server, id).await;
    }

    put_rule(
        &server,
        "ShutDownIdle",
        json!({"scope": "local", "for_each": "./managers/resources/*",
        "where": "type == 'service'", "when": "value('properties/idle') > 3600",
        "actions": [{"shutdown": "."}]}),
    )
    .await;
    put_rule(
        &server,
        "CreateAlternativeForRegistry",
        json!({"scope": "global",
        "when": "!exists('./managers/resources/*', type == 'Registry' && status == 'up')",
        "actions": [{"create": "Registry"}]}),
    )
    .await;

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while lazy.exited().is_none() {
        if std::time::Instant::now() > deadline {
            let http = server.as_admin();
            let e = http.send(http.request(reqwest::Method::POST, "/exec/rules/ShutDownIdle/explain")).await;
            let m = http.get("/tree/rules/ShutDownIdle?depth=3").await;
            panic!("the idle service's agent did not exit: {}\n{}", e.body, m.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("a registry", Duration::from_secs(20), || async {
        (status(&server, "registry-1").await.as_deref() == Some("up")).then_some(())
    })
    .await;
    assert_eq!(lines(&created), 1, "one registry asked for");
    let asked: Value = serde_json::from_str(&std::fs::read_to_string(&created).unwrap_or_default()).unwrap_or_default();
    assert_eq!(asked["type"], json!("Registry"));
    assert!(asked["action_id"].as_str().is_some_and(|id| id.starts_with("CreateAlternativeForRegistry|")));
    // Enough epochs for a second firing, had there been one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lines(&created), 1);
    assert_eq!(status(&server, "svc-busy").await.as_deref(), Some("up"));
    let fired = server.as_admin().get("/tree/rules/ShutDownIdle/monitoring/firings").await;
    assert_eq!(fired.body["value"], json!(1), "only the idle service");
}

/// The coordinator is killed the moment its global rule's action took
/// effect, before it could hear the result and record the firing as done:
/// its successor redoes the claimed firing with the same action id, and the
/// agent runs it once. The action counts its runs in a file.
#[tokio::test]
async fn a_global_rule_fires_exactly_once_across_coordinator_failover() {
    let _serial = SERIAL.lock().await;
    let vhost = Vhost::new();
    let registry = postgres_database().await;
    let mut m1 = Server::start(&member("m1", &registry, &vhost.url()));
    eventually("m1 coordinates", Duration::from_secs(10), || async {
        (common::leaf(&m1, "monitoring/self/role").await == json!("coordinator")).then_some(())
    })
    .await;
    let m2 = Server::start(&member("m2", &registry, &vhost.url()));
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    // Slow, so the coordinator dies after the effect and before it hears the result.
    let bump = format!("bump=echo \"$DMTREE_EXEC_DATA\" >> {}; sleep 2", runs.display());
    let _counter = Agent::start(&vhost.url(), "counter", &["--type", "counter", "--action", &bump]);
    up(&m2, "counter").await;
    put_rule(
        &m1,
        "bump-on-trigger",
        json!({"scope": "global",
        "when": "exists('./managers/resources/*', type == 'trigger' && status == 'up')",
        "actions": [{"exec": "./managers/resources/counter/actions/bump", "data": {"epoch": "$epoch"}}]}),
    )
    .await;
    let _trigger = Agent::start(&vhost.url(), "trigger", &["--type", "trigger"]);
    eventually("the action's first run", Duration::from_secs(20), || async { (lines(&runs) > 0).then_some(()) }).await;
    m1.kill9();
    eventually("m2 coordinates", Duration::from_secs(15), || async {
        (common::leaf(&m2, "monitoring/self/role").await == json!("coordinator")).then_some(())
    })
    .await;
    // Epochs at m2: a redo of m1's unfinished claim, if any, happens now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(lines(&runs), 1, "the action ran once: {:?}", std::fs::read_to_string(&runs));
    let redone = m2.as_admin().get("/tree/rules/monitoring/redone").await.body["value"].clone();
    assert_eq!(redone, json!(1), "m2 redid m1's unfinished firing (and the agent answered from its first run)");
    let counter_up = status(&m2, "counter").await;
    assert_eq!(counter_up.as_deref(), Some("up"));
}
