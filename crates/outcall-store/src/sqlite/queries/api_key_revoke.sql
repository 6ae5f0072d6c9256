UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?
RETURNING id, name, role, secret_hash, created_by, created_at, revoked_at
