-- One dialect for SQLite and PostgreSQL (through sqlx's Any driver):
-- TEXT, BIGINT and DOUBLE PRECISION only; times are Unix milliseconds.

CREATE TABLE cs_events (
    id      TEXT PRIMARY KEY,
    ts      BIGINT NOT NULL,
    sender  TEXT NOT NULL,
    type    TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX cs_events_type_ts ON cs_events (type, ts, id);

-- Every type ever stored, so a query for an unknown type is an error, not an empty answer.
CREATE TABLE cs_types (
    type TEXT PRIMARY KEY
);

-- Windowed aggregates, updated in the same transaction as the events they count.
CREATE TABLE cs_aggregates (
    handler      TEXT NOT NULL,
    key          TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    sum          DOUBLE PRECISION NOT NULL,
    min          DOUBLE PRECISION NOT NULL,
    max          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (handler, key, window_start)
);

-- Per-handler progress (watermarks), as JSON.
CREATE TABLE cs_handler_state (
    handler TEXT PRIMARY KEY,
    state   TEXT NOT NULL
);

-- Threshold/SLA state per key: since when the condition holds, and whether a violation was raised.
CREATE TABLE cs_sla (
    handler      TEXT NOT NULL,
    key          TEXT NOT NULL,
    breach_since BIGINT,
    violating    BIGINT NOT NULL,
    last_value   DOUBLE PRECISION,
    PRIMARY KEY (handler, key)
);

-- The last tree revision ingested per tree subscription (committed with the events).
CREATE TABLE cs_positions (
    name     TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);

-- Events waiting to be forwarded to another ContextStore.
CREATE TABLE cs_outbox (
    target   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts       BIGINT NOT NULL,
    PRIMARY KEY (target, event_id)
);

-- Configuration set through the tree (subscriptions, handlers, retention, propagation).
CREATE TABLE cs_config (
    section TEXT NOT NULL,
    name    TEXT NOT NULL,
    body    TEXT NOT NULL,
    PRIMARY KEY (section, name)
);
