-- A leaf's history is read by time range across types.
CREATE INDEX IF NOT EXISTS cs_events_ts ON cs_events (ts);
