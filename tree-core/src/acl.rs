//! OMA-DM / DMT Admin access control lists.
//!
//! An [`Acl`] grants each of Add, Delete, Exec, Get and Replace to principals
//! or to `*` (everyone). A node without an ACL inherits its nearest ancestor's;
//! the root always has one. ACLs live in the [`AclTable`], owned by the tree
//! and not by handlers, so every handler (remote ones too) is checked the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::uri::Uri;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    Add,
    Delete,
    Exec,
    Get,
    Replace,
}

impl Permission {
    pub const ALL: [Permission; 5] =
        [Permission::Add, Permission::Delete, Permission::Exec, Permission::Get, Permission::Replace];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Add => "Add",
            Permission::Delete => "Delete",
            Permission::Exec => "Exec",
            Permission::Get => "Get",
            Permission::Replace => "Replace",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling. The anonymous principal is granted only what `*` is granted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    Anonymous,
    Named(Arc<str>),
}

impl Principal {
    pub fn named(name: &str) -> Self {
        Principal::Named(name.into())
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::Named(n) => Some(n),
        }
    }

    /// The operator principal: it may see and end every session and subscription.
    pub fn is_admin(&self) -> bool {
        self.name() == Some(ADMIN)
    }
}

/// The principal that owns the server (the first-start token's).
pub const ADMIN: &str = "admin";

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name().unwrap_or("anonymous"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid ACL {acl:?}: {reason}")]
pub struct AclError {
    pub acl: String,
    pub reason: String,
}

/// One ACL: for each permission, the principals it is granted to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acl {
    grants: BTreeMap<Permission, BTreeSet<Arc<str>>>,
}

pub const EVERYONE: &str = "*";

impl Acl {
    pub fn grant(mut self, perm: Permission, principal: &str) -> Self {
        self.grants.entry(perm).or_default().insert(principal.into());
        self
    }

    pub fn permits(&self, principal: &Principal, perm: Permission) -> bool {
        self.grants
            .get(&perm)
            .is_some_and(|set| set.contains(EVERYONE) || principal.name().is_some_and(|name| set.contains(name)))
    }

    /// What both ACLs grant: per permission, the principals both name
    /// (`*` in one keeps the other's list).
    pub fn intersect(&self, other: &Acl) -> Acl {
        let mut out = Acl::default();
        for perm in Permission::ALL {
            let (Some(a), Some(b)) = (self.grants.get(&perm), other.grants.get(&perm)) else { continue };
            let both: BTreeSet<Arc<str>> = match (a.contains(EVERYONE), b.contains(EVERYONE)) {
                (true, _) => b.clone(),
                (_, true) => a.clone(),
                _ => a.intersection(b).cloned().collect(),
            };
            if !both.is_empty() {
                out.grants.insert(perm, both);
            }
        }
        out
    }

    /// The principals granted `perm` (for display).
    pub fn principals(&self, perm: Permission) -> impl Iterator<Item = &str> {
        self.grants.get(&perm).into_iter().flatten().map(|p| &**p)
    }

    /// The default ACL on the root: everyone reads, `admin` does the rest.
    pub fn default_root() -> Self {
        let mut acl = Acl::default().grant(Permission::Get, EVERYONE);
        for perm in [Permission::Add, Permission::Delete, Permission::Exec, Permission::Replace] {
            acl = acl.grant(perm, "admin");
        }
        acl
    }
}

/// Who may read an event: every ACL listed must grant `Get`. The tree records
/// the ACLs that governed the node before and after the change, so an event
/// never outlives the rights under which it was committed (a deleted secret's
/// URI later inherits its parent's ACL; its old events must not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadRule(Vec<Arc<Acl>>);

impl ReadRule {
    /// Adds an ACL that must also grant `Get` (skipping one already listed).
    pub fn and(&mut self, acl: Arc<Acl>) {
        if !self.0.iter().any(|a| Arc::ptr_eq(a, &acl) || **a == *acl) {
            self.0.push(acl);
        }
    }

    /// Readable only by `principal` (and admin): a session's own events.
    pub fn only(principal: &Principal) -> Self {
        let mut acl = Acl::default().grant(Permission::Get, ADMIN);
        if let Some(name) = principal.name() {
            acl = acl.grant(Permission::Get, name);
        }
        Self(vec![Arc::new(acl)])
    }

