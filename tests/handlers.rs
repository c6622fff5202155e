//! Data handlers end to end: one `dmtree serve` for the whole binary, against
//! the real local host, a real node_exporter, the machine's RabbitMQ (with
//! its management and shovel plugins), and small real HTTP servers in this
//! file standing in for a cloud's REST API and sitting in front of the
//! management API (to count requests and to make the broker hang).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use common::{Events, Http, Server, config_with, free_address, spawn_tied, unique};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const MANAGEMENT: &str = "http://127.0.0.1:15672";

static SERVER: OnceCell<Server> = OnceCell::const_new();

async fn server() -> &'static Server {
    SERVER.get_or_init(|| async { Server::start(&config_with("")) }).await
}

/// Polls `check` until it holds (or panics after `limit`).
async fn eventually<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn mount(admin: &Http, id: &str, at: &str, handler: &str, config: Value) {
    let r = admin.post("/tree/mounts", json!({"id": id, "at": at, "handler": handler, "config": config})).await;
    assert_eq!(r.status, 201, "mount {id}: {:?}", r.body);
}

async fn value(http: &Http, path: &str) -> Value {
    let r = http.get(path).await;
    assert_eq!(r.status, 200, "GET {path}: {:?}", r.body);
    r.body["value"].clone()
}

/// A real HTTP server: serves `body` at `/`, or hangs when told to.
struct Fake {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    hang: Arc<AtomicBool>,
}

impl Fake {
    async fn start(body: String) -> Fake {
        let body = Arc::new(Mutex::new(body));
        let hang = Arc::new(AtomicBool::new(false));
        let state = (body.clone(), hang.clone());
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|State((body, hang)): State<(Arc<Mutex<String>>, Arc<AtomicBool>)>| async move {
                if hang.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                body.lock().clone()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app.with_state(state)).await });
        Fake { addr, body, hang }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn set(&self, body: String) {
        *self.body.lock() = body;
    }
}

fn cloud(users: usize, vms: usize, cpu: impl Fn(usize, usize) -> f64) -> String {
    let users: Vec<Value> = (0..users)
        .map(|u| {
            let vms: Vec<Value> = (0..vms)
                .map(|v| {
                    json!({"name": format!("vm{v}"), "host": "h1", "state": "running",
                    "resources": {"cpu": {"vcpus": 2, "usage": cpu(u, v)}, "memory": {"total": 4096, "used": 1024},
                                  "disk": {"total": 40, "used": 3}, "network": {"rx_bytes": 10, "tx_bytes": 20}}})
                })
                .collect();
            json!({"name": format!("user{u}"), "vms": vms})
        })
        .collect();
    json!({"users": users, "hosts": [{"name": "h1", "resources": {"cpu": {"cores": 16, "usage": 40.0}}}]}).to_string()
}

