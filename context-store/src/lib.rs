//! The ContextStore (docs/design.md, §5): the one place
//! that keeps selected events, as ContextEvents, preprocessed for billing and
//! SLA management.
//!
//! - It registers with the tree ([`feed`]) and takes batches over REST
//!   (`exec ./contextstore/ingest`); [`ingest`] commits each batch in one
//!   transaction together with everything derived from it.
//! - Context handlers ([`processor`]): windowed aggregation, threshold/SLA
//!   detection, filter/project; their state lives in the same database.
//! - [`retention`] collects garbage per type; [`propagate`] forwards chosen
//!   types to another store; [`query`] pages through events.
//! - [`handler`] mounts it all into the tree.
//!
//! Storage is SQLite by default or PostgreSQL ([`db`]), with one SQL dialect.

pub mod access;
pub mod config;
pub mod db;
pub mod event;
pub mod feed;
pub mod handler;
pub mod history;
pub mod ingest;
pub mod processor;
pub mod propagate;
pub mod query;
pub mod retention;
pub mod store;

pub use config::Config;
pub use event::ContextEvent;
pub use handler::ContextStoreHandler;
pub use store::{ContextStore, Settings, StoreError};

#[cfg(test)]
mod tests;
