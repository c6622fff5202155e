-- The manager cloud's registry. Times are registry milliseconds (the
-- database's clock), never a manager's.
CREATE TABLE IF NOT EXISTS dmtree_cloud_seq (n INTEGER NOT NULL);
INSERT INTO dmtree_cloud_seq (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM dmtree_cloud_seq);

CREATE TABLE IF NOT EXISTS dmtree_members (
    id          TEXT PRIMARY KEY,
    birth       BIGINT NOT NULL,
    instance    BIGINT NOT NULL,
    endpoint    TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    capacity    BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS dmtree_coordinator (
    singleton INT PRIMARY KEY CHECK (singleton = 1),
    id        TEXT,
    birth     BIGINT,
    instance  BIGINT,
    term      BIGINT NOT NULL,
    since     BIGINT NOT NULL
);
INSERT INTO dmtree_coordinator (singleton, term, since) VALUES (1, 0, 0) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS dmtree_resources (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    owner            TEXT NOT NULL,
    manager          TEXT,
    manager_instance BIGINT,
    status           TEXT NOT NULL,
    endpoint         TEXT NOT NULL,
    instance         BIGINT NOT NULL,
    nonce            TEXT NOT NULL,
    reply_to         TEXT NOT NULL,
    term             BIGINT NOT NULL,
    policy           TEXT NOT NULL,
    pinned           BIGINT NOT NULL,
    updated          BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS dmtree_resources_manager ON dmtree_resources (manager);
