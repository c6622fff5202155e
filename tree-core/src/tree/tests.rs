//! Tree behaviour across two mounted handlers: routing, scaffolds, ACLs, meta,
//! implicit and atomic transactions, session locks, and events.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::event::Delivery;
use crate::memory::MemoryHandler;
use crate::store::MemoryTreeStore;
use crate::value::Format;

fn u(s: &str) -> Uri {
    Uri::parse(s, &UriLimits::default()).unwrap()
}

fn admin() -> Principal {
    Principal::named("admin")
}

/// A memory handler whose `limits/*` leaves must be ints in 0..=100, and whose
/// `fail` node refuses to prepare (to break a commit half-way).
#[derive(Default)]
struct Strict {
    inner: MemoryHandler,
}

#[async_trait]
impl DataHandler for Strict {
    fn kind(&self) -> &'static str {
        "strict"
    }
    async fn get(&self, cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        self.inner.get(cx, path).await
    }
    async fn children(&self, cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        self.inner.children(cx, path).await
    }
    async fn meta(&self, _cx: OpContext<'_>, path: &Uri) -> Result<Meta> {
        let segs: Vec<_> = path.segments().collect();
        Ok(match segs.as_slice() {
            ["limits", _] => Meta {
                formats: vec![Format::Int],
                min: Some(0.0),
                max: Some(100.0),
                max_occurrence: Some(2),
                ..Meta::permissive()
            },
            _ => Meta::permissive(),
        })
    }
    async fn add(&self, cx: OpContext<'_>, path: &Uri, node: NewNode) -> Result<()> {
        self.inner.add(cx, path, node).await
    }
    async fn replace(&self, cx: OpContext<'_>, path: &Uri, value: Value) -> Result<()> {
        self.inner.replace(cx, path, value).await
    }
    async fn delete(&self, cx: OpContext<'_>, path: &Uri) -> Result<()> {
        self.inner.delete(cx, path).await
    }
    fn transactional(&self) -> bool {
        true
    }
    async fn prepare(&self, tx: TxId) -> Result<()> {
        if self.inner.get(OpContext { principal: &admin(), tx: Some(tx) }, &u("./fail")).await.is_ok() {
            return Err(DmtError::store(&u("./fail"), "refusing to prepare"));
        }
        Ok(())
    }
    async fn commit(&self, tx: TxId) -> Result<()> {
        self.inner.commit(tx).await
    }
    async fn rollback(&self, tx: TxId) {
        self.inner.rollback(tx).await
    }
}

async fn tree() -> Arc<Tree> {
    let config = TreeConfig { lock_timeout: Duration::from_millis(100), ..TreeConfig::default() };
    let tree = Tree::open(config, Arc::new(MemoryTreeStore::default()), Acl::default_root()).await.unwrap();
    tree.mount("a", u("./sites/a"), Arc::new(MemoryHandler::default())).unwrap();
    tree.mount("b", u("./sites/b"), Arc::new(Strict::default())).unwrap();
    tree
}

fn leaf(v: i64) -> Write {
    Write { content: Some(Content::Leaf(Value::Int(v))), ..Write::default() }
}

