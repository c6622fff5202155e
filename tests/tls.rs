//! HTTPS: a server with `[tls] cert/key` serves only TLS, and another server
//! that trusts its certificate (`[tls] ca`) mounts its tree over `https`.

mod common;

use std::path::Path;

use common::{SITE_A, Server, federated_config};
use serde_json::json;

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM.
fn certificate(dir: &Path) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (cert_path.display().to_string(), key_path.display().to_string())
}

#[tokio::test]
async fn serves_https_and_is_mounted_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let b = Server::start(&federated_config("b", &format!("[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n")));
    assert!(b.base.starts_with("https://"), "{}", b.base);

    let pem = std::fs::read(&cert).unwrap();
    let trusting =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap()).build().unwrap();
    let mut admin_b = b.as_admin();
    admin_b.client = trusting;
    assert_eq!(admin_b.put("/tree/config/shared/x", json!({"value": 1})).await.status, 201);
    let grant = json!({"id": "a", "principal": "site-a", "subtrees": ["./config/shared"], "rights": "read-only"});
    assert_eq!(admin_b.post("/tree/federation/grants", grant).await.status, 201);

    // Plain HTTP, or a client that does not trust the certificate, gets nowhere.
    let plain = b.base.replace("https://", "http://");
    let answer = reqwest::Client::new().get(format!("{plain}/healthz")).send().await;
    assert!(answer.is_err() || !answer.unwrap().status().is_success());
    assert!(reqwest::Client::new().get(format!("{}/healthz", b.base)).send().await.is_err());

    let a = Server::start(&federated_config("a", &format!("[tls]\nca = \"{cert}\"\n")));
    let mount = json!({"id": "b", "at": "./sites/b", "url": b.base, "remote_uri": "./config/shared", "credentials": {"token": SITE_A}});
    let r = a.as_admin().post("/tree/mounts", mount).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(a.http().get("/tree/sites/b/x").await.body["value"], 1);

    // Without the CA, the same mount is refused: TLS is verified, not merely used.
    let untrusting = Server::start(&federated_config("c", ""));
    let mount = json!({"id": "b", "at": "./sites/b", "url": b.base, "remote_uri": "./config/shared", "credentials": {"token": SITE_A}});
    let r = untrusting.as_admin().post("/tree/mounts", mount).await;
    assert!(r.status >= 400, "{}", r.body);
}
