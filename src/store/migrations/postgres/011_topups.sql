-- creditgate schema v11: auto top-up.
-- An account's rule lives on its row, so a charge learns whether it has one
-- from the balance update it runs anyway (`apply` returns topup_threshold):
-- NULL = no rule, and the other topup_* columns are then NULL too.
--   topup_threshold     request a top-up when the available balance crosses below this
--   topup_kind          'fixed' (topup_amount is the amount) or 'up_to' (topup_amount is
--                       the available balance to top up to)
--   topup_max_per_month top-ups requested per calendar month (UTC), whatever their outcome
--   topup_monthly_cap   credits requested per calendar month (UTC), whatever their outcome
ALTER TABLE creditgate_accounts ADD COLUMN IF NOT EXISTS topup_threshold BIGINT;
ALTER TABLE creditgate_accounts ADD COLUMN IF NOT EXISTS topup_kind TEXT;
ALTER TABLE creditgate_accounts ADD COLUMN IF NOT EXISTS topup_amount BIGINT;
ALTER TABLE creditgate_accounts ADD COLUMN IF NOT EXISTS topup_max_per_month BIGINT;
ALTER TABLE creditgate_accounts ADD COLUMN IF NOT EXISTS topup_monthly_cap BIGINT;

-- Every top-up the rules requested (one per crossing), and what became of
-- it: 'requested' until the host records the payment (record_payment with
-- the top-up id as payment id: 'paid', entry_id = the purchase) or its
-- failure (record_topup_failure: 'failed', reason). A month's count and
-- sum for the caps read this table by (user_id, created_at).
CREATE TABLE IF NOT EXISTS creditgate_topups (
    id         TEXT COLLATE "C" PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES creditgate_accounts(user_id),
    amount     BIGINT NOT NULL CHECK (amount > 0),
    status     TEXT NOT NULL CHECK (status IN ('requested', 'paid', 'failed')),
    reason     TEXT,
    entry_id   UUID,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS creditgate_topups_user ON creditgate_topups(user_id, created_at);
