-- outcall schema, version 1. Times are INTEGER milliseconds since the Unix epoch; states and
-- outcomes are their snake_case names. No column holds a phone number in clear: contacts carry
-- the ciphertext (number_enc), an HMAC blind index (number_hash) and a masked form.

CREATE TABLE trunks (
    name   TEXT PRIMARY KEY NOT NULL,
    config TEXT NOT NULL
);

CREATE TABLE campaigns (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    spec       TEXT    NOT NULL,
    priority   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE contacts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id   INTEGER NOT NULL REFERENCES campaigns (id),
    number_hash   BLOB    NOT NULL,
    number_enc    BLOB    NOT NULL,
    masked        TEXT    NOT NULL,
    time_zone     TEXT    NULL,
    priority      INTEGER NOT NULL DEFAULT 0,
    variables     TEXT    NOT NULL DEFAULT '{}',
    state         TEXT    NOT NULL,
    due_at        INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_outcome  TEXT    NULL,
    final_outcome TEXT    NULL,
    UNIQUE (campaign_id, number_hash)
);

-- due selection: pending contacts of a campaign by priority, then due time
CREATE INDEX contacts_due ON contacts (campaign_id, state, priority DESC, due_at);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    contact_id  INTEGER NOT NULL REFERENCES contacts (id),
    number_hash BLOB    NOT NULL,
    seq         INTEGER NOT NULL,
    node        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER NULL,
    outcome     TEXT    NULL,
    cause       TEXT    NULL,
    sip_status  INTEGER NULL,
    cdr         TEXT    NULL
);

-- frequency caps: attempts to one number since an instant, across campaigns
CREATE INDEX attempts_number ON attempts (number_hash, started_at);
CREATE INDEX attempts_contact ON attempts (contact_id);
-- cursor paging of a campaign's attempts
CREATE INDEX attempts_campaign ON attempts (campaign_id, id);
-- crash recovery: attempts still on the wire
CREATE INDEX attempts_open ON attempts (id) WHERE state = 'dialing';
