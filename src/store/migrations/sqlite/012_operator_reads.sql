-- creditgate schema v12: the operator's reads (issue 22's dashboard).
-- recent_events filters the outbox by account or by kind, newest first.
CREATE INDEX IF NOT EXISTS creditgate_events_user ON creditgate_events(user_id, id);
CREATE INDEX IF NOT EXISTS creditgate_events_kind ON creditgate_events(kind, id);
-- daily_flows (and usage_summary without an account) read a ledger-wide
-- range of created_at: SQLite had only (user_id, created_at) (009). This
-- index costs every entry insert, the charge path's included: kept on its
-- own so it can be measured and dropped alone.
CREATE INDEX IF NOT EXISTS creditgate_entries_created ON creditgate_entries(created_at);
