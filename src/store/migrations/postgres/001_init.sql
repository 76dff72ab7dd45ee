-- creditgate schema v1 (PostgreSQL). Amounts are BIGINT micro-credits;
-- times are BIGINT microseconds since the Unix epoch (UTC). Identifiers use
-- the "C" collation: byte order, as on SQLite, whatever the database's locale.

CREATE TABLE IF NOT EXISTS creditgate_accounts (
    user_id          TEXT COLLATE "C" PRIMARY KEY,
    balance          BIGINT NOT NULL DEFAULT 0,
    last_seq         BIGINT NOT NULL DEFAULT 0,
    first_key_issued BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS creditgate_entries (
    id              UUID PRIMARY KEY,
    user_id         TEXT COLLATE "C" NOT NULL REFERENCES creditgate_accounts(user_id),
    seq             BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    balance_after   BIGINT NOT NULL,
    idempotency_key TEXT COLLATE "C",
    -- payment:/reversal: keys are unique across users.
    global_key      TEXT COLLATE "C" UNIQUE,
    reference       TEXT COLLATE "C",
    api_key_id      UUID,
    input_tokens    BIGINT,
    output_tokens   BIGINT,
    model           TEXT COLLATE "C",
    amount_minor    BIGINT,
    currency        TEXT,
    metadata        TEXT,
    created_at      BIGINT NOT NULL,
    UNIQUE (user_id, seq),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS creditgate_entries_reference ON creditgate_entries(reference, kind);
CREATE INDEX IF NOT EXISTS creditgate_entries_kind ON creditgate_entries(kind, user_id);

CREATE TABLE IF NOT EXISTS creditgate_api_keys (
    id           UUID PRIMARY KEY,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES creditgate_accounts(user_id),
    name         TEXT,
    prefix       TEXT,
    key_hash     TEXT COLLATE "C" NOT NULL UNIQUE,
    -- 'peppered' (our hash of the secret) or 'sha256' (imported by hash)
    hash_kind    TEXT NOT NULL,
    legacy       BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX IF NOT EXISTS creditgate_api_keys_user ON creditgate_api_keys(user_id, created_at);

CREATE TABLE IF NOT EXISTS creditgate_holds (
    id          UUID PRIMARY KEY,
    user_id     TEXT COLLATE "C" NOT NULL REFERENCES creditgate_accounts(user_id),
    api_key_id  UUID NOT NULL,
    amount      BIGINT NOT NULL,
    model       TEXT COLLATE "C",
    request_id  TEXT COLLATE "C",
    -- 'active', 'settled', 'released', 'expired'
    status      TEXT NOT NULL,
    entry_id    UUID,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    UNIQUE (user_id, request_id)
);
CREATE INDEX IF NOT EXISTS creditgate_holds_active ON creditgate_holds(user_id, status, expires_at);

CREATE TABLE IF NOT EXISTS creditgate_model_prices (
    model         TEXT COLLATE "C" PRIMARY KEY,
    input_per_1k  BIGINT NOT NULL,
    output_per_1k BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- One row per user and UTC day: spam cannot grow the database.
CREATE TABLE IF NOT EXISTS creditgate_key_attempts (
    user_id   TEXT COLLATE "C" NOT NULL,
    day       BIGINT NOT NULL,
    attempts  BIGINT NOT NULL,
    successes BIGINT NOT NULL,
    PRIMARY KEY (user_id, day)
);
