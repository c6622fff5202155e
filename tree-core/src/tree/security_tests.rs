//! The read invariant: no principal ever receives an event, live or
//! replayed, for a node it could not read when the event was committed, and
//! no replayed event for a node it cannot read now. Plus the write-side
//! rules that keep existence and versions from leaking, and session limits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::event::Delivery;
use crate::fanout::{Feed, Filter};
use crate::memory::MemoryHandler;
use crate::pattern::UriPattern;
use crate::store::MemoryTreeStore;

fn u(s: &str) -> Uri {
    Uri::parse(s, &UriLimits::default()).unwrap()
}

fn admin() -> Principal {
    Principal::named("admin")
}

async fn tree() -> Arc<Tree> {
    let config = TreeConfig { lock_timeout: Duration::from_millis(200), ..TreeConfig::default() };
    let tree = Tree::open(config, Arc::new(MemoryTreeStore::default()), Acl::default_root()).await.unwrap();
    tree.mount("a", u("./sites/a"), Arc::new(MemoryHandler::default())).unwrap();
    // The mount's own event is durable (and below `head`) before tests start.
    tree.events().append(Vec::new()).await;
    tree
}

fn leaf(v: i64) -> Write {
    Write { content: Some(Content::Leaf(Value::Int(v))), ..Write::default() }
}

fn with_acl(v: i64, acl: &str) -> Write {
    Write { acl: Some(Some(acl.parse().unwrap())), ..leaf(v) }
}

const SECRET: &str = "Add=admin&Delete=admin&Get=admin&Replace=admin";

/// Everything a feed hands out within `wait` of going quiet.
async fn drain(feed: &mut Feed, wait: Duration) -> Vec<Arc<Event>> {
    let mut out = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(wait, feed.next()).await {
        if let Delivery::Event(e) = d {
            out.push(e);
        }
    }
    out
}

fn all(tree: &Arc<Tree>, who: Principal, since: u64) -> Feed {
    let filter = Filter::new(UriPattern::parse("./**", &UriLimits::default()).unwrap());
    tree.subscribe(who, filter, since, 4096)
}

#[tokio::test]
async fn a_deleted_or_renamed_secret_keeps_its_events_secret() {
    let tree = tree().await;
    let (admin, bob) = (admin(), Principal::named("bob"));
    let start = tree.events().head();
    let mut live = all(&tree, Principal::Anonymous, start);
    tree.put(&Caller::new(&admin), &u("./sites/a/pub/s"), with_acl(42, SECRET)).await.unwrap();
    tree.put(&Caller::new(&admin), &u("./sites/a/pub/s"), leaf(43)).await.unwrap();
    tree.rename(&Caller::new(&admin), &u("./sites/a/pub/s"), "s2").await.unwrap();
    tree.delete(&Caller::new(&admin), &u("./sites/a/pub/s2"), Precondition::default()).await.unwrap();
    tree.put(&Caller::new(&admin), &u("./sites/a/pub/open"), leaf(1)).await.unwrap();
    for who in [Principal::Anonymous, bob] {
        let seen = drain(&mut all(&tree, who.clone(), start), Duration::from_millis(100)).await;
        let uris: Vec<String> = seen.iter().map(|e| e.uri.to_string()).collect();
        assert_eq!(uris, ["./sites/a/pub", "./sites/a/pub/open"], "{who} replays only what it could read");
    }
    let live: Vec<String> =
        drain(&mut live, Duration::from_millis(100)).await.iter().map(|e| e.uri.to_string()).collect();
    assert_eq!(live, ["./sites/a/pub", "./sites/a/pub/open"]);
    let seen = drain(&mut all(&tree, admin, start), Duration::from_millis(100)).await;
    assert_eq!(seen.len(), 6, "admin sees all: {seen:?}");
}

/// Found by the probe: a position past every revision overflowed once the
/// stream fell behind. It now means "from now".
#[tokio::test]
async fn a_position_from_the_future_means_now() {
    let tree = tree().await;
    let admin = admin();
    let mut feed = all(&tree, admin.clone(), u64::MAX);
    tree.put(&Caller::new(&admin), &u("./sites/a/x"), leaf(1)).await.unwrap();
    let seen = drain(&mut feed, Duration::from_millis(100)).await;
    assert_eq!(seen.iter().map(|e| e.uri.to_string()).collect::<Vec<_>>(), ["./sites/a/x"]);
    assert_eq!(tree.events().cursor(u64::MAX).position(), u64::MAX);
}

