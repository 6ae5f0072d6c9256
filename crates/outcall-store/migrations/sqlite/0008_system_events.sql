-- System events: what the platform did on its own or noticed (a trunk degraded, its circuit
-- breaker opened, an alert fired), for operators. Append-only; retention deletes old rows.
-- Subjects name trunks and rules, never phone numbers.
CREATE TABLE system_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    -- trunk.degraded, trunk.circuit_open, alert.firing, ...
    kind     TEXT    NOT NULL,
    -- a trunk's name, an alert rule's name
    subject  TEXT    NOT NULL,
    severity TEXT    NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    message  TEXT    NOT NULL,
    -- JSON
    details  TEXT    NOT NULL
);

-- listing by kind over time, and by time (with retention)
CREATE INDEX system_events_kind_at ON system_events (kind, at);
CREATE INDEX system_events_at ON system_events (at);
