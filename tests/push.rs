//! Push end to end: subscriptions as nodes, delivered over AMQP (the
//! machine's RabbitMQ), XMPP (a private Prosody) and SSE, filtered by the
//! owner's Get right, and resumed after disconnects and restarts.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use common::{Http, Prosody, Server, XMPP_DOMAIN, amqp_url, config_with, rabbitmqctl, unique};
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

struct World {
    prosody: Prosody,
    server: Server,
    exchange: String,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let prosody = Prosody::start();
    let exchange = unique("dmtree.test.");
    let server = Server::start(&config_with(&push_config(&prosody, &exchange)));
    World { prosody, server, exchange }
});

fn push_config(prosody: &Prosody, exchange: &str) -> String {
    format!(
        "[push]\nbuffer = 256\n\n[push.amqp]\nurl = \"{}\"\nexchange = \"{exchange}\"\n\n{}",
        amqp_url(),
        prosody.push_config()
    )
}

async fn subscribe(http: &Http, body: Value) -> String {
    let r = http.post("/tree/subscriptions", body.clone()).await;
    assert_eq!(r.status, 201, "subscribe {body}: {}", r.body);
    r.headers["location"].to_str().unwrap().trim_start_matches("/tree/subscriptions/").to_owned()
}

async fn leaf(http: &Http, path: &str) -> Value {
    http.get(&format!("/tree/subscriptions/{path}")).await.body["value"].clone()
}

/// A plain AMQP consumer of one queue, as any client would be.
struct Queue {
    consumer: lapin::Consumer,
    _conn: lapin::Connection,
}

impl Queue {
    async fn open(name: &str) -> Queue {
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.expect("amqp");
        let channel = conn.create_channel().await.expect("channel");
        let consumer = channel
            .basic_consume(name.into(), unique("test-").into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume");
        Queue { consumer, _conn: conn }
    }

    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let delivery = tokio::time::timeout(wait, self.consumer.next()).await.ok()??.expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        Some(serde_json::from_slice(&delivery.data).expect("JSON message"))
    }

    async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(10)).await.expect("no message within 10 s")
    }
}

/// An XMPP user who is online and collects message bodies.
struct Inbox {
    client: tokio_xmpp::Client,
}

impl Inbox {
    async fn login(user: &str, prosody: &Prosody) -> Inbox {
        use tokio_xmpp::connect::DnsConfig;
        use tokio_xmpp::xmlstream::Timeouts;
        let jid: tokio_xmpp::jid::Jid = format!("{user}@{XMPP_DOMAIN}").parse().unwrap();
        let mut client = tokio_xmpp::Client::new_plaintext(
            jid,
            format!("{user}pw"),
            DnsConfig::addr(&prosody.server()),
            Timeouts::default(),
        );
        loop {
            match tokio::time::timeout(Duration::from_secs(10), client.next()).await.expect("xmpp login timed out") {
                Some(tokio_xmpp::Event::Online { .. }) => break,
                Some(tokio_xmpp::Event::Disconnected(e)) => panic!("xmpp login failed: {e}"),
                _ => {}
            }
        }
        let presence = tokio_xmpp::parsers::presence::Presence::available();
        client.send_stanza(presence.into()).await.expect("presence");
        Inbox { client }
    }

    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let event = tokio::time::timeout_at(deadline, self.client.next()).await.ok()??;
            if let tokio_xmpp::Event::Stanza(tokio_xmpp::Stanza::Message(m)) = event
                && let Some(body) = m.bodies.values().next()
            {
                return Some(serde_json::from_str(body).expect("JSON body"));
            }
        }
    }
}

