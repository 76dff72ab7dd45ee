-- creditgate schema v2: usage entries (the hot path) touch fewer indexes.
-- Only reversals are looked up by reference, and only purchases by kind.
DROP INDEX IF EXISTS creditgate_entries_reference;
DROP INDEX IF EXISTS creditgate_entries_kind;
CREATE INDEX IF NOT EXISTS creditgate_entries_reversals ON creditgate_entries(reference) WHERE kind = 'reversal';
CREATE INDEX IF NOT EXISTS creditgate_entries_purchases ON creditgate_entries(user_id) WHERE kind = 'purchase';
