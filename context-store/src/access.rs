//! Who may read derived data. Aggregates, SLA state and query results are
//! made of events the store read with its own principal; each event type
//! carries the read rights of where its events came from: the `acl` of the
//! subscriptions producing it, or else the tree's ACLs over every node their
//! patterns may match (the base's, and any stricter one below it that a `*`
//! can reach), and for a derived type, the rights of all its inputs. Events
//! ingested directly (no subscription) add no restriction beyond the ACL of
//! `./contextstore` itself.

use std::collections::BTreeSet;

use dmtree_core::{Acl, ReadRule, Tree, UriLimits, UriPattern};

use crate::config::{Config, Handler};

/// The read rule of events of `kind`, judged against the tree's ACLs now.
pub fn type_rule(config: &Config, tree: &Tree, kind: &str) -> ReadRule {
    let mut rule = ReadRule::default();
    add_type(config, tree, kind, &mut rule, &mut BTreeSet::new());
    rule
}

/// The read rule of a handler's outputs: that of its inputs.
pub fn handler_rule(config: &Config, tree: &Tree, handler: &Handler) -> ReadRule {
    let mut rule = ReadRule::default();
    let mut seen = BTreeSet::new();
    for input in handler.inputs() {
        add_type(config, tree, input, &mut rule, &mut seen);
    }
    rule
}

/// Senders and types only the server (or admin) records: tree changes and
/// rule audits. Their events are trusted (a leaf's history, audits), so no
/// one else may ingest them.
pub fn reserved(sender: &str, kind: &str) -> bool {
    sender == "tree" || sender.starts_with("tree:") || sender.starts_with("dmtree.") || kind == RULE_AUDIT
}

/// The rule layer's audit of firings: it names bindings of any owner's rules, so admin only.
pub const RULE_AUDIT: &str = "rule.fired";

fn add_type(config: &Config, tree: &Tree, kind: &str, rule: &mut ReadRule, seen: &mut BTreeSet<String>) {
    if !seen.insert(kind.to_owned()) {
        return;
    }
    if kind == RULE_AUDIT {
        rule.and(Acl::default().grant(dmtree_core::Permission::Get, dmtree_core::ADMIN).into());
    }
    for s in config.subscriptions.values().filter(|s| s.kind == kind) {
        match s.acl.as_deref().map(str::parse::<Acl>) {
            Some(Ok(acl)) => rule.and(acl.into()),
            // Checked when written; unreadable now means: nobody.
            Some(Err(_)) => rule.and(Acl::default().into()),
            None => match UriPattern::parse(&s.pattern, &UriLimits::default()) {
                Ok(pattern) => {
                    for acl in tree.pattern_read_rule(&pattern).acls() {
                        rule.and(acl.clone());
                    }
                }
                Err(_) => rule.and(Acl::default().into()),
            },
        }
    }
    // Derived types: a filter's output, and `<handler>.window|violation|recovery`.
    for (name, h) in &config.handlers {
        let derived = match h {
            Handler::Filter { output, .. } => output == kind,
            Handler::Aggregate { .. } | Handler::Threshold { .. } => kind
                .strip_prefix(name.as_str())
                .and_then(|k| k.strip_prefix('.'))
                .is_some_and(|suffix| matches!(suffix, "window" | "violation" | "recovery")),
        };
        if derived {
            for input in h.inputs() {
                add_type(config, tree, input, rule, seen);
            }
        }
    }
}