#[tokio::test]
async fn amqp_subscription_delivers_json_events_to_its_named_queue() {
    let admin = WORLD.server.as_admin();
    let id = subscribe(&admin, json!({"pattern": "./config/t_amqp/**", "transport": "amqp"})).await;
    let queue = leaf(&admin, &format!("{id}/config/target")).await.as_str().unwrap().to_owned();
    assert_eq!(queue, format!("dmtree.sub.admin.{id}"));
    assert_eq!(leaf(&admin, &format!("{id}/config/transport")).await, "amqp");
    let mut q = Queue::open(&queue).await;
    admin.put("/tree/config/t_amqp/x", json!({"value": 42})).await;
    let first = q.next().await; // ./config/t_amqp was created on the way
    let second = q.next().await;
    assert_eq!((first["kind"].as_str(), first["uri"].as_str()), (Some("added"), Some("./config/t_amqp")));
    for field in ["revision", "kind", "uri", "timestamp", "principal", "value", "subscription"] {
        assert!(second.get(field).is_some(), "{field} missing from {second}");
    }
    assert_eq!(
        (second["uri"].as_str(), &second["value"], second["principal"].as_str()),
        (Some("./config/t_amqp/x"), &json!(42), Some("admin"))
    );
    assert!(second["revision"].as_u64() > first["revision"].as_u64());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while leaf(&admin, &format!("{id}/monitoring/delivered")).await.as_u64() < Some(2) {
        assert!(tokio::time::Instant::now() < deadline, "delivered counter did not move");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leaf(&admin, &format!("{id}/monitoring/state")).await, "connected");
    assert_eq!(leaf(&admin, &format!("{id}/monitoring/last_revision")).await, second["revision"]);
}

/// Alice may not read ./config/t_sec/secret: none of its events reach her, on any transport.
#[tokio::test]
async fn events_the_owner_cannot_read_reach_no_transport() {
    let world = &*WORLD;
    let admin = world.server.as_admin();
    let alice = world.server.as_alice();
    let locked = json!({"acl": "Add=admin&Delete=admin&Get=admin&Replace=admin"});
    assert_eq!(admin.put("/tree/config/t_sec/secret", locked).await.status, 201);
    admin.put("/tree/config/t_sec/public", json!({})).await;

    let amqp =
        subscribe(&alice, json!({"pattern": "./config/t_sec/**", "transport": "amqp", "kinds": ["added", "replaced"]}))
            .await;
    let mut queue = Queue::open(&format!("dmtree.sub.alice.{amqp}")).await;
    let mut inbox = Inbox::login("alice", &world.prosody).await;
    subscribe(
        &alice,
        json!({"pattern": "./config/t_sec/**", "transport": "xmpp", "jid": format!("alice@{XMPP_DOMAIN}")}),
    )
    .await;
    let sse = subscribe(&alice, json!({"pattern": "./config/t_sec/**", "transport": "sse"})).await;
    let mut stream = alice.events(&format!("?subscription={sse}"), None).await;

    admin.put("/tree/config/t_sec/secret/key", json!({"value": "s3cret"})).await;
    admin.put("/tree/config/t_sec/public/key", json!({"value": "hello"})).await;

    assert_eq!(queue.next().await["uri"], "./config/t_sec/public/key", "the secret event came first over AMQP");
    assert_eq!(
        inbox.next_within(Duration::from_secs(10)).await.expect("xmpp message")["uri"],
        "./config/t_sec/public/key"
    );
    assert_eq!(stream.next_json().await["uri"], "./config/t_sec/public/key");
    assert!(queue.next_within(Duration::from_millis(300)).await.is_none());
    assert!(inbox.next_within(Duration::from_millis(300)).await.is_none());
    assert!(stream.drain(Duration::from_millis(300)).await.is_empty());
}