    /// An empty rule restricts nothing: events from before rules were recorded.
    pub fn permits(&self, principal: &Principal) -> bool {
        self.0.iter().all(|acl| acl.permits(principal, Permission::Get))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn acls(&self) -> impl Iterator<Item = &Arc<Acl>> {
        self.0.iter()
    }
}

impl Serialize for ReadRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|a| a.to_string()))
    }
}

impl<'de> Deserialize<'de> for ReadRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        let acls = texts.iter().map(|t| t.parse().map(Arc::new)).collect::<Result<_, AclError>>();
        acls.map(ReadRule).map_err(serde::de::Error::custom)
    }
}

fn valid_principal(p: &str) -> bool {
    p == EVERYONE
        || (!p.is_empty() && p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b)))
}

impl FromStr for Acl {
    type Err = AclError;

    /// Parses `Add=admin&Get=*&Replace=admin+ops`. The empty string grants nothing.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| AclError { acl: s.chars().take(256).collect(), reason };
        let mut acl = Acl::default();
        if s.is_empty() {
            return Ok(acl);
        }
        for part in s.split('&') {
            let (name, principals) =
                part.split_once('=').ok_or_else(|| err(format!("{part:?} is not Permission=principals")))?;
            let perm = Permission::ALL.into_iter().find(|p| p.as_str() == name).ok_or_else(|| {
                err(format!("unknown permission {name:?}; expected Add, Delete, Exec, Get or Replace"))
            })?;
            for principal in principals.split('+') {
                if !valid_principal(principal) {
                    return Err(err(format!("invalid principal {principal:?}")));
                }
                acl = acl.grant(perm, principal);
            }
        }
        Ok(acl)
    }
}

impl fmt::Display for Acl {
    /// The canonical form: permissions in a fixed order, principals sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (perm, set) in self.grants.iter().filter(|(_, s)| !s.is_empty()) {
            if !first {
                f.write_str("&")?;
            }
            first = false;
            write!(f, "{perm}=")?;
            for (i, p) in set.iter().enumerate() {
                if i > 0 {
                    f.write_str("+")?;
                }
                f.write_str(p)?;
            }
        }
        Ok(())
    }
}

impl Serialize for Acl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Acl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The ACLs set on nodes, as a trie on URI segments: an effective-ACL lookup
/// walks one branch, so its cost is the URI's depth, not the number of ACLs.
#[derive(Debug)]
pub struct AclTable {
    root: AclNode,
}

#[derive(Debug, Default)]
struct AclNode {
    acl: Option<Arc<Acl>>,
    children: HashMap<Box<str>, AclNode>,
}

impl AclTable {
    pub fn new(root_acl: Acl) -> Self {
        Self { root: AclNode { acl: Some(Arc::new(root_acl)), children: HashMap::new() } }
    }

    /// The ACL set on this very node, if any.
    pub fn own(&self, uri: &Uri) -> Option<Arc<Acl>> {
        let mut node = &self.root;
        for seg in uri.segments() {
            node = node.children.get(seg)?;
        }
        node.acl.clone()
    }

    /// The node's own ACL and the one that governs it, in one walk.
    pub fn own_and_effective(&self, uri: &Uri) -> (Option<Arc<Acl>>, Arc<Acl>) {
        let mut node = Some(&self.root);
        let mut effective = self.root.acl.as_ref();
        for seg in uri.segments() {
            node = node.and_then(|n| n.children.get(seg));
            match node {
                Some(n) => effective = n.acl.as_ref().or(effective),
                None => break,
            }
        }
        let own = node.and_then(|n| n.acl.clone());
        (own, effective.cloned().unwrap_or_else(|| Arc::new(Acl::default())))
    }

    /// The ACL that governs `uri`: its own, or its nearest ancestor's.
    pub fn effective(&self, uri: &Uri) -> Arc<Acl> {
        let mut node = &self.root;
        let mut found = node.acl.as_ref();
        for seg in uri.segments() {
            match node.children.get(seg) {
                Some(child) => {
                    node = child;
                    found = node.acl.as_ref().or(found);
                }
                None => break,
            }
        }
        // The root always has an ACL, so `found` is set.
        found.cloned().unwrap_or_else(|| Arc::new(Acl::default()))
    }

