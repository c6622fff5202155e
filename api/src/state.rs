//! What every request handler shares.

use dmtree_core::Tree;
use std::sync::Arc;

use crate::auth::Tokens;
use crate::config::ServerConfig;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub tree: Arc<Tree>,
    pub tokens: Arc<Tokens>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ServerConfig>,
    /// Flips to `true` when the server shuts down; long-lived streams end.
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}
