SELECT id, status, spec, created_at, updated_at
FROM campaigns
ORDER BY id