    /// The ACL that will govern `uri` once `changes` (later ones win) are applied.
    pub fn effective_with(&self, changes: &[(Uri, Option<Acl>)], uri: &Uri) -> Arc<Acl> {
        let mut at = Some(uri.clone());
        while let Some(node) = at {
            match changes.iter().rev().find(|(u, _)| *u == node) {
                Some((_, Some(acl))) => return Arc::new(acl.clone()),
                Some((_, None)) => {}
                None => {
                    if let Some(own) = self.own(&node) {
                        return own;
                    }
                }
            }
            at = node.parent();
        }
        self.root.acl.clone().unwrap_or_else(|| Arc::new(Acl::default()))
    }

    pub fn permits(&self, uri: &Uri, principal: &Principal, perm: Permission) -> bool {
        self.effective(uri).permits(principal, perm)
    }

    /// Sets or clears a node's ACL. The root's ACL can be replaced, never cleared.
    pub fn set(&mut self, uri: &Uri, acl: Option<Acl>) -> Result<(), AclError> {
        if uri.is_root() && acl.is_none() {
            return Err(AclError { acl: String::new(), reason: "the root must keep an ACL".into() });
        }
        let mut node = &mut self.root;
        for seg in uri.segments() {
            node = node.children.entry(seg.into()).or_default();
        }
        node.acl = acl.map(Arc::new);
        self.prune(uri);
        Ok(())
    }

    /// Forgets every ACL in a deleted subtree (never the root's).
    pub fn remove_subtree(&mut self, uri: &Uri) {
        let (Some(parent), Some(name)) = (uri.parent(), uri.name()) else { return };
        if let Some(p) = self.node_mut(&parent) {
            p.children.remove(name);
        }
        self.prune(&parent);
    }

    /// Moves the ACLs of a renamed subtree.
    pub fn move_subtree(&mut self, from: &Uri, to: &Uri) {
        let (Some(parent), Some(name)) = (from.parent(), from.name()) else { return };
        let Some(moved) = self.node_mut(&parent).and_then(|p| p.children.remove(name)) else { return };
        self.prune(&parent);
        let (Some(to_parent), Some(to_name)) = (to.parent(), to.name()) else { return };
        let mut node = &mut self.root;
        for seg in to_parent.segments() {
            node = node.children.entry(seg.into()).or_default();
        }
        node.children.insert(to_name.into(), moved);
    }

    /// Every ACL that is set, for persistence and display.
    pub fn entries(&self) -> Vec<(Uri, Arc<Acl>)> {
        let mut out = Vec::new();
        collect(&self.root, &mut Vec::new(), &mut out);
        out
    }

    fn node_mut(&mut self, uri: &Uri) -> Option<&mut AclNode> {
        let mut node = &mut self.root;
        for seg in uri.segments() {
            node = node.children.get_mut(seg)?;
        }
        Some(node)
    }

    /// Drops empty branches along `uri` so the trie stays proportional to the ACLs set.
    fn prune(&mut self, uri: &Uri) {
        fn walk<'a>(node: &mut AclNode, mut segs: impl Iterator<Item = &'a str>) -> bool {
            if let Some(seg) = segs.next()
                && let Some(child) = node.children.get_mut(seg)
                && walk(child, segs)
            {
                node.children.remove(seg);
            }
            node.acl.is_none() && node.children.is_empty()
        }
        walk(&mut self.root, uri.segments());
    }
}

