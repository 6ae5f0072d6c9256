SELECT id, status, spec, created_at, updated_at
FROM campaigns
WHERE id = ?1
