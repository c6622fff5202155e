//! The manager cloud end to end: real `dmtree serve` managers on the
//! machine's PostgreSQL and RabbitMQ (a vhost and a database per test),
//! real agents (`dmtree agent`, and a pika script written from
//! asyncapi.yaml), and kill -9 / SIGSTOP rather than graceful stops.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt as _;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

/// The cloud tests share two cores: one at a time keeps leases honest.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SLOW: Duration = Duration::from_secs(40);

async fn start_managers(ids: &[&str], registry: &str, amqp: &str) -> Vec<Server> {
    let mut servers = Vec::new();
    for id in ids {
        let server = Server::start(&manager_config(id, registry, amqp));
        // Join one by one, so births follow the order of `ids`.
        eventually("the member joined", SLOW, || async {
            (leaf(&server, "monitoring/self/birth").await.is_u64()).then_some(())
        })
        .await;
        servers.push(server);
    }
    servers
}

fn signal(server: &Server, sig: i32) {
    // SAFETY: sends a signal to a child process this test started.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, sig) }, 0);
}

async fn coordinator(via: &Server) -> (String, u64) {
    let c = via.http().get("/tree/managers/coordinator?depth=1").await.body;
    let id = c["children"]["id"]["value"].as_str().unwrap_or_default().to_owned();
    (id, c["children"]["term"]["value"].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_survives_its_coordinator_and_a_manager_dying() {
    let _serial = SERIAL.lock().await;
    let (vhost, registry) = (Vhost::new(), postgres_database().await);
    let mut m = start_managers(&["m1", "m2", "m3"], &registry, &vhost.url()).await;
    let mut agents: Vec<Agent> = (1..20).map(|i| Agent::start(&vhost.url(), &format!("svc-{i:02}"), &[])).collect();
    agents.push(Agent::start_pika(&vhost.url(), "py-1"));
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    let before = all_up(&m[1], &ids, &["m1", "m2", "m3"], SLOW).await;
    let (first, term) = coordinator(&m[2]).await;
    assert_eq!(first, "m1", "the lowest birth coordinates");
    assert_eq!(coordinator(&m[0]).await.0, "m1", "every member agrees");
    let spread: std::collections::BTreeSet<_> = ids.iter().map(|id| before[id]["manager"].to_string()).collect();
    assert_eq!(spread.len(), 3, "the least-loaded member takes each resource: {before:?}");

    // Detail is held by the holder and read (or run) from any member.
    let held_by_m1 = ids.iter().find(|id| before[*id]["manager"] == "m1").unwrap().clone();
    let load = m[2].http().get(&format!("/tree/managers/resources/{held_by_m1}/properties/load")).await;
    assert_eq!(load.status, 200, "{:?}", load.body);
    let echo =
        m[2].as_admin().post(&format!("/exec/managers/resources/{held_by_m1}/actions/echo"), json!({"n": 7})).await;
    assert_eq!(echo.status, 200, "{:?}", echo.body);
    assert_eq!(echo.body["result"]["stdout"], "{\"n\":7}\n");
    let pong = m[0].as_admin().post("/exec/managers/resources/py-1/actions/ping", json!(1)).await;
    assert_eq!(pong.body["result"]["pong"], true, "the pika agent answers: {:?}", pong.body);
    let anon = m[0].http().post(&format!("/exec/managers/resources/{held_by_m1}/actions/echo"), json!({})).await;
    assert!(anon.status == 401 || anon.status == 403, "{}", anon.status);

    // kill -9 the coordinator: the next birth takes over, under a new term.
    m[0].kill9();
    let (next, new_term) = eventually("m2 coordinates", SLOW, || async {
        let (id, term) = coordinator(&m[2]).await;
        (id == "m2").then_some((id, term))
    })
    .await;
    assert!(new_term > term, "{next} took over at term {new_term} (was {term})");
    let after = all_up(&m[1], &ids, &["m2", "m3"], SLOW).await;
    assert_eq!(after.len(), before.len(), "no resource is lost");
    let holders = held(&m[1]).await + held(&m[2]).await;
    assert_eq!(holders as usize, ids.len() + 2, "each resource (and each live host) held by exactly one live member");
    assert_eq!(after["m1.host"]["status"], "down", "a dead member's own host is down, not moved");

    // kill -9 a plain manager: its resources move to the coordinator and heartbeat there.
    m[2].kill9();
    all_up(&m[1], &ids, &["m2"], SLOW).await;
    let beats = leaf(&m[1], "monitoring/heartbeats").await.as_u64().unwrap();
    eventually("heartbeats reach the new manager", SLOW, || async {
        (leaf(&m[1], "monitoring/heartbeats").await.as_u64().unwrap() > beats + ids.len() as u64).then_some(())
    })
    .await;
    assert_eq!(held(&m[1]).await as usize, ids.len() + 1);
    drop(agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_paused_past_its_lease_is_fenced() {
    let _serial = SERIAL.lock().await;
    let (vhost, registry) = (Vhost::new(), postgres_database().await);
    let m = start_managers(&["m1", "m2", "m3"], &registry, &vhost.url()).await;
    let mut agents: Vec<Agent> = (1..=3).map(|i| Agent::start(&vhost.url(), &format!("a-{i}"), &[])).collect();
    all_up(&m[1], &["a-1".into(), "a-2".into(), "a-3".into()], &["m1", "m2", "m3"], SLOW).await;
    let birth = leaf(&m[0], "monitoring/self/birth").await.as_u64().unwrap();
    let (_, term) = coordinator(&m[1]).await;
    let accepted_before = leaf(&m[0], "monitoring/assigned").await.as_u64().unwrap();

    signal(&m[0], libc::SIGSTOP);
    eventually("m2 coordinates while m1 sleeps", SLOW, || async { (coordinator(&m[1]).await.0 == "m2").then_some(()) })
        .await;
    // Requests made now may be delivered to m1's still-open consumer.
    agents.extend((4..=6).map(|i| Agent::start(&vhost.url(), &format!("a-{i}"), &[])));
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&m[0], libc::SIGCONT);

    let ids: Vec<String> = (1..=6).map(|i| format!("a-{i}")).collect();
    all_up(&m[1], &ids, &["m1", "m2", "m3"], SLOW).await;
    eventually("m1 rejoined with a new birth", SLOW, || async {
        (leaf(&m[0], "monitoring/self/birth").await.as_u64().is_some_and(|b| b > birth)).then_some(())
    })
    .await;
    let accepted_after = leaf(&m[0], "monitoring/assigned").await.as_u64().unwrap();
    let fenced = leaf(&m[0], "monitoring/fenced_writes").await.as_u64().unwrap();
    eprintln!("paused coordinator: {fenced} registry writes refused, {} accepted", accepted_after - accepted_before);
    assert_eq!(accepted_after, accepted_before, "0 placements accepted from the deposed coordinator");
    let (now, new_term) = coordinator(&m[2]).await;
    assert_eq!(now, "m2", "m1 came back with a later birth and does not take over");
    assert!(new_term > term);
    assert_eq!(leaf(&m[0], "monitoring/self/role").await, "member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_made_with_no_coordinator_wait_in_the_broker() {
    let _serial = SERIAL.lock().await;
    let (vhost, registry) = (Vhost::new(), postgres_database().await);
    // The topology exists (a member ran once), but no member runs now.
    let mut first = start_managers(&["m1"], &registry, &vhost.url()).await;
    first[0].kill9();
    let agents: Vec<Agent> = (1..=5).map(|i| Agent::start(&vhost.url(), &format!("w-{i}"), &[])).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = start_managers(&["m2"], &registry, &vhost.url()).await;
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    all_up(&m[0], &ids, &["m2"], SLOW).await;
    assert_eq!(held(&m[0]).await as usize, ids.len() + 1, "0 lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_duplicate_instance_shuts_itself_down() {
    let _serial = SERIAL.lock().await;
    let (vhost, registry) = (Vhost::new(), postgres_database().await);
    let m = start_managers(&["m1"], &registry, &vhost.url()).await;
    let mut old = Agent::start(&vhost.url(), "dup", &[]);
    let first = all_up(&m[0], &["dup".into()], &["m1"], SLOW).await["dup"]["instance"].as_u64().unwrap();
    let mut new = Agent::start(&vhost.url(), "dup", &[]);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = old.exited() {
            break status;
        }
        assert!(started.elapsed() < SLOW, "the older instance did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
    let now = all_up(&m[0], &["dup".into()], &["m1"], SLOW).await["dup"]["instance"].as_u64().unwrap();
    assert!(now > first, "the newer instance ({now}) holds the resource");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(new.exited().is_none(), "the newer instance keeps running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policies_respawn_or_wait_for_an_operator() {
    let _serial = SERIAL.lock().await;
    let (vhost, registry) = (Vhost::new(), postgres_database().await);
    let m = start_managers(&["m1"], &registry, &vhost.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let level = dir.path().join("level");
    let level_arg = format!("level={}", level.display());
    let _auto = Agent::start(
        &vhost.url(),
        "auto",
        &["--policy", "auto-instantiate", "--spawn", "sleep 600", "--writable", &level_arg],
    );
    let _manual = Agent::start(&vhost.url(), "manual", &["--spawn", "sleep 600"]);
    all_up(&m[0], &["auto".into(), "manual".into()], &["m1"], SLOW).await;
    let admin = m[0].as_admin();
    let set = admin.put("/tree/managers/resources/auto/properties/level", json!({"value": 5})).await;
    assert_eq!(set.status, 201, "{:?}", set.body);
    assert_eq!(std::fs::read_to_string(&level).unwrap(), "5");

    // auto-instantiate: kill the process; the manager has the agent spawn it again.
    let pid = leaf(&m[0], "resources/auto/properties/pid").await.as_u64().unwrap();
    std::fs::remove_file(&level).unwrap();
    // SAFETY: the resource's process, started by the agent this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let respawned = eventually("a new process runs", SLOW, || async {
        let now = leaf(&m[0], "resources/auto/properties/pid").await.as_u64()?;
        (now != pid && now != 0).then_some(now)
    })
    .await;
    assert_ne!(respawned, pid);
    assert_eq!(leaf(&m[0], "resources/auto/properties/restarts").await, 1);
    eventually("the last configuration is reapplied", SLOW, || async {
        (std::fs::read_to_string(&level).ok()? == "5").then_some(())
    })
    .await;
    all_up(&m[0], &["auto".into()], &["m1"], SLOW).await;

    // require-user-input: unreachable until an operator runs restart.
    let pid = leaf(&m[0], "resources/manual/properties/pid").await.as_u64().unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    eventually("marked unreachable", SLOW, || async {
        (leaf(&m[0], "resources/manual/status").await == "unreachable").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(leaf(&m[0], "resources/manual/status").await, "unreachable", "it waits for an operator");
    let restart = admin.post("/exec/managers/resources/manual/actions/restart", json!(null)).await;
    assert_eq!(restart.status, 200, "{:?}", restart.body);
    all_up(&m[0], &["manual".into()], &["m1"], SLOW).await;
}

/// Publishes one raw message as `url`'s user (with `user_id` unless `anonymous`).
async fn publish_raw(url: &str, queue: &str, body: &[u8], anonymous: bool, reply_to: &str) {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.expect("amqp");
    let channel = conn.create_channel().await.unwrap();
    let user = url.split("//").nth(1).and_then(|r| r.split(':').next()).unwrap();
    let mut props = BasicProperties::default().with_reply_to(reply_to.into());
    if !anonymous {
        props = props.with_user_id(user.into());
    }
    let confirm =
        channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, props).await.unwrap();
    confirm.await.unwrap();
    let _ = conn.close(200, "".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_counted_dead_lettered_and_harmless() {
    let _serial = SERIAL.lock().await;
    let (vhost, registry) = (Vhost::new(), postgres_database().await);
    let m = start_managers(&["m1"], &registry, &vhost.url()).await;
    let _agent = Agent::start(&vhost.url(), "victim", &[]);
    let instance = all_up(&m[0], &["victim".into()], &["m1"], SLOW).await["victim"]["instance"].as_u64().unwrap();
    let intruder = unique("intruder-");
    rabbitmqctl(&["add_user", &intruder, "pw"]);
    rabbitmqctl(&["set_permissions", "-p", &vhost.name, &intruder, ".*", ".*", ".*"]);

    // A private queue to see what the manager answers.
    let conn = Connection::connect(&vhost.url(), ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let private = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let inbox = channel.queue_declare("".into(), private, FieldTable::default()).await.unwrap().name().to_string();
    let mut answers = channel
        .basic_consume(
            inbox.as_str().into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let (guest, other) = (vhost.url(), vhost.url_as(&intruder, "pw"));
    let manage_me =
        json!({"resource": "victim", "resource_type": "service", "nonce": "evil", "reply_to": inbox, "msg_id": 1});
    let heartbeat = |resource: &str, instance: u64| json!({"type": "heartbeat", "resource": resource, "instance": instance, "msg_id": 99, "reply_to": inbox});
    let cases: [(&str, &str, Vec<u8>, bool); 9] = [
        (&guest, "dmtree.manage_me", b"not json".to_vec(), false),
        (&guest, "dmtree.manage_me", br#"{"resource": 1}"#.to_vec(), false),
        (&guest, "dmtree.manage_me", manage_me.to_string().into_bytes(), true),
        (&other, "dmtree.manage_me", manage_me.to_string().into_bytes(), false),
        (&guest, "dmtree.manager.m1", b"{".to_vec(), false),
        (&guest, "dmtree.manager.m1", json!({"type": "launch"}).to_string().into_bytes(), false),
        (&guest, "dmtree.manager.m1", heartbeat("ghost", 1).to_string().into_bytes(), false),
        (&guest, "dmtree.manager.m1", heartbeat("victim", instance - 1).to_string().into_bytes(), false),
        (&other, "dmtree.manager.m1", json!({"type": "detail", "resource": "victim"}).to_string().into_bytes(), false),
    ];
    for (url, queue, body, anonymous) in &cases {
        publish_raw(url, queue, body, *anonymous, &inbox).await;
    }
    let counts = eventually("every bad message counted", SLOW, || async {
        let d = m[0].http().get("/tree/managers/monitoring/dropped?depth=1").await.body;
        let n = |k: &str| d["children"][k]["value"].as_u64().unwrap_or(0);
        let counts = [n("malformed"), n("schema"), n("unauthorised"), n("unknown"), n("stale")];
        (counts[0] >= 2 && counts[1] >= 2 && counts[2] >= 3 && counts[3] >= 1 && counts[4] >= 1).then_some(counts)
    })
    .await;
    eprintln!("dropped [malformed, schema, unauthorised, unknown, stale] = {counts:?}");
    let dead = eventually("all nine dead-lettered", SLOW, || async {
        let q = channel
            .queue_declare(
                "dmtree.dead".into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .ok()?;
        (q.message_count() >= 9).then_some(q.message_count())
    })
    .await;
    assert!(dead >= 9);
    // The manager answered the old instance with a shutdown and the ghost with `unknown`.
    let mut kinds = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), answers.next()).await {
        kinds.push(serde_json::from_slice::<Value>(&d.data).unwrap()["type"].as_str().unwrap_or_default().to_owned());
    }
    assert!(kinds.contains(&"shutdown".into()) && kinds.contains(&"unknown".into()), "{kinds:?}");
    assert!(!kinds.contains(&"assignment".into()), "no request of the intruder's was placed: {kinds:?}");

    // And the cloud works on: the victim still belongs to its owner, a new agent joins.
    let _late = Agent::start(&vhost.url(), "late", &[]);
    let after = all_up(&m[0], &["victim".into(), "late".into()], &["m1"], SLOW).await;
    assert_eq!(after["victim"]["instance"], instance);
    assert_eq!(after["victim"]["owner"], "guest");
    rabbitmqctl(&["delete_user", &intruder]);
}

#[test]
fn an_invalid_managers_section_is_refused_at_start() {
    for (section, expected) in [
        ("[managers]\nheartbeat_ms = 0\n", "heartbeat_ms must be between"),
        ("[managers]\nregistry = \"postgres://127.0.0.1/x\"\n", "needs `amqp`"),
        ("[managers]\nid = \"a/b\"\n", "id must be"),
        ("[managers]\ncolour = 1\n", "unknown field `colour`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, section).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dmtree"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .arg("--data")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expected), "{section}: {stderr}");
    }
}

/// The ACL invariant on `./managers`: a resource readable by admin only
/// sends its events to admin only, live and on replay, while the rest of
/// `./managers` stays public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_resource_leaks_nothing_through_events() {
    let _serial = SERIAL.lock().await;
    let server = Server::start(&config_with("[infrastructure]\nlocalhost = false\n"));
    let (admin, alice) = (server.as_admin(), server.as_alice());
    let host = "./managers/resources/local.host";
    eventually("the host is registered", SLOW, || async {
        (leaf(&server, "resources/local.host/status").await == "up").then_some(())
    })
    .await;
    let acl = admin.put("/tree/managers/resources/local.host", json!({"acl": "Get=admin"})).await;
    assert_eq!(acl.status, 200, "{:?}", acl.body);
    assert_eq!(alice.get("/tree/managers/resources/local.host/properties/load").await.status, 403);

    let mut watched_by_admin = admin.events("?uri=./managers/**", None).await;
    let mut watched_by_alice = alice.events("?uri=./managers/**", None).await;
    let mut seen = 0;
    while seen < 2 {
        let event = watched_by_admin.next_json().await;
        seen += event["uri"].as_str().is_some_and(|u| u.starts_with(host)) as usize;
    }
    let live = watched_by_alice.drain(Duration::from_secs(2)).await;
    assert!(live.iter().all(|e| !e["uri"].as_str().unwrap_or_default().starts_with(host)), "{live:?}");
    let replay = alice.events("?uri=./managers/**&since=0", None).await.drain(Duration::from_secs(2)).await;
    assert!(replay.iter().any(|e| e["uri"] == "./managers/coordinator/term"), "the stream works: {replay:?}");
    assert!(replay.iter().all(|e| !e["uri"].as_str().unwrap_or_default().starts_with(host)), "{replay:?}");
}
