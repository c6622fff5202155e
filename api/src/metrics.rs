//! Prometheus metrics. The same counters feed `./system/requests`, so the
//! tree and `/metrics` never disagree.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OTHER"];
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// `[method][class]`, pre-created so the hot path never allocates labels.
    requests: Vec<Vec<Counter>>,
    latency: Vec<Histogram>,
    pub sse_subscribers: Gauge,
    pub revision: Gauge,
    pub sessions_open: Gauge,
    pub journal_failures: Gauge,
    pub commit_batches: Gauge,
    pub committed_writes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dmtree");
        let requests_family = Family::<RequestLabels, Counter>::default();
        let latency_family = Family::<MethodLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register("http_requests", "HTTP requests by method and status class", requests_family.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by method", latency_family.clone());
        let requests = METHODS
            .iter()
            .map(|&method| {
                CLASSES
                    .iter()
                    .map(|&class| requests_family.get_or_create(&RequestLabels { method, class }).clone())
                    .collect()
            })
            .collect();
        let latency =
            METHODS.iter().map(|&method| latency_family.get_or_create(&MethodLabel { method }).clone()).collect();
        let metrics = Self {
            registry,
            requests,
            latency,
            sse_subscribers: Gauge::default(),
            revision: Gauge::default(),
            sessions_open: Gauge::default(),
            journal_failures: Gauge::default(),
            commit_batches: Gauge::default(),
            committed_writes: Gauge::default(),
        };
        let mut m = metrics;
        m.registry.register("sse_subscribers", "Open SSE event streams", m.sse_subscribers.clone());
        m.registry.register("event_revision", "Highest durable event revision", m.revision.clone());
        m.registry.register("sessions_open", "Open DMT sessions", m.sessions_open.clone());
        m.registry.register("event_journal_failures", "Failed event journal appends", m.journal_failures.clone());
        // Their ratio is the writes each fsync carried (group commit).
        m.registry.register("state_commit_batches", "State database commits (batches)", m.commit_batches.clone());
        m.registry.register(
            "state_committed_writes",
            "Units (writes, journal batches, position saves) in those batches",
            m.committed_writes.clone(),
        );
        m
    }
}

fn method_index(method: &http::Method) -> usize {
    METHODS.iter().position(|m| *m == method.as_str()).unwrap_or(METHODS.len() - 1)
}

impl Metrics {
    pub fn observe(&self, method: &http::Method, status: http::StatusCode, elapsed: Duration) {
        let m = method_index(method);
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[m][class].inc();
        self.latency[m].observe(elapsed.as_secs_f64());
    }

    /// Requests so far, by method name.
    pub fn by_method(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        METHODS.iter().zip(&self.requests).map(|(m, classes)| (*m, classes.iter().map(Counter::get).sum()))
    }

    /// Requests so far, by status class.
    pub fn by_class(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CLASSES.iter().enumerate().map(|(i, c)| (*c, self.requests.iter().map(|classes| classes[i].get()).sum()))
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
