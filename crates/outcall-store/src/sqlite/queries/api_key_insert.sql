INSERT INTO api_keys (name, role, secret_hash, created_by, created_at)
VALUES (?, ?, ?, ?, ?)
RETURNING id, name, role, secret_hash, created_by, created_at, revoked_at
