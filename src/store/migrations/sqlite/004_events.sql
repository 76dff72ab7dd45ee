-- creditgate schema v4: the transactional outbox. An event row is written in
-- the same transaction as the change it describes. SQLite has one writer at
-- a time, so ids (AUTOINCREMENT: never reused) are handed out in commit order.
CREATE TABLE IF NOT EXISTS creditgate_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    user_id TEXT NOT NULL,
    api_key_id TEXT,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
