-- Mounts made through the API now hold any handler (remote, infrastructure,
-- broker), and handlers keep the configuration written through their
-- `config` subtree (which wins over the file's at start-up).
ALTER TABLE remote_mounts RENAME TO mounts;

CREATE TABLE handler_configs (
    mount_id   TEXT PRIMARY KEY,
    config     TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
