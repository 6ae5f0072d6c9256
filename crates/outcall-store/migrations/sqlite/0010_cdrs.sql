-- CDRs apart from the attempt rows, keyed by attempt id: a CDR arrives with its attempt's close
-- or in a batch from the ingest of the bus, and is stored once whichever comes first. A CDR
-- whose attempt is not (yet) known is kept: there is no foreign key to attempts.
CREATE TABLE cdrs (
    attempt_id  INTEGER PRIMARY KEY NOT NULL,
    campaign_id INTEGER NOT NULL,
    -- the attempt's start (retention)
    started_at  INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    sip_status  INTEGER NULL,
    -- JSON (outcall_domain::Cdr); the callee is masked
    cdr         TEXT    NOT NULL
);
CREATE INDEX cdrs_campaign ON cdrs (campaign_id, started_at);
CREATE INDEX cdrs_started ON cdrs (started_at);

INSERT INTO cdrs (attempt_id, campaign_id, started_at, outcome, sip_status, cdr)
SELECT id, campaign_id, started_at, COALESCE(json_extract(cdr, '$.outcome'), outcome, 'failed'),
       sip_status, cdr
FROM attempts
WHERE cdr IS NOT NULL;

ALTER TABLE attempts DROP COLUMN cdr;
ALTER TABLE attempts DROP COLUMN sip_status;