#[tokio::test]
async fn a_copy_is_never_more_open_than_its_source() {
    let tree = tree().await;
    let (admin, bob) = (admin(), Principal::named("bob"));
    tree.put(&Caller::new(&admin), &u("./sites/a/vault/key"), with_acl(7, SECRET)).await.unwrap();
    tree.put(&Caller::new(&admin), &u("./sites/a/public"), Write::default()).await.unwrap();
    tree.copy(&Caller::new(&admin), &u("./sites/a/vault/key"), &u("./sites/a/public/key")).await.unwrap();
    let err = tree.read(&Caller::new(&bob), &u("./sites/a/public/key"), 0).await.unwrap_err();
    assert_eq!(err.code(), "permission_denied");
    assert!(tree.read(&Caller::new(&admin), &u("./sites/a/public/key"), 0).await.is_ok());
}

#[tokio::test]
async fn a_sample_is_judged_when_it_leaves() {
    let tree = tree().await;
    let (admin, bob) = (admin(), Principal::named("bob"));
    tree.put(&Caller::new(&admin), &u("./sites/a/m/v"), leaf(0)).await.unwrap();
    let filter = Filter {
        sample: Some(Duration::from_millis(300)),
        ..Filter::new(UriPattern::parse("./sites/a/m/*", &UriLimits::default()).unwrap())
    };
    let mut feed = tree.subscribe(bob, filter, tree.events().head(), 64);
    tree.put(&Caller::new(&admin), &u("./sites/a/m/v"), leaf(1)).await.unwrap();
    // Revoked before the sample interval ends.
    let revoke = Write { acl: Some(Some(SECRET.parse().unwrap())), ..Write::default() };
    tree.put(&Caller::new(&admin), &u("./sites/a/m"), revoke).await.unwrap();
    assert!(drain(&mut feed, Duration::from_millis(800)).await.is_empty());
}

#[tokio::test]
async fn writes_check_permission_before_existence_and_versions() {
    let tree = tree().await;
    let (admin, bob, anon) = (admin(), Principal::named("bob"), Principal::Anonymous);
    tree.put(&Caller::new(&admin), &u("./sites/a/s"), with_acl(1, SECRET)).await.unwrap();
    let v = tree.read(&Caller::new(&admin), &u("./sites/a/s"), 0).await.unwrap().node.unwrap().props.version;
    for who in [&bob, &anon] {
        let empty = tree.put(&Caller::new(who), &u("./sites/a/s"), Write::default()).await.unwrap_err();
        assert!(matches!(empty.code().as_str(), "permission_denied" | "authentication_required"), "{empty}");
        for versions in [Versions::List(vec![v]), Versions::List(vec![v + 1])] {
            let pre = Precondition { if_match: Some(versions), if_none_match: None };
            let err = tree.delete(&Caller::new(who), &u("./sites/a/s"), pre.clone()).await.unwrap_err();
            assert_ne!(err.code(), "precondition_failed");
            let w = Write { precondition: pre, ..leaf(2) };
            let err = tree.put(&Caller::new(who), &u("./sites/a/s"), w).await.unwrap_err();
            assert_ne!(err.code(), "precondition_failed");
        }
        let there = tree.delete(&Caller::new(who), &u("./sites/a/s"), Precondition::default()).await.unwrap_err();
        let gone = tree.delete(&Caller::new(who), &u("./sites/a/s/none"), Precondition::default()).await.unwrap_err();
        assert_eq!(there.code(), gone.code(), "an existing and a missing secret answer alike");
    }
}

