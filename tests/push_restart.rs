//! Transports restarted mid-stream. RabbitMQ is the machine's broker, so these
//! tests live in their own binary (test binaries run one after another) and
//! run one at a time.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Http, Prosody, Server, XMPP_DOMAIN, amqp_url, config_with, rabbitmqctl, unique};
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn subscribe(http: &Http, body: Value) -> String {
    let r = http.post("/tree/subscriptions", body.clone()).await;
    assert_eq!(r.status, 201, "subscribe {body}: {}", r.body);
    r.headers["location"].to_str().unwrap().trim_start_matches("/tree/subscriptions/").to_owned()
}

/// The revisions of every event under `pattern` after `since`, from the tree's own log.
async fn expected_revisions(http: &Http, pattern: &str, since: u64, last_value: i64) -> BTreeSet<u64> {
    let mut events = http.events(&format!("?uri={pattern}&since={since}"), None).await;
    let mut revs = BTreeSet::new();
    loop {
        let e = events.next_json().await;
        revs.insert(e["revision"].as_u64().unwrap());
        if e["value"] == last_value {
            return revs;
        }
    }
}

/// Consumes `queue` until `last_value` arrives, reconnecting while the broker is away.
async fn consume_until(queue: String, last_value: i64) -> Vec<u64> {
    let mut revisions = Vec::new();
    loop {
        let Ok(conn) = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(channel) = conn.create_channel().await else { continue };
        let Ok(mut consumer) = channel
            .basic_consume(
                queue.as_str().into(),
                unique("c-").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while let Some(Ok(delivery)) = consumer.next().await {
            let m: Value = serde_json::from_slice(&delivery.data).expect("JSON");
            revisions.push(m["revision"].as_u64().unwrap());
            let _ = delivery.ack(BasicAckOptions::default()).await;
            if m["value"] == last_value {
                return revisions;
            }
        }
    }
}

#[tokio::test]
async fn every_event_arrives_across_a_rabbitmq_restart() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exchange = unique("dmtree.test.");
    let config = format!("[push.amqp]\nurl = \"{}\"\nexchange = \"{exchange}\"\n", amqp_url());
    let server = Server::start(&config_with(&config));
    let admin = server.as_admin();
    admin.put("/tree/config/rr/seed", json!({"value": -1})).await;
    let since = admin.get("/healthz").await.body["revision"].as_u64().unwrap();
    let id = subscribe(&admin, json!({"pattern": "./config/rr/**", "transport": "amqp"})).await;
    let consumer = tokio::spawn(consume_until(format!("dmtree.sub.admin.{id}"), 299));

    const N: i64 = 300;
    for i in 0..N {
        if i == 100 {
            rabbitmqctl(&["stop_app"]);
        }
        if i == 150 {
            rabbitmqctl(&["start_app"]);
            rabbitmqctl(&["await_startup"]);
        }
        let r = admin.put(&format!("/tree/config/rr/n{}", i % 10), json!({"value": i})).await;
        assert!(r.status == 200 || r.status == 201, "the tree keeps taking writes while the broker is away");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received =
        tokio::time::timeout(Duration::from_secs(60), consumer).await.expect("all events within 60 s").unwrap();
    let expected = expected_revisions(&admin, "./config/rr/**", since, N - 1).await;
    let got: BTreeSet<u64> = received.iter().copied().collect();
    let missing: Vec<_> = expected.difference(&got).collect();
    assert!(missing.is_empty(), "revisions never delivered: {missing:?}");
    println!("{} events, {} messages ({} duplicates)", expected.len(), received.len(), received.len() - got.len());
    let state = admin.get(&format!("/tree/subscriptions/{id}/monitoring/state")).await.body["value"].clone();
    assert_eq!(state, "connected");
}

#[tokio::test]
async fn xmpp_delivery_resumes_after_a_prosody_restart() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut prosody = Prosody::start();
    let server = Server::start(&config_with(&format!("[push]\nack_timeout_ms = 2000\n\n{}", prosody.push_config())));
    let admin = server.as_admin();
    // Bob is offline throughout: Prosody keeps his messages (mod_offline), so every accepted one is kept.
    let id = subscribe(
        &admin,
        json!({"pattern": "./config/xr/n", "transport": "xmpp", "jid": format!("bob@{XMPP_DOMAIN}")}),
    )
    .await;
    for i in 0..20 {
        admin.put("/tree/config/xr/n", json!({"value": i})).await;
    }
    wait_delivered(&admin, &id, 20).await.unwrap();
    prosody.restart();
    for i in 20..40 {
        admin.put("/tree/config/xr/n", json!({"value": i})).await;
    }
    wait_delivered(&admin, &id, 40).await.unwrap_or_else(|e| panic!("{e}\nprosody log:\n{}", prosody.log()));
    let mut inbox = bob(&prosody).await;
    let mut values = BTreeSet::new();
    while values.len() < 40 {
        let m = tokio::time::timeout(Duration::from_secs(15), next_body(&mut inbox))
            .await
            .expect("offline messages")
            .expect("message");
        values.insert(m["value"].as_i64().unwrap());
    }
    assert_eq!(values, (0..40).collect::<BTreeSet<_>>());
}

async fn wait_delivered(admin: &Http, id: &str, n: u64) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivered =
            admin.get(&format!("/tree/subscriptions/{id}/monitoring/delivered")).await.body["value"].as_u64();
        if delivered >= Some(n) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("only {delivered:?} of {n} accepted by the server"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bob(prosody: &Prosody) -> tokio_xmpp::Client {
    use tokio_xmpp::connect::DnsConfig;
    use tokio_xmpp::xmlstream::Timeouts;
    let jid: tokio_xmpp::jid::Jid = format!("bob@{XMPP_DOMAIN}").parse().unwrap();
    let mut client =
        tokio_xmpp::Client::new_plaintext(jid, "bobpw", DnsConfig::addr(&prosody.server()), Timeouts::default());
    while !matches!(client.next().await, Some(tokio_xmpp::Event::Online { .. })) {}
    client.send_stanza(tokio_xmpp::parsers::presence::Presence::available().into()).await.expect("presence");
    client
}

async fn next_body(client: &mut tokio_xmpp::Client) -> Option<Value> {
    loop {
        if let tokio_xmpp::Event::Stanza(tokio_xmpp::Stanza::Message(m)) = client.next().await?
            && let Some(body) = m.bodies.values().next()
        {
            return serde_json::from_str(body).ok();
        }
    }
}