#[tokio::test]
async fn the_local_host_is_mounted_by_default_with_real_changing_values() {
    let s = server().await;
    let http = s.http();
    let usage = value(&http, "/tree/infrastructure/localhost/monitoring/cpu/usage").await;
    let usage = usage.as_f64().expect("cpu usage is a number");
    assert!((0.0..=100.0).contains(&usage), "{usage}");
    let total = value(&http, "/tree/infrastructure/localhost/monitoring/memory/total").await;
    assert!(total.as_u64().unwrap() > 0);
    let lo = value(&http, "/tree/infrastructure/localhost/monitoring/networks/lo/rx_bytes_total").await;
    assert!(lo.as_u64().is_some());
    let load = http.get("/tree/infrastructure/localhost/monitoring/system?depth=unbounded").await;
    assert!(load.body["children"]["load"]["children"]["one"]["value"].is_number(), "{:?}", load.body);
    let polls = value(&http, "/tree/infrastructure/localhost/monitoring/poller/polls").await;
    // A second read a couple of intervals later sees newer data.
    let later = eventually("another poll", Duration::from_secs(10), async || {
        let n = value(&http, "/tree/infrastructure/localhost/monitoring/poller/polls").await;
        (n.as_u64() > polls.as_u64()).then_some(n)
    })
    .await;
    assert!(later.as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn polling_is_lazy_it_follows_reads_and_subscriptions() {
    let s = server().await;
    let (admin, http) = (s.as_admin(), s.http());
    let id = unique("lazy");
    let at = format!("./infra/{id}");
    mount(&admin, &id, &at, "infrastructure", json!({"interval_ms": 200, "idle_ms": 600})).await;
    let base = format!("/tree/infra/{id}/monitoring");
    let polls = async || value(&http, &format!("{base}/poller/polls")).await.as_u64().unwrap();
    let active = async || value(&http, &format!("{base}/poller/active")).await == json!(true);

    assert!(!active().await, "nothing polls before anyone reads");
    assert_eq!(polls().await, 0);
    value(&http, &format!("{base}/memory/total")).await;
    assert!(active().await);
    // Reads of the poller's own state do not keep it alive: it goes idle.
    eventually("idle after reads stop", Duration::from_secs(5), async || (!active().await).then_some(())).await;
    let idle_polls = polls().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(polls().await, idle_polls, "no polling while idle");

    // A subscription keeps it polling, and only changed values become events.
    let mut events = http.events(&format!("?uri={}/monitoring/**", at), None).await;
    eventually("polling for a subscriber", Duration::from_secs(5), async || active().await.then_some(())).await;
    let seen = collect_for(&mut events, Duration::from_millis(1500)).await;
    assert!(!seen.is_empty(), "a subscriber gets monitoring events");
    assert!(seen.iter().all(|e| e["uri"].as_str().unwrap().starts_with(&format!("{at}/monitoring/"))));
    let memory_total = seen.iter().filter(|e| e["uri"] == json!(format!("{at}/monitoring/memory/total"))).count();
    assert!(memory_total <= 1, "an unchanged value is not re-sent every poll ({memory_total} events)");
    drop(events);
    eventually("idle after unsubscribing", Duration::from_secs(5), async || (!active().await).then_some(())).await;
    assert_eq!(admin.delete(&format!("/tree/mounts/{id}")).await.status, 204);
}

#[tokio::test]
async fn node_exporter_metrics_map_to_nodes() {
    let s = server().await;
    let (admin, http) = (s.as_admin(), s.http());
    let listen = free_address();
    let mut cmd = Command::new("prometheus-node-exporter");
    cmd.arg(format!("--web.listen-address={listen}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut exporter = spawn_tied(cmd);
    let id = unique("node");
    let include =
        ["node_load1", "node_cpu_seconds_total", "node_network_receive_bytes_total", "go_gc_duration_seconds"];
    let config = json!({"supplier": "prometheus", "url": format!("http://{listen}/metrics"), "interval_ms": 500, "include": include});
    mount(&admin, &id, &format!("./infra/{id}"), "infrastructure", config).await;
    let base = format!("/tree/infra/{id}/monitoring");
    let tree = eventually("node_exporter answers", Duration::from_secs(15), async || {
        let r = http.get(&format!("{base}?depth=unbounded")).await;
        (r.status == 200 && r.body["children"]["node_load1"].is_object()).then_some(r.body)
    })
    .await;
    let kids = &tree["children"];
    assert!(kids["node_load1"]["value"].is_number(), "a gauge: {}", kids["node_load1"]);
    let cpu0 = &kids["node_cpu_seconds_total"]["children"]["cpu=0"]["children"];
    assert!(cpu0["mode=idle"]["value"].as_f64().unwrap() > 0.0, "a counter by labels: {cpu0}");
    let devices = kids["node_network_receive_bytes_total"]["children"].as_object().expect("per device");
    assert!(devices.iter().all(|(k, v)| k.starts_with("device=") && v["value"].is_number()), "{devices:?}");
    let gc = &kids["go_gc_duration_seconds"]["children"];
    assert!(gc["count"]["value"].is_number() && gc["quantiles"]["children"].is_object(), "a summary: {gc}");
    assert!(kids.get("node_memory_MemTotal_bytes").is_none(), "include leaves the rest out");

    // Histograms, from a real endpoint serving them.
    let fake = Fake::start(
        "# TYPE req_seconds histogram\nreq_seconds_bucket{path=\"/a\",le=\"0.1\"} 3\nreq_seconds_bucket{path=\"/a\",le=\"+Inf\"} 4\nreq_seconds_sum{path=\"/a\"} 0.7\nreq_seconds_count{path=\"/a\"} 4\n".into(),
    )
    .await;
    let hid = unique("hist");
    mount(
        &admin,
        &hid,
        &format!("./infra/{hid}"),
        "infrastructure",
        json!({"supplier": "prometheus", "url": fake.url()}),
    )
    .await;
    let h = http.get(&format!("/tree/infra/{hid}/monitoring/req_seconds/path=_a?depth=unbounded")).await;
    assert_eq!(h.body["children"]["buckets"]["children"]["+Inf"]["value"], json!(4.0), "{:?}", h.body);
    assert_eq!(h.body["children"]["count"]["value"], json!(4.0));
    for m in [id, hid] {
        assert_eq!(admin.delete(&format!("/tree/mounts/{m}")).await.status, 204);
    }
    let _ = exporter.kill();
    let _ = exporter.wait();
}

#[tokio::test]
async fn a_cloud_supplier_keeps_vms_under_users_and_reports_only_changes() {
    let s = server().await;
    let (admin, http) = (s.as_admin(), s.http());
    let fake = Fake::start(cloud(2, 2, |_, _| 10.0)).await;
    let id = unique("cloud");
    let at = format!("./infra/{id}");
    mount(&admin, &id, &at, "infrastructure", json!({"supplier": "cloud", "url": fake.url(), "interval_ms": 200}))
        .await;
    let base = format!("/tree/infra/{id}/monitoring");
    assert_eq!(value(&http, &format!("{base}/users/user1/vm0/cpu/usage")).await, json!(10.0));
    assert_eq!(value(&http, &format!("{base}/users/user1/vm0/host")).await, json!("h1"));
    assert_eq!(value(&http, &format!("{base}/hosts/h1/cpu/cores")).await, json!(16));
    let users = http.get(&format!("{base}/users?depth=1")).await;
    assert_eq!(users.body["children"].as_object().unwrap().len(), 2);

    let mut events = http.events(&format!("?uri={at}/**"), None).await;
    events.drain(Duration::from_millis(600)).await;
    fake.set(cloud(2, 2, |u, v| if (u, v) == (1, 0) { 55.5 } else { 10.0 }));
    let seen = collect_for(&mut events, Duration::from_secs(2)).await;
    let changed: Vec<&Value> = seen.iter().filter(|e| e["kind"] == "monitoring").collect();
    assert_eq!(changed.len(), 1, "one value changed, one event: {seen:?}");
    assert_eq!(changed[0]["uri"], json!(format!("{at}/monitoring/users/user1/vm0/cpu/usage")));
    assert_eq!(changed[0]["value"], json!(55.5));

    // The supplier hangs: reads answer at once with the last value, marked stale.
    fake.hang.store(true, Ordering::Relaxed);
    let r = eventually("the value goes stale", Duration::from_secs(10), async || {
        let r = http.get(&format!("{base}/users/user1/vm0/cpu/usage")).await;
        r.body.get("stale").is_some().then_some(r)
    })
    .await;
    assert_eq!(r.body["value"], json!(55.5));
    assert!(r.body["stale"]["age_ms"].as_u64().unwrap() > 0);
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(http.get(&format!("{base}/users/user1/vm0/cpu/usage")).await.status, 200);
    }
    assert!(start.elapsed() < Duration::from_secs(1), "reads never wait for a hanging supplier");
    let err = eventually("the poller reports the error", Duration::from_secs(10), async || {
        let e = value(&http, &format!("{base}/poller/last_error")).await;
        (e != json!("")).then_some(e)
    })
    .await;
    assert!(err.as_str().unwrap().contains("timed out"), "{err}");
    fake.hang.store(false, Ordering::Relaxed);
    eventually("fresh again", Duration::from_secs(10), async || {
        let r = http.get(&format!("{base}/users/user1/vm0/cpu/usage")).await;
        r.body.get("stale").is_none().then_some(())
    })
    .await;
    assert_eq!(admin.delete(&format!("/tree/mounts/{id}")).await.status, 204);
}

#[tokio::test]
async fn a_supplier_never_reached_gives_a_remote_error_quickly() {
    let s = server().await;
    let (admin, http) = (s.as_admin(), s.http());
    let id = unique("down");
    let url = format!("http://{}/metrics", free_address());
    mount(
        &admin,
        &id,
        &format!("./infra/{id}"),
        "infrastructure",
        json!({"supplier": "prometheus", "url": url, "timeout_ms": 500}),
    )
    .await;
    let start = Instant::now();
    let r = http.get(&format!("/tree/infra/{id}/monitoring/node_load1")).await;
    assert_eq!((r.status, r.code()), (502, "remote_error"), "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("no data"), "{:?}", r.body);
    assert!(start.elapsed() < Duration::from_secs(2));
    let failures = value(&http, &format!("/tree/infra/{id}/monitoring/poller/failures")).await;
    assert!(failures.as_u64().unwrap() >= 1);
    let shown = http.get(&format!("/tree/mounts/{id}/monitoring/reachable")).await;
    assert_eq!(shown.body["value"], json!(false), "{:?}", shown.body);
    assert_eq!(admin.delete(&format!("/tree/mounts/{id}")).await.status, 204);
}

#[tokio::test]
async fn bad_handler_input_gets_4xx_and_changes_nothing() {
    let s = server().await;
    let admin = s.as_admin();
    let id = unique("bad");
    for (body, why) in [
        (
            json!({"id": id, "at": "./infra/x", "handler": "infrastructure", "config": {"supplier": "cloud"}}),
            "cloud without url",
        ),
        (
            json!({"id": id, "at": "./infra/x", "handler": "infrastructure", "config": {"interval_ms": 0}}),
            "zero interval",
        ),
        (json!({"id": id, "at": "./infra/x", "handler": "broker", "config": {"url": "not a url"}}), "broker url"),
        (json!({"id": id, "at": "./infra/x", "handler": "broker", "url": "http://x"}), "remote fields on a broker"),
        (json!({"id": id, "at": "./infra/x", "handler": "toaster"}), "unknown handler"),
    ] {
        let r = admin.post("/tree/mounts", body).await;
        assert_eq!(r.status, 400, "{why}: {:?}", r.body);
        assert_eq!(admin.get(&format!("/tree/mounts/{id}")).await.status, 404, "{why}: nothing mounted");
    }
    let r = admin.put("/tree/infrastructure/localhost/config/interval_ms", json!({"value": -5})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = admin.put("/tree/infrastructure/localhost/config/supplier", json!({"value": "cloud"})).await;
    assert_eq!(r.status / 100, 4, "{:?}", r.body);
    let r = admin.put("/tree/infrastructure/localhost/monitoring/cpu/usage", json!({"value": 1})).await;
    assert_eq!(r.status / 100, 4, "monitoring is read-only: {:?}", r.body);
    let anonymous = s.http().put("/tree/infrastructure/localhost/config/interval_ms", json!({"value": 1000})).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(value(&admin, "/tree/infrastructure/localhost/config/interval_ms").await, json!(2000));
}

/// A real HTTP proxy in front of the management API: counts requests, and hangs when told to.
struct Proxy {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    hang: Arc<AtomicBool>,
}

impl Proxy {
    async fn start() -> Proxy {
        let requests = Arc::new(AtomicU64::new(0));
        let hang = Arc::new(AtomicBool::new(false));
        let state = (requests.clone(), hang.clone(), reqwest::Client::new());
        type S = (Arc<AtomicU64>, Arc<AtomicBool>, reqwest::Client);
        let app = axum::Router::new().fallback(
            |State((n, hang, client)): State<S>, req: axum::extract::Request| async move {
                n.fetch_add(1, Ordering::Relaxed);
                if hang.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 24).await.unwrap_or_default();
                let url = format!("{MANAGEMENT}{}", parts.uri.path_and_query().map_or("/", |p| p.as_str()));
                let mut out = client.request(parts.method, url).body(body);
                for (k, v) in &parts.headers {
                    if k != "host" {
                        out = out.header(k, v);
                    }
                }
                match out.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        (status, resp.bytes().await.unwrap_or_default()).into_response()
                    }
                    Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app.with_state(state)).await });
        Proxy { addr, requests, hang }
    }
}

/// The management API, directly.
async fn rabbit(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req =
        reqwest::Client::new().request(method, format!("{MANAGEMENT}/api/{path}")).basic_auth("guest", Some("guest"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("management API");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_broker_mounted_at_run_time_is_managed_then_unmounted() {
    let s = server().await;
    let (admin, http) = (s.as_admin(), s.http());
    let proxy = Proxy::start().await;
    let id = unique("rmq");
    let config = json!({"url": format!("http://{}", proxy.addr), "interval_ms": 300, "timeout_ms": 500});
    mount(&admin, &id, &format!("./brokers/{id}"), "broker", config).await;
    let base = format!("/tree/brokers/{id}");
    let version = eventually("an observation", Duration::from_secs(10), async || {
        let r = http.get(&format!("{base}/monitoring/overview/version")).await;
        (r.status == 200).then_some(r.body["value"].clone())
    })
    .await;
    assert!(version.as_str().unwrap().contains('.'), "{version}");
    let vhosts = http.get(&format!("{base}/monitoring/vhosts?depth=1")).await;
    assert!(vhosts.body["children"].get("/").is_some(), "{:?}", vhosts.body);

    // Desired state: applied to the broker, then re-read into monitoring.
    let (q, x) = (unique("dmtq"), unique("dmtx"));
    let r = admin
        .put(&format!("{base}/config/queues/%2F/{q}"), json!({"value": {"durable": false, "auto_delete": false}}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = admin
        .put(&format!("{base}/config/exchanges/%2F/{x}"), json!({"value": {"type": "topic", "durable": false}}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let binding = json!({"value": {"source": x, "destination": q, "routing_key": "a.#"}});
    assert_eq!(admin.put(&format!("{base}/config/bindings/%2F/{q}-b"), binding).await.status, 201);
    assert_eq!(rabbit(reqwest::Method::GET, &format!("queues/%2F/{q}"), None).await.0, 200, "declared on the broker");
    assert_eq!(value(&http, &format!("{base}/monitoring/queues/%2F/{q}/messages")).await, json!(0), "and re-read");

    // Messages through the binding, then exec: purge.
    for _ in 0..3 {
        let msg = json!({"properties": {}, "routing_key": "a.b", "payload": "hi", "payload_encoding": "string"});
        let (status, body) = rabbit(reqwest::Method::POST, &format!("exchanges/%2F/{x}/publish"), Some(msg)).await;
        assert_eq!((status, &body["routed"]), (200, &json!(true)));
    }
    eventually("3 messages seen", Duration::from_secs(15), async || {
        (value(&http, &format!("{base}/monitoring/queues/%2F/{q}/messages")).await == json!(3)).then_some(())
    })
    .await;
    let r = admin.post(&format!("/exec/brokers/{id}/monitoring/queues/%2F/{q}"), json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The broker's own statistics lag by up to its emission interval.
    eventually("purged on the broker", Duration::from_secs(15), async || {
        let (_, queue) = rabbit(reqwest::Method::GET, &format!("queues/%2F/{q}"), None).await;
        (queue["messages"].as_u64() == Some(0)).then_some(())
    })
    .await;

    // A policy, applied on the broker.
    let policy =
        json!({"value": {"pattern": format!("^{q}$"), "definition": {"max-length": 100}, "apply_to": "queues"}});
    assert_eq!(admin.put(&format!("{base}/config/policies/%2F/{q}-p"), policy).await.status, 201);
    let (status, p) = rabbit(reqwest::Method::GET, &format!("policies/%2F/{q}-p"), None).await;
    assert_eq!((status, &p["definition"]["max-length"]), (200, &json!(100)));

    // Exec: close a connection (ours, found by its client-provided name).
    let name = unique("conn");
    let props = lapin::ConnectionProperties::default().with_connection_name(name.clone().into());
    let conn = lapin::Connection::connect(&common::amqp_url(), props).await.expect("amqp");
    let conn_node = eventually("our connection shows", Duration::from_secs(15), async || {
        let r = http.get(&format!("{base}/monitoring/connections?depth=2")).await;
        r.body["children"]
            .as_object()?
            .iter()
            .find(|(_, c)| c["children"]["client_name"]["value"] == json!(name))
            .map(|(k, _)| k.clone())
    })
    .await;
    let exec = format!(
        "/exec/brokers/{id}/monitoring/connections/{}",
        conn_node.replace('%', "%25").replace('/', "%2F").replace(' ', "%20").replace('>', "%3E")
    );
    let r = admin.post(&exec, json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    eventually("the connection is closed", Duration::from_secs(10), async || {
        (!conn.status().connected()).then_some(())
    })
    .await;

    // Drift: deleted behind the handler's back, the queue comes back.
    rabbit(reqwest::Method::DELETE, &format!("queues/%2F/{q}"), None).await;
    eventually("the reconciler recreates the queue", Duration::from_secs(10), async || {
        (rabbit(reqwest::Method::GET, &format!("queues/%2F/{q}"), None).await.0 == 200).then_some(())
    })
    .await;
    // The count shows in the next poll's snapshot.
    eventually("the repair is counted", Duration::from_secs(10), async || {
        let repairs = value(&http, &format!("{base}/monitoring/reconciler/repairs")).await;
        (repairs.as_u64().unwrap_or(0) >= 1).then_some(())
    })
    .await;

    // Bad declarations are refused and change nothing.
    let r = admin.put(&format!("{base}/config/queues/%2F/{q}"), json!({"value": {"durable": "maybe"}})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = admin.put(&format!("{base}/config/queues/%2F/{q}"), json!({"value": {"durable": true}})).await;
    assert_eq!(r.status, 400, "the broker refuses an inequivalent redeclaration: {:?}", r.body);
    assert_eq!(value(&admin, &format!("{base}/config/queues/%2F/{q}")).await["durable"], json!(false));
    // Configurations may hold credentials: admin only.
    assert_eq!(http.get(&format!("{base}/config/queues/%2F/{q}")).await.status, 401);
    let r = admin.put(&format!("{base}/config/queues/nosuchvhost/{q}"), json!({"value": {}})).await;
    assert_eq!(r.status / 100, 4, "{:?}", r.body);

    // The broker hangs: reads answer fast with the last values, marked stale.
    proxy.hang.store(true, Ordering::Relaxed);
    let r = eventually("stale", Duration::from_secs(10), async || {
        let r = http.get(&format!("{base}/monitoring/overview/version")).await;
        r.body.get("stale").is_some().then_some(r)
    })
    .await;
    assert_eq!(r.body["value"], version);
    let start = Instant::now();
    let w = admin.put(&format!("{base}/config/queues/%2F/{q}-2"), json!({"value": {}})).await;
    assert_eq!((w.status, w.code()), (502, "remote_error"), "{:?}", w.body);
    assert!(start.elapsed() < Duration::from_secs(3), "writes fail within the timeout");
    proxy.hang.store(false, Ordering::Relaxed);

    // Clean up the broker, then unmount: reads give 404 and polling stops.
    for path in [
        format!("bindings/%2F/{q}-b"),
        format!("policies/%2F/{q}-p"),
        format!("exchanges/%2F/{x}"),
        format!("queues/%2F/{q}"),
    ] {
        let r = admin.delete(&format!("{base}/config/{path}")).await;
        assert_eq!(r.status, 204, "{path}: {:?}", r.body);
    }
    assert_eq!(rabbit(reqwest::Method::GET, &format!("queues/%2F/{q}"), None).await.0, 404);
    assert_eq!(admin.delete(&format!("/tree/mounts/{id}")).await.status, 204);
    assert_eq!(http.get(&format!("{base}/monitoring/overview/version")).await.status, 404);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = proxy.requests.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(proxy.requests.load(Ordering::Relaxed), after, "no polling after unmount");
}

async fn link_status(http: &Http, base: &str, name: &str) -> String {
    let r = http.get(&format!("{base}/monitoring/links/%2F/{name}/status")).await;
    r.body["value"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn link_failure_policies_do_what_they_say() {
    let s = server().await;
    let (admin, http) = (s.as_admin(), s.http());
    let id = unique("links");
    mount(&admin, &id, &format!("./brokers/{id}"), "broker", json!({"url": MANAGEMENT, "interval_ms": 300})).await;
    let base = format!("/tree/brokers/{id}");
    let amqp = "amqp://guest:guest@127.0.0.1:5672/%2F";
    let (src, dst) = (unique("src"), unique("dst"));
    let (waits, heals) = (unique("waits"), unique("heals"));
    for (name, policy) in [(&waits, "require-user-input"), (&heals, "auto-recreate")] {
        let link =
            json!({"src_uri": amqp, "src_queue": src, "dest_uri": amqp, "dest_queue": dst, "failure_policy": policy});
        let r = admin.put(&format!("{base}/config/links/%2F/{name}"), json!({"value": link})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    for name in [&waits, &heals] {
        eventually("links running", Duration::from_secs(15), async || {
            (link_status(&http, &base, name).await == "ok").then_some(())
        })
        .await;
    }
    let mut events = http.events(&format!("?uri=./brokers/{id}/monitoring/links/**"), None).await;

    // Both shovels are deleted behind the handler's back.
    for name in [&waits, &heals] {
        let (status, _) = rabbit(reqwest::Method::DELETE, &format!("parameters/shovel/%2F/{name}"), None).await;
        assert_eq!(status, 204);
    }
    eventually("require-user-input marks its link failed", Duration::from_secs(10), async || {
        (link_status(&http, &base, &waits).await == "failed").then_some(())
    })
    .await;
    eventually("auto-recreate brings its link back", Duration::from_secs(15), async || {
        let back = rabbit(reqwest::Method::GET, &format!("parameters/shovel/%2F/{heals}"), None).await.0 == 200;
        (back && link_status(&http, &base, &heals).await == "ok").then_some(())
    })
    .await;
    let failed =
        event_with(&mut events, &format!("./brokers/{id}/monitoring/links/\\//{waits}/status"), "failed").await;
    assert_eq!(failed["kind"], json!("monitoring"));
    // …and the failed one stays failed, gone from the broker, until a user acts.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(link_status(&http, &base, &waits).await, "failed");
    assert_eq!(rabbit(reqwest::Method::GET, &format!("parameters/shovel/%2F/{waits}"), None).await.0, 404);
    let attempts = value(&http, &format!("{base}/monitoring/links/%2F/{heals}/attempts")).await;
    assert_eq!(attempts, json!(0), "healthy again, the count resets");

    let r = admin.post(&format!("/exec/brokers/{id}/monitoring/links/%2F/{waits}"), json!({})).await;
    assert_eq!(r.status, 200, "a user restarts it: {:?}", r.body);
    eventually("restarted", Duration::from_secs(15), async || {
        (link_status(&http, &base, &waits).await == "ok").then_some(())
    })
    .await;

    for name in [&waits, &heals] {
        assert_eq!(admin.delete(&format!("{base}/config/links/%2F/{name}")).await.status, 204);
    }
    for q in [&src, &dst] {
        rabbit(reqwest::Method::DELETE, &format!("queues/%2F/{q}"), None).await;
    }
    assert_eq!(admin.delete(&format!("/tree/mounts/{id}")).await.status, 204);
}

/// Every event within `window` (monitoring of a live host never goes quiet).
async fn collect_for(events: &mut Events, window: Duration) -> Vec<Value> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match events.next_within(left).await {
            Some(f) => out.push(serde_json::from_str(&f.data).expect("event JSON")),
            None => break,
        }
    }
    out
}

async fn event_with(events: &mut Events, uri: &str, value: &str) -> Value {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(10), "no event for {uri} = {value}");
        let e = events.next_json().await;
        if e["uri"] == uri && e["value"] == value {
            return e;
        }
    }
}

#[tokio::test]
async fn a_broker_never_reached_gives_a_remote_error_and_shows_it() {
    let s = server().await;
    let (admin, http) = (s.as_admin(), s.http());
    let id = unique("nobroker");
    let url = format!("http://{}", free_address());
    mount(
        &admin,
        &id,
        &format!("./brokers/{id}"),
        "broker",
        json!({"url": url, "timeout_ms": 300, "interval_ms": 500}),
    )
    .await;
    let start = Instant::now();
    let r = http.get(&format!("/tree/brokers/{id}/monitoring/overview")).await;
    assert_eq!((r.status, r.code()), (502, "remote_error"), "{:?}", r.body);
    assert!(start.elapsed() < Duration::from_secs(2), "the first read waits for one observation at most");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("unreachable"), "{:?}", r.body);
    let err = value(&http, &format!("/tree/brokers/{id}/monitoring/poller/last_error")).await;
    assert!(err.as_str().unwrap().contains("unreachable"), "{err}");
    assert_eq!(admin.delete(&format!("/tree/mounts/{id}")).await.status, 204);
}
