INSERT INTO users (username, password_hash, role, disabled, created_at, updated_at)
VALUES (?, ?, ?, 0, ?, ?)
RETURNING id, username, password_hash, role, disabled, created_at, updated_at
