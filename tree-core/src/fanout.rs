//! Fan-out: one dispatcher reads the event log once and hands each event to
//! the subscriptions whose patterns match it, found through a trie on URI
//! segments, so the cost of an event grows with its matching subscriptions
//! only.
//!
//! Each subscription has a bounded buffer. When it is full the dispatcher
//! stops filling it and the subscription *catches up* from the log on its
//! own cursor (ring, then journal) until it has passed everything that was
//! skipped, then rejoins the live stream. A slow subscriber therefore never
//! blocks the dispatcher or other subscribers, and loses nothing the log
//! still retains; beyond retention it gets a [`Delivery::Gap`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use crate::acl::Principal;
use crate::event::{Delivery, Event, EventCursor, EventKind};
use crate::pattern::{PatternSegment, UriPattern};
use crate::tree::Tree;
use crate::uri::Uri;

/// What a subscription selects.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub pattern: UriPattern,
    /// Empty means every kind.
    pub kinds: Vec<EventKind>,
    /// gNMI-style sampling: at most one event per node per interval, the latest.
    pub sample: Option<Duration>,
}

impl Filter {
    pub fn new(pattern: UriPattern) -> Self {
        Self { pattern, kinds: Vec::new(), sample: None }
    }

    fn matches(&self, e: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && (self.pattern.matches(&e.uri) || e.to.as_ref().is_some_and(|t| self.pattern.matches(t)))
    }
}

/// A trie of patterns: literal segments, `*` and a final `**`.
#[derive(Default)]
struct IndexNode {
    /// Patterns that end exactly here.
    here: Vec<u64>,
    /// Patterns ending in `**` here: they match this node and everything below.
    subtree: Vec<u64>,
    any: Option<Box<IndexNode>>,
    children: HashMap<Box<str>, IndexNode>,
}

#[derive(Default)]
pub(crate) struct PatternIndex {
    root: IndexNode,
}

impl PatternIndex {
    fn node_mut(&mut self, pattern: &UriPattern) -> (&mut IndexNode, bool) {
        let mut node = &mut self.root;
        for seg in pattern.segments() {
            match seg {
                PatternSegment::Literal(l) => node = node.children.entry(l.as_str().into()).or_default(),
                PatternSegment::Any => node = node.any.get_or_insert_with(Default::default),
                PatternSegment::Subtree => return (node, true),
            }
        }
        (node, false)
    }

    pub fn insert(&mut self, pattern: &UriPattern, id: u64) {
        let (node, subtree) = self.node_mut(pattern);
        if subtree { node.subtree.push(id) } else { node.here.push(id) }
    }

    pub fn remove(&mut self, pattern: &UriPattern, id: u64) {
        let (node, subtree) = self.node_mut(pattern);
        let list = if subtree { &mut node.subtree } else { &mut node.here };
        list.retain(|&x| x != id);
    }

    /// Ids of the patterns matching `uri` (a pattern may appear once per path it matches by).
    pub fn matches(&self, uri: &Uri, out: &mut Vec<u64>) {
        let mut level: Vec<&IndexNode> = vec![&self.root];
        for seg in uri.segments() {
            let mut next = Vec::with_capacity(level.len());
            for node in level {
                out.extend_from_slice(&node.subtree);
                if let Some(child) = node.children.get(seg) {
                    next.push(child);
                }
                if let Some(any) = &node.any {
                    next.push(any);
                }
            }
            if next.is_empty() {
                return;
            }
            level = next;
        }
        for node in level {
            out.extend_from_slice(&node.here);
            out.extend_from_slice(&node.subtree);
        }
    }
}

/// Counters a subscription exposes.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Events handed to the subscriber.
    pub delivered: AtomicU64,
    /// Events the dispatcher could not buffer (recovered later from the log).
    pub overflowed: AtomicU64,
    /// Times the subscription had to catch up from the log.
    pub catchups: AtomicU64,
    /// Revision of the last event handed out.
    pub last_revision: AtomicU64,
}

#[derive(Default)]
struct Lag {
    lagging: bool,
    /// The highest revision the dispatcher skipped for this subscription.
    skipped_upto: u64,
}

struct Registered {
    filter: Filter,
    buffer: mpsc::Sender<Arc<Event>>,
    lag: Mutex<Lag>,
    stats: Arc<FeedStats>,
}

/// All subscriptions of a tree, and the dispatcher that feeds them.
#[derive(Default)]
pub(crate) struct FanOut {
    index: RwLock<PatternIndex>,
    subs: RwLock<HashMap<u64, Arc<Registered>>>,
    next_id: AtomicU64,
}

