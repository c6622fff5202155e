use super::*;
use crate::uri::UriLimits;

fn u(s: &str) -> Uri {
    Uri::parse(&format!("./{s}"), &UriLimits::default()).unwrap()
}

fn write(map: &NodeMap, tx: Option<TxId>, op: Op<'_>) -> Result<()> {
    let muts = map.plan(tx, op)?;
    match tx {
        Some(tx) => map.stage(tx, &muts),
        None => map.apply(&map.finish(&muts)),
    }
    Ok(())
}

fn leaf(v: i64) -> NewNode {
    NewNode::Leaf(Value::Int(v))
}

#[test]
fn lists_children_in_order_without_descendants() {
    let m = NodeMap::new();
    write(&m, None, Op::Add(&u("a"), &NewNode::Interior)).unwrap();
    write(&m, None, Op::Add(&u("a/x"), &NewNode::Interior)).unwrap();
    write(&m, None, Op::Add(&u("a/x/deep"), &leaf(1))).unwrap();
    write(&m, None, Op::Add(&u("a/x-y"), &leaf(2))).unwrap();
    write(&m, None, Op::Add(&u("a/b"), &leaf(3))).unwrap();
    assert_eq!(m.children(None, &u("a")).unwrap(), ["b", "x", "x-y"]);
    assert_eq!(m.children(None, &Uri::root()).unwrap(), ["a"]);
    let refusal = |path: &str| write(&m, None, Op::Add(&u(path), &leaf(1))).map_err(|e| e.code());
    assert_eq!(refusal("nope/x"), Err(crate::error::ErrorCode::NodeNotFound));
    assert_eq!(refusal("a/b"), Err(crate::error::ErrorCode::NodeAlreadyExists));
    assert_eq!(refusal("a/b/c"), Err(crate::error::ErrorCode::CommandNotAllowed));
}

#[test]
fn versions_increase_on_every_change() {
    let m = NodeMap::new();
    write(&m, None, Op::Add(&u("v"), &leaf(1))).unwrap();
    let v1 = m.get(None, &u("v")).unwrap().props.version;
    write(&m, None, Op::Replace(&u("v"), &Value::Int(2))).unwrap();
    let v2 = m.get(None, &u("v")).unwrap().props.version;
    write(&m, None, Op::Delete(&u("v"))).unwrap();
    write(&m, None, Op::Add(&u("v"), &leaf(3))).unwrap();
    let v3 = m.get(None, &u("v")).unwrap().props.version;
    assert!(v1 < v2 && v2 < v3);
}

#[test]
fn ancestors_version_with_their_descendants() {
    let m = NodeMap::new();
    write(&m, None, Op::Add(&u("a"), &NewNode::Interior)).unwrap();
    write(&m, None, Op::Add(&u("a/b"), &NewNode::Interior)).unwrap();
    write(&m, None, Op::Add(&u("a/b/c"), &leaf(1))).unwrap();
    let before = m.get(None, &u("a")).unwrap().props.version;
    write(&m, None, Op::Replace(&u("a/b/c"), &Value::Int(2))).unwrap();
    let (a, b, c) = (m.get(None, &u("a")).unwrap(), m.get(None, &u("a/b")).unwrap(), m.get(None, &u("a/b/c")).unwrap());
    assert!(a.props.version > before);
    assert_eq!((a.props.version, b.props.version), (c.props.version, c.props.version));
    assert_eq!(m.get(None, &Uri::root()).unwrap().props.version, c.props.version);
}

#[test]
fn versions_follow_commit_order_across_transactions() {
    let m = NodeMap::new();
    write(&m, None, Op::Add(&u("p"), &NewNode::Interior)).unwrap();
    let (t1, t2) = (TxId(1), TxId(2));
    write(&m, Some(t1), Op::Add(&u("p/x"), &leaf(1))).unwrap();
    write(&m, Some(t2), Op::Add(&u("p/y"), &leaf(2))).unwrap();
    m.commit(t2);
    let after_t2 = m.get(None, &u("p")).unwrap().props.version;
    m.commit(t1);
    assert!(m.get(None, &u("p")).unwrap().props.version > after_t2);
    assert_eq!(m.children(None, &u("p")).unwrap(), ["x", "y"]);
}

