-- What Outcall learned about each number (by blind index), across campaigns.
CREATE TABLE number_status (
    number_hash  BLOB PRIMARY KEY,
    status       TEXT NOT NULL,
    last_outcome TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    answered     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
