-- outcall schema for PostgreSQL, version 1: the business tables. Times are BIGINT milliseconds
-- since the Unix epoch (UTC), as in the SQLite schema; states and outcomes are their snake_case
-- names; JSON documents are JSONB. No column holds a phone number in clear: contacts carry the
-- ciphertext (number_enc), an HMAC blind index (number_hash) and a masked form.

CREATE TABLE trunks (
    name   TEXT  PRIMARY KEY,
    config JSONB NOT NULL
);

CREATE TABLE caller_id_pools (
    name        TEXT   PRIMARY KEY,
    description TEXT   NULL,
    -- JSON array of strings, in rotation order (the enterprise's own numbers, in clear)
    numbers     JSONB  NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE campaigns (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    spec       JSONB   NOT NULL,
    priority   INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);

CREATE TABLE contacts (
    id            BIGSERIAL PRIMARY KEY,
    campaign_id   BIGINT  NOT NULL REFERENCES campaigns (id),
    number_hash   BYTEA   NOT NULL,
    number_enc    BYTEA   NOT NULL,
    masked        TEXT    NOT NULL,
    time_zone     TEXT    NULL,
    priority      INTEGER NOT NULL DEFAULT 0,
    variables     JSONB   NOT NULL DEFAULT '{}',
    state         TEXT    NOT NULL CHECK (state IN ('pending', 'dialing', 'done')),
    due_at        BIGINT  NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_outcome  TEXT    NULL,
    final_outcome TEXT    NULL,
    -- attribution (号码归属地)
    province      TEXT    NULL,
    city          TEXT    NULL,
    carrier       TEXT    NULL,
    -- the trace id its calls carry (a single call placed by an API request)
    trace_id      TEXT    NULL,
    UNIQUE (campaign_id, number_hash)
);

-- due selection: a campaign's pending contacts by priority, then due time, then id
CREATE INDEX contacts_due ON contacts (campaign_id, priority DESC, due_at, id)
    WHERE state = 'pending';
-- counts by state, unfinished contacts
CREATE INDEX contacts_campaign_state ON contacts (campaign_id, state);
-- cursor paging of a campaign's contacts
CREATE INDEX contacts_campaign_id ON contacts (campaign_id, id);
-- one number across campaigns (erasure)
CREATE INDEX contacts_number ON contacts (number_hash);
CREATE INDEX contacts_by_province ON contacts (campaign_id, province);

-- The live attempts: opened before the INVITE leaves, closed once. Their CDRs are in `cdrs`.
CREATE TABLE attempts (
    id          BIGSERIAL PRIMARY KEY,
    campaign_id BIGINT  NOT NULL REFERENCES campaigns (id),
    contact_id  BIGINT  NOT NULL REFERENCES contacts (id),
    number_hash BYTEA   NOT NULL,
    seq         INTEGER NOT NULL,
    node        TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('dialing', 'finished')),
    started_at  BIGINT  NOT NULL,
    ended_at    BIGINT  NULL,
    outcome     TEXT    NULL,
    cause       TEXT    NULL,
    CHECK ((state = 'dialing') = (ended_at IS NULL))
);

-- frequency caps: attempts to one number since an instant, across campaigns
CREATE INDEX attempts_number ON attempts (number_hash, started_at);
CREATE INDEX attempts_contact ON attempts (contact_id);
-- cursor paging of a campaign's attempts
CREATE INDEX attempts_campaign ON attempts (campaign_id, id);
-- crash recovery: attempts still on the wire
CREATE INDEX attempts_open ON attempts (id) WHERE ended_at IS NULL;

-- Do-not-call entries: exact numbers by blind index (with ciphertext for export) or E.164
-- prefixes; global (campaign_id NULL) or per campaign; optional expiry.
CREATE TABLE blacklist (
    id          BIGSERIAL PRIMARY KEY,
    campaign_id BIGINT NULL REFERENCES campaigns (id),
    kind        TEXT   NOT NULL CHECK (kind IN ('exact', 'prefix')),
    number_hash BYTEA  NULL,
    number_enc  BYTEA  NULL,
    prefix      TEXT   NULL,
    label       TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    source      TEXT   NOT NULL,
    expires_at  BIGINT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX blacklist_by_hash ON blacklist (number_hash) WHERE number_hash IS NOT NULL;
CREATE INDEX blacklist_prefixes ON blacklist (prefix) WHERE prefix IS NOT NULL;
CREATE INDEX blacklist_campaign ON blacklist (campaign_id) WHERE campaign_id IS NOT NULL;

-- What Outcall learned about each number (by blind index), across campaigns.
CREATE TABLE number_status (
    number_hash  BYTEA   PRIMARY KEY,
    status       TEXT    NOT NULL,
    last_outcome TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    answered     INTEGER NOT NULL,
    updated_at   BIGINT  NOT NULL
);
-- an import checks numbers of one status in memory: paged by blind index
CREATE INDEX number_status_by_status ON number_status (status, number_hash);
