-- Outbox of status webhooks: one row per event to POST to a campaign's status callback, written
-- when the event happens, delivered at least once, kept with the result of its last try.
-- Payloads carry masked numbers only.

CREATE TABLE webhook_outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    -- unique per event; receivers deduplicate on it
    event_id         TEXT    NOT NULL UNIQUE,
    campaign_id      INTEGER NOT NULL,
    attempt_id       INTEGER NOT NULL,
    event            TEXT    NOT NULL,
    url              TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    tries            INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT    NULL,
    last_http_status INTEGER NULL,
    created_at       INTEGER NOT NULL,
    -- pending: the next try (or the end of the current lease)
    next_attempt_at  INTEGER NOT NULL,
    delivered_at     INTEGER NULL,
    updated_at       INTEGER NOT NULL
);

-- due deliveries, earliest first
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at, id) WHERE status = 'pending';
-- the oldest pending delivery of an attempt goes first
CREATE INDEX webhook_outbox_attempt ON webhook_outbox (attempt_id, id) WHERE status = 'pending';
-- listing by status or campaign, cursor paging
CREATE INDEX webhook_outbox_status ON webhook_outbox (status, id);
CREATE INDEX webhook_outbox_campaign ON webhook_outbox (campaign_id, id);
