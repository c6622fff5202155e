-- The rule layer. Versions start at 1001: these tables may share the manager
-- cloud's registry, whose own migrations count from 1.
CREATE TABLE IF NOT EXISTS dmtree_rules (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    spec       TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);

-- Counters per (rule, binding); a binding with default counters has no row.
CREATE TABLE IF NOT EXISTS dmtree_rule_state (
    rule          TEXT NOT NULL,
    binding       TEXT NOT NULL,
    consecutive   BIGINT NOT NULL,
    armed         BIGINT NOT NULL,
    last_fired_ms BIGINT,
    last_epoch    BIGINT NOT NULL,
    PRIMARY KEY (rule, binding)
);

-- One row per firing: the key is the action id, so an epoch fires a binding once.
CREATE TABLE IF NOT EXISTS dmtree_rule_firings (
    rule    TEXT NOT NULL,
    binding TEXT NOT NULL,
    epoch   BIGINT NOT NULL,
    member  TEXT NOT NULL,
    status  TEXT NOT NULL,
    at_ms   BIGINT NOT NULL,
    -- The actions as planned, so that a redo repeats exactly them.
    actions TEXT NOT NULL,
    detail  TEXT,
    PRIMARY KEY (rule, binding, epoch)
);
CREATE INDEX IF NOT EXISTS dmtree_rule_firings_status ON dmtree_rule_firings (status);