#[tokio::test]
async fn sessions_need_a_name_write_rights_and_stay_within_a_cap() {
    let config = TreeConfig { max_sessions_per_principal: 2, ..TreeConfig::default() };
    let tree = Tree::open(config, Arc::new(MemoryTreeStore::default()), Acl::default_root()).await.unwrap();
    tree.mount("a", u("./sites/a"), Arc::new(MemoryHandler::default())).unwrap();
    let (admin, bob) = (admin(), Principal::named("bob"));
    let anon = tree.open_session(&Principal::Anonymous, &u("./sites/a"), LockMode::Shared, None).await;
    assert_eq!(anon.unwrap_err().code(), "authentication_required");
    for mode in [LockMode::Exclusive, LockMode::Atomic] {
        let err = tree.open_session(&bob, &u("./sites/a"), mode, None).await.unwrap_err();
        assert_eq!(err.code(), "permission_denied", "bob may only read ./sites/a");
    }
    // A shared session never blocks a writer.
    let shared = tree.open_session(&bob, &u("./sites"), LockMode::Shared, None).await.unwrap();
    tree.put(&Caller::new(&admin), &u("./sites/a/x"), leaf(1)).await.unwrap();
    tree.open_session(&bob, &u("./sites"), LockMode::Shared, None).await.unwrap();
    let third = tree.open_session(&bob, &u("./sites"), LockMode::Shared, None).await.unwrap_err();
    assert_eq!(third.code(), "limit_exceeded");
    // Only the owner, or admin, sees or ends a session.
    assert!(tree.visible_session(&Principal::named("eve"), &shared.id).is_none());
    assert!(tree.close(&Principal::named("eve"), &shared.id).await.is_err());
    assert!(tree.visible_session(&admin, &shared.id).is_some());
    tree.close(&admin, &shared.id).await.unwrap();
    assert!(tree.visible_session(&bob, &shared.id).is_none());
}

// ---- the property: random histories by several principals ----

const PRINCIPALS: [&str; 3] = ["admin", "alice", "bob"];
const ACLS: [&str; 4] = [
    "Add=admin&Delete=admin&Get=*&Replace=admin",
    SECRET,
    "Add=admin+alice&Delete=admin+alice&Get=admin+alice&Replace=admin+alice",
    "Add=admin+bob&Delete=bob&Get=bob&Replace=admin+bob",
];
const NODES: [&str; 6] = ["d0", "d0/n0", "d0/n1", "d1", "d1/n0", "d1/n1"];

#[derive(Debug, Clone)]
enum Step {
    Put { by: usize, node: usize, acl: Option<usize> },
    SetAcl { node: usize, acl: usize },
    Delete { by: usize, node: usize },
    Rename { node: usize, to: usize },
    Copy { node: usize, to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..6usize, proptest::option::of(0..4usize)).prop_map(|(by, node, acl)| Step::Put { by, node, acl }),
        2 => (0..6usize, 0..4usize).prop_map(|(node, acl)| Step::SetAcl { node, acl }),
        1 => (0..3usize, 0..6usize).prop_map(|(by, node)| Step::Delete { by, node }),
        1 => (0..6usize, 0..6usize).prop_map(|(node, to)| Step::Rename { node, to }),
        1 => (0..6usize, 0..6usize).prop_map(|(node, to)| Step::Copy { node, to }),
    ]
}

fn node(i: usize) -> Uri {
    u(&format!("./sites/a/{}", NODES[i]))
}

/// The specification of ACLs, independent of the tree's: own ACLs by URI.
#[derive(Clone)]
struct Model(BTreeMap<Uri, Acl>);

impl Model {
    fn effective(&self, uri: &Uri) -> Acl {
        let mut cur = Some(uri.clone());
        while let Some(c) = cur {
            if let Some(acl) = self.0.get(&c) {
                return acl.clone();
            }
            cur = c.parent();
        }
        Acl::default_root()
    }

    fn reads(&self, uri: &Uri, who: &Principal) -> bool {
        self.effective(uri).permits(who, Permission::Get)
    }

