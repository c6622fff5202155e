use super::*;

fn request(resource: &str, nonce: &str) -> Request {
    Request {
        resource: resource.into(),
        kind: "service".into(),
        owner: "agent".into(),
        nonce: nonce.into(),
        endpoint: String::new(),
        reply_to: "q".into(),
        policy: "require-user-input".into(),
        previous: None,
    }
}

async fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    let registry = Registry::open(&url, std::time::Duration::from_secs(3)).await.unwrap();
    (dir, registry)
}

#[tokio::test]
async fn births_grow_and_the_lowest_live_birth_coordinates() {
    let (_dir, r) = registry().await;
    let a = r.join("a", "", 60_000, 10).await.unwrap();
    let b = r.join("b", "", 60_000, 10).await.unwrap();
    assert!(b.birth > a.birth);
    let view = r.elect(3).await.unwrap();
    assert_eq!(view.coordinator.id.as_deref(), Some("a"));
    assert_eq!(view.coordinator.term, 1);
    assert_eq!(view.successors, ["a", "b"]);
    assert_eq!(r.elect(3).await.unwrap().coordinator.term, 1, "no change, no new term");
    // `a` rejoins: a new birth, so `b` is now the oldest.
    let a2 = r.join("a", "", 60_000, 10).await.unwrap();
    assert!(a2.birth > b.birth && a2.instance == a.instance + 1);
    assert!(!r.renew("a", a, 60_000).await.unwrap(), "the old incarnation's lease is gone");
    let view = r.elect(3).await.unwrap();
    assert_eq!((view.coordinator.id.as_deref(), view.coordinator.term), (Some("b"), 2));
}

#[tokio::test]
async fn a_deposed_coordinator_is_fenced() {
    let (_dir, r) = registry().await;
    let a = r.join("a", "", 60_000, 10).await.unwrap();
    let view = r.elect(3).await.unwrap();
    let fence = CoordinatorFence { id: "a".into(), instance: a.instance, term: view.coordinator.term };
    let row = r.place(&fence, &request("web-1", "n1")).await.unwrap();
    assert_eq!((row.manager.as_deref(), row.term), (Some("a"), 1));
    assert_eq!(r.place(&fence, &request("web-1", "n1")).await.unwrap().instance, row.instance, "idempotent");
    let again = r.place(&fence, &request("web-1", "n2")).await.unwrap();
    assert!(again.instance > row.instance, "a new process is a new instance");
    let mut other = request("web-1", "n3");
    other.owner = "intruder".into();
    assert!(matches!(r.place(&fence, &other).await, Err(RegistryError::NotOwner { .. })));
    let old_process = Request { previous: Some(row.instance), ..request("web-1", "n1") };
    assert!(matches!(r.place(&fence, &old_process).await, Err(RegistryError::Superseded { .. })));
    r.join("a", "", 60_000, 10).await.unwrap();
    r.elect(3).await.unwrap();
    assert!(matches!(
        r.place(&fence, &request("web-2", "n")).await,
        Err(RegistryError::Fenced { held: 1, current: 2 })
    ));
    assert!(r.resource("web-2").await.unwrap().is_none());
}
