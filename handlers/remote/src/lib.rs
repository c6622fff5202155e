//! Federation: another dmtree's subtree mounted into this tree.
//!
//! [`RemoteHandler`] forwards every operation under the mount over REST
//! (pooled, with timeouts, behind a circuit breaker), joins the tree's
//! transactions through remote atomic sessions, and bridges the remote's
//! events into the local log with their URIs rewritten. Every request carries
//! the `Dmtree-Via` path it came by, so that a loop is refused, not followed.

mod breaker;
mod bridge;
mod cache;
mod link;
mod remote;
mod spec;
pub mod sse;

pub use link::{Local, encode};
pub use remote::RemoteHandler;
pub use spec::{Credentials, RemoteSpec, SpecError};
