//! RabbitMQ broker management (docs/design.md, §6) through the management
//! HTTP API: observed state under `monitoring`, desired state under
//! `config`, a reconciler between them, and per-link failure policies.

mod apply;
mod handler;
pub mod mgmt;
mod observe;
mod reconcile;
pub mod spec;

pub use handler::BrokerHandler;
pub use spec::{BrokerSpec, FailurePolicy};
