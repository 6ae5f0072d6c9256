UPDATE users
SET role = COALESCE(?, role),
    password_hash = COALESCE(?, password_hash),
    disabled = COALESCE(?, disabled),
    updated_at = ?
WHERE id = ?
RETURNING id, username, password_hash, role, disabled, created_at, updated_at
