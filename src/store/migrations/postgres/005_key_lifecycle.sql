-- creditgate schema v5: API key lifecycle and per-key spend caps.
-- expires_at / disabled_at: microseconds (UTC); a key past expires_at or
-- with disabled_at set fails verification like an unknown key.
-- rotated_to: the key that replaced this one (rotate_api_key).
-- spend_limit: micro-credits per spend_window ('daily', 'weekly',
-- 'monthly', 'lifetime'); NULL = no cap.
ALTER TABLE creditgate_api_keys ADD COLUMN IF NOT EXISTS expires_at BIGINT;
ALTER TABLE creditgate_api_keys ADD COLUMN IF NOT EXISTS disabled_at BIGINT;
ALTER TABLE creditgate_api_keys ADD COLUMN IF NOT EXISTS rotated_to UUID;
ALTER TABLE creditgate_api_keys ADD COLUMN IF NOT EXISTS spend_limit BIGINT CHECK (spend_limit IS NULL OR spend_limit >= 0);
ALTER TABLE creditgate_api_keys ADD COLUMN IF NOT EXISTS spend_window TEXT;

-- One rolling counter per capped key: usage charged through the key in the
-- window [window_start, window_end); a charge in a later window restarts it.
-- Updated in the charge's transaction; never scanned from the ledger on the
-- hot path.
CREATE TABLE IF NOT EXISTS creditgate_key_spend (
    api_key_id   UUID PRIMARY KEY,
    window_start BIGINT NOT NULL,
    window_end   BIGINT NOT NULL,
    spent        BIGINT NOT NULL
);

-- Holds of one key (the cap subtracts them).
CREATE INDEX IF NOT EXISTS creditgate_holds_key ON creditgate_holds(api_key_id, status, expires_at);
