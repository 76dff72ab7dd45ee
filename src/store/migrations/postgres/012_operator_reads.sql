-- creditgate schema v12: the operator's reads (issue 22's dashboard).
-- recent_events filters the outbox by account or by kind, newest first.
-- (A ledger-wide range of created_at already has creditgate_entries_time, 009.)
CREATE INDEX IF NOT EXISTS creditgate_events_user ON creditgate_events(user_id, id);
CREATE INDEX IF NOT EXISTS creditgate_events_kind ON creditgate_events(kind, id);
-- The report's outstanding holds: the active ones, whatever their account.
CREATE INDEX IF NOT EXISTS creditgate_holds_open ON creditgate_holds(expires_at) WHERE status = 'active';
