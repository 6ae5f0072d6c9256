-- Caller-ID pools: named sets of numbers presented as From, shared by campaigns (a campaign
-- names one in its spec's `caller_id_pool`). Caller IDs are the enterprise's own numbers, not
-- customers', so they are stored in clear.
CREATE TABLE caller_id_pools (
    name        TEXT    PRIMARY KEY NOT NULL,
    description TEXT    NULL,
    -- JSON array of strings, in rotation order
    numbers     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
