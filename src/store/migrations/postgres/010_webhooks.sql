-- creditgate schema v10: webhook subscriptions and their dead letters.
--
-- creditgate_webhooks: one row per subscription, an HTTP endpoint or a
-- `callback:NAME` consumer of handle_events (unique per name).
--   kinds: comma-separated event kinds delivered; '' = every kind.
--   secret: the signing secret encrypted under the operator's key
--     (`v1:<key id>:<base64(nonce || ciphertext || tag)>`); NULL for callbacks.
--   cursor_id: the outbox event the subscription is done with (0: none
--     yet), followed in the outbox's commit order; a new subscription
--     starts at the outbox's tail.
--   attempts, next_attempt_at, last_error: the failed attempts of the
--     event at the head, when it is retried (NULL: now), and why it failed.
--   delivered, failed_attempts: counters over the subscription's life.
--   lease_owner, lease_until: the worker delivering it now, until when;
--     every update a worker makes names its lease (fencing), so a worker
--     whose lease was taken over changes nothing.
CREATE TABLE IF NOT EXISTS creditgate_webhooks (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    kinds           TEXT NOT NULL,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    description     TEXT,
    secret          TEXT,
    created_at      BIGINT NOT NULL,
    cursor_id       BIGINT NOT NULL DEFAULT 0,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    last_error      TEXT,
    delivered       BIGINT NOT NULL DEFAULT 0,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS creditgate_webhooks_consumer ON creditgate_webhooks (url)
    WHERE url LIKE 'callback:%';

-- creditgate_webhook_dead_letters: events a subscription gave up on after
-- its attempts ran out (the cursor moved past them). `requeued`: replayed,
-- to be attempted once more at the subscription's next turn (delivered:
-- the row goes; failed: back to FALSE). Deleted with the subscription.
CREATE TABLE IF NOT EXISTS creditgate_webhook_dead_letters (
    subscription_id TEXT NOT NULL,
    event_id        BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    last_error      TEXT,
    dead_at         BIGINT NOT NULL,
    requeued        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (subscription_id, event_id)
);