#[test]
fn a_transaction_writes_at_most_its_limit_of_nodes() {
    let m = NodeMap::with_write_limit(3);
    write(&m, None, Op::Add(&u("a"), &NewNode::Interior)).unwrap();
    for i in 0..3 {
        write(&m, None, Op::Add(&u(&format!("a/n{i}")), &leaf(i))).unwrap();
    }
    let too_many = |r: Result<()>| r.unwrap_err().code == crate::ErrorCode::LimitExceeded;
    assert!(too_many(write(&m, None, Op::Copy(&u("a"), &u("b")))), "a copy counts every node");
    assert!(too_many(write(&m, None, Op::Rename(&u("a"), "z"))), "so does a rename");
    let tx = Some(TxId(7));
    for i in 0..3 {
        write(&m, tx, Op::Add(&u(&format!("t{i}")), &leaf(i))).unwrap();
    }
    assert!(too_many(write(&m, tx, Op::Add(&u("t3"), &leaf(3)))), "a transaction's writes add up");
    m.rollback(TxId(7));
    write(&m, None, Op::Add(&u("t3"), &leaf(3))).unwrap();
}

#[test]
fn ancestors_keep_the_newest_version_when_a_batch_is_shown_out_of_order() {
    let m = NodeMap::new();
    write(&m, None, Op::Add(&u("p"), &NewNode::Interior)).unwrap();
    let (t1, t2) = (TxId(1), TxId(2));
    write(&m, Some(t1), Op::Add(&u("p/x"), &leaf(1))).unwrap();
    write(&m, Some(t2), Op::Add(&u("p/y"), &leaf(2))).unwrap();
    m.prepare(t1);
    m.prepare(t2);
    m.commit(t2);
    let newest = m.get(None, &u("p")).unwrap().props.version;
    m.commit(t1);
    assert_eq!(m.get(None, &u("p")).unwrap().props.version, newest, "t1's older refresh of p is not shown");
    assert!(m.get(None, &u("p/x")).unwrap().props.version < newest);
}

#[test]
fn delete_rename_and_copy_subtrees() {
    let m = NodeMap::new();
    write(&m, None, Op::Add(&u("a"), &NewNode::Interior)).unwrap();
    write(&m, None, Op::Add(&u("a/b"), &leaf(1))).unwrap();
    write(&m, None, Op::Copy(&u("a"), &u("c"))).unwrap();
    write(&m, None, Op::Rename(&u("a"), "z")).unwrap();
    assert!(m.get(None, &u("a/b")).is_err());
    assert_eq!(m.get(None, &u("z/b")).unwrap().value, Some(Value::Int(1)));
    assert_eq!(m.get(None, &u("c/b")).unwrap().value, Some(Value::Int(1)));
    write(&m, None, Op::Delete(&u("z"))).unwrap();
    assert_eq!(m.len(), 3);
    assert!(write(&m, None, Op::Copy(&u("c"), &u("c/b2"))).is_err());
}

#[test]
fn transactions_are_isolated_until_commit() {
    let m = NodeMap::new();
    write(&m, None, Op::Add(&u("keep"), &leaf(1))).unwrap();
    let tx = TxId(7);
    write(&m, Some(tx), Op::Add(&u("new"), &leaf(2))).unwrap();
    write(&m, Some(tx), Op::Delete(&u("keep"))).unwrap();
    assert!(m.get(None, &u("new")).is_err());
    assert!(m.get(None, &u("keep")).is_ok());
    assert_eq!(m.children(Some(tx), &Uri::root()).unwrap(), ["new"]);
    assert_eq!(m.prepare(tx).len(), 3, "two writes and the root's version");
    m.commit(tx);
    assert_eq!(m.children(None, &Uri::root()).unwrap(), ["new"]);

    let tx2 = TxId(8);
    write(&m, Some(tx2), Op::Replace(&u("new"), &Value::Int(9))).unwrap();
    m.rollback(tx2);
    assert_eq!(m.get(None, &u("new")).unwrap().value, Some(Value::Int(2)));
}

#[test]
fn tx_delete_then_recreate_under_same_key() {
    let m = NodeMap::new();
    write(&m, None, Op::Add(&u("a"), &NewNode::Interior)).unwrap();
    write(&m, None, Op::Add(&u("a/old"), &leaf(1))).unwrap();
    let tx = TxId(1);
    write(&m, Some(tx), Op::Delete(&u("a"))).unwrap();
    write(&m, Some(tx), Op::Add(&u("a"), &NewNode::Interior)).unwrap();
    write(&m, Some(tx), Op::Add(&u("a/new"), &leaf(2))).unwrap();
    assert_eq!(m.children(Some(tx), &u("a")).unwrap(), ["new"]);
    m.commit(tx);
    assert_eq!(m.children(None, &u("a")).unwrap(), ["new"]);
}
