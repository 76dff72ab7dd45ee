-- creditgate schema v7: per-key rate limits, counted in the database so that
-- every process and host shares one window per key (the current minute).
CREATE TABLE IF NOT EXISTS creditgate_key_rate_limits (
    api_key_id UUID PRIMARY KEY REFERENCES creditgate_api_keys(id),
    requests_per_minute BIGINT CHECK (requests_per_minute > 0),
    tokens_per_minute BIGINT CHECK (tokens_per_minute > 0),
    window_start BIGINT NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 0,
    tokens BIGINT NOT NULL DEFAULT 0
);
