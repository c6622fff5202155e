-- Push subscriptions: what was asked (JSON), and the last revision the
-- transport confirmed, to resume from after a restart.
CREATE TABLE subscriptions (
    id         TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    position   INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