async fn value(tree: &Tree, uri: &str) -> Option<Value> {
    match tree.read(&Caller::new(&admin()), &u(uri), 0).await {
        Ok(v) => v.node.and_then(|n| n.value),
        Err(e) if e.is(crate::error::ErrorCode::NodeNotFound) => None,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn routes_to_the_longest_mount_and_answers_scaffolds() {
    let tree = tree().await;
    let admin = admin();
    let caller = Caller::new(&admin);
    let out = tree.put(&caller, &u("./sites/a/x/y"), leaf(1)).await.unwrap();
    assert!(out.created && out.version > 0);
    tree.put(&caller, &u("./sites/b/z"), leaf(2)).await.unwrap();
    let root = tree.read(&caller, &Uri::root(), 3).await.unwrap();
    let sites = &root.children.unwrap()[0];
    assert_eq!(sites.uri, u("./sites"));
    let names: Vec<_> = sites.children.as_ref().unwrap().iter().map(|c| c.uri.to_string()).collect();
    assert_eq!(names, ["./sites/a", "./sites/b"]);
    assert_eq!(value(&tree, "./sites/a/x/y").await, Some(Value::Int(1)));
    let err = tree.put(&caller, &u("./elsewhere/x"), leaf(1)).await.unwrap_err();
    assert_eq!(err.code(), "command_not_allowed");
    let err = tree.delete(&caller, &u("./sites/a"), Precondition::default()).await.unwrap_err();
    assert_eq!(err.code(), "command_not_allowed", "a mount point is unmounted, not deleted");
}

#[tokio::test]
async fn fields_are_selected_while_reading() {
    let tree = tree().await;
    let admin = admin();
    let caller = Caller::new(&admin);
    for leaf_uri in ["./sites/a/s/x", "./sites/a/s/y", "./sites/a/t"] {
        tree.put(&caller, &u(leaf_uri), leaf(1)).await.unwrap();
    }
    let names = |v: &NodeView| v.children.as_ref().unwrap().iter().map(|c| c.uri.to_string()).collect::<Vec<_>>();
    let only_x = Selection::from_paths(&[vec!["s".into(), "x".into()]]);
    let view = tree.read_selected(&caller, &u("./sites/a"), u32::MAX, Some(&only_x)).await.unwrap();
    assert_eq!(names(&view), ["./sites/a/s"]);
    assert_eq!(names(&view.children.as_ref().unwrap()[0]), ["./sites/a/s/x"]);
    let whole = Selection::from_paths(&[vec!["s".into(), "x".into()], vec!["s".into()], vec!["t".into()]]);
    let view = tree.read_selected(&caller, &u("./sites/a"), u32::MAX, Some(&whole)).await.unwrap();
    assert_eq!(names(&view), ["./sites/a/s", "./sites/a/t"]);
    assert_eq!(names(&view.children.as_ref().unwrap()[0]), ["./sites/a/s/x", "./sites/a/s/y"]);
}

#[tokio::test]
async fn acls_govern_every_operation() {
    let tree = tree().await;
    let admin = admin();
    let alice = Principal::named("alice");
    let anon = Principal::Anonymous;
    tree.put(&Caller::new(&admin), &u("./sites/a/open"), leaf(1)).await.unwrap();
    assert_eq!(
        tree.put(&Caller::new(&alice), &u("./sites/a/open"), leaf(2)).await.unwrap_err().code(),
        "permission_denied"
    );
    assert_eq!(
        tree.put(&Caller::new(&anon), &u("./sites/a/open"), leaf(2)).await.unwrap_err().code(),
        "authentication_required"
    );
    assert!(tree.read(&Caller::new(&anon), &u("./sites/a/open"), 0).await.is_ok());

    let secret = Write {
        acl: Some(Some("Add=admin&Delete=admin&Get=admin&Replace=admin".parse().unwrap())),
        ..Write::default()
    };
    tree.put(&Caller::new(&admin), &u("./sites/a/secret"), secret).await.unwrap();
    tree.put(&Caller::new(&admin), &u("./sites/a/secret/key"), leaf(7)).await.unwrap();
    assert_eq!(
        tree.read(&Caller::new(&alice), &u("./sites/a/secret/key"), 0).await.unwrap_err().code(),
        "permission_denied"
    );
    // Listed by name under a readable parent, but not read.
    let listing = tree.read(&Caller::new(&alice), &u("./sites/a"), 1).await.unwrap();
    let hidden = listing.children.unwrap().into_iter().find(|c| c.uri == u("./sites/a/secret")).unwrap();
    assert!(hidden.node.is_none());

    // Changing an ACL needs Replace on the parent: alice may manage ./sites/a/team only via ./sites/a.
    let grant = Write { acl: Some(Some("Get=*&Replace=alice&Add=alice".parse().unwrap())), ..Write::default() };
    tree.put(&Caller::new(&admin), &u("./sites/a/team"), grant).await.unwrap();
    tree.put(&Caller::new(&alice), &u("./sites/a/team/x"), leaf(1)).await.unwrap();
    let own = Write { acl: Some(None), ..Write::default() };
    assert_eq!(
        tree.put(&Caller::new(&alice), &u("./sites/a/team"), own).await.unwrap_err().code(),
        "permission_denied"
    );

    // Deleting a subtree forgets its ACLs.
    tree.delete(&Caller::new(&admin), &u("./sites/a/secret"), Precondition::default()).await.unwrap();
    tree.put(&Caller::new(&admin), &u("./sites/a/secret/key"), leaf(8)).await.unwrap();
    assert!(tree.read(&Caller::new(&alice), &u("./sites/a/secret/key"), 0).await.is_ok());
}

#[tokio::test]
async fn meta_violations_are_refused_and_leave_nothing() {
    let tree = tree().await;
    let admin = admin();
    let caller = Caller::new(&admin);
    assert_eq!(tree.put(&caller, &u("./sites/b/limits/cpu"), leaf(101)).await.unwrap_err().code(), "metadata_mismatch");
    assert_eq!(value(&tree, "./sites/b/limits").await, None, "the ancestor created on the way was rolled back");
    let text = Write { content: Some(Content::Leaf(Value::string("x"))), ..Write::default() };
    assert_eq!(tree.put(&caller, &u("./sites/b/limits/cpu"), text).await.unwrap_err().code(), "metadata_mismatch");
    tree.put(&caller, &u("./sites/b/limits/cpu"), leaf(50)).await.unwrap();
    tree.put(&caller, &u("./sites/b/limits/mem"), leaf(60)).await.unwrap();
    assert_eq!(tree.put(&caller, &u("./sites/b/limits/disk"), leaf(1)).await.unwrap_err().code(), "metadata_mismatch");
}

#[tokio::test]
async fn conditional_writes_compare_versions() {
    let tree = tree().await;
    let admin = admin();
    let caller = Caller::new(&admin);
    let v1 = tree.put(&caller, &u("./sites/a/n"), leaf(1)).await.unwrap().version;
    let stale = Write {
        precondition: Precondition { if_match: Some(Versions::List(vec![v1 + 100])), if_none_match: None },
        ..leaf(2)
    };
    assert_eq!(tree.put(&caller, &u("./sites/a/n"), stale).await.unwrap_err().code(), "precondition_failed");
    let fresh = Write {
        precondition: Precondition { if_match: Some(Versions::List(vec![v1])), if_none_match: None },
        ..leaf(2)
    };
    assert!(tree.put(&caller, &u("./sites/a/n"), fresh).await.unwrap().version > v1);
    let create_only =
        Write { precondition: Precondition { if_match: None, if_none_match: Some(Versions::Any) }, ..leaf(3) };
    assert_eq!(tree.put(&caller, &u("./sites/a/n"), create_only).await.unwrap_err().code(), "precondition_failed");
}

#[tokio::test]
async fn atomic_session_commits_across_two_handlers() {
    let tree = tree().await;
    let admin = admin();
    let s = tree.open_session(&admin, &u("./sites"), LockMode::Atomic, None).await.unwrap();
    let caller = Caller::new(&admin).in_session(Some(&s.id));
    let mut cursor = tree.events().cursor(tree.events().head());
    tree.put(&caller, &u("./sites/a/x"), leaf(1)).await.unwrap();
    tree.put(&caller, &u("./sites/b/y"), leaf(2)).await.unwrap();
    assert_eq!(value(&tree, "./sites/a/x").await, None, "not visible before commit");
    let inside = tree.read(&caller, &u("./sites/a/x"), 0).await.unwrap();
    assert_eq!(inside.node.unwrap().value, Some(Value::Int(1)), "the session sees its own writes");
    tree.commit(&admin, &s.id).await.unwrap();
    assert_eq!(value(&tree, "./sites/a/x").await, Some(Value::Int(1)));
    assert_eq!(value(&tree, "./sites/b/y").await, Some(Value::Int(2)));
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        if let Some(Delivery::Event(e)) = cursor.next().await
            && e.session.is_some()
            && e.kind != EventKind::SessionOpened
        {
            kinds.push((e.kind, e.uri.to_string(), e.session.clone()));
        }
    }
    assert_eq!(kinds[0], (EventKind::Added, "./sites/a/x".into(), Some(s.id.clone())));
    assert_eq!(kinds[1].1, "./sites/b/y");
    tree.close(&admin, &s.id).await.unwrap();
}

#[tokio::test]
async fn failed_atomic_session_leaves_no_trace() {
    let tree = tree().await;
    let admin = admin();
    let head = tree.events().head();
    let s = tree.open_session(&admin, &u("./sites"), LockMode::Atomic, None).await.unwrap();
    let caller = Caller::new(&admin).in_session(Some(&s.id));
    tree.put(&caller, &u("./sites/a/x"), leaf(1)).await.unwrap();
    tree.put(&caller, &u("./sites/b/fail"), leaf(1)).await.unwrap();
    assert_eq!(tree.commit(&admin, &s.id).await.unwrap_err().code(), "transaction_error");
    assert_eq!(value(&tree, "./sites/a/x").await, None);
    assert_eq!(value(&tree, "./sites/b/fail").await, None);
    tree.close(&admin, &s.id).await.unwrap_err();

    // A write error mid-session also rolls everything back and invalidates the session.
    let s2 = tree.open_session(&admin, &u("./sites"), LockMode::Atomic, None).await.unwrap();
    let caller = Caller::new(&admin).in_session(Some(&s2.id));
    tree.put(&caller, &u("./sites/a/y"), leaf(1)).await.unwrap();
    assert!(tree.put(&caller, &u("./sites/b/limits/cpu"), leaf(1000)).await.is_err());
    assert_eq!(tree.put(&caller, &u("./sites/a/z"), leaf(1)).await.unwrap_err().code(), "transaction_error");
    assert_eq!(tree.commit(&admin, &s2.id).await.unwrap_err().code(), "transaction_error");
    assert_eq!(value(&tree, "./sites/a/y").await, None);
    assert_eq!(tree.close(&admin, &s2.id).await.unwrap_err().code(), "transaction_error");
    assert_eq!(tree.close(&admin, &s2.id).await.unwrap_err().code(), "session_not_found");

    let mut cursor = tree.events().cursor(head);
    let mut seen = Vec::new();
    while cursor.position() <= tree.events().head() {
        if let Some(Delivery::Event(e)) = cursor.next().await
            && e.session.is_some()
        {
            seen.push(e.kind);
        }
    }
    assert_eq!(
        seen,
        [EventKind::SessionOpened, EventKind::SessionClosed, EventKind::SessionOpened, EventKind::SessionClosed]
    );
}

#[tokio::test]
async fn overlapping_exclusive_sessions_conflict() {
    let tree = tree().await;
    let admin = admin();
    let s = tree.open_session(&admin, &u("./sites/a"), LockMode::Exclusive, None).await.unwrap();
    let err = tree.open_session(&admin, &u("./sites"), LockMode::Exclusive, None).await.unwrap_err();
    assert_eq!(err.code(), "concurrent_access");
    assert_eq!(
        tree.put(&Caller::new(&admin), &u("./sites/a/x"), leaf(1)).await.unwrap_err().code(),
        "concurrent_access"
    );
    tree.put(&Caller::new(&admin), &u("./sites/b/x"), leaf(1)).await.unwrap();
    let inside = Caller::new(&admin).in_session(Some(&s.id));
    tree.put(&inside, &u("./sites/a/x"), leaf(1)).await.unwrap();
    assert_eq!(tree.put(&inside, &u("./sites/b/x"), leaf(2)).await.unwrap_err().code(), "outside_session");
    tree.close(&admin, &s.id).await.unwrap();
    tree.put(&Caller::new(&admin), &u("./sites/a/x"), leaf(2)).await.unwrap();
    let other = Principal::named("ops");
    assert_eq!(tree.close(&other, &s.id).await.unwrap_err().code(), "session_not_found");
}

#[tokio::test]
async fn subtree_put_rename_copy_and_patch() {
    let tree = tree().await;
    let admin = admin();
    let caller = Caller::new(&admin);
    let subtree = Content::Interior(vec![
        ("p".into(), Content::Leaf(Value::Int(1))),
        ("q".into(), Content::Interior(vec![("r".into(), Content::Leaf(Value::Bool(true)))])),
    ]);
    tree.put(&caller, &u("./sites/a/t"), Write { content: Some(subtree), ..Write::default() }).await.unwrap();
    assert_eq!(value(&tree, "./sites/a/t/q/r").await, Some(Value::Bool(true)));
    tree.copy(&caller, &u("./sites/a/t"), &u("./sites/a/t2")).await.unwrap();
    tree.rename(&caller, &u("./sites/a/t"), "t3").await.unwrap();
    assert_eq!(value(&tree, "./sites/a/t3/p").await, Some(Value::Int(1)));
    assert_eq!(value(&tree, "./sites/a/t2/p").await, Some(Value::Int(1)));
    let leaves = vec![
        (Uri::from_key("p"), Value::Int(5)),
        (Uri::from_key("new\0deep"), Value::from_json(&json!("s"), None).unwrap()),
    ];
    tree.patch(&caller, &u("./sites/a/t3"), leaves, Precondition::default()).await.unwrap();
    assert_eq!(value(&tree, "./sites/a/t3/p").await, Some(Value::Int(5)));
    assert_eq!(value(&tree, "./sites/a/t3/new/deep").await, Some(Value::string("s")));
    let bad = vec![(Uri::from_key("ok"), Value::Int(1)), (Uri::from_key("p\0under-a-leaf"), Value::Int(1))];
    assert!(tree.patch(&caller, &u("./sites/a/t3"), bad, Precondition::default()).await.is_err());
    assert_eq!(value(&tree, "./sites/a/t3/ok").await, None, "patch is all or nothing");
}

#[tokio::test]
async fn unmount_removes_the_subtree() {
    let tree = tree().await;
    let admin = admin();
    tree.put(&Caller::new(&admin), &u("./sites/a/x"), leaf(1)).await.unwrap();
    assert!(tree.mount("a2", u("./sites/a"), Arc::new(MemoryHandler::default())).is_err());
    tree.unmount(&u("./sites/a")).unwrap();
    assert_eq!(value(&tree, "./sites/a/x").await, None);
    assert!(tree.unmount(&u("./sites/a")).is_err());
}

mod fanout {
    use super::*;
    use crate::fanout::Filter;
    use crate::pattern::UriPattern;

    fn filter(p: &str) -> Filter {
        Filter::new(UriPattern::parse(p, &UriLimits::default()).unwrap())
    }

    async fn next_event(feed: &mut crate::fanout::Feed) -> Arc<Event> {
        match tokio::time::timeout(Duration::from_secs(5), feed.next()).await.expect("no event within 5 s") {
            Some(Delivery::Event(e)) => e,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_slow_feed_overflows_then_catches_up_without_loss() {
        let tree = tree().await;
        let admin = admin();
        let mut slow = tree.subscribe(admin.clone(), filter("./sites/a/**"), tree.events().head(), 4);
        for i in 0..200 {
            tree.put(&Caller::new(&admin), &u(&format!("./sites/a/n{}", i % 7)), leaf(i)).await.unwrap();
        }
        let mut values = Vec::new();
        let mut last = 0;
        while values.len() < 200 {
            let e = next_event(&mut slow).await;
            assert!(e.revision > last, "revisions increase");
            last = e.revision;
            // (The fixture's own mount events may also fall in the window.)
            if e.uri.to_string().starts_with("./sites/a/n") {
                values.push(e.value.clone().unwrap());
            }
        }
        assert_eq!(values, (0..200).map(|i| serde_json::json!(i)).collect::<Vec<_>>());
        assert!(slow.stats().overflowed.load(std::sync::atomic::Ordering::Relaxed) > 0, "the buffer of 4 overflowed");
    }

    #[tokio::test]
    async fn feeds_see_only_what_their_principal_may_read_at_delivery() {
        let tree = tree().await;
        let admin = admin();
        let alice = Principal::named("alice");
        let private =
            Write { acl: Some(Some("Add=admin&Get=admin&Replace=admin".parse().unwrap())), ..Write::default() };
        tree.put(&Caller::new(&admin), &u("./sites/a/private"), private).await.unwrap();
        let mut feed = tree.subscribe(alice, filter("./sites/a/**"), tree.events().head(), 64);
        tree.put(&Caller::new(&admin), &u("./sites/a/private/x"), leaf(1)).await.unwrap();
        tree.put(&Caller::new(&admin), &u("./sites/a/public"), leaf(2)).await.unwrap();
        assert_eq!(next_event(&mut feed).await.uri, u("./sites/a/public"));
    }

    #[tokio::test]
    async fn replay_from_history_then_live_and_sampling() {
        let tree = tree().await;
        let admin = admin();
        let start = tree.events().head();
        for i in 0..3 {
            tree.put(&Caller::new(&admin), &u("./sites/a/s"), leaf(i)).await.unwrap();
        }
        let mut feed = tree.subscribe(admin.clone(), filter("./sites/a/s"), start, 16);
        for i in 0..3 {
            assert_eq!(next_event(&mut feed).await.value, Some(serde_json::json!(i)));
        }
        tree.put(&Caller::new(&admin), &u("./sites/a/s"), leaf(3)).await.unwrap();
        assert_eq!(next_event(&mut feed).await.value, Some(serde_json::json!(3)));

        let sampled = Filter { sample: Some(Duration::from_millis(200)), ..filter("./sites/a/*") };
        let mut sampled = tree.subscribe(admin.clone(), sampled, tree.events().head(), 64);
        for i in 10..20 {
            tree.put(&Caller::new(&admin), &u("./sites/a/s"), leaf(i)).await.unwrap();
            tree.put(&Caller::new(&admin), &u("./sites/a/t"), leaf(i)).await.unwrap();
        }
        let first = next_event(&mut sampled).await;
        let second = next_event(&mut sampled).await;
        assert_eq!((first.uri.to_string(), first.value.clone()), ("./sites/a/s".into(), Some(serde_json::json!(19))));
        assert_eq!((second.uri.to_string(), second.value.clone()), ("./sites/a/t".into(), Some(serde_json::json!(19))));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sampled.next()).await.is_err(),
            "one event per node per interval"
        );
    }

    #[tokio::test]
    async fn dropping_a_feed_unsubscribes() {
        let tree = tree().await;
        let before = tree.subscription_count();
        let feed = tree.subscribe(admin(), filter("./**"), 0, 8);
        assert_eq!(tree.subscription_count(), before + 1);
        drop(feed);
        assert_eq!(tree.subscription_count(), before);
    }
}

/// A memory handler that holds two writers adding `shared` until both have
/// seen it missing, then lets the second add it only after the first committed.
struct SharedAncestor {
    inner: MemoryHandler,
    both_looked: tokio::sync::Barrier,
    first_committed: tokio::sync::Notify,
}

impl SharedAncestor {
    fn new() -> Self {
        Self {
            inner: MemoryHandler::default(),
            both_looked: tokio::sync::Barrier::new(2),
            first_committed: Default::default(),
        }
    }
}

#[async_trait]
impl DataHandler for SharedAncestor {
    fn kind(&self) -> &'static str {
        "shared-ancestor"
    }
    async fn get(&self, cx: OpContext<'_>, path: &Uri) -> Result<Node> {
        self.inner.get(cx, path).await
    }
    async fn children(&self, cx: OpContext<'_>, path: &Uri) -> Result<Vec<String>> {
        self.inner.children(cx, path).await
    }
    async fn meta(&self, _cx: OpContext<'_>, _path: &Uri) -> Result<Meta> {
        Ok(Meta::permissive())
    }
    async fn add(&self, cx: OpContext<'_>, path: &Uri, node: NewNode) -> Result<()> {
        if path.to_string() == "./shared" && !self.both_looked.wait().await.is_leader() {
            self.first_committed.notified().await;
        }
        self.inner.add(cx, path, node).await
    }
    fn transactional(&self) -> bool {
        true
    }
    async fn commit(&self, tx: TxId) -> Result<()> {
        self.inner.commit(tx).await?;
        self.first_committed.notify_one();
        Ok(())
    }
    async fn rollback(&self, tx: TxId) {
        self.inner.rollback(tx).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_under_one_missing_parent_both_succeed() {
    let tree = tree().await;
    tree.mount("g", u("./g"), Arc::new(SharedAncestor::new())).unwrap();
    let put = |name: &'static str| {
        let tree = tree.clone();
        tokio::spawn(async move { tree.put(&Caller::new(&admin()), &u(&format!("./g/shared/{name}")), leaf(1)).await })
    };
    let (a, b) = (put("n1"), put("n2"));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(value(&tree, "./g/shared/n1").await, Some(Value::Int(1)));
    assert_eq!(value(&tree, "./g/shared/n2").await, Some(Value::Int(1)));
}