impl FanOut {
    fn register(&self, filter: Filter, capacity: usize) -> (u64, mpsc::Receiver<Arc<Event>>, Arc<Registered>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (buffer, rx) = mpsc::channel(capacity.max(1));
        let reg = Arc::new(Registered { filter, buffer, lag: Mutex::default(), stats: Arc::default() });
        self.index.write().insert(&reg.filter.pattern, id);
        self.subs.write().insert(id, reg.clone());
        (id, rx, reg)
    }

    fn unregister(&self, id: u64) {
        if let Some(reg) = self.subs.write().remove(&id) {
            self.index.write().remove(&reg.filter.pattern, id);
        }
    }

    pub fn len(&self) -> usize {
        self.subs.read().len()
    }

    /// Whether any subscription may see events from the subtree at `prefix`.
    pub fn watches(&self, prefix: &Uri) -> bool {
        self.subs.read().values().any(|reg| reg.filter.pattern.reaches_into(prefix))
    }

    /// Hands one event to every matching subscription, never waiting.
    fn dispatch(&self, event: &Arc<Event>, scratch: &mut Vec<u64>) {
        scratch.clear();
        {
            let index = self.index.read();
            index.matches(&event.uri, scratch);
            if let Some(to) = &event.to {
                index.matches(to, scratch);
            }
        }
        scratch.sort_unstable();
        scratch.dedup();
        let subs = self.subs.read();
        for id in scratch.iter() {
            let Some(reg) = subs.get(id) else { continue };
            if !reg.filter.matches(event) {
                continue;
            }
            let mut lag = reg.lag.lock();
            if lag.lagging {
                lag.skipped_upto = event.revision;
                reg.stats.overflowed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = reg.buffer.try_send(event.clone()) {
                lag.lagging = true;
                lag.skipped_upto = event.revision;
                reg.stats.overflowed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// After a gap in the dispatcher's own reading, everyone must catch up from the log.
    fn lag_everyone(&self, upto: u64) {
        for reg in self.subs.read().values() {
            let mut lag = reg.lag.lock();
            lag.lagging = true;
            lag.skipped_upto = lag.skipped_upto.max(upto);
        }
    }
}

/// The dispatcher: reads the log live, forever (it holds the tree weakly).
pub(crate) async fn dispatch_loop(tree: std::sync::Weak<Tree>, mut cursor: EventCursor) {
    let mut scratch = Vec::new();
    while let Some(delivery) = cursor.next().await {
        let Some(tree) = tree.upgrade() else { return };
        match delivery {
            Delivery::Event(e) => tree.fanout().dispatch(&e, &mut scratch),
            Delivery::Gap { to, .. } => tree.fanout().lag_everyone(to),
        }
    }
}

/// A subscriber's end: yields matching events the subscriber may read, in
/// revision order, from `since` on. Dropping it unsubscribes.
pub struct Feed {
    id: u64,
    tree: Arc<Tree>,
    principal: Principal,
    reg: Arc<Registered>,
    rx: mpsc::Receiver<Arc<Event>>,
    /// Set while catching up from the log.
    catchup: Option<EventCursor>,
    /// The last revision handed out (or skipped as not readable).
    last: u64,
    sampler: Option<Sampler>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.tree.fanout().unregister(self.id);
    }
}

struct Sampler {
    tick: tokio::time::Interval,
    latest: BTreeMap<Uri, Arc<Event>>,
    ready: std::collections::VecDeque<Arc<Event>>,
}

impl Tree {
    /// Subscribes `principal` to events matching `filter` after revision `since`.
    /// `capacity` bounds the live buffer; past it the feed catches up from the log.
    pub fn subscribe(self: &Arc<Self>, principal: Principal, filter: Filter, since: u64, capacity: usize) -> Feed {
        let sampler = filter.sample.map(|every| {
            // The first sample comes one interval after subscribing, not at once.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Sampler { tick, latest: BTreeMap::new(), ready: Default::default() }
        });
        let (id, rx, reg) = self.fanout().register(filter, capacity);
        // Replay from the log first whenever the subscriber asks for history.
        let head = self.events().head();
        // A position from the future means "from now".
        let since = since.min(head);
        if since < head {
            let mut lag = reg.lag.lock();
            lag.lagging = true;
            lag.skipped_upto = head;
        }
        Feed { id, tree: self.clone(), principal, reg, rx, catchup: None, last: since, sampler }
    }

    /// How many subscriptions the dispatcher currently feeds.
    pub fn subscription_count(&self) -> usize {
        self.fanout().len()
    }
}

impl Feed {
    pub fn stats(&self) -> &Arc<FeedStats> {
        &self.reg.stats
    }

    pub fn filter(&self) -> &Filter {
        &self.reg.filter
    }

    /// Events waiting in the live buffer.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    /// The next delivery; `None` when the tree shuts down.
    pub async fn next(&mut self) -> Option<Delivery> {
        if self.sampler.is_none() {
            return self.next_unsampled().await;
        }
        loop {
            let sampler = self.sampler.as_mut()?;
            if let Some(e) = sampler.ready.pop_front() {
                // A sample leaves later than its event: judge it again now.
                if self.tree.may_read(&self.principal, &e) {
                    return Some(Delivery::Event(e));
                }
                continue;
            }
            tokio::select! {
                _ = sampler.tick.tick() => {
                    let latest = std::mem::take(&mut sampler.latest);
                    let mut batch: Vec<_> = latest.into_values().collect();
                    batch.sort_by_key(|e| e.revision);
                    sampler.ready.extend(batch);
                }
                next = Self::raw_next(&self.tree, &self.principal, &self.reg, &mut self.rx, &mut self.catchup, &mut self.last) => {
                    match next? {
                        Delivery::Event(e) => {
                            if let Some(s) = self.sampler.as_mut() {
                                s.latest.insert(e.uri.clone(), e);
                            }
                        }
                        gap => return Some(gap),
                    }
                }
            }
        }
    }

    async fn next_unsampled(&mut self) -> Option<Delivery> {
        Self::raw_next(&self.tree, &self.principal, &self.reg, &mut self.rx, &mut self.catchup, &mut self.last).await
    }

    async fn raw_next(
        tree: &Arc<Tree>,
        principal: &Principal,
        reg: &Registered,
        rx: &mut mpsc::Receiver<Arc<Event>>,
        catchup: &mut Option<EventCursor>,
        last: &mut u64,
    ) -> Option<Delivery> {
        loop {
            let delivery = match catchup {
                Some(cursor) => {
                    {
                        let mut lag = reg.lag.lock();
                        if cursor.position() > lag.skipped_upto {
                            // Everything skipped has been read back: rejoin the live buffer.
                            lag.lagging = false;
                            *catchup = None;
                            continue;
                        }
                    }
                    match cursor.next().await? {
                        Delivery::Event(e) if !reg.filter.matches(&e) => continue,
                        other => other,
                    }
                }
                None => match rx.try_recv() {
                    Ok(e) => Delivery::Event(e),
                    Err(mpsc::error::TryRecvError::Empty) if reg.lag.lock().lagging => {
                        reg.stats.catchups.fetch_add(1, Ordering::Relaxed);
                        *catchup = Some(tree.events().cursor(*last));
                        continue;
                    }
                    Err(_) => Delivery::Event(rx.recv().await?),
                },
            };
            match delivery {
                // Live and catch-up can overlap; never hand out a revision twice.
                Delivery::Event(e) if e.revision <= *last => continue,
                Delivery::Event(e) => {
                    *last = e.revision;
                    // Authorised now, at delivery, not when the event happened.
                    if !tree.may_read(principal, &e) {
                        continue;
                    }
                    reg.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    reg.stats.last_revision.store(e.revision, Ordering::Relaxed);
                    return Some(Delivery::Event(e));
                }
                Delivery::Gap { from, to } => {
                    *last = (*last).max(to);
                    return Some(Delivery::Gap { from, to });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri::UriLimits;

    fn pat(s: &str) -> UriPattern {
        UriPattern::parse(s, &UriLimits::default()).unwrap()
    }

    fn uri(s: &str) -> Uri {
        Uri::parse(s, &UriLimits::default()).unwrap()
    }

    #[test]
    fn index_finds_exactly_the_matching_patterns() {
        let mut index = PatternIndex::default();
        let patterns = ["./a/**", "./a/b", "./a/*", "./a/*/c", "./**", "./x/**", "./a/b/c"];
        for (i, p) in patterns.iter().enumerate() {
            index.insert(&pat(p), i as u64);
        }
        for probe in [".", "./a", "./a/b", "./a/b/c", "./a/z/c", "./x", "./y/z"] {
            let mut got = Vec::new();
            index.matches(&uri(probe), &mut got);
            got.sort();
            got.dedup();
            let want: Vec<u64> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| pat(p).matches(&uri(probe)))
                .map(|(i, _)| i as u64)
                .collect();
            assert_eq!(got, want, "{probe}");
        }
        index.remove(&pat("./a/**"), 0);
        let mut got = Vec::new();
        index.matches(&uri("./a/q"), &mut got);
        assert_eq!(got, vec![4, 2]);
    }
}
