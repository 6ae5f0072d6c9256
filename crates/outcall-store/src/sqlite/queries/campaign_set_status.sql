UPDATE campaigns
SET status = ?3, updated_at = ?4
WHERE id = ?1 AND status = ?2
RETURNING id, status, spec, created_at, updated_at
