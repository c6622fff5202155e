-- Federation: remote mounts made through the API (config-file mounts are not
-- stored), the grants this tree gives other trees, and where each mount's
-- event bridge stopped (by mount id, valid only for the same remote).
CREATE TABLE remote_mounts (
    id         TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE federation_grants (
    id         TEXT PRIMARY KEY,
    grant_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE bridge_positions (
    mount_id   TEXT PRIMARY KEY,
    remote     TEXT NOT NULL,
    position   INTEGER NOT NULL
) WITHOUT ROWID;
