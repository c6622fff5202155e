//! What every request handler shares.

use std::ops::Deref;
use std::sync::Arc;

use dmtree_core::Tree;

use crate::auth::Tokens;
use crate::config::ServerConfig;
use crate::metrics::Metrics;

pub struct App {
    pub tree: Arc<Tree>,
    pub tokens: Arc<Tokens>,
    pub metrics: Arc<Metrics>,
    pub config: ServerConfig,
    pub push: Arc<dmtree_push::Push>,
    pub federation: Arc<crate::federation::Federation>,
    /// The state database, for its group-commit figures.
    pub state: dmtree_state::SqliteState,
    /// Flips to `true` when the server shuts down; long-lived streams end.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Open event streams per principal.
    pub streams: Arc<crate::listener::StreamCounts>,
}

/// Cheap to clone: extractors clone it on every request.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    pub fn new(app: App) -> Self {
        AppState(Arc::new(app))
    }
}

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
