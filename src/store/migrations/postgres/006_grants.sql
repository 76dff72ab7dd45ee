-- creditgate schema v6: grants (lots). Every credit creates one; every debit
-- draws them down (promotional before paid, then lower priority, then
-- earliest expiry, no expiry last, then oldest = lowest id); an expired
-- remainder leaves the balance through an 'expiry' entry. Invariant, checked
-- by audit(): per account, SUM(remaining) = GREATEST(balance, 0).
CREATE TABLE IF NOT EXISTS creditgate_grants (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES creditgate_accounts(user_id),
    -- the entry that credited it; NULL for the opening lot of a migrated ledger
    entry_id   UUID,
    category   TEXT NOT NULL CHECK (category IN ('paid', 'promotional')),
    priority   INTEGER NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount >= 0),
    remaining  BIGINT NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    payment_id TEXT COLLATE "C"
);
-- The draw-down and lazy-expiry lookups touch only live lots of one user.
CREATE INDEX IF NOT EXISTS creditgate_grants_live ON creditgate_grants(user_id, expires_at) WHERE remaining > 0;
-- The sweep (expire_grants) finds due lots across users.
CREATE INDEX IF NOT EXISTS creditgate_grants_due ON creditgate_grants(expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS creditgate_grants_payment ON creditgate_grants(payment_id) WHERE payment_id IS NOT NULL;
-- Existing ledgers: one paid, priority 0, never-expiring lot per account
-- holding its positive balance, so the invariant holds from the start
-- (never twice for an account that already has grants).
INSERT INTO creditgate_grants (user_id, entry_id, category, priority, amount, remaining, expires_at, created_at, payment_id)
SELECT user_id, NULL, 'paid', 0, balance, balance, NULL, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, NULL
FROM creditgate_accounts a WHERE balance > 0
  AND NOT EXISTS (SELECT 1 FROM creditgate_grants g WHERE g.user_id = a.user_id)
ORDER BY user_id;
