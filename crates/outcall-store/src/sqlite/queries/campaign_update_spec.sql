UPDATE campaigns
SET name = ?2, spec = ?3, priority = ?4, updated_at = ?5
WHERE id = ?1 AND status IN (SELECT value FROM json_each(?6))
RETURNING id, status, spec, created_at, updated_at
