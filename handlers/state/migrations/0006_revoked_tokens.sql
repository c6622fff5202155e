-- Tokens revoked through ./system/tokens: honoured even when the same token
-- is still listed in the configuration file.
CREATE TABLE revoked_tokens (
    hash       TEXT PRIMARY KEY,
    revoked_ms INTEGER NOT NULL
);
