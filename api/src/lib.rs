//! dmtree's server side: the REST API over the tree, authentication,
//! metrics, the self-describing subtrees, and the command-line client.

pub mod agent_cli;
pub mod auth;
pub mod client;
pub mod config;
pub mod context_cli;
pub mod context_xmpp;
pub mod error;
pub mod extract;
pub mod federation;
pub mod json;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod provision;
pub mod rest;
pub mod rules_cli;
pub mod server;
pub mod state;
pub mod system;
