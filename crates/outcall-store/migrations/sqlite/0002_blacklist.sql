-- Do-not-call entries: exact numbers by blind index (with ciphertext for export) or E.164
-- prefixes; global (campaign_id NULL) or per campaign; optional expiry.
CREATE TABLE blacklist (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id INTEGER NULL REFERENCES campaigns(id),
    kind        TEXT NOT NULL CHECK (kind IN ('exact', 'prefix')),
    number_hash BLOB NULL,
    number_enc  BLOB NULL,
    prefix      TEXT NULL,
    label       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    source      TEXT NOT NULL,
    expires_at  INTEGER NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX blacklist_by_hash ON blacklist (number_hash) WHERE number_hash IS NOT NULL;
CREATE INDEX blacklist_prefixes ON blacklist (prefix) WHERE prefix IS NOT NULL;
