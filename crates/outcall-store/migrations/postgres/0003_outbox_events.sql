-- Outbox of status webhooks: one row per event to POST to a campaign's status callback, written
-- when the event happens, delivered at least once, kept with the result of its last try.
-- Payloads carry masked numbers only.
CREATE TABLE webhook_outbox (
    id               BIGSERIAL PRIMARY KEY,
    -- unique per event; receivers deduplicate on it
    event_id         TEXT    NOT NULL UNIQUE,
    campaign_id      BIGINT  NOT NULL,
    attempt_id       BIGINT  NOT NULL,
    event            TEXT    NOT NULL,
    url              TEXT    NOT NULL,
    payload          JSONB   NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    tries            INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT    NULL,
    last_http_status INTEGER NULL,
    created_at       BIGINT  NOT NULL,
    -- pending: the next try (or the end of the current lease)
    next_attempt_at  BIGINT  NOT NULL,
    delivered_at     BIGINT  NULL,
    updated_at       BIGINT  NOT NULL
);

-- due deliveries, earliest first
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at, id) WHERE status = 'pending';
-- the oldest pending delivery of an attempt goes first
CREATE INDEX webhook_outbox_attempt ON webhook_outbox (attempt_id, id) WHERE status = 'pending';
-- listing by status or campaign, cursor paging
CREATE INDEX webhook_outbox_status ON webhook_outbox (status, id);
CREATE INDEX webhook_outbox_campaign ON webhook_outbox (campaign_id, id);
-- retention of delivered and failed deliveries
CREATE INDEX webhook_outbox_finished ON webhook_outbox (updated_at) WHERE status <> 'pending';

-- System events: what the platform did on its own or noticed (a trunk degraded, its circuit
-- breaker opened, an alert fired), for operators. Append-only; retention deletes old rows.
-- Subjects name trunks and rules, never phone numbers.
CREATE TABLE system_events (
    id       BIGSERIAL PRIMARY KEY,
    at       BIGINT NOT NULL,
    kind     TEXT   NOT NULL,
    subject  TEXT   NOT NULL,
    severity TEXT   NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    message  TEXT   NOT NULL,
    details  JSONB  NOT NULL
);
CREATE INDEX system_events_kind_at ON system_events (kind, at);
CREATE INDEX system_events_at ON system_events (at);
