-- creditgate schema v4: the transactional outbox. An event row is written in
-- the same transaction as the change it describes. Ids come from a sequence,
-- so they are unique but not in commit order; `txid` (the writing
-- transaction) lets readers return events in a safe order: only events of
-- transactions older than every running one, ordered by (txid, id).
CREATE TABLE IF NOT EXISTS creditgate_events (
    id BIGSERIAL PRIMARY KEY,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind TEXT NOT NULL,
    user_id TEXT NOT NULL,
    api_key_id UUID,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS creditgate_events_order ON creditgate_events (txid, id);
