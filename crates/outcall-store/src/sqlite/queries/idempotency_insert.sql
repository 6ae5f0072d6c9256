INSERT INTO idempotency_keys (scope, key, request_hash, status, body, created_at)
VALUES (?, ?, ?, 0, '', ?)
ON CONFLICT (scope, key) DO NOTHING
