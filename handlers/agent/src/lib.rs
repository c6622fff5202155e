//! A resource agent for dmtree's manager cloud.
//!
//! A process embeds an [`Agent`] with a [`Resource`] (its properties and
//! actions); the agent asks the coordinator to be managed, heartbeats its
//! manager, runs the commands it is sent and applies the protocol's fencing
//! on its side. `dmtree agent` wraps a process that has no agent of its own.

pub mod agent;
pub mod fence;
pub mod once;
pub mod protocol;
pub mod wrap;

pub use agent::{Agent, AgentConfig, AgentError, AgentStats, Exit, Resource};
pub use protocol::{FailurePolicy, Health};
