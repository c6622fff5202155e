//! The middle tree of A → B → C killed (and hung), then restarted: reads
//! through A fail fast with a remote error and recover; events resume with no
//! gap. Its own binary, since it stops a server the others would share.

mod common;

use std::time::{Duration, Instant};

use common::Trio;
use serde_json::{Value, json};

const TIMEOUT_MS: u64 = 500;

async fn read_cpu(t: &Trio) -> (u16, Value, Duration) {
    let started = Instant::now();
    let r = t.a.http().get("/tree/sites/b/c/cpu").await;
    (r.status, r.body, started.elapsed())
}

async fn eventually(t: &Trio, what: &str, ok: impl Fn(u16, &Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body, _) = read_cpu(t).await;
        if ok(status, &body) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[tokio::test]
async fn the_middle_tree_killed_or_hung_then_restarted() {
    let mut t = Trio::start(json!({"timeout_ms": TIMEOUT_MS, "cache_ms": 0}), true).await;
    let (status, body, _) = read_cpu(&t).await;
    assert_eq!((status, &body["value"]), (200, &json!(10)));
    let mut events = t.a.as_admin().events("?uri=./sites/b/c/**", None).await;

    // Hung: the read waits for the mount's timeout, no longer.
    signal(t.b.pid(), libc::SIGSTOP);
    let (status, body, took) = read_cpu(&t).await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("remote_error")), "{body}");
    assert!(took >= Duration::from_millis(TIMEOUT_MS - 50), "gave up early: {took:?}");
    assert!(took < Duration::from_millis(TIMEOUT_MS + 400), "took {took:?}, timeout {TIMEOUT_MS} ms");
    signal(t.b.pid(), libc::SIGCONT);
    eventually(&t, "B continued", |s, _| s == 200).await;

    // Killed: reads fail at once; the breaker opens and the mount says why.
    t.b.kill9();
    for _ in 0..5 {
        let (status, body, took) = read_cpu(&t).await;
        assert_eq!(status, 502, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(&t.b.base), "names the remote: {body}");
        assert!(took < Duration::from_millis(TIMEOUT_MS), "took {took:?}");
    }
    let mon = t.a.http().get("/tree/mounts/b/monitoring?depth=1").await.body;
    assert_eq!(mon["children"]["reachable"]["value"], json!(false), "{mon}");
    assert_eq!(mon["children"]["circuit"]["value"], json!("open"), "{mon}");
    assert!(mon["children"]["last_error"]["value"].as_str().is_some_and(|e| !e.is_empty()), "{mon}");

    // While B is down, C changes; after B restarts, A reads again and the change arrives, once.
    let r = t.c.as_admin().put("/tree/config/infra/cpu", json!({"value": 11})).await;
    assert_eq!(r.status, 200);
    t.b.restart();
    eventually(&t, "B restarted", |s, b| s == 200 && b["value"] == json!(11)).await;
    let r = t.c.as_admin().put("/tree/config/infra/cpu", json!({"value": 12})).await;
    assert_eq!(r.status, 200);
    // (B's restart also shows: its mount of C appears again.)
    let cpu: Vec<Value> = events
        .drain(Duration::from_millis(1500))
        .await
        .into_iter()
        .filter(|e| e["uri"] == json!("./sites/b/c/cpu"))
        .map(|e| e["value"].clone())
        .collect();
    assert_eq!(cpu, [json!(11), json!(12)], "the change made while B was down, then live ones, each once");

    // A restarted keeps its mount (made through the API) and resumes its bridge.
    t.a.crash_and_restart();
    let mut events = t.a.as_admin().events("?uri=./sites/b/c/**", None).await;
    eventually(&t, "A restarted", |s, b| s == 200 && b["value"] == json!(12)).await;
    let r = t.c.as_admin().put("/tree/config/infra/cpu", json!({"value": 13})).await;
    assert_eq!(r.status, 200);
    assert_eq!(events.next_json().await["value"], json!(13));
}
