-- creditgate schema v9: price versions and the rates on each usage entry.
-- A price takes effect at `effective_at` and stays until the model's next
-- version: a charge uses the version in effect at the call (a settle, at the
-- hold's reserve), and records the rates it was charged at.
CREATE TABLE IF NOT EXISTS creditgate_prices (
    model               TEXT NOT NULL,
    effective_at        BIGINT NOT NULL,
    input_per_1k        BIGINT NOT NULL,
    output_per_1k       BIGINT NOT NULL,
    -- NULL: the input price
    cached_input_per_1k BIGINT,
    cache_write_per_1k  BIGINT,
    request_fee         BIGINT NOT NULL DEFAULT 0,
    set_at              BIGINT NOT NULL,
    PRIMARY KEY (model, effective_at)
);
-- The prices set before versions existed applied to every call: they take
-- effect from the epoch. The old table stays, unread, so a process of the
-- previous schema still running during a roll keeps working (a later
-- release drops it).
INSERT INTO creditgate_prices (model, effective_at, input_per_1k, output_per_1k, set_at)
    SELECT model, 0, input_per_1k, output_per_1k, updated_at FROM creditgate_model_prices;

-- Of input_tokens, those read from and written to the provider's cache, and
-- the rates the entry was charged at (NULL for charges of a given amount).
ALTER TABLE creditgate_entries ADD COLUMN cached_tokens BIGINT;
ALTER TABLE creditgate_entries ADD COLUMN cache_write_tokens BIGINT;
ALTER TABLE creditgate_entries ADD COLUMN input_rate BIGINT;
ALTER TABLE creditgate_entries ADD COLUMN output_rate BIGINT;
ALTER TABLE creditgate_entries ADD COLUMN cached_rate BIGINT;
ALTER TABLE creditgate_entries ADD COLUMN cache_write_rate BIGINT;
ALTER TABLE creditgate_entries ADD COLUMN request_fee BIGINT;

-- The rates a hold of tokens was quoted at: its settlement charges them.
ALTER TABLE creditgate_holds ADD COLUMN input_rate BIGINT;
ALTER TABLE creditgate_holds ADD COLUMN output_rate BIGINT;
ALTER TABLE creditgate_holds ADD COLUMN cached_rate BIGINT;
ALTER TABLE creditgate_holds ADD COLUMN cache_write_rate BIGINT;
ALTER TABLE creditgate_holds ADD COLUMN request_fee BIGINT;

-- Statements and usage summaries read one account's entries by time.
-- (PostgreSQL indexes the time alone: see its 009.)
CREATE INDEX IF NOT EXISTS creditgate_entries_time ON creditgate_entries(user_id, created_at);
