-- creditgate schema v7: per-key rate limits, counted in the database so that
-- every process and host shares one window per key (the current minute).
CREATE TABLE IF NOT EXISTS creditgate_key_rate_limits (
    api_key_id TEXT PRIMARY KEY REFERENCES creditgate_api_keys(id),
    requests_per_minute INTEGER CHECK (requests_per_minute > 0),
    tokens_per_minute INTEGER CHECK (tokens_per_minute > 0),
    window_start INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0
);
