//! Bearer tokens map to principals. Only SHA-256 hashes of tokens are stored
//! (tokens are 256-bit random, so a fast hash is enough) and no token is ever logged.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dmtree_core::{ADMIN, Principal};
use dmtree_state::{SqliteState, TokenRecord};
use parking_lot::RwLock;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh token: 32 random bytes, URL-safe base64, with a recognisable prefix.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("dmt_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Where a token was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `[[auth.tokens]]` in the configuration file.
    Config,
    /// The state database (the first-start admin token).
    Database,
}

#[derive(Debug, Clone)]
struct TokenEntry {
    principal: Principal,
    label: Option<String>,
    source: TokenSource,
}

/// Principals by token digest (binary, so a lookup does not hex-encode).
/// Revocation takes effect at once, and for good (see `./system/tokens`).
pub struct Tokens {
    by_hash: RwLock<HashMap<[u8; 32], TokenEntry>>,
    state: SqliteState,
}

/// A token's public name under `./system/tokens`: a prefix of its digest.
fn token_id(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..8])
}

/// The id of a token given as itself (`dmt_…`), or an id given as is.
pub fn token_ref(token_or_id: &str) -> String {
    if token_or_id.len() == 16 && token_or_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        token_or_id.to_ascii_lowercase()
    } else {
        token_id(&<[u8; 32]>::from(Sha256::digest(token_or_id.as_bytes())))
    }
}

impl Tokens {
    pub fn principal(&self, token: &str) -> Option<Principal> {
        let digest = <[u8; 32]>::from(Sha256::digest(token.as_bytes()));
        self.by_hash.read().get(&digest).map(|e| e.principal.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.read().is_empty()
    }

    fn insert(&self, hash: &str, principal: &str, label: Option<String>, source: TokenSource) -> anyhow::Result<()> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hash, &mut digest)
            .map_err(|e| anyhow::anyhow!("token hash for {principal} is not 64 hex digits: {e}"))?;
        self.by_hash.write().insert(digest, TokenEntry { principal: Principal::named(principal), label, source });
        Ok(())
    }

    /// The ids of every token in force, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.by_hash.read().keys().map(token_id).collect();
        ids.sort();
        ids
    }

    /// What `./system/tokens/<id>` shows: never the token or its full digest.
    pub fn describe(&self, id: &str) -> Option<serde_json::Value> {
        let tokens = self.by_hash.read();
        let (_, e) = tokens.iter().find(|(d, _)| token_id(d) == id)?;
        let source = match e.source {
            TokenSource::Config => "config",
            TokenSource::Database => "database",
        };
        Some(
            serde_json::json!({ "principal": e.principal.to_string(), "label": e.label.clone().unwrap_or_default(), "source": source }),
        )
    }

    /// Revokes the token with this id: refused from now on, also after restarts.
    pub async fn revoke(&self, id: &str) -> anyhow::Result<bool> {
        let Some(digest) = self.by_hash.read().keys().find(|d| token_id(d) == id).copied() else { return Ok(false) };
        self.state.revoke_token(&hex::encode(digest), chrono::Utc::now().timestamp_millis()).await?;
        self.by_hash.write().remove(&digest);
        tracing::warn!(token = id, "token revoked");
        Ok(true)
    }
}

