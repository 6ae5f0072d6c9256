SELECT id, username, password_hash, role, disabled, created_at, updated_at FROM users ORDER BY id
