-- Events are now numbered and journaled in the same transaction as their
-- changes, so no event waits outside the journal any more.
DROP TABLE pending_events;