/// Loads tokens from the database and the configuration, leaving out revoked
/// ones. Once an `admin` token is configured, the first-start one is retired.
/// With none at all, creates an admin token and writes it to
/// `<data>/admin.token` (mode 0600).
pub async fn bootstrap(state: &SqliteState, config: &AuthConfig, data_dir: &Path) -> anyhow::Result<Tokens> {
    let tokens = Tokens { by_hash: RwLock::default(), state: state.clone() };
    let revoked: HashSet<String> = state.revoked_tokens().await?.into_iter().collect();
    for t in config.tokens.iter().filter(|t| !revoked.contains(&t.sha256.to_ascii_lowercase())) {
        tokens.insert(&t.sha256, &t.principal, None, TokenSource::Config)?;
    }
    let admin_configured = config.tokens.iter().any(|t| t.principal == ADMIN);
    if admin_configured && state.remove_tokens_labelled(BOOTSTRAP).await? > 0 {
        let _ = std::fs::remove_file(data_dir.join("admin.token"));
        tracing::warn!("an admin token is configured: the first-start admin token is retired and no longer works");
    }
    for t in state.tokens().await?.into_iter().filter(|t| !revoked.contains(&t.hash)) {
        tokens.insert(&t.hash, &t.principal, t.label, TokenSource::Database)?;
    }
    if config.tokens.is_empty() && tokens.is_empty() {
        let token = generate_token();
        let record = TokenRecord { hash: hash_token(&token), principal: ADMIN.into(), label: Some(BOOTSTRAP.into()) };
        let path = write_token_file(data_dir, &token)?;
        state.add_token(&record, chrono::Utc::now().timestamp_millis()).await?;
        tokens.insert(&record.hash, &record.principal, record.label, TokenSource::Database)?;
        tracing::warn!(path = %path.display(), "no tokens were configured: created an admin token, readable by its owner only");
    }
    Ok(tokens)
}

const BOOTSTRAP: &str = "bootstrap";

fn write_token_file(data_dir: &Path, token: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join("admin.token");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    // An older file with looser permissions keeps them on open; tighten explicitly.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    writeln!(file, "{token}")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmtree_state::Durability;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn first_start_writes_a_private_admin_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(&dir.path().join("s.db"), Durability::Fsync).await.unwrap();
        let tokens = bootstrap(&state, &AuthConfig::default(), dir.path()).await.unwrap();
        let path = dir.path().join("admin.token");
        let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(tokens.principal(&token), Some(Principal::named("admin")));
        assert_eq!(tokens.principal("dmt_wrong"), None);
        let again = bootstrap(&state, &AuthConfig::default(), dir.path()).await.unwrap();
        assert_eq!(again.ids().len(), 1, "no second admin token");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token, "not rewritten");
    }

    /// A leaked first-start token stops working once tokens are configured,
    /// and any token can be revoked for good, even one still in the file.
    #[tokio::test]
    async fn bootstrap_tokens_retire_and_revoked_tokens_stay_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(&dir.path().join("s.db"), Durability::Fsync).await.unwrap();
        bootstrap(&state, &AuthConfig::default(), dir.path()).await.unwrap();
        let first = std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim().to_owned();
        let ops = generate_token();
        let token = |principal: &str, token: &str| crate::config::TokenConfig {
            principal: principal.into(),
            sha256: hash_token(token),
        };
        let others_only = AuthConfig { tokens: vec![token("ops", &ops)] };
        let tokens = bootstrap(&state, &others_only, dir.path()).await.unwrap();
        assert_eq!(tokens.principal(&first), Some(Principal::named("admin")), "kept while no admin is configured");
        let admin = generate_token();
        let configured = AuthConfig { tokens: vec![token("ops", &ops), token("admin", &admin)] };
        let tokens = bootstrap(&state, &configured, dir.path()).await.unwrap();
        assert_eq!(tokens.principal(&first), None, "the first-start token is retired");
        assert!(!dir.path().join("admin.token").exists());
        assert_eq!(tokens.principal(&ops), Some(Principal::named("ops")));
        let id = token_ref(&ops);
        assert_eq!(tokens.describe(&id).unwrap()["source"], "config");
        assert!(tokens.revoke(&id).await.unwrap());
        assert_eq!(tokens.principal(&ops), None, "revoked at once");
        let restarted = bootstrap(&state, &configured, dir.path()).await.unwrap();
        assert_eq!(restarted.principal(&ops), None, "and after a restart, though still configured");
        assert_eq!(restarted.ids(), [token_ref(&admin)]);
    }
}
