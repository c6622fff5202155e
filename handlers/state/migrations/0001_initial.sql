-- Nodes of the config store, keyed by their NUL-joined path (a BLOB, so
-- comparisons are bytewise and a subtree is one key range).
CREATE TABLE nodes (
    path        BLOB PRIMARY KEY,
    format      TEXT,             -- NULL for interior nodes
    value       TEXT,             -- the value's JSON form
    title       TEXT,
    mime        TEXT,
    version     INTEGER NOT NULL,
    modified_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- The tree's event journal.
CREATE TABLE events (
    revision INTEGER PRIMARY KEY,
    body     TEXT NOT NULL
);

-- ACLs set on nodes, in canonical text form.
CREATE TABLE acls (
    uri BLOB PRIMARY KEY,
    acl TEXT NOT NULL
) WITHOUT ROWID;

-- Bearer tokens, by SHA-256 hash only.
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    principal  TEXT NOT NULL,
    label      TEXT,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
