//! Bearer tokens map to principals. Only SHA-256 hashes of tokens are stored
//! (tokens are 256-bit random, so a fast hash is enough) and no token is ever logged.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dmtree_config_store::{SqliteState, TokenRecord};
use dmtree_core::Principal;
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

/// Principals by token digest (binary, so a lookup does not hex-encode).
#[derive(Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Principal>,
}

impl Tokens {
    pub fn principal(&self, token: &str) -> Option<&Principal> {
        self.by_hash.get(&<[u8; 32]>::from(Sha256::digest(token.as_bytes())))
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    fn insert(&mut self, hash: &str, principal: &str) -> anyhow::Result<()> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hash, &mut digest)
            .map_err(|e| anyhow::anyhow!("token hash for {principal} is not 64 hex digits: {e}"))?;
        self.by_hash.insert(digest, Principal::named(principal));
        Ok(())
    }
}

/// Loads tokens from the database and the configuration. With none at all,
/// creates an admin token and writes it to `<data>/admin.token` (mode 0600).
pub async fn bootstrap(state: &SqliteState, config: &AuthConfig, data_dir: &Path) -> anyhow::Result<Tokens> {
    let mut tokens = Tokens::default();
    for t in &config.tokens {
        tokens.insert(&t.sha256, &t.principal)?;
    }
    for t in state.tokens().await? {
        tokens.insert(&t.hash, &t.principal)?;
    }
    if tokens.is_empty() {
        let token = generate_token();
        let record =
            TokenRecord { hash: hash_token(&token), principal: "admin".into(), label: Some("bootstrap".into()) };
        let path = write_token_file(data_dir, &token)?;
        state.add_token(&record, chrono::Utc::now().timestamp_millis()).await?;
        tokens.insert(&record.hash, &record.principal)?;
        tracing::warn!(path = %path.display(), "no tokens were configured: created an admin token, readable by its owner only");
    }
    Ok(tokens)
}

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
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn first_start_writes_a_private_admin_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(&dir.path().join("s.db")).await.unwrap();
        let tokens = bootstrap(&state, &AuthConfig::default(), dir.path()).await.unwrap();
        let path = dir.path().join("admin.token");
        let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(tokens.principal(&token), Some(&Principal::named("admin")));
        assert_eq!(tokens.principal("dmt_wrong"), None);
        let again = bootstrap(&state, &AuthConfig::default(), dir.path()).await.unwrap();
        assert_eq!(again.by_hash.len(), 1, "no second admin token");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token, "not rewritten");
    }
}
