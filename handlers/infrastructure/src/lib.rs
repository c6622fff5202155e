//! Infrastructure monitoring (docs/design.md, §6): a data handler that polls a
//! supplier (the local host, a Prometheus exporter, a cloud's REST API),
//! keeps the last snapshot, reports only the values that changed, and polls
//! only while someone reads or subscribes.

pub mod exposition;
mod handler;
mod poller;
pub mod spec;
pub mod supplier;

pub use handler::InfraHandler;
pub use spec::{InfraSpec, SupplierKind};
