-- Events of transactions whose changes committed but which are not yet in
-- the journal: written in the same SQLite transaction as the changes, and
-- journaled at the next start if the process died in between.
CREATE TABLE pending_events (
    tx   INTEGER NOT NULL,
    seq  INTEGER NOT NULL,
    body TEXT    NOT NULL,
    PRIMARY KEY (tx, seq)
);
