SELECT id, name, role, secret_hash, created_by, created_at, revoked_at FROM api_keys WHERE id = ?