/// The broker enforces it too: a consumer without `read` on the exchange cannot bind a queue of its own.
#[tokio::test]
async fn consumers_cannot_bind_their_own_queue_to_the_exchange() {
    let user = unique("dmtree_alice_");
    rabbitmqctl(&["add_user", &user, "pw"]);
    let mine = format!("^{user}\\..*");
    rabbitmqctl(&[
        "set_permissions",
        "-p",
        "/",
        &user,
        &mine,
        &mine,
        &format!("^({user}\\..*|dmtree\\.sub\\.alice\\..*)$"),
    ]);
    let url = amqp_url().replacen("guest:guest", &format!("{user}:pw"), 1);
    let conn =
        lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.expect("amqp as consumer");
    let channel = conn.create_channel().await.unwrap();
    let own = format!("{user}.tap");
    channel.queue_declare(own.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let bind = channel
        .queue_bind(
            own.as_str().into(),
            WORLD.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert!(bind.is_err(), "binding to dmtree's exchange must be refused");
    rabbitmqctl(&["delete_user", &user]);
}

#[tokio::test]
async fn an_sse_subscription_resumes_where_its_reader_stopped() {
    let alice = WORLD.server.as_alice();
    let id = subscribe(&alice, json!({"pattern": "./config/t_sse/**", "transport": "sse"})).await;
    let admin = WORLD.server.as_admin();
    admin.put("/tree/config/t_sse/n", json!({"value": 0})).await;
    {
        let mut stream = alice.events(&format!("?subscription={id}"), None).await;
        assert_eq!(stream.next_json().await["uri"], "./config/t_sse");
        assert_eq!(stream.next_json().await["value"], 0);
        let r = alice.send(alice.request(reqwest::Method::GET, &format!("/events?subscription={id}"))).await;
        assert_eq!(r.code(), "concurrent_access", "one reader at a time");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 1..=3 {
        admin.put("/tree/config/t_sse/n", json!({"value": i})).await;
    }
    let mut again = alice.events(&format!("?subscription={id}"), None).await;
    for i in 1..=3 {
        assert_eq!(again.next_json().await["value"], i, "resumed without a gap");
    }
}

#[tokio::test]
async fn bad_subscriptions_are_refused_and_create_nothing() {
    let alice = WORLD.server.as_alice();
    let admin = WORLD.server.as_admin();
    admin.put("/tree/config/t_badsub/locked", json!({"acl": "Get=admin&Add=admin&Replace=admin&Delete=admin"})).await;
    let before = alice.get("/tree/subscriptions").await.body["children"].as_object().map_or(0, |c| c.len());
    let cases = [
        (json!({"pattern": "./config/**/x", "transport": "sse"}), 400, "invalid_uri"),
        (json!({"pattern": "config", "transport": "sse"}), 400, "invalid_uri"),
        (json!({"pattern": "./config/**", "transport": "carrier-pigeon"}), 400, "invalid_data"),
        (json!({"pattern": "./config/**", "transport": "amqp", "queue": "amq.gen-mine"}), 400, "invalid_data"),
        (json!({"pattern": "./config/**", "transport": "amqp", "queue": "has space"}), 400, "invalid_data"),
        // Another principal's queue namespace.
        (json!({"pattern": "./config/**", "transport": "amqp", "queue": "dmtree.sub.admin.feed"}), 400, "invalid_data"),
        (json!({"pattern": "./config/**", "transport": "amqp", "queue": "dmtree.sub.alice."}), 400, "invalid_data"),
        (json!({"pattern": "./config/**", "transport": "xmpp", "jid": "not a jid@@"}), 400, "invalid_data"),
        (json!({"pattern": "./config/**", "transport": "xmpp"}), 400, "invalid_data"),
        (json!({"pattern": "./config/**", "transport": "sse", "kinds": ["exploded"]}), 400, "invalid_data"),
        (json!({"pattern": "./config/**", "transport": "sse", "sample_ms": 0}), 400, "invalid_data"),
        (json!({"pattern": "./config/**", "transport": "sse", "colour": "red"}), 400, "invalid_data"),
        (json!({"pattern": "./config/t_badsub/locked/**", "transport": "sse"}), 403, "permission_denied"),
    ];
    for (body, status, code) in cases {
        let r = alice.post("/tree/subscriptions", body.clone()).await;
        assert_eq!((r.status, r.code()), (status, code), "{body}: {}", r.body);
    }
    let anon =
        WORLD.server.http().post("/tree/subscriptions", json!({"pattern": "./config/**", "transport": "sse"})).await;
    assert_eq!(anon.code(), "authentication_required");
    let after = alice.get("/tree/subscriptions").await.body["children"].as_object().map_or(0, |c| c.len());
    assert_eq!(before, after, "nothing was created");
}

#[tokio::test]
async fn only_the_owner_cancels_and_cancelling_removes_the_queue() {
    let alice = WORLD.server.as_alice();
    let admin = WORLD.server.as_admin();
    let id = subscribe(&admin, json!({"pattern": "./config/t_cancel/**", "transport": "amqp"})).await;
    assert_eq!(
        alice.get(&format!("/tree/subscriptions/{id}")).await.status,
        404,
        "others' subscriptions are invisible"
    );
    assert_eq!(alice.delete(&format!("/tree/subscriptions/{id}")).await.status, 404);
    let queue = format!("dmtree.sub.admin.{id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !rabbitmqctl(&["list_queues", "name"]).contains(&queue) {
        assert!(tokio::time::Instant::now() < deadline, "queue never declared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(admin.delete(&format!("/tree/subscriptions/{id}")).await.status, 204);
    assert_eq!(admin.get(&format!("/tree/subscriptions/{id}")).await.status, 404);
    assert!(!rabbitmqctl(&["list_queues", "name"]).contains(&queue), "the queue was deleted");
}

/// dmtree killed with -9 and restarted: subscriptions come back and resume
/// from the last confirmed revision; every event arrives, none is skipped.
#[tokio::test]
async fn subscriptions_survive_a_restart_and_resume_by_revision() {
    let exchange = unique("dmtree.test.");
    let mut server = Server::start(&config_with(&push_config(&WORLD.prosody, &exchange)));
    let admin = server.as_admin();
    admin.put("/tree/config/r/seed", json!({"value": -1})).await;
    let id = subscribe(&admin, json!({"pattern": "./config/r/n", "transport": "amqp"})).await;
    let mut queue = Queue::open(&format!("dmtree.sub.admin.{id}")).await;
    for i in 0..5 {
        admin.put("/tree/config/r/n", json!({"value": i})).await;
    }
    for i in 0..5 {
        assert_eq!(queue.next().await["value"], i);
    }
    server.crash_and_restart();
    let admin = server.as_admin();
    assert_eq!(admin.get(&format!("/tree/subscriptions/{id}/config/pattern")).await.body["value"], "./config/r/n");
    for i in 5..10 {
        admin.put("/tree/config/r/n", json!({"value": i})).await;
    }
    // At-least-once: a message may come twice; its revision tells.
    let mut seen: Vec<(u64, i64)> = Vec::new();
    while seen.last().map(|s| s.1) != Some(9) {
        let m = queue.next().await;
        seen.push((m["revision"].as_u64().unwrap(), m["value"].as_i64().unwrap()));
    }
    seen.sort();
    seen.dedup();
    let after: Vec<i64> = seen.iter().map(|s| s.1).filter(|v| *v >= 5).collect();
    assert_eq!(after, vec![5, 6, 7, 8, 9], "in order, none missing ({seen:?})");
}

/// A queue that dmtree did not create, or that another subscription uses, is
/// refused, so cancelling a subscription can only ever delete its own queue.
#[tokio::test]
async fn subscriptions_use_only_queues_they_create() {
    let alice = WORLD.server.as_alice();
    let foreign = unique("dmtree.sub.alice.foreign-");
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(foreign.as_str().into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let taken = alice
        .post("/tree/subscriptions", json!({"pattern": "./config/**", "transport": "amqp", "queue": foreign}))
        .await;
    assert_eq!((taken.status, taken.code()), (409, "concurrent_access"), "{}", taken.body);

    let mine = unique("dmtree.sub.alice.mine-");
    let id = subscribe(&alice, json!({"pattern": "./config/**", "transport": "amqp", "queue": mine})).await;
    let twice =
        alice.post("/tree/subscriptions", json!({"pattern": "./config/**", "transport": "amqp", "queue": mine})).await;
    assert_eq!((twice.status, twice.code()), (409, "concurrent_access"), "a queue serves one subscription");
    assert_eq!(alice.delete(&format!("/tree/subscriptions/{id}")).await.status, 204);
    let queues = rabbitmqctl(&["list_queues", "name"]);
    assert!(queues.contains(&foreign), "a queue dmtree did not create is never deleted");
    assert!(!queues.contains(&mine), "its own queue is");
    channel.queue_delete(foreign.as_str().into(), Default::default()).await.unwrap();
}

/// Publishing is mandatory: with its queue deleted behind dmtree's back, a
/// message is not counted as delivered; the queue is declared again and the
/// message arrives.
#[tokio::test]
async fn an_unroutable_message_is_redelivered_once_the_queue_is_back() {
    let admin = WORLD.server.as_admin();
    let id = subscribe(&admin, json!({"pattern": "./config/t_gone/**", "transport": "amqp"})).await;
    let queue = format!("dmtree.sub.admin.{id}");
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel.queue_delete(queue.as_str().into(), Default::default()).await.unwrap();
    admin.put("/tree/config/t_gone/x", json!({"value": 7})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if rabbitmqctl(&["list_queues", "name"]).contains(&queue) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the queue was never declared again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut consumer = Queue::open(&queue).await;
    loop {
        let message = consumer.next_within(Duration::from_secs(20)).await.expect("the event arrives");
        if message["uri"] == "./config/t_gone/x" {
            assert_eq!(message["value"], json!(7));
            break;
        }
    }
}
