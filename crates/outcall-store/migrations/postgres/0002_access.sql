-- Access layer: users, API keys, the audit log and idempotency keys.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    -- argon2id PHC string
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);

CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT   NOT NULL,
    role        TEXT   NOT NULL,
    -- SHA-256 of the key's secret part; the key itself is shown once
    secret_hash BYTEA  NOT NULL,
    created_by  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT NULL
);

CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT   NOT NULL,
    role       TEXT   NULL,
    action     TEXT   NOT NULL,
    target     TEXT   NULL,
    outcome    TEXT   NOT NULL,
    -- JSON object; never a clear phone number
    detail     JSONB  NOT NULL,
    ip         TEXT   NULL,
    request_id TEXT   NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Entries are never changed. Only the retention purge deletes them: it sets
-- `outcall.audit_purge` for its own transaction; any other DELETE, and any UPDATE or TRUNCATE,
-- is refused.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('outcall.audit_purge', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_purge_only BEFORE DELETE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE idempotency_keys (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash BYTEA   NOT NULL,
    -- 0 while the first request is running
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
