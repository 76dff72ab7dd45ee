-- creditgate schema v13: the daily rollup (store/rollup.rs, docs/architecture.md).
-- creditgate_daily_totals holds, per closed UTC day of created_at (`day`: its
-- midnight in µs), kind, model and currency ('' for none), the count and sums
-- of the entries: report() and daily_totals() read it instead of every entry.
-- Readers fill it lazily; days before creditgate_rollup.through are in it
-- (0: none yet). A day is closed an hour (ROLLUP_GRACE) after it ends.
CREATE TABLE IF NOT EXISTS creditgate_daily_totals (
    day                INTEGER NOT NULL,
    kind               TEXT NOT NULL,
    model              TEXT NOT NULL DEFAULT '',
    currency           TEXT NOT NULL DEFAULT '',
    entries            INTEGER NOT NULL,
    -- Sums as 32-bit halves, hi * 2^32 + lo (lo in [0, 2^32)): a day's gross
    -- flow of one kind may exceed BIGINT (ten grants of 10^12 credits do).
    amount_hi          INTEGER NOT NULL,
    amount_lo          INTEGER NOT NULL,
    minor_hi           INTEGER NOT NULL,
    minor_lo           INTEGER NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cached_tokens      INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    PRIMARY KEY (day, kind, model, currency)
);
CREATE TABLE IF NOT EXISTS creditgate_rollup (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL
);
INSERT INTO creditgate_rollup (id, through) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
-- report()'s allowance_expired joins expiry entries to their grants by
-- reference; usage entries never enter this index.
CREATE INDEX IF NOT EXISTS creditgate_entries_expiries ON creditgate_entries(reference) WHERE kind = 'expiry';
