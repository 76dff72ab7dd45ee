-- creditgate schema v3: a per-account floor for strict operations
-- (min_balance <= 0, micro-credits): trusted customers may run to -N.
ALTER TABLE creditgate_accounts ADD COLUMN min_balance INTEGER NOT NULL DEFAULT 0 CHECK (min_balance <= 0);
