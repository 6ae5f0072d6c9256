-- Call detail records, one per attempt that placed a call, partitioned by calendar month (UTC)
-- of the attempt's start. Partitions are named cdrs_yYYYYmMM and created by the store ahead of
-- time (the current month and the next ones) and on demand for any other month; retention
-- detaches and drops whole months.
--
-- A CDR is filed under its attempt's start: the key is (attempt_id, started_at), and the store
-- takes started_at from the attempt row whenever it knows the attempt. There is no foreign key
-- to `attempts`: a CDR may arrive (through the bus) before its attempt row is visible, and it is
-- kept.
CREATE TABLE cdrs (
    attempt_id  BIGINT  NOT NULL,
    campaign_id BIGINT  NOT NULL,
    started_at  BIGINT  NOT NULL,
    outcome     TEXT    NOT NULL,
    sip_status  INTEGER NULL,
    -- outcall_domain::Cdr; the callee is masked
    cdr         JSONB   NOT NULL,
    PRIMARY KEY (attempt_id, started_at)
) PARTITION BY RANGE (started_at);

-- a campaign's CDRs over time (counts, exports, campaign deletion)
CREATE INDEX cdrs_campaign ON cdrs (campaign_id, started_at);
