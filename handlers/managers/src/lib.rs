//! The coordination layer: a cloud of managers.
//!
//! Every member is a dmtree server with the manager role on. Members join a
//! registry (PostgreSQL, or SQLite for a one-member cloud), renew a lease
//! measured in registry time, and run an election round each heartbeat: the
//! live member with the lowest birth coordinates, and each change of
//! coordinator bumps the term in the same transaction. The coordinator
//! places Manage Me requests (from a durable RabbitMQ queue only it
//! consumes) and reassigns the resources of dead members; each member holds
//! the meta-objects of its resources, fed by their agents' heartbeats.
//! Everything is served under `./managers` by [`ManagersHandler`].

pub mod bus;
pub mod cloud;
pub mod config;
mod coordinator;
pub mod handler;
mod held;
mod holder;
mod host;
pub mod monitoring;
pub mod registry;
mod rpc;

pub use cloud::{Cloud, Role};
pub use config::{ConfigError, ManagersConfig, Settings};
pub use handler::ManagersHandler;
pub use holder::OpError;
