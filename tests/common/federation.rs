//! Trees that mount each other: site tokens, configurations, and the A ← B ← C trio.

use serde_json::Value;

use dmtree_api::auth::hash_token;

use super::{Server, config_with, free_address};

/// Tokens the trees of a federation know each other by: each tree accepts all three.
pub const SITE_A: &str = "site-a-test-token";
pub const SITE_B: &str = "site-b-test-token";
pub const SITE_C: &str = "site-c-test-token";

/// A server's configuration in a federation: its instance name, the site tokens, and `extra`.
pub fn federated_config(instance: &str, extra: &str) -> String {
    let sites: String = [("site-a", SITE_A), ("site-b", SITE_B), ("site-c", SITE_C)]
        .iter()
        .map(|(p, t)| format!("\n[[auth.tokens]]\nprincipal = \"{p}\"\nsha256 = \"{}\"\n", hash_token(t)))
        .collect();
    config_with(&format!("{extra}\n\n[federation]\ninstance = \"{instance}\"\n{sites}"))
}

/// Three trees, nested: C's `./config/infra` is mounted by B at `./sites/c`
/// (from B's config file), and B's `./sites` by A at `./sites/b` (through the
/// API), each under a read-write grant to the mounting site.
pub struct Trio {
    pub a: Server,
    pub b: Server,
    pub c: Server,
}

impl Trio {
    /// `mount` adds to both mounts (e.g. `{"timeout_ms": 500, "cache_ms": 0}`); `fixed` pins B's address across restarts.
    pub async fn start(mount: Value, fixed: bool) -> Trio {
        let toml_extra: String = mount.as_object().into_iter().flatten().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let c = Server::start(&federated_config("c", ""));
        let admin_c = c.as_admin();
        let r = admin_c.put("/tree/config/infra/cpu", serde_json::json!({"value": 10})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let acl = "Get=*&Add=admin+site-b&Replace=admin+site-b&Delete=admin+site-b&Exec=admin+site-b";
        assert_eq!(admin_c.put("/tree/config/infra", serde_json::json!({"acl": acl})).await.status, 200);
        let grant = serde_json::json!({"id": "b", "principal": "site-b", "subtrees": ["./config/infra"], "rights": "read-write"});
        assert_eq!(admin_c.post("/tree/federation/grants", grant).await.status, 201);

        let b_config = federated_config(
            "b",
            &format!(
                "[[mounts]]\nid = \"c\"\nat = \"./sites/c\"\nhandler = \"remote\"\nurl = \"{}\"\nremote_uri = \"./config/infra\"\ncredentials = {{ token = \"{SITE_B}\" }}\n{toml_extra}",
                c.base
            ),
        );
        let b = if fixed { Server::start_at(&b_config, &free_address()) } else { Server::start(&b_config) };
        let admin_b = b.as_admin();
        let acl = "Get=*&Add=admin+site-a&Replace=admin+site-a&Delete=admin+site-a&Exec=admin+site-a";
        assert_eq!(admin_b.put("/tree/sites", serde_json::json!({"acl": acl})).await.status, 200);
        let grant =
            serde_json::json!({"id": "a", "principal": "site-a", "subtrees": ["./sites"], "rights": "read-write"});
        assert_eq!(admin_b.post("/tree/federation/grants", grant).await.status, 201);

        let a = Server::start(&federated_config("a", ""));
        let mut request = serde_json::json!({
            "id": "b", "at": "./sites/b", "url": b.base, "remote_uri": "./sites", "credentials": {"token": SITE_A}
        });
        if let (Some(m), Value::Object(extra)) = (request.as_object_mut(), mount) {
            m.extend(extra);
        }
        let r = a.as_admin().post("/tree/mounts", request).await;
        assert_eq!(r.status, 201, "A mounts B: {:?}", r.body);
        Trio { a, b, c }
    }
}

/// A loopback URL where nothing listens (the port was free a moment ago).
pub fn unreachable_url() -> String {
    format!("http://{}", free_address())
}
