-- creditgate schema v13: the daily rollup (store/rollup.rs, docs/architecture.md).
-- creditgate_daily_totals holds, per closed UTC day of created_at (`day`: its
-- midnight in µs), kind, model and currency ('' for none), the count and sums
-- of the entries: report() and daily_totals() read it instead of every entry.
-- Readers fill it lazily; days before creditgate_rollup.through are in it
-- (0: none yet). A day is closed an hour (ROLLUP_GRACE) after it ends.
CREATE TABLE IF NOT EXISTS creditgate_daily_totals (
    day                BIGINT NOT NULL,
    kind               TEXT COLLATE "C" NOT NULL,
    model              TEXT COLLATE "C" NOT NULL DEFAULT '',
    currency           TEXT COLLATE "C" NOT NULL DEFAULT '',
    entries            BIGINT NOT NULL,
    -- Sums as 32-bit halves, hi * 2^32 + lo (lo in [0, 2^32)): a day's gross
    -- flow of one kind may exceed BIGINT (ten grants of 10^12 credits do).
    amount_hi          BIGINT NOT NULL,
    amount_lo          BIGINT NOT NULL,
    minor_hi           BIGINT NOT NULL,
    minor_lo           BIGINT NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cached_tokens      BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    PRIMARY KEY (day, kind, model, currency)
);
CREATE TABLE IF NOT EXISTS creditgate_rollup (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    through BIGINT NOT NULL
);
INSERT INTO creditgate_rollup (id, through) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
-- report()'s allowance_expired joins expiry entries to their grants by
-- reference; usage entries never enter this index.
CREATE INDEX IF NOT EXISTS creditgate_entries_expiries ON creditgate_entries(reference) WHERE kind = 'expiry';
