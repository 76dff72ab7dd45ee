-- creditgate schema v8: organisation wallets and refilling allowances.
-- A member's keys charge its organisation (the paying account); budgets cap
-- what a member or a project (a named group of the organisation's keys) may
-- spend per window; allowances refill a grant once per period.
CREATE TABLE IF NOT EXISTS creditgate_members (
    -- an account belongs to at most one organisation
    user_id   TEXT COLLATE "C" PRIMARY KEY REFERENCES creditgate_accounts(user_id),
    org_id    TEXT COLLATE "C" NOT NULL REFERENCES creditgate_accounts(user_id),
    joined_at BIGINT NOT NULL,
    CHECK (user_id <> org_id)
);
CREATE INDEX IF NOT EXISTS creditgate_members_org ON creditgate_members(org_id, user_id);

CREATE TABLE IF NOT EXISTS creditgate_projects (
    org_id     TEXT COLLATE "C" NOT NULL REFERENCES creditgate_accounts(user_id),
    name       TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);
ALTER TABLE creditgate_api_keys ADD COLUMN IF NOT EXISTS project TEXT COLLATE "C";

-- A member's or a project's spend limit per window, with its counter.
CREATE TABLE IF NOT EXISTS creditgate_budgets (
    org_id        TEXT COLLATE "C" NOT NULL REFERENCES creditgate_accounts(user_id),
    scope         TEXT NOT NULL CHECK (scope IN ('member', 'project')),
    name          TEXT COLLATE "C" NOT NULL,
    spend_limit   BIGINT NOT NULL CHECK (spend_limit >= 0),
    spend_window  TEXT NOT NULL,
    low_threshold BIGINT,
    window_start  BIGINT NOT NULL DEFAULT 0,
    window_end    BIGINT NOT NULL DEFAULT 0,
    spent         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, scope, name)
);

-- The member a member's key spent for, and the project of the key (NULL
-- otherwise): budgets count by these, as the charge recorded them.
ALTER TABLE creditgate_entries ADD COLUMN IF NOT EXISTS project TEXT COLLATE "C";
ALTER TABLE creditgate_entries ADD COLUMN IF NOT EXISTS member_id TEXT COLLATE "C";
CREATE INDEX IF NOT EXISTS creditgate_entries_member ON creditgate_entries(user_id, member_id, seq)
    WHERE member_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS creditgate_allowances (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        TEXT COLLATE "C" NOT NULL REFERENCES creditgate_accounts(user_id),
    member_id      TEXT COLLATE "C",
    api_key_id     UUID,
    amount         BIGINT NOT NULL CHECK (amount > 0),
    period         TEXT NOT NULL,
    rollover_cap   BIGINT,
    next_refill_at BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    removed_at     BIGINT
);
CREATE INDEX IF NOT EXISTS creditgate_allowances_user ON creditgate_allowances(user_id, next_refill_at)
    WHERE removed_at IS NULL;
-- Grants an allowance issued, and whom a grant is reserved for.
ALTER TABLE creditgate_grants ADD COLUMN IF NOT EXISTS member_id TEXT COLLATE "C";
ALTER TABLE creditgate_grants ADD COLUMN IF NOT EXISTS api_key_id UUID;
ALTER TABLE creditgate_grants ADD COLUMN IF NOT EXISTS allowance_id BIGINT;
CREATE INDEX IF NOT EXISTS creditgate_grants_allowance ON creditgate_grants(allowance_id) WHERE allowance_id IS NOT NULL;
-- The earliest next refill of the account's allowances: every write reads
-- it with the account's lock, so a due refill costs no extra statement.
ALTER TABLE creditgate_accounts ADD COLUMN IF NOT EXISTS refill_at BIGINT;
CREATE INDEX IF NOT EXISTS creditgate_accounts_refill ON creditgate_accounts(refill_at) WHERE refill_at IS NOT NULL;