    fn subtree(&self, uri: &Uri) -> Vec<(Uri, Acl)> {
        self.0.iter().filter(|(k, _)| uri.is_prefix_of(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn drop_subtree(&mut self, uri: &Uri) {
        self.0.retain(|k, _| !uri.is_prefix_of(k));
    }
}

/// Runs one step; on success, updates the model as the step's semantics say.
async fn apply(tree: &Arc<Tree>, model: &mut Model, s: &Step) {
    let admin = admin();
    let caller = |i: usize| Principal::named(PRINCIPALS[i]);
    match s {
        Step::Put { by, node: n, acl } => {
            let w = match acl {
                Some(a) => with_acl(1, ACLS[*a]),
                None => leaf(1),
            };
            let target = node(*n);
            if tree.put(&Caller::new(&caller(*by)), &target, w).await.is_ok()
                && let Some(a) = acl
            {
                model.0.insert(target, ACLS[*a].parse().unwrap());
            }
        }
        Step::SetAcl { node: n, acl } => {
            let w = Write { acl: Some(Some(ACLS[*acl].parse().unwrap())), ..Write::default() };
            if tree.put(&Caller::new(&admin), &node(*n), w).await.is_ok() {
                model.0.insert(node(*n), ACLS[*acl].parse().unwrap());
            }
        }
        Step::Delete { by, node: n } => {
            if tree.delete(&Caller::new(&caller(*by)), &node(*n), Precondition::default()).await.is_ok() {
                model.drop_subtree(&node(*n));
            }
        }
        Step::Rename { node: n, to } => {
            let (from, to) = (node(*n), node(*to));
            if from.parent() != to.parent() {
                return;
            }
            if tree.rename(&Caller::new(&admin), &from, to.name().unwrap()).await.is_ok() {
                let moved = model.subtree(&from);
                model.drop_subtree(&from);
                for (k, acl) in moved {
                    model.0.insert(k.rebase(&from, &to).unwrap(), acl);
                }
            }
        }
        Step::Copy { node: n, to } => {
            let (from, to) = (node(*n), node(*to));
            if from.is_prefix_of(&to) || to.is_prefix_of(&from) {
                return;
            }
            let destination = model.effective(&to.parent().unwrap());
            let source = model.effective(&from);
            let inner = model.subtree(&from);
            if tree.copy(&Caller::new(&admin), &from, &to).await.is_ok() {
                model.0.insert(to.clone(), source.intersect(&destination));
                for (k, acl) in inner.into_iter().filter(|(k, _)| *k != from) {
                    model.0.insert(k.rebase(&from, &to).unwrap(), acl.intersect(&destination));
                }
            }
        }
    }
}

fn readable(before: &Model, after: &Model, e: &Event, who: &Principal) -> bool {
    let uris = std::iter::once(&e.uri).chain(e.to.as_ref());
    uris.into_iter().all(|uri| before.reads(uri, who) && after.reads(uri, who))
}

async fn history_never_leaks(steps: Vec<Step>) {
    let tree = tree().await;
    let start = tree.events().head();
    let watchers: Vec<Principal> =
        PRINCIPALS.iter().map(|p| Principal::named(p)).chain([Principal::Anonymous]).collect();
    let mut live: Vec<Feed> = watchers.iter().map(|w| all(&tree, w.clone(), start)).collect();
    let mut model = Model(BTreeMap::new());
    // For each step: the revisions it produced and the model before and after.
    let mut spans: Vec<(u64, u64, Model, Model)> = Vec::new();
    for s in &steps {
        let (head, before) = (tree.events().head(), model.clone());
        apply(&tree, &mut model, s).await;
        spans.push((head, tree.events().head(), before, model.clone()));
    }
    let span = |rev: u64| spans.iter().find(|(from, to, ..)| rev > *from && rev <= *to);
    for (who, feed) in watchers.iter().zip(live.iter_mut()) {
        let replayed = drain(&mut all(&tree, who.clone(), start), Duration::from_millis(30)).await;
        for e in replayed.iter().filter(|e| e.kind != EventKind::SessionOpened && e.kind != EventKind::SessionClosed) {
            let (_, _, before, after) = span(e.revision).expect("every event comes from a step");
            assert!(readable(before, after, e, who), "{who} replayed {e:?} it could not read at commit");
            assert!(readable(&model, &model, e, who), "{who} replayed {e:?} it cannot read now");
        }
        for e in drain(feed, Duration::from_millis(30)).await {
            let (_, _, before, after) = span(e.revision).expect("every event comes from a step");
            assert!(readable(before, after, &e, who), "{who} received {e:?} live, unreadable at commit");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_principal_receives_an_event_it_could_not_read(steps in proptest::collection::vec(step(), 1..24)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(history_never_leaks(steps));
    }
}
