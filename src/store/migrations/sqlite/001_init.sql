-- creditgate schema v1. Amounts are integer micro-credits; times are integer
-- microseconds since the Unix epoch (UTC).

CREATE TABLE IF NOT EXISTS creditgate_accounts (
    user_id          TEXT PRIMARY KEY,
    balance          INTEGER NOT NULL DEFAULT 0,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    first_key_issued INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS creditgate_entries (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES creditgate_accounts(user_id),
    seq             INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    balance_after   INTEGER NOT NULL,
    idempotency_key TEXT,
    -- payment:/reversal: keys are unique across users.
    global_key      TEXT UNIQUE,
    reference       TEXT,
    api_key_id      TEXT,
    input_tokens    INTEGER,
    output_tokens   INTEGER,
    model           TEXT,
    amount_minor    INTEGER,
    currency        TEXT,
    metadata        TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (user_id, seq),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS creditgate_entries_reference ON creditgate_entries(reference, kind);
CREATE INDEX IF NOT EXISTS creditgate_entries_kind ON creditgate_entries(kind, user_id);

CREATE TABLE IF NOT EXISTS creditgate_api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES creditgate_accounts(user_id),
    name         TEXT,
    prefix       TEXT,
    key_hash     TEXT NOT NULL UNIQUE,
    -- 'peppered' (our hash of the secret) or 'sha256' (imported by hash)
    hash_kind    TEXT NOT NULL,
    legacy       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX IF NOT EXISTS creditgate_api_keys_user ON creditgate_api_keys(user_id, created_at);

CREATE TABLE IF NOT EXISTS creditgate_holds (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES creditgate_accounts(user_id),
    api_key_id  TEXT NOT NULL,
    amount      INTEGER NOT NULL,
    model       TEXT,
    request_id  TEXT,
    -- 'active', 'settled', 'released', 'expired'
    status      TEXT NOT NULL,
    entry_id    TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    UNIQUE (user_id, request_id)
);
CREATE INDEX IF NOT EXISTS creditgate_holds_active ON creditgate_holds(user_id, status, expires_at);

CREATE TABLE IF NOT EXISTS creditgate_model_prices (
    model         TEXT PRIMARY KEY,
    input_per_1k  INTEGER NOT NULL,
    output_per_1k INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- One row per user and UTC day: spam cannot grow the database.
CREATE TABLE IF NOT EXISTS creditgate_key_attempts (
    user_id   TEXT NOT NULL,
    day       INTEGER NOT NULL,
    attempts  INTEGER NOT NULL,
    successes INTEGER NOT NULL,
    PRIMARY KEY (user_id, day)
);