fn collect<'a>(node: &'a AclNode, path: &mut Vec<&'a str>, out: &mut Vec<(Uri, Arc<Acl>)>) {
    if let Some(acl) = &node.acl {
        out.push((Uri::from_key(path.join("\0")), acl.clone()));
    }
    for (name, child) in &node.children {
        path.push(name);
        collect(child, path, out);
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_with_pending_changes() {
        let u = |s: &str| Uri::parse(s, &crate::UriLimits::default()).unwrap();
        let acl = |s: &str| s.parse::<Acl>().unwrap();
        let mut table = AclTable::new(acl("Get=*"));
        table.set(&u("./a"), Some(acl("Get=x"))).unwrap();
        let changes = vec![(u("./a/b"), Some(acl("Get=y"))), (u("./a"), None)];
        assert_eq!(*table.effective_with(&changes, &u("./a/b/c")), acl("Get=y"));
        assert_eq!(*table.effective_with(&changes, &u("./a/z")), acl("Get=*"), "./a's own ACL is cleared");
        assert_eq!(*table.effective_with(&[], &u("./a/z")), acl("Get=x"));
        let later = vec![(u("./a"), Some(acl("Get=p"))), (u("./a"), Some(acl("Get=q")))];
        assert_eq!(*table.effective_with(&later, &u("./a")), acl("Get=q"), "the last change wins");
    }
    use crate::uri::UriLimits;
    use proptest::prelude::*;

    fn u(s: &str) -> Uri {
        Uri::parse(s, &UriLimits::default()).unwrap()
    }

    #[test]
    fn canonical_form() {
        let acl: Acl = "Replace=ops+admin&Get=*&Add=admin".parse().unwrap();
        assert_eq!(acl.to_string(), "Add=admin&Get=*&Replace=admin+ops");
        assert_eq!(Acl::default_root().to_string(), "Add=admin&Delete=admin&Exec=admin&Get=*&Replace=admin");
        assert_eq!("".parse::<Acl>().unwrap(), Acl::default());
    }

    #[test]
    fn rejects_bad_acls() {
        for bad in ["Get", "Read=*", "Get=", "Get=a b", "Get=*&", "Get=a++b"] {
            assert!(bad.parse::<Acl>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permits_everyone_and_named() {
        let acl: Acl = "Get=*&Replace=ops".parse().unwrap();
        assert!(acl.permits(&Principal::Anonymous, Permission::Get));
        assert!(!acl.permits(&Principal::Anonymous, Permission::Replace));
        assert!(acl.permits(&Principal::named("ops"), Permission::Replace));
        assert!(!acl.permits(&Principal::named("dev"), Permission::Replace));
    }

    #[test]
    fn inheritance_and_subtree_changes() {
        let mut t = AclTable::new(Acl::default_root());
        t.set(&u("./config/secret"), Some("Get=admin".parse().unwrap())).unwrap();
        let alice = Principal::named("alice");
        assert!(t.permits(&u("./config/public"), &alice, Permission::Get));
        assert!(!t.permits(&u("./config/secret/key"), &alice, Permission::Get));
        t.move_subtree(&u("./config/secret"), &u("./config/hidden"));
        assert!(t.permits(&u("./config/secret/key"), &alice, Permission::Get));
        assert!(!t.permits(&u("./config/hidden/key"), &alice, Permission::Get));
        t.remove_subtree(&u("./config"));
        assert!(t.permits(&u("./config/hidden/key"), &alice, Permission::Get));
        assert_eq!(t.entries().len(), 1);
        assert!(t.set(&Uri::root(), None).is_err());
    }

    fn principal() -> impl Strategy<Value = String> {
        prop_oneof![Just("*".to_owned()), "[a-z]{1,4}"]
    }

    fn acl() -> impl Strategy<Value = Acl> {
        prop::collection::vec((prop::sample::select(Permission::ALL.to_vec()), principal()), 0..6)
            .prop_map(|grants| grants.into_iter().fold(Acl::default(), |a, (p, who)| a.grant(p, &who)))
    }

    fn path() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..4)
    }

    fn uri_of(p: &[&str]) -> Uri {
        Uri::from_key(p.join("\0"))
    }

    proptest! {
        #[test]
        fn text_round_trip(a in acl()) {
            prop_assert_eq!(a.to_string().parse::<Acl>().unwrap(), a);
        }

        /// The effective ACL is the one set on the longest ancestor-or-self.
        #[test]
        fn effective_acl_is_nearest_ancestor(
            root in acl(),
            sets in prop::collection::vec((path(), prop::option::of(acl())), 0..12),
            probe in path(),
            who in principal(),
        ) {
            let mut table = AclTable::new(root.clone());
            let mut model: HashMap<Vec<&str>, Acl> = HashMap::new();
            model.insert(vec![], root);
            for (p, a) in sets {
                if p.is_empty() && a.is_none() { continue; }
                table.set(&uri_of(&p), a.clone()).unwrap();
                match a { Some(a) => { model.insert(p, a); } None => { model.remove(&p); } }
            }
            let expected = (0..=probe.len()).rev().find_map(|n| model.get(&probe[..n])).unwrap();
            prop_assert_eq!(&*table.effective(&uri_of(&probe)), expected);
            let (own, effective) = table.own_and_effective(&uri_of(&probe));
            prop_assert_eq!(&*effective, expected);
            prop_assert_eq!(own.as_deref(), model.get(&probe[..]));
            let principal = if who == "*" { Principal::Anonymous } else { Principal::named(&who) };
            for perm in Permission::ALL {
                prop_assert_eq!(table.permits(&uri_of(&probe), &principal, perm), expected.permits(&principal, perm));
            }
            prop_assert_eq!(table.entries().len(), model.len());
        }
    }
}
